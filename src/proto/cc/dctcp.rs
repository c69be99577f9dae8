//! DCTCP (RFC 8257): the ECN baseline, for comparison only.
//!
//! Contract: window in bytes, no pacing. Once per observation window (one smoothed RTT) the
//! fraction `F` of acknowledged packets that carried ECN-CE updates
//! `alpha = (1 - g) * alpha + g * F`. CE marks (reported through
//! [`on_ecn`](Controller::on_ecn) or [`AckEvent::ecn_ce_delta`]) cut the window to
//! `cwnd * (1 - alpha / 2)`, at most once per RTT. Otherwise slow start, then Reno's additive
//! increase of one packet per RTT. A loss halves the window (once per RTT), a timeout drops it
//! to one packet.

use std::time::Duration;

use super::{AckEvent, Controller, ControllerFactory, LossEvent, SendEvent};
use crate::proto::Instant;

/// DCTCP parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DctcpConfig {
    /// EWMA gain `g` of `alpha`.
    pub g: f64,
    /// Initial `alpha`.
    pub init_alpha: f64,
    /// Initial window, packets.
    pub init_cwnd: f64,
    /// Smallest window, packets.
    pub min_cwnd: f64,
    /// Largest window, packets.
    pub max_cwnd: f64,
}

impl Default for DctcpConfig {
    fn default() -> DctcpConfig {
        DctcpConfig {
            g: 1.0 / 16.0,
            init_alpha: 1.0,
            init_cwnd: 10.0,
            min_cwnd: 1.0,
            max_cwnd: 4096.0,
        }
    }
}

/// The DCTCP controller.
#[derive(Debug, Clone)]
pub struct Dctcp {
    cfg: DctcpConfig,
    packet: f64,
    cwnd: f64,
    ssthresh: f64,
    alpha: f64,
    acked_in_window: u64,
    marked_in_window: u64,
    window_end: Option<Instant>,
    last_cut: Option<Instant>,
    srtt: Duration,
}

impl Dctcp {
    /// A controller for packets of `packet` bytes.
    pub fn new(cfg: DctcpConfig, packet: u64) -> Dctcp {
        Dctcp {
            cfg,
            packet: packet.max(1) as f64,
            cwnd: cfg.init_cwnd,
            ssthresh: f64::INFINITY,
            alpha: cfg.init_alpha,
            acked_in_window: 0,
            marked_in_window: 0,
            window_end: None,
            last_cut: None,
            srtt: Duration::from_micros(10),
        }
    }

    /// The marked-fraction estimate.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Window in packets.
    pub fn cwnd_packets(&self) -> f64 {
        self.cwnd
    }

    fn can_cut(&self, now: Instant) -> bool {
        self.last_cut
            .is_none_or(|t| now.saturating_duration_since(t) >= self.srtt)
    }

    fn marks(&mut self, now: Instant, ce: u64) {
        if ce == 0 {
            return;
        }
        self.marked_in_window += ce;
        if self.can_cut(now) {
            self.cwnd = (self.cwnd * (1.0 - self.alpha / 2.0)).max(self.cfg.min_cwnd);
            self.ssthresh = self.cwnd;
            self.last_cut = Some(now);
        }
    }
}

impl Controller for Dctcp {
    fn on_send(&mut self, _now: Instant, _ev: &SendEvent) {}

    fn on_ack(&mut self, now: Instant, ev: &AckEvent) {
        self.srtt = ev.srtt.max(Duration::from_nanos(1));
        self.marks(now, ev.ecn_ce_delta);
        self.acked_in_window += ev.packets_acked;
        let end = *self.window_end.get_or_insert(now + self.srtt);
        if now >= end {
            let acked = self.acked_in_window.max(1) as f64;
            let f = (self.marked_in_window as f64 / acked).min(1.0);
            self.alpha = (1.0 - self.cfg.g) * self.alpha + self.cfg.g * f;
            self.acked_in_window = 0;
            self.marked_in_window = 0;
            self.window_end = Some(now + self.srtt);
        }
        if self.last_cut.is_some_and(|t| t == now) {
            return;
        }
        let acked = ev.bytes_acked as f64 / self.packet;
        if self.cwnd < self.ssthresh {
            self.cwnd += acked;
        } else {
            self.cwnd += acked / self.cwnd;
        }
        self.cwnd = self.cwnd.clamp(self.cfg.min_cwnd, self.cfg.max_cwnd);
    }

