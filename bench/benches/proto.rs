//! Transport micro-benchmarks: header parse/emit, and the per-message protocol cost of the
//! data path (no link, no framing: datagrams are handed from one endpoint to the other), with
//! small queued messages packed into BATCH packets (the default) and, for comparison, one
//! message per packet (`_single` rows: `ConnectionConfig::batch` off).
//!
//! `cargo bench -p bypass-bench --bench proto`

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use bypass::mem::{CoreSlot, HugePages, PktBuf, Pool, PoolConfig};
use bypass::proto::cc::FixedWindowFactory;
use bypass::proto::{ConnectionConfig, ConnectionHandle, Endpoint, EndpointConfig, Instant};
use bypass::wire::transport::{AckRepr, Kind, Packet, Repr, DATA_HEADER_LEN};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn data_repr() -> Repr {
    Repr {
        flags: 0,
        dst_cid: 0x1111_2222_3333_4444,
        src_cid: 0x5555_6666_7777_8888,
        pn: 12345,
        tx_timestamp: 987_654_321,
        kind: Kind::Data {
            msg_id: 77,
            msg_len: 1 << 20,
            offset: 4096,
        },
    }
}

fn headers(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(1));
    let mut buf = vec![0u8; DATA_HEADER_LEN + 1024];
    data_repr().emit(&mut Packet::new_unchecked(&mut buf[..]));
    g.bench_function("data_header_parse", |b| {
        b.iter(|| {
            let p = Packet::new_checked(black_box(&buf[..])).unwrap();
            black_box(Repr::parse(&p).unwrap())
        })
    });
    let mut out = [0u8; DATA_HEADER_LEN];
    g.bench_function("data_header_emit", |b| {
        b.iter(|| {
            black_box(data_repr()).emit(&mut Packet::new_unchecked(&mut out[..]));
            black_box(&out);
        })
    });
    let ack = Repr {
        kind: Kind::Ack(AckRepr {
            cumulative: 100,
            sack_base: 100,
            sack_bits: 0xffff_0000,
            echo_timestamp: 5,
            hold_ns: 10,
            ecn_ce: 0,
            credit: 1 << 30,
        }),
        ..data_repr()
    };
    let mut abuf = vec![0u8; ack.buffer_len()];
    ack.emit(&mut Packet::new_unchecked(&mut abuf[..]));
    g.bench_function("ack_header_parse", |b| {
        b.iter(|| {
            let p = Packet::new_checked(black_box(&abuf[..])).unwrap();
            black_box(Repr::parse(&p).unwrap())
        })
    });
    g.finish();
}

struct Loop {
    pool: Pool,
    client: Endpoint,
    server: Endpoint,
    ch: ConnectionHandle,
    sh: ConnectionHandle,
    caddr: SocketAddr,
    saddr: SocketAddr,
    now: Instant,
    scratch: Vec<PktBuf>,
    _core: Option<CoreSlot>,
}

