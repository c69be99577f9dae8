//! The TSC clock against `CLOCK_MONOTONIC_RAW`: drift over 200 ms within the bound its
//! calibration reports, and monotonic reads.
//!
//! Why the bound holds: on Linux/x86-64 `CLOCK_MONOTONIC_RAW` is the kernel's clocksource
//! (here `tsc`, or kvm-clock, itself TSC-based) scaled by a fixed multiplier: it is never
//! slewed by NTP. The TSC clock counts the same oscillator at a rate we measured against it,
//! with each end of the calibration interval known to within its bracket (a TSC read between
//! two reference reads). So the rate error is at most `bracket_ns / interval_ns`
//! (`Calibration::error_ppm`, twice the half-bracket bound), and over `T` the two clocks can
//! differ by at most `T * error_ppm / 1e6`, plus this test's own read uncertainty (the
//! half-widths of its two brackets), plus 100 ns for the kernel's fixed-point rounding of
//! the reference clock across its timekeeping updates (under 1 ns per update, at most
//! a few hundred updates in 200 ms).

use crate::harness;
use std::time::Duration;

use bypass::runtime::clock::{
    invariant_tsc, monotonic_raw_ns, ClockSource, SystemClock, DEFAULT_CALIBRATION_NS,
};
use bypass::time::Clock;

/// A clock read bracketed by two reference reads; the narrowest of 64 tries.
/// Returns (reference midpoint, clock reading, bracket width).
fn bracketed(c: &SystemClock) -> (u64, u64, u64) {
    let mut best = (0, 0, u64::MAX);
    for _ in 0..64 {
        let a = monotonic_raw_ns();
        let t = c.now_ns();
        let b = monotonic_raw_ns();
        if b - a < best.2 {
            best = (a + (b - a) / 2, t, b - a);
        }
    }
    best
}

fn tsc_clock() -> Option<SystemClock> {
    if !invariant_tsc() {
        harness::skip("this CPU has no invariant TSC (constant_tsc + nonstop_tsc); the clock falls back to CLOCK_MONOTONIC_RAW");
        return None;
    }
    let c = SystemClock::new();
    assert!(
        matches!(c.source(), ClockSource::Tsc(_)),
        "invariant TSC present but SystemClock::new chose {:?}",
        c.source()
    );
    Some(c)
}

#[test]
fn tsc_drift_against_monotonic_raw_over_200ms_is_within_calibration_bound() {
    let Some(c) = tsc_clock() else { return };
    let ClockSource::Tsc(cal) = c.source() else {
        unreachable!()
    };
    println!(
        "calibration: {:.3} MHz over {} ns, brackets {} ns, error bound {:.3} ppm",
        cal.tsc_hz / 1e6,
        cal.interval_ns,
        cal.bracket_ns,
        cal.error_ppm
    );
    assert!(cal.interval_ns >= DEFAULT_CALIBRATION_NS);
    assert!(
        (1e8..1e10).contains(&cal.tsc_hz),
        "implausible TSC rate {} Hz",
        cal.tsc_hz
    );

    let (r0, t0, w0) = bracketed(&c);
    std::thread::sleep(Duration::from_millis(200));
    let (r1, t1, w1) = bracketed(&c);
    let elapsed = r1 - r0;
    let drift = (t1 - t0) as i64 - elapsed as i64;
    let bound = elapsed as f64 * cal.error_ppm / 1e6 + (w0 + w1) as f64 / 2.0 + 100.0;
    println!(
        "over {elapsed} ns: TSC clock {} ns, drift {drift} ns, bound {bound:.0} ns (read brackets {w0} + {w1} ns)",
        t1 - t0
    );
    assert!(elapsed >= 200_000_000);
    assert!(
        (drift.unsigned_abs() as f64) <= bound,
        "drift {drift} ns exceeds bound {bound:.0} ns"
    );
    // The offset too: the clock's origin is the reference's at calibration.
    let offset = t1 as i64 - r1 as i64;
    let offset_bound = (elapsed + cal.interval_ns) as f64 * cal.error_ppm / 1e6
        + (cal.bracket_ns + w1) as f64
        + 100.0;
    println!("offset from CLOCK_MONOTONIC_RAW: {offset} ns (bound {offset_bound:.0} ns)");
    assert!((offset.unsigned_abs() as f64) <= offset_bound);
}

#[test]
fn clock_reads_are_monotonic() {
    let clocks: Vec<SystemClock> = tsc_clock()
        .into_iter()
        .chain(std::iter::once(SystemClock::monotonic_raw()))
        .collect();
    for c in clocks {
        let mut last = c.now_ns();
        let first = last;
        for _ in 0..2_000_000 {
            let t = c.now_ns();
            assert!(t >= last, "{:?}: went back from {last} to {t}", c.source());
            last = t;
        }
        assert!(last > first, "{:?}: did not advance", c.source());
    }
}
