//! `bypass bench compare OLD.json NEW.json`: two saved runs (`bypass bench --json`), cell by
//! cell, with a verdict on whether each change is beyond the noise.
//!
//! Cells match by mode, transport, variant, size, and connections (stream) or offered rate
//! (rpc). The figures compared: ping-pong p50 and p99.9 round trip, rpc p50 and p99 latency
//! (lower is better), stream Gb/s (higher is better). Each run's value is the median over
//! its rounds.
//!
//! # The noise rule
//!
//! A change counts only when it is at least [`MIN_EFFECT`] (2 %) of the old value: smaller
//! drifts are routine between runs on a shared VM, whatever the statistics say. Beyond that:
//!
//! - Both runs have 3 rounds or more: the rounds' own spread. The change is beyond the noise
//!   when the new median lies outside the old rounds' min-max range widened on each side by
//!   the width of the new rounds' range ([`rounds_rule`]). With rounds that differ only by
//!   noise (independent, Gaussian) that flags about 2 % of figures per direction with 3
//!   rounds each and under 0.1 % with 5 (the unit tests measure this); it catches a shift of
//!   five standard deviations of a round's figure more than 90 % of the time with 3 rounds.
//!   More rounds: fewer false alarms, and a real change still shows when it is larger than
//!   the rounds' spread.
//! - Fewer rounds, latency figures: the histograms of all rounds (merged per run). The change
//!   is beyond the noise when it exceeds half the width of the band of ranks around the
//!   quantile, averaged over both runs ([`hist_rule`]): p25 to p75 for the median; for a tail
//!   quantile q, q - (1-q)/2 to q + (1-q)/2 (p98.5 to p99.5 for p99). A rank-based
//!   confidence interval from 10^5 samples would call a 0.3 % shift real, but the samples of
//!   one run are not independent (the vCPUs' state drifts over the run, BENCHMARKING.md), so
//!   the distribution's own width is the honest scale of what moves between runs.
//! - Fewer rounds, stream figures (no distribution recorded): no verdict ("noise unknown").
//!
//! A latency quantile q is judged only when every round of both runs has at least
//! [`MIN_TAIL_SAMPLES`] samples beyond it (`samples x (1 - q) >= 10`: 10 000 round trips for
//! p99.9, 20 for the median); otherwise it is the few largest samples of a round, which on a
//! shared VM are the scheduler's time slices, not the code ("too few samples"). Two runs of
//! the same build taken a minute apart (bench/results/2026-12-07-*) had 3 of 20 figures
//! called improved by the rounds rule alone, all p99.9 from 1 300 to 5 600 samples a round.
//!
//! Both runs' cache-line floors are shown; floors that differ by more than half
//! ([`FLOOR_WARN`]) mean the cores were in different states, and every change may be the
//! machine's rather than the code's: a warning says so.
//!
//! Exit status: 1 when a figure regressed beyond the noise (latency up, throughput down),
//! 0 otherwise, 2 when a file cannot be read or the schema versions differ.
use std::process::ExitCode;

use hdrhistogram::Histogram;

use super::meta::Header;
use super::report::{self, decode_hist, median, range, Report, Status, SCHEMA_VERSION};

/// The smallest relative change that can be judged beyond the noise.
pub const MIN_EFFECT: f64 = 0.02;
/// Cache-line floors whose p50s differ by more than this factor draw a warning.
pub const FLOOR_WARN: f64 = 1.5;
/// Rounds both runs need for [`rounds_rule`].
pub const MIN_ROUNDS: usize = 3;
/// Samples beyond a quantile that every round needs for the quantile to be judged.
pub const MIN_TAIL_SAMPLES: f64 = 10.0;

const USAGE: &str = "usage: bypass bench compare OLD.json NEW.json
  Compares two `bypass bench --json` runs cell by cell: old -> new, the change, and whether
  it is beyond the noise (from the rounds' spread with --rounds 3 or more in both runs,
  from the latency histograms otherwise). Exit 1 when a cell regressed beyond the noise,
  0 otherwise, 2 on unreadable input or different schema versions.";

