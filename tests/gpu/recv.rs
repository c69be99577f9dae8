//! Receiving into GPU memory end to end: two stacks (each on its own thread) over an
//! in-process port pair; the receiver places multi-MiB messages into device memory with
//! `Socket::recv_into_gpu` / `post_gpu` + `recv_gpu`, and the test copies them back with a
//! device-to-host copy and compares them with what was sent.
//!
//! Every test skips, printing why, where `libcuda.so.1` or a CUDA device is absent (this is
//! the case on the CI machines, which have no GPU); scripts/gpu-test.sh runs them on one.

use crate::harness;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use bypass::mem::gpu::{Gpu, GpuError};
use bypass::mem::{HugePages, Pool, PoolConfig};
use bypass::pmd::memif::Role;
use bypass::pmd::pair::pair;
use bypass::socket::{Backend, Error, Stack};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 2);

fn gpu_or_skip(test: &str) -> Option<Gpu> {
    match Gpu::open(0) {
        Ok(g) => {
            eprintln!("{test}: on GPU 0, {}", g.name());
            Some(g)
        }
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

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = bypass::rng::SplitMix64::new(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

/// FNV-1a, to print a checksum of what was compared.
fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x1000_0000_01b3)
    })
}

fn pool(name: &str) -> Pool {
    Pool::new(&PoolConfig {
        hugepages: HugePages::Prefer,
        ..PoolConfig::new(name, 8192, 9216 + 256)
    })
    .unwrap()
}

/// Lockstep: the receiver posts (inside `recv_into_gpu`) before it asks for each message, so
/// every multi-packet message is placed segment by segment, none staged in host memory.
#[test]
fn recv_into_gpu_places_messages_at_their_offsets() {
    let Some(gpu) = gpu_or_skip("recv_into_gpu_places_messages_at_their_offsets") else {
        return;
    };
    let pool = pool("gpu-recv-e2e");
    let pinned = gpu.pin_pool(&pool).unwrap();
    let (a, b) = pair(&pool, 1024, 9000).unwrap();
    // (length, offset in the device buffer)
    let msgs: Vec<(usize, usize)> = vec![
        (16 << 20, 0),
        (1000, 17 << 20),             // one packet
        (5 << 20, (17 << 20) + 4096), // at an offset
        (8972 * 3 + 17, 23 << 20),    // a few packets, a partial last one
    ];
    let total = 24 << 20;
    let (up_tx, up_rx) = mpsc::channel();
    let plan = msgs.clone();
    let receiver = thread::spawn(move || {
        let stack = Stack::builder(Backend::Port(Box::new(a)), SERVER)
            .build()
            .unwrap();
        let listener = stack.listen();
        up_tx.send(()).unwrap();
        let sock = listener.accept(Duration::from_secs(20)).unwrap();
        let mut dev = gpu.alloc(total).unwrap();
        dev.fill(0).unwrap();
        for (k, &(len, off)) in plan.iter().enumerate() {
            sock.send(&[k as u8]).unwrap(); // "ready": the target is posted before data comes
            let got = sock.recv_into_gpu(&mut dev, off).unwrap();
            assert_eq!(got, len, "message {k}");
        }
        // Too large for what is left after the offset: refused, typed.
        sock.send(&[0xff]).unwrap();
        match sock.recv_into_gpu(&mut dev, total - 1000) {
            Err(Error::MessageTooLarge { len, max }) => {
                assert_eq!((len, max), (200_000, 1000));
            }
            other => panic!("expected MessageTooLarge, got {other:?}"),
        }
        let stats = sock.gpu_stats();
        let mut back = vec![0u8; total];
        dev.read(0, &mut back).unwrap();
        sock.send(b"done").unwrap();
        let _ = sock.recv(); // the client's close
        drop(pinned);
        (back, stats)
    });
    up_rx.recv().unwrap();
    let stack = Stack::builder(Backend::Port(Box::new(b)), CLIENT)
        .build()
        .unwrap();
    let sock = stack
        .connect(SocketAddrV4::new(SERVER, 7200), Duration::from_secs(10))
        .unwrap();
    for (k, &(len, _)) in msgs.iter().enumerate() {
        assert_eq!(&sock.recv().unwrap()[..], &[k as u8]);
        sock.send(&pattern(len, k as u64)).unwrap();
    }
    assert_eq!(&sock.recv().unwrap()[..], &[0xff]);
    sock.send(&pattern(200_000, 99)).unwrap();
    assert_eq!(&sock.recv().unwrap()[..], b"done");
    sock.close().unwrap();
    let (back, stats) = receiver.join().unwrap();
    drop(stack);

    let mut want = vec![0u8; total];
    let mut sum = 0;
    for (k, &(len, off)) in msgs.iter().enumerate() {
        want[off..off + len].copy_from_slice(&pattern(len, k as u64));
        sum += len as u64;
    }
    assert!(back == want, "device memory differs from what was sent");
    eprintln!(
        "compared {total} bytes of device memory, fnv {:#018x}; {stats:?}",
        fnv(&back)
    );
    assert_eq!(stats.messages, msgs.len() as u64);
    assert_eq!(stats.bytes, sum);
    assert_eq!(stats.direct_bytes, sum, "nothing staged in host memory");
    assert_eq!(stats.staged_bytes, 0);
    // Every multi-packet segment went through the copy queue, from registered memory.
    assert_eq!(stats.copy.bytes, sum - 1000);
    assert_eq!(stats.copy.pinned_bytes, stats.copy.bytes);
    assert!(stats.copy.copies >= (sum - 1000) / 8972);
    assert_eq!(
        pool.stats().in_use,
        0,
        "every packet buffer went back to the pool"
    );
}

