//! CUBIC (RFC 9438): the loss-based baseline, for comparison only.
//!
//! Contract: window in bytes, no pacing (as a kernel TCP without fq). Slow start to
//! `ssthresh`; in congestion avoidance the window follows
//! `W_cubic(t) = C * (t - K)^3 + W_max` (packets, `t` in seconds since the last reduction,
//! `K = cbrt(W_max * (1 - beta) / C)`), never below the Reno-friendly estimate `W_est`. A loss
//! multiplies the window by `beta` (0.7) once per recovery episode (losses of packets sent
//! before the episode began are ignored), with fast convergence. A timeout drops the window
//! to one packet. ECN marks are ignored (a loss-based baseline).

use std::time::Duration;

use super::{AckEvent, Controller, ControllerFactory, LossEvent, SendEvent};
use crate::proto::Instant;

/// CUBIC parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CubicConfig {
    /// The cubic constant `C` (packets / s^3).
    pub c: f64,
    /// Multiplicative decrease factor.
    pub beta: f64,
    /// Initial window, packets.
    pub init_cwnd: f64,
    /// Smallest window after a loss, packets.
    pub min_cwnd: f64,
    /// Largest window, packets.
    pub max_cwnd: f64,
}

impl Default for CubicConfig {
    fn default() -> CubicConfig {
        CubicConfig {
            c: 0.4,
            beta: 0.7,
            init_cwnd: 10.0,
            min_cwnd: 2.0,
            max_cwnd: 4096.0,
        }
    }
}

/// The CUBIC controller.
#[derive(Debug, Clone)]
pub struct Cubic {
    cfg: CubicConfig,
    packet: f64,
    /// Window in packets.
    cwnd: f64,
    ssthresh: f64,
    w_max: f64,
    k: f64,
    w_est: f64,
    epoch_start: Option<Instant>,
    recovery_start: Option<Instant>,
    srtt: Duration,
}

impl Cubic {
    /// A controller for packets of `packet` bytes.
    pub fn new(cfg: CubicConfig, packet: u64) -> Cubic {
        Cubic {
            cfg,
            packet: packet.max(1) as f64,
            cwnd: cfg.init_cwnd,
            ssthresh: f64::INFINITY,
            w_max: 0.0,
            k: 0.0,
            w_est: 0.0,
            epoch_start: None,
            recovery_start: None,
            srtt: Duration::from_micros(10),
        }
    }

    /// Window in packets.
    pub fn cwnd_packets(&self) -> f64 {
        self.cwnd
    }

    /// Slow-start threshold in packets.
    pub fn ssthresh_packets(&self) -> f64 {
        self.ssthresh
    }

    /// `K`, seconds from the last reduction until the window is back at `W_max`.
    pub fn k(&self) -> f64 {
        self.k
    }

    /// `W_cubic(t)` in packets, `t` seconds after the last reduction.
    pub fn w_cubic(&self, t: f64) -> f64 {
        self.cfg.c * (t - self.k).powi(3) + self.w_max
    }

    fn reduce(&mut self, now: Instant) {
        // Fast convergence: release bandwidth to newer flows.
        self.w_max = if self.cwnd < self.w_max {
            self.cwnd * (1.0 + self.cfg.beta) / 2.0
        } else {
            self.cwnd
        };
        self.cwnd = (self.cwnd * self.cfg.beta).max(self.cfg.min_cwnd);
        self.ssthresh = self.cwnd;
        self.k = (self.w_max * (1.0 - self.cfg.beta) / self.cfg.c).cbrt();
        self.w_est = self.cwnd;
        self.epoch_start = Some(now);
        self.recovery_start = Some(now);
    }
}

impl Controller for Cubic {
    fn on_send(&mut self, _now: Instant, _ev: &SendEvent) {}

