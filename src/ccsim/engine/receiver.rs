//! The receiver: delivery, message completion, ACKs after a hold time, and the receiver's
//! credit allocator.

use std::cmp::Reverse;

use super::{Ev, Packet, Sim, ANNOUNCE};

impl Sim {
    pub(super) fn recv_arrive(&mut self, p: u32) {
        let pkt = self.pkts[p as usize];
        self.free_pkts.push(p);
        let now = self.now;
        if pkt.chunk == ANNOUNCE {
            let back = now + self.cfg.link.base_rtt.as_nanos() as u64 / 2;
            self.credit_arrive(pkt, false, false, back);
            return;
        }
        let bin = self.bin(now);
        let msg = &mut self.msgs[pkt.msg as usize];
        if msg.recv_bits.is_empty() {
            msg.recv_bits = vec![0; (msg.chunks as usize).div_ceil(64)];
        }
        let (w, b) = ((pkt.chunk / 64) as usize, pkt.chunk % 64);
        let fresh = msg.recv_bits[w] & (1 << b) == 0;
        if fresh {
            msg.recv_bits[w] |= 1 << b;
            msg.received_chunks += 1;
            self.stats.goodput_bytes += pkt.payload as u64;
            if let Some(tr) = self.stats.flow_trace.get_mut(pkt.flow as usize) {
                if tr.len() <= bin {
                    tr.resize(bin + 1, 0);
                }
                tr[bin] += pkt.payload;
            }
        }
        let complete = fresh && msg.received_chunks == msg.chunks;
        if complete {
            msg.done = Some(now);
            self.completed.push(pkt.msg);
        }
        let hold = self.rng.between(
            self.cfg.hold_min.as_nanos() as u64,
            self.cfg.hold_max.as_nanos() as u64,
        );
        // The receiver processes a flow's packets in order: its ACKs never overtake.
        let leave = (now + hold).max(self.flows[pkt.flow as usize].last_ack);
        self.flows[pkt.flow as usize].last_ack = leave;
        let hold = leave - now;
        let back = leave + self.cfg.link.base_rtt.as_nanos() as u64 / 2;
        self.credit_arrive(pkt, fresh, complete, back);
        self.schedule(
            back,
            Ev::Ack {
                flow: pkt.flow,
                pn: pkt.pn,
                sent: pkt.sent,
                hold,
                ce: pkt.ce,
            },
        );
    }

    /// Credits at the receiver: open a slot on first sight of a message, account fresh
    /// bytes, close on completion, send the grants (arriving at `back`).
    fn credit_arrive(&mut self, pkt: Packet, fresh: bool, complete: bool, back: u64) {
        let (Some(alloc), Some(setup)) = (self.credit.as_mut(), self.cfg.credit) else {
            return;
        };
        let msg = &mut self.msgs[pkt.msg as usize];
        if !msg.announced && msg.done.is_none_or(|_| complete) {
            msg.announced = true;
            let pre = if msg.size <= setup.unscheduled {
                msg.size
            } else {
                0
            };
            // A full table leaves the message waiting; it is retried on its next packet. (A
            // message announced while the table is full has no next packet here: the
            // transport re-announces; the experiments size the table so it never fills.)
            msg.slot = alloc.open(pkt.msg as u64, msg.size, pre).ok();
            msg.announced = msg.slot.is_some();
        }
        if let Some(slot) = msg.slot {
            if fresh {
                alloc.on_data(slot, pkt.payload as u64);
            }
            if complete {
                alloc.close(slot);
                msg.slot = None;
            }
        }
        while let Some(g) = alloc.poll_grant() {
            self.seq += 1;
            self.events.push(Reverse((
                back,
                self.seq,
                Ev::Grant {
                    msg: g.tag as u32,
                    offset: g.offset,
                },
            )));
        }
    }
}
