//! Property and concurrency tests for `mem::Pool`: a slot is never handed out twice, every
//! slot comes back, and the counters are exact, with buffers freed on other threads too.

use std::collections::HashSet;
use std::sync::mpsc;
use std::thread;

use bypass::mem::{CoreSlot, HugePages, PktBuf, PktBytes, Pool, PoolConfig, PoolExhausted};
use proptest::prelude::*;

fn pool(slots: u32, cache: u32) -> Pool {
    Pool::new(&PoolConfig {
        hugepages: HugePages::Never,
        cache_size: cache,
        ..PoolConfig::new("test-pool", slots, 256)
    })
    .expect("pool")
}

#[derive(Debug, Clone)]
enum Op {
    Alloc,
    /// Drop the i-th live buffer (mod len) here.
    Free(usize),
    /// Send the i-th live buffer to another thread and drop it there.
    FreeRemote(usize),
    /// Freeze the i-th live buffer and keep two views of it.
    Share(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Alloc),
        2 => any::<usize>().prop_map(Op::Free),
        1 => any::<usize>().prop_map(Op::FreeRemote),
        1 => any::<usize>().prop_map(Op::Share),
    ]
}

enum Live {
    Owned(PktBuf),
    Shared(PktBytes, PktBytes),
}

impl Live {
    fn slot(&self) -> u32 {
        match self {
            Live::Owned(b) => b.slot(),
            Live::Shared(a, _) => a.slot(),
        }
    }
}

/// A thread that drops whatever it is sent and acknowledges each drop.
fn remote_dropper() -> (
    mpsc::Sender<Live>,
    mpsc::Receiver<()>,
    thread::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel::<Live>();
    let (ack_tx, ack_rx) = mpsc::channel();
    let h = thread::spawn(move || {
        // The remote thread also holds a core slot half the time, so both free paths
        // (per-core cache and shared ring) are exercised from another thread.
        let _core = if rand_bit() {
            CoreSlot::claim_any().ok()
        } else {
            None
        };
        for b in rx {
            drop(b);
            ack_tx.send(()).unwrap();
        }
    });
    (tx, ack_rx, h)
}

fn rand_bit() -> bool {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        & 1
        == 1
}

