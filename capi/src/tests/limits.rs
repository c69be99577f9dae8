//! The limits against hostile peers (`bypass_config_set_*` of `limits`): each is taken by a
//! stack, a value that makes no sense is refused by `bypass_stack_new` naming the setting, and
//! the memif secret reaches both ends.

use std::ffi::CString;

use super::*;
use crate::bypass_result::*;

/// A stack from `cfg`, or its error code and this thread's message (the config is freed).
fn try_stack(cfg: bypass_config) -> Result<bypass_stack, (bypass_result, String)> {
    let mut s = bypass_stack { id: 0 };
    // SAFETY: valid out-pointer.
    let rc = unsafe { bypass_stack_new(cfg, &mut s) };
    let err = last_error();
    ok(bypass_config_free(cfg));
    if rc == BYPASS_OK {
        Ok(s)
    } else {
        Err((rc, err))
    }
}

/// Sets the memif secret `s`.
fn secret(cfg: bypass_config, s: &str) {
    let s = CString::new(s).unwrap();
    // SAFETY: a NUL-terminated string.
    ok(unsafe { bypass_config_set_memif_secret(cfg, s.as_ptr()) });
}

/// Sets every limit that is not memif's, each to a value other than its default.
fn transport_limits(c: bypass_config) {
    ok(bypass_config_set_rx_budget(c, 64 << 20));
    ok(bypass_config_set_max_connections_per_source(c, 8));
    ok(bypass_config_set_max_rx_slots(c, 32));
    ok(bypass_config_set_rx_pool_reserve(c, 0.5));
    ok(bypass_config_set_stateless_queue(c, 8));
    ok(bypass_config_set_arp(c, 64, 4, 8));
}

#[test]
fn a_server_takes_every_limit() {
    let path = sock_path("limits-all");
    let c = config(&path, true, None);
    transport_limits(c);
    ok(bypass_config_set_memif_copy_rx(c, true));
    ok(bypass_config_set_memif_require_sealed_regions(c, true));
    ok(bypass_config_set_memif_max_peer_region_bytes(c, 64 << 20));
    ok(bypass_config_set_memif_max_pending_handshakes(c, 4));
    ok(bypass_config_set_memif_allowed_uid(c, my_uid()));
    ok(bypass_config_set_memif_handshake_timeout_ms(c, 2000));
    ok(bypass_config_set_memif_wedge_timeout_ms(c, 500));
    secret(c, "s3cret");
    let st = try_stack(c).expect("a server with every limit set");
    ok(bypass_stack_free(st));
}

/// This process's user id (the crate has no `libc` dependency for one call).
fn my_uid() -> u32 {
    extern "C" {
        fn getuid() -> u32;
    }
    // SAFETY: getuid(2) takes nothing, always succeeds and returns a uid_t (u32 on Linux).
    unsafe { getuid() }
}

