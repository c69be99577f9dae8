//! Lock-free log-linear latency histograms: one per core, recorded with one relaxed store,
//! merged on read.
//!
//! Bucketing (hdrhistogram-style, in nanoseconds): values below 2^[`SUB_BITS`] have a bucket
//! each; above, every power of two `[2^e, 2^(e+1))` is cut into 2^`SUB_BITS` equal
//! sub-buckets. A bucket's width is at most 1/16 of its lower bound (6.25 %), over the whole
//! `u64` range, in [`BUCKETS`] buckets (7.8 KiB per core).
//!
//! Percentiles use the nearest-rank definition and report the highest value of the bucket
//! that holds that rank: never below the true value, and above it by less than one bucket
//! width.
//!
//! Prometheus export uses `le` bounds at powers of two nanoseconds (in seconds), which fall on
//! bucket edges, so every exported cumulative count is exact.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::counters::Line;

/// log2 of the number of sub-buckets per power of two.
pub const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
/// Number of buckets covering the whole `u64` range.
pub const BUCKETS: usize = (65 - SUB_BITS as usize) * SUB;
const LINES: usize = BUCKETS.div_ceil(8);

/// The bucket that holds `v`.
#[inline]
pub fn bucket_of(v: u64) -> usize {
    if v < SUB as u64 {
        v as usize
    } else {
        let e = 63 - v.leading_zeros();
        let shift = e - SUB_BITS;
        // mantissa in [SUB, 2*SUB)
        (shift as usize) * SUB + (v >> shift) as usize
    }
}

/// Lowest value of bucket `i`.
pub fn bucket_low(i: usize) -> u64 {
    if i < SUB {
        i as u64
    } else {
        let shift = i / SUB - 1;
        ((i % SUB + SUB) as u64) << shift
    }
}

/// Highest value of bucket `i` (inclusive).
pub fn bucket_high(i: usize) -> u64 {
    if i < SUB {
        i as u64
    } else {
        let shift = i / SUB - 1;
        let m = (i % SUB + SUB) as u64;
        // (m + 1) << shift can overflow only for the last bucket.
        ((m << shift) - 1).wrapping_add(1u64 << shift)
    }
}

/// Storage of one core's histogram.
#[derive(Debug)]
pub(crate) struct HistBlock {
    counts: Box<[Line]>,
    /// Sum of recorded values (ns), wrapping.
    sum: AtomicU64,
}

impl HistBlock {
    pub(crate) fn new() -> HistBlock {
        HistBlock {
            counts: (0..LINES).map(|_| Line::default()).collect(),
            sum: AtomicU64::new(0),
        }
    }

    #[inline]
    fn slot(&self, i: usize) -> &AtomicU64 {
        &self.counts[i / 8].0[i % 8]
    }

    /// Add this block's counts into `into`.
    pub(crate) fn merge_into(&self, into: &mut HistogramSnapshot) {
        for (i, c) in into.counts.iter_mut().enumerate() {
            *c = c.wrapping_add(self.slot(i).load(Ordering::Relaxed));
        }
        into.sum = into.sum.wrapping_add(self.sum.load(Ordering::Relaxed));
    }
}

/// One core's latency histogram; the only way to record into it.
///
/// `Send` but not `Sync` and not `Clone`: one thread records, with a relaxed load and store
/// of the bucket and of the sum (no lock, no atomic read-modify-write, no allocation).
#[derive(Debug)]
pub struct CoreHistogram {
    block: Arc<HistBlock>,
    _not_sync: PhantomData<Cell<()>>,
}

impl CoreHistogram {
    pub(crate) fn new(block: Arc<HistBlock>) -> CoreHistogram {
        CoreHistogram {
            block,
            _not_sync: PhantomData,
        }
    }

    /// A histogram not registered anywhere (for a tool that reads its own snapshot).
    pub fn unregistered() -> CoreHistogram {
        CoreHistogram::new(Arc::new(HistBlock::new()))
    }

