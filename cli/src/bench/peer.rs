//! The peer: the other end of every benchmark cell, in its own process.
//!
//! `bypass bench` starts `bypass bench-peer --listen 127.0.0.1:0 --core 1 --once` (its own
//! executable) unless `--peer ADDR` names one already running, possibly on another host. The
//! peer prints `bypass-bench-peer listening on ADDR` on its stdout, and the client connects a
//! TCP control channel to ADDR. The control channel is text lines, one request, one reply:
//!
//! ```text
//! CELL <transport> <wait> <role> <size> <conns> <max_msg>   -> LISTEN <data addr> | ERR <why>
//!      (the client connects <conns> connections to <data addr>) -> READY | ERR <why>
//! MARK                                                      -> COUNT <msgs> <bytes>
//! STOP                                                      -> DONE <msgs> <bytes> | ERR <why>
//! MEM                                -> MEM <hugepage pools> <4 KiB pools> <fallbacks> [why]
//!      (where this process's bypass stacks got their packet memory; see `meta::PacketMemory`)
//! QUIT                                                      -> BYE
//! ```
//!
//! Each accepted data connection is served on its own thread pinned to the peer's core. A peer
//! never hangs: accepts and receives have timeouts, a closed control channel ends the session,
//! and the `--once` peer exits if no client connects within 30 s. The client side holds the
//! spawned peer in [`PeerChild`], which kills and reaps it when dropped (also on error or
//! panic), so no process is left behind.
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::modes::{self, Counter, Role};
use super::transport::Transport;
use super::transport::{ConnError, ConnOpts, Wait};
use super::{make_transport, pin_to_core, TransportConfig, OPT_IN};

/// How long a peer may take to start and print its address.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the control channel waits for a reply.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a `--once` peer waits for its client.
const ONCE_ACCEPT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a server thread wakes to look at its stop flag while idle.
const SERVER_RECV_TIMEOUT: Duration = Duration::from_millis(100);
/// How long a send may wait for room, and a data accept for its client.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// A peer process this process started: killed and reaped when dropped.
pub struct PeerChild {
    child: Child,
    /// The peer's control address.
    pub addr: String,
}

