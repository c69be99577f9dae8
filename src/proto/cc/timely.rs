//! TIMELY (Mittal et al., SIGCOMM 2015) as eRPC runs it: the RTT-gradient baseline, for
//! comparison only.
//!
//! Contract: rate-based. Every RTT sample updates the rate:
//! - `rtt < t_low`: additive increase by `add_rate` (scaled by the time since the last
//!   update, at most one `min_rtt`);
//! - `rtt > t_high`: multiplicative decrease `rate * (1 - beta * (1 - t_high / rtt))`;
//! - otherwise the EWMA of RTT differences, normalised by `min_rtt`, is the gradient: a
//!   gradient `<= 0` adds `add_rate` (five times after `hai_thresh` negative gradients in a
//!   row, hyper-active increase), a positive one multiplies by `1 - beta * gradient`.
//!
//! One update never drops the rate below half; the rate stays in `[min_rate, line rate]`.
//! The controller paces at the rate (bursts of `max(2 packets, 1 us)`), and its window is a
//! fixed number of packets, like eRPC's session credits. Defaults are eRPC's
//! (`timely.h`): EWMA 0.02, beta 0.8, `t_low` 50 us, `t_high` 1 ms, `min_rtt` 2 us, additive
//! step 5 MB/s, start at line rate. They were tuned for eRPC's fabrics; with a 10 us base RTT
//! `t_low` = 50 us lets queues grow to ~40 us before the gradient engages.

use std::time::Duration;

use super::pacing::{default_burst, Pacer};
use super::{AckEvent, Controller, ControllerFactory, LossEvent, SendEvent};
use crate::proto::Instant;

/// TIMELY parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimelyConfig {
    /// EWMA weight of a new RTT difference.
    pub ewma_alpha: f64,
    /// Multiplicative-decrease factor.
    pub beta: f64,
    /// Below this RTT: additive increase.
    pub t_low: Duration,
    /// Above this RTT: decrease regardless of the gradient.
    pub t_high: Duration,
    /// Normaliser of the gradient and of the update interval.
    pub min_rtt: Duration,
    /// Additive step, bytes per second.
    pub add_rate: f64,
    /// Negative gradients in a row before hyper-active increase (5 steps).
    pub hai_thresh: u32,
    /// Smallest rate, bytes per second.
    pub min_rate: f64,
    /// Line rate, bits per second (the largest and the initial rate).
    pub line_rate_bps: u64,
    /// Window in packets (eRPC's session credits).
    pub window_packets: u64,
}

impl Default for TimelyConfig {
    fn default() -> TimelyConfig {
        TimelyConfig {
            ewma_alpha: 0.02,
            beta: 0.8,
            t_low: Duration::from_micros(50),
            t_high: Duration::from_micros(1000),
            min_rtt: Duration::from_micros(2),
            add_rate: 5e6,
            hai_thresh: 5,
            min_rate: 5e6,
            line_rate_bps: 100_000_000_000,
            window_packets: 32,
        }
    }
}

/// The TIMELY controller.
#[derive(Debug, Clone)]
pub struct Timely {
    cfg: TimelyConfig,
    packet: u64,
    /// Bytes per second.
    rate: f64,
    prev_rtt: Option<f64>,
    avg_rtt_diff: f64,
    neg_count: u32,
    last_update: Option<Instant>,
    pacer: Pacer,
}

impl Timely {
    /// A controller for packets of `packet` bytes.
    pub fn new(cfg: TimelyConfig, packet: u64) -> Timely {
        let packet = packet.max(1);
        Timely {
            cfg,
            packet,
            rate: cfg.line_rate_bps as f64 / 8.0,
            prev_rtt: None,
            avg_rtt_diff: 0.0,
            neg_count: 0,
            last_update: None,
            pacer: Pacer::new(default_burst(packet, cfg.line_rate_bps)),
        }
    }

    /// Current rate, bytes per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The EWMA of RTT differences, seconds.
    pub fn avg_rtt_diff(&self) -> f64 {
        self.avg_rtt_diff
    }

