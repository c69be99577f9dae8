//! Receive interrupts: what a poll loop sleeps on when it is idle.
//!
//! A loop that found nothing to do for a while asks its port to arm its receive interrupts
//! ([`Port::rx_intr_arm`](super::Port::rx_intr_arm)); the port adds the descriptors that
//! become readable when a frame arrives to an [`RxWait`] and the loop sleeps in
//! [`RxWait::wait`] (one `ppoll(2)`) until one is readable or its timeout passes, then
//! disarms ([`Port::rx_intr_disarm`](super::Port::rx_intr_disarm)). None of it runs while
//! traffic flows: the data path makes no system call.
//!
//! A port made of several ports (a fan-in over N memif interfaces, a wrapper) arms each of its
//! members into the same [`RxWait`], so one sleep covers all of them.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

/// What [`Port::rx_intr_arm`](super::Port::rx_intr_arm) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxIntr {
    /// Interrupts are armed and the port's descriptors are in the [`RxWait`]. A port with no
    /// link yet (no peer) adds none: the loop then sleeps to its timeout or its ceiling.
    Armed,
    /// Frames are already waiting (they arrived before the arming took effect): do not sleep;
    /// disarm and poll.
    Pending,
    /// The port has no receive interrupts (the default): the loop cannot sleep until a frame
    /// arrives, so it naps for a short bounded time instead (see
    /// [`Runtime::sleep`](crate::runtime::Runtime::sleep)).
    Unsupported,
}

/// The descriptors a poll loop sleeps on (readable: a frame arrived), filled by the ports.
/// Its capacity is kept between sleeps: arming allocates nothing once it has held the most
/// descriptors it will hold.
#[derive(Debug)]
pub struct RxWait {
    fds: Vec<libc::pollfd>,
}

impl Default for RxWait {
    fn default() -> Self {
        RxWait::new()
    }
}

impl RxWait {
    /// An empty set with room for 16 descriptors.
    pub fn new() -> RxWait {
        RxWait {
            fds: Vec::with_capacity(16),
        }
    }

    /// Forget every descriptor (the loop does it before arming).
    pub fn clear(&mut self) {
        self.fds.clear();
    }

    /// Add `fd`, to wake when it is readable. The port that adds it keeps it open until its
    /// `rx_intr_disarm` (a descriptor closed meanwhile only makes the wait return early).
    pub fn push(&mut self, fd: BorrowedFd<'_>) {
        self.fds.push(libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
    }

    /// Descriptors in the set.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// Sleep until one descriptor is readable (or hung up) or `timeout` passes (an empty set
    /// just sleeps). True when a descriptor woke it; a signal ends the wait early (false).
    pub fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `fds` is our own initialised array of `len` pollfds, valid for the call;
        // `ts` lives on the stack for the call; a null signal mask leaves the mask as is.
        // ppoll only reads the descriptor numbers: one closed since it was pushed is reported
        // as POLLNVAL, never a memory access through it.
        let r = unsafe {
            libc::ppoll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            };
        }
        Ok(r > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::event::{eventfd, EventfdFlags};
    use std::os::fd::AsFd;
    use std::time::Instant;

    #[test]
    fn wait_wakes_on_a_signalled_eventfd_and_times_out_without() {
        let a = eventfd(0, EventfdFlags::NONBLOCK).unwrap();
        let b = eventfd(0, EventfdFlags::NONBLOCK).unwrap();
        let mut w = RxWait::new();
        w.push(a.as_fd());
        w.push(b.as_fd());
        let t0 = Instant::now();
        assert!(
            !w.wait(Duration::from_millis(30)).unwrap(),
            "nothing signalled"
        );
        assert!(
            t0.elapsed() >= Duration::from_millis(29),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(rustix::io::write(&b, &1u64.to_ne_bytes()), Ok(8));
        let t0 = Instant::now();
        assert!(w.wait(Duration::from_secs(20)).unwrap(), "b was signalled");
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        w.clear();
        assert!(w.is_empty());
    }
}
