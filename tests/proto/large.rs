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
