//! Why the memif control channel refused or dropped a connection ([`ControlError`]), and the
//! small helpers that name a socket failure or a message type in it.

use std::time::Duration;

use super::msg::{Msg, MsgError, VERSION};
use super::MAX_REGIONS;

/// Why a control connection was refused or dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// A datagram that is not a control message (wrong size, unknown type).
    #[error("malformed control message: {0}")]
    Malformed(#[from] MsgError),
    /// A datagram longer than a control message.
    #[error("truncated control message")]
    Truncated,
    /// A control message with more ancillary data (descriptors) than one may carry: the
    /// kernel cut it (`MSG_CTRUNC`). The descriptors that arrived were closed.
    #[error("control message with too much ancillary data (more descriptors than fit)")]
    CtlTruncated,
    /// The peer speaks no protocol version we do.
    #[error("incompatible memif version (peer {min:#06x}..={max:#06x}, we speak {VERSION:#06x})")]
    Version {
        /// Lowest version the peer offers.
        min: u16,
        /// Highest version the peer offers.
        max: u16,
    },
    /// No interface with this id on the socket.
    #[error("ID {0} not found")]
    UnknownId(u32),
    /// The interface already has a peer.
    #[error("interface {0} already connected")]
    AlreadyConnected(u32),
    /// Interface mode other than Ethernet.
    #[error("only ethernet mode supported (got mode {0})")]
    Mode(u8),
    /// The secret was missing or wrong.
    #[error("incorrect secret")]
    Secret,
    /// A message that is not valid in the current state of the handshake.
    #[error("unexpected {got} message while {state}")]
    Unexpected {
        /// The message type.
        got: &'static str,
        /// What we were waiting for.
        state: &'static str,
    },
    /// ADD_REGION / ADD_RING without its file descriptor.
    #[error("{0} without a file descriptor")]
    MissingFd(&'static str),
    /// Regions must be added in order, 0 first, at most [`MAX_REGIONS`].
    #[error("invalid region index {index} (expected {expected}, at most {MAX_REGIONS} regions)")]
    RegionIndex {
        /// Index received.
        index: u16,
        /// Index expected.
        expected: u16,
    },
    /// A region of size 0, larger than its file, or larger than we can map.
    #[error("invalid region {index} size {size} (file holds {file})")]
    RegionSize {
        /// Region index.
        index: u16,
        /// Size claimed.
        size: u64,
        /// Size of the file passed.
        file: u64,
    },
    /// The peer's regions, this one included, add up to more than
    /// [`MemifConfig::max_peer_region_bytes`](super::MemifConfig::max_peer_region_bytes)
    /// allows (by default what the interface's queues need at the largest ring size we offer,
    /// with slack): a peer cannot make us map, or fault in, memory of its choosing.
    // Short: a DISCONNECT reason holds 96 bytes.
    #[error("region {index} ({size} bytes) over the limit: peer regions {total} > {limit} bytes")]
    RegionTooLarge {
        /// Region index.
        index: u16,
        /// Size claimed.
        size: u64,
        /// Bytes of all the peer's regions with this one.
        total: u64,
        /// The limit.
        limit: u64,
    },
    /// A region whose file is not sealed against shrinking, refused because
    /// [`MemifConfig::require_sealed_regions`](super::MemifConfig::require_sealed_regions) is
    /// set.
    #[error(
        "region {index} is not sealed against shrinking (F_SEAL_SHRINK) and sealed regions are \
         required"
    )]
    RegionUnsealed {
        /// Region index.
        index: u16,
    },
    /// Mapping a region failed.
    #[error("cannot map region {index}: {reason}")]
    RegionMap {
        /// Region index.
        index: u16,
        /// The failure.
        reason: String,
    },
    /// A ring index beyond the interface's queue pairs, or given twice.
    #[error("invalid ring index {index} (queue pairs: {max})")]
    RingIndex {
        /// Index received.
        index: u16,
        /// Queue pairs configured.
        max: u16,
    },
    /// A ring in a region that was not added.
    #[error("ring in unknown region {0}")]
    RingRegion(u16),
    /// A ring's interrupt descriptor that is not an eventfd (a pipe, a socket, a file): we
    /// write to it from the data path, and only a non-blocking eventfd cannot stall us.
    #[error("ring {index}'s interrupt fd is not an eventfd ({kind}); refused")]
    InterruptFd {
        /// Ring index.
        index: u16,
        /// What it is instead (its `/proc/self/fd` link), or why it could not be checked.
        kind: String,
    },
    /// A ring that does not fit inside its region, or is misaligned.
    #[error(
        "ring at offset {offset} ({size} bytes) outside region of {region_len} bytes or misaligned"
    )]
    RingBounds {
        /// Offset of the ring.
        offset: u32,
        /// Bytes the ring needs.
        size: usize,
        /// Length of the region.
        region_len: usize,
    },
    /// A ring size outside 1..=14 (log2).
    #[error("invalid ring size 2^{0}")]
    RingSize(u8),
    /// A ring without the memif cookie.
    #[error("ring {index} has cookie {cookie:#x}, not memif's")]
    RingCookie {
        /// Ring index.
        index: u16,
        /// Cookie found.
        cookie: u32,
    },
    /// CONNECT before at least one ring in each direction.
    #[error("no complete queue pair (rings 0.. in both directions) at CONNECT")]
    NoRings,
    /// HELLO offers nothing usable (no rings, no regions or ring size 0).
    #[error("server offers no usable resources: {0}")]
    Hello(&'static str),
    /// The peer sent DISCONNECT.
    #[error("peer disconnected: {0}")]
    PeerDisconnect(String),
    /// The peer closed the socket.
    #[error("peer closed the control socket")]
    Closed,
    /// More connections were waiting for their handshake than
    /// [`MemifConfig::max_pending_handshakes`](super::MemifConfig::max_pending_handshakes):
    /// the oldest was dropped to make room for a new one.
    #[error("too many pending control connections (at most {0}); the oldest was dropped")]
    TooManyPending(usize),
    /// The peer's user id (`SO_PEERCRED`) is not
    /// [`MemifConfig::allowed_uid`](super::MemifConfig::allowed_uid).
    #[error("peer uid {uid} not allowed (only uid {allowed})")]
    PeerUid {
        /// The peer's uid, or `u32::MAX` when it could not be read.
        uid: u32,
        /// The uid allowed.
        allowed: u32,
    },
    /// The handshake did not finish in time (a stuck or hostile peer would otherwise hold the
    /// interface).
    #[error("handshake not finished within {0:?}")]
    Timeout(Duration),
    /// A ring of the live connection stayed inconsistent, so that no frame could move on
    /// it, for [`MemifConfig::wedge_timeout`](super::MemifConfig::wedge_timeout) while our
    /// port kept polling it: the connection was torn down (a client reconnects, a server
    /// accepts again). `ring` is `c2s` or `s2c`, `what` the inconsistency.
    #[error("{ring} ring {queue} wedged: {what} for {ms} ms")]
    RingWedged {
        /// `c2s` (client to server) or `s2c`.
        ring: &'static str,
        /// Queue pair.
        queue: u16,
        /// What was wrong: an index out of range, a posted buffer outside the regions or of
        /// length 0, a descriptor chain never finished.
        what: &'static str,
        /// How long it stayed so, as the control thread saw it.
        ms: u64,
    },
    /// We could not build our side (memory, eventfd).
    #[error("local setup failed: {0}")]
    Setup(String),
    /// A socket call failed.
    #[error("control socket {op}: errno {errno}")]
    Socket {
        /// The call.
        op: &'static str,
        /// Its errno.
        errno: i32,
    },
}

