//! Per-core counter blocks: written by one thread without a lock or a read-modify-write, read
//! by anyone.
//!
//! A [`CounterSet`] is a static table of metric descriptions (name, help, counter or gauge)
//! with an index per metric; [`PortMetric`] is the set for one port queue. A [`CoreCounters`]
//! is one core's block of that set: the owning thread updates a slot with a relaxed load and a
//! relaxed store (a plain `mov`, no `lock` prefix), and the registry reads every block and sums
//! blocks that carry the same labels.
//!
//! Single writer is enforced by the types: a [`CoreCounters`] is `Send` (hand it to the core
//! that owns it) but neither `Sync` nor `Clone`, so no two threads can write one block.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Whether a metric only goes up (a Prometheus counter) or goes up and down (a gauge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic; exported with a `_total` suffix.
    Counter,
    /// A level (in use, link up); blocks with the same labels are summed.
    Gauge,
}

/// Description of one metric of a [`CounterSet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDesc {
    /// Prometheus family name, units included, without the `_total` a counter gets on export
    /// (e.g. `bypass_port_rx_packets`).
    pub name: &'static str,
    /// One line of help text.
    pub help: &'static str,
    /// Counter or gauge.
    pub kind: MetricKind,
    /// A label that tells metrics of the same family apart (e.g. `("cause", "no_buffer")`).
    pub label: Option<(&'static str, &'static str)>,
}

/// A fixed set of metrics one block holds, named by an enum.
///
/// Implement it for a field-less enum whose discriminants are `0..DESCS.len()`; metrics that
/// share a family name (and differ by [`MetricDesc::label`]) must have the same help and kind.
pub trait CounterSet: Copy + 'static {
    /// One description per metric, in index order.
    const DESCS: &'static [MetricDesc];
    /// The metric's index into [`CounterSet::DESCS`]; must be below `DESCS.len()` (recording
    /// a metric whose index is out of range panics: a bug in the set, not a runtime event).
    fn index(self) -> usize;
}

/// Eight counters on their own cache line, so blocks of different cores never share a line.
#[repr(align(64))]
#[derive(Debug, Default)]
pub(crate) struct Line(pub(crate) [AtomicU64; 8]);

/// The storage of one block: read by the registry, written only through a [`CoreCounters`].
#[derive(Debug)]
pub(crate) struct Block {
    pub(crate) descs: &'static [MetricDesc],
    lines: Box<[Line]>,
}

impl Block {
    pub(crate) fn new(descs: &'static [MetricDesc]) -> Block {
        let lines = descs.len().div_ceil(8);
        Block {
            descs,
            lines: (0..lines).map(|_| Line::default()).collect(),
        }
    }

    #[inline]
    fn slot(&self, i: usize) -> &AtomicU64 {
        &self.lines[i / 8].0[i % 8]
    }

    /// Value of metric `i` now.
    pub(crate) fn get(&self, i: usize) -> u64 {
        self.slot(i).load(Ordering::Relaxed)
    }
}

/// One core's block of the metrics in `S`; the only way to write it.
///
/// `Send` but not `Sync` and not `Clone`: exactly one thread writes the block, so an update
/// is a relaxed load and store of its own cache line (no lock, no atomic read-modify-write).
/// Dropping it leaves the block registered with its last values (counters never go backwards).
#[derive(Debug)]
pub struct CoreCounters<S: CounterSet> {
    block: Arc<Block>,
    _set: PhantomData<fn(S)>,
    _not_sync: PhantomData<Cell<()>>,
}

impl<S: CounterSet> CoreCounters<S> {
    pub(crate) fn new(block: Arc<Block>) -> Self {
        debug_assert_eq!(block.descs, S::DESCS);
        CoreCounters {
            block,
            _set: PhantomData,
            _not_sync: PhantomData,
        }
    }

