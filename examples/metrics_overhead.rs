//! What the stack's telemetry costs: ping-pong RTT p50 and one-way stream rate of two stacks
//! over memif (each on its own thread), built without metrics and with metrics (recording
//! into a registry served over HTTP and scraped every second), alternated in one run.
//!
//! `cargo run --release --example metrics_overhead -- [--rounds N] [--pings N] [--stream-secs S]
//! [--size B] [--no-scrape] [--idle-only]`

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bypass::pmd::memif::Role;
use bypass::socket::{Backend, Metrics, Stack, DEFAULT_UDP_PORT};
use bypass::telemetry::ExporterConfig;
use bytes::Bytes;

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0x78, 0, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0x78, 0, 2];
const PING: usize = 64;

struct Opts {
    rounds: usize,
    pings: usize,
    stream: Duration,
    size: usize,
    scrape: bool,
}

fn build(m: Option<&Metrics>, path: &std::path::Path, role: Role) -> Stack {
    let (ip, mac, pip, pmac, name) = match role {
        Role::Server => (SERVER_IP, SERVER_MAC, CLIENT_IP, CLIENT_MAC, "server"),
        Role::Client => (CLIENT_IP, CLIENT_MAC, SERVER_IP, SERVER_MAC, "client"),
    };
    let mut b = Stack::builder(
        Backend::Memif {
            socket: path.to_owned(),
            role,
            id: 0,
        },
        ip,
    )
    .mac(mac)
    .static_arp(pip, pmac)
    .link_timeout(Duration::from_secs(20));
    if let Some(m) = m {
        b = b.metrics(m).metrics_name(name);
    }
    b.build().expect("stack")
}

/// Echo pings; count stream messages; a 1-byte message asks for the count (8 bytes back).
fn server(m: Option<Metrics>, path: std::path::PathBuf) {
    let stack = build(m.as_ref(), &path, Role::Server);
    let sock = stack
        .listen()
        .accept(Duration::from_secs(20))
        .expect("accept");
    sock.set_timeout(None);
    let mut count = 0u64;
    loop {
        match sock.recv() {
            Ok(msg) if msg.len() == PING => {
                sock.send_bytes(msg).expect("echo");
            }
            Ok(msg) if msg.len() == 1 => {
                sock.send(&count.to_le_bytes()).expect("count");
                count = 0;
            }
            Ok(_) => count += 1,
            Err(_) => return,
        }
    }
}

struct Result1 {
    p50_ns: u64,
    p99_ns: u64,
    msgs_per_s: f64,
    idle_ns: f64,
}

