//! `bypass sim path`: congestion control on a real (emulated) path between two processes.
//!
//! Contract:
//! - Two OS processes, each with one [`Stack`] over memif, each stack's port wrapped in
//!   [`Faults`] whose transmit side is the path: a token-bucket rate limit with a bounded
//!   tail-drop queue in front of it (the bottleneck) and then a fixed propagation delay. Both
//!   directions get the same spec (each side shapes what it sends), so the path is
//!   symmetric. Frames really queue in the wrapper; the stacks see real delay and real loss.
//! - The parent process (the client) spawns the server by running this binary again with
//!   the hidden `--role server` option, once per controller, and runs the client itself.
//! - Per controller the client measures, on connection A, back-to-back ping-pong of 64 B
//!   messages: first with the path idle, then while connection B (same stack, same
//!   bottleneck) sends 1 MiB messages back to back (a few outstanding). Samples of the
//!   loaded phase are taken after a warm-up. It reports the ping-pong RTT percentiles idle
//!   and loaded, the bulk goodput (messages the peer acknowledged completely during the
//!   loaded measurement), B's retransmissions and the bottleneck's drops.
//! - Both stacks use the controller under test for every connection. Swift's fabric target
//!   is configured for the emulated path (see [`swift_config`]).
//! - Nothing here is on a library data path; the measuring loop allocates only when a
//!   sample vector grows past its preallocated size.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use bypass::mem::{PktBuf, PoolExhausted};
use bypass::pmd::faults::{Delay, FaultConfig, FaultSpec, Faults, RateLimit};
use bypass::pmd::memif::{InterfaceConfig, Memif, MemifConfig, MemifPort, Role};
use bypass::pmd::{Link, Port, PortInfo, PortStats};
use bypass::proto::cc::cubic::CubicFactory;
use bypass::proto::cc::dctcp::DctcpFactory;
use bypass::proto::cc::swift::{SwiftConfig, SwiftFactory};
use bypass::proto::cc::timely::{TimelyConfig, TimelyFactory};
use bypass::proto::cc::{ControllerFactory, FixedWindowFactory};
use bypass::proto::ConnectionConfig;
use bypass::socket::{Backend, Socket, Stack, DEFAULT_UDP_PORT};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const SERVER_MAC: [u8; 6] = [0x02, 0xb9, 0x77, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0xb9, 0x77, 0, 0, 2];
/// Ethernet preamble, start delimiter, FCS and inter-frame gap, counted by the rate limit.
const WIRE_OVERHEAD: u32 = 24;
/// Ping-pong message size.
const PING: usize = 64;
/// Messages at most this long are echoed by the server; longer ones are bulk and dropped.
const ECHO_MAX: usize = 256;

/// The controllers `--cc` knows.
const CCS: [&str; 5] = ["swift", "cubic", "dctcp", "timely", "fixed"];

fn parse_cc(s: &str) -> Result<String, String> {
    let s = s.trim();
    if CCS.contains(&s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "unknown controller {s} (known: {})",
            CCS.join(", ")
        ))
    }
}

/// The longer description of `bypass sim path --help`.
pub const ABOUT: &str = "Congestion control on an emulated path: two processes, memif between \
    them, each side's transmit shaped by the faults wrapper (rate limit + bounded queue + \
    delay). For each controller: 64 B ping-pong RTT on connection A idle, then while connection \
    B sends 1 MiB messages back to back through the same bottleneck.";

