//! Result codes, their messages, the thread's last error message, and the guard every entry
//! point runs its body in (panics caught, the message recorded).

use std::cell::RefCell;
use std::ffi::c_char;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};

use bypass_core::socket::Error as SockError;

/// What a call did. Every function of the API returns one; `BYPASS_OK` is 0, so `if (rc)`
/// tests for anything else. After a code other than `BYPASS_OK` and `BYPASS_NOT_READY`,
/// `bypass_last_error` gives this thread's message with the details.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum bypass_result {
    /// Success.
    BYPASS_OK = 0,
    /// Nothing yet (a `try_` call that found no message or connection): not an error; call
    /// again later, or use the waiting form.
    BYPASS_NOT_READY = 1,
    /// A pointer argument was NULL, a string was not UTF-8 or not an address, or a value was
    /// out of range.
    BYPASS_ERR_INVALID_ARGUMENT = 2,
    /// The handle is not a live object of this kind: never made, already freed or closed
    /// (a double free, a double release), or of another kind.
    BYPASS_ERR_BAD_HANDLE = 3,
    /// The handle belongs to another thread: a stack and everything made from it belong to
    /// the thread that made the stack.
    BYPASS_ERR_WRONG_THREAD = 4,
    /// The caller's buffer is too small for the message; the message is kept for the next
    /// receive call and the length it needs was written.
    BYPASS_ERR_BUFFER_TOO_SMALL = 5,
    /// No answer to the handshake: nobody listens there, or the link is down.
    BYPASS_ERR_PEER_UNREACHABLE = 6,
    /// The connection was reset (by the peer or by us).
    BYPASS_ERR_CONNECTION_RESET = 7,
    /// The peer stopped answering for the idle timeout.
    BYPASS_ERR_CONNECTION_LOST = 8,
    /// The connection was closed gracefully (ours or the peer's close): nothing more can be
    /// sent or received on it.
    BYPASS_ERR_CLOSED = 9,
    /// A waiting call waited for its whole timeout.
    BYPASS_ERR_TIMED_OUT = 10,
    /// No packet buffer is free; retry later.
    BYPASS_ERR_POOL_EXHAUSTED = 11,
    /// The message is larger than the stack's maximum (`bypass_config_set_max_message`);
    /// nothing was sent.
    BYPASS_ERR_MESSAGE_TOO_LARGE = 12,
    /// The endpoint has as many connections as it is configured for.
    BYPASS_ERR_TOO_MANY_CONNECTIONS = 13,
    /// The backend (memif, DPDK) or the stack could not start; the message says why and what
    /// to do.
    BYPASS_ERR_BACKEND = 14,
    /// Not available in this build (e.g. DPDK without the `dpdk` feature).
    BYPASS_ERR_UNSUPPORTED = 15,
    /// A send buffer was used wrongly (a write past its end).
    BYPASS_ERR_SEND_BUFFER = 16,
    /// This thread holds as many handles of one kind as a handle can number (2^20).
    BYPASS_ERR_TOO_MANY_HANDLES = 17,
    /// A bug in libbypass (a Rust panic, caught at the boundary); the message has its text.
    BYPASS_ERR_INTERNAL = 18,
}

use bypass_result::*;

/// The largest code; codes are `0..=BYPASS_RESULT_MAX`.
pub const BYPASS_RESULT_MAX: i32 = BYPASS_ERR_INTERNAL as i32;

/// An error on its way out: the code and the message for `bypass_last_error`.
#[derive(Debug)]
pub(crate) struct CError {
    pub code: bypass_result,
    pub msg: String,
}

impl CError {
    pub fn new(code: bypass_result, msg: impl Into<String>) -> CError {
        CError {
            code,
            msg: msg.into(),
        }
    }
    pub fn null(what: &str) -> CError {
        CError::new(BYPASS_ERR_INVALID_ARGUMENT, format!("{what} is NULL"))
    }
}

