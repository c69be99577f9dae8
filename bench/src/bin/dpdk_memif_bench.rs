//! 64 B frame rate and round-trip time over net_memif with `pmd::dpdk`, one process per side
//! (each its own EAL, pinned to one core). Run by `scripts/dpdk-bench.sh`, which also runs
//! dpdk-testpmd on the same link for comparison.
//!
//! ```text
//! dpdk-memif-bench sink   --socket PATH --core C --secs S [--role server|client]
//! dpdk-memif-bench source --socket PATH --core C --secs S [--size 64] [--role ...]
//! dpdk-memif-bench echo   --socket PATH --core C --secs S [--role ...]
//! dpdk-memif-bench ping   --socket PATH --core C --samples N [--size 64] [--role ...]
//! ```
//! `sink` counts received frames per second; `source` sends as fast as the ring takes them;
//! `echo` sends every received frame back; `ping` sends one frame, waits for it to come back,
//! and records the round trip in an hdrhistogram (ns). The memif server is the side that
//! creates the socket; by default `sink` and `echo` are servers, `source` and `ping` clients.

use std::time::{Duration, Instant};

use bypass::mem::{CoreSlot, HugePages, Pool, PoolConfig};
use bypass::pmd::dpdk::{Device, DeviceConfig, DpdkPool, Eal, EalConfig, EalMemory};
use bypass::pmd::{Port, MAX_BURST};

const BURST: usize = 32;

struct Args {
    mode: String,
    socket: String,
    core: usize,
    secs: u64,
    size: usize,
    samples: u64,
    role: String,
}

fn parse() -> Args {
    let mut it = std::env::args().skip(1);
    let mode = it.next().unwrap_or_else(|| usage());
    let mut a = Args {
        role: if mode == "sink" || mode == "echo" {
            "server"
        } else {
            "client"
        }
        .into(),
        mode,
        socket: "/tmp/bypass-bench.sock".into(),
        core: 0,
        secs: 5,
        size: 64,
        samples: 100_000,
    };
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--socket" => a.socket = v,
            "--core" => a.core = v.parse().unwrap_or_else(|_| usage()),
            "--secs" => a.secs = v.parse().unwrap_or_else(|_| usage()),
            "--size" => a.size = v.parse().unwrap_or_else(|_| usage()),
            "--samples" => a.samples = v.parse().unwrap_or_else(|_| usage()),
            "--role" => a.role = v,
            _ => usage(),
        }
    }
    a
}

fn usage() -> ! {
    eprintln!("usage: dpdk-memif-bench sink|source|echo|ping --socket PATH --core C [--secs S] [--size B] [--samples N] [--role server|client]");
    std::process::exit(2)
}

