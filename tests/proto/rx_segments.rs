//! Zero-copy receive (`ConnectionConfig::rx_segments`) in virtual time: multi-packet
//! messages arrive as their packet buffers (`MsgData::Segments`), byte-identical under loss,
//! reordering and duplication, in both delivery orders; every pool slot comes back once the
//! messages are dropped or the connection is reset mid-message; a peer sending overlapping
//! or out-of-range offsets cannot make us panic, deliver wrong bytes or keep slots.

use std::net::SocketAddr;
use std::time::Duration;

use bypass::mem::{PktBuf, Pool};
use bypass::pmd::sim::LinkConfig;
use bypass::proto::testing::{check_pattern, msg_tag, pattern, Pair, Peer, CLIENT_ADDR};
use bypass::proto::{ConnectionConfig, ConnectionHandle, EndpointConfig, Event, MsgData, RecvMsg};
use bypass::wire::transport::{Kind, Repr, FLAG_ACK_NOW};

fn cfg(ordered: bool, rx_window: u64) -> EndpointConfig {
    EndpointConfig {
        conn: ConnectionConfig {
            rx_segments: true,
            ordered,
            rx_window,
            ..ConnectionConfig::default()
        },
        ..EndpointConfig::default()
    }
}

fn lossy() -> LinkConfig {
    LinkConfig {
        loss: 0.02,
        duplicate: 0.02,
        reorder: 0.05,
        reorder_delay_ns: 30_000,
        jitter_ns: 3_000,
        ..LinkConfig::default()
    }
}

/// The message's bytes, joined (by a copy) if they came as segments.
fn joined(m: &RecvMsg) -> Vec<u8> {
    match &m.data {
        MsgData::Segments(s) => {
            let mut v = vec![0u8; s.len()];
            s.copy_to_slice(&mut v);
            // The other ways to read them agree.
            assert_eq!(v, s.to_vec());
            assert_eq!(&v[..], &s.to_bytes()[..]);
            let mut off = 0u64;
            for ((o, p), q) in s.iter_with_offsets().zip(s.iter()) {
                assert_eq!(o, off, "parts contiguous and in order");
                assert!(!p.is_empty());
                assert_eq!(&p[..], q);
                off += p.len() as u64;
            }
            assert_eq!(off, m.len);
            v
        }
        _ => m.as_slice().expect("host message").to_vec(),
    }
}

/// Slots held in both pools (a received frame is a slot of the sender's pool, which the
/// simulated link hands over; the link copies into the receiver's for duplicates).
fn slots(p: &Pair) -> u64 {
    p.client_pool.stats().in_use + p.server_pool.stats().in_use
}

/// Let acks and retransmissions settle (virtual time), draining both sides.
fn settle(p: &mut Pair, (ch, sh): (ConnectionHandle, ConnectionHandle), ms: u64) {
    let until = p.now.as_nanos() + ms * 1_000_000;
    while p.now.as_nanos() < until {
        if !p.step() {
            break;
        }
        p.drain(Peer::Client, ch, drop, drop);
        p.drain(Peer::Server, sh, drop, drop);
    }
}

