//! `bypass bench kv`: a key-value service's GETs, N connections served from ONE client
//! thread, over bypass (memif) and over the kernel's TCP with epoll, in one run.
//!
//! Both ends run in this process: the server on a thread of its own (pinned to
//! `--server-core`), the client on the calling thread (pinned to `--client-core`).
//!
//! - bypass-memif: the server is one stack serving every connection from one thread with
//!   `Stack::poll_ready`, the store keeps the PUT messages as received (`Bytes`) and answers a
//!   GET with `send_bytes` of a slice of one (no copy): the protocol of examples/kv_server.rs.
//!   The client is one stack with N sockets, driven by `poll_ready` too. Both spin
//!   (`IdlePoll::Spin`), as every bypass benchmark does; `--bypass-sleep` lets the server
//!   sleep when idle, as the kernel's does (on a loaded machine a spinning thread waits for
//!   its core, which open-loop latencies count).
//! - kernel-tcp: one epoll server thread with N non-blocking connections (level-triggered;
//!   it sleeps in `epoll_wait`, or spins with `--kernel-busy`), and one client thread with N
//!   non-blocking connections on an epoll set it spins on (`epoll_wait` with a zero timeout).
//!   Messages are framed with a 4-byte length; the requests and responses are the same bytes.
//!
//! The store is first filled with `--keys` PUTs of `--value` bytes; then GETs go round the keys
//! and the connections, at each `--rates` entry: `max` keeps one request outstanding on every
//! connection (closed loop: the throughput), a rate offers that many requests per second over
//! all connections together (open loop: request k is due at `k / rate` and its latency counts
//! from that due time, so a stall cannot hide).
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use bypass::pmd::memif::Role;
use bypass::socket::{Backend, IdlePoll, Socket, Stack, DEFAULT_UDP_PORT};
use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use rustix::event::epoll;
use serde::Serialize;

use super::modes::new_histogram;

/// `bypass bench kv` on the command line.
#[derive(clap::Args, Debug)]
pub struct KvArgs {
    /// Connections, all from one client thread; one run per entry
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "1,64",
          value_parser = conns_arg)]
    conns: Vec<usize>,
    /// Value size (the GET responses; the PUTs that fill the store)
    #[arg(long, value_name = "SIZE", default_value = "4k", value_parser = super::size_arg)]
    value: usize,
    /// Keys PUT before the GETs
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    keys: usize,
    /// Offered GETs: `max` (closed loop, one outstanding per connection) or requests/s over
    /// all connections (open loop), e.g. max,20k
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "max,20k",
          value_parser = load_arg)]
    rates: Vec<Load>,
    /// Measured time per cell
    #[arg(long, value_name = "TIME", default_value = "1s", value_parser = crate::duration::parse)]
    duration: Duration,
    /// Unmeasured time before each cell
    #[arg(long, value_name = "TIME", default_value = "200ms", value_parser = crate::duration::parse)]
    warmup: Duration,
    /// Only these: bypass-memif, kernel-tcp
    #[arg(long, value_name = "LIST", value_delimiter = ',',
          default_value = "bypass-memif,kernel-tcp", value_parser = ["bypass-memif", "kernel-tcp"])]
    transports: Vec<String>,
    /// kernel-tcp: the server spins on epoll_wait (default: it sleeps in it)
    #[arg(long)]
    kernel_busy: bool,
    /// bypass-memif: the server stack sleeps when idle (`IdlePoll::Sleep`, woken by the memif
    /// interrupt; default: it spins), as the kernel's server sleeps in epoll_wait
    #[arg(long)]
    bypass_sleep: bool,
    /// Core of the client thread
    #[arg(long, value_name = "N", default_value_t = 0)]
    client_core: usize,
    /// Core of the server thread
    #[arg(long, value_name = "N", default_value_t = 1)]
    server_core: usize,
    /// Pin nothing
    #[arg(long)]
    no_pin: bool,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