impl PeerChild {
    /// Starts `exe bench-peer --listen 127.0.0.1:0 --core CORE --once` and waits (at most
    /// 10 s) for the address it prints.
    pub fn spawn(exe: &std::path::Path, core: Option<usize>) -> Result<PeerChild, String> {
        let mut cmd = Command::new(exe);
        // The peer logs as much as this process (`-v`, `-q`).
        cmd.args(crate::log::child_args());
        cmd.args(["bench-peer", "--listen", "127.0.0.1:0", "--once"]);
        if let Some(c) = core {
            cmd.args(["--core", &c.to_string()]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the peer {}: {e}", exe.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        // From here on the guard owns the child: every early return kills it.
        let mut guard = PeerChild {
            child,
            addr: String::new(),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let r = BufReader::new(stdout).read_line(&mut line).map(|_| line);
            let _ = tx.send(r);
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Err(format!("reading the peer's address: {e}")),
            Err(_) => {
                return Err(format!(
                    "the peer printed no address within {} s",
                    START_TIMEOUT.as_secs()
                ))
            }
        };
        match line.trim().strip_prefix("bypass-bench-peer listening on ") {
            Some(addr) => guard.addr = addr.to_owned(),
            None => {
                let status = guard.child.try_wait().ok().flatten();
                return Err(match status {
                    Some(s) => format!("the peer exited before it listened ({s})"),
                    None => format!("the peer printed {:?} instead of its address", line.trim()),
                });
            }
        }
        Ok(guard)
    }
}

impl Drop for PeerChild {
    fn drop(&mut self) {
        // Give a peer that was told QUIT a moment to exit on its own, then make sure.
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The client end of the control channel.
pub struct Control {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Control {
    /// Connects to a peer's control address.
    pub fn connect(addr: &str) -> Result<Control, String> {
        let sa = addr
            .to_socket_addrs()
            .map_err(|e| format!("peer address {addr:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("peer address {addr:?} resolves to nothing"))?;
        let w = TcpStream::connect_timeout(&sa, START_TIMEOUT)
            .map_err(|e| format!("cannot reach the peer at {addr}: {e}"))?;
        w.set_nodelay(true).map_err(|e| e.to_string())?;
        w.set_read_timeout(Some(CONTROL_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let r = BufReader::new(w.try_clone().map_err(|e| e.to_string())?);
        Ok(Control { w, r })
    }

    /// The peer's address as seen from here (data listeners bind the same host).
    pub fn peer_host(&self) -> String {
        self.w
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default()
    }

    /// Sends one request line and returns the reply's words after `expect`.
    pub fn request(&mut self, line: &str, expect: &str) -> Result<Vec<String>, String> {
        self.w
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| format!("control channel: {e}"))?;
        self.reply(expect)
    }

    /// Reads one reply line that must start with `expect`.
    pub fn reply(&mut self, expect: &str) -> Result<Vec<String>, String> {
        let mut reply = String::new();
        match self.r.read_line(&mut reply) {
            Ok(0) => return Err("the peer closed the control channel".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("no reply from the peer: {e}")),
        }
        let mut words = reply.split_whitespace().map(str::to_owned);
        match words.next().as_deref() {
            Some(w) if w == expect => Ok(words.collect()),
            Some("ERR") => Err(format!(
                "peer: {}",
                reply.trim().trim_start_matches("ERR").trim()
            )),
            _ => Err(format!(
                "unexpected reply from the peer: {:?}",
                reply.trim()
            )),
        }
    }

    /// `COUNT`/`DONE` replies: messages and bytes.
    pub fn counts(words: &[String]) -> Result<(u64, u64), String> {
        match words {
            [m, b] => Ok((
                m.parse().map_err(|_| "bad count from the peer")?,
                b.parse().map_err(|_| "bad count from the peer")?,
            )),
            _ => Err("bad count reply from the peer".into()),
        }
    }
}

/// The longer description of `bypass bench-peer --help`.
pub const ABOUT: &str = "The other end of `bypass bench`: listens on ADDR (prints \
    `bypass-bench-peer listening on ADDR`) and serves the transports listed (default all but \
    bypass-dpdk, which the --dpdk options enable). `bypass bench` starts one itself unless \
    given --peer.";

/// `bypass bench-peer` on the command line; [`PeerArgs::into_opts`] makes the [`PeerOpts`].
#[derive(clap::Args, Debug)]
pub struct PeerArgs {
    /// Control address to listen on
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    listen: String,
    /// Core for the server threads
    #[arg(long, value_name = "N")]
    core: Option<usize>,
    /// Serve one session, then exit
    #[arg(long)]
    once: bool,
    /// Serve only these transports
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = super::transport_arg)]
    transports: Option<Vec<String>>,
    #[command(flatten)]
    dpdk: super::DpdkArgs,
}

impl PeerArgs {
    /// The peer's options.
    pub fn into_opts(self) -> Result<PeerOpts, String> {
        Ok(PeerOpts {
            listen: self.listen,
            core: self.core,
            once: self.once,
            transports: self.transports,
            config: TransportConfig {
                dpdk: self.dpdk.to_opts()?,
            },
        })
    }
}

/// `bypass bench-peer` options.
#[derive(Debug)]
pub struct PeerOpts {
    /// Control address to listen on.
    pub listen: String,
    /// Core for the server threads.
    pub core: Option<usize>,
    /// Serve one session, then exit.
    pub once: bool,
    /// Serve only these transports (default: all but the opt-in ones, which are served when
    /// their options are given).
    pub transports: Option<Vec<String>>,
    /// Settings the transports are built with.
    pub config: TransportConfig,
}

impl PeerOpts {
    /// Whether this peer serves the transport `name`.
    fn serves(&self, name: &str) -> bool {
        match &self.transports {
            Some(ts) => ts.iter().any(|t| t == name),
            None => !OPT_IN.contains(&name) || (name == "bypass-dpdk" && self.config.dpdk.is_set()),
        }
    }
}

/// The peer's main: listen, print the address, serve sessions.
pub fn run_peer(opts: &PeerOpts) -> Result<(), String> {
    // Transports with per-process setup (DPDK's EAL and device) start before the peer
    // listens, so a setup error ends it at once, with its reason.
    for name in OPT_IN {
        if opts.serves(name) {
            drop(
                make_transport(name, &opts.config)
                    .ok_or_else(|| format!("unknown transport {name}"))??,
            );
        }
    }
    let l = TcpListener::bind(&opts.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "bypass-bench-peer listening on {addr}").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
    }
    if let Some(c) = opts.core {
        if !pin_to_core(c) {
            eprintln!("bypass bench-peer: core {c} not available, not pinned");
        }
    }
    loop {
        let stream = if opts.once {
            accept_within(&l, ONCE_ACCEPT_TIMEOUT)?
        } else {
            l.accept().map_err(|e| e.to_string())?.0
        };
        let r = serve_session(stream, opts);
        if opts.once {
            return r;
        }
        if let Err(e) = r {
            eprintln!("bypass bench-peer: session ended: {e}");
        }
    }
}

fn accept_within(l: &TcpListener, timeout: Duration) -> Result<TcpStream, String> {
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).map_err(|e| e.to_string())?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "no client connected within {} s",
                        timeout.as_secs()
                    ));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The server threads of the running cell.
struct Cell {
    stop: Arc<AtomicBool>,
    counters: Vec<Arc<Counter>>,
    threads: Vec<JoinHandle<Result<(), ConnError>>>,
}

impl Cell {
    fn totals(&self) -> (u64, u64) {
        self.counters.iter().fold((0, 0), |(m, b), c| {
            (
                m + c.msgs.load(Ordering::Relaxed),
                b + c.bytes.load(Ordering::Relaxed),
            )
        })
    }

    fn stop(mut self) -> Result<(u64, u64), String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut err = None;
        for t in self.threads.drain(..) {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => err = Some(e.to_string()),
                Err(_) => err = Some("a server thread panicked".into()),
            }
        }
        let totals = self.totals();
        match err {
            Some(e) => Err(e),
            None => Ok(totals),
        }
    }
}

fn send(w: &mut TcpStream, s: String) -> Result<(), String> {
    w.write_all(format!("{s}\n").as_bytes())
        .map_err(|e| format!("control channel: {e}"))
}

fn serve_session(stream: TcpStream, opts: &PeerOpts) -> Result<(), String> {
    let core = opts.core;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let host = stream
        .local_addr()
        .map(|a| a.ip().to_string())
        .map_err(|e| e.to_string())?;
    let mut w = stream.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(stream);
    let mut cell: Option<Cell> = None;
    // Transports are built once per session, on first use.
    let mut built: Vec<(String, Box<dyn Transport>)> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        // A closed (or broken) control channel ends the session and its cell.
        let n = r.read_line(&mut line).unwrap_or(0);
        if n == 0 {
            if let Some(c) = cell.take() {
                let _ = c.stop();
            }
            return Ok(());
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["CELL", transport, wait, role, size, conns, max_msg] => {
                if let Some(c) = cell.take() {
                    let _ = c.stop();
                }
                let started = transport_named(&mut built, transport, opts).and_then(|t| {
                    start_cell(&mut w, &host, core, t, wait, role, size, conns, max_msg)
                });
                match started {
                    Ok(c) => {
                        cell = Some(c);
                        send(&mut w, "READY".into())?;
                    }
                    Err(e) => send(&mut w, format!("ERR {e}"))?,
                }
            }
            ["MARK"] => {
                let (m, b) = cell.as_ref().map(Cell::totals).unwrap_or((0, 0));
                send(&mut w, format!("COUNT {m} {b}"))?;
            }
            ["STOP"] => match cell.take().map(Cell::stop) {
                Some(Ok((m, b))) => send(&mut w, format!("DONE {m} {b}"))?,
                Some(Err(e)) => send(&mut w, format!("ERR {e}"))?,
                None => send(&mut w, "DONE 0 0".into())?,
            },
            ["MEM"] => send(
                &mut w,
                format!("MEM {}", super::meta::packet_memory().to_wire()),
            )?,
            ["QUIT"] => {
                if let Some(c) = cell.take() {
                    let _ = c.stop();
                }
                send(&mut w, "BYE".into())?;
                return Ok(());
            }
            _ => send(&mut w, format!("ERR unknown request {:?}", line.trim()))?,
        }
    }
}

