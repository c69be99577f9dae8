//! Port wrappers: an in-process `pair` moving bursts of 32 x 64 B frames (allocate, fill
//! the 64 bytes, `tx_burst` on one end, `rx_burst` on the other, free), bare and wrapped in
//! `pcap` (writing to `io::sink()`) and `faults` (no fault, and 1 % random loss), so the
//! wrappers' cost reads as a ratio against the bare pair measured in the same run. The
//! benchmark thread holds a core slot, as a poll loop does, so buffers come from its
//! per-core pool cache.

use std::hint::black_box;
use std::io;

use bypass::mem::{CoreSlot, HugePages, PktBuf, Pool, PoolConfig};
use bypass::pmd::faults::{FaultConfig, FaultSpec, Faults, Loss};
use bypass::pmd::pair::{pair, PairPort};
use bypass::pmd::pcap::{Pcap, PcapConfig};
use bypass::pmd::Port;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const BURST: usize = 32;
const LEN: usize = 64;

fn ports() -> (Pool, PairPort, PairPort) {
    let mut cfg = PoolConfig::new("bench-pmd", 1024, 2048);
    cfg.hugepages = HugePages::Prefer;
    let pool = Pool::new(&cfg).expect("pool");
    let (a, b) = pair(&pool, 256, 1500).expect("pair");
    (pool, a, b)
}

/// One iteration: 32 frames of 64 B from `tx` to `rx`.
#[inline]
fn burst(tx: &mut impl Port, rx: &mut impl Port, v: &mut Vec<PktBuf>, out: &mut Vec<PktBuf>) {
    for i in 0..BURST {
        let mut f = tx.alloc_tx().expect("buffer");
        let d = f.append(LEN).expect("room");
        d[..8].copy_from_slice(&(i as u64).to_le_bytes());
        v.push(f);
    }
    let sent = tx.tx_burst(v);
    debug_assert_eq!(sent, BURST);
    rx.rx_burst(out, BURST);
    black_box(out.len());
    out.clear();
    v.clear();
}

fn bench(c: &mut Criterion) {
    let _core = CoreSlot::claim_any().expect("a free core slot");
    let mut g = c.benchmark_group("pmd_pair_burst32x64B");
    g.throughput(Throughput::Elements(BURST as u64));
    let mut v = Vec::with_capacity(256);
    let mut out = Vec::with_capacity(256);

    let (_pool, mut a, mut b) = ports();
    g.bench_function("pair", |bch| {
        bch.iter(|| burst(&mut a, &mut b, &mut v, &mut out))
    });

    let (_pool, a, mut b) = ports();
    let mut pa = Pcap::new(a, io::sink(), PcapConfig::default()).expect("pcap");
    g.bench_function("pair+pcap_sink", |bch| {
        bch.iter(|| burst(&mut pa, &mut b, &mut v, &mut out))
    });
    pa.set_enabled(false);
    g.bench_function("pair+pcap_off", |bch| {
        bch.iter(|| burst(&mut pa, &mut b, &mut v, &mut out))
    });

    let (_pool, a, mut b) = ports();
    let mut fa = Faults::new(a, FaultConfig::default()).expect("faults");
    g.bench_function("pair+faults_none", |bch| {
        bch.iter(|| burst(&mut fa, &mut b, &mut v, &mut out))
    });

    let (_pool, a, mut b) = ports();
    let cfg = FaultConfig {
        seed: 1,
        tx: FaultSpec {
            loss: Loss::Random { p: 0.01 },
            ..FaultSpec::default()
        },
        rx: FaultSpec::default(),
    };
    let mut fa = Faults::new(a, cfg).expect("faults");
    g.bench_function("pair+faults_loss1pct", |bch| {
        bch.iter(|| burst(&mut fa, &mut b, &mut v, &mut out))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
