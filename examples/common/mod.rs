//! What every example shares: the log subscriber.

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
