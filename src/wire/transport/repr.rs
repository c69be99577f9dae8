//! [`Repr`]: a parsed header, by packet type; parse, emit and prepend.

use super::{
    batch_entries, field, header_len, rd32, rd64, Error, Packet, PacketType, ACK_HEADER_LEN,
    BATCH_HEADER_LEN, COMMON_LEN, CONTROL_HEADER_LEN, DATA_HEADER_LEN, VERSION,
};

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
    /// Flags ([`FLAG_ACK_NOW`](super::FLAG_ACK_NOW)).
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
