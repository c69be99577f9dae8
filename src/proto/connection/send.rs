//! Sending: the send queue, the peer's credit, BATCH packing and the transmission of
//! DATA, BATCH and control packets (first transmissions and retransmissions).

use std::time::Duration;

use bytes::Bytes;

use super::super::cc::SendEvent;
use super::super::{Event, Instant, PN_WINDOW};
use super::recovery::{PktState, Sent, What};
use super::{Connection, SendError, State, EVENT_CAP};
use crate::mem::PktBuf;
use crate::rng::SplitMix64;
use crate::wire::transport::{
    Kind, Repr, BATCH_ENTRY_LEN, BATCH_HEADER_LEN, DATA_HEADER_LEN, FLAG_ACK_NOW,
};

/// A queued message's bytes.
#[derive(Debug)]
pub(super) enum Body {
    /// Contiguous bytes; every transmission copies its part into a packet buffer.
    Bytes(Bytes),
    /// Pool slots written in place by the application ([`Connection::send_segments`]):
    /// segment `k` holds bytes `[k * seg_len, k * seg_len + segs[k].len())` of the message
    /// as its data, with headroom in front. A packet never spans two segments; the first
    /// transmission of a whole segment sends the slot itself (the transport header is written
    /// into its headroom and the port gets a shared reference, see `mem`); retransmissions
    /// and partial segments copy.
    Segments {
        segs: Vec<PktBuf>,
        seg_len: u64,
        len: u64,
    },
}

impl Body {
    #[inline]
    pub(super) fn len(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::Segments { len, .. } => *len,
        }
    }

    /// Bytes from `off` to the end of the segment holding it (a packet must not cross it).
    #[inline]
    pub(super) fn contiguous(&self, off: u64) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64 - off,
            Body::Segments { seg_len, len, .. } => (seg_len - off % seg_len).min(len - off),
        }
    }
}

#[derive(Debug)]
pub(super) struct TxMsg {
    pub(super) data: Body,
    pub(super) sent_off: u64,
    pub(super) acked: u64,
    pub(super) started: bool,
    pub(super) done: bool,
}

impl Connection {
    /// Credit the peer granted us that we have not used yet (payload bytes we may still send).
    pub fn send_credit(&self) -> u64 {
        self.peer_credit.saturating_sub(self.tx_new_bytes)
    }

    /// Messages queued and not yet fully acknowledged.
    pub fn send_queue_len(&self) -> usize {
        self.send_msgs.len()
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) may have a datagram to write: false
    /// only when it certainly has none (an established connection with nothing queued, lost,
    /// pending or due). The endpoint asks a connection to transmit only when this holds or
    /// something happened to it from outside (a send, a timer), so one that just received
    /// a packet and owes nothing is not asked in vain.
    pub(crate) fn may_transmit(&self) -> bool {
        !matches!(self.state, State::Established | State::Closing)
            || self.reset_pending.is_some()
            || self.ack_now
            || !self.retx.is_empty()
            || self.confirm_pending
            || self.probe_pending
            || (self.state == State::Closing && !self.close_sent)
            || self.has_new_data()
    }

    pub(super) fn max_payload(&self) -> usize {
        (self.cfg.max_datagram.min(self.peer_max_datagram) as usize).saturating_sub(DATA_HEADER_LEN)
    }

    /// Queue a message for sending. Returns its id; `Event::Acked` with that id follows
    /// when the peer has all of it. Zero-length messages are allowed.
    pub fn send(&mut self, data: Bytes) -> Result<u64, SendError> {
        match self.state {
            State::Handshake | State::Established => {}
            _ => return Err(SendError::Closed),
        }
        if data.len() as u64 > self.cfg.max_message {
            return Err(SendError::TooLarge);
        }
        if self.send_msgs.len() >= self.cfg.max_send_msgs || self.events.len() >= EVENT_CAP - 1 {
            return Err(SendError::WouldBlock);
        }
        Ok(self.enqueue(Body::Bytes(data)))
    }

