//! A whole endpoint fed arbitrary datagrams: raw bytes, and well-formed packets of every
//! type (BATCH included) with arbitrary field values aimed at a live connection (right ids
//! and address), so they get past demultiplexing into connection logic (placement, acks,
//! close, reset, nack);
//! interleaved with time steps, application sends and reads. No panic; memory stays bounded
//! (connections, reassembly bytes, pool slots).
//!
//! Input: ops, each an op byte (low 3 bits: what; high 5 bits: how many 8-byte words of
//! fields follow, up to 31) then its fields. (The length counted bytes up to 31 before:
//! too short for a DATA packet with a payload, or for any packet number but 0 after a
//! packet type's fields, so no input could deliver a second message.)
//!
//! The body of fuzz target `endpoint`, shared by the target (fuzz/fuzz_targets/endpoint.rs) and by
//! the stable replay of the committed seeds (tests/fuzz_seeds.rs).
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::OnceLock;

use bypass::mem::{HugePages, Pool, PoolConfig};
use bypass::proto::{ConnectionConfig, Endpoint, EndpointConfig, Instant, State};
use bypass::wire::transport::{AckRepr, Kind, Repr};

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

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u64(&mut self) -> u64 {
        let n = self.0.len().min(8);
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        u64::from_le_bytes(b)
    }
    /// Small values most of the time, anything sometimes.
    fn num(&mut self) -> u64 {
        let v = self.u64();
        match v & 3 {
            0 => v,
            _ => (v >> 2) % 5000,
        }
    }
}

/// How deep one input got (the seed replay checks its seeds reach where they aim).
#[derive(Debug, Default)]
pub struct Reached {
    /// The connection was established at some point.
    pub established: bool,
    /// Messages received from the peer.
    pub received: usize,
}

/// One input: no panic, the invariants above hold.
pub fn run(data: &[u8]) -> Reached {
    let mut reached = Reached::default();
    let pool = pool();
    let peer = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7000));
    let cfg = EndpointConfig {
        max_connections: 4,
        rx_budget: 1 << 20,
        conn: ConnectionConfig {
            max_rx_buffer: 1 << 19,
            max_message: 1 << 20,
            rx_window: 1 << 16,
            // Zero-copy receive for half the inputs (their parity picks).
            rx_segments: data.len() % 2 == 1,
            ..ConnectionConfig::default()
        },
        ..EndpointConfig::default()
    };
    let mut ep = Endpoint::new(cfg, 7);
    let mut now = Instant::from_nanos(1_000_000_000);
    let h = ep.connect(now, peer).unwrap();
    let cid = ep.connection(h).unwrap().local_cid();
    let scid = 0xabcdu64;
    let mut held = Vec::new();
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        let n = (8 * (op as usize >> 3)).min(tail.len());
        let (chunk, tail) = tail.split_at(n);
        rest = tail;
        let mut f = Bytes(chunk);
        match op & 7 {
            0 => now += std::time::Duration::from_micros(f.u64() % 100_000),
            1 => {
                if let Some(c) = ep.connection(h) {
                    let len = (f.u64() % 20_000) as usize;
                    let _ = c.send(bytes::Bytes::from(vec![op; len]));
                }
            }
            2 => {
                // Raw bytes.
                let Ok(mut b) = pool.alloc() else { break };
                let _ = b.extend_from_slice(chunk);
                ep.handle(now, peer, op & 0x80 != 0, b);
            }
            _ => {
                let kind = match f.u64() % 9 {
                    0 => Kind::Data {
                        msg_id: f.num(),
                        msg_len: f.num(),
                        offset: f.num(),
                    },
                    1 => Kind::Ack(AckRepr {
                        cumulative: f.num(),
                        sack_base: 0,
                        sack_bits: f.u64(),
                        echo_timestamp: f.u64(),
                        hold_ns: f.u64() as u32,
                        ecn_ce: f.u64() as u32,
                        credit: f.u64(),
                    }),
                    2 => Kind::Nack {
                        first: f.num(),
                        count: f.u64() as u32,
                    },
                    3 => Kind::Connect {
                        credit: f.u64(),
                        max_datagram: f.u64() as u32,
                    },
                    4 => Kind::Accept {
                        credit: f.u64(),
                        max_datagram: f.u64() as u32,
                    },
                    5 => Kind::Close {
                        code: f.u64() as u32,
                    },
                    6 => Kind::Reset {
                        code: f.u64() as u32,
                    },
                    7 => Kind::Batch {
                        msg_id: f.num(),
                        count: (f.u64() % 24) as u16 + 1,
                    },
                    _ => Kind::Probe,
                };
                let kind = match kind {
                    Kind::Ack(a) => Kind::Ack(AckRepr {
                        sack_base: a.cumulative.saturating_add(f.u64() % 100),
                        ..a
                    }),
                    k => k,
                };
                let r = Repr {
                    flags: f.u64() as u16,
                    dst_cid: cid,
                    src_cid: scid,
                    pn: f.num(),
                    tx_timestamp: f.u64(),
                    kind,
                };
                let Ok(mut b) = pool.alloc() else { break };
                // DATA: payload bytes so that offset + len <= msg_len (else it is malformed).
                if let Kind::Data {
                    msg_len, offset, ..
                } = kind
                {
                    let room = msg_len.saturating_sub(offset).min(1400) as usize;
                    let _ = b.extend_from_slice(&f.0[..f.0.len().min(room)]);
                }
                // BATCH: a length table (lengths from the input, mostly consistent) and the
                // messages, so that most of them parse and reach the connection.
                if let Kind::Batch { count, .. } = kind {
                    let lens: Vec<u16> = (0..count).map(|_| (f.u64() % 200) as u16).collect();
                    for l in &lens {
                        let _ = b.extend_from_slice(&l.to_le_bytes());
                    }
                    let sum: usize = lens.iter().map(|&l| usize::from(l)).sum();
                    let sum = sum.saturating_sub(usize::from(op & 0x40 != 0)); // off by one sometimes
                    let _ = b.extend_from_slice(&vec![op; sum.min(1400)]);
                }
                if r.prepend_to(&mut b).is_ok() {
                    ep.handle(now, peer, op & 0x80 != 0, b);
                }
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
                reached.established |= c.state() != State::Handshake;
                while let Some(m) = c.poll_recv() {
                    reached.received += 1;
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
    reached
}
