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
//!
//! Acknowledgement: at once for a packet out of order, one flagged `ACK_NOW`, or the second
//! packet received since our last ACK; otherwise at the delayed-ACK deadline
//! ([`ConnectionConfig::max_ack_delay`](crate::proto::ConnectionConfig::max_ack_delay)). A
//! packet we answer with DATA (request and response) does not count toward that second one,
//! so a conversation is acknowledged once per `max_ack_delay`, not by an ACK frame per
//! exchange. A sender sets `ACK_NOW` on the packet that closes its window, and on CLOSE and
//! PROBE.

mod recovery;
mod recv;
mod send;
mod stats;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::cc::Controller;
use super::{
    CloseReason, ConnectionConfig, Event, Instant, RecvMsg, RecvTarget, MSG_WINDOW, PN_WINDOW,
};
use crate::mem::PktBuf;
use crate::wire::transport::{Kind, Repr, DATA_HEADER_LEN, FLAG_ACK_NOW, FLAG_BATCH, FLAG_INTACT};
use recovery::{RttEstimator, Sent};
use recv::{Dest, RxPns, RxSlot, PN_WORDS};
use send::TxMsg;

pub use stats::ConnectionStats;

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
    rtt: RttEstimator,
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
    /// How long our loop had stalled before it read that packet: it may have waited that
    /// long before `echo_rx`; echoed as part of the hold time, flagged
    /// ([`HOLD_STALLED`](recv::HOLD_STALLED)).
    echo_stall: Duration,
    ecn_ce: u32,
    rx_base: u64,
    next_deliver: u64,
    rx_msgs: VecDeque<RxSlot>,
    /// Whole messages for [`poll_recv`](Self::poll_recv), each with the slot units it holds.
    ready: VecDeque<(RecvMsg, u32)>,
    targets: VecDeque<Box<dyn RecvTarget>>,
    rx_distinct: u64,
    rx_released: u64,
    rx_advertised: u64,
    rx_reasm: u64,
    /// Zeros the reassembly buffers hold before parts that came ahead of others (counted
    /// against the credit: see `on_data`).
    rx_gap: u64,
    /// Bytes the reassembly buffers hold allocated past their furthest part (bounded: see
    /// `recv::REASM_AHEAD`).
    rx_ahead: u64,
    /// The pool slots that single-packet messages received and not yet taken by the
    /// application hold, in `recv::SLOT_UNITS` per slot (bounded by
    /// [`ConnectionConfig::max_rx_slots`] slots). A DATA packet's message holds a whole slot;
    /// the messages of one BATCH packet share its slot, a `1/count` share each (rounded up).
    rx_slot_units: u64,

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
            rtt: RttEstimator::new(cfg.initial_rtt),
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
            echo_stall: Duration::ZERO,
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
            rx_gap: 0,
            rx_ahead: 0,
            rx_slot_units: 0,
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

    /// The congestion controller.
    pub fn controller(&self) -> &dyn Controller {
        &*self.cc
    }

    /// True once the connection is over and its last event was taken.
    pub fn is_drained(&self) -> bool {
        self.state == State::Closed && self.events.is_empty() && self.reset_pending.is_none()
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
            if let RxSlot::Partial {
                got, dest, charged, ..
            } = slot
            {
                // (Dropping a Segs list below gives its packet buffers back.)
                self.rx_reasm -= *charged;
                self.budget.used.fetch_sub(*charged, Ordering::Relaxed);
                if let Dest::Vec(v) = dest {
                    self.rx_gap -= v.len() as u64 - *got;
                    self.rx_ahead -= *charged - v.len() as u64;
                }
                *slot = RxSlot::Empty;
            }
        }
        self.targets.clear();
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

    /// Process a packet the endpoint routed here. `buf` holds the DATA payload (the header
    /// already consumed), or nothing for other types.
    #[allow(clippy::collapsible_match)] // `buf` moves into on_data; a guard cannot move it
    /// One packet for this connection, read at `now` after the driving loop stalled for
    /// `stall` (zero: it did not; see [`EndpointConfig::stall_threshold`]).
    ///
    /// [`EndpointConfig::stall_threshold`]: crate::proto::EndpointConfig::stall_threshold
    pub(crate) fn handle_packet(
        &mut self,
        now: Instant,
        r: &Repr,
        buf: PktBuf,
        ecn_ce: bool,
        stall: Duration,
    ) {
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
                    self.on_ack(now, &a, stall);
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
        self.echo_stall = stall;
        self.ack_count += 1;
        let in_order = prev_largest.map_or(pn == 0, |l| pn == l + 1) && self.rx.cum == pn + 1;
        if !in_order || r.flags & FLAG_ACK_NOW != 0 || self.ack_count >= 2 {
            self.ack_due_at(now);
        } else if self.ack_deadline.is_none() {
            self.ack_deadline = Some(now + self.cfg.max_ack_delay);
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
