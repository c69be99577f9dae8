//! A wedged link: a peer leaves a ring inconsistent (an index it rewrote and restored too
//! late, one it keeps), so that no frame can move on it any more. The port counts the
//! inconsistency once, not once per burst, and the control thread tears the connection down
//! with the reason; the client reconnects, the server accepts again, traffic flows.
//!
//! A real client and a real server `Memif` in this process; the test drives both ports from
//! its own thread and writes the rings' indexes as a hostile peer would.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::ring::Ring;
use super::{Conn, ControlError, Memif, MemifConfig, Role};
use crate::mem::{HugePages, PktBuf};
use crate::pmd::Port;
use crate::test_harness as harness;

/// 16 descriptors per ring: the client refills in batches of 2.
const LOG2: u8 = 4;

struct Pair {
    server: Memif,
    client: Memif,
    sp: super::MemifPort,
    cp: super::MemifPort,
    sock: String,
}

fn pair(tag: &str) -> Pair {
    let sock = format!("/tmp/bpx-wedge-{tag}-{}.sock", std::process::id());
    let cfg = |role| {
        let mut c = MemifConfig::new(&sock, role, 0);
        c.interfaces[0].log2_ring_size = LOG2;
        c.interfaces[0].hugepages = HugePages::Never;
        c.reconnect_interval = Duration::from_millis(20);
        c
    };
    let server = Memif::new(cfg(Role::Server)).unwrap();
    let client = Memif::new(cfg(Role::Client)).unwrap();
    let mut sp = server.port(0, 0).unwrap();
    let mut cp = client.port(0, 0).unwrap();
    harness::settle("both memif ports up", || {
        sp.link().is_up() && cp.link().is_up()
    });
    Pair {
        server,
        client,
        sp,
        cp,
        sock,
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.sock);
    }
}

/// The client's live connection (its rings: `queues[0].tx` is client-to-server, `rx`
/// server-to-client); held, so the rings stay mapped while the test writes them.
fn client_conn(m: &Memif) -> Arc<Conn> {
    m.shared.ifaces[0]
        .conn
        .lock()
        .unwrap()
        .clone()
        .expect("the client is connected")
}

fn frame(port: &mut super::MemifPort, byte: u8) -> PktBuf {
    let mut b = port.alloc_tx().unwrap();
    b.extend_from_slice(&[byte; 60]).unwrap();
    b
}

/// `from` sends one frame, `to` receives it, intact; both ports polled until it arrives.
fn one_frame(from: &mut super::MemifPort, to: &mut super::MemifPort, byte: u8) {
    let mut out = vec![frame(from, byte)];
    let mut got = Vec::new();
    harness::settle(&format!("frame {byte:#x} across the link"), || {
        if !out.is_empty() {
            from.tx_burst(&mut out);
        }
        to.rx_burst(&mut got, 32);
        !got.is_empty()
    });
    assert_eq!(got.len(), 1);
    assert!(
        got[0].len() == 60 && got[0].data().iter().all(|&b| b == byte),
        "frame {byte:#x}: got {} bytes {:x?}",
        got[0].len(),
        &got[0].data()[..got[0].len().min(16)]
    );
}

/// The server's transmit ring wedged by a transient, plausible head: the client (the peer)
/// has 15 buffers posted (it consumed one and refills in pairs), writes head + 1 for a
/// moment, during which the server fills 16 buffers (the 16th one the client never posted
/// again), and puts its head back. From then on the server's tail is past the client's
/// head: before the fix, every transmit counted an rx_error and nothing moved again.
#[test]
fn memif_server_tears_down_wedged_tx_ring() {
    let mut p = pair("srvtx");
    let conn = client_conn(&p.client);
    let s2c: Ring = conn.queues[0].rx;
    assert_eq!(
        s2c.head(Ordering::Acquire),
        16,
        "the client posted a full ring"
    );
    one_frame(&mut p.sp, &mut p.cp, 0x11);
    assert_eq!(
        (s2c.head(Ordering::Acquire), s2c.tail(Ordering::Acquire)),
        (16, 1),
        "15 buffers posted (the client refills in pairs)"
    );

    // The hostile moment: head 17 (plausible: 16 ahead of the server's tail).
    s2c.set_head(17, Ordering::Release);
    let mut out: Vec<_> = (0..16).map(|_| frame(&mut p.sp, 0x22)).collect();
    assert_eq!(
        p.sp.tx_burst(&mut out),
        16,
        "the server fills up to head 17"
    );
    s2c.set_head(16, Ordering::Release); // put back
    assert_eq!(
        s2c.tail(Ordering::Acquire),
        17,
        "the server's tail is past the head"
    );

    // From here no frame can move on the server's transmit ring. The server keeps trying
    // (a transport retransmits); the client's port is not polled, so only the server sees
    // it.
    let errors0 = p.sp.stats().rx_errors;
    let mut bursts = 0u64;
    let mut out = vec![frame(&mut p.sp, 0x33)];
    let took = harness::wait_for(
        "the server to tear down the link whose transmit ring is wedged",
        harness::SETTLE,
        || {
            if p.sp.tx_burst(&mut out) == 0 {
                bursts += 1;
            }
            !p.sp.link().is_up()
        },
    );
    let errors = p.sp.stats().rx_errors - errors0;
    println!("wedged: {bursts} bursts, {errors} rx_errors counted, teardown: {took:?}");
    took.unwrap_or_else(|e| panic!("{e} ({bursts} bursts, rx_errors +{errors})"));
    assert!(bursts > 1, "the server kept trying");
    assert_eq!(
        errors, 1,
        "one inconsistency, counted once ({bursts} bursts)"
    );
    drop(conn);

    // Why, on both sides.
    assert_eq!(p.server.rings_wedged(0), 1);
    assert_eq!(p.client.rings_wedged(0), 0);
    let e = p.server.last_error(0);
    println!("server: {e:?}");
    assert!(
        matches!(
            e,
            Some(ControlError::RingWedged {
                ring: "s2c",
                queue: 0,
                what: "index out of range",
                ms,
            }) if ms >= 1000
        ),
        "server's last error {e:?}"
    );
    back_up(&mut p, "s2c ring 0 wedged: index out of range");
}

