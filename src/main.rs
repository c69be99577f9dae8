//! The `bypass` command line (`bypass --help`; the commands are in src/cli/).
use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    cli::main()
}