fn run_model(ops: &[Op], slots: u32, cache: u32, with_core: bool) -> Result<(), TestCaseError> {
    let _core = if with_core {
        Some(CoreSlot::claim_any().expect("core slot"))
    } else {
        None
    };
    let p = pool(slots, cache);
    let (tx, ack, h) = remote_dropper();
    let mut live: Vec<Live> = Vec::new();
    let mut held: HashSet<u32> = HashSet::new();
    // `high`: most slots ever held by buffers; `high_off`: most ever off the shared free list
    // (held, or parked in a core's cache), which is what the pool's high_water reports.
    let (mut failed, mut high, mut high_off) = (0u64, 0u64, 0u64);
    for op in ops {
        match *op {
            Op::Alloc => match p.alloc() {
                Ok(mut b) => {
                    prop_assert!(held.insert(b.slot()), "slot {} handed out twice", b.slot());
                    prop_assert_eq!(b.len(), 0);
                    prop_assert_eq!(b.headroom(), 128);
                    b.extend_from_slice(&b.slot().to_le_bytes()).unwrap();
                    live.push(Live::Owned(b));
                    high = high.max(live.len() as u64);
                }
                Err(PoolExhausted) => {
                    // Refused only when every free slot sits in another core's cache.
                    prop_assert_eq!(
                        live.len() + p.cached_slots(),
                        slots as usize,
                        "refused with free slots"
                    );
                    failed += 1;
                }
            },
            Op::Free(i) | Op::FreeRemote(i) if !live.is_empty() => {
                let b = live.swap_remove(i % live.len());
                prop_assert!(held.remove(&b.slot()));
                if let Op::FreeRemote(_) = op {
                    tx.send(b).unwrap();
                    ack.recv().unwrap();
                } else {
                    drop(b);
                }
            }
            Op::Share(i) if !live.is_empty() => {
                let k = i % live.len();
                if let Live::Owned(_) = live[k] {
                    let Live::Owned(b) = live.swap_remove(k) else {
                        unreachable!()
                    };
                    let slot = b.slot();
                    let v = b.freeze();
                    prop_assert_eq!(&v[..], &slot.to_le_bytes()[..]);
                    let w = v.slice(1..);
                    live.push(Live::Shared(v, w));
                }
            }
            _ => {}
        }
        high_off = high_off.max((live.len() + p.cached_slots()) as u64);
        let s = p.stats();
        prop_assert_eq!(s.in_use, live.len() as u64);
        prop_assert_eq!(s.failed, failed);
        prop_assert_eq!(s.high_water, high_off);
        prop_assert!(
            s.high_water >= high,
            "high water {} below use {}",
            s.high_water,
            high
        );
        if cache == 0 {
            prop_assert_eq!(s.high_water, high);
        }
        prop_assert_eq!(p.free_slots(), slots as usize - live.len());
    }
    // Data written at alloc time is intact: nobody else was handed the slot.
    for l in &live {
        match l {
            Live::Owned(b) => prop_assert_eq!(b.data(), &b.slot().to_le_bytes()[..]),
            Live::Shared(a, b) => {
                prop_assert_eq!(&a[..], &a.slot().to_le_bytes()[..]);
                prop_assert_eq!(&b[..], &a.slot().to_le_bytes()[1..]);
            }
        }
    }
    drop(live);
    drop(tx);
    h.join().unwrap();
    prop_assert_eq!(p.stats().in_use, 0);
    prop_assert_eq!(p.free_slots(), slots as usize);
    // Every slot can be had again, each exactly once.
    let all: Vec<PktBuf> = (0..slots)
        .map(|_| p.alloc().expect("slot came back"))
        .collect();
    let distinct: HashSet<u32> = all.iter().map(PktBuf::slot).collect();
    prop_assert_eq!(distinct.len(), slots as usize);
    prop_assert!(p.alloc().is_err());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn model_with_core_cache(ops in prop::collection::vec(op(), 1..400), slots in 1u32..48, cache in 0u32..16) {
        run_model(&ops, slots, cache, true)?;
    }

    #[test]
    fn model_without_core(ops in prop::collection::vec(op(), 1..400), slots in 1u32..48) {
        run_model(&ops, slots, 8, false)?;
    }
}

/// Four threads (two with core slots, two without) allocate, stamp, pass buffers to each
/// other, verify the stamp and free them; at the end every slot is back, exactly once.
#[test]
fn concurrent_alloc_and_cross_thread_free() {
    const SLOTS: u32 = 512;
    const ROUNDS: u32 = 20_000;
    let p = pool(SLOTS, 32);
    let threads = 4;
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..threads)
        .map(|_| mpsc::sync_channel::<PktBuf>(64))
        .unzip();
    let mut handles = Vec::new();
    for (t, rx) in rxs.into_iter().enumerate() {
        let p = p.clone();
        let next = txs[(t + 1) % threads].clone();
        handles.push(thread::spawn(move || {
            let _core = if t % 2 == 0 {
                Some(CoreSlot::claim_any().unwrap())
            } else {
                None
            };
            let mut sent = 0u32;
            let mut exhausted = 0u64;
            let mut received = 0u32;
            while sent < ROUNDS || received < ROUNDS {
                if sent < ROUNDS {
                    match p.alloc() {
                        Ok(mut b) => {
                            let stamp = [t as u8, (sent & 0xff) as u8, (sent >> 8) as u8, 0x5a];
                            b.extend_from_slice(&stamp).unwrap();
                            b.extend_from_slice(&b.slot().to_le_bytes()).unwrap();
                            if next.try_send(b).is_ok() {
                                sent += 1;
                            }
                        }
                        Err(PoolExhausted) => exhausted += 1,
                    }
                }
                while let Ok(b) = rx.try_recv() {
                    // Stamped by our neighbour, with its own slot index: never handed to two.
                    assert_eq!(b.len(), 8);
                    assert_eq!(b[3], 0x5a);
                    assert_eq!(&b[4..8], &b.slot().to_le_bytes());
                    received += 1;
                }
                thread::yield_now();
            }
            exhausted
        }));
    }
    drop(txs);
    let exhausted: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let s = p.stats();
    assert_eq!(s.in_use, 0, "{s:?}");
    assert_eq!(s.failed, exhausted);
    assert!(s.high_water <= SLOTS as u64);
    assert_eq!(p.free_slots(), SLOTS as usize);
    let all: Vec<PktBuf> = (0..SLOTS).map(|_| p.alloc().unwrap()).collect();
    assert_eq!(
        all.iter().map(PktBuf::slot).collect::<HashSet<_>>().len(),
        SLOTS as usize
    );
}

