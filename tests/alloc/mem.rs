//! A counting global allocator shows the buffer paths make no heap allocation.
//! Counts are per thread, so the test harness's own threads don't disturb them.

use bypass::mem::{CoreSlot, HugePages, Pool, PoolConfig};

use crate::counting::allocs;

fn pool() -> Pool {
    Pool::new(&PoolConfig {
        hugepages: HugePages::Never,
        ..PoolConfig::new("noalloc", 1024, 2048)
    })
    .unwrap()
}

fn count(f: impl FnOnce()) -> u64 {
    let before = allocs();
    f();
    allocs() - before
}

#[test]
fn alloc_free_and_freeze_allocate_nothing() {
    let p = pool();
    for with_core in [false, true] {
        let _core = with_core.then(|| CoreSlot::claim_any().unwrap());
        // Warm up: first use of the thread-local core slot etc.
        drop(p.alloc().unwrap());
        let n = count(|| {
            for i in 0..10_000u32 {
                let mut b = p.alloc().unwrap();
                b.extend_from_slice(&i.to_le_bytes()).unwrap();
                b.prepend(8).unwrap().fill(0);
                let v = b.freeze();
                let w = v.clone();
                let x = w.slice(8..);
                assert_eq!(&x[..], &i.to_le_bytes());
                drop((v, w, x));
            }
        });
        assert_eq!(
            n, 0,
            "alloc/prepend/freeze/clone/slice/drop allocated (core: {with_core})"
        );
        // Many buffers held at once (spilling and refilling the per-core cache).
        let mut held = Vec::with_capacity(1024);
        let n = count(|| {
            for _ in 0..3 {
                while let Ok(b) = p.alloc() {
                    held.push(b);
                }
                held.clear();
            }
        });
        assert_eq!(n, 0, "cache spill/refill allocated (core: {with_core})");
        assert_eq!(p.stats().in_use, 0);
    }
}

/// `bytes::Bytes::from_owner` boxes its owner: exactly one small allocation per hand-off and
/// no copy of the payload. This pins that cost so a regression (or an improvement) shows.
#[test]
fn bytes_handoff_costs_exactly_one_small_allocation() {
    let p = pool();
    drop(p.alloc().unwrap().into_bytes());
    let n = count(|| {
        for _ in 0..1000 {
            let mut b = p.alloc().unwrap();
            b.extend_from_slice(&[7u8; 1500]).unwrap();
            let bytes = b.into_bytes();
            let c = bytes.clone();
            drop((bytes, c));
        }
    });
    assert_eq!(n, 1000);
    assert_eq!(p.stats().in_use, 0);
}
