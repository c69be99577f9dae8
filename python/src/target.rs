//! The caller's buffer of `recv_into` as the connection's receive target.
//!
//! `Socket::post_target` lets a multi-packet message land once, at its final offsets, in a
//! buffer posted ahead; there is no call to take a posted target back. So each Python socket
//! posts **one** target for its whole life and points it at a destination that changes:
//!
//! - while `recv_into(buf)` waits, the target offers `len(buf)` bytes and writes into `buf`
//!   (whose buffer export it holds: the memory stays alive and unmoved);
//! - when the call returns (a message, a timeout, an error), the offer drops to 0 bytes, so
//!   no later message chooses the target, and the export is given back: **the caller's
//!   buffer is never written after `recv_into` returned.** A message that had already begun
//!   landing in `buf` (one completing after another was delivered, or cut off by a timeout) is
//!   moved: what arrived so far is copied into a buffer of our own and the rest lands there;
//!   it is delivered by a later `recv`/`recv_into` like any other message.
//! - when the message comes back in `MsgData::Target`, the same box is posted again.
//!
//! The connection only asks a target's capacity when a message's first packet arrives, and
//! guarantees `offset + len <= capacity` at that moment; the writes are bounds-checked
//! against the destination all the same (a destination is never smaller than the offer it was
//! chosen under, except for a malformed peer's message whose first packet was empty: its
//! bytes beyond the destination are dropped, never written out of bounds).
//!
//! Everything here runs on the stack's thread (the poll loop, inside `recv_into`); the mutex
//! is never contended and only satisfies `RecvTarget: Send`.

use std::sync::{Arc, Mutex, MutexGuard};

use bypass::proto::RecvTarget;
use pyo3::buffer::PyUntypedBuffer;

/// Where the target writes.
pub(crate) enum Dest {
    /// Not offered; a write that comes anyway (a message that chose the target under an
    /// earlier offer but wrote nothing then) allocates `Own` of the offered size.
    None,
    /// The buffer of the `recv_into` in progress.
    User(PyUntypedBuffer),
    /// A message moved out of a caller's buffer (see the module docs).
    Own(Vec<u8>),
}

pub(crate) struct Slot {
    pub(crate) dest: Dest,
    /// Bytes offered to the next message (0: not offered).
    offer: u64,
    /// The offer a message may have chosen the target under: the size writes may reach.
    room: u64,
    /// A message has begun landing (and has not come back yet).
    pub(crate) written: bool,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dest = match &self.dest {
            Dest::None => "none",
            Dest::User(_) => "caller's buffer",
            Dest::Own(_) => "own buffer",
        };
        f.debug_struct("Slot")
            .field("dest", &dest)
            .field("offer", &self.offer)
            .field("written", &self.written)
            .finish()
    }
}

/// The target as the connection holds it.
#[derive(Debug)]
pub(crate) struct Target(Arc<Mutex<Slot>>);

/// The socket's handle on its target's slot.
#[derive(Debug, Clone)]
pub(crate) struct Shared(Arc<Mutex<Slot>>);

/// A new target (not offered) and the socket's handle on it.
pub(crate) fn new() -> (Box<dyn RecvTarget>, Shared) {
    let s = Arc::new(Mutex::new(Slot {
        dest: Dest::None,
        offer: 0,
        room: 0,
        written: false,
    }));
    (Box::new(Target(s.clone())), Shared(s))
}

fn lock(m: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    // A panic while holding it cannot leave the slot inconsistent in a way that matters more
    // than losing the message: keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Slot> {
        lock(&self.0)
    }

    /// Offer `buf` (writable, C-contiguous) to the next multi-packet message, if no message
    /// is landing in the target. Returns whether it is offered.
    pub(crate) fn arm(&self, buf: PyUntypedBuffer) -> Result<(), PyUntypedBuffer> {
        let mut s = self.lock();
        if s.written {
            return Err(buf);
        }
        let len = buf.len_bytes() as u64;
        s.offer = len;
        s.room = len;
        s.dest = Dest::User(buf);
        Ok(())
    }

    /// End the offer: the caller's buffer is released (returned, for the caller to drop with
    /// the GIL held); a message landing in it moves to a buffer of our own.
    pub(crate) fn disarm(&self) -> Option<PyUntypedBuffer> {
        let mut s = self.lock();
        s.offer = 0;
        // Only a caller's buffer is given up (a message landing in our own stays there).
        if !matches!(s.dest, Dest::User(_)) {
            return None;
        }
        let Dest::User(b) = std::mem::replace(&mut s.dest, Dest::None) else {
            return None;
        };
        if s.written {
            let len = (s.room as usize).min(b.len_bytes());
            // SAFETY: `b` is a live export of at least `len` bytes (len_bytes), C-contiguous
            // (checked when it was armed); nothing writes it during this copy (this thread is
            // the only writer, and it is here).
            let now = unsafe { std::slice::from_raw_parts(b.buf_ptr() as *const u8, len) };
            let mut v = vec![0u8; s.room as usize];
            v[..len].copy_from_slice(now);
            s.dest = Dest::Own(v);
        }
        Some(b)
    }

    /// The target came back with its message: forget the message's state (the caller took
    /// what it needed from `dest` first).
    pub(crate) fn reset(&self) -> Dest {
        let mut s = self.lock();
        s.offer = 0;
        s.room = 0;
        s.written = false;
        std::mem::replace(&mut s.dest, Dest::None)
    }
}

impl RecvTarget for Target {
    fn capacity(&self) -> u64 {
        lock(&self.0).offer
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) {
        let mut s = lock(&self.0);
        s.written = true;
        let (Ok(off), Some(end)) = (
            usize::try_from(offset),
            usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(data.len())),
        ) else {
            return;
        };
        if let Dest::None = s.dest {
            s.dest = Dest::Own(vec![0u8; s.room as usize]);
        }
        match &mut s.dest {
            Dest::User(b) => {
                if end <= b.len_bytes() {
                    // SAFETY: `b` is a live, writable (checked when armed), C-contiguous export
                    // of `len_bytes` bytes, and `off..end` lies inside it; the memory is not
                    // borrowed by any Rust reference (we only ever go through the raw
                    // pointer), and `data` is a packet buffer, so the two do not overlap.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            data.as_ptr(),
                            (b.buf_ptr() as *mut u8).add(off),
                            data.len(),
                        );
                    }
                }
            }
            Dest::Own(v) => {
                if let Some(d) = v.get_mut(off..end) {
                    d.copy_from_slice(data);
                }
            }
            Dest::None => {}
        }
    }
}