/// `bypass sim path` options.
#[derive(clap::Args, Debug)]
pub struct PathArgs {
    /// Controllers, comma-separated
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_cc,
          default_value = "swift,cubic,dctcp,timely,fixed")]
    pub cc: Vec<String>,
    /// Bottleneck rate, Mb/s on the wire
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub rate_mbps: u64,
    /// One-way propagation delay
    #[arg(long, value_name = "TIME", default_value = "25us", value_parser = super::duration::parse)]
    pub delay: Duration,
    /// Bottleneck queue, frames; tail drop beyond
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub queue: usize,
    /// IP MTU (at least 576)
    #[arg(long, value_name = "N", default_value_t = 1500,
          value_parser = clap::value_parser!(u16).range(576..))]
    pub mtu: u16,
    /// Idle ping-pong measurement
    #[arg(long, value_name = "TIME", default_value = "1s", value_parser = super::duration::parse)]
    pub idle: Duration,
    /// Bulk warm-up before the loaded measurement
    #[arg(long, value_name = "TIME", default_value = "500ms", value_parser = super::duration::parse)]
    pub warm: Duration,
    /// Loaded ping-pong measurement
    #[arg(long, value_name = "TIME", default_value = "2s", value_parser = super::duration::parse)]
    pub load: Duration,
    /// Bulk message size (more than 256)
    #[arg(long, value_name = "N", default_value_t = 1 << 20,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(ECHO_MAX as u64 + 1..))]
    pub bulk_bytes: usize,
    /// Bulk messages outstanding
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub bulk_depth: u64,
    /// Swift: host processing allowed in the fabric target
    #[arg(long, value_name = "TIME", default_value = "30us", value_parser = super::duration::parse)]
    pub host_slack: Duration,
    /// Also write the rows as CSV
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Do not pin the two processes to cores 0 and 1
    #[arg(long)]
    pub no_pin: bool,
    /// The server process the client spawns (internal)
    #[arg(long, hide = true, value_parser = ["server"])]
    pub role: Option<String>,
    /// The server's memif socket (internal, with --role)
    #[arg(long, hide = true, requires = "role")]
    pub socket: Option<PathBuf>,
}

/// Options shared by both roles.
#[derive(Debug, Clone)]
struct Opts {
    ccs: Vec<String>,
    rate_mbps: u64,
    delay: Duration,
    queue: usize,
    mtu: u16,
    idle: Duration,
    warm: Duration,
    load: Duration,
    bulk_bytes: usize,
    bulk_depth: u64,
    host_slack: Duration,
    csv: Option<PathBuf>,
    pin: bool,
    role: Option<Role>,
    socket: Option<PathBuf>,
}

impl From<&PathArgs> for Opts {
    fn from(a: &PathArgs) -> Opts {
        Opts {
            ccs: a.cc.clone(),
            rate_mbps: a.rate_mbps,
            delay: a.delay,
            queue: a.queue,
            mtu: a.mtu,
            idle: a.idle,
            warm: a.warm,
            load: a.load,
            bulk_bytes: a.bulk_bytes,
            bulk_depth: a.bulk_depth,
            host_slack: a.host_slack,
            csv: a.csv.clone(),
            pin: !a.no_pin,
            role: a.role.as_ref().map(|_| Role::Server),
            socket: a.socket.clone(),
        }
    }
}

/// Serialisation time of one full frame at the bottleneck.
fn serialisation(o: &Opts) -> Duration {
    let bits = (u64::from(o.mtu) + 14 + u64::from(WIRE_OVERHEAD)) * 8;
    Duration::from_nanos(bits * 1000 / o.rate_mbps)
}

/// Swift configured for the emulated path: the fabric target's base is the propagation RTT
/// plus one full frame's serialisation (the data packet's own; the ACK's is negligible)
/// plus `host_slack` (time the two poll loops take to turn a packet around, which the
/// receiver's echoed hold time does not cover); one hop whose allowance is one more frame
/// of queue at the bottleneck. The host (endpoint) target is `host_slack`: the echoed hold
/// time no longer includes the receiver's deliberate ACK delay (docs/WIRE.md, ACK), so it
/// needs no allowance for it. The line rate is the bottleneck's (it caps pacing and sets the
/// burst).
pub fn swift_config(
    rate_bps: u64,
    delay: Duration,
    frame: Duration,
    slack: Duration,
) -> SwiftConfig {
    SwiftConfig {
        base_target: Some(2 * delay + frame + slack),
        hops: 1,
        per_hop: frame,
        host_target: slack,
        line_rate_bps: rate_bps,
        ..SwiftConfig::default()
    }
}

