//! Swift-style delay-based congestion control, the default controller.
//!
//! After Kumar et al., "Swift: Delay is Simple and Effective for Congestion Control in the
//! Datacenter" (SIGCOMM 2020), and the congestion-control model of Google's open Falcon
//! specification. Contract and behaviour:
//! - Two windows, in packets (fractional): a *fabric* window driven by the fabric delay
//!   (`rtt - hold`, the round trip less the receiver's echoed hold time) and an *endpoint*
//!   window driven by the hold time (host delay). The effective window is their minimum, so a
//!   slow receiver host throttles the sender without being mistaken for fabric congestion.
//! - Fabric target delay = base + `hops * per_hop` + flow-scaling term. The base is
//!   [`SwiftConfig::base_target`], or the smallest fabric delay seen plus
//!   [`SwiftConfig::base_queue`]. The flow-scaling term is `alpha / sqrt(cwnd) + beta`, clamped
//!   to `[0, fs_range]`: flows with small windows (many flows share the bottleneck) tolerate a
//!   little more queue, which lets small windows grow and gives fairness.
//! - Below target: additive increase of `ai` packets per RTT (`ai / cwnd` per acked packet,
//!   or `ai` per acked packet while the window is below one packet).
//! - Above target: multiplicative decrease by `beta * (delay - target) / delay`, capped at
//!   `max_mdf`, at most once per RTT, decided on the RTT's smallest delay: each window
//!   collects its samples for one smoothed RTT and is cut only if all of them were above
//!   target, by the excess of the smallest. A standing queue is cut as Swift prescribes; a
//!   scheduler stall (one RTT of inflated samples, read at once by a sender that was
//!   descheduled, or one late ACK from a receiver that was) is not.
//! - Stalls: a sample that a descheduled poll loop inflated (flagged by the receiver in its
//!   ACK, or read by us after a gap in our own loop: [`AckEvent::stalled`]) is host
//!   scheduling, which no window size shortens. It counts as below target for the increase,
//!   takes no part in a decision period and never sets the measured base. Without this, two
//!   loops that share their cores with other work read every RTT as a queue and cut to
//!   `min_cwnd`: a 1 MiB message took seconds.
//! - Loss (fast recovery): decrease by `max_mdf`, at most once per RTT. Timeout: decrease by
//!   `max_mdf`; after `retx_reset_threshold` consecutive timeouts the window drops to
//!   `min_cwnd`.
//! - Windows below one packet: [`window`](Controller::window) is one packet and the
//!   controller paces at `cwnd * packet / rtt_p`, one packet every `rtt_p / cwnd`, where
//!   `rtt_p` = [`pacing_rtt`](Swift::pacing_rtt) = min(srtt, fabric target).
//! - Pacing at all window sizes: rate `gain * cwnd * packet / rtt_p`, bursts of at most
//!   `max(2 packets, 1 us at line rate)` (see [`pacing`](super::pacing)).
//! - The hold time is the receiver's host delay only: its deliberate delayed-ACK wait is
//!   not in it (docs/WIRE.md, ACK), so a delayed ACK does not shrink the endpoint window.
//! - ECN (optional, [`SwiftConfig::ecn_confirm`]): a delay above target decreases the window
//!   only if CE marks arrived within the last RTT; a delay spike without marks is treated as
//!   noise (as a sample below target).
//!
//! Published defaults: `ai` 1, `beta` 0.8, `max_mdf` 0.5, `min_cwnd` 0.01 packets. The stack's
//! default is [`SwiftConfig::software`] (more queue allowed above the measured base).

use std::time::Duration;

use super::pacing::{default_burst, Pacer};
use super::{AckEvent, Controller, ControllerFactory, LossEvent, SendEvent};
use crate::proto::Instant;

