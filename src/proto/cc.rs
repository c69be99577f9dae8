//! Congestion control: the [`Controller`] trait a connection drives, and [`FixedWindow`] (the
//! baseline and the protocol tests' controller; the endpoint's default is [`swift`]).
//!
//! Contract:
//! - A connection owns one `Box<dyn Controller>` built by a [`ControllerFactory`] when the
//!   connection is created (one allocation per connection, none per packet).
//! - The connection calls `on_send` for every ack-eliciting packet it sends, `on_ack` once per
//!   received ACK that newly acknowledged data (with the aggregate of what it acknowledged, an
//!   RTT sample from the echoed timestamp, and the peer's hold time so host delay can be
//!   separated from fabric delay), `on_loss` once per loss-detection pass that declared
//!   packets lost, `on_timeout` when a retransmission timeout fires, and `on_ecn` when the
//!   peer's ECN-CE count grew.
//! - It sends only while `bytes_in_flight + packet <= window()`, and not before
//!   `earliest_departure(now, bytes)` (pacing). A controller that wants a window below one
//!   packet returns a window of one packet and paces.
//! - Controllers read no clock: `now` is passed in.

use core::fmt;
use std::time::Duration;

use super::Instant;

pub mod credit;
pub mod cubic;
pub mod dctcp;
pub mod pacing;
pub mod swift;
pub mod timely;

/// A packet was sent.
#[derive(Debug, Clone, Copy)]
pub struct SendEvent {
    /// Packet number.
    pub pn: u64,
    /// Bytes on the wire (transport header + payload).
    pub bytes: u64,
    /// Bytes in flight after this send.
    pub in_flight: u64,
    /// True if this was a retransmission.
    pub retransmit: bool,
    /// True if the sender had nothing more to send right now (application-limited).
    pub app_limited: bool,
}

/// An ACK newly acknowledged packets.
#[derive(Debug, Clone, Copy)]
pub struct AckEvent {
    /// Bytes newly acknowledged by this ACK.
    pub bytes_acked: u64,
    /// Packets newly acknowledged by this ACK.
    pub packets_acked: u64,
    /// Round-trip sample from the echoed timestamp (whole round trip, host delay included).
    pub rtt: Option<Duration>,
    /// The receiver's hold time for the echoed packet (host delay at the receiver).
    pub hold: Duration,
    /// `rtt - hold`, the fabric's share of the round trip.
    pub fabric_rtt: Option<Duration>,
    /// Smoothed RTT after this sample.
    pub srtt: Duration,
    /// Smallest RTT seen.
    pub min_rtt: Duration,
    /// Bytes in flight after this ACK.
    pub in_flight: u64,
    /// ECN-CE marks the peer reported since the previous ACK.
    pub ecn_ce_delta: u64,
    /// Send time of the newest packet this ACK acknowledged.
    pub newest_sent: Instant,
    /// A poll loop was descheduled on this sample's way: the receiver's (it flagged the hold
    /// time, which then includes the time its loop did not run) or ours (the ACK was read
    /// after a gap in our loop, [`EndpointConfig::stall_threshold`]). The delays are then
    /// host scheduling, which no window size changes: a delay-based controller should not
    /// read them as a queue.
    ///
    /// [`EndpointConfig::stall_threshold`]: crate::proto::EndpointConfig::stall_threshold
    pub stalled: bool,
}

/// Packets were declared lost.
#[derive(Debug, Clone, Copy)]
pub struct LossEvent {
    /// Bytes declared lost in this pass.
    pub bytes_lost: u64,
    /// Packets declared lost in this pass.
    pub packets_lost: u64,
    /// Send time of the newest packet declared lost.
    pub newest_lost_sent: Instant,
    /// Bytes in flight after removing the lost packets.
    pub in_flight: u64,
}

