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

use core::fmt;

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

/// A read/write view of a transport header (and, for DATA, its payload) over a buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
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

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer without checking it. Accessors may panic if the buffer is too short;
    /// use this only for buffers you sized yourself (emitting).
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap a buffer from the wire: checks version, type and length.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Check that the buffer holds a whole header of a known type and version.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < COMMON_LEN {
            return Err(Error::Truncated);
        }
        if b[field::VERSION] != VERSION {
            return Err(Error::Version);
        }
        let ty = PacketType::from_u8(b[field::TYPE]).ok_or(Error::Type)?;
        if b.len() < header_len(ty) {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version byte.
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }
    /// Raw type byte.
    #[inline]
    pub fn type_byte(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }
    /// Packet type (`None` for an unknown byte; `new_checked` rejects those).
    #[inline]
    pub fn packet_type(&self) -> Option<PacketType> {
        PacketType::from_u8(self.type_byte())
    }
    /// Header length for this packet's type.
    #[inline]
    pub fn header_len(&self) -> usize {
        self.packet_type().map_or(COMMON_LEN, header_len)
    }
    /// Flags.
    #[inline]
    pub fn flags(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_le_bytes([b[field::FLAGS.start], b[field::FLAGS.start + 1]])
    }
    /// Destination connection id (0 in a client hello).
    #[inline]
    pub fn dst_cid(&self) -> u64 {
        rd64(self.buffer.as_ref(), field::DST_CID)
    }
    /// Source connection id.
    #[inline]
    pub fn src_cid(&self) -> u64 {
        rd64(self.buffer.as_ref(), field::SRC_CID)
    }
    /// Packet sequence number.
    #[inline]
    pub fn pn(&self) -> u64 {
        rd64(self.buffer.as_ref(), field::PN)
    }
    /// Sender's transmit timestamp (ns on the sender's clock).
    #[inline]
    pub fn tx_timestamp(&self) -> u64 {
        rd64(self.buffer.as_ref(), field::TX_TS)
    }
    /// DATA: message id; BATCH: id of the first message.
    #[inline]
    pub fn msg_id(&self) -> u64 {
        rd64(self.buffer.as_ref(), field::MSG_ID)
    }
    /// DATA: total message length.
    #[inline]
    pub fn msg_len(&self) -> u64 {
        rd64(self.buffer.as_ref(), field::MSG_LEN)
    }
    /// DATA: offset of this payload in its message.
    #[inline]
    pub fn offset(&self) -> u64 {
        rd64(self.buffer.as_ref(), field::OFFSET)
    }
    /// BATCH: number of messages.
    #[inline]
    pub fn batch_count(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_le_bytes([b[field::BATCH_COUNT.start], b[field::BATCH_COUNT.start + 1]])
    }
    /// ACK: every packet number below this has been received.
    #[inline]
    pub fn cumulative(&self) -> u64 {
        rd64(self.buffer.as_ref(), field::CUM)
    }
    /// ACK: packet number of bit 0 of the selective-ack bitmap.
    #[inline]
    pub fn sack_base(&self) -> u64 {
        rd64(self.buffer.as_ref(), field::SACK_BASE)
    }
    /// ACK: selective-ack bitmap; bit i set = `sack_base + i` received.
    #[inline]
    pub fn sack_bits(&self) -> u64 {
        rd64(self.buffer.as_ref(), field::SACK_BITS)
    }
    /// ACK: transmit timestamp echoed from the packet that triggered this ack.
    #[inline]
    pub fn echo_timestamp(&self) -> u64 {
        rd64(self.buffer.as_ref(), field::ECHO_TS)
    }
    /// ACK: ns the receiver held that packet before acking it (host delay).
    #[inline]
    pub fn hold_ns(&self) -> u32 {
        rd32(self.buffer.as_ref(), field::HOLD_NS)
    }
    /// ACK: count of ECN-CE marked packets received so far (wrapping).
    #[inline]
    pub fn ecn_ce(&self) -> u32 {
        rd32(self.buffer.as_ref(), field::ECN_CE)
    }
    /// ACK: credit granted, an absolute count of payload bytes the peer may have sent.
    #[inline]
    pub fn credit(&self) -> u64 {
        rd64(self.buffer.as_ref(), field::CREDIT)
    }
    /// Control types: the 64-bit value (initial credit, NACK first pn).
    #[inline]
    pub fn ctl_u64(&self) -> u64 {
        rd64(self.buffer.as_ref(), field::CTL_U64)
    }
    /// Control types: the 32-bit value (max payload, NACK count, close/reset code).
    #[inline]
    pub fn ctl_u32(&self) -> u32 {
        rd32(self.buffer.as_ref(), field::CTL_U32)
    }
    /// Bytes after the header (DATA payload; BATCH length table and messages).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[self.header_len().min(b.len())..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    fn wr64(&mut self, f: field::Field, v: u64) {
        self.buffer.as_mut()[f].copy_from_slice(&v.to_le_bytes());
    }
    #[inline]
    fn wr32(&mut self, f: field::Field, v: u32) {
        self.buffer.as_mut()[f].copy_from_slice(&v.to_le_bytes());
    }
    /// Set the version byte.
    #[inline]
    pub fn set_version(&mut self, v: u8) {
        self.buffer.as_mut()[field::VERSION] = v;
    }
    /// Set the packet type.
    #[inline]
    pub fn set_packet_type(&mut self, t: PacketType) {
        self.buffer.as_mut()[field::TYPE] = t as u8;
    }
    /// Set the flags.
    #[inline]
    pub fn set_flags(&mut self, v: u16) {
        self.buffer.as_mut()[field::FLAGS].copy_from_slice(&v.to_le_bytes());
    }
    /// Set the destination connection id.
    #[inline]
    pub fn set_dst_cid(&mut self, v: u64) {
        self.wr64(field::DST_CID, v)
    }
    /// Set the source connection id.
    #[inline]
    pub fn set_src_cid(&mut self, v: u64) {
        self.wr64(field::SRC_CID, v)
    }
    /// Set the packet number.
    #[inline]
    pub fn set_pn(&mut self, v: u64) {
        self.wr64(field::PN, v)
    }
    /// Set the transmit timestamp.
    #[inline]
    pub fn set_tx_timestamp(&mut self, v: u64) {
        self.wr64(field::TX_TS, v)
    }
    /// DATA: set the message id (BATCH: of the first message).
    #[inline]
    pub fn set_msg_id(&mut self, v: u64) {
        self.wr64(field::MSG_ID, v)
    }
    /// DATA: set the message length.
    #[inline]
    pub fn set_msg_len(&mut self, v: u64) {
        self.wr64(field::MSG_LEN, v)
    }
    /// DATA: set the offset.
    #[inline]
    pub fn set_offset(&mut self, v: u64) {
        self.wr64(field::OFFSET, v)
    }
    /// BATCH: set the number of messages.
    #[inline]
    pub fn set_batch_count(&mut self, v: u16) {
        self.buffer.as_mut()[field::BATCH_COUNT].copy_from_slice(&v.to_le_bytes());
    }
    /// ACK: set the cumulative number.
    #[inline]
    pub fn set_cumulative(&mut self, v: u64) {
        self.wr64(field::CUM, v)
    }
    /// ACK: set the bitmap base.
    #[inline]
    pub fn set_sack_base(&mut self, v: u64) {
        self.wr64(field::SACK_BASE, v)
    }
    /// ACK: set the bitmap.
    #[inline]
    pub fn set_sack_bits(&mut self, v: u64) {
        self.wr64(field::SACK_BITS, v)
    }
    /// ACK: set the echoed timestamp.
    #[inline]
    pub fn set_echo_timestamp(&mut self, v: u64) {
        self.wr64(field::ECHO_TS, v)
    }
    /// ACK: set the hold time.
    #[inline]
    pub fn set_hold_ns(&mut self, v: u32) {
        self.wr32(field::HOLD_NS, v)
    }
    /// ACK: set the ECN-CE count.
    #[inline]
    pub fn set_ecn_ce(&mut self, v: u32) {
        self.wr32(field::ECN_CE, v)
    }
    /// ACK: set the credit.
    #[inline]
    pub fn set_credit(&mut self, v: u64) {
        self.wr64(field::CREDIT, v)
    }
    /// Control types: set the 64-bit value.
    #[inline]
    pub fn set_ctl_u64(&mut self, v: u64) {
        self.wr64(field::CTL_U64, v)
    }
    /// Control types: set the 32-bit value.
    #[inline]
    pub fn set_ctl_u32(&mut self, v: u32) {
        self.wr32(field::CTL_U32, v)
    }
}

