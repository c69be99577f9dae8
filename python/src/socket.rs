//! `bypass.Socket`: one connection; whole messages.

use std::collections::VecDeque;
use std::time::Duration;

use bypass::proto::{RecvMsg, RecvTarget};
use bypass::socket::{Error as SockError, Socket as RsSocket};
use bytes::Bytes;
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyBufferError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMemoryView};

use crate::errors::{closed, timeout, to_py, too_small};
use crate::message::{Message, MsgBytes};
use crate::target::{self, Dest, Shared};
use crate::{deadline, duration, wait, without_gil};

/// A `bytes` object as the owner of a `Bytes`: sent with no copy. `bytes` are immutable, so
/// what the stack sends (and may retransmit) is what the caller passed.
struct PyBytesOwner {
    _obj: Py<PyBytes>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the pointer is into the `bytes` object that `_obj` keeps alive, immutable for its
// whole life; `Py<T>` is Send (its drop without the GIL is deferred by pyo3), and reading
// immutable memory from any thread is sound.
unsafe impl Send for PyBytesOwner {}

impl AsRef<[u8]> for PyBytesOwner {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: see `Send` above: `ptr..ptr + len` is the bytes object's content, alive and
        // unchanged while `_obj` is held.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// A connection. From `Stack.connect()` or `Listener.accept()`; belongs to the stack's thread.
///
/// `send(buf)` takes any C-contiguous buffer (bytes, bytearray, memoryview, numpy array).
/// `recv()` returns a read-only memoryview over the message in the stack's buffer (no copy);
/// `recv_message()` the `bypass.Message` itself; `recv_into(buf)` fills a writable buffer and
/// returns the length. `timeout` (seconds, None: forever; default 10) bounds each wait.
#[pyclass(module = "bypass", unsendable)]
pub struct Socket {
    sock: Option<RsSocket>,
    timeout: Option<Duration>,
    /// Messages taken from the stack but not yet given to the caller: one that did not fit a
    /// `recv_into` buffer, or one that completed while another was landing in the caller's
    /// buffer. Delivered first, in order.
    pending: VecDeque<(u64, MsgBytes)>,
    /// The socket's one receive target (see `target`); `None` while the connection holds it.
    target_box: Option<Box<dyn RecvTarget>>,
    target: Shared,
    /// The stack delivers in send order: keep that order here too.
    ordered: bool,
}

impl Socket {
    pub(crate) fn new(sock: RsSocket, ordered: bool) -> PyResult<Socket> {
        let (b, shared) = target::new();
        let mut s = Socket {
            sock: Some(sock),
            timeout: Some(Duration::from_secs(10)),
            pending: VecDeque::new(),
            target_box: Some(b),
            target: shared,
            ordered,
        };
        s.repost();
        Ok(s)
    }

    fn get(&self) -> PyResult<&RsSocket> {
        self.sock.as_ref().ok_or_else(|| closed("the socket"))
    }

    /// Post the target if we hold it (a closed connection refuses it: kept).
    fn repost(&mut self) {
        if let (Some(s), Some(t)) = (self.sock.as_ref(), self.target_box.take()) {
            if let Err(e) = s.post_target(t) {
                // Only `Closed` (connection gone) or `TooManyTargets` (never: one target):
                // the box went into the refused call; a fresh one is posted next time.
                let _ = e;
                let (b, shared) = target::new();
                self.target_box = Some(b);
                self.target = shared;
            }
        }
    }

    /// Wait for the next message from the stack (not the pending queue).
    fn next_msg(&self, py: Python<'_>) -> PyResult<RecvMsg> {
        let sock = self.get()?;
        let t = self.timeout;
        match wait(py, deadline(t), || sock.try_recv_msg())? {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(timeout("recv", t.unwrap_or_default())),
            Err(e) => Err(to_py(e)),
        }
    }

    /// A message's bytes: the target's own buffer for a message that came back in the target
    /// (re-posting the target), the stack's buffer otherwise.
    fn bytes_of(&mut self, m: RecvMsg) -> (u64, MsgBytes) {
        let (id, len) = (m.id, m.len as usize);
        match MsgBytes::from_msg(m) {
            Ok(b) => (id, b),
            Err(t) => {
                let dest = self.target.reset();
                self.target_box = Some(t);
                self.repost();
                let v = match dest {
                    Dest::Own(mut v) => {
                        v.truncate(len);
                        v
                    }
                    // Not reached: outside `recv_into` the target writes only to its own
                    // buffer. Reported as an empty message rather than a panic.
                    Dest::User(_) | Dest::None => Vec::new(),
                };
                (id, MsgBytes::Vec(v))
            }
        }
    }

