//! `bypass_socket`, `bypass_sendbuf` and `bypass_msg`: sending and receiving whole messages,
//! by copy or in place.

use std::ffi::c_char;
use std::rc::Rc;
use std::time::Duration;

use bypass_core::proto::{MsgData, RecvMsg};
use bypass_core::socket::{SendBuf, Socket};

use crate::error::{bypass_result, guard, CError, CResult};
use crate::stack::write_c_string;
use crate::with_state;

/// One connection: whole messages both ways. An opaque handle.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub struct bypass_socket {
    pub(crate) id: u64,
}

/// A message being written in place into the stack's packet buffers (zero-copy send),
/// lent by `bypass_socket_sendbuf`; given back by `bypass_sendbuf_send` or
/// `bypass_sendbuf_discard`. An opaque handle.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub struct bypass_sendbuf {
    pub(crate) id: u64,
}

/// A received message whose bytes stay in the stack's buffers (zero-copy receive) until
/// `bypass_msg_release`. An opaque handle.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub struct bypass_msg {
    pub(crate) id: u64,
}

/// A part of a received message: `len` bytes at `ptr`, readable until the message is
/// released.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct bypass_segment {
    pub ptr: *const u8,
    pub len: usize,
}

/// A part of a send buffer: `len` writable bytes at `ptr`, until the buffer is sent or
/// discarded.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(non_camel_case_types)]
pub struct bypass_chunk {
    pub ptr: *mut u8,
    pub len: usize,
}

/// A connection's counters (`bypass_socket_get_stats`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
#[allow(non_camel_case_types)]
pub struct bypass_socket_stats {
    /// Datagrams sent.
    pub tx_packets: u64,
    /// DATA packets sent for the first time.
    pub tx_data: u64,
    /// Packets retransmitted.
    pub retransmits: u64,
    /// Packets declared lost.
    pub lost: u64,
    /// Lost packets later found to have arrived.
    pub spurious: u64,
    /// Probe timeouts that fired.
    pub ptos: u64,
    /// ACKs sent.
    pub tx_acks: u64,
    /// Packets received for this connection.
    pub rx_packets: u64,
    /// Duplicate packets dropped.
    pub rx_duplicates: u64,
    /// Packets dropped for exceeding credit, budgets or windows.
    pub rx_refused: u64,
    /// Messages delivered to us.
    pub rx_messages: u64,
    /// Bytes of the messages delivered to us.
    pub rx_message_bytes: u64,
    /// Messages the peer acknowledged completely.
    pub acked_messages: u64,
    /// First transmissions that sent an application-written send buffer itself (no copy).
    pub tx_zero_copy: u64,
}

/// A live socket: shared with the send buffers lent from it (a `SendBuf` borrows its
/// `Socket`), and the message a too-small receive buffer left for the next call.
pub(crate) struct SockEntry {
    pub sock: Rc<Socket>,
    pub pending: Option<RecvMsg>,
}

/// A lent send buffer and the socket it borrows. Field order matters: `buf` drops before
/// `_sock`, so the borrow never outlives the socket.
pub(crate) struct BufEntry {
    buf: Option<SendBuf<'static>>,
    _sock: Rc<Socket>,
}

fn not_ready() -> CError {
    CError::new(bypass_result::BYPASS_NOT_READY, String::new())
}

/// Sets the timeout of this socket's waiting calls (send under backpressure, receive,
/// flush, close), in milliseconds; a negative value waits forever. Default 10 s.
#[no_mangle]
pub extern "C" fn bypass_socket_set_timeout_ms(sock: bypass_socket, ms: i64) -> bypass_result {
    guard("bypass_socket_set_timeout_ms", || {
        with_state(|st| {
            let t = u64::try_from(ms).ok().map(Duration::from_millis);
            st.sockets.get(sock.id)?.sock.set_timeout(t);
            Ok(())
        })
    })
}