/// `bypass bench compare ARGS`.
pub fn main(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let [old, new] = args else {
        eprintln!("bypass bench compare: expected two files\n{USAGE}");
        return ExitCode::from(2);
    };
    let (old_r, new_r) = match (load(old), load(new)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("bypass bench compare: {e}");
            return ExitCode::from(2);
        }
    };
    let cmp = match compare(&old_r, &new_r) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bypass bench compare: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", cmp.text(old, new, &old_r, &new_r));
    if cmp.regressions() > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Reads a `bypass bench --json` file of this schema version ([`SCHEMA_VERSION`]; a file of
/// another version, or of none, is refused, so two files compared are always of one version).
pub fn load(path: &str) -> Result<Report, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{path}: not JSON: {e}"))?;
    let version = v
        .get("schema_version")
        .map(|x| x.as_u64().ok_or(()))
        .transpose()
        .map_err(|()| format!("{path}: schema_version is not a number"))?
        .unwrap_or(0);
    if version != u64::from(SCHEMA_VERSION) {
        let what = if version == 0 {
            "no schema_version (written before bypass bench recorded one)".to_owned()
        } else {
            format!("schema version {version}")
        };
        return Err(format!(
            "{path}: {what}; this bypass reads version {SCHEMA_VERSION}"
        ));
    }
    serde_json::from_value(v).map_err(|e| format!("{path}: not a bypass bench report: {e}"))
}

/// Which way a figure is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Latency.
    Lower,
    /// Throughput.
    Higher,
}

/// One figure of one cell in one run.
#[derive(Debug)]
pub struct Sample {
    /// Its value in each round that ran.
    pub rounds: Vec<f64>,
    /// All rounds' samples together, for a latency figure.
    pub hist: Option<Histogram<u64>>,
    /// The quantile the figure is (latency).
    pub quantile: Option<f64>,
    /// The fewest samples in any of its rounds (latency).
    pub min_samples: Option<u64>,
    /// Why the cell has no figure (n/a, error).
    pub missing: Option<String>,
}

impl Sample {
    fn value(&self) -> Option<f64> {
        median(&self.rounds)
    }
}

/// A figure of a cell.
#[derive(Debug)]
struct Figure {
    cell: String,
    name: &'static str,
    unit_div: f64,
    better: Better,
    sample: Sample,
}

/// How a verdict was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// The rounds' spread ([`rounds_rule`]).
    Rounds,
    /// The latency histograms ([`hist_rule`]).
    Histogram,
    /// No noise estimate.
    None,
    /// Too few samples beyond the quantile ([`MIN_TAIL_SAMPLES`]).
    FewSamples,
}

/// What became of a figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Better beyond the noise.
    Improved,
    /// Worse beyond the noise.
    Regressed,
    /// Within the noise.
    Noise,
    /// No noise estimate.
    Unknown,
}

/// The rounds rule: the new rounds' median lies outside the old rounds' `[min, max]` widened
/// on each side by the new rounds' `max - min`, and the change is at least [`MIN_EFFECT`].
/// Returns the sign of the change when it is beyond the noise (1.0 up, -1.0 down).
pub fn rounds_rule(old: &[f64], new: &[f64]) -> Option<f64> {
    let (olo, ohi) = range(old)?;
    let (nlo, nhi) = range(new)?;
    let (mo, mn) = (median(old)?, median(new)?);
    let w = nhi - nlo;
    let beyond = mn > ohi + w || mn < olo - w;
    (beyond && effect(mo, mn)).then(|| (mn - mo).signum())
}

/// The histogram rule for quantile `q`: `|new - old|` exceeds half the mean width of the two
/// runs' rank bands around `q` ([`band`]), and the change is at least [`MIN_EFFECT`].
/// Returns the sign of the change when it is beyond the noise.
pub fn hist_rule(
    old: &Histogram<u64>,
    new: &Histogram<u64>,
    q: f64,
    old_v: f64,
    new_v: f64,
) -> Option<f64> {
    if old.is_empty() || new.is_empty() {
        return None;
    }
    let width = (band(old, q) + band(new, q)) / 2.0;
    let beyond = (new_v - old_v).abs() > width / 2.0;
    (beyond && effect(old_v, new_v)).then(|| (new_v - old_v).signum())
}

