//! The `bypass` command line.
use std::process::ExitCode;

mod cli;

const USAGE: &str = "usage: bypass <command>

commands:
  mem [--iterations N]   show the memory this machine gives the stack (hugepages or the
                         fallback) and cycle buffers through a pool
  memif-bench ...        64 B frame ping-pong and one-way rate over memif (--help)
  bench [MODE] [options] latency and throughput of the transports against the kernel's
                         UDP and TCP (`bypass bench --help`)
  sim cc [--quick] ...   congestion-control experiments in virtual time (table, CSV, PNGs)
  sim path ...           congestion control on an emulated path between two processes:
                         ping-pong RTT idle and beside a bulk transfer (`bypass sim path --help`)
  stat ADDR [--once --json]
                         live view of a running stack's metrics endpoint (rates, drops,
                         pools, connections; `bypass stat --help`)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("mem") => {
            let iterations = match args.get(1).map(String::as_str) {
                Some("--iterations") => match args.get(2).and_then(|n| n.parse().ok()) {
                    Some(n) => n,
                    None => return usage("--iterations takes a number"),
                },
                None => 10_000_000,
                Some(other) => return usage(&format!("unknown option {other}")),
            };
            match bypass::mem::selftest::run(iterations) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("bypass mem: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("memif-bench") => {
            use bypass::pmd::memif::bench;
            match bench::parse(&args[1..]).and_then(|o| bench::run(&o)) {
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
        Some("bench") => cli::bench::main(&args[1..]),
        Some("bench-peer") => cli::bench::peer_main(&args[1..]),
        Some("stat") => cli::stat::main(&args[1..]),
        Some("sim") if args.get(1).map(String::as_str) == Some("cc") => {
            bypass::ccsim::cli(&args[2..])
        }
        Some("sim") if args.get(1).map(String::as_str) == Some("path") => {
            cli::path::main(&args[2..])
        }
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => usage("no command"),
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!("bypass: {why}\n{USAGE}");
    ExitCode::from(2)
}