/// Swift parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SwiftConfig {
    /// Additive increment, packets per RTT.
    pub ai: f64,
    /// Multiplicative-decrease factor applied to the relative excess delay.
    pub beta: f64,
    /// Largest multiplicative decrease (fraction of the window) in one step.
    pub max_mdf: f64,
    /// Smallest window, packets (below one packet the controller paces).
    pub min_cwnd: f64,
    /// Largest window, packets.
    pub max_cwnd: f64,
    /// Initial window, packets.
    pub init_cwnd: f64,
    /// Fixed base of the fabric target; `None`: the smallest fabric delay seen plus
    /// `base_queue`.
    pub base_target: Option<Duration>,
    /// Queue allowed above the measured base when `base_target` is `None`.
    pub base_queue: Duration,
    /// Switch hops on the path (the per-hop term is `hops * per_hop`).
    pub hops: u32,
    /// Target delay added per hop.
    pub per_hop: Duration,
    /// Range of the flow-scaling term.
    pub fs_range: Duration,
    /// Window (packets) at which the flow-scaling term reaches `fs_range`.
    pub fs_min_cwnd: f64,
    /// Window (packets) at which the flow-scaling term reaches zero.
    pub fs_max_cwnd: f64,
    /// Target for the endpoint (host) delay, the echoed hold time.
    pub host_target: Duration,
    /// Consecutive timeouts after which the window drops to `min_cwnd`.
    pub retx_reset_threshold: u32,
    /// Require ECN-CE marks to confirm a delay-based decrease.
    pub ecn_confirm: bool,
    /// Line rate of the sender's link, bits per second (sets the burst size and caps the
    /// pacing rate).
    pub line_rate_bps: u64,
    /// Pacing gain applied above one packet of window.
    pub pacing_gain: f64,
}

impl Default for SwiftConfig {
    fn default() -> SwiftConfig {
        SwiftConfig {
            ai: 1.0,
            beta: 0.8,
            max_mdf: 0.5,
            min_cwnd: 0.01,
            max_cwnd: 1024.0,
            init_cwnd: 10.0,
            base_target: None,
            base_queue: Duration::from_nanos(500),
            hops: 1,
            per_hop: Duration::from_micros(1),
            fs_range: Duration::from_micros(5),
            fs_min_cwnd: 0.1,
            fs_max_cwnd: 100.0,
            host_target: Duration::from_micros(10),
            retx_reset_threshold: 5,
            ecn_confirm: false,
            line_rate_bps: 100_000_000_000,
            pacing_gain: 1.25,
        }
    }
}

impl SwiftConfig {
    /// The stack's default: the published parameters with a fabric target scaled to a
    /// software path (two poll loops on general-purpose hosts, no hardware timestamps).
    ///
    /// The measured base is the smallest fabric delay seen, which comes from a small
    /// packet; a full-size packet's round trip through two poll loops is tens of
    /// microseconds more (23 us against 1.7 us for a 9000-byte packet over memif on the
    /// development VM), and keeping the link busy takes a few packets of queue on top.
    /// `base_queue` is therefore 50 us instead of 0.5 us: Swift keeps about 50 us of queue
    /// on such a path (a fixed 64-packet window keeps the whole window queued). On a
    /// fabric with known distances, set `base_target` instead (as the simulator does).
    pub fn software() -> SwiftConfig {
        SwiftConfig {
            base_queue: Duration::from_micros(50),
            ..SwiftConfig::default()
        }
    }
}

/// One delay sample applied to a window.
#[derive(Debug, Clone, Copy)]
struct Sample {
    delay: Duration,
    target: Duration,
    /// The decision period: the connection's smoothed RTT.
    srtt: Duration,
    /// Packets this ACK acknowledged.
    acked: f64,
    /// The delay is noise unless confirmed (`ecn_confirm` without a recent CE mark): a
    /// sample above target counts as below it for the increase, and decides no decrease.
    unconfirmed: bool,
    /// A poll loop was descheduled on the sample's way ([`AckEvent::stalled`]): the delay
    /// is host scheduling, not a queue. It counts as below target for the increase and
    /// takes no part in the decision period (its smallest delay, whether any was below).
    stalled: bool,
}

/// One AIMD window reacting to one delay signal, deciding decreases once per RTT on the
/// smallest delay of that RTT (see [`DelayWindow::update`]).
#[derive(Debug, Clone, Copy)]
struct DelayWindow {
    cwnd: f64,
    /// Start of the current decision period (`None`: no sample since the last decision).
    epoch_start: Option<Instant>,
    /// Smallest delay sampled in the current period, and whether any sample of the period
    /// was below target (or treated as such).
    epoch_min: Duration,
    epoch_below: bool,
    /// Time of the last decrease (delay, loss or timeout).
    last_decrease: Option<Instant>,
}

impl DelayWindow {
    fn new(cwnd: f64) -> DelayWindow {
        DelayWindow {
            cwnd,
            epoch_start: None,
            epoch_min: Duration::MAX,
            epoch_below: false,
            last_decrease: None,
        }
    }

