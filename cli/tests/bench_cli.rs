//! `bypass bench` end to end: the real binary, its real peer process, the kernel transports
//! over loopback. Checks the rows and that the fields are sane and consistent (never a speed),
//! and that no peer process is left behind.
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod bench_util;
use bench_util::{output_within, tagged_processes};

const EXE: &str = env!("CARGO_BIN_EXE_bypass");

/// Runs `bypass ARGS` with a tag in its environment (inherited by the peer it spawns), checks
/// that no tagged process outlives it, and returns (success, stdout, stderr).
fn bypass(tag: &str, args: &[&str]) -> (bool, String, String) {
    let out = output_within(
        Command::new(EXE)
            .args(args)
            .env("BYPASS_BENCH_TEST_TAG", tag),
        tag,
        Duration::from_secs(120),
    );
    let left = tagged_processes(tag);
    assert!(
        left.is_empty(),
        "processes left behind by {args:?}: {left:?}"
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(tag: &str, args: &[&str]) -> Value {
    let (ok, out, err) = bypass(tag, args);
    assert!(ok, "bypass {args:?} failed:\n{err}\n{out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

fn rows<'a>(v: &'a Value, mode: &str) -> &'a Vec<Value> {
    v[mode]
        .as_array()
        .unwrap_or_else(|| panic!("no {mode} rows in {v}"))
}

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}

fn f(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}

/// p50 <= p90 <= p99 <= p99.9 <= p99.99 <= max, jitter = p99 - p50, samples > 0.
fn check_latency(l: &Value) -> u64 {
    let samples = u(l, "samples");
    assert!(samples > 0, "{l}");
    let p: Vec<u64> = [
        "p50_ns",
        "p90_ns",
        "p99_ns",
        "p99_9_ns",
        "p99_99_ns",
        "max_ns",
    ]
    .iter()
    .map(|k| u(l, k))
    .collect();
    assert!(p[0] > 0, "{l}");
    assert!(
        p.windows(2).all(|w| w[0] <= w[1]),
        "percentiles out of order: {l}"
    );
    assert_eq!(u(l, "jitter_ns"), p[2] - p[0], "{l}");
    samples
}

/// The kernel's transports and variants. These tests check the CLI's structure against the
/// kernel baselines only (`--transports kernel-udp,kernel-tcp`): under the parallel test
/// harness on a small machine a busy-polling bypass cell of 100 ms can end with no sample;
/// `tests/bench_bypass.rs` covers the bypass rows, one run at a time.
const KERNEL: [(&str, &str); 4] = [
    ("kernel-udp", "blocking"),
    ("kernel-udp", "busy-poll"),
    ("kernel-tcp", "blocking"),
    ("kernel-tcp", "busy-poll"),
];

fn row_id(r: &Value) -> (String, String, u64) {
    (
        r["transport"].as_str().unwrap().to_owned(),
        r["variant"].as_str().unwrap().to_owned(),
        u(r, "size"),
    )
}

#[test]
fn bench_pingpong_json_has_a_row_per_transport_variant_and_size() {
    let v = json(
        "pingpong-json",
        &[
            "bench",
            // The kernel rows this test counts; tests/bench_bypass.rs covers bypass-memif.
            "--transports",
            "kernel-udp,kernel-tcp",
            "pingpong",
            "--transports",
            "kernel-udp,kernel-tcp",
            "--sizes",
            "64,70000",
            "--duration",
            "150ms",
            "--warmup",
            "30ms",
            "--json",
            "-q",
        ],
    );
    let rows = rows(&v, "pingpong");
    let ids: Vec<_> = rows.iter().map(row_id).collect();
    let want: Vec<_> = [64u64, 70000]
        .iter()
        .flat_map(|&s| {
            KERNEL
                .iter()
                .map(move |(t, w)| (t.to_string(), w.to_string(), s))
        })
        .collect();
    assert_eq!(ids, want);
    let mut best_per_size = [0; 2];
    for r in rows {
        let udp_too_big = r["transport"] == "kernel-udp" && u(r, "size") > 65507;
        if udp_too_big {
            assert_eq!(r["status"], "not_applicable", "{r}");
            assert!(r["rtt"].is_null(), "{r}");
            continue;
        }
        assert_eq!(r["status"], "ok", "{r}");
        check_latency(&r["rtt"]);
        let ratio = f(r, "ratio_p50_to_best_kernel");
        assert!(
            ratio >= 1.0 - 1e-9,
            "a kernel row beats the best kernel row: {r}"
        );
        if (ratio - 1.0).abs() < 1e-9 {
            best_per_size[usize::from(u(r, "size") != 64)] += 1;
        }
    }
    assert!(best_per_size.iter().all(|&n| n >= 1), "{best_per_size:?}");
}

#[test]
fn bench_pingpong_table_names_round_trip_and_marks_udp_beyond_a_datagram() {
    let (ok, out, err) = bypass(
        "pingpong-table",
        &[
            "bench",
            // The kernel rows this test counts; tests/bench_bypass.rs covers bypass-memif.
            "--transports",
            "kernel-udp,kernel-tcp",
            "pingpong",
            "--transports",
            "kernel-udp,kernel-tcp",
            "--sizes",
            "64,1m",
            "--duration",
            "100ms",
            "--warmup",
            "20ms",
        ],
    );
    assert!(ok, "{err}\n{out}");
    assert!(out.contains("ROUND-TRIP"), "{out}");
    for (t, w) in KERNEL {
        let lines: Vec<&str> = out
            .lines()
            .filter(|l| l.split_whitespace().take(2).eq([t, w]))
            .collect();
        assert_eq!(lines.len(), 2, "{t} {w}:\n{out}");
        let big = lines[1];
        if t == "kernel-udp" {
            assert!(big.contains("n/a"), "{big}");
        } else {
            // transport variant size samples p50 ... ratio
            let cells: Vec<&str> = big.split_whitespace().collect();
            assert_eq!(cells.len(), 12, "{big}");
            assert_eq!(cells[2], "1Mi");
            assert!(cells[3].parse::<u64>().unwrap() > 0, "{big}");
        }
    }
    // Progress goes to stderr, one line per measured cell (2 UDP cells are n/a), counted.
    let progress: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("bench: [") && l.contains("] pingpong "))
        .collect();
    assert_eq!(progress.len(), 6, "{err}");
    assert!(progress[5].starts_with("bench: [6/6] "), "{err}");
    // The header: hugepages and the cache-line floor.
    assert!(out.contains("hugepages: "), "{out}");
    assert!(out.contains("cache-line floor"), "{out}");
}

