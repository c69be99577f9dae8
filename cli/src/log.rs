//! What the library logs (through `tracing`) goes to stderr: warnings by default (the
//! hugepage fallback, memif errors, a link going down), more with `-v`, errors only with `-q`.
//! `RUST_LOG` (`tracing_subscriber::EnvFilter` syntax, e.g. `RUST_LOG=bypass::pmd=debug`)
//! overrides the flags.
use std::io::IsTerminal;
use std::sync::OnceLock;

use clap::{ArgAction, Args};
use tracing_subscriber::EnvFilter;

/// The global `-v` / `-q` options.
#[derive(Args, Debug, Clone, Copy, Default)]
pub struct LogArgs {
    /// More log output on stderr: -v info, -vv debug, -vvv trace (default: warnings)
    #[arg(short, long, action = ArgAction::Count, global = true, display_order = 1000)]
    pub verbose: u8,
    /// Quiet: errors only on stderr (and no progress lines from `bench`)
    #[arg(
        short,
        long,
        global = true,
        conflicts_with = "verbose",
        display_order = 1000
    )]
    pub quiet: bool,
}

impl LogArgs {
    /// The level these flags ask for.
    pub fn level(&self) -> &'static str {
        match (self.quiet, self.verbose) {
            (true, _) => "error",
            (false, 0) => "warn",
            (false, 1) => "info",
            (false, 2) => "debug",
            (false, _) => "trace",
        }
    }

    /// The same flags, for a child process this one starts (`bench-peer`, the `sim path`
    /// server), so it logs as much as its parent.
    pub fn to_args(self) -> Vec<String> {
        let mut v = Vec::new();
        if self.quiet {
            v.push("-q".to_owned());
        }
        if self.verbose > 0 {
            v.push(format!("-{}", "v".repeat(usize::from(self.verbose))));
        }
        v
    }
}

static CHOSEN: OnceLock<LogArgs> = OnceLock::new();

/// Installs the subscriber: `RUST_LOG` when it is set (and valid), else the flags' level.
pub fn init(args: LogArgs) {
    let _ = CHOSEN.set(args);
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.trim().is_empty() => EnvFilter::try_new(&s).unwrap_or_else(|e| {
            eprintln!("bypass: RUST_LOG={s:?} is not a valid filter ({e}); using the flags");
            EnvFilter::new(args.level())
        }),
        _ => EnvFilter::new(args.level()),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The log flags this process was started with, to pass to a child (empty before [`init`]).
pub fn child_args() -> Vec<String> {
    CHOSEN.get().map(|a| a.to_args()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_child_flags() {
        let a = |verbose, quiet| LogArgs { verbose, quiet };
        assert_eq!(a(0, false).level(), "warn");
        assert_eq!(a(1, false).level(), "info");
        assert_eq!(a(2, false).level(), "debug");
        assert_eq!(a(5, false).level(), "trace");
        assert_eq!(a(0, true).level(), "error");
        assert!(a(0, false).to_args().is_empty());
        assert_eq!(a(2, false).to_args(), ["-vv"]);
        assert_eq!(a(0, true).to_args(), ["-q"]);
    }
}