/// Client sends `sizes`; the server receives with rx_segments and checks every message.
fn transfer(
    p: &mut Pair,
    hs: (ConnectionHandle, ConnectionHandle),
    sizes: &[usize],
    seed: u64,
    ordered: bool,
) {
    let (ch, sh) = hs;
    settle(p, hs, 5);
    let mp = p.server.connection(sh).unwrap().max_payload_len();
    let idle = slots(p);
    let mut next = 0;
    let mut got = vec![false; sizes.len()];
    let mut held = Vec::new();
    let (mut n, mut acked) = (0, 0);
    let mut order = Vec::new();
    for step in 0.. {
        assert!(step < 20_000_000, "no progress: got {n}/{}", sizes.len());
        let c = p.client.connection(ch).unwrap();
        while next < sizes.len() {
            let data = pattern(msg_tag(seed, 0, next as u64), sizes[next]);
            match c.send(data) {
                Ok(id) => {
                    assert_eq!(id, next as u64);
                    next += 1;
                }
                Err(_) => break,
            }
        }
        assert!(p.step(), "simulation idle");
        p.drain(
            Peer::Server,
            sh,
            |e| panic!("server event {e:?}"),
            |m| {
                let id = m.id as usize;
                assert!(!got[id], "message {id} twice");
                got[id] = true;
                order.push(m.id);
                let len = sizes[id];
                assert_eq!(m.len as usize, len);
                match &m.data {
                    MsgData::Packet(_) => assert!(len <= mp, "{len} B as one packet"),
                    MsgData::Segments(s) => {
                        assert!(len > mp, "{len} B as segments");
                        assert_eq!(s.len(), len);
                        assert!(s.parts() >= len.div_ceil(mp), "{} parts", s.parts());
                        assert!(m.as_slice().is_none());
                        assert!(m.segments().is_some());
                    }
                    other => panic!("{len} B message delivered as {other:?}"),
                }
                let bytes = joined(&m);
                assert!(
                    check_pattern(msg_tag(seed, 0, m.id), &bytes),
                    "message {id} ({len} B) corrupt"
                );
                n += 1;
                // Hold a few for a while: their slots stay out of the pool until dropped.
                if held.len() < 4 {
                    held.push(m);
                }
            },
        );
        p.drain(
            Peer::Client,
            ch,
            |e| match e {
                Event::Acked { .. } => acked += 1,
                e => panic!("client event {e:?}"),
            },
            drop,
        );
        if n == sizes.len() && acked == sizes.len() {
            break;
        }
    }
    if ordered {
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    }
    settle(p, hs, 20);
    assert!(slots(p) > idle || held.is_empty());
    drop(held);
    settle(p, hs, 20);
    assert_eq!(p.server.connection(sh).unwrap().rx_buffered(), 0);
    assert_eq!(
        slots(p),
        idle,
        "every receive slot back once the messages are dropped"
    );
}

const SIZES: &[usize] = &[
    0,
    1,
    100,
    1000,
    1400,
    1401,
    1500,
    3000,
    9000,
    65_536,
    100_003,
    1 << 20,
    (3 << 20) + 17,
    7,
    250_000,
];

fn lossy_run(ordered: bool, seed: u64) {
    let mut p = Pair::new(cfg(false, 8 << 20), cfg(ordered, 8 << 20), lossy(), seed);
    let hs = p.connect().expect("connect");
    transfer(&mut p, hs, SIZES, seed, ordered);
    let st = p.server.connection(hs.1).unwrap().stats();
    let mp = p.server.connection(hs.1).unwrap().max_payload_len();
    let multi = SIZES.iter().filter(|&&l| l > mp).count() as u64;
    println!(
        "seed {seed} ordered {ordered}: segment msgs {} copied {} dup {} refused {}; c2s {:?}",
        st.rx_segment_msgs,
        st.rx_segment_copied,
        st.rx_duplicates,
        st.rx_refused,
        p.c2s.stats()
    );
    assert_eq!(st.rx_segment_msgs, multi, "{st:?}");
    assert_eq!(st.rx_segment_copied, 0, "{st:?}");
    assert!(st.rx_duplicates > 0, "the link duplicated: {st:?}");
}

#[test]
fn lossy_reordering_duplicating_link_unordered() {
    for seed in [1, 2, 3, 0x5e9] {
        lossy_run(false, seed);
    }
}

#[test]
fn lossy_reordering_duplicating_link_ordered() {
    for seed in [4, 5, 0xbeef] {
        lossy_run(true, seed);
    }
}

/// A message longer than the receive window could never complete under a credit it holds:
/// it is copied (`Buffer`); shorter ones still come as segments.
#[test]
fn message_longer_than_the_window_is_copied() {
    let mut p = Pair::new(cfg(false, 1 << 20), cfg(false, 256 << 10), lossy(), 9);
    let hs = p.connect().expect("connect");
    let sizes = [200_000usize, 1 << 20, 3000];
    let mut kinds = Vec::new();
    let c = p.client.connection(hs.0).unwrap();
    for (k, &len) in sizes.iter().enumerate() {
        c.send(pattern(msg_tag(9, 0, k as u64), len)).unwrap();
    }
    for _ in 0..5_000_000 {
        p.step();
        p.drain(Peer::Server, hs.1, drop, |m| {
            assert!(check_pattern(msg_tag(9, 0, m.id), &joined(&m)));
            kinds.push((
                m.id,
                match m.data {
                    MsgData::Segments(_) => "segments",
                    MsgData::Buffer(_) => "buffer",
                    _ => "other",
                },
            ));
        });
        if kinds.len() == sizes.len() {
            break;
        }
    }
    kinds.sort();
    assert_eq!(kinds, [(0, "segments"), (1, "buffer"), (2, "segments")]);
}