    /// Apply one RTT sample taken at `now`.
    pub fn update(&mut self, now: Instant, rtt: Duration) {
        let c = self.cfg;
        let sample = rtt.as_secs_f64();
        let min_rtt = c.min_rtt.as_secs_f64();
        let diff = self.prev_rtt.map_or(0.0, |p| sample - p);
        self.neg_count = if diff < 0.0 { self.neg_count + 1 } else { 0 };
        self.avg_rtt_diff = (1.0 - c.ewma_alpha) * self.avg_rtt_diff + c.ewma_alpha * diff;
        let gradient = self.avg_rtt_diff / min_rtt;
        let delta = self.last_update.map_or(1.0, |t| {
            (now.saturating_duration_since(t).as_secs_f64() / min_rtt).min(1.0)
        });
        let rate = self.rate;
        let new = if rtt < c.t_low {
            rate + c.add_rate * delta
        } else if rtt > c.t_high {
            rate * (1.0 - delta * c.beta * (1.0 - c.t_high.as_secs_f64() / sample))
        } else if gradient <= 0.0 {
            let n = if self.neg_count >= c.hai_thresh {
                5.0
            } else {
                1.0
            };
            rate + n * c.add_rate * delta
        } else {
            rate * (1.0 - delta * c.beta * gradient)
        };
        self.prev_rtt = Some(sample);
        self.last_update = Some(now);
        let line = c.line_rate_bps as f64 / 8.0;
        self.rate = new.max(rate * 0.5).clamp(c.min_rate, line);
    }
}

impl Controller for Timely {
    fn on_send(&mut self, now: Instant, ev: &SendEvent) {
        self.pacer.on_send(now, ev.bytes, self.rate as u64);
    }

    fn on_ack(&mut self, now: Instant, ev: &AckEvent) {
        if let Some(rtt) = ev.rtt {
            self.update(now, rtt);
        }
    }

    fn on_loss(&mut self, _now: Instant, _ev: &LossEvent) {
        // eRPC's TIMELY does not react to loss; the retransmission timer handles it.
    }

    fn on_timeout(&mut self, _now: Instant) {}

    fn window(&self) -> u64 {
        self.cfg.window_packets.max(1) * self.packet
    }

    fn pacing_rate(&self) -> Option<u64> {
        Some(self.rate as u64)
    }

    fn earliest_departure(&self, now: Instant, _last_departure: Instant, _bytes: u64) -> Instant {
        self.pacer.earliest_departure(now)
    }

    fn name(&self) -> &'static str {
        "timely"
    }
}

/// Builds [`Timely`] controllers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TimelyFactory {
    /// Parameters for every controller built.
    pub config: TimelyConfig,
}

impl ControllerFactory for TimelyFactory {
    fn build(&self, _now: Instant, max_datagram: u64) -> Box<dyn Controller> {
        Box::new(Timely::new(self.config, max_datagram))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    fn at(n: u64) -> Instant {
        Instant::from_nanos(n * 1000)
    }

    fn half_rate() -> Timely {
        let mut t = Timely::new(TimelyConfig::default(), 4096);
        t.rate = 6.25e9; // half of 100 Gb/s
        t
    }

    #[test]
    fn below_t_low_adds_one_step() {
        let mut t = half_rate();
        t.update(at(10), us(20));
        assert!((t.rate() - (6.25e9 + 5e6)).abs() < 1.0);
    }

    #[test]
    fn above_t_high_decreases_by_the_excess() {
        let mut t = half_rate();
        t.update(at(10), us(2000));
        let expect = 6.25e9 * (1.0 - 0.8 * (1.0 - 0.5));
        assert!((t.rate() - expect).abs() < 1.0, "{}", t.rate());
    }

    #[test]
    fn positive_gradient_decreases_and_negative_increases() {
        let mut t = half_rate();
        t.update(at(10), us(100)); // first sample: gradient 0, one additive step
        let r1 = t.rate();
        assert!((r1 - (6.25e9 + 5e6)).abs() < 1.0);
        t.update(at(20), us(200)); // diff +100 us: gradient 0.02 * 100 / 2 = 1 -> floor at 1/2
        assert!((t.rate() - r1 / 2.0).abs() < 1.0, "{}", t.rate());
        let mut t = half_rate();
        t.update(at(10), us(100));
        t.update(at(20), us(101)); // gradient 0.02 * 1 / 2 = 0.01 -> * (1 - 0.008)
        assert!(
            (t.rate() - r1 * (1.0 - 0.8 * 0.01)).abs() < 1e3,
            "{}",
            t.rate()
        );
        let r = t.rate();
        // Falling RTTs: the average diff turns negative after a few samples: additive steps,
        // five at a time after five negative gradients in a row.
        let mut rtt = 100;
        let mut steps = Vec::new();
        for i in 0..8 {
            rtt -= 5;
            let before = t.rate();
            t.update(at(30 + i * 10), us(rtt));
            steps.push(t.rate() - before);
        }
        assert!(t.rate() > r * 0.9);
        let last = *steps.last().unwrap();
        assert!((last - 25e6).abs() < 1.0, "hyper-active step {last}");
    }

    #[test]
    fn never_below_half_in_one_update_and_paces_at_rate() {
        let mut t = half_rate();
        t.update(at(10), us(100));
        t.update(at(20), us(900));
        assert!(t.rate() >= 6.25e9 / 2.0 - 1.0);
        assert_eq!(t.pacing_rate(), Some(t.rate() as u64));
        assert_eq!(t.window(), 32 * 4096);
    }
}
