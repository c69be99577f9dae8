//! Results of `bypass bench`: one row per transport x variant x size (x conns or rate), each
//! with its figures per round and their summary, the ratio to the best kernel baseline of the
//! same size and round, printed as tables or as JSON.
//!
//! # JSON schema, version 1 ([`SCHEMA_VERSION`])
//!
//! ```text
//! {
//!   "schema_version": 1,
//!   "header": {                      // meta::Header
//!     "bypass_version", "git_rev", "date_utc" (RFC 3339), "cpu_model", "cpus",
//!     "command_line": [..], "rounds", "duration_ns", "warmup_ns",
//!     "client_core", "peer_core", "remote_peer",
//!     "hugepages": { "total", "free", "size_kib", "hugetlbfs_mounts": [..],
//!                    "client": PacketMemory, "peer": PacketMemory | null,
//!                    "packet_memory": "hugepages" | "4k-fallback" | "4k" | "mixed" | "unused" },
//!       PacketMemory: { "hugepage_pools", "base_page_pools", "fallbacks", "fallback_reason"? }
//!     "cacheline_floor": Floor | null, "cacheline_floor_end": Floor | null,
//!     "cacheline_floor_note"?: why a floor is missing
//!       Floor: { "cores": [timer, echo], "samples", "p50_ns", "p99_ns", "p99_9_ns", "max_ns" }
//!   },
//!   "context": "client on core 0, peer process on core 1, ...",
//!   "rounds": N,
//!   "pingpong": [ {                  // PingpongRow
//!     "transport", "variant", "baseline", "size", "status": "ok"|"not_applicable"|"error",
//!     "note"?,
//!     "rtt": Latency | null,         // all rounds' samples together
//!     "ratio_p50_to_best_kernel",    // median over rounds of each round's ratio
//!     "rounds": [ { "status", "note"?, "rtt": Latency | null,
//!                   "histogram": base64 of the HdrHistogram V2+DEFLATE encoding (ns) | null,
//!                   "ratio_p50_to_best_kernel" } ]   // empty when not_applicable
//!   } ],
//!   "stream": [ {                    // StreamRow
//!     key fields, "conns", "gbps", "msgs_per_s" (medians over rounds),
//!     "sent_msgs", "recv_msgs" (sums), "delivered" (their ratio), "ratio_gbps_to_best_kernel",
//!     "rounds": [ { "status", "note"?, "gbps", "msgs_per_s", "sent_msgs", "recv_msgs",
//!                   "delivered", "ratio_gbps_to_best_kernel" } ]
//!   } ],
//!   "rpc": [ {                       // RpcRow
//!     key fields, "offered_per_s", "achieved_per_s" (median), "sent", "received", "lost"
//!     (sums), "max_send_lag_ns" (max), "latency" (all rounds' samples together),
//!     "ratio_p99_to_best_kernel",
//!     "rounds": [ { "status", "note"?, "achieved_per_s", "sent", "received", "lost",
//!                   "max_send_lag_ns", "latency", "histogram", "ratio_p99_to_best_kernel" } ]
//!   } ]
//! }
//! Latency: { "samples", "mean_ns", "p50_ns", "p90_ns", "p99_ns", "p99_9_ns", "p99_99_ns",
//!            "max_ns", "jitter_ns" }   (round-trip or request-to-response times, ns)
//! ```
//!
//! A new field that old readers may ignore keeps the version; a renamed, removed or
//! re-meant field bumps it (`bypass bench compare` refuses files of different versions).
use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::meta::Header;

/// The version of the JSON layout above.
pub const SCHEMA_VERSION: u32 = 1;

