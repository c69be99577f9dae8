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
