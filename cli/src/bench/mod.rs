//! `bypass bench`: end-to-end latency and throughput of every transport, side by side with
//! the kernel's UDP and TCP, in one run.
//!
//! Modes: `pingpong` (round-trip time per message size), `stream` (one-way Gb/s and msg/s,
//! one connection and several), `rpc` (open-loop latency against offered load, measured from
//! each request's scheduled send time). With no mode, all three run. `bypass bench kv` (see
//! [`kv`]) is a key-value service's GETs with N connections from one client thread, bypass
//! against kernel TCP with epoll, both ends in this process.
//!
//! Both ends run by default: this process is the client, pinned to core 0, and it starts its
//! own executable as `bypass bench-peer` pinned to core 1 (see [`peer`]). `--peer ADDR` runs
//! the client against a peer started elsewhere with `bypass bench-peer --listen ADDR`.
//!
//! Against a peer on another host, the bypass transport can run over DPDK (`bypass-dpdk`,
//! cargo feature `dpdk`; see [`bypass_dpdk`]): each end gives its EAL arguments and its
//! address on the DPDK link (`--dpdk "..." --dpdk-ip IP`); the control channel stays on the
//! kernel's TCP at `--peer ADDR`.
//!
//! A transport plugs in by implementing [`transport::Transport`] (a listener/connection
//! factory) and [`transport::MsgConn`] (whole-message send and receive), and by being listed
//! in `transports`; the drivers, the peer, the tables and the JSON are shared.
pub mod bypass;
pub mod bypass_dpdk;
pub mod compare;
pub mod kernel;
pub mod kv;
pub mod meta;
pub mod modes;
pub mod peer;
pub mod plot;
pub mod progress;
pub mod report;
pub mod transport;

use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use progress::Progress;
use report::{
    Key, Latency, PingpongRound, PingpongRow, Report, RpcRound, RpcRow, Status, StreamRound,
    StreamRow,
};
use transport::{ConnOpts, MsgConn, Transport, Wait};

/// What transports are built with: this process's command-line settings for them.
#[derive(Clone, Debug, Default)]
pub struct TransportConfig {
    /// `--dpdk*` options (for `bypass-dpdk`).
    pub dpdk: bypass_dpdk::DpdkOpts,
}

/// How a process builds a transport: once per process (both the client and the peer), so it
/// may set up per-process state, and may fail (the transport is then skipped with a note).
pub type MakeTransport = fn(&TransportConfig) -> Result<Box<dyn Transport>, String>;

/// Every transport `bypass bench` knows, by name, in table order. Add a transport here.
pub const TRANSPORTS: &[(&str, MakeTransport)] = &[
    ("bypass-memif", make_bypass_memif),
    ("bypass-dpdk", make_bypass_dpdk),
    ("kernel-udp", make_kernel_udp),
    ("kernel-tcp", make_kernel_tcp),
];

/// Transports that run only when `--transports` names them (they need options and a peer
/// elsewhere).
const OPT_IN: &[&str] = &["bypass-dpdk"];

fn make_bypass_memif(_: &TransportConfig) -> Result<Box<dyn Transport>, String> {
    Ok(Box::new(bypass::BypassMemif::new()))
}

#[cfg(feature = "dpdk")]
fn make_bypass_dpdk(c: &TransportConfig) -> Result<Box<dyn Transport>, String> {
    Ok(Box::new(bypass_dpdk::BypassDpdk::new(&c.dpdk)?))
}

#[cfg(not(feature = "dpdk"))]
fn make_bypass_dpdk(_: &TransportConfig) -> Result<Box<dyn Transport>, String> {
    Err(
        "this bypass was built without DPDK: rebuild with `cargo build --release --features \
         dpdk` (needs DPDK 22.11, e.g. Debian's libdpdk-dev)"
            .into(),
    )
}

fn make_kernel_udp(_: &TransportConfig) -> Result<Box<dyn Transport>, String> {
    Ok(Box::new(kernel::KernelUdp))
}

fn make_kernel_tcp(_: &TransportConfig) -> Result<Box<dyn Transport>, String> {
    Ok(Box::new(kernel::KernelTcp))
}

/// Builds the transport called `name`; `None` if no transport has that name.
pub fn make_transport(
    name: &str,
    config: &TransportConfig,
) -> Option<Result<Box<dyn Transport>, String>> {
    TRANSPORTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, make)| make(config))
}

/// Pins the calling thread to `core`; false if there is no such core.
pub fn pin_to_core(core: usize) -> bool {
    core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.id == core)
        .is_some_and(core_affinity::set_for_current)
}

/// The longer description of `bypass bench --help`.
pub const ABOUT: &str = "\
Measures the bypass transport and the kernel's UDP and TCP (blocking and busy-polling) in one \
run: client on core 0, a `bypass bench-peer` child process on core 1.

Modes: pingpong (round-trip time per message size), stream (one-way Gb/s and msg/s, one \
connection and several), rpc (open-loop latency against offered load). With no mode, all \
three run.";

/// What `bypass bench --help` ends with: the peer, and running against DPDK.
const AFTER_HELP: &str = "\
The other end is `bypass bench-peer` (see `bypass help bench-peer`): spawned by default, or \
started elsewhere and named with --peer.

Against a DPDK peer (two hosts, or two network namespaces; the control channel is TCP):
  there:  bypass bench-peer --listen 192.168.1.1:7300 --transports bypass-dpdk \\
            --dpdk \"-a 0000:01:00.0 --iova-mode=va\" --dpdk-ip 10.9.0.1
  here:   bypass bench --peer 192.168.1.1:7300 --transports bypass-dpdk \\
            --dpdk \"-a 0000:01:00.0 --iova-mode=va\" --dpdk-ip 10.9.0.2";