/// A latency distribution summary, nanoseconds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
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
    /// p50, p90, p99, p99.9, p99.99, max and jitter, ns, as the tables show them.
    fn table_columns(&self) -> [f64; 7] {
        [
            self.p50_ns,
            self.p90_ns,
            self.p99_ns,
            self.p99_9_ns,
            self.p99_99_ns,
            self.max_ns,
            self.jitter_ns,
        ]
        .map(|v| v as f64)
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

/// A histogram as the JSON carries it: HdrHistogram V2 + DEFLATE, base64 (standard alphabet,
/// padded). Readable by every HdrHistogram implementation (Java's `decodeFromCompressedByteBuffer`,
/// HdrHistogram_c's `hdr_log_decode`, Python's `hdrh`).
pub fn encode_hist(h: &Histogram<u64>) -> Result<String, String> {
    let mut buf = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut buf)
        .map_err(|e| format!("encoding a histogram: {e:?}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(buf))
}

/// [`encode_hist`]'s inverse.
pub fn decode_hist(s: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| format!("histogram is not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| format!("histogram does not decode: {e:?}"))
}

/// Whether a cell ran.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
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
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Key {
    /// Transport name.
    pub transport: String,
    /// `blocking` or `busy-poll`.
    pub variant: String,
    /// Whether the transport is a kernel baseline.
    pub baseline: bool,
    /// Message size in bytes.
    pub size: usize,
    /// Status of the cell (error when any round failed).
    pub status: Status,
    /// Why it is n/a or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One round of a ping-pong cell.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PingpongRound {
    /// `ok` or `error`.
    pub status: Status,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Round-trip time distribution.
    pub rtt: Option<Latency>,
    /// The round trips, [`encode_hist`]ed.
    pub histogram: Option<String>,
    /// p50 over the best (lowest) kernel p50 of the same size in this round.
    pub ratio_p50_to_best_kernel: Option<f64>,
    /// The histogram itself, while the run lasts.
    #[serde(skip)]
    pub hist: Option<Histogram<u64>>,
}

impl PingpongRound {
    /// A measured round.
    pub fn ok(h: Histogram<u64>) -> Result<PingpongRound, String> {
        Ok(PingpongRound {
            status: Status::Ok,
            note: None,
            rtt: Some(Latency::from_hist(&h)),
            histogram: Some(encode_hist(&h)?),
            ratio_p50_to_best_kernel: None,
            hist: Some(h),
        })
    }

    /// A failed round.
    pub fn error(why: String) -> PingpongRound {
        PingpongRound {
            status: Status::Error,
            note: Some(why),
            rtt: None,
            histogram: None,
            ratio_p50_to_best_kernel: None,
            hist: None,
        }
    }
}

/// A ping-pong row: round-trip time.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PingpongRow {
    /// Identity and status.
    #[serde(flatten)]
    pub key: Key,
    /// Round-trip time distribution of all rounds' samples together.
    pub rtt: Option<Latency>,
    /// Median over the rounds of their p50 over the best kernel p50 of the same size.
    pub ratio_p50_to_best_kernel: Option<f64>,
    /// Each round, in order.
    #[serde(default)]
    pub rounds: Vec<PingpongRound>,
}

/// One round of a stream cell.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StreamRound {
    /// `ok` or `error`.
    pub status: Status,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
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
    /// Gb/s over the best (highest) kernel Gb/s of the same size and connections this round.
    pub ratio_gbps_to_best_kernel: Option<f64>,
}

impl StreamRound {
    /// A failed round.
    pub fn error(why: String) -> StreamRound {
        StreamRound {
            status: Status::Error,
            note: Some(why),
            gbps: None,
            msgs_per_s: None,
            sent_msgs: 0,
            recv_msgs: 0,
            delivered: None,
            ratio_gbps_to_best_kernel: None,
        }
    }
}

/// A stream row: one-way throughput.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StreamRow {
    /// Identity and status.
    #[serde(flatten)]
    pub key: Key,
    /// Connections (one sender thread each).
    pub conns: usize,
    /// Median over the rounds of the payload Gb/s.
    pub gbps: Option<f64>,
    /// Median over the rounds of the messages per second.
    pub msgs_per_s: Option<f64>,
    /// Messages the client sent, all rounds.
    pub sent_msgs: u64,
    /// Messages the peer received, all rounds.
    pub recv_msgs: u64,
    /// `recv_msgs / sent_msgs` (below 1 when datagrams were dropped).
    pub delivered: Option<f64>,
    /// Median over the rounds of their Gb/s over the best kernel Gb/s.
    pub ratio_gbps_to_best_kernel: Option<f64>,
    /// Each round, in order.
    #[serde(default)]
    pub rounds: Vec<StreamRound>,
}