    fn enqueue(&mut self, data: Body) -> u64 {
        let id = self.send_base + self.send_msgs.len() as u64;
        self.send_msgs.push_back(TxMsg {
            data,
            sent_off: 0,
            acked: 0,
            started: false,
            done: false,
        });
        id
    }

    /// Queue a message the application wrote in place into packet buffers (zero-copy send):
    /// `segs[k]` holds bytes `[k * L, k * L + segs[k].len())` of the message as its data,
    /// where `L` is the first segment's length; every segment but the last holds exactly `L`
    /// bytes. Give each segment at least the headroom of the buffers the caller passes to
    /// [`poll_transmit`](Self::poll_transmit) (a fresh buffer of the port's pool has it) and
    /// at most [`max_payload_len`](Self::max_payload_len) bytes: then the first transmission of each
    /// segment sends its slot itself, with the transport header written into its headroom,
    /// and the connection keeps a shared reference to retransmit from until the peer
    /// acknowledges it (see `mem`'s shared buffers). Otherwise the segments are copied as
    /// [`send`](Self::send) copies.
    ///
    /// On success the segments are moved out: `segs` is left empty, with the capacity of a
    /// list from an earlier completed message when there is one (so reusing one `Vec` for
    /// every message allocates nothing once warm). On error `segs` is untouched.
    pub fn send_segments(&mut self, segs: &mut Vec<PktBuf>) -> Result<u64, SendError> {
        match self.state {
            State::Handshake | State::Established => {}
            _ => return Err(SendError::Closed),
        }
        let seg_len = segs.first().map_or(1, |b| b.len() as u64);
        let mut len = 0u64;
        for (k, b) in segs.iter().enumerate() {
            let l = b.len() as u64;
            if l > seg_len || (l < seg_len && k + 1 < segs.len()) || seg_len == 0 {
                return Err(SendError::BadSegments);
            }
            len += l;
        }
        if len > self.cfg.max_message {
            return Err(SendError::TooLarge);
        }
        if self.send_msgs.len() >= self.cfg.max_send_msgs || self.events.len() >= EVENT_CAP - 1 {
            return Err(SendError::WouldBlock);
        }
        let spare = self.spare_segs.pop().unwrap_or_default();
        let segs = std::mem::replace(segs, spare);
        Ok(self.enqueue(Body::Segments { segs, seg_len, len }))
    }

    /// Largest DATA payload of one packet now (the smaller of ours and the peer's datagram
    /// size, less the transport header): a segment of [`send_segments`](Self::send_segments)
    /// of at most this many bytes is sent without a copy.
    pub fn max_payload_len(&self) -> usize {
        self.max_payload()
    }

    /// First transmissions that sent an application-written slot itself (no copy).
    pub fn tx_zero_copy(&self) -> u64 {
        self.tx_zero_copy
    }

    pub(super) fn has_new_data(&self) -> bool {
        match self
            .tx_cursor
            .checked_sub(self.send_base)
            .and_then(|i| self.send_msgs.get(i as usize))
        {
            Some(m) => !m.started || m.sent_off < m.data.len(),
            None => false,
        }
    }

    pub(super) fn credit_allows(&self) -> bool {
        self.credit_segment().is_some()
    }

    /// Length of the next new-data segment the peer's credit allows now: a full segment, or
    /// (only with nothing in flight, so no credit update is on its way) whatever credit is
    /// left. `None`: blocked.
    fn credit_segment(&self) -> Option<u64> {
        let m = self
            .tx_cursor
            .checked_sub(self.send_base)
            .and_then(|i| self.send_msgs.get(i as usize))?;
        let rem = m.data.contiguous(m.sent_off);
        let seg = rem.min(self.max_payload() as u64);
        let avail = self.peer_credit.saturating_sub(self.tx_new_bytes);
        if seg <= avail {
            Some(seg)
        } else if avail > 0 && self.in_flight_pkts == 0 {
            Some(avail)
        } else {
            None
        }
    }