    /// The next message as bytes: pending first.
    fn next_bytes(&mut self, py: Python<'_>) -> PyResult<(u64, MsgBytes)> {
        if let Some(p) = self.pending.pop_front() {
            return Ok(p);
        }
        let m = self.next_msg(py)?;
        Ok(self.bytes_of(m))
    }

    /// `recv_into` with the caller's buffer offered as the target; the caller disarms.
    fn recv_into_armed(&mut self, py: Python<'_>, ptr: *mut u8, cap: usize) -> PyResult<usize> {
        loop {
            let m = self.next_msg(py)?;
            let (id, len) = (m.id, m.len as usize);
            match MsgBytes::from_msg(m) {
                Err(t) => {
                    // Ours: in the caller's buffer (armed now), or in our own buffer (it began
                    // landing during an earlier call).
                    let dest = self.target.reset();
                    self.target_box = Some(t);
                    let r = match dest {
                        Dest::User(b) => {
                            drop(b); // the GIL is held here
                            Ok(len)
                        }
                        Dest::Own(mut v) => {
                            v.truncate(len);
                            self.deliver_into(py, id, MsgBytes::Vec(v), ptr, cap)
                        }
                        // Not reached (a message that wrote nothing cannot complete).
                        Dest::None => Err(crate::errors::Error::new_err(
                            "a message came back in the receive target with no bytes",
                        )),
                    };
                    // Offered again, to this call's buffer, at the next `arm`.
                    self.repost();
                    return r;
                }
                Ok(b) => {
                    let landing = {
                        let t = self.target.lock();
                        t.written && matches!(t.dest, Dest::User(_))
                    };
                    if landing {
                        if !self.ordered {
                            // A message is landing in the caller's buffer: this one (which
                            // completed first) waits its turn, and that one keeps landing.
                            self.pending.push_back((id, b));
                            continue;
                        }
                        // In send order this one comes first: the message landing in the
                        // caller's buffer moves to the target's own buffer (a copy of what
                        // arrived so far), and this one goes into the caller's buffer.
                        let held = self.target.disarm();
                        let r = self.deliver_into(py, id, b, ptr, cap);
                        drop(held);
                        return r;
                    }
                    return self.deliver_into(py, id, b, ptr, cap);
                }
            }
        }
    }

    /// Copy `b` into the caller's buffer, or keep it pending if it does not fit.
    fn deliver_into(
        &mut self,
        py: Python<'_>,
        id: u64,
        b: MsgBytes,
        ptr: *mut u8,
        cap: usize,
    ) -> PyResult<usize> {
        let src = b.as_slice();
        let n = src.len();
        if n > cap {
            self.pending.push_front((id, b));
            return Err(too_small(py, n as u64, cap));
        }
        // SAFETY: `ptr..ptr + cap` is the caller's writable, C-contiguous buffer, exported
        // to us for the whole call (`recv_into` holds the export); `n <= cap`; `src` is the
        // stack's buffer, distinct memory.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), ptr, n) };
        Ok(n)
    }
}

/// A writable, C-contiguous export of `buf`.
fn writable(buf: &Bound<'_, PyAny>) -> PyResult<PyUntypedBuffer> {
    let b = PyUntypedBuffer::get(buf)?;
    if b.readonly() {
        return Err(PyTypeError::new_err(
            "recv_into needs a writable buffer (bytearray, numpy array, memoryview of one), \
             not a read-only one",
        ));
    }
    if !b.is_c_contiguous() {
        return Err(PyBufferError::new_err(
            "recv_into needs a C-contiguous buffer (numpy: np.ascontiguousarray)",
        ));
    }
    Ok(b)
}

#[pymethods]
impl Socket {
    /// Timeout of blocking calls in seconds (None: wait forever; default 10).
    #[getter]
    fn get_timeout(&self) -> Option<f64> {
        self.timeout.map(|d| d.as_secs_f64())
    }

    #[setter]
    fn set_timeout(&mut self, t: Option<f64>) -> PyResult<()> {
        self.timeout = duration(t)?;
        // `flush` and `close` wait in the Rust socket, under its own timeout.
        if let Some(s) = &self.sock {
            s.set_timeout(self.timeout);
        }
        Ok(())
    }

    /// The peer's address as (ip, port).
    #[getter]
    fn peer_addr(&self) -> PyResult<(String, u16)> {
        let a = self.get()?.peer_addr();
        Ok((a.ip().to_string(), a.port()))
    }

    /// Whether the socket was closed from this side (`close()` or `with` exit).
    #[getter]
    fn closed(&self) -> bool {
        self.sock.is_none()
    }

    /// Messages the peer acknowledged completely so far.
    #[getter]
    fn acked(&self) -> PyResult<u64> {
        Ok(self.get()?.acked())
    }

