//! The [`Registry`]: every core's blocks, pools and connection sources, walked and summed on
//! read (by the exporter's thread, the CLI, a test), never on the data path.
//!
//! Registration takes a mutex and allocates (start-up, connection set-up); recording into the
//! returned [`CoreCounters`] / [`CoreHistogram`] takes neither. Blocks stay registered after
//! their writer is dropped, so summed counters never go backwards.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::conn::{ConnInfo, ConnPublisher, ConnSource, ConnTable};
use super::counters::{Block, CoreCounters, CounterSet, MetricKind, PortMetric};
use super::histogram::{CoreHistogram, HistBlock, HistogramSnapshot};
use crate::mem::Pool;

/// Label pairs of one series, in the order given (name, value).
pub type Labels = Vec<(String, String)>;

/// Name and help of a latency histogram (values recorded in ns, exported in seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistogramDesc {
    /// Family name, ending in `_seconds`.
    pub name: &'static str,
    /// One line of help text.
    pub help: &'static str,
}

/// Histograms the stack's layers record into (a layer registers one per core with
/// [`Registry::histogram`]).
pub mod hist {
    use super::HistogramDesc;

    /// Time between two successive iterations of a core's poll loop. A long tail here means
    /// the core was descheduled or shared (CPU contention), which shows up as latency jitter.
    pub const POLL_LOOP_GAP: HistogramDesc = HistogramDesc {
        name: "bypass_poll_loop_gap_seconds",
        help: "Time between successive poll-loop iterations on a core.",
    };
    /// Round-trip time samples measured by the transport (per acknowledged packet).
    pub const RTT: HistogramDesc = HistogramDesc {
        name: "bypass_rtt_seconds",
        help: "Round-trip time samples measured by the transport.",
    };
    /// Time from a message's first packet sent to its last byte acknowledged.
    pub const MESSAGE_COMPLETION: HistogramDesc = HistogramDesc {
        name: "bypass_message_completion_seconds",
        help: "Time from a message's first packet sent to its full acknowledgement.",
    };
}

/// Upper bounds (`le`) of exported histogram buckets: 2^k ns for k in this range.
pub const LE_EXPONENTS: std::ops::RangeInclusive<u32> = 8..=33;

#[derive(Clone)]
enum Entry {
    Counters {
        labels: Labels,
        block: Arc<Block>,
    },
    Histogram {
        desc: HistogramDesc,
        labels: Labels,
        block: Arc<HistBlock>,
    },
    Pool(Pool),
    Conns(Arc<dyn ConnSource>),
}

/// What a family holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FamilyKind {
    /// Monotonic (`_total` on export).
    Counter,
    /// A level.
    Gauge,
    /// A latency histogram (`_bucket`, `_sum`, `_count` on export).
    Histogram,
}

/// The value of one series, summed over every core that reported it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An integer count or level.
    Int(u64),
    /// A float (seconds, from connection snapshots).
    Float(f64),
    /// A merged histogram (ns).
    Histogram(HistogramSnapshot),
}

impl Value {
    /// The integer, or `None` for other kinds.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Int(v) => Some(*v),
            _ => None,
        }
    }

    fn add(&mut self, other: Value) {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => *a = a.wrapping_add(b),
            (Value::Float(a), Value::Float(b)) => *a += b,
            (Value::Histogram(a), Value::Histogram(b)) => a.merge(&b),
            _ => {}
        }
    }
}

/// One metric family: every series of one name, summed across cores, sorted by labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// Name without the `_total` a counter gets on export.
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// Counter, gauge or histogram.
    pub kind: FamilyKind,
    /// (labels, value) per series.
    pub series: Vec<(Labels, Value)>,
}

/// Shared registry of every core's metrics; cheap to clone (one `Arc`).
#[derive(Clone, Default)]
pub struct Registry {
    entries: Arc<Mutex<Vec<Entry>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("entries", &self.lock().len())
            .finish()
    }
}