/// A congestion controller. Object-safe; one per connection.
pub trait Controller: Send + fmt::Debug {
    /// An ack-eliciting packet left.
    fn on_send(&mut self, now: Instant, ev: &SendEvent);
    /// An ACK acknowledged new packets.
    fn on_ack(&mut self, now: Instant, ev: &AckEvent);
    /// Loss detection declared packets lost.
    fn on_loss(&mut self, now: Instant, ev: &LossEvent);
    /// A retransmission timeout fired (everything in flight was declared lost).
    fn on_timeout(&mut self, now: Instant);
    /// The peer reported `ce_delta` more ECN-CE marks.
    fn on_ecn(&mut self, _now: Instant, _ce_delta: u64, _in_flight: u64) {}
    /// Congestion window in bytes.
    fn window(&self) -> u64;
    /// Pacing rate in bytes per second (`None`: send as the window allows).
    fn pacing_rate(&self) -> Option<u64> {
        None
    }
    /// Earliest time a packet of `bytes` may leave. The default paces at `pacing_rate`
    /// relative to `last_departure`; controllers may override.
    fn earliest_departure(&self, now: Instant, last_departure: Instant, bytes: u64) -> Instant {
        match self.pacing_rate() {
            Some(rate) if rate > 0 => {
                let gap = Duration::from_nanos(bytes.saturating_mul(1_000_000_000) / rate);
                core::cmp::max(now, last_departure + gap)
            }
            _ => now,
        }
    }
    /// Short name for logs and stats.
    fn name(&self) -> &'static str;
}

/// Builds a controller for each new connection.
pub trait ControllerFactory: Send + Sync + fmt::Debug {
    /// A controller for a connection whose datagrams are at most `max_datagram` bytes.
    fn build(&self, now: Instant, max_datagram: u64) -> Box<dyn Controller>;
}

/// A constant window, no pacing: the baseline and the controller for protocol tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedWindow {
    window: u64,
}

impl FixedWindow {
    /// A window of `bytes` (at least one byte).
    pub fn new(bytes: u64) -> FixedWindow {
        FixedWindow {
            window: bytes.max(1),
        }
    }
}

impl Controller for FixedWindow {
    fn on_send(&mut self, _now: Instant, _ev: &SendEvent) {}
    fn on_ack(&mut self, _now: Instant, _ev: &AckEvent) {}
    fn on_loss(&mut self, _now: Instant, _ev: &LossEvent) {}
    fn on_timeout(&mut self, _now: Instant) {}
    fn window(&self) -> u64 {
        self.window
    }
    fn name(&self) -> &'static str {
        "fixed"
    }
}

/// Factory for [`FixedWindow`]: a window of `packets` full-size datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedWindowFactory {
    /// Window in full-size datagrams.
    pub packets: u64,
}

impl ControllerFactory for FixedWindowFactory {
    fn build(&self, _now: Instant, max_datagram: u64) -> Box<dyn Controller> {
        Box::new(FixedWindow::new(self.packets.saturating_mul(max_datagram)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_window_ignores_events_and_default_pacing_is_off() {
        let f = FixedWindowFactory { packets: 10 };
        let mut c = f.build(Instant::ZERO, 1000);
        c.on_timeout(Instant::ZERO);
        assert_eq!(c.window(), 10_000);
        assert_eq!(c.pacing_rate(), None);
        let t = Instant::from_nanos(5);
        assert_eq!(c.earliest_departure(t, Instant::from_nanos(100), 1000), t);
    }

    #[derive(Debug)]
    struct Paced;
    impl Controller for Paced {
        fn on_send(&mut self, _: Instant, _: &SendEvent) {}
        fn on_ack(&mut self, _: Instant, _: &AckEvent) {}
        fn on_loss(&mut self, _: Instant, _: &LossEvent) {}
        fn on_timeout(&mut self, _: Instant) {}
        fn window(&self) -> u64 {
            1
        }
        fn pacing_rate(&self) -> Option<u64> {
            Some(1_000_000_000) // 1 byte per ns
        }
        fn name(&self) -> &'static str {
            "paced"
        }
    }

    #[test]
    fn default_earliest_departure_paces() {
        let c: Box<dyn Controller> = Box::new(Paced);
        let last = Instant::from_nanos(1000);
        assert_eq!(
            c.earliest_departure(Instant::from_nanos(900), last, 500),
            Instant::from_nanos(1500)
        );
    }
}
