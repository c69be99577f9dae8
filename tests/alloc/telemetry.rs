//! A counting global allocator shows recording counters, gauges, histogram values,
//! connection snapshots and rate-limited events allocates nothing. Counts are per thread, so the harness's own threads
//! don't disturb them.

use std::time::{Duration, Instant};

use crate::counting::allocs;

use bypass::telemetry::{hist, ConnInfo, PortMetric, RateLimited, Registry};

fn count(f: impl FnOnce()) -> u64 {
    let before = allocs();
    f();
    allocs() - before
}

#[test]
fn recording_allocates_nothing() {
    let r = Registry::new();
    let c = r.port_counters("memif0", 0);
    let h = r.histogram(&hist::RTT, &[("port", "memif0")]);
    let mut limiter = RateLimited::new(0, Duration::from_secs(1));
    let now = Instant::now();
    let conns = r.conn_table(4);
    let mut info = ConnInfo {
        conn_id: 1,
        peer: "10.0.0.2:4791".parse().unwrap(),
        srtt: Duration::from_micros(12),
        min_rtt: Duration::from_micros(9),
        rttvar: Duration::from_micros(2),
        cwnd_bytes: 64_000,
        pacing_rate_bytes_per_second: 1_250_000_000,
        bytes_in_flight: 4096,
        credit_bytes: 1 << 20,
        retransmitted_packets: 0,
        lost_packets: 0,
        reorder_window: Duration::from_micros(3),
        delivered_messages: 0,
        delivered_bytes: 0,
        tx_zero_copy_packets: 0,
        tx_batches: 0,
        tx_batched_messages: 0,
        rx_batches: 0,
        rx_segment_messages: 0,
        rx_segment_copied: 0,
    };

    // The checks are not vacuous: registering does allocate.
    assert!(count(|| drop(r.port_counters("memif0", 1))) > 0);

    let n = count(|| {
        for i in 0..100_000u64 {
            c.inc(PortMetric::RxPackets);
            c.add(PortMetric::RxBytes, 64 + i % 1500);
            c.set(PortMetric::TxRingFull, i);
            c.set_link_up(i % 2 == 0);
            h.record(i * 37);
            h.record_duration(Duration::from_nanos(i));
            // Suppressed events: counted, never formatted.
            bypass::warn_rate_limited!(limiter, now, port = "memif0", "malformed frame {i}");
            info.delivered_messages = i;
            conns.publish(2, &info).unwrap();
        }
    });
    assert_eq!(n, 0, "recording allocated {n} times");
    assert_eq!(limiter.suppressed_total(), 100_000);
    assert_eq!(c.get(PortMetric::RxPackets), 100_000);
    assert_eq!(h.snapshot().count(), 200_000);
    assert_eq!(
        r.value(
            "bypass_conn_delivered_messages",
            &[("conn", "0000000000000001"), ("peer", "10.0.0.2:4791")]
        ),
        Some(99_999)
    );
}
