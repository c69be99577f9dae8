//! Shared by the `bypass bench` end-to-end tests: find the processes a run started (they
//! carry a tag in their environment) and run the binary with a time limit, so a hung cell
//! fails its test instead of spinning two cores until CI's limit.

use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::Duration;

/// Pids of the live processes whose environment holds `BYPASS_BENCH_TEST_TAG=tag`.
pub fn tagged_processes(tag: &str) -> Vec<u32> {
    processes_with_env(&format!("BYPASS_BENCH_TEST_TAG={tag}"))
}

/// Pids of the live processes whose environment holds the entry `kv` (`NAME=value`).
pub fn processes_with_env(kv: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|v| v == kv.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// `cmd.output()` (cmd must carry `BYPASS_BENCH_TEST_TAG=tag`), but past `limit` every
/// tagged process (the run and the peer it spawned) is killed and the test fails, saying so.
pub fn output_within(cmd: &mut Command, tag: &str, limit: Duration) -> Output {
    let (done, wait) = mpsc::channel::<()>();
    let t = tag.to_owned();
    let watchdog = std::thread::spawn(move || {
        if wait.recv_timeout(limit) != Err(mpsc::RecvTimeoutError::Timeout) {
            return false;
        }
        for pid in tagged_processes(&t) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        true
    });
    let out = cmd.output().expect("run bypass");
    let _ = done.send(());
    let fired = watchdog.join().unwrap_or(true);
    assert!(
        !fired,
        "bypass did not finish within {limit:?} (killed it and its peer): {cmd:?}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
