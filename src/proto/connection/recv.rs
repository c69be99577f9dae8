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
    /// A reassembly buffer that grows with what arrives: its length is the end of the
    /// furthest part placed (the bytes before it that have not arrived yet are zeros, the
    /// message's *gap*, counted against the credit), its capacity at most the message's
    /// length. It never holds more than the peer sent plus the gaps the credit allows.
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
        /// Bytes this message holds against the reassembly budgets (the connection's and the
        /// endpoint's): a buffer's capacity, or the bytes of a segments message's parts. The
        /// message's length once it is complete.
        charged: u64,
    },
    /// Complete, waiting for the messages before it (ordered mode), with the slot units it
    /// holds.
    Ready(RecvMsg, u32),
    Delivered,
    Done,
}

impl RxSlot {
    /// Put `v` in `slot`. The slots a message passes through on its way out hold nothing
    /// (`Empty`, `Delivered`, `Done`): their old value is dropped without a call to the
    /// enum's out-of-line drop glue (three such calls per message cost ~70 instructions
    /// per message in callgrind).
    #[inline(always)]
    pub(super) fn set(slot: &mut RxSlot, v: RxSlot) {
        let old = std::mem::replace(slot, v);
        if matches!(old, RxSlot::Empty | RxSlot::Delivered | RxSlot::Done) {
            // Nothing to drop in these variants.
            std::mem::forget(old);
        } else {
            drop(old);
        }
    }
}

pub(super) const PN_WORDS: usize = (PN_WINDOW / 64) as usize;

/// Parts a segments message's list has room for at first: messages of up to this many
/// packets cost one allocation; a longer one's list grows as its parts arrive (never sized
/// by the length a peer claims).
const SEGS_INITIAL: u64 = 32;

/// One pool slot in the units `Connection::rx_slot_units` counts. A BATCH packet's `count`
/// messages share its slot and are charged `SLOT_UNITS.div_ceil(count)` each, so the shares
/// of one packet add up to at least a whole slot (count is at most 65535).
pub(super) const SLOT_UNITS: u32 = 1 << 16;

