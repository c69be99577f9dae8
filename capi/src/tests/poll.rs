//! `bypass_stack_poll_ready`: one thread serving several connections of one stack.

use std::ffi::CString;

use super::*;
use crate::bypass_result::*;

const CONNS: usize = 3;

#[test]
fn poll_ready_reports_the_sockets_with_messages() {
    let path = sock_path("poll");
    let p2 = path.clone();
    let server = std::thread::spawn(move || {
        let st = stack(config(&p2, true, None));
        let mut l = bypass_listener { id: 0 };
        // SAFETY: valid out-pointer.
        ok(unsafe { bypass_stack_listen(st, &mut l) });
        let mut socks = [bypass_socket { id: 0 }; CONNS];
        for s in socks.iter_mut() {
            // SAFETY: valid out-pointer.
            ok(unsafe { bypass_listener_accept(l, 20_000, s) });
        }
        ok(bypass_listener_free(l));
        // Answer each message with the index of its socket in front, until all are closed.
        let mut open: Vec<bypass_socket> = socks.to_vec();
        let mut ready = [0usize; CONNS];
        let mut buf = [0u8; 64];
        let mut answered = 0;
        while !open.is_empty() {
            let mut n = 0;
            // SAFETY: `open` has open.len() handles, `ready` room for CONNS >= that.
            ok(unsafe {
                bypass_stack_poll_ready(
                    st,
                    open.as_ptr(),
                    open.len(),
                    ready.as_mut_ptr(),
                    &mut n,
                    1_000_000,
                )
            });
            let mut gone = Vec::new();
            for &k in &ready[..n] {
                let s = open[k];
                let mut len = 0;
                // SAFETY: `buf` has 63 writable bytes after its first.
                match unsafe { bypass_socket_try_recv(s, buf.as_mut_ptr().add(1), 63, &mut len) } {
                    BYPASS_OK => {
                        buf[0] = socks.iter().position(|x| *x == s).unwrap() as u8;
                        // SAFETY: `buf` has len + 1 readable bytes.
                        ok(unsafe {
                            bypass_socket_send(s, buf.as_ptr(), len + 1, std::ptr::null_mut())
                        });
                        answered += 1;
                    }
                    BYPASS_ERR_CLOSED => gone.push(k),
                    BYPASS_NOT_READY => {}
                    e => panic!("try_recv: {e:?}: {}", last_error()),
                }
            }
            for k in gone.into_iter().rev() {
                ok(bypass_socket_abort(open.remove(k)));
            }
        }
        ok(bypass_stack_free(st));
        answered
    });

    let st = stack(config(&path, false, None));
    let ip = CString::new(SERVER_IP).unwrap();
    let mut socks = [bypass_socket { id: 0 }; CONNS];
    for s in socks.iter_mut() {
        // SAFETY: valid string and out-pointer.
        ok(unsafe { bypass_stack_connect(st, ip.as_ptr(), 7200, 20_000, s) });
    }
    // Messages on the last and the first socket only: each answer names the socket (as the
    // server accepted them, in connect order) and comes back on it.
    for round in 0..20u8 {
        for k in [CONNS - 1, 0] {
            let msg = [round, k as u8];
            // SAFETY: `msg` is 2 readable bytes.
            ok(unsafe { bypass_socket_send(socks[k], msg.as_ptr(), 2, std::ptr::null_mut()) });
            let mut back = [0u8; 8];
            let mut len = 0;
            // SAFETY: `back` has 8 writable bytes.
            ok(unsafe { bypass_socket_recv(socks[k], back.as_mut_ptr(), 8, &mut len) });
            assert_eq!(&back[..len], &[k as u8, round, k as u8]);
        }
    }
    // Nothing arrived for the middle socket.
    let mut m = bypass_msg { id: 0 };
    // SAFETY: valid out-pointer.
    let rc = unsafe { bypass_socket_try_recv_msg(socks[1], &mut m) };
    assert_eq!(rc, BYPASS_NOT_READY);
    for s in socks {
        ok(bypass_socket_close(s));
    }
    assert_eq!(server.join().unwrap(), 40);
    ok(bypass_stack_free(st));
}
