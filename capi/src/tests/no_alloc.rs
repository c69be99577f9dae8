//! A counting global allocator shows the C API's zero-copy path allocates nothing per
//! message once warm: the client sends each 64-byte request with
//! `bypass_socket_sendbuf_chunks` + `bypass_sendbuf_send` and takes each response with
//! `bypass_socket_recv_segments` + `bypass_msg_release` (the fused calls); the server, with
//! `bypass_socket_recv_msg` + `bypass_msg_segments` + `bypass_msg_release`, and
//! `bypass_socket_sendbuf` + `bypass_sendbuf_chunks` + `bypass_sendbuf_send`, copying each
//! request into the lent buffer of its response. Two stacks over memif, each on its own
//! thread; counts are per thread. `bypass_stack_poll_ready` over the one socket is in the loop too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::*;

// The counting allocator of the Rust test binaries (tests/harness/alloc.rs), installed here
// as this unit-test binary's global allocator; counts are per thread.
#[path = "../../../tests/harness/alloc.rs"]
mod counting;
use counting::{allocs, arm_trap, disarm_trap, Counting};

#[global_allocator]
static A: Counting = Counting;

/// Messages sent back to back first, before any answer is read: the connection's in-flight
/// high-water mark (the stack keeps one segment list per unacknowledged message and reuses
/// them: `Connection::send_segments`) is reached in the warm-up, not later when a slow
/// moment of this shared 2-core VM delays the acknowledgements of the ping-pong.
const BURST: u64 = 512;
const WARM: u64 = 2000;
const MEASURED: u64 = 5000;
const LEN: usize = 64;

#[test]
fn the_zero_copy_path_allocates_nothing_per_message() {
    let path = sock_path("noalloc");
    let server_allocs = Arc::new(AtomicU64::new(u64::MAX));
    let sa = server_allocs.clone();
    let server = spawn_server(path.clone(), None, move |_st, s| {
        // Warm up, then count the server thread's allocations over the measured messages.
        let mut segs = [bypass_segment {
            ptr: std::ptr::null(),
            len: 0,
        }; 4];
        let mut chunks = [bypass_chunk {
            ptr: std::ptr::null_mut(),
            len: 0,
        }; 4];
        let mut before = 0;
        for k in 0..BURST + WARM + MEASURED {
            if k == BURST + WARM {
                arm_trap();
                before = allocs();
            }
            let mut m = bypass_msg { id: 0 };
            let (mut n, mut nch) = (0usize, 0usize);
            let mut b = bypass_sendbuf { id: 0 };
            // SAFETY: valid out-pointers; `segs`, `chunks` have 4 entries; the segment is
            // readable and the chunk writable until release / send.
            unsafe {
                ok(bypass_socket_recv_msg(s, &mut m));
                ok(bypass_msg_segments(m, segs.as_mut_ptr(), 4, &mut n));
                assert_eq!((n, segs[0].len), (1, LEN));
                ok(bypass_socket_sendbuf(s, LEN, &mut b));
                ok(bypass_sendbuf_chunks(b, chunks.as_mut_ptr(), 4, &mut nch));
                std::ptr::copy_nonoverlapping(segs[0].ptr, chunks[0].ptr, LEN);
                ok(bypass_msg_release(m));
                ok(bypass_sendbuf_send(b, std::ptr::null_mut()));
            }
        }
        sa.store(allocs() - before, Ordering::SeqCst);
        disarm_trap();
        // The client closes.
        assert_eq!(echo_zero_copy(s), 0);
        ok(bypass_socket_abort(s));
    });
    let (st, s) = connect(&path, None);
    let mut segs = [bypass_segment {
        ptr: std::ptr::null(),
        len: 0,
    }; 4];
    let mut chunks = [bypass_chunk {
        ptr: std::ptr::null_mut(),
        len: 0,
    }; 4];
    let mut ready = [0usize; 1];
    for k in 0..BURST {
        let mut b = bypass_sendbuf { id: 0 };
        let mut nch = 0usize;
        // SAFETY: valid out-pointers and arrays; the chunk is written while lent.
        unsafe {
            ok(bypass_socket_sendbuf(s, LEN, &mut b));
            ok(bypass_sendbuf_chunks(b, chunks.as_mut_ptr(), 4, &mut nch));
            std::ptr::write_bytes(chunks[0].ptr, k as u8, LEN);
            ok(bypass_sendbuf_send(b, std::ptr::null_mut()));
        }
    }
    for k in 0..BURST {
        let mut m = bypass_msg { id: 0 };
        let mut n = 0usize;
        // SAFETY: valid out-pointers; the segment is read while lent.
        unsafe {
            ok(bypass_socket_recv_msg(s, &mut m));
            ok(bypass_msg_segments(m, segs.as_mut_ptr(), 4, &mut n));
            assert_eq!((n, segs[0].len, *segs[0].ptr), (1, LEN, k as u8));
            ok(bypass_msg_release(m));
        }
    }
    let mut before = 0;
    for k in 0..WARM + MEASURED {
        if k == WARM {
            arm_trap();
            before = allocs();
        }
        let mut b = bypass_sendbuf { id: 0 };
        let mut m = bypass_msg { id: 0 };
        let (mut n, mut nch, mut nready) = (0usize, 0usize, 0usize);
        // SAFETY: valid out-pointers and arrays; chunk and segment used while lent. The
        // client uses the fused calls (sendbuf + chunks, receive + segments).
        unsafe {
            ok(bypass_socket_sendbuf_chunks(
                s,
                LEN,
                &mut b,
                chunks.as_mut_ptr(),
                4,
                &mut nch,
            ));
            assert_eq!((nch, chunks[0].len), (1, LEN));
            std::ptr::write_bytes(chunks[0].ptr, k as u8, LEN);
            ok(bypass_sendbuf_send(b, std::ptr::null_mut()));
            ok(bypass_stack_poll_ready(
                st,
                &s,
                1,
                ready.as_mut_ptr(),
                &mut nready,
                10_000_000,
            ));
            assert_eq!(nready, 1);
            ok(bypass_socket_recv_segments(
                s,
                &mut m,
                segs.as_mut_ptr(),
                4,
                &mut n,
            ));
            assert_eq!((n, segs[0].len), (1, LEN));
            assert_eq!(*segs[0].ptr, k as u8, "the echo of message {k}");
            ok(bypass_msg_release(m));
        }
    }
    let client = allocs() - before;
    disarm_trap();
    ok(bypass_socket_close(s));
    server.join().unwrap();
    ok(bypass_stack_free(st));
    let server = server_allocs.load(Ordering::SeqCst);
    eprintln!(
        "C zero-copy path, {MEASURED} round trips of {LEN} B after {BURST} + {WARM}: client thread \
         {client} allocations, server thread {server}"
    );
    assert_eq!(client, 0, "client allocations over {MEASURED} messages");
    assert_eq!(server, 0, "server allocations over {MEASURED} messages");
}