    fn window_allows(&self, bytes: u64) -> bool {
        self.in_flight_pkts == 0 || self.in_flight + bytes <= self.cc.window()
    }

    /// Write the next datagram into `buf` (empty, with at least
    /// [`MAX_HEADER_LEN`](crate::wire::transport::MAX_HEADER_LEN) of headroom and room for
    /// a payload). Returns false when nothing is due now.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut PktBuf) -> bool {
        debug_assert!(buf.is_empty());
        if let Some(code) = self.reset_pending.take() {
            self.emit_untracked(now, buf, Kind::Reset { code }, 0);
            return true;
        }
        if self.state == State::Closed {
            return false;
        }
        if self.ack_due() {
            self.emit_ack(now, buf);
            return true;
        }
        match self.state {
            State::Handshake => return self.transmit_connect(now, buf),
            State::Draining => return false,
            _ => {}
        }
        // Retransmissions (same packet number), within the window.
        while let Some(&pn) = self.retx.front() {
            // Acked after it was declared lost (possibly popped off the ring): skip it.
            let Some(i) = pn.checked_sub(self.sent_base).map(|i| i as usize) else {
                self.retx.pop_front();
                continue;
            };
            if self.sent.get(i).is_none_or(|s| s.state != PktState::Lost) {
                self.retx.pop_front();
                continue;
            }
            let s = self.sent[i];
            let size = self.wire_size(&s.what);
            if !self.window_allows(size as u64) {
                return false;
            }
            self.retx.pop_front();
            self.stats.retransmits += 1;
            return self.emit_tracked(now, buf, pn, s.what, true);
        }
        if self.next_pn >= self.sent_base + PN_WINDOW {
            return false;
        }
        if self.confirm_pending {
            self.confirm_pending = false;
            let pn = self.next_pn;
            return self.emit_tracked(now, buf, pn, What::Confirm, false);
        }
        if self.probe_pending {
            self.probe_pending = false;
            let pn = self.next_pn;
            return self.emit_tracked(now, buf, pn, What::Probe, false);
        }
        if self.state == State::Closing && self.send_msgs.is_empty() && !self.close_sent {
            self.close_sent = true;
            let pn = self.next_pn;
            return self.emit_tracked(now, buf, pn, What::Close, false);
        }
        // New data.
        self.transmit_new_data(now, buf)
    }

    /// The client's CONNECT, when its (backed-off, jittered) retry time has come and attempts
    /// remain. The packet takes no number.
    #[inline]
    fn transmit_connect(&mut self, now: Instant, buf: &mut PktBuf) -> bool {
        if now >= self.hs_next && self.hs_attempts < self.cfg.handshake_attempts {
            self.hs_attempts += 1;
            let backoff = self.cfg.initial_rtt.max(self.cfg.min_rto) * 3;
            let wait = backoff * (1u32 << (self.hs_attempts - 1).min(10));
            // Up to +50 %, from the (random) connection id: clients that started
            // together (a job's workers connecting at once) must not retry in lockstep,
            // or a server's bounded hello queue admits the same few each round.
            let spread = wait.as_nanos() as u64 / 2;
            let jitter = SplitMix64::new(self.local_cid ^ u64::from(self.hs_attempts)).next_u64()
                % spread.max(1);
            self.hs_next = now + wait + Duration::from_nanos(jitter);
            let k = Kind::Connect {
                credit: self.cfg.rx_window,
                max_datagram: self.cfg.max_datagram,
            };
            let r = Repr {
                flags: Self::handshake_flags(&self.cfg),
                dst_cid: 0,
                src_cid: self.local_cid,
                pn: 0,
                tx_timestamp: now.as_nanos(),
                kind: k,
            };
            if r.prepend_to(buf).is_ok() {
                self.stats.tx_packets += 1;
                return true;
            }
        }
        false
    }

    /// The next new data: a BATCH packet of small whole messages where the peer takes them,
    /// else the next DATA segment, within the credit, the window and the pacer.
    #[inline]
    fn transmit_new_data(&mut self, now: Instant, buf: &mut PktBuf) -> bool {
        if !self.has_new_data() {
            return false;
        }
        let Some(seg) = self.credit_segment() else {
            return false;
        };
        let mp = self.max_payload().min(buf.tailroom()) as u64;
        if mp == 0 {
            return false;
        }
        let i = (self.tx_cursor - self.send_base) as usize;
        if let Some((count, len)) = self.plan_batch(i, buf.tailroom()) {
            return self.transmit_batch(now, buf, i, count, len);
        }
        let m = &self.send_msgs[i];
        let len = seg.min(mp);
        let size = DATA_HEADER_LEN as u64 + len;
        if !self.window_allows(size) {
            return false;
        }
        let t = self.cc.earliest_departure(now, self.last_departure, size);
        if t > now {
            self.paced_until = Some(t);
            return false;
        }
        let what = What::Data {
            msg_id: self.tx_cursor,
            offset: m.sent_off,
            len: len as u32,
        };
        let m = &mut self.send_msgs[i];
        m.started = true;
        m.sent_off += len;
        if m.sent_off == m.data.len() {
            self.tx_cursor += 1;
        }
        self.tx_new_bytes += len;
        self.stats.tx_data += 1;
        let pn = self.next_pn;
        self.emit_tracked(now, buf, pn, what, false)
    }

    /// A BATCH packet of `count` whole messages (`len` payload bytes) from send-queue index
    /// `i` on, as [`plan_batch`](Self::plan_batch) planned it, unless the pacer holds it.
    #[inline]
    fn transmit_batch(
        &mut self,
        now: Instant,
        buf: &mut PktBuf,
        i: usize,
        count: u16,
        len: u64,
    ) -> bool {
        let size = (BATCH_HEADER_LEN + count as usize * BATCH_ENTRY_LEN) as u64 + len;
        let t = self.cc.earliest_departure(now, self.last_departure, size);
        if t > now {
            self.paced_until = Some(t);
            return false;
        }
        let what = What::Batch {
            first: self.tx_cursor,
            count,
            len: len as u32,
        };
        for m in self.send_msgs.range_mut(i..i + count as usize) {
            m.started = true;
            m.sent_off = m.data.len();
        }
        self.tx_cursor += u64::from(count);
        self.tx_new_bytes += len;
        self.stats.tx_data += 1;
        self.stats.tx_batches += 1;
        self.stats.tx_batched_msgs += u64::from(count);
        let pn = self.next_pn;
        self.emit_tracked(now, buf, pn, what, false)
    }

    /// How many whole messages from send-queue index `i` on (the next new data) go into one
    /// BATCH packet, and their payload bytes; `None` (send a DATA packet) unless at least two
    /// qualify. A message qualifies while it is unstarted, at most a quarter of the largest
    /// DATA payload, and it fits: the datagram limit, the buffer's `tailroom` (for the length
    /// table and the messages), the peer's credit and the congestion window. Only messages
    /// already queued are packed: nothing waits to fill a packet. A packet takes at most a
    /// quarter of the send queue (`max_send_msgs`), so with large datagrams (64 KiB over
    /// memif hold ~900 messages of 64 B) several packets are in flight and the queue refills
    /// behind them: one packet holding the whole queue would make the stream stop and wait
    /// for each ACK (0.25 M msg/s instead of 11 M, bench/results/).
    fn plan_batch(&self, i: usize, tailroom: usize) -> Option<(u16, u64)> {
        // A lone message (a request, a response) goes in a DATA packet: nothing to pack.
        if !self.peer_batch || !self.cfg.batch || self.send_msgs.len() < i + 2 {
            return None;
        }
        let small = (self.max_payload() / 4) as u64;
        let datagram = self.cfg.max_datagram.min(self.peer_max_datagram) as u64;
        let room = datagram
            .saturating_sub(BATCH_HEADER_LEN as u64)
            .min(tailroom as u64);
        let credit = self.peer_credit.saturating_sub(self.tx_new_bytes);
        let cwnd = if self.in_flight_pkts == 0 {
            u64::MAX
        } else {
            self.cc.window().saturating_sub(self.in_flight)
        };
        let most = (self.cfg.max_send_msgs as u64 / 4).clamp(2, u64::from(u16::MAX));
        let (mut n, mut body, mut payload) = (0u64, 0u64, 0u64);
        for m in self.send_msgs.range(i..) {
            let l = m.data.len();
            let b = body + BATCH_ENTRY_LEN as u64 + l;
            // Segmented messages (zero-copy send) go out from their own slots, never packed.
            if m.started
                || !matches!(m.data, Body::Bytes(_))
                || l > small.min(u64::from(u16::MAX))
                || b > room
                || BATCH_HEADER_LEN as u64 + b > cwnd
                || payload + l > credit
                || n == most
            {
                break;
            }
            (n, body, payload) = (n + 1, b, payload + l);
        }
        (n >= 2).then_some((n as u16, payload))
    }

    fn wire_size(&self, w: &What) -> usize {
        match *w {
            What::Data { len, .. } => DATA_HEADER_LEN + len as usize,
            What::Batch { count, len, .. } => {
                BATCH_HEADER_LEN + count as usize * BATCH_ENTRY_LEN + len as usize
            }
            _ => crate::wire::transport::CONTROL_HEADER_LEN,
        }
    }

    pub(super) fn emit_untracked(
        &mut self,
        now: Instant,
        buf: &mut PktBuf,
        kind: Kind,
        flags: u16,
    ) {
        let r = Repr {
            flags,
            dst_cid: self.remote_cid,
            src_cid: self.local_cid,
            pn: self.next_pn,
            tx_timestamp: now.as_nanos(),
            kind,
        };
        // Headroom is the caller's contract; a short buffer sends nothing.
        let _ = r.prepend_to(buf);
        self.stats.tx_packets += 1;
    }

    fn emit_tracked(
        &mut self,
        now: Instant,
        buf: &mut PktBuf,
        pn: u64,
        what: What,
        retransmit: bool,
    ) -> bool {
        // Zero copy: (message index, segment index) whose slot goes out itself.
        let mut zero_copy = None;
        let carries_data = matches!(what, What::Data { .. } | What::Batch { .. });
        let (kind, flags) = match what {
            What::Data {
                msg_id,
                offset,
                len,
            } => {
                let Some((kind, zc)) = self.write_data(buf, msg_id, offset, len, retransmit) else {
                    return false;
                };
                zero_copy = zc;
                (kind, 0)
            }
            What::Batch { first, count, .. } => {
                let Some(kind) = self.write_batch(buf, first, count) else {
                    return false;
                };
                (kind, 0)
            }
            What::Confirm => (
                Kind::Connect {
                    credit: self.cfg.rx_window,
                    max_datagram: self.cfg.max_datagram,
                },
                Self::handshake_flags(&self.cfg),
            ),
            What::Close => (
                Kind::Close {
                    code: self.close_code,
                },
                FLAG_ACK_NOW,
            ),
            What::Probe => (Kind::Probe, FLAG_ACK_NOW),
        };
        // The window closes behind this packet (less than one more full packet fits): ask
        // for an ACK at once, as the receiver would otherwise wait up to its delayed-ACK
        // deadline (a conversation is acknowledged only there) while we cannot send.
        let flags = if carries_data
            && self.in_flight + (self.wire_size(&what) + self.cfg.max_datagram as usize) as u64
                > self.cc.window()
        {
            flags | FLAG_ACK_NOW
        } else {
            flags
        };
        let r = Repr {
            flags,
            dst_cid: self.remote_cid,
            src_cid: self.local_cid,
            pn,
            tx_timestamp: now.as_nanos(),
            kind,
        };
        if !self.write_header(&r, buf, zero_copy) {
            return false;
        }
        self.on_sent(now, pn, what, retransmit, buf.len() as u32);
        true
    }

    /// Write the payload of DATA `[offset, offset + len)` of message `msg_id` into `buf`,
    /// unless the first transmission of a whole exclusive segment can send the segment's slot
    /// itself: then `buf` stays empty and the `(message index, segment index)` comes back.
    /// `None`: nothing to send (the message completed, or `buf` has no room).
    #[inline]
    fn write_data(
        &self,
        buf: &mut PktBuf,
        msg_id: u64,
        offset: u64,
        len: u32,
        retransmit: bool,
    ) -> Option<(Kind, Option<(usize, usize)>)> {
        let mut zero_copy = None;
        let Some(i) = msg_id
            .checked_sub(self.send_base)
            .filter(|&i| i < self.send_msgs.len() as u64)
        else {
            return None; // the message completed; nothing left to send
        };
        let m = &self.send_msgs[i as usize];
        let o = offset as usize;
        let src = match &m.data {
            Body::Bytes(b) => &b[o..o + len as usize],
            Body::Segments { segs, seg_len, .. } => {
                let k = (offset / seg_len) as usize;
                let so = (offset % seg_len) as usize;
                match segs.get(k) {
                    // A zero-length message has no segment.
                    None => &[][..],
                    Some(seg)
                        if !retransmit
                            && so == 0
                            && len as usize == seg.len()
                            && !seg.is_shared()
                            && seg.headroom() >= buf.headroom() =>
                    {
                        zero_copy = Some((i as usize, k));
                        &[][..]
                    }
                    Some(seg) => seg.data().get(so..so + len as usize)?,
                }
            }
        };
        if buf.extend_from_slice(src).is_err() {
            return None;
        }
        let kind = Kind::Data {
            msg_id,
            msg_len: m.data.len(),
            offset,
        };
        Some((kind, zero_copy))
    }

    /// Write the length table and the messages `first .. first + count` of a BATCH packet
    /// into `buf`. `None`: nothing to send (the messages completed, or `buf` has no room;
    /// then `buf` is left empty).
    #[inline]
    fn write_batch(&self, buf: &mut PktBuf, first: u64, count: u16) -> Option<Kind> {
        let Some(i) = first
            .checked_sub(self.send_base)
            .map(|i| i as usize)
            .filter(|&i| i + count as usize <= self.send_msgs.len())
        else {
            return None; // the messages completed; nothing left to send
        };
        let msgs = self.send_msgs.range(i..i + count as usize);
        let Ok(table) = buf.append(count as usize * BATCH_ENTRY_LEN) else {
            return None;
        };
        for (e, m) in table.chunks_exact_mut(BATCH_ENTRY_LEN).zip(msgs.clone()) {
            e.copy_from_slice(&(m.data.len() as u16).to_le_bytes());
        }
        for m in msgs {
            // plan_batch packs only `Bytes` messages; the same ones are rebuilt.
            let Body::Bytes(data) = &m.data else {
                buf.truncate(0);
                return None;
            };
            if buf.extend_from_slice(data).is_err() {
                buf.truncate(0);
                return None;
            }
        }
        Some(Kind::Batch {
            msg_id: first,
            count,
        })
    }

    /// Prepend the header `r` to the packet: into `buf`, or with `zero_copy` into the headroom
    /// of that segment's slot, which then goes out in `buf` (a shared reference; the caller's
    /// empty buffer goes back to its pool). False: no room, nothing to send.
    #[inline]
    fn write_header(
        &mut self,
        r: &Repr,
        buf: &mut PktBuf,
        zero_copy: Option<(usize, usize)>,
    ) -> bool {
        let zero_copy = zero_copy.and_then(|(i, k)| match &mut self.send_msgs[i].data {
            Body::Segments { segs, .. } => segs.get_mut(k),
            Body::Bytes(_) => None,
        });
        if let Some(seg) = zero_copy {
            let payload = seg.len();
            // The segment is exclusive (checked above): the header goes into its headroom in
            // place; the port gets a shared reference and we keep ours, back at the payload.
            if r.prepend_to(seg).is_err() {
                seg.advance(seg.len() - payload);
                return false;
            }
            let tx = seg.share();
            seg.advance(seg.len() - payload);
            // The caller's empty buffer goes back to its pool.
            *buf = tx;
            self.tx_zero_copy += 1;
        } else if r.prepend_to(buf).is_err() {
            buf.truncate(0);
            return false;
        }
        true
    }

    /// Record packet `pn` (`bytes` on the wire) as sent at `now`: in flight, the send and
    /// pacing clocks, the delayed-ACK state, the controller.
    #[inline]
    fn on_sent(&mut self, now: Instant, pn: u64, what: What, retransmit: bool, bytes: u32) {
        let carries_data = matches!(what, What::Data { .. } | What::Batch { .. });
        if retransmit {
            let s = &mut self.sent[(pn - self.sent_base) as usize];
            s.time = now;
            s.state = PktState::InFlight;
            s.retx = s.retx.saturating_add(1);
            self.retx_in_flight += 1;
        } else {
            debug_assert_eq!(pn, self.next_pn);
            self.sent.push_back(Sent {
                time: now,
                bytes,
                retx: 0,
                state: PktState::InFlight,
                what,
            });
            self.next_pn += 1;
        }
        self.in_flight += bytes as u64;
        self.in_flight_pkts += 1;
        self.last_eliciting_sent = now;
        self.last_departure = now;
        self.paced_until = None;
        self.stats.tx_packets += 1;
        if carries_data && self.ack_count == 1 {
            // Request and response: the one packet received since our last ACK is answered
            // by data of ours, so the peer's next packet is the answer's answer, not a second
            // packet of a burst, and need not be acknowledged at once. The delayed-ACK
            // deadline set at that packet still stands: a conversation is acknowledged every
            // `max_ack_delay` instead of every second packet, and no ACK frame is sent or
            // processed in front of each other answer. A burst (two packets before we send)
            // is acknowledged at once as before.
            self.ack_count = 0;
        }
        self.cc.on_send(
            now,
            &SendEvent {
                pn,
                bytes: bytes as u64,
                in_flight: self.in_flight,
                retransmit,
                app_limited: !self.has_new_data(),
            },
        );
    }

    pub(super) fn ack_segment(&mut self, msg_id: u64, len: u64) {
        let Some(i) = msg_id.checked_sub(self.send_base) else {
            return;
        };
        let Some(m) = self.send_msgs.get_mut(i as usize) else {
            return;
        };
        if m.done {
            return;
        }
        m.acked += len;
        if m.acked >= m.data.len() && m.sent_off == m.data.len() {
            m.done = true;
            // The segments' slots go back to their pool (or to the port still sending them);
            // the emptied list is kept for the next `send_segments`.
            if let Body::Segments { mut segs, .. } =
                std::mem::replace(&mut m.data, Body::Bytes(Bytes::new()))
            {
                segs.clear();
                if self.spare_segs.len() < self.cfg.max_send_msgs {
                    self.spare_segs.push(segs);
                }
            }
            self.events.push_back(Event::Acked { msg_id });
        }
        while self.send_msgs.front().is_some_and(|m| m.done) {
            self.send_msgs.pop_front();
            self.send_base += 1;
        }
    }
}