    fn on_ack(&mut self, now: Instant, ev: &AckEvent) {
        self.srtt = ev.srtt.max(Duration::from_nanos(1));
        if self.recovery_start.is_some_and(|r| ev.newest_sent < r) {
            return; // still recovering: no growth
        }
        let acked = ev.bytes_acked as f64 / self.packet;
        if self.cwnd < self.ssthresh {
            self.cwnd = (self.cwnd + acked).min(self.cfg.max_cwnd);
            return;
        }
        // Entering congestion avoidance without a loss (after slow start) starts an epoch.
        let epoch = *self.epoch_start.get_or_insert(now);
        if self.w_max < self.cwnd && self.w_est == 0.0 {
            self.w_max = self.cwnd;
            self.k = 0.0;
            self.w_est = self.cwnd;
        }
        let t = now.saturating_duration_since(epoch).as_secs_f64();
        let rtt = self.srtt.as_secs_f64();
        let beta = self.cfg.beta;
        self.w_est += 3.0 * (1.0 - beta) / (1.0 + beta) * acked / self.cwnd;
        let target = self.w_cubic(t + rtt).min(1.5 * self.cwnd);
        if self.w_cubic(t) < self.w_est {
            self.cwnd = self.w_est;
        } else if target > self.cwnd {
            self.cwnd += (target - self.cwnd) / self.cwnd * acked;
        }
        self.cwnd = self.cwnd.clamp(self.cfg.min_cwnd, self.cfg.max_cwnd);
    }

    fn on_loss(&mut self, now: Instant, ev: &LossEvent) {
        if self.recovery_start.is_some_and(|r| ev.newest_lost_sent < r) {
            return; // same loss episode
        }
        self.reduce(now);
    }

    fn on_timeout(&mut self, now: Instant) {
        self.reduce(now);
        self.cwnd = 1.0;
    }

    fn window(&self) -> u64 {
        (self.cwnd.max(1.0) * self.packet) as u64
    }

    fn name(&self) -> &'static str {
        "cubic"
    }
}

/// Builds [`Cubic`] controllers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CubicFactory {
    /// Parameters for every controller built.
    pub config: CubicConfig,
}