fn main() {
    let a = parse();
    let mut cfg = EalConfig::new();
    cfg.cores = vec![a.core];
    cfg.memory = EalMemory::NoHuge { mb: 256 };
    cfg.file_prefix = Some(format!("bypass-bench-{}", std::process::id()));
    cfg.log_level = Some("warning".into());
    let eal = Eal::init(&cfg).expect("EAL init");
    // The poll thread takes a core slot: pool alloc/free use its per-core cache.
    let _slot = CoreSlot::claim_any().expect("core slot");
    let mut pc = PoolConfig::new("bench", 8192, 2048 + 128);
    pc.hugepages = HugePages::Prefer;
    let pool = Pool::new(&pc).expect("pool");
    let dpool = DpdkPool::new(&eal, &pool).expect("lend pool");
    if a.role == "client" {
        let t0 = Instant::now();
        while !std::path::Path::new(&a.socket).exists() {
            if t0.elapsed() > Duration::from_secs(60) {
                eprintln!("no memif server at {}", a.socket);
                std::process::exit(1);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let devargs = format!(
        "net_memif0,role={},id=0,socket={},socket-abstract=no",
        a.role, a.socket
    );
    let name = Device::probe(&eal, &devargs).expect("probe memif");
    let (dev, mut ports) =
        Device::open(&eal, &name, &dpool, &DeviceConfig::default()).expect("open memif");
    let port = &mut ports[0];
    let t0 = Instant::now();
    while !port.link().is_up() {
        if t0.elapsed() > Duration::from_secs(60) {
            eprintln!("link never came up");
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    match a.mode.as_str() {
        "sink" => sink(port, a.secs),
        "source" => source(port, a.secs, a.size),
        "echo" => echo(port, a.secs),
        "ping" => ping(port, a.samples, a.size),
        _ => usage(),
    }
    eprintln!(
        "{}: port {:?} copies {} device {:?} pool {:?}",
        a.mode,
        port.stats(),
        port.copies(),
        dev.stats().ok(),
        pool.stats()
    );
}

fn sink(port: &mut impl Port, secs: u64) {
    let mut rx = Vec::with_capacity(MAX_BURST);
    // Start the clock at the first frame.
    while port.rx_burst(&mut rx, MAX_BURST) == 0 {}
    rx.clear();
    let start = Instant::now();
    let mut tick = start;
    let mut n = 0u64;
    let mut last = 0u64;
    let mut per_sec = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        n += port.rx_burst(&mut rx, MAX_BURST) as u64;
        rx.clear();
        if tick.elapsed() >= Duration::from_secs(1) {
            let pps = (n - last) as f64 / tick.elapsed().as_secs_f64();
            per_sec.push(pps);
            println!("sink: {:.3} Mpps", pps / 1e6);
            last = n;
            tick = Instant::now();
        }
    }
    let total = n as f64 / start.elapsed().as_secs_f64();
    println!("RESULT sink_mpps {:.3} frames {n}", total / 1e6);
}

fn source(port: &mut impl Port, secs: u64, size: usize) {
    let mut tx = Vec::with_capacity(MAX_BURST);
    let start = Instant::now();
    let mut sent = 0u64;
    let frame = {
        let mut f = vec![0u8; size];
        f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&[0x88, 0xb5]);
        f
    };
    while start.elapsed() < Duration::from_secs(secs) {
        while tx.len() < BURST {
            match port.alloc_tx() {
                Ok(mut b) => {
                    b.extend_from_slice(&frame).expect("room");
                    tx.push(b);
                }
                Err(_) => break,
            }
        }
        sent += port.tx_burst(&mut tx) as u64;
    }
    let total = sent as f64 / start.elapsed().as_secs_f64();
    println!("RESULT source_mpps {:.3} frames {sent}", total / 1e6);
}

fn echo(port: &mut impl Port, secs: u64) {
    let mut q = Vec::with_capacity(MAX_BURST);
    let start = Instant::now();
    let mut n = 0u64;
    let mut spins = 0u32;
    // The clock is read once per 4096 polls: a loop that echoes must not pay for it per frame.
    while spins & 4095 != 0 || start.elapsed() < Duration::from_secs(secs) {
        spins = spins.wrapping_add(1);
        port.rx_burst(&mut q, MAX_BURST);
        if !q.is_empty() {
            n += port.tx_burst(&mut q) as u64;
        }
    }
    println!("RESULT echoed {n}");
}

fn ping(port: &mut impl Port, samples: u64, size: usize) {
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();
    let mut tx = Vec::with_capacity(1);
    let mut rx = Vec::with_capacity(MAX_BURST);
    let warmup = samples / 10;
    let mut lost = 0u64;
    for i in 0..samples + warmup {
        let mut b = port.alloc_tx().expect("alloc");
        let f = b.append(size).expect("room");
        f.fill(0);
        f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&[0x88, 0xb5]);
        f[14..22].copy_from_slice(&i.to_be_bytes());
        tx.push(b);
        let t0 = Instant::now();
        while port.tx_burst(&mut tx) == 0 {}
        'wait: loop {
            rx.clear();
            port.rx_burst(&mut rx, MAX_BURST);
            for r in &rx {
                if r.len() >= 22 && r[14..22] == i.to_be_bytes() {
                    break 'wait;
                }
            }
            if t0.elapsed() > Duration::from_secs(1) {
                lost += 1;
                break;
            }
        }
        let ns = t0.elapsed().as_nanos() as u64;
        if i >= warmup {
            h.record(ns.max(1)).expect("in range");
        }
    }
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "RESULT rtt_us samples {} size {size} p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} p99.99 {:.2} max {:.2} jitter(p99-p50) {:.2} lost {lost}",
        h.len(),
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        us(0.9999),
        h.max() as f64 / 1000.0,
        us(0.99) - us(0.5)
    );
}