fn owned_labels(labels: &[(&str, &str)]) -> Labels {
    debug_assert!(
        labels.iter().all(|(k, _)| valid_label_name(k)),
        "invalid label name in {labels:?}"
    );
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn valid_label_name(k: &str) -> bool {
    let mut b = k.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && !k.starts_with("__")
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Register a new block of the counters in `S` with these labels, for the calling core
    /// (or the core it is handed to). Blocks with equal labels are summed on read.
    pub fn counters<S: CounterSet>(&self, labels: &[(&str, &str)]) -> CoreCounters<S> {
        let block = Arc::new(Block::new(S::DESCS));
        self.lock().push(Entry::Counters {
            labels: owned_labels(labels),
            block: block.clone(),
        });
        CoreCounters::new(block)
    }

    /// [`Registry::counters`] for one port queue: labels `port` and `queue`.
    pub fn port_counters(&self, port: &str, queue: u16) -> CoreCounters<PortMetric> {
        let q = queue.to_string();
        self.counters(&[("port", port), ("queue", &q)])
    }

    /// Register a new per-core histogram block; blocks with the same description and labels
    /// are merged on read.
    pub fn histogram(&self, desc: &HistogramDesc, labels: &[(&str, &str)]) -> CoreHistogram {
        let block = Arc::new(HistBlock::new());
        self.lock().push(Entry::Histogram {
            desc: *desc,
            labels: owned_labels(labels),
            block: block.clone(),
        });
        CoreHistogram::new(block)
    }

    /// Export a pool's occupancy (read from [`Pool::stats`] at scrape time), labelled with
    /// its name. The registry keeps a clone of the pool handle (its memory stays mapped).
    pub fn register_pool(&self, pool: &Pool) {
        self.lock().push(Entry::Pool(pool.clone()));
    }

    /// Export the connections a source yields at scrape time.
    pub fn register_conns(&self, source: impl ConnSource) {
        self.lock().push(Entry::Conns(Arc::new(source)));
    }

    /// A [`ConnTable`] of `capacity` slots, registered as a connection source; the returned
    /// publisher goes to the core that owns the connections.
    pub fn conn_table(&self, capacity: usize) -> ConnPublisher {
        let (table, publisher) = ConnTable::new(capacity);
        self.register_conns(table);
        publisher
    }

    /// Read every registered metric, summing series with the same name and labels. Families
    /// are sorted by name, series by labels.
    pub fn gather(&self) -> Vec<Family> {
        // Copy the entry list (handles only) so sources run without the lock held.
        let entries: Vec<Entry> = self.lock().clone();
        let mut g = Gather::default();
        for e in &entries {
            match e {
                Entry::Counters { labels, block } => {
                    for (i, d) in block.descs.iter().enumerate() {
                        let mut l = labels.clone();
                        if let Some((k, v)) = d.label {
                            l.push((k.to_string(), v.to_string()));
                        }
                        let kind = match d.kind {
                            MetricKind::Counter => FamilyKind::Counter,
                            MetricKind::Gauge => FamilyKind::Gauge,
                        };
                        g.put(d.name, d.help, kind, l, Value::Int(block.get(i)));
                    }
                }
                Entry::Histogram {
                    desc,
                    labels,
                    block,
                } => {
                    let mut s = HistogramSnapshot::empty();
                    block.merge_into(&mut s);
                    g.put(
                        desc.name,
                        desc.help,
                        FamilyKind::Histogram,
                        labels.clone(),
                        Value::Histogram(s),
                    );
                }
                Entry::Pool(pool) => g.pool(pool),
                Entry::Conns(src) => src.visit(&mut |c| g.conn(c)),
            }
        }
        g.finish()
    }

    /// The summed value of an integer series (counter or gauge) with exactly these labels
    /// (for counters defined with a label, such as `cause`, include it).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        self.find(name, labels)?.as_u64()
    }

    /// The merged histogram with exactly these labels.
    pub fn histogram_snapshot(
        &self,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Option<HistogramSnapshot> {
        match self.find(name, labels)? {
            Value::Histogram(h) => Some(h),
            _ => None,
        }
    }

    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<Value> {
        let want = owned_labels(labels);
        self.gather()
            .into_iter()
            .find(|f| f.name == name)?
            .series
            .into_iter()
            .find(|(l, _)| *l == want)
            .map(|(_, v)| v)
    }

    /// The Prometheus text exposition (format 0.0.4) of everything registered (feature
    /// `metrics`).
    #[cfg(feature = "metrics")]
    pub fn encode_text(&self) -> String {
        super::export::encode_text(self)
    }
}

#[derive(Default)]
struct Gather {
    fams: BTreeMap<&'static str, (&'static str, FamilyKind, BTreeMap<Labels, Value>)>,
}

const POOL_LABEL: &str = "pool";