    fn on_loss(&mut self, now: Instant, _ev: &LossEvent) {
        if self.can_cut(now) {
            self.cwnd = (self.cwnd / 2.0).max(self.cfg.min_cwnd);
            self.ssthresh = self.cwnd;
            self.last_cut = Some(now);
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        self.ssthresh = (self.cwnd / 2.0).max(self.cfg.min_cwnd);
        self.cwnd = 1.0;
        self.last_cut = Some(now);
    }

    fn on_ecn(&mut self, now: Instant, ce_delta: u64, _in_flight: u64) {
        self.marks(now, ce_delta);
    }

    fn window(&self) -> u64 {
        (self.cwnd.max(1.0) * self.packet) as u64
    }

    fn name(&self) -> &'static str {
        "dctcp"
    }
}

/// Builds [`Dctcp`] controllers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DctcpFactory {
    /// Parameters for every controller built.
    pub config: DctcpConfig,
}

impl ControllerFactory for DctcpFactory {
    fn build(&self, _now: Instant, max_datagram: u64) -> Box<dyn Controller> {
        Box::new(Dctcp::new(self.config, max_datagram))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKT: u64 = 4096;

    fn ack(packets: u64) -> AckEvent {
        let rtt = Duration::from_micros(10);
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
            newest_sent: Instant::ZERO,
            stalled: false,
        }
    }

    fn us(n: u64) -> Instant {
        Instant::from_nanos(n * 1000)
    }

    #[test]
    fn alpha_is_an_ewma_of_the_marked_fraction() {
        let mut d = Dctcp::new(DctcpConfig::default(), PKT);
        // Window 1 (ends at 10 us): 10 packets acked, none marked: alpha = 15/16.
        d.on_ack(us(0), &ack(5));
        d.on_ack(us(10), &ack(5));
        assert!((d.alpha() - 15.0 / 16.0).abs() < 1e-12, "{}", d.alpha());
        // Window 2: half the packets marked: alpha = 15/16 * 15/16 + 1/16 * 1/2.
        d.on_ecn(us(12), 5, 0);
        d.on_ack(us(12), &ack(5));
        d.on_ack(us(20), &ack(5));
        let expect = (15.0 / 16.0) * (15.0 / 16.0) + 0.5 / 16.0;
        assert!(
            (d.alpha() - expect).abs() < 1e-12,
            "{} vs {expect}",
            d.alpha()
        );
    }

    #[test]
    fn marks_cut_by_half_alpha_once_per_rtt() {
        let mut d = Dctcp::new(
            DctcpConfig {
                init_alpha: 0.5,
                ..DctcpConfig::default()
            },
            PKT,
        );
        d.on_ack(us(0), &ack(1)); // srtt known; slow start to 11
        let w = d.cwnd_packets();
        d.on_ecn(us(1), 1, 0);
        assert!((d.cwnd_packets() - w * 0.75).abs() < 1e-9);
        d.on_ecn(us(2), 1, 0);
        assert!((d.cwnd_packets() - w * 0.75).abs() < 1e-9, "once per RTT");
        d.on_ecn(us(12), 1, 0);
        assert!(d.cwnd_packets() < w * 0.75);
    }

    #[test]
    fn reno_increase_after_a_cut_and_halving_on_loss() {
        let mut d = Dctcp::new(DctcpConfig::default(), PKT);
        d.on_ecn(us(0), 1, 0); // alpha 1: halve to 5, leave slow start
        assert_eq!(d.cwnd_packets(), 5.0);
        d.on_ack(us(20), &ack(5));
        assert!((d.cwnd_packets() - 6.0).abs() < 0.05, "one packet per RTT");
        let w = d.cwnd_packets();
        let ev = LossEvent {
            bytes_lost: PKT,
            packets_lost: 1,
            newest_lost_sent: Instant::ZERO,
            in_flight: 0,
        };
        d.on_loss(us(40), &ev);
        assert!((d.cwnd_packets() - w / 2.0).abs() < 1e-9);
        d.on_timeout(us(50));
        assert_eq!(d.window(), PKT);
    }
}
