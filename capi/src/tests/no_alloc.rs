//! A counting global allocator shows the C API's zero-copy path allocates nothing per
//! message once warm: the client sends each 64-byte request with
//! `bypass_socket_sendbuf_chunks` + `bypass_sendbuf_send` and takes each response with
//! `bypass_socket_recv_segments` + `bypass_msg_release` (the fused calls); the server, with
//! `bypass_socket_recv_msg` + `bypass_msg_segments` + `bypass_msg_release`, and
//! `bypass_socket_sendbuf` + `bypass_sendbuf_chunks` + `bypass_sendbuf_send`, copying each
//! request into the lent buffer of its response. Two stacks over memif, each on its own
//! thread; counts are per thread. `bypass_stack_poll_ready` over the one socket is in the loop too.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::*;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    /// Print a backtrace at the next this-many allocations (armed in the measured window with
    /// BYPASS_ALLOC_TRACE=N, to find where an allocation comes from).
    static TRAP: Cell<u32> = const { Cell::new(0) };
    static IN_TRAP: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if IN_TRAP.try_with(Cell::get).unwrap_or(true) {
        return;
    }
    // `try_with`: allocations while this thread's locals are being destroyed are not ours.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
    if TRAP.try_with(Cell::get).unwrap_or(0) > 0 {
        IN_TRAP.with(|c| c.set(true));
        TRAP.with(|c| c.set(c.get() - 1));
        let bt = std::backtrace::Backtrace::force_capture();
        eprintln!("allocation in the measured window:\n{bt}");
        IN_TRAP.with(|c| c.set(false));
    }
}

fn arm_trap() {
    if let Ok(v) = std::env::var("BYPASS_ALLOC_TRACE") {
        TRAP.with(|c| c.set(v.parse().unwrap_or(1)));
    }
}

// SAFETY: forwards to the system allocator; the counter is a const-initialised thread-local
// Cell, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded contract.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded contract.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

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
        TRAP.with(|c| c.set(0));
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
    TRAP.with(|c| c.set(0));
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
