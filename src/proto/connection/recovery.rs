//! Loss recovery: the RTT estimator, the record of packets sent, acknowledgement processing,
//! RACK loss detection, the tail-loss probe and the retransmission timeout.

use std::time::Duration;

use super::super::cc::{AckEvent, LossEvent};
use super::super::Instant;
use super::{CloseReason, Connection, State};
use crate::wire::transport::{AckRepr, SACK_BITS};

/// RTT samples a connection keeps for [`Connection::drain_rtt_samples`].
pub const RTT_RING: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PktState {
    InFlight,
    Lost,
    Acked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum What {
    Data {
        msg_id: u64,
        offset: u64,
        len: u32,
    },
    /// Whole messages `first .. first + count`, `len` payload bytes in all.
    Batch {
        first: u64,
        count: u16,
        len: u32,
    },
    Confirm,
    Close,
    Probe,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Sent {
    pub(super) time: Instant,
    pub(super) bytes: u32,
    pub(super) retx: u16,
    pub(super) state: PktState,
    pub(super) what: What,
}

/// The RTT estimator (RFC 6298 style): smoothed RTT, its variation, the minimum, and the most
/// recent samples for telemetry. Until the first sample the estimates are the configured
/// initial RTT.
pub(super) struct RttEstimator {
    srtt: Duration,
    rttvar: Duration,
    min_rtt: Duration,
    /// The most recent RTT samples (ns, saturating at u32::MAX), for telemetry to drain.
    ring: [u32; RTT_RING],
    ring_len: usize,
    ring_head: usize,
    has_rtt: bool,
}

impl RttEstimator {
    pub(super) fn new(initial_rtt: Duration) -> RttEstimator {
        RttEstimator {
            srtt: initial_rtt,
            rttvar: initial_rtt / 2,
            min_rtt: initial_rtt,
            ring: [0; RTT_RING],
            ring_len: 0,
            ring_head: 0,
            has_rtt: false,
        }
    }

    /// Take the sample `r`: into the ring, then into the estimates (the first sets them).
    #[inline]
    fn sample(&mut self, r: Duration) {
        let i = (self.ring_head + self.ring_len) % RTT_RING;
        self.ring[i] = r.as_nanos().min(u32::MAX as u128) as u32;
        if self.ring_len == RTT_RING {
            self.ring_head = (self.ring_head + 1) % RTT_RING;
        } else {
            self.ring_len += 1;
        }
        if !self.has_rtt {
            self.has_rtt = true;
            self.srtt = r;
            self.rttvar = r / 2;
            self.min_rtt = r;
            return;
        }
        self.min_rtt = self.min_rtt.min(r);
        let diff = self.srtt.abs_diff(r);
        self.rttvar = (self.rttvar * 3 + diff) / 4;
        self.srtt = (self.srtt * 7 + r) / 8;
    }

    /// Hand the samples not taken yet to `f` (ns), oldest first, and forget them.
    fn drain(&mut self, mut f: impl FnMut(u64)) {
        for k in 0..self.ring_len {
            f(u64::from(self.ring[(self.ring_head + k) % RTT_RING]));
        }
        self.ring_len = 0;
        self.ring_head = 0;
    }
}

impl Connection {
    /// Smoothed round-trip time.
    pub fn rtt(&self) -> Duration {
        self.rtt.srtt
    }

    /// Hand the RTT samples taken since the last call to `f` (ns), oldest first. The last
    /// 64 samples are kept; older ones not yet taken are overwritten (telemetry
    /// samples the distribution; nothing is allocated).
    pub fn drain_rtt_samples(&mut self, f: impl FnMut(u64)) {
        self.rtt.drain(f);
    }

    /// Smallest round-trip time seen.
    pub fn min_rtt(&self) -> Duration {
        self.rtt.min_rtt
    }

    /// Round-trip time variation (RFC 6298 style).
    pub fn rttvar(&self) -> Duration {
        self.rtt.rttvar
    }

    /// RACK's current reorder window: how much later than a newer acknowledged packet a
    /// packet may be acknowledged before it is declared lost.
    pub fn reorder_window(&self) -> Duration {
        self.reo_wnd()
    }

    /// Bytes sent and not yet acknowledged or declared lost.
    pub fn bytes_in_flight(&self) -> u64 {
        self.in_flight
    }

    /// How long the peer may keep retransmitting one packet before it gives up: its probe
    /// timeouts, floored at `min_rto`, doubling up to `max_rto`, `max_probes + 1` of them
    /// (estimated with our RTT; both sides run the same configuration), at most the idle
    /// timeout. A side that received the peer's CLOSE drains for this long, so that an ACK
    /// of the CLOSE that was lost can still be answered when the peer retransmits the CLOSE;
    /// leaving earlier made the closer end with PeerUnresponsive instead of LocalClose.
    pub(super) fn peer_retry_horizon(&self) -> Duration {
        let mut t = self.pto_base().max(self.cfg.min_rto);
        let mut sum = Duration::ZERO;
        for _ in 0..=self.cfg.max_probes {
            sum += t;
            if sum >= self.cfg.idle_timeout {
                return self.cfg.idle_timeout;
            }
            t = (t * 2).min(self.cfg.max_rto.max(self.cfg.min_rto));
        }
        sum.max(self.pto_base() * 3)
    }

    fn pto_base(&self) -> Duration {
        let v = self.rtt.srtt
            + (4 * self.rtt.rttvar).max(Duration::from_micros(1))
            + self.cfg.max_ack_delay;
        v.max(self.cfg.min_rto)
    }

    pub(super) fn pto_deadline(&self) -> Option<Instant> {
        let armed = self.in_flight_pkts > 0 || self.blocked_on_credit();
        if !armed || !matches!(self.state, State::Established | State::Closing) {
            return None;
        }
        Some(self.last_eliciting_sent + self.pto_after)
    }

    /// Recompute [`pto_after`](Self::pto_after) (after an RTT sample or a probe count change).
    pub(super) fn update_pto(&mut self) {
        let shift = self.pto_count.min(16);
        self.pto_after =
            (self.pto_base() * (1u32 << shift)).min(self.cfg.max_rto.max(self.cfg.min_rto));
    }

    fn blocked_on_credit(&self) -> bool {
        self.in_flight_pkts == 0 && self.has_new_data() && !self.credit_allows()
    }

    pub(super) fn on_pto(&mut self, now: Instant) {
        self.stats.ptos += 1;
        self.pto_count += 1;
        self.update_pto();
        if self.pto_count > self.cfg.max_probes {
            self.finish(now, CloseReason::PeerUnresponsive);
            return;
        }
        if self.pto_count >= 2 {
            // RTO: everything in flight is lost.
            let mut lost = 0u64;
            let mut n = 0u64;
            for i in 0..self.sent.len() {
                if self.sent[i].state == PktState::InFlight {
                    lost += self.sent[i].bytes as u64;
                    n += 1;
                    self.mark_lost(i);
                }
            }
            let _ = (lost, n);
            self.cc.on_timeout(now);
        }
        // Tail-loss probe (first) / probe after the RTO: an ack-eliciting packet that makes
        // the peer report what it has.
        self.probe_pending = true;
        // Back off from now, even if nothing can be sent.
        self.last_eliciting_sent = now;
    }

    fn mark_lost(&mut self, i: usize) {
        let s = &mut self.sent[i];
        debug_assert_eq!(s.state, PktState::InFlight);
        s.state = PktState::Lost;
        self.in_flight -= s.bytes as u64;
        self.in_flight_pkts -= 1;
        if s.retx > 0 {
            self.retx_in_flight -= 1;
        }
        self.stats.lost += 1;
        self.retx.push_back(self.sent_base + i as u64);
    }

    fn reo_wnd(&self) -> Duration {
        ((self.rtt.min_rtt / 4) * self.reo_mult).min(self.rtt.srtt)
    }

    pub(super) fn detect_loss(&mut self, now: Instant) {
        self.loss_time = None;
        let Some(rack_time) = self.rack_time else {
            return;
        };
        let thresh = self.rack_rtt + self.reo_wnd();
        let end = if self.retx_in_flight > 0 {
            self.sent.len()
        } else {
            (self.rack_pn.saturating_sub(self.sent_base) as usize).min(self.sent.len())
        };
        let (mut bytes, mut pkts, mut newest) = (0u64, 0u64, Instant::ZERO);
        for i in 0..end {
            let s = self.sent[i];
            if s.state != PktState::InFlight || s.time > rack_time {
                continue;
            }
            if s.time == rack_time && self.sent_base + i as u64 >= self.rack_pn {
                continue;
            }
            let deadline = s.time + thresh;
            if now >= deadline {
                bytes += s.bytes as u64;
                pkts += 1;
                newest = newest.max(s.time);
                self.mark_lost(i);
            } else {
                self.loss_time = Some(self.loss_time.map_or(deadline, |t| t.min(deadline)));
            }
        }
        if pkts > 0 {
            self.cc.on_loss(
                now,
                &LossEvent {
                    bytes_lost: bytes,
                    packets_lost: pkts,
                    newest_lost_sent: newest,
                    in_flight: self.in_flight,
                },
            );
        }
    }

    pub(super) fn on_nack(&mut self, now: Instant, first: u64, count: u32) {
        let guard = self.rtt.min_rtt / 2;
        let end = first.saturating_add(count.min(SACK_BITS as u32) as u64);
        for pn in first.max(self.sent_base)..end.min(self.next_pn) {
            let i = (pn - self.sent_base) as usize;
            if self.sent[i].state == PktState::InFlight && now >= self.sent[i].time + guard {
                self.mark_lost(i);
            }
        }
    }

    pub(super) fn on_ack(&mut self, now: Instant, a: &AckRepr, stall: Duration) {
        if a.cumulative > self.next_pn {
            return; // acks what we never sent: ignore
        }
        self.peer_credit = self.peer_credit.max(a.credit);
        let (mut bytes, mut pkts) = (0u64, 0u64);
        let mut newest: Option<(Instant, u64)> = None;
        let cum_end = a.cumulative.min(self.next_pn);
        let mut pn = self.sent_base;
        while pn < cum_end {
            self.ack_pn(now, pn, &mut bytes, &mut pkts, &mut newest);
            pn += 1;
        }
        let mut bits = a.sack_bits;
        while bits != 0 {
            let i = bits.trailing_zeros() as u64;
            bits &= bits - 1;
            let Some(pn) = a.sack_base.checked_add(i) else {
                break;
            };
            if pn >= self.sent_base && pn < self.next_pn {
                self.ack_pn(now, pn, &mut bytes, &mut pkts, &mut newest);
            }
        }
        while self
            .sent
            .front()
            .is_some_and(|s| s.state == PktState::Acked)
        {
            self.sent.pop_front();
            self.sent_base += 1;
        }
        let mut ce_delta = a.ecn_ce.wrapping_sub(self.peer_ecn_ce) as u64;
        if ce_delta > 0 && ce_delta < (1 << 31) {
            self.peer_ecn_ce = a.ecn_ce;
            self.cc.on_ecn(now, ce_delta, self.in_flight);
        } else {
            ce_delta = 0; // unchanged, or an old (reordered) count
        }
        if pkts == 0 {
            return;
        }
        if self.pto_count != 0 {
            self.pto_count = 0;
            self.update_pto();
        }
        let (mut hold, peer_stalled) = super::recv::decode_hold(a.hold_ns);
        let mut rtt = None;
        let mut fabric = None;
        if a.echo_timestamp != 0 && a.echo_timestamp <= now.as_nanos() {
            let r = now.saturating_duration_since(Instant::from_nanos(a.echo_timestamp));
            rtt = Some(r);
            // (A stalled receiver's hold bounds its loop's gap from above: at most the RTT.)
            hold = hold.min(r);
            let f = r.saturating_sub(hold);
            fabric = Some(f);
            // The retransmission timer must outlast the peer's stalls: a hold that includes
            // one is not taken out of the sample.
            let sample = if !peer_stalled && f >= self.rtt.min_rtt.min(r) && self.rtt.has_rtt {
                f
            } else {
                r
            };
            self.rtt_sample(sample.max(Duration::from_nanos(1)));
        }
        if let Some((t, pn)) = newest {
            if self.rack_time.is_none_or(|rt| t >= rt) {
                self.rack_time = Some(t);
                self.rack_pn = pn;
                self.rack_rtt = now.saturating_duration_since(t);
            }
        }
        self.cc.on_ack(
            now,
            &AckEvent {
                bytes_acked: bytes,
                packets_acked: pkts,
                rtt,
                hold,
                fabric_rtt: fabric,
                srtt: self.rtt.srtt,
                min_rtt: self.rtt.min_rtt,
                in_flight: self.in_flight,
                ecn_ce_delta: ce_delta,
                newest_sent: newest.map_or(now, |n| n.0),
                stalled: peer_stalled || !stall.is_zero(),
            },
        );
        self.detect_loss(now);
        if self.state == State::Closing && self.close_sent && self.sent.is_empty() {
            self.finish(now, CloseReason::LocalClose(self.close_code));
        }
    }

    fn rtt_sample(&mut self, r: Duration) {
        self.rtt.sample(r);
        self.update_pto();
    }

    #[inline]
    fn ack_pn(
        &mut self,
        now: Instant,
        pn: u64,
        bytes: &mut u64,
        pkts: &mut u64,
        newest: &mut Option<(Instant, u64)>,
    ) {
        let i = (pn - self.sent_base) as usize;
        let s = &mut self.sent[i];
        match s.state {
            PktState::Acked => return,
            PktState::InFlight => {
                self.in_flight -= s.bytes as u64;
                self.in_flight_pkts -= 1;
                if s.retx > 0 {
                    self.retx_in_flight -= 1;
                    // Acked sooner after the retransmission than a round trip allows: the
                    // original arrived, the loss was spurious; widen the reorder window.
                    if now.saturating_duration_since(s.time) < self.rtt.min_rtt / 2 {
                        self.stats.spurious += 1;
                        self.reo_mult = (self.reo_mult + 1).min(16);
                    }
                }
            }
            PktState::Lost => {
                self.stats.spurious += 1;
                self.reo_mult = (self.reo_mult + 1).min(16);
            }
        }
        s.state = PktState::Acked;
        let s = *s;
        *bytes += s.bytes as u64;
        *pkts += 1;
        if newest.is_none_or(|(t, _)| s.time >= t) {
            *newest = Some((s.time, pn));
        }
        match s.what {
            What::Data { msg_id, len, .. } => self.ack_segment(msg_id, len as u64),
            What::Batch { first, count, .. } => {
                for msg_id in first..first + u64::from(count) {
                    let len = msg_id
                        .checked_sub(self.send_base)
                        .and_then(|i| self.send_msgs.get(i as usize))
                        .map_or(0, |m| m.data.len());
                    self.ack_segment(msg_id, len);
                }
            }
            _ => {}
        }
    }
}
