//! memif control messages: the fixed 128-byte records exchanged over the UNIX seqpacket
//! control socket (protocol version 2, layout of DPDK's and libmemif's `memif_msg_t`).
//!
//! Contract:
//! - [`Msg::encode`] writes exactly [`MSG_SIZE`] bytes; [`Msg::decode`] accepts exactly
//!   [`MSG_SIZE`] bytes and refuses anything else with a [`MsgError`]. Decoding never panics
//!   and never reads outside the input.
//! - All integers are little-endian (the protocol uses host order; every memif host is
//!   little-endian in practice). Strings are NUL-padded byte arrays; decoding stops at the
//!   first NUL.
//!
//! Layout (`packed`): `u16 type` at offset 0, then the message body at offset 2:
//!
//! | type | body |
//! |------|------|
//! | HELLO | `name[32] min_version:u16 max_version:u16 max_region:u16 max_m2s_ring:u16 max_s2m_ring:u16 max_log2_ring_size:u8` |
//! | INIT | `version:u16 id:u32 mode:u8 secret[24] name[32]` |
//! | ADD_REGION | `index:u16 size:u64` (region fd in SCM_RIGHTS) |
//! | ADD_RING | `flags:u16 index:u16 region:u16 offset:u32 log2_ring_size:u8 private_hdr_size:u16` (interrupt eventfd in SCM_RIGHTS) |
//! | CONNECT / CONNECTED | `if_name[32]` |
//! | DISCONNECT | `code:u32 string[96]` |

/// Size of every control message on the socket.
pub const MSG_SIZE: usize = 128;
/// The protocol version this implementation speaks (2.0).
pub const VERSION: u16 = 2 << 8;
/// Cookie every ring carries in its first word.
pub const RING_COOKIE: u32 = 0x03E3_1F20;
/// Length of the name fields.
pub const NAME_LEN: usize = 32;
/// Length of the secret field.
pub const SECRET_LEN: usize = 24;
/// Length of the disconnect reason.
pub const REASON_LEN: usize = 96;
/// ADD_RING flag: the ring carries frames client -> server (S2M / C2S).
pub const ADD_RING_FLAG_C2S: u16 = 1;
/// Interface mode: Ethernet (the only one supported).
pub const MODE_ETHERNET: u8 = 0;

const T_NONE: u16 = 0;
const T_ACK: u16 = 1;
const T_HELLO: u16 = 2;
const T_INIT: u16 = 3;
const T_ADD_REGION: u16 = 4;
const T_ADD_RING: u16 = 5;
const T_CONNECT: u16 = 6;
const T_CONNECTED: u16 = 7;
const T_DISCONNECT: u16 = 8;

/// A control message refused by [`Msg::decode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsgError {
    /// The datagram was not exactly 128 bytes.
    #[error("control message of {0} bytes (expected 128)")]
    Size(usize),
    /// The type field names no known message.
    #[error("unknown control message type {0}")]
    UnknownType(u16),
}

/// A fixed-size, NUL-padded name as it travels on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name<const N: usize>(pub [u8; N]);

impl<const N: usize> Name<N> {
    /// A name from a string, truncated to `N - 1` bytes so it stays NUL-terminated.
    pub fn new(s: &str) -> Self {
        let mut b = [0u8; N];
        let n = s.len().min(N.saturating_sub(1));
        b[..n].copy_from_slice(&s.as_bytes()[..n]);
        Name(b)
    }

    /// The bytes before the first NUL.
    pub fn as_bytes(&self) -> &[u8] {
        let end = self.0.iter().position(|&c| c == 0).unwrap_or(N);
        &self.0[..end]
    }

    /// Lossy text for logs and errors.
    pub fn to_string_lossy(self) -> String {
        String::from_utf8_lossy(self.as_bytes()).into_owned()
    }
}

impl<const N: usize> std::fmt::Debug for Name<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_string_lossy())
    }
}

