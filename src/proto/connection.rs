//! One connection: handshake state, sending (segmentation, retransmission, pacing, credit),
//! loss recovery (selective acks, RACK, tail-loss probe, RTO) and receiving (duplicate
//! suppression, placement, delivery, credit).
//!
//! Packet numbers: every ack-eliciting packet (DATA, the client's confirming CONNECT, CLOSE,
//! PROBE, NACK) takes the next packet number, and a lost one is retransmitted under the
//! *same* number (like TCP's sequence numbers), so the receiver's cumulative ack always
//! advances and a duplicate is recognised by its number alone. Retransmission ambiguity is
//! resolved by the echoed transmit timestamp, which names the transmission that arrived.
//! ACK, RESET, and the stateless hello/ACCEPT take no number.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::cc::{AckEvent, Controller, LossEvent, SendEvent};
use super::{
    CloseReason, ConnectionConfig, Event, Instant, MsgData, RecvMsg, RecvSegments, RecvTarget,
    SplitMix64, MSG_WINDOW, PN_WINDOW,
};
use crate::mem::{PktBuf, PktBytes};
use crate::wire::transport::{
    batch_entries, AckRepr, Kind, Repr, BATCH_ENTRY_LEN, BATCH_HEADER_LEN, DATA_HEADER_LEN,
    FLAG_ACK_NOW, FLAG_BATCH, FLAG_INTACT, SACK_BITS,
};

/// RTT samples a connection keeps for [`Connection::drain_rtt_samples`].
pub const RTT_RING: usize = 64;

/// Which end of the handshake this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Sent the hello.
    Client,
    /// Accepted with a cookie.
    Server,
}

/// Connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Client waiting for ACCEPT.
    Handshake,
    /// Data flows.
    Established,
    /// Closing gracefully: sending what is queued, then CLOSE, waiting for its ack.
    Closing,
    /// The peer closed; acknowledging its retransmitted CLOSE for a while.
    Draining,
    /// Over; the endpoint frees it once its events are drained.
    Closed,
}

/// Why [`Connection::send`] refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The send queue is full; retry after `Event::Acked` events.
    #[error("send queue full")]
    WouldBlock,
    /// Larger than `ConnectionConfig::max_message`.
    #[error("message too large")]
    TooLarge,
    /// The connection is closing or closed.
    #[error("connection closed")]
    Closed,
    /// [`Connection::send_segments`]: the segments are not a message (every segment but the
    /// last must hold the same number of bytes, at least one).
    #[error("segments of unequal length: all but the last must hold the same number of bytes")]
    BadSegments,
}

/// Why [`Connection::post_target`] refused a target.
#[derive(Debug, thiserror::Error)]
#[error("too many posted targets")]
pub struct TargetsFull(pub Box<dyn RecvTarget>);

/// Per-connection counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Datagrams written by `poll_transmit`.
    pub tx_packets: u64,
    /// DATA packets sent for the first time.
    pub tx_data: u64,
    /// Packets retransmitted.
    pub retransmits: u64,
    /// Packets declared lost (RACK, NACK or RTO).
    pub lost: u64,
    /// Lost packets later found to have arrived (spurious retransmissions).
    pub spurious: u64,
    /// Probe timeouts that fired.
    pub ptos: u64,
    /// ACKs sent.
    pub tx_acks: u64,
    /// Packets received for this connection.
    pub rx_packets: u64,
    /// Duplicate packets dropped.
    pub rx_duplicates: u64,
    /// Packets dropped for exceeding our credit, budgets or windows.
    pub rx_refused: u64,
    /// BATCH packets sent for the first time (also counted in `tx_data`).
    pub tx_batches: u64,
    /// Messages sent in those BATCH packets.
    pub tx_batched_msgs: u64,
    /// BATCH packets received and accepted.
    pub rx_batches: u64,
    /// Messages delivered.
    pub rx_messages: u64,
    /// Bytes of the messages delivered.
    pub rx_message_bytes: u64,
    /// Multi-packet messages delivered as their packet buffers ([`MsgData::Segments`]).
    pub rx_segment_msgs: u64,
    /// Messages begun as segments and copied into a reassembly buffer instead because their
    /// packets were too small for the slots they held or came too far out of order
    /// ([`ConnectionConfig::rx_segments`]).
    pub rx_segment_copied: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PktState {
    InFlight,
    Lost,
    Acked,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
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
struct Sent {
    time: Instant,
    bytes: u32,
    retx: u16,
    state: PktState,
    what: What,
}

/// A queued message's bytes.
#[derive(Debug)]
enum Body {
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
    fn len(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::Segments { len, .. } => *len,
        }
    }

    /// Bytes from `off` to the end of the segment holding it (a packet must not cross it).
    #[inline]
    fn contiguous(&self, off: u64) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64 - off,
            Body::Segments { seg_len, len, .. } => (seg_len - off % seg_len).min(len - off),
        }
    }
}