impl<T: AsRef<[u8]>> fmt::Debug for Packet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Repr::parse(&Packet::new_unchecked(self.buffer.as_ref())) {
            Ok(r) => write!(f, "{r:?}"),
            Err(e) => write!(f, "Packet({e})"),
        }
    }
}

/// Acknowledgement contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckRepr {
    /// Every packet number below this was received.
    pub cumulative: u64,
    /// Packet number of bit 0 of `sack_bits`.
    pub sack_base: u64,
    /// Bit i set: packet `sack_base + i` received.
    pub sack_bits: u64,
    /// Transmit timestamp of the packet that triggered this ack.
    pub echo_timestamp: u64,
    /// ns between receiving that packet and sending this ack.
    pub hold_ns: u32,
    /// ECN-CE marked packets received so far (wrapping).
    pub ecn_ce: u32,
    /// Absolute credit: payload bytes the peer may have sent in total.
    pub credit: u64,
}

/// What a packet says, by type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A message segment; the payload follows the header.
    Data {
        /// Message id.
        msg_id: u64,
        /// Total message length.
        msg_len: u64,
        /// Offset of the payload in the message.
        offset: u64,
    },
    /// An acknowledgement.
    Ack(AckRepr),
    /// Missing packet numbers `[first, first + count)`.
    Nack {
        /// First missing packet number.
        first: u64,
        /// How many.
        count: u32,
    },
    /// Handshake from the client.
    Connect {
        /// Initial credit granted to the peer (bytes).
        credit: u64,
        /// Largest datagram (transport header + payload) the sender accepts.
        max_datagram: u32,
    },
    /// Handshake answer from the server.
    Accept {
        /// Initial credit granted to the peer (bytes).
        credit: u64,
        /// Largest datagram the sender accepts.
        max_datagram: u32,
    },
    /// Graceful close with an application code.
    Close {
        /// Application close code.
        code: u32,
    },
    /// Abort with an error code.
    Reset {
        /// Error code.
        code: u32,
    },
    /// Ack-eliciting probe.
    Probe,
    /// Whole messages `msg_id .. msg_id + count`; the length table and the messages follow
    /// the header (see [`batch_entries`]).
    Batch {
        /// Id of the first message.
        msg_id: u64,
        /// Number of messages (at least 1).
        count: u16,
    },
}