#[test]
fn buffers_outlive_pool_handle() {
    let p = pool(4, 2);
    let b = p.alloc().unwrap();
    let v = p.alloc().unwrap().freeze();
    drop(p);
    // Memory stays mapped until the last buffer returns.
    assert_eq!(b.len(), 0);
    assert_eq!(v.len(), 0);
    drop((b, v));
}

#[test]
fn headroom_prepend_append() {
    let p = pool(2, 0);
    let mut b = p.alloc().unwrap();
    b.extend_from_slice(b"payload").unwrap();
    let ptr = b.data().as_ptr();
    b.prepend(4).unwrap().copy_from_slice(b"HDR:");
    assert_eq!(b.data(), b"HDR:payload");
    // The payload did not move.
    assert!(std::ptr::eq(ptr, b.data()[4..].as_ptr()));
    assert!(b.prepend(125).is_err());
    b.advance(4);
    assert_eq!(b.data(), b"payload");
    assert!(b.append(b.tailroom() + 1).is_err());
    let t = b.tailroom();
    b.append(t).unwrap();
    assert_eq!(b.len(), 256 - 128);
    b.truncate(3);
    assert_eq!(b.data(), b"pay");
    b.reset();
    assert_eq!((b.len(), b.headroom()), (0, 128));
}

#[test]
fn bytes_handoff_is_zero_copy_and_returns_slot() {
    let p = pool(2, 0);
    let mut b = p.alloc().unwrap();
    b.extend_from_slice(b"hello world").unwrap();
    let ptr = b.data().as_ptr();
    let bytes = b.into_bytes();
    assert!(
        std::ptr::eq(bytes.as_ptr(), ptr),
        "Bytes points into the slot"
    );
    let tail = bytes.slice(6..);
    assert_eq!(&tail[..], b"world");
    drop(bytes);
    assert_eq!(p.stats().in_use, 1, "a clone still holds the slot");
    drop(tail);
    assert_eq!(p.stats().in_use, 0);
}

#[test]
fn invalid_configs_are_refused() {
    for cfg in [
        PoolConfig::new("z", 0, 256),
        PoolConfig {
            headroom: 256,
            ..PoolConfig::new("h", 4, 256)
        },
    ] {
        assert!(Pool::new(&cfg).is_err(), "{cfg:?}");
    }
}

/// Whether a mapping of region `name` exists in this process.
fn mapped(name: &str) -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .any(|l| l.contains(&format!("memfd:{name} ")))
}

/// The pool's memory goes when the last handle, the last buffer and the last cached slot are
/// gone: buffers outlive handles, frees after the last handle skip the caches, and a core
/// holding cached slots gives them back when it releases its core slot.
#[test]
fn memory_lives_exactly_while_referenced() {
    let name = format!("lifetime-{}", std::process::id());
    let (tx, rx) = mpsc::channel::<PktBuf>();
    let (ack_tx, ack_rx) = mpsc::channel::<()>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    // Another thread with a core slot frees one buffer into its cache, then waits.
    let other = thread::spawn(move || {
        let core = CoreSlot::claim_any().expect("core slot");
        drop(rx.recv().unwrap());
        ack_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        drop(core);
        ack_tx.send(()).unwrap();
    });
    let core = CoreSlot::claim_any().expect("core slot");
    let p = Pool::new(&PoolConfig {
        hugepages: HugePages::Never,
        cache_size: 8,
        ..PoolConfig::new(&name, 64, 256)
    })
    .unwrap();
    assert!(mapped(&name));
    let mut bufs: Vec<PktBuf> = (0..10).map(|_| p.alloc().unwrap()).collect();
    tx.send(bufs.pop().unwrap()).unwrap();
    ack_rx.recv().unwrap();
    bufs.truncate(5); // four parked in this core's cache
                      // Three refills of 4 for ten allocations leave 2 in this core's cache.
    assert_eq!(
        p.cached_slots(),
        2 + 1 + 4,
        "refill leftovers + other core + freed here"
    );
    let probe = p.clone();
    drop(p);
    assert!(mapped(&name), "a handle is left");
    drop(probe);
    assert!(mapped(&name), "buffers are left");
    drop(bufs);
    assert!(mapped(&name), "the other core still caches one slot");
    go_tx.send(()).unwrap();
    ack_rx.recv().unwrap();
    assert!(!mapped(&name), "released with the other core's slot");
    other.join().unwrap();
    drop(core);
}

