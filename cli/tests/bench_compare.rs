//! `bypass bench` runs you can keep and compare: one short real run (bypass over memif and the
//! kernel's UDP, two rounds, `--json --plot`) whose JSON carries the header (build, date,
//! machine, hugepages, cache-line floor) and each round's decodable histogram; then
//! `bypass bench compare` on that file against itself (no regression), against a copy whose
//! latencies were scaled up (a regression, named), and against files it must refuse; and the
//! PNGs `--plot` and `bypass bench plot` write. Never asserts a speed.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde_json::Value;

mod bench_util;
use bench_util::{output_within, tagged_processes};

const EXE: &str = env!("CARGO_BIN_EXE_bypass");

/// The test's scratch directory (memif sockets, JSON copies, plots), removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let d = std::env::temp_dir().join(format!("bypass-bench-compare-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("tmp")).unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One test, in steps: they all read the same real run, made once (a few seconds of two
/// busy cores), and share its scratch directory.
#[test]
fn bench_runs_can_be_kept_compared_and_plotted() {
    let scratch = Scratch::new();
    let r = run(&scratch.0);
    json_has_the_header_and_each_rounds_histogram(&r);
    compare_with_itself_finds_no_regression(&r);
    compare_names_a_cell_whose_latency_went_up_and_fails(&r, &scratch.0);
    compare_refuses_other_schemas_and_unreadable_files(&r, &scratch.0);
    plot_writes_pngs_from_the_run_and_from_its_json(&r, &scratch.0);
    // The run left no memif socket file behind.
    let left: Vec<_> = std::fs::read_dir(scratch.0.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

struct Run {
    json: Value,
    path: PathBuf,
    stderr: String,
    plots: PathBuf,
}

/// The real run every step reads.
fn run(scratch: &Path) -> Run {
    {
        let tag = format!("{}-compare", std::process::id());
        let plots = scratch.join("plots");
        let out = output_within(
            Command::new(EXE)
                .args([
                    "bench",
                    "pingpong",
                    "--sizes",
                    "64",
                    "--duration",
                    "100ms",
                    "--warmup",
                    "50ms",
                    "--rounds",
                    "2",
                    "--json",
                    "--transports",
                    "bypass-memif,kernel-udp",
                    "--plot",
                ])
                .arg(&plots)
                .env("BYPASS_BENCH_TEST_TAG", &tag)
                .env("TMPDIR", scratch.join("tmp")),
            &tag,
            Duration::from_secs(120),
        );
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "bench failed:\n{stderr}\n{stdout}");
        assert!(tagged_processes(&tag).is_empty(), "processes left behind");
        let json: Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"));
        let path = scratch.join("run.json");
        std::fs::write(&path, &stdout).unwrap();
        Run {
            json,
            path,
            stderr,
            plots,
        }
    }
}

fn decode(s: &str) -> Histogram<u64> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("histogram is base64");
    Deserializer::new()
        .deserialize(&mut &bytes[..])
        .expect("histogram decodes")
}

fn encode(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    V2DeflateSerializer::new().serialize(h, &mut buf).unwrap();
    base64::engine::general_purpose::STANDARD.encode(buf)
}

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}

fn compare(old: &Path, new: &Path) -> Output {
    Command::new(EXE)
        .args(["bench", "compare"])
        .arg(old)
        .arg(new)
        .output()
        .expect("run bypass bench compare")
}

fn write(scratch: &Path, name: &str, v: &Value) -> PathBuf {
    let p = scratch.join(name);
    std::fs::write(&p, serde_json::to_string_pretty(v).unwrap()).unwrap();
    p
}