/// A benchmark on the command line (`all` is the three).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ModeArg {
    /// Round-trip time per message size
    Pingpong,
    /// One-way Gb/s and msg/s, one connection and several
    Stream,
    /// Open-loop latency against offered load
    Rpc,
    /// pingpong, stream and rpc
    All,
}

/// `bypass bench` on the command line; `BenchArgs::into_opts` makes the `Opts` the
/// driver reads.
#[derive(clap::Args, Debug)]
#[command(after_help = AFTER_HELP, args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// Work on saved `--json` runs instead of running, or run the kv benchmark
    #[command(subcommand)]
    cmd: Option<BenchCmd>,
    /// Which benchmarks [default: all]
    #[arg(value_enum, value_name = "MODE")]
    modes: Vec<ModeArg>,
    /// Message sizes, e.g. 64,1k,64k,1m [default: pingpong 64,1024,16384,65536,1048576;
    /// stream 64,1048576]
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = size_arg)]
    sizes: Option<Vec<usize>>,
    /// Measured time per cell
    #[arg(long, value_name = "TIME", default_value = "1s", value_parser = super::duration::parse)]
    duration: Duration,
    /// Unmeasured time before each cell
    #[arg(long, value_name = "TIME", default_value = "200ms", value_parser = super::duration::parse)]
    warmup: Duration,
    /// stream: also run with N connections (1 always runs)
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    conns: usize,
    /// rpc: offered requests/s, e.g. 10k,1.5m [default: 10k,50k,100k,200k]
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = rate_arg)]
    rates: Option<Vec<f64>>,
    /// rpc: request and response size (at least 8)
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
              .range(modes::RPC_MIN_SIZE as u64..))]
    rpc_size: usize,
    /// Only these transports [default: bypass-memif,kernel-udp,kernel-tcp; bypass-dpdk runs
    /// only when named, against --peer, with the --dpdk options]
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = transport_arg)]
    transports: Option<Vec<String>>,
    /// Only these ways of waiting: blocking, busy-poll (or busy)
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = wait_arg)]
    variants: Option<Vec<Wait>>,
    /// The longest the client waits for an answer
    #[arg(long, value_name = "TIME", default_value = "5s", value_parser = super::duration::parse)]
    timeout: Duration,
    /// Use a peer already running at ADDR (`bypass bench-peer --listen ADDR`)
    #[arg(long, value_name = "ADDR")]
    peer: Option<String>,
    /// Core of the client
    #[arg(long, value_name = "N", default_value_t = 0)]
    client_core: usize,
    /// Core of the spawned peer
    #[arg(long, value_name = "N", default_value_t = 1)]
    server_core: usize,
    /// Pin nothing
    #[arg(long, conflicts_with_all = ["client_core", "server_core"])]
    no_pin: bool,
    /// Run the whole matrix N times, transports interleaved; report each round, and the
    /// median and min-max over rounds
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    rounds: usize,
    /// Print JSON instead of tables (schema: src/cli/bench/report.rs)
    #[arg(long)]
    json: bool,
    /// Also write PNG plots of the run into DIR
    #[arg(long, value_name = "DIR")]
    plot: Option<std::path::PathBuf>,
    #[command(flatten)]
    dpdk: DpdkArgs,
}

/// `bypass bench compare` and `bypass bench plot`: saved runs.
#[derive(clap::Subcommand, Debug)]
enum BenchCmd {
    /// Per cell, old -> new, the change and whether it is beyond the noise; exit 1 when a
    /// cell regressed beyond the noise, 2 on unreadable input or different schema versions
    Compare {
        /// The earlier run (`bypass bench --json`)
        #[arg(value_name = "OLD.json")]
        old: String,
        /// The later run
        #[arg(value_name = "NEW.json")]
        new: String,
    },
    /// A key-value service's GETs: N connections from one client thread, bypass (one stack,
    /// poll_ready) against kernel TCP with epoll, in one run (both ends in this process)
    Kv(Box<kv::KvArgs>),
    /// PNG plots of a saved --json run
    Plot {
        /// The run (`bypass bench --json`)
        #[arg(value_name = "RUN.json")]
        run: String,
        /// Where the PNGs go (made if missing)
        #[arg(value_name = "DIR")]
        dir: String,
    },
}

/// The `bypass-dpdk` options of `bench` and `bench-peer`.
#[derive(clap::Args, Debug, Default)]
pub struct DpdkArgs {
    /// bypass-dpdk: this end's DPDK EAL arguments, e.g. "--vdev=net_af_packet0,iface=eth1
    /// --no-huge" or "-a 0000:01:00.0"
    #[arg(long = "dpdk", value_name = "EAL ARGS", allow_hyphen_values = true)]
    eal: Option<String>,
    /// bypass-dpdk: this end's IPv4 address on the DPDK link (not an address the kernel owns
    /// on that interface)
    #[arg(long = "dpdk-ip", value_name = "IP")]
    ip: Option<String>,
    /// bypass-dpdk: the ethdev [default: the first --vdev or -a device]
    #[arg(long = "dpdk-dev", value_name = "NAME")]
    dev: Option<String>,
    /// bypass-dpdk: static ARP entry for the peer (repeatable) [default: resolve by ARP]
    #[arg(long = "dpdk-arp", value_name = "IP=MAC")]
    arp: Vec<String>,
}