#[test]
fn bench_stream_counts_messages_for_one_and_several_connections() {
    let v = json(
        "stream",
        &[
            "bench",
            // The kernel rows this test counts; tests/bench_bypass.rs covers bypass-memif.
            "--transports",
            "kernel-udp,kernel-tcp",
            "stream",
            "--transports",
            "kernel-udp,kernel-tcp",
            "--sizes",
            "64,4k",
            "--conns",
            "2",
            "--duration",
            "150ms",
            "--warmup",
            "30ms",
            "--json",
            "-q",
        ],
    );
    let rows = rows(&v, "stream");
    assert_eq!(rows.len(), 2 * 2 * 4, "{v}");
    for r in rows {
        assert_eq!(r["status"], "ok", "{r}");
        let (size, conns) = (u(r, "size"), u(r, "conns"));
        assert!(conns == 1 || conns == 2, "{r}");
        let (sent, recv) = (u(r, "sent_msgs"), u(r, "recv_msgs"));
        assert!(sent > 0 && recv > 0 && recv <= sent, "{r}");
        let (gbps, mps) = (f(r, "gbps"), f(r, "msgs_per_s"));
        assert!(gbps > 0.0 && mps > 0.0, "{r}");
        // Gb/s is payload: msg/s x size x 8.
        let implied = mps * size as f64 * 8.0 / 1e9;
        assert!((gbps - implied).abs() <= 1e-6 * gbps.max(implied), "{r}");
        assert!(f(r, "ratio_gbps_to_best_kernel") <= 1.0 + 1e-9, "{r}");
    }
}

#[test]
fn bench_rpc_is_open_loop_at_the_offered_rate() {
    let v = json(
        "rpc",
        &[
            "bench",
            // The kernel rows this test counts; tests/bench_bypass.rs covers bypass-memif.
            "--transports",
            "kernel-udp,kernel-tcp",
            "rpc",
            "--transports",
            "kernel-udp,kernel-tcp",
            "--rates",
            "2k,5k",
            "--rpc-size",
            "32",
            "--duration",
            "200ms",
            "--warmup",
            "50ms",
            "--json",
            "-q",
        ],
    );
    let rows = rows(&v, "rpc");
    assert_eq!(rows.len(), 2 * 4, "{v}");
    for r in rows {
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(u(r, "size"), 32);
        let rate = f(r, "offered_per_s");
        // The schedule alone fixes how many requests were sent in the window.
        assert_eq!(u(r, "sent"), (rate * 0.2).round() as u64, "{r}");
        let (sent, received) = (u(r, "sent"), u(r, "received"));
        assert!(received > 0, "{r}");
        assert_eq!(received + u(r, "lost"), sent, "{r}");
        assert_eq!(check_latency(&r["latency"]), received, "{r}");
        assert!(f(r, "achieved_per_s") <= rate * 1.0001, "{r}");
    }
}