/// The width of `h` between the quantiles `q - d` and `q + d`, `d = min(1/4, (1-q)/2)`:
/// p25 to p75 around the median, p98.5 to p99.5 around p99.
pub fn band(h: &Histogram<u64>, q: f64) -> f64 {
    let d = (0.25f64).min((1.0 - q) / 2.0);
    let hi = h.value_at_quantile((q + d).min(1.0)) as f64;
    let lo = h.value_at_quantile((q - d).max(0.0)) as f64;
    hi - lo
}

fn effect(old: f64, new: f64) -> bool {
    old != 0.0 && ((new - old) / old).abs() >= MIN_EFFECT
}

/// Judges one figure.
pub fn judge(old: &Sample, new: &Sample, better: Better) -> (Verdict, Method) {
    let (Some(ov), Some(nv)) = (old.value(), new.value()) else {
        return (Verdict::Unknown, Method::None);
    };
    if let Some(q) = old.quantile {
        let fewest = old.min_samples.min(new.min_samples).unwrap_or(0);
        if (fewest as f64) * (1.0 - q) < MIN_TAIL_SAMPLES {
            return (Verdict::Unknown, Method::FewSamples);
        }
    }
    let (sign, method) = if old.rounds.len() >= MIN_ROUNDS && new.rounds.len() >= MIN_ROUNDS {
        (rounds_rule(&old.rounds, &new.rounds), Method::Rounds)
    } else {
        match (&old.hist, &new.hist, old.quantile) {
            (Some(oh), Some(nh), Some(q)) => (hist_rule(oh, nh, q, ov, nv), Method::Histogram),
            _ => return (Verdict::Unknown, Method::None),
        }
    };
    let verdict = match (sign, better) {
        (None, _) => Verdict::Noise,
        (Some(s), Better::Lower) if s > 0.0 => Verdict::Regressed,
        (Some(_), Better::Lower) => Verdict::Improved,
        (Some(s), Better::Higher) if s < 0.0 => Verdict::Regressed,
        (Some(_), Better::Higher) => Verdict::Improved,
    };
    (verdict, method)
}

