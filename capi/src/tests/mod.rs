//! Tests of the C API through its `extern "C"` functions, as a C program calls them: two
//! stacks joined by memif, each on its own thread, in this process.

#[cfg(feature = "dpdk")]
mod dpdk;
mod header;
mod limits;
mod misuse;
mod no_alloc;
mod poll;

use std::ffi::CString;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::*;

pub(crate) const SERVER_IP: &str = "10.91.0.1";
pub(crate) const CLIENT_IP: &str = "10.91.0.2";
const SERVER_MAC: [u8; 6] = [0x02, 0x91, 0, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0x91, 0, 0, 0, 2];

/// This thread's last error message.
pub(crate) fn last_error() -> String {
    let mut buf = vec![0u8; 1024];
    // SAFETY: `buf` has 1024 writable bytes.
    let n = unsafe { bypass_last_error(buf.as_mut_ptr().cast(), buf.len()) };
    buf.truncate(n.saturating_sub(1).min(1023));
    String::from_utf8_lossy(&buf).into_owned()
}

/// Asserts success, showing the last error otherwise.
#[track_caller]
pub(crate) fn ok(rc: bypass_result) {
    assert_eq!(rc, bypass_result::BYPASS_OK, "{}", last_error());
}

/// A memif socket path unique to this process and call.
pub(crate) fn sock_path(tag: &str) -> CString {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    CString::new(format!(
        "/tmp/bypass-capi-test-{}-{tag}-{n}.sock",
        std::process::id()
    ))
    .unwrap()
}

/// A configuration for one end of a memif link at `path`.
pub(crate) fn config(path: &CString, server: bool, max_message: Option<u64>) -> bypass_config {
    let (ip, mac, peer, peer_mac) = if server {
        (SERVER_IP, SERVER_MAC, CLIENT_IP, CLIENT_MAC)
    } else {
        (CLIENT_IP, CLIENT_MAC, SERVER_IP, SERVER_MAC)
    };
    let ip = CString::new(ip).unwrap();
    let peer = CString::new(peer).unwrap();
    let mut c = bypass_config { id: 0 };
    // SAFETY: valid out-pointer, NUL-terminated strings and 6-byte MACs.
    unsafe {
        ok(bypass_config_new(&mut c));
        let role = if server {
            BYPASS_MEMIF_SERVER
        } else {
            BYPASS_MEMIF_CLIENT
        };
        ok(bypass_config_set_memif(c, path.as_ptr(), role, 0));
        ok(bypass_config_set_ip(c, ip.as_ptr()));
        ok(bypass_config_set_mac(c, mac.as_ptr()));
        ok(bypass_config_add_static_arp(
            c,
            peer.as_ptr(),
            peer_mac.as_ptr(),
        ));
    }
    ok(bypass_config_set_hugepages(c, BYPASS_HUGEPAGES_NEVER));
    ok(bypass_config_set_link_timeout_ms(c, 20_000));
    if let Some(m) = max_message {
        ok(bypass_config_set_max_message(c, m));
    }
    c
}

/// A stack from `cfg` (the config is freed).
pub(crate) fn stack(cfg: bypass_config) -> bypass_stack {
    let mut s = bypass_stack { id: 0 };
    // SAFETY: valid out-pointer.
    ok(unsafe { bypass_stack_new(cfg, &mut s) });
    ok(bypass_config_free(cfg));
    s
}

/// Server end: builds its stack, accepts one connection and runs `f` on it (on a thread of
/// its own); returns the thread, which frees everything at the end.
pub(crate) fn spawn_server(
    path: CString,
    max_message: Option<u64>,
    f: impl FnOnce(bypass_stack, bypass_socket) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    spawn_server_with(path, max_message, |_| {}, f)
}

/// [`spawn_server`] with `setup` run on the server's configuration before its stack is built.
pub(crate) fn spawn_server_with(
    path: CString,
    max_message: Option<u64>,
    setup: impl FnOnce(bypass_config) + Send + 'static,
    f: impl FnOnce(bypass_stack, bypass_socket) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("capi-server".into())
        .spawn(move || {
            let cfg = config(&path, true, max_message);
            setup(cfg);
            let st = stack(cfg);
            let mut l = bypass_listener { id: 0 };
            // SAFETY: valid out-pointers.
            ok(unsafe { bypass_stack_listen(st, &mut l) });
            let mut s = bypass_socket { id: 0 };
            // SAFETY: valid out-pointer.
            ok(unsafe { bypass_listener_accept(l, 20_000, &mut s) });
            ok(bypass_listener_free(l));
            f(st, s);
            ok(bypass_stack_free(st));
        })
        .unwrap()
}

/// Client end on this thread: its stack and the connection to the server.
pub(crate) fn connect(path: &CString, max_message: Option<u64>) -> (bypass_stack, bypass_socket) {
    let st = stack(config(path, false, max_message));
    let ip = CString::new(SERVER_IP).unwrap();
    let mut s = bypass_socket { id: 0 };
    // SAFETY: valid string and out-pointer.
    ok(unsafe { bypass_stack_connect(st, ip.as_ptr(), 7200, 20_000, &mut s) });
    (st, s)
}

/// Echoes every message back (zero-copy both ways) until the peer closes; returns how many.
pub(crate) fn echo_zero_copy(s: bypass_socket) -> u64 {
    let mut n = 0;
    let mut segs = [bypass_segment {
        ptr: std::ptr::null(),
        len: 0,
    }; 16];
    let mut chunks = [bypass_chunk {
        ptr: std::ptr::null_mut(),
        len: 0,
    }; 16];
    loop {
        let mut m = bypass_msg { id: 0 };
        // SAFETY: valid out-pointer.
        match unsafe { bypass_socket_recv_msg(s, &mut m) } {
            bypass_result::BYPASS_OK => {}
            bypass_result::BYPASS_ERR_CLOSED => break,
            e => panic!("echo recv: {e:?}: {}", last_error()),
        }
        let (mut len, mut nseg) = (0u64, 0usize);
        // SAFETY: valid out-pointers; `segs` has 16 entries.
        unsafe {
            ok(bypass_msg_info(m, &mut len, std::ptr::null_mut()));
            ok(bypass_msg_segments(
                m,
                segs.as_mut_ptr(),
                segs.len(),
                &mut nseg,
            ));
        }
        let mut b = bypass_sendbuf { id: 0 };
        // SAFETY: valid out-pointer.
        ok(unsafe { bypass_socket_sendbuf(s, len as usize, &mut b) });
        let mut nch = 0;
        // SAFETY: `chunks` has 16 entries.
        ok(unsafe { bypass_sendbuf_chunks(b, chunks.as_mut_ptr(), chunks.len(), &mut nch) });
        let mut at = 0;
        for seg in &segs[..nseg] {
            // SAFETY: the segment is readable until the release below.
            let src = unsafe { std::slice::from_raw_parts(seg.ptr, seg.len) };
            // SAFETY: `src` is `seg.len` readable bytes.
            ok(unsafe { bypass_sendbuf_write(b, at, src.as_ptr(), src.len()) });
            at += src.len();
        }
        ok(bypass_msg_release(m));
        // SAFETY: NULL id is allowed.
        ok(unsafe { bypass_sendbuf_send(b, std::ptr::null_mut()) });
        n += 1;
    }
    n
}
