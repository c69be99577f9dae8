//! Two runtimes over an in-process port pair, in virtual time: ARP resolution, ICMP echo,
//! UDP demux by port, timers, transmit backpressure, malformed frames.

use crate::runtime_util;

use std::net::{Ipv4Addr, SocketAddrV4};

use bypass::mem::PktBuf;
use bypass::pmd::Port;
use bypass::runtime::net::{Net, NetConfig, SendError};
use bypass::runtime::{Runtime, RuntimeConfig};
use bypass::time::{Instant, ManualClock};
use runtime_util::{pair, PairPort, Recorder, IP_A, IP_B};

type Rt = Runtime<PairPort, Recorder, ManualClock>;

fn runtimes(ring_cap: usize) -> (Rt, Rt, ManualClock) {
    let clock = ManualClock::new(1_000_000);
    let (pa, pb) = pair(ring_cap, 512);
    let mk = |port: PairPort, ip| {
        let cfg = RuntimeConfig::new(NetConfig::new(port.info().mac, ip));
        Runtime::new(cfg, port, Recorder::default(), clock.clone()).unwrap()
    };
    (mk(pa, IP_A), mk(pb, IP_B), clock)
}

/// Poll both loops until neither does anything (bounded).
fn settle(a: &mut Rt, b: &mut Rt) {
    for _ in 0..100 {
        let ra = a.poll_once();
        let rb = b.poll_once();
        if !ra.busy() && !rb.busy() && ra.tx_pending == 0 && rb.tx_pending == 0 {
            return;
        }
    }
    panic!("loops did not settle");
}

fn send(rt: &mut Rt, src_port: u16, dst: SocketAddrV4, data: &[u8]) -> Result<(), SendError> {
    rt.with_io(|_, io| {
        let mut b = io.alloc_tx().unwrap();
        b.extend_from_slice(data).unwrap();
        io.send_udp(src_port, dst, b)
    })
}

#[test]
fn arp_resolves_then_udp_flows_both_ways() {
    let (mut a, mut b, _clock) = runtimes(64);
    b.net_mut().bind(8000);
    a.net_mut().bind(7000);
    a.poll_once();
    send(&mut a, 7000, SocketAddrV4::new(IP_B, 8000), b"hello").unwrap();
    assert_eq!(a.net().arp_waiting(), 1, "parked until B answers");
    settle(&mut a, &mut b);

    assert_eq!(a.net_counters().arp_requests_out, 1);
    assert_eq!(b.net_counters().arp_requests_in, 1);
    assert_eq!(b.net_counters().arp_replies_out, 1);
    assert_eq!(a.net_counters().arp_replies_in, 1);
    assert_eq!(a.net().arp_waiting(), 0);
    let seen = &b.handler().seen;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].src, SocketAddrV4::new(IP_A, 7000));
    assert_eq!(seen[0].dst_port, 8000);
    assert_eq!(seen[0].payload, b"hello");
    assert_eq!(seen[0].ecn, 0, "Not-ECT by default");

    // B learned A from A's request: its answer needs no ARP round.
    send(&mut b, 8000, SocketAddrV4::new(IP_A, 7000), b"world").unwrap();
    settle(&mut a, &mut b);
    assert_eq!(b.net_counters().arp_requests_out, 0);
    assert_eq!(a.handler().seen.len(), 1);
    assert_eq!(a.handler().seen[0].payload, b"world");
    assert_eq!(a.handler().seen[0].src, SocketAddrV4::new(IP_B, 8000));
    for c in [a.net_counters(), b.net_counters()] {
        assert_eq!(c.rx_drops(), 0);
        assert_eq!(c.rx_handled(), c.rx_frames, "every frame accounted for");
    }
}

#[test]
fn ecn_codepoint_reaches_the_handler() {
    let (mut a, mut b, _clock) = runtimes(64);
    b.net_mut().bind(8000);
    let mut cfg = a.net().config().clone();
    cfg.tx_ecn = 2; // ECT(0)
    *a.net_mut() = Net::new(cfg);
    send(&mut a, 7000, SocketAddrV4::new(IP_B, 8000), b"ect").unwrap();
    settle(&mut a, &mut b);
    assert_eq!(b.handler().seen.len(), 1);
    assert_eq!(b.handler().seen[0].ecn, 2);
}

