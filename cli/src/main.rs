//! The `bypass` command line (`bypass --help`; the commands are in this crate's library).
use std::process::ExitCode;

fn main() -> ExitCode {
    bypass_cli::main()
}
