//! Every committed seed of every fuzz target (`fuzz/seeds/<target>/*`) replays through the
//! target's own body (`fuzz/bodies/<target>.rs`, the code `cargo fuzz` runs), on stable, in
//! every `cargo test`: a seed that once found a bug stays a regression test even where no
//! nightly toolchain is installed.
//!
//! The `gen-*` seeds are made here by the crate's own encoders (valid packets of every type,
//! handshakes, streams of acks), so that fuzzing starts past the parsers' first checks; a
//! change to the wire format shows up as a difference with the committed files. To write them
//! again: `BYPASS_UPDATE_FUZZ_SEEDS=1 cargo test --test fuzz_seeds`, then review the diff.
//! Other files in the seed directories (crash reproducers, hand-made edge cases) are kept
//! as they are and replayed too.

use std::path::{Path, PathBuf};

use bypass::wire::transport::{AckRepr, Kind, Packet, Repr, FLAG_ACK_NOW, FLAG_BATCH};

#[path = "../fuzz/bodies/ack.rs"]
mod ack;
#[path = "../fuzz/bodies/endpoint.rs"]
mod endpoint;
#[path = "../fuzz/bodies/header.rs"]
mod header;

const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds");
const TARGETS: [&str; 3] = ["header", "ack", "endpoint"];

/// One wire packet: `r`'s header, then `payload`.
fn packet(r: &Repr, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; r.buffer_len()];
    r.emit(&mut Packet::new_unchecked(&mut out[..]));
    out.extend_from_slice(payload);
    out
}

fn repr(kind: Kind) -> Repr {
    Repr {
        flags: 0,
        dst_cid: 0x1122_3344_5566_7788,
        src_cid: 0x99aa_bbcc_ddee_ff00,
        pn: 7,
        tx_timestamp: 1_000_000,
        kind,
    }
}

/// A BATCH body: the length table, then the messages.
fn batch_body(msgs: &[&[u8]]) -> Vec<u8> {
    let mut b = Vec::new();
    for m in msgs {
        b.extend_from_slice(&(m.len() as u16).to_le_bytes());
    }
    for m in msgs {
        b.extend_from_slice(m);
    }
    b
}

fn header_seeds() -> Vec<(String, Vec<u8>)> {
    let ack = AckRepr {
        cumulative: 100,
        sack_base: 102,
        sack_bits: 0b1011,
        echo_timestamp: 999_000,
        hold_ns: 2500,
        ecn_ce: 3,
        credit: 1 << 20,
    };
    let data = Kind::Data {
        msg_id: 4,
        msg_len: 3000,
        offset: 1400,
    };
    let mut v = vec![
        ("data".to_string(), packet(&repr(data), &[0xab; 1400])),
        (
            "data-whole".into(),
            packet(
                &repr(Kind::Data {
                    msg_id: 0,
                    msg_len: 5,
                    offset: 0,
                }),
                b"hello",
            ),
        ),
        (
            "data-empty-message".into(),
            packet(
                &repr(Kind::Data {
                    msg_id: 1,
                    msg_len: 0,
                    offset: 0,
                }),
                &[],
            ),
        ),
        ("ack".into(), packet(&repr(Kind::Ack(ack)), &[])),
        (
            "ack-now".into(),
            packet(
                &Repr {
                    flags: FLAG_ACK_NOW,
                    ..repr(Kind::Ack(AckRepr {
                        sack_bits: u64::MAX,
                        ..ack
                    }))
                },
                &[],
            ),
        ),
        (
            "nack".into(),
            packet(
                &repr(Kind::Nack {
                    first: 40,
                    count: 3,
                }),
                &[],
            ),
        ),
        (
            "connect".into(),
            packet(
                &repr(Kind::Connect {
                    credit: 1 << 16,
                    max_datagram: 1472,
                }),
                &[],
            ),
        ),
        (
            "accept".into(),
            packet(
                &repr(Kind::Accept {
                    credit: 1 << 16,
                    max_datagram: 8972,
                }),
                &[],
            ),
        ),
        ("close".into(), packet(&repr(Kind::Close { code: 0 }), &[])),
        ("reset".into(), packet(&repr(Kind::Reset { code: 17 }), &[])),
        ("probe".into(), packet(&repr(Kind::Probe), &[])),
        (
            "batch".into(),
            packet(
                &Repr {
                    flags: FLAG_BATCH,
                    ..repr(Kind::Batch {
                        msg_id: 9,
                        count: 3,
                    })
                },
                &batch_body(&[b"one", b"", b"three three"]),
            ),
        ),
    ];
    // Edge cases around the checks: a header cut short, a DATA payload past its message, a
    // BATCH table that overruns its body, an unknown type, a wrong version.
    let whole = v[0].1.clone();
    v.push(("edge-truncated-header".into(), whole[..20].to_vec()));
    v.push((
        "edge-data-past-message".into(),
        packet(
            &repr(Kind::Data {
                msg_id: 4,
                msg_len: 10,
                offset: 8,
            }),
            b"four",
        ),
    ));
    let mut overrun = v
        .iter()
        .find(|(n, _)| n == "batch")
        .map(|(_, p)| p.clone())
        .unwrap_or_default();
    overrun.pop();
    v.push(("edge-batch-overrun".into(), overrun));
    let mut unknown = whole.clone();
    unknown[1] = 0xee;
    v.push(("edge-unknown-type".into(), unknown));
    let mut version = whole;
    version[0] = 0xff;
    v.push(("edge-bad-version".into(), version));
    v
}

