//! mem micro-benchmarks: pool alloc+free, the zero-copy hand-offs, against a heap `Vec<u8>`.
use std::hint::black_box;

use bypass::mem::{CoreSlot, HugePages, Pool, PoolConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const SLOT: u32 = 2048;

fn pool() -> Pool {
    Pool::new(&PoolConfig {
        hugepages: HugePages::Prefer,
        ..PoolConfig::new("bench-mem", 8192, SLOT)
    })
    .expect("pool")
}

fn mem(c: &mut Criterion) {
    let p = pool();
    let mut g = c.benchmark_group("mem");
    g.throughput(Throughput::Elements(1));

    g.bench_function("pool_alloc_free/shared_ring", |b| {
        b.iter(|| drop(black_box(p.alloc().unwrap())))
    });
    {
        let _core = CoreSlot::claim_any().unwrap();
        g.bench_function("pool_alloc_free/core_cache", |b| {
            b.iter(|| drop(black_box(p.alloc().unwrap())))
        });
        g.bench_function("pktbuf_freeze_clone_drop", |b| {
            b.iter(|| {
                let mut buf = p.alloc().unwrap();
                buf.append(64).unwrap();
                let v = buf.freeze();
                let w = black_box(v.clone());
                drop((v, w));
            })
        });
        g.bench_function("pktbuf_into_bytes_drop", |b| {
            b.iter(|| {
                let mut buf = p.alloc().unwrap();
                buf.append(64).unwrap();
                drop(black_box(buf.into_bytes()));
            })
        });
    }
    g.bench_function("vec_u8_2048_alloc_free", |b| {
        b.iter(|| drop(black_box(Vec::<u8>::with_capacity(SLOT as usize))))
    });
    g.bench_function("bytes_from_vec_2048_drop", |b| {
        b.iter(|| drop(black_box(bytes::Bytes::from(vec![0u8; SLOT as usize]))))
    });
    g.finish();
}

criterion_group!(benches, mem);
criterion_main!(benches);