#[test]
fn ping_each_other() {
    let (mut a, mut b, clock) = runtimes(64);
    a.with_io(|_, io| io.send_ping(IP_B, 0x77, 1, 56)).unwrap();
    settle(&mut a, &mut b);
    let r = a.net().last_echo_reply().expect("A got a reply");
    assert_eq!((r.from, r.ident, r.seq), (IP_B, 0x77, 1));
    assert_eq!(b.net_counters().icmp_echo_requests_in, 1);
    assert_eq!(b.net_counters().icmp_echo_replies_out, 1);

    clock.advance(1_000);
    b.poll_once();
    b.with_io(|_, io| io.send_ping(IP_A, 0x99, 2, 0)).unwrap();
    settle(&mut a, &mut b);
    let r = b.net().last_echo_reply().expect("B got a reply");
    assert_eq!((r.from, r.ident, r.seq), (IP_A, 0x99, 2));
    assert_eq!(r.at, b.now());
    assert_eq!(
        b.net_counters().arp_requests_out,
        0,
        "B learned A from A's request"
    );
}

#[test]
fn udp_is_demultiplexed_by_port() {
    let (mut a, mut b, _clock) = runtimes(64);
    b.net_mut().bind(8000);
    b.net_mut().bind(8001);
    for (port, data) in [(8000, b"to-8000"), (8001, b"to-8001"), (8002, b"to-8002")] {
        send(&mut a, 7000, SocketAddrV4::new(IP_B, port), data).unwrap();
    }
    settle(&mut a, &mut b);
    let got: Vec<(u16, &[u8])> = b
        .handler()
        .seen
        .iter()
        .map(|s| (s.dst_port, &s.payload[..]))
        .collect();
    assert_eq!(got, vec![(8000, &b"to-8000"[..]), (8001, &b"to-8001"[..])]);
    assert_eq!(b.net_counters().udp_no_port, 1);
    b.net_mut().unbind(8000);
    send(&mut a, 7000, SocketAddrV4::new(IP_B, 8000), b"again").unwrap();
    settle(&mut a, &mut b);
    assert_eq!(b.handler().seen.len(), 2);
    assert_eq!(b.net_counters().udp_no_port, 2);
}

#[test]
fn timers_fire_at_their_deadline_in_virtual_time() {
    let (mut a, mut b, clock) = runtimes(64);
    b.net_mut().bind(8000);
    b.handler_mut().timer_after = Some(50_000);
    send(&mut a, 7000, SocketAddrV4::new(IP_B, 8000), b"x").unwrap();
    settle(&mut a, &mut b);
    let armed_at = b.handler().seen[0].at;
    assert!(b.handler().timers.is_empty());
    clock.advance(49_000);
    b.poll_once();
    assert!(b.handler().timers.is_empty(), "not early");
    clock.advance(2_100); // past the deadline and its tick (1024 ns)
    b.poll_once();
    assert_eq!(b.handler().timers.len(), 1);
    let (fired_at, token) = b.handler().timers[0];
    assert_eq!(token, 8000);
    assert!(fired_at >= armed_at.add_nanos(50_000));
    assert!(fired_at < armed_at.add_nanos(50_000 + 1024 + 2_100));
    assert_eq!(b.counters().timers_fired, 1);
}

#[test]
fn unsent_frames_stay_queued_until_the_ring_drains() {
    // A ring of 4 frames: the sender must keep the rest, in order, and lose nothing.
    let (mut a, mut b, _clock) = runtimes(4);
    b.net_mut().bind(8000);
    a.net_mut().add_static_arp(IP_B, b.port().info().mac);
    for i in 0..20u8 {
        send(&mut a, 7000, SocketAddrV4::new(IP_B, 8000), &[i]).unwrap();
    }
    let r = a.poll_once();
    assert_eq!((r.tx, r.tx_pending), (4, 16));
    assert!(a.counters().tx_partial >= 1);
    for _ in 0..20 {
        b.poll_once();
        a.poll_once();
    }
    let got: Vec<u8> = b.handler().seen.iter().map(|s| s.payload[0]).collect();
    assert_eq!(got, (0..20).collect::<Vec<u8>>());
    assert_eq!(a.counters().tx_frames, 20);
    assert_eq!(a.port().stats().tx_packets, 20);
}

