//! What one 64 B round trip costs the stack, in instructions: two stacks over one memif link
//! in this process, each on its own thread (a stack belongs to one thread), taking turns: a
//! side runs only when the other has handed it the turn, so nothing spins and every
//! instruction counted is work the round trip needed. A turn makes the calls `bypass bench
//! pingpong` makes: `try_recv_msg` until the message is there, then `send_bytes` of the
//! next (`client_turn`, `server_turn`); then the next receive call (`after_turn`), which a
//! spinning side makes at once and in which the message it queued is transmitted. Run it
//! under callgrind with only those collected (the hand-offs between threads are outside
//! them):
//!
//! ```text
//! cargo build --release --example pingpong_cost
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='pingpong_cost::client_turn' \
//!     --toggle-collect='pingpong_cost::server_turn' --toggle-collect='pingpong_cost::after_turn' \
//!     --toggle-collect='pingpong_cost::idle_spins' target/release/examples/pingpong_cost --pings 5000
//! callgrind_annotate --inclusive=yes callgrind.out.<pid> | grep pingpong_cost::
//! ```
//!
//! Each function's inclusive count / pings is its share of a round trip (`idle_spins`: of one
//! empty receive attempt). The round trip's path is the two turns, plus `after_turn` where a
//! message is only transmitted there (a stack that does not send at `send_bytes`); the rest of
//! `after_turn` is work done while the peer answers. Instruction counts repeat for one binary
//! and input whatever the machine is doing, so two builds compare where wall-clock round trips
//! on this VM do not (bench/results/; `scripts/pingpong-cost.sh` runs all this).
//!
//! `cargo run --release --example pingpong_cost -- [--pings N] [--size B]`

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bypass::pmd::memif::{InterfaceConfig, Memif, MemifConfig, Role};
use bypass::proto::cc::swift::{SwiftConfig, SwiftFactory};
use bypass::proto::ConnectionConfig;
use bypass::runtime::RuntimeCounters;
use bypass::socket::{Backend, Socket, Stack, DEFAULT_UDP_PORT};
use bytes::Bytes;

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 2);
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0x79, 0, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0x79, 0, 2];
const WARM: usize = 2000;

fn stack(path: &std::path::Path, role: Role) -> (Memif, Stack) {
    let mut cfg = MemifConfig::new(path, role, 0);
    cfg.interfaces = vec![InterfaceConfig::new(0)];
    let m = Memif::new(cfg).expect("memif");
    let (ip, mac, pip, pmac) = match role {
        Role::Server => (SERVER_IP, SERVER_MAC, CLIENT_IP, CLIENT_MAC),
        Role::Client => (CLIENT_IP, CLIENT_MAC, SERVER_IP, SERVER_MAC),
    };
    let s = Stack::builder(Backend::Port(Box::new(m.port(0, 0).expect("port"))), ip)
        .idle_poll(bypass::socket::IdlePoll::Spin)
        .mac(mac)
        .static_arp(pip, pmac)
        .omit_checksums(true)
        .connection_config(slow_timers())
        .controller(Arc::new(SwiftFactory {
            config: SwiftConfig {
                // Swift's targets a thousand times longer too (delays under callgrind would
                // read as congestion and pace the pings); the same code runs.
                base_queue: SwiftConfig::software().base_queue * 1000,
                host_target: SwiftConfig::software().host_target * 1000,
                line_rate_bps: 400_000_000_000,
                ..SwiftConfig::software()
            },
        }))
        .link_timeout(Duration::from_secs(20))
        .build()
        .expect("stack");
    (m, s)
}

/// The default connection settings (and, at `stack`, the default controller's delay
/// targets) with the timers longer: under callgrind a turn takes ~100x its real time (here,
/// ~50 us without it), and a retransmission timeout firing between turns would add work a
/// real round trip (~1.5 us, far inside every timer) never does. The delayed-ACK wait is
/// scaled by 100 only: a conversation is acknowledged at that deadline, and 2 ms under
/// callgrind (~11 turns; ~37 without it) is about the ~13 round trips a real 20 us wait
/// spans. The frames-per-round-trip line shows what the run did. The code path is the same.
fn slow_timers() -> ConnectionConfig {
    let d = ConnectionConfig::default();
    ConnectionConfig {
        min_rto: d.min_rto * 1000,
        max_rto: d.max_rto * 1000,
        max_ack_delay: d.max_ack_delay * 100,
        idle_timeout: d.idle_timeout * 1000,
        ..d
    }
}

/// The next message (the other side transmitted it before handing over the turn, so it is in
/// the ring; a few polls at most). Returns its length.
#[inline(always)]
fn recv(sock: &Socket) -> usize {
    loop {
        if let Some(m) = sock.try_recv_msg().expect("recv") {
            return m.len as usize;
        }
    }
}

/// The client's measured turn: take the answer to the previous ping (none the first time),
/// send the next ping.
#[inline(never)]
fn client_turn(sock: &Socket, msg: &Bytes, first: bool) -> usize {
    let n = if first { 0 } else { recv(sock) };
    sock.send_bytes(msg.clone()).expect("send");
    n
}

#[inline(never)]
fn warm_client_turn(sock: &Socket, msg: &Bytes, first: bool) -> usize {
    std::hint::black_box(WARM);
    let n = if first { 0 } else { recv(sock) };
    sock.send_bytes(msg.clone()).expect("send");
    n
}