fn factory(name: &str, o: &Opts) -> Option<Arc<dyn ControllerFactory>> {
    let rate_bps = o.rate_mbps * 1_000_000;
    Some(match name {
        "swift" => Arc::new(SwiftFactory {
            config: swift_config(rate_bps, o.delay, serialisation(o), o.host_slack),
        }),
        "cubic" => Arc::new(CubicFactory::default()),
        "dctcp" => Arc::new(DctcpFactory::default()),
        "timely" => Arc::new(TimelyFactory {
            config: TimelyConfig {
                line_rate_bps: rate_bps,
                ..TimelyConfig::default()
            },
        }),
        // The former default window (64 packets): the reference without congestion control.
        "fixed" => Arc::new(FixedWindowFactory { packets: 64 }),
        _ => return None,
    })
}

fn fault_config(o: &Opts, seed: u64) -> FaultConfig {
    let tx = FaultSpec {
        rate: Some(RateLimit {
            bits_per_sec: o.rate_mbps * 1_000_000,
            burst_bytes: u32::from(o.mtu) + 14 + WIRE_OVERHEAD,
            queue_frames: o.queue,
            overhead_bytes: WIRE_OVERHEAD,
        }),
        delay: (!o.delay.is_zero()).then_some(Delay {
            ns: u64::try_from(o.delay.as_nanos()).unwrap_or(u64::MAX),
            jitter_ns: 0,
        }),
        // Frames in flight on the "wire": far more than rate x delay ever holds.
        queue_frames: 512,
        ..FaultSpec::default()
    };
    FaultConfig {
        seed,
        tx,
        rx: FaultSpec::default(),
    }
}

/// The faults wrapper plus a shared copy of its drop counter (the wrapper itself goes into
/// the stack as a `Box<dyn Port>`).
struct Bottleneck {
    f: Faults<MemifPort>,
    drops: Arc<AtomicU64>,
}

impl Bottleneck {
    fn publish(&self) {
        let s = self.f.fault_stats().tx;
        self.drops
            .store(s.rate_dropped + s.overflow_dropped, Ordering::Relaxed);
    }
}

impl Port for Bottleneck {
    fn info(&self) -> PortInfo {
        self.f.info()
    }
    fn link(&mut self) -> Link {
        self.f.link()
    }
    fn rx_burst(&mut self, out: &mut Vec<PktBuf>, max: usize) -> usize {
        let n = self.f.rx_burst(out, max);
        self.publish();
        n
    }
    fn tx_burst(&mut self, pkts: &mut Vec<PktBuf>) -> usize {
        let n = self.f.tx_burst(pkts);
        self.publish();
        n
    }
    fn alloc_tx(&mut self) -> Result<PktBuf, PoolExhausted> {
        self.f.alloc_tx()
    }
    fn stats(&self) -> PortStats {
        self.f.stats()
    }
}

/// One side: the memif control object (kept alive while the stack runs), the stack and the
/// bottleneck's drop counter.
struct Side {
    stack: Stack,
    drops: Arc<AtomicU64>,
    // Declared after `stack`: dropped after it.
    _memif: Memif,
}

