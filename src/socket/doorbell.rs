//! [`Doorbell`]: another thread wakes a stack's loop.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rustix::event::{eventfd, EventfdFlags};

/// Wakes a [`Stack`](super::Stack)'s loop from another thread: `ring` makes the stack's
/// current or next blocking wait ([`Stack::poll_ready`](super::Stack::poll_ready),
/// [`Stack::poll_events`](super::Stack::poll_events)) return, also from an idle sleep.
/// Made by [`Stack::doorbell`](super::Stack::doorbell); `Send`, `Sync` and cheap to clone.
///
/// What it is for: work that reaches a core by another path than its port, such as a request
/// another core hands over (`runtime::handoff`). Without it, a core that sleeps while idle
/// (`IdlePoll::Sleep`) sees such work only when its sleep ends; with it, the producer
/// pushes the work, then rings, and the consumer drains its queues each time its wait
/// returns.
///
/// Cost: a ring is three atomic operations while the stack is awake (a count, a swap, a load;
/// the next wait returns at once, or its next iteration does), plus one `write(2)` to an
/// eventfd when the stack sleeps. A
/// stack with a doorbell reads one atomic per iteration of a blocking wait, and adds the
/// eventfd to what an idle sleep waits on.
#[derive(Clone, Debug)]
pub struct Doorbell(pub(super) Arc<Bell>);

#[derive(Debug)]
pub(super) struct Bell {
    fd: OwnedFd,
    /// Rung since the stack's wait last returned for it.
    rung: AtomicBool,
    /// The stack is in (or about to enter) an idle sleep: a ring must signal the eventfd.
    sleeping: AtomicBool,
    rings: AtomicU64,
    writes: AtomicU64,
}

impl Doorbell {
    pub(super) fn new() -> std::io::Result<Doorbell> {
        let fd = eventfd(0, EventfdFlags::NONBLOCK | EventfdFlags::CLOEXEC)?;
        Ok(Doorbell(Arc::new(Bell {
            fd,
            rung: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            rings: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        })))
    }

    /// Wake the stack: its current blocking wait returns (its next one, if it is not in
    /// one). Rings before the stack notices are one wake-up.
    pub fn ring(&self) {
        let b = &self.0;
        b.rings.fetch_add(1, Ordering::Relaxed);
        // SeqCst, with the sleeper's store of `sleeping` then load of `rung`: either it sees
        // this ring and does not sleep, or we see it asleep and signal it.
        if !b.rung.swap(true, Ordering::SeqCst) && b.sleeping.load(Ordering::SeqCst) {
            b.writes.fetch_add(1, Ordering::Relaxed);
            // A full counter (2^64 - 2 unread) or any error still leaves `rung` set: the
            // stack sees it at its next iteration.
            let _ = rustix::io::write(&b.fd, &1u64.to_ne_bytes());
        }
    }

    /// Times [`ring`](Self::ring) was called, and the times it had to signal a sleeping
    /// stack (a system call).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.0.rings.load(Ordering::Relaxed),
            self.0.writes.load(Ordering::Relaxed),
        )
    }
}

impl Bell {
    /// Take the ring, if there was one (one load when there was none).
    #[inline]
    pub(super) fn take(&self) -> bool {
        self.rung.load(Ordering::Relaxed) && self.rung.swap(false, Ordering::AcqRel)
    }

    /// About to sleep: false when a ring is pending (do not sleep).
    pub(super) fn enter_sleep(&self) -> bool {
        self.sleeping.store(true, Ordering::SeqCst);
        if self.rung.load(Ordering::SeqCst) {
            self.sleeping.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Awake again: a signal that came in (or too late to wake us) is drained, so the next
    /// sleep is not ended by it.
    pub(super) fn leave_sleep(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.fd, &mut buf);
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