    /// Add `n` to metric `m` (wrapping at 2^64).
    #[inline]
    pub fn add(&self, m: S, n: u64) {
        let s = self.block.slot(m.index());
        s.store(s.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Add one to metric `m`.
    #[inline]
    pub fn inc(&self, m: S) {
        self.add(m, 1);
    }

    /// Set metric `m` to `v`: for gauges, or to mirror a cumulative count kept elsewhere (a
    /// device's counters). Never set a counter lower than it was.
    #[inline]
    pub fn set(&self, m: S, v: u64) {
        self.block.slot(m.index()).store(v, Ordering::Relaxed);
    }

    /// Subtract `n` from gauge `m` (wrapping).
    #[inline]
    pub fn sub(&self, m: S, n: u64) {
        let s = self.block.slot(m.index());
        s.store(s.load(Ordering::Relaxed).wrapping_sub(n), Ordering::Relaxed);
    }

    /// This block's value of metric `m` (not summed with other cores).
    #[inline]
    pub fn get(&self, m: S) -> u64 {
        self.block.get(m.index())
    }
}

/// Per port queue metrics. Labels: `port` (the port's name) and `queue`.
///
/// A driver's cumulative counters (`pmd::PortStats`, which this layer does not import: it
/// sits below `pmd`) are mirrored with [`CoreCounters::set`]: `rx_packets` to
/// [`PortMetric::RxPackets`], `rx_bytes` to [`PortMetric::RxBytes`], `tx_packets`/`tx_bytes`
/// likewise, `rx_no_buffer` to [`PortMetric::RxDropNoBuffer`], `rx_errors` to
/// [`PortMetric::RxDropDeviceError`] less `rx_bad_checksum`, which goes to
/// [`PortMetric::RxDropBadChecksum`], `tx_ring_full` to [`PortMetric::TxRingFull`]. The stack
/// adds the others itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PortMetric {
    /// Frames received.
    RxPackets,
    /// Frame bytes received.
    RxBytes,
    /// Frames sent.
    TxPackets,
    /// Frame bytes sent.
    TxBytes,
    /// Receives lost because the receive pool had no free buffer.
    RxDropNoBuffer,
    /// Frames or descriptors the driver found malformed and dropped (other than checksums).
    RxDropDeviceError,
    /// Frames the device found with a bad IPv4 or UDP checksum (offload) and dropped.
    RxDropBadChecksum,
    /// Frames the stack could not parse (bad Ethernet/IP/UDP/transport header) and dropped.
    RxDropMalformed,
    /// Well-formed frames for no known connection or protocol, dropped.
    RxDropNoConnection,
    /// Transmits refused because the device ring was full (kept by the caller, not dropped).
    TxRingFull,
    /// Transmit buffer allocations refused because the pool was exhausted.
    TxPoolExhausted,
    /// 1 when the link is up, 0 when down.
    LinkUp,
}

const PORT_DESCS: &[MetricDesc] = &[
    MetricDesc {
        name: "bypass_port_rx_packets",
        help: "Frames received on the port queue.",
        kind: MetricKind::Counter,
        label: None,
    },
    MetricDesc {
        name: "bypass_port_rx_bytes",
        help: "Frame bytes received on the port queue.",
        kind: MetricKind::Counter,
        label: None,
    },
    MetricDesc {
        name: "bypass_port_tx_packets",
        help: "Frames sent on the port queue.",
        kind: MetricKind::Counter,
        label: None,
    },
    MetricDesc {
        name: "bypass_port_tx_bytes",
        help: "Frame bytes sent on the port queue.",
        kind: MetricKind::Counter,
        label: None,
    },
    MetricDesc {
        name: "bypass_port_rx_dropped_packets",
        help: "Received frames dropped, by cause.",
        kind: MetricKind::Counter,
        label: Some(("cause", "no_buffer")),
    },
    MetricDesc {
        name: "bypass_port_rx_dropped_packets",
        help: "Received frames dropped, by cause.",
        kind: MetricKind::Counter,
        label: Some(("cause", "device_error")),
    },
    MetricDesc {
        name: "bypass_port_rx_dropped_packets",
        help: "Received frames dropped, by cause.",
        kind: MetricKind::Counter,
        label: Some(("cause", "bad_checksum")),
    },
    MetricDesc {
        name: "bypass_port_rx_dropped_packets",
        help: "Received frames dropped, by cause.",
        kind: MetricKind::Counter,
        label: Some(("cause", "malformed")),
    },
    MetricDesc {
        name: "bypass_port_rx_dropped_packets",
        help: "Received frames dropped, by cause.",
        kind: MetricKind::Counter,
        label: Some(("cause", "no_connection")),
    },
    MetricDesc {
        name: "bypass_port_tx_ring_full",
        help:
            "Transmit bursts cut short because the device ring was full (frames kept, not dropped).",
        kind: MetricKind::Counter,
        label: None,
    },
    MetricDesc {
        name: "bypass_port_tx_pool_exhausted",
        help: "Transmit buffer allocations refused because the pool was exhausted.",
        kind: MetricKind::Counter,
        label: None,
    },
    MetricDesc {
        name: "bypass_port_link_up",
        help: "1 when the port's link is up, 0 when it is down.",
        kind: MetricKind::Gauge,
        label: None,
    },
];

impl CounterSet for PortMetric {
    const DESCS: &'static [MetricDesc] = PORT_DESCS;
    #[inline]
    fn index(self) -> usize {
        self as usize
    }
}

impl CoreCounters<PortMetric> {
    /// Record the link state.
    pub fn set_link_up(&self, up: bool) {
        self.set(PortMetric::LinkUp, u64::from(up));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_descs_match_enum_order() {
        assert_eq!(PortMetric::LinkUp.index() + 1, PortMetric::DESCS.len());
        assert_eq!(
            PortMetric::DESCS[PortMetric::RxDropMalformed.index()].label,
            Some(("cause", "malformed"))
        );
        assert_eq!(
            PortMetric::DESCS[PortMetric::TxPackets.index()].name,
            "bypass_port_tx_packets"
        );
        assert_eq!(
            PortMetric::DESCS[PortMetric::RxDropBadChecksum.index()].label,
            Some(("cause", "bad_checksum"))
        );
    }

    #[test]
    fn add_set_sub_get() {
        let c = CoreCounters::<PortMetric>::new(Arc::new(Block::new(PortMetric::DESCS)));
        c.add(PortMetric::RxPackets, 5);
        c.inc(PortMetric::RxPackets);
        assert_eq!(c.get(PortMetric::RxPackets), 6);
        c.set_link_up(true);
        assert_eq!(c.get(PortMetric::LinkUp), 1);
        c.sub(PortMetric::LinkUp, 1);
        assert_eq!(c.get(PortMetric::LinkUp), 0);
        c.set(PortMetric::TxBytes, 9000);
        assert_eq!(c.get(PortMetric::TxBytes), 9000);
        assert_eq!(c.get(PortMetric::RxPackets), 6);
    }
}