/// The server resets (and, in a second run, the client resets) while segment messages are
/// partly received: the partial messages' buffers go back to the pool, the budget to zero.
#[test]
fn reset_mid_message_frees_every_slot() {
    for server_resets in [true, false] {
        // No loss: the one RESET must arrive (duplication and reordering stay).
        let link = LinkConfig {
            loss: 0.0,
            ..lossy()
        };
        let mut p = Pair::new(cfg(false, 8 << 20), cfg(false, 8 << 20), link, 21);
        let (ch, sh) = p.connect().expect("connect");
        let idle = slots(&p);
        let c = p.client.connection(ch).unwrap();
        for k in 0..3u64 {
            c.send(pattern(k, 2 << 20)).unwrap();
        }
        // Until the server holds a good part of the messages, none complete.
        let mut steps = 0;
        while p.server.connection(sh).unwrap().rx_buffered() == 0 || slots(&p) < idle + 300 {
            p.step();
            steps += 1;
            assert!(
                steps < 1_000_000,
                "slots {} idle {idle}, {:?}",
                slots(&p),
                p.server.connection(sh).unwrap().stats()
            );
        }
        let mid = slots(&p);
        assert!(!p.server.connection(sh).unwrap().has_recv());
        let now = p.now;
        if server_resets {
            p.server.connection(sh).unwrap().reset(now, 7);
        } else {
            p.client.connection(ch).unwrap().reset(now, 7);
        }
        let until = p.now.as_nanos() + 50_000_000;
        while p.now.as_nanos() < until && p.step() {
            p.drain(Peer::Client, ch, drop, drop);
            p.drain(Peer::Server, sh, drop, drop);
        }
        p.c2s.clear();
        p.s2c.clear();
        println!(
            "server_resets {server_resets}: slots idle {idle}, mid-message {mid}, after {}",
            slots(&p)
        );
        assert!(p.server.connection(sh).is_none(), "connection freed");
        assert_eq!(slots(&p), idle, "partial segments dropped");
    }
}

// ------------------------------------------------------------- a malformed peer

fn datagram(pool: &Pool, r: &Repr, payload: &[u8]) -> PktBuf {
    let mut b = pool.alloc().unwrap();
    b.extend_from_slice(payload).unwrap();
    r.prepend_to(&mut b).unwrap();
    b
}

struct Forger {
    base: Repr,
    pn: u64,
    from: SocketAddr,
}

impl Forger {
    /// Packets as if from the client's connection `ch`, with `flags`, numbered from 1000:
    /// above the client's own numbers, inside the receiver's window.
    fn of_client(p: &mut Pair, ch: ConnectionHandle, flags: u16) -> Forger {
        let c = p.client.connection(ch).unwrap();
        Forger {
            base: Repr {
                flags,
                dst_cid: c.remote_cid(),
                src_cid: c.local_cid(),
                pn: 0,
                tx_timestamp: 1,
                kind: Kind::Probe,
            },
            pn: 1000,
            from: SocketAddr::V4(CLIENT_ADDR),
        }
    }

    fn data(&mut self, p: &mut Pair, msg_id: u64, msg_len: u64, offset: u64, payload: &[u8]) {
        let r = Repr {
            pn: self.pn,
            kind: Kind::Data {
                msg_id,
                msg_len,
                offset,
            },
            ..self.base
        };
        let refused = |p: &mut Pair| {
            let h = p.server.handles().next();
            h.and_then(|h| p.server.connection_ref(h).map(|c| c.stats().rx_refused))
        };
        let before = refused(p);
        let b = datagram(&p.server_pool, &r, payload);
        let now = p.now;
        p.server.handle(now, self.from, false, b);
        // A refused packet is not recorded: its number stays free (as for a retransmission).
        if refused(p) == before {
            self.pn += 1;
        }
    }
}