impl DpdkArgs {
    /// The transport's settings (validated as [`bypass_dpdk::DpdkOpts::parse_flag`] does).
    fn to_opts(&self) -> Result<bypass_dpdk::DpdkOpts, String> {
        let mut o = bypass_dpdk::DpdkOpts::default();
        let given = [
            ("--dpdk", self.eal.as_deref()),
            ("--dpdk-ip", self.ip.as_deref()),
            ("--dpdk-dev", self.dev.as_deref()),
        ]
        .into_iter()
        .filter_map(|(f, v)| Some((f, v?)))
        .chain(self.arp.iter().map(|v| ("--dpdk-arp", v.as_str())));
        for (flag, v) in given {
            o.parse_flag(flag, || Ok(v))?;
        }
        Ok(o)
    }
}

/// Which benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Pingpong,
    Stream,
    Rpc,
}

/// Parsed `bypass bench` options.
#[derive(Debug)]
struct Opts {
    modes: Vec<Mode>,
    sizes: Option<Vec<usize>>,
    duration: Duration,
    warmup: Duration,
    conns: usize,
    rates: Vec<f64>,
    rpc_size: usize,
    transports: Option<Vec<String>>,
    variants: Option<Vec<Wait>>,
    timeout: Duration,
    peer: Option<String>,
    client_core: Option<usize>,
    server_core: Option<usize>,
    json: bool,
    quiet: bool,
    config: TransportConfig,
    rounds: usize,
    plot: Option<std::path::PathBuf>,
}

const PINGPONG_SIZES: &[usize] = &[64, 1024, 16384, 65536, 1 << 20];
const STREAM_SIZES: &[usize] = &[64, 1 << 20];
const RATES: &[f64] = &[10e3, 50e3, 100e3, 200e3];
/// How long the rpc client waits for the last responses.
const RPC_DRAIN: Duration = Duration::from_secs(1);
/// Pause between the stream senders stopping and the peer counting what arrived.
const STREAM_DRAIN: Duration = Duration::from_millis(50);
/// How long a stream cell waits for all its connections to be ready to send.
const STREAM_SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Parses `64`, `1k`/`1ki` (1024), `1m`/`1mi` (1048576).
fn parse_size(s: &str) -> Option<usize> {
    let l = s.to_ascii_lowercase();
    let l = l.trim_end_matches('b').trim_end_matches('i');
    let (num, mul) = match l.chars().last()? {
        'k' => (&l[..l.len() - 1], 1 << 10),
        'm' => (&l[..l.len() - 1], 1 << 20),
        _ => (l, 1),
    };
    num.parse::<usize>().ok()?.checked_mul(mul)
}

/// Parses `10k`, `1.5m`, `200000`.
fn parse_rate(s: &str) -> Option<f64> {
    let l = s.to_ascii_lowercase();
    let (num, mul) = match l.chars().last()? {
        'k' => (&l[..l.len() - 1], 1e3),
        'm' => (&l[..l.len() - 1], 1e6),
        _ => (&l[..], 1.0),
    };
    let r = num.parse::<f64>().ok()? * mul;
    (r.is_finite() && r > 0.0).then_some(r)
}

fn size_arg(s: &str) -> Result<usize, String> {
    parse_size(s.trim()).ok_or_else(|| format!("{s:?} is not a size (e.g. 64, 1k, 64KiB, 1m)"))
}

fn rate_arg(s: &str) -> Result<f64, String> {
    parse_rate(s.trim()).ok_or_else(|| format!("{s:?} is not a positive rate (e.g. 10k, 1.5m)"))
}

fn wait_arg(s: &str) -> Result<Wait, String> {
    Wait::parse(s.trim()).ok_or_else(|| format!("unknown variant {s:?} (blocking, busy-poll)"))
}

fn transport_arg(s: &str) -> Result<String, String> {
    let s = s.trim();
    if TRANSPORTS.iter().any(|(t, _)| *t == s) {
        return Ok(s.to_owned());
    }
    let names: Vec<&str> = TRANSPORTS.iter().map(|(t, _)| *t).collect();
    Err(format!(
        "unknown transport {s:?} (known: {})",
        names.join(", ")
    ))
}

impl BenchArgs {
    /// The driver's options; `quiet` (the global `-q`) also turns the progress lines off.
    /// Errs on options that do not go together.
    fn into_opts(self, quiet: bool) -> Result<Opts, String> {
        let mut modes = Vec::new();
        for m in &self.modes {
            match m {
                ModeArg::Pingpong => modes.push(Mode::Pingpong),
                ModeArg::Stream => modes.push(Mode::Stream),
                ModeArg::Rpc => modes.push(Mode::Rpc),
                ModeArg::All => modes.extend([Mode::Pingpong, Mode::Stream, Mode::Rpc]),
            }
        }
        let pin = |c| (!self.no_pin).then_some(c);
        let mut o = Opts {
            modes,
            sizes: self.sizes,
            duration: self.duration,
            warmup: self.warmup,
            conns: self.conns,
            rates: self.rates.unwrap_or_else(|| RATES.to_vec()),
            rpc_size: self.rpc_size,
            transports: self.transports,
            variants: self.variants,
            timeout: self.timeout,
            peer: self.peer,
            client_core: pin(self.client_core),
            server_core: pin(self.server_core),
            json: self.json,
            quiet,
            config: TransportConfig {
                dpdk: self.dpdk.to_opts()?,
            },
            rounds: self.rounds,
            plot: self.plot,
        };
        let dpdk_named = o
            .transports
            .as_ref()
            .is_some_and(|ts| ts.iter().any(|t| t == "bypass-dpdk"));
        if dpdk_named && o.peer.is_none() {
            return Err(
                "bypass-dpdk runs against a peer elsewhere: start `bypass bench-peer \
                        --listen ADDR --transports bypass-dpdk --dpdk ... --dpdk-ip IP` at the \
                        other end of the DPDK link and pass --peer ADDR"
                    .into(),
            );
        }
        if o.config.dpdk.is_set() && !dpdk_named {
            return Err(
                "the --dpdk options are for bypass-dpdk: add --transports bypass-dpdk".into(),
            );
        }
        if o.modes.is_empty() {
            o.modes = vec![Mode::Pingpong, Mode::Stream, Mode::Rpc];
        }
        o.modes.dedup();
        Ok(o)
    }
}

