//! [`Packet`]: the zero-copy view, its field getters and setters.

use core::fmt;

use super::{field, header_len, rd32, rd64, Error, PacketType, Repr, COMMON_LEN, VERSION};

/// A read/write view of a transport header (and, for DATA, its payload) over a buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    pub(super) buffer: T,
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
