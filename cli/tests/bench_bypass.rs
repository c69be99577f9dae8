//! Smoke test of the main job, `bypass bench`, for the bypass transport over memif: the real
//! binary and the `bypass bench-peer` process it spawns, with tiny durations. Checks that each
//! mode (pingpong, stream, rpc) produces its bypass-memif rows with samples, and that nothing
//! is left behind: no child process (tagged through the environment) and no memif socket file
//! (the run gets its own TMPDIR, which must be empty afterwards). Never asserts a speed.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

mod bench_util;
use bench_util::{output_within, tagged_processes};

const EXE: &str = env!("CARGO_BIN_EXE_bypass");

/// A fresh directory for the run's memif socket files; removed at the end.
struct TmpDir(PathBuf);

impl TmpDir {
    fn new(tag: &str) -> TmpDir {
        let d =
            std::env::temp_dir().join(format!("bypass-bench-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TmpDir(d)
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `bypass bench ARGS --json` and returns its JSON, after checking it left nothing.
/// One run at a time: each pins its client and peer to the same two cores.
fn bench(tag: &str, args: &[&str]) -> Value {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tag = format!("{}-{tag}", std::process::id());
    let tmp = TmpDir::new(&tag);
    let out = output_within(
        Command::new(EXE)
            .arg("bench")
            .args(args)
            .args(["--transports", "bypass-memif", "--json", "-q"])
            .env("BYPASS_BENCH_TEST_TAG", &tag)
            .env("TMPDIR", &tmp.0),
        &tag,
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bypass bench {args:?} failed ({}):\n{stderr}\n{stdout}",
        out.status
    );
    let left = tagged_processes(&tag);
    assert!(
        left.is_empty(),
        "processes left behind by {args:?}: {left:?}"
    );
    let files: Vec<_> = std::fs::read_dir(&tmp.0)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(files.is_empty(), "files left behind by {args:?}: {files:?}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

/// The mode's rows, all of which must be bypass-memif rows with status ok.
fn rows<'a>(v: &'a Value, mode: &str) -> &'a Vec<Value> {
    let rows = v[mode]
        .as_array()
        .unwrap_or_else(|| panic!("no {mode} rows in {v}"));
    assert!(!rows.is_empty(), "empty {mode} rows in {v}");
    for r in rows {
        assert_eq!(r["transport"], "bypass-memif", "{r}");
        assert_eq!(r["status"], "ok", "{r}");
    }
    rows
}

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}

fn sizes(rows: &[Value]) -> Vec<u64> {
    let mut s: Vec<u64> = rows.iter().map(|r| u(r, "size")).collect();
    s.dedup();
    s
}

#[test]
fn pingpong_over_bypass_memif_has_samples_for_each_size() {
    let v = bench(
        "pingpong",
        &[
            "pingpong",
            "--sizes",
            "64,64k",
            "--duration",
            "300ms",
            "--warmup",
            "300ms",
        ],
    );
    let rows = rows(&v, "pingpong");
    assert_eq!(sizes(rows), [64, 65536], "{v}");
    for r in rows {
        let samples = u(&r["rtt"], "samples");
        assert!(samples > 0, "{r}");
        println!("pingpong {} B: {samples} round trips", u(r, "size"));
    }
}

#[test]
fn stream_over_bypass_memif_delivers_messages_on_one_and_two_connections() {
    let v = bench(
        "stream",
        &[
            "stream",
            "--sizes",
            "64,64k",
            "--conns",
            "2",
            // 64 KiB on two connections sent 0 messages in a 200 ms window once, at load
            // average 10 (the sender's queue full from the warm-up, the peer descheduled):
            // a window of a second holds on a loaded 2-core machine.
            "--duration",
            "1s",
            "--warmup",
            "300ms",
        ],
    );
    let rows = rows(&v, "stream");
    assert_eq!(sizes(rows), [64, 65536], "{v}");
    let mut conns: Vec<u64> = rows.iter().map(|r| u(r, "conns")).collect();
    conns.sort();
    conns.dedup();
    assert_eq!(conns, [1, 2], "{v}");
    for r in rows {
        let (sent, recv) = (u(r, "sent_msgs"), u(r, "recv_msgs"));
        assert!(recv > 0 && recv <= sent, "{r}");
        println!(
            "stream {} B x {} conns: {sent} sent, {recv} received",
            u(r, "size"),
            u(r, "conns")
        );
    }
}

#[test]
fn rpc_over_bypass_memif_answers_requests() {
    let v = bench(
        "rpc",
        &[
            "rpc",
            "--rates",
            "10k",
            "--duration",
            "200ms",
            "--warmup",
            "300ms",
        ],
    );
    let rows = rows(&v, "rpc");
    for r in rows {
        let (sent, received) = (u(r, "sent"), u(r, "received"));
        assert!(received > 0 && received <= sent, "{r}");
        assert!(u(&r["latency"], "samples") > 0, "{r}");
        println!("rpc at 10k/s: {sent} sent, {received} answered");
    }
}