    /// Record a value in nanoseconds.
    #[inline]
    pub fn record(&self, ns: u64) {
        let s = self.block.slot(bucket_of(ns));
        s.store(s.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        let sum = &self.block.sum;
        sum.store(
            sum.load(Ordering::Relaxed).wrapping_add(ns),
            Ordering::Relaxed,
        );
    }

    /// Record a duration (saturating at `u64::MAX` ns).
    #[inline]
    pub fn record_duration(&self, d: Duration) {
        self.record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// This core's counts (not merged with other cores).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut s = HistogramSnapshot::empty();
        self.block.merge_into(&mut s);
        s
    }
}

/// Counts of a histogram, merged from one or more cores; values in nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    counts: Box<[u64]>,
    sum: u64,
}

impl Default for HistogramSnapshot {
    fn default() -> Self {
        Self::empty()
    }
}

impl HistogramSnapshot {
    /// No values.
    pub fn empty() -> HistogramSnapshot {
        HistogramSnapshot {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            sum: 0,
        }
    }

    /// Add another snapshot's counts to this one.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.wrapping_add(*b);
        }
        self.sum = self.sum.wrapping_add(other.sum);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Sum of the values recorded (ns; wraps after 2^64 ns, about 584 years of latency).
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// Count in each bucket ([`bucket_low`]..=[`bucket_high`]).
    pub fn buckets(&self) -> &[u64] {
        &self.counts
    }

    /// Values recorded that are `<= ns`, exact when `ns` is a bucket's highest value (as
    /// every `2^k - 1` is); otherwise counts whole buckets up to the one holding `ns`.
    pub fn count_at_or_below(&self, ns: u64) -> u64 {
        self.counts[..=bucket_of(ns)].iter().sum()
    }

    /// The value at quantile `q` (0.0..=1.0, nearest rank): the highest value of the bucket
    /// holding the `ceil(q * count)`-th smallest value. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_high(i));
            }
        }
        None
    }

    /// Smallest value recorded, to bucket resolution (its bucket's lowest value).
    pub fn min(&self) -> Option<u64> {
        self.counts.iter().position(|&c| c > 0).map(bucket_low)
    }

    /// Largest value recorded, to bucket resolution (its bucket's highest value).
    pub fn max(&self) -> Option<u64> {
        self.counts.iter().rposition(|&c| c > 0).map(bucket_high)
    }

    /// The usual summary: p50, p90, p99, p99.9 (ns); `None` when empty.
    pub fn percentiles(&self) -> Option<Percentiles> {
        Some(Percentiles {
            p50: self.quantile(0.5)?,
            p90: self.quantile(0.9)?,
            p99: self.quantile(0.99)?,
            p999: self.quantile(0.999)?,
        })
    }
}

/// p50, p90, p99 and p99.9 of a histogram, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_range() {
        assert_eq!(bucket_low(0), 0);
        for i in 0..BUCKETS - 1 {
            assert_eq!(bucket_high(i) + 1, bucket_low(i + 1), "bucket {i}");
            assert_eq!(bucket_of(bucket_low(i)), i);
            assert_eq!(bucket_of(bucket_high(i)), i);
        }
        assert_eq!(bucket_high(BUCKETS - 1), u64::MAX);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn width_is_within_one_sixteenth() {
        for i in SUB..BUCKETS {
            let (lo, hi) = (bucket_low(i), bucket_high(i));
            assert!((hi - lo + 1) <= lo / SUB as u64, "bucket {i}: {lo}..={hi}");
        }
    }

    #[test]
    fn powers_of_two_end_buckets() {
        for k in 1..64 {
            let edge = (1u64 << k) - 1;
            assert_eq!(bucket_high(bucket_of(edge)), edge);
        }
    }

    #[test]
    fn record_and_read() {
        let h = CoreHistogram::unregistered();
        assert_eq!(h.snapshot().quantile(0.5), None);
        for v in [3u64, 1000, 1000, 50_000] {
            h.record(v);
        }
        h.record_duration(Duration::from_micros(2));
        let s = h.snapshot();
        assert_eq!(s.count(), 5);
        assert_eq!(s.sum(), 3 + 2000 + 50_000 + 2000);
        assert_eq!(s.min(), Some(3));
        assert_eq!(bucket_of(s.max().unwrap()), bucket_of(50_000));
        assert_eq!(bucket_of(s.quantile(0.5).unwrap()), bucket_of(1000));
        assert_eq!(s.count_at_or_below(1023), 3);
        let mut m = s.clone();
        m.merge(&s);
        assert_eq!(m.count(), 10);
        assert_eq!(m.percentiles().unwrap().p50, s.percentiles().unwrap().p50);
    }
}
