//! The bottleneck: a FIFO with tail drop at `buffer` bytes and ECN-CE marking at `ecn_k`,
//! drained at the line rate.

use super::{Ev, Sim};

impl Sim {
    pub(super) fn switch_arrive(&mut self, p: u32) {
        let bytes = self.pkts[p as usize].bytes as u64;
        if self.queue_bytes + bytes > self.cfg.link.buffer {
            self.stats.drops += 1;
            self.free_pkts.push(p);
            return;
        }
        let pkt = &mut self.pkts[p as usize];
        pkt.ce = self.queue_bytes >= self.cfg.link.ecn_k;
        pkt.enq = self.now;
        self.queue.push_back(p);
        self.queue_bytes += bytes;
        self.trace_queue();
        if !self.link_busy {
            self.start_tx();
        }
    }

    fn start_tx(&mut self) {
        let Some(&p) = self.queue.front() else {
            self.link_busy = false;
            return;
        };
        self.link_busy = true;
        let pkt = self.pkts[p as usize];
        let wait = self.now - pkt.enq;
        self.stats
            .queue_delay
            .push(wait.min(u32::MAX as u64) as u32);
        let ser = self.cfg.link.ser_ns(pkt.bytes as u64);
        self.schedule(self.now + ser, Ev::LinkFree);
    }

    pub(super) fn link_free(&mut self) {
        let Some(p) = self.queue.pop_front() else {
            self.link_busy = false;
            return;
        };
        let bytes = self.pkts[p as usize].bytes as u64;
        self.queue_bytes -= bytes;
        self.stats.wire_bytes += bytes;
        self.trace_queue();
        let at = self.now + self.cfg.link.base_rtt.as_nanos() as u64 / 4;
        self.schedule(at, Ev::RecvArrive(p));
        self.start_tx();
    }
}
