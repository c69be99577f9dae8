//! Time, for every layer: [`Instant`], the one type of every `now` and deadline (ns on a
//! monotonic clock: a `u64` underneath, `Copy`, no cost over the bare number), and the time
//! sources: the [`Clock`] trait, a [`ManualClock`] for virtual time in tests, and
//! [`MonotonicClock`] over `std::time::Instant`. The poll loop's own clock (TSC or
//! CLOCK_MONOTONIC_RAW) is `runtime::clock::SystemClock`. `proto` and `wire` take no clock at
//! all: `now` is passed in. This module is the one path to these names.

use core::ops::{Add, AddAssign, Sub};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A point in time: nanoseconds on the caller's monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct Instant(u64);

impl Instant {
    /// Time zero.
    pub const ZERO: Instant = Instant(0);
    /// The last representable time (what saturating additions stop at).
    pub const MAX: Instant = Instant(u64::MAX);
    /// From nanoseconds.
    #[inline]
    pub const fn from_nanos(ns: u64) -> Instant {
        Instant(ns)
    }
    /// As nanoseconds.
    #[inline]
    pub const fn as_nanos(self) -> u64 {
        self.0
    }
    /// `ns` nanoseconds later (saturating): the plain `u64` addition, for arithmetic in
    /// nanoseconds (a `Duration` would convert to seconds and back).
    #[inline]
    pub const fn add_nanos(self, ns: u64) -> Instant {
        Instant(self.0.saturating_add(ns))
    }
    /// Nanoseconds from `earlier` to `self`, or 0 if `earlier` is later.
    #[inline]
    pub const fn nanos_since(self, earlier: Instant) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
    /// `self - earlier`, or zero if `earlier` is later.
    #[inline]
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    #[inline]
    fn add(self, d: Duration) -> Instant {
        Instant(
            self.0
                .saturating_add(d.as_nanos().min(u64::MAX as u128) as u64),
        )
    }
}

impl AddAssign<Duration> for Instant {
    #[inline]
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    #[inline]
    fn sub(self, e: Instant) -> Duration {
        self.saturating_duration_since(e)
    }
}

/// A source of monotonic nanoseconds.
pub trait Clock {
    /// Nanoseconds since the clock's (arbitrary, fixed) origin; never decreases.
    fn now_ns(&self) -> u64;

    /// [`now_ns`](Self::now_ns) as an [`Instant`].
    #[inline]
    fn now(&self) -> Instant {
        Instant::from_nanos(self.now_ns())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_only_moves_forward() {
        let c = ManualClock::new(100);
        let d = c.clone();
        d.advance(50);
        assert_eq!(c.now_ns(), 150);
        c.set(120);
        assert_eq!(c.now_ns(), 150);
        c.set(1_000);
        assert_eq!(d.now_ns(), 1_000);
        assert_eq!(d.now(), Instant::from_nanos(1_000));
    }

    #[test]
    fn instant_is_a_bare_u64() {
        assert_eq!(std::mem::size_of::<Instant>(), 8);
        assert_eq!(std::mem::align_of::<Instant>(), std::mem::align_of::<u64>());
        let t = Instant::from_nanos(10);
        assert_eq!(t + Duration::from_nanos(5), Instant::from_nanos(15));
        assert_eq!(Instant::from_nanos(15) - t, Duration::from_nanos(5));
        assert_eq!(t - Instant::from_nanos(15), Duration::ZERO);
    }
}
