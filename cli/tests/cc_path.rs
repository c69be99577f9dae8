//! `bypass sim path` end to end, with tiny durations: the real binary spawns its real server
//! process per controller over memif. Checks that every controller gets a complete row in the
//! table and the CSV, that the fields are sane (never a speed), and that no server process
//! is left behind.

#[allow(dead_code)] // its bench helpers; this test takes the process lookup only
mod bench_util;

use std::process::Command;

const EXE: &str = env!("CARGO_BIN_EXE_bypass");
const CCS: [&str; 5] = ["swift", "cubic", "dctcp", "timely", "fixed"];

/// Pids whose environment carries `BYPASS_PATH_TEST_TAG=tag`.
fn tagged_processes(tag: &str) -> Vec<u32> {
    bench_util::processes_with_env(&format!("BYPASS_PATH_TEST_TAG={tag}"))
}

#[test]
fn every_controller_gets_a_row() {
    let tag = format!("{}", std::process::id());
    let csv = std::env::temp_dir().join(format!("bypass-cc-path-{tag}.csv"));
    let out = Command::new(EXE)
        .args([
            "sim",
            "path",
            "--cc",
            &CCS.join(","),
            "--idle=50ms",
            "--warm",
            "50ms",
            "--load",
            "100ms",
            // Unpinned, beside whatever else the machine runs: round trips can take the
            // scheduler's ticks (milliseconds). A large host slack keeps Swift's targets
            // above such delays so its window cannot collapse to a crawl (a smoke test of
            // the command, not of Swift on a starved host).
            "--no-pin",
            "--host-slack",
            "100ms",
            "--csv",
        ])
        .arg(&csv)
        .env("BYPASS_PATH_TEST_TAG", &tag)
        .output()
        .expect("run bypass sim path");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bypass sim path failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let left = tagged_processes(&tag);
    assert!(left.is_empty(), "server processes left behind: {left:?}");

    // The markdown table: one row per controller, in order, 11 cells each.
    let rows: Vec<Vec<String>> = stdout
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| cc "))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names, CCS, "table rows:\n{stdout}");
    for r in &rows {
        assert_eq!(r.len(), 11, "row {r:?}");
        // RTT percentiles: positive and ordered within each phase.
        let rtt: Vec<f64> = r[1..7].iter().map(|c| c.parse().unwrap()).collect();
        assert!(rtt.iter().all(|&x| x > 0.0), "row {r:?}");
        assert!(rtt[0] <= rtt[1] && rtt[1] <= rtt[2], "idle {r:?}");
        assert!(rtt[3] <= rtt[4] && rtt[4] <= rtt[5], "loaded {r:?}");
        let gbps: f64 = r[7].parse().unwrap();
        assert!(gbps >= 0.0, "row {r:?}");
        let (idle_n, loaded_n) = r[10].split_once('/').unwrap();
        assert!(idle_n.parse::<u64>().unwrap() > 0, "row {r:?}");
        assert!(loaded_n.parse::<u64>().unwrap() > 0, "row {r:?}");
    }

    // The CSV: a header and the same controllers.
    let text = std::fs::read_to_string(&csv).expect("csv written");
    let _ = std::fs::remove_file(&csv);
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("cc,idle_p50_us,"));
    let csv_names: Vec<&str> = lines.map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(csv_names, CCS);
}

#[test]
fn unknown_controller_is_a_usage_error() {
    let out = Command::new(EXE)
        .args(["sim", "path", "--cc", "bbr"])
        .output()
        .expect("run bypass sim path");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown controller bbr"));
}
