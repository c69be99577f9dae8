//! Several connections through one endpoint pair, and graceful close under loss.

use std::net::SocketAddr;

use bypass::pmd::sim::LinkConfig;
use bypass::proto::testing::{check_pattern, msg_tag, pattern, Pair, Peer, SERVER_ADDR};
use bypass::proto::{CloseReason, ConnectionHandle, EndpointConfig, Event};

fn lossy() -> LinkConfig {
    LinkConfig {
        loss: 0.05,
        jitter_ns: 4_000,
        duplicate: 0.02,
        ..LinkConfig::default()
    }
}

/// Eight connections carry interleaved traffic both ways; every message reaches the right
/// connection exactly once.
#[test]
fn eight_connections_demultiplex() {
    const N: usize = 8;
    const MSGS: u64 = 30;
    let mut p = Pair::new(
        EndpointConfig::default(),
        EndpointConfig::default(),
        lossy(),
        41,
    );
    let mut cs = Vec::new();
    for _ in 0..N {
        cs.push(
            p.client
                .connect(p.now, SocketAddr::V4(SERVER_ADDR))
                .unwrap(),
        );
    }
    let mut ss: Vec<ConnectionHandle> = Vec::new();
    for _ in 0..100_000 {
        p.step();
        while let Some(h) = p.server.poll_incoming() {
            ss.push(h);
        }
        if ss.len() == N {
            break;
        }
    }
    assert_eq!(ss.len(), N);
    // Pair client i with server j by the server's view of the client's connection id.
    let mut pairs = Vec::new();
    for &c in &cs {
        let cid = p.client.connection(c).unwrap().local_cid();
        let s = *ss
            .iter()
            .find(|&&s| p.server.connection(s).unwrap().remote_cid() == cid)
            .expect("server side");
        pairs.push((c, s));
    }
    // Tag = (connection index, direction, id): a message on the wrong connection fails.
    let tag = |k: usize, dir: u64, id: u64| msg_tag(k as u64, dir, id);
    let mut sent = [[0u64; 2]; N];
    let mut got = [[0u64; 2]; N];
    for _ in 0..2_000_000 {
        for (k, &(c, s)) in pairs.iter().enumerate() {
            for (dir, peer, h) in [(0u64, Peer::Client, c), (1, Peer::Server, s)] {
                let conn = p.endpoint(peer).connection(h).unwrap();
                while sent[k][dir as usize] < MSGS {
                    let id = sent[k][dir as usize];
                    let len = ((id * 7919 + k as u64 * 131) % 20_000) as usize;
                    if conn.send(pattern(tag(k, dir, id), len)).is_err() {
                        break;
                    }
                    sent[k][dir as usize] += 1;
                }
            }
        }
        p.step();
        for (k, &(c, s)) in pairs.iter().enumerate() {
            for (dir, peer, h) in [(0u64, Peer::Server, s), (1, Peer::Client, c)] {
                let g = &mut got[k][dir as usize];
                p.drain(
                    peer,
                    h,
                    |e| assert!(!matches!(e, Event::Closed(_)), "{e:?}"),
                    |m| {
                        assert!(check_pattern(tag(k, dir, m.id), m.as_slice().unwrap()));
                        *g += 1;
                    },
                );
            }
        }
        if got.iter().all(|g| g == &[MSGS, MSGS]) {
            break;
        }
    }
    assert!(got.iter().all(|g| g == &[MSGS, MSGS]), "{got:?}");
    assert_eq!(p.server.stats().accepted, N as u64);
}

/// Close right after queueing messages on a lossy link: the peer gets every message before
/// the close, and both sides end cleanly with everything freed.
#[test]
fn graceful_close_under_loss_delivers_everything_first() {
    let mut p = Pair::new(
        EndpointConfig::default(),
        EndpointConfig::default(),
        lossy(),
        42,
    );
    let (ch, sh) = p.connect().expect("connect");
    let c = p.client.connection(ch).unwrap();
    for id in 0..50u64 {
        c.send(pattern(msg_tag(42, 0, id), (id as usize * 997) % 30_000))
            .unwrap();
    }
    let now = p.now;
    p.client.connection(ch).unwrap().close(now, 5);
    let (mut got, mut ends) = (0, [None, None]);
    let mut got_at_close = None;
    for _ in 0..1_000_000 {
        let more = p.step();
        p.drain(
            Peer::Client,
            ch,
            |e| {
                if let Event::Closed(r) = e {
                    ends[0] = Some(r)
                }
            },
            drop,
        );
        p.drain(
            Peer::Server,
            sh,
            |e| {
                if let Event::Closed(r) = e {
                    ends[1] = Some(r);
                }
            },
            |m| {
                assert!(check_pattern(msg_tag(42, 0, m.id), m.as_slice().unwrap()));
                got += 1;
            },
        );
        if ends[1].is_some() && got_at_close.is_none() {
            got_at_close = Some(got);
        }
        if (ends[0].is_some() && ends[1].is_some()) || !more {
            break;
        }
    }
    assert_eq!(got_at_close, Some(50));
    assert_eq!(
        ends,
        [
            Some(CloseReason::LocalClose(5)),
            Some(CloseReason::PeerClose(5))
        ]
    );
    for _ in 0..10_000 {
        if !p.step() {
            break;
        }
    }
    assert_eq!(p.client.connection_count() + p.server.connection_count(), 0);
    p.c2s.clear();
    p.s2c.clear();
    assert_eq!(
        p.client_pool.stats().in_use + p.server_pool.stats().in_use,
        0
    );
}