/// Overlapping, out-of-range, zero-length and inconsistent DATA from the peer (as if sent
/// by the client's connection): refused without a panic; what is delivered is exactly the
/// bytes of the parts accepted; a message of tiny packets is copied rather than holding a
/// slot per byte; and partial messages left behind go back to the pool on reset.
#[test]
fn malformed_offsets_are_refused_and_hold_no_slots() {
    let mut p = Pair::new(
        cfg(false, 8 << 20),
        cfg(false, 8 << 20),
        LinkConfig::default(),
        3,
    );
    let (ch, sh) = p.connect().expect("connect");
    settle(&mut p, (ch, sh), 5);
    let idle = slots(&p);
    let mut f = Forger::of_client(&mut p, ch, FLAG_ACK_NOW);
    let refused0 = p.server.connection(sh).unwrap().stats().rx_refused;
    let good = |o: usize, n: usize| -> Vec<u8> { (o..o + n).map(|i| (i * 7 + 3) as u8).collect() };
    let bad = |n: usize| vec![0xeeu8; n];
    // Message 50, 3000 bytes: good parts with overlapping attempts in between.
    f.data(&mut p, 50, 3000, 1000, &good(1000, 1000));
    f.data(&mut p, 50, 3000, 500, &bad(1000)); // overlaps the part after it
    f.data(&mut p, 50, 3000, 1999, &bad(2)); // overlaps the end of [1000, 2000)
    f.data(&mut p, 50, 3000, 1000, &bad(1000)); // same range again under a new number
    f.data(&mut p, 50, 3000, 0, &good(0, 1000));
    f.data(&mut p, 50, 3000, 0, &bad(1)); // overlaps the start
    f.data(&mut p, 50, 3000, 2000, &bad(0)); // empty: kept nowhere
    f.data(&mut p, 50, 4000, 2000, &bad(1000)); // another length for the same message
    f.data(&mut p, 50, 3000, 2999, &bad(2)); // past the end (the parser refuses it)
    f.data(&mut p, 50, u64::MAX, u64::MAX - 1, &bad(1)); // absurd length
    assert!(!p.server.connection(sh).unwrap().has_recv());
    f.data(&mut p, 50, 3000, 2000, &good(2000, 1000));
    let c = p.server.connection(sh).unwrap();
    let m = c.poll_recv().expect("message 50 complete");
    assert_eq!(m.id, 50);
    let s = m.segments().expect("as segments");
    assert_eq!(s.parts(), 3);
    assert_eq!(joined(&m), good(0, 3000), "only the accepted parts' bytes");
    let st = c.stats();
    println!("after overlaps: {st:?}");
    assert!(st.rx_refused >= refused0 + 6, "{st:?}");
    drop(m);
    assert!(c.poll_recv().is_none());

    // Message 51: 1-byte packets would hold a slot per byte: past a few, copied instead.
    for i in 0..40u64 {
        f.data(&mut p, 51, 3000, i, &good(i as usize, 1));
    }
    let held = slots(&p) - idle;
    assert!(held <= 10, "{held} slots held for 40 bytes");
    f.data(&mut p, 51, 3000, 40, &good(40, 1400));
    f.data(&mut p, 51, 3000, 1440, &good(1440, 1400));
    f.data(&mut p, 51, 3000, 2840, &good(2840, 160));
    let c = p.server.connection(sh).unwrap();
    let m = c.poll_recv().expect("message 51 complete");
    assert!(matches!(m.data, MsgData::Buffer(_)), "{m:?}");
    assert_eq!(joined(&m), good(0, 3000));
    assert_eq!(c.stats().rx_segment_copied, 1);
    drop(m);

    // Message 61, 200 parts sent in reverse: sorted insertion would be quadratic; past its
    // bound the message is copied, intact.
    for k in (0..200usize).rev() {
        f.data(&mut p, 61, 200_000, k as u64 * 1000, &good(k * 1000, 1000));
    }
    let c = p.server.connection(sh).unwrap();
    let m = c.poll_recv().expect("message 61 complete");
    assert!(matches!(m.data, MsgData::Buffer(_)), "{m:?}");
    assert_eq!(joined(&m), good(0, 200_000));
    assert_eq!(c.stats().rx_segment_copied, 2);
    drop(m);
    // The same in order stays zero-copy.
    for k in 0..200usize {
        f.data(&mut p, 62, 200_000, k as u64 * 1000, &good(k * 1000, 1000));
    }
    let c = p.server.connection(sh).unwrap();
    let m = c.poll_recv().expect("message 62 complete");
    assert_eq!(m.segments().map(|s| s.parts()), Some(200));
    assert_eq!(joined(&m), good(0, 200_000));
    drop(m);

    // Messages 52..60 left partial (two parts each, out of order), then a reset.
    for id in 52..60u64 {
        f.data(&mut p, id, 100_000, 5000, &good(5000, 1400));
        f.data(&mut p, id, 100_000, 1400, &good(1400, 1400));
    }
    // Charged by what they hold (two parts of 1400 bytes each), not by what they claim.
    assert_eq!(p.server.connection(sh).unwrap().rx_buffered(), 8 * 2 * 1400);
    assert!(slots(&p) >= idle + 16);
    // Message 70 declares nearly the whole window and sends 1-byte parts with gaps: the
    // slots it may hold follow the bytes that arrived, not the length it declared.
    let before = slots(&p);
    for i in 0..200u64 {
        f.data(
            &mut p,
            70,
            (8 << 20) - 4096,
            i * 2,
            &good(i as usize * 2, 1),
        );
    }
    let held = slots(&p) - before;
    assert!(
        held <= 10,
        "{held} slots held for 200 bytes of a declared 8 MiB"
    );
    assert_eq!(
        p.server.connection(sh).unwrap().stats().rx_segment_copied,
        3
    );
    let now = p.now;
    p.server.connection(sh).unwrap().reset(now, 9);
    let until = p.now.as_nanos() + Duration::from_millis(20).as_nanos() as u64;
    while p.now.as_nanos() < until && p.step() {
        p.drain(Peer::Client, ch, drop, drop);
        p.drain(Peer::Server, sh, drop, drop);
    }
    p.c2s.clear();
    p.s2c.clear();
    assert!(p.server.connection(sh).is_none());
    assert_eq!(slots(&p), idle, "no slot kept");
}

