//! One-way message rate of the socket API between two threads pinned to cores 0 and 1, over an
//! in-process port pair (no memif, no kernel): the protocol and stack cost alone.
//!
//! `cargo run --release -p bypass-bench --bin socket_stream_pair -- [messages] [size]`
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bypass::mem::{HugePages, Pool, PoolConfig};
use bypass::pmd::pair::pair;
use bypass::socket::{Backend, Stack};
use bytes::Bytes;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let pool = Pool::new(&PoolConfig {
        hugepages: HugePages::Prefer,
        ..PoolConfig::new("stream-pair", 8192, 9216 + 256)
    })
    .expect("pool");
    let (a, b) = pair(&pool, 1024, 9000).expect("pair");
    let (tx, rx) = mpsc::channel();
    let server = thread::spawn(move || {
        core_affinity::set_for_current(core_affinity::CoreId { id: 1 });
        let stack = Stack::builder(Backend::Port(Box::new(a)), Ipv4Addr::new(10, 9, 0, 1))
            .idle_poll(bypass::socket::IdlePoll::Spin)
            .build()
            .expect("server stack");
        tx.send(()).expect("main thread waits");
        let sock = stack
            .listen()
            .accept(Duration::from_secs(20))
            .expect("accept");
        let t = Instant::now();
        let mut bytes = 0u64;
        for _ in 0..n {
            bytes += sock.recv_msg().expect("recv").len;
        }
        let e = t.elapsed();
        let st = sock.stats();
        let _ = sock.close();
        (e, bytes, st)
    });
    rx.recv().expect("server up");
    core_affinity::set_for_current(core_affinity::CoreId { id: 0 });
    let stack = Stack::builder(Backend::Port(Box::new(b)), Ipv4Addr::new(10, 9, 0, 2))
        .idle_poll(bypass::socket::IdlePoll::Spin)
        .build()
        .expect("client stack");
    let sock = stack
        .connect(
            SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 1), 7200),
            Duration::from_secs(10),
        )
        .expect("connect");
    let msg = Bytes::from(vec![7u8; size]);
    for _ in 0..n {
        sock.send_bytes(msg.clone()).expect("send");
    }
    let _ = sock.flush();
    let sent = sock.stats();
    let (e, bytes, st) = server.join().expect("server");
    println!(
        "{n} messages of {size} B in {e:?}: {:.0} msg/s, {:.2} Gb/s of payload; \
         retransmits {}, refused at the receiver {}",
        n as f64 / e.as_secs_f64(),
        bytes as f64 * 8.0 / e.as_secs_f64() / 1e9,
        sent.map(|s| s.retransmits).unwrap_or(0),
        st.map(|s| s.rx_refused).unwrap_or(0),
    );
}
