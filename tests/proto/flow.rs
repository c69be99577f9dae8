//! Flow control, posted receive targets, keep-alive.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bypass::pmd::sim::LinkConfig;
use bypass::proto::testing::{check_pattern, pattern, Pair, Peer};
use bypass::proto::{
    ConnectionConfig, EndpointConfig, Event, MsgData, RecvTarget, SendError, State,
};

fn cfg(conn: ConnectionConfig) -> EndpointConfig {
    EndpointConfig {
        conn,
        ..EndpointConfig::default()
    }
}

/// A receiver that stops reading: the sender hits its credit and then its queue bound
/// (`WouldBlock`), and the receiver holds no more packet buffers than its window allows.
/// Reading again drains everything.
#[test]
fn credit_bounds_receiver_memory_and_backpressures_sender() {
    let window = 64 * 1024;
    let conn = ConnectionConfig {
        rx_window: window,
        max_send_msgs: 256,
        ..ConnectionConfig::default()
    };
    let mut p = Pair::new(cfg(conn.clone()), cfg(conn), LinkConfig::default(), 21);
    let (ch, sh) = p.connect().expect("connect");
    let msg = pattern(5, 1000);
    let mut sent = 0u64;
    let mut blocked = false;
    for _ in 0..20_000 {
        let c = p.client.connection(ch).unwrap();
        loop {
            match c.send(msg.clone()) {
                Ok(_) => sent += 1,
                Err(SendError::WouldBlock) => {
                    blocked = true;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        p.step();
        p.drain(Peer::Client, ch, drop, drop);
        // The server application does not read.
    }
    assert!(blocked, "sender never saw backpressure");
    // Frames crossing the client-to-server link are client-pool buffers (the link hands the
    // sender's buffer to the receiver), so the server's held messages show in that pool.
    let held = p.client_pool.stats().in_use;
    let queued = p.client.connection(ch).unwrap().send_queue_len();
    println!(
        "sent {sent}, server holds {held} buffers, {queued} queued at the sender, window {window}"
    );
    assert!(held > 0);
    // Each held message is one buffer of <= 1000 payload bytes: at most window/1000 (+ a
    // handful in flight).
    assert!(held <= window / 1000 + 8, "server holds {held} buffers");
    // Read everything; the rest flows.
    let mut got = 0u64;
    for _ in 0..200_000 {
        p.step();
        p.drain(Peer::Client, ch, drop, drop);
        p.drain(Peer::Server, sh, drop, |m| {
            assert!(check_pattern(5, m.as_slice().unwrap()));
            got += 1;
        });
        if got == sent {
            break;
        }
    }
    assert_eq!(got, sent);
}

#[derive(Debug, Clone)]
struct VecTarget(Arc<Mutex<Vec<u8>>>);

impl RecvTarget for VecTarget {
    fn capacity(&self) -> u64 {
        self.0.lock().unwrap().len() as u64
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) {
        let o = offset as usize;
        self.0.lock().unwrap()[o..o + data.len()].copy_from_slice(data);
    }
}

/// A multi-packet message lands in a posted target; a single-packet one does not use it.
#[test]
fn posted_target_receives_multi_packet_message() {
    let link = LinkConfig {
        loss: 0.05,
        jitter_ns: 3000,
        ..LinkConfig::default()
    };
    let mut p = Pair::new(
        EndpointConfig::default(),
        EndpointConfig::default(),
        link,
        22,
    );
    let (ch, sh) = p.connect().expect("connect");
    let mem = Arc::new(Mutex::new(vec![0u8; 300_000]));
    p.server
        .connection(sh)
        .unwrap()
        .post_target(Box::new(VecTarget(mem.clone())))
        .unwrap();
    let c = p.client.connection(ch).unwrap();
    c.send(pattern(9, 10)).unwrap();
    c.send(pattern(10, 250_000)).unwrap();
    let mut kinds = Vec::new();
    for _ in 0..100_000 {
        p.step();
        p.drain(Peer::Server, sh, drop, |m| {
            kinds.push(match &m.data {
                MsgData::Packet(b) => {
                    assert!(check_pattern(9, b));
                    "packet"
                }
                MsgData::Target(_) => {
                    assert_eq!(m.len, 250_000);
                    assert!(check_pattern(10, &mem.lock().unwrap()[..250_000]));
                    "target"
                }
                MsgData::Buffer(_) => "buffer",
                MsgData::Segments(_) => "segments",
            })
        });
        if kinds.len() == 2 {
            break;
        }
    }
    kinds.sort();
    assert_eq!(kinds, ["packet", "target"]);
}

/// An idle but healthy connection outlives many idle timeouts (keep-alive probes).
#[test]
fn idle_connection_stays_up_with_keepalives() {
    let conn = ConnectionConfig {
        idle_timeout: Duration::from_millis(10),
        ..ConnectionConfig::default()
    };
    let mut p = Pair::new(cfg(conn.clone()), cfg(conn), LinkConfig::default(), 23);
    let (ch, sh) = p.connect().expect("connect");
    let end = p.now + Duration::from_millis(200);
    while p.now < end {
        assert!(p.step());
        p.drain(
            Peer::Client,
            ch,
            |e| assert!(!matches!(e, Event::Closed(_)), "{e:?}"),
            drop,
        );
        p.drain(
            Peer::Server,
            sh,
            |e| assert!(!matches!(e, Event::Closed(_)), "{e:?}"),
            drop,
        );
    }
    assert_eq!(p.client.connection(ch).unwrap().state(), State::Established);
    assert_eq!(p.server.connection(sh).unwrap().state(), State::Established);
}
