//! Results of `bypass bench`: one row per transport x variant x size (x conns or rate), the
//! ratio to the best kernel baseline of the same size, printed as tables or as JSON.
use hdrhistogram::Histogram;
use serde::Serialize;

/// A latency distribution summary, nanoseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    /// Samples recorded.
    pub samples: u64,
    /// Mean.
    pub mean_ns: f64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p99_9_ns: u64,
    /// 99.99th percentile.
    pub p99_99_ns: u64,
    /// Largest sample.
    pub max_ns: u64,
    /// p99 - p50.
    pub jitter_ns: u64,
}

impl Latency {
    /// p50, p90, p99, p99.9, p99.99, max and jitter in microseconds, as the tables show them.
    fn table_columns(&self) -> [String; 7] {
        [
            self.p50_ns,
            self.p90_ns,
            self.p99_ns,
            self.p99_9_ns,
            self.p99_99_ns,
            self.max_ns,
            self.jitter_ns,
        ]
        .map(us)
    }

    /// Summarises a histogram of nanoseconds.
    pub fn from_hist(h: &Histogram<u64>) -> Latency {
        let q = |p: f64| h.value_at_quantile(p);
        let (p50, p99) = (q(0.5), q(0.99));
        Latency {
            samples: h.len(),
            mean_ns: h.mean(),
            p50_ns: p50,
            p90_ns: q(0.9),
            p99_ns: p99,
            p99_9_ns: q(0.999),
            p99_99_ns: q(0.9999),
            max_ns: h.max(),
            jitter_ns: p99.saturating_sub(p50),
        }
    }
}

/// Whether a cell ran.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Measured.
    Ok,
    /// The transport cannot carry this size (e.g. UDP beyond 65507 B).
    NotApplicable,
    /// The cell failed; `note` says why.
    Error,
}

/// What identifies a row.
#[derive(Clone, Debug, Serialize)]
pub struct Key {
    /// Transport name.
    pub transport: String,
    /// `blocking` or `busy-poll`.
    pub variant: String,
    /// Whether the transport is a kernel baseline.
    pub baseline: bool,
    /// Message size in bytes.
    pub size: usize,
    /// Status of the cell.
    pub status: Status,
    /// Why it is n/a or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A ping-pong row: round-trip time.
#[derive(Clone, Debug, Serialize)]
pub struct PingpongRow {
    /// Identity and status.
    #[serde(flatten)]
    pub key: Key,
    /// Round-trip time distribution.
    pub rtt: Option<Latency>,
    /// p50 over the best (lowest) kernel p50 of the same size.
    pub ratio_p50_to_best_kernel: Option<f64>,
}

/// A stream row: one-way throughput.
#[derive(Clone, Debug, Serialize)]
pub struct StreamRow {
    /// Identity and status.
    #[serde(flatten)]
    pub key: Key,
    /// Connections (one sender thread each).
    pub conns: usize,
    /// Payload gigabits per second received by the peer in the measurement window.
    pub gbps: Option<f64>,
    /// Messages per second received by the peer in the measurement window.
    pub msgs_per_s: Option<f64>,
    /// Messages the client sent (warm-up included).
    pub sent_msgs: u64,
    /// Messages the peer received (warm-up included).
    pub recv_msgs: u64,
    /// `recv_msgs / sent_msgs` (below 1 when datagrams were dropped).
    pub delivered: Option<f64>,
    /// Gb/s over the best (highest) kernel Gb/s of the same size and connection count.
    pub ratio_gbps_to_best_kernel: Option<f64>,
}

/// An rpc row: latency against offered load.
#[derive(Clone, Debug, Serialize)]
pub struct RpcRow {
    /// Identity and status.
    #[serde(flatten)]
    pub key: Key,
    /// Requests per second offered (open loop).
    pub offered_per_s: f64,
    /// Responses to the requests scheduled in the measurement window, per second of window.
    pub achieved_per_s: Option<f64>,
    /// Requests scheduled in the measurement window.
    pub sent: u64,
    /// Their responses received.
    pub received: u64,
    /// `sent - received`: lost or later than the drain deadline.
    pub lost: u64,
    /// The furthest the sender fell behind its schedule, ns.
    pub max_send_lag_ns: u64,
    /// Latency from each request's scheduled send time to its response.
    pub latency: Option<Latency>,
    /// p99 over the best (lowest) kernel p99 at the same size and offered rate.
    pub ratio_p99_to_best_kernel: Option<f64>,
}

/// Everything one run measured.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// How the run was set up (pinning, time per cell), as the tables' headings say it.
    pub context: String,
    /// Ping-pong rows.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pingpong: Vec<PingpongRow>,
    /// Stream rows.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stream: Vec<StreamRow>,
    /// Rpc rows.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rpc: Vec<RpcRow>,
}

