//! [`Listener`]: accepts connections.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use super::stack::Inner;
use super::{Error, Socket};

/// Accepts connections; see [`Stack::listen`](super::Stack::listen).
pub struct Listener {
    pub(super) inner: Rc<RefCell<Inner>>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}

impl Listener {
    /// The poll loop's time (ns, read once per iteration from the runtime's clock: no
    /// system call), for timeouts of blocking calls.
    #[inline]
    fn now_ns(&self) -> u64 {
        self.inner.borrow().rt.now().as_nanos()
    }

    /// The clock read now (not the last iteration's time, which is stale by however long the
    /// application ran since its last poll): where a blocking call's timeout starts.
    #[inline]
    fn start_ns(&self) -> u64 {
        self.inner.borrow().fresh_now()
    }

    #[inline]
    fn since(&self, start: u64) -> Duration {
        Duration::from_nanos(self.now_ns().saturating_sub(start))
    }
    /// The next accepted connection, if one is ready (polls once).
    pub fn try_accept(&self) -> Option<Socket> {
        let mut i = self.inner.borrow_mut();
        i.poll();
        let h = i.ep().poll_incoming()?;
        drop(i);
        let s = Socket::new(self.inner.clone(), h);
        s.pump_events();
        Some(s)
    }

    /// Wait up to `timeout` for a connection.
    pub fn accept(&self, timeout: Duration) -> Result<Socket, Error> {
        let start = self.start_ns();
        loop {
            if let Some(s) = self.try_accept() {
                return Ok(s);
            }
            if self.since(start) >= timeout {
                return Err(Error::TimedOut { after: timeout });
            }
            self.inner
                .borrow_mut()
                .idle_wait(Some(start.saturating_add(timeout.as_nanos() as u64)));
        }
    }
}
