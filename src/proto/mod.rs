//! The sans-IO transport: [`Endpoint`] demultiplexes datagrams to [`Connection`]s, which turn
//! messages into DATA packets and back, reliably and under flow and congestion control.
//!
//! Contract:
//! - No clock, no socket, no global, no thread: every input carries `now` ([`Instant`], ns on
//!   the caller's clock), every output is polled. Randomness (connection ids) comes from a
//!   seed the caller supplies; the handshake cookie key is the caller's. (One exception to
//!   "no global": `EndpointConfig::default()` draws the process's cookie key from the OS
//!   once, see [`EndpointConfig::cookie_key`].)
//! - Inputs: [`Endpoint::handle`] (a received datagram, in a [`PktBuf`]),
//!   [`Endpoint::handle_timeout`], and application calls on a connection
//!   ([`Connection::send`], [`Connection::close`], [`Connection::post_target`]).
//!   Outputs: [`Endpoint::poll_transmit`] (datagrams to send), [`Endpoint::poll_incoming`]
//!   (new server connections), [`Connection::poll_event`], [`Connection::poll_recv`] (whole
//!   messages), [`Endpoint::poll_timeout`] (the next time `handle_timeout` is due).
//! - Call order, each loop iteration: feed every received datagram to `handle`; call
//!   `handle_timeout(now)`; make application calls; drain `poll_transmit` until `None`;
//!   drain `poll_incoming`, `poll_event` and `poll_recv`; sleep/poll until `poll_timeout()`
//!   or the next datagram. Outputs are only valid after the inputs of the same `now`.
//! - Messages are delivered whole and exactly once, in completion order (or in send order
//!   with [`ConnectionConfig::ordered`]). A message that fits one packet reaches the
//!   application as [`MsgData::Packet`], a view of the receive buffer: zero copies (small
//!   messages that were queued together may share one packet and so one buffer, see
//!   [`ConnectionConfig::batch`]). A larger
//!   message is copied once from each packet into a contiguous buffer ([`MsgData::Buffer`])
//!   or into a [`RecvTarget`] the application posted ([`MsgData::Target`]); with
//!   [`ConnectionConfig::rx_segments`] it is instead delivered as its packet buffers
//!   ([`MsgData::Segments`], a [`RecvSegments`]: zero copies). The sender copies
//!   each payload byte once, from the application's `Bytes` into the transmit buffer (and
//!   again only for a retransmission).
//! - Memory a peer can make us hold is bounded, and grows with the bytes it sent, never
//!   with the lengths it claims: packet buffers by the credit we grant and, for messages not
//!   yet taken, [`ConnectionConfig::max_rx_slots`]; reassembly buffers grow with the bytes
//!   that arrive (plus holes the credit bounds and at most 1 MiB per connection allocated
//!   ahead), charged to per-connection and per-endpoint budgets; connections by
//!   [`EndpointConfig::max_connections`] and, per source address,
//!   [`EndpointConfig::max_connections_per_source`]; queues by fixed capacities. Exhaustion
//!   is a `WouldBlock` for the application and a counted drop for the peer (it retransmits),
//!   never growth; a failed allocation is a counted drop too, never an abort.
//! - Nothing a peer sends makes this code panic.
//!
//! Allocation: none per packet in steady state. Per connection: its queues (small at
//! creation, grown to the bounds their windows set while the connection warms up, then kept)
//! and the controller box. Per multi-packet message received: the reassembly buffer (unless a
//! [`RecvTarget`] was posted; one allocation while the connection's buffers hold less than
//! 1 MiB ahead of what arrived, else it grows geometrically with what arrives), or with
//! `rx_segments` the list of its packet buffers (one small allocation up to 32 packets). A
//! single-packet message past [`ConnectionConfig::max_rx_slots`] is copied into a buffer of
//! its own. `PktBytes -> bytes::Bytes` costs one small allocation in
//! `bytes` if the application converts.

pub mod cc;
mod connection;
pub mod cookie;
mod endpoint;
mod segments;
// The virtual-time `Pair` harness of the protocol tests and benchmarks: not API (cargo
// feature `testing`, which only the crate's own dev builds turn on).
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;

