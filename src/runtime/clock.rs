//! Monotonic nanosecond clocks for the poll loop.
//!
//! Contract:
//! - [`Clock::now_ns`] returns nanoseconds on a monotonic time line whose origin is
//!   arbitrary but fixed for the clock's lifetime (not wall time). The poll loop reads it once
//!   per iteration and passes that `now` down; nothing below the runtime reads a clock.
//! - [`SystemClock::new`] uses the CPU's time-stamp counter (`rdtsc`, no system call) when
//!   `/proc/cpuinfo` reports both `constant_tsc` and `nonstop_tsc` (an invariant TSC: fixed
//!   rate through frequency changes and idle states), calibrated against
//!   `CLOCK_MONOTONIC_RAW` at start-up; its [`Calibration`] reports the measured rate and a
//!   bound on the rate error. Otherwise it reads `CLOCK_MONOTONIC_RAW` through
//!   `clock_gettime` (a vDSO call, no kernel entry on x86-64 Linux).
//! - A TSC clock can in principle step back by a few cycles when a thread migrates between
//!   cores whose counters are not perfectly synchronised; the runtime clamps `now` to never go
//!   backwards (see [`super::Runtime`]), so callers see a monotonic sequence regardless.
//! - [`ManualClock`](crate::time::ManualClock) is advanced by hand, for tests in virtual
//!   time; it and the [`Clock`] trait live in [`crate::time`].
//!
//! One of two modules of `runtime` with unsafe code (the other: [`super::handoff`]): the
//! `rdtsc` intrinsic and the `clock_gettime` call, each fenced by a `// SAFETY:` comment.
#![allow(unsafe_code)]

use crate::time::Clock;