#[derive(Debug)]
struct TxMsg {
    data: Body,
    sent_off: u64,
    acked: u64,
    started: bool,
    done: bool,
}

enum Dest {
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

enum RxSlot {
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

const PN_WORDS: usize = (PN_WINDOW / 64) as usize;

/// The byte ranges of a message received so far: `[0, contig)` and, past it, the disjoint
/// ranges of parts that came out of order (sorted, adjacent ones merged). Each byte of a
/// message arrives once (duplicates are filtered by packet number), so a part overlapping
/// what is here is a malformed peer's: refused, or a hole could be delivered as zeros. No
/// allocation while parts come in order.
#[derive(Debug, Default)]
struct Ranges {
    contig: u64,
    rest: VecDeque<(u64, u64)>,
}

impl Ranges {
    /// Record `[start, end)` (not empty); false, recording nothing, if it overlaps.
    fn insert(&mut self, start: u64, end: u64) -> bool {
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
struct RxPns {
    cum: u64,
    largest: Option<u64>,
    bits: [u64; PN_WORDS],
}

impl RxPns {
    #[inline]
    fn bit(pn: u64) -> (usize, u64) {
        (((pn % PN_WINDOW) / 64) as usize, 1u64 << (pn % 64))
    }
    #[inline]
    fn contains(&self, pn: u64) -> bool {
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
    fn insert(&mut self, pn: u64) {
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
    fn sack(&self) -> (u64, u64) {
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

/// Shared reassembly budget of an endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    pub(crate) used: Arc<AtomicU64>,
    pub(crate) limit: u64,
}

/// One reliable, message-oriented connection. Created by the [`Endpoint`](super::Endpoint).
///
/// Call order: the endpoint feeds it packets and timeouts; the application calls
/// [`send`](Connection::send), [`close`](Connection::close), [`reset`](Connection::reset),
/// [`post_target`](Connection::post_target), then drains [`poll_event`](Connection::poll_event)
/// and [`poll_recv`](Connection::poll_recv); the endpoint drains transmits and timers.
pub struct Connection {
    side: Side,
    state: State,
    cfg: ConnectionConfig,
    pub(crate) local_cid: u64,
    pub(crate) remote_cid: u64,
    pub(crate) remote: SocketAddr,
    peer_max_datagram: u32,
    /// The peer accepts BATCH packets (it set `FLAG_BATCH` in its handshake).
    peer_batch: bool,
    /// The peer's link is intact (it set `FLAG_INTACT` in its handshake).
    peer_intact: bool,
    cc: Box<dyn Controller>,
    budget: Budget,

    // Handshake (client).
    hs_next: Instant,
    hs_attempts: u32,
    confirm_pending: bool,

    // Sending.
    next_pn: u64,
    sent_base: u64,
    sent: VecDeque<Sent>,
    retx: VecDeque<u64>,
    retx_in_flight: u32,
    in_flight: u64,
    in_flight_pkts: u32,
    send_base: u64,
    send_msgs: VecDeque<TxMsg>,
    /// Emptied segment lists of completed messages, handed back by `send_segments` (at most
    /// `max_send_msgs`, as many as can be queued: a steady stream allocates nothing).
    spare_segs: Vec<Vec<PktBuf>>,
    /// First transmissions that sent the application's slot itself (no copy).
    tx_zero_copy: u64,
    tx_cursor: u64,
    peer_credit: u64,
    tx_new_bytes: u64,
    last_departure: Instant,
    /// When the pacer next lets a held packet go: set when `poll_transmit` had a packet the
    /// window allowed but the pacer held back, cleared when it sends or the time comes. The
    /// pacing timer is this, not a departure time recomputed for every deadline query: a
    /// connection that is not held back (its pacer already due) has no pacing timer, so a
    /// message queued on an idle connection costs no timer round trip.
    paced_until: Option<Instant>,
    last_eliciting_sent: Instant,
    probe_pending: bool,
    close_code: u32,
    close_sent: bool,
    reset_pending: Option<u32>,

    // Recovery.
    srtt: Duration,
    rttvar: Duration,
    min_rtt: Duration,
    /// The most recent RTT samples (ns, saturating at u32::MAX), for telemetry to drain.
    rtt_ring: [u32; RTT_RING],
    rtt_ring_len: usize,
    rtt_ring_head: usize,
    has_rtt: bool,
    rack_time: Option<Instant>,
    rack_pn: u64,
    rack_rtt: Duration,
    reo_mult: u32,
    loss_time: Option<Instant>,
    pto_count: u32,
    /// The probe timeout's period, backoff included: [`pto_base`](Self::pto_base) times
    /// `2^pto_count`, capped. Kept up to date where its inputs change (an RTT sample, the
    /// probe count), as deadlines are asked for after every packet.
    pto_after: Duration,
    peer_ecn_ce: u32,

    // Receiving.
    rx: RxPns,
    ack_count: u32,
    ack_now: bool,
    ack_deadline: Option<Instant>,
    /// When the pending ACK became due (the packet or timer that required it), for the
    /// split of the echoed packet's time here into deliberate delay and hold time.
    ack_due: Option<Instant>,
    echo_ts: u64,
    echo_rx: Instant,
    ecn_ce: u32,
    rx_base: u64,
    next_deliver: u64,
    rx_msgs: VecDeque<RxSlot>,
    ready: VecDeque<RecvMsg>,
    targets: VecDeque<Box<dyn RecvTarget>>,
    rx_distinct: u64,
    rx_released: u64,
    rx_advertised: u64,
    rx_reasm: u64,

    last_rx: Instant,
    drain_until: Option<Instant>,
    events: VecDeque<Event>,
    closed_reported: bool,
    stats: ConnectionStats,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("side", &self.side)
            .field("state", &self.state)
            .field("local_cid", &self.local_cid)
            .field("remote_cid", &self.remote_cid)
            .field("stats", &self.stats)
            .finish()
    }
}

const EVENT_CAP: usize = 2 * MSG_WINDOW as usize;
/// Initial capacity of a connection's queues. Each grows (doubling) up to the bound its
/// window sets (`PN_WINDOW`, `MSG_WINDOW`, `max_send_msgs`, `EVENT_CAP`) while a connection
/// warms up, then stays: no allocation in steady state, and an idle connection costs a few
/// KiB instead of its worst case (~0.5 MiB).
const INITIAL_QUEUE: usize = 64;

impl Connection {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        side: Side,
        now: Instant,
        cfg: ConnectionConfig,
        local_cid: u64,
        remote_cid: u64,
        remote: SocketAddr,
        cc: Box<dyn Controller>,
        budget: Budget,
    ) -> Connection {
        let max_send = cfg.max_send_msgs.clamp(1, MSG_WINDOW as usize);
        let mut c = Connection {
            side,
            state: match side {
                Side::Client => State::Handshake,
                Side::Server => State::Established,
            },
            local_cid,
            remote_cid,
            remote,
            peer_max_datagram: cfg.max_datagram,
            peer_batch: false,
            peer_intact: false,
            cc,
            budget,
            hs_next: now,
            hs_attempts: 0,
            confirm_pending: false,
            next_pn: 0,
            sent_base: 0,
            sent: VecDeque::with_capacity(INITIAL_QUEUE),
            retx: VecDeque::with_capacity(INITIAL_QUEUE),
            retx_in_flight: 0,
            in_flight: 0,
            in_flight_pkts: 0,
            send_base: 0,
            send_msgs: VecDeque::with_capacity(max_send.min(INITIAL_QUEUE)),
            spare_segs: Vec::new(),
            tx_zero_copy: 0,
            tx_cursor: 0,
            peer_credit: 0,
            tx_new_bytes: 0,
            last_departure: now,
            paced_until: None,
            last_eliciting_sent: now,
            probe_pending: false,
            close_code: 0,
            close_sent: false,
            reset_pending: None,
            srtt: cfg.initial_rtt,
            rttvar: cfg.initial_rtt / 2,
            min_rtt: cfg.initial_rtt,
            rtt_ring: [0; RTT_RING],
            rtt_ring_len: 0,
            rtt_ring_head: 0,
            has_rtt: false,
            rack_time: None,
            rack_pn: 0,
            rack_rtt: Duration::ZERO,
            reo_mult: 1,
            loss_time: None,
            pto_count: 0,
            pto_after: Duration::ZERO,
            peer_ecn_ce: 0,
            rx: RxPns {
                cum: 0,
                largest: None,
                bits: [0; PN_WORDS],
            },
            ack_count: 0,
            ack_now: false,
            ack_deadline: None,
            ack_due: None,
            echo_ts: 0,
            echo_rx: now,
            ecn_ce: 0,
            rx_base: 0,
            next_deliver: 0,
            rx_msgs: VecDeque::with_capacity(INITIAL_QUEUE),
            ready: VecDeque::with_capacity(INITIAL_QUEUE),
            targets: VecDeque::with_capacity(cfg.max_targets.min(8)),
            rx_distinct: 0,
            rx_released: 0,
            rx_advertised: cfg.rx_window,
            rx_reasm: 0,
            last_rx: now,
            drain_until: None,
            events: VecDeque::with_capacity(INITIAL_QUEUE),
            closed_reported: false,
            stats: ConnectionStats::default(),
            cfg,
        };
        c.cfg.max_send_msgs = max_send;
        c.update_pto();
        if side == Side::Server {
            c.events.push_back(Event::Connected);
        }
        c
    }

    /// The peer's handshake parameters: its credit, largest datagram and flags.
    pub(crate) fn set_peer_params(&mut self, credit: u64, max_datagram: u32, flags: u16) {
        self.peer_credit = credit;
        self.peer_max_datagram = max_datagram.max(DATA_HEADER_LEN as u32 + 1);
        self.peer_batch = flags & FLAG_BATCH != 0;
        self.peer_intact = flags & FLAG_INTACT != 0;
    }

    /// Handshake flags this side sends: `ACK_NOW`, `BATCH` if it accepts BATCH packets and
    /// `INTACT` if its link is intact.
    pub(crate) fn handshake_flags(cfg: &ConnectionConfig) -> u16 {
        FLAG_ACK_NOW | Self::offer_flags(cfg)
    }

    /// What this side offers in CONNECT and ACCEPT: `BATCH` and `INTACT`, by `cfg`.
    pub(crate) fn offer_flags(cfg: &ConnectionConfig) -> u16 {
        (if cfg.batch { FLAG_BATCH } else { 0 }) | if cfg.link_intact { FLAG_INTACT } else { 0 }
    }

    /// Whether this connection's datagrams need a UDP checksum: false only when both links
    /// are intact (each side set `FLAG_INTACT`; see [`ConnectionConfig::link_intact`]).
    pub fn needs_checksum(&self) -> bool {
        !(self.cfg.link_intact && self.peer_intact)
    }

    /// Client or server.
    pub fn side(&self) -> Side {
        self.side
    }
    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }
    /// Our connection id (the peer's `dst_cid`).
    pub fn local_cid(&self) -> u64 {
        self.local_cid
    }
    /// The peer's connection id (0 until the handshake completes on a client).
    pub fn remote_cid(&self) -> u64 {
        self.remote_cid
    }
    /// The peer's address.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }
    /// Counters.
    pub fn stats(&self) -> ConnectionStats {
        self.stats
    }
    /// Smoothed round-trip time.
    pub fn rtt(&self) -> Duration {
        self.srtt
    }
    /// Hand the RTT samples taken since the last call to `f` (ns), oldest first. The last
    /// 64 samples are kept; older ones not yet taken are overwritten (telemetry
    /// samples the distribution; nothing is allocated).
    pub fn drain_rtt_samples(&mut self, mut f: impl FnMut(u64)) {
        for k in 0..self.rtt_ring_len {
            f(u64::from(
                self.rtt_ring[(self.rtt_ring_head + k) % RTT_RING],
            ));
        }
        self.rtt_ring_len = 0;
        self.rtt_ring_head = 0;
    }
    /// Smallest round-trip time seen.
    pub fn min_rtt(&self) -> Duration {
        self.min_rtt
    }
    /// Round-trip time variation (RFC 6298 style).
    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }
    /// RACK's current reorder window: how much later than a newer acknowledged packet a
    /// packet may be acknowledged before it is declared lost.
    pub fn reorder_window(&self) -> Duration {
        self.reo_wnd()
    }
    /// Credit the peer granted us that we have not used yet (payload bytes we may still send).
    pub fn send_credit(&self) -> u64 {
        self.peer_credit.saturating_sub(self.tx_new_bytes)
    }
    /// Bytes sent and not yet acknowledged or declared lost.
    pub fn bytes_in_flight(&self) -> u64 {
        self.in_flight
    }
    /// The congestion controller.
    pub fn controller(&self) -> &dyn Controller {
        &*self.cc
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
    /// Bytes of reassembly buffers this connection holds.
    pub fn rx_buffered(&self) -> u64 {
        self.rx_reasm
    }
    /// True once the connection is over and its last event was taken.
    pub fn is_drained(&self) -> bool {
        self.state == State::Closed && self.events.is_empty() && self.reset_pending.is_none()
    }

    fn max_payload(&self) -> usize {
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

    /// Close gracefully: queued messages are sent and acknowledged first, then CLOSE.
    pub fn close(&mut self, now: Instant, code: u32) {
        match self.state {
            State::Handshake => self.finish(now, CloseReason::LocalClose(code)),
            State::Established => {
                self.state = State::Closing;
                self.close_code = code;
            }
            _ => {}
        }
    }

    /// Abort: send RESET once and end now.
    pub fn reset(&mut self, now: Instant, code: u32) {
        if self.state != State::Closed {
            if self.state != State::Handshake {
                self.reset_pending = Some(code);
            }
            self.finish(now, CloseReason::LocalReset(code));
        }
    }

    /// True when [`poll_event`](Self::poll_event) has an event to give.
    pub fn has_event(&self) -> bool {
        !self.events.is_empty()
    }

    /// Next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
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

    fn finish(&mut self, _now: Instant, reason: CloseReason) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        if !self.closed_reported {
            self.closed_reported = true;
            self.events.push_back(Event::Closed(reason));
        }
        self.release_send_state();
    }

    fn release_send_state(&mut self) {
        self.send_msgs.clear();
        self.retx.clear();
        self.sent.clear();
        self.in_flight = 0;
        self.in_flight_pkts = 0;
        self.probe_pending = false;
        self.confirm_pending = false;
        self.ack_now = false;
        self.ack_deadline = None;
        self.ack_due = None;
        self.loss_time = None;
        // Partial reassemblies and posted targets are released now; delivered messages stay
        // readable until the endpoint frees the connection.
        for slot in self.rx_msgs.iter_mut() {
            if let RxSlot::Partial { len, dest, .. } = slot {
                if matches!(dest, Dest::Vec(_) | Dest::Segs { .. }) {
                    // (Dropping a Segs list below gives its packet buffers back.)
                    self.rx_reasm -= *len;
                    self.budget.used.fetch_sub(*len, Ordering::Relaxed);
                }
                *slot = RxSlot::Empty;
            }
        }
        self.targets.clear();
    }

    /// How long the peer may keep retransmitting one packet before it gives up: its probe
    /// timeouts, floored at `min_rto`, doubling up to `max_rto`, `max_probes + 1` of them
    /// (estimated with our RTT; both sides run the same configuration), at most the idle
    /// timeout. A side that received the peer's CLOSE drains for this long, so that an ACK
    /// of the CLOSE that was lost can still be answered when the peer retransmits the CLOSE;
    /// leaving earlier made the closer end with PeerUnresponsive instead of LocalClose.
    fn peer_retry_horizon(&self) -> Duration {
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
        let v =
            self.srtt + (4 * self.rttvar).max(Duration::from_micros(1)) + self.cfg.max_ack_delay;
        v.max(self.cfg.min_rto)
    }

    fn pto_deadline(&self) -> Option<Instant> {
        let armed = self.in_flight_pkts > 0 || self.blocked_on_credit();
        if !armed || !matches!(self.state, State::Established | State::Closing) {
            return None;
        }
        Some(self.last_eliciting_sent + self.pto_after)
    }

    /// Recompute [`pto_after`](Self::pto_after) (after an RTT sample or a probe count change).
    fn update_pto(&mut self) {
        let shift = self.pto_count.min(16);
        self.pto_after =
            (self.pto_base() * (1u32 << shift)).min(self.cfg.max_rto.max(self.cfg.min_rto));
    }

    fn blocked_on_credit(&self) -> bool {
        self.in_flight_pkts == 0 && self.has_new_data() && !self.credit_allows()
    }

    fn keepalive_deadline(&self) -> Option<Instant> {
        if self.state != State::Established || self.in_flight_pkts > 0 {
            return None;
        }
        Some(self.last_rx.max(self.last_eliciting_sent) + self.cfg.idle_timeout / 3)
    }

    /// When [`handle_timeout`](Connection::handle_timeout) is next due (`None`: no timer).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t: Option<Instant> = None;
        let mut add = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        match self.state {
            State::Closed => return None,
            State::Handshake => {
                add(Some(self.hs_next));
                return t;
            }
            State::Draining => {
                add(self.drain_until);
                add(self.ack_deadline);
                return t;
            }
            _ => {}
        }
        add(self.ack_deadline);
        add(self.loss_time);
        add(self.pto_deadline());
        add(Some(self.last_rx + self.cfg.idle_timeout));
        add(self.keepalive_deadline());
        add(self.paced_until);
        t
    }

    /// Run the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Closed => return,
            State::Handshake => {
                if now >= self.hs_next && self.hs_attempts >= self.cfg.handshake_attempts {
                    self.finish(now, CloseReason::HandshakeTimeout);
                }
                return;
            }
            State::Draining => {
                if self.drain_until.is_some_and(|d| now >= d) {
                    self.state = State::Closed;
                    self.release_send_state();
                }
                if let Some(d) = self.ack_deadline.filter(|&d| now >= d) {
                    self.ack_due_at(d);
                }
                return;
            }
            _ => {}
        }
        if now >= self.last_rx + self.cfg.idle_timeout {
            self.finish(now, CloseReason::IdleTimeout);
            return;
        }
        if let Some(d) = self.ack_deadline.filter(|&d| now >= d) {
            // Due at the deadline: any lateness of this call is the host's, not deliberate.
            self.ack_due_at(d);
        }
        if self.loss_time.is_some_and(|d| now >= d) {
            self.detect_loss(now);
        }
        if self.pto_deadline().is_some_and(|d| now >= d) {
            self.on_pto(now);
        }
        if self.keepalive_deadline().is_some_and(|d| now >= d) {
            self.probe_pending = true;
        }
        // The held packet may go now: the endpoint asks `poll_transmit` after a timeout,
        // which sets this again if the pacer still holds it.
        if self.paced_until.is_some_and(|d| now >= d) {
            self.paced_until = None;
        }
    }