/// A latency figure of a cell: its name, the quantile, and that quantile in a round's summary.
type Quantile = (&'static str, f64, fn(&report::Latency) -> u64);

/// The latency figures of one ping-pong or rpc cell, lower is better: per quantile, each
/// round's value, and all rounds' histogram for the noise estimate.
fn latency_figures(
    out: &mut Vec<Figure>,
    cell: &str,
    lat: &[&report::Latency],
    hist: Option<Histogram<u64>>,
    missing: Option<String>,
    quantiles: [Quantile; 2],
) {
    for (name, q, f) in quantiles {
        out.push(Figure {
            cell: cell.to_owned(),
            name,
            unit_div: 1000.0,
            better: Better::Lower,
            sample: Sample {
                rounds: lat.iter().map(|l| f(l) as f64).collect(),
                hist: hist.clone(),
                quantile: Some(q),
                min_samples: lat.iter().map(|l| l.samples).min(),
                missing: missing.clone(),
            },
        });
    }
}

/// The figures of a run, in table order.
fn figures(r: &Report) -> Result<Vec<Figure>, String> {
    let mut out = Vec::new();
    let missing = |k: &report::Key| match k.status {
        Status::Ok => None,
        Status::NotApplicable => Some("n/a".to_owned()),
        Status::Error => Some("error".to_owned()),
    };
    let hists = |hs: Vec<Option<&String>>| -> Result<Option<Histogram<u64>>, String> {
        let mut m: Option<Histogram<u64>> = None;
        for s in hs.into_iter().flatten() {
            let h = decode_hist(s)?;
            match &mut m {
                None => m = Some(h),
                Some(m) => m
                    .add(&h)
                    .map_err(|e| format!("merging histograms: {e:?}"))?,
            }
        }
        Ok(m)
    };
    for row in &r.pingpong {
        let k = &row.key;
        let cell = format!(
            "pingpong {} {} {}",
            k.transport,
            k.variant,
            report::size(k.size)
        );
        let lat: Vec<_> = row.rounds.iter().filter_map(|x| x.rtt.as_ref()).collect();
        let hist = hists(row.rounds.iter().map(|x| x.histogram.as_ref()).collect())
            .map_err(|e| format!("{cell}: {e}"))?;
        let quantiles: [Quantile; 2] = [
            ("p50 RTT us", 0.5, |l| l.p50_ns),
            ("p99.9 RTT us", 0.999, |l| l.p99_9_ns),
        ];
        latency_figures(&mut out, &cell, &lat, hist, missing(k), quantiles);
    }
    for row in &r.stream {
        let k = &row.key;
        out.push(Figure {
            cell: format!(
                "stream {} {} {} x{}",
                k.transport,
                k.variant,
                report::size(k.size),
                row.conns
            ),
            name: "Gb/s",
            unit_div: 1.0,
            better: Better::Higher,
            sample: Sample {
                rounds: row.rounds.iter().filter_map(|x| x.gbps).collect(),
                hist: None,
                quantile: None,
                min_samples: None,
                missing: missing(k),
            },
        });
    }
    for row in &r.rpc {
        let k = &row.key;
        let cell = format!(
            "rpc {} {} {} @{:.0}/s",
            k.transport,
            k.variant,
            report::size(k.size),
            row.offered_per_s
        );
        let lat: Vec<_> = row
            .rounds
            .iter()
            .filter_map(|x| x.latency.as_ref())
            .collect();
        let hist = hists(row.rounds.iter().map(|x| x.histogram.as_ref()).collect())
            .map_err(|e| format!("{cell}: {e}"))?;
        let quantiles: [Quantile; 2] = [
            ("p50 us", 0.5, |l| l.p50_ns),
            ("p99 us", 0.99, |l| l.p99_ns),
        ];
        latency_figures(&mut out, &cell, &lat, hist, missing(k), quantiles);
    }
    Ok(out)
}

/// One line of the comparison.
#[derive(Debug)]
struct Line {
    cell: String,
    figure: &'static str,
    old: Option<f64>,
    new: Option<f64>,
    verdict: Option<(Verdict, Method)>,
    /// Why there is no verdict (a cell only in one run, n/a, failed).
    why: Option<String>,
}

/// The comparison of two runs.
#[derive(Debug)]
pub struct Comparison {
    lines: Vec<Line>,
}

/// Compares two reports of the same schema; fails on a histogram that does not decode.
pub fn compare(old: &Report, new: &Report) -> Result<Comparison, String> {
    let of = figures(old)?;
    let mut nf = figures(new)?;
    let mut lines = Vec::new();
    for o in of {
        let found = nf.iter().position(|n| n.cell == o.cell && n.name == o.name);
        let Some(i) = found else {
            lines.push(Line {
                cell: o.cell,
                figure: o.name,
                old: o.sample.value().map(|v| v / o.unit_div),
                new: None,
                verdict: None,
                why: Some("only in old".into()),
            });
            continue;
        };
        let n = nf.remove(i);
        let why = match (&o.sample.missing, &n.sample.missing) {
            (None, None) => None,
            (a, b) => Some(format!(
                "old {}, new {}",
                a.as_deref().unwrap_or("ok"),
                b.as_deref().unwrap_or("ok")
            )),
        };
        let verdict = why.is_none().then(|| judge(&o.sample, &n.sample, o.better));
        lines.push(Line {
            cell: o.cell,
            figure: o.name,
            old: o.sample.value().map(|v| v / o.unit_div),
            new: n.sample.value().map(|v| v / n.unit_div),
            verdict,
            why,
        });
    }
    for n in nf {
        lines.push(Line {
            cell: n.cell,
            figure: n.name,
            old: None,
            new: n.sample.value().map(|v| v / n.unit_div),
            verdict: None,
            why: Some("only in new".into()),
        });
    }
    Ok(Comparison { lines })
}

impl Comparison {
    /// Figures that regressed beyond the noise.
    pub fn regressions(&self) -> usize {
        self.count(Verdict::Regressed)
    }

    fn count(&self, v: Verdict) -> usize {
        self.lines
            .iter()
            .filter(|l| l.verdict.map(|x| x.0) == Some(v))
            .count()
    }

    /// The readable report.
    pub fn text(&self, old_name: &str, new_name: &str, old: &Report, new: &Report) -> String {
        let mut out = String::new();
        out.push_str(&run_line("old", old_name, old));
        out.push_str(&run_line("new", new_name, new));
        for w in warnings(old, new) {
            out.push_str(&format!("WARNING: {w}\n"));
        }
        let methods: Vec<Method> = self
            .lines
            .iter()
            .filter_map(|l| l.verdict.map(|v| v.1))
            .collect();
        if methods.contains(&Method::Histogram) || methods.contains(&Method::None) {
            out.push_str(&format!(
                "note: a run has fewer than {MIN_ROUNDS} rounds: noise judged from the latency \
                 histograms (p25-p75 band), none for throughput; use --rounds {MIN_ROUNDS} or \
                 more in both runs for the rounds' own spread\n"
            ));
        }
        out.push('\n');
        let head = ["cell", "figure", "old", "new", "change", "verdict"];
        let mut rows: Vec<[String; 6]> = Vec::new();
        for l in &self.lines {
            let num = |v: Option<f64>| v.map_or_else(|| "-".into(), fmt_num);
            let change = match (l.old, l.new) {
                (Some(o), Some(n)) if o != 0.0 => format!("{:+.1}%", (n - o) / o * 100.0),
                _ => "-".into(),
            };
            let verdict = match (&l.verdict, &l.why) {
                (_, Some(w)) => w.clone(),
                (Some((v, m)), None) => {
                    let how = match m {
                        Method::Rounds => " (rounds)",
                        Method::Histogram => " (histograms)",
                        Method::None | Method::FewSamples => "",
                    };
                    match (v, m) {
                        (Verdict::Regressed, _) => format!("REGRESSED{how}"),
                        (Verdict::Improved, _) => format!("improved{how}"),
                        (Verdict::Noise, _) => format!("within noise{how}"),
                        (Verdict::Unknown, Method::FewSamples) => {
                            format!("too few samples (< {MIN_TAIL_SAMPLES} beyond it a round)")
                        }
                        (Verdict::Unknown, _) => "noise unknown".into(),
                    }
                }
                (None, None) => "-".into(),
            };
            rows.push([
                l.cell.clone(),
                l.figure.to_owned(),
                num(l.old),
                num(l.new),
                change,
                verdict,
            ]);
        }
        let mut w = head.map(str::len);
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.len());
            }
        }
        let line = |c: &[String]| {
            format!(
                "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}  {}\n",
                c[0],
                c[1],
                c[2],
                c[3],
                c[4],
                c[5],
                w0 = w[0],
                w1 = w[1],
                w2 = w[2],
                w3 = w[3],
                w4 = w[4]
            )
        };
        out.push_str(&line(&head.map(str::to_owned)));
        for r in &rows {
            out.push_str(&line(r));
        }
        out.push_str(&format!(
            "\n{} regressed, {} improved, {} within noise, {} not judged (no noise estimate, \
             or too few samples)\n",
            self.regressions(),
            self.count(Verdict::Improved),
            self.count(Verdict::Noise),
            self.count(Verdict::Unknown)
        ));
        out
    }
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn run_line(which: &str, name: &str, r: &Report) -> String {
    let Some(h) = &r.header else {
        return format!("{which}: {name}: no header\n");
    };
    let floor = match &h.cacheline_floor {
        Some(f) => format!(
            "cache-line floor p50 {:.3} us, p99.9 {:.3} us",
            f.p50_ns as f64 / 1e3,
            f.p99_9_ns as f64 / 1e3
        ),
        None => "no cache-line floor".into(),
    };
    format!(
        "{which}: {name}: {} rev {}, {} round(s), {} CPUs ({}); {floor}; packet memory {}\n",
        h.date_utc, h.git_rev, r.rounds, h.cpus, h.cpu_model, h.hugepages.packet_memory
    )
}