fn side(
    o: &Opts,
    role: Role,
    socket: &Path,
    cc: &str,
    on_listening: impl FnOnce(),
) -> Result<Side, String> {
    let (ip, mac, peer_ip, peer_mac, core) = match role {
        Role::Server => (SERVER_IP, SERVER_MAC, CLIENT_IP, CLIENT_MAC, 1),
        Role::Client => (CLIENT_IP, CLIENT_MAC, SERVER_IP, SERVER_MAC, 0),
    };
    let mut ic = InterfaceConfig::new(0);
    ic.buffer_size = (u32::from(o.mtu) + 14).div_ceil(64) * 64;
    ic.mac = mac;
    let mut mc = MemifConfig::new(socket, role, 0);
    mc.interfaces = vec![ic];
    let memif = Memif::new(mc).map_err(|e| format!("memif {}: {e}", socket.display()))?;
    on_listening();
    let port = memif.port(0, 0).map_err(|e| format!("memif port: {e}"))?;
    let drops = Arc::new(AtomicU64::new(0));
    let seed = if role == Role::Server { 2 } else { 1 };
    let f = Faults::new(port, fault_config(o, seed)).map_err(|e| format!("faults: {e}"))?;
    let bn = Bottleneck {
        f,
        drops: drops.clone(),
    };
    let cc = factory(cc, o).ok_or(format!("unknown controller {cc}"))?;
    let conn = ConnectionConfig {
        max_datagram: u32::from(o.mtu) - 28,
        max_message: 1 << 30,
        ..ConnectionConfig::default()
    };
    let mut b = Stack::builder(Backend::Port(Box::new(bn)), ip)
        .idle_poll(bypass::socket::IdlePoll::Spin)
        .mac(mac)
        .mtu(o.mtu)
        .static_arp(peer_ip, peer_mac)
        .connection_config(conn)
        .controller(cc)
        .link_timeout(Duration::from_secs(10));
    if o.pin && std::thread::available_parallelism().map_or(1, |n| n.get()) > core {
        b = b.pin_core(core);
    }
    let stack = b.build().map_err(|e| format!("stack: {e}"))?;
    Ok(Side {
        stack,
        drops,
        _memif: memif,
    })
}