impl ControllerFactory for CubicFactory {
    fn build(&self, _now: Instant, max_datagram: u64) -> Box<dyn Controller> {
        Box::new(Cubic::new(self.config, max_datagram))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKT: u64 = 4096;

    fn ack_at(sent: Instant, rtt: Duration, packets: u64) -> AckEvent {
        AckEvent {
            bytes_acked: packets * PKT,
            packets_acked: packets,
            rtt: Some(rtt),
            hold: Duration::ZERO,
            fabric_rtt: Some(rtt),
            srtt: rtt,
            min_rtt: rtt,
            in_flight: 0,
            ecn_ce_delta: 0,
            newest_sent: sent,
            stalled: false,
        }
    }

    fn loss(sent: Instant) -> LossEvent {
        LossEvent {
            bytes_lost: PKT,
            packets_lost: 1,
            newest_lost_sent: sent,
            in_flight: 0,
        }
    }

    #[test]
    fn slow_start_doubles_per_rtt() {
        let mut c = Cubic::new(CubicConfig::default(), PKT);
        c.on_ack(
            Instant::ZERO,
            &ack_at(Instant::ZERO, Duration::from_micros(10), 10),
        );
        assert_eq!(c.cwnd_packets(), 20.0);
    }

    #[test]
    fn loss_multiplies_by_beta_once_per_episode() {
        let mut c = Cubic::new(CubicConfig::default(), PKT);
        c.on_ack(
            Instant::ZERO,
            &ack_at(Instant::ZERO, Duration::from_micros(10), 90),
        );
        assert_eq!(c.cwnd_packets(), 100.0);
        let t = Instant::from_nanos(1_000_000);
        c.on_loss(t, &loss(Instant::from_nanos(999_000)));
        assert!((c.cwnd_packets() - 70.0).abs() < 1e-9);
        assert_eq!(c.ssthresh_packets(), c.cwnd_packets());
        // Another loss of a packet sent before the episode began: ignored.
        c.on_loss(
            Instant::from_nanos(1_000_100),
            &loss(Instant::from_nanos(999_500)),
        );
        assert!((c.cwnd_packets() - 70.0).abs() < 1e-9);
        // K = cbrt(W_max * (1 - beta) / C).
        assert!((c.k() - (100.0f64 * 0.3 / 0.4).cbrt()).abs() < 1e-9);
    }

    #[test]
    fn cubic_curve_is_concave_then_convex_around_w_max() {
        let mut c = Cubic::new(CubicConfig::default(), PKT);
        c.on_ack(
            Instant::ZERO,
            &ack_at(Instant::ZERO, Duration::from_micros(10), 990),
        );
        c.on_loss(Instant::ZERO, &loss(Instant::ZERO));
        let k = c.k();
        assert!(
            (c.w_cubic(0.0) - 700.0).abs() < 1e-6,
            "starts at beta * W_max"
        );
        assert!(
            (c.w_cubic(k) - 1000.0).abs() < 1e-9,
            "plateau at W_max after K"
        );
        let growth_early = c.w_cubic(0.1 * k) - c.w_cubic(0.0);
        let growth_near_k = c.w_cubic(k) - c.w_cubic(0.9 * k);
        assert!(growth_early > growth_near_k, "concave below K");
        let growth_after = c.w_cubic(1.1 * k) - c.w_cubic(k);
        let growth_later = c.w_cubic(1.2 * k) - c.w_cubic(1.1 * k);
        assert!(growth_later > growth_after, "convex above K");
    }

    #[test]
    fn window_follows_the_cubic_curve_with_long_rtts() {
        // With a 100 ms RTT the cubic term dominates the Reno-friendly estimate.
        let rtt = Duration::from_millis(100);
        let mut c = Cubic::new(CubicConfig::default(), PKT);
        c.on_ack(Instant::ZERO, &ack_at(Instant::ZERO, rtt, 990));
        let t0 = Instant::from_nanos(1);
        c.on_loss(t0, &loss(t0));
        let k = c.k();
        // Feed one ACK per packet of window for 2*K seconds.
        let mut now = t0;
        let end = t0 + Duration::from_secs_f64(k);
        while now < end {
            let n = c.cwnd_packets() as u64;
            now += rtt;
            c.on_ack(now, &ack_at(now, rtt, n));
        }
        // Back near W_max after K.
        let w = c.cwnd_packets();
        assert!((w - 1000.0).abs() < 60.0, "cwnd {w} at K");
    }

    #[test]
    fn reno_friendly_region_in_the_datacenter() {
        // At 10 us RTT the cubic curve is flat; the window grows like Reno with
        // alpha = 3(1-beta)/(1+beta) packets per RTT.
        let rtt = Duration::from_micros(10);
        let mut c = Cubic::new(CubicConfig::default(), PKT);
        c.on_ack(Instant::ZERO, &ack_at(Instant::ZERO, rtt, 90));
        let t0 = Instant::from_nanos(1);
        c.on_loss(t0, &loss(t0));
        let w0 = c.cwnd_packets();
        let mut now = t0;
        for _ in 0..10 {
            let n = c.cwnd_packets() as u64;
            now += rtt;
            c.on_ack(now, &ack_at(now, rtt, n));
        }
        let per_rtt = (c.cwnd_packets() - w0) / 10.0;
        let alpha = 3.0 * 0.3 / 1.7;
        assert!((per_rtt - alpha).abs() < 0.1, "{per_rtt} vs {alpha}");
    }

    #[test]
    fn timeout_drops_to_one_packet() {
        let mut c = Cubic::new(CubicConfig::default(), PKT);
        c.on_timeout(Instant::ZERO);
        assert_eq!(c.window(), PKT);
        assert!((c.ssthresh_packets() - 7.0).abs() < 1e-9);
    }
}