/// Offered load of a cell.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    /// Closed loop: one request outstanding on every connection.
    Max,
    /// Open loop: requests per second over all connections.
    Rate(f64),
}

fn conns_arg(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=4000).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a number of connections (1 to 4000)")),
    }
}

fn load_arg(s: &str) -> Result<Load, String> {
    if s.trim() == "max" {
        return Ok(Load::Max);
    }
    super::rate_arg(s).map(Load::Rate)
}

/// One cell's result (the JSON rows).
#[derive(Debug, Serialize)]
pub struct KvRow {
    /// bypass-memif or kernel-tcp.
    pub transport: &'static str,
    /// Connections from the one client thread.
    pub conns: usize,
    /// Offered load.
    pub load: Load,
    /// Value bytes of each GET response.
    pub value: usize,
    /// GETs answered per second in the measured window.
    pub ops_per_s: f64,
    /// GETs sent in the measured window.
    pub sent: u64,
    /// Of those, answered before the drain deadline.
    pub received: u64,
    /// Latency percentiles, ns (open loop: from each request's due time).
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// 99.9th percentile, ns.
    pub p999_ns: u64,
    /// Largest, ns.
    pub max_ns: u64,
    /// Open loop: how far the client's sends fell behind their schedule at worst, ns (a
    /// client thread waiting for its core shows here).
    pub late_ns: u64,
    /// Why the cell failed, if it did.
    pub error: Option<String>,
}

/// The JSON of a run.
#[derive(Debug, Serialize)]
struct KvReport {
    mode: &'static str,
    git_rev: &'static str,
    date_utc: String,
    command_line: Vec<String>,
    /// /proc/loadavg when the run started (the machine's state: a loaded machine's spinning
    /// threads wait for a core, which open-loop latencies count).
    loadavg_start: String,
    value: usize,
    keys: usize,
    duration_s: f64,
    warmup_s: f64,
    kernel_server_wait: &'static str,
    bypass_server_wait: &'static str,
    machine: String,
    rows: Vec<KvRow>,
}

