//! One 1 GiB message under 1 % loss (release builds; debug builds skip it as too slow:
//! `cargo test --release --test proto -- large::`, also run by scripts/test-proto.sh).

use bypass::pmd::sim::LinkConfig;
use bypass::proto::testing::{run_transfer, Pair};
use bypass::proto::EndpointConfig;

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "1 GiB: run in release (scripts/test-proto.sh)"
)]
fn one_gib_message_under_one_percent_loss() {
    let link = LinkConfig {
        loss: 0.01,
        jitter_ns: 2_000,
        ..LinkConfig::default()
    };
    let mut p = Pair::new(
        EndpointConfig::default(),
        EndpointConfig::default(),
        link,
        0x1_6170,
    );
    let hs = p.connect().expect("connect");
    let t = std::time::Instant::now();
    let r = run_transfer(&mut p, hs, [&[1 << 30], &[]], 42, u64::MAX, u64::MAX).unwrap();
    let c = p.client.connection(hs.0).unwrap().stats();
    println!(
        "1 GiB in {:.3} s virtual, {:.2} s wall; client {c:?}; c2s {:?}",
        r.elapsed_ns as f64 / 1e9,
        t.elapsed().as_secs_f64(),
        p.c2s.stats()
    );
    assert_eq!(r.received, [1, 0]);
    assert!(c.retransmits > 0);
}

/// Messages larger than the 1 MiB a connection may allocate ahead (their buffers grow with
/// what arrives), several at once, under loss and reordering: the holes that losses leave
/// count against the credit, and an honest sender (each message in offset order) is never
/// held up by them; every buffer is given back at the end.
#[test]
fn growing_buffers_under_loss_and_reordering() {
    let link = LinkConfig {
        loss: 0.02,
        jitter_ns: 5_000,
        reorder: 0.05,
        reorder_delay_ns: 30_000,
        ..LinkConfig::default()
    };
    let mut p = Pair::new(
        EndpointConfig::default(),
        EndpointConfig::default(),
        link,
        0x6a9,
    );
    let hs = p.connect().expect("connect");
    let sizes = [3 << 20, 5 << 20, 100_000, 2 << 20, 1 << 20];
    let r = run_transfer(&mut p, hs, [&sizes, &sizes[..2]], 43, u64::MAX, 20_000_000).unwrap();
    let s = p.server.connection(hs.1).unwrap().stats();
    println!(
        "in {:.3} s virtual; server {s:?}",
        r.elapsed_ns as f64 / 1e9
    );
    assert_eq!(r.received, [5, 2]);
    assert_eq!(s.rx_alloc_failed, 0);
    assert_eq!(p.server.rx_buffered(), 0);
    assert_eq!(p.client.rx_buffered(), 0);
}
