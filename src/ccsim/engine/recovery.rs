//! ACK processing as the transport does it: RTT estimation (RFC 6298 on fabric samples), the
//! controller's events, packet-threshold loss detection and the retransmission timeout.

use std::time::Duration;

use crate::proto::cc::{AckEvent, LossEvent};
use crate::proto::Instant;

use super::{Ev, PktState, Sim};

const DUP_THRESH: u64 = 3;

impl Sim {
    pub(super) fn rto(&self, f: usize) -> u64 {
        let flow = &self.flows[f];
        let base = match flow.srtt {
            Some(s) => (s + 4 * flow.rttvar).max(self.cfg.min_rto),
            None => self.cfg.min_rto.max(3 * self.cfg.link.base_rtt),
        };
        (base.as_nanos() as u64) << flow.backoff.min(10)
    }

    pub(super) fn on_ack(&mut self, f: usize, pn: u64, sent: u64, hold: u64, ce: bool) {
        let now = self.now;
        let t = Instant::from_nanos(now);
        let noise = self.rng.between(0, self.cfg.noise.as_nanos() as u64);
        let flow = &mut self.flows[f];
        let Some(front) = flow.sent.front().map(|s| s.pn) else {
            return;
        };
        if pn < front {
            return; // already declared lost and dropped from the record
        }
        let idx = (pn - front) as usize;
        let Some(entry) = flow.sent.get_mut(idx) else {
            return;
        };
        if entry.state != PktState::Outstanding {
            return; // late ACK of a packet declared lost
        }
        entry.state = PktState::Acked;
        let bytes = entry.bytes as u64;
        flow.in_flight -= bytes;
        flow.backoff = 0;
        // RTT estimation as the transport does it (RFC 6298 on fabric samples).
        let rtt = Duration::from_nanos(now - sent + noise);
        let hold = Duration::from_nanos(hold);
        let fabric = rtt.saturating_sub(hold);
        flow.min_rtt = flow.min_rtt.min(fabric);
        match flow.srtt {
            None => {
                flow.srtt = Some(fabric);
                flow.rttvar = fabric / 2;
            }
            Some(s) => {
                let d = s.abs_diff(fabric);
                flow.rttvar = (flow.rttvar * 3 + d) / 4;
                flow.srtt = Some((s * 7 + fabric) / 8);
            }
        }
        if ce {
            let in_flight = flow.in_flight;
            flow.cc.on_ecn(t, 1, in_flight);
        }
        let ev = AckEvent {
            bytes_acked: bytes,
            packets_acked: 1,
            rtt: Some(rtt),
            hold,
            fabric_rtt: Some(fabric),
            srtt: flow.srtt.unwrap_or(rtt),
            min_rtt: flow.min_rtt,
            in_flight: flow.in_flight,
            ecn_ce_delta: 0,
            newest_sent: Instant::from_nanos(sent),
            stalled: false,
        };
        flow.cc.on_ack(t, &ev);
        // Packet-threshold loss detection.
        let mut lost_bytes = 0;
        let mut lost_pkts = 0;
        let mut newest_lost = 0;
        while let Some(s) = flow.sent.front().copied() {
            match s.state {
                PktState::Acked => {
                    flow.sent.pop_front();
                }
                PktState::Outstanding if s.pn + DUP_THRESH <= pn => {
                    flow.sent.pop_front();
                    flow.in_flight -= s.bytes as u64;
                    flow.retx.push_back((s.msg, s.chunk));
                    lost_bytes += s.bytes as u64;
                    lost_pkts += 1;
                    newest_lost = s.time;
                }
                PktState::Outstanding => break,
            }
        }
        if lost_pkts > 0 {
            let in_flight = flow.in_flight;
            flow.cc.on_loss(
                t,
                &LossEvent {
                    bytes_lost: lost_bytes,
                    packets_lost: lost_pkts,
                    newest_lost_sent: Instant::from_nanos(newest_lost),
                    in_flight,
                },
            );
        }
        // Re-arm the retransmission timer from this ACK.
        if self.flows[f].in_flight > 0 {
            let at = now + self.rto(f);
            self.flows[f].rto_at = Some(at);
            self.schedule(at, Ev::Rto(f as u32));
        } else {
            self.flows[f].rto_at = None;
        }
        self.try_send(f);
    }

    pub(super) fn on_rto(&mut self, f: usize) {
        let now = self.now;
        if self.flows[f].rto_at != Some(now) {
            return;
        }
        self.flows[f].rto_at = None;
        let flow = &mut self.flows[f];
        if flow.in_flight == 0 {
            return;
        }
        self.stats.timeouts += 1;
        while let Some(s) = flow.sent.pop_front() {
            if s.state == PktState::Outstanding {
                flow.retx.push_back((s.msg, s.chunk));
            }
        }
        flow.in_flight = 0;
        flow.backoff += 1;
        flow.cc.on_timeout(Instant::from_nanos(now));
        self.try_send(f);
    }
}
