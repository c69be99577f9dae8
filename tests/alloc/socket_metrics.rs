//! A stack built with metrics allocates nothing in its poll loop: the per-iteration loop-gap
//! record and the 1 ms publish tick (port, runtime, IP, transport counters and the snapshot
//! of a live connection) are plain stores. A counting global allocator, counted per thread.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::counting::allocs;
use crate::harness;

use bypass::mem::{HugePages, Pool, PoolConfig};
use bypass::pmd::pair::pair;
use bypass::socket::{Backend, Metrics, Stack};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 2);

#[test]
fn polling_a_stack_with_metrics_allocates_nothing() {
    // Busy-polling stacks: one such test at a time in this binary (harness).
    let _pair = harness::one_pair_at_a_time();
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
    let published = |m: &Metrics| {
        m.registry()
            .value(
                "bypass_runtime_poll_iterations",
                &[("port", "client"), ("queue", "0")],
            )
            .unwrap()
    };
    // The published iteration count is read on another thread (reading the registry
    // allocates, and the allocation count is this thread's): each change it sees is a publish
    // tick that ran in this thread's poll loop.
    let (ticks, watching) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(true)));
    let its0 = published(&m);
    let watcher = {
        let (m, ticks, watching) = (m.clone(), ticks.clone(), watching.clone());
        std::thread::spawn(move || {
            let mut last = its0;
            while watching.load(Ordering::Relaxed) {
                let v = published(&m);
                if v != last {
                    last = v;
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    const TICKS: u64 = 10;
    // The iterations that ran up to here, published or not yet (`its0` lags them by up to a
    // publish interval): the measured loop's iterations are counted from this.
    let live0 = stack.stats().runtime.iterations;
    let before = allocs();
    let (mut polls, start) = (0u64, std::time::Instant::now());
    // Poll until at least 30 ms passed and the watcher saw TICKS publish ticks (about 30 in
    // 30 ms alone; a busy machine can take longer: the deadline is generous).
    while start.elapsed() < Duration::from_millis(30) || ticks.load(Ordering::Relaxed) < TICKS {
        stack.poll();
        polls += 1;
        if start.elapsed() > harness::SETTLE {
            break;
        }
    }
    let allocs = allocs() - before;
    let elapsed = start.elapsed();
    watching.store(false, Ordering::Relaxed);
    watcher.join().unwrap();
    let live = stack.stats().runtime.iterations;
    let (seen, published_end) = (ticks.load(Ordering::Relaxed), published(&m));
    let its = published_end - its0;
    println!(
        "{polls} polls in {elapsed:?}, {allocs} allocations; publish ticks seen {seen}, \
         iterations published {its}"
    );
    assert!(
        seen >= TICKS,
        "waited {elapsed:?} for {TICKS} publish ticks inside the measured loop; saw {seen}"
    );
    // Publishing lags the loop, never leads it: what was published is at most what ran, and
    // everything past `live0` ran inside the measured loop.
    assert!(its > 0, "no iterations published in {polls} polls");
    assert_eq!(live - live0, polls, "iterations counted vs polls made");
    assert!(
        published_end <= live,
        "{published_end} iterations published, {live} ran"
    );
    assert_eq!(
        allocs, 0,
        "allocations in {polls} polls with {seen} publish ticks"
    );
    stop.store(true, Ordering::Relaxed);
    drop(sock);
    server.join().unwrap();
}