impl Loop {
    fn new(batch: bool) -> Loop {
        let pool = Pool::new(&PoolConfig {
            hugepages: HugePages::Prefer,
            ..PoolConfig::new("bench-proto", 16384, 2048)
        })
        .unwrap();
        let cfg = EndpointConfig {
            cc: std::sync::Arc::new(FixedWindowFactory { packets: 1024 }),
            conn: ConnectionConfig {
                batch,
                ..ConnectionConfig::default()
            },
            ..EndpointConfig::default()
        };
        let caddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 1));
        let saddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 2));
        let mut client = Endpoint::new(cfg.clone(), 1);
        let server = Endpoint::new(cfg, 2);
        let now = Instant::from_nanos(1_000_000);
        let ch = client.connect(now, saddr).unwrap();
        let mut l = Loop {
            pool,
            client,
            server,
            ch,
            sh: ConnectionHandle(0),
            caddr,
            saddr,
            now,
            scratch: Vec::with_capacity(4096),
            // A poll-loop thread claims a core slot: pool alloc/free use its cache.
            _core: CoreSlot::claim_any().ok(),
        };
        for _ in 0..10 {
            l.pump();
        }
        l.sh = l.server.poll_incoming().expect("server connection");
        l
    }

    /// Move everything each side has to send to the other side, once. Returns the messages
    /// the server received.
    fn pump(&mut self) -> usize {
        let mut n = 0;
        loop {
            let mut b = self.pool.alloc().unwrap();
            if self.client.poll_transmit(self.now, &mut b).is_none() {
                break;
            }
            self.scratch.push(b);
        }
        for b in self.scratch.drain(..) {
            self.server.handle(self.now, self.caddr, false, b);
        }
        if let Some(c) = self.server.connection(self.sh) {
            while let Some(m) = c.poll_recv() {
                black_box(&m);
                n += 1;
            }
        }
        loop {
            let mut b = self.pool.alloc().unwrap();
            if self.server.poll_transmit(self.now, &mut b).is_none() {
                break;
            }
            self.scratch.push(b);
        }
        for b in self.scratch.drain(..) {
            self.client.handle(self.now, self.saddr, false, b);
        }
        if let Some(c) = self.client.connection(self.ch) {
            while c.poll_event().is_some() {}
        }
        self.now += std::time::Duration::from_nanos(100);
        n
    }
}

fn data_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("proto");
    for (size, batch) in [(64usize, true), (64, false), (1024, true)] {
        let payload = bytes::Bytes::from(vec![7u8; size]);
        let mut l = Loop::new(batch);
        const BATCH: u64 = 64;
        g.throughput(Throughput::Elements(BATCH));
        let single = if batch { "" } else { "_single" };
        // Send + receive + deliver + ack generation + ack processing, per message.
        g.bench_function(format!("data_packet_roundtrip_{size}B{single}"), |b| {
            b.iter(|| {
                let c = l.client.connection(l.ch).unwrap();
                for _ in 0..BATCH {
                    c.send(payload.clone()).unwrap();
                }
                let mut moved = 0;
                while moved < BATCH as usize {
                    moved += l.pump();
                }
                // One more round lets the last acks land.
                l.pump();
            })
        });
    }
    // Sender side only: send + transmit + process a synthetic ACK covering the batch.
    // A static payload: cloning it touches no reference count, so this is the protocol's
    // own cost (plus pool alloc/free).
    static PAYLOAD: [u8; 64] = [7u8; 64];
    const BATCH: u64 = 64;
    g.throughput(Throughput::Elements(BATCH));
    let sender_round = |batch: bool| {
        let payload = bytes::Bytes::from_static(&PAYLOAD);
        let mut l = Loop::new(batch);
        let (cid, scid) = {
            let c = l.client.connection(l.ch).unwrap();
            (c.local_cid(), c.remote_cid())
        };
        // The client's confirm took packet number 0; data starts at 1.
        let mut pn = 1u64;
        move || {
            let now = l.now;
            let c = l.client.connection(l.ch).unwrap();
            for _ in 0..BATCH {
                c.send(payload.clone()).unwrap();
            }
            loop {
                let mut b = l.pool.alloc().unwrap();
                if black_box(l.client.poll_transmit(now, &mut b)).is_none() {
                    break;
                }
                if let Ok(r) = Packet::new_checked(b.data()).and_then(|p| Repr::parse(&p)) {
                    if matches!(r.kind, Kind::Data { .. } | Kind::Batch { .. }) {
                        pn = r.pn + 1;
                    }
                }
            }
            let ack = Repr {
                flags: 0,
                dst_cid: cid,
                src_cid: scid,
                pn: 0,
                tx_timestamp: 0,
                kind: Kind::Ack(AckRepr {
                    cumulative: pn,
                    sack_base: pn,
                    sack_bits: 0,
                    echo_timestamp: now.as_nanos(),
                    hold_ns: 0,
                    ecn_ce: 0,
                    credit: u64::MAX / 2,
                }),
            };
            let mut b = l.pool.alloc().unwrap();
            ack.prepend_to(&mut b).unwrap();
            l.now += std::time::Duration::from_nanos(1000);
            l.client.handle(l.now, l.saddr, false, b);
            let c = l.client.connection(l.ch).unwrap();
            let mut acked = 0;
            while let Some(e) = c.poll_event() {
                acked += u64::from(matches!(e, bypass::proto::Event::Acked { .. }));
            }
            assert_eq!((c.bytes_in_flight(), acked), (0, BATCH));
        }
    };
    let mut round = sender_round(true);
    let mut round_single = sender_round(false);
    g.bench_function("sender_send_and_ack_64B", |b| b.iter(&mut round));
    g.bench_function("sender_send_and_ack_64B_single", |b| {
        b.iter(&mut round_single)
    });
    g.finish();
    // The same, timed by this thread's on-CPU time (CLOCK_THREAD_CPUTIME_ID) instead of
    // wall time, so a shared machine descheduling the thread does not count.
    let mut g = c.benchmark_group("proto_cputime");
    g.throughput(Throughput::Elements(BATCH));
    for (name, r) in [("", &mut round), ("_single", &mut round_single)] {
        g.bench_function(format!("sender_send_and_ack_64B{name}"), |b| {
            b.iter_custom(|iters| {
                let t0 = cpu_ns();
                for _ in 0..iters {
                    r();
                }
                std::time::Duration::from_nanos(cpu_ns() - t0)
            })
        });
    }
    for batch in [true, false] {
        let mut l = Loop::new(batch);
        let payload = bytes::Bytes::from_static(&PAYLOAD);
        let single = if batch { "" } else { "_single" };
        g.bench_function(format!("data_packet_roundtrip_64B{single}"), |b| {
            b.iter_custom(|iters| {
                let t0 = cpu_ns();
                for _ in 0..iters {
                    let c = l.client.connection(l.ch).unwrap();
                    for _ in 0..BATCH {
                        c.send(payload.clone()).unwrap();
                    }
                    let mut moved = 0;
                    while moved < BATCH as usize {
                        moved += l.pump();
                    }
                    l.pump();
                }
                std::time::Duration::from_nanos(cpu_ns() - t0)
            })
        });
    }
    g.finish();
}

