//! `pmd::fanin` over in-process pairs: the fan-in holds the `a` ends, each `b` end is a
//! peer. Learning, moves, forgetting, broadcast copies, unknown unicast, fairness.

use bypass::mem::{HugePages, PktBuf, Pool, PoolConfig};
use bypass::pmd::fanin::{FanIn, FanInError};
use bypass::pmd::pair::{pair, PairPort};
use bypass::pmd::{Link, Port};

const BCAST: [u8; 6] = [0xff; 6];
const SERVER: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];

fn peer_mac(k: usize) -> [u8; 6] {
    [0x02, 0xbb, 0, 0, (k >> 8) as u8, k as u8]
}

fn pool(slots: u32) -> Pool {
    let mut cfg = PoolConfig::new("pmd-fanin", slots, 2048);
    cfg.hugepages = HugePages::Never;
    Pool::new(&cfg).expect("pool")
}

/// A fan-in over `n` pairs of ring depth `depth`, and the peers' ends.
fn fan(pool: &Pool, n: usize, depth: usize) -> (FanIn<PairPort>, Vec<PairPort>) {
    let mut ours = Vec::new();
    let mut peers = Vec::new();
    for _ in 0..n {
        let (a, b) = pair(pool, depth, 1500).expect("pair");
        ours.push(a);
        peers.push(b);
    }
    (FanIn::new(ours).expect("fan-in"), peers)
}

/// An Ethernet frame `src -> dst` whose payload is `tag`.
fn frame(pool: &Pool, dst: [u8; 6], src: [u8; 6], tag: u32) -> PktBuf {
    let mut b = pool.alloc().expect("buffer");
    b.extend_from_slice(&dst).unwrap();
    b.extend_from_slice(&src).unwrap();
    b.extend_from_slice(&0x0800u16.to_be_bytes()).unwrap();
    b.extend_from_slice(&tag.to_be_bytes()).unwrap();
    b
}

fn tag(f: &PktBuf) -> u32 {
    u32::from_be_bytes(f.data()[14..18].try_into().unwrap())
}

/// Peer `k` sends one frame to the server (teaching the fan-in its address).
fn speak(pool: &Pool, peer: &mut PairPort, k: usize) {
    let mut v = vec![frame(pool, SERVER, peer_mac(k), k as u32)];
    assert_eq!(peer.tx_burst(&mut v), 1, "peer {k}'s frame sent");
}

/// Everything the fan-in receives now (in calls of up to `burst`).
fn drain(f: &mut FanIn<PairPort>, burst: usize) -> Vec<u32> {
    let mut out = Vec::new();
    let mut got = Vec::new();
    while f.rx_burst(&mut out, burst) > 0 {
        got.extend(out.drain(..).map(|b| tag(&b)));
    }
    got
}

fn recv_all(p: &mut PairPort) -> Vec<PktBuf> {
    let mut out = Vec::new();
    while p.rx_burst(&mut out, 64) > 0 {}
    out
}

#[test]
fn unicast_goes_to_the_member_the_source_address_was_learned_behind() {
    let pool = pool(256);
    let (mut f, mut peers) = fan(&pool, 4, 64);
    assert!(f.link().is_up(), "the peers are there");
    for (k, p) in peers.iter_mut().enumerate() {
        speak(&pool, p, k);
    }
    let mut got = drain(&mut f, 32);
    got.sort();
    assert_eq!(got, vec![0, 1, 2, 3], "one frame from each peer");
    for k in 0..4 {
        assert_eq!(f.member_of(peer_mac(k)), Some(k), "peer {k} learned");
    }
    // Two frames to each peer, interleaved: each arrives at its own peer only, in order.
    let mut out: Vec<PktBuf> = (0..8)
        .map(|i| frame(&pool, peer_mac(i % 4), SERVER, 100 + i as u32))
        .collect();
    assert_eq!(f.tx_burst(&mut out), 8);
    assert!(out.is_empty());
    for (k, p) in peers.iter_mut().enumerate() {
        let tags: Vec<u32> = recv_all(p).iter().map(tag).collect();
        assert_eq!(
            tags,
            vec![100 + k as u32, 104 + k as u32],
            "peer {k}'s frames"
        );
    }
    assert_eq!(f.fanin_stats().learned, 4);
    assert_eq!(f.fanin_stats().tx_unknown, 0);
    assert_eq!(
        f.stats_handle().get(),
        f.fanin_stats(),
        "published to the handle"
    );
}

#[test]
fn an_address_that_shows_up_behind_another_member_moves_there() {
    let pool = pool(256);
    let (mut f, mut peers) = fan(&pool, 3, 64);
    speak(&pool, &mut peers[0], 7);
    drain(&mut f, 32);
    assert_eq!(f.member_of(peer_mac(7)), Some(0));
    speak(&pool, &mut peers[2], 7);
    drain(&mut f, 32);
    assert_eq!(f.member_of(peer_mac(7)), Some(2), "moved to member 2");
    assert_eq!(f.fanin_stats().moved, 1);
    let mut out = vec![frame(&pool, peer_mac(7), SERVER, 1)];
    f.tx_burst(&mut out);
    assert!(recv_all(&mut peers[0]).is_empty(), "not to its old member");
    assert_eq!(recv_all(&mut peers[2]).len(), 1, "to its new member");
}