/// Reads `CLOCK_MONOTONIC_RAW` in nanoseconds (the reference clock; a vDSO call).
#[inline]
pub fn monotonic_raw_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC_RAW exists on every Linux
    // since 2.6.28, so the call cannot fail with EINVAL/EFAULT.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_RAW, &mut ts) };
    debug_assert_eq!(rc, 0);
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// Reads the time-stamp counter.
#[cfg(target_arch = "x86_64")]
#[inline]
fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` is available on every x86-64 CPU and has no memory effects; it is only
    // used as a clock once `/proc/cpuinfo` says the counter is invariant.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Whether this CPU has an invariant TSC (`constant_tsc` and `nonstop_tsc` in the flags of
/// `/proc/cpuinfo`). Always false off x86-64.
pub fn invariant_tsc() -> bool {
    if !cfg!(target_arch = "x86_64") {
        return false;
    }
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return false;
    };
    let Some(flags) = info.lines().find(|l| l.starts_with("flags")) else {
        return false;
    };
    let mut constant = false;
    let mut nonstop = false;
    for f in flags.split_whitespace() {
        constant |= f == "constant_tsc";
        nonstop |= f == "nonstop_tsc";
    }
    constant && nonstop
}

/// The result of calibrating the TSC against `CLOCK_MONOTONIC_RAW`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Calibration {
    /// Measured TSC rate in Hz.
    pub tsc_hz: f64,
    /// Length of the calibration interval on `CLOCK_MONOTONIC_RAW`, ns.
    pub interval_ns: u64,
    /// Uncertainty of the two reference readings together, ns: each end of the interval is a
    /// TSC read bracketed by two `CLOCK_MONOTONIC_RAW` reads, and this is the sum of the two
    /// bracket widths.
    pub bracket_ns: u64,
    /// Bound on the relative rate error, in parts per million: `bracket_ns / interval_ns`.
    /// Over an interval `T` the TSC clock can drift from `CLOCK_MONOTONIC_RAW` by at most
    /// `T * error_ppm / 1e6` (plus the read-out jitter of the comparison itself).
    pub error_ppm: f64,
}

/// Where a [`SystemClock`] reads time from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClockSource {
    /// The invariant TSC, scaled to ns.
    Tsc(Calibration),
    /// `clock_gettime(CLOCK_MONOTONIC_RAW)`.
    MonotonicRaw,
}

/// The poll loop's clock: the invariant TSC when there is one, else `CLOCK_MONOTONIC_RAW`.
/// Its origin is `CLOCK_MONOTONIC_RAW` at calibration time, so readings are comparable with
/// [`monotonic_raw_ns`] up to the calibration error. Copy it freely: it has no state that
/// changes.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    source: ClockSource,
    base_tsc: u64,
    base_ns: u64,
    /// ns per tick in 32.32 fixed point.
    mult: u64,
}

/// Default calibration interval.
pub const DEFAULT_CALIBRATION_NS: u64 = 50_000_000;

impl SystemClock {
    /// The best clock this machine has, calibrated over [`DEFAULT_CALIBRATION_NS`] when it is
    /// the TSC (this blocks the calling thread for that long: call it at start-up).
    pub fn new() -> SystemClock {
        if invariant_tsc() {
            Self::tsc(DEFAULT_CALIBRATION_NS)
        } else {
            Self::monotonic_raw()
        }
    }

    /// A clock reading `CLOCK_MONOTONIC_RAW`.
    pub fn monotonic_raw() -> SystemClock {
        SystemClock {
            source: ClockSource::MonotonicRaw,
            base_tsc: 0,
            base_ns: 0,
            mult: 0,
        }
    }

    /// A TSC clock calibrated over `interval_ns` (busy-waiting; at least 1 ms is used). Falls
    /// back to [`SystemClock::monotonic_raw`] off x86-64. The caller decides whether the TSC
    /// is invariant ([`invariant_tsc`]); [`SystemClock::new`] checks.
    pub fn tsc(interval_ns: u64) -> SystemClock {
        #[cfg(target_arch = "x86_64")]
        {
            let interval_ns = interval_ns.max(1_000_000);
            let (t0, c0, b0) = Self::bracketed_read();
            while monotonic_raw_ns().wrapping_sub(t0) < interval_ns {
                std::hint::spin_loop();
            }
            let (t1, c1, b1) = Self::bracketed_read();
            let dns = t1 - t0;
            let dtsc = c1.wrapping_sub(c0).max(1);
            // ns per tick, 32.32 fixed point.
            let mult = ((dns as u128) << 32) / dtsc as u128;
            let bracket_ns = b0 + b1;
            let cal = Calibration {
                tsc_hz: dtsc as f64 * 1e9 / dns as f64,
                interval_ns: dns,
                bracket_ns,
                error_ppm: bracket_ns as f64 * 1e6 / dns as f64,
            };
            SystemClock {
                source: ClockSource::Tsc(cal),
                base_tsc: c1,
                base_ns: t1,
                mult: mult as u64,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = interval_ns;
            Self::monotonic_raw()
        }
    }

    /// One TSC read bracketed by two reference reads; the narrowest of several tries.
    /// Returns (reference time at the TSC read, tsc, bracket width).
    #[cfg(target_arch = "x86_64")]
    fn bracketed_read() -> (u64, u64, u64) {
        let mut best = (0, 0, u64::MAX);
        for _ in 0..64 {
            let a = monotonic_raw_ns();
            let c = rdtsc();
            let b = monotonic_raw_ns();
            let w = b - a;
            if w < best.2 {
                best = (a + w / 2, c, w);
            }
        }
        best
    }

    /// Where this clock reads time from (and the TSC calibration, if any).
    pub fn source(&self) -> ClockSource {
        self.source
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now_ns(&self) -> u64 {
        match self.source {
            #[cfg(target_arch = "x86_64")]
            ClockSource::Tsc(_) => {
                // Two's-complement difference: a read a few cycles before the base (another
                // core) gives a huge delta; saturate it to the base instead.
                let d = rdtsc().wrapping_sub(self.base_tsc);
                if d > (1 << 62) {
                    return self.base_ns;
                }
                self.base_ns + ((d as u128 * self.mult as u128) >> 32) as u64
            }
            _ => monotonic_raw_ns(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_raw_clock_is_monotonic() {
        let c = SystemClock::monotonic_raw();
        let mut last = c.now_ns();
        for _ in 0..100_000 {
            let t = c.now_ns();
            assert!(t >= last);
            last = t;
        }
    }

    #[test]
    fn cpuinfo_flags_parse() {
        // Only checks that parsing doesn't panic and agrees with a direct grep.
        let direct = std::fs::read_to_string("/proc/cpuinfo")
            .map(|s| {
                let f = s.lines().find(|l| l.starts_with("flags")).unwrap_or("");
                f.split_whitespace().any(|w| w == "constant_tsc")
                    && f.split_whitespace().any(|w| w == "nonstop_tsc")
            })
            .unwrap_or(false);
        assert_eq!(invariant_tsc(), direct && cfg!(target_arch = "x86_64"));
    }
}