use core::fmt;
use std::time::Duration;

/// The time type of every `now` and deadline: [`crate::time::Instant`].
pub use crate::time::Instant;
pub use connection::{Connection, ConnectionStats, SendError, Side, State};
pub use endpoint::{
    ConnectError, ConnectionHandle, Endpoint, EndpointConfig, EndpointStats, Transmit,
};
pub use segments::{Parts, RecvSegments};

use crate::mem::{PktBuf, PktBytes};

/// Most messages a sender may have started but not completed, and the window of message
/// ids a receiver tracks (a wire-level constant, see docs/WIRE.md).
pub const MSG_WINDOW: u64 = 1024;
/// Packet numbers a receiver tracks beyond its cumulative ack, and the most packets a sender
/// has outstanding (a wire-level constant, see docs/WIRE.md).
pub const PN_WINDOW: u64 = 4096;

/// Per-connection settings.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Largest datagram (transport header + payload) this side sends and accepts.
    pub max_datagram: u32,
    /// Credit granted to the peer: bytes of payload it may have outstanding with us.
    pub rx_window: u64,
    /// Bytes of reassembly buffers this connection may hold. Charged by what the buffers
    /// hold (they grow with the bytes that arrive, see [`MsgData::Buffer`]), not by the
    /// lengths messages claim. Default 2 GiB.
    pub max_rx_buffer: u64,
    /// Largest message accepted (and sent).
    pub max_message: u64,
    /// Most messages queued for sending and not yet acknowledged (<= [`MSG_WINDOW`]).
    pub max_send_msgs: usize,
    /// Deliver messages in send order instead of completion order.
    pub ordered: bool,
    /// This side's link delivers frames unaltered ([`Offloads::intact`], which the `Stack`
    /// copies here from its port): advertise `FLAG_INTACT` in the handshake, and when the
    /// peer advertised it too, send this connection's datagrams without a UDP checksum
    /// ([`Transmit::checksum`] false). Either side alone never omits it. Off by default.
    ///
    /// [`Offloads::intact`]: crate::pmd::Offloads::intact
    pub link_intact: bool,
    /// RTT assumed before the first sample.
    pub initial_rtt: Duration,
    /// Floor of the retransmission timeout.
    pub min_rto: Duration,
    /// Ceiling of the backed-off retransmission timeout.
    pub max_rto: Duration,
    /// Longest an ACK is delayed.
    pub max_ack_delay: Duration,
    /// Close the connection after this long without hearing from the peer.
    pub idle_timeout: Duration,
    /// Consecutive probe timeouts without an answer after which the peer is declared dead.
    pub max_probes: u32,
    /// Handshake attempts before giving up.
    pub handshake_attempts: u32,
    /// Most posted receive targets.
    pub max_targets: usize,
    /// Most packet buffers (pool slots) this connection keeps for single-packet messages
    /// received and not yet taken by the application ([`Connection::poll_recv`]). Past it, a
    /// message is copied out of its buffer into a heap buffer of its length (delivered as
    /// [`MsgData::Buffer`], charged to [`max_rx_buffer`](Self::max_rx_buffer) and the
    /// endpoint's budget; refused, for the peer to retransmit, when over them) and the slot
    /// goes back to the pool; counted in `ConnectionStats::rx_slots_copied`. Default 256.
    ///
    /// Why: the credit ([`rx_window`](Self::rx_window)) counts bytes, so without this bound
    /// a peer sending empty messages to a connection nobody reads (one not accepted yet)
    /// pins a slot per message, up to the message window (1024) per connection: nine such
    /// connections exhaust a pool of 8192 slots. 256 slots (512 KiB of 2 KiB slots) cover a
    /// reader a few bursts behind without a copy. The copy, not a refusal, past it: an empty
    /// message needs no credit, so its sender could not tell a refusal from a loss and would
    /// probe until it gave the connection up. The messages of one BATCH packet share its slot
    /// (each counts `1/count` of it), so a reader behind by a few thousand small batched
    /// messages holds a few dozen slots and nothing is copied. Segments messages ([`rx_segments`](Self::rx_segments)) are
    /// bounded by the credit instead.
    pub max_rx_slots: usize,
    /// Accept BATCH packets (advertised with `FLAG_BATCH` in the handshake) and, when the
    /// peer accepts them too, pack small messages that are queued together into one BATCH
    /// packet instead of one DATA packet each. Never waits to fill a packet. Off: behave as
    /// an implementation without BATCH (one message per packet; a BATCH received is dropped).
    pub batch: bool,
    /// Zero-copy receive of multi-packet messages: when no posted [`RecvTarget`] fits, keep
    /// each packet's buffer and deliver the message as [`MsgData::Segments`] (its packet
    /// buffers in offset order) instead of copying it into a zeroed reassembly buffer
    /// ([`MsgData::Buffer`]). Off (the default): messages are copied as before.
    ///
    /// A segments message holds one pool slot per packet until the application drops it, and
    /// its bytes count against the credit ([`rx_window`](Self::rx_window)) until
    /// [`Connection::poll_recv`] hands it out, as a single-packet message's do: the receive
    /// pool needs about `rx_window / payload` slots beyond what the port keeps. It also
    /// charges its parts' bytes to the reassembly budgets
    /// ([`max_rx_buffer`](Self::max_rx_buffer), the endpoint's) as they arrive. A message longer than `rx_window` (it could
    /// never complete under a credit it holds) and one whose packets are much smaller than
    /// the datagram allows (more than `2 * ceil(len / payload) + 2` parts: a slot per few
    /// bytes) or that arrive so far out of order that keeping the parts sorted would cost
    /// more than 64 moves of every part (a sender in reverse order) are copied into a
    /// reassembly buffer instead (from the packet where that shows; counted in
    /// `ConnectionStats::rx_segment_copied`).
    pub rx_segments: bool,
}