/// One control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Type 0 (never sent by a conforming peer; decoded so it can be refused by state).
    None,
    /// Acknowledges INIT, ADD_REGION and ADD_RING.
    Ack,
    /// Server -> client, first message: what the server accepts.
    Hello {
        /// Peer software name.
        name: Name<NAME_LEN>,
        /// Lowest protocol version spoken.
        min_version: u16,
        /// Highest protocol version spoken.
        max_version: u16,
        /// Largest region index accepted.
        max_region: u16,
        /// Largest server -> client ring index accepted.
        max_s2c_ring: u16,
        /// Largest client -> server ring index accepted.
        max_c2s_ring: u16,
        /// Largest ring size accepted (log2).
        max_log2_ring_size: u8,
    },
    /// Client -> server: which interface (by id) the client wants.
    Init {
        /// Protocol version the client uses.
        version: u16,
        /// Interface id.
        id: u32,
        /// Interface mode ([`MODE_ETHERNET`]).
        mode: u8,
        /// Optional shared secret (NUL-padded).
        secret: Name<SECRET_LEN>,
        /// Client software name.
        name: Name<NAME_LEN>,
    },
    /// Client -> server: a shared memory region (fd passed alongside).
    AddRegion {
        /// Region index (regions are added in order from 0).
        index: u16,
        /// Region size in bytes.
        size: u64,
    },
    /// Client -> server: a descriptor ring inside a region (interrupt eventfd alongside).
    AddRing {
        /// [`ADD_RING_FLAG_C2S`] for a client -> server ring.
        flags: u16,
        /// Ring (queue) index.
        index: u16,
        /// Region holding the ring.
        region: u16,
        /// Byte offset of the ring inside the region.
        offset: u32,
        /// Ring size (log2 of the number of descriptors).
        log2_ring_size: u8,
        /// Private header size (unused, 0).
        private_hdr_size: u16,
    },
    /// Client -> server: finish the handshake.
    Connect {
        /// Client interface name.
        if_name: Name<NAME_LEN>,
    },
    /// Server -> client: handshake done, link up.
    Connected {
        /// Server interface name.
        if_name: Name<NAME_LEN>,
    },
    /// Either way: the connection is being torn down, with a reason.
    Disconnect {
        /// Error code (0 in practice).
        code: u32,
        /// Reason text.
        reason: Name<REASON_LEN>,
    },
}

fn put_u16(b: &mut [u8; MSG_SIZE], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8; MSG_SIZE], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8; MSG_SIZE], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn u16_at(b: &[u8; MSG_SIZE], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8; MSG_SIZE], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8; MSG_SIZE], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}
fn name_at<const N: usize>(b: &[u8; MSG_SIZE], at: usize) -> Name<N> {
    let mut n = [0u8; N];
    n.copy_from_slice(&b[at..at + N]);
    Name(n)
}

impl Msg {
    /// The message's type code on the wire.
    pub fn type_code(&self) -> u16 {
        match self {
            Msg::None => T_NONE,
            Msg::Ack => T_ACK,
            Msg::Hello { .. } => T_HELLO,
            Msg::Init { .. } => T_INIT,
            Msg::AddRegion { .. } => T_ADD_REGION,
            Msg::AddRing { .. } => T_ADD_RING,
            Msg::Connect { .. } => T_CONNECT,
            Msg::Connected { .. } => T_CONNECTED,
            Msg::Disconnect { .. } => T_DISCONNECT,
        }
    }

    /// A DISCONNECT carrying `reason`.
    pub fn disconnect(reason: &str) -> Msg {
        Msg::Disconnect {
            code: 0,
            reason: Name::new(reason),
        }
    }

    /// The 128-byte wire form.
    pub fn encode(&self) -> [u8; MSG_SIZE] {
        let mut b = [0u8; MSG_SIZE];
        put_u16(&mut b, 0, self.type_code());
        match self {
            Msg::None | Msg::Ack => {}
            Msg::Hello {
                name,
                min_version,
                max_version,
                max_region,
                max_s2c_ring,
                max_c2s_ring,
                max_log2_ring_size,
            } => {
                b[2..2 + NAME_LEN].copy_from_slice(&name.0);
                put_u16(&mut b, 34, *min_version);
                put_u16(&mut b, 36, *max_version);
                put_u16(&mut b, 38, *max_region);
                put_u16(&mut b, 40, *max_s2c_ring);
                put_u16(&mut b, 42, *max_c2s_ring);
                b[44] = *max_log2_ring_size;
            }
            Msg::Init {
                version,
                id,
                mode,
                secret,
                name,
            } => {
                put_u16(&mut b, 2, *version);
                put_u32(&mut b, 4, *id);
                b[8] = *mode;
                b[9..9 + SECRET_LEN].copy_from_slice(&secret.0);
                b[33..33 + NAME_LEN].copy_from_slice(&name.0);
            }
            Msg::AddRegion { index, size } => {
                put_u16(&mut b, 2, *index);
                put_u64(&mut b, 4, *size);
            }
            Msg::AddRing {
                flags,
                index,
                region,
                offset,
                log2_ring_size,
                private_hdr_size,
            } => {
                put_u16(&mut b, 2, *flags);
                put_u16(&mut b, 4, *index);
                put_u16(&mut b, 6, *region);
                put_u32(&mut b, 8, *offset);
                b[12] = *log2_ring_size;
                put_u16(&mut b, 13, *private_hdr_size);
            }
            Msg::Connect { if_name } | Msg::Connected { if_name } => {
                b[2..2 + NAME_LEN].copy_from_slice(&if_name.0);
            }
            Msg::Disconnect { code, reason } => {
                put_u32(&mut b, 2, *code);
                b[6..6 + REASON_LEN].copy_from_slice(&reason.0);
            }
        }
        b
    }

