//! The GPU receive path makes no heap allocation per packet: a counting global allocator
//! (per thread) around `CopyQueue::enqueue`, and around `Socket::recv_into_gpu` for messages
//! of 1 and 8 MiB (the count per message must not grow with its packets).
//!
//! Skips, printing why, without libcuda.so.1 or a device; runs against the real driver on a
//! GPU machine (scripts/gpu-test.sh run) and against the fake one here
//! (scripts/gpu-test.sh fake).

use crate::harness;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use bypass::mem::gpu::{CopyQueueConfig, Gpu, GpuError};
use bypass::mem::{CoreSlot, HugePages, Pool, PoolConfig};
use bypass::pmd::pair::pair;
use bypass::socket::{Backend, Stack};

use crate::counting::allocs;

fn gpu_or_skip(test: &str) -> Option<Gpu> {
    match Gpu::open(0) {
        Ok(g) => Some(g),
        Err(e @ (GpuError::DriverNotFound { .. } | GpuError::NoDevice { .. })) => {
            if std::env::var_os("BYPASS_REQUIRE_GPU").is_some() {
                panic!("{test}: BYPASS_REQUIRE_GPU is set but: {e}");
            }
            harness::skip(&format!("no CUDA driver or device here ({e})"));
            None
        }
        Err(e) => panic!("{test}: the CUDA driver is present but failed: {e}"),
    }
}

#[test]
fn copy_queue_enqueue_allocates_nothing() {
    let Some(g) = gpu_or_skip("copy_queue_enqueue_allocates_nothing") else {
        return;
    };
    let pool = Pool::new(&PoolConfig {
        hugepages: HugePages::Prefer,
        ..PoolConfig::new("gpu-noalloc", 2048, 9216 + 256)
    })
    .unwrap();
    let _pinned = g.pin_pool(&pool).unwrap();
    let _core = CoreSlot::claim_any().unwrap();
    let dev = g.alloc(64 << 20).unwrap();
    let mut q = g.copy_queue(CopyQueueConfig::default()).unwrap();
    let payload = vec![7u8; 8972];
    let mut run = |n: usize| {
        for i in 0..n {
            let mut b = pool.alloc().unwrap();
            b.extend_from_slice(&payload).unwrap();
            q.enqueue(&dev, ((i * 8972) % (60 << 20)) as u64, b.freeze())
                .unwrap();
        }
        q.finish().unwrap();
    };
    run(2000); // warm up (first use of the thread's core cache, the driver's own state)
    let before = allocs();
    run(5000);
    let n = allocs() - before;
    eprintln!("5000 enqueued copies: {n} heap allocations");
    assert_eq!(n, 0);
}

#[test]
fn recv_into_gpu_allocations_do_not_grow_with_packets() {
    let Some(gpu) = gpu_or_skip("recv_into_gpu_allocations_do_not_grow_with_packets") else {
        return;
    };
    let pool = Pool::new(&PoolConfig {
        hugepages: HugePages::Prefer,
        ..PoolConfig::new("gpu-noalloc-sock", 8192, 9216 + 256)
    })
    .unwrap();
    let pinned = gpu.pin_pool(&pool).unwrap();
    let (a, b) = pair(&pool, 1024, 9000).unwrap();
    let sizes = [1usize << 20, 1 << 20, 8 << 20, 8 << 20, 1 << 20, 8 << 20];
    let (up_tx, up_rx) = mpsc::channel();
    let server = thread::spawn(move || {
        let stack = Stack::builder(Backend::Port(Box::new(a)), Ipv4Addr::new(10, 97, 0, 1))
            .build()
            .unwrap();
        let listener = stack.listen();
        up_tx.send(()).unwrap();
        let sock = listener.accept(Duration::from_secs(20)).unwrap();
        let mut dev = gpu.alloc(8 << 20).unwrap();
        let mut counts = Vec::with_capacity(sizes.len());
        for &len in &sizes {
            sock.send(b"r").unwrap();
            let before = allocs();
            assert_eq!(sock.recv_into_gpu(&mut dev, 0).unwrap(), len);
            counts.push(allocs() - before);
        }
        sock.send(b"r").unwrap();
        let _ = sock.recv();
        drop(pinned);
        counts
    });
    up_rx.recv().unwrap();
    let stack = Stack::builder(Backend::Port(Box::new(b)), Ipv4Addr::new(10, 97, 0, 2))
        .build()
        .unwrap();
    let sock = stack
        .connect(
            SocketAddrV4::new(Ipv4Addr::new(10, 97, 0, 1), 7200),
            Duration::from_secs(10),
        )
        .unwrap();
    let msg = bytes::Bytes::from(vec![3u8; 8 << 20]);
    for &len in &sizes {
        assert_eq!(&sock.recv().unwrap()[..], b"r");
        sock.send_bytes(msg.slice(..len)).unwrap();
    }
    assert_eq!(&sock.recv().unwrap()[..], b"r");
    sock.close().unwrap();
    let counts = server.join().unwrap();
    eprintln!("heap allocations per recv_into_gpu, by message size {sizes:?}: {counts:?}");
    // After the first two (the copy queue is made on the first call, queues warm up), a
    // 1 MiB message (117 packets) and an 8 MiB one (935) cost the same: nothing per packet.
    let warm = &counts[2..];
    assert!(
        warm.iter().all(|&c| c == warm[0]),
        "allocations per message vary with its size: {counts:?}"
    );
    assert!(warm[0] <= 2, "{counts:?}");
}