/// `bypass bench kv`.
pub fn main(a: &KvArgs, quiet: bool) -> std::process::ExitCode {
    let date_utc = super::meta::rfc3339(std::time::SystemTime::now());
    let loadavg_start = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mut rows = Vec::new();
    for t in &a.transports {
        for &n in &a.conns {
            for &load in &a.rates {
                if !quiet {
                    eprintln!("bench kv: {t}, {n} connections, {load:?} ...");
                }
                let r = match t.as_str() {
                    "bypass-memif" => cell_bypass(a, n, load),
                    _ => cell_kernel(a, n, load),
                };
                rows.push(r.unwrap_or_else(|e| KvRow {
                    transport: if t == "bypass-memif" { BYPASS } else { KERNEL },
                    conns: n,
                    load,
                    value: a.value,
                    ops_per_s: 0.0,
                    sent: 0,
                    received: 0,
                    p50_ns: 0,
                    p99_ns: 0,
                    p999_ns: 0,
                    max_ns: 0,
                    late_ns: 0,
                    error: Some(e),
                }));
            }
        }
    }
    let failed = rows.iter().any(|r| r.error.is_some());
    if a.json {
        let rep = KvReport {
            mode: "kv",
            git_rev: super::meta::git_rev(),
            date_utc,
            command_line: std::env::args().collect(),
            loadavg_start,
            value: a.value,
            keys: a.keys,
            duration_s: a.duration.as_secs_f64(),
            warmup_s: a.warmup.as_secs_f64(),
            kernel_server_wait: if a.kernel_busy {
                "busy-poll"
            } else {
                "blocking"
            },
            bypass_server_wait: if a.bypass_sleep { "sleep" } else { "spin" },
            machine: super::machine(),
            rows,
        };
        match serde_json::to_string_pretty(&rep) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("bypass bench kv: {e}"),
        }
    } else {
        println!(
            "kv GET of {} B values ({} keys), N connections from one client thread; {date_utc}, \
             load average at start {loadavg_start}",
            a.value, a.keys
        );
        println!(
            "{:<13} {:>5} {:>8} {:>12} {:>10} {:>10} {:>10} {:>10} {:>10}  note",
            "transport", "conns", "offered", "GET/s", "p50", "p99", "p99.9", "max", "late"
        );
        for r in &rows {
            let offered = match r.load {
                Load::Max => "max".to_string(),
                Load::Rate(x) => format!("{:.0}k", x / 1e3),
            };
            let us = |ns: u64| format!("{:.1}us", ns as f64 / 1e3);
            let note = match (&r.error, r.sent - r.received) {
                (Some(e), _) => format!("error: {e}"),
                (None, 0) => String::new(),
                (None, lost) => format!("{lost} unanswered"),
            };
            println!(
                "{:<13} {:>5} {:>8} {:>12.0} {:>10} {:>10} {:>10} {:>10} {:>10}  {note}",
                r.transport,
                r.conns,
                offered,
                r.ops_per_s,
                us(r.p50_ns),
                us(r.p99_ns),
                us(r.p999_ns),
                us(r.max_ns),
                if r.load == Load::Max {
                    "-".into()
                } else {
                    us(r.late_ns)
                }
            );
        }
    }
    if failed {
        eprintln!("bypass bench kv: some cells failed (see the rows with an error)");
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

const BYPASS: &str = "bypass-memif";
const KERNEL: &str = "kernel-tcp";
const SETUP: Duration = Duration::from_secs(30);
/// How long the client waits for the last responses.
const DRAIN: Duration = Duration::from_secs(2);
const OK: u8 = 0;

/// The store of both servers: key -> the PUT message and where its value starts (after the
/// 0x00 that is the GET response's status). The protocol of examples/kv_server.rs.
#[derive(Default)]
struct Store(HashMap<Bytes, (Bytes, usize)>);

impl Store {
    fn handle(&mut self, req: Bytes) -> Bytes {
        const BAD: &[u8] = &[2];
        if req.len() < 3 {
            return Bytes::from_static(BAD);
        }
        let klen = u16::from_le_bytes([req[1], req[2]]) as usize;
        let Some(end) = 3usize.checked_add(klen).filter(|&e| e <= req.len()) else {
            return Bytes::from_static(BAD);
        };
        let key = req.slice(3..end);
        match req[0] {
            b'P' if req.get(end) == Some(&OK) => {
                self.0.insert(key, (req, end));
                Bytes::from_static(&[OK])
            }
            b'G' => match self.0.get(&key) {
                Some((put, at)) => put.slice(*at..),
                None => Bytes::from_static(&[1]),
            },
            _ => Bytes::from_static(BAD),
        }
    }
}

fn key(k: usize) -> String {
    format!("key{k:07}")
}

fn put_request(k: usize, len: usize) -> Bytes {
    let key = key(k);
    let mut m = BytesMut::with_capacity(4 + key.len() + len);
    m.put_u8(b'P');
    m.put_u16_le(key.len() as u16);
    m.put_slice(key.as_bytes());
    m.put_u8(OK);
    m.extend((0..len).map(|i| (i as u8) ^ (k as u8)));
    m.freeze()
}

fn get_request(k: usize) -> Bytes {
    let key = key(k);
    let mut m = BytesMut::with_capacity(3 + key.len());
    m.put_u8(b'G');
    m.put_u16_le(key.len() as u16);
    m.put_slice(key.as_bytes());
    m.freeze()
}

/// The client side of a cell: N connections driven by the one calling thread.
trait KvClient {
    fn conns(&self) -> usize;
    /// Sends `req` on connection `c` (queued, never waiting for the answer).
    fn send(&mut self, c: usize, req: &Bytes) -> Result<(), String>;
    /// One look at every connection: the responses that arrived, as (connection, length,
    /// status), into `out` (cleared first).
    fn poll(&mut self, out: &mut Vec<(usize, usize, u8)>) -> Result<(), String>;
}

/// Fill the store, then the cell's GETs.
fn drive(
    cl: &mut dyn KvClient,
    a: &KvArgs,
    load: Load,
    transport: &'static str,
) -> Result<KvRow, String> {
    let n = cl.conns();
    let mut got = Vec::new();
    // Fill: one PUT outstanding per connection.
    let mut next_key = 0;
    let mut outstanding = 0;
    let fill_end = Instant::now() + SETUP;
    while next_key < a.keys || outstanding > 0 {
        if outstanding == 0 {
            for c in 0..n.min(a.keys - next_key) {
                cl.send(c, &put_request(next_key, a.value))?;
                next_key += 1;
                outstanding += 1;
            }
        }
        cl.poll(&mut got)?;
        for &(c, len, status) in &got {
            if len != 1 || status != OK {
                return Err(format!("PUT on connection {c}: status {status}, {len} B"));
            }
            outstanding -= 1;
        }
        if Instant::now() > fill_end {
            return Err(format!("the {} PUTs took over {SETUP:?}", a.keys));
        }
    }
    let gets: Vec<Bytes> = (0..a.keys).map(get_request).collect();
    let mut hist: Histogram<u64> = new_histogram();
    let mut due: Vec<VecDeque<Instant>> = vec![VecDeque::new(); n];
    let start = Instant::now();
    let measure_from = start + a.warmup;
    let end = measure_from + a.duration;
    let (mut sent, mut received, mut k) = (0u64, 0u64, 0usize);
    let mut send = |cl: &mut dyn KvClient, c: usize, at: Instant, due: &mut [VecDeque<Instant>]| {
        let r = cl.send(c, &gets[k % gets.len()]);
        k += 1;
        due[c].push_back(at);
        r.map(|()| at >= measure_from)
    };
    if load == Load::Max {
        let now = Instant::now();
        for c in 0..n {
            sent += u64::from(send(cl, c, now, &mut due)?);
        }
    }
    let interval = match load {
        Load::Rate(r) => 1.0 / r,
        Load::Max => 0.0,
    };
    let (mut scheduled, mut next_due, mut late) = (0u64, start, Duration::ZERO);
    let mut drain_until = None;
    loop {
        let now = Instant::now();
        if let Load::Rate(_) = load {
            // Everything due by now (at most a burst: responses are read in between).
            let mut burst = 0;
            while next_due <= now && next_due < end && burst < 64 {
                late = late.max(now - next_due);
                let c = (scheduled % n as u64) as usize;
                sent += u64::from(send(cl, c, next_due, &mut due)?);
                scheduled += 1;
                next_due = start + Duration::from_secs_f64(scheduled as f64 * interval);
                burst += 1;
            }
        }
        cl.poll(&mut got)?;
        let t = Instant::now();
        for &(c, len, status) in &got {
            if len != a.value + 1 || status != OK {
                return Err(format!("GET on connection {c}: status {status}, {len} B"));
            }
            let at = due[c]
                .pop_front()
                .ok_or_else(|| format!("a response on connection {c} to no request"))?;
            if at >= measure_from && at < end {
                received += 1;
                hist.saturating_record((t - at).as_nanos() as u64);
            }
            if load == Load::Max && t < end {
                sent += u64::from(send(cl, c, t, &mut due)?);
            }
        }
        if t >= end {
            let d = *drain_until.get_or_insert(t + DRAIN);
            if due.iter().all(VecDeque::is_empty) || t >= d {
                break;
            }
        }
    }
    Ok(KvRow {
        transport,
        conns: n,
        load,
        value: a.value,
        ops_per_s: received as f64 / a.duration.as_secs_f64(),
        sent,
        received,
        p50_ns: hist.value_at_quantile(0.5),
        p99_ns: hist.value_at_quantile(0.99),
        p999_ns: hist.value_at_quantile(0.999),
        max_ns: hist.max(),
        late_ns: late.as_nanos() as u64,
        error: None,
    })
}

/// Runs `f` on a new thread (scoped), returning what it returns.
fn on_thread<T: Send>(f: impl FnOnce() -> Result<T, String> + Send) -> Result<T, String> {
    thread::scope(|s| {
        s.spawn(f)
            .join()
            .unwrap_or_else(|_| Err("the client thread panicked".into()))
    })
}

fn pin(a: &KvArgs, core: usize) {
    if !a.no_pin {
        super::pin_to_core(core);
    }
}

// ---- bypass over memif ----

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 79, 0, 2);