/// After a teardown: the client reconnects, the server accepts; the side that did not
/// detect it was told why (`reason`); frames flow both ways again.
fn back_up(p: &mut Pair, reason: &str) {
    harness::settle("both memif ports up again", || {
        p.sp.link().is_up() && p.cp.link().is_up()
    });
    let told = [p.server.last_error(0), p.client.last_error(0)]
        .into_iter()
        .flatten()
        .find(|e| matches!(e, ControlError::PeerDisconnect(_)));
    println!("peer told: {told:?}");
    assert!(
        matches!(&told, Some(ControlError::PeerDisconnect(r)) if r.contains(reason)),
        "the peer's last error {told:?} does not say {reason:?}"
    );
    assert_eq!(p.server.connects(0), 2);
    assert_eq!(p.client.connects(0), 2);
    one_frame(&mut p.sp, &mut p.cp, 0x44);
    one_frame(&mut p.cp, &mut p.sp, 0x55);
}

/// The client's receive ring wedged by a tail the server (the peer) writes beyond what the
/// client posted and keeps there: the client refuses the claim on every poll, counts it
/// once, and after `wedge_timeout` its control thread tears the link down and reconnects.
#[test]
fn memif_client_tears_down_wedged_rx_ring() {
    let mut p = pair("clirx");
    let conn = client_conn(&p.client);
    let s2c: Ring = conn.queues[0].rx;
    one_frame(&mut p.sp, &mut p.cp, 0x11);
    s2c.set_tail(1 + 40, Ordering::Release); // kept: the server sends nothing more
    let errors0 = p.cp.stats().rx_errors;
    let mut polls = 0u64;
    let mut got = Vec::new();
    harness::settle(
        "the client to tear down the link whose receive ring is wedged",
        || {
            p.cp.rx_burst(&mut got, 32);
            polls += 1;
            !p.cp.link().is_up()
        },
    );
    assert!(got.is_empty(), "nothing taken from the wedged ring");
    let errors = p.cp.stats().rx_errors - errors0;
    println!("client: {polls} polls, {errors} rx_errors");
    assert_eq!(errors, 1, "one inconsistency, counted once ({polls} polls)");
    drop(conn);
    assert_eq!(p.client.rings_wedged(0), 1);
    assert_eq!(p.server.rings_wedged(0), 0);
    let e = p.client.last_error(0);
    println!("client: {e:?}");
    assert!(
        matches!(
            e,
            Some(ControlError::RingWedged {
                ring: "s2c",
                what: "index out of range",
                ..
            })
        ),
        "client's last error {e:?}"
    );
    back_up(&mut p, "s2c ring 0 wedged: index out of range");
}

/// A posted buffer outside the client's regions, kept at the server's next transmit slot:
/// the server refuses to write there and waits on it (every burst); counted once, torn
/// down after `wedge_timeout`; the new connection's ring is posted afresh.
#[test]
fn memif_server_tears_down_tx_ring_with_buffer_outside_regions() {
    let mut p = pair("outside");
    let conn = client_conn(&p.client);
    let s2c: Ring = conn.queues[0].rx;
    one_frame(&mut p.sp, &mut p.cp, 0x11);
    let mut d = s2c.read_desc(1);
    d.offset = u32::MAX - 100;
    s2c.write_desc(1, d);
    let errors0 = p.sp.stats().rx_errors;
    let mut bursts = 0u64;
    let mut out = vec![frame(&mut p.sp, 0x33)];
    harness::settle(
        "the server to tear down the link whose next posted buffer is outside the regions",
        || {
            if p.sp.tx_burst(&mut out) == 0 {
                bursts += 1;
            }
            !p.sp.link().is_up()
        },
    );
    assert_eq!(out.len(), 1, "the frame was never written");
    let errors = p.sp.stats().rx_errors - errors0;
    assert_eq!(errors, 1, "counted once over {bursts} bursts");
    drop(conn);
    let e = p.server.last_error(0);
    println!("server: {e:?}");
    assert!(
        matches!(
            e,
            Some(ControlError::RingWedged {
                ring: "s2c",
                what: "posted buffer outside the regions",
                ..
            })
        ),
        "server's last error {e:?}"
    );
    assert_eq!(p.server.rings_wedged(0), 1);
    back_up(
        &mut p,
        "s2c ring 0 wedged: posted buffer outside the regions",
    );
}

