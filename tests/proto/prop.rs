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

/// Fresh connections `transfer` tries before it gives up (each up to 8 handshake attempts):
/// at the property's worst loss (~20 % with bursts, 3 % corruption) one fails now and then.
const HANDSHAKE_TRIES: usize = 10;

fn transfer(
    seed: u64,
    imp: &Impairment,
    a: &[usize],
    b: &[usize],
    ordered: bool,
) -> Result<(), String> {
    let mut p = Pair::new(cfg(ordered), cfg(ordered), link(imp), seed);
    // A handshake may run out of its attempts under heavy loss (`HandshakeTimeout`, its
    // specified end); connect again, as `Stack::connect` does for all of its timeout.
    let hs = (0..HANDSHAKE_TRIES)
        .find_map(|_| p.connect())
        .ok_or("handshake failed on every try")?;
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

/// Found by CI's property run on 2026-12-08 at bb94fdb (proptest's minimal failing input):
/// with ordered delivery under this impairment, the server sees all 271 of its messages
/// acknowledged while the client has delivered 19 of them, and the transfer stalls until the
/// 600 s (virtual) timeout: a message acknowledged and never delivered. Unordered, the same
/// case delivered 270 of 271: message 19 (2,251,619 bytes) never completed though every
/// packet was acknowledged. The cause: a single-bit flip shortened a frame's UDP length and
/// the UDP checksum passed it by chance (the length is summed twice), so the transport took
/// and acknowledged a truncated DATA packet. Decapsulation (here `wire::frame::decap`, in the
/// stack the net layer's `check_udp`) now refuses a UDP length other than the IPv4 payload's.
#[test]
fn regression_ordered_acked_undelivered() {
    let imp = Impairment {
        loss: 0.0577355097343462,
        burst: true,
        jitter_ns: 13166,
        duplicate: 0.00539028264674154,
        reorder: 0.04316669119222438,
        corrupt: 0.02404494682993853,
    };
    const A: [usize; 100] = [
        92373, 20, 587, 29164, 458901, 12411, 194, 2673084, 66365, 718, 1318, 0, 56335, 55255,
        80864, 55593, 1122, 1257, 752, 482, 1139, 545718, 1407, 1205, 362, 22593, 0, 1113, 95614,
        296, 354, 386, 1487, 28756, 89750, 516793, 0, 97429, 232, 65332, 744, 49, 881537, 183091,
        22895, 0, 908, 30117, 59305, 43773, 124, 48009, 474, 66349, 1100, 1411, 1304, 155, 810,
        81692, 666, 28427, 1341, 813, 1435, 1049, 848, 1350, 164, 15942, 194, 484, 87365, 407387,
        33658, 4173726, 154860, 146218, 22951, 6216, 1170, 74096, 312, 43, 136, 920, 82, 525, 1293,
        3519760, 73806, 254, 638, 567, 834, 985560, 447, 13798, 15098, 279,
    ];
    const B: [usize; 271] = [
        677, 3497, 1394, 842, 840, 1086, 490, 1296, 612, 897, 522, 60470, 56802, 438, 3977104,
        289930, 825, 54014, 1365, 2251619, 98060, 634, 1469, 490, 607, 1442, 3965642, 623, 254,
        1291, 39896, 1402, 278777, 331, 731, 1324, 90146, 871, 40378, 846, 1173, 624, 59198, 1046,
        955, 131, 484, 40269, 1141, 392, 59342, 38168, 117, 864, 917, 93959, 15288, 109, 60, 1126,
        744, 657, 22812, 1017, 69, 73737, 144, 1368, 27082, 9779, 1366, 787, 1310, 33954, 593,
        1087, 24806, 61022, 1188, 49712, 38327, 1410, 252, 96088, 884563, 51210, 1193, 848, 856572,
        45551, 84102, 647424, 15567, 57801, 527, 5824, 975, 39036, 37265, 4253, 270, 346064, 90007,
        1262, 72583, 596, 677, 1830, 209916, 1031, 1165, 489, 60130, 90278, 1121, 86104, 1386,
        1066, 80901, 51690, 976, 23852, 46099, 27368, 1114, 192642, 26210, 998, 30507, 79478, 261,
        3796613, 786137, 569, 747, 215, 1110, 95779, 883, 1031, 171, 31546, 50711, 6593, 1482,
        1605436, 68922, 190, 41491, 335378, 344, 57296, 66428, 35218, 1495, 1097, 853744, 107747,
        37075, 337, 526, 1056, 684, 453, 198, 754, 977, 87471, 793, 131, 30870, 1234, 222902, 2736,
        40734, 502, 627, 1304, 1455, 8454, 96042, 44468, 870, 279, 218040, 99134, 132, 680, 380,
        1113, 272, 91684, 29762, 813, 45406, 1255, 33677, 188, 105, 357, 65843, 563, 960, 1082,
        1060, 53071, 85304, 97698, 845, 1171, 1345, 235, 791, 1353, 1498, 886, 1167, 1461, 33724,
        55791, 393481, 44418, 953828, 1048, 329, 1357, 99608, 1385, 87, 621, 264, 1321, 65247,
        85136, 1263, 1439, 401, 45930, 78314, 540, 1103302, 821, 554, 558, 99292, 52163, 1588838,
        82024, 72, 251713, 1307, 1298, 33, 799620, 285, 20400, 1493, 749, 1242, 435, 353, 1049,
        813, 599, 54118, 5694, 76233, 68178, 739, 1468, 1172,
    ];
    transfer(0x93c8_ea76_9dd3_5fa3, &imp, &A, &B, true).unwrap();
}

/// Found by CI's property run on 2026-12-08 at 6128dea: at ~20 % random loss (bursty) with
/// 2 % corruption, one connection's handshake ran out of its attempts. That is the
/// handshake's specified end (`ConnectionConfig::handshake_attempts`); an application
/// connects again, as `Stack::connect` does for all of its timeout, and so does `transfer`
/// now. The case, whose messages then all arrive.
#[test]
fn regression_handshake_out_of_attempts_under_heavy_loss() {
    let imp = Impairment {
        loss: 0.19871333661341617,
        burst: true,
        jitter_ns: 13242,
        duplicate: 0.037533669638829176,
        reorder: 0.01331804024030941,
        corrupt: 0.020726364888279336,
    };
    let sizes: Vec<usize> = (0..100).map(|i| (i * 7919) % 3000).collect();
    transfer(0xcba8_cdbd_3376_31ec, &imp, &sizes, &sizes, true).unwrap();
}