impl Kind {
    /// The packet type.
    #[inline]
    pub fn packet_type(&self) -> PacketType {
        match self {
            Kind::Data { .. } => PacketType::Data,
            Kind::Ack(_) => PacketType::Ack,
            Kind::Nack { .. } => PacketType::Nack,
            Kind::Connect { .. } => PacketType::Connect,
            Kind::Accept { .. } => PacketType::Accept,
            Kind::Close { .. } => PacketType::Close,
            Kind::Reset { .. } => PacketType::Reset,
            Kind::Probe => PacketType::Probe,
            Kind::Batch { .. } => PacketType::Batch,
        }
    }
}

/// A parsed transport header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Flags ([`FLAG_ACK_NOW`]).
    pub flags: u16,
    /// Destination connection id.
    pub dst_cid: u64,
    /// Source connection id.
    pub src_cid: u64,
    /// Packet number.
    pub pn: u64,
    /// Sender's transmit timestamp (ns).
    pub tx_timestamp: u64,
    /// Type and type-specific fields.
    pub kind: Kind,
}

impl Repr {
    /// Parse a checked packet. For DATA, `payload_len` is the bytes after the header and
    /// `offset + payload_len <= msg_len` is enforced. For BATCH, the count is at least 1, the
    /// message ids do not overflow, and the length table and the messages it describes fill
    /// the bytes after the header exactly ([`batch_entries`] succeeds on them).
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &Packet<&T>) -> Result<Repr, Error> {
        p.check_len()?;
        let all = p.buffer.as_ref();
        let ty = PacketType::from_u8(all[field::TYPE]).ok_or(Error::Type)?;
        let hl = header_len(ty);
        if !matches!(ty, PacketType::Data | PacketType::Batch) && all.len() != hl {
            // Only DATA and BATCH carry a payload.
            return Err(Error::Malformed);
        }
        let kind = match ty {
            PacketType::Data => {
                // A slice of constant length: the reads below need no bounds checks.
                let b = &all[..DATA_HEADER_LEN];
                let (msg_len, offset) = (rd64(b, field::MSG_LEN), rd64(b, field::OFFSET));
                let plen = (all.len() - DATA_HEADER_LEN) as u64;
                if offset.checked_add(plen).is_none_or(|end| end > msg_len) {
                    return Err(Error::Malformed);
                }
                Kind::Data {
                    msg_id: rd64(b, field::MSG_ID),
                    msg_len,
                    offset,
                }
            }
            PacketType::Batch => {
                let b = &all[..BATCH_HEADER_LEN];
                let msg_id = rd64(b, field::MSG_ID);
                let count = u16::from_le_bytes([
                    b[field::BATCH_COUNT.start],
                    b[field::BATCH_COUNT.start + 1],
                ]);
                if count == 0 || msg_id.checked_add(u64::from(count)).is_none() {
                    return Err(Error::Malformed);
                }
                batch_entries(&all[BATCH_HEADER_LEN..], count)?;
                Kind::Batch { msg_id, count }
            }
            PacketType::Ack => {
                let b = &all[..ACK_HEADER_LEN];
                let a = AckRepr {
                    cumulative: rd64(b, field::CUM),
                    sack_base: rd64(b, field::SACK_BASE),
                    sack_bits: rd64(b, field::SACK_BITS),
                    echo_timestamp: rd64(b, field::ECHO_TS),
                    hold_ns: rd32(b, field::HOLD_NS),
                    ecn_ce: rd32(b, field::ECN_CE),
                    credit: rd64(b, field::CREDIT),
                };
                if a.sack_base < a.cumulative {
                    return Err(Error::Malformed);
                }
                Kind::Ack(a)
            }
            _ => {
                let b = &all[..CONTROL_HEADER_LEN];
                let (v64, v32) = (rd64(b, field::CTL_U64), rd32(b, field::CTL_U32));
                match ty {
                    PacketType::Nack => Kind::Nack {
                        first: v64,
                        count: v32,
                    },
                    PacketType::Connect => Kind::Connect {
                        credit: v64,
                        max_datagram: v32,
                    },
                    PacketType::Accept => Kind::Accept {
                        credit: v64,
                        max_datagram: v32,
                    },
                    PacketType::Close => Kind::Close { code: v32 },
                    PacketType::Reset => Kind::Reset { code: v32 },
                    _ => Kind::Probe,
                }
            }
        };
        let b = &all[..COMMON_LEN];
        Ok(Repr {
            flags: u16::from_le_bytes([b[field::FLAGS.start], b[field::FLAGS.start + 1]]),
            dst_cid: rd64(b, field::DST_CID),
            src_cid: rd64(b, field::SRC_CID),
            pn: rd64(b, field::PN),
            tx_timestamp: rd64(b, field::TX_TS),
            kind,
        })
    }

    /// Length of the header this repr emits (not counting a DATA payload).
    #[inline]
    pub fn buffer_len(&self) -> usize {
        header_len(self.kind.packet_type())
    }

    /// Write the header into the first [`buffer_len`](Repr::buffer_len) bytes of `p`.
    ///
    /// # Panics
    /// If the buffer is shorter than `buffer_len()` (a programming error when emitting).
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        let n = self.buffer_len();
        // One bounds check: every write below is at a constant offset inside `n`.
        let b = &mut p.buffer.as_mut()[..n];
        #[inline(always)]
        fn put64(b: &mut [u8], at: usize, v: u64) {
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        #[inline(always)]
        fn put32(b: &mut [u8], at: usize, v: u32) {
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        let mut h = [0u8; COMMON_LEN];
        h[field::VERSION] = VERSION;
        h[field::TYPE] = self.kind.packet_type() as u8;
        h[field::FLAGS].copy_from_slice(&self.flags.to_le_bytes());
        put64(&mut h, field::DST_CID.start, self.dst_cid);
        put64(&mut h, field::SRC_CID.start, self.src_cid);
        put64(&mut h, field::PN.start, self.pn);
        put64(&mut h, field::TX_TS.start, self.tx_timestamp);
        match self.kind {
            Kind::Data {
                msg_id,
                msg_len,
                offset,
            } => {
                let mut t = [0u8; DATA_HEADER_LEN];
                t[..COMMON_LEN].copy_from_slice(&h);
                put64(&mut t, field::MSG_ID.start, msg_id);
                put64(&mut t, field::MSG_LEN.start, msg_len);
                put64(&mut t, field::OFFSET.start, offset);
                b.copy_from_slice(&t[..n]);
            }
            Kind::Ack(a) => {
                let mut t = [0u8; ACK_HEADER_LEN];
                t[..COMMON_LEN].copy_from_slice(&h);
                put64(&mut t, field::CUM.start, a.cumulative);
                put64(&mut t, field::SACK_BASE.start, a.sack_base);
                put64(&mut t, field::SACK_BITS.start, a.sack_bits);
                put64(&mut t, field::ECHO_TS.start, a.echo_timestamp);
                put32(&mut t, field::HOLD_NS.start, a.hold_ns);
                put32(&mut t, field::ECN_CE.start, a.ecn_ce);
                put64(&mut t, field::CREDIT.start, a.credit);
                b.copy_from_slice(&t[..n]);
            }
            Kind::Batch { msg_id, count } => {
                let mut t = [0u8; BATCH_HEADER_LEN];
                t[..COMMON_LEN].copy_from_slice(&h);
                put64(&mut t, field::MSG_ID.start, msg_id);
                t[field::BATCH_COUNT].copy_from_slice(&count.to_le_bytes());
                b.copy_from_slice(&t[..n]);
            }
            k => {
                let (v64, v32) = match k {
                    Kind::Nack { first, count } => (first, count),
                    Kind::Connect {
                        credit,
                        max_datagram,
                    }
                    | Kind::Accept {
                        credit,
                        max_datagram,
                    } => (credit, max_datagram),
                    Kind::Close { code } | Kind::Reset { code } => (0, code),
                    _ => (0, 0),
                };
                let mut t = [0u8; CONTROL_HEADER_LEN];
                t[..COMMON_LEN].copy_from_slice(&h);
                put64(&mut t, field::CTL_U64.start, v64);
                put32(&mut t, field::CTL_U32.start, v32);
                b.copy_from_slice(&t[..n]);
            }
        }
    }

    /// Prepend this header to `buf` (whose data is the payload, empty for control types)
    /// using its headroom: the payload is not moved.
    #[inline]
    pub fn prepend_to(&self, buf: &mut crate::mem::PktBuf) -> Result<(), crate::mem::NoRoom> {
        let n = self.buffer_len();
        let h = buf.prepend(n)?;
        self.emit(&mut Packet::new_unchecked(h));
        Ok(())
    }
}

