//! Time sources shared by every layer that needs `now` from outside: the [`Clock`] trait, a
//! [`ManualClock`] for virtual time in tests, and [`MonotonicClock`] over `std::time::Instant`.
//! The poll loop's own clock (TSC or CLOCK_MONOTONIC_RAW) is `runtime::clock::SystemClock`.
//! `proto` and `wire` take no clock at all: `now` is passed in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A source of monotonic nanoseconds.
pub trait Clock {
    /// Nanoseconds since the clock's (arbitrary, fixed) origin; never decreases.
    fn now_ns(&self) -> u64;
}

impl<C: Clock + ?Sized> Clock for &C {
    #[inline]
    fn now_ns(&self) -> u64 {
        (**self).now_ns()
    }
}

/// The real monotonic clock (`std::time::Instant`), counted from its construction.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: std::time::Instant,
}

impl MonotonicClock {
    /// A clock reading 0 now.
    pub fn new() -> MonotonicClock {
        MonotonicClock {
            origin: std::time::Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> MonotonicClock {
        MonotonicClock::new()
    }
}

impl Clock for MonotonicClock {
    #[inline]
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

/// A clock advanced by hand, for deterministic tests. Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at `start_ns`.
    pub fn new(start_ns: u64) -> ManualClock {
        ManualClock {
            now: Arc::new(AtomicU64::new(start_ns)),
        }
    }

    /// Move the clock forward by `d_ns`.
    pub fn advance(&self, d_ns: u64) {
        self.now.fetch_add(d_ns, Ordering::Relaxed);
    }

    /// Set the time; it may not go backwards (a smaller value is ignored).
    pub fn set(&self, now_ns: u64) {
        self.now.fetch_max(now_ns, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now_ns(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }
}