    /// Send one message: anything with the buffer protocol, C-contiguous (bytes, bytearray,
    /// memoryview, numpy array). `bytes` are sent without a copy; other buffers are copied
    /// once (they may change after `send` returns). Waits while the send queue is full.
    /// Returns the message id.
    fn send(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<u64> {
        let sock = self.get()?;
        let msg = if let Ok(b) = data.cast::<PyBytes>() {
            let s = b.as_bytes();
            let (ptr, len) = (s.as_ptr(), s.len());
            Bytes::from_owner(PyBytesOwner {
                _obj: b.clone().unbind(),
                ptr,
                len,
            })
        } else {
            let b = PyUntypedBuffer::get(data)?;
            if !b.is_c_contiguous() {
                return Err(PyBufferError::new_err(
                    "send needs a C-contiguous buffer (numpy: np.ascontiguousarray)",
                ));
            }
            // SAFETY: a live export of `len_bytes` contiguous bytes, read while we hold it
            // and the GIL (nothing resizes it).
            let s = unsafe { std::slice::from_raw_parts(b.buf_ptr() as *const u8, b.len_bytes()) };
            Bytes::copy_from_slice(s)
        };
        let mut msg = Some(msg);
        let t = self.timeout;
        match wait(py, deadline(t), || sock.try_send(&mut msg))? {
            Ok(Some(id)) => Ok(id),
            Ok(None) => Err(timeout("send (send queue full)", t.unwrap_or_default())),
            Err(e) => Err(to_py(e)),
        }
    }

    /// The next message as a read-only memoryview over the stack's buffer (no copy). The
    /// buffer goes back to the stack when the memoryview is released (`mv.release()`, `with`)
    /// or garbage.
    fn recv<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyMemoryView>> {
        let m = self.recv_message(py)?;
        PyMemoryView::from(m.as_any())
    }

    /// The next message as a `bypass.Message` (buffer protocol; `release()`, `with`).
    fn recv_message<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, Message>> {
        let (id, b) = self.next_bytes(py)?;
        Bound::new(py, Message::new(id, b))
    }

    /// Receive the next message into `buf` (writable, C-contiguous: bytearray, numpy array,
    /// a pinned tensor's memory) and return its length. A multi-packet message lands in
    /// `buf` directly (no reassembly copy). A message longer than `buf` raises
    /// `bypass.BufferTooSmall` (its `needed` attribute: the length) and is kept for the next
    /// `recv_into`/`recv`. `buf` is never written after the call returns.
    fn recv_into(&mut self, py: Python<'_>, buf: &Bound<'_, PyAny>) -> PyResult<usize> {
        let b = writable(buf)?;
        self.get()?;
        let (ptr, cap) = (b.buf_ptr() as *mut u8, b.len_bytes());
        if let Some((id, m)) = self.pending.pop_front() {
            return self.deliver_into(py, id, m, ptr, cap);
        }
        // Offer the buffer as the target (unless a message is still landing in the target's
        // own buffer: then this call copies).
        match self.target.arm(b) {
            Ok(()) => {
                let r = self.recv_into_armed(py, ptr, cap);
                // Whatever happened, `buf` is released from the target now.
                drop(self.target.disarm());
                r
            }
            Err(b) => {
                let r = self
                    .next_bytes(py)
                    .and_then(|(id, m)| self.deliver_into(py, id, m, ptr, cap));
                drop(b);
                r
            }
        }
    }

    /// Wait until every message sent so far is acknowledged by the peer.
    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let sock = self.get()?;
        without_gil(py, || sock.flush()).map_err(to_py)
    }

    /// Close gracefully: queued messages are delivered first; waits up to the timeout for
    /// the peer's confirmation. Closing a closed socket does nothing. After `close`, every
    /// call raises `bypass.Closed`.
    fn close(&mut self, py: Python<'_>) -> PyResult<()> {
        let Some(s) = self.sock.take() else {
            return Ok(());
        };
        self.pending.clear();
        let r = without_gil(py, || {
            let r = s.shutdown();
            drop(s);
            r
        });
        match r {
            Ok(()) | Err(SockError::Closed) => Ok(()),
            Err(e) => Err(to_py(e)),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &mut self,
        py: Python<'_>,
        t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        let r = self.close(py);
        // An exception already on its way out wins over a failed close.
        if t.is_some() {
            return Ok(false);
        }
        r.map(|()| false)
    }

    fn __repr__(&self) -> String {
        match &self.sock {
            Some(s) => format!("<bypass.Socket peer={}>", s.peer_addr()),
            None => "<bypass.Socket closed>".to_owned(),
        }
    }
}
