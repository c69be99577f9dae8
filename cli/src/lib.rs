//! The `bypass` command line and the tools behind it: one clap definition for every
//! subcommand, the log subscriber, shell completions and man pages, the benchmark drivers,
//! plots and reports.
//!
//! This crate (`bypass-cli`, folder `cli/`) is the binary `bypass` plus this library, which
//! holds the commands so that the integration tests under `cli/tests/` can reach what they
//! check. The tools and their dependencies (clap, plotters, the log subscriber, JSON) live
//! here, not in the `bypass` library: an embedder's build compiles none of them. The
//! library keeps plain option structs and run functions (`ccsim::run_all_with`, ...).
pub mod bench;
pub mod duration;
pub mod log;
pub mod mem;
pub mod memif_bench;
pub mod path;
pub mod sim_cc;
pub mod stat;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// `bypass --version`: the crate's version and the git revision it was built from.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BYPASS_GIT_REV"), ")");

/// A userspace kernel-bypass transport stack: drivers, benchmarks and tools.
#[derive(Parser, Debug)]
#[command(
    name = "bypass",
    version = VERSION,
    propagate_version = true,
    about,
    after_help = "Durations are a number and a unit: 200ms, 1s, 5us, 2m.\n\
                  Logs go to stderr: warnings by default, -v/-q or RUST_LOG (e.g. \
                  RUST_LOG=bypass=debug) for more or less."
)]
pub struct Cli {
    #[command(flatten)]
    log: log::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the memory this machine gives the stack (hugepages or the fallback) and cycle
    /// buffers through a pool
    Mem(mem::MemArgs),
    /// 64 B frame ping-pong and one-way rate over memif, against any memif peer
    MemifBench(memif_bench::MemifBenchArgs),
    /// Latency and throughput of the transports against the kernel's UDP and TCP
    #[command(long_about = bench::ABOUT)]
    Bench(bench::BenchArgs),
    /// The other end of `bypass bench` (spawned by it, or run on another host)
    #[command(long_about = bench::peer::ABOUT)]
    BenchPeer(bench::peer::PeerArgs),
    /// Congestion-control experiments
    #[command(subcommand)]
    Sim(Sim),
    /// Live view of a running stack's metrics endpoint (rates, drops, pools, connections)
    Stat(stat::StatArgs),
    /// Print a shell completion script (e.g. `bypass completions bash`)
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages: bypass.1 and one page per subcommand (bypass-bench.1, ...)
    Man {
        /// Directory to write them to
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum Sim {
    /// The controllers in a packet-level simulator in virtual time (table, CSV, PNGs)
    #[command(long_about = sim_cc::ABOUT)]
    Cc(sim_cc::SimCcArgs),
    /// The real stack in two processes over memif with an emulated bottleneck: ping-pong RTT
    /// idle and beside a bulk transfer
    #[command(long_about = path::ABOUT)]
    Path(path::PathArgs),
}

/// The `bypass` command.
pub fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so `bypass bench | head` would panic in `println!` once head
    // exits. Restore the default: a closed stdout ends the process quietly, as for any
    // Unix filter (a killed bench leaves socket files that the next run sweeps).
    // SAFETY: the first thing main does, before any thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    log::init(cli.log);
    match cli.command {
        Command::Mem(a) => mem::main(&a),
        Command::MemifBench(a) => memif_bench::main(&a),
        Command::Bench(a) => bench::main(a, cli.log.quiet),
        Command::BenchPeer(a) => bench::peer_main(a),
        Command::Sim(Sim::Cc(a)) => sim_cc::main(&a),
        Command::Sim(Sim::Path(a)) => path::main(&a),
        Command::Stat(a) => stat::main(&a),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "bypass", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man { out } => match write_man_pages(&out) {
            Ok(pages) => {
                for p in pages {
                    println!("wrote {}", p.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bypass man: {}: {e}", out.display());
                ExitCode::FAILURE
            }
        },
    }
}

/// A usage error found after clap parsed the command line (options that do not go
/// together): printed like clap's own, with the subcommand's usage, exit status 2.
pub fn usage_error(path: &[&str], msg: impl std::fmt::Display) -> ExitCode {
    let mut sub = Cli::command();
    sub.build();
    for name in path {
        match sub.find_subcommand(name) {
            Some(s) => sub = s.clone(),
            None => break,
        }
    }
    let _ = sub
        .error(clap::error::ErrorKind::ArgumentConflict, msg)
        .print();
    ExitCode::from(2)
}

/// Writes `bypass.1` and `bypass-SUB[-SUBSUB].1` for every subcommand into `dir`.
pub fn write_man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    // Built, a subcommand's display name is its whole path: `bypass sim cc` -> bypass-sim-cc.
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_page(&cmd, dir, &mut written)?;
    Ok(written)
}

fn write_page(cmd: &clap::Command, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    out.push(clap_mangen::Man::new(cmd.clone()).generate_to(dir)?);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_page(sub, dir, out)?;
    }
    Ok(())
}
