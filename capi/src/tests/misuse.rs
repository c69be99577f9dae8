//! Misuse gets a clear error code and message, never undefined behaviour or a crash.

use std::ffi::{CStr, CString};

use super::*;
use crate::bypass_result::*;

const MAX: u64 = 4000;

#[test]
fn misuse_gets_clear_errors() {
    let path = sock_path("misuse");
    // The server sends a 100-byte message, then echoes until the client closes.
    let server = spawn_server(path.clone(), Some(MAX), |_st, s| {
        let msg = [7u8; 100];
        // SAFETY: `msg` is 100 readable bytes.
        ok(unsafe { bypass_socket_send(s, msg.as_ptr(), msg.len(), std::ptr::null_mut()) });
        echo_zero_copy(s);
        ok(bypass_socket_abort(s));
    });
    let (st, s) = connect(&path, Some(MAX));

    // A buffer too small: the error says how much is needed and the message is kept.
    let mut small = [0u8; 10];
    let mut len = 0usize;
    // SAFETY: `small` has 10 writable bytes.
    let rc = unsafe { bypass_socket_recv(s, small.as_mut_ptr(), small.len(), &mut len) };
    assert_eq!(rc, BYPASS_ERR_BUFFER_TOO_SMALL);
    assert_eq!(len, 100);
    assert!(last_error().contains("100 bytes"), "{}", last_error());
    let mut big = [0u8; 200];
    // SAFETY: `big` has 200 writable bytes.
    ok(unsafe { bypass_socket_recv(s, big.as_mut_ptr(), big.len(), &mut len) });
    assert_eq!(len, 100, "the same message, kept");
    assert!(big[..100].iter().all(|&b| b == 7));

    // A message too large, both ways of sending; nothing is sent.
    let huge = vec![1u8; MAX as usize + 1];
    // SAFETY: `huge` is readable.
    let rc = unsafe { bypass_socket_send(s, huge.as_ptr(), huge.len(), std::ptr::null_mut()) };
    assert_eq!(rc, BYPASS_ERR_MESSAGE_TOO_LARGE);
    assert!(
        last_error().contains("over the maximum"),
        "{}",
        last_error()
    );
    let mut b = bypass_sendbuf { id: 0 };
    // SAFETY: valid out-pointer.
    let rc = unsafe { bypass_socket_sendbuf(s, huge.len(), &mut b) };
    assert_eq!(rc, BYPASS_ERR_MESSAGE_TOO_LARGE);

    // A send buffer written past its end; then discarded twice.
    // SAFETY: valid out-pointer.
    ok(unsafe { bypass_socket_sendbuf(s, 16, &mut b) });
    // SAFETY: `huge` has at least 17 readable bytes.
    let rc = unsafe { bypass_sendbuf_write(b, 0, huge.as_ptr(), 17) };
    assert_eq!(rc, BYPASS_ERR_SEND_BUFFER);
    ok(bypass_sendbuf_discard(b));
    assert_eq!(bypass_sendbuf_discard(b), BYPASS_ERR_BAD_HANDLE);
    assert_eq!(
        // SAFETY: NULL id is allowed.
        unsafe { bypass_sendbuf_send(b, std::ptr::null_mut()) },
        BYPASS_ERR_BAD_HANDLE
    );

    // A double release of a message.
    // SAFETY: `huge` is readable.
    ok(unsafe { bypass_socket_send(s, huge.as_ptr(), 50, std::ptr::null_mut()) });
    let mut m = bypass_msg { id: 0 };
    // SAFETY: valid out-pointer.
    ok(unsafe { bypass_socket_recv_msg(s, &mut m) });
    ok(bypass_msg_release(m));
    assert_eq!(bypass_msg_release(m), BYPASS_ERR_BAD_HANDLE);
    assert!(
        last_error().contains("stale message handle"),
        "{}",
        last_error()
    );
    let mut l = 0u64;
    assert_eq!(
        // SAFETY: valid out-pointer.
        unsafe { bypass_msg_info(m, &mut l, std::ptr::null_mut()) },
        BYPASS_ERR_BAD_HANDLE
    );

    // A handle of another kind (a C cast), and a zeroed one.
    assert_eq!(
        bypass_msg_release(bypass_msg { id: s.id }),
        BYPASS_ERR_BAD_HANDLE
    );
    assert!(
        last_error().contains("a socket handle was passed where a message"),
        "{}",
        last_error()
    );
    assert_eq!(
        bypass_socket_flush(bypass_socket { id: 0 }),
        BYPASS_ERR_BAD_HANDLE
    );

    // NULL pointers.
    // SAFETY: NULL is what is tested.
    let rc = unsafe { bypass_socket_recv(s, std::ptr::null_mut(), 10, &mut len) };
    assert_eq!(rc, BYPASS_ERR_INVALID_ARGUMENT);
    assert_eq!(
        // SAFETY: NULL is what is tested.
        unsafe { bypass_socket_recv_msg(s, std::ptr::null_mut()) },
        BYPASS_ERR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("out is NULL"), "{}", last_error());

    // A call from another thread.
    let (code, msg) = std::thread::spawn(move || {
        let mut m = bypass_msg { id: 0 };
        // SAFETY: valid out-pointer.
        let rc = unsafe { bypass_socket_try_recv_msg(s, &mut m) };
        (rc, last_error())
    })
    .join()
    .unwrap();
    assert_eq!(code, BYPASS_ERR_WRONG_THREAD);
    assert!(
        msg.contains("used only by the thread that made the stack"),
        "{msg}"
    );
    let (code, _) = std::thread::spawn(move || (bypass_stack_free(st), last_error()))
        .join()
        .unwrap();
    assert_eq!(code, BYPASS_ERR_WRONG_THREAD, "and the stack is still ours");

    // A closed socket: its handle is stale.
    ok(bypass_socket_close(s));
    let one = [1u8];
    // SAFETY: `one` is 1 readable byte.
    let rc = unsafe { bypass_socket_send(s, one.as_ptr(), 1, std::ptr::null_mut()) };
    assert_eq!(rc, BYPASS_ERR_BAD_HANDLE);
    assert_eq!(
        bypass_socket_close(s),
        BYPASS_ERR_BAD_HANDLE,
        "a double close"
    );
    server.join().unwrap();

    // A stale stack handle after free, and a double free.
    ok(bypass_stack_free(st));
    assert_eq!(bypass_stack_free(st), BYPASS_ERR_BAD_HANDLE);
    assert_eq!(bypass_stack_poll_for_us(st, 1), BYPASS_ERR_BAD_HANDLE);
}

