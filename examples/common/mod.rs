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

/// Faults to inject, from the environment: `BYPASS_FAULTS=loss=0.05,reorder=0.05,seed=7`
/// (each optional; `loss` and `reorder` are probabilities per frame, applied to the frames
/// this process sends and receives). For trying an example on a bad network: the transport
/// recovers what the faults take. Unset: none.
#[allow(dead_code)] // (not every example offers it)
pub fn faults_from_env() -> Option<bypass::pmd::faults::FaultConfig> {
    use bypass::pmd::faults::{FaultConfig, FaultSpec, Loss, Reorder};
    let spec = std::env::var("BYPASS_FAULTS").ok()?;
    let (mut loss, mut reorder, mut seed) = (0.0, 0.0, 1u64);
    for kv in spec.split(',').filter(|s| !s.is_empty()) {
        let bad = || -> ! {
            eprintln!("BYPASS_FAULTS: cannot read {kv:?} (want loss=P,reorder=P,seed=N)");
            std::process::exit(2)
        };
        let (k, v) = kv.split_once('=').unwrap_or_else(|| bad());
        match k {
            "loss" => loss = v.parse().unwrap_or_else(|_| bad()),
            "reorder" => reorder = v.parse().unwrap_or_else(|_| bad()),
            "seed" => seed = v.parse().unwrap_or_else(|_| bad()),
            _ => bad(),
        }
    }
    let lane = FaultSpec {
        loss: Loss::Random { p: loss },
        reorder: (reorder > 0.0).then_some(Reorder {
            probability: reorder,
            after: 3,
            max_hold_ns: 200_000,
        }),
        ..FaultSpec::default()
    };
    eprintln!("faults injected (BYPASS_FAULTS): loss {loss}, reorder {reorder}, seed {seed}");
    Some(FaultConfig {
        seed,
        tx: lane.clone(),
        rx: lane,
    })
}

/// kv_server's memif socket of core `c` (kv_client connects to it): the path itself with one
/// core, `PATH.c` with several.
#[allow(dead_code)] // (the kv examples only)
pub fn kv_core_socket(path: &std::path::Path, c: u32, cores: u32) -> std::path::PathBuf {
    if cores == 1 {
        return path.to_path_buf();
    }
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{c}"));
    std::path::PathBuf::from(s)
}

/// kv_server's address on core `c`.
#[allow(dead_code)] // (the kv examples only)
pub fn kv_server_ip(c: u32) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::new(10, 78, 0, 1 + c as u8)
}
