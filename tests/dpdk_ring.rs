//! pmd::dpdk over net_ring (a loopback: what queue q sends comes back on queue q): frames
//! sent come back intact and in order, foreign buffers are copied once, and every pool slot
//! returns. One EAL per process, so this binary holds one test.
#![cfg(feature = "dpdk")]

use bypass::mem::{HugePages, Pool, PoolConfig};
use bypass::pmd::dpdk::{Device, DeviceConfig, DpdkPool, Eal, EalConfig, EalError};
use bypass::pmd::{Port, MAX_BURST};

fn frame(q: u16, seq: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental ethertype
    f[14..16].copy_from_slice(&q.to_be_bytes());
    f[16..20].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in f[20..].iter_mut().enumerate() {
        *b = (seq as usize + i) as u8;
    }
    f
}

#[test]
fn net_ring_frames_come_back_and_slots_return() {
    let mut cfg = EalConfig::new();
    cfg.file_prefix = Some(format!("bypass-ring-{}", std::process::id()));
    let eal = Eal::init(&cfg).expect("EAL init");
    assert!(matches!(Eal::init(&cfg), Err(EalError::AlreadyInitialized)));
    println!("{}", Eal::version());

    let mut pc = PoolConfig::new("dpdk-ring", 2048, 2048 + 128);
    pc.hugepages = HugePages::Never;
    let pool = Pool::new(&pc).unwrap();
    let dpool = DpdkPool::new(&eal, &pool).expect("lend pool to DPDK");

    let name = Device::probe(&eal, "net_ring0").expect("probe net_ring0");
    let dcfg = DeviceConfig {
        queues: 2,
        ..DeviceConfig::default()
    };
    let (dev, mut ports) = Device::open(&eal, &name, &dpool, &dcfg).expect("open net_ring0");
    println!(
        "device {} driver {} queues {} rss {}",
        dev.name(),
        dev.driver(),
        dev.queues(),
        dev.rss()
    );
    assert_eq!(ports.len(), 2);
    assert!(dev.link().is_up(), "net_ring reports link up");
    // DPDK's mempool sees the bypass pool's free list.
    let info = ports[0].info();
    assert_eq!(info.queues, 2);
    assert_eq!(info.queue, 0);
    assert_eq!(ports[1].info().queue, 1);

    let foreign_pool = Pool::new(&{
        let mut c = PoolConfig::new("foreign", 64, 2048);
        c.hugepages = HugePages::Never;
        c
    })
    .unwrap();

    const N: u32 = 600;
    let mut total_tx = 0u64;
    for (qi, port) in ports.iter_mut().enumerate() {
        let q = qi as u16;
        let mut sent_frames = Vec::new();
        let mut seq = 0u32;
        let mut txq: Vec<bypass::mem::PktBuf> = Vec::with_capacity(MAX_BURST);
        let mut rxq = Vec::with_capacity(MAX_BURST);
        let mut got = Vec::new();
        while seq < N || !txq.is_empty() || got.len() < N as usize {
            while seq < N && txq.len() < 64 {
                let len = 60 + (seq as usize * 7) % 1400;
                let f = frame(q, seq, len);
                // Every tenth frame comes from another pool: the port copies it.
                let mut b = if seq % 10 == 9 {
                    foreign_pool.alloc().unwrap()
                } else {
                    port.alloc_tx().unwrap()
                };
                b.extend_from_slice(&f).unwrap();
                txq.push(b);
                sent_frames.push(f);
                seq += 1;
            }
            let before = txq.len();
            let s = port.tx_burst(&mut txq);
            assert_eq!(
                txq.len(),
                before - s,
                "tx_burst removes exactly what it sent"
            );
            total_tx += s as u64;
            rxq.clear();
            port.rx_burst(&mut rxq, MAX_BURST);
            for b in rxq.drain(..) {
                assert_eq!(b.meta.queue, q);
                got.push(b.to_vec());
            }
        }
        assert_eq!(got.len(), sent_frames.len());
        for (i, (g, s)) in got.iter().zip(&sent_frames).enumerate() {
            assert_eq!(g, s, "queue {q} frame {i} differs");
        }
        let st = port.stats();
        println!("queue {q}: {st:?} copies {}", port.copies());
        assert_eq!(st.tx_packets, N as u64);
        assert_eq!(st.rx_packets, N as u64);
        assert_eq!(port.copies(), (N / 10) as u64, "one copy per foreign frame");
    }

    // Nothing is held: every slot came back from DPDK and from the frames we dropped.
    assert_eq!(pool.stats().in_use, 0, "{:?}", pool.stats());
    assert_eq!(pool.free_slots(), pool.capacity() as usize);
    assert_eq!(foreign_pool.stats().in_use, 0);

    let ds = dev.stats().unwrap();
    println!("device stats {ds:?}");
    assert_eq!(ds.opackets, total_tx);
    assert_eq!(ds.ipackets, total_tx);
    let xs = dev.xstats().unwrap();
    assert!(
        xs.iter()
            .any(|(n, v)| n == "rx_good_packets" && *v == total_tx),
        "xstats {xs:?}"
    );

    // Exhaustion is backpressure, not a crash: hold every slot, DPDK's allocation fails.
    let mut held = Vec::new();
    while let Ok(b) = ports[0].alloc_tx() {
        held.push(b);
    }
    assert_eq!(held.len(), pool.capacity() as usize);
    drop(held);
    assert_eq!(pool.stats().in_use, 0);

    drop(ports);
    drop(dev);
    drop(dpool);
    assert_eq!(pool.stats().in_use, 0);
    println!("pool after close: {:?}", pool.stats());
}
