//! `InterfaceConfig::copy_rx`: a client's received frames are copied out of the region the
//! server writes before anything reads them. A real client and server `Memif` in this
//! process; the test writes the shared region as a hostile server would, after the client
//! received, and the frame the client holds does not change.

use std::time::Duration;

use super::{Memif, MemifConfig, Role};
use crate::mem::{HugePages, PktBuf, Pool};
use crate::pmd::Port;
use crate::test_harness as harness;

fn inside(pool: &Pool, b: &PktBuf) -> bool {
    let r = pool.region();
    let (lo, p) = (r.as_ptr() as usize, b.data().as_ptr() as usize);
    p >= lo && p < lo + r.len()
}

fn run(copy_rx: bool) {
    let sock = format!("/tmp/bpx-copyrx-{copy_rx}-{}.sock", std::process::id());
    let cfg = |role| {
        let mut c = MemifConfig::new(&sock, role, 0);
        c.interfaces[0].log2_ring_size = 4;
        c.interfaces[0].extra_buffers = 8;
        c.interfaces[0].hugepages = HugePages::Never;
        c.interfaces[0].copy_rx = copy_rx;
        c.reconnect_interval = Duration::from_millis(20);
        c
    };
    let server = Memif::new(cfg(Role::Server)).unwrap();
    let client = Memif::new(cfg(Role::Client)).unwrap();
    assert!(
        server.rx_copy_pool(0).is_none(),
        "a server copies into its own pool"
    );
    assert_eq!(client.rx_copy_pool(0).is_some(), copy_rx);
    let mut sp = server.port(0, 0).unwrap();
    let mut cp = client.port(0, 0).unwrap();
    harness::settle("both memif ports up", || {
        sp.link().is_up() && cp.link().is_up()
    });
    let mut out = Vec::new();
    for byte in [0xa1u8, 0xa2, 0xa3] {
        let mut b = sp.alloc_tx().unwrap();
        b.extend_from_slice(&[byte; 100]).unwrap();
        out.push(b);
    }
    let mut got = Vec::new();
    harness::settle("three frames to the client", || {
        if !out.is_empty() {
            sp.tx_burst(&mut out);
        }
        cp.rx_burst(&mut got, 32);
        got.len() == 3
    });
    let shared = client.pool(0).unwrap();
    for b in &got {
        assert_eq!(
            inside(&shared, b),
            !copy_rx,
            "where the received frame lies"
        );
    }
    if let Some(rp) = client.rx_copy_pool(0) {
        assert!(got.iter().all(|b| inside(&rp, b)));
        assert_eq!(rp.stats().in_use, 3, "the held frames, in the private pool");
    }
    // The hostile server: every byte of the client's buffer region rewritten, which it may
    // do at any time through its mapping (here through the client's own).
    let r = shared.region();
    // SAFETY: the region is mapped for its whole length and outlives this write; the
    // buffers in it are only read through `got` below (plain bytes, any value is valid),
    // and neither port runs meanwhile.
    unsafe { std::ptr::write_bytes(r.as_ptr(), 0x55, r.len()) };
    let intact = got
        .iter()
        .zip([0xa1u8, 0xa2, 0xa3])
        .all(|(b, byte)| b.len() == 100 && b.data().iter().all(|&x| x == byte));
    assert_eq!(
        intact, copy_rx,
        "held frames survive a server's write to the region only when copied"
    );
    drop(got);
    if let Some(rp) = client.rx_copy_pool(0) {
        assert_eq!(
            rp.stats().in_use,
            0,
            "released frames back in the private pool"
        );
    }
    drop((sp, cp, client, server));
    let _ = std::fs::remove_file(&sock);
}

#[test]
fn memif_client_copy_rx_holds_frames_out_of_the_servers_reach() {
    run(true);
}

/// The hazard `copy_rx` defends against, pinned: without it the frames the client holds
/// change when the server writes the region (docs/SECURITY.md).
#[test]
fn memif_client_zero_copy_frames_change_under_the_server() {
    run(false);
}