    /// One ACK (see [`Sample`]).
    ///
    /// Increase per ACK: `ai / cwnd` per acked packet while the sample is below target (`ai`
    /// per acked packet below one packet of window). Decrease at most once per decision
    /// period (one smoothed RTT, starting at the first sample after the previous decision)
    /// and only if *every* sample of the period was at or above target; the cut is
    /// `beta * (min - target) / min` of the period's *smallest* delay, capped at `max_mdf`.
    /// A standing queue keeps every sample of an RTT high and is cut as Swift prescribes. A
    /// scheduler stall is one RTT's worth of inflated samples at most (the ACKs that waited
    /// out the stall, all read at the same `now`), and the period it falls in also holds the
    /// sample before it or the first one after it: the minimum ignores it, and the window
    /// is not cut for the stall.
    fn update(&mut self, cfg: &SwiftConfig, now: Instant, s: Sample) {
        let Sample {
            delay,
            target,
            srtt,
            acked,
            unconfirmed,
            stalled,
        } = s;
        let below = delay < target;
        if below || unconfirmed || stalled {
            if self.cwnd >= 1.0 {
                self.cwnd += cfg.ai / self.cwnd * acked;
            } else {
                self.cwnd += cfg.ai * acked;
            }
        }
        if stalled {
            // A loop that was not running inflated this delay by however long it was off;
            // a smaller window would not have shortened that. Cutting on such samples is
            // what collapses a flow between two loops that share their cores with other
            // work (each period all-stalled: half the window per RTT, down to `min_cwnd`,
            // then a packet every `rtt / min_cwnd`).
            self.cwnd = self.cwnd.clamp(cfg.min_cwnd, cfg.max_cwnd);
            return;
        }
        let start = *self.epoch_start.get_or_insert(now);
        self.epoch_min = self.epoch_min.min(delay);
        self.epoch_below |= below;
        if now.saturating_duration_since(start) >= srtt {
            if !self.epoch_below && self.epoch_min >= target && !unconfirmed {
                let d = self.epoch_min.as_secs_f64().max(1e-12);
                let excess = (d - target.as_secs_f64()) / d;
                let factor = (1.0 - cfg.beta * excess).max(1.0 - cfg.max_mdf);
                self.cwnd *= factor;
                self.last_decrease = Some(now);
            }
            self.restart_epoch();
        }
        self.cwnd = self.cwnd.clamp(cfg.min_cwnd, cfg.max_cwnd);
    }

    fn restart_epoch(&mut self) {
        self.epoch_start = None;
        self.epoch_min = Duration::MAX;
        self.epoch_below = false;
    }

    /// Whether a loss cut is allowed: no decrease within the last `srtt`.
    fn can_cut(&self, now: Instant, srtt: Duration) -> bool {
        self.last_decrease
            .is_none_or(|t| now.saturating_duration_since(t) >= srtt)
    }

    fn cut(&mut self, cfg: &SwiftConfig, now: Instant, to_min: bool) {
        self.cwnd = if to_min {
            cfg.min_cwnd
        } else {
            (self.cwnd * (1.0 - cfg.max_mdf)).max(cfg.min_cwnd)
        };
        self.last_decrease = Some(now);
        // The delay samples of the period that ended in a loss have been answered.
        self.restart_epoch();
    }
}

/// The Swift controller (see the module docs).
#[derive(Debug, Clone)]
pub struct Swift {
    cfg: SwiftConfig,
    packet: u64,
    fabric: DelayWindow,
    endpoint: DelayWindow,
    /// Smallest fabric delay seen (the measured base).
    min_fabric: Option<Duration>,
    srtt: Option<Duration>,
    retx_count: u32,
    last_ce: Option<Instant>,
    pacer: Pacer,
    /// Burst allowance at full window.
    burst: u64,
    /// fs = fs_alpha / sqrt(cwnd) + fs_beta, seconds.
    fs_alpha: f64,
    fs_beta: f64,
    /// [`Controller::window`] and [`Controller::pacing_rate`], recomputed when an event
    /// changes what they depend on (the window, srtt, smallest fabric delay): the connection
    /// asks for them on every poll and every send, and the float math (a square root, a
    /// division, a float-to-Duration conversion) is per-event work, not per-query.
    cached_window: u64,
    cached_rate: Option<u64>,
}

