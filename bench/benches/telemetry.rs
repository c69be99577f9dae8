//! telemetry micro-benchmarks: a per-core counter increment and a histogram record, against
//! the alternatives they replace (an atomic read-modify-write, a shared counter under
//! contention, hdrhistogram), and the cost of one scrape.
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bypass::mem::{HugePages, Pool, PoolConfig};
use bypass::telemetry::{hist, PortMetric, Registry};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn counters(c: &mut Criterion) {
    let r = Registry::new();
    let mut g = c.benchmark_group("telemetry");
    g.throughput(Throughput::Elements(1));

    let cc = r.port_counters("memif0", 0);
    g.bench_function("counter_add/core_block", |b| {
        b.iter(|| cc.add(PortMetric::RxBytes, black_box(64)))
    });
    let shared = AtomicU64::new(0);
    g.bench_function("counter_add/atomic_fetch_add_uncontended", |b| {
        b.iter(|| shared.fetch_add(black_box(64), Ordering::Relaxed))
    });
    // While another thread writes: the same cache line (a counter shared by two cores), or
    // its own block (what per-core blocks give).
    for shared_line in [true, false] {
        let stop = Arc::new(AtomicBool::new(false));
        let atomic = Arc::new(AtomicU64::new(0));
        let other = {
            let (a, stop) = (atomic.clone(), stop.clone());
            let own = r.port_counters("memif0", 1);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if shared_line {
                        a.fetch_add(1, Ordering::Relaxed);
                    } else {
                        own.inc(PortMetric::RxPackets);
                    }
                }
            })
        };
        if shared_line {
            g.bench_function("counter_add/atomic_fetch_add_contended", |b| {
                b.iter(|| atomic.fetch_add(black_box(64), Ordering::Relaxed))
            });
        } else {
            g.bench_function("counter_add/core_block_while_other_core_counts", |b| {
                b.iter(|| cc.add(PortMetric::RxBytes, black_box(64)))
            });
        }
        stop.store(true, Ordering::Relaxed);
        other.join().unwrap();
    }

    let h = r.histogram(&hist::RTT, &[("port", "memif0")]);
    // Latency-like values (500 ns .. ~1 ms), precomputed so the loop measures the record.
    let mut rng = bypass::rng::SplitMix64::new(1);
    let vals: Vec<u64> = (0..4096)
        .map(|_| 500 + (rng.next_u64() & 0xf_ffff))
        .collect();
    let mut i = 0usize;
    let mut next = move || {
        i = (i + 1) & 4095;
        vals[i]
    };
    g.bench_function("histogram_record/core_histogram", |b| {
        b.iter(|| h.record(black_box(next())))
    });
    let mut hd = hdrhistogram::Histogram::<u64>::new(3).unwrap();
    g.bench_function("histogram_record/hdrhistogram_3_digits", |b| {
        b.iter(|| hd.record(black_box(next())).unwrap())
    });
    g.bench_function("histogram_record/value_lookup_only", |b| {
        b.iter(|| black_box(next()))
    });
    let conns = r.conn_table(64);
    let mut info = bypass::telemetry::ConnInfo {
        conn_id: 1,
        peer: "10.0.0.2:4791".parse().unwrap(),
        srtt: std::time::Duration::from_micros(12),
        min_rtt: std::time::Duration::from_micros(9),
        rttvar: std::time::Duration::from_micros(2),
        cwnd_bytes: 64_000,
        pacing_rate_bytes_per_second: 1_250_000_000,
        bytes_in_flight: 4096,
        credit_bytes: 1 << 20,
        retransmitted_packets: 0,
        lost_packets: 0,
        reorder_window: std::time::Duration::from_micros(3),
        delivered_messages: 0,
        delivered_bytes: 0,
        tx_zero_copy_packets: 0,
        tx_batches: 0,
        tx_batched_messages: 0,
        rx_batches: 0,
        rx_segment_messages: 0,
        rx_segment_copied: 0,
    };
    g.bench_function("conn_publish", |b| {
        b.iter(|| {
            info.delivered_messages += 1;
            conns.publish(black_box(5), &info).unwrap()
        })
    });
    g.finish();

    // One scrape of a stack-sized registry: 2 cores x 2 ports, a histogram per core, 2 pools.
    let r = Registry::new();
    let mut keep = Vec::new();
    for core in 0..2u16 {
        for port in ["memif0", "memif1"] {
            let c = r.port_counters(port, core);
            c.add(PortMetric::RxPackets, 1_000_000);
            keep.push(c);
        }
        let h = r.histogram(&hist::POLL_LOOP_GAP, &[("core", &core.to_string())]);
        for v in 0..10_000u64 {
            h.record(v * 13);
        }
    }
    let pools: Vec<Pool> = ["rx", "tx"]
        .iter()
        .map(|n| {
            Pool::new(&PoolConfig {
                hugepages: HugePages::Never,
                ..PoolConfig::new(n, 1024, 2048)
            })
            .unwrap()
        })
        .collect();
    for p in &pools {
        r.register_pool(p);
    }
    let mut g = c.benchmark_group("telemetry_scrape");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode_text", |b| b.iter(|| black_box(r.encode_text())));
    g.finish();
}

criterion_group!(benches, counters);
criterion_main!(benches);