fn transport_named<'a>(
    built: &'a mut Vec<(String, Box<dyn Transport>)>,
    name: &str,
    opts: &PeerOpts,
) -> Result<&'a dyn Transport, String> {
    let i = match built.iter().position(|(n, _)| n == name) {
        Some(i) => i,
        None => {
            if !opts.serves(name) {
                return Err(format!(
                    "this peer does not serve {name} (see its --transports{})",
                    if OPT_IN.contains(&name) {
                        " and --dpdk options"
                    } else {
                        ""
                    }
                ));
            }
            let t = make_transport(name, &opts.config)
                .ok_or_else(|| format!("unknown transport {name}"))?
                .map_err(|e| format!("{name} is not available on the peer: {e}"))?;
            built.push((name.to_owned(), t));
            built.len() - 1
        }
    };
    Ok(built[i].1.as_ref())
}

#[allow(clippy::too_many_arguments)]
fn start_cell(
    w: &mut TcpStream,
    host: &str,
    core: Option<usize>,
    t: &dyn Transport,
    wait: &str,
    role: &str,
    size: &str,
    conns: &str,
    max_msg: &str,
) -> Result<Cell, String> {
    let wait = Wait::parse(wait).ok_or_else(|| format!("unknown wait {wait}"))?;
    let role = match role {
        "echo" => Role::Echo,
        "sink" => Role::Sink,
        "rpc" => Role::Rpc,
        _ => return Err(format!("unknown role {role}")),
    };
    let size: usize = size.parse().map_err(|_| "bad size")?;
    let conns: usize = conns.parse().map_err(|_| "bad conns")?;
    let max_msg: usize = max_msg.parse().map_err(|_| "bad max_msg")?;
    let opts = ConnOpts {
        wait,
        max_msg,
        recv_timeout: SERVER_RECV_TIMEOUT,
        io_timeout: IO_TIMEOUT,
        stream: role == Role::Sink,
    };
    let mut l = t.listen(host, &opts).map_err(|e| format!("listen: {e}"))?;
    w.write_all(format!("LISTEN {}\n", l.addr()).as_bytes())
        .map_err(|e| format!("control channel: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut cell = Cell {
        stop: stop.clone(),
        counters: Vec::new(),
        threads: Vec::new(),
    };
    for i in 0..conns {
        let mut conn = match l.accept(IO_TIMEOUT) {
            Ok(c) => c,
            Err(e) => {
                let _ = cell.stop();
                return Err(format!("accepting connection {i}: {e}"));
            }
        };
        let counter = Arc::new(Counter::default());
        cell.counters.push(counter.clone());
        let stop = stop.clone();
        cell.threads.push(std::thread::spawn(move || {
            if let Some(c) = core {
                pin_to_core(c);
            }
            modes::serve(role, conn.as_mut(), size, &stop, &counter)
        }));
    }
    Ok(cell)
}