/// One round of an rpc cell.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RpcRound {
    /// `ok` or `error`.
    pub status: Status,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
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
    /// The latencies, [`encode_hist`]ed.
    pub histogram: Option<String>,
    /// p99 over the best (lowest) kernel p99 at the same size and offered rate this round.
    pub ratio_p99_to_best_kernel: Option<f64>,
    /// The histogram itself, while the run lasts.
    #[serde(skip)]
    pub hist: Option<Histogram<u64>>,
}

impl RpcRound {
    /// A failed round.
    pub fn error(why: String) -> RpcRound {
        RpcRound {
            status: Status::Error,
            note: Some(why),
            achieved_per_s: None,
            sent: 0,
            received: 0,
            lost: 0,
            max_send_lag_ns: 0,
            latency: None,
            histogram: None,
            ratio_p99_to_best_kernel: None,
            hist: None,
        }
    }
}

/// An rpc row: latency against offered load.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RpcRow {
    /// Identity and status.
    #[serde(flatten)]
    pub key: Key,
    /// Requests per second offered (open loop).
    pub offered_per_s: f64,
    /// Median over the rounds of the responses per second.
    pub achieved_per_s: Option<f64>,
    /// Requests scheduled in the measurement windows, all rounds.
    pub sent: u64,
    /// Their responses received.
    pub received: u64,
    /// `sent - received`.
    pub lost: u64,
    /// The furthest the sender fell behind its schedule in any round, ns.
    pub max_send_lag_ns: u64,
    /// Latency of all rounds' requests together.
    pub latency: Option<Latency>,
    /// Median over the rounds of their p99 over the best kernel p99.
    pub ratio_p99_to_best_kernel: Option<f64>,
    /// Each round, in order.
    #[serde(default)]
    pub rounds: Vec<RpcRound>,
}

/// Everything one run measured.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`] of the writer (0: a file written before versions existed).
    #[serde(default)]
    pub schema_version: u32,
    /// Build, machine, hugepages, cache-line floor.
    #[serde(default)]
    pub header: Option<Header>,
    /// How the run was set up (pinning, time per cell), as the tables' headings say it.
    #[serde(default)]
    pub context: String,
    /// Rounds of the whole matrix.
    #[serde(default)]
    pub rounds: usize,
    /// Ping-pong rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pingpong: Vec<PingpongRow>,
    /// Stream rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stream: Vec<StreamRow>,
    /// Rpc rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rpc: Vec<RpcRow>,
}

/// The median of `v` (the mean of the middle two for an even count); None when empty.
pub fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// `(min, max)` of `v`; None when empty.
pub fn range(v: &[f64]) -> Option<(f64, f64)> {
    let mut it = v.iter().copied().filter(|x| !x.is_nan());
    let first = it.next()?;
    Some(it.fold((first, first), |(lo, hi), x| (lo.min(x), hi.max(x))))
}

/// For each round `r`, sets each row's ratio `value / best`, where best is the best baseline
/// value of the same group in the same round (`lower` says whether lower is better): the
/// ratio compares figures measured minutes apart at most, never across rounds.
fn ratios<R>(
    rows: &mut [R],
    rounds: usize,
    group: impl Fn(&R) -> String,
    value: impl Fn(&R, usize) -> Option<f64>,
    baseline: impl Fn(&R) -> bool,
    lower: bool,
    set: impl Fn(&mut R, usize, Option<f64>),
) {
    for r in 0..rounds {
        let best = |g: &str, rows: &[R]| {
            rows.iter()
                .filter(|x| baseline(x) && group(x) == g)
                .filter_map(|x| value(x, r))
                .fold(None, |b: Option<f64>, v| match b {
                    Some(b) if (lower && b <= v) || (!lower && b >= v) => Some(b),
                    _ => Some(v),
                })
        };
        let q: Vec<Option<f64>> = rows
            .iter()
            .map(|x| match (value(x, r), best(&group(x), rows)) {
                (Some(v), Some(b)) if b > 0.0 => Some(v / b),
                _ => None,
            })
            .collect();
        for (x, q) in rows.iter_mut().zip(q) {
            set(x, r, q);
        }
    }
}