/// Sends a copy of `len` bytes at `data` as one message (waiting while the send queue is
/// full, up to the socket's timeout); `*id` (if not NULL) gets the message id. One copy,
/// one allocation; see `bypass_socket_sendbuf` for none.
///
/// # Safety
/// `data` must point to `len` readable bytes (may be NULL when `len` is 0); `id` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn bypass_socket_send(
    sock: bypass_socket,
    data: *const u8,
    len: usize,
    id: *mut u64,
) -> bypass_result {
    guard("bypass_socket_send", || {
        let bytes: &[u8] = if len == 0 {
            &[]
        } else if data.is_null() {
            return Err(CError::null("data"));
        } else {
            // SAFETY: `data` points to `len` readable bytes by the caller's contract.
            unsafe { std::slice::from_raw_parts(data, len) }
        };
        let mid = with_state(|st| Ok(st.sockets.get(sock.id)?.sock.send(bytes)?))?;
        if !id.is_null() {
            // SAFETY: non-NULL and writable by the caller's contract.
            unsafe { id.write(mid) };
        }
        Ok(())
    })
}

/// Lends a `len`-byte message to write in place in the stack's packet buffers (zero-copy
/// send), in `*out`: read its chunks with `bypass_sendbuf_chunks` (or write with
/// `bypass_sendbuf_write`), then `bypass_sendbuf_send` it, or `bypass_sendbuf_discard` it.
/// Waits (up to the socket's timeout) while the pool is short of buffers and messages are
/// in flight. No allocation once warm. Every byte must be written before sending (what is
/// not written is old packet data of this process).
///
/// # Safety
/// `out` must be NULL or point to a writable `bypass_sendbuf`.
#[no_mangle]
pub unsafe extern "C" fn bypass_socket_sendbuf(
    sock: bypass_socket,
    len: usize,
    out: *mut bypass_sendbuf,
) -> bypass_result {
    guard("bypass_socket_sendbuf", || {
        if out.is_null() {
            return Err(CError::null("out"));
        }
        let id = with_state(|st| {
            let rc = st.sockets.get(sock.id)?.sock.clone();
            let buf = rc.send_buf(len)?;
            // SAFETY: the `SendBuf` borrows the `Socket` inside `rc`'s allocation, which does
            // not move and lives as long as any `Rc` to it. The entry keeps one (`_sock`) and
            // drops `buf` before it (field order), and `send` consumes `buf` while the entry
            // holds the `Rc`; nothing ever takes `&mut Socket` (its API is `&self`). So the
            // borrow never outlives the socket, whatever the lifetime says.
            let buf = unsafe { std::mem::transmute::<SendBuf<'_>, SendBuf<'static>>(buf) };
            st.bufs.insert(BufEntry {
                buf: Some(buf),
                _sock: rc,
            })
        })?;
        // SAFETY: non-NULL and writable by the caller's contract.
        unsafe { out.write(bypass_sendbuf { id }) };
        Ok(())
    })
}

/// `bypass_socket_sendbuf` and `bypass_sendbuf_chunks` in one call (the send path of a
/// message always needs both): lends a `len`-byte send buffer as `*out` and writes its first
/// `min(cap, count)` chunks to `chunks` and their number to `*count`. When `cap` is less
/// than the count, returns `BYPASS_ERR_BUFFER_TOO_SMALL` with the buffer lent all the same
/// (`*out` is set: get the rest with `bypass_sendbuf_chunks`, or write by offset).
///
/// # Safety
/// `out` and `count` must be writable; `chunks` must point to `cap` writable
/// `bypass_chunk`s (may be NULL when `cap` is 0).
#[no_mangle]
pub unsafe extern "C" fn bypass_socket_sendbuf_chunks(
    sock: bypass_socket,
    len: usize,
    out: *mut bypass_sendbuf,
    chunks: *mut bypass_chunk,
    cap: usize,
    count: *mut usize,
) -> bypass_result {
    guard("bypass_socket_sendbuf_chunks", || {
        if out.is_null() || count.is_null() {
            return Err(CError::null(if out.is_null() { "out" } else { "count" }));
        }
        if cap > 0 && chunks.is_null() {
            return Err(CError::null("chunks"));
        }
        let (id, n) = with_state(|st| {
            let rc = st.sockets.get(sock.id)?.sock.clone();
            let mut buf = rc.send_buf(len)?;
            // SAFETY: `chunks` has room for `cap` entries by the caller's contract.
            let n = unsafe { write_chunks(&mut buf, chunks, cap) };
            // SAFETY: as in `bypass_socket_sendbuf`: the entry keeps the `Rc` that owns the
            // socket and drops the buffer first.
            let buf = unsafe { std::mem::transmute::<SendBuf<'_>, SendBuf<'static>>(buf) };
            let id = st.bufs.insert(BufEntry {
                buf: Some(buf),
                _sock: rc,
            })?;
            Ok((id, n))
        })?;
        // SAFETY: non-NULL and writable by the caller's contract.
        unsafe {
            out.write(bypass_sendbuf { id });
            count.write(n);
        }
        if n > cap {
            return Err(too_few("chunks", n, cap));
        }
        Ok(())
    })
}