/// Streaming: the receiver keeps targets posted ahead (`post_gpu`), the sender sends
/// back to back; each message lands in its own slice of one device buffer.
#[test]
fn post_gpu_ahead_receives_a_stream() {
    let Some(gpu) = gpu_or_skip("post_gpu_ahead_receives_a_stream") else {
        return;
    };
    let pool = pool("gpu-recv-stream");
    let pinned = gpu.pin_pool(&pool).unwrap();
    let (a, b) = pair(&pool, 1024, 9000).unwrap();
    let n = 24usize;
    let len = 3 << 20;
    let (up_tx, up_rx) = mpsc::channel();
    let receiver = thread::spawn(move || {
        let stack = Stack::builder(Backend::Port(Box::new(a)), SERVER)
            .build()
            .unwrap();
        let listener = stack.listen();
        up_tx.send(()).unwrap();
        let sock = listener.accept(Duration::from_secs(20)).unwrap();
        let dev = gpu.alloc(n * len).unwrap();
        let ahead = 6;
        let mut tickets = std::collections::HashMap::new();
        for k in 0..ahead {
            tickets.insert(sock.post_gpu(&dev, k * len).unwrap(), k);
        }
        sock.send(b"go").unwrap();
        let mut seen = vec![false; n];
        for done in 0..n {
            let m = sock.recv_gpu().unwrap();
            assert_eq!(m.len, len);
            let k = tickets.remove(&m.ticket).expect("a ticket we posted");
            assert_eq!(m.offset, k * len);
            assert!(!seen[k]);
            seen[k] = true;
            let next = done + ahead;
            if next < n {
                tickets.insert(sock.post_gpu(&dev, next * len).unwrap(), next);
            }
        }
        let stats = sock.gpu_stats();
        let mut back = vec![0u8; n * len];
        dev.read(0, &mut back).unwrap();
        sock.send(b"done").unwrap();
        let _ = sock.recv();
        drop(pinned);
        (back, stats)
    });
    up_rx.recv().unwrap();
    let stack = Stack::builder(Backend::Port(Box::new(b)), CLIENT)
        .build()
        .unwrap();
    let sock = stack
        .connect(SocketAddrV4::new(SERVER, 7200), Duration::from_secs(10))
        .unwrap();
    assert_eq!(&sock.recv().unwrap()[..], b"go");
    let mut want = Vec::with_capacity(n * len);
    for k in 0..n {
        let m = pattern(len, 1000 + k as u64);
        want.extend_from_slice(&m);
        sock.send_bytes(m.into()).unwrap();
    }
    assert_eq!(&sock.recv().unwrap()[..], b"done");
    sock.close().unwrap();
    let (back, stats) = receiver.join().unwrap();
    // Messages take targets in the order their first packets arrive, which over the pair
    // is send order, so message k lands at k * len.
    assert!(back == want, "device memory differs from the stream sent");
    eprintln!(
        "stream of {n} x {len} bytes, fnv {:#018x}; {stats:?}",
        fnv(&back)
    );
    assert_eq!(stats.messages, n as u64);
    assert_eq!(stats.staged_bytes, 0, "targets were posted ahead");
    assert_eq!(stats.copy.pinned_bytes, (n * len) as u64);
}

