//! `bypass.Message`: a received message that exports its bytes with the buffer protocol, in
//! place: `memoryview(msg)`, `numpy.frombuffer(msg, ...)`, `bytes(msg)` (that one copies).
//!
//! The message holds the stack's buffer (a packet buffer of the port's pool for a one-packet
//! message, the reassembly buffer otherwise) until it is released: by `msg.release()`, by
//! `with msg:` on exit, or when the last reference to it goes (a memoryview made from it
//! holds one until the memoryview is released). Exports are counted: `release()` refuses
//! while a view is alive, so a view never outlives the bytes under it.

use std::ffi::{c_int, c_void};
use std::sync::Mutex;

use bypass::mem::PktBytes;
use bypass::proto::{MsgData, RecvMsg};
use bytes::Bytes;
use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;

use crate::errors::Released;

/// A message's bytes, contiguous, in whichever buffer they arrived.
#[derive(Debug)]
pub(crate) enum MsgBytes {
    /// One packet: the packet buffer itself.
    Pkt(PktBytes),
    /// Reassembled by the stack.
    Bytes(Bytes),
    /// Moved out of a caller's buffer (see `target`), or joined from segments.
    Vec(Vec<u8>),
}

impl MsgBytes {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            MsgBytes::Pkt(p) => p,
            MsgBytes::Bytes(b) => b,
            MsgBytes::Vec(v) => v,
        }
    }

    /// The bytes of a message that did not come in the socket's target (`None` for one that
    /// did: its bytes are where the target put them).
    pub(crate) fn from_msg(m: RecvMsg) -> Result<MsgBytes, Box<dyn bypass::proto::RecvTarget>> {
        Ok(match m.data {
            MsgData::Packet(p) => MsgBytes::Pkt(p),
            MsgData::Buffer(b) => MsgBytes::Bytes(b),
            // Not configured by this module; handled anyway (one copy to join the parts).
            MsgData::Segments(s) => MsgBytes::Bytes(s.to_bytes()),
            MsgData::Target(t) => return Err(t),
        })
    }
}

#[derive(Debug)]
struct State {
    data: Option<MsgBytes>,
    /// Buffer exports alive (memoryviews and the like).
    exports: usize,
}

/// A received message; read it with `memoryview(msg)` (no copy) or `bytes(msg)`.
///
/// It holds the stack's buffer until `release()` or until no reference to it is left;
/// `release()` while a memoryview of it is alive raises `BufferError`, and reading a released
/// message raises `bypass.Released`. Messages may be handed to other threads.
#[pyclass(module = "bypass", frozen)]
pub struct Message {
    id: u64,
    len: usize,
    state: Mutex<State>,
}

impl Message {
    pub(crate) fn new(id: u64, data: MsgBytes) -> Message {
        Message {
            id,
            len: data.as_slice().len(),
            state: Mutex::new(State {
                data: Some(data),
                exports: 0,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[pymethods]
impl Message {
    /// The sender's message id.
    #[getter]
    fn id(&self) -> u64 {
        self.id
    }

    /// Whether `release()` was called.
    #[getter]
    fn released(&self) -> bool {
        self.state().data.is_none()
    }

    fn __len__(&self) -> usize {
        self.len
    }

    fn __repr__(&self) -> String {
        let s = self.state();
        let state = if s.data.is_none() { ", released" } else { "" };
        format!("<bypass.Message id={} len={}{state}>", self.id, self.len)
    }

    /// Give the message's buffer back to the stack now. Raises `BufferError` while a
    /// memoryview of it is alive (release that first), `bypass.Released` if already released.
    fn release(&self) -> PyResult<()> {
        let mut s = self.state();
        if s.exports > 0 {
            return Err(PyBufferError::new_err(format!(
                "the message is still viewed by {} buffer export(s) (memoryview, numpy array); \
                 release them first",
                s.exports
            )));
        }
        match s.data.take() {
            Some(d) => {
                drop(s);
                drop(d);
                Ok(())
            }
            None => Err(Released::new_err("the message was already released")),
        }
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if !self.released() {
            self.release()?;
        }
        Ok(false)
    }

    /// The buffer protocol: a read-only, one-dimensional view of the bytes, in place.
    ///
    /// # Safety
    /// Called by the interpreter with a valid `view` to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        if flags & ffi::PyBUF_WRITABLE == ffi::PyBUF_WRITABLE {
            return Err(PyBufferError::new_err("a received message is read-only"));
        }
        let this = slf.get();
        let mut s = this.state();
        let Some(d) = s.data.as_ref() else {
            return Err(Released::new_err(
                "the message was released; it cannot be viewed any more",
            ));
        };
        let bytes = d.as_slice();
        let (ptr, len) = (bytes.as_ptr(), bytes.len());
        // SAFETY: `view` is the interpreter's to fill; `ptr..ptr + len` is the message's
        // buffer, which stays alive and unmoved while this export is counted (`release`
        // refuses while `exports > 0`, and the data is dropped only with the object, which
        // `view.obj` keeps alive). PyBuffer_FillInfo takes a new reference to `obj`, fills
        // shape/strides from `view` itself, and reports errors (a writable request) as -1.
        let rc = unsafe {
            ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                ptr as *mut c_void,
                len as ffi::Py_ssize_t,
                1,
                flags,
            )
        };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        s.exports += 1;
        Ok(())
    }

    /// # Safety
    /// Called by the interpreter once per successful `__getbuffer__`.
    unsafe fn __releasebuffer__(&self, _view: *mut ffi::Py_buffer) {
        let mut s = self.state();
        s.exports = s.exports.saturating_sub(1);
    }
}