#[test]
fn the_peer_closing_reads_as_closed() {
    let path = sock_path("closed");
    let server = spawn_server(path.clone(), None, |_st, s| {
        ok(bypass_socket_close(s));
    });
    let (st, s) = connect(&path, None);
    let mut m = bypass_msg { id: 0 };
    // SAFETY: valid out-pointer.
    let rc = unsafe { bypass_socket_recv_msg(s, &mut m) };
    assert_eq!(rc, BYPASS_ERR_CLOSED, "{}", last_error());
    let one = [1u8];
    // SAFETY: `one` is 1 readable byte.
    let rc = unsafe { bypass_socket_send(s, one.as_ptr(), 1, std::ptr::null_mut()) };
    assert_eq!(
        rc, BYPASS_ERR_CLOSED,
        "sending on a connection the peer closed"
    );
    server.join().unwrap();
    ok(bypass_socket_abort(s));
    ok(bypass_stack_free(st));
}

#[test]
fn configuration_errors_say_what_is_missing() {
    let mut c = bypass_config { id: 0 };
    // SAFETY: valid out-pointer.
    ok(unsafe { bypass_config_new(&mut c) });
    let mut s = bypass_stack { id: 0 };
    assert_eq!(
        // SAFETY: valid out-pointer.
        unsafe { bypass_stack_new(c, &mut s) },
        BYPASS_ERR_INVALID_ARGUMENT
    );
    assert!(
        last_error().contains("bypass_config_set_ip"),
        "{}",
        last_error()
    );
    let bad = CString::new("10.0.0.300").unwrap();
    assert_eq!(
        // SAFETY: valid string.
        unsafe { bypass_config_set_ip(c, bad.as_ptr()) },
        BYPASS_ERR_INVALID_ARGUMENT
    );
    let good = CString::new("10.0.0.3").unwrap();
    // SAFETY: valid string.
    ok(unsafe { bypass_config_set_ip(c, good.as_ptr()) });
    assert_eq!(
        // SAFETY: valid out-pointer.
        unsafe { bypass_stack_new(c, &mut s) },
        BYPASS_ERR_INVALID_ARGUMENT
    );
    assert!(last_error().contains("no backend"), "{}", last_error());
    let p = CString::new("/tmp/x.sock").unwrap();
    assert_eq!(
        // SAFETY: valid string.
        unsafe { bypass_config_set_memif(c, p.as_ptr(), 7, 0) },
        BYPASS_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        bypass_config_set_hugepages(c, 9),
        BYPASS_ERR_INVALID_ARGUMENT
    );
    let eal = CString::new("--vdev=net_ring0").unwrap();
    let dev = CString::new("net_ring0").unwrap();
    // SAFETY: valid strings.
    let rc = unsafe { bypass_config_set_dpdk(c, eal.as_ptr(), dev.as_ptr()) };
    if cfg!(feature = "dpdk") {
        ok(rc);
    } else {
        assert_eq!(rc, BYPASS_ERR_UNSUPPORTED);
        assert!(last_error().contains("--features dpdk"), "{}", last_error());
    }
    ok(bypass_config_free(c));
    assert_eq!(bypass_config_free(c), BYPASS_ERR_BAD_HANDLE);
}

#[test]
fn every_code_has_a_message() {
    for code in 0..=BYPASS_RESULT_MAX {
        // SAFETY: bypass_strerror returns a static NUL-terminated string.
        let s = unsafe { CStr::from_ptr(bypass_strerror(code)) }
            .to_str()
            .unwrap();
        assert_ne!(s, "unknown result code", "code {code}");
    }
    // SAFETY: as above.
    let s = unsafe { CStr::from_ptr(bypass_strerror(-5)) };
    assert_eq!(s.to_str().unwrap(), "unknown result code");
    // bypass_last_error with no room reports the size needed.
    assert_eq!(
        bypass_config_free(bypass_config { id: 0 }),
        BYPASS_ERR_BAD_HANDLE
    );
    // SAFETY: NULL with len 0 is allowed.
    let need = unsafe { bypass_last_error(std::ptr::null_mut(), 0) };
    assert_eq!(need, last_error().len() + 1);
}