/// The server's measured turn: take a ping, answer it.
#[inline(never)]
fn server_turn(sock: &Socket, msg: &Bytes) -> usize {
    let n = recv(sock);
    sock.send_bytes(msg.clone()).expect("answer");
    n
}

#[inline(never)]
fn warm_server_turn(sock: &Socket, msg: &Bytes) -> usize {
    std::hint::black_box(WARM);
    let n = recv(sock);
    sock.send_bytes(msg.clone()).expect("answer");
    n
}

/// The receive call after a turn, as a spinning `bypass bench` side makes next: the rest of
/// the iteration the turn's receive cut short, which transmits what `send_bytes` queued
/// (its answer), and a receive that finds nothing (the peer has not run). Collected on its
/// own: up to the transmission it is on the round trip's path, the rest runs while the peer
/// answers.
#[inline(never)]
fn after_turn(sock: &Socket) -> bool {
    sock.try_recv_msg().expect("recv").is_some()
}

#[inline(never)]
fn warm_after_turn(sock: &Socket) -> bool {
    std::hint::black_box(WARM);
    sock.try_recv_msg().expect("recv").is_some()
}

/// `n` receive attempts with nothing on the way (collected on its own:
/// `--toggle-collect='pingpong_cost::idle_spins'`).
#[inline(never)]
fn idle_spins(sock: &Socket, n: usize) -> usize {
    let mut got = 0;
    for _ in 0..n {
        got += usize::from(sock.try_recv_msg().expect("recv").is_some());
    }
    got
}

fn server(path: std::path::PathBuf, size: usize, pings: usize, go: Receiver<()>, done: Sender<()>) {
    let (_m, stack) = stack(&path, Role::Server);
    let sock = stack
        .listen()
        .accept(Duration::from_secs(20))
        .expect("accept");
    let msg = Bytes::from(vec![0xa5; size]);
    let mut before = stack.stats().runtime;
    for i in 0..WARM + pings {
        if i == WARM {
            before = stack.stats().runtime;
        }
        go.recv().expect("turn");
        let n = if i < WARM {
            let n = warm_server_turn(&sock, &msg);
            assert!(!warm_after_turn(&sock));
            n
        } else {
            let n = server_turn(&sock, &msg);
            assert!(!after_turn(&sock));
            n
        };
        assert_eq!(n, size);
        done.send(()).expect("hand back");
    }
    report("server", before, stack.stats().runtime, pings);
    // Keep the stack up until the client has its last answer.
    let _ = go.recv();
}

/// What one side's poll loop did per round trip.
fn report(side: &str, a: RuntimeCounters, b: RuntimeCounters, pings: usize) {
    let per = |x: u64, y: u64| (y - x) as f64 / pings.max(1) as f64;
    println!(
        "{side}: per round trip {:.2} poll iterations, {:.2} frames in, {:.2} frames out, \
         {:.2} timers fired",
        per(a.iterations, b.iterations),
        per(a.rx_frames, b.rx_frames),
        per(a.tx_frames, b.tx_frames),
        per(a.timers_fired, b.timers_fired),
    );
}

fn main() {
    common::init_log();
    let mut pings = 20_000usize;
    let mut size = 64usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().and_then(|v| v.parse().ok());
        match (a.as_str(), v) {
            ("--pings", Some(v)) => pings = v,
            ("--size", Some(v)) => size = v,
            _ => {
                eprintln!("usage: pingpong_cost [--pings N] [--size B]");
                std::process::exit(2);
            }
        }
    }
    let path = std::env::temp_dir().join(format!("bypass-ppc-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let (to_server, go) = channel();
    let (done, from_server) = channel();
    let srv = {
        let path = path.clone();
        std::thread::spawn(move || server(path, size, pings, go, done))
    };
    let (_m, stack) = stack(&path, Role::Client);
    let sock = stack
        .connect(
            SocketAddrV4::new(SERVER_IP, DEFAULT_UDP_PORT),
            Duration::from_secs(20),
        )
        .expect("connect");
    let msg = Bytes::from(vec![0x5a; size]);
    let mut got = 0;
    let mut t = Instant::now();
    let mut before = stack.stats().runtime;
    for i in 0..WARM + pings {
        if i == WARM {
            t = Instant::now();
            before = stack.stats().runtime;
        }
        let n = if i < WARM {
            let n = warm_client_turn(&sock, &msg, i == 0);
            assert!(!warm_after_turn(&sock));
            n
        } else {
            let n = client_turn(&sock, &msg, false);
            assert!(!after_turn(&sock));
            n
        };
        if i > WARM {
            got += n;
        }
        to_server.send(()).expect("turn");
        from_server.recv().expect("turn back");
    }
    got += recv(&sock);
    let el = t.elapsed();
    let after = stack.stats().runtime;
    // What one spin of a waiting receiver costs: `try_recv_msg` with nothing to take.
    let spins = idle_spins(&sock, pings);
    assert_eq!(spins, 0, "nothing was sent: nothing to receive");
    let _ = to_server.send(());
    srv.join().expect("server thread");
    report("client", before, after, pings);
    assert_eq!(got, pings * size);
    println!(
        "pingpong_cost size={size} pings={pings} mean_turns_ns={:.0} (threads hand over \
         turns: not a latency; count instructions with callgrind)",
        el.as_nanos() as f64 / pings.max(1) as f64
    );
    let _ = std::fs::remove_file(&path);
}