/// Credit: messages held as segments and not yet taken by `poll_recv` keep their bytes
/// counted, so a receiver that does not read stops the sender at its window instead of
/// letting the pool fill; reading reopens it and everything arrives.
#[test]
fn unread_segments_apply_backpressure() {
    let window = 1u64 << 20;
    let mut p = Pair::new(cfg(false, window), cfg(false, window), lossy(), 33);
    let hs = p.connect().expect("connect");
    settle(&mut p, hs, 5);
    let idle = slots(&p);
    let mp = p.server.connection(hs.1).unwrap().max_payload_len() as u64;
    let (n, len) = (20u64, 200_000usize);
    let c = p.client.connection(hs.0).unwrap();
    for k in 0..n {
        c.send(pattern(msg_tag(33, 0, k), len)).unwrap();
    }
    // 50 ms of virtual time without reading.
    let until = p.now.as_nanos() + 50_000_000;
    while p.now.as_nanos() < until && p.step() {
        p.drain(Peer::Client, hs.0, drop, drop);
    }
    let held = slots(&p) - idle;
    let s = p.server.connection(hs.1).unwrap();
    let st = s.stats();
    println!(
        "unread: {held} slots held, {} B buffered, {st:?}",
        s.rx_buffered()
    );
    assert!(s.has_recv());
    assert!(st.rx_segment_msgs < n, "the sender was stopped: {st:?}");
    // At most a window of payload (in full packets, plus one short last packet each).
    assert!(
        held <= window / mp + window / len as u64 + 8,
        "{held} slots"
    );
    // Now read everything.
    let mut got = 0;
    for _ in 0..5_000_000 {
        p.step();
        p.drain(Peer::Server, hs.1, drop, |m| {
            assert!(check_pattern(msg_tag(33, 0, m.id), &joined(&m)));
            assert!(m.segments().is_some());
            got += 1;
        });
        p.drain(Peer::Client, hs.0, drop, drop);
        if got == n {
            break;
        }
    }
    assert_eq!(got, n);
    settle(&mut p, hs, 20);
    assert_eq!(slots(&p), idle);
}

/// The same overlaps into a connection that copies multi-packet messages (no segments):
/// refused, and the message delivered is exactly the accepted parts' bytes.
#[test]
fn the_copying_path_refuses_overlaps_too() {
    let copying = || EndpointConfig {
        conn: ConnectionConfig {
            rx_segments: false,
            ..cfg(false, 8 << 20).conn
        },
        ..cfg(false, 8 << 20)
    };
    let mut p = Pair::new(copying(), copying(), LinkConfig::default(), 5);
    let (ch, sh) = p.connect().expect("connect");
    settle(&mut p, (ch, sh), 5);
    let mut f = Forger::of_client(&mut p, ch, FLAG_ACK_NOW);
    let refused0 = p.server.connection(sh).unwrap().stats().rx_refused;
    let good = |o: usize, n: usize| -> Vec<u8> { (o..o + n).map(|i| (i * 7 + 3) as u8).collect() };
    let bad = |n: usize| vec![0xeeu8; n];
    f.data(&mut p, 50, 3000, 1000, &good(1000, 1000));
    f.data(&mut p, 50, 3000, 500, &bad(1000)); // overlaps the part after it
    f.data(&mut p, 50, 3000, 1999, &bad(2)); // overlaps the end of [1000, 2000)
    f.data(&mut p, 50, 3000, 1000, &bad(1000)); // same range again under a new number
    f.data(&mut p, 50, 3000, 2500, &good(2500, 500));
    f.data(&mut p, 50, 3000, 2400, &bad(200)); // overlaps [2500, 3000)
    f.data(&mut p, 50, 3000, 0, &good(0, 1000));
    f.data(&mut p, 50, 3000, 0, &bad(1)); // overlaps the start
                                          // 1000 + 1000 + 500 bytes taken: a sum of lengths with the overlaps counted would have
                                          // completed the message already, with zeros in [2000, 2500).
    assert!(!p.server.connection(sh).unwrap().has_recv());
    f.data(&mut p, 50, 3000, 2000, &good(2000, 500));
    let c = p.server.connection(sh).unwrap();
    let m = c.poll_recv().expect("message 50 complete");
    assert!(m.segments().is_none(), "copied, not segments");
    assert_eq!(joined(&m), good(0, 3000), "only the accepted parts' bytes");
    let st = c.stats();
    assert!(st.rx_refused >= refused0 + 5, "{st:?}");
}

