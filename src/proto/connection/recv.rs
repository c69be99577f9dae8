//! Receiving: received packet numbers and the ACK state, message reassembly (byte ranges,
//! buffers, posted targets, packet-buffer segments), BATCH unpacking and delivery.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;

use super::super::{Instant, MsgData, RecvMsg, RecvSegments, RecvTarget, MSG_WINDOW, PN_WINDOW};
use super::{Connection, State, TargetsFull};
use crate::mem::{PktBuf, PktBytes};
use crate::wire::transport::{batch_entries, AckRepr, Kind, SACK_BITS};

/// Bit 31 of an ACK's `hold_ns`: the hold time includes a stall of the receiver's loop
/// (docs/WIRE.md, ACK); the other 31 bits are the hold time in ns (at most ~2.1 s).
pub(crate) const HOLD_STALLED: u32 = 1 << 31;

/// `hold_ns` for an ACK: the hold time in ns, clamped to 31 bits, and [`HOLD_STALLED`] if
/// it includes a stall.
#[inline]
pub(crate) fn encode_hold(hold: Duration, stalled: bool) -> u32 {
    let ns = hold.as_nanos().min((HOLD_STALLED - 1) as u128) as u32;
    if stalled {
        ns | HOLD_STALLED
    } else {
        ns
    }
}

/// The hold time and stall flag of an ACK's `hold_ns`.
#[inline]
pub(crate) fn decode_hold(hold_ns: u32) -> (Duration, bool) {
    (
        Duration::from_nanos((hold_ns & !HOLD_STALLED) as u64),
        hold_ns & HOLD_STALLED != 0,
    )
}

pub(super) enum Dest {
    Vec(Vec<u8>),
    Target(Box<dyn RecvTarget>),
    /// The packet buffers themselves (`ConnectionConfig::rx_segments`): `(offset, part)`,
    /// sorted by offset, non-overlapping, none empty. Their bytes stay counted against the
    /// credit until the message is handed out, as a single-packet message's do. `moved`:
    /// parts shifted by out-of-order insertions so far (bounded, see `on_data`).
    Segs {
        parts: Vec<(u64, PktBytes)>,
        moved: usize,
    },
}

pub(super) enum RxSlot {
    Empty,
    Partial {
        len: u64,
        got: u64,
        dest: Dest,
        /// The byte ranges taken so far (an overlapping part is refused).
        seen: Ranges,
    },
    Ready(RecvMsg),
    Delivered,
    Done,
}

pub(super) const PN_WORDS: usize = (PN_WINDOW / 64) as usize;

/// The byte ranges of a message received so far: `[0, contig)` and, past it, the disjoint
/// ranges of parts that came out of order (sorted, adjacent ones merged). Each byte of a
/// message arrives once (duplicates are filtered by packet number), so a part overlapping
/// what is here is a malformed peer's: refused, or a hole could be delivered as zeros. No
/// allocation while parts come in order.
#[derive(Debug, Default)]
pub(super) struct Ranges {
    contig: u64,
    rest: VecDeque<(u64, u64)>,
}

impl Ranges {
    /// Record `[start, end)` (not empty); false, recording nothing, if it overlaps.
    pub(super) fn insert(&mut self, start: u64, end: u64) -> bool {
        debug_assert!(start < end);
        if start < self.contig {
            return false;
        }
        let i = self.rest.partition_point(|&(s, _)| s < start);
        if (i > 0 && self.rest[i - 1].1 > start) || self.rest.get(i).is_some_and(|&(s, _)| s < end)
        {
            return false;
        }
        if start == self.contig {
            self.contig = end;
            // (i == 0 here: nothing in `rest` starts below the contiguous end.)
            while let Some(&(s, e)) = self.rest.front() {
                if s != self.contig {
                    break;
                }
                self.contig = e;
                self.rest.pop_front();
            }
            return true;
        }
        let joins_left = i > 0 && self.rest[i - 1].1 == start;
        let joins_right = self.rest.get(i).is_some_and(|&(s, _)| s == end);
        match (joins_left, joins_right) {
            (true, true) => {
                self.rest[i - 1].1 = self.rest[i].1;
                self.rest.remove(i);
            }
            (true, false) => self.rest[i - 1].1 = end,
            (false, true) => self.rest[i].0 = start,
            (false, false) => self.rest.insert(i, (start, end)),
        }
        true
    }
}

