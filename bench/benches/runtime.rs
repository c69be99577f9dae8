//! runtime micro-benchmarks: the timer wheel against a `BTreeMap` and a `BinaryHeap` run the
//! same workload, the net layer's UDP receive and transmit paths, and the hand-off queue
//! between cores against std's bounded channel (`sync_channel`) doing the same.
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};

use bypass::mem::{CoreSlot, HugePages, PktBuf, Pool, PoolConfig};
use bypass::pmd::pair::pair;
use bypass::pmd::Port;
use bypass::rng::SplitMix64;
use bypass::runtime::clock::SystemClock;
use bypass::runtime::net::{Net, NetConfig};
use bypass::runtime::timer::TimerWheel;
use bypass::runtime::{Io, Runtime, RuntimeConfig, UdpHandler};
use bypass::time::Instant;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const LIVE: u64 = 10_000;

fn timers(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer");
    g.throughput(Throughput::Elements(1));

    // insert + cancel with 10 000 other timers live (RTO timers re-armed on every ack).
    g.bench_function("wheel_insert_cancel", |b| {
        let mut w: TimerWheel<u64> = TimerWheel::new(LIVE as usize + 16, 10, Instant::ZERO);
        let mut r = SplitMix64::new(7);
        for i in 0..LIVE {
            w.insert(Instant::from_nanos(r.next_u64() % 100_000_000), i)
                .unwrap();
        }
        b.iter(|| {
            let h = w
                .insert(Instant::from_nanos(black_box(r.next_u64() % 10_000_000)), 1)
                .unwrap();
            black_box(w.cancel(h));
        })
    });
    g.bench_function("btreemap_insert_remove", |b| {
        let mut m: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        let mut r = SplitMix64::new(7);
        for i in 0..LIVE {
            m.insert((r.next_u64() % 100_000_000, i), i);
        }
        let mut id = LIVE;
        b.iter(|| {
            id += 1;
            let k = (black_box(r.next_u64() % 10_000_000), id);
            m.insert(k, 1);
            black_box(m.remove(&k));
        })
    });

    // insert + expire, steady state: each iteration arms one timer 0..1 ms out and moves time
    // on by 100 ns, expiring what is due (about 5 000 timers live).
    g.bench_function("wheel_insert_expire", |b| {
        let mut w: TimerWheel<u64> = TimerWheel::new(16_384, 10, Instant::ZERO);
        let mut out = Vec::with_capacity(1024);
        let mut r = SplitMix64::new(11);
        let mut now = 0u64;
        b.iter(|| {
            now += 100;
            let at = Instant::from_nanos(now);
            w.insert(at.add_nanos(r.next_u64() % 1_000_000), now)
                .unwrap();
            out.clear();
            black_box(w.advance(at, &mut out));
        })
    });
    g.bench_function("binaryheap_push_pop_expire", |b| {
        let mut h: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::with_capacity(16_384);
        let mut r = SplitMix64::new(11);
        let mut now = 0u64;
        b.iter(|| {
            now += 100;
            h.push(Reverse((now + r.next_u64() % 1_000_000, now)));
            while let Some(Reverse((d, _))) = h.peek() {
                if *d > now {
                    break;
                }
                black_box(h.pop());
            }
        })
    });
    g.finish();
}