#[test]
fn nonsensical_limits_are_refused_naming_the_setting() {
    type Setup = fn(bypass_config);
    let cases: &[(&str, bool, Setup)] = &[
        ("stateless_queue", true, |c| {
            ok(bypass_config_set_stateless_queue(c, 0))
        }),
        ("memif_secret", true, |c| secret(c, &"x".repeat(24))),
        ("memif_wedge_timeout", true, |c| {
            ok(bypass_config_set_memif_wedge_timeout_ms(c, 0))
        }),
        ("memif_handshake_timeout", false, |c| {
            ok(bypass_config_set_memif_handshake_timeout_ms(c, 0))
        }),
        ("rx_budget", true, |c| ok(bypass_config_set_rx_budget(c, 0))),
        ("max_connections_per_source", true, |c| {
            ok(bypass_config_set_max_connections_per_source(c, 0))
        }),
        ("rx_pool_reserve", true, |c| {
            ok(bypass_config_set_rx_pool_reserve(c, f64::NAN))
        }),
        ("arp", true, |c| ok(bypass_config_set_arp(c, 64, 0, 8))),
        ("arp", false, |c| ok(bypass_config_set_arp(c, 64, 4, 0))),
        ("arp", true, |c| ok(bypass_config_set_arp(c, 0, 4, 8))),
        ("memif_max_pending_handshakes", true, |c| {
            ok(bypass_config_set_memif_max_pending_handshakes(c, 0))
        }),
        ("memif_max_peer_region_bytes", true, |c| {
            ok(bypass_config_set_memif_max_peer_region_bytes(c, 4096))
        }),
        // A server's settings on a client.
        ("memif_allowed_uid", false, |c| {
            ok(bypass_config_set_memif_allowed_uid(c, 0))
        }),
        ("memif_require_sealed_regions", false, |c| {
            ok(bypass_config_set_memif_require_sealed_regions(c, true))
        }),
    ];
    for (k, &(what, server, setup)) in cases.iter().enumerate() {
        let path = sock_path("limits-bad");
        let c = config(&path, server, None);
        setup(c);
        let (rc, msg) = try_stack(c).map(|_| ()).expect_err(what);
        assert_eq!(rc, BYPASS_ERR_INVALID_ARGUMENT, "case {k} ({what}): {msg}");
        assert!(
            msg.starts_with(&format!("bypass_stack_new: {what}: ")),
            "case {k}: the message should name {what}: {msg}"
        );
        assert!(
            !std::path::Path::new(path.to_str().unwrap()).exists(),
            "case {k} ({what}): refused before the memif socket opened"
        );
    }
    // The secret's string is checked by its setter.
    let c = config(&sock_path("limits-null"), true, None);
    assert_eq!(
        // SAFETY: NULL is what is tested.
        unsafe { bypass_config_set_memif_secret(c, std::ptr::null()) },
        BYPASS_ERR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("secret is NULL"), "{}", last_error());
    ok(bypass_config_free(c));
}

/// As the Rust API's `memif_secret_reaches_both_ends`: a server with a secret refuses a
/// client without it and one with another, and a client with it connects (with the other
/// limits a client takes set too) and exchanges a message.
#[test]
fn memif_secret_reaches_both_ends() {
    let path = sock_path("limits-secret");
    let server = spawn_server_with(
        path.clone(),
        None,
        |c| {
            transport_limits(c);
            secret(c, "s3cret");
        },
        |_st, s| {
            assert_eq!(echo_zero_copy(s), 1);
            ok(bypass_socket_abort(s));
        },
    );
    for (tag, with) in [("no secret", None), ("another secret", Some("guess"))] {
        let c = config(&path, false, None);
        ok(bypass_config_set_link_timeout_ms(c, 2000));
        if let Some(s) = with {
            secret(c, s);
        }
        let (rc, msg) = try_stack(c).map(|_| ()).expect_err(tag);
        assert_eq!(rc, BYPASS_ERR_BACKEND, "{tag}: {msg}");
        assert!(
            msg.contains("secret"),
            "{tag}: the error should say the secret was refused: {msg}"
        );
    }
    let c = config(&path, false, None);
    transport_limits(c);
    secret(c, "s3cret");
    ok(bypass_config_set_memif_copy_rx(c, true));
    ok(bypass_config_set_memif_handshake_timeout_ms(c, 2000));
    ok(bypass_config_set_memif_wedge_timeout_ms(c, 500));
    let st = try_stack(c).unwrap_or_else(|(rc, m)| panic!("the same secret: {rc:?}: {m}"));
    let ip = CString::new(SERVER_IP).unwrap();
    let mut s = bypass_socket { id: 0 };
    // SAFETY: valid string and out-pointer.
    ok(unsafe { bypass_stack_connect(st, ip.as_ptr(), 7200, 20_000, &mut s) });
    let msg = b"through the secret";
    // SAFETY: `msg` is readable.
    ok(unsafe { bypass_socket_send(s, msg.as_ptr(), msg.len(), std::ptr::null_mut()) });
    let mut buf = [0u8; 64];
    let mut len = 0usize;
    // SAFETY: `buf` has 64 writable bytes.
    ok(unsafe { bypass_socket_recv(s, buf.as_mut_ptr(), buf.len(), &mut len) });
    assert_eq!(&buf[..len], msg);
    ok(bypass_socket_close(s));
    server.join().unwrap();
    ok(bypass_stack_free(st));
}