fn memif_path() -> PathBuf {
    use std::sync::atomic::AtomicU32;
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "bypass-bench-kv-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// The client's N sockets, as the slice of references `poll_ready` takes (made once, not
/// per poll).
struct BypassClient<'a> {
    stack: &'a Stack,
    socks: Vec<&'a Socket>,
    ready: Vec<usize>,
}

impl KvClient for BypassClient<'_> {
    fn conns(&self) -> usize {
        self.socks.len()
    }
    fn send(&mut self, c: usize, req: &Bytes) -> Result<(), String> {
        // A reference count: the request's bytes are not copied.
        self.socks[c]
            .send_bytes(req.clone())
            .map(drop)
            .map_err(|e| format!("send on connection {c}: {e}"))
    }
    fn poll(&mut self, out: &mut Vec<(usize, usize, u8)>) -> Result<(), String> {
        out.clear();
        self.stack
            .poll_ready(&self.socks, &mut self.ready, Duration::ZERO);
        for &c in &self.ready {
            while let Some(m) = self.socks[c]
                .try_recv()
                .map_err(|e| format!("recv on connection {c}: {e}"))?
            {
                out.push((c, m.len(), m.first().copied().unwrap_or(u8::MAX)));
            }
        }
        Ok(())
    }
}

fn bypass_server(
    path: PathBuf,
    conns: usize,
    core: Option<usize>,
    sleep: bool,
    up: mpsc::Sender<Result<(), String>>,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let mut b = Stack::builder(
        Backend::Memif {
            socket: path,
            role: Role::Server,
            id: 0,
        },
        SERVER_IP,
    );
    if let Some(c) = core {
        b = b.pin_core(c);
    }
    let idle = if sleep {
        IdlePoll::default()
    } else {
        IdlePoll::Spin
    };
    let stack = match b
        .idle_poll(idle)
        .omit_checksums(true)
        .max_connections_per_source(conns + 4)
        .build()
    {
        Ok(s) => s,
        Err(e) => {
            let _ = up.send(Err(format!("server stack: {e}")));
            return Ok(());
        }
    };
    let _ = up.send(Ok(()));
    let listener = stack.listen();
    let mut store = Store::default();
    let mut socks: Vec<Socket> = Vec::new();
    let (mut ready, mut gone) = (Vec::new(), Vec::new());
    while !stop.load(Ordering::Relaxed) {
        while let Some(s) = listener.try_accept() {
            s.set_timeout(Some(SETUP));
            socks.push(s);
        }
        let refs: Vec<&Socket> = socks.iter().collect();
        stack.poll_ready(&refs, &mut ready, Duration::from_millis(1));
        gone.clear();
        for &k in &ready {
            loop {
                match refs[k].try_recv() {
                    Ok(Some(req)) => refs[k]
                        .send_bytes(store.handle(req))
                        .map(drop)
                        .map_err(|e| format!("server send: {e}"))?,
                    Ok(None) => break,
                    // Closed or reset (a client that drops its sockets at the end of a
                    // cell resets them): that connection is done.
                    Err(_) => {
                        gone.push(k);
                        break;
                    }
                }
            }
        }
        drop(refs);
        // Highest index first: swap_remove leaves the lower ones in place.
        for &k in gone.iter().rev() {
            socks.swap_remove(k);
        }
    }
    Ok(())
}