const US: [u8; 6] = [2, 0, 0, 0, 0, 1];
const PEER: [u8; 6] = [2, 0, 0, 0, 0, 2];
const IP_US: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const IP_PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn net(c: &mut Criterion) {
    let pool = Pool::new(&PoolConfig {
        hugepages: HugePages::Prefer,
        ..PoolConfig::new("bench-runtime", 4096, 2048)
    })
    .expect("pool");
    let _core = CoreSlot::claim_any().unwrap();
    let mut g = c.benchmark_group("net");

    // The software checksum's share of a full-size datagram (smoltcp's RFC 1071 sum, which
    // the net layer uses; a 32-bit-word variant measured no faster here).
    let data: Vec<u8> = (0..1408u32).map(|i| (i * 7) as u8).collect();
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("checksum_1408B/smoltcp", |b| {
        b.iter(|| black_box(smoltcp::wire::checksum::data(black_box(&data))))
    });
    g.throughput(Throughput::Elements(1));

    for size in [64usize, 1400] {
        // Build the frame the way a peer would: with our own egress path.
        let frame = {
            let mut cfg = NetConfig::new(PEER, IP_PEER);
            cfg.static_arp.push((IP_US, US));
            let mut peer = Net::new(cfg);
            let mut b = pool.alloc().unwrap();
            b.append(size).unwrap().fill(0x5a);
            peer.send_udp(
                Instant::ZERO,
                5000,
                SocketAddrV4::new(IP_US, 7000),
                b,
                &mut || pool.alloc(),
            )
            .unwrap();
            peer.tx_queue().pop().unwrap().data().to_vec()
        };
        let mut rx = Net::new(NetConfig::new(US, IP_US));
        rx.bind(7000);
        // Baseline: what the port's receive costs here (a slot and a copy of the frame).
        g.bench_with_input(
            BenchmarkId::new("rx_baseline_alloc_copy", size),
            &frame,
            |b, f| {
                b.iter(|| {
                    let mut buf = pool.alloc().unwrap();
                    buf.extend_from_slice(f).unwrap();
                    black_box(buf);
                })
            },
        );
        // That plus parse, checksum verification (IPv4 + UDP in software), demux, delivery.
        g.bench_with_input(BenchmarkId::new("rx_udp_deliver", size), &frame, |b, f| {
            b.iter(|| {
                let mut buf = pool.alloc().unwrap();
                buf.extend_from_slice(f).unwrap();
                black_box(rx.handle_frame(Instant::ZERO, buf).unwrap());
            })
        });

        for offload in [false, true] {
            let mut cfg = NetConfig::new(US, IP_US);
            cfg.static_arp.push((IP_PEER, PEER));
            cfg.offloads.tx_checksum = offload;
            let mut tx = Net::new(cfg);
            let dst = SocketAddrV4::new(IP_PEER, 5000);
            let name = if offload {
                "tx_udp_build_offload"
            } else {
                "tx_udp_build_sw_checksum"
            };
            // alloc, payload length set (not written), headers + checksums, queue, drop.
            g.bench_with_input(BenchmarkId::new(name, size), &size, |b, &n| {
                b.iter(|| {
                    let mut buf = pool.alloc().unwrap();
                    buf.append(n).unwrap();
                    tx.send_udp(Instant::ZERO, 7000, dst, buf, &mut || pool.alloc())
                        .unwrap();
                    black_box(tx.tx_queue().pop());
                })
            });
        }
    }
    g.finish();
}

/// Counts datagrams; echoes them back in the same buffer when `echo`.
struct Echo {
    echo: bool,
    got: u64,
}

impl UdpHandler for Echo {
    fn on_datagram(&mut self, io: &mut Io<'_>, src: SocketAddrV4, port: u16, payload: PktBuf) {
        self.got += 1;
        if self.echo {
            let _ = io.send_udp(port, src, payload);
        }
    }
}

