//! The `bypass` command line.
use std::process::ExitCode;

const USAGE: &str = "usage: bypass <command>

commands:
  mem [--iterations N]   show the memory this machine gives the stack (hugepages or the
                         fallback) and cycle buffers through a pool
  memif-bench ...        64 B frame ping-pong and one-way rate over memif (--help)";

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