/// `bypass bench`; `quiet`: the global `-q`.
pub fn main(mut args: BenchArgs, quiet: bool) -> ExitCode {
    match args.cmd.take() {
        Some(BenchCmd::Compare { old, new }) => return compare::main(&[old, new]),
        Some(BenchCmd::Plot { run, dir }) => return plot::main(&[run, dir]),
        Some(BenchCmd::Kv(a)) => return kv::main(&a, quiet),
        None => {}
    }
    let opts = match args.into_opts(quiet) {
        Ok(o) => o,
        Err(e) => return super::usage_error(&["bench"], e),
    };
    match run(&opts) {
        Ok(report) => {
            if opts.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("bypass bench: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print!("{}", report.tables());
            }
            let mut ok = true;
            if let Some(dir) = &opts.plot {
                match plot::write_all(&report, dir) {
                    Ok(files) => {
                        if !opts.quiet {
                            for f in files {
                                eprintln!("bench: wrote {}", f.display());
                            }
                        }
                    }
                    Err(e) => {
                        eprintln!("bypass bench: --plot: {e}");
                        ok = false;
                    }
                }
            }
            if report.has_errors() {
                eprintln!("bypass bench: some cells failed (see the rows marked error)");
                ok = false;
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("bypass bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `bypass bench-peer`.
pub fn peer_main(args: peer::PeerArgs) -> ExitCode {
    let o = match args.into_opts() {
        Ok(o) => o,
        Err(e) => return super::usage_error(&["bench-peer"], e),
    };
    match peer::run_peer(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bypass bench-peer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn context(o: &Opts) -> String {
    let pin = match (o.client_core, o.peer.is_some(), o.server_core) {
        (None, _, _) => "unpinned".to_owned(),
        (Some(c), true, _) => format!("client on core {c}, remote peer"),
        (Some(c), false, Some(s)) => format!("client on core {c}, peer process on core {s}"),
        (Some(c), false, None) => format!("client on core {c}, peer unpinned"),
    };
    format!(
        "{pin}, {} per cell after {} warm-up, {}",
        fmt_dur(o.duration),
        fmt_dur(o.warmup),
        machine()
    )
}

/// `N CPUs (model)` of this machine, from /proc/cpuinfo (not from this thread's affinity).
fn machine() -> String {
    let (model, cpus) = meta::cpu();
    format!("{cpus} CPUs ({model})")
}

fn fmt_dur(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d >= Duration::from_secs(1) {
        format!("{:.3}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The transports and variants selected, in table order. A transport that cannot be built
/// here is skipped with a note on stderr.
fn selected(o: &Opts) -> Vec<(Rc<dyn Transport>, Wait)> {
    let mut out = Vec::new();
    for (name, make) in TRANSPORTS {
        let wanted = match &o.transports {
            Some(ts) => ts.iter().any(|n| n == name),
            None => !OPT_IN.contains(name),
        };
        if !wanted {
            continue;
        }
        let t: Rc<dyn Transport> = match make(&o.config) {
            Ok(t) => t.into(),
            Err(e) => {
                eprintln!("bypass bench: {name} is not available here ({e}); skipped");
                continue;
            }
        };
        for &w in t.variants() {
            if o.variants.as_ref().is_some_and(|vs| !vs.contains(&w)) {
                continue;
            }
            out.push((t.clone(), w));
        }
    }
    out
}

fn key(t: &dyn Transport, w: Wait, size: usize, status: Status, note: Option<String>) -> Key {
    Key {
        transport: t.name().to_owned(),
        variant: w.name().to_owned(),
        baseline: t.is_baseline(),
        size,
        status,
        note,
    }
}

fn too_large(t: &dyn Transport, w: Wait, size: usize) -> Option<Key> {
    (size > t.max_msg()).then(|| {
        key(
            t,
            w,
            size,
            Status::NotApplicable,
            Some(format!("max {} B", t.max_msg())),
        )
    })
}

/// A running session with the peer; the spawned peer (if any) is killed when it drops.
struct Session {
    ctl: peer::Control,
    host: String,
    _child: Option<peer::PeerChild>,
    client_core: Option<usize>,
    timeout: Duration,
}

/// A cell's data connections, opened against the peer's listener.
struct CellSpec<'a> {
    t: &'a dyn Transport,
    server_wait: Wait,
    client_wait: Wait,
    role: &'static str,
    size: usize,
    conns: usize,
}

impl Session {
    fn open(o: &Opts) -> Result<Session, String> {
        let child = match &o.peer {
            Some(_) => None,
            None => {
                let exe = std::env::current_exe()
                    .map_err(|e| format!("cannot find this executable: {e}"))?;
                let server_core = o.server_core.filter(|c| {
                    let ok = core_affinity::get_core_ids()
                        .unwrap_or_default()
                        .iter()
                        .any(|id| id.id == *c);
                    if !ok {
                        eprintln!("bypass bench: no core {c} for the peer; it runs unpinned");
                    }
                    ok
                });
                Some(peer::PeerChild::spawn(&exe, server_core)?)
            }
        };
        let addr = match (&o.peer, &child) {
            (Some(a), _) => a.clone(),
            (None, Some(c)) => c.addr.clone(),
            (None, None) => unreachable!("a peer is given or spawned"),
        };
        let ctl = peer::Control::connect(&addr)?;
        let host = ctl.peer_host();
        if let Some(c) = o.client_core {
            if !pin_to_core(c) {
                eprintln!("bypass bench: no core {c}; the client runs unpinned");
            }
        }
        Ok(Session {
            ctl,
            host,
            _child: child,
            client_core: o.client_core,
            timeout: o.timeout,
        })
    }

    /// Asks the peer for a cell and connects to it. A connect failure is reported after the
    /// peer has answered, so the control channel stays in step.
    fn start_cell(&mut self, c: &CellSpec) -> Result<Vec<Box<dyn MsgConn>>, String> {
        let max_msg = c.size.max(modes::RPC_MIN_SIZE);
        let words = self.ctl.request(
            &format!(
                "CELL {} {} {} {} {} {}",
                c.t.name(),
                c.server_wait.name(),
                c.role,
                c.size,
                c.conns,
                max_msg
            ),
            "LISTEN",
        )?;
        let addr = words
            .first()
            .ok_or("the peer sent no data address")?
            .replace("0.0.0.0", &self.host);
        let opts = ConnOpts {
            wait: c.client_wait,
            max_msg,
            recv_timeout: self.timeout,
            io_timeout: self.timeout,
            stream: c.role == "sink",
        };
        let mut conns = Vec::new();
        let mut err = None;
        for i in 0..c.conns {
            match c.t.connect(&addr, &opts) {
                Ok(conn) => conns.push(conn),
                Err(e) => {
                    err = Some(format!("connecting {i} to {addr}: {e}"));
                    break;
                }
            }
        }
        let ready = self.ctl.reply("READY");
        match (err, ready) {
            (Some(e), _) => Err(e),
            (None, Err(e)) => Err(e),
            (None, Ok(_)) => Ok(conns),
        }
    }

    fn stop_cell(&mut self) -> Result<(u64, u64), String> {
        let words = self.ctl.request("STOP", "DONE")?;
        peer::Control::counts(&words)
    }

    fn quit(&mut self) {
        let _ = self.ctl.request("QUIT", "BYE");
    }

    /// Where the peer's bypass stacks got their packet memory (None: a peer that does not
    /// answer `MEM`).
    fn peer_packet_memory(&mut self) -> Option<meta::PacketMemory> {
        let words = self.ctl.request("MEM", "MEM").ok()?;
        meta::PacketMemory::from_wire(&words)
    }

    fn pingpong(&mut self, t: &dyn Transport, w: Wait, size: usize, o: &Opts) -> PingpongRound {
        let spec = CellSpec {
            t,
            server_wait: w,
            client_wait: w,
            role: "echo",
            size,
            conns: 1,
        };
        let r = self.start_cell(&spec).and_then(|mut conns| {
            let r = modes::pingpong(conns[0].as_mut(), size, o.warmup, o.duration)
                .map_err(|e| format!("pingpong: {e}"));
            drop(conns);
            let stopped = self.stop_cell();
            let h = r?;
            stopped?;
            Ok(h)
        });
        match r.and_then(PingpongRound::ok) {
            Ok(round) => round,
            Err(e) => PingpongRound::error(e),
        }
    }

    fn stream(
        &mut self,
        t: &dyn Transport,
        w: Wait,
        size: usize,
        conns: usize,
        o: &Opts,
    ) -> StreamRound {
        let spec = CellSpec {
            t,
            server_wait: w,
            client_wait: w,
            role: "sink",
            size,
            conns,
        };
        self.stream_cell(&spec, o)
            .unwrap_or_else(StreamRound::error)
    }

    fn stream_cell(&mut self, c: &CellSpec, o: &Opts) -> Result<StreamRound, String> {
        let conns = self.start_cell(c)?;
        let msg = modes::payload(c.size);
        let stop = Arc::new(AtomicBool::new(false));
        let prepared = Arc::new(AtomicUsize::new(0));
        let core = self.client_core;
        let senders: Vec<_> = conns
            .into_iter()
            .map(|mut conn| {
                let (msg, stop, prepared) = (msg.clone(), stop.clone(), prepared.clone());
                std::thread::spawn(move || {
                    if let Some(c) = core {
                        pin_to_core(c);
                    }
                    modes::stream_send(conn.as_mut(), &msg, &stop, &prepared)
                })
            })
            .collect();
        let measured = (|| {
            // The warm-up and the window start once every sender is sending: building N
            // stacks and bringing their links up on one core can take longer than a cell on
            // a loaded machine, and a window that ends first measures nothing.
            let setup_deadline = Instant::now() + STREAM_SETUP_TIMEOUT;
            while prepared.load(Ordering::Acquire) < senders.len() {
                if senders.iter().any(|s| s.is_finished()) {
                    break; // a sender failed: its error is reported below
                }
                if Instant::now() >= setup_deadline {
                    return Err(format!(
                        "{} of {} connections ready after {} s",
                        prepared.load(Ordering::Acquire),
                        senders.len(),
                        STREAM_SETUP_TIMEOUT.as_secs()
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(o.warmup);
            let m0 = peer::Control::counts(&self.ctl.request("MARK", "COUNT")?)?;
            let t0 = Instant::now();
            std::thread::sleep(o.duration);
            let m1 = peer::Control::counts(&self.ctl.request("MARK", "COUNT")?)?;
            Ok::<_, String>((m1.0 - m0.0, m1.1 - m0.1, t0.elapsed()))
        })();
        stop.store(true, Ordering::Relaxed);
        let mut sent = 0;
        let mut err = None;
        for s in senders {
            match s.join() {
                Ok(Ok(n)) => sent += n,
                Ok(Err(e)) => err = Some(format!("sender: {e}")),
                Err(_) => err = Some("a sender thread panicked".into()),
            }
        }
        std::thread::sleep(STREAM_DRAIN);
        let done = self.stop_cell();
        let (msgs, bytes, dt) = measured?;
        if let Some(e) = err {
            return Err(e);
        }
        let (recv, _) = done?;
        if sent == 0 || msgs == 0 {
            return Err(format!(
                "nothing measured: {sent} messages sent, {msgs} received in the window"
            ));
        }
        let secs = dt.as_secs_f64();
        Ok(StreamRound {
            status: Status::Ok,
            note: None,
            gbps: Some(bytes as f64 * 8.0 / secs / 1e9),
            msgs_per_s: Some(msgs as f64 / secs),
            sent_msgs: sent,
            recv_msgs: recv,
            delivered: (sent > 0).then(|| recv as f64 / sent as f64),
            ratio_gbps_to_best_kernel: None,
        })
    }

    fn rpc(&mut self, t: &dyn Transport, w: Wait, size: usize, rate: f64, o: &Opts) -> RpcRound {
        let spec = CellSpec {
            t,
            server_wait: w,
            client_wait: w,
            role: "rpc",
            size,
            conns: 1,
        };
        let r = self.start_cell(&spec).and_then(|mut conns| {
            let r = modes::rpc(
                conns[0].as_mut(),
                size,
                rate,
                o.warmup,
                o.duration,
                RPC_DRAIN,
            )
            .map_err(|e| format!("rpc: {e}"));
            drop(conns);
            let stopped = self.stop_cell();
            let out = r?;
            stopped?;
            Ok(out)
        });
        let out = match r {
            Ok(out) => out,
            Err(e) => return RpcRound::error(e),
        };
        let histogram = match report::encode_hist(&out.hist) {
            Ok(h) => h,
            Err(e) => return RpcRound::error(e),
        };
        RpcRound {
            status: Status::Ok,
            note: None,
            achieved_per_s: Some(out.received as f64 / o.duration.as_secs_f64()),
            sent: out.sent,
            received: out.received,
            lost: out.sent - out.received,
            max_send_lag_ns: u64::try_from(out.max_send_lag.as_nanos()).unwrap_or(u64::MAX),
            latency: Some(Latency::from_hist(&out.hist)),
            histogram: Some(histogram),
            ratio_p99_to_best_kernel: None,
            hist: Some(out.hist),
        }
    }
}

/// One measured cell of the matrix, and the row its rounds go to.
struct Cell {
    mode: Mode,
    t: Rc<dyn Transport>,
    w: Wait,
    size: usize,
    conns: usize,
    rate: f64,
    row: usize,
}

impl Cell {
    /// How long the cell should take: warm-up, measurement, and a fixed allowance for the
    /// connections' set-up and tear-down (for the progress line's ETA only).
    fn expected(&self, o: &Opts) -> Duration {
        let extra = match self.mode {
            Mode::Stream => STREAM_DRAIN,
            _ => Duration::ZERO,
        };
        o.warmup + o.duration + extra + Duration::from_millis(100)
    }

    fn describe(&self) -> String {
        let what = match self.mode {
            Mode::Pingpong => "pingpong",
            Mode::Stream => "stream",
            Mode::Rpc => "rpc",
        };
        let mut s = format!("{what} {} {} {} B", self.t.name(), self.w.name(), self.size);
        match self.mode {
            Mode::Stream => s.push_str(&format!(" x {} conns", self.conns)),
            Mode::Rpc => s.push_str(&format!(" at {:.0}/s", self.rate)),
            Mode::Pingpong => {}
        }
        s
    }
}

/// The rows of the report, in table order, and the measured cells, in groups that differ only
/// in transport and variant (n/a cells get their row and no cell).
fn plan(o: &Opts, sel: &[(Rc<dyn Transport>, Wait)], report: &mut Report) -> Vec<Vec<Cell>> {
    let mut groups = Vec::new();
    for mode in &o.modes {
        match mode {
            Mode::Pingpong => {
                for &size in o.sizes.as_deref().unwrap_or(PINGPONG_SIZES) {
                    let mut g = Vec::new();
                    for (t, w) in sel {
                        let na = too_large(t.as_ref(), *w, size);
                        if na.is_none() {
                            g.push(Cell {
                                mode: *mode,
                                t: t.clone(),
                                w: *w,
                                size,
                                conns: 1,
                                rate: 0.0,
                                row: report.pingpong.len(),
                            });
                        }
                        report.pingpong.push(PingpongRow {
                            key: na.unwrap_or_else(|| key(t.as_ref(), *w, size, Status::Ok, None)),
                            rtt: None,
                            ratio_p50_to_best_kernel: None,
                            rounds: Vec::new(),
                        });
                    }
                    groups.push(g);
                }
            }
            Mode::Stream => {
                let mut conn_counts = vec![1];
                if o.conns > 1 {
                    conn_counts.push(o.conns);
                }
                for &size in o.sizes.as_deref().unwrap_or(STREAM_SIZES) {
                    for &n in &conn_counts {
                        let mut g = Vec::new();
                        for (t, w) in sel {
                            let mut k = too_large(t.as_ref(), *w, size);
                            if k.is_none() && n > t.max_conns() {
                                k = Some(key(
                                    t.as_ref(),
                                    *w,
                                    size,
                                    Status::NotApplicable,
                                    Some(format!(
                                        "{} serves at most {} connection(s) per process",
                                        t.name(),
                                        t.max_conns()
                                    )),
                                ));
                            }
                            if k.is_none() {
                                g.push(Cell {
                                    mode: *mode,
                                    t: t.clone(),
                                    w: *w,
                                    size,
                                    conns: n,
                                    rate: 0.0,
                                    row: report.stream.len(),
                                });
                            }
                            report.stream.push(StreamRow {
                                key: k
                                    .unwrap_or_else(|| key(t.as_ref(), *w, size, Status::Ok, None)),
                                conns: n,
                                gbps: None,
                                msgs_per_s: None,
                                sent_msgs: 0,
                                recv_msgs: 0,
                                delivered: None,
                                ratio_gbps_to_best_kernel: None,
                                rounds: Vec::new(),
                            });
                        }
                        groups.push(g);
                    }
                }
            }
            Mode::Rpc => {
                for &rate in &o.rates {
                    let size = o.rpc_size;
                    let mut g = Vec::new();
                    for (t, w) in sel {
                        let na = too_large(t.as_ref(), *w, size);
                        if na.is_none() {
                            g.push(Cell {
                                mode: *mode,
                                t: t.clone(),
                                w: *w,
                                size,
                                conns: 1,
                                rate,
                                row: report.rpc.len(),
                            });
                        }
                        report.rpc.push(RpcRow {
                            key: na.unwrap_or_else(|| key(t.as_ref(), *w, size, Status::Ok, None)),
                            offered_per_s: rate,
                            achieved_per_s: None,
                            sent: 0,
                            received: 0,
                            lost: 0,
                            max_send_lag_ns: 0,
                            latency: None,
                            ratio_p99_to_best_kernel: None,
                            rounds: Vec::new(),
                        });
                    }
                    groups.push(g);
                }
            }
        }
    }
    groups
}

/// Runs the matrix `--rounds` times.
///
/// Order: round by round; within a round, cell by cell (mode, size, connections or rate), and
/// within a cell every transport and variant back to back, the order reversed every other
/// round. So the figures a ratio or a comparison sets side by side (bypass against the kernel
/// at one size) are taken seconds apart, never a whole matrix apart: the VM's core state
/// (BENCHMARKING.md) drifts over minutes, and a drift then moves all transports of a cell
/// alike; reversing the order cancels a bias toward whichever transport runs first after a
/// change of size. Each round samples the machine anew, so the rounds' spread measures the
/// run-to-run noise that `bypass bench compare` judges a change against.
fn run(o: &Opts) -> Result<Report, String> {
    // Transports first: one that cannot run here says so before any peer is contacted.
    let sel = selected(o);
    if sel.is_empty() {
        return Err("no transport/variant selected".into());
    }
    let mut report = Report {
        schema_version: report::SCHEMA_VERSION,
        context: context(o),
        rounds: o.rounds,
        ..Report::default()
    };
    let mut header = header(o);
    let groups = plan(o, &sel, &mut report);
    // The floor before the peer exists, so nothing else of ours runs on its core.
    let cores = meta::floor_cores(
        o.client_core,
        (o.peer.is_none()).then_some(o.server_core).flatten(),
    );
    match meta::floor(cores) {
        Ok(f) => header.cacheline_floor = Some(f),
        Err(e) => header.cacheline_floor_note = Some(e),
    }
    let mut s = Session::open(o)?;
    let expected: Vec<Duration> = (0..o.rounds)
        .flat_map(|_| groups.iter().flatten().map(|c| c.expected(o)))
        .collect();
    let mut progress = Progress::new(&expected, o.quiet);
    for round in 0..o.rounds {
        for g in &groups {
            let order: Vec<&Cell> = if round % 2 == 1 {
                g.iter().rev().collect()
            } else {
                g.iter().collect()
            };
            for c in order {
                let of_rounds = if o.rounds > 1 {
                    format!(" round {}/{}", round + 1, o.rounds)
                } else {
                    String::new()
                };
                progress.start(format_args!("{}{of_rounds}", c.describe()), c.expected(o));
                let t = c.t.as_ref();
                match c.mode {
                    Mode::Pingpong => {
                        let r = s.pingpong(t, c.w, c.size, o);
                        report.pingpong[c.row].rounds.push(r);
                    }
                    Mode::Stream => {
                        let r = s.stream(t, c.w, c.size, c.conns, o);
                        report.stream[c.row].rounds.push(r);
                    }
                    Mode::Rpc => {
                        let r = s.rpc(t, c.w, c.size, c.rate, o);
                        report.rpc[c.row].rounds.push(r);
                    }
                }
            }
        }
    }
    let peer_mem = s.peer_packet_memory();
    s.quit();
    // The peer process is gone once the session drops: its core is free for the floor.
    drop(s);
    if header.cacheline_floor.is_some() {
        header.cacheline_floor_end = meta::floor(cores).ok();
    }
    let h = &mut header.hugepages;
    h.client = meta::packet_memory();
    h.peer = peer_mem;
    h.packet_memory = meta::packet_memory_state(&h.client, h.peer.as_ref());
    report.header = Some(header);
    report.finish();
    Ok(report)
}

/// The header before the run: build, machine, command line, hugepage reserve.
fn header(o: &Opts) -> meta::Header {
    let (cpu_model, cpus) = meta::cpu();
    meta::Header {
        bypass_version: env!("CARGO_PKG_VERSION").into(),
        git_rev: meta::git_rev().into(),
        date_utc: meta::rfc3339(std::time::SystemTime::now()),
        cpu_model,
        cpus,
        command_line: std::env::args().collect(),
        rounds: o.rounds,
        duration_ns: u64::try_from(o.duration.as_nanos()).unwrap_or(u64::MAX),
        warmup_ns: u64::try_from(o.warmup.as_nanos()).unwrap_or(u64::MAX),
        client_core: o.client_core,
        peer_core: if o.peer.is_some() {
            None
        } else {
            o.server_core
        },
        remote_peer: o.peer.is_some(),
        hugepages: meta::hugepages(),
        ..meta::Header::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct T {
        #[command(flatten)]
        a: BenchArgs,
    }

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    /// The command line as `bypass bench ARGS` reads it.
    fn parse_opts(a: &[String]) -> Result<Opts, String> {
        use clap::Parser;
        let t = T::try_parse_from(std::iter::once("bench".to_owned()).chain(a.iter().cloned()))
            .map_err(|e| e.to_string())?;
        t.a.into_opts(false)
    }

    #[test]
    fn parses_units() {
        assert_eq!(parse_size("64"), Some(64));
        assert_eq!(parse_size("1k"), Some(1024));
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("1m"), Some(1 << 20));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_rate("10k"), Some(10e3));
        assert_eq!(parse_rate("1.5m"), Some(1.5e6));
        assert_eq!(parse_rate("0"), None);
    }

    #[test]
    fn default_options_run_everything() {
        let o = parse_opts(&[]).unwrap();
        assert_eq!(o.modes, vec![Mode::Pingpong, Mode::Stream, Mode::Rpc]);
        assert_eq!(o.conns, 4);
        assert_eq!(o.rates, RATES);
        assert_eq!(
            (o.duration, o.warmup),
            (Duration::from_secs(1), Duration::from_millis(200))
        );
        assert_eq!(o.timeout, Duration::from_secs(5));
        assert_eq!((o.client_core, o.server_core), (Some(0), Some(1)));
        assert!(!o.quiet && !o.json);
        // bypass-memif (busy-poll only) and both kernel transports, both ways of waiting;
        // bypass-dpdk only when named.
        assert_eq!(selected(&o).len(), 5);
        let o = parse_opts(&args(
            "rpc --rates 1k,2k --transports kernel-tcp --variants busy --json",
        ))
        .unwrap();
        assert_eq!(o.modes, vec![Mode::Rpc]);
        assert_eq!(o.rates, vec![1e3, 2e3]);
        assert!(o.json);
        let sel = selected(&o);
        assert_eq!(sel.len(), 1);
        assert_eq!((sel[0].0.name(), sel[0].1), ("kernel-tcp", Wait::Busy));
    }

    #[test]
    fn rejects_bad_options() {
        assert!(parse_opts(&args("--sizes 64,x")).is_err());
        assert!(parse_opts(&args("--transports nope")).is_err());
        assert!(parse_opts(&args("--rpc-size 4")).is_err());
        assert!(parse_opts(&args("--duration")).is_err());
        assert!(parse_opts(&args("bogus")).is_err());
        assert!(parse_opts(&args("--duration 1")).is_err());
        assert!(parse_opts(&args("--conns 0")).is_err());
        assert!(parse_opts(&args("--no-pin --client-core 2")).is_err());
        let o = parse_opts(&args("--duration=300ms --no-pin stream stream")).unwrap();
        assert_eq!(o.duration, Duration::from_millis(300));
        assert_eq!((o.client_core, o.server_core), (None, None));
        assert_eq!(o.modes, vec![Mode::Stream]);
        assert!(parse_opts(&args("--rounds 0")).is_err());
        assert!(parse_opts(&args("--rounds x")).is_err());
        assert!(parse_opts(&args("--plot")).is_err());
        let o = parse_opts(&args("--rounds 3 --plot /tmp/p")).unwrap();
        assert_eq!(
            (o.rounds, o.plot.as_deref()),
            (3, Some(std::path::Path::new("/tmp/p")))
        );
        assert_eq!(parse_opts(&[]).unwrap().rounds, 1);
        // bypass-dpdk needs a peer elsewhere; the DPDK options need bypass-dpdk.
        let e = parse_opts(&args("--transports bypass-dpdk")).unwrap_err();
        assert!(e.contains("bypass bench-peer"), "{e}");
        let e = parse_opts(&args("--dpdk-ip 10.0.0.1")).unwrap_err();
        assert!(e.contains("--transports bypass-dpdk"), "{e}");
        assert!(parse_opts(&args("--transports bypass-dpdk --dpdk-ip 10.0.0.300")).is_err());
        let o = parse_opts(&args(
            "--transports bypass-dpdk --peer 10.0.0.1:7300 --dpdk-ip 10.9.0.2 --dpdk-dev x",
        ))
        .unwrap();
        assert_eq!(o.config.dpdk.ip, Some(std::net::Ipv4Addr::new(10, 9, 0, 2)));
        assert_eq!(o.config.dpdk.dev.as_deref(), Some("x"));
    }
}