/// The `ack` target's input: 40-byte chunks; the first byte picks time step (0), timeout (1)
/// or ACK (2, 3); the ACK's fields follow at fixed offsets.
fn ack_chunk(op: u8, cumulative: u64, sack_bits: u64, echo: u64, credit: u64) -> Vec<u8> {
    let mut c = vec![0u8; 40];
    c[0] = op;
    c[1..9].copy_from_slice(&cumulative.to_le_bytes());
    c[9..17].copy_from_slice(&sack_bits.to_le_bytes());
    c[17..25].copy_from_slice(&echo.to_le_bytes());
    // hold_ns (25..29), ecn_ce (29), then credit at 30..38, sack_base offset at 33..41
    // (overlapping: the target reads them that way).
    c[25..29].copy_from_slice(&1000u32.to_le_bytes());
    c[30..38].copy_from_slice(&credit.to_le_bytes());
    c
}

fn time_chunk(ns: u64) -> Vec<u8> {
    let mut c = vec![0u8; 40];
    c[1..9].copy_from_slice(&ns.to_le_bytes());
    c
}

fn timeout_chunk() -> Vec<u8> {
    let mut c = vec![0u8; 40];
    c[0] = 1;
    c
}

fn ack_seeds() -> Vec<(String, Vec<u8>)> {
    let credit = 1u64 << 30;
    // Every packet acknowledged in order, 10 us apart.
    let mut in_order = Vec::new();
    for pn in 1..40u64 {
        in_order.extend(time_chunk(10_000));
        in_order.extend(ack_chunk(2, pn, 0, 1_000_000 + pn, credit));
    }
    // A gap the SACK bits cover, then the gap filled.
    let mut sack = Vec::new();
    sack.extend(time_chunk(20_000));
    sack.extend(ack_chunk(2, 3, 0b1111_0110, 1_000_000, credit));
    sack.extend(time_chunk(20_000));
    sack.extend(ack_chunk(3, 12, 0, 1_000_000, credit));
    // Nothing acknowledged until the retransmission timer fires, then everything.
    let mut rto = Vec::new();
    for _ in 0..5 {
        rto.extend(time_chunk(9_999_999));
        rto.extend(timeout_chunk());
    }
    rto.extend(ack_chunk(2, 60, 0, 1_000_000, credit));
    // Credit withdrawn (0), then given back.
    let mut stingy = Vec::new();
    stingy.extend(ack_chunk(2, 2, 0, 1_000_000, 0));
    stingy.extend(time_chunk(5_000_000));
    stingy.extend(timeout_chunk());
    stingy.extend(ack_chunk(2, 4, 0, 1_000_000, credit));
    vec![
        ("gen-in-order".into(), in_order),
        ("gen-sack-gap".into(), sack),
        ("gen-rto".into(), rto),
        ("gen-credit".into(), stingy),
        ("edge-empty".into(), Vec::new()),
        ("edge-all-ones".into(), vec![0xff; 120]),
    ]
}

/// The `endpoint` target's input: an op byte (low 3 bits: what; high 5 bits: how many
/// 8-byte words follow), then the fields, little-endian u64s, then any payload.
struct Ops(Vec<u8>);