// ---- shared transmit references (PktBuf::share) ------------------------------------------

fn filled(p: &Pool, n: usize, byte: u8) -> PktBuf {
    let mut b = p.alloc().unwrap();
    b.append(n).unwrap().fill(byte);
    b
}

#[test]
fn share_keeps_one_slot_until_the_last_reference() {
    let p = pool(8, 0);
    let mut keep = filled(&p, 100, 7);
    let tx = keep.share();
    assert!(keep.is_shared() && tx.is_shared());
    assert!(!keep.is_unique() && !tx.is_unique());
    assert_eq!(tx.slot(), keep.slot());
    assert_eq!(tx.data().as_ptr(), keep.data().as_ptr(), "no copy");
    assert_eq!(p.stats().in_use, 1);
    drop(tx);
    assert_eq!(
        p.stats().in_use,
        1,
        "the kept reference still holds the slot"
    );
    assert!(keep.is_unique());
    assert_eq!(keep.data(), &[7u8; 100][..]);
    drop(keep);
    assert_eq!(p.stats().in_use, 0);
    // Either order.
    let mut keep = filled(&p, 10, 1);
    let tx = keep.share();
    drop(keep);
    assert_eq!(p.stats().in_use, 1);
    assert_eq!(tx.data(), &[1u8; 10][..]);
    drop(tx);
    assert_eq!(p.stats().in_use, 0);
}

#[test]
fn shared_headroom_writes_in_place_payload_writes_copy() {
    let p = pool(8, 0);
    let mut keep = filled(&p, 64, 0xaa);
    let mut tx = keep.share();
    let slot = tx.slot();
    // Headers go below the write floor: in place, same slot.
    tx.prepend(16).unwrap().fill(0x11);
    assert_eq!(tx.slot(), slot);
    assert_eq!(tx.head_mut(16).unwrap().len(), 16);
    assert_eq!(tx.slot(), slot);
    assert_eq!(&tx.data()[..16], &[0x11u8; 16][..]);
    assert_eq!(keep.data(), &[0xaau8; 64][..]);
    // A header write reaching into the payload copies first.
    tx.head_mut(17).unwrap()[16] = 0xbb;
    assert_ne!(tx.slot(), slot, "copy-on-write");
    assert!(!tx.is_shared());
    assert_eq!(tx.data()[16], 0xbb);
    assert_eq!(&tx.data()[17..], &[0xaau8; 63][..]);
    assert_eq!(
        keep.data(),
        &[0xaau8; 64][..],
        "the kept payload is untouched"
    );
    assert_eq!(p.stats().in_use, 2);
    // The kept reference is read-only while shared: its prepend copies too...
    let mut tx2 = keep.share();
    keep.prepend(4).unwrap().fill(0);
    assert_ne!(keep.slot(), tx2.slot());
    assert_eq!(tx2.data(), &[0xaau8; 64][..]);
    // ...which left tx2 the last reference to its slot: it writes in place.
    let s2 = tx2.slot();
    tx2.data_mut()[0] = 0;
    assert_eq!(tx2.slot(), s2);
    drop((keep, tx, tx2));
    assert_eq!(p.stats().in_use, 0);
}

