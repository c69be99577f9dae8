//! The send path: which chunk goes next, the window and pacing checks, the NIC, and the
//! header-only announcements of messages that wait for credits.

use crate::proto::cc::SendEvent;
use crate::proto::Instant;

use super::{Ev, Packet, PktState, Sent, Sim, ANNOUNCE};

impl Sim {
    fn wake(&mut self, f: usize, at: u64) {
        let flow = &mut self.flows[f];
        if flow.wake_at.is_some_and(|w| w <= at) {
            return;
        }
        flow.wake_at = Some(at);
        self.schedule(at, Ev::Wake(f as u32));
    }

    /// The next (message, chunk) flow `f` may send, without taking it.
    fn next_chunk(&self, f: usize) -> Option<(u32, u32, bool)> {
        let flow = &self.flows[f];
        if let Some(&(m, c)) = flow.retx.front() {
            return Some((m, c, true));
        }
        let payload = self.cfg.link.payload();
        let mut best: Option<(u64, u32)> = None;
        for &m in &flow.msgs {
            let msg = &self.msgs[m as usize];
            if msg.next_chunk >= msg.chunks {
                continue;
            }
            let end = ((msg.next_chunk as u64 + 1) * payload).min(msg.size);
            if end > msg.granted {
                continue;
            }
            let left = msg.size - msg.next_chunk as u64 * payload;
            if best.is_none_or(|(l, _)| left < l) {
                best = Some((left, m));
            }
        }
        best.map(|(_, m)| (m, self.msgs[m as usize].next_chunk, false))
    }

    fn chunk_payload(&self, m: u32, c: u32) -> u64 {
        let payload = self.cfg.link.payload();
        let msg = &self.msgs[m as usize];
        (msg.size - c as u64 * payload).min(payload).max(1)
    }

    pub(super) fn try_send(&mut self, f: usize) {
        loop {
            let now = self.now;
            if self.flows[f].nic_free > now {
                let t = self.flows[f].nic_free;
                self.wake(f, t);
                return;
            }
            let Some((m, c, retx)) = self.next_chunk(f) else {
                return;
            };
            let payload = self.chunk_payload(m, c);
            let bytes = payload + self.cfg.link.header;
            let flow = &self.flows[f];
            if flow.in_flight + bytes > flow.cc.window() {
                return; // an ACK reopens the window
            }
            let ed = flow
                .cc
                .earliest_departure(Instant::from_nanos(now), flow.last_departure, bytes)
                .as_nanos();
            if ed > now {
                self.wake(f, ed);
                return;
            }
            // Send it.
            if retx {
                self.flows[f].retx.pop_front();
                self.stats.retransmits += 1;
            } else {
                let msg = &mut self.msgs[m as usize];
                msg.next_chunk += 1;
                if msg.next_chunk == msg.chunks {
                    // Fully sent: only retransmissions (from `retx`) can need it again.
                    self.flows[f].msgs.retain(|&x| x != m);
                }
            }
            self.stats.packets += 1;
            let ser = self.cfg.link.ser_ns(bytes);
            let flow = &mut self.flows[f];
            let pn = flow.next_pn;
            flow.next_pn += 1;
            flow.in_flight += bytes;
            flow.sent.push_back(Sent {
                pn,
                msg: m,
                chunk: c,
                bytes: bytes as u32,
                time: now,
                state: PktState::Outstanding,
            });
            let t = Instant::from_nanos(now);
            flow.last_departure = t;
            flow.nic_free = now + ser;
            let app_limited = false;
            let in_flight = flow.in_flight;
            flow.cc.on_send(
                t,
                &SendEvent {
                    pn,
                    bytes,
                    in_flight,
                    retransmit: retx,
                    app_limited,
                },
            );
            if flow.rto_at.is_none() {
                let at = now + self.rto(f);
                self.flows[f].rto_at = Some(at);
                self.schedule(at, Ev::Rto(f as u32));
            }
            let pkt = Packet {
                flow: f as u32,
                pn,
                msg: m,
                chunk: c,
                bytes: bytes as u32,
                payload: payload as u32,
                sent: now,
                enq: 0,
                ce: false,
            };
            let id = self.alloc_pkt(pkt);
            let arrive = now + ser + self.cfg.link.base_rtt.as_nanos() as u64 / 4;
            self.schedule(arrive, Ev::SwitchArrive(id));
        }
    }

    /// Send a header-only announcement of message `m` (its length, asking for grants). It
    /// crosses the bottleneck like any packet but is not congestion controlled or
    /// retransmitted.
    pub(super) fn announce(&mut self, f: usize, m: u32) {
        let bytes = self.cfg.link.header;
        let ser = self.cfg.link.ser_ns(bytes);
        let start = self.flows[f].nic_free.max(self.now);
        self.flows[f].nic_free = start + ser;
        let pkt = Packet {
            flow: f as u32,
            pn: u64::MAX,
            msg: m,
            chunk: ANNOUNCE,
            bytes: bytes as u32,
            payload: 0,
            sent: start,
            enq: 0,
            ce: false,
        };
        let id = self.alloc_pkt(pkt);
        let arrive = start + ser + self.cfg.link.base_rtt.as_nanos() as u64 / 4;
        self.schedule(arrive, Ev::SwitchArrive(id));
    }

    fn alloc_pkt(&mut self, pkt: Packet) -> u32 {
        match self.free_pkts.pop() {
            Some(id) => {
                self.pkts[id as usize] = pkt;
                id
            }
            None => {
                self.pkts.push(pkt);
                (self.pkts.len() - 1) as u32
            }
        }
    }
}
