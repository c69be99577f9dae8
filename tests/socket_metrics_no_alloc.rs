//! A stack built with metrics allocates nothing in its poll loop: the per-iteration loop-gap
//! record and the 1 ms publish tick (port, runtime, IP, transport counters and the snapshot
//! of a live connection) are plain stores. A counting global allocator, counted per thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bypass::mem::{HugePages, Pool, PoolConfig};
use bypass::pmd::pair::pair;
use bypass::socket::{Backend, Metrics, Stack};

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a const-initialised thread-local
// Cell, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded contract.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded contract.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 2);

#[test]
fn polling_a_stack_with_metrics_allocates_nothing() {
    let pool = Pool::new(&PoolConfig {
        hugepages: HugePages::Never,
        ..PoolConfig::new("metrics-alloc", 4096, 9216 + 256)
    })
    .unwrap();
    let (a, b) = pair(&pool, 512, 9000).unwrap();
    let m = Metrics::new();
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let (m, stop) = (m.clone(), stop.clone());
        std::thread::spawn(move || {
            let stack = Stack::builder(Backend::Port(Box::new(a)), SERVER)
                .metrics(&m)
                .metrics_name("server")
                .build()
                .unwrap();
            let _sock = stack.listen().accept(Duration::from_secs(20)).unwrap();
            while !stop.load(Ordering::Relaxed) {
                stack.poll();
            }
        })
    };
    let stack = Stack::builder(Backend::Port(Box::new(b)), CLIENT)
        .metrics(&m)
        .metrics_name("client")
        .build()
        .unwrap();
    let sock = stack
        .connect(SocketAddrV4::new(SERVER, 7200), Duration::from_secs(20))
        .unwrap();
    sock.send(b"hello").unwrap();
    sock.flush().unwrap();
    stack.poll_for(Duration::from_millis(20));
    let published = || {
        m.registry()
            .value(
                "bypass_runtime_poll_iterations",
                &[("port", "client"), ("queue", "0")],
            )
            .unwrap()
    };
    let its0 = published();
    let before = ALLOCS.with(Cell::get);
    let (mut polls, start) = (0u64, std::time::Instant::now());
    // 30 ms of the runtime clock: about 30 publish ticks.
    while start.elapsed() < Duration::from_millis(30) {
        stack.poll();
        polls += 1;
    }
    let allocs = ALLOCS.with(Cell::get) - before;
    let its = published() - its0;
    println!("{polls} polls, {allocs} allocations; iterations published meanwhile {its}");
    // Both readings lag by at most 1 ms (of 30): the ticks ran inside the window.
    assert!(its >= polls * 8 / 10, "{its} of {polls} published");
    assert_eq!(allocs, 0);
    stop.store(true, Ordering::Relaxed);
    drop(sock);
    server.join().unwrap();
}