/// What makes the two runs less comparable than their figures suggest.
fn warnings(old: &Report, new: &Report) -> Vec<String> {
    let (Some(a), Some(b)) = (&old.header, &new.header) else {
        return vec!["a run has no header: machine state unknown".into()];
    };
    let mut w = Vec::new();
    if let Some(x) = floor_differs(a, b) {
        w.push(x);
    }
    if a.cpu_model != b.cpu_model || a.cpus != b.cpus {
        w.push(format!(
            "different machines: {} CPUs ({}) against {} CPUs ({})",
            a.cpus, a.cpu_model, b.cpus, b.cpu_model
        ));
    }
    if a.hugepages.packet_memory != b.hugepages.packet_memory {
        w.push(format!(
            "packet memory differs: {} against {}",
            a.hugepages.packet_memory, b.hugepages.packet_memory
        ));
    }
    if a.duration_ns != b.duration_ns || a.warmup_ns != b.warmup_ns {
        w.push("different --duration or --warmup".into());
    }
    w
}

/// A warning when the two runs' cache-line floors (p50) differ by more than [`FLOOR_WARN`].
fn floor_differs(a: &Header, b: &Header) -> Option<String> {
    let (fa, fb) = (a.cacheline_floor.as_ref()?, b.cacheline_floor.as_ref()?);
    let (x, y) = (fa.p50_ns as f64, fb.p50_ns as f64);
    let r = x.max(y) / x.min(y).max(1.0);
    (r > FLOOR_WARN).then(|| {
        format!(
            "the cache-line floors differ by {:.0} % ({:.3} us against {:.3} us): the cores were \
             in different states (BENCHMARKING.md, near/far); differences may be the machine's, \
             not the code's",
            (r - 1.0) * 100.0,
            x / 1e3,
            y / 1e3
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::modes::new_histogram;
    use bypass::rng::SplitMix64;

    /// A deterministic generator of standard normal numbers (Box-Muller over SplitMix64).
    struct Normal(SplitMix64);

    impl Normal {
        fn next(&mut self) -> f64 {
            // u in (0, 1]: ln(u) is finite.
            let (u, v) = (1.0 - self.0.next_f64(), self.0.next_f64());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }
        fn rounds(&mut self, n: usize, mean: f64, sd: f64) -> Vec<f64> {
            (0..n).map(|_| mean + sd * self.next()).collect()
        }
    }

    /// How often the rounds rule calls a change (either way) among `trials` pairs of runs
    /// whose rounds are Gaussian, sd 1 around 100 and 100 + shift.
    fn flagged(rounds: usize, shift: f64, trials: usize) -> f64 {
        let mut g = Normal(SplitMix64::new(1));
        let hits = (0..trials)
            .filter(|_| {
                let o = g.rounds(rounds, 100.0, 1.0);
                let n = g.rounds(rounds, 100.0 + shift, 1.0);
                rounds_rule(&o, &n).is_some()
            })
            .count();
        hits as f64 / trials as f64
    }

    #[test]
    fn rounds_rule_rarely_flags_noise_and_catches_a_real_shift() {
        // Same distribution: at most 5 % of pairs flagged with 3 rounds (about 4 %, both
        // directions), well under 1 % with 5.
        let fp3 = flagged(3, 0.0, 20_000);
        assert!(fp3 < 0.05, "{fp3}");
        let fp5 = flagged(5, 0.0, 20_000);
        assert!(fp5 < 0.01, "{fp5}");
        // A shift of 5 sd (5 % of the value, above MIN_EFFECT): caught over 90 % of the time.
        let power = flagged(3, 5.0, 5_000);
        assert!(power > 0.9, "{power}");
    }

    #[test]
    fn rounds_rule_needs_the_gap_beyond_the_spread_and_the_minimum_effect() {
        // Disjoint but the new range is wider than the gap: noise.
        assert_eq!(
            rounds_rule(&[100.0, 101.0, 102.0], &[103.0, 106.0, 110.0]),
            None
        );
        // New median 120 > 102 + (121 - 119): up.
        assert_eq!(
            rounds_rule(&[100.0, 101.0, 102.0], &[119.0, 120.0, 121.0]),
            Some(1.0)
        );
        assert_eq!(
            rounds_rule(&[119.0, 120.0, 121.0], &[100.0, 101.0, 102.0]),
            Some(-1.0)
        );
        // Identical rounds a hair apart: under the 2 % minimum effect.
        assert_eq!(rounds_rule(&[100.0; 3], &[101.0; 3]), None);
        assert_eq!(rounds_rule(&[100.0; 3], &[103.0; 3]), Some(1.0));
        assert_eq!(rounds_rule(&[], &[1.0]), None);
    }

    fn spread(center: u64, width: u64) -> Histogram<u64> {
        let mut h = new_histogram();
        for i in 0..=1000 {
            h.record(center - width / 2 + width * i / 1000).unwrap();
        }
        h
    }

    #[test]
    fn hist_rule_judges_against_the_quartile_band() {
        // Uniform over 1000 +- 200: IQR 200, so a median shift needs > 100.
        let old = spread(1000, 400);
        let near = spread(1080, 400);
        let far = spread(1150, 400);
        let q = |h: &Histogram<u64>| h.value_at_quantile(0.5) as f64;
        assert_eq!(hist_rule(&old, &near, 0.5, q(&old), q(&near)), None);
        assert_eq!(hist_rule(&old, &far, 0.5, q(&old), q(&far)), Some(1.0));
        assert_eq!(hist_rule(&far, &old, 0.5, q(&far), q(&old)), Some(-1.0));
        // A tight distribution: a small shift is real, but not under 2 %.
        let (a, b, c) = (spread(1000, 4), spread(1015, 4), spread(1030, 4));
        assert_eq!(hist_rule(&a, &b, 0.5, q(&a), q(&b)), None);
        assert_eq!(hist_rule(&a, &c, 0.5, q(&a), q(&c)), Some(1.0));
        assert!(hist_rule(&a, &new_histogram(), 0.5, 1.0, 2.0).is_none());
        // The band around p99 is p98.5-p99.5: 1 % of the width of the uniform.
        assert!(
            (band(&old, 0.99) - 4.0).abs() <= 1.0,
            "{}",
            band(&old, 0.99)
        );
        assert!(
            (band(&old, 0.5) - 200.0).abs() <= 2.0,
            "{}",
            band(&old, 0.5)
        );
    }

    #[test]
    fn verdict_follows_which_way_is_better() {
        let s = |v: &[f64]| Sample {
            rounds: v.to_vec(),
            hist: None,
            quantile: None,
            min_samples: None,
            missing: None,
        };
        let (lo, hi) = (s(&[100.0, 101.0, 102.0]), s(&[150.0, 151.0, 152.0]));
        assert_eq!(judge(&lo, &hi, Better::Lower).0, Verdict::Regressed);
        assert_eq!(judge(&lo, &hi, Better::Higher).0, Verdict::Improved);
        assert_eq!(judge(&hi, &lo, Better::Higher).0, Verdict::Regressed);
        assert_eq!(
            judge(&lo, &lo, Better::Lower),
            (Verdict::Noise, Method::Rounds)
        );
        // Two rounds and no histogram (a stream figure): no verdict.
        let two = s(&[100.0, 101.0]);
        assert_eq!(
            judge(&two, &s(&[200.0, 201.0]), Better::Higher),
            (Verdict::Unknown, Method::None)
        );
        // p99.9 from rounds of 9 999 samples: fewer than 10 beyond it, not judged; from
        // 10 000 it is.
        let tail = |v: &[f64], n: u64| Sample {
            quantile: Some(0.999),
            min_samples: Some(n),
            ..s(v)
        };
        assert_eq!(
            judge(
                &tail(&[100.0; 3], 9_999),
                &tail(&[200.0; 3], 20_000),
                Better::Lower
            ),
            (Verdict::Unknown, Method::FewSamples)
        );
        assert_eq!(
            judge(
                &tail(&[100.0; 3], 10_000),
                &tail(&[200.0; 3], 20_000),
                Better::Lower
            ),
            (Verdict::Regressed, Method::Rounds)
        );
    }

    #[test]
    fn floors_that_differ_by_half_warn() {
        let h = |p50: u64| Header {
            cacheline_floor: Some(super::super::meta::Floor {
                p50_ns: p50,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(floor_differs(&h(100), &h(140)).is_none());
        let w = floor_differs(&h(100), &h(330)).unwrap();
        assert!(w.contains("230 %"), "{w}");
        assert!(floor_differs(&h(330), &h(100)).is_some());
        assert!(floor_differs(&Header::default(), &h(100)).is_none());
    }
}