/// A transient inconsistency that the peer puts back well within `wedge_timeout` (here an
/// implausible head on the server's receive ring for 100 ms, polled throughout): counted
/// once, no teardown, and frames go through both ways once it is back.
#[test]
fn memif_transient_bad_index_is_counted_once_and_not_torn_down() {
    let mut p = pair("transient");
    let conn = client_conn(&p.client);
    let c2s: Ring = conn.queues[0].tx;
    one_frame(&mut p.cp, &mut p.sp, 0x11);
    let head = c2s.head(Ordering::Acquire);
    assert_eq!(head, 1);
    c2s.set_head(head ^ 0x8000, Ordering::Release);
    let errors0 = p.sp.stats().rx_errors;
    let mut got = Vec::new();
    let t0 = std::time::Instant::now();
    let mut polls = 0u64;
    while t0.elapsed() < Duration::from_millis(100) {
        p.sp.rx_burst(&mut got, 32);
        polls += 1;
    }
    c2s.set_head(head, Ordering::Release); // put back
    assert!(got.is_empty());
    // Idle polls for two wedge timeouts: the ring is consistent again.
    let t0 = std::time::Instant::now();
    while t0.elapsed() < 2 * MemifConfig::new("x", Role::Server, 0).wedge_timeout {
        p.sp.rx_burst(&mut got, 32);
        std::thread::sleep(Duration::from_millis(1));
    }
    let errors = p.sp.stats().rx_errors - errors0;
    println!("transient: {polls} polls, {errors} rx_errors");
    assert_eq!(errors, 1, "counted once over {polls} polls");
    assert!(p.sp.link().is_up() && p.cp.link().is_up(), "not torn down");
    assert_eq!(p.server.rings_wedged(0) + p.client.rings_wedged(0), 0);
    assert_eq!(p.server.connects(0), 1);
    drop(conn);
    one_frame(&mut p.cp, &mut p.sp, 0x22);
    one_frame(&mut p.sp, &mut p.cp, 0x33);
}

/// A peer that puts back an older value of an index we own (here the server's tail of the
/// server-to-client ring, set back to what the client had already taken, after the server
/// filled every buffer posted) leaves both sides waiting with rings that look healthy: the
/// client sees nothing new, the server a full ring. No index is out of range, so nothing
/// can be detected as a wedge. The server writes its own tail again when it finds the ring
/// full (counted once per rewrite), and the frames it had written reach the client.
#[test]
fn memif_server_writes_its_tail_again_after_the_peer_put_back_an_old_one() {
    let mut p = pair("owntail");
    let conn = client_conn(&p.client);
    let s2c: Ring = conn.queues[0].rx;
    let mut out: Vec<_> = (0..16).map(|_| frame(&mut p.sp, 0x22)).collect();
    assert_eq!(p.sp.tx_burst(&mut out), 16, "every posted buffer filled");
    assert_eq!(s2c.tail(Ordering::Acquire), 16);
    s2c.set_tail(0, Ordering::Release); // the peer puts back the tail it read before
    let errors0 = p.sp.stats().rx_errors;
    let mut got = Vec::new();
    let mut out = vec![frame(&mut p.sp, 0x33)];
    harness::settle(
        "the 16 frames the server had written, at the client",
        || {
            if !out.is_empty() {
                p.sp.tx_burst(&mut out);
            }
            p.cp.rx_burst(&mut got, 32);
            got.len() >= 16
        },
    );
    assert!(got[..16]
        .iter()
        .all(|f| f.len() == 60 && f.data().iter().all(|&b| b == 0x22)));
    assert_eq!(
        p.sp.stats().rx_errors - errors0,
        1,
        "one rewrite, counted once"
    );
    harness::settle("the next frame at the client", || {
        if !out.is_empty() {
            p.sp.tx_burst(&mut out);
        }
        p.cp.rx_burst(&mut got, 32);
        got.len() == 17
    });
    assert!(got[16].data().iter().all(|&b| b == 0x33));
    drop(conn);
    assert_eq!(p.server.rings_wedged(0) + p.client.rings_wedged(0), 0);
    assert_eq!(p.server.connects(0), 1, "no teardown");
}