/// ns this thread has spent on a CPU (CLOCK_THREAD_CPUTIME_ID).
fn cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid, writable timespec; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One idle poll of an endpoint (what a runtime does every loop iteration when nothing
/// arrived): `poll_timeout` + `poll_transmit` with nothing to send, with N established idle
/// connections. The endpoint visits only connections something happened to, so this
/// should not grow with N (bench/results/, "Endpoint idle poll against the number of
/// connections", has both the O(N) scan and the scheduler).
fn idle_poll(c: &mut Criterion) {
    use bypass::pmd::sim::LinkConfig;
    use bypass::proto::testing::{Pair, SERVER_ADDR};
    let mut g = c.benchmark_group("endpoint_idle_poll");
    for n in [1usize, 100, 1000, 4000] {
        let cfg = || EndpointConfig {
            max_connections: 4096,
            stateless_queue: n,
            ..EndpointConfig::default()
        };
        let mut p = Pair::new(cfg(), cfg(), LinkConfig::default(), 7);
        for _ in 0..n {
            p.client
                .connect(p.now, SocketAddr::V4(SERVER_ADDR))
                .expect("connect");
        }
        let mut accepted = 0;
        while accepted < n {
            assert!(
                p.step(),
                "pair stalled before every connection was accepted"
            );
            while p.server.poll_incoming().is_some() {
                accepted += 1;
            }
        }
        // Let the handshakes' last ACKs settle, then poll at a time nothing is due.
        for _ in 0..1000 {
            p.step();
        }
        let now = p.now;
        let pool = p.client_pool.clone();
        let mut buf = pool.alloc().expect("buffer");
        buf.reset();
        g.bench_function(format!("{n}_connections"), |b| {
            b.iter(|| {
                let t = p.client.poll_timeout();
                let sent = p.client.poll_transmit(now, &mut buf);
                black_box((t, sent))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, headers, data_path, idle_poll);
criterion_main!(benches);