    /// Parse one datagram. Refuses any size other than 128 and unknown types.
    pub fn decode(data: &[u8]) -> Result<Msg, MsgError> {
        let b: &[u8; MSG_SIZE] = data.try_into().map_err(|_| MsgError::Size(data.len()))?;
        Ok(match u16_at(b, 0) {
            T_NONE => Msg::None,
            T_ACK => Msg::Ack,
            T_HELLO => Msg::Hello {
                name: name_at(b, 2),
                min_version: u16_at(b, 34),
                max_version: u16_at(b, 36),
                max_region: u16_at(b, 38),
                max_s2c_ring: u16_at(b, 40),
                max_c2s_ring: u16_at(b, 42),
                max_log2_ring_size: b[44],
            },
            T_INIT => Msg::Init {
                version: u16_at(b, 2),
                id: u32_at(b, 4),
                mode: b[8],
                secret: name_at(b, 9),
                name: name_at(b, 33),
            },
            T_ADD_REGION => Msg::AddRegion {
                index: u16_at(b, 2),
                size: u64_at(b, 4),
            },
            T_ADD_RING => Msg::AddRing {
                flags: u16_at(b, 2),
                index: u16_at(b, 4),
                region: u16_at(b, 6),
                offset: u32_at(b, 8),
                log2_ring_size: b[12],
                private_hdr_size: u16_at(b, 13),
            },
            T_CONNECT => Msg::Connect {
                if_name: name_at(b, 2),
            },
            T_CONNECTED => Msg::Connected {
                if_name: name_at(b, 2),
            },
            T_DISCONNECT => Msg::Disconnect {
                code: u32_at(b, 2),
                reason: name_at(b, 6),
            },
            t => return Err(MsgError::UnknownType(t)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_type() {
        let msgs = [
            Msg::Ack,
            Msg::Hello {
                name: Name::new("DPDK 22.11.11"),
                min_version: VERSION,
                max_version: VERSION,
                max_region: 255,
                max_s2c_ring: 255,
                max_c2s_ring: 255,
                max_log2_ring_size: 14,
            },
            Msg::Init {
                version: VERSION,
                id: 7,
                mode: MODE_ETHERNET,
                secret: Name::new("s3cret"),
                name: Name::new("bypass"),
            },
            Msg::AddRegion {
                index: 1,
                size: 1 << 33,
            },
            Msg::AddRing {
                flags: ADD_RING_FLAG_C2S,
                index: 3,
                region: 0,
                offset: 0x1_0080,
                log2_ring_size: 10,
                private_hdr_size: 0,
            },
            Msg::Connect {
                if_name: Name::new("memif0"),
            },
            Msg::Connected {
                if_name: Name::new("net_memif0"),
            },
            Msg::disconnect("bad region"),
        ];
        for m in msgs {
            let b = m.encode();
            assert_eq!(Msg::decode(&b).unwrap(), m);
        }
    }

    /// Byte offsets as DPDK's packed `memif_msg_t` lays them out.
    #[test]
    fn dpdk_layout_fixture() {
        let b = Msg::AddRing {
            flags: 1,
            index: 0x0203,
            region: 0x0405,
            offset: 0x0607_0809,
            log2_ring_size: 10,
            private_hdr_size: 0x0b0c,
        }
        .encode();
        assert_eq!(
            &b[..15],
            &[5, 0, 1, 0, 3, 2, 5, 4, 9, 8, 7, 6, 10, 0x0c, 0x0b]
        );
        let b = Msg::AddRegion {
            index: 1,
            size: 0x1122,
        }
        .encode();
        assert_eq!(&b[..12], &[4, 0, 1, 0, 0x22, 0x11, 0, 0, 0, 0, 0, 0]);
        let b = Msg::Init {
            version: 0x0200,
            id: 9,
            mode: 0,
            secret: Name::new(""),
            name: Name::new("x"),
        }
        .encode();
        assert_eq!(&b[..9], &[3, 0, 0, 2, 9, 0, 0, 0, 0]);
        assert_eq!(b[33], b'x');
    }

    #[test]
    fn refuses_bad_size_and_type() {
        assert_eq!(Msg::decode(&[0u8; 127]), Err(MsgError::Size(127)));
        assert_eq!(Msg::decode(&[0u8; 129]), Err(MsgError::Size(129)));
        let mut b = [0u8; MSG_SIZE];
        b[0] = 42;
        assert_eq!(Msg::decode(&b), Err(MsgError::UnknownType(42)));
    }

    use proptest::prelude::*;

    /// A name of any bytes (NULs anywhere, or none): the wire carries all `N`.
    fn name<const N: usize>() -> impl Strategy<Value = Name<N>> {
        proptest::collection::vec(any::<u8>(), N).prop_map(|v| {
            let mut b = [0u8; N];
            b.copy_from_slice(&v);
            Name(b)
        })
    }

    /// Every message type, every field arbitrary.
    fn msg() -> impl Strategy<Value = Msg> {
        prop_oneof![
            Just(Msg::None),
            Just(Msg::Ack),
            (name(), any::<[u16; 5]>(), any::<u8>()).prop_map(|(name, v, l)| Msg::Hello {
                name,
                min_version: v[0],
                max_version: v[1],
                max_region: v[2],
                max_s2c_ring: v[3],
                max_c2s_ring: v[4],
                max_log2_ring_size: l,
            }),
            (any::<u16>(), any::<u32>(), any::<u8>(), name(), name()).prop_map(
                |(version, id, mode, secret, name)| Msg::Init {
                    version,
                    id,
                    mode,
                    secret,
                    name,
                }
            ),
            (any::<u16>(), any::<u64>()).prop_map(|(index, size)| Msg::AddRegion { index, size }),
            (any::<[u16; 4]>(), any::<u32>(), any::<u8>()).prop_map(|(v, offset, l)| {
                Msg::AddRing {
                    flags: v[0],
                    index: v[1],
                    region: v[2],
                    offset,
                    log2_ring_size: l,
                    private_hdr_size: v[3],
                }
            }),
            name().prop_map(|if_name| Msg::Connect { if_name }),
            name().prop_map(|if_name| Msg::Connected { if_name }),
            (any::<u32>(), name()).prop_map(|(code, reason)| Msg::Disconnect { code, reason }),
        ]
    }

    /// Datagrams: any length, and 128 bytes whose type field is mostly a known type (random
    /// 128 bytes almost never are: 9 types of 65536), so both branches below run.
    fn datagram() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            (proptest::collection::vec(any::<u8>(), MSG_SIZE), 0u16..10).prop_map(|(mut v, t)| {
                v[..2].copy_from_slice(&t.to_le_bytes());
                v
            }),
        ]
    }

    proptest! {
        /// A message encodes to 128 bytes that decode to the same message.
        #[test]
        fn encode_then_decode_is_identity(m in msg()) {
            let b = m.encode();
            prop_assert_eq!(b.len(), MSG_SIZE);
            prop_assert_eq!(u16::from_le_bytes([b[0], b[1]]), m.type_code());
            prop_assert_eq!(Msg::decode(&b).unwrap(), m);
        }
    }

    /// Any datagram decodes to a message or an error, never a panic; a decoded message
    /// re-encodes to something that decodes to the same message. Counted: the decoded branch
    /// must run for a good share of the cases, or the property says little.
    #[test]
    fn decode_is_total() {
        use proptest::test_runner::{Config, TestRunner};
        let decoded = std::cell::Cell::new(0u32);
        let cfg = Config::default();
        let cases = cfg.cases;
        TestRunner::new(cfg)
            .run(&datagram(), |v| {
                match Msg::decode(&v) {
                    Ok(m) => {
                        decoded.set(decoded.get() + 1);
                        prop_assert_eq!(v.len(), MSG_SIZE);
                        prop_assert_eq!(Msg::decode(&m.encode()).unwrap(), m);
                    }
                    Err(MsgError::Size(n)) => prop_assert_ne!(n, MSG_SIZE),
                    Err(MsgError::UnknownType(t)) => prop_assert!(t > 8, "type {t}"),
                }
                Ok(())
            })
            .unwrap();
        println!("{} of {cases} datagrams decoded", decoded.get());
        assert!(
            decoded.get() >= cases / 4,
            "only {} of {cases} datagrams decoded",
            decoded.get()
        );
    }

    #[test]
    fn names_truncate_and_stop_at_nul() {
        let n: Name<4> = Name::new("abcdef");
        assert_eq!(n.as_bytes(), b"abc");
        let n = Name([b'a', 0, b'b', 0]);
        assert_eq!(n.as_bytes(), b"a");
    }
}