fn run_once(o: &Opts, with_metrics: bool, tag: usize) -> Result1 {
    let path = std::env::temp_dir().join(format!("bypass-mo-{}-{tag}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let metrics = with_metrics.then(Metrics::new);
    let exporter = metrics.as_ref().map(|m| {
        m.serve(&ExporterConfig::new("127.0.0.1:0".parse().unwrap()))
            .expect("exporter")
    });
    let stop = Arc::new(AtomicBool::new(false));
    let scraper = exporter.as_ref().filter(|_| o.scrape).map(|e| {
        let (addr, stop) = (e.local_addr(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                if let Ok(mut s) = TcpStream::connect(addr) {
                    let _ = write!(s, "GET /metrics HTTP/1.0\r\n\r\n");
                    let mut b = Vec::new();
                    let _ = s.read_to_end(&mut b);
                    n += 1;
                }
            }
            n
        })
    });
    let srv = {
        let (m, p) = (metrics.clone(), path.clone());
        std::thread::spawn(move || server(m, p))
    };
    let stack = build(metrics.as_ref(), &path, Role::Client);
    let sock = stack
        .connect(
            SocketAddrV4::new(SERVER_IP, DEFAULT_UDP_PORT),
            Duration::from_secs(20),
        )
        .expect("connect");
    let ping = Bytes::from(vec![1u8; PING]);
    let mut rtts = Vec::with_capacity(o.pings);
    for i in 0..(o.pings + o.pings / 10) {
        let t = Instant::now();
        sock.send_bytes(ping.clone()).expect("ping");
        sock.recv().expect("pong");
        if i >= o.pings / 10 {
            rtts.push(t.elapsed().as_nanos() as u64);
        }
    }
    rtts.sort_unstable();
    let msg = Bytes::from(vec![2u8; o.size]);
    let t = Instant::now();
    let mut sent = 0u64;
    while t.elapsed() < o.stream {
        sock.send_bytes(msg.clone()).expect("stream");
        sent += 1;
    }
    sock.send(&[0]).expect("marker");
    let got = sock.recv().expect("count");
    let elapsed = t.elapsed().as_secs_f64();
    let received = u64::from_le_bytes(got[..8].try_into().expect("8 bytes"));
    assert_eq!(received, sent, "every stream message arrived");
    // The bare loop: iterations with nothing to do (where the per-iteration cost shows).
    let n_idle = 2_000_000u32;
    let t = Instant::now();
    for _ in 0..n_idle {
        stack.poll();
    }
    let idle_ns = t.elapsed().as_nanos() as f64 / f64::from(n_idle);
    let _ = sock.close();
    drop(stack);
    let _ = srv.join();
    stop.store(true, Ordering::Relaxed);
    if let Some(s) = scraper {
        let _ = s.join();
    }
    drop(exporter);
    let _ = std::fs::remove_file(&path);
    Result1 {
        p50_ns: rtts[rtts.len() / 2],
        p99_ns: rtts[rtts.len() * 99 / 100],
        msgs_per_s: received as f64 / elapsed,
        idle_ns,
    }
}

/// The per-iteration cost alone: two idle stacks (over in-process port pairs, link up, no
/// traffic), one with metrics, one without, each on its own thread (one stack per thread),
/// polled in alternating batches: only one thread runs at a time, the other waits on a
/// channel.
fn idle_loop(batches: usize, per_batch: u32) {
    use bypass::mem::{HugePages, Pool, PoolConfig};
    use std::sync::mpsc;
    let pool = Pool::new(&PoolConfig {
        hugepages: HugePages::Never,
        ..PoolConfig::new("mo-idle", 4096, 2048 + 256)
    })
    .expect("pool");
    let metrics = Metrics::new();
    let _exp = metrics
        .serve(&ExporterConfig::new("127.0.0.1:0".parse().unwrap()))
        .expect("exporter");
    let worker = |m: Option<Metrics>| {
        let (go_tx, go_rx) = mpsc::channel::<bool>();
        let (ns_tx, ns_rx) = mpsc::channel::<f64>();
        let pool = pool.clone();
        let h = std::thread::spawn(move || {
            let (a, _peer) = bypass::pmd::pair::pair(&pool, 256, 1500).expect("pair");
            let mut b = Stack::builder(Backend::Port(Box::new(a)), CLIENT_IP);
            if let Some(m) = &m {
                b = b.metrics(m).metrics_name("idle");
            }
            let s = b.build().expect("stack");
            while let Ok(true) = go_rx.recv() {
                let t = Instant::now();
                for _ in 0..per_batch {
                    s.poll();
                }
                let _ = ns_tx.send(t.elapsed().as_nanos() as f64 / f64::from(per_batch));
            }
        });
        (go_tx, ns_rx, h)
    };
    let off = worker(None);
    let on = worker(Some(metrics.clone()));
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..batches {
        for with in if i % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        } {
            let w = if with { &on } else { &off };
            w.0.send(true).expect("worker");
            let ns = w.1.recv().expect("worker");
            if with {
                b.push(ns)
            } else {
                a.push(ns)
            }
        }
    }
    for w in [off, on] {
        let _ = w.0.send(false);
        let _ = w.2.join();
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    println!(
        "idle poll iteration, {batches} alternating batches of {per_batch}: \
         off min {:.2} ns median {:.2} ns; metrics min {:.2} ns median {:.2} ns; \
         difference of medians {:+.2} ns",
        a[0],
        a[a.len() / 2],
        b[0],
        b[b.len() / 2],
        b[b.len() / 2] - a[a.len() / 2]
    );
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    common::init_log();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut o = Opts {
        rounds: 6,
        pings: 20_000,
        stream: Duration::from_secs(1),
        size: 1024,
        scrape: true,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = || it.next().and_then(|v| v.parse::<f64>().ok()).expect(a);
        match a.as_str() {
            "--rounds" => o.rounds = num() as usize,
            "--pings" => o.pings = num() as usize,
            "--stream-secs" => o.stream = Duration::from_secs_f64(num()),
            "--size" => o.size = num() as usize,
            "--no-scrape" => o.scrape = false,
            "--idle-only" => {
                idle_loop(40, 1_000_000);
                return;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        o.size != PING && o.size != 1,
        "--size must differ from 64 and 1"
    );
    println!(
        "metrics overhead: {} rounds; ping-pong {} x {PING} B; stream {} B for {:?}; scrape {}",
        o.rounds,
        o.pings,
        o.size,
        o.stream,
        if o.scrape { "every 1 s" } else { "off" }
    );
    println!("round variant  rtt_p50_us rtt_p99_us stream_msgs_per_s stream_gbit_s idle_poll_ns");
    let (mut off_p50, mut on_p50, mut off_rate, mut on_rate) = (vec![], vec![], vec![], vec![]);
    let (mut off_idle, mut on_idle) = (vec![], vec![]);
    let mut tag = 0;
    for r in 0..o.rounds {
        // Alternate the order so drift over the run does not favour one variant.
        let order = if r % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for with in order {
            tag += 1;
            let res = run_once(&o, with, tag);
            println!(
                "{r:>5} {:<8} {:>10.2} {:>10.2} {:>17.0} {:>13.3} {:>12.1}",
                if with { "metrics" } else { "off" },
                res.p50_ns as f64 / 1e3,
                res.p99_ns as f64 / 1e3,
                res.msgs_per_s,
                res.msgs_per_s * o.size as f64 * 8.0 / 1e9,
                res.idle_ns
            );
            if with {
                on_p50.push(res.p50_ns as f64);
                on_rate.push(res.msgs_per_s);
                on_idle.push(res.idle_ns);
            } else {
                off_p50.push(res.p50_ns as f64);
                off_rate.push(res.msgs_per_s);
                off_idle.push(res.idle_ns);
            }
        }
    }
    let (a, b) = (median(&mut off_p50), median(&mut on_p50));
    let (c, d) = (median(&mut off_rate), median(&mut on_rate));
    println!(
        "median RTT p50: off {:.2} us, metrics {:.2} us ({:+.2} %)",
        a / 1e3,
        b / 1e3,
        (b - a) / a * 100.0
    );
    println!(
        "median stream rate: off {c:.0} msg/s, metrics {d:.0} msg/s ({:+.2} %)",
        (d - c) / c * 100.0
    );
    let (e, f) = (median(&mut off_idle), median(&mut on_idle));
    println!(
        "median idle poll iteration: off {e:.1} ns, metrics {f:.1} ns ({:+.2} %)",
        (f - e) / e * 100.0
    );
}