/// The row's status from its rounds: error (with the first failed round's note) when any
/// round failed.
fn status_of<'a>(key: &mut Key, rounds: impl Iterator<Item = (bool, Option<&'a String>)>) {
    if key.status == Status::NotApplicable {
        return;
    }
    let n = rounds.size_hint().0;
    for (i, (ok, note)) in rounds.enumerate() {
        if !ok {
            key.status = Status::Error;
            let why = note.cloned().unwrap_or_else(|| "failed".into());
            key.note = Some(if n > 1 {
                format!("round {}: {why}", i + 1)
            } else {
                why
            });
            return;
        }
    }
    key.status = Status::Ok;
}

/// All the histograms merged (None if there is none).
fn merged<'a>(hists: impl Iterator<Item = &'a Histogram<u64>>) -> Option<Histogram<u64>> {
    let mut out: Option<Histogram<u64>> = None;
    for h in hists {
        match &mut out {
            None => out = Some(h.clone()),
            // Same bounds (modes::new_histogram) on both: adding cannot fail; were it to,
            // the summary keeps the rounds merged so far.
            Some(o) => {
                let _ = o.add(h);
            }
        }
    }
    out
}

fn fig<T>(rounds: &[T], f: impl Fn(&T) -> Option<f64>) -> Vec<f64> {
    rounds.iter().filter_map(f).collect()
}