/// Writes the first `cap` chunks of `b` to `chunks`; returns the number of chunks.
///
/// # Safety
/// `chunks` must have room for `cap` entries (or `cap` be 0).
unsafe fn write_chunks(b: &mut SendBuf<'_>, chunks: *mut bypass_chunk, cap: usize) -> usize {
    let mut n = 0;
    for c in b.chunks_mut() {
        if n < cap {
            // SAFETY: `chunks` has room for `cap` entries; n < cap.
            unsafe {
                chunks.add(n).write(bypass_chunk {
                    ptr: c.as_mut_ptr(),
                    len: c.len(),
                })
            };
        }
        n += 1;
    }
    n
}

fn buf_mut(st: &mut crate::State, b: bypass_sendbuf) -> CResult<&mut SendBuf<'static>> {
    st.bufs.get_mut(b.id)?.buf.as_mut().ok_or_else(|| {
        CError::new(
            bypass_result::BYPASS_ERR_BAD_HANDLE,
            "send buffer already sent",
        )
    })
}

/// The send buffer's writable chunks, in order (chunk k holds bytes
/// `[k * chunk_len, ...)` of the message, one packet's payload each; the last may be
/// shorter): the first `min(cap, count)` are written to `chunks`, and their number to
/// `*count`. `BYPASS_ERR_BUFFER_TOO_SMALL` when `cap` is less than the count (the first
/// `cap` are written anyway). The pointers stay valid until the buffer is sent or
/// discarded.
///
/// # Safety
/// `chunks` must point to `cap` writable `bypass_chunk`s (may be NULL when `cap` is 0);
/// `count` must be writable.
#[no_mangle]
pub unsafe extern "C" fn bypass_sendbuf_chunks(
    buf: bypass_sendbuf,
    chunks: *mut bypass_chunk,
    cap: usize,
    count: *mut usize,
) -> bypass_result {
    guard("bypass_sendbuf_chunks", || {
        if count.is_null() {
            return Err(CError::null("count"));
        }
        if cap > 0 && chunks.is_null() {
            return Err(CError::null("chunks"));
        }
        let n = with_state(|st| {
            let b = buf_mut(st, buf)?;
            // SAFETY: `chunks` has room for `cap` entries by the caller's contract.
            Ok(unsafe { write_chunks(b, chunks, cap) })
        })?;
        // SAFETY: non-NULL and writable by the caller's contract.
        unsafe { count.write(n) };
        if n > cap {
            return Err(too_few("chunks", n, cap));
        }
        Ok(())
    })
}