/// Thousands of connections through one endpoint pair: every one handshakes, carries a
/// message each way and closes; the timers (drain, acks) of all of them fire from the
/// endpoint's deadline heap and every connection and buffer is freed at the end. Simultaneous hellos overflow the server's
/// bounded hello queue, so this also needs the clients' retries not to come in lockstep.
#[test]
fn thousands_of_connections_share_one_endpoint() {
    const N: usize = 3000;
    // All the first hellos arrive in one burst, beyond the server's bounded hello queue (64):
    // the rest get in on their retries, which are jittered so they don't come in lockstep.
    // (All from the one client address of a pair: lift the per-source limit.)
    let cfg = || EndpointConfig {
        max_connections: 4096,
        max_connections_per_source: 4096,
        ..EndpointConfig::default()
    };
    let mut p = Pair::new(cfg(), cfg(), LinkConfig::default(), 43);
    let cs: Vec<ConnectionHandle> = (0..N)
        .map(|_| {
            p.client
                .connect(p.now, SocketAddr::V4(SERVER_ADDR))
                .unwrap()
        })
        .collect();
    let mut ss: Vec<ConnectionHandle> = Vec::new();
    for _ in 0..1_000_000 {
        p.step();
        while let Some(h) = p.server.poll_incoming() {
            ss.push(h);
        }
        if ss.len() == N {
            break;
        }
    }
    assert_eq!(
        ss.len(),
        N,
        "every connection accepted: {:?}",
        p.server.stats()
    );
    for (k, &c) in cs.iter().enumerate() {
        let conn = p.client.connection(c).unwrap();
        conn.send(pattern(msg_tag(k as u64, 0, 0), 100 + k % 900))
            .unwrap();
    }
    // The server answers each request on the connection it came in on; the client checks the
    // answer is for its request.
    let (mut answered, mut got) = (0usize, vec![false; N]);
    for _ in 0..1_000_000 {
        p.step();
        for &s in &ss {
            let mut reqs = Vec::new();
            p.drain(Peer::Server, s, drop, |m| reqs.push(m.len));
            for len in reqs {
                let conn = p.server.connection(s).unwrap();
                conn.send(pattern(msg_tag(len, 1, 0), len as usize))
                    .unwrap();
                answered += 1;
            }
        }
        for (k, &c) in cs.iter().enumerate() {
            p.drain(Peer::Client, c, drop, |m| {
                let len = (100 + k % 900) as u64;
                assert!(check_pattern(msg_tag(len, 1, 0), m.as_slice().unwrap()));
                got[k] = true;
            });
        }
        if got.iter().all(|&g| g) {
            break;
        }
    }
    assert_eq!(answered, N);
    assert!(got.iter().all(|&g| g), "every client got its answer");
    let now = p.now;
    for &c in &cs {
        p.client.connection(c).unwrap().close(now, 0);
    }
    for _ in 0..1_000_000 {
        let more = p.step();
        for &c in &cs {
            p.drain(Peer::Client, c, drop, drop);
        }
        for &s in &ss {
            p.drain(Peer::Server, s, drop, drop);
        }
        if !more || p.client.connection_count() + p.server.connection_count() == 0 {
            break;
        }
    }
    assert_eq!(p.client.connection_count(), 0, "client connections freed");
    assert_eq!(p.server.connection_count(), 0, "server connections freed");
    p.c2s.clear();
    p.s2c.clear();
    assert_eq!(
        p.client_pool.stats().in_use + p.server_pool.stats().in_use,
        0
    );
}