/// Bytes of reassembly buffers a connection may hold allocated ahead of the bytes that
/// arrived (capacity past the furthest part). Within it, a message's buffer is allocated at
/// its whole length on its first part (one allocation, no copy as it grows); past it, a
/// buffer grows geometrically with what arrives. So a peer's claims cost at most this much
/// per connection beyond what it sent, while a message of up to 1 MiB (or several that fit
/// together) costs one allocation.
const REASM_AHEAD: u64 = 1 << 20;

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
    /// Whether `[start, end)` (not empty) overlaps nothing recorded.
    pub(super) fn is_free(&self, start: u64, end: u64) -> bool {
        if start < self.contig {
            return false;
        }
        let i = self.rest.partition_point(|&(s, _)| s < start);
        !((i > 0 && self.rest[i - 1].1 > start) || self.rest.get(i).is_some_and(|&(s, _)| s < end))
    }

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
        let (m, units) = self.ready.pop_front()?;
        if let Some(slot) =
            m.id.checked_sub(self.rx_base)
                .and_then(|i| self.rx_msgs.get_mut(i as usize))
        {
            RxSlot::set(slot, RxSlot::Done);
        }
        while matches!(self.rx_msgs.front(), Some(RxSlot::Done)) {
            if let Some(done) = self.rx_msgs.pop_front() {
                // `Done` holds nothing: no drop glue to run.
                std::mem::forget(done);
            }
            self.rx_base += 1;
        }
        match &m.data {
            MsgData::Packet(_) => {
                self.rx_released += m.len;
                self.rx_slot_units -= u64::from(units);
            }
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
    ///
    /// What a message holds grows with the bytes that arrived, never with the length its
    /// packets claim: a reassembly buffer grows (fallibly, charged to the budgets as it grows)
    /// to the end of the furthest part placed, and the zeros it holds before parts that came
    /// ahead of others (its gap) count against the credit, so a peer cannot make us hold a
    /// hole larger than the credit it was granted. An allocation that fails is a refusal,
    /// counted (`rx_alloc_failed`), never an abort.
    pub(super) fn on_data(&mut self, msg_id: u64, msg_len: u64, offset: u64, buf: PktBuf) -> bool {
        if msg_id < self.rx_base {
            return true; // message already delivered: a stale copy under a new number
        }
        let idx = msg_id - self.rx_base;
        if idx >= MSG_WINDOW || msg_len > self.cfg.max_message {
            return false;
        }
        let plen = buf.len() as u64;
        let Some(end) = offset.checked_add(plen).filter(|&end| end <= msg_len) else {
            return false; // checked by the parser too; never trust it here
        };
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
                    // A whole message in one packet: its buffer is held until the
                    // application takes it, a pool slot per message whatever its size, so
                    // past `max_rx_slots` of them the message is copied out and the slot
                    // given back (refusing it instead would leave a sender of empty
                    // messages, which need no credit, probing until it gave us up for dead).
                    let (data, units) = if self.slot_room(SLOT_UNITS) {
                        self.rx_slot_units += u64::from(SLOT_UNITS);
                        (MsgData::Packet(buf.freeze()), SLOT_UNITS)
                    } else {
                        let Some(data) = self.copy_out(msg_id, &buf) else {
                            return false;
                        };
                        self.rx_released += plen;
                        (data, 0)
                    };
                    self.rx_distinct += plen;
                    let msg = RecvMsg {
                        id: msg_id,
                        len: msg_len,
                        data,
                    };
                    self.complete(idx, msg, units);
                    return true;
                }
                let dest = self.reassembly_dest(msg_len, max_payload, &seg_cap);
                self.rx_msgs[idx] = RxSlot::Partial {
                    len: msg_len,
                    got: 0,
                    dest,
                    seen: Ranges::default(),
                    charged: 0,
                };
            }
            RxSlot::Partial { len, .. } => {
                if *len != msg_len {
                    return false;
                }
            }
            _ => return true, // complete already: duplicate content under a new number
        }
        if plen == 0 {
            return true; // nothing to place (and no room held for nothing)
        }
        // Each byte arrives once (duplicates are filtered by packet number): a part
        // overlapping what is here is a malformed peer's, refused, whatever the destination.
        let RxSlot::Partial { seen, .. } = &self.rx_msgs[idx] else {
            return false;
        };
        if !seen.is_free(offset, end) {
            return false;
        }
        let placed = match self.rx_msgs[idx] {
            RxSlot::Partial {
                dest: Dest::Vec(_), ..
            } => self.place_vec(idx, msg_id, offset, buf),
            RxSlot::Partial {
                dest: Dest::Target(_),
                ..
            } => {
                let RxSlot::Partial {
                    dest: Dest::Target(t),
                    ..
                } = &mut self.rx_msgs[idx]
                else {
                    return false;
                };
                t.write_buf(offset, buf);
                self.rx_released += plen;
                true
            }
            _ => self.place_part(idx, msg_id, offset, buf, &seg_cap),
        };
        if !placed {
            return false;
        }
        let RxSlot::Partial { len, got, seen, .. } = &mut self.rx_msgs[idx] else {
            return false;
        };
        seen.insert(offset, end);
        *got += plen;
        self.rx_distinct += plen;
        if *got >= *len {
            return self.complete_partial(idx, msg_id);
        }
        true
    }

    /// Charge `add` more bytes of reassembly memory for message `msg_id` to the
    /// connection's budget and the endpoint's. False: over one (nothing charged). In ordered
    /// mode the message at the head of the line may exceed the per-connection budget (by at
    /// most one message): the completed messages behind it hold the budget until it is
    /// delivered, so refusing it would deadlock.
    #[inline]
    fn charge(&mut self, msg_id: u64, add: u64) -> bool {
        let hol = self.cfg.ordered && msg_id == self.next_deliver;
        let limit = if hol {
            self.cfg.max_rx_buffer.saturating_add(self.cfg.max_message)
        } else {
            self.cfg.max_rx_buffer
        };
        if self.rx_reasm + add > limit {
            return false;
        }
        let used = self.budget.used.fetch_add(add, Ordering::Relaxed);
        if used + add > self.budget.limit {
            self.budget.used.fetch_sub(add, Ordering::Relaxed);
            return false;
        }
        self.rx_reasm += add;
        true
    }

    /// A single-packet message's bytes copied out of its packet buffer (the connection holds
    /// `max_rx_slots` buffers already), charged to the budgets as a reassembly buffer is
    /// (`poll_recv` gives them back). `None`: over a budget, or the allocation failed.
    fn copy_out(&mut self, msg_id: u64, bytes: &[u8]) -> Option<MsgData> {
        let len = bytes.len() as u64;
        if !self.charge(msg_id, len) {
            return None;
        }
        let mut v = Vec::new();
        if v.try_reserve_exact(bytes.len()).is_err() {
            self.uncharge(len);
            self.stats.rx_alloc_failed += 1;
            return None;
        }
        v.extend_from_slice(bytes);
        self.stats.rx_slots_copied += 1;
        Some(MsgData::Buffer(Bytes::from(v)))
    }

    /// Give back `n` bytes charged by [`charge`](Self::charge).
    #[inline]
    fn uncharge(&mut self, n: u64) {
        self.rx_reasm -= n;
        self.budget.used.fetch_sub(n, Ordering::Relaxed);
    }

    /// Copy part `buf` (not empty, overlapping nothing received) at `offset` into the
    /// reassembly buffer of the message in slot `idx`, growing it as needed. False: refused
    /// (a gap beyond the credit, over a budget, or the allocation failed).
    fn place_vec(&mut self, idx: usize, msg_id: u64, offset: u64, buf: PktBuf) -> bool {
        let plen = buf.len() as u64;
        let end = offset + plen;
        let RxSlot::Partial {
            len,
            dest: Dest::Vec(v),
            charged,
            ..
        } = &self.rx_msgs[idx]
        else {
            return false;
        };
        let (len, have, charged) = (*len, v.len() as u64, *charged);
        // A part below the furthest one fills a hole (it cannot straddle the furthest end:
        // the byte before that end arrived, and overlaps are refused before this).
        if offset < have && end > have {
            return false;
        }
        let filled = if offset < have { plen } else { 0 };
        let new_gap = offset.saturating_sub(have);
        if self.rx_distinct + plen + self.rx_gap + new_gap - filled
            > self.rx_released + self.cfg.rx_window
        {
            return false; // a hole larger than the credit the peer was given
        }
        let mut cap = charged;
        let ahead = charged - have; // allocated past the furthest part, before this one
        if end > charged {
            // The whole message at once while the connection's allowance for memory ahead
            // of the bytes received lasts; else grow geometrically (amortised copies),
            // never past the message's length.
            let room = REASM_AHEAD.saturating_sub(self.rx_ahead - ahead);
            cap = if len - end <= room {
                len
            } else {
                charged.saturating_mul(2).max(end).min(len)
            };
            if !self.charge(msg_id, cap - charged) {
                return false;
            }
        }
        let RxSlot::Partial {
            dest: Dest::Vec(v),
            charged,
            ..
        } = &mut self.rx_msgs[idx]
        else {
            return false;
        };
        if cap > *charged {
            if v.try_reserve_exact((cap - have) as usize).is_err() {
                let add = cap - *charged;
                self.uncharge(add);
                self.stats.rx_alloc_failed += 1;
                return false;
            }
            *charged = cap;
        }
        if offset >= have {
            v.resize(offset as usize, 0);
            v.extend_from_slice(&buf);
        } else {
            v[offset as usize..end as usize].copy_from_slice(&buf);
        }
        drop(buf);
        self.rx_gap = self.rx_gap + new_gap - filled;
        self.rx_ahead = self.rx_ahead - ahead + (cap - have.max(end));
        self.rx_released += plen;
        true
    }

    /// Keep part `buf` (not empty, overlapping nothing received) at `offset` among the
    /// packet buffers of the segments message in slot `idx`, charged to the budgets by its
    /// bytes; or, past the bound on parts for the bytes held (`seg_cap`) or on the parts
    /// shifted by out-of-order insertions, copy the message so far into a reassembly buffer
    /// instead (as [`place_vec`](Self::place_vec) would have grown it). False: refused.
    fn place_part(
        &mut self,
        idx: usize,
        msg_id: u64,
        offset: u64,
        buf: PktBuf,
        seg_cap: &impl Fn(u64) -> usize,
    ) -> bool {
        let plen = buf.len() as u64;
        let end = offset + plen;
        let RxSlot::Partial {
            len,
            got,
            dest: Dest::Segs { parts, moved },
            charged,
            ..
        } = &mut self.rx_msgs[idx]
        else {
            return false;
        };
        let (len, got, charged0) = (*len, *got, *charged);
        let part_end = |(o, p): &(u64, PktBytes)| o + p.len() as u64;
        // Mostly in order: append; otherwise the sorted position.
        let i = if parts.last().is_none_or(|l| part_end(l) <= offset) {
            parts.len()
        } else {
            parts.partition_point(|(o, _)| *o < offset)
        };
        // Shifting parts for a packet that fills an earlier hole costs a move of those
        // after it: cheap for the retransmissions of a few losses, but a peer sending in
        // reverse order would make it quadratic. Past a bound, copy.
        let shift = parts.len() - i;
        let copy = parts.len() >= seg_cap(got + plen) || *moved + shift > 64 * seg_cap(len);
        if !copy {
            if !self.charge(msg_id, plen) {
                return false;
            }
            let RxSlot::Partial {
                dest: Dest::Segs { parts, moved },
                charged,
                ..
            } = &mut self.rx_msgs[idx]
            else {
                return false;
            };
            *moved += shift;
            *charged += plen;
            parts.insert(i, (offset, buf.freeze()));
            return true;
        }
        // Packets too small for the slots they hold, or too much reordering: copy the
        // message so far into a buffer as long as its furthest part (the holes before it
        // count against the credit, as on the buffer path), then give the parts back.
        let furthest = parts.last().map_or(end, |l| part_end(l).max(end));
        let gap = furthest - got - plen;
        // The parts' bytes leave the credit (copied), the holes enter it.
        if self.rx_distinct + self.rx_gap + gap > self.rx_released + got + plen + self.cfg.rx_window
        {
            return false;
        }
        if furthest > charged0 && !self.charge(msg_id, furthest - charged0) {
            return false;
        }
        let mut v = Vec::new();
        if v.try_reserve_exact(furthest as usize).is_err() {
            if furthest > charged0 {
                self.uncharge(furthest - charged0);
            }
            self.stats.rx_alloc_failed += 1;
            return false;
        }
        v.resize(furthest as usize, 0);
        let RxSlot::Partial { dest, charged, .. } = &mut self.rx_msgs[idx] else {
            return false;
        };
        if let Dest::Segs { parts, .. } = dest {
            for (o, p) in parts.drain(..) {
                v[o as usize..o as usize + p.len()].copy_from_slice(&p);
            }
        }
        v[offset as usize..end as usize].copy_from_slice(&buf);
        drop(buf);
        *dest = Dest::Vec(v);
        *charged = furthest.max(charged0);
        let _ = len;
        self.rx_gap += gap;
        // The copied bytes no longer hold receive buffers (as on the buffer path).
        self.rx_released += got + plen;
        self.stats.rx_segment_copied += 1;
        true
    }

    /// Where the first part of a multi-packet message of `msg_len` bytes goes: the first
    /// posted target that fits it, else a reassembly buffer that grows with what arrives
    /// (or, with `rx_segments`, a list for its packet buffers). Nothing is reserved or
    /// charged here: the budgets are charged by what each part makes the message hold.
    #[inline]
    fn reassembly_dest(
        &mut self,
        msg_len: u64,
        max_payload: u64,
        seg_cap: &impl Fn(u64) -> usize,
    ) -> Dest {
        match self.targets.front() {
            Some(t) if t.capacity() >= msg_len => match self.targets.pop_front() {
                Some(t) => Dest::Target(t),
                None => Dest::Vec(Vec::new()),
            },
            _ if self.cfg.rx_segments && msg_len <= self.cfg.rx_window => {
                // One allocation for the packets of a message up to SEGS_INITIAL parts; a
                // longer one grows its list as its parts arrive (never sized by the claim).
                let n = msg_len
                    .div_ceil(max_payload)
                    .min(seg_cap(msg_len) as u64)
                    .min(SEGS_INITIAL);
                Dest::Segs {
                    parts: Vec::with_capacity(n as usize),
                    moved: 0,
                }
            }
            _ => Dest::Vec(Vec::new()),
        }
    }

    /// The message in slot `idx` has all its bytes: hand it to [`complete`](Self::complete)
    /// in the form its destination gives.
    #[inline]
    fn complete_partial(&mut self, idx: usize, msg_id: u64) -> bool {
        let RxSlot::Partial {
            len, dest, charged, ..
        } = std::mem::replace(&mut self.rx_msgs[idx], RxSlot::Empty)
        else {
            return false;
        };
        // Complete: a buffer grew to the message's length, a list holds all its bytes (and
        // `poll_recv` gives back the message's length).
        debug_assert!(matches!(dest, Dest::Target(_)) || charged == len);
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
            0,
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
        // This packet's slot, shared by its messages (count >= 1: checked by the parser).
        let share = SLOT_UNITS.div_ceil(u32::from(count.max(1)));
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
            // Each message keeps the packet's buffer until it is taken, the messages of the
            // packet sharing its slot (`share` each): past `max_rx_slots`, copied out as in
            // `on_data`. (Where the copy cannot be made, over a budget, the message keeps the
            // buffer: the packet is taken as a whole.)
            let copied = if self.slot_room(share) {
                None
            } else {
                self.copy_out(id, &data[r.clone()])
            };
            let (msg_data, units) = match copied {
                Some(c) => {
                    self.rx_released += len;
                    (c, 0)
                }
                None => {
                    self.rx_slot_units += u64::from(share);
                    (MsgData::Packet(data.slice(r)), share)
                }
            };
            let msg = RecvMsg {
                id,
                len,
                data: msg_data,
            };
            self.complete(idx, msg, units);
        }
        self.stats.rx_batches += 1;
        true
    }

    /// Whether `units` more of pool slots fit under `max_rx_slots` (see `rx_slot_units`).
    #[inline]
    fn slot_room(&self, units: u32) -> bool {
        self.rx_slot_units + u64::from(units)
            <= self.cfg.max_rx_slots as u64 * u64::from(SLOT_UNITS)
    }

    /// `msg` (holding `units` of pool slots) is whole: to the application, in order when the
    /// connection is ordered.
    fn complete(&mut self, idx: usize, msg: RecvMsg, units: u32) {
        if !self.cfg.ordered {
            RxSlot::set(&mut self.rx_msgs[idx], RxSlot::Delivered);
            self.ready.push_back((msg, units));
            return;
        }
        RxSlot::set(&mut self.rx_msgs[idx], RxSlot::Ready(msg, units));
        while let Some(i) = self
            .next_deliver
            .checked_sub(self.rx_base)
            .map(|i| i as usize)
            .filter(|&i| matches!(self.rx_msgs.get(i), Some(RxSlot::Ready(..))))
        {
            if let RxSlot::Ready(m, u) = std::mem::replace(&mut self.rx_msgs[i], RxSlot::Delivered)
            {
                self.ready.push_back((m, u));
            }
            self.next_deliver += 1;
        }
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