impl Report {
    /// After the last round: each round's ratios, then each row's status and summary.
    pub fn finish(&mut self) {
        let n = self.rounds;
        ratios(
            &mut self.pingpong,
            n,
            |r| r.key.size.to_string(),
            |r, i| Some(r.rounds.get(i)?.rtt.as_ref()?.p50_ns as f64),
            |r| r.key.baseline,
            true,
            |r, i, q| {
                if let Some(x) = r.rounds.get_mut(i) {
                    x.ratio_p50_to_best_kernel = q;
                }
            },
        );
        ratios(
            &mut self.stream,
            n,
            |r| format!("{} {}", r.key.size, r.conns),
            |r, i| r.rounds.get(i)?.gbps,
            |r| r.key.baseline,
            false,
            |r, i, q| {
                if let Some(x) = r.rounds.get_mut(i) {
                    x.ratio_gbps_to_best_kernel = q;
                }
            },
        );
        ratios(
            &mut self.rpc,
            n,
            |r| format!("{} {}", r.key.size, r.offered_per_s),
            |r, i| Some(r.rounds.get(i)?.latency.as_ref()?.p99_ns as f64),
            |r| r.key.baseline,
            true,
            |r, i, q| {
                if let Some(x) = r.rounds.get_mut(i) {
                    x.ratio_p99_to_best_kernel = q;
                }
            },
        );
        for r in &mut self.pingpong {
            status_of(
                &mut r.key,
                r.rounds
                    .iter()
                    .map(|x| (x.status == Status::Ok, x.note.as_ref())),
            );
            r.rtt = merged(r.rounds.iter().filter_map(|x| x.hist.as_ref()))
                .map(|h| Latency::from_hist(&h));
            r.ratio_p50_to_best_kernel = median(&fig(&r.rounds, |x| x.ratio_p50_to_best_kernel));
        }
        for r in &mut self.stream {
            status_of(
                &mut r.key,
                r.rounds
                    .iter()
                    .map(|x| (x.status == Status::Ok, x.note.as_ref())),
            );
            r.gbps = median(&fig(&r.rounds, |x| x.gbps));
            r.msgs_per_s = median(&fig(&r.rounds, |x| x.msgs_per_s));
            r.sent_msgs = r.rounds.iter().map(|x| x.sent_msgs).sum();
            r.recv_msgs = r.rounds.iter().map(|x| x.recv_msgs).sum();
            r.delivered = (r.sent_msgs > 0).then(|| r.recv_msgs as f64 / r.sent_msgs as f64);
            r.ratio_gbps_to_best_kernel = median(&fig(&r.rounds, |x| x.ratio_gbps_to_best_kernel));
        }
        for r in &mut self.rpc {
            status_of(
                &mut r.key,
                r.rounds
                    .iter()
                    .map(|x| (x.status == Status::Ok, x.note.as_ref())),
            );
            r.achieved_per_s = median(&fig(&r.rounds, |x| x.achieved_per_s));
            r.sent = r.rounds.iter().map(|x| x.sent).sum();
            r.received = r.rounds.iter().map(|x| x.received).sum();
            r.lost = r.rounds.iter().map(|x| x.lost).sum();
            r.max_send_lag_ns = r
                .rounds
                .iter()
                .map(|x| x.max_send_lag_ns)
                .max()
                .unwrap_or(0);
            r.latency = merged(r.rounds.iter().filter_map(|x| x.hist.as_ref()))
                .map(|h| Latency::from_hist(&h));
            r.ratio_p99_to_best_kernel = median(&fig(&r.rounds, |x| x.ratio_p99_to_best_kernel));
        }
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

    /// The human-readable header and tables.
    pub fn tables(&self) -> String {
        let mut out = String::new();
        if let Some(h) = &self.header {
            out.push_str(&h.text());
            out.push('\n');
        }
        let context = &self.context;
        let many = self.rounds > 1;
        let rounds_note = if many {
            format!(
                "each figure: the median over {} rounds; the line below a row: min-max over \
                 the rounds\n",
                self.rounds
            )
        } else {
            String::new()
        };
        if !self.pingpong.is_empty() {
            out.push_str(&format!(
                "pingpong: ROUND-TRIP time in us (send to whole answer received), {context}\n\
                 ratio = p50 / best kernel p50 of the same size; jitter = p99 - p50\n\
                 {rounds_note}"
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
            let mut rows = Vec::new();
            for r in &self.pingpong {
                let text = vec![
                    r.key.transport.clone(),
                    r.key.variant.clone(),
                    size(r.key.size),
                ];
                if r.key.status != Status::Ok {
                    rows.push([text, vec![status(&r.key)]].concat());
                    continue;
                }
                let lat: Vec<&Latency> = r.rounds.iter().filter_map(|x| x.rtt.as_ref()).collect();
                let mut cols = vec![Col::new(
                    lat.iter().map(|l| l.samples as f64).collect(),
                    count,
                )];
                for i in 0..7 {
                    cols.push(Col::new(
                        lat.iter().map(|l| l.table_columns()[i]).collect(),
                        us,
                    ));
                }
                cols.push(Col::new(
                    fig(&r.rounds, |x| x.ratio_p50_to_best_kernel),
                    ratio,
                ));
                push_rows(&mut rows, text, &cols, many);
            }
            out.push_str(&table(&head, rows.into_iter()));
            out.push('\n');
        }
        if !self.stream.is_empty() {
            out.push_str(&format!(
                "stream: one-way throughput of payload received by the peer, {context}\n\
                 ratio = Gb/s / best kernel Gb/s of the same size and conns; \
                 delivered = received / sent messages\n{rounds_note}"
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
            let mut rows = Vec::new();
            for r in &self.stream {
                let text = vec![
                    r.key.transport.clone(),
                    r.key.variant.clone(),
                    size(r.key.size),
                    r.conns.to_string(),
                ];
                if r.key.status != Status::Ok {
                    rows.push([text, vec![status(&r.key)]].concat());
                    continue;
                }
                let cols = [
                    Col::new(fig(&r.rounds, |x| x.gbps), gbps),
                    Col::new(fig(&r.rounds, |x| x.msgs_per_s), count),
                    Col::new(fig(&r.rounds, |x| x.delivered), percent),
                    Col::new(fig(&r.rounds, |x| x.ratio_gbps_to_best_kernel), ratio),
                ];
                push_rows(&mut rows, text, &cols, many);
            }
            out.push_str(&table(&head, rows.into_iter()));
            out.push('\n');
        }
        if !self.rpc.is_empty() {
            out.push_str(&format!(
                "rpc: open-loop request/response latency in us from each request's SCHEDULED \
                 send time (no coordinated omission), {context}\n\
                 between sends the client waits for responses until the next send is due \
                 (blocking: asleep in ppoll; busy-poll: spinning);\n\
                 late = the furthest the client's sends fell behind schedule (us); \
                 ratio = p99 / best kernel p99 at the same rate\n{rounds_note}"
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
            let mut rows = Vec::new();
            for r in &self.rpc {
                let text = vec![
                    r.key.transport.clone(),
                    r.key.variant.clone(),
                    size(r.key.size),
                    format!("{:.0}", r.offered_per_s),
                ];
                if r.key.status != Status::Ok {
                    rows.push([text, vec![status(&r.key)]].concat());
                    continue;
                }
                let ok: Vec<&RpcRound> = r.rounds.iter().filter(|x| x.latency.is_some()).collect();
                let mut cols = vec![
                    Col::new(ok.iter().filter_map(|x| x.achieved_per_s).collect(), count),
                    Col::new(ok.iter().map(|x| x.lost as f64).collect(), count),
                    Col::new(ok.iter().map(|x| x.max_send_lag_ns as f64).collect(), us),
                ];
                for i in 0..7 {
                    cols.push(Col::new(
                        ok.iter()
                            .filter_map(|x| x.latency.as_ref())
                            .map(|l| l.table_columns()[i])
                            .collect(),
                        us,
                    ));
                }
                cols.push(Col::new(
                    ok.iter()
                        .filter_map(|x| x.ratio_p99_to_best_kernel)
                        .collect(),
                    ratio,
                ));
                push_rows(&mut rows, text, &cols, many);
            }
            out.push_str(&table(&head, rows.into_iter()));
        }
        out
    }
}

/// A numeric column of one row: its value in each round, and how to print one.
struct Col {
    vals: Vec<f64>,
    fmt: fn(f64) -> String,
}

impl Col {
    fn new(vals: Vec<f64>, fmt: fn(f64) -> String) -> Col {
        Col { vals, fmt }
    }

    fn median(&self) -> String {
        median(&self.vals).map_or_else(|| "-".into(), self.fmt)
    }

    fn range(&self) -> String {
        match range(&self.vals) {
            Some((lo, hi)) => format!("{}-{}", (self.fmt)(lo), (self.fmt)(hi)),
            None => "-".into(),
        }
    }
}

/// The row (`text` then each column's median) and, with several rounds, a line of min-max.
fn push_rows(rows: &mut Vec<Vec<String>>, text: Vec<String>, cols: &[Col], many: bool) {
    let n = text.len();
    let mut v = text;
    v.extend(cols.iter().map(Col::median));
    rows.push(v);
    if many {
        let mut v = vec!["  min-max".to_owned()];
        v.resize(n, String::new());
        v.extend(cols.iter().map(Col::range));
        rows.push(v);
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

fn us(ns: f64) -> String {
    format!("{:.2}", ns / 1000.0)
}

fn count(v: f64) -> String {
    format!("{v:.0}")
}

fn gbps(v: f64) -> String {
    format!("{v:.3}")
}

fn percent(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

fn ratio(r: f64) -> String {
    format!("{r:.2}x")
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
    use crate::bench::modes::new_histogram;

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

    fn hist(p50: u64) -> Histogram<u64> {
        let mut h = new_histogram();
        h.record_n(p50, 10).unwrap();
        h
    }

    fn row(t: &str, b: bool, s: usize, p50s: &[u64]) -> PingpongRow {
        PingpongRow {
            key: key(t, b, s),
            rtt: None,
            ratio_p50_to_best_kernel: None,
            rounds: p50s
                .iter()
                .map(|&p| PingpongRound::ok(hist(p)).unwrap())
                .collect(),
        }
    }

    #[test]
    fn ratios_are_to_the_best_baseline_of_the_same_size_and_round() {
        let mut r = Report {
            rounds: 2,
            pingpong: vec![
                row("kernel-udp", true, 64, &[20_000, 20_000]),
                row("kernel-tcp", true, 64, &[10_000, 40_000]),
                row("bypass", false, 64, &[2_500, 5_000]),
                row("kernel-tcp", true, 1024, &[40_000, 40_000]),
            ],
            ..Report::default()
        };
        r.finish();
        let q = |i: usize, k: usize| r.pingpong[i].rounds[k].ratio_p50_to_best_kernel.unwrap();
        let close = |a: f64, b: f64| (a - b).abs() < 0.01;
        // Round 1: best kernel 10 us (tcp); round 2: 20 us (udp).
        assert!(close(q(0, 0), 2.0) && close(q(0, 1), 1.0));
        assert!(close(q(1, 0), 1.0) && close(q(1, 1), 2.0));
        assert!(close(q(2, 0), 0.25) && close(q(2, 1), 0.25));
        assert!(close(q(3, 0), 1.0));
        // The row: median of its rounds' ratios; latency of both rounds' samples.
        let b = &r.pingpong[2];
        assert!(close(b.ratio_p50_to_best_kernel.unwrap(), 0.25));
        assert_eq!(b.rtt.as_ref().unwrap().samples, 20);
        assert!(close(r.pingpong[0].ratio_p50_to_best_kernel.unwrap(), 1.5));
    }

    #[test]
    fn a_failed_round_fails_the_row() {
        let mut r = Report {
            rounds: 2,
            pingpong: vec![row("bypass", false, 64, &[1_000])],
            ..Report::default()
        };
        r.pingpong[0]
            .rounds
            .push(PingpongRound::error("peer went away".into()));
        r.finish();
        assert!(r.has_errors());
        assert_eq!(
            r.pingpong[0].key.note.as_deref(),
            Some("round 2: peer went away")
        );
        // The round that ran still counts in the summary.
        assert_eq!(r.pingpong[0].rtt.as_ref().unwrap().samples, 10);
    }

    #[test]
    fn histograms_survive_the_json() {
        let mut h = new_histogram();
        for v in 1..=5_000u64 {
            h.record(v * 37).unwrap();
        }
        let s = encode_hist(&h).unwrap();
        let back = decode_hist(&s).unwrap();
        assert_eq!(back.len(), 5_000);
        assert_eq!(back.value_at_quantile(0.5), h.value_at_quantile(0.5));
        assert_eq!(back.max(), h.max());
        assert!(decode_hist("not base64!").is_err());
        assert!(decode_hist("AAAA").is_err());
    }

    #[test]
    fn median_and_range() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(range(&[3.0, 1.0, 2.0]), Some((1.0, 3.0)));
        assert_eq!(range(&[]), None);
    }

    #[test]
    fn several_rounds_print_a_median_and_a_range_line() {
        let mut r = Report {
            rounds: 3,
            pingpong: vec![row("bypass", false, 64, &[1_000, 3_000, 2_000])],
            ..Report::default()
        };
        r.finish();
        let t = r.tables();
        let lines: Vec<&str> = t.lines().filter(|l| l.contains("2.00")).collect();
        assert_eq!(lines.len(), 1, "{t}");
        assert!(lines[0].starts_with("bypass"), "{t}");
        let range = t.lines().find(|l| l.starts_with("  min-max")).unwrap();
        assert!(range.contains("1.00-3.00"), "{t}");
    }

    #[test]
    fn latency_summary_orders_percentiles() {
        let mut h = new_histogram();
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