impl Ops {
    /// Op `what` with `fields` and then `payload` (padded to whole words).
    fn op(&mut self, what: u8, fields: &[u64], payload: &[u8]) -> &mut Self {
        let mut bytes: Vec<u8> = fields.iter().flat_map(|f| f.to_le_bytes()).collect();
        bytes.extend_from_slice(payload);
        bytes.resize(bytes.len().div_ceil(8) * 8, 0);
        let words = bytes.len() / 8;
        assert!(words < 32, "an op carries at most 31 words");
        self.0.push(((words as u8) << 3) | what);
        self.0.extend(bytes);
        self
    }
    /// A typed packet: `sel` picks the kind (0 DATA, 1 ACK, 2 NACK, 3 CONNECT, 4 ACCEPT,
    /// 5 CLOSE, 6 RESET, 7 BATCH, 8 PROBE); `fields` are the kind's, then flags, packet
    /// number, timestamp (the target's order).
    fn pkt(&mut self, sel: u64, fields: &[u64], payload: &[u8]) -> &mut Self {
        let mut f = vec![sel];
        f.extend_from_slice(fields);
        self.op(3, &f, payload)
    }
    fn time(&mut self, us: u64) -> &mut Self {
        self.op(0, &[us], &[])
    }
    fn send(&mut self, len: u64) -> &mut Self {
        self.op(1, &[len], &[])
    }
    fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.op(2, &[], b)
    }
}

/// The target's `num()` reads `(v >> 2) % 5000` for `v & 3 != 0`: the encoding of a small n.
fn small(n: u64) -> u64 {
    (n << 2) | 1
}

/// flags, packet number, timestamp: the tail of every typed packet's fields.
fn tail(pn: u64) -> [u64; 3] {
    [0, small(pn), 1_000_000_000 + pn]
}

fn with(kind: &[u64], pn: u64) -> Vec<u64> {
    let mut v = kind.to_vec();
    v.extend_from_slice(&tail(pn));
    v
}

fn endpoint_seeds() -> Vec<(String, Vec<u8>)> {
    let accept = |o: &mut Ops| {
        o.pkt(4, &with(&[1 << 30, 1472], 0), &[]);
    };
    let mut handshake = Ops(Vec::new());
    accept(&mut handshake);
    handshake.time(100);
    // Established, then a stream of sends acknowledged as they go (cumulative, SACK bits,
    // echo, hold, ECN, credit, SACK base offset).
    let mut stream = Ops(Vec::new());
    accept(&mut stream);
    for k in 0..6u64 {
        stream.send(1000 + 3000 * k).time(50);
        let ack = [small(1 + 2 * k), 0b101, 0, 500, 0, 1 << 30, 2];
        stream.pkt(1, &with(&ack, 1 + k), &[]);
    }
    stream.time(20_000);
    // Messages from the peer: a whole one in one DATA, one in two DATA segments (out of
    // order), a BATCH of three.
    let mut recv = Ops(Vec::new());
    accept(&mut recv);
    let data = |id: u64, len: u64, off: u64| [small(id), small(len), small(off)];
    // (A payload runs to the end of its op, which is whole words: the segments' lengths are
    // multiples of 8 so that no padding lands in the message.)
    recv.pkt(0, &with(&data(0, 5, 0), 1), b"hello");
    recv.pkt(0, &with(&data(1, 200, 104), 3), &[0xbb; 96]);
    recv.pkt(0, &with(&data(1, 200, 0), 2), &[0xaa; 104]);
    // BATCH: id, count - 1, flags, pn, timestamp, then the three lengths; padded to 16 words,
    // because an op of 8 to 15 words (op bit 0x40) makes the target cut the body short.
    let mut batch = with(&[small(2), 2], 4);
    batch.extend_from_slice(&[3, 40, 7]);
    batch.resize(15, 0);
    recv.pkt(7, &batch, &[]);
    recv.time(1000);
    // Loss signalled: a NACK, then the timers.
    let mut nack = Ops(Vec::new());
    accept(&mut nack);
    nack.send(9000).time(10);
    nack.pkt(2, &with(&[small(0), 2], 1), &[]);
    nack.time(99_999).time(99_999);
    // The peer closes; the peer resets.
    let mut close = Ops(Vec::new());
    accept(&mut close);
    close.send(10).pkt(5, &with(&[0], 1), &[]).time(50_000);
    let mut reset = Ops(Vec::new());
    accept(&mut reset);
    reset.pkt(6, &with(&[9], 1), &[]).send(10);
    // Garbage and a whole encoded packet as raw bytes before the handshake; a probe and a
    // second CONNECT on a live connection.
    let mut odd = Ops(Vec::new());
    odd.raw(&[0xff; 31]).raw(&packet(&repr(Kind::Probe), &[]));
    accept(&mut odd);
    odd.pkt(8, &tail(1), &[])
        .pkt(3, &with(&[1 << 20, 9000], 2), &[]);
    // Everything idle until the connection times out.
    let mut idle = Ops(Vec::new());
    accept(&mut idle);
    for _ in 0..40 {
        idle.time(99_999);
    }
    vec![
        ("gen-handshake".into(), handshake.0),
        ("gen-stream-acked".into(), stream.0),
        ("gen-receive".into(), recv.0),
        ("gen-nack".into(), nack.0),
        ("gen-close".into(), close.0),
        ("gen-reset".into(), reset.0),
        ("gen-odd".into(), odd.0),
        ("gen-idle-timeout".into(), idle.0),
        ("edge-empty".into(), Vec::new()),
    ]
}