/// Copies `len` bytes at `src` into the send buffer at byte `offset` of the message (across
/// chunks as needed). `BYPASS_ERR_SEND_BUFFER` when it would run past the end (nothing is
/// written then).
///
/// # Safety
/// `src` must point to `len` readable bytes (may be NULL when `len` is 0).
#[no_mangle]
pub unsafe extern "C" fn bypass_sendbuf_write(
    buf: bypass_sendbuf,
    offset: usize,
    src: *const u8,
    len: usize,
) -> bypass_result {
    guard("bypass_sendbuf_write", || {
        let s: &[u8] = if len == 0 {
            &[]
        } else if src.is_null() {
            return Err(CError::null("src"));
        } else {
            // SAFETY: `src` points to `len` readable bytes by the caller's contract.
            unsafe { std::slice::from_raw_parts(src, len) }
        };
        with_state(|st| Ok(buf_mut(st, buf)?.write_at(offset, s)?))
    })
}

/// Queues the send buffer as one message (waiting while the send queue is full, up to the
/// socket's timeout); `*id` (if not NULL) gets the message id. The buffer's handle is given
/// back whatever the result (its buffers return to the pool on error).
///
/// # Safety
/// `id` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn bypass_sendbuf_send(buf: bypass_sendbuf, id: *mut u64) -> bypass_result {
    guard("bypass_sendbuf_send", || {
        let mid = with_state(|st| {
            let mut e = st.bufs.remove(buf.id)?;
            let b = e.buf.take().ok_or_else(|| {
                CError::new(
                    bypass_result::BYPASS_ERR_BAD_HANDLE,
                    "send buffer already sent",
                )
            })?;
            Ok(b.send()?)
        })?;
        if !id.is_null() {
            // SAFETY: non-NULL and writable by the caller's contract.
            unsafe { id.write(mid) };
        }
        Ok(())
    })
}

/// Gives a send buffer back without sending it (its packet buffers return to the pool).
#[no_mangle]
pub extern "C" fn bypass_sendbuf_discard(buf: bypass_sendbuf) -> bypass_result {
    guard("bypass_sendbuf_discard", || {
        with_state(|st| st.bufs.remove(buf.id).map(drop))
    })
}

/// The next message of `e`: the one a too-small buffer left, else from the socket.
fn next_msg(e: &mut SockEntry, wait: bool) -> CResult<RecvMsg> {
    if let Some(m) = e.pending.take() {
        return Ok(m);
    }
    if wait {
        Ok(e.sock.recv_msg()?)
    } else {
        e.sock.try_recv_msg()?.ok_or_else(not_ready)
    }
}

/// Calls `f` with each part of `m`, in order.
fn for_parts(m: &RecvMsg, mut f: impl FnMut(&[u8])) {
    match &m.data {
        MsgData::Packet(p) => f(&p[..]),
        MsgData::Buffer(b) => f(&b[..]),
        MsgData::Segments(s) => s.iter().for_each(f),
        // Never posted through this API.
        MsgData::Target(_) => {}
    }
}

fn parts(m: &RecvMsg) -> usize {
    match &m.data {
        MsgData::Packet(_) | MsgData::Buffer(_) => 1,
        MsgData::Segments(s) => s.parts(),
        MsgData::Target(_) => 0,
    }
}

/// Receives into the caller's buffer.
///
/// # Safety
/// `buf` must point to `cap` writable bytes (may be NULL when `cap` is 0); `len` writable.
unsafe fn recv_copy(
    sock: bypass_socket,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
    wait: bool,
) -> CResult {
    if len.is_null() {
        return Err(CError::null("len"));
    }
    if cap > 0 && buf.is_null() {
        return Err(CError::null("buf"));
    }
    with_state(|st| {
        let e = st.sockets.get_mut(sock.id)?;
        let m = next_msg(e, wait)?;
        let need = m.len as usize;
        // SAFETY: `len` is non-NULL and writable by the caller's contract.
        unsafe { len.write(need) };
        if need > cap {
            e.pending = Some(m);
            return Err(CError::new(
                bypass_result::BYPASS_ERR_BUFFER_TOO_SMALL,
                format!(
                    "the message is {need} bytes, the buffer {cap}: it is kept for the next \
                     receive call (*len says the size needed)"
                ),
            ));
        }
        let mut at = 0usize;
        for_parts(&m, |p| {
            let n = p.len().min(cap - at);
            // SAFETY: `buf` has `cap` writable bytes; at + n <= cap.
            unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), buf.add(at), n) };
            at += n;
        });
        // SAFETY: as above.
        unsafe { len.write(at) };
        Ok(())
    })
}