impl ControlError {
    /// The server refused our handshake because the interface we asked for already has a
    /// peer: its DISCONNECT said so (ours: "interface N already connected"; DPDK's and
    /// libmemif's: "Already connected").
    pub fn interface_busy(&self) -> bool {
        matches!(self, ControlError::PeerDisconnect(r)
            if r.to_ascii_lowercase().contains("already connected"))
    }

    /// The server refused our handshake because it has no interface with the id we asked
    /// for (ours and DPDK's: "ID N not found").
    pub fn interface_unknown(&self) -> bool {
        matches!(self, ControlError::PeerDisconnect(r)
            if r.starts_with("ID ") && r.ends_with("not found"))
    }
}

pub(super) fn sock_err(op: &'static str, e: std::io::Error) -> ControlError {
    ControlError::Socket {
        op,
        errno: e.raw_os_error().unwrap_or(0),
    }
}

pub(super) fn type_name(m: &Msg) -> &'static str {
    match m {
        Msg::None => "NONE",
        Msg::Ack => "ACK",
        Msg::Hello { .. } => "HELLO",
        Msg::Init { .. } => "INIT",
        Msg::AddRegion { .. } => "ADD_REGION",
        Msg::AddRing { .. } => "ADD_RING",
        Msg::Connect { .. } => "CONNECT",
        Msg::Connected { .. } => "CONNECTED",
        Msg::Disconnect { .. } => "DISCONNECT",
    }
}