#[test]
fn tx_queue_limit_is_backpressure_not_loss() {
    let clock = ManualClock::new(0);
    let (pa, pb) = pair(2, 512);
    let mut cfg = RuntimeConfig::new(NetConfig::new(pa.info().mac, IP_A));
    cfg.net.tx_queue_limit = 8;
    cfg.net.static_arp.push((IP_B, pb.info().mac));
    let mut a = Runtime::new(cfg, pa, Recorder::default(), clock.clone()).unwrap();
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..12u8 {
        match send(&mut a, 1, SocketAddrV4::new(IP_B, 2), &[i]) {
            Ok(()) => accepted += 1,
            Err(SendError::TxFull(buf)) => {
                assert_eq!(buf.data(), &[i], "buffer given back");
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((accepted, refused), (8, 4));
    assert_eq!(a.net_counters().tx_full, 4);
    let r = a.poll_once();
    assert_eq!((r.tx, r.tx_pending), (2, 6));
    drop(pb);
}

#[test]
fn arp_gives_up_on_a_silent_destination() {
    let (mut a, mut b, clock) = runtimes(64);
    let ghost = Ipv4Addr::new(10, 0, 0, 3);
    for _ in 0..3 {
        send(&mut a, 1, SocketAddrV4::new(ghost, 2), b"?").unwrap();
    }
    let retry = a.net().config().arp.retry_ns;
    let tries = a.net().config().arp.max_tries;
    for _ in 0..=tries {
        settle(&mut a, &mut b);
        clock.advance(retry);
    }
    settle(&mut a, &mut b);
    assert_eq!(a.net_counters().arp_requests_out, tries as u64);
    assert_eq!(a.net_counters().arp_unresolved_drops, 3);
    assert_eq!(
        b.net_counters().arp_ignored,
        tries as u64,
        "B saw requests not for it"
    );
    assert_eq!(a.port().pool().stats().in_use, 0, "no buffer leaked");
}

#[test]
fn malformed_frames_are_dropped_and_counted() {
    // B runs a runtime; the other end of the pair is driven raw, as a hostile peer.
    let (mut raw, pb) = pair(64, 512);
    let clock = ManualClock::new(1);
    let cfg = RuntimeConfig::new(NetConfig::new(pb.info().mac, IP_B));
    let mut b = Runtime::new(cfg, pb, Recorder::default(), clock).unwrap();
    b.net_mut().bind(8000);
    // A good frame, built by a net layer configured as A, is the template.
    let good = {
        let mut cfg = NetConfig::new(raw.info().mac, IP_A);
        cfg.static_arp.push((IP_B, b.port().info().mac));
        let mut net = Net::new(cfg);
        let mut buf = raw.alloc_tx().unwrap();
        buf.extend_from_slice(b"payload!").unwrap();
        net.send_udp(
            Instant::ZERO,
            7000,
            SocketAddrV4::new(IP_B, 8000),
            buf,
            &mut || raw.alloc_tx(),
        )
        .unwrap();
        net.tx_queue().pop().unwrap().data().to_vec()
    };
    let refill_ip_csum = |f: &mut Vec<u8>| {
        f[24] = 0;
        f[25] = 0;
        let mut s: u32 = 0;
        for i in (14..34).step_by(2) {
            s += u16::from_be_bytes([f[i], f[i + 1]]) as u32;
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        f[24..26].copy_from_slice(&(!(s as u16)).to_be_bytes());
    };
    let mut frames: Vec<Vec<u8>> = Vec::new();
    frames.push(good[..9].to_vec()); // truncated Ethernet
    let mut f = good.clone();
    f.truncate(40); // truncated IPv4 packet
    frames.push(f);
    let mut f = good.clone();
    f[25] ^= 0xff; // bad IPv4 checksum
    frames.push(f);
    let mut f = good.clone();
    f[12..14].copy_from_slice(&[0x88, 0xcc]); // LLDP ethertype
    frames.push(f);
    let mut f = good.clone();
    f[20] |= 0x20; // more fragments
    refill_ip_csum(&mut f);
    frames.push(f);
    let mut f = good.clone();
    f[49] ^= 1; // payload byte: bad UDP checksum
    frames.push(f);
    frames.push(good.clone()); // and one good frame
    let mut out: Vec<PktBuf> = frames
        .iter()
        .map(|f| {
            let mut buf = raw.alloc_tx().unwrap();
            buf.extend_from_slice(f).unwrap();
            buf
        })
        .collect();
    assert_eq!(raw.tx_burst(&mut out), 7);
    b.poll_once();
    let c = *b.net_counters();
    assert_eq!(c.rx_frames, 7);
    assert_eq!(c.rx_truncated, 1);
    assert_eq!(c.ip_malformed, 1);
    assert_eq!(c.ip_bad_checksum, 1);
    assert_eq!(c.rx_unknown_ethertype, 1);
    assert_eq!(c.ip_fragments, 1);
    assert_eq!(c.udp_bad_checksum, 1);
    assert_eq!(c.rx_drops(), 6);
    assert_eq!(c.rx_handled(), 1);
    assert_eq!(b.handler().seen.len(), 1);
    assert_eq!(b.handler().seen[0].payload, b"payload!");
    assert_eq!(b.port().pool().stats().in_use, 0, "dropped frames returned");
}