    fn on_pto(&mut self, now: Instant) {
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
        ((self.min_rtt / 4) * self.reo_mult).min(self.srtt)
    }

    fn detect_loss(&mut self, now: Instant) {
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

    fn has_new_data(&self) -> bool {
        match self
            .tx_cursor
            .checked_sub(self.send_base)
            .and_then(|i| self.send_msgs.get(i as usize))
        {
            Some(m) => !m.started || m.sent_off < m.data.len(),
            None => false,
        }
    }

    fn credit_allows(&self) -> bool {
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

    fn ack_due(&self) -> bool {
        self.ack_now
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
            State::Handshake => {
                if now >= self.hs_next && self.hs_attempts < self.cfg.handshake_attempts {
                    self.hs_attempts += 1;
                    let backoff = self.cfg.initial_rtt.max(self.cfg.min_rto) * 3;
                    let wait = backoff * (1u32 << (self.hs_attempts - 1).min(10));
                    // Up to +50 %, from the (random) connection id: clients that started
                    // together (a job's workers connecting at once) must not retry in lockstep,
                    // or a server's bounded hello queue admits the same few each round.
                    let spread = wait.as_nanos() as u64 / 2;
                    let jitter = SplitMix64::new(self.local_cid ^ u64::from(self.hs_attempts))
                        .next()
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
                return false;
            }
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
            return self.emit_tracked(now, buf, pn, what, false);
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

    fn emit_untracked(&mut self, now: Instant, buf: &mut PktBuf, kind: Kind, flags: u16) {
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

    /// Require an ACK, due at `t` (the moment the protocol stopped allowing it to wait).
    fn ack_due_at(&mut self, t: Instant) {
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

    fn emit_ack(&mut self, now: Instant, buf: &mut PktBuf) {
        let (sack_base, sack_bits) = self.rx.sack();
        let (echo_ts, hold) = self.echo_split(now);
        let hold = hold.as_nanos();
        let credit = self.rx_released + self.cfg.rx_window;
        self.rx_advertised = credit;
        let a = AckRepr {
            cumulative: self.rx.cum,
            sack_base,
            sack_bits,
            echo_timestamp: echo_ts,
            hold_ns: hold.min(u32::MAX as u128) as u32,
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
                let Some(i) = msg_id
                    .checked_sub(self.send_base)
                    .filter(|&i| i < self.send_msgs.len() as u64)
                else {
                    return false; // the message completed; nothing left to send
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
                            Some(seg) => match seg.data().get(so..so + len as usize) {
                                Some(d) => d,
                                None => return false,
                            },
                        }
                    }
                };
                if buf.extend_from_slice(src).is_err() {
                    return false;
                }
                (
                    Kind::Data {
                        msg_id,
                        msg_len: m.data.len(),
                        offset,
                    },
                    0,
                )
            }
            What::Batch { first, count, .. } => {
                let Some(i) = first
                    .checked_sub(self.send_base)
                    .map(|i| i as usize)
                    .filter(|&i| i + count as usize <= self.send_msgs.len())
                else {
                    return false; // the messages completed; nothing left to send
                };
                let msgs = self.send_msgs.range(i..i + count as usize);
                let Ok(table) = buf.append(count as usize * BATCH_ENTRY_LEN) else {
                    return false;
                };
                for (e, m) in table.chunks_exact_mut(BATCH_ENTRY_LEN).zip(msgs.clone()) {
                    e.copy_from_slice(&(m.data.len() as u16).to_le_bytes());
                }
                for m in msgs {
                    // plan_batch packs only `Bytes` messages; the same ones are rebuilt.
                    let Body::Bytes(data) = &m.data else {
                        buf.truncate(0);
                        return false;
                    };
                    if buf.extend_from_slice(data).is_err() {
                        buf.truncate(0);
                        return false;
                    }
                }
                (
                    Kind::Batch {
                        msg_id: first,
                        count,
                    },
                    0,
                )
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
        let bytes = buf.len() as u32;
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
        true
    }

    // ---------------------------------------------------------------- receive

    /// Process a packet the endpoint routed here. `buf` holds the DATA payload (the header
    /// already consumed), or nothing for other types.
    #[allow(clippy::collapsible_match)] // `buf` moves into on_data; a guard cannot move it
    pub(crate) fn handle_packet(&mut self, now: Instant, r: &Repr, buf: PktBuf, ecn_ce: bool) {
        if self.state == State::Closed {
            return;
        }
        match r.kind {
            Kind::Accept {
                credit,
                max_datagram,
            } => {
                if self.state == State::Handshake {
                    self.remote_cid = r.src_cid;
                    self.set_peer_params(credit, max_datagram, r.flags);
                    self.state = State::Established;
                    self.confirm_pending = true;
                    self.last_rx = now;
                    self.events.push_back(Event::Connected);
                }
                return;
            }
            _ if self.state == State::Handshake || r.src_cid != self.remote_cid => return,
            _ => {}
        }
        self.stats.rx_packets += 1;
        self.last_rx = now;
        match r.kind {
            Kind::Ack(a) => {
                if matches!(self.state, State::Established | State::Closing) {
                    self.on_ack(now, &a);
                }
                return;
            }
            Kind::Reset { code } => {
                self.finish(now, CloseReason::PeerReset(code));
                return;
            }
            Kind::Accept { .. } => return,
            _ => {}
        }
        // Ack-eliciting: DATA, CONNECT (confirm), CLOSE, PROBE, NACK.
        let pn = r.pn;
        if self.rx.contains(pn) {
            self.stats.rx_duplicates += 1;
            self.ack_due_at(now);
            return;
        }
        if pn >= self.rx.cum + PN_WINDOW {
            self.stats.rx_refused += 1;
            return;
        }
        if self.state == State::Draining && !matches!(r.kind, Kind::Close { .. }) {
            // Acknowledge (without processing) what the peer sent before or after its
            // CLOSE, so its own close can complete: an unacknowledged packet would keep
            // the peer probing until it declared us dead.
            self.rx.insert(pn);
            self.ack_due_at(now);
            return;
        }
        match r.kind {
            Kind::Data {
                msg_id,
                msg_len,
                offset,
            } => {
                if !self.on_data(msg_id, msg_len, offset, buf) {
                    self.stats.rx_refused += 1;
                    return;
                }
            }
            Kind::Batch { msg_id, count } => {
                if !self.on_batch(msg_id, count, buf) {
                    self.stats.rx_refused += 1;
                    return;
                }
            }
            Kind::Close { code } => {
                if self.state != State::Draining {
                    self.state = State::Draining;
                    self.drain_until = Some(now + self.peer_retry_horizon());
                    self.closed_reported = true;
                    self.events
                        .push_back(Event::Closed(CloseReason::PeerClose(code)));
                    self.send_msgs.clear();
                    self.retx.clear();
                }
                self.ack_due_at(now);
            }
            Kind::Nack { first, count } => self.on_nack(now, first, count),
            _ => {}
        }
        let prev_largest = self.rx.largest;
        self.rx.insert(pn);
        if ecn_ce {
            self.ecn_ce = self.ecn_ce.wrapping_add(1);
        }
        self.echo_ts = r.tx_timestamp;
        self.echo_rx = now;
        self.ack_count += 1;
        let in_order = prev_largest.map_or(pn == 0, |l| pn == l + 1) && self.rx.cum == pn + 1;
        if !in_order || r.flags & FLAG_ACK_NOW != 0 || self.ack_count >= 2 {
            self.ack_due_at(now);
        } else if self.ack_deadline.is_none() {
            self.ack_deadline = Some(now + self.cfg.max_ack_delay);
        }
    }

    fn on_nack(&mut self, now: Instant, first: u64, count: u32) {
        let guard = self.min_rtt / 2;
        let end = first.saturating_add(count.min(SACK_BITS as u32) as u64);
        for pn in first.max(self.sent_base)..end.min(self.next_pn) {
            let i = (pn - self.sent_base) as usize;
            if self.sent[i].state == PktState::InFlight && now >= self.sent[i].time + guard {
                self.mark_lost(i);
            }
        }
    }

    /// Place a DATA payload. False: refused (not recorded; the peer will retransmit).
    fn on_data(&mut self, msg_id: u64, msg_len: u64, offset: u64, buf: PktBuf) -> bool {
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
                let dest = match self.targets.front() {
                    Some(t) if t.capacity() >= msg_len => match self.targets.pop_front() {
                        Some(t) => Dest::Target(t),
                        None => return false,
                    },
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
                            return false;
                        }
                        let used = self.budget.used.fetch_add(msg_len, Ordering::Relaxed);
                        if used + msg_len > self.budget.limit {
                            self.budget.used.fetch_sub(msg_len, Ordering::Relaxed);
                            return false;
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
                if parts.len() >= seg_cap(*got + plen) || *moved > 64 * seg_cap(*len) {
                    // Packets too small for the slots they hold, or too much reordering:
                    // copy the message instead.
                    let mut v = vec![0u8; *len as usize];
                    for (o, p) in parts.drain(..) {
                        v[o as usize..o as usize + p.len()].copy_from_slice(&p);
                    }
                    v[offset as usize..end as usize].copy_from_slice(&buf);
                    drop(buf);
                    // The copied bytes no longer hold receive buffers (as on the Vec path).
                    self.rx_released += *got + plen;
                    self.stats.rx_segment_copied += 1;
                    *dest = Dest::Vec(v);
                } else {
                    parts.insert(i, (offset, buf.freeze()));
                }
            }
        }
        *got += plen;
        self.rx_distinct += plen;
        if *got >= *len {
            let len = *len;
            let RxSlot::Partial { dest, .. } =
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
        }
        true
    }

    /// Place the messages of a BATCH packet (`buf`: its length table and messages), each as
    /// if it had come alone in a DATA packet: a view of the packet buffer, delivered whole,
    /// counted against the credit by its bytes. Messages already received are skipped. False:
    /// refused as a whole (not recorded; the peer will retransmit).
    fn on_batch(&mut self, first: u64, count: u16, buf: PktBuf) -> bool {
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

    fn on_ack(&mut self, now: Instant, a: &AckRepr) {
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
        let hold = Duration::from_nanos(a.hold_ns as u64);
        let mut rtt = None;
        let mut fabric = None;
        if a.echo_timestamp != 0 && a.echo_timestamp <= now.as_nanos() {
            let r = now.saturating_duration_since(Instant::from_nanos(a.echo_timestamp));
            rtt = Some(r);
            let f = r.saturating_sub(hold);
            fabric = Some(f);
            let sample = if f >= self.min_rtt.min(r) && self.has_rtt {
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
                srtt: self.srtt,
                min_rtt: self.min_rtt,
                in_flight: self.in_flight,
                ecn_ce_delta: ce_delta,
                newest_sent: newest.map_or(now, |n| n.0),
            },
        );
        self.detect_loss(now);
        if self.state == State::Closing && self.close_sent && self.sent.is_empty() {
            self.finish(now, CloseReason::LocalClose(self.close_code));
        }
    }

    fn rtt_sample(&mut self, r: Duration) {
        let i = (self.rtt_ring_head + self.rtt_ring_len) % RTT_RING;
        self.rtt_ring[i] = r.as_nanos().min(u32::MAX as u128) as u32;
        if self.rtt_ring_len == RTT_RING {
            self.rtt_ring_head = (self.rtt_ring_head + 1) % RTT_RING;
        } else {
            self.rtt_ring_len += 1;
        }
        if !self.has_rtt {
            self.has_rtt = true;
            self.srtt = r;
            self.rttvar = r / 2;
            self.min_rtt = r;
            self.update_pto();
            return;
        }
        self.min_rtt = self.min_rtt.min(r);
        let diff = self.srtt.abs_diff(r);
        self.rttvar = (self.rttvar * 3 + diff) / 4;
        self.srtt = (self.srtt * 7 + r) / 8;
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
                    if now.saturating_duration_since(s.time) < self.min_rtt / 2 {
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

    fn ack_segment(&mut self, msg_id: u64, len: u64) {
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

impl Drop for Connection {
    fn drop(&mut self) {
        if self.rx_reasm > 0 {
            self.budget.used.fetch_sub(self.rx_reasm, Ordering::Relaxed);
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
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
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
