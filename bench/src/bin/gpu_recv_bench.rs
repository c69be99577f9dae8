//! Receive throughput into GPU memory versus into host memory, one connection between two
//! threads (pinned to cores 0 and 1) over an in-process port pair (jumbo frames, 8972-byte
//! segments), for messages of 1 MiB to 64 MiB.
//!
//! Modes, each on fresh stacks:
//! - `host`: `recv_msg` (each message reassembled once into a host buffer);
//! - `gpu`: `post_gpu` ahead + `recv_gpu`, the stack's pool registered with the GPU: each
//!   segment is copied by the copy engine from its packet buffer to its offset (DMA);
//! - `gpu-pageable`: the same without registering the pool (the driver stages each copy).
//!
//! `gpu_recv_bench [total MiB per size, default 512] [sizes in MiB, default 1,2,4,8,16,32,64]`
//! Prints one line per (mode, size). Needs libcuda.so.1 and a device for the GPU modes
//! (skipped with the reason otherwise).
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bypass::mem::gpu::Gpu;
use bypass::mem::{HugePages, Pool, PoolConfig};
use bypass::pmd::pair::pair;
use bypass::socket::{Backend, GpuRecvStats, Stack};
use bytes::Bytes;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Host,
    Gpu,
    GpuPageable,
}

fn run(mode: Mode, gpu: Option<&Gpu>, size: usize, n: usize) -> (Duration, u64, GpuRecvStats) {
    let pool = Pool::new(&PoolConfig {
        hugepages: HugePages::Prefer,
        ..PoolConfig::new("gpu-bench", 8192, 9216 + 256)
    })
    .expect("pool");
    let pinned = match (mode, gpu) {
        (Mode::Gpu, Some(g)) => Some(g.pin_pool(&pool).expect("pin the pool")),
        _ => None,
    };
    let (a, b) = pair(&pool, 1024, 9000).expect("pair");
    let (tx, rx) = mpsc::channel();
    let gpu = gpu.cloned();
    let server = thread::spawn(move || {
        core_affinity::set_for_current(core_affinity::CoreId { id: 1 });
        let stack = Stack::builder(Backend::Port(Box::new(a)), Ipv4Addr::new(10, 9, 0, 1))
            .max_message(128 << 20)
            .build()
            .expect("server stack");
        tx.send(()).expect("main thread waits");
        let sock = stack
            .listen()
            .accept(Duration::from_secs(20))
            .expect("accept");
        sock.set_timeout(Some(Duration::from_secs(60)));
        // Targets posted ahead: enough to cover the receive window (8 MiB) plus one.
        let ahead = (8usize << 20).div_ceil(size) + 2;
        let dev = gpu
            .as_ref()
            .map(|g| g.alloc(ahead * size).expect("device memory"));
        if let Some(d) = &dev {
            for k in 0..ahead.min(n) {
                sock.post_gpu(d, k * size).expect("post");
            }
        }
        sock.send(b"go").expect("go");
        let t = Instant::now();
        let mut bytes = 0u64;
        for k in 0..n {
            match &dev {
                None => bytes += sock.recv_msg().expect("recv").len,
                Some(d) => {
                    let m = sock.recv_gpu().expect("recv_gpu");
                    bytes += m.len as u64;
                    if k + ahead < n {
                        sock.post_gpu(d, m.offset).expect("post");
                    }
                }
            }
        }
        let e = t.elapsed();
        let st = sock.gpu_stats();
        let _ = sock.send(b"done");
        let _ = sock.recv();
        (e, bytes, st)
    });
    rx.recv().expect("server up");
    core_affinity::set_for_current(core_affinity::CoreId { id: 0 });
    let stack = Stack::builder(Backend::Port(Box::new(b)), Ipv4Addr::new(10, 9, 0, 2))
        .max_message(128 << 20)
        .build()
        .expect("client stack");
    let sock = stack
        .connect(
            SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 1), 7200),
            Duration::from_secs(10),
        )
        .expect("connect");
    sock.set_timeout(Some(Duration::from_secs(60)));
    let msg = Bytes::from((0..size).map(|i| (i * 7) as u8).collect::<Vec<u8>>());
    assert_eq!(&sock.recv().expect("go")[..], b"go");
    for _ in 0..n {
        sock.send_bytes(msg.clone()).expect("send");
    }
    let _ = sock.recv(); // "done"
    let _ = sock.close();
    let r = server.join().expect("server");
    drop(pinned);
    r
}

fn main() {
    let mut args = std::env::args().skip(1);
    let total_mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(512);
    let sizes: Vec<usize> = args
        .next()
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 4, 8, 16, 32, 64]);
    let gpu = match Gpu::open(0) {
        Ok(g) => {
            println!(
                "GPU 0: {} (CUDA driver {:?})",
                g.name(),
                bypass::mem::gpu::driver_version()
            );
            Some(g)
        }
        Err(e) => {
            println!("GPU modes skipped: {e}");
            None
        }
    };
    println!(
        "{:<13} {:>8} {:>5} {:>10} {:>9} {:>9} {:>10} {:>10}",
        "mode", "size", "msgs", "time", "Gb/s", "GB/s", "copies", "full_waits"
    );
    for &mib in &sizes {
        let size = mib << 20;
        let n = (total_mib / mib).max(4);
        for mode in [Mode::Host, Mode::Gpu, Mode::GpuPageable] {
            if mode != Mode::Host && gpu.is_none() {
                continue;
            }
            let g = if mode == Mode::Host {
                None
            } else {
                gpu.as_ref()
            };
            let (e, bytes, st) = run(mode, g, size, n);
            let name = match mode {
                Mode::Host => "host",
                Mode::Gpu => "gpu",
                Mode::GpuPageable => "gpu-pageable",
            };
            println!(
                "{:<13} {:>5} MiB {:>5} {:>10.1?} {:>9.2} {:>9.2} {:>10} {:>10}{}",
                name,
                mib,
                n,
                e,
                bytes as f64 * 8.0 / e.as_secs_f64() / 1e9,
                bytes as f64 / e.as_secs_f64() / 1e9,
                st.copy.copies,
                st.copy.full_waits,
                if st.staged_bytes > 0 {
                    format!("  (staged {} B)", st.staged_bytes)
                } else {
                    String::new()
                }
            );
        }
    }
}