#[test]
fn bench_runs_against_a_peer_at_an_address_and_fails_cleanly_when_it_dies() {
    let tag = "remote";
    let mut peer = Command::new(EXE)
        .args(["bench-peer", "--listen", "127.0.0.1:0"])
        .env("BYPASS_BENCH_TEST_TAG", tag)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start bench-peer");
    let mut line = String::new();
    BufReader::new(peer.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("bypass-bench-peer listening on ")
        .unwrap_or_else(|| panic!("unexpected peer line {line:?}"))
        .to_owned();
    let run = |args: &[&str]| {
        Command::new(EXE)
            .args(["bench", "--peer", &addr, "-q"])
            .args(args)
            .output()
            .expect("run bypass bench")
    };
    // The leftover detector sees a live tagged process (so its empty answers mean something).
    assert_eq!(tagged_processes(tag), vec![peer.id()]);
    // A peer that is not a child: the client runs against it, twice (it serves sessions).
    for _ in 0..2 {
        let out = run(&[
            "pingpong",
            "--sizes",
            "64",
            "--transports",
            "kernel-tcp",
            "--duration",
            "50ms",
            "--warmup",
            "10ms",
            "--json",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(rows(&v, "pingpong").len(), 2);
    }
    // The peer dies in the middle of a run: the client reports it, it does not hang.
    let t0 = Instant::now();
    let client = Command::new(EXE)
        .args(["bench", "--peer", &addr, "-q", "pingpong", "--sizes", "64"])
        .args(["--duration", "3s", "--timeout", "1s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    peer.kill().unwrap();
    peer.wait().unwrap();
    let out = client.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the client did not notice:\n{err}");
    assert!(
        err.contains("peer") || err.contains("error"),
        "no reason given:\n{err}"
    );
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    assert!(tagged_processes(tag).is_empty());
}

#[test]
fn bench_killed_outright_leaves_no_peer_behind() {
    let tag = "sigkill";
    let mut client = Command::new(EXE)
        .args([
            "bench",
            // The kernel rows this test counts; tests/bench_bypass.rs covers bypass-memif.
            "--transports",
            "kernel-udp,kernel-tcp",
            "pingpong",
            "--sizes",
            "64",
            "--duration",
            "10s",
            "-q",
        ])
        .env("BYPASS_BENCH_TEST_TAG", tag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the peer child is up (two tagged processes), then SIGKILL the client: no
    // guard runs, the peer must notice its closed control channel and exit by itself.
    let t0 = Instant::now();
    while tagged_processes(tag).len() < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the peer never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    client.kill().unwrap();
    client.wait().unwrap();
    let t1 = Instant::now();
    while !tagged_processes(tag).is_empty() {
        assert!(
            t1.elapsed() < Duration::from_secs(10),
            "peer still running: {:?}",
            tagged_processes(tag)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bench_reports_an_unreachable_peer_quickly() {
    // Port 1 on loopback: nothing listens there, the connect is refused.
    let t0 = Instant::now();
    let (ok, _, err) = bypass(
        "unreachable",
        &["bench", "pingpong", "--peer", "127.0.0.1:1"],
    );
    assert!(!ok);
    assert!(err.contains("cannot reach the peer"), "{err}");
    assert!(t0.elapsed() < Duration::from_secs(15));
    let (ok, _, err) = bypass("badarg", &["bench", "--sizes", "lots"]);
    assert!(!ok);
    assert!(err.contains("invalid value 'lots' for '--sizes"), "{err}");
}

#[test]
fn bench_peer_answers_bad_requests_with_errors_and_exits_when_its_client_leaves() {
    use std::io::Write;
    let mut peer = Command::new(EXE)
        .args(["bench-peer", "--listen", "127.0.0.1:0", "--once"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start bench-peer");
    let mut line = String::new();
    BufReader::new(peer.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_owned();
    let mut ctl = std::net::TcpStream::connect(&addr).unwrap();
    ctl.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut replies = BufReader::new(ctl.try_clone().unwrap());
    let mut ask = |req: &str| {
        writeln!(ctl, "{req}").unwrap();
        let mut reply = String::new();
        replies.read_line(&mut reply).unwrap();
        reply.trim().to_owned()
    };
    assert_eq!(
        ask("CELL carrier-pigeon busy-poll echo 64 1 64"),
        "ERR unknown transport carrier-pigeon"
    );
    assert!(ask("CELL kernel-udp sideways echo 64 1 64").starts_with("ERR unknown wait"));
    assert!(ask("HELLO").starts_with("ERR unknown request"));
    assert_eq!(ask("MARK"), "COUNT 0 0");
    assert_eq!(ask("STOP"), "DONE 0 0");
    drop(ctl);
    drop(replies);
    // A --once peer exits by itself when its control channel closes.
    let t0 = Instant::now();
    loop {
        if let Some(status) = peer.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the peer did not exit"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The time limit the other tests run under works: a run longer than it is killed with its
/// peer, and the test fails saying so.
#[test]
fn a_run_past_the_time_limit_is_killed_with_its_peer() {
    let tag = format!("{}-watchdog", std::process::id());
    let args = [
        "bench",
        "stream",
        "--sizes",
        "64",
        "--conns",
        "1",
        "--duration",
        "30s",
        "--transports",
        "kernel-udp",
        "--variants",
        "blocking",
        "-q",
    ];
    let r = std::panic::catch_unwind(|| {
        output_within(
            Command::new(EXE)
                .args(args)
                .env("BYPASS_BENCH_TEST_TAG", &tag),
            &tag,
            Duration::from_secs(2),
        )
    });
    let msg = match r {
        Ok(_) => panic!("a 30 s run finished within a 2 s limit"),
        Err(e) => e.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(msg.contains("did not finish within"), "{msg}");
    assert!(
        tagged_processes(&tag).is_empty(),
        "left: {:?}",
        tagged_processes(&tag)
    );
}
