//! The endpoint's readiness event list (`Endpoint::pop_readable`) and held slots
//! (`Endpoint::hold`), in virtual time.

use std::collections::HashSet;
use std::time::Duration;

use bypass::pmd::sim::LinkConfig;
use bypass::proto::testing::Pair;
use bypass::proto::{ConnectionHandle, Endpoint, EndpointConfig};

fn pair() -> Pair {
    Pair::new(
        EndpointConfig::default(),
        EndpointConfig::default(),
        LinkConfig::default(),
        7,
    )
}

fn drain(ep: &mut Endpoint) -> Vec<ConnectionHandle> {
    let mut v = Vec::new();
    while let Some(h) = ep.pop_readable() {
        v.push(h);
    }
    v
}

/// Of 40 open connections, the three that got a message are listed, each once however many
/// messages it got, and nothing else; after they are taken the list is empty until
/// something new arrives.
#[test]
fn only_connections_that_got_something_are_listed() {
    let mut p = pair();
    let conns: Vec<_> = (0..40).map(|_| p.connect().expect("connected")).collect();
    p.step_until(p.now + Duration::from_millis(50));
    drain(&mut p.server);
    drain(&mut p.client);
    let picked = [3usize, 17, 38];
    for &k in &picked {
        let c = p.client.connection(conns[k].0).unwrap();
        for _ in 0..3 {
            c.send(bytes::Bytes::from_static(b"hello")).unwrap();
        }
    }
    let want: HashSet<ConnectionHandle> = picked.iter().map(|&k| conns[k].1).collect();
    let limit = p.now + Duration::from_secs(1);
    while p.now < limit
        && want
            .iter()
            .any(|&h| p.server.connection_ref(h).unwrap().stats().rx_messages < 3)
    {
        p.step();
    }
    let listed = drain(&mut p.server);
    assert_eq!(
        listed.iter().copied().collect::<HashSet<_>>(),
        want,
        "listed {listed:?}"
    );
    assert_eq!(listed.len(), want.len(), "each listed once: {listed:?}");
    assert!(p.server.pop_readable().is_none());
    // Unread messages alone do not list a connection again; requeue does, only if it has
    // something.
    assert!(p.server.requeue_readable(conns[3].1));
    assert!(!p.server.requeue_readable(conns[4].1));
    assert_eq!(drain(&mut p.server), vec![conns[3].1]);
}

/// A held slot is not given to a new connection after its connection is freed; released,
/// it is.
#[test]
fn a_held_slot_is_not_reused_until_released() {
    let mut p = pair();
    let (c, _) = p.connect().expect("connected");
    assert!(p.client.hold(c));
    let now = p.now;
    p.client.connection(c).unwrap().reset(now, 0);
    let limit = p.now + Duration::from_secs(5);
    while p.client.connection_ref(c).is_some() && p.now < limit {
        if let Some(conn) = p.client.connection(c) {
            while conn.poll_event().is_some() {}
        }
        p.step();
    }
    assert!(
        p.client.connection_ref(c).is_none(),
        "the reset connection was not freed within 5 s of virtual time"
    );
    assert!(p.client.is_held(c));
    let (c2, _) = p.connect().expect("connected again");
    assert_ne!(c2, c, "a held slot was given to a new connection");
    p.client.release(c);
    assert!(!p.client.is_held(c));
    let (c3, _) = p.connect().expect("connected a third time");
    assert_eq!(c3, c, "the released slot is the next one free");
}