impl Swift {
    /// A controller for packets of `packet` bytes.
    pub fn new(cfg: SwiftConfig, packet: u64) -> Swift {
        let packet = packet.max(1);
        let range = cfg.fs_range.as_secs_f64();
        let denom = 1.0 / cfg.fs_min_cwnd.sqrt() - 1.0 / cfg.fs_max_cwnd.sqrt();
        let fs_alpha = if denom > 0.0 { range / denom } else { 0.0 };
        let fs_beta = -fs_alpha / cfg.fs_max_cwnd.sqrt();
        let init = cfg.init_cwnd.clamp(cfg.min_cwnd, cfg.max_cwnd);
        let mut s = Swift {
            cfg,
            packet,
            fabric: DelayWindow::new(init),
            endpoint: DelayWindow::new(cfg.max_cwnd),
            min_fabric: None,
            srtt: None,
            retx_count: 0,
            last_ce: None,
            pacer: Pacer::new(default_burst(packet, cfg.line_rate_bps)),
            burst: default_burst(packet, cfg.line_rate_bps),
            fs_alpha,
            fs_beta,
            cached_window: 0,
            cached_rate: None,
        };
        s.recompute();
        s
    }

    fn recompute(&mut self) {
        self.cached_window = (self.cwnd_packets().max(1.0) * self.packet as f64) as u64;
        self.cached_rate = self.compute_pacing_rate();
    }

    fn compute_pacing_rate(&self) -> Option<u64> {
        let srtt = self.pacing_rtt()?.as_secs_f64();
        let cwnd = self.cwnd_packets();
        let gain = if cwnd < 1.0 {
            1.0
        } else {
            self.cfg.pacing_gain
        };
        let rate = gain * cwnd * self.packet as f64 / srtt;
        let line = (self.cfg.line_rate_bps / 8) as f64;
        Some(rate.clamp(1.0, line) as u64)
    }

    /// The effective window in packets (fractional): min(fabric, endpoint).
    pub fn cwnd_packets(&self) -> f64 {
        self.fabric.cwnd.min(self.endpoint.cwnd)
    }

    /// The fabric window in packets.
    pub fn fabric_cwnd(&self) -> f64 {
        self.fabric.cwnd
    }

    /// The endpoint (host) window in packets.
    pub fn endpoint_cwnd(&self) -> f64 {
        self.endpoint.cwnd
    }

    /// The flow-scaling term for the current fabric window.
    pub fn flow_scaling(&self) -> Duration {
        let fs = self.fs_alpha / self.fabric.cwnd.max(1e-9).sqrt() + self.fs_beta;
        Duration::from_secs_f64(fs.clamp(0.0, self.cfg.fs_range.as_secs_f64()))
    }

    /// The round trip the pacer spreads a window over: the smoothed RTT, at most the fabric
    /// target. Pacing spreads the window the delay response chose; it is not a second
    /// response. An srtt above target is a queue the window decrease is already answering,
    /// or a scheduler stall the smoothed RTT remembers for many samples after it ended:
    /// pacing over it would turn one stall into a rate collapse (below one packet of window,
    /// a packet every `srtt / cwnd`: seconds after a stall of milliseconds).
    pub fn pacing_rtt(&self) -> Option<Duration> {
        let srtt = self.srtt?;
        Some(self.fabric_target().map_or(srtt, |t| srtt.min(t)))
    }

    /// The current fabric target delay (`None` before the first sample when no base is
    /// configured).
    pub fn fabric_target(&self) -> Option<Duration> {
        let base = match self.cfg.base_target {
            Some(b) => b,
            None => self.min_fabric? + self.cfg.base_queue,
        };
        Some(base + self.cfg.per_hop * self.cfg.hops + self.flow_scaling())
    }
}

impl Controller for Swift {
    fn on_send(&mut self, now: Instant, ev: &SendEvent) {
        let rate = self.pacing_rate().unwrap_or(0);
        // Never burst more than the window: below one packet, one packet at a time.
        self.pacer.set_burst(self.burst.min(self.window()));
        self.pacer.on_send(now, ev.bytes, rate);
    }

    fn on_ack(&mut self, now: Instant, ev: &AckEvent) {
        self.on_ack_inner(now, ev);
        self.recompute();
    }

    fn on_loss(&mut self, now: Instant, _ev: &LossEvent) {
        self.retx_count = 0;
        let rtt = self.srtt.unwrap_or(Duration::ZERO);
        if self.fabric.can_cut(now, rtt) {
            let cfg = self.cfg;
            self.fabric.cut(&cfg, now, false);
        }
        self.recompute();
    }