fn poll(c: &mut Criterion) {
    let pool = Pool::new(&PoolConfig {
        hugepages: HugePages::Prefer,
        ..PoolConfig::new("bench-poll", 4096, 2048)
    })
    .expect("pool");
    let clock = SystemClock::new();
    let mut g = c.benchmark_group("poll");

    // One iteration with nothing to do: clock read, empty rx burst (`pmd::pair`), timer check,
    // flush check.
    g.throughput(Throughput::Elements(1));
    {
        let (pa, _pb) = pair(&pool, 1024, 1500).unwrap();
        let mut a = Runtime::new(
            RuntimeConfig::new(NetConfig::new(pa.info().mac, IP_US)),
            pa,
            Echo {
                echo: false,
                got: 0,
            },
            clock,
        )
        .unwrap();
        g.bench_function("poll_once_idle", |b| b.iter(|| black_box(a.poll_once())));
    }

    // 32 datagrams of 64 B A -> B, echoed back in place by B (zero copy), received by A:
    // three loop iterations, each end's headers built and checksums computed in software,
    // over `pmd::pair` (lock-free rings, both loops on the bench thread).
    const BURST: u64 = 32;
    g.throughput(Throughput::Elements(BURST));
    {
        let (pa, pb) = pair(&pool, 1024, 1500).unwrap();
        let (mac_a, mac_b) = (pa.info().mac, pb.info().mac);
        let mut cfg_a = RuntimeConfig::new(NetConfig::new(mac_a, IP_US));
        cfg_a.net.static_arp.push((IP_PEER, mac_b));
        let mut cfg_b = RuntimeConfig::new(NetConfig::new(mac_b, IP_PEER));
        cfg_b.net.static_arp.push((IP_US, mac_a));
        let mut a = Runtime::new(
            cfg_a,
            pa,
            Echo {
                echo: false,
                got: 0,
            },
            clock,
        )
        .unwrap();
        let mut b = Runtime::new(cfg_b, pb, Echo { echo: true, got: 0 }, clock).unwrap();
        a.net_mut().bind(7000);
        b.net_mut().bind(5000);
        let dst = SocketAddrV4::new(IP_PEER, 5000);
        g.bench_function("udp_echo_64B_burst32_per_datagram", |bch| {
            bch.iter(|| {
                a.with_io(|_, io| {
                    for _ in 0..BURST {
                        let mut buf = io.alloc_tx().unwrap();
                        buf.append(64).unwrap();
                        io.send_udp(7000, dst, buf).unwrap();
                    }
                });
                a.poll_once();
                b.poll_once();
                a.poll_once();
            })
        });
        assert_eq!(a.handler().got, b.handler().got, "every datagram echoed");
    }
    g.finish();
}

/// One value through the queue: `try_send` then `try_recv` on one thread (the operations'
/// own cost, lines hot), and a stream of values from a producer thread to this one (each
/// value's share of the time, the index lines moving between cores), each against std's
/// bounded channel.
fn handoff(c: &mut Criterion) {
    use bypass::bytes::Bytes;
    use bypass::runtime::handoff::channel;
    use std::sync::mpsc::sync_channel;
    use std::time::Instant as StdInstant;

    let mut g = c.benchmark_group("handoff");
    g.throughput(Throughput::Elements(1));
    let v = Bytes::from_static(b"a request for another core");
    g.bench_function("spsc_send_recv_one_thread", |b| {
        let (mut tx, mut rx) = channel::<Bytes>(1024);
        b.iter(|| {
            let _ = tx.try_send(black_box(v.clone()));
            black_box(rx.try_recv())
        })
    });
    g.bench_function("std_sync_channel_send_recv_one_thread", |b| {
        let (tx, rx) = sync_channel::<Bytes>(1024);
        b.iter(|| {
            let _ = tx.try_send(black_box(v.clone()));
            black_box(rx.try_recv().ok())
        })
    });
    // Two threads: iters values streamed, the receiver spinning on try_recv.
    g.bench_function("spsc_stream_two_threads", |b| {
        b.iter_custom(|iters| {
            let (mut tx, mut rx) = channel::<u64>(1024);
            let t0 = StdInstant::now();
            let p = std::thread::spawn(move || {
                for i in 0..iters {
                    let mut x = i;
                    while let Err(back) = tx.try_send(x) {
                        x = back.0;
                        std::hint::spin_loop();
                    }
                }
            });
            let mut n = 0;
            while n < iters {
                if rx.try_recv().is_some() {
                    n += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
            let took = t0.elapsed();
            p.join().unwrap();
            took
        })
    });
    g.bench_function("std_sync_channel_stream_two_threads", |b| {
        b.iter_custom(|iters| {
            let (tx, rx) = sync_channel::<u64>(1024);
            let t0 = StdInstant::now();
            let p = std::thread::spawn(move || {
                for i in 0..iters {
                    let mut x = i;
                    while let Err(std::sync::mpsc::TrySendError::Full(back)) = tx.try_send(x) {
                        x = back;
                        std::hint::spin_loop();
                    }
                }
            });
            let mut n = 0;
            while n < iters {
                if rx.try_recv().is_ok() {
                    n += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
            let took = t0.elapsed();
            p.join().unwrap();
            took
        })
    });
    g.finish();
}

criterion_group!(benches, timers, net, poll, handoff);
criterion_main!(benches);