impl Gather {
    fn put(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: FamilyKind,
        labels: Labels,
        v: Value,
    ) {
        let fam = self
            .fams
            .entry(name)
            .or_insert_with(|| (help, kind, BTreeMap::new()));
        if fam.1 != kind {
            tracing::debug!(name, "metric registered with two kinds; series skipped");
            return;
        }
        match fam.2.entry(labels) {
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(v);
            }
            std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().add(v),
        }
    }

    fn pool(&mut self, pool: &Pool) {
        let s = pool.stats();
        let l = vec![(POOL_LABEL.to_string(), pool.name().to_string())];
        let region = pool.region();
        let rows: [(&'static str, &'static str, FamilyKind, u64); 7] = [
            (
                "bypass_pool_capacity_slots",
                "Buffer slots in the pool.",
                FamilyKind::Gauge,
                u64::from(s.capacity),
            ),
            (
                "bypass_pool_in_use_slots",
                "Buffer slots held by packets or messages now.",
                FamilyKind::Gauge,
                s.in_use,
            ),
            (
                "bypass_pool_high_water_slots",
                "The most buffer slots ever in use at once.",
                FamilyKind::Gauge,
                s.high_water,
            ),
            (
                "bypass_pool_alloc_failures",
                "Buffer allocations refused because the pool was empty.",
                FamilyKind::Counter,
                s.failed,
            ),
            (
                "bypass_pool_memory_bytes",
                "Bytes of memory mapped for the pool.",
                FamilyKind::Gauge,
                region.len() as u64,
            ),
            (
                "bypass_pool_hugepages",
                "1 when the pool's memory is on 2 MiB hugepages, 0 on 4 KiB pages.",
                FamilyKind::Gauge,
                u64::from(region.is_hugepage()),
            ),
            (
                "bypass_pool_hugepage_fallback",
                "1 when hugepages were preferred but could not be had (4 KiB pages used).",
                FamilyKind::Gauge,
                u64::from(region.fallback().is_some()),
            ),
        ];
        for (name, help, kind, v) in rows {
            self.put(name, help, kind, l.clone(), Value::Int(v));
        }
    }

    fn conn(&mut self, c: &ConnInfo) {
        let l = vec![
            ("conn".to_string(), format!("{:016x}", c.conn_id)),
            ("peer".to_string(), c.peer.to_string()),
        ];
        let secs = [
            (
                "bypass_conn_srtt_seconds",
                "Smoothed round-trip time.",
                c.srtt,
            ),
            (
                "bypass_conn_min_rtt_seconds",
                "Lowest round-trip time seen.",
                c.min_rtt,
            ),
            (
                "bypass_conn_rttvar_seconds",
                "Round-trip time variation.",
                c.rttvar,
            ),
            (
                "bypass_conn_reorder_window_seconds",
                "Reorder window of the loss detector.",
                c.reorder_window,
            ),
        ];
        for (name, help, d) in secs {
            self.put(
                name,
                help,
                FamilyKind::Gauge,
                l.clone(),
                Value::Float(d.as_secs_f64()),
            );
        }
        let ints = [
            (
                "bypass_conn_cwnd_bytes",
                "Congestion window.",
                FamilyKind::Gauge,
                c.cwnd_bytes,
            ),
            (
                "bypass_conn_pacing_rate_bytes_per_second",
                "Pacing rate (0 when not pacing).",
                FamilyKind::Gauge,
                c.pacing_rate_bytes_per_second,
            ),
            (
                "bypass_conn_in_flight_bytes",
                "Bytes sent and not yet acknowledged or declared lost.",
                FamilyKind::Gauge,
                c.bytes_in_flight,
            ),
            (
                "bypass_conn_credit_bytes",
                "Receiver-granted credit not yet used.",
                FamilyKind::Gauge,
                c.credit_bytes,
            ),
            (
                "bypass_conn_retransmitted_packets",
                "Packets retransmitted.",
                FamilyKind::Counter,
                c.retransmitted_packets,
            ),
            (
                "bypass_conn_lost_packets",
                "Packets declared lost.",
                FamilyKind::Counter,
                c.lost_packets,
            ),
            (
                "bypass_conn_delivered_messages",
                "Messages delivered to the application.",
                FamilyKind::Counter,
                c.delivered_messages,
            ),
            (
                "bypass_conn_delivered_bytes",
                "Payload bytes delivered to the application.",
                FamilyKind::Counter,
                c.delivered_bytes,
            ),
            (
                "bypass_conn_tx_zero_copy_packets",
                "Packets sent from the application's buffers without a copy.",
                FamilyKind::Counter,
                c.tx_zero_copy_packets,
            ),
            (
                "bypass_conn_tx_batches",
                "BATCH packets sent (several small messages each).",
                FamilyKind::Counter,
                c.tx_batches,
            ),
            (
                "bypass_conn_tx_batched_messages",
                "Messages sent inside BATCH packets.",
                FamilyKind::Counter,
                c.tx_batched_messages,
            ),
            (
                "bypass_conn_rx_batches",
                "BATCH packets received.",
                FamilyKind::Counter,
                c.rx_batches,
            ),
            (
                "bypass_conn_rx_segment_messages",
                "Multi-packet messages delivered as their packet buffers.",
                FamilyKind::Counter,
                c.rx_segment_messages,
            ),
            (
                "bypass_conn_rx_segment_copied",
                "Messages begun as segments and copied instead.",
                FamilyKind::Counter,
                c.rx_segment_copied,
            ),
        ];
        for (name, help, kind, v) in ints {
            self.put(name, help, kind, l.clone(), Value::Int(v));
        }
    }

    fn finish(self) -> Vec<Family> {
        self.fams
            .into_iter()
            .map(|(name, (help, kind, series))| Family {
                name,
                help,
                kind,
                series: series.into_iter().collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::{HugePages, PoolConfig};
    use std::time::Duration;

    #[test]
    fn blocks_with_equal_labels_are_summed() {
        let r = Registry::new();
        let a = r.port_counters("memif0", 0);
        let b = r.port_counters("memif0", 0);
        let c = r.port_counters("memif0", 1);
        a.add(PortMetric::RxPackets, 3);
        b.add(PortMetric::RxPackets, 4);
        c.add(PortMetric::RxPackets, 100);
        a.inc(PortMetric::RxDropMalformed);
        let q0 = [("port", "memif0"), ("queue", "0")];
        assert_eq!(r.value("bypass_port_rx_packets", &q0), Some(7));
        assert_eq!(
            r.value(
                "bypass_port_rx_packets",
                &[("port", "memif0"), ("queue", "1")]
            ),
            Some(100)
        );
        assert_eq!(
            r.value(
                "bypass_port_rx_dropped_packets",
                &[("port", "memif0"), ("queue", "0"), ("cause", "malformed")]
            ),
            Some(1)
        );
        drop(a);
        assert_eq!(r.value("bypass_port_rx_packets", &q0), Some(7));
    }

    #[test]
    fn histograms_merge_across_blocks() {
        let r = Registry::new();
        let h1 = r.histogram(&hist::RTT, &[("core", "x")]);
        let h2 = r.histogram(&hist::RTT, &[("core", "x")]);
        h1.record(1000);
        h2.record(3000);
        let s = r.histogram_snapshot("bypass_rtt_seconds", &[("core", "x")]);
        let s = s.unwrap();
        assert_eq!(s.count(), 2);
        assert_eq!(s.sum(), 4000);
    }

    #[test]
    fn pools_and_conns_are_read_at_gather_time() {
        let r = Registry::new();
        let pool = Pool::new(&PoolConfig {
            hugepages: HugePages::Never,
            ..PoolConfig::new("rx", 16, 2048)
        })
        .unwrap();
        r.register_pool(&pool);
        let held: Vec<_> = (0..5).map(|_| pool.alloc().unwrap()).collect();
        let l = [("pool", "rx")];
        assert_eq!(r.value("bypass_pool_in_use_slots", &l), Some(5));
        assert_eq!(r.value("bypass_pool_capacity_slots", &l), Some(16));
        assert_eq!(r.value("bypass_pool_hugepages", &l), Some(0));
        drop(held);
        assert_eq!(r.value("bypass_pool_in_use_slots", &l), Some(0));
        assert_eq!(r.value("bypass_pool_high_water_slots", &l), Some(5));

        r.register_conns(|f: &mut dyn FnMut(&ConnInfo)| {
            f(&ConnInfo {
                conn_id: 0xab,
                peer: "10.0.0.2:4791".parse().unwrap(),
                srtt: Duration::from_micros(12),
                min_rtt: Duration::from_micros(9),
                rttvar: Duration::from_micros(2),
                cwnd_bytes: 64_000,
                pacing_rate_bytes_per_second: 1_250_000_000,
                bytes_in_flight: 4096,
                credit_bytes: 1 << 20,
                retransmitted_packets: 7,
                lost_packets: 6,
                reorder_window: Duration::from_micros(3),
                delivered_messages: 10,
                delivered_bytes: 10_000,
                tx_zero_copy_packets: 0,
                tx_batches: 0,
                tx_batched_messages: 0,
                rx_batches: 0,
                rx_segment_messages: 0,
                rx_segment_copied: 0,
            })
        });
        let cl = [("conn", "00000000000000ab"), ("peer", "10.0.0.2:4791")];
        assert_eq!(r.value("bypass_conn_retransmitted_packets", &cl), Some(7));
        let fams = r.gather();
        let srtt = fams
            .iter()
            .find(|f| f.name == "bypass_conn_srtt_seconds")
            .unwrap();
        assert_eq!(srtt.series[0].1, Value::Float(12e-6));
    }

    #[test]
    fn label_names_are_checked() {
        assert!(valid_label_name("port"));
        assert!(valid_label_name("_x1"));
        assert!(!valid_label_name("1x"));
        assert!(!valid_label_name("a-b"));
        assert!(!valid_label_name("__name"));
        assert!(!valid_label_name(""));
    }
}