fn cell_bypass(a: &KvArgs, n: usize, load: Load) -> Result<KvRow, String> {
    let path = memif_path();
    let stop = Arc::new(AtomicBool::new(false));
    let (up_tx, up_rx) = mpsc::channel();
    let server = {
        let (path, stop) = (path.clone(), stop.clone());
        let (core, sleep) = ((!a.no_pin).then_some(a.server_core), a.bypass_sleep);
        thread::spawn(move || bypass_server(path, n, core, sleep, up_tx, stop))
    };
    // The client on a thread of its own too: a thread spawned by a pinned thread inherits
    // its CPU set, so the calling thread stays unpinned for the next cell's server.
    let client_path = path.clone();
    let r = on_thread(move || {
        up_rx
            .recv_timeout(SETUP)
            .map_err(|_| "the server stack did not start".to_string())??;
        pin(a, a.client_core);
        let stack = Stack::builder(
            Backend::Memif {
                socket: client_path,
                role: Role::Client,
                id: 0,
            },
            CLIENT_IP,
        )
        .idle_poll(IdlePoll::Spin)
        .omit_checksums(true)
        .no_accept()
        .link_timeout(SETUP)
        .build()
        .map_err(|e| format!("client stack: {e}"))?;
        let mut socks = Vec::with_capacity(n);
        for c in 0..n {
            let s = stack
                .connect(SocketAddrV4::new(SERVER_IP, DEFAULT_UDP_PORT), SETUP)
                .map_err(|e| format!("connect {c}: {e}"))?;
            s.set_timeout(Some(SETUP));
            socks.push(s);
        }
        let mut cl = BypassClient {
            stack: &stack,
            socks: socks.iter().collect(),
            ready: Vec::new(),
        };
        drive(&mut cl, a, load, BYPASS)
    });
    stop.store(true, Ordering::Relaxed);
    let s = server
        .join()
        .unwrap_or_else(|_| Err("the server thread panicked".into()));
    let _ = std::fs::remove_file(&path);
    let row = r?;
    s?;
    Ok(row)
}