/// Sets each row's ratio: `value / best`, where best is the best baseline value in the same
/// group (`lower` says whether lower is better).
fn ratios<R>(
    rows: &mut [R],
    group: impl Fn(&R) -> String,
    value: impl Fn(&R) -> Option<f64>,
    baseline: impl Fn(&R) -> bool,
    lower: bool,
    set: impl Fn(&mut R, Option<f64>),
) {
    let best = |g: &str, rows: &[R]| {
        rows.iter()
            .filter(|r| baseline(r) && group(r) == g)
            .filter_map(&value)
            .fold(None, |b: Option<f64>, v| match b {
                Some(b) if (lower && b <= v) || (!lower && b >= v) => Some(b),
                _ => Some(v),
            })
    };
    let ratios: Vec<Option<f64>> = rows
        .iter()
        .map(|r| match (value(r), best(&group(r), rows)) {
            (Some(v), Some(b)) if b > 0.0 => Some(v / b),
            _ => None,
        })
        .collect();
    for (r, q) in rows.iter_mut().zip(ratios) {
        set(r, q);
    }
}

impl Report {
    /// Fills in the ratio columns.
    pub fn compute_ratios(&mut self) {
        ratios(
            &mut self.pingpong,
            |r| r.key.size.to_string(),
            |r| r.rtt.as_ref().map(|l| l.p50_ns as f64),
            |r| r.key.baseline,
            true,
            |r, q| r.ratio_p50_to_best_kernel = q,
        );
        ratios(
            &mut self.stream,
            |r| format!("{} {}", r.key.size, r.conns),
            |r| r.gbps,
            |r| r.key.baseline,
            false,
            |r, q| r.ratio_gbps_to_best_kernel = q,
        );
        ratios(
            &mut self.rpc,
            |r| format!("{} {}", r.key.size, r.offered_per_s),
            |r| r.latency.as_ref().map(|l| l.p99_ns as f64),
            |r| r.key.baseline,
            true,
            |r, q| r.ratio_p99_to_best_kernel = q,
        );
    }

    /// Whether any cell failed.
    pub fn has_errors(&self) -> bool {
        self.pingpong
            .iter()
            .map(|r| &r.key)
            .chain(self.stream.iter().map(|r| &r.key))
            .chain(self.rpc.iter().map(|r| &r.key))
            .any(|k| k.status == Status::Error)
    }

    /// The human-readable tables.
    pub fn tables(&self, context: &str) -> String {
        let mut out = String::new();
        if !self.pingpong.is_empty() {
            out.push_str(&format!(
                "pingpong: ROUND-TRIP time in us (send to whole answer received), {context}\n\
                 ratio = p50 / best kernel p50 of the same size; jitter = p99 - p50\n"
            ));
            let head = [
                "transport",
                "variant",
                "size",
                "samples",
                "p50",
                "p90",
                "p99",
                "p99.9",
                "p99.99",
                "max",
                "jitter",
                "ratio",
            ];
            let rows = self.pingpong.iter().map(|r| {
                let mut v = vec![
                    r.key.transport.clone(),
                    r.key.variant.clone(),
                    size(r.key.size),
                ];
                match &r.rtt {
                    Some(l) => {
                        v.push(l.samples.to_string());
                        v.extend(l.table_columns());
                        v.push(ratio(r.ratio_p50_to_best_kernel));
                    }
                    None => v.push(status(&r.key)),
                }
                v
            });
            out.push_str(&table(&head, rows));
            out.push('\n');
        }
        if !self.stream.is_empty() {
            out.push_str(&format!(
                "stream: one-way throughput of payload received by the peer, {context}\n\
                 ratio = Gb/s / best kernel Gb/s of the same size and conns; \
                 delivered = received / sent messages\n"
            ));
            let head = [
                "transport",
                "variant",
                "size",
                "conns",
                "Gb/s",
                "msg/s",
                "delivered",
                "ratio",
            ];
            let rows = self.stream.iter().map(|r| {
                let mut v = vec![
                    r.key.transport.clone(),
                    r.key.variant.clone(),
                    size(r.key.size),
                    r.conns.to_string(),
                ];
                match (r.gbps, r.msgs_per_s) {
                    (Some(g), Some(m)) => {
                        v.push(format!("{g:.3}"));
                        v.push(format!("{m:.0}"));
                        v.push(
                            r.delivered
                                .map(|d| format!("{:.1}%", d * 100.0))
                                .unwrap_or_else(|| "-".into()),
                        );
                        v.push(ratio(r.ratio_gbps_to_best_kernel));
                    }
                    _ => v.push(status(&r.key)),
                }
                v
            });
            out.push_str(&table(&head, rows));
            out.push('\n');
        }
        if !self.rpc.is_empty() {
            out.push_str(&format!(
                "rpc: open-loop request/response latency in us from each request's SCHEDULED \
                 send time (no coordinated omission), {context}\n\
                 between sends the client waits for responses until the next send is due \
                 (blocking: asleep in ppoll; busy-poll: spinning);\n\
                 late = the furthest the client's sends fell behind schedule (us); \
                 ratio = p99 / best kernel p99 at the same rate\n"
            ));
            let head = [
                "transport",
                "variant",
                "size",
                "offered/s",
                "achieved/s",
                "lost",
                "late",
                "p50",
                "p90",
                "p99",
                "p99.9",
                "p99.99",
                "max",
                "jitter",
                "ratio",
            ];
            let rows = self.rpc.iter().map(|r| {
                let mut v = vec![
                    r.key.transport.clone(),
                    r.key.variant.clone(),
                    size(r.key.size),
                    format!("{:.0}", r.offered_per_s),
                ];
                match (&r.latency, r.achieved_per_s) {
                    (Some(l), Some(a)) => {
                        v.push(format!("{a:.0}"));
                        v.push(r.lost.to_string());
                        v.push(us(r.max_send_lag_ns));
                        v.extend(l.table_columns());
                        v.push(ratio(r.ratio_p99_to_best_kernel));
                    }
                    _ => v.push(status(&r.key)),
                }
                v
            });
            out.push_str(&table(&head, rows));
        }
        out
    }
}

