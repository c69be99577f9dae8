//! A whole endpoint (server role, plus one client connection it opened) fed arbitrary
//! datagrams, some patched to carry its real connection ids so they reach connection logic,
//! interleaved with time steps and application sends. No panic; memory stays bounded
//! (connections, reassembly bytes, pool slots).
#![no_main]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::OnceLock;

use bypass::mem::{HugePages, Pool, PoolConfig};
use bypass::proto::{ConnectionConfig, Endpoint, EndpointConfig, Instant};
use libfuzzer_sys::fuzz_target;

const SLOTS: u32 = 512;

fn pool() -> &'static Pool {
    static P: OnceLock<Pool> = OnceLock::new();
    P.get_or_init(|| {
        Pool::new(&PoolConfig {
            hugepages: HugePages::Never,
            cache_size: 0,
            ..PoolConfig::new("fuzz-endpoint", SLOTS, 2048)
        })
        .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let pool = pool();
    let peer = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7000));
    let cfg = EndpointConfig {
        max_connections: 4,
        rx_budget: 1 << 20,
        conn: ConnectionConfig { max_rx_buffer: 1 << 19, rx_window: 1 << 16, ..ConnectionConfig::default() },
        ..EndpointConfig::default()
    };
    let mut ep = Endpoint::new(cfg, 7);
    let mut now = Instant::from_nanos(1_000_000_000);
    let h = ep.connect(now, peer).unwrap();
    let cid = ep.connection(h).unwrap().local_cid();
    let mut held = Vec::new();
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        let n = (op as usize >> 2).min(tail.len());
        let (chunk, tail) = tail.split_at(n);
        rest = tail;
        match op & 3 {
            0 => now += std::time::Duration::from_micros(chunk.first().copied().unwrap_or(1) as u64 * 97),
            1 => {
                if let Some(c) = ep.connection(h) {
                    let _ = c.send(bytes::Bytes::copy_from_slice(chunk));
                }
            }
            _ => {
                let Ok(mut b) = pool.alloc() else { break };
                let _ = b.extend_from_slice(chunk);
                // op & 1: aim it at our connection (dst cid) and the real peer address.
                if op & 1 == 1 && b.len() >= 12 {
                    b.data_mut()[4..12].copy_from_slice(&cid.to_le_bytes());
                }
                ep.handle(now, peer, op & 0x80 != 0, b);
            }
        }
        ep.handle_timeout(now);
        for _ in 0..64 {
            let Ok(mut b) = pool.alloc() else { break };
            if ep.poll_transmit(now, &mut b).is_none() {
                break;
            }
        }
        for hh in ep.handles().collect::<Vec<_>>() {
            if let Some(c) = ep.connection(hh) {
                while c.poll_event().is_some() {}
                while let Some(m) = c.poll_recv() {
                    if held.len() < 8 {
                        held.push(m);
                    }
                }
            }
        }
        assert!(ep.connection_count() <= 4);
        assert!(ep.rx_buffered() <= 1 << 20);
    }
    drop(held);
    drop(ep);
    assert_eq!(pool.stats().in_use, 0);
});
