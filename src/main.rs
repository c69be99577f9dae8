//! The `bypass` command line: bench, sim, stat, echo.
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("mem") => match bypass::mem::selftest::run() {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bypass mem: {e}");
                ExitCode::FAILURE
            }
        },
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
        _ => {
            eprintln!("usage: bypass mem | bypass memif-bench --help");
            ExitCode::from(2)
        }
    }
}