/// Without a driver, the socket call fails with the typed error (nothing else needs CUDA).
#[test]
fn gpu_error_is_typed_without_a_driver() {
    match Gpu::open(0) {
        Err(e @ GpuError::DriverNotFound { .. }) => {
            let s = Error::from(e).to_string();
            assert!(s.contains("CUDA driver not found (libcuda.so.1)"), "{s}");
        }
        Ok(g) => eprintln!("driver present ({}): nothing to check", g.name()),
        Err(e) => eprintln!("driver present, no usable device: {e}"),
    }
}

fn memif_stack(path: &std::path::Path, role: Role) -> Stack {
    const IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 96, 0, 1), Ipv4Addr::new(10, 96, 0, 2)];
    const MACS: [[u8; 6]; 2] = [[2, 0, 0, 0x96, 0, 1], [2, 0, 0, 0x96, 0, 2]];
    let (me, peer) = match role {
        Role::Server => (0, 1),
        Role::Client => (1, 0),
    };
    Stack::builder(
        Backend::Memif {
            socket: path.to_owned(),
            role,
            id: 0,
        },
        IPS[me],
    )
    .mac(MACS[me])
    .static_arp(IPS[peer], MACS[peer])
    .link_timeout(Duration::from_secs(20))
    .build()
    .unwrap()
}

/// Over memif (two stacks in two threads, as two processes would be): the receiving stack
/// registers its own receive pool with `Stack::pin_for_gpu`, so every segment is DMA.
#[test]
fn recv_into_gpu_over_memif_with_the_stack_pool_pinned() {
    let Some(gpu) = gpu_or_skip("recv_into_gpu_over_memif_with_the_stack_pool_pinned") else {
        return;
    };
    let path = std::env::temp_dir().join(format!("bypass-gpu-memif-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let sizes = [8usize << 20, (3 << 20) + 5];
    let p = path.clone();
    let receiver = thread::spawn(move || {
        // The memif client receives with no copy: its packets live in its own region.
        let stack = memif_stack(&p, Role::Client);
        let pinned = stack
            .pin_for_gpu(&gpu)
            .unwrap()
            .expect("a memif stack knows its pool");
        let sock = stack.listen().accept(Duration::from_secs(20)).unwrap();
        let mut dev = gpu.alloc(8 << 20).unwrap();
        let mut got = Vec::new();
        for &len in &sizes {
            sock.send(b"r").unwrap();
            assert_eq!(sock.recv_into_gpu(&mut dev, 0).unwrap(), len);
            let mut back = vec![0u8; len];
            dev.read(0, &mut back).unwrap();
            got.push(back);
        }
        sock.send(b"r").unwrap();
        let _ = sock.recv();
        let stats = sock.gpu_stats();
        drop(pinned);
        (got, stats)
    });
    let stack = memif_stack(&path, Role::Server);
    let sock = stack
        .connect(
            SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 2), 7200),
            Duration::from_secs(20),
        )
        .unwrap();
    for (k, &len) in sizes.iter().enumerate() {
        assert_eq!(&sock.recv().unwrap()[..], b"r");
        sock.send(&pattern(len, 500 + k as u64)).unwrap();
    }
    assert_eq!(&sock.recv().unwrap()[..], b"r");
    sock.close().unwrap();
    let (got, stats) = receiver.join().unwrap();
    let _ = std::fs::remove_file(&path);
    for (k, &len) in sizes.iter().enumerate() {
        assert!(
            got[k] == pattern(len, 500 + k as u64),
            "message {k} differs"
        );
    }
    eprintln!("memif: {stats:?}");
    let sum: u64 = sizes.iter().map(|&l| l as u64).sum();
    assert_eq!(stats.direct_bytes, sum);
    assert_eq!(stats.copy.bytes, sum);
    assert_eq!(stats.copy.pinned_bytes, sum, "the memif pool is registered");
}