impl Default for ConnectionConfig {
    fn default() -> ConnectionConfig {
        ConnectionConfig {
            max_datagram: 1472,
            rx_window: 8 << 20,
            max_rx_buffer: 2 << 30,
            max_message: 2 << 30,
            max_send_msgs: 512,
            ordered: false,
            link_intact: false,
            initial_rtt: Duration::from_micros(100),
            min_rto: Duration::from_micros(500),
            max_rto: Duration::from_millis(200),
            max_ack_delay: Duration::from_micros(20),
            idle_timeout: Duration::from_secs(5),
            max_probes: 12,
            handshake_attempts: 8,
            max_targets: 64,
            max_rx_slots: 256,
            batch: true,
            rx_segments: false,
        }
    }
}

/// Connection events.
#[derive(Debug)]
pub enum Event {
    /// The handshake completed.
    Connected,
    /// The peer acknowledged every byte of this message (the sender's completion).
    Acked {
        /// Message id returned by [`Connection::send`].
        msg_id: u64,
    },
    /// The connection ended; it is the last event. Its resources are freed once drained.
    Closed(CloseReason),
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    /// We closed it gracefully and the peer confirmed.
    #[error("closed locally (code {0})")]
    LocalClose(u32),
    /// The peer closed it gracefully.
    #[error("closed by peer (code {0})")]
    PeerClose(u32),
    /// We reset it.
    #[error("reset locally (code {0})")]
    LocalReset(u32),
    /// The peer reset it.
    #[error("reset by peer (code {0})")]
    PeerReset(u32),
    /// Nothing heard from the peer for the idle timeout.
    #[error("idle timeout")]
    IdleTimeout,
    /// The peer stopped answering probes (dead peer).
    #[error("peer unresponsive")]
    PeerUnresponsive,
    /// The handshake did not complete.
    #[error("handshake timed out")]
    HandshakeTimeout,
}

