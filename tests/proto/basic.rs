//! Deterministic protocol scenarios over the simulated link.

use std::time::Duration;

use bypass::pmd::sim::LinkConfig;
use bypass::proto::testing::{run_transfer, Pair, Peer};
use bypass::proto::{CloseReason, EndpointConfig, Event};

fn pair(link: LinkConfig, seed: u64) -> Pair {
    Pair::new(
        EndpointConfig::default(),
        EndpointConfig::default(),
        link,
        seed,
    )
}

#[test]
fn handshake_and_small_messages_both_ways() {
    let mut p = pair(LinkConfig::default(), 1);
    let hs = p.connect().expect("connect");
    let sizes: Vec<usize> = (0..50).map(|i| i * 37).collect();
    let r = run_transfer(&mut p, hs, [&sizes, &sizes], 1, 1_000_000_000, 1_000_000).unwrap();
    println!("{r:?}");
    assert_eq!(r.received, [50, 50]);
    assert_eq!(p.client.stats().rx_malformed, 0);
}

#[test]
fn multi_packet_messages() {
    let mut p = pair(LinkConfig::default(), 2);
    let hs = p.connect().expect("connect");
    let sizes = [0usize, 1, 1412, 1413, 5000, 100_000, 1 << 20];
    let r = run_transfer(
        &mut p,
        hs,
        [&sizes, &sizes[..3]],
        2,
        10_000_000_000,
        1_000_000,
    )
    .unwrap();
    assert_eq!(r.received, [7, 3]);
}

#[test]
fn lossy_link_recovers() {
    let link = LinkConfig {
        loss: 0.1,
        jitter_ns: 5_000,
        duplicate: 0.05,
        corrupt: 0.02,
        ..LinkConfig::default()
    };
    let mut p = pair(link, 3);
    let hs = p.connect().expect("connect");
    let sizes: Vec<usize> = (0..100).map(|i| (i * 7919) % 50_000).collect();
    let r = run_transfer(&mut p, hs, [&sizes, &sizes], 3, 60_000_000_000, 5_000_000).unwrap();
    assert_eq!(r.received, [100, 100]);
    let c = p.client.connection(hs.0).unwrap().stats();
    println!(
        "client {c:?} link {:?} bad frames {}",
        p.c2s.stats(),
        p.bad_frames
    );
    assert!(c.retransmits > 0);
}

#[test]
fn graceful_close_frees_everything() {
    let mut p = pair(LinkConfig::default(), 4);
    let (ch, sh) = p.connect().expect("connect");
    let sizes = [10usize, 20_000];
    run_transfer(
        &mut p,
        (ch, sh),
        [&sizes, &sizes],
        4,
        1_000_000_000,
        100_000,
    )
    .unwrap();
    let now = p.now;
    p.client.connection(ch).unwrap().close(now, 7);
    let mut ends = [None, None];
    for _ in 0..100_000 {
        p.step();
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
                    ends[1] = Some(r)
                }
            },
            drop,
        );
        if ends[0].is_some() && p.server.connection_count() == 0 && p.client.connection_count() == 0
        {
            break;
        }
    }
    assert_eq!(
        ends,
        [
            Some(CloseReason::LocalClose(7)),
            Some(CloseReason::PeerClose(7))
        ]
    );
    assert_eq!(p.client.connection_count(), 0);
    assert_eq!(p.server.connection_count(), 0);
    assert_eq!(p.client_pool.stats().in_use, 0);
    assert_eq!(p.server_pool.stats().in_use, 0);
    let _ = Duration::ZERO;
}