fn is_png(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &b[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    assert_eq!(&b[12..16], b"IHDR");
    let be = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
    let (w, h) = (be(16), be(20));
    assert!(b.len() > 10_000, "{}: {} bytes", path.display(), b.len());
    (w, h)
}

fn json_has_the_header_and_each_rounds_histogram(r: &Run) {
    let v = &r.json;
    assert_eq!(v["schema_version"], 1, "{v}");
    let h = &v["header"];
    assert!(!h["bypass_version"].as_str().unwrap().is_empty(), "{h}");
    assert!(!h["git_rev"].as_str().unwrap().is_empty(), "{h}");
    let date = h["date_utc"].as_str().unwrap();
    // RFC 3339 UTC: 2026-12-07T06:30:00Z.
    assert_eq!(date.len(), 20, "{date}");
    assert_eq!(
        (&date[4..5], &date[10..11], &date[19..]),
        ("-", "T", "Z"),
        "{date}"
    );
    assert!(date[..4].parse::<u32>().unwrap() >= 2024, "{date}");
    assert!(!h["cpu_model"].as_str().unwrap().is_empty(), "{h}");
    assert!(u(h, "cpus") >= 1, "{h}");
    let cmd: Vec<&str> = h["command_line"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(cmd.windows(2).any(|w| w == ["--rounds", "2"]), "{cmd:?}");
    assert_eq!(u(h, "rounds"), 2);
    // Hugepages: the kernel's reserve is read, and the bypass stacks of both processes
    // counted where their packet pools came from.
    let hp = &h["hugepages"];
    assert!(hp["total"].is_u64() && hp["free"].is_u64(), "{hp}");
    let pools = |p: &Value| u(p, "hugepage_pools") + u(p, "base_page_pools");
    assert!(pools(&hp["client"]) >= 1, "{hp}");
    assert!(pools(&hp["peer"]) >= 1, "{hp}");
    let state = hp["packet_memory"].as_str().unwrap();
    assert!(
        ["hugepages", "4k-fallback", "4k", "mixed"].contains(&state),
        "{hp}"
    );
    // A fallback says why.
    if u(&hp["client"], "fallbacks") > 0 {
        assert!(hp["client"]["fallback_reason"].is_string(), "{hp}");
    }
    // The floor: measured between the client's and the peer's cores where there are two.
    if u(h, "cpus") >= 2 {
        for f in [&h["cacheline_floor"], &h["cacheline_floor_end"]] {
            assert!(u(f, "samples") > 0, "{h}");
            assert!(
                u(f, "p50_ns") > 0 && u(f, "p99_9_ns") >= u(f, "p50_ns"),
                "{h}"
            );
            assert_eq!(f["cores"], serde_json::json!([0, 1]), "{h}");
        }
    }
    // One row per transport and variant, two rounds each, each with its histogram.
    let rows = v["pingpong"].as_array().unwrap();
    let ids: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r["transport"].as_str().unwrap(),
                r["variant"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            ("bypass-memif", "busy-poll"),
            ("kernel-udp", "blocking"),
            ("kernel-udp", "busy-poll")
        ]
    );
    for row in rows {
        assert_eq!(row["status"], "ok", "{row}");
        let rounds = row["rounds"].as_array().unwrap();
        assert_eq!(rounds.len(), 2, "{row}");
        let mut total = 0;
        for rd in rounds {
            let rtt = &rd["rtt"];
            let hist = decode(rd["histogram"].as_str().unwrap());
            assert!(!hist.is_empty(), "{rd}");
            assert_eq!(hist.len(), u(rtt, "samples"), "{rd}");
            assert_eq!(hist.value_at_quantile(0.5), u(rtt, "p50_ns"), "{rd}");
            assert_eq!(hist.max(), u(rtt, "max_ns"), "{rd}");
            assert!(rd["ratio_p50_to_best_kernel"].is_f64(), "{rd}");
            total += hist.len();
        }
        // The row's summary holds both rounds' samples.
        assert_eq!(u(&row["rtt"], "samples"), total, "{row}");
    }
    // Progress: 3 cells x 2 rounds, counted, with an ETA.
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("bench: [") && l.contains("] pingpong "))
        .collect();
    assert_eq!(lines.len(), 6, "{}", r.stderr);
    assert!(
        lines[0].starts_with("bench: [1/6] pingpong"),
        "{}",
        lines[0]
    );
    assert!(
        lines[5].starts_with("bench: [6/6] pingpong"),
        "{}",
        lines[5]
    );
    assert!(lines.iter().all(|l| l.contains("ETA ")), "{}", r.stderr);
}

fn compare_with_itself_finds_no_regression(r: &Run) {
    let out = compare(&r.path, &r.path);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("0 regressed"), "{text}");
    // Every figure of the three cells is within the noise (two rounds: judged from the
    // histograms), or has too few samples to judge (a busy-polling cell on a loaded machine
    // may get few round trips); the cell with the most samples is judged.
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("pingpong "))
        .collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(
        lines
            .iter()
            .all(|l| l.ends_with("within noise (histograms)") || l.contains("too few samples")),
        "{text}"
    );
    let (cell, _) = busiest(&r.json);
    assert!(
        lines.iter().any(|l| l.starts_with(&cell)
            && l.contains(" p50 RTT us ")
            && l.ends_with("within noise (histograms)")),
        "{cell}: {text}"
    );
    assert!(!text.contains("WARNING: the cache-line floors"), "{text}");
}