/// The server process: accept connections; echo short messages, swallow long ones; exit
/// when every accepted connection has closed (or after a generous deadline).
fn server(o: &Opts, cc: &str) -> Result<(), String> {
    let socket = o.socket.clone().ok_or("--socket is required with --role")?;
    let _ = std::fs::remove_file(&socket);
    // Tell the parent once the socket is served (the stack then waits for the link).
    let s = side(o, Role::Server, &socket, cc, || {
        println!("ready");
        let _ = std::io::stdout().flush();
    })?;
    let listener = s.stack.listen();
    let total = o.idle + o.warm + o.load;
    let deadline = Instant::now() + total + Duration::from_secs(30);
    let mut socks: Vec<Socket> = Vec::new();
    let mut accepted = 0;
    let mut bulk_msgs = 0u64;
    while Instant::now() < deadline {
        s.stack.poll();
        if let Some(sock) = listener.try_accept() {
            accepted += 1;
            sock.set_timeout(Some(Duration::from_secs(5)));
            socks.push(sock);
        }
        let mut k = 0;
        while k < socks.len() {
            match socks[k].try_recv() {
                Ok(Some(m)) if m.len() <= ECHO_MAX => {
                    if socks[k].send_bytes(m).is_err() {
                        socks.swap_remove(k);
                        continue;
                    }
                }
                Ok(Some(_)) => bulk_msgs += 1,
                Ok(None) => {}
                Err(_) => {
                    socks.swap_remove(k);
                    continue;
                }
            }
            k += 1;
        }
        if accepted >= 2 && socks.is_empty() {
            break;
        }
    }
    let _ = std::fs::remove_file(&socket);
    eprintln!(
        "path server ({cc}): {bulk_msgs} bulk messages received, {} frames dropped at this side's bottleneck",
        s.drops.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Percentile `q` (0..1) of sorted nanosecond samples, in microseconds.
fn pct(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

/// One controller's results.
#[derive(Debug, Clone)]
struct Row {
    cc: String,
    idle: [f64; 3],
    loaded: [f64; 3],
    idle_n: usize,
    loaded_n: usize,
    goodput_gbps: f64,
    bulk_retx: u64,
    ping_retx: u64,
    drops: u64,
}

/// The bulk sender on connection B: keeps `depth` messages outstanding.
struct Bulk<'a> {
    sock: &'a Socket,
    msg: Bytes,
    depth: u64,
    sent: u64,
}

impl Bulk<'_> {
    fn feed(&mut self) -> Result<(), String> {
        while self.sent - self.sock.acked() < self.depth {
            let mut m = Some(self.msg.clone());
            match self.sock.try_send(&mut m) {
                Ok(Some(_)) => self.sent += 1,
                Ok(None) => break,
                Err(e) => return Err(format!("bulk send: {e}")),
            }
        }
        Ok(())
    }
}

/// Ping-pong on `a` for `dur`, feeding `bulk` between polls; RTTs (ns) go to `samples`
/// when given.
fn pingpong(
    a: &Socket,
    mut bulk: Option<&mut Bulk<'_>>,
    dur: Duration,
    mut samples: Option<&mut Vec<u64>>,
) -> Result<(), String> {
    let ping = Bytes::from(vec![0x5au8; PING]);
    let end = Instant::now() + dur;
    while Instant::now() < end {
        let t0 = Instant::now();
        a.send_bytes(ping.clone())
            .map_err(|e| format!("ping send: {e}"))?;
        loop {
            if let Some(b) = bulk.as_deref_mut() {
                b.feed()?;
            }
            match a.try_recv() {
                Ok(Some(m)) if m.len() == PING => break,
                Ok(Some(m)) => return Err(format!("ping-pong: echo of {} bytes", m.len())),
                Ok(None) => {}
                Err(e) => return Err(format!("ping recv: {e}")),
            }
            if t0.elapsed() > Duration::from_secs(5) {
                return Err("ping-pong: no echo within 5 s".into());
            }
        }
        if let Some(s) = samples.as_deref_mut() {
            s.push(t0.elapsed().as_nanos() as u64);
        }
    }
    Ok(())
}

fn client(o: &Opts, cc: &str, socket: &Path) -> Result<Row, String> {
    let s = side(o, Role::Client, socket, cc, || {})?;
    let server = SocketAddrV4::new(SERVER_IP, DEFAULT_UDP_PORT);
    let a = s
        .stack
        .connect(server, Duration::from_secs(5))
        .map_err(|e| format!("connect A: {e}"))?;
    let b = s
        .stack
        .connect(server, Duration::from_secs(5))
        .map_err(|e| format!("connect B: {e}"))?;
    a.set_timeout(Some(Duration::from_secs(5)));
    b.set_timeout(Some(Duration::from_secs(5)));

    // Idle: a short warm-up (caches, first RTT samples), then the measurement.
    pingpong(&a, None, Duration::from_millis(50), None)?;
    let mut idle = Vec::with_capacity(1 << 20);
    pingpong(&a, None, o.idle, Some(&mut idle))?;

    // Loaded: B sends back to back; warm-up, then the measurement.
    let mut bulk = Bulk {
        sock: &b,
        msg: Bytes::from(vec![0xb7u8; o.bulk_bytes]),
        depth: o.bulk_depth.max(1),
        sent: 0,
    };
    let b_retx0 = b.stats().map_or(0, |s| s.retransmits);
    let a_retx0 = a.stats().map_or(0, |s| s.retransmits);
    pingpong(&a, Some(&mut bulk), o.warm, None)?;
    let acked0 = b.acked();
    let t0 = Instant::now();
    let mut loaded = Vec::with_capacity(1 << 20);
    pingpong(&a, Some(&mut bulk), o.load, Some(&mut loaded))?;
    let secs = t0.elapsed().as_secs_f64();
    let acked = b.acked() - acked0;
    let bulk_retx = b.stats().map_or(0, |s| s.retransmits) - b_retx0;
    let ping_retx = a.stats().map_or(0, |s| s.retransmits) - a_retx0;
    let drops = s.drops.load(Ordering::Relaxed);
    if std::env::var_os("BYPASS_PATH_DEBUG").is_some() {
        eprintln!(
            "{cc} A: {:?}\n{cc} B: {:?}\n{cc} stack: {:?}",
            a.stats(),
            b.stats(),
            s.stack.stats()
        );
    }
    let _ = a.close();
    drop(b);
    s.stack.poll_for(Duration::from_millis(20));

    idle.sort_unstable();
    loaded.sort_unstable();
    let p = |v: &[u64]| [pct(v, 0.5), pct(v, 0.99), pct(v, 0.999)];
    Ok(Row {
        cc: cc.to_string(),
        idle: p(&idle),
        loaded: p(&loaded),
        idle_n: idle.len(),
        loaded_n: loaded.len(),
        goodput_gbps: acked as f64 * o.bulk_bytes as f64 * 8.0 / secs / 1e9,
        bulk_retx,
        ping_retx,
        drops,
    })
}

/// Spawn this binary as the server for `cc` and wait for it to serve the socket.
fn spawn_server(o: &Opts, cc: &str, socket: &Path) -> Result<Child, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(super::log::child_args());
    cmd.args(["sim", "path", "--role", "server", "--cc", cc]);
    cmd.arg("--socket").arg(socket);
    let dur = super::duration::format;
    for (k, v) in [
        ("--rate-mbps", o.rate_mbps.to_string()),
        ("--delay", dur(o.delay)),
        ("--queue", o.queue.to_string()),
        ("--mtu", o.mtu.to_string()),
        ("--idle", dur(o.idle)),
        ("--warm", dur(o.warm)),
        ("--load", dur(o.load)),
        ("--bulk-bytes", o.bulk_bytes.to_string()),
        ("--host-slack", dur(o.host_slack)),
    ] {
        cmd.arg(k).arg(v);
    }
    if !o.pin {
        cmd.arg("--no-pin");
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("spawn server: {e}"))?;
    let out = child.stdout.take().ok_or("server stdout")?;
    let mut line = String::new();
    let _ = BufReader::new(out).read_line(&mut line);
    if line.trim() != "ready" {
        let _ = child.kill();
        let _ = child.wait();
        return Err("server process did not start (see its error above)".into());
    }
    Ok(child)
}