/// Waits (up to the socket's timeout) for the next whole message and copies it into `buf`;
/// `*len` gets its length. When the message is longer than `cap`, returns
/// `BYPASS_ERR_BUFFER_TOO_SMALL` with the length needed in `*len` and keeps the message for
/// the next receive call (nothing is lost). `BYPASS_ERR_CLOSED` once the peer closed.
///
/// # Safety
/// `buf` must point to `cap` writable bytes (may be NULL when `cap` is 0); `len` writable.
#[no_mangle]
pub unsafe extern "C" fn bypass_socket_recv(
    sock: bypass_socket,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
) -> bypass_result {
    // SAFETY: forwarded contract.
    guard("bypass_socket_recv", || unsafe {
        recv_copy(sock, buf, cap, len, true)
    })
}

/// As `bypass_socket_recv` without waiting: polls once, `BYPASS_NOT_READY` when no message is
/// there.
///
/// # Safety
/// As `bypass_socket_recv`.
#[no_mangle]
pub unsafe extern "C" fn bypass_socket_try_recv(
    sock: bypass_socket,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
) -> bypass_result {
    // SAFETY: forwarded contract.
    guard("bypass_socket_try_recv", || unsafe {
        recv_copy(sock, buf, cap, len, false)
    })
}

/// Receives a message handle (zero-copy).
///
/// # Safety
/// `out` must be NULL or writable.
unsafe fn recv_msg(sock: bypass_socket, out: *mut bypass_msg, wait: bool) -> CResult {
    if out.is_null() {
        return Err(CError::null("out"));
    }
    let id = with_state(|st| {
        let m = next_msg(st.sockets.get_mut(sock.id)?, wait)?;
        st.msgs.insert(m)
    })?;
    // SAFETY: non-NULL and writable by the caller's contract.
    unsafe { out.write(bypass_msg { id }) };
    Ok(())
}

/// Writes the first `cap` parts of `m` to `segs`; returns the number of parts.
///
/// # Safety
/// `segs` must have room for `cap` entries (or `cap` be 0).
unsafe fn write_segments(m: &RecvMsg, segs: *mut bypass_segment, cap: usize) -> usize {
    let mut n = 0;
    for_parts(m, |p| {
        if n < cap {
            // SAFETY: `segs` has room for `cap` entries; n < cap.
            unsafe {
                segs.add(n).write(bypass_segment {
                    ptr: p.as_ptr(),
                    len: p.len(),
                })
            };
        }
        n += 1;
    });
    n
}

fn too_few(what: &str, n: usize, cap: usize) -> CError {
    CError::new(
        bypass_result::BYPASS_ERR_BUFFER_TOO_SMALL,
        format!("{n} {what}, room was given for {cap}"),
    )
}

/// `bypass_socket_recv_msg` and `bypass_msg_segments` in one call (the receive path of a
/// message always needs both): waits for the next message, lends it as `*out`, writes its
/// first `min(cap, count)` segments to `segs` and their number to `*count`. When `cap` is
/// less than the count, returns `BYPASS_ERR_BUFFER_TOO_SMALL` with the message lent all the
/// same (`*out` is set: read the rest with `bypass_msg_segments`, release it as usual).
///
/// # Safety
/// `out` and `count` must be writable; `segs` must point to `cap` writable
/// `bypass_segment`s (may be NULL when `cap` is 0).
#[no_mangle]
pub unsafe extern "C" fn bypass_socket_recv_segments(
    sock: bypass_socket,
    out: *mut bypass_msg,
    segs: *mut bypass_segment,
    cap: usize,
    count: *mut usize,
) -> bypass_result {
    guard("bypass_socket_recv_segments", || {
        if out.is_null() || count.is_null() {
            return Err(CError::null(if out.is_null() { "out" } else { "count" }));
        }
        if cap > 0 && segs.is_null() {
            return Err(CError::null("segs"));
        }
        let (id, n) = with_state(|st| {
            let m = next_msg(st.sockets.get_mut(sock.id)?, true)?;
            // SAFETY: `segs` has room for `cap` entries by the caller's contract.
            let n = unsafe { write_segments(&m, segs, cap) };
            Ok((st.msgs.insert(m)?, n))
        })?;
        // SAFETY: non-NULL and writable by the caller's contract.
        unsafe {
            out.write(bypass_msg { id });
            count.write(n);
        }
        if n > cap {
            return Err(too_few("segments", n, cap));
        }
        Ok(())
    })
}