    fn on_timeout(&mut self, now: Instant) {
        self.retx_count += 1;
        let cfg = self.cfg;
        let to_min = self.retx_count >= cfg.retx_reset_threshold;
        self.fabric.cut(&cfg, now, to_min);
        self.recompute();
    }

    fn on_ecn(&mut self, now: Instant, ce_delta: u64, _in_flight: u64) {
        if ce_delta > 0 {
            self.last_ce = Some(now);
        }
    }

    fn window(&self) -> u64 {
        self.cached_window
    }

    fn pacing_rate(&self) -> Option<u64> {
        self.cached_rate
    }

    fn earliest_departure(&self, now: Instant, _last_departure: Instant, _bytes: u64) -> Instant {
        self.pacer.earliest_departure(now)
    }

    fn name(&self) -> &'static str {
        "swift"
    }
}

impl Swift {
    fn on_ack_inner(&mut self, now: Instant, ev: &AckEvent) {
        self.retx_count = 0;
        if ev.ecn_ce_delta > 0 {
            self.last_ce = Some(now);
        }
        let Some(rtt) = ev.rtt else {
            return;
        };
        let fabric = ev.fabric_rtt.unwrap_or(rtt);
        if !ev.stalled {
            // (A stalled sample's fabric share is uncertain: the receiver's hold time then
            // bounds its loop's gap from above. It never sets the base.)
            self.min_fabric = Some(self.min_fabric.map_or(fabric, |m| m.min(fabric)));
        }
        self.srtt = Some(ev.srtt.max(Duration::from_nanos(1)));
        let acked = ev.packets_acked.max(1) as f64;
        // No target yet: every sample so far was stalled (which only increases the window).
        let target = self.fabric_target().unwrap_or(Duration::MAX);
        let noise = self.cfg.ecn_confirm
            && self
                .last_ce
                .is_none_or(|t| now.saturating_duration_since(t) > rtt);
        let cfg = self.cfg;
        let sample = Sample {
            delay: fabric,
            target,
            srtt: ev.srtt,
            acked,
            unconfirmed: noise,
            stalled: ev.stalled,
        };
        self.fabric.update(&cfg, now, sample);
        let host = Sample {
            delay: ev.hold,
            target: cfg.host_target,
            unconfirmed: false,
            ..sample
        };
        self.endpoint.update(&cfg, now, host);
    }
}

/// Builds [`Swift`] controllers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SwiftFactory {
    /// Parameters for every controller built.
    pub config: SwiftConfig,
}

impl SwiftFactory {
    /// The stack's default controller: Swift with [`SwiftConfig::software`].
    pub fn software() -> SwiftFactory {
        SwiftFactory {
            config: SwiftConfig::software(),
        }
    }
}

impl ControllerFactory for SwiftFactory {
    fn build(&self, _now: Instant, max_datagram: u64) -> Box<dyn Controller> {
        Box::new(Swift::new(self.config, max_datagram))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKT: u64 = 4096;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    fn ack(rtt: Duration, hold: Duration, packets: u64) -> AckEvent {
        AckEvent {
            bytes_acked: packets * PKT,
            packets_acked: packets,
            rtt: Some(rtt),
            hold,
            fabric_rtt: Some(rtt.saturating_sub(hold)),
            srtt: rtt,
            min_rtt: rtt,
            in_flight: 0,
            ecn_ce_delta: 0,
            newest_sent: Instant::ZERO,
            stalled: false,
        }
    }

    fn cfg() -> SwiftConfig {
        SwiftConfig {
            base_target: Some(us(10)),
            init_cwnd: 10.0,
            ..SwiftConfig::default()
        }
    }

    fn t(us: u64) -> Instant {
        Instant::from_nanos(us * 1000)
    }

    #[test]
    fn cached_window_and_rate_follow_every_event() {
        let mut s = Swift::new(cfg(), PKT);
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for i in 0..5000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let now = t(i * 3);
            match x % 8 {
                0 => s.on_loss(
                    now,
                    &LossEvent {
                        bytes_lost: PKT,
                        packets_lost: 1,
                        newest_lost_sent: now,
                        in_flight: 0,
                    },
                ),
                1 => s.on_timeout(now),
                2 => s.on_ecn(now, x % 2, 0),
                _ => {
                    let rtt = us(5 + (x >> 8) % 400);
                    let hold = us((x >> 20) % 30);
                    s.on_ack(now, &ack(rtt, hold, 1 + (x >> 32) % 4));
                }
            }
            let w = (s.cwnd_packets().max(1.0) * PKT as f64) as u64;
            assert_eq!(s.window(), w, "event {i}");
            assert_eq!(s.pacing_rate(), s.compute_pacing_rate(), "event {i}");
        }
    }