/// Random forged DATA (random message ids, lengths, offsets and sizes, overlapping at will)
/// into a segments connection: no panic; whatever completes is a well-formed message of
/// contiguous parts; after a reset no slot is kept.
#[test]
fn random_forged_offsets_never_panic_nor_leak() {
    for seed in [1u64, 2, 3] {
        let mut p = Pair::new(
            cfg(false, 8 << 20),
            cfg(seed == 2, 8 << 20),
            LinkConfig::default(),
            40 + seed,
        );
        let (ch, sh) = p.connect().expect("connect");
        settle(&mut p, (ch, sh), 5);
        let idle = slots(&p);
        let mut f = Forger::of_client(&mut p, ch, 0);
        // Fill the receiver's packet numbers up to the forger's, so none is out of window.
        for pn in 0..1000 {
            let r = Repr { pn, ..f.base };
            let b = datagram(&p.server_pool, &r, &[]);
            let now = p.now;
            p.server.handle(now, f.from, false, b);
        }
        let mut rng = bypass::rng::Xoshiro256::new(seed);
        let lens = [0u64, 1, 1500, 3000, 10_000, 40_000];
        let payload = [0x77u8; 1400];
        let mut delivered = 0;
        for _ in 0..20_000 {
            let id = rng.next_u64() % 64;
            // Mostly one length per message, sometimes another.
            let len = match rng.next_u64() % 16 {
                0 => lens[(rng.next_u64() % lens.len() as u64) as usize],
                _ => lens[(id % lens.len() as u64) as usize],
            };
            // Half aligned 1400-byte parts (messages complete), half anywhere, any size.
            let (off, n) = if len == 0 {
                (0, 0)
            } else if rng.next_u64().is_multiple_of(2) {
                let off = rng.next_u64() % len.div_ceil(1400) * 1400;
                (off, 1400.min(len - off) as usize)
            } else {
                let off = rng.next_u64() % len;
                (off, (rng.next_u64() % 1401).min(len - off) as usize)
            };
            f.data(&mut p, id, len, off, &payload[..n]);
            while let Some(m) = p.server.connection(sh).unwrap().poll_recv() {
                let v = joined(&m);
                assert_eq!(v.len() as u64, m.len);
                // Exactly the parts accepted, as segments or copied (the copying path, which
                // a message of tiny parts falls back to, refuses overlaps too): no hole
                // delivered as zeros.
                assert!(
                    v.iter().all(|&b| b == 0x77),
                    "a delivered message has bytes no accepted part carried"
                );
                delivered += 1;
            }
        }
        let st = p.server.connection(sh).unwrap().stats();
        println!(
            "seed {seed}: {delivered} delivered, segments {} copied {} refused {}",
            st.rx_segment_msgs, st.rx_segment_copied, st.rx_refused
        );
        assert!(delivered > 0 && st.rx_refused > 0);
        let now = p.now;
        p.server.connection(sh).unwrap().reset(now, 1);
        let until = p.now.as_nanos() + 20_000_000;
        while p.now.as_nanos() < until && p.step() {
            p.drain(Peer::Client, ch, drop, drop);
            p.drain(Peer::Server, sh, drop, drop);
        }
        p.c2s.clear();
        p.s2c.clear();
        assert!(p.server.connection(sh).is_none());
        assert_eq!(slots(&p), idle, "no slot kept");
    }
}
