//! Counting allocator: a warmed-up connection pair moving single-packet messages both ways
//! makes zero heap allocations per packet (protocol, wire, pools and the simulated link),
//! whether each message travels alone in a DATA packet or small ones are packed into BATCH
//! packets; so does one sending segmented messages (`send_segments`, zero-copy send) with one
//! reused segment list.
//!
//! What does allocate, by design (not exercised here): connection creation (queues, the
//! controller box), the reassembly buffer of each multi-packet message (`vec![0; len]`, unless
//! a `RecvTarget` was posted; with `ConnectionConfig::rx_segments` the list of its packet
//! buffers instead, counted below), and `PktBytes -> bytes::Bytes` (one small header in
//! `bytes`).

use bypass::pmd::sim::LinkConfig;
use bypass::proto::testing::{Pair, Peer};
use bypass::proto::EndpointConfig;

use crate::counting::allocs;

/// Send `n` messages each way (as the send queue allows) and drain; returns packets moved.
fn exchange(
    p: &mut Pair,
    hs: (
        bypass::proto::ConnectionHandle,
        bypass::proto::ConnectionHandle,
    ),
    n: usize,
    msg: &bytes::Bytes,
) -> u64 {
    let (mut sent, mut got) = ([0usize; 2], [0usize; 2]);
    let before = p.c2s.stats().delivered + p.s2c.stats().delivered;
    let mut guard = 0;
    while got[0] < n || got[1] < n {
        for (i, (peer, h)) in [(Peer::Client, hs.0), (Peer::Server, hs.1)]
            .into_iter()
            .enumerate()
        {
            let c = p.endpoint(peer).connection(h).unwrap();
            while sent[i] < n && c.send(msg.clone()).is_ok() {
                sent[i] += 1;
            }
        }
        p.step();
        let (mut a, mut b) = (0, 0);
        p.drain(Peer::Server, hs.1, drop, |m| {
            assert_eq!(m.as_slice().unwrap(), &msg[..]);
            a += 1
        });
        p.drain(Peer::Client, hs.0, drop, |m| {
            assert_eq!(m.as_slice().unwrap(), &msg[..]);
            b += 1
        });
        got[0] += a;
        got[1] += b;
        guard += 1;
        assert!(guard < 10_000_000, "no progress");
    }
    // Let the last acks land.
    for _ in 0..100 {
        p.step();
        p.drain(Peer::Server, hs.1, drop, drop);
        p.drain(Peer::Client, hs.0, drop, drop);
    }
    p.c2s.stats().delivered + p.s2c.stats().delivered - before
}

#[test]
fn zero_allocations_per_packet_in_steady_state() {
    // The counter counts (so this test can fail).
    let start = allocs();
    drop(std::hint::black_box(Vec::<u8>::with_capacity(8)));
    assert_eq!(allocs() - start, 1);
    let mut p = Pair::new(
        EndpointConfig::default(),
        EndpointConfig::default(),
        LinkConfig::default(),
        77,
    );
    let hs = p.connect().expect("connect");
    let msg = bytes::Bytes::from_static(&[0xab; 1000]);
    // Warm up: queues and heaps reach their working capacity.
    exchange(&mut p, hs, 5_000, &msg);
    let start = allocs();
    let packets = exchange(&mut p, hs, 5_000, &msg);
    let allocs = allocs() - start;
    println!("{packets} packets (data + acks), {allocs} allocations");
    assert!(packets > 10_000);
    assert_eq!(allocs, 0, "allocations in steady state");
}

/// Client to server: `n` one-segment messages (`send_segments`, each segment written into a
/// buffer of the client's pool), the segment list reused; returns packets moved.
fn exchange_segments(
    p: &mut Pair,
    hs: (
        bypass::proto::ConnectionHandle,
        bypass::proto::ConnectionHandle,
    ),
    n: usize,
    list: &mut Vec<bypass::mem::PktBuf>,
) -> u64 {
    let before = p.c2s.stats().delivered + p.s2c.stats().delivered;
    let (mut sent, mut got, mut guard) = (0, 0, 0);
    while got < n {
        while sent < n {
            if list.is_empty() {
                let mut b = p.client_pool.alloc().unwrap();
                b.append(1000).unwrap().fill(0xcd);
                list.push(b);
            }
            let c = p.endpoint(Peer::Client).connection(hs.0).unwrap();
            if c.send_segments(list).is_err() {
                break;
            }
            sent += 1;
        }
        p.step();
        p.drain(Peer::Server, hs.1, drop, |m| {
            assert_eq!(m.as_slice().unwrap(), &[0xcd; 1000][..]);
            got += 1
        });
        p.drain(Peer::Client, hs.0, drop, drop);
        guard += 1;
        assert!(guard < 10_000_000, "no progress");
    }
    for _ in 0..100 {
        p.step();
        p.drain(Peer::Server, hs.1, drop, drop);
        p.drain(Peer::Client, hs.0, drop, drop);
    }
    p.c2s.stats().delivered + p.s2c.stats().delivered - before
}