    #[test]
    fn additive_increase_below_target() {
        let mut s = Swift::new(cfg(), PKT);
        // One RTT worth of ACKs (10 packets) below target adds `ai` = 1 packet.
        for i in 0..10 {
            s.on_ack(t(i), &ack(us(10), Duration::ZERO, 1));
        }
        let w = s.cwnd_packets();
        assert!((w - 11.0).abs() < 0.05, "cwnd {w}");
        assert_eq!(s.window(), (w * PKT as f64) as u64);
    }

    #[test]
    fn decrease_is_proportional_to_excess_and_once_per_rtt() {
        let mut s = Swift::new(cfg(), PKT);
        let target = s.fabric_target().unwrap().as_secs_f64();
        let delay = us(15);
        // The first sample opens a decision period (one srtt, 15 us): no decision yet.
        s.on_ack(t(100), &ack(delay, Duration::ZERO, 1));
        assert_eq!(s.cwnd_packets(), 10.0);
        s.on_ack(t(110), &ack(delay, Duration::ZERO, 1));
        assert_eq!(s.cwnd_packets(), 10.0);
        // One srtt later every sample of the period was above target: one cut.
        s.on_ack(t(115), &ack(delay, Duration::ZERO, 1));
        let expect = 10.0 * (1.0 - 0.8 * (delay.as_secs_f64() - target) / delay.as_secs_f64());
        assert!(
            (s.cwnd_packets() - expect).abs() < 1e-9,
            "{}",
            s.cwnd_packets()
        );
        // Further high samples within the next period do not decrease again ...
        s.on_ack(t(116), &ack(delay, Duration::ZERO, 1));
        s.on_ack(t(125), &ack(delay, Duration::ZERO, 1));
        assert!((s.cwnd_packets() - expect).abs() < 1e-9);
        // ... its end does.
        s.on_ack(t(131), &ack(delay, Duration::ZERO, 1));
        assert!(s.cwnd_packets() < expect - 0.1);
    }

    /// Delays that a descheduled loop inflated (flagged `stalled`) are no queue: period
    /// after period of them, far above target on both signals, never cut either window and
    /// grow it as samples below target would; the same samples unflagged halve it each
    /// period. A stalled sample never sets the measured base either.
    #[test]
    fn stalled_samples_never_cut_the_window() {
        let run = |stalled: bool, c: SwiftConfig| {
            let mut s = Swift::new(c, PKT);
            let start = s.cwnd_packets();
            let ev = AckEvent {
                stalled,
                ..ack(us(8000), us(4000), 1)
            };
            for i in 0..40u64 {
                s.on_ack(t(100 + 9000 * i), &ev);
            }
            (start, s.cwnd_packets(), s.fabric_target())
        };
        let measured_base = SwiftConfig {
            base_target: None,
            ..cfg()
        };
        let (start, end, target) = run(true, measured_base);
        assert!(end > start + 1.0, "stalled: {start} -> {end}");
        assert_eq!(target, None, "a stalled sample set the base");
        let (start, end, _) = run(true, cfg());
        assert!(end > start + 1.0, "stalled, fixed base: {start} -> {end}");
        let (start, end, _) = run(false, cfg());
        assert!(end < start / 4.0, "unflagged: {start} -> {end}");
    }

    #[test]
    fn decrease_is_capped_at_max_mdf() {
        let mut s = Swift::new(cfg(), PKT);
        s.on_ack(t(100), &ack(us(1000), Duration::ZERO, 1));
        s.on_ack(t(1100), &ack(us(1000), Duration::ZERO, 1));
        assert!(
            (s.cwnd_packets() - 5.0).abs() < 1e-9,
            "{}",
            s.cwnd_packets()
        );
    }