/// Received packet numbers: all below `cum`, plus a bitmap of the window above it.
pub(super) struct RxPns {
    pub(super) cum: u64,
    pub(super) largest: Option<u64>,
    pub(super) bits: [u64; PN_WORDS],
}

impl RxPns {
    #[inline]
    fn bit(pn: u64) -> (usize, u64) {
        (((pn % PN_WINDOW) / 64) as usize, 1u64 << (pn % 64))
    }
    #[inline]
    pub(super) fn contains(&self, pn: u64) -> bool {
        if pn < self.cum {
            return true;
        }
        if pn >= self.cum + PN_WINDOW {
            return false;
        }
        let (w, b) = Self::bit(pn);
        self.bits[w] & b != 0
    }
    /// Record `pn` (must be new and in the window).
    #[inline]
    pub(super) fn insert(&mut self, pn: u64) {
        let (w, b) = Self::bit(pn);
        self.bits[w] |= b;
        self.largest = Some(self.largest.map_or(pn, |l| l.max(pn)));
        loop {
            let (w, b) = Self::bit(self.cum);
            if self.bits[w] & b == 0 {
                break;
            }
            self.bits[w] &= !b;
            self.cum += 1;
        }
    }
    #[inline]
    pub(super) fn sack(&self) -> (u64, u64) {
        let Some(largest) = self.largest.filter(|&l| l >= self.cum) else {
            return (self.cum, 0);
        };
        let base = self.cum.max(largest.saturating_sub(SACK_BITS - 1));
        let mut bits = 0u64;
        for i in 0..=(largest - base) {
            let (w, b) = Self::bit(base + i);
            if self.bits[w] & b != 0 {
                bits |= 1 << i;
            }
        }
        (base, bits)
    }
}

impl Connection {
    /// Bytes of reassembly buffers this connection holds.
    pub fn rx_buffered(&self) -> u64 {
        self.rx_reasm
    }

    /// Post a destination for the next multi-packet message (in order of first arrival)
    /// whose length fits it.
    pub fn post_target(&mut self, t: Box<dyn RecvTarget>) -> Result<(), TargetsFull> {
        if self.targets.len() >= self.cfg.max_targets {
            return Err(TargetsFull(t));
        }
        self.targets.push_back(t);
        Ok(())
    }

    /// Take back the first posted target (in posting order) for which `which` is true,
    /// among those no message has started landing in (a target in use stays until its
    /// message completes and comes back in [`MsgData::Target`]). The others keep their order.
    pub fn unpost_target(
        &mut self,
        mut which: impl FnMut(&dyn RecvTarget) -> bool,
    ) -> Option<Box<dyn RecvTarget>> {
        let i = self.targets.iter().position(|t| which(&**t))?;
        self.targets.remove(i)
    }