#[test]
fn last_shared_reference_writes_in_place() {
    let p = pool(8, 0);
    let mut keep = filled(&p, 32, 3);
    let tx = keep.share();
    let slot = keep.slot();
    drop(tx);
    keep.data_mut()[0] = 9;
    keep.extend_from_slice(&[4; 8]).unwrap();
    assert_eq!(keep.slot(), slot, "no copy once unique");
    assert!(!keep.is_shared());
    assert_eq!(keep.len(), 40);
    drop(keep);
    assert_eq!(p.stats().in_use, 0);
}

#[test]
fn shared_writes_with_an_exhausted_pool_fail_cleanly() {
    let p = pool(1, 0);
    let mut keep = filled(&p, 32, 5);
    let mut tx = keep.share();
    assert_eq!(tx.try_data_mut().unwrap_err(), PoolExhausted);
    assert!(tx.append(1).is_err());
    assert!(keep.prepend(1).is_err());
    assert!(
        tx.set_data(0, 200).is_err(),
        "growing a shared window needs a copy"
    );
    assert!(tx.head_mut(33).is_none());
    assert!(
        tx.data_mut().is_empty(),
        "data_mut drops the data rather than write shared bytes"
    );
    assert!(tx.is_empty());
    assert_eq!(keep.data(), &[5u8; 32][..]);
    // Shrinking the window needs nothing.
    keep.advance(2);
    keep.truncate(10);
    assert_eq!(keep.data(), &[5u8; 10][..]);
    drop((keep, tx));
    assert_eq!(p.stats().in_use, 0);
}

#[test]
fn shared_raw_round_trip_and_freeze() {
    let p = pool(8, 0);
    let mut keep = filled(&p, 20, 6);
    let tx = keep.share();
    assert!(tx.is_shared());
    let (slot, off, len) = tx.into_raw();
    assert_eq!(p.stats().in_use, 1);
    drop(keep);
    assert_eq!(p.stats().in_use, 1, "the posted reference holds the slot");
    // SAFETY: slot came from into_raw of a shared buffer of this pool, just above.
    let back = unsafe { p.from_raw_shared(slot, off, len) };
    assert_eq!(back.data(), &[6u8; 20][..]);
    drop(back);
    assert_eq!(p.stats().in_use, 0);
    // A shared buffer frozen into views: every reference counts.
    let mut keep = filled(&p, 20, 8);
    let tx = keep.share();
    let v: PktBytes = tx.freeze();
    let v2 = v.slice(5..);
    drop(v);
    drop(keep);
    assert_eq!(p.stats().in_use, 1);
    assert_eq!(&v2[..], &[8u8; 15][..]);
    drop(v2);
    assert_eq!(p.stats().in_use, 0);
    let other = pool(2, 0);
    let b = p.alloc().unwrap();
    assert!(p.owns(&b) && !other.owns(&b));
}

#[test]
fn shared_references_cross_threads() {
    let p = pool(256, 8);
    let (tx_ch, rx_ch) = mpsc::sync_channel::<PktBuf>(8);
    let reader = thread::spawn(move || {
        let mut sum = 0u64;
        for mut b in rx_ch {
            // The remote side reads, prepends in its headroom, and sometimes writes the
            // payload (which must copy).
            sum += b.data().iter().map(|&x| u64::from(x)).sum::<u64>();
            if b.prepend(8).is_ok() {
                b.data_mut()[8] ^= 0xff;
            }
        }
        sum
    });
    let mut kept = Vec::new();
    let mut expect = 0u64;
    for i in 0..2000u32 {
        let mut keep = filled(&p, 48, (i % 251) as u8);
        expect += 48 * u64::from((i % 251) as u8);
        tx_ch.send(keep.share()).unwrap();
        kept.push(keep);
        if kept.len() > 16 {
            let k = kept.remove(0);
            assert!(
                k.data().iter().all(|&x| x == k.data()[0]),
                "payload unchanged"
            );
        }
    }
    drop(tx_ch);
    assert_eq!(reader.join().unwrap(), expect);
    drop(kept);
    assert_eq!(p.stats().in_use, 0);
}