/// The messages of a BATCH packet: `body` is what follows the header (the length table of
/// `count` little-endian u16 entries, then the messages back to back). Checks that the table
/// fits and that the messages fill the rest exactly; the iterator then yields each message's
/// byte range in `body`, in order, all in bounds. Allocates nothing.
pub fn batch_entries(body: &[u8], count: u16) -> Result<BatchEntries<'_>, Error> {
    let table_len = usize::from(count) * BATCH_ENTRY_LEN;
    let Some(table) = body.get(..table_len) else {
        return Err(Error::Malformed);
    };
    let sum: usize = table
        .chunks_exact(BATCH_ENTRY_LEN)
        .map(|e| usize::from(u16::from_le_bytes([e[0], e[1]])))
        .sum();
    if sum != body.len() - table_len {
        return Err(Error::Malformed);
    }
    Ok(BatchEntries {
        table,
        next: table_len,
    })
}

/// Iterator over a checked BATCH body's message ranges (from [`batch_entries`]).
#[derive(Debug, Clone)]
pub struct BatchEntries<'a> {
    table: &'a [u8],
    next: usize,
}

impl Iterator for BatchEntries<'_> {
    type Item = core::ops::Range<usize>;
    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let (e, rest) = self.table.split_first_chunk::<BATCH_ENTRY_LEN>()?;
        self.table = rest;
        let start = self.next;
        self.next += usize::from(u16::from_le_bytes(*e));
        Some(start..self.next)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.table.len() / BATCH_ENTRY_LEN;
        (n, Some(n))
    }
}