impl From<SockError> for CError {
    fn from(e: SockError) -> CError {
        let code = match &e {
            SockError::PeerUnreachable { .. } => BYPASS_ERR_PEER_UNREACHABLE,
            SockError::ConnectionReset(_) => BYPASS_ERR_CONNECTION_RESET,
            SockError::ConnectionLost(_) => BYPASS_ERR_CONNECTION_LOST,
            SockError::Closed => BYPASS_ERR_CLOSED,
            SockError::TimedOut { .. } => BYPASS_ERR_TIMED_OUT,
            SockError::PoolExhausted => BYPASS_ERR_POOL_EXHAUSTED,
            SockError::MessageTooLarge { .. } => BYPASS_ERR_MESSAGE_TOO_LARGE,
            SockError::SendBuf(_) => BYPASS_ERR_SEND_BUFFER,
            SockError::TooManyConnections => BYPASS_ERR_TOO_MANY_CONNECTIONS,
            SockError::Backend { .. } => BYPASS_ERR_BACKEND,
            SockError::Config { .. } => BYPASS_ERR_INVALID_ARGUMENT,
            // Receive targets and GPU receive are not part of the C API; should one of their
            // errors come out anyway, say what it was.
            _ => BYPASS_ERR_INTERNAL,
        };
        CError::new(code, e.to_string())
    }
}

pub(crate) type CResult<T = ()> = Result<T, CError>;

thread_local! {
    /// The message of this thread's last error (its capacity is kept between errors).
    static LAST: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_last(msg: &str) {
    let _ = LAST.try_with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            l.clear();
            l.push_str(msg);
        }
    });
}

/// Runs an entry point's body: its error becomes a code and this thread's last error
/// message; a panic becomes `BYPASS_ERR_INTERNAL` (it never unwinds into C).
pub(crate) fn guard(name: &str, f: impl FnOnce() -> CResult) -> bypass_result {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => BYPASS_OK,
        Ok(Err(e)) => {
            if e.code != BYPASS_NOT_READY {
                let mut m = String::with_capacity(name.len() + 2 + e.msg.len());
                let _ = write!(m, "{name}: {}", e.msg);
                set_last(&m);
            }
            e.code
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            set_last(&format!(
                "{name}: internal error (a panic in libbypass, please report it): {what}"
            ));
            BYPASS_ERR_INTERNAL
        }
    }
}

/// A static, NUL-terminated description of a result code ("unknown result code" for a value
/// that is not one). Never NULL; the string lives as long as the program.
#[no_mangle]
pub extern "C" fn bypass_strerror(code: i32) -> *const c_char {
    let s: &'static [u8] = match code {
        0 => b"success\0",
        1 => b"nothing ready yet (not an error)\0",
        2 => b"invalid argument\0",
        3 => b"bad handle (never made, already freed or closed, or of another kind)\0",
        4 => b"handle used from a thread other than the one that owns its stack\0",
        5 => b"buffer too small for the message (the message is kept)\0",
        6 => b"peer unreachable\0",
        7 => b"connection reset\0",
        8 => b"connection lost (peer unresponsive or idle timeout)\0",
        9 => b"connection closed\0",
        10 => b"timed out\0",
        11 => b"packet buffer pool exhausted\0",
        12 => b"message too large\0",
        13 => b"too many connections\0",
        14 => b"backend could not start\0",
        15 => b"not supported by this build\0",
        16 => b"send buffer misuse\0",
        17 => b"too many handles on this thread\0",
        18 => b"internal error in libbypass\0",
        _ => b"unknown result code\0",
    };
    s.as_ptr().cast()
}

/// Copies this thread's last error message (set by the last call that returned an error
/// code on this thread; successful calls leave it as it was) into `buf`, truncated to
/// `len - 1` bytes and NUL-terminated. Returns the message's full length plus one (the size
/// a buffer needs), whatever `len` is; `buf` may be NULL when `len` is 0. An empty string
/// when no call has failed on this thread.
///
/// # Safety
/// `buf` must be NULL or point to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn bypass_last_error(buf: *mut c_char, len: usize) -> usize {
    catch_unwind(AssertUnwindSafe(|| {
        LAST.try_with(|l| {
            let Ok(l) = l.try_borrow() else { return 1 };
            let need = l.len() + 1;
            if !buf.is_null() && len > 0 {
                let n = l.len().min(len - 1);
                // SAFETY: the caller gives `len` writable bytes at `buf`; we write n + 1 <= len.
                unsafe {
                    std::ptr::copy_nonoverlapping(l.as_ptr(), buf.cast::<u8>(), n);
                    *buf.add(n) = 0;
                }
            }
            need
        })
        .unwrap_or(1)
    }))
    .unwrap_or(1)
}
