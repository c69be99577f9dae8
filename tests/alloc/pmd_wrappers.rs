//! The wrappers allocate nothing per frame in steady state: a counting global allocator
//! watches a loop that sends frames through `Pcap<Faults<PairPort>>` (every fault on) and
//! receives them through `Faults<PairPort>` (faults on receive too).

use std::io;

use bypass::mem::{HugePages, PktBuf, Pool, PoolConfig};
use bypass::pmd::faults::{Delay, FaultConfig, FaultSpec, Faults, Loss, RateLimit, Reorder};
use bypass::pmd::pair::pair;
use bypass::pmd::pcap::{Pcap, PcapConfig};
use bypass::pmd::Port;
use bypass::time::ManualClock;

use crate::counting::allocs;

fn spec() -> FaultSpec {
    FaultSpec {
        loss: Loss::GilbertElliott {
            p_good_bad: 0.01,
            p_bad_good: 0.3,
            loss_good: 0.001,
            loss_bad: 0.5,
        },
        duplicate: 0.02,
        corrupt: 0.01,
        corrupt_skip: 14,
        reorder: Some(Reorder {
            probability: 0.02,
            after: 3,
            max_hold_ns: 20_000,
        }),
        delay: Some(Delay {
            ns: 5_000,
            jitter_ns: 2_000,
        }),
        rate: Some(RateLimit {
            bits_per_sec: 40_000_000_000,
            burst_bytes: 16_000,
            queue_frames: 512,
            overhead_bytes: 24,
        }),
        queue_frames: 1024,
    }
}

#[test]
fn wrappers_allocate_nothing_per_frame() {
    let mut cfg = PoolConfig::new("pmd-wrappers-alloc", 8192, 2048);
    cfg.hugepages = HugePages::Never;
    let pool = Pool::new(&cfg).unwrap();
    let (a, b) = pair(&pool, 1024, 1500).unwrap();
    let clock = ManualClock::new(0);
    let fa = Faults::with_clock(
        a,
        FaultConfig {
            seed: 11,
            tx: spec(),
            rx: FaultSpec::default(),
        },
        clock.clone(),
    )
    .unwrap();
    let mut pa = Pcap::new(fa, io::sink(), PcapConfig::default()).unwrap();
    let mut fb = Faults::with_clock(
        b,
        FaultConfig {
            seed: 12,
            tx: FaultSpec::default(),
            rx: spec(),
        },
        clock.clone(),
    )
    .unwrap();
    let mut tx: Vec<PktBuf> = Vec::with_capacity(256);
    let mut rx: Vec<PktBuf> = Vec::with_capacity(256);
    let mut received = 0u64;
    let mut step = |pa: &mut Pcap<_, _>, fb: &mut Faults<_, _>, i: u64| {
        for j in 0..32u64 {
            let Ok(mut f) = pa.alloc_tx() else { break };
            let d = f.append(128).unwrap();
            d.fill(0x5a);
            d[..8].copy_from_slice(&(i * 32 + j).to_le_bytes());
            tx.push(f);
        }
        pa.tx_burst(&mut tx);
        tx.clear(); // what the wrappers refused: dropped here (back to the pool)
        clock.advance(1_000);
        received += fb.rx_burst(&mut rx, 256) as u64;
        rx.clear();
    };
    // Warm up: queues and scratch vectors reach their working sizes.
    for i in 0..2_000 {
        step(&mut pa, &mut fb, i);
    }
    let start = allocs();
    for i in 2_000..22_000 {
        step(&mut pa, &mut fb, i);
    }
    let allocs = allocs() - start;
    let s = pa.inner().fault_stats().tx;
    let r = fb.fault_stats().rx;
    println!(
        "steady state: 704000 frames offered (640000 while counting), {received} received, \
         {allocs} heap allocations while counting; \
         tx faults {s:?}; rx faults {r:?}; capture {:?}",
        pa.capture_stats()
    );
    assert!(received > 100_000);
    assert!(s.duplicated > 0 && s.reordered > 0 && s.delayed > 0 && r.duplicated > 0);
    assert_eq!(allocs, 0, "heap allocations in steady state");
}

/// `pmd::fanin` allocates nothing per frame once warm: receiving from 8 members (learning
/// their addresses), unicast to each, broadcast copies to all.
#[test]
fn fanin_allocates_nothing_per_frame() {
    use bypass::pmd::fanin::FanIn;
    let mut cfg = PoolConfig::new("pmd-fanin-alloc", 4096, 2048);
    cfg.hugepages = HugePages::Never;
    let pool = Pool::new(&cfg).unwrap();
    let (mut ours, mut peers) = (Vec::new(), Vec::new());
    for _ in 0..8 {
        let (a, b) = pair(&pool, 256, 1500).unwrap();
        ours.push(a);
        peers.push(b);
    }
    let mut fan = FanIn::new(ours).unwrap();
    let server = [2, 0xaa, 0, 0, 0, 1];
    let mac = |k: usize| [2, 0xbb, 0, 0, 0, k as u8];
    let frame = |pool: &Pool, dst: [u8; 6], src: [u8; 6]| {
        let mut f = pool.alloc().unwrap();
        f.extend_from_slice(&dst).unwrap();
        f.extend_from_slice(&src).unwrap();
        f.extend_from_slice(&[8, 0, 0, 0, 0, 0]).unwrap();
        f
    };
    let mut v: Vec<PktBuf> = Vec::with_capacity(256);
    let mut out: Vec<PktBuf> = Vec::with_capacity(256);
    let (mut sent, mut got) = (0usize, 0usize);
    let mut round = |fan: &mut FanIn<_>, peers: &mut Vec<_>| {
        for (k, p) in peers.iter_mut().enumerate() {
            v.push(frame(&pool, server, mac(k)));
            v.push(frame(&pool, server, mac(k)));
            Port::tx_burst(p, &mut v);
        }
        while fan.rx_burst(&mut out, 32) > 0 {
            got += out.len();
            out.clear();
        }
        for k in 0..8 {
            out.push(frame(&pool, mac(k), server));
        }
        out.push(frame(&pool, [0xff; 6], server));
        sent += fan.tx_burst(&mut out);
        out.clear();
        for p in peers.iter_mut() {
            while Port::rx_burst(p, &mut v, 64) > 0 {
                v.clear();
            }
        }
    };
    for _ in 0..8 {
        round(&mut fan, &mut peers);
    }
    let before = allocs();
    for _ in 0..200 {
        round(&mut fan, &mut peers);
    }
    let n = allocs() - before;
    assert_eq!(sent, 208 * 9, "every unicast and broadcast frame left");
    assert_eq!(got, 208 * 16, "every peer's frames arrived");
    assert_eq!(fan.fanin_stats().tx_unknown, 0);
    assert_eq!(n, 0, "{n} allocations in 200 rounds of 25 frames");
}
