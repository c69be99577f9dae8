//! The results table (text and CSV) and the goal checks.

use std::fmt::Write as _;

use bypass::ccsim::scenario::{Cc, Metrics, Run};

/// Column names, in order (CSV header and table header).
pub const COLUMNS: [&str; 22] = [
    "scenario",
    "cc",
    "q_p50_us",
    "q_p99_us",
    "q_max_us",
    "mct_p50_us",
    "mct_p99_us",
    "mct_p999_us",
    "slow_p50",
    "slow_p99",
    "jitter_us",
    "jitter_std_us",
    "util_pct",
    "goodput_gbps",
    "jain",
    "converge_us",
    "ict_p50_us",
    "ict_p99_us",
    "retx",
    "drops",
    "rto",
    "packets",
];

fn f(v: Option<f64>, prec: usize) -> String {
    match v {
        None => "-".to_string(),
        Some(x) if x.is_infinite() => "never".to_string(),
        Some(x) => format!("{x:.prec$}"),
    }
}

/// The row's cells, in [`COLUMNS`] order.
pub fn cells(r: &Run) -> Vec<String> {
    let m: &Metrics = &r.metrics;
    vec![
        r.scenario.clone(),
        r.cc.name().to_string(),
        f(m.queue_p50, 2),
        f(m.queue_p99, 2),
        f(m.queue_max, 1),
        f(m.mct_p50, 1),
        f(m.mct_p99, 1),
        f(m.mct_p999, 1),
        f(m.slowdown_p50, 2),
        f(m.slowdown_p99, 2),
        f(m.jitter, 1),
        f(m.jitter_std, 1),
        f(m.util, 1),
        f(m.goodput, 2),
        f(m.jain, 3),
        f(m.converge, 0),
        f(m.ict_p50, 1),
        f(m.ict_p99, 1),
        m.retransmits.to_string(),
        m.drops.to_string(),
        m.timeouts.to_string(),
        r.packets.to_string(),
    ]
}

/// CSV text of the runs.
pub fn csv(runs: &[Run]) -> String {
    let mut s = COLUMNS.join(",");
    s.push('\n');
    for r in runs {
        s.push_str(&cells(r).join(","));
        s.push('\n');
    }
    s
}

/// A fixed-width table of the runs, one block per scenario.
pub fn table(runs: &[Run]) -> String {
    let rows: Vec<Vec<String>> = runs.iter().map(cells).collect();
    let mut width: Vec<usize> = COLUMNS.iter().map(|c| c.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.len());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i < 2 {
                let _ = write!(s, "{c:<w$} ", w = width[i]);
            } else {
                let _ = write!(s, "{c:>w$} ", w = width[i]);
            }
        }
        s.trim_end().to_string()
    };
    let header: Vec<String> = COLUMNS.iter().map(|c| c.to_string()).collect();
    let mut out = line(&header);
    out.push('\n');
    let mut last = None;
    for (r, cells) in runs.iter().zip(&rows) {
        if last.is_some_and(|l: &str| l != r.scenario) {
            out.push('\n');
        }
        last = Some(&r.scenario);
        out.push_str(&line(cells));
        out.push('\n');
    }
    out
}

/// One goal check.
#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    /// What the goal is.
    pub what: String,
    /// Met?
    pub met: bool,
    /// The measured figures behind the verdict.
    pub detail: String,
}

fn find<'a>(runs: &'a [Run], scenario: &str, cc: Cc) -> Option<&'a Metrics> {
    runs.iter()
        .find(|r| r.scenario == scenario && r.cc == cc)
        .map(|r| &r.metrics)
}

/// Check the goals for `cc` against the runs (scenarios absent from the runs are
/// skipped).
pub fn goals(runs: &[Run], cc: Cc) -> Vec<Goal> {
    let mut g = Vec::new();
    for s in ["join8-100g", "join8-25g", "noise1us-8flows-100g"] {
        if let Some(u) = find(runs, s, cc).and_then(|m| m.util) {
            g.push(Goal {
                what: format!("{}: utilisation >= 95 % ({s})", cc.name()),
                met: u >= 95.0,
                detail: format!("{u:.1} %"),
            });
        }
    }
    for s in [
        "incast64x16k-100g",
        "incast64x64k-100g",
        "incast64x256k-100g",
        "incast64x64k-25g",
    ] {
        if let Some(q) = find(runs, s, cc).and_then(|m| m.queue_p99) {
            g.push(Goal {
                what: format!("{}: p99 queueing delay <= 10 us ({s})", cc.name()),
                met: q <= 10.0,
                detail: format!("{q:.2} us"),
            });
        }
    }
    for s in ["join8-100g", "join8-25g"] {
        if let Some(j) = find(runs, s, cc).and_then(|m| m.jain) {
            g.push(Goal {
                what: format!(
                    "{}: Jain >= 0.95 within 1 ms of every join ({s})",
                    cc.name()
                ),
                met: j >= 0.95,
                detail: format!("worst {j:.3}"),
            });
        }
    }
    let scen: Vec<&str> = {
        let mut v: Vec<&str> = runs
            .iter()
            .filter(|r| r.metrics.jitter.is_some())
            .map(|r| r.scenario.as_str())
            .collect();
        v.dedup();
        v
    };
    for s in scen {
        let Some(mine) = find(runs, s, cc).and_then(|m| m.jitter) else {
            continue;
        };
        let others: Vec<(Cc, f64)> = [Cc::Cubic, Cc::Dctcp, Cc::Timely]
            .into_iter()
            .filter_map(|o| find(runs, s, o).and_then(|m| m.jitter).map(|j| (o, j)))
            .collect();
        if others.is_empty() {
            continue;
        }
        let met = others.iter().all(|&(_, j)| mine < j);
        let detail = others
            .iter()
            .fold(format!("{mine:.1} us vs"), |mut acc, (o, j)| {
                let _ = write!(acc, " {} {j:.1}", o.name());
                acc
            });
        g.push(Goal {
            what: format!("{}: jitter below cubic, dctcp, timely ({s})", cc.name()),
            met,
            detail,
        });
    }
    g
}