/// Waits (up to the socket's timeout) for the next whole message and lends it, in place in
/// the stack's buffers, as `*out` (zero-copy receive: no copy for a single-packet message,
/// nor for a multi-packet one with `bypass_config_set_rx_segments`; no allocation for a
/// single-packet one). Read it with `bypass_msg_segments`, then `bypass_msg_release` it:
/// until then it holds packet buffers of the stack's pool.
///
/// # Safety
/// `out` must be NULL or point to a writable `bypass_msg`.
#[no_mangle]
pub unsafe extern "C" fn bypass_socket_recv_msg(
    sock: bypass_socket,
    out: *mut bypass_msg,
) -> bypass_result {
    // SAFETY: forwarded contract.
    guard("bypass_socket_recv_msg", || unsafe {
        recv_msg(sock, out, true)
    })
}

/// As `bypass_socket_recv_msg` without waiting: `BYPASS_NOT_READY` when no message is there.
///
/// # Safety
/// As `bypass_socket_recv_msg`.
#[no_mangle]
pub unsafe extern "C" fn bypass_socket_try_recv_msg(
    sock: bypass_socket,
    out: *mut bypass_msg,
) -> bypass_result {
    // SAFETY: forwarded contract.
    guard("bypass_socket_try_recv_msg", || unsafe {
        recv_msg(sock, out, false)
    })
}

/// A message's length in bytes (`*len`) and its number of segments (`*segments`); either
/// pointer may be NULL.
///
/// # Safety
/// `len` and `segments` must be NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn bypass_msg_info(
    msg: bypass_msg,
    len: *mut u64,
    segments: *mut usize,
) -> bypass_result {
    guard("bypass_msg_info", || {
        let (l, n) = with_state(|st| {
            let m = st.msgs.get(msg.id)?;
            Ok((m.len, parts(m)))
        })?;
        if !len.is_null() {
            // SAFETY: non-NULL and writable by the caller's contract.
            unsafe { len.write(l) };
        }
        if !segments.is_null() {
            // SAFETY: non-NULL and writable by the caller's contract.
            unsafe { segments.write(n) };
        }
        Ok(())
    })
}

/// A message's bytes as `(ptr, len)` segments, in order: the first `min(cap, count)` are
/// written to `segs` and their number to `*count`. `BYPASS_ERR_BUFFER_TOO_SMALL` when `cap`
/// is less than the count (the first `cap` are written anyway). The bytes stay readable
/// until `bypass_msg_release`.
///
/// # Safety
/// `segs` must point to `cap` writable `bypass_segment`s (may be NULL when `cap` is 0);
/// `count` must be writable.
#[no_mangle]
pub unsafe extern "C" fn bypass_msg_segments(
    msg: bypass_msg,
    segs: *mut bypass_segment,
    cap: usize,
    count: *mut usize,
) -> bypass_result {
    guard("bypass_msg_segments", || {
        if count.is_null() {
            return Err(CError::null("count"));
        }
        if cap > 0 && segs.is_null() {
            return Err(CError::null("segs"));
        }
        let n = with_state(|st| {
            let m = st.msgs.get(msg.id)?;
            // SAFETY: `segs` has room for `cap` entries by the caller's contract.
            Ok(unsafe { write_segments(m, segs, cap) })
        })?;
        // SAFETY: non-NULL and writable by the caller's contract.
        unsafe { count.write(n) };
        if n > cap {
            return Err(too_few("segments", n, cap));
        }
        Ok(())
    })
}