/// The ping-pong row with the most round trips in its smallest round (the one whose p50 has
/// enough samples to be judged whatever the machine's load): its name as `compare` prints it
/// (`pingpong TRANSPORT VARIANT 64`), and its transport and variant.
fn busiest(v: &Value) -> (String, (String, String)) {
    let rows = v["pingpong"].as_array().unwrap();
    let fewest = |r: &Value| {
        r["rounds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| u(&x["rtt"], "samples"))
            .min()
            .unwrap()
    };
    let r = rows.iter().max_by_key(|r| fewest(r)).unwrap();
    assert!(
        fewest(r) >= 20,
        "no cell has 20 round trips in every round: {v}"
    );
    let (t, w) = (
        r["transport"].as_str().unwrap().to_owned(),
        r["variant"].as_str().unwrap().to_owned(),
    );
    (format!("pingpong {t} {w} 64 "), (t, w))
}

/// The run with every latency of the row of `transport` and `variant` multiplied by `k`
/// (summaries and histograms).
fn scaled(v: &Value, (transport, variant): &(String, String), k: u64) -> Value {
    let mut v = v.clone();
    let scale_lat = |l: &mut Value| {
        for f in [
            "p50_ns",
            "p90_ns",
            "p99_ns",
            "p99_9_ns",
            "p99_99_ns",
            "max_ns",
            "jitter_ns",
        ] {
            l[f] = Value::from(l[f].as_u64().unwrap() * k);
        }
        l["mean_ns"] = Value::from(l["mean_ns"].as_f64().unwrap() * k as f64);
    };
    for row in v["pingpong"].as_array_mut().unwrap() {
        if row["transport"] != transport.as_str() || row["variant"] != variant.as_str() {
            continue;
        }
        scale_lat(&mut row["rtt"]);
        for rd in row["rounds"].as_array_mut().unwrap() {
            scale_lat(&mut rd["rtt"]);
            let h = decode(rd["histogram"].as_str().unwrap());
            let mut big = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).unwrap();
            for x in h.iter_recorded() {
                big.record_n(x.value_iterated_to() * k, x.count_at_value())
                    .unwrap();
            }
            rd["histogram"] = Value::from(encode(&big));
        }
    }
    v
}

fn compare_names_a_cell_whose_latency_went_up_and_fails(r: &Run, scratch: &Path) {
    let (cell, which) = busiest(&r.json);
    let slow = write(scratch, "slow.json", &scaled(&r.json, &which, 3));
    let out = compare(&r.path, &slow);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let bad: Vec<&str> = text.lines().filter(|l| l.contains("REGRESSED")).collect();
    // The p50 for sure; the p99.9 too unless the run had too few samples to judge it.
    assert!(bad.len() == 1 || bad.len() == 2, "{text}");
    assert!(bad.iter().all(|l| l.starts_with(&cell)), "{cell}: {text}");
    assert!(
        bad.iter()
            .any(|l| l.contains(" p50 RTT us ") && l.contains("+200.0%")),
        "{text}"
    );
    // The kernel rows did not change.
    assert!(text.contains(&format!("{} regressed", bad.len())), "{text}");
    // The other way round it is an improvement, and the exit status says all is well.
    let out = compare(&slow, &r.path);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let better = text.lines().filter(|l| l.contains("improved (")).count();
    assert_eq!(better, bad.len(), "{text}");
}

fn compare_refuses_other_schemas_and_unreadable_files(r: &Run, scratch: &Path) {
    let mut v2 = r.json.clone();
    v2["schema_version"] = Value::from(2);
    let v2 = write(scratch, "v2.json", &v2);
    let out = compare(&r.path, &v2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("schema version 2"), "{err}");
    let mut none = r.json.clone();
    none.as_object_mut().unwrap().remove("schema_version");
    let none = write(scratch, "none.json", &none);
    assert_eq!(compare(&none, &r.path).status.code(), Some(2));
    let junk = scratch.join("junk.json");
    std::fs::write(&junk, "{ not json").unwrap();
    assert_eq!(compare(&r.path, &junk).status.code(), Some(2));
    assert_eq!(
        compare(&r.path, &scratch.join("missing.json"))
            .status
            .code(),
        Some(2)
    );
    // A histogram that does not decode is unreadable input too.
    let mut bad = r.json.clone();
    bad["pingpong"][0]["rounds"][0]["histogram"] = Value::from("AAAA");
    let bad = write(scratch, "bad-hist.json", &bad);
    let out = compare(&r.path, &bad);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn plot_writes_pngs_from_the_run_and_from_its_json(r: &Run, scratch: &Path) {
    let (w, h) = is_png(&r.plots.join("pingpong_latency.png"));
    assert!(w >= 1000 && h >= 400, "{w}x{h}");
    // No stream or rpc cells ran: no such plots.
    assert!(!r.plots.join("stream_throughput.png").exists());
    let again = scratch.join("replot");
    let out = Command::new(EXE)
        .args(["bench", "plot"])
        .arg(&r.path)
        .arg(&again)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(is_png(&again.join("pingpong_latency.png")), (w, h));
}
