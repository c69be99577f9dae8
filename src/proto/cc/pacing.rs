//! A token-bucket pacer controllers use to answer
//! [`Controller::earliest_departure`](super::Controller::earliest_departure).
//!
//! Contract: the pacer releases packets at `rate` bytes per second and lets at most `burst`
//! bytes leave back to back (the runtime sends on a timing wheel; a burst is what one wheel
//! slot may release). The burst is `max(2 packets, 1 us at line rate)` by default
//! ([`default_burst`]). It reads no clock: `now` comes from the caller, and
//! [`Pacer::on_send`] must be called for every packet that left.

use crate::proto::Instant;

/// The default burst: `max(2 * packet, 1 us at line_rate)` bytes.
pub fn default_burst(packet: u64, line_rate_bps: u64) -> u64 {
    (2 * packet).max(line_rate_bps / 8 / 1_000_000)
}

/// Token-bucket pacing state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacer {
    /// Time at which the bucket is empty again if nothing else is sent: each send pushes it
    /// out by `bytes / rate`.
    next: Instant,
    /// Burst allowance in bytes.
    burst: u64,
    /// The rate of the last [`on_send`](Self::on_send), bytes/s (0: unpaced), and its
    /// nanoseconds per byte in 32.32 fixed point, rounded up: a send's gaps are then
    /// multiplications, where dividing by the rate would cost two divisions per packet.
    rate: u64,
    ns_per_byte_q32: u64,
}

impl Pacer {
    /// A pacer allowing bursts of `burst` bytes.
    pub fn new(burst: u64) -> Pacer {
        Pacer {
            next: Instant::ZERO,
            burst: burst.max(1),
            rate: 0,
            ns_per_byte_q32: 0,
        }
    }

    /// Burst allowance in bytes.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Change the burst allowance (at least one byte).
    pub fn set_burst(&mut self, burst: u64) {
        self.burst = burst.max(1);
    }

    /// Nanoseconds `bytes` take at `rate` bytes/s, rounded up (`rate` 0 means unpaced).
    fn gap(bytes: u64, rate: u64) -> u64 {
        if rate == 0 {
            return 0;
        }
        let ns = (u128::from(bytes) * 1_000_000_000).div_ceil(u128::from(rate));
        ns.min(u128::from(u64::MAX)) as u64
    }

    /// [`gap`](Self::gap) at the cached rate, from its fixed-point reciprocal: the estimate
    /// `ceil(bytes * q / 2^32)` is the exact value or one more (for `bytes < 2^32`, as
    /// `q = 1e9 * 2^32 / rate + e` with `e < 1`), and one multiplication tells which.
    #[inline]
    fn gap_cached(&self, bytes: u64) -> u64 {
        if self.rate == 0 {
            return 0;
        }
        if bytes >> 32 != 0 {
            return Self::gap(bytes, self.rate);
        }
        let est =
            ((u128::from(bytes) * u128::from(self.ns_per_byte_q32) + 0xffff_ffff) >> 32) as u64;
        let exact = u128::from(bytes) * 1_000_000_000;
        if est > 0 && u128::from(est - 1) * u128::from(self.rate) >= exact {
            est - 1
        } else {
            est
        }
    }

    /// A packet of `bytes` left at `now` while pacing at `rate` bytes/s.
    pub fn on_send(&mut self, now: Instant, bytes: u64, rate: u64) {
        if rate != self.rate {
            self.rate = rate;
            // 1e9 * 2^32 < 2^63: one 64-bit division per change of rate.
            self.ns_per_byte_q32 = if rate == 0 {
                0
            } else {
                (1_000_000_000u64 << 32).div_ceil(rate)
            };
        }
        // Idle time refills the bucket only up to the burst: the schedule never lags `now`
        // by more than the burst (less this packet).
        let credit = self.gap_cached(self.burst.saturating_sub(bytes));
        let floor = Instant::from_nanos(now.as_nanos().saturating_sub(credit));
        let next = self.next.max(floor).as_nanos();
        self.next = Instant::from_nanos(next.saturating_add(self.gap_cached(bytes)));
    }

    /// Earliest time a packet may leave when pacing (at the rate given to `on_send`): when
    /// the schedule has caught up with the packets already sent.
    pub fn earliest_departure(&self, now: Instant) -> Instant {
        self.next.max(now)
    }

    /// Forget the schedule (after an idle period or a reset of the rate).
    pub fn reset(&mut self) {
        self.next = Instant::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_burst_is_two_packets_or_one_microsecond() {
        // 100 Gb/s: 1 us = 12 500 B > 2 * 4096.
        assert_eq!(default_burst(4096, 100_000_000_000), 12_500);
        // 25 Gb/s: 1 us = 3 125 B < 2 * 4096.
        assert_eq!(default_burst(4096, 25_000_000_000), 8192);
    }

    #[test]
    fn bursts_then_paces() {
        // 1 byte/ns, burst 3000 B, packets of 1000 B.
        let rate = 1_000_000_000;
        let mut p = Pacer::new(3000);
        let t0 = Instant::from_nanos(1_000_000);
        let mut sent = 0;
        let mut t = t0;
        // Three packets leave at t0 back to back, the fourth waits for 1000 ns.
        while p.earliest_departure(t0) == t0 {
            p.on_send(t0, 1000, rate);
            sent += 1;
            assert!(sent < 10);
        }
        assert_eq!(sent, 3);
        t = p.earliest_departure(t);
        assert_eq!(t, Instant::from_nanos(1_001_000));
        p.on_send(t, 1000, rate);
        assert_eq!(p.earliest_departure(t), Instant::from_nanos(1_002_000));
    }

    #[test]
    fn idle_refills_only_one_burst() {
        let rate = 1_000_000_000;
        let mut p = Pacer::new(2000);
        p.on_send(Instant::from_nanos(0), 1000, rate);
        // Long idle: at most two packets go at once.
        let t = Instant::from_nanos(1_000_000);
        assert_eq!(p.earliest_departure(t), t);
        p.on_send(t, 1000, rate);
        assert_eq!(p.earliest_departure(t), t);
        p.on_send(t, 1000, rate);
        assert!(p.earliest_departure(t) > t);
    }

    #[test]
    fn cached_gap_is_the_exact_division() {
        // Rates from a byte per second to past a terabit, sizes from nothing to 4 GiB and a
        // few beyond (the exact path): the reciprocal gives exactly ceil(bytes * 1e9 / rate).
        let mut rng = crate::rng::SplitMix64::new(1);
        let mut rates = vec![1, 3, 7, 999, 1_000_000_000, 12_500_000_000, 50_000_000_000];
        rates.extend((0..200).map(|_| 1 + rng.below(200_000_000_000)));
        let mut sizes = vec![
            0,
            1,
            63,
            64,
            1500,
            9000,
            65536,
            (1 << 32) - 1,
            1 << 32,
            1 << 40,
        ];
        sizes.extend((0..200).map(|_| rng.below(1 << 32)));
        for &rate in &rates {
            let mut p = Pacer::new(1);
            p.on_send(Instant::ZERO, 0, rate);
            for &b in &sizes {
                assert_eq!(p.gap_cached(b), Pacer::gap(b, rate), "{b} B at {rate} B/s");
            }
        }
    }

    #[test]
    fn zero_rate_is_unpaced() {
        let mut p = Pacer::new(1);
        let t = Instant::from_nanos(7);
        p.on_send(t, 1 << 20, 0);
        assert_eq!(p.earliest_departure(t), t);
    }
}
