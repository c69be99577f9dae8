//! `bypass_config_set_*` for the limits against hostile peers (issue 18): the receive
//! budget, per-source connections, held receive slots, the receive pool's reserve, stateless
//! replies, ARP, and memif's. Each is `StackBuilder`'s setting of the same name; the setters
//! only record the value, and `bypass_stack_new` refuses one that makes no sense
//! (`BYPASS_ERR_INVALID_ARGUMENT`, the message naming the setting), as `StackBuilder::build`
//! does.

use std::ffi::c_char;
use std::time::Duration;

use bypass_core::runtime::net::ArpConfig;
use bypass_core::socket::Limits;

use crate::config::{c_str, with_config, Config};
use crate::error::{bypass_result, guard};

/// Records one limit: the body of every setter here.
fn set(name: &str, cfg: crate::bypass_config, f: impl FnOnce(&mut Limits)) -> bypass_result {
    guard(name, || {
        with_config(cfg, |c: &mut Config| {
            f(&mut c.limits);
            Ok(())
        })
    })
}

/// Bytes of reassembly buffers all connections together may hold (at least 1). Charged with
/// the bytes that arrived; a packet over it is refused (the peer retransmits). Default: a
/// quarter of the machine's memory, at most 4 GiB.
#[no_mangle]
pub extern "C" fn bypass_config_set_rx_budget(
    cfg: crate::bypass_config,
    bytes: u64,
) -> bypass_result {
    set("bypass_config_set_rx_budget", cfg, |l| {
        l.rx_budget = Some(bytes)
    })
}

/// Most connections accepted from one source IP address alive at once (default 64; at least
/// 1 unless `bypass_config_set_no_accept`). One more is refused: one host cannot take the
/// whole table.
#[no_mangle]
pub extern "C" fn bypass_config_set_max_connections_per_source(
    cfg: crate::bypass_config,
    n: u32,
) -> bypass_result {
    set("bypass_config_set_max_connections_per_source", cfg, |l| {
        l.max_connections_per_source = Some(n as usize)
    })
}

/// Most pool slots one connection keeps for received single-packet messages the
/// application has not taken (default 256); past it they are copied out of their slots, so a
/// peer cannot pin the pool with messages nobody reads. 0 copies every one.
#[no_mangle]
pub extern "C" fn bypass_config_set_max_rx_slots(
    cfg: crate::bypass_config,
    n: u32,
) -> bypass_result {
    set("bypass_config_set_max_rx_slots", cfg, |l| {
        l.max_rx_slots = Some(n as usize)
    })
}

/// The share of the receive pool (0.0 to 1.0, default 0.25; outside it: clamped; NaN: refused)
/// kept for receiving: while less of it is free, received messages are handed out copied and
/// their packet buffers go back at once, so an application that keeps what it receives
/// cannot take every buffer. 0 turns the copy off.
#[no_mangle]
pub extern "C" fn bypass_config_set_rx_pool_reserve(
    cfg: crate::bypass_config,
    share: f64,
) -> bypass_result {
    set("bypass_config_set_rx_pool_reserve", cfg, |l| {
        l.rx_pool_reserve = Some(share)
    })
}

/// Stateless replies (cookie challenges, resets to unknown connections) queued for the next
/// transmit at most (default 64, at least 1); one more is dropped and counted, so a flood of
/// hellos cannot grow memory.
#[no_mangle]
pub extern "C" fn bypass_config_set_stateless_queue(
    cfg: crate::bypass_config,
    n: u32,
) -> bypass_result {
    set("bypass_config_set_stateless_queue", cfg, |l| {
        l.stateless_queue = Some(n as usize)
    })
}

/// ARP: `capacity` entries in the cache (default 256, at least the memif peers + 16),
/// `pending_dests` destinations waiting on resolution at once (default 16; one more drops the
/// oldest) and `queue_per_dest` frames queued for each (default 64). Each at least 1;
/// retries and entry life stay at their defaults (a request every 200 ms, 5 tries, 60 s).
#[no_mangle]
pub extern "C" fn bypass_config_set_arp(
    cfg: crate::bypass_config,
    capacity: u32,
    pending_dests: u32,
    queue_per_dest: u32,
) -> bypass_result {
    set("bypass_config_set_arp", cfg, |l| {
        l.arp = Some(ArpConfig {
            capacity: capacity as usize,
            pending_dests: pending_dests as usize,
            queue_per_dest: queue_per_dest as usize,
            ..ArpConfig::default()
        })
    })
}