    /// True when [`poll_recv`](Self::poll_recv) has a message to give.
    pub fn has_recv(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Next whole message.
    #[must_use]
    pub fn poll_recv(&mut self) -> Option<RecvMsg> {
        let m = self.ready.pop_front()?;
        if let Some(slot) =
            m.id.checked_sub(self.rx_base)
                .and_then(|i| self.rx_msgs.get_mut(i as usize))
        {
            *slot = RxSlot::Done;
        }
        while matches!(self.rx_msgs.front(), Some(RxSlot::Done)) {
            self.rx_msgs.pop_front();
            self.rx_base += 1;
        }
        match &m.data {
            MsgData::Packet(_) => self.rx_released += m.len,
            MsgData::Buffer(_) => {
                self.rx_reasm -= m.len;
                self.budget.used.fetch_sub(m.len, Ordering::Relaxed);
            }
            MsgData::Segments(_) => {
                // Its buffers leave with the application: the credit reopens as for a
                // single-packet message, the reassembly reservation as for a buffer.
                self.rx_released += m.len;
                self.rx_reasm -= m.len;
                self.budget.used.fetch_sub(m.len, Ordering::Relaxed);
            }
            MsgData::Target(_) => {}
        }
        self.stats.rx_messages += 1;
        self.stats.rx_message_bytes += m.len;
        // Window update when a quarter of the window opened since the last advertisement.
        if self.rx_released + self.cfg.rx_window >= self.rx_advertised + self.cfg.rx_window / 4
            && self.state == State::Established
        {
            self.ack_now = true;
        }
        Some(m)
    }

    pub(super) fn ack_due(&self) -> bool {
        self.ack_now
    }

    /// Require an ACK, due at `t` (the moment the protocol stopped allowing it to wait).
    pub(super) fn ack_due_at(&mut self, t: Instant) {
        self.ack_now = true;
        self.ack_due = Some(self.ack_due.map_or(t, |d| d.min(t)));
    }

    /// The echoed timestamp and hold time of an ACK sent at `now` (docs/WIRE.md, ACK).
    ///
    /// The time since the echoed packet arrived splits in two. The *deliberate* delay runs
    /// from its arrival until the ACK became due: the delayed-ACK wait, which ends at the
    /// ACK deadline, at a packet that requires an immediate ACK, or early when something
    /// else (a window update) made us acknowledge before the deadline. The *hold* time runs
    /// from then until now: the host's own delay (a busy or descheduled loop, a late timer).
    /// The hold time is echoed as such, for the sender's host-delay signal; the deliberate
    /// delay is added to the echoed timestamp, so the sender's RTT sample (now - echoed
    /// timestamp) and fabric delay (RTT - hold) are those of an ACK sent without delay, and
    /// a delayed ACK reads as neither host nor fabric congestion.
    fn echo_split(&self, now: Instant) -> (u64, Duration) {
        // The ACK stopped being deliberate at the earliest of: when it became due, the
        // deadline of the delayed-ACK wait, now. With none of the first two (an ACK for a
        // packet already acknowledged, e.g. a window update) the whole wait was deliberate.
        let mut due = now;
        if let Some(d) = self.ack_due {
            due = due.min(d);
        }
        if let Some(d) = self.ack_deadline {
            due = due.min(d);
        }
        let deliberate = due.saturating_duration_since(self.echo_rx);
        let hold = now.saturating_duration_since(self.echo_rx.max(due));
        let echo_ts = if self.echo_ts == 0 {
            0 // nothing to echo yet: stays "no timestamp"
        } else {
            self.echo_ts
                .saturating_add(deliberate.as_nanos().min(u64::MAX as u128) as u64)
        };
        (echo_ts, hold)
    }

    pub(super) fn emit_ack(&mut self, now: Instant, buf: &mut PktBuf) {
        let (sack_base, sack_bits) = self.rx.sack();
        let (echo_ts, hold) = self.echo_split(now);
        // The echoed packet may have waited for our stalled loop before we read it: that
        // wait is host delay too (flagged, so the sender reads it as scheduling).
        let stalled = !self.echo_stall.is_zero();
        let hold = encode_hold(hold + self.echo_stall, stalled);
        let credit = self.rx_released + self.cfg.rx_window;
        self.rx_advertised = credit;
        let a = AckRepr {
            cumulative: self.rx.cum,
            sack_base,
            sack_bits,
            echo_timestamp: echo_ts,
            hold_ns: hold,
            ecn_ce: self.ecn_ce,
            credit,
        };
        self.ack_now = false;
        self.ack_count = 0;
        self.ack_deadline = None;
        self.ack_due = None;
        self.stats.tx_acks += 1;
        self.emit_untracked(now, buf, Kind::Ack(a), 0);
    }

    /// Place a DATA payload. False: refused (not recorded; the peer will retransmit).
    pub(super) fn on_data(&mut self, msg_id: u64, msg_len: u64, offset: u64, buf: PktBuf) -> bool {
        if msg_id < self.rx_base {
            return true; // message already delivered: a stale copy under a new number
        }
        let idx = msg_id - self.rx_base;
        if idx >= MSG_WINDOW || msg_len > self.cfg.max_message {
            return false;
        }
        let plen = buf.len() as u64;
        if offset.checked_add(plen).is_none_or(|end| end > msg_len) {
            return false; // checked by the parser too; never trust it here
        }
        if self.rx_distinct + plen > self.rx_released + self.cfg.rx_window {
            return false;
        }
        let idx = idx as usize;
        // Most parts a segments message may hold for the bytes it holds: twice what
        // full-size packets need, plus slack for the short packets a credit limit cuts.
        // Beyond it the message is copied. (Measured against the bytes received, not the
        // length the peer declared: a declared 8 MiB sent as 1-byte packets would otherwise
        // keep thousands of slots for a few KB of credit.)
        let max_payload = self.max_payload().max(1) as u64;
        let seg_cap = |len: u64| (2 * len.div_ceil(max_payload) + 2) as usize;
        while self.rx_msgs.len() <= idx {
            self.rx_msgs.push_back(RxSlot::Empty);
        }
        match &mut self.rx_msgs[idx] {
            RxSlot::Empty => {
                if offset == 0 && plen == msg_len {
                    self.rx_distinct += plen;
                    let msg = RecvMsg {
                        id: msg_id,
                        len: msg_len,
                        data: MsgData::Packet(buf.freeze()),
                    };
                    self.complete(idx, msg);
                    return true;
                }
                let Some(dest) = self.reassembly_dest(msg_id, msg_len, max_payload, &seg_cap)
                else {
                    return false;
                };
                self.rx_msgs[idx] = RxSlot::Partial {
                    len: msg_len,
                    got: 0,
                    dest,
                    seen: Ranges::default(),
                };
            }
            RxSlot::Partial { len, .. } => {
                if *len != msg_len {
                    return false;
                }
            }
            _ => return true, // complete already: duplicate content under a new number
        }
        let RxSlot::Partial {
            len,
            got,
            dest,
            seen,
        } = &mut self.rx_msgs[idx]
        else {
            return false;
        };
        // Each byte arrives once (duplicates are filtered by packet number): a part
        // overlapping what is here is a malformed peer's, refused, whatever the destination.
        if plen > 0 && !seen.insert(offset, offset + plen) {
            return false;
        }
        match dest {
            Dest::Vec(v) => {
                v[offset as usize..(offset + plen) as usize].copy_from_slice(&buf);
                drop(buf);
                self.rx_released += plen;
            }
            Dest::Target(t) => {
                t.write_buf(offset, buf);
                self.rx_released += plen;
            }
            Dest::Segs { parts, moved } => {
                if plen == 0 {
                    return true; // nothing to keep (and no slot held for nothing)
                }
                if let Some(v) = keep_part(parts, moved, offset, buf, *got, *len, &seg_cap) {
                    // The copied bytes no longer hold receive buffers (as on the Vec path).
                    self.rx_released += *got + plen;
                    self.stats.rx_segment_copied += 1;
                    *dest = Dest::Vec(v);
                }
            }
        }
        *got += plen;
        self.rx_distinct += plen;
        if *got >= *len {
            return self.complete_partial(idx, msg_id);
        }
        true
    }

    /// Where the first part of a multi-packet message of `msg_len` bytes goes: the first
    /// posted target that fits it, else a reassembly buffer (or, with `rx_segments`, a list
    /// for its packet buffers) reserved against the connection's and the endpoint's budgets.
    /// `None`: refused (over a budget).
    #[inline]
    fn reassembly_dest(
        &mut self,
        msg_id: u64,
        msg_len: u64,
        max_payload: u64,
        seg_cap: &impl Fn(u64) -> usize,
    ) -> Option<Dest> {
        let dest = match self.targets.front() {
            Some(t) if t.capacity() >= msg_len => Dest::Target(self.targets.pop_front()?),
            _ => {
                // In ordered mode the message at the head of the line may exceed the
                // per-connection budget (by at most one message): the completed
                // messages behind it hold the budget until it is delivered, so
                // refusing it would deadlock.
                let hol = self.cfg.ordered && msg_id == self.next_deliver;
                let limit = if hol {
                    self.cfg.max_rx_buffer.saturating_add(self.cfg.max_message)
                } else {
                    self.cfg.max_rx_buffer
                };
                if self.rx_reasm + msg_len > limit {
                    return None;
                }
                let used = self.budget.used.fetch_add(msg_len, Ordering::Relaxed);
                if used + msg_len > self.budget.limit {
                    self.budget.used.fetch_sub(msg_len, Ordering::Relaxed);
                    return None;
                }
                self.rx_reasm += msg_len;
                if self.cfg.rx_segments && msg_len <= self.cfg.rx_window {
                    // One allocation: room for the packets a full-size sender uses.
                    let n = msg_len.div_ceil(max_payload).min(seg_cap(msg_len) as u64);
                    Dest::Segs {
                        parts: Vec::with_capacity(n as usize),
                        moved: 0,
                    }
                } else {
                    Dest::Vec(vec![0u8; msg_len as usize])
                }
            }
        };
        Some(dest)
    }

    /// The message in slot `idx` has all its bytes: hand it to [`complete`](Self::complete)
    /// in the form its destination gives.
    #[inline]
    fn complete_partial(&mut self, idx: usize, msg_id: u64) -> bool {
        let RxSlot::Partial { len, dest, .. } =
            std::mem::replace(&mut self.rx_msgs[idx], RxSlot::Empty)
        else {
            return false;
        };
        let data = match dest {
            Dest::Vec(v) => MsgData::Buffer(Bytes::from(v)),
            Dest::Target(t) => MsgData::Target(t),
            Dest::Segs { parts, .. } => {
                self.stats.rx_segment_msgs += 1;
                MsgData::Segments(RecvSegments::from_checked(parts, len as usize))
            }
        };
        self.complete(
            idx,
            RecvMsg {
                id: msg_id,
                len,
                data,
            },
        );
        true
    }

    /// Place the messages of a BATCH packet (`buf`: its length table and messages), each as
    /// if it had come alone in a DATA packet: a view of the packet buffer, delivered whole,
    /// counted against the credit by its bytes. Messages already received are skipped. False:
    /// refused as a whole (not recorded; the peer will retransmit).
    pub(super) fn on_batch(&mut self, first: u64, count: u16, buf: PktBuf) -> bool {
        if !self.cfg.batch {
            return false; // not advertised: drop it as an implementation without BATCH would
        }
        let data = buf.freeze();
        let Ok(entries) = batch_entries(&data, count) else {
            return false;
        };
        let Some(last) = first.checked_add(u64::from(count) - 1) else {
            return false;
        };
        if last >= self.rx_base + MSG_WINDOW {
            return false;
        }
        // Credit, by the bytes of the messages not received yet (as separate DATA packets).
        let mut new = 0u64;
        for (id, r) in (first..).zip(entries.clone()) {
            let len = r.len() as u64;
            if len > self.cfg.max_message {
                return false;
            }
            let fresh = id.checked_sub(self.rx_base).is_some_and(|i| {
                self.rx_msgs
                    .get(i as usize)
                    .is_none_or(|s| matches!(s, RxSlot::Empty))
            });
            if fresh {
                new += len;
            }
        }
        if self.rx_distinct + new > self.rx_released + self.cfg.rx_window {
            return false;
        }
        for (id, r) in (first..).zip(entries) {
            let Some(idx) = id.checked_sub(self.rx_base).map(|i| i as usize) else {
                continue; // delivered already
            };
            while self.rx_msgs.len() <= idx {
                self.rx_msgs.push_back(RxSlot::Empty);
            }
            if !matches!(self.rx_msgs[idx], RxSlot::Empty) {
                continue; // received already
            }
            let len = r.len() as u64;
            self.rx_distinct += len;
            let msg = RecvMsg {
                id,
                len,
                data: MsgData::Packet(data.slice(r)),
            };
            self.complete(idx, msg);
        }
        self.stats.rx_batches += 1;
        true
    }

    fn complete(&mut self, idx: usize, msg: RecvMsg) {
        if !self.cfg.ordered {
            self.rx_msgs[idx] = RxSlot::Delivered;
            self.ready.push_back(msg);
            return;
        }
        self.rx_msgs[idx] = RxSlot::Ready(msg);
        while let Some(i) = self
            .next_deliver
            .checked_sub(self.rx_base)
            .map(|i| i as usize)
            .filter(|&i| matches!(self.rx_msgs.get(i), Some(RxSlot::Ready(_))))
        {
            if let RxSlot::Ready(m) = std::mem::replace(&mut self.rx_msgs[i], RxSlot::Delivered) {
                self.ready.push_back(m);
            }
            self.next_deliver += 1;
        }
    }
}

/// Keep part `buf` (not empty) at `offset` among the packet buffers `parts` of a segments
/// message of `len` bytes, `got` of them received before it. Past the bound on parts for the
/// bytes held (`seg_cap`) or on the parts shifted by out-of-order insertions, the message is
/// copied instead: the buffer holding all of it so far comes back, and `parts` is emptied.
#[inline]
fn keep_part(
    parts: &mut Vec<(u64, PktBytes)>,
    moved: &mut usize,
    offset: u64,
    buf: PktBuf,
    got: u64,
    len: u64,
    seg_cap: &impl Fn(u64) -> usize,
) -> Option<Vec<u8>> {
    let plen = buf.len() as u64;
    let end = offset + plen;
    let part_end = |(o, p): &(u64, PktBytes)| o + p.len() as u64;
    // Mostly in order: append; otherwise the sorted position.
    let i = if parts.last().is_none_or(|l| part_end(l) <= offset) {
        parts.len()
    } else {
        parts.partition_point(|(o, _)| *o < offset)
    };
    // Shifting parts for a packet that fills an earlier hole costs a move of
    // those after it: cheap for the retransmissions of a few losses, but a peer
    // sending in reverse order would make it quadratic. Past a bound, copy.
    *moved += parts.len() - i;
    if parts.len() >= seg_cap(got + plen) || *moved > 64 * seg_cap(len) {
        // Packets too small for the slots they hold, or too much reordering:
        // copy the message instead.
        let mut v = vec![0u8; len as usize];
        for (o, p) in parts.drain(..) {
            v[o as usize..o as usize + p.len()].copy_from_slice(&p);
        }
        v[offset as usize..end as usize].copy_from_slice(&buf);
        drop(buf);
        Some(v)
    } else {
        parts.insert(i, (offset, buf.freeze()));
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rx_pns_cumulative_and_sack() {
        let mut r = RxPns {
            cum: 0,
            largest: None,
            bits: [0; PN_WORDS],
        };
        assert_eq!(r.sack(), (0, 0));
        r.insert(0);
        r.insert(1);
        assert_eq!(r.cum, 2);
        r.insert(3);
        r.insert(5);
        assert_eq!(r.cum, 2);
        assert!(r.contains(3) && !r.contains(4) && r.contains(1));
        assert_eq!(r.sack(), (2, 0b1010));
        r.insert(2);
        assert_eq!(r.cum, 4);
        r.insert(4);
        assert_eq!(r.cum, 6);
        // Far ahead: the bitmap is anchored at largest - 63.
        r.insert(200);
        let (base, bits) = r.sack();
        assert_eq!(base, 137);
        assert_eq!(bits, 1 << 63);
        // Wrap the ring.
        for pn in 6..PN_WINDOW * 2 {
            if !r.contains(pn) {
                r.insert(pn);
            }
        }
        assert_eq!(r.cum, PN_WINDOW * 2);
    }

    #[test]
    fn ranges_refuse_exactly_the_overlaps() {
        // Against a byte map: random parts of a 2000-byte message, in any order and
        // overlapping at will; a part is taken iff none of its bytes was taken before.
        let mut rng = crate::rng::SplitMix64::new(1);
        let mut next = |m: u64| rng.below(m);
        for _ in 0..200 {
            let mut r = Ranges::default();
            let mut map = [false; 2000];
            for _ in 0..300 {
                let start = next(2000);
                let end = (start + 1 + next(120)).min(2000);
                let free = map[start as usize..end as usize].iter().all(|&b| !b);
                assert_eq!(r.insert(start, end), free, "[{start}, {end})");
                if free {
                    map[start as usize..end as usize].fill(true);
                }
                // The ranges say what the map says.
                let contig = map.iter().take_while(|&&b| b).count() as u64;
                assert_eq!(r.contig, contig);
                let mut prev_end = r.contig;
                for &(s, e) in &r.rest {
                    assert!(
                        s > prev_end && s < e,
                        "sorted, disjoint, merged: {:?}",
                        r.rest
                    );
                    assert!(map[s as usize..e as usize].iter().all(|&b| b));
                    assert!(!map[s as usize - 1]);
                    prev_end = e;
                }
                let held: u64 = r.rest.iter().map(|&(s, e)| e - s).sum();
                assert_eq!(r.contig + held, map.iter().filter(|&&b| b).count() as u64);
            }
        }
    }
}
