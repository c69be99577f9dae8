//! Per-core counters summed across threads are exact; concurrent reads never go backwards;
//! histogram percentiles match a sorted-array oracle to the bucket.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bypass::telemetry::{bucket_of, hist, CoreHistogram, HistogramSnapshot, PortMetric, Registry};
use proptest::prelude::*;

const Q0: [(&str, &str); 2] = [("port", "memif0"), ("queue", "0")];

#[test]
fn counters_summed_across_threads_are_exact() {
    let r = Registry::new();
    let threads = 4u64;
    let per_thread = 1_000_000u64;
    let stop = Arc::new(AtomicBool::new(false));

    // A reader scraping while the writers run: each sum is never below the previous one.
    let reader = {
        let r = r.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut last = 0;
            let mut reads = 0u64;
            while !stop.load(Ordering::Acquire) {
                let v = r.value("bypass_port_rx_packets", &Q0).unwrap_or(0);
                assert!(v >= last, "summed counter went backwards: {last} -> {v}");
                last = v;
                reads += 1;
            }
            reads
        })
    };

    let writers: Vec<_> = (0..threads)
        .map(|t| {
            // Every writer registers its own block with the same labels: summed on read.
            let c = r.port_counters("memif0", 0);
            std::thread::spawn(move || {
                for i in 0..per_thread {
                    c.inc(PortMetric::RxPackets);
                    c.add(PortMetric::RxBytes, 60 + (i % 4));
                    if i % 1000 == 0 {
                        c.inc(PortMetric::RxDropNoBuffer);
                    }
                }
                c.add(PortMetric::TxPackets, t);
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Release);
    let reads = reader.join().unwrap();

    let bytes_per_thread: u64 = (0..per_thread).map(|i| 60 + (i % 4)).sum();
    assert_eq!(
        r.value("bypass_port_rx_packets", &Q0),
        Some(threads * per_thread)
    );
    assert_eq!(
        r.value("bypass_port_rx_bytes", &Q0),
        Some(threads * bytes_per_thread)
    );
    assert_eq!(
        r.value(
            "bypass_port_rx_dropped_packets",
            &[("port", "memif0"), ("queue", "0"), ("cause", "no_buffer")]
        ),
        Some(threads * per_thread / 1000)
    );
    assert_eq!(
        r.value("bypass_port_tx_packets", &Q0),
        Some((0..threads).sum())
    );
    println!(
        "{threads} writers x {per_thread} increments summed exactly; {reads} concurrent reads"
    );
}

#[test]
fn histograms_recorded_on_many_threads_merge_exactly() {
    let r = Registry::new();
    let hs: Vec<CoreHistogram> = (0..3)
        .map(|_| r.histogram(&hist::RTT, &[("port", "memif0")]))
        .collect();
    let joins: Vec<_> = hs
        .into_iter()
        .enumerate()
        .map(|(t, h)| {
            std::thread::spawn(move || {
                for i in 0..100_000u64 {
                    h.record(1000 * (t as u64 + 1) + i % 7);
                }
            })
        })
        .collect();
    for j in joins {
        j.join().unwrap();
    }
    let s = r
        .histogram_snapshot("bypass_rtt_seconds", &[("port", "memif0")])
        .unwrap();
    assert_eq!(s.count(), 300_000);
    let expect_sum: u64 = (0..3u64)
        .map(|t| (0..100_000u64).map(|i| 1000 * (t + 1) + i % 7).sum::<u64>())
        .sum();
    assert_eq!(s.sum(), expect_sum);
    assert_eq!(bucket_of(s.quantile(0.5).unwrap()), bucket_of(2003));
}

/// Nearest-rank percentile of a sorted slice.
fn oracle(sorted: &[u64], q: f64) -> u64 {
    let n = sorted.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1]
}

fn check_against_oracle(values: &[u64]) {
    let h = CoreHistogram::unregistered();
    for &v in values {
        h.record(v);
    }
    let s: HistogramSnapshot = h.snapshot();
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    assert_eq!(s.count(), values.len() as u64);
    for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
        let got = s.quantile(q).unwrap();
        let want = oracle(&sorted, q);
        // Same bucket: the estimate is the bucket's top, never below the true value, and
        // above it by less than the bucket width (<= 1/16 of the value above 15 ns).
        assert_eq!(
            bucket_of(got),
            bucket_of(want),
            "q={q} got {got} want {want}"
        );
        assert!(got >= want);
        assert!(got - want <= want / 16, "q={q} got {got} want {want}");
    }
    let p = s.percentiles().unwrap();
    assert!(p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.p999);
    assert_eq!(bucket_of(s.min().unwrap()), bucket_of(sorted[0]));
    assert_eq!(
        bucket_of(s.max().unwrap()),
        bucket_of(*sorted.last().unwrap())
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn percentiles_match_sorted_oracle_latency_like(
        values in prop::collection::vec(
            prop_oneof![0u64..64, 100u64..100_000, 1_000u64..10_000_000_000],
            1..2000,
        )
    ) {
        check_against_oracle(&values);
    }

    #[test]
    fn percentiles_match_sorted_oracle_any_u64(values in prop::collection::vec(any::<u64>(), 1..500)) {
        check_against_oracle(&values);
    }
}