/// memif client: copy each received frame out of the memory the server shares before the
/// stack reads it (default off: zero copy). Turn it on when the server may be hostile:
/// otherwise it can change a message after its checksum was verified, even while the
/// application holds it. One copy per frame; a server always copies.
#[no_mangle]
pub extern "C" fn bypass_config_set_memif_copy_rx(
    cfg: crate::bypass_config,
    on: bool,
) -> bypass_result {
    set("bypass_config_set_memif_copy_rx", cfg, |l| {
        l.memif_copy_rx = Some(on)
    })
}

/// memif server: refuse a client region not sealed against shrinking (default off). Turn it
/// on when the peer may be hostile: one that truncates a region we mapped crashes us
/// (SIGBUS). Server only (a client's `bypass_stack_new` refuses it).
#[no_mangle]
pub extern "C" fn bypass_config_set_memif_require_sealed_regions(
    cfg: crate::bypass_config,
    on: bool,
) -> bypass_result {
    set("bypass_config_set_memif_require_sealed_regions", cfg, |l| {
        l.memif_require_sealed_regions = Some(on)
    })
}

/// memif server: most bytes a client's regions may add up to (default: sized from the
/// interface; at least 2 MiB); a region over it is refused. Server only.
#[no_mangle]
pub extern "C" fn bypass_config_set_memif_max_peer_region_bytes(
    cfg: crate::bypass_config,
    bytes: u64,
) -> bypass_result {
    set("bypass_config_set_memif_max_peer_region_bytes", cfg, |l| {
        l.memif_max_peer_region_bytes = Some(bytes)
    })
}

/// memif server: most control connections in their handshake at once (default 16; at least
/// 1); one more drops the oldest. Server only.
#[no_mangle]
pub extern "C" fn bypass_config_set_memif_max_pending_handshakes(
    cfg: crate::bypass_config,
    n: u32,
) -> bypass_result {
    set("bypass_config_set_memif_max_pending_handshakes", cfg, |l| {
        l.memif_max_pending_handshakes = Some(n as usize)
    })
}

/// memif server: let only a client running as user `uid` connect (`SO_PEERCRED`; default:
/// whoever may open the socket). Server only.
#[no_mangle]
pub extern "C" fn bypass_config_set_memif_allowed_uid(
    cfg: crate::bypass_config,
    uid: u32,
) -> bypass_result {
    set("bypass_config_set_memif_allowed_uid", cfg, |l| {
        l.memif_allowed_uid = Some(uid)
    })
}

/// memif: longest a control handshake may take before its connection is dropped, in
/// milliseconds (default 5000; more than 0).
#[no_mangle]
pub extern "C" fn bypass_config_set_memif_handshake_timeout_ms(
    cfg: crate::bypass_config,
    ms: u64,
) -> bypass_result {
    set("bypass_config_set_memif_handshake_timeout_ms", cfg, |l| {
        l.memif_handshake_timeout = Some(Duration::from_millis(ms))
    })
}

/// memif: how long a ring of a live connection may stay inconsistent (no frame can move on
/// it) before the connection is torn down, in milliseconds (default 1000; more than 0). Below
/// a few milliseconds a peer merely preempted in the middle of an update could be torn down.
#[no_mangle]
pub extern "C" fn bypass_config_set_memif_wedge_timeout_ms(
    cfg: crate::bypass_config,
    ms: u64,
) -> bypass_result {
    set("bypass_config_set_memif_wedge_timeout_ms", cfg, |l| {
        l.memif_wedge_timeout = Some(Duration::from_millis(ms))
    })
}

/// memif: the interface's shared secret (at most 23 bytes; default none). A server refuses a
/// client that does not present it; a client presents it. It travels in the clear over the
/// socket: against local users who can read it, restrict the socket's file mode or use
/// `bypass_config_set_memif_allowed_uid`.
///
/// # Safety
/// `secret` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn bypass_config_set_memif_secret(
    cfg: crate::bypass_config,
    secret: *const c_char,
) -> bypass_result {
    guard("bypass_config_set_memif_secret", || {
        // SAFETY: forwarded contract.
        let s = unsafe { c_str(secret, "secret") }?.to_owned();
        with_config(cfg, |c| {
            c.limits.memif_secret = Some(s);
            Ok(())
        })
    })
}