/// A destination the application posts in advance for a multi-packet message: each
/// packet's payload is written once at its final offset (the hook GPU memory uses:
/// `socket::Socket::recv_into_gpu`).
///
/// A target is `Any` so that whoever posted it can take its own type back from
/// [`MsgData::Target`] (upcast the box to `Box<dyn Any + Send>` and downcast it).
pub trait RecvTarget: std::any::Any + Send + fmt::Debug {
    /// Bytes the target can hold; it receives a message only if the message fits.
    fn capacity(&self) -> u64;
    /// Write `data` at `offset` (`offset + data.len() <= capacity()` is guaranteed).
    fn write_at(&mut self, offset: u64, data: &[u8]);
    /// Take the packet buffer whose payload belongs at `offset` (same guarantee as
    /// [`write_at`](Self::write_at)). The default writes it with `write_at` and drops it; a
    /// target that copies asynchronously (a GPU's copy engine) keeps the buffer until its copy
    /// completed. The transport counts the bytes as released when this returns, so a target
    /// that keeps buffers must bound how many it keeps.
    fn write_buf(&mut self, offset: u64, buf: PktBuf) {
        self.write_at(offset, &buf);
    }
}

/// A message's bytes as delivered.
#[derive(Debug)]
pub enum MsgData {
    /// Single-packet message: a view of the receive buffer (0 copies).
    Packet(PktBytes),
    /// Multi-packet message reassembled into one buffer (1 copy per byte), or a
    /// single-packet message copied out of its packet buffer because the connection held
    /// [`ConnectionConfig::max_rx_slots`] of them. The buffer grows with the bytes that arrive
    /// (fallibly: a failed allocation refuses the packet, counted in
    /// `ConnectionStats::rx_alloc_failed`), not with the length the first packet claims.
    Buffer(bytes::Bytes),
    /// Multi-packet message written into a posted target (1 copy per byte, no allocation).
    Target(Box<dyn RecvTarget>),
    /// Multi-packet message as its packet buffers, in offset order (0 copies, one small
    /// allocation for the list; only with [`ConnectionConfig::rx_segments`]).
    Segments(RecvSegments),
}

/// A received message.
#[derive(Debug)]
pub struct RecvMsg {
    /// The sender's message id.
    pub id: u64,
    /// Length in bytes.
    pub len: u64,
    /// The bytes.
    pub data: MsgData,
}

impl RecvMsg {
    /// The bytes as `bytes::Bytes` (no copy for `Packet`/`Buffer`; `Segments` of several
    /// parts are copied into one new buffer, see [`RecvSegments::to_bytes`]; `None` for a
    /// target).
    pub fn into_bytes(self) -> Option<bytes::Bytes> {
        match self.data {
            MsgData::Packet(p) => Some(p.into()),
            MsgData::Buffer(b) => Some(b),
            MsgData::Segments(s) => Some(s.to_bytes()),
            MsgData::Target(_) => None,
        }
    }
    /// The bytes, if they are contiguous in host memory this message owns: `None` for a
    /// target and for `Segments` of more than one part (read those with
    /// [`segments`](Self::segments)).
    pub fn as_slice(&self) -> Option<&[u8]> {
        match &self.data {
            MsgData::Packet(p) => Some(p),
            MsgData::Buffer(b) => Some(b),
            MsgData::Segments(s) => s.as_single(),
            MsgData::Target(_) => None,
        }
    }
    /// The packet buffers of a message delivered as [`MsgData::Segments`].
    pub fn segments(&self) -> Option<&RecvSegments> {
        match &self.data {
            MsgData::Segments(s) => Some(s),
            _ => None,
        }
    }
    /// The message's bytes copied into `dst`, whatever form they came in (`dst.len()` must
    /// be the message's length). False for a target (nothing copied).
    ///
    /// # Panics
    /// If `dst.len() != self.len` for a host message.
    pub fn copy_to_slice(&self, dst: &mut [u8]) -> bool {
        match &self.data {
            MsgData::Packet(p) => dst.copy_from_slice(p),
            MsgData::Buffer(b) => dst.copy_from_slice(b),
            MsgData::Segments(s) => s.copy_to_slice(dst),
            MsgData::Target(_) => return false,
        }
        true
    }
}