// ---- kernel TCP with epoll ----

/// A non-blocking TCP connection carrying length-prefixed messages.
struct Framed {
    s: TcpStream,
    inbuf: Vec<u8>,
    out: Vec<u8>,
}

impl Framed {
    fn new(s: TcpStream) -> std::io::Result<Framed> {
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        Ok(Framed {
            s,
            inbuf: Vec::new(),
            out: Vec::new(),
        })
    }

    /// Queues `msg` and writes what the socket takes.
    fn send(&mut self, msg: &[u8]) -> std::io::Result<()> {
        self.out
            .extend_from_slice(&(msg.len() as u32).to_le_bytes());
        self.out.extend_from_slice(msg);
        self.flush()
    }

    /// Writes queued bytes until the socket takes no more.
    fn flush(&mut self) -> std::io::Result<()> {
        while !self.out.is_empty() {
            match self.s.write(&self.out) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(k) => {
                    self.out.drain(..k);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads what is there; false when the peer closed.
    fn fill(&mut self, scratch: &mut [u8]) -> std::io::Result<bool> {
        loop {
            match self.s.read(scratch) {
                Ok(0) => return Ok(false),
                Ok(k) => self.inbuf.extend_from_slice(&scratch[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) => return Err(e),
            }
        }
    }

    /// Each whole message received, to `f`.
    fn messages(&mut self, mut f: impl FnMut(&[u8]) -> std::io::Result<()>) -> std::io::Result<()> {
        let mut at = 0;
        while self.inbuf.len() - at >= 4 {
            let len = u32::from_le_bytes(self.inbuf[at..at + 4].try_into().expect("4 bytes"));
            let len = len as usize;
            if self.inbuf.len() - at - 4 < len {
                break;
            }
            f(&self.inbuf[at + 4..at + 4 + len])?;
            at += 4 + len;
        }
        self.inbuf.drain(..at);
        Ok(())
    }
}

fn epoll_wait(
    ep: &impl AsFd,
    events: &mut Vec<epoll::Event>,
    timeout: Duration,
) -> std::io::Result<()> {
    events.clear();
    let ts = rustix::event::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: timeout.subsec_nanos() as i64,
    };
    match epoll::wait(ep, rustix::buffer::spare_capacity(events), Some(&ts)) {
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn kernel_server(
    listener: TcpListener,
    conns: usize,
    busy: bool,
    core: Option<usize>,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    if let Some(c) = core {
        super::pin_to_core(c);
    }
    let io = |what: &'static str| move |e: std::io::Error| format!("server {what}: {e}");
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|e| format!("epoll: {e}"))?;
    listener.set_nonblocking(true).map_err(io("listener"))?;
    epoll::add(
        &ep,
        &listener,
        epoll::EventData::new_u64(u64::MAX),
        epoll::EventFlags::IN,
    )
    .map_err(|e| format!("epoll add: {e}"))?;
    let mut socks: Vec<Option<Framed>> = Vec::with_capacity(conns);
    let mut store = Store::default();
    let mut events = Vec::with_capacity(conns + 1);
    let mut scratch = vec![0u8; 256 << 10];
    let wait = if busy {
        Duration::ZERO
    } else {
        Duration::from_millis(10)
    };
    while !stop.load(Ordering::Relaxed) {
        epoll_wait(&ep, &mut events, wait).map_err(io("epoll_wait"))?;
        for ev in &events {
            let k = ev.data.u64();
            if k == u64::MAX {
                while let Ok((s, _)) = listener.accept() {
                    let f = Framed::new(s).map_err(io("accept"))?;
                    epoll::add(
                        &ep,
                        &f.s,
                        epoll::EventData::new_u64(socks.len() as u64),
                        epoll::EventFlags::IN,
                    )
                    .map_err(|e| format!("epoll add: {e}"))?;
                    socks.push(Some(f));
                }
                continue;
            }
            let Some(f) = socks.get_mut(k as usize).and_then(Option::as_mut) else {
                continue;
            };
            let open = f.fill(&mut scratch).map_err(io("read"))?;
            let mut resps = Vec::new();
            f.messages(|m| {
                // The kernel copies: the request into our buffer, and here into the store.
                resps.push(store.handle(Bytes::copy_from_slice(m)));
                Ok(())
            })
            .map_err(io("parse"))?;
            for r in resps {
                f.out.extend_from_slice(&(r.len() as u32).to_le_bytes());
                f.out.extend_from_slice(&r);
            }
            f.flush().map_err(io("write"))?;
            if !f.out.is_empty() {
                // Rare: the client reads slower than we answer. Wait for room.
                let _ = f.s.set_nonblocking(false);
                f.flush().map_err(io("write"))?;
                let _ = f.s.set_nonblocking(true);
            }
            if !open {
                let _ = epoll::delete(&ep, &f.s);
                socks[k as usize] = None;
            }
        }
    }
    Ok(())
}

struct KernelClient {
    ep: std::os::fd::OwnedFd,
    socks: Vec<Framed>,
    events: Vec<epoll::Event>,
    scratch: Vec<u8>,
}

impl KvClient for KernelClient {
    fn conns(&self) -> usize {
        self.socks.len()
    }
    fn send(&mut self, c: usize, req: &Bytes) -> Result<(), String> {
        self.socks[c]
            .send(req)
            .map_err(|e| format!("send on connection {c}: {e}"))
    }
    fn poll(&mut self, out: &mut Vec<(usize, usize, u8)>) -> Result<(), String> {
        out.clear();
        // Spin: a zero timeout, as the bypass client spins.
        epoll_wait(&self.ep, &mut self.events, Duration::ZERO)
            .map_err(|e| format!("epoll_wait: {e}"))?;
        for ev in &self.events {
            let c = ev.data.u64() as usize;
            let f = &mut self.socks[c];
            if !f
                .fill(&mut self.scratch)
                .map_err(|e| format!("read {c}: {e}"))?
            {
                return Err(format!("the server closed connection {c}"));
            }
            f.messages(|m| {
                out.push((c, m.len(), m.first().copied().unwrap_or(u8::MAX)));
                Ok(())
            })
            .map_err(|e| format!("parse {c}: {e}"))?;
        }
        for (c, f) in self.socks.iter_mut().enumerate() {
            if !f.out.is_empty() {
                f.flush().map_err(|e| format!("write {c}: {e}"))?;
            }
        }
        Ok(())
    }
}

fn cell_kernel(a: &KvArgs, n: usize, load: Load) -> Result<KvRow, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("bind: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        let (busy, core) = (a.kernel_busy, (!a.no_pin).then_some(a.server_core));
        thread::spawn(move || kernel_server(listener, n, busy, core, stop))
    };
    let r = on_thread(|| {
        pin(a, a.client_core);
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|e| format!("epoll: {e}"))?;
        let mut socks = Vec::with_capacity(n);
        for c in 0..n {
            let s = TcpStream::connect_timeout(&addr, SETUP)
                .and_then(Framed::new)
                .map_err(|e| format!("connect {c}: {e}"))?;
            epoll::add(
                &ep,
                &s.s,
                epoll::EventData::new_u64(c as u64),
                epoll::EventFlags::IN,
            )
            .map_err(|e| format!("epoll add: {e}"))?;
            socks.push(s);
        }
        let mut cl = KernelClient {
            ep,
            socks,
            events: Vec::with_capacity(n),
            scratch: vec![0u8; 256 << 10],
        };
        drive(&mut cl, a, load, KERNEL)
    });
    stop.store(true, Ordering::Relaxed);
    let s = server
        .join()
        .unwrap_or_else(|_| Err("the server thread panicked".into()));
    let row = r?;
    s?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: KvArgs,
    }

    fn args(s: &str) -> KvArgs {
        T::try_parse_from(std::iter::once("kv").chain(s.split_whitespace()))
            .expect("valid arguments")
            .a
    }

    /// Every GET of the cell answered with the value PUT before, on both transports, closed
    /// and open loop, with three connections from the one client thread. (The harness checks
    /// each response's status and length; a lost or extra response fails the cell.)
    #[test]
    fn both_transports_answer_every_get_on_three_connections() {
        let a = args("--keys 50 --value 1k --duration 300ms --warmup 50ms --no-pin");
        for load in [Load::Max, Load::Rate(2000.0)] {
            for (name, row) in [
                (BYPASS, cell_bypass(&a, 3, load)),
                (KERNEL, cell_kernel(&a, 3, load)),
            ] {
                let row = row.unwrap_or_else(|e| panic!("{name} {load:?}: {e}"));
                assert_eq!(row.transport, name);
                assert!(row.sent > 0, "{name} {load:?}: no GET sent: {row:?}");
                assert_eq!(
                    row.received, row.sent,
                    "{name} {load:?}: every GET of the window answered: {row:?}"
                );
                assert!(row.p50_ns > 0 && row.p50_ns <= row.max_ns, "{row:?}");
            }
        }
    }

    #[test]
    fn parses_loads_and_refuses_nonsense() {
        let a = args("--rates max,20k,1.5m --conns 1,64");
        assert_eq!(
            a.rates,
            vec![Load::Max, Load::Rate(20e3), Load::Rate(1.5e6)]
        );
        assert_eq!(a.conns, vec![1, 64]);
        for bad in [
            "--conns 0",
            "--rates fast",
            "--keys 0",
            "--transports kernel-udp",
        ] {
            assert!(
                T::try_parse_from(std::iter::once("kv").chain(bad.split_whitespace())).is_err(),
                "{bad} accepted"
            );
        }
    }
}