/// With `rx_segments`, a multi-packet message that arrived before any GPU target was posted
/// waits as its packet buffers; `recv_into_gpu` then copies each part from its buffer to its
/// offset in device memory, with no staging copy in host memory.
#[test]
fn segments_received_before_the_target_go_to_the_gpu_part_by_part() {
    let Some(gpu) = gpu_or_skip("segments_received_before_the_target_go_to_the_gpu_part_by_part")
    else {
        return;
    };
    let pool = pool("gpu-recv-segments");
    let pinned = gpu.pin_pool(&pool).unwrap();
    let (a, b) = pair(&pool, 1024, 9000).unwrap();
    let len = (3 << 20) + 123;
    let (up_tx, up_rx) = mpsc::channel();
    let (acked_tx, acked_rx) = mpsc::channel();
    let receiver = thread::spawn(move || {
        let stack = Stack::builder(Backend::Port(Box::new(a)), SERVER)
            .connection_config(bypass::proto::ConnectionConfig {
                rx_segments: true,
                ..Default::default()
            })
            .build()
            .unwrap();
        let listener = stack.listen();
        up_tx.send(()).unwrap();
        let sock = listener.accept(Duration::from_secs(20)).unwrap();
        // Let the whole message arrive (as segments) before a target is posted: poll (which
        // acknowledges what arrives) until the sender says every byte was acknowledged, so
        // it is all here. (A fixed wait is not enough on a busy machine.)
        assert_eq!(&sock.recv().unwrap()[..], b"sent");
        let waited = harness::wait_for(
            "the sender to see the whole message acknowledged",
            harness::SETTLE,
            || {
                stack.poll();
                acked_rx.try_recv().is_ok()
            },
        );
        if let Err(e) = waited {
            panic!("{e}");
        }
        let mut dev = gpu.alloc(len + 4096).unwrap();
        dev.fill(0).unwrap();
        let got = sock.recv_into_gpu(&mut dev, 4096).unwrap();
        let stats = sock.gpu_stats();
        let mut back = vec![0u8; len];
        dev.read(4096, &mut back).unwrap();
        sock.send(b"done").unwrap();
        let _ = sock.recv(); // the client's close
        drop(pinned);
        (got, back, stats)
    });
    up_rx.recv().unwrap();
    let stack = Stack::builder(Backend::Port(Box::new(b)), CLIENT)
        .build()
        .unwrap();
    let sock = stack
        .connect(SocketAddrV4::new(SERVER, 7200), Duration::from_secs(10))
        .unwrap();
    sock.send(b"sent").unwrap();
    sock.send(&pattern(len, 7)).unwrap();
    sock.set_timeout(Some(harness::SETTLE));
    sock.flush().unwrap();
    acked_tx.send(()).unwrap();
    assert_eq!(&sock.recv().unwrap()[..], b"done");
    sock.close().unwrap();
    let (got, back, stats) = receiver.join().unwrap();
    drop(stack);
    assert_eq!(got, len);
    assert!(
        back == pattern(len, 7),
        "device memory differs from what was sent"
    );
    eprintln!("{stats:?}");
    assert_eq!(stats.messages, 1);
    assert_eq!(
        stats.direct_bytes, len as u64,
        "copied from the packet buffers"
    );
    assert_eq!(stats.staged_bytes, 0, "nothing staged in host memory");
    assert_eq!(
        stats.copy.bytes, 0,
        "placed after arrival, not through a posted target"
    );
    assert_eq!(pool.stats().in_use, 0, "every packet buffer went back");
}