fn reap(mut child: Child) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
        }
    }
}

fn run(o: &Opts) -> Result<Vec<Row>, String> {
    let dir = std::env::temp_dir();
    let mut rows = Vec::new();
    for cc in &o.ccs {
        let socket = dir.join(format!("bypass-path-{}-{cc}.sock", std::process::id()));
        let child = spawn_server(o, cc, &socket)?;
        // The client runs on its own thread: the stack pins the thread it is built on, and
        // the next server must be spawned from an unpinned thread (a child inherits the
        // affinity, and its memif control thread would share the client's core).
        let r = std::thread::scope(|sc| {
            sc.spawn(|| client(o, cc, &socket))
                .join()
                .unwrap_or_else(|_| Err("client thread panicked".into()))
        });
        reap(child);
        let _ = std::fs::remove_file(&socket);
        let row = r.map_err(|e| format!("{cc}: {e}"))?;
        eprintln!(
            "{cc}: idle p50 {:.1} us, loaded p50 {:.1} us, bulk {:.3} Gb/s",
            row.idle[0], row.loaded[0], row.goodput_gbps
        );
        rows.push(row);
    }
    Ok(rows)
}

fn header(o: &Opts) -> String {
    format!(
        "path: {} Mb/s bottleneck, {} frames of queue (tail drop), {} one way, MTU {}, \
         frame serialisation {:.1} us; bulk {} B messages, {} outstanding; idle {}, \
         warm-up {}, loaded {}\n\
         RTT = 64 B ping-pong on connection A (us); goodput = connection B's acknowledged \
         messages; retx = B's retransmitted packets (A's in brackets); drops = frames the \
         client's bottleneck dropped",
        o.rate_mbps,
        o.queue,
        super::duration::format(o.delay),
        o.mtu,
        serialisation(o).as_nanos() as f64 / 1000.0,
        o.bulk_bytes,
        o.bulk_depth,
        super::duration::format(o.idle),
        super::duration::format(o.warm),
        super::duration::format(o.load)
    )
}

fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| cc | idle p50 | idle p99 | idle p99.9 | loaded p50 | loaded p99 | loaded p99.9 | \
         bulk Gb/s | retx | drops | samples idle/loaded |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.3} | {} ({}) | {} | {}/{} |\n",
            r.cc,
            r.idle[0],
            r.idle[1],
            r.idle[2],
            r.loaded[0],
            r.loaded[1],
            r.loaded[2],
            r.goodput_gbps,
            r.bulk_retx,
            r.ping_retx,
            r.drops,
            r.idle_n,
            r.loaded_n
        ));
    }
    s
}

