//! `import bypass`: the Python front door of the bypass socket API.
//!
//! Contract:
//! - Built only on `bypass::socket` (and the message and target types it hands out); no
//!   protocol or driver internals.
//! - A `Stack`, its `Listener`s and `Socket`s belong to the Python thread that made the stack: the Rust
//!   stack is `!Send` and that thread *is* its poll loop. The classes are
//!   `#[pyclass(unsendable)]`, so another thread that touches them gets a `RuntimeError`
//!   instead of a data race.
//! - Every call that waits (`connect`, `accept`, `recv*`, `send` under backpressure) first
//!   tries once with the GIL held (no GIL round trip on the fast path), then busy-polls with
//!   the GIL released (`without_gil`), in slices of `SLICE` between which it takes the GIL
//!   back to run signal handlers (Ctrl-C interrupts a wait).
//! - Copies per message: `send(bytes)` none (the `bytes` object is kept alive until the stack
//!   is done with it); `send` of any other buffer (bytearray, memoryview, numpy) one, as
//!   `Socket::send(&[u8])`. `recv()` none: the memoryview is over the stack's own buffer (the
//!   packet buffer for a one-packet message, the reassembly buffer otherwise). `recv_into`
//!   one: a multi-packet message lands straight in the caller's buffer, which is posted as
//!   the connection's receive target while the call waits (module `target`); a message that was
//!   already being reassembled, or a one-packet message, is copied from the stack's buffer.
//! - Errors are exceptions under `bypass.Error` (module `errors`).

// The module is an FFI boundary (the buffer protocol, raw buffer memory); every unsafe block
// carries its SAFETY note (clippy::undocumented_unsafe_blocks is denied in Cargo.toml).

mod errors;
mod limits;
mod message;
mod socket;
mod stack;
mod target;

use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// Longest stretch a wait spins without the GIL before it takes it back to run signal
/// handlers (KeyboardInterrupt) and check its deadline.
pub(crate) const SLICE: Duration = Duration::from_millis(50);

/// Runs `f` on this thread with the GIL released ([`Python::detach`]).
///
/// `detach` wants a `Send` closure so that no Python reference and no GIL-bound token is
/// used while the GIL is released. Our closures capture the socket API's `!Send` types (the
/// stack is `Rc<RefCell<..>>` inside) and raw buffer memory, never a Python object: that is
/// what this wrapper asserts, and why it is sound:
/// - `f` runs synchronously on the calling thread and is finished before `detach` returns;
///   nothing it captures moves to another thread.
/// - The stack's `Rc`/`RefCell` state is only ever touched by the thread that made the stack:
///   the pyclasses holding it are `unsendable` (pyo3 refuses access from any other thread),
///   and this thread is inside `f`, so nothing else borrows it meanwhile.
/// - Buffer memory `f` reads or writes belongs to a Python object whose buffer export we hold
///   (a `PyUntypedBuffer`), which keeps it alive and unmoved (a bytearray cannot resize while
///   exported); touching raw memory needs no GIL, as CPython's own `socket.recv_into` does.
pub(crate) fn without_gil<T, F: FnOnce() -> T>(py: Python<'_>, f: F) -> T {
    struct AssertSend<X>(X);
    // SAFETY: see above: the value is created, used and dropped on this thread only, and
    // holds no Python object.
    unsafe impl<X> Send for AssertSend<X> {}
    impl<X> AssertSend<X> {
        // A method, so that the closure below captures the whole wrapper (edition 2021
        // closures capture the fields they use, and the field is not `Send`).
        fn into_inner(self) -> X {
            self.0
        }
    }
    let f = AssertSend(f);
    py.detach(move || AssertSend(f.into_inner()())).into_inner()
}

/// A timeout argument in seconds (`None`: wait forever) as a deadline from now.
pub(crate) fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.map(|t| Instant::now() + t)
}

/// The longest wait a timeout means (100 years): more is as good as forever, and a
/// deadline `now + t` must not overflow.
const MAX_WAIT: Duration = Duration::from_secs(100 * 365 * 86400);

/// Seconds from Python (a non-negative float) as a `Duration`, at most [`MAX_WAIT`] (a
/// finite 1e300 would make `Duration::from_secs_f64` panic).
pub(crate) fn duration(secs: Option<f64>) -> PyResult<Option<Duration>> {
    match secs {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(
            Duration::try_from_secs_f64(s)
                .unwrap_or(MAX_WAIT)
                .min(MAX_WAIT),
        )),
        Some(s) => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "timeout must be a non-negative number of seconds or None, not {s}"
        ))),
    }
}

/// Waits for `attempt` to produce a value: once with the GIL held, then in slices of
/// [`SLICE`] without it, checking signals between slices. `Ok(None)` after `deadline`.
pub(crate) fn wait<T, E>(
    py: Python<'_>,
    deadline: Option<Instant>,
    mut attempt: impl FnMut() -> Result<Option<T>, E>,
) -> PyResult<Result<Option<T>, E>> {
    match attempt() {
        Ok(None) => {}
        other => return Ok(other),
    }
    loop {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Ok(Ok(None));
        }
        let slice_end = match deadline {
            Some(d) => d.min(now + SLICE),
            None => now + SLICE,
        };
        let got = without_gil(py, || {
            let mut spins = 0u32;
            loop {
                match attempt() {
                    Ok(None) => {}
                    other => return Some(other),
                }
                spins = spins.wrapping_add(1);
                // The clock is a vDSO read (~20 ns): looked at every 64 attempts.
                if spins.is_multiple_of(64) && Instant::now() >= slice_end {
                    return None;
                }
            }
        });
        if let Some(r) = got {
            return Ok(r);
        }
        py.check_signals()?;
    }
}

#[pymodule]
#[pyo3(name = "bypass")]
fn bypass_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("DEFAULT_UDP_PORT", bypass::socket::DEFAULT_UDP_PORT)?;
    errors::register(m)?;
    m.add_class::<stack::Stack>()?;
    m.add_class::<stack::Listener>()?;
    m.add_class::<socket::Socket>()?;
    m.add_class::<message::Message>()?;
    Ok(())
}
