//! The bypass transport header (version 1): a zero-copy view over untrusted bytes and a
//! high-level [`Repr`].
//!
//! Layout and byte order are specified in `docs/WIRE.md`; every field is fixed-size and
//! little-endian. A header is a 36-byte common part followed by a part whose size depends on
//! the packet type (see [`header_len`]). `DATA` packets carry their payload after the header;
//! `BATCH` packets carry a table of message lengths and then the messages back to back (see
//! [`batch_entries`]); no other type carries a payload.
//!
//! [`Packet::new_checked`] validates the version, the type and the lengths, so every accessor
//! afterwards is in bounds; [`Repr::parse`] additionally checks the DATA invariants
//! (`offset + payload <= msg_len`) and the BATCH invariants (the length table and the
//! messages fill the datagram exactly). Nothing here panics on any input.
//!
//! Files: `mod.rs` holds the constants, the field layout and the packet types; `packet.rs`
//! the [`Packet`] view, `repr.rs` [`Repr`] (parse and emit), `batch.rs` the BATCH body.

mod batch;
mod packet;
mod repr;
#[cfg(test)]
mod tests;

pub use batch::{batch_entries, BatchEntries};
pub use packet::Packet;
pub use repr::{AckRepr, Kind, Repr};

/// The header version this module reads and writes.
pub const VERSION: u8 = 1;

/// Length of the common part of every header.
pub const COMMON_LEN: usize = 36;
/// Length of a DATA header (payload follows).
pub const DATA_HEADER_LEN: usize = COMMON_LEN + 24;
/// Length of an ACK header.
pub const ACK_HEADER_LEN: usize = COMMON_LEN + 48;
/// Length of every other header (CONNECT, ACCEPT, NACK, CLOSE, RESET, PROBE).
pub const CONTROL_HEADER_LEN: usize = COMMON_LEN + 12;
/// Length of a BATCH header (the length table and the messages follow).
pub const BATCH_HEADER_LEN: usize = COMMON_LEN + 12;
/// Bytes one message adds to a BATCH packet's length table.
pub const BATCH_ENTRY_LEN: usize = 2;
/// The longest header of any type.
pub const MAX_HEADER_LEN: usize = ACK_HEADER_LEN;
/// Number of packet numbers a selective-ack bitmap covers.
pub const SACK_BITS: u64 = 64;

/// Flag: the receiver should acknowledge this packet at once (probes, handshake, close).
pub const FLAG_ACK_NOW: u16 = 1 << 0;
/// Flag on CONNECT and ACCEPT: the sender accepts BATCH packets. A peer that did not set it
/// (an older implementation, which ignores unknown flags) never receives one.
pub const FLAG_BATCH: u16 = 1 << 1;
/// Flag on CONNECT and ACCEPT: the sender's link delivers frames bit-exact (memory shared with
/// the peer, such as memif), so datagrams to it may go without a UDP checksum. Datagrams on a
/// connection omit the checksum only when both sides set it; an implementation that does not
/// know the flag ignores it and always gets checksums.
pub const FLAG_INTACT: u16 = 1 << 2;

/// Parse errors. All of them mean "drop the datagram".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Shorter than the header its type needs.
    #[error("truncated header")]
    Truncated,
    /// A version this code does not speak.
    #[error("unknown version")]
    Version,
    /// A packet type this code does not know.
    #[error("unknown packet type")]
    Type,
    /// Field values that contradict each other (e.g. DATA beyond its message).
    #[error("malformed header")]
    Malformed,
}

/// Packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// A segment of a message.
    Data = 1,
    /// Cumulative and selective acknowledgement, timestamps, ECN and credit.
    Ack = 2,
    /// Explicit report of missing packet numbers.
    Nack = 3,
    /// Handshake: client hello (dst cid 0) and client confirm (dst cid = server's).
    Connect = 4,
    /// Handshake: the server's stateless answer carrying its cookie connection id.
    Accept = 5,
    /// Graceful close.
    Close = 6,
    /// Abortive close.
    Reset = 7,
    /// Ack-eliciting probe (tail-loss probe, keep-alive).
    Probe = 8,
    /// Several whole consecutive messages (sent only to a peer that set [`FLAG_BATCH`]).
    Batch = 9,
}

impl PacketType {
    /// Decode a type byte.
    #[inline]
    pub fn from_u8(v: u8) -> Option<PacketType> {
        Some(match v {
            1 => PacketType::Data,
            2 => PacketType::Ack,
            3 => PacketType::Nack,
            4 => PacketType::Connect,
            5 => PacketType::Accept,
            6 => PacketType::Close,
            7 => PacketType::Reset,
            8 => PacketType::Probe,
            9 => PacketType::Batch,
            _ => return None,
        })
    }
}

/// Header length for a packet type.
#[inline]
pub const fn header_len(ty: PacketType) -> usize {
    match ty {
        PacketType::Data => DATA_HEADER_LEN,
        PacketType::Ack => ACK_HEADER_LEN,
        PacketType::Batch => BATCH_HEADER_LEN,
        _ => CONTROL_HEADER_LEN,
    }
}

mod field {
    pub type Field = core::ops::Range<usize>;
    pub const VERSION: usize = 0;
    pub const TYPE: usize = 1;
    pub const FLAGS: Field = 2..4;
    pub const DST_CID: Field = 4..12;
    pub const SRC_CID: Field = 12..20;
    pub const PN: Field = 20..28;
    pub const TX_TS: Field = 28..36;
    // DATA
    pub const MSG_ID: Field = 36..44;
    pub const MSG_LEN: Field = 44..52;
    pub const OFFSET: Field = 52..60;
    // ACK
    pub const CUM: Field = 36..44;
    pub const SACK_BASE: Field = 44..52;
    pub const SACK_BITS: Field = 52..60;
    pub const ECHO_TS: Field = 60..68;
    pub const HOLD_NS: Field = 68..72;
    pub const ECN_CE: Field = 72..76;
    pub const CREDIT: Field = 76..84;
    // CONNECT, ACCEPT, NACK, CLOSE, RESET, PROBE
    pub const CTL_U64: Field = 36..44;
    pub const CTL_U32: Field = 44..48;
    // BATCH (MSG_ID as DATA); 46..48 reserved (0 on send, ignored on receipt)
    pub const BATCH_COUNT: Field = 44..46;
}

#[inline]
fn rd64(b: &[u8], f: field::Field) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[f]);
    u64::from_le_bytes(a)
}
#[inline]
fn rd32(b: &[u8], f: field::Field) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[f]);
    u32::from_le_bytes(a)
}