    /// A period's decision uses its smallest delay: a standing queue whose samples vary is
    /// cut once, by the excess of the smallest.
    #[test]
    fn standing_queue_is_cut_by_the_smallest_excess_of_the_rtt() {
        let mut s = Swift::new(cfg(), PKT);
        let target = s.fabric_target().unwrap().as_secs_f64();
        let srtt = us(20);
        let sample = |d: u64| AckEvent {
            srtt,
            ..ack(us(d), Duration::ZERO, 1)
        };
        for (i, d) in [30, 18, 40, 25, 22].into_iter().enumerate() {
            s.on_ack(t(100 + 5 * i as u64), &sample(d));
        }
        let min = 18e-6;
        let expect = 10.0 * (1.0 - 0.8 * (min - target) / min);
        assert!(
            (s.cwnd_packets() - expect).abs() < 1e-9,
            "{} vs {expect}",
            s.cwnd_packets()
        );
    }

    /// Virtual time: a flow below target, then the sender's loop is descheduled for 5 ms.
    /// The ACKs that arrived meanwhile are all read at the end of the stall, each with an RTT
    /// inflated by the stall; then the flow goes on as before. Swift per sample would have
    /// halved the window; the period's minimum sees the samples on either side of the stall
    /// and neither window is cut.
    #[test]
    fn one_scheduler_stall_does_not_cut_the_window() {
        let mut s = Swift::new(cfg(), PKT);
        let mut now = 0;
        let steady = |s: &mut Swift, now: &mut u64, n: u64| {
            for _ in 0..n {
                *now += 1;
                s.on_ack(t(*now), &ack(us(8), us(1), 1));
            }
        };
        steady(&mut s, &mut now, 100);
        let before = s.cwnd_packets();
        let endpoint_before = s.endpoint_cwnd();
        // The stall: 5 ms with nothing read, then a window's worth of ACKs at once, each
        // RTT between 5 ms and 5 ms + 10 us (srtt moves a little, as the connection's does).
        now += 5000;
        for i in 0..12 {
            let rtt = us(5000 + i);
            let ev = AckEvent {
                srtt: us(8) + (rtt - us(8)) / 8,
                ..ack(rtt, us(1), 1)
            };
            s.on_ack(t(now), &ev);
        }
        steady(&mut s, &mut now, 100);
        assert!(
            s.cwnd_packets() >= before,
            "{} < {before}",
            s.cwnd_packets()
        );
        // Same for the receiver: one ACK it sent late after a stall (hold 3 ms).
        steady(&mut s, &mut now, 20);
        s.on_ack(t(now + 1), &ack(us(3008), us(3000), 1));
        now += 1;
        steady(&mut s, &mut now, 100);
        assert_eq!(s.endpoint_cwnd(), endpoint_before);
        // A stall that lasts (every sample of an RTT high) is congestion: cut, by max_mdf at
        // most.
        // (20 samples 1 us apart with an srtt of 8 us: the period in progress, which saw
        // low samples, then one whole period of high ones.)
        let w = s.endpoint_cwnd();
        for i in 1..=20 {
            let ev = AckEvent {
                srtt: us(8),
                ..ack(us(3008), us(3000), 1)
            };
            s.on_ack(t(now + i), &ev);
        }
        assert!(
            (s.endpoint_cwnd() - w * 0.5).abs() < 1e-9,
            "{} vs {w}",
            s.endpoint_cwnd()
        );
    }

    #[test]
    fn sub_packet_window_paces() {
        let c = SwiftConfig {
            init_cwnd: 0.25,
            ..cfg()
        };
        let mut s = Swift::new(c, PKT);
        // One sample above target (no increase) with an srtt of 10 us, below target.
        let ev = AckEvent {
            srtt: us(10),
            ..ack(us(1000), Duration::ZERO, 1)
        };
        s.on_ack(t(0), &ev);
        let cwnd = s.cwnd_packets();
        assert!(cwnd < 1.0);
        assert_eq!(s.window(), PKT, "a sub-packet window is one packet");
        // One packet every srtt / cwnd.
        assert_eq!(s.pacing_rtt(), Some(us(10)));
        let gap_ns = (10.0 / cwnd * 1000.0) as u64;
        let rate = s.pacing_rate().unwrap();
        assert!((PKT * 1_000_000_000 / rate).abs_diff(gap_ns) <= 2);
        let now = t(2000);
        s.on_send(
            now,
            &SendEvent {
                pn: 0,
                bytes: PKT,
                in_flight: PKT,
                retransmit: false,
                app_limited: false,
            },
        );
        let next = s.earliest_departure(now, now, PKT);
        assert!(next > now, "the second packet waits");
        let waited = (next - now).as_nanos() as u64;
        assert!(
            waited.abs_diff(gap_ns) <= gap_ns / 100,
            "{waited} vs {gap_ns}"
        );
    }