fn status(k: &Key) -> String {
    match (&k.status, &k.note) {
        (Status::NotApplicable, Some(n)) => format!("n/a ({n})"),
        (Status::NotApplicable, None) => "n/a".into(),
        (_, Some(n)) => format!("error: {n}"),
        (_, None) => "error".into(),
    }
}

fn us(ns: u64) -> String {
    format!("{:.2}", ns as f64 / 1000.0)
}

fn ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "-".into())
}

/// `64`, `1Ki`, `1Mi` style sizes (exact multiples only).
pub fn size(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{}Mi", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{}Ki", n >> 10)
    } else {
        n.to_string()
    }
}

/// Left-aligned text columns, right-aligned numbers; a row shorter than the header spans.
fn table(head: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        if r.len() == head.len() {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.len());
            }
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let last = i + 1 == cells.len();
            if i < 2 {
                s.push_str(&format!("{c:<width$}", width = w[i]));
            } else if last && cells.len() < head.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:>width$}", width = w[i]));
            }
            if !last {
                s.push_str("  ");
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(&head.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &str, baseline: bool, size: usize) -> Key {
        Key {
            transport: t.into(),
            variant: "busy-poll".into(),
            baseline,
            size,
            status: Status::Ok,
            note: None,
        }
    }

    fn lat(p50: u64) -> Latency {
        Latency {
            samples: 10,
            mean_ns: p50 as f64,
            p50_ns: p50,
            p90_ns: p50,
            p99_ns: p50,
            p99_9_ns: p50,
            p99_99_ns: p50,
            max_ns: p50,
            jitter_ns: 0,
        }
    }

    #[test]
    fn ratios_are_to_the_best_baseline_of_the_same_size() {
        let row = |t: &str, b: bool, s: usize, p50: u64| PingpongRow {
            key: key(t, b, s),
            rtt: Some(lat(p50)),
            ratio_p50_to_best_kernel: None,
        };
        let mut r = Report {
            pingpong: vec![
                row("kernel-udp", true, 64, 20_000),
                row("kernel-tcp", true, 64, 10_000),
                row("bypass", false, 64, 2_500),
                row("kernel-tcp", true, 1024, 40_000),
            ],
            ..Report::default()
        };
        r.compute_ratios();
        let q: Vec<_> = r
            .pingpong
            .iter()
            .map(|r| r.ratio_p50_to_best_kernel.unwrap())
            .collect();
        assert_eq!(q, vec![2.0, 1.0, 0.25, 1.0]);
    }

    #[test]
    fn latency_summary_orders_percentiles() {
        let mut h = crate::cli::bench::modes::new_histogram();
        for v in 1..=10_000u64 {
            h.record(v * 100).unwrap();
        }
        let l = Latency::from_hist(&h);
        assert_eq!(l.samples, 10_000);
        assert!(l.p50_ns <= l.p90_ns && l.p90_ns <= l.p99_ns && l.p99_ns <= l.p99_9_ns);
        assert!(l.p99_9_ns <= l.p99_99_ns && l.p99_99_ns <= l.max_ns);
        assert_eq!(l.jitter_ns, l.p99_ns - l.p50_ns);
        assert!((499_000..=501_000).contains(&l.p50_ns), "{}", l.p50_ns);
    }

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(size(64), "64");
        assert_eq!(size(1024), "1Ki");
        assert_eq!(size(65536), "64Ki");
        assert_eq!(size(1 << 20), "1Mi");
        assert_eq!(size(1500), "1500");
    }
}
