//! libbypass: the C API of the bypass transport stack (`include/bypass.h`, generated from
//! this crate by cbindgen).
//!
//! Contract:
//! - Built only on the public `bypass::socket` API: a `bypass_stack` is a `Stack`, a
//!   `bypass_socket` a `Socket`, a `bypass_sendbuf` a `SendBuf`, a `bypass_msg` a `RecvMsg`.
//! - Handles, not pointers: C holds 64-bit handles into tables of the calling thread
//!   (`handle`); a freed, stale, foreign-kind or other-thread handle is refused with a code,
//!   never undefined behaviour. The objects are `!Send`, like the Rust API's: a stack and
//!   everything made from it belong to the thread that made the stack.
//! - Every entry point runs in `error::guard`: errors become `bypass_result` codes plus this
//!   thread's last error message; a panic is caught and becomes `BYPASS_ERR_INTERNAL`. Every
//!   pointer argument is checked for NULL.
//! - Copies and allocations per message are the Rust API's (see `bypass::socket`), plus
//!   none: the zero-copy path (`bypass_socket_sendbuf` .. `bypass_sendbuf_send`,
//!   `bypass_socket_recv_msg` .. `bypass_msg_release`) allocates nothing once the handle
//!   tables have grown to the number of objects held at once (`tests::no_alloc` counts it).
//!   The copying calls copy once: `bypass_socket_send` into a new buffer (one allocation, as
//!   `Socket::send`), `bypass_socket_recv` from the message into the caller's buffer.

mod config;
mod error;
mod handle;
mod limits;
mod socket;
mod stack;

#[cfg(test)]
mod tests;

use std::cell::RefCell;

use bypass_core::proto::RecvMsg;
use bypass_core::socket::{Listener, Socket};

pub use config::*;
pub use error::*;
pub use limits::*;
pub use socket::*;
pub use stack::*;

use crate::error::{CError, CResult};
use crate::handle::{Kind, Table};

/// The version of libbypass, `"MAJOR.MINOR.PATCH"` (static, NUL-terminated).
#[no_mangle]
pub extern "C" fn bypass_version() -> *const std::ffi::c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Everything this thread made. Fields drop in order: messages and send buffers before the
/// sockets they came from, sockets and listeners before their stacks.
pub(crate) struct State {
    pub msgs: Table<RecvMsg>,
    pub bufs: Table<socket::BufEntry>,
    pub sockets: Table<socket::SockEntry>,
    pub listeners: Table<Listener>,
    pub stacks: Table<stack::StackEntry>,
    pub configs: Table<config::Config>,
    /// `bypass_stack_poll_ready`'s list of sockets, empty between calls (its capacity kept).
    pub poll_refs: Vec<&'static Socket>,
    /// `bypass_stack_poll_ready`'s ready indices, kept likewise.
    pub poll_ready: Vec<usize>,
    /// This thread's number, once the tables know it (0 before).
    thread: u32,
}

impl State {
    const fn new() -> State {
        State {
            msgs: Table::new(Kind::Msg),
            bufs: Table::new(Kind::SendBuf),
            sockets: Table::new(Kind::Socket),
            listeners: Table::new(Kind::Listener),
            stacks: Table::new(Kind::Stack),
            configs: Table::new(Kind::Config),
            poll_refs: Vec::new(),
            poll_ready: Vec::new(),
            thread: 0,
        }
    }

    /// Gives the tables this thread's number (first use on this thread).
    #[cold]
    fn start(&mut self) -> CResult {
        let t = crate::handle::thread_number()?;
        self.msgs.set_thread(t);
        self.bufs.set_thread(t);
        self.sockets.set_thread(t);
        self.listeners.set_thread(t);
        self.stacks.set_thread(t);
        self.configs.set_thread(t);
        self.thread = t;
        Ok(())
    }
}

thread_local! {
    static STATE: RefCell<State> = const { RefCell::new(State::new()) };
}

/// Runs `f` on this thread's state.
pub(crate) fn with_state<R>(f: impl FnOnce(&mut State) -> CResult<R>) -> CResult<R> {
    STATE
        .try_with(|s| match s.try_borrow_mut() {
            Ok(mut s) => {
                if s.thread == 0 {
                    s.start()?;
                }
                f(&mut s)
            }
            Err(_) => Err(CError::new(
                bypass_result::BYPASS_ERR_INTERNAL,
                "libbypass was re-entered on this thread (a call from inside another call)",
            )),
        })
        .unwrap_or_else(|_| {
            Err(CError::new(
                bypass_result::BYPASS_ERR_INTERNAL,
                "called while this thread is exiting (its libbypass state is gone)",
            ))
        })
}