    /// Pacing spreads the window over the smoothed RTT, but never over more than the
    /// fabric target: an srtt inflated by a stall does not stretch the packet gap.
    #[test]
    fn pacing_rtt_is_capped_at_the_target() {
        let mut s = Swift::new(cfg(), PKT);
        s.on_ack(t(0), &ack(us(8), Duration::ZERO, 1));
        assert_eq!(s.pacing_rtt(), Some(us(8)), "below target: the srtt");
        let ev = AckEvent {
            srtt: us(4000),
            ..ack(us(8), Duration::ZERO, 1)
        };
        s.on_ack(t(1), &ev);
        let target = s.fabric_target().unwrap();
        assert!(target < us(20));
        assert_eq!(s.pacing_rtt(), Some(target));
        let rate = s.pacing_rate().unwrap() as f64;
        let expect = 1.25 * s.cwnd_packets() * PKT as f64 / target.as_secs_f64();
        assert!((rate - expect).abs() / expect < 1e-6, "{rate} vs {expect}");
    }

    #[test]
    fn min_cwnd_floor_and_timeouts() {
        let mut s = Swift::new(cfg(), PKT);
        for _ in 0..4 {
            s.on_timeout(t(0));
        }
        assert!((s.cwnd_packets() - 10.0 / 16.0).abs() < 1e-9);
        s.on_timeout(t(0));
        assert_eq!(s.cwnd_packets(), 0.01, "fifth timeout resets to min_cwnd");
    }

    #[test]
    fn loss_cuts_once_per_rtt() {
        let mut s = Swift::new(cfg(), PKT);
        s.on_ack(t(0), &ack(us(10), Duration::ZERO, 1));
        let w0 = s.cwnd_packets();
        let ev = LossEvent {
            bytes_lost: PKT,
            packets_lost: 1,
            newest_lost_sent: Instant::ZERO,
            in_flight: 0,
        };
        s.on_loss(t(100), &ev);
        assert!((s.cwnd_packets() - w0 / 2.0).abs() < 1e-9);
        s.on_loss(t(101), &ev);
        assert!((s.cwnd_packets() - w0 / 2.0).abs() < 1e-9);
    }

    #[test]
    fn host_delay_is_separated_from_fabric_delay() {
        let mut s = Swift::new(cfg(), PKT);
        // RTT 40 us of which 35 us is the receiver's hold time: the fabric is uncongested
        // (5 us < target) so the fabric window grows, while the endpoint window (hold 35 us
        // > host target 10 us) shrinks and limits the sender.
        let w0 = s.fabric_cwnd();
        for i in 0..20 {
            s.on_ack(t(i * 50), &ack(us(40), us(35), 1));
        }
        assert!(s.fabric_cwnd() > w0, "fabric window grew");
        assert!(s.endpoint_cwnd() < 1024.0, "endpoint window shrank");
        assert!(s.cwnd_packets() < s.fabric_cwnd());
        // Same RTT but no hold time: the fabric window shrinks.
        let mut f = Swift::new(cfg(), PKT);
        for i in 0..20 {
            f.on_ack(t(i * 50), &ack(us(40), Duration::ZERO, 1));
        }
        assert!(f.fabric_cwnd() < w0);
    }

    #[test]
    fn flow_scaling_grows_as_window_shrinks() {
        let mut s = Swift::new(cfg(), PKT);
        let big = s.flow_scaling();
        s.fabric.cwnd = 0.1;
        let small = s.flow_scaling();
        assert!(small > big);
        assert_eq!(small, Duration::from_micros(5));
        s.fabric.cwnd = 100.0;
        assert_eq!(s.flow_scaling(), Duration::ZERO);
    }

    #[test]
    fn ecn_confirm_ignores_unmarked_delay_spikes() {
        let c = SwiftConfig {
            ecn_confirm: true,
            ..cfg()
        };
        let mut s = Swift::new(c, PKT);
        s.on_ack(t(100), &ack(us(50), Duration::ZERO, 1));
        assert!(s.cwnd_packets() >= 10.0, "no marks: treated as noise");
        let mut marked = ack(us(50), Duration::ZERO, 1);
        marked.ecn_ce_delta = 1;
        s.on_ack(t(200), &marked);
        assert!(s.cwnd_packets() < 10.0, "marks confirm the decrease");
    }
}