fn csv(rows: &[Row]) -> String {
    let mut s = String::from(
        "cc,idle_p50_us,idle_p99_us,idle_p999_us,loaded_p50_us,loaded_p99_us,loaded_p999_us,\
         goodput_gbps,bulk_retx,ping_retx,drops,idle_samples,loaded_samples\n",
    );
    for r in rows {
        s.push_str(&format!(
            "{},{:.2},{:.2},{:.2},{:.2},{:.2},{:.2},{:.4},{},{},{},{},{}\n",
            r.cc,
            r.idle[0],
            r.idle[1],
            r.idle[2],
            r.loaded[0],
            r.loaded[1],
            r.loaded[2],
            r.goodput_gbps,
            r.bulk_retx,
            r.ping_retx,
            r.drops,
            r.idle_n,
            r.loaded_n
        ));
    }
    s
}

/// `bypass sim path`.
pub fn main(args: &PathArgs) -> ExitCode {
    let o = Opts::from(args);
    if o.role == Some(Role::Server) {
        let cc = o.ccs.first().cloned().unwrap_or_default();
        return match server(&o, &cc) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bypass sim path (server): {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run(&o) {
        Ok(rows) => {
            println!("{}\n\n{}", header(&o), table(&rows));
            if let Some(p) = &o.csv {
                if let Err(e) = std::fs::write(p, csv(&rows)) {
                    eprintln!("bypass sim path: {}: {e}", p.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bypass sim path: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: PathArgs,
    }

    fn parse(s: &str) -> Result<Opts, clap::Error> {
        T::try_parse_from(std::iter::once("path").chain(s.split_whitespace()))
            .map(|t| Opts::from(&t.a))
    }

    #[test]
    fn parses_and_rejects() {
        let o = parse("--cc swift,cubic --rate-mbps 2000 --queue 64 --delay 10us").unwrap();
        assert_eq!(o.ccs, ["swift", "cubic"]);
        assert_eq!(o.rate_mbps, 2000);
        assert_eq!(o.queue, 64);
        assert_eq!(o.delay, Duration::from_micros(10));
        let d = parse("").unwrap();
        assert_eq!(d.ccs, CCS);
        assert_eq!(
            (d.idle, d.warm, d.load, d.host_slack),
            (
                Duration::from_secs(1),
                Duration::from_millis(500),
                Duration::from_secs(2),
                Duration::from_micros(30)
            )
        );
        let e = parse("--cc bogus").unwrap_err().to_string();
        assert!(e.contains("unknown controller bogus"), "{e}");
        assert!(parse("--rate-mbps 0").is_err());
        assert!(parse("--queue").is_err());
        assert!(parse("--mtu 500").is_err());
        assert!(parse("--bulk-bytes 256").is_err());
        assert!(parse("--idle 50").is_err());
    }

    #[test]
    fn swift_target_fits_the_path() {
        let o = parse("").unwrap();
        // 1500 + 14 + 24 bytes at 1 Gb/s: 12.304 us.
        assert_eq!(serialisation(&o), Duration::from_nanos(12_304));
        let c = swift_config(
            1_000_000_000,
            Duration::from_micros(25),
            serialisation(&o),
            Duration::from_micros(30),
        );
        assert_eq!(c.base_target, Some(Duration::from_nanos(92_304)));
        assert_eq!(c.per_hop, Duration::from_nanos(12_304));
        assert_eq!(c.line_rate_bps, 1_000_000_000);
    }

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=1000).map(|x| x * 1000).collect();
        assert_eq!(pct(&v, 0.5), 500.0);
        assert_eq!(pct(&v, 0.99), 990.0);
        assert_eq!(pct(&v, 0.999), 999.0);
        assert!(pct(&[], 0.5).is_nan());
    }
}