#[test]
fn zero_allocations_per_packet_with_segmented_messages() {
    let mut p = Pair::new(
        EndpointConfig::default(),
        EndpointConfig::default(),
        LinkConfig::default(),
        78,
    );
    let hs = p.connect().expect("connect");
    let mut list = Vec::with_capacity(1);
    exchange_segments(&mut p, hs, 5_000, &mut list);
    let zc0 = p.client.connection(hs.0).unwrap().tx_zero_copy();
    let start = allocs();
    let packets = exchange_segments(&mut p, hs, 5_000, &mut list);
    let allocs = allocs() - start;
    let zc = p.client.connection(hs.0).unwrap().tx_zero_copy() - zc0;
    println!("{packets} packets (data + acks), {zc} sent from the segments, {allocs} allocations");
    assert!(packets > 5_000);
    assert_eq!(zc, 5_000, "every segment went out itself");
    assert_eq!(allocs, 0, "allocations in steady state");
}

#[test]
fn zero_allocations_per_packet_with_batches() {
    let mut p = Pair::new(
        EndpointConfig::default(),
        EndpointConfig::default(),
        LinkConfig::default(),
        79,
    );
    let hs = p.connect().expect("connect");
    let msg = bytes::Bytes::from_static(&[0xcd; 64]);
    exchange(&mut p, hs, 20_000, &msg);
    let before = p.client.connection(hs.0).unwrap().stats();
    let allocs0 = allocs();
    let packets = exchange(&mut p, hs, 20_000, &msg);
    let allocs = allocs() - allocs0;
    let after = p.client.connection(hs.0).unwrap().stats();
    let batches = after.tx_batches - before.tx_batches;
    let batched = after.tx_batched_msgs - before.tx_batched_msgs;
    println!("{packets} packets (data + acks), {batches} batches of {batched} messages, {allocs} allocations");
    // The small messages queued together did travel in batches (else this tests nothing new).
    assert!(batches > 0 && batched > 2 * batches, "{after:?}");
    assert_eq!(allocs, 0, "allocations in steady state");
}

/// Zero-copy receive (`ConnectionConfig::rx_segments`): a multi-packet message costs the
/// receiver at most one allocation (its list of packet buffers), where the copying path
/// allocates the whole message.
#[test]
fn at_most_one_allocation_per_multi_packet_message_with_rx_segments() {
    static MSG: [u8; 20_000] = [0x5c; 20_000];
    let server = EndpointConfig {
        conn: bypass::proto::ConnectionConfig {
            rx_segments: true,
            ..Default::default()
        },
        ..EndpointConfig::default()
    };
    let mut p = Pair::new(EndpointConfig::default(), server, LinkConfig::default(), 79);
    let hs = p.connect().expect("connect");
    let msg = bytes::Bytes::from_static(&MSG);
    let one_way = |p: &mut Pair, n: usize| {
        let (mut sent, mut got, mut parts, mut guard) = (0, 0, 0, 0);
        while got < n {
            let c = p.endpoint(Peer::Client).connection(hs.0).unwrap();
            while sent < n && c.send(msg.clone()).is_ok() {
                sent += 1;
            }
            p.step();
            p.drain(Peer::Server, hs.1, drop, |m| {
                let s = m.segments().expect("delivered as segments");
                assert_eq!(s.len(), MSG.len());
                let mut off = 0;
                for part in s.iter() {
                    assert_eq!(part, &MSG[off..off + part.len()]);
                    off += part.len();
                }
                parts += s.parts();
                got += 1;
            });
            p.drain(Peer::Client, hs.0, drop, drop);
            guard += 1;
            assert!(guard < 10_000_000, "no progress");
        }
        for _ in 0..100 {
            p.step();
            p.drain(Peer::Server, hs.1, drop, drop);
            p.drain(Peer::Client, hs.0, drop, drop);
        }
        parts
    };
    one_way(&mut p, 2_000);
    let start = allocs();
    let parts = one_way(&mut p, 2_000);
    let allocs = allocs() - start;
    println!("2000 messages of 20000 B in {parts} parts: {allocs} allocations");
    assert!(parts >= 2_000 * 14, "{parts}");
    assert!(allocs <= 2_000, "{allocs} allocations for 2000 messages");
}
