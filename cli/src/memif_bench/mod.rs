//! `bypass memif-bench`: one memif side against any memif peer (ours, or dpdk-testpmd): the
//! command line here, the driver in [`engine`].
pub mod engine;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use self::engine::{self as bench, Options};
use bypass::pmd::memif::Role;
use clap::{Args, ValueEnum};

/// This end's role on the memif socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Connects to a server's socket (DPDK's older name: slave)
    #[value(alias = "slave")]
    Client,
    /// Serves the socket (DPDK's older name: master)
    #[value(alias = "master")]
    Server,
}

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Send one frame, wait for it to come back, record the round trip
    Ping,
    /// Bounce every received frame back unchanged (testpmd `io` forwarding)
    Pong,
    /// Send frames as fast as the ring takes them, for --duration
    Tx,
    /// Count received frames; the rate between the first and the last second
    Rx,
    /// Client and server ports in this one thread forwarding frames: CPU ns per hop
    Loopback,
    /// No memif: two threads on cores 0 and 1 bounce one cache line (the floor)
    Cacheline,
}

/// `bypass memif-bench` options.
#[derive(Args, Debug)]
#[command(after_help = "Output is key=value lines (scripts/bench-memif.sh reads them).")]
pub struct MemifBenchArgs {
    /// Role on the socket
    #[arg(long, value_enum, default_value = "client")]
    pub role: RoleArg,
    /// The memif control socket (a leading @ names an abstract socket)
    #[arg(long, value_name = "PATH", default_value = "/run/bypass-memif.sock")]
    pub socket: PathBuf,
    /// Interface id
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub id: u32,
    /// What to do
    #[arg(long, value_enum, default_value = "ping")]
    pub mode: ModeArg,
    /// Frame size in bytes (60..=2048)
    #[arg(long, value_name = "BYTES", default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(60..=2048))]
    pub size: u16,
    /// Round trips to measure (ping), frames to bounce before exiting (pong; default 0 =
    /// until --duration), hops to time (loopback) [default: 100000]
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Round trips to discard first (ping, cacheline)
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub warmup: u64,
    /// How long to run (tx, rx; pong also stops after this long; 0 = no limit for pong)
    #[arg(long, value_name = "TIME", default_value = "5s", value_parser = super::duration::parse)]
    pub duration: Duration,
    /// Core to pin to
    #[arg(long, value_name = "N")]
    pub core: Option<usize>,
    /// How long to wait for the link to come up
    #[arg(long, value_name = "TIME", default_value = "30s", value_parser = super::duration::parse)]
    pub link_timeout: Duration,
    /// Ring size, log2
    #[arg(long = "ring", value_name = "LOG2", default_value_t = 10)]
    pub log2_ring: u8,
    /// Ping: give a measured frame up (lost) when not answered within this long (a warm-up
    /// frame after at most 200 ms); an answer that comes later counts as late
    #[arg(long, value_name = "TIME", default_value = "200ms", value_parser = super::duration::parse)]
    pub answer_timeout: Duration,
    /// Client: copy each received frame out of the memory the server writes before reading
    /// it (the defence against a hostile server; docs/SECURITY.md)
    #[arg(long)]
    pub copy_rx: bool,
}

impl MemifBenchArgs {
    /// The library's options.
    pub fn options(&self) -> Options {
        let mode = self
            .mode
            .to_possible_value()
            .map(|v| v.get_name().to_owned())
            .unwrap_or_default();
        let d = Options::default();
        Options {
            role: match self.role {
                RoleArg::Client => Role::Client,
                RoleArg::Server => Role::Server,
            },
            socket: self.socket.clone(),
            id: self.id,
            size: usize::from(self.size),
            // A pong with no --count bounces until --duration.
            count: self.count.unwrap_or(if self.mode == ModeArg::Pong {
                0
            } else {
                d.count
            }),
            warmup: self.warmup,
            duration: self.duration,
            core: self.core,
            link_timeout: self.link_timeout,
            log2_ring: self.log2_ring,
            answer_timeout: self.answer_timeout,
            copy_rx: self.copy_rx,
            mode,
        }
    }
}

/// `bypass memif-bench`.
pub fn main(args: &MemifBenchArgs) -> ExitCode {
    match bench::run(&args.options()) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bypass memif-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