/// `Endpoint::drain_changed` visits the connections that did something since the last call,
/// not every connection: an idle connection costs a publisher nothing, a busy one is visited
/// once however many packets it handled, a freed one is reported once as `None`.
#[test]
fn drain_changed_visits_only_what_changed() {
    const N: usize = 50;
    // A long idle timeout: no keepalive (idle_timeout / 3) inside the test's idle spans.
    let cfg = || {
        let mut c = EndpointConfig::default();
        c.conn.idle_timeout = std::time::Duration::from_secs(3600);
        c
    };
    let mut p = Pair::new(cfg(), cfg(), LinkConfig::default(), 7);
    // All at once (one by one, each handshake would take its own slice of virtual time and
    // their keepalives, idle_timeout / 3 after each, would never leave a quiet window).
    let cs: Vec<ConnectionHandle> = (0..N)
        .map(|_| {
            p.client
                .connect(p.now, SocketAddr::V4(SERVER_ADDR))
                .unwrap()
        })
        .collect();
    let mut ss = Vec::new();
    while ss.len() < N {
        p.step();
        while let Some(h) = p.server.poll_incoming() {
            ss.push(h);
        }
    }
    let pairs: Vec<(ConnectionHandle, ConnectionHandle)> = cs
        .iter()
        .map(|&c| {
            let cid = p.client.connection(c).unwrap().local_cid();
            let s = *ss
                .iter()
                .find(|&&s| p.server.connection(s).unwrap().remote_cid() == cid)
                .unwrap();
            (c, s)
        })
        .collect();
    let visited = |ep: &mut bypass::proto::Endpoint| {
        let mut v = Vec::new();
        ep.drain_changed(|h, c| v.push((h, c.is_some())));
        v
    };
    // Every connection was new (touched), once each.
    let first = visited(&mut p.server);
    assert_eq!(first.len(), N, "{first:?}");
    // Idle for 10 s of virtual time, drained after every step as a publisher's tick would:
    // once the handshakes' last ACKs are in, nothing is visited at all.
    let end = p.now + std::time::Duration::from_millis(100);
    while p.step_until(end) {}
    let _ = visited(&mut p.server);
    let end = p.now + std::time::Duration::from_secs(10);
    let (mut visits, mut steps) = (0usize, 0usize);
    loop {
        let more = p.step_until(end);
        visits += visited(&mut p.server).len();
        steps += 1;
        if !more {
            break;
        }
    }
    assert_eq!(p.now, end);
    println!("10 s idle: {steps} steps, {visits} connections visited");
    assert_eq!(visits, 0, "idle connections were visited");
    // Traffic on one connection: that connection once however many packets it handled,
    // and besides it only those whose packet counts moved (a keepalive that was on its way).
    let _ = visited(&mut p.server);
    let counts = |p: &Pair| -> Vec<(u64, u64)> {
        pairs
            .iter()
            .map(|&(_, s)| {
                let st = p.server.connection_ref(s).unwrap().stats();
                (st.rx_packets, st.tx_packets)
            })
            .collect()
    };
    let before = counts(&p);
    let (c, s) = pairs[17];
    for k in 0..20u64 {
        p.client
            .connection(c)
            .unwrap()
            .send(pattern(k, 3000))
            .unwrap();
    }
    let mut got = 0;
    while got < 20 {
        p.step();
        while let Some(m) = p.server.connection(s).unwrap().poll_recv() {
            assert!(check_pattern(m.id, m.as_slice().unwrap()));
            got += 1;
        }
    }
    let after = counts(&p);
    let mut moved: Vec<(ConnectionHandle, bool)> = (0..N)
        .filter(|&k| before[k] != after[k])
        .map(|k| (pairs[k].1, true))
        .collect();
    let mut v = visited(&mut p.server);
    v.sort_by_key(|x| x.0 .0);
    moved.sort_by_key(|x| x.0 .0);
    assert_eq!(moved, vec![(s, true)], "other connections had traffic");
    assert_eq!(v, moved, "visited other than the connection that moved");
    // A connection reset by the peer and freed: reported once, as gone.
    let (c, s) = pairs[3];
    p.client.connection(c).unwrap().reset(p.now, 0);
    for _ in 0..10_000 {
        p.step();
        let _ = p
            .server
            .connection(s)
            .map(|c| while c.poll_event().is_some() {});
        if p.server.connection_ref(s).is_none() {
            break;
        }
    }
    assert!(
        p.server.connection_ref(s).is_none(),
        "the reset connection was not freed"
    );
    let v = visited(&mut p.server);
    assert!(
        v.contains(&(s, false)),
        "the freed slot was not reported: {v:?}"
    );
    assert!(v.len() <= 2, "{v:?}");
}
