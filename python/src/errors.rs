//! Exceptions: every error of the socket API is a `bypass.Error`; the subclasses name what a
//! caller may want to catch on its own.
//!
//! Buffers of the wrong kind (read-only for `recv_into`, not contiguous) raise Python's own
//! `BufferError`/`TypeError`, as the built-in `socket` module does.

use bypass::socket::Error as SockError;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    bypass,
    Error,
    PyException,
    "Base class of every bypass error."
);
create_exception!(
    bypass,
    Timeout,
    Error,
    "A blocking call waited for its whole timeout."
);
create_exception!(
    bypass,
    Closed,
    Error,
    "The connection was closed gracefully (by either side), or the object was closed: \
     nothing more can be sent or received on it."
);
create_exception!(
    bypass,
    ConnectionReset,
    Error,
    "The peer reset the connection (or we did)."
);
create_exception!(
    bypass,
    ConnectionLost,
    Error,
    "The peer stopped answering, or the connection was idle past its timeout."
);
create_exception!(
    bypass,
    PeerUnreachable,
    Error,
    "No answer to the handshake: nobody listens there, or the link is down."
);
create_exception!(
    bypass,
    MessageTooLarge,
    Error,
    "The message is larger than the stack's max_message; nothing was sent."
);
create_exception!(
    bypass,
    BufferTooSmall,
    Error,
    "recv_into's buffer is smaller than the message; the message is kept for the next \
     recv_into with a large enough buffer, or recv(). Attribute `needed`: its length."
);
create_exception!(
    bypass,
    Released,
    Error,
    "The message was released (its packet buffers went back to the pool): it cannot be \
     read or released again."
);
create_exception!(
    bypass,
    PoolExhausted,
    Error,
    "No packet buffer is free; retry later, or release held messages."
);
create_exception!(
    bypass,
    StartError,
    Error,
    "The stack could not start: the memif socket, its peer, or the link."
);

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("Timeout", py.get_type::<Timeout>())?;
    m.add("Closed", py.get_type::<Closed>())?;
    m.add("ConnectionReset", py.get_type::<ConnectionReset>())?;
    m.add("ConnectionLost", py.get_type::<ConnectionLost>())?;
    m.add("PeerUnreachable", py.get_type::<PeerUnreachable>())?;
    m.add("MessageTooLarge", py.get_type::<MessageTooLarge>())?;
    m.add("BufferTooSmall", py.get_type::<BufferTooSmall>())?;
    m.add("Released", py.get_type::<Released>())?;
    m.add("PoolExhausted", py.get_type::<PoolExhausted>())?;
    m.add("StartError", py.get_type::<StartError>())?;
    Ok(())
}

/// The exception for a socket API error.
pub(crate) fn to_py(e: SockError) -> PyErr {
    let msg = e.to_string();
    match e {
        SockError::TimedOut { .. } => Timeout::new_err(msg),
        SockError::Closed => Closed::new_err(msg),
        SockError::ConnectionReset(_) => ConnectionReset::new_err(msg),
        SockError::ConnectionLost(_) => ConnectionLost::new_err(msg),
        SockError::PeerUnreachable { .. } => PeerUnreachable::new_err(msg),
        SockError::MessageTooLarge { .. } => MessageTooLarge::new_err(msg),
        SockError::PoolExhausted => PoolExhausted::new_err(msg),
        SockError::Backend { .. } => StartError::new_err(msg),
        _ => Error::new_err(msg),
    }
}

/// `Closed` for a call on an object closed from Python.
pub(crate) fn closed(what: &str) -> PyErr {
    Closed::new_err(format!("{what} is closed"))
}

/// `Timeout` after waiting `secs`.
pub(crate) fn timeout(what: &str, after: std::time::Duration) -> PyErr {
    Timeout::new_err(format!("{what} timed out after {after:?}"))
}

/// `BufferTooSmall` for a message of `needed` bytes and a buffer of `have`, with the
/// length as attribute `needed`.
pub(crate) fn too_small(py: Python<'_>, needed: u64, have: usize) -> PyErr {
    let e = BufferTooSmall::new_err(format!(
        "the message is {needed} bytes and the buffer {have} bytes; the message is kept: \
         call recv_into with a buffer of at least {needed} bytes, or recv()"
    ));
    // Best effort: the message says it too.
    let _ = e.value(py).setattr("needed", needed);
    e
}