#[test]
fn broadcast_reaches_every_member_that_is_up_each_with_its_own_copy() {
    let pool = pool(256);
    let (mut f, mut peers) = fan(&pool, 4, 64);
    // Member 1's peer goes away.
    let gone = peers.remove(1);
    drop(gone);
    assert!(f.link().is_up(), "up while any member is");
    let free = pool.free_slots();
    let mut out = vec![frame(&pool, BCAST, SERVER, 42)];
    assert_eq!(f.tx_burst(&mut out), 1);
    let mut slots = Vec::new();
    let mut held = Vec::new();
    for (k, p) in peers.iter_mut().enumerate() {
        let got = recv_all(p);
        assert_eq!(got.len(), 1, "live peer {k} got the broadcast");
        assert_eq!(tag(&got[0]), 42);
        assert_eq!(&got[0].data()[..6], &BCAST);
        slots.push(got[0].slot());
        held.extend(got);
    }
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), 3, "three buffers, not one shared");
    assert_eq!(
        pool.free_slots() + 3,
        free,
        "two copies and the frame itself"
    );
    assert_eq!(f.fanin_stats().tx_broadcast, 1);
    assert_eq!(f.fanin_stats().tx_broadcast_dropped, 0);
}

#[test]
fn unknown_unicast_is_counted_and_dropped_and_a_member_going_down_forgets_its_addresses() {
    let pool = pool(256);
    let (mut f, mut peers) = fan(&pool, 2, 64);
    let free = pool.free_slots();
    let mut out = vec![frame(&pool, peer_mac(9), SERVER, 1)];
    assert_eq!(f.tx_burst(&mut out), 1, "removed from the queue");
    assert!(out.is_empty());
    assert_eq!(f.fanin_stats().tx_unknown, 1);
    assert_eq!(
        f.stats_handle().get().tx_unknown,
        1,
        "readable from elsewhere"
    );
    assert_eq!(pool.free_slots(), free, "its buffer went back to the pool");
    assert!(recv_all(&mut peers[0]).is_empty() && recv_all(&mut peers[1]).is_empty());

    speak(&pool, &mut peers[1], 5);
    drain(&mut f, 32);
    assert_eq!(f.member_of(peer_mac(5)), Some(1));
    drop(peers.pop());
    assert!(f.link().is_up(), "member 0 is still up");
    assert_eq!(
        f.member_of(peer_mac(5)),
        None,
        "forgotten with its member's link"
    );
    assert_eq!(f.fanin_stats().forgotten, 1);
    drop(peers.pop());
    assert_eq!(f.link(), Link::Down, "down when every member is");
}

#[test]
fn frames_a_members_ring_refuses_stay_with_the_caller() {
    let pool = pool(256);
    let (mut f, mut peers) = fan(&pool, 2, 2);
    speak(&pool, &mut peers[0], 0);
    speak(&pool, &mut peers[1], 1);
    drain(&mut f, 32);
    let mut out: Vec<PktBuf> = (0..6)
        .map(|i| frame(&pool, peer_mac(i % 2), SERVER, i as u32))
        .collect();
    assert_eq!(f.tx_burst(&mut out), 4, "two per ring of depth 2");
    let mut left: Vec<u32> = out.iter().map(tag).collect();
    left.sort();
    assert_eq!(
        left,
        vec![4, 5],
        "the two refused frames stay, one per member"
    );
    assert_eq!(
        recv_all(&mut peers[0]).iter().map(tag).collect::<Vec<_>>(),
        [0, 2]
    );
    assert_eq!(
        recv_all(&mut peers[1]).iter().map(tag).collect::<Vec<_>>(),
        [1, 3]
    );
    assert_eq!(f.tx_burst(&mut out), 2, "sent once there is room");
}

#[test]
fn a_busy_member_does_not_starve_the_others() {
    let pool = pool(1024);
    let (mut f, mut peers) = fan(&pool, 4, 256);
    // Peer 0 floods 200 frames; peers 1..3 send 2 each.
    let mut flood: Vec<PktBuf> = (0..200)
        .map(|i| frame(&pool, SERVER, peer_mac(0), i))
        .collect();
    assert_eq!(peers[0].tx_burst(&mut flood), 200);
    for (k, p) in peers.iter_mut().enumerate().skip(1) {
        for i in 0..2 {
            let mut v = vec![frame(&pool, SERVER, peer_mac(k), 1000 * k as u32 + i)];
            assert_eq!(p.tx_burst(&mut v), 1);
        }
    }
    // Bursts of 16: the small senders are all served within the first 4 calls (one turn),
    // not after the flood's 13 bursts.
    let mut out = Vec::new();
    let mut all = Vec::new();
    let mut calls_until_served = None;
    let mut small = 0;
    for call in 1..=4 {
        out.clear();
        let n = f.rx_burst(&mut out, 16);
        assert!(n <= 16, "at most the burst asked for");
        small += out.iter().filter(|b| tag(b) >= 1000).count();
        all.extend(out.iter().map(tag));
        if small == 6 && calls_until_served.is_none() {
            calls_until_served = Some(call);
        }
    }
    assert_eq!(
        calls_until_served.map(|c| c <= 4),
        Some(true),
        "all 6 frames of the quiet peers within one turn of 4 calls (got {small})"
    );
    // The flood keeps its order and loses nothing.
    let rest = drain(&mut f, 16);
    let floods: Vec<u32> = all.into_iter().chain(rest).filter(|&t| t < 1000).collect();
    assert_eq!(floods.len(), 200, "every frame of peer 0");
    assert!(
        floods.windows(2).all(|w| w[0] < w[1]),
        "peer 0's frames in order"
    );
    assert_eq!(f.stats().rx_packets, 206, "the members' counters, summed");
}

#[test]
fn a_fan_in_needs_a_member() {
    let r: Result<FanIn<PairPort>, _> = FanIn::new(Vec::new());
    assert_eq!(r.err(), Some(FanInError::Members(0)));
}