fn generated(target: &str) -> Vec<(String, Vec<u8>)> {
    match target {
        "header" => header_seeds()
            .into_iter()
            .map(|(n, b)| match n.starts_with("edge-") {
                true => (n, b),
                false => (format!("gen-{n}"), b),
            })
            .collect(),
        "ack" => ack_seeds(),
        "endpoint" => endpoint_seeds(),
        _ => unreachable!("unknown target {target}"),
    }
}

fn dir(target: &str) -> PathBuf {
    Path::new(SEEDS).join(target)
}

/// The committed seeds of `target`, sorted by name.
fn committed(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir(target))
        .unwrap_or_else(|e| panic!("{}: {e}", dir(target).display()))
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn committed_seeds_are_what_the_encoders_make() {
    for t in TARGETS {
        let gen = generated(t);
        if std::env::var_os("BYPASS_UPDATE_FUZZ_SEEDS").is_some() {
            std::fs::create_dir_all(dir(t)).unwrap();
            for (n, b) in &gen {
                std::fs::write(dir(t).join(n), b).unwrap();
            }
            println!("{t}: {} seeds written", gen.len());
            continue;
        }
        let have = committed(t);
        for (n, b) in &gen {
            let found = have.iter().find(|(h, _)| h == n);
            assert!(
                found.is_some_and(|(_, hb)| hb == b),
                "fuzz/seeds/{t}/{n} is missing or differs from what the encoders make now \
                 (BYPASS_UPDATE_FUZZ_SEEDS=1 cargo test --test fuzz_seeds writes it)"
            );
        }
    }
}

#[test]
fn every_seed_replays_through_its_target() {
    let mut counts = Vec::new();
    for t in TARGETS {
        let seeds = committed(t);
        assert!(
            seeds.len() >= 5,
            "fuzz/seeds/{t}: only {} seeds",
            seeds.len()
        );
        for (name, data) in &seeds {
            // Named first, so a panic below says which seed.
            eprintln!("replaying fuzz/seeds/{t}/{name} ({} bytes)", data.len());
            match t {
                "header" => {
                    let parsed = header::run(data);
                    // The seeds made from valid packets get past the parser to the checks.
                    if name.starts_with("gen-") {
                        assert!(parsed, "fuzz/seeds/{t}/{name} does not parse");
                    }
                }
                "ack" => ack::run(data),
                "endpoint" => {
                    let r = endpoint::run(data);
                    if name.starts_with("gen-") {
                        assert!(
                            r.established,
                            "fuzz/seeds/{t}/{name} never established its connection: {r:?}"
                        );
                    }
                    if name == "gen-receive" {
                        // hello, the two-segment one, the BATCH's three.
                        assert_eq!(r.received, 5, "fuzz/seeds/{t}/{name}: {r:?}");
                    }
                }
                _ => unreachable!(),
            }
        }
        counts.push(format!("{t} {}", seeds.len()));
    }
    let total: usize = TARGETS.iter().map(|t| committed(t).len()).sum();
    println!(
        "replayed {total} fuzz seeds of {} targets ({})",
        TARGETS.len(),
        counts.join(", ")
    );
}