impl ExactSizeIterator for BatchEntries<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    // A DATA packet: msg 7, len 10, offset 4, 3 bytes of payload.
    static DATA_BYTES: [u8; 63] = [
        0x01, 0x01, 0x00, 0x00, // version, type, flags
        0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, // dst cid
        0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, // src cid
        0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // pn
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // tx ts
        0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // msg id
        0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // msg len
        0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // offset
        0xaa, 0xbb, 0xcc, // payload
    ];

    fn data_repr() -> Repr {
        Repr {
            flags: 0,
            dst_cid: 0x1111_1111_1111_1111,
            src_cid: 0x2222_2222_2222_2222,
            pn: 5,
            tx_timestamp: 256,
            kind: Kind::Data {
                msg_id: 7,
                msg_len: 10,
                offset: 4,
            },
        }
    }

    #[test]
    fn parse_data_fixture() {
        let p = Packet::new_checked(&DATA_BYTES[..]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap(), data_repr());
        assert_eq!(p.payload(), &[0xaa, 0xbb, 0xcc]);
    }

    #[test]
    fn emit_data_fixture() {
        let mut b = [0u8; 63];
        data_repr().emit(&mut Packet::new_unchecked(&mut b[..]));
        b[60..].copy_from_slice(&[0xaa, 0xbb, 0xcc]);
        assert_eq!(b, DATA_BYTES);
    }

    #[test]
    fn data_beyond_message_is_malformed() {
        let mut b = DATA_BYTES;
        b[52] = 8; // offset 8 + 3 > 10
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Repr::parse(&p), Err(Error::Malformed));
    }

    #[test]
    fn rejects_bad_version_type_and_length() {
        let mut b = DATA_BYTES;
        b[0] = 2;
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(Error::Version));
        b[0] = 1;
        b[1] = 99;
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(Error::Type));
        assert_eq!(
            Packet::new_checked(&DATA_BYTES[..59]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            Packet::new_checked(&DATA_BYTES[..3]).err(),
            Some(Error::Truncated)
        );
    }

    #[test]
    fn roundtrip_every_kind() {
        let kinds = [
            Kind::Ack(AckRepr {
                cumulative: 9,
                sack_base: 12,
                sack_bits: 0xdead_beef,
                echo_timestamp: 77,
                hold_ns: 5,
                ecn_ce: 3,
                credit: 1 << 40,
            }),
            Kind::Nack { first: 4, count: 2 },
            Kind::Connect {
                credit: 1 << 20,
                max_datagram: 1400,
            },
            Kind::Accept {
                credit: 1 << 21,
                max_datagram: 9000,
            },
            Kind::Close { code: 42 },
            Kind::Reset { code: 43 },
            Kind::Probe,
        ];
        for kind in kinds {
            let r = Repr {
                kind,
                flags: FLAG_ACK_NOW,
                ..data_repr()
            };
            let mut b = vec![0u8; r.buffer_len()];
            r.emit(&mut Packet::new_unchecked(&mut b[..]));
            let p = Packet::new_checked(&b[..]).unwrap();
            assert_eq!(Repr::parse(&p).unwrap(), r);
            // A control packet with trailing bytes is malformed.
            b.push(0);
            assert_eq!(
                Repr::parse(&Packet::new_checked(&b[..]).unwrap()),
                Err(Error::Malformed)
            );
        }
    }

    // A BATCH packet: messages 7, 8, 9 of lengths 2, 0, 1.
    static BATCH_BYTES: [u8; 57] = [
        0x01, 0x09, 0x00, 0x00, // version, type, flags
        0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, // dst cid
        0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, // src cid
        0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // pn
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // tx ts
        0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // first msg id
        0x03, 0x00, 0x00, 0x00, // count, reserved
        0x02, 0x00, 0x00, 0x00, 0x01, 0x00, // lengths
        0xaa, 0xbb, 0xcc, // messages
    ];

    fn batch_repr() -> Repr {
        Repr {
            kind: Kind::Batch {
                msg_id: 7,
                count: 3,
            },
            ..data_repr()
        }
    }

    #[test]
    fn parse_and_emit_batch_fixture() {
        let p = Packet::new_checked(&BATCH_BYTES[..]).unwrap();
        assert_eq!(Repr::parse(&p).unwrap(), batch_repr());
        assert_eq!((p.msg_id(), p.batch_count()), (7, 3));
        let body = p.payload();
        let e: Vec<_> = batch_entries(body, 3).unwrap().collect();
        assert_eq!(e, vec![6..8, 8..8, 8..9]);
        assert_eq!(&body[e[0].clone()], &[0xaa, 0xbb]);
        assert_eq!(&body[e[2].clone()], &[0xcc]);

        let mut b = [0u8; 57];
        batch_repr().emit(&mut Packet::new_unchecked(&mut b[..]));
        b[48..].copy_from_slice(&BATCH_BYTES[48..]);
        assert_eq!(b, BATCH_BYTES);
        let mut v = Packet::new_unchecked(&mut b[..]);
        v.set_batch_count(2);
        assert_eq!(v.batch_count(), 2);
    }

    #[test]
    fn malformed_batches() {
        let parse = |b: &[u8]| Repr::parse(&Packet::new_checked(b).unwrap());
        // One byte more or less than the table says.
        let mut longer = BATCH_BYTES.to_vec();
        longer.push(0);
        assert_eq!(parse(&longer), Err(Error::Malformed));
        assert_eq!(parse(&BATCH_BYTES[..56]), Err(Error::Malformed));
        // Table cut short.
        assert_eq!(parse(&BATCH_BYTES[..51]), Err(Error::Malformed));
        assert_eq!(parse(&BATCH_BYTES[..48]), Err(Error::Malformed));
        // Header cut short.
        assert_eq!(
            Packet::new_checked(&BATCH_BYTES[..47]).err(),
            Some(Error::Truncated)
        );
        // Count 0.
        let mut b = BATCH_BYTES;
        b[44] = 0;
        assert_eq!(parse(&b[..48]), Err(Error::Malformed));
        // Ids past u64::MAX.
        let mut b = BATCH_BYTES;
        b[36..44].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
        assert_eq!(parse(&b), Err(Error::Malformed));
        b[36..44].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
        assert!(parse(&b).is_ok());
        // A length larger than what is left.
        let mut b = BATCH_BYTES;
        b[48] = 0xff;
        assert_eq!(parse(&b), Err(Error::Malformed));
    }

    /// Emit a BATCH of messages with these lengths (content: the message index) after `r`.
    fn emit_batch(r: &Repr, lens: &[u16]) -> Vec<u8> {
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(&mut Packet::new_unchecked(&mut b[..]));
        for l in lens {
            b.extend_from_slice(&l.to_le_bytes());
        }
        for (i, &l) in lens.iter().enumerate() {
            b.extend(std::iter::repeat_n(i as u8, usize::from(l)));
        }
        b
    }

    proptest::proptest! {
        #[test]
        fn batch_roundtrip(
            msg_id in 0u64..u64::MAX - 70_000,
            lens in proptest::collection::vec(0u16..3000, 1..64),
            pn in proptest::prelude::any::<u64>(),
            flags in proptest::prelude::any::<u16>(),
        ) {
            let r = Repr {
                pn,
                flags,
                kind: Kind::Batch { msg_id, count: lens.len() as u16 },
                ..data_repr()
            };
            let b = emit_batch(&r, &lens);
            let p = Packet::new_checked(&b[..]).unwrap();
            proptest::prop_assert_eq!(Repr::parse(&p).unwrap(), r);
            let body = p.payload();
            let got: Vec<_> = batch_entries(body, lens.len() as u16).unwrap().collect();
            proptest::prop_assert_eq!(got.len(), lens.len());
            for (i, rg) in got.iter().enumerate() {
                proptest::prop_assert_eq!(rg.len(), usize::from(lens[i]));
                proptest::prop_assert!(body[rg.clone()].iter().all(|&x| x == i as u8));
            }
        }

        #[test]
        fn parse_never_panics_and_reemits(
            ty in 0u8..12,
            mut bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            if bytes.len() >= 2 {
                bytes[0] = VERSION;
                bytes[1] = ty;
            }
            if let Ok(p) = Packet::new_checked(&bytes[..]) {
                if let Ok(r) = Repr::parse(&p) {
                    let mut out = vec![0u8; r.buffer_len()];
                    r.emit(&mut Packet::new_unchecked(&mut out[..]));
                    out.extend_from_slice(p.payload());
                    proptest::prop_assert_eq!(
                        Repr::parse(&Packet::new_checked(&out[..]).unwrap()).unwrap(),
                        r
                    );
                    if let Kind::Batch { count, .. } = r.kind {
                        let body = p.payload();
                        let table = usize::from(count) * BATCH_ENTRY_LEN;
                        let (mut n, mut sum) = (0, 0);
                        for rg in batch_entries(body, count).unwrap() {
                            sum += body[rg].len();
                            n += 1;
                        }
                        proptest::prop_assert_eq!(n, usize::from(count));
                        proptest::prop_assert_eq!(table + sum, body.len());
                    }
                }
            }
        }
    }
}
