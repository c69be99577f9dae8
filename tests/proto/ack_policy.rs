//! When the transport acknowledges, in virtual time: a request answered by a response does not
//! force an ACK (a conversation is acknowledged at the delayed-ACK deadline, not every second
//! packet), a burst still is at once, and a sender whose window closes asks for an ACK at once
//! (`ACK_NOW`) rather than waiting out the peer's deadline.

use std::sync::Arc;
use std::time::Duration;

use bypass::pmd::sim::LinkConfig;
use bypass::proto::cc::FixedWindowFactory;
use bypass::proto::testing::{Pair, Peer};
use bypass::proto::{ConnectionHandle, EndpointConfig, Event, Instant};

fn link() -> LinkConfig {
    LinkConfig {
        delay_ns: 500, // 1 us round trips: many inside one delayed-ACK wait (20 us)
        ..LinkConfig::default()
    }
}

fn cfg(window_packets: u64) -> EndpointConfig {
    EndpointConfig {
        cc: Arc::new(FixedWindowFactory {
            packets: window_packets,
        }),
        ..EndpointConfig::default()
    }
}

/// Step until `p`'s connection `h` has a message; returns its length.
fn await_msg(pair: &mut Pair, p: Peer, h: ConnectionHandle) -> u64 {
    let limit = pair.now + Duration::from_secs(1);
    loop {
        if let Some(m) = pair.endpoint(p).connection(h).unwrap().poll_recv() {
            return m.len;
        }
        assert!(pair.now < limit, "no message");
        assert!(pair.step(), "nothing left to happen");
    }
}

/// `rounds` exchanges: the client sends 64 B, the server answers with 64 B once it has it,
/// the client waits for the answer.
fn converse(pair: &mut Pair, ch: ConnectionHandle, sh: ConnectionHandle, rounds: u64) {
    let ping = bytes::Bytes::from(vec![1u8; 64]);
    for _ in 0..rounds {
        let c = pair.client.connection(ch).unwrap();
        c.send(ping.clone()).unwrap();
        assert_eq!(await_msg(pair, Peer::Server, sh), 64);
        let s = pair.server.connection(sh).unwrap();
        s.send(ping.clone()).unwrap();
        assert_eq!(await_msg(pair, Peer::Client, ch), 64);
    }
}

fn tx_acks(pair: &mut Pair, p: Peer, h: ConnectionHandle) -> u64 {
    pair.endpoint(p).connection(h).unwrap().stats().tx_acks
}

#[test]
fn a_conversation_is_acknowledged_at_the_deadline_not_every_other_packet() {
    let mut pair = Pair::new(cfg(64), cfg(64), link(), 7);
    let (ch, sh) = pair.connect().expect("connect");
    let acks0 = (
        tx_acks(&mut pair, Peer::Client, ch),
        tx_acks(&mut pair, Peer::Server, sh),
    );
    let start = pair.now;
    let rounds = 400u64;
    converse(&mut pair, ch, sh, rounds);
    let elapsed = pair.now - start;
    let rtt = elapsed / rounds as u32;
    assert!(rtt < Duration::from_micros(3), "round trip {rtt:?}");
    let acks = (
        tx_acks(&mut pair, Peer::Client, ch) - acks0.0,
        tx_acks(&mut pair, Peer::Server, sh) - acks0.1,
    );
    // One ACK per delayed-ACK wait (20 us) at most, each side; every other packet would be
    // rounds / 2 = 200 each.
    let waits = elapsed.as_nanos() as u64 / 20_000 + 2;
    assert!(
        acks.0 <= waits && acks.1 <= waits,
        "acks {acks:?} for {rounds} round trips in {elapsed:?} ({waits} waits)"
    );
    // And every message of both sides is acknowledged in the end (completions reported).
    let until = pair.now + Duration::from_millis(1);
    while pair.now < until && pair.step() {}
    for (p, h) in [(Peer::Client, ch), (Peer::Server, sh)] {
        let mut done = 0;
        let c = pair.endpoint(p).connection(h).unwrap();
        while let Some(e) = c.poll_event() {
            if matches!(e, Event::Acked { .. }) {
                done += 1;
            }
        }
        assert_eq!(done, rounds, "{p:?}: messages acknowledged");
        assert_eq!(c.send_queue_len(), 0);
    }
}

#[test]
fn a_burst_is_acknowledged_at_once() {
    let mut pair = Pair::new(cfg(64), cfg(64), link(), 8);
    let (ch, sh) = pair.connect().expect("connect");
    let acks0 = tx_acks(&mut pair, Peer::Server, sh);
    let c = pair.client.connection(ch).unwrap();
    c.send(bytes::Bytes::from(vec![2u8; 64])).unwrap();
    let sent_at = pair.now;
    // Two packets: the second is sent after the first leaves (no BATCH: one each).
    pair.step();
    pair.client
        .connection(ch)
        .unwrap()
        .send(bytes::Bytes::from(vec![3u8; 64]))
        .unwrap();
    while tx_acks(&mut pair, Peer::Server, sh) == acks0 {
        assert!(pair.step());
    }
    // Acknowledged on the second packet's arrival, not at the 20 us deadline.
    assert!(
        pair.now - sent_at < Duration::from_micros(5),
        "acked after {:?}",
        pair.now - sent_at
    );
}

#[test]
fn a_sender_whose_window_closes_asks_for_an_ack_at_once() {
    // A conversation through a window of one full-size packet (about 11 of these small
    // ones): unacknowledged answers pile up until the window closes. The packet that closes
    // it carries ACK_NOW; without it the sender would stall until the peer's 20 us deadline,
    // every 11 round trips. No BATCH: one packet per message.
    let small = || {
        let mut c = cfg(1);
        c.conn.batch = false;
        c
    };
    let mut pair = Pair::new(small(), small(), link(), 9);
    let (ch, sh) = pair.connect().expect("connect");
    let start: Instant = pair.now;
    let rounds = 400u32;
    converse(&mut pair, ch, sh, u64::from(rounds));
    let rtt = (pair.now - start) / rounds;
    // 1 us of links, plus a little for the immediate ACK; a stall would add ~2 us per round
    // trip on average.
    assert!(rtt < Duration::from_nanos(1500), "mean round trip {rtt:?}");
}