/// Gives a message's buffers back to the stack. Its handle is stale afterwards: releasing
/// it again returns `BYPASS_ERR_BAD_HANDLE`.
#[no_mangle]
pub extern "C" fn bypass_msg_release(msg: bypass_msg) -> bypass_result {
    guard("bypass_msg_release", || {
        with_state(|st| st.msgs.remove(msg.id).map(drop))
    })
}

/// Waits (up to the socket's timeout) until every message sent so far is acknowledged.
#[no_mangle]
pub extern "C" fn bypass_socket_flush(sock: bypass_socket) -> bypass_result {
    guard("bypass_socket_flush", || {
        with_state(|st| Ok(st.sockets.get(sock.id)?.sock.flush()?))
    })
}

/// Closes gracefully: queued messages are delivered first, then the peer's confirmation is
/// awaited (up to the socket's timeout). The handle is given back whatever the result;
/// messages received from it stay valid until released, and a send buffer lent from it can
/// still be discarded (sending it returns `BYPASS_ERR_CLOSED`).
#[no_mangle]
pub extern "C" fn bypass_socket_close(sock: bypass_socket) -> bypass_result {
    guard("bypass_socket_close", || {
        with_state(|st| {
            let e = st.sockets.remove(sock.id)?;
            e.sock.shutdown()?;
            Ok(())
        })
    })
}

/// Frees the socket at once: a connection still open is reset (the peer sees
/// `BYPASS_ERR_CONNECTION_RESET`). Use `bypass_socket_close` to end it gracefully.
#[no_mangle]
pub extern "C" fn bypass_socket_abort(sock: bypass_socket) -> bypass_result {
    guard("bypass_socket_abort", || {
        with_state(|st| st.sockets.remove(sock.id).map(drop))
    })
}

/// The connection's counters, in `*out`. `BYPASS_ERR_CLOSED` once the connection is gone
/// from the stack.
///
/// # Safety
/// `out` must be NULL or point to a writable `bypass_socket_stats`.
#[no_mangle]
pub unsafe extern "C" fn bypass_socket_get_stats(
    sock: bypass_socket,
    out: *mut bypass_socket_stats,
) -> bypass_result {
    guard("bypass_socket_get_stats", || {
        if out.is_null() {
            return Err(CError::null("out"));
        }
        let s = with_state(|st| {
            let s = &st.sockets.get(sock.id)?.sock;
            let c = s.stats().ok_or_else(|| {
                CError::new(
                    bypass_result::BYPASS_ERR_CLOSED,
                    "the connection is gone from the stack",
                )
            })?;
            Ok(bypass_socket_stats {
                tx_packets: c.tx_packets,
                tx_data: c.tx_data,
                retransmits: c.retransmits,
                lost: c.lost,
                spurious: c.spurious,
                ptos: c.ptos,
                tx_acks: c.tx_acks,
                rx_packets: c.rx_packets,
                rx_duplicates: c.rx_duplicates,
                rx_refused: c.rx_refused,
                rx_messages: c.rx_messages,
                rx_message_bytes: c.rx_message_bytes,
                acked_messages: s.acked(),
                tx_zero_copy: s.tx_zero_copy(),
            })
        })?;
        // SAFETY: non-NULL and writable by the caller's contract.
        unsafe { out.write(s) };
        Ok(())
    })
}

/// Writes the peer's `"IP:PORT"` into `buf` (NUL-terminated, truncated to `len - 1`);
/// `*needed` (if not NULL) gets the length plus one.
///
/// # Safety
/// `buf` must be NULL or point to `len` writable bytes; `needed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn bypass_socket_peer(
    sock: bypass_socket,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> bypass_result {
    guard("bypass_socket_peer", || {
        let a = with_state(|st| Ok(st.sockets.get(sock.id)?.sock.peer_addr()))?;
        // SAFETY: forwarded contract.
        unsafe { write_c_string(&a.to_string(), buf, len, needed) }
    })
}
