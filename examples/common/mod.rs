//! What every example shares: the log subscriber, `--help`.

/// Shows the library's `tracing` logs on stderr: warnings by default (the hugepage fallback,
/// memif errors, a link going down), or what `RUST_LOG` asks for (e.g. `RUST_LOG=debug`).
pub fn init_log() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// The command-line arguments after the program name; `-h` or `--help` anywhere prints
/// `usage` on stdout and exits 0 (instead of being taken for a socket path).
#[allow(dead_code)] // (not every example takes arguments this way)
pub fn args(usage: &str) -> Vec<String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{usage}");
        std::process::exit(0);
    }
    args
}
