//! ACK/SACK processing: an established client connection with data in flight is fed
//! arbitrary ACKs (right connection ids, arbitrary cumulative/bitmap/credit/timestamps),
//! interleaved with time steps and transmits. No panic; in-flight accounting stays sane.
//!
//! The body of fuzz target `ack`, shared by the target (fuzz/fuzz_targets/ack.rs) and by
//! the stable replay of the committed seeds (tests/fuzz_seeds.rs).
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::OnceLock;

use bypass::mem::{HugePages, Pool, PoolConfig};
use bypass::proto::{Endpoint, EndpointConfig, Instant};
use bypass::wire::transport::{AckRepr, Kind, Repr};

fn pool() -> &'static Pool {
    static P: OnceLock<Pool> = OnceLock::new();
    P.get_or_init(|| {
        Pool::new(&PoolConfig {
            hugepages: HugePages::Never,
            cache_size: 0,
            ..PoolConfig::new("fuzz-ack", 256, 2048)
        })
        .unwrap()
    })
}

fn u64_at(d: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    for (k, x) in b.iter_mut().enumerate() {
        *x = d.get(i + k).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

/// One input: no panic, the invariants above hold.
pub fn run(data: &[u8]) {
    let pool = pool();
    let server = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7000));
    let mut ep = Endpoint::new(EndpointConfig::default(), 1);
    let mut now = Instant::from_nanos(1_000_000);
    let h = ep.connect(now, server).unwrap();
    let mut b = pool.alloc().unwrap();
    let _ = ep.poll_transmit(now, &mut b);
    drop(b);
    let cid = ep.connection(h).unwrap().local_cid();
    let scid = 0x5eed_u64;
    let accept = Repr {
        flags: 0,
        dst_cid: cid,
        src_cid: scid,
        pn: 0,
        tx_timestamp: 1,
        kind: Kind::Accept {
            credit: 1 << 30,
            max_datagram: 1472,
        },
    };
    let mut b = pool.alloc().unwrap();
    accept.prepend_to(&mut b).unwrap();
    ep.handle(now, server, false, b);
    for i in 0..40 {
        let _ = ep
            .connection(h)
            .unwrap()
            .send(bytes::Bytes::from(vec![i as u8; 100 + 700 * (i % 5)]));
    }
    for chunk in data.chunks(40) {
        match chunk.first().copied().unwrap_or(0) % 4 {
            0 => now += std::time::Duration::from_nanos(u64_at(chunk, 1) % 10_000_000),
            1 => ep.handle_timeout(now),
            _ => {
                let a = AckRepr {
                    cumulative: u64_at(chunk, 1) % 128,
                    sack_base: 0,
                    sack_bits: u64_at(chunk, 9),
                    echo_timestamp: u64_at(chunk, 17) % (now.as_nanos() + 2),
                    hold_ns: u64_at(chunk, 25) as u32,
                    ecn_ce: chunk.get(29).copied().unwrap_or(0) as u32,
                    credit: u64_at(chunk, 30),
                };
                let a = AckRepr {
                    sack_base: a.cumulative.saturating_add(u64_at(chunk, 33) % 80),
                    ..a
                };
                let r = Repr {
                    flags: 0,
                    dst_cid: cid,
                    src_cid: scid,
                    pn: 0,
                    tx_timestamp: 5,
                    kind: Kind::Ack(a),
                };
                let mut b = pool.alloc().unwrap();
                r.prepend_to(&mut b).unwrap();
                ep.handle(now, server, false, b);
            }
        }
        // Drain transmits (bounded: the window and PN_WINDOW bound them).
        for _ in 0..200 {
            let mut b = pool.alloc().unwrap();
            if ep.poll_transmit(now, &mut b).is_none() {
                break;
            }
        }
        if let Some(c) = ep.connection(h) {
            while c.poll_event().is_some() {}
            assert!(c.bytes_in_flight() <= 1 << 24);
        }
    }
    drop(ep);
    assert_eq!(pool.stats().in_use, 0);
}
