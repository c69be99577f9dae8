//! Property tests: for any seed and any link impairment within bounds, random messages in
//! both directions arrive exactly once with identical bytes.
//!
//! Cases: `PROPTEST_CASES` (default 8 here; scripts/test.sh runs 256 in its own step).

use bypass::pmd::sim::{GilbertElliott, LinkConfig};
use bypass::proto::testing::{run_transfer, Pair};
use bypass::proto::{ConnectionConfig, EndpointConfig};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
}

/// Mostly small messages, some multi-packet, a few up to 4 MiB.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        60 => 0usize..1500,
        30 => 1500usize..100_000,
        8 => 100_000usize..1_000_000,
        2 => 1_000_000usize..=4 << 20,
    ]
}

#[derive(Debug, Clone)]
struct Impairment {
    loss: f64,
    burst: bool,
    jitter_ns: u64,
    duplicate: f64,
    reorder: f64,
    corrupt: f64,
}

fn impairment() -> impl Strategy<Value = Impairment> {
    (
        0.0..0.2f64,
        any::<bool>(),
        0u64..20_000,
        0.0..0.05f64,
        0.0..0.1f64,
        0.0..0.03f64,
    )
        .prop_map(
            |(loss, burst, jitter_ns, duplicate, reorder, corrupt)| Impairment {
                loss,
                burst,
                jitter_ns,
                duplicate,
                reorder,
                corrupt,
            },
        )
}

fn link(i: &Impairment) -> LinkConfig {
    LinkConfig {
        delay_ns: 10_000,
        jitter_ns: i.jitter_ns,
        loss: i.loss,
        burst: i.burst.then_some(GilbertElliott {
            p_good_to_bad: 0.01,
            p_bad_to_good: 0.3,
            loss_good: 0.0,
            loss_bad: 0.5,
        }),
        duplicate: i.duplicate,
        reorder: i.reorder,
        reorder_delay_ns: 30_000,
        corrupt: i.corrupt,
        ..LinkConfig::default()
    }
}

fn cfg(ordered: bool) -> EndpointConfig {
    EndpointConfig {
        conn: ConnectionConfig {
            ordered,
            idle_timeout: std::time::Duration::from_secs(30),
            max_probes: 30,
            ..ConnectionConfig::default()
        },
        ..EndpointConfig::default()
    }
}

fn transfer(
    seed: u64,
    imp: &Impairment,
    a: &[usize],
    b: &[usize],
    ordered: bool,
) -> Result<(), String> {
    let mut p = Pair::new(cfg(ordered), cfg(ordered), link(imp), seed);
    let hs = p.connect().ok_or("handshake failed")?;
    let r = run_transfer(&mut p, hs, [a, b], seed, 600_000_000_000, 50_000_000)?;
    if ordered {
        for dir in 0..2 {
            if r.order[dir].windows(2).any(|w| w[0] > w[1]) {
                return Err(format!("dir {dir}: out of order with ordered delivery"));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn messages_arrive_exactly_once_intact(
        seed in any::<u64>(),
        imp in impairment(),
        a in prop::collection::vec(size(), 100..300),
        b in prop::collection::vec(size(), 100..300),
        ordered in any::<bool>(),
    ) {
        if let Err(e) = transfer(seed, &imp, &a, &b, ordered) {
            panic!("seed {seed:#x} {imp:?} ordered {ordered}: {e}");
        }
    }
}
