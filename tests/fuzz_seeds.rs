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
#[path = "../fuzz/bodies/memif_control.rs"]
mod memif_control;
#[path = "../fuzz/bodies/stack_frames.rs"]
mod stack_frames;

const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/seeds");
const TARGETS: [&str; 5] = ["header", "ack", "endpoint", "memif_control", "stack_frames"];

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

/// The `memif_control` target's input: an op byte (low 4 bits: what, high 4 bits:
/// variations), then the fields that op reads (see fuzz/bodies/memif_control.rs).
struct Ctl(Vec<u8>);

/// Descriptor selectors of the `memif_control` target (low 3 bits of its selector byte).
mod fd {
    pub const NONE: u8 = 0;
    /// A memfd, sealed (8), with ring cookies (16); its size from the table of sizes.
    pub const MEMFD: u8 = 1;
    pub const SEALED: u8 = 8;
    pub const COOKIES: u8 = 16;
    pub const EVENTFD: u8 = 2;
    pub const FULL_EVENTFD: u8 = 3;
    pub const PIPE_READ: u8 = 4;
    pub const PIPE_WRITE: u8 = 5;
    pub const DEV_NULL: u8 = 6;
    /// Several eventfds: 2 + (bits 3..) % 6 of them.
    pub const SEVERAL: u8 = 7;
}

/// Indices into the target's table of region sizes (4 KiB, 8 KiB, 64 KiB, 1 MiB, 16 MiB,
/// 200 MiB, 0, 1 TiB).
const S_4K: u8 = 0;
const S_64K: u8 = 2;
const S_1M: u8 = 3;
const S_200M: u8 = 5;
const S_ZERO: u8 = 6;

impl Ctl {
    fn new() -> Self {
        Ctl(Vec::new())
    }
    fn op(&mut self, op: u8, fields: &[u8]) -> &mut Self {
        self.0.push(op);
        self.0.extend_from_slice(fields);
        self
    }
    /// INIT with our version, id 0, Ethernet mode, no secret.
    fn init(&mut self) -> &mut Self {
        self.op(0x00, &[])
    }
    /// ADD_REGION `index` of a size from the table, with a descriptor `sel` (a memfd's size
    /// from the table too).
    fn region(&mut self, index: u8, size: u8, sel: u8, memfd_size: u8) -> &mut Self {
        let mut f = vec![index, size, sel];
        if sel & 7 == fd::MEMFD {
            f.push(memfd_size);
        }
        self.op(0x01, &f)
    }
    /// ADD_RING: `c2s`, queue `index`, in `region` at `offset` (raw), `1 << log2`
    /// descriptors, with a descriptor `sel`.
    fn ring(
        &mut self,
        c2s: bool,
        index: u8,
        region: u8,
        offset: u32,
        log2: u8,
        sel: u8,
    ) -> &mut Self {
        // v: bit 0 the C2S flag, bit 2 a raw offset, bit 3 a raw log2.
        let mut f = vec![index, region];
        f.extend_from_slice(&offset.to_le_bytes());
        f.push(log2);
        f.extend_from_slice(&0u16.to_le_bytes());
        f.push(sel);
        self.op(0x02 | (u8::from(c2s) << 4) | 0x40 | 0x80, &f)
    }
    fn connect(&mut self) -> &mut Self {
        self.op(0x03, &[])
    }
    /// The whole valid handshake with rings of `1 << log2` descriptors (1..=8).
    fn handshake(&mut self, log2: u8) -> &mut Self {
        self.op(0x08 | ((log2 - 1) << 4), &[])
    }
    /// Write 16 bytes at `offset` of the input's memfd `k`, then the server port's bursts.
    fn poke(&mut self, k: u8, offset: u32, bytes: [u8; 16]) -> &mut Self {
        let mut f = vec![k];
        f.extend_from_slice(&offset.to_le_bytes());
        f.extend_from_slice(&bytes);
        self.op(0x17, &f)
    }
}

fn memif_control_seeds() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Ctl)> = Vec::new();
    let mut add = |n: &str, c: &mut Ctl| v.push((n.to_string(), std::mem::replace(c, Ctl::new())));
    let mut c = Ctl::new();
    add("gen-handshake", c.handshake(6));
    add("gen-handshake-smallest", c.handshake(1));
    // Connected, then a frame on the client-to-server ring (log2 6: the ring at offset 0 of
    // region 0, its first descriptor at 128): descriptor 0 names 60 bytes at offset 0 of
    // region 1, then head = 1. The server port receives it.
    let mut desc = [0u8; 16];
    desc[2..4].copy_from_slice(&1u16.to_le_bytes());
    desc[4..8].copy_from_slice(&60u32.to_le_bytes());
    let mut head = [0u8; 16];
    head[..2].copy_from_slice(&1u16.to_le_bytes());
    add(
        "gen-connected-frame",
        c.handshake(6).poke(0, 128, desc).poke(0, 6, head),
    );
    // Hostile descriptors once connected: a descriptor past its region, a head far ahead.
    let mut bad = desc;
    bad[8..12].copy_from_slice(&(1u32 << 20).to_le_bytes());
    let mut far = [0u8; 16];
    far[..2].copy_from_slice(&40000u16.to_le_bytes());
    add(
        "gen-connected-bad-desc",
        c.handshake(6)
            .poke(0, 128, bad)
            .poke(0, 6, head)
            .poke(0, 6, far),
    );
    // The handshake by hand: INIT, regions (sealed memfds with cookies), rings, CONNECT.
    let mem = fd::MEMFD | fd::SEALED | fd::COOKIES;
    c.init()
        .region(0, S_4K, mem, S_4K)
        .region(1, S_1M, mem, S_1M)
        .ring(true, 0, 0, 0, 6, fd::EVENTFD)
        .ring(false, 0, 0, 128 + 16 * 64, 6, fd::EVENTFD)
        .connect();
    add("gen-by-hand", &mut c);
    // The same, refused at each step.
    add("gen-refused-version", c.op(0x10, &[0x00, 0x01]));
    add("gen-refused-unknown-id", c.op(0x20, &[7, 0, 0, 0]));
    add("gen-refused-mode", c.op(0x40, &[1]));
    add(
        "gen-refused-secret",
        c.op(0x80, b"not-the-secret-at-all!!!"),
    );
    add(
        "gen-refused-region-no-fd",
        c.init().region(0, S_4K, fd::NONE, 0),
    );
    add(
        "gen-refused-region-zero",
        c.init().region(0, S_ZERO, mem, S_4K),
    );
    add(
        "gen-refused-region-past-file",
        c.init().region(0, S_1M, mem, S_64K),
    );
    add(
        "gen-refused-region-too-large",
        c.init().region(0, S_200M, mem, S_200M),
    );
    add(
        "gen-refused-region-index",
        c.init().region(3, S_4K, mem, S_4K),
    );
    add(
        "gen-refused-region-pipe",
        c.init().region(0, S_4K, fd::PIPE_READ, 0),
    );
    // Accepted, counted: a region not sealed against shrinking.
    c.init()
        .region(0, S_4K, fd::MEMFD | fd::COOKIES, S_4K)
        .region(1, S_1M, mem, S_1M)
        .ring(true, 0, 0, 0, 6, fd::EVENTFD)
        .ring(false, 0, 0, 128 + 16 * 64, 6, fd::EVENTFD)
        .connect();
    add("gen-unsealed-region", &mut c);
    let regions = |c: &mut Ctl| {
        c.init()
            .region(0, S_4K, mem, S_4K)
            .region(1, S_1M, mem, S_1M);
    };
    regions(&mut c);
    add(
        "gen-refused-ring-pipe",
        c.ring(true, 0, 0, 0, 6, fd::PIPE_WRITE),
    );
    regions(&mut c);
    add(
        "gen-refused-ring-dev-null",
        c.ring(true, 0, 0, 0, 6, fd::DEV_NULL),
    );
    regions(&mut c);
    c.ring(true, 0, 0, 0, 6, fd::FULL_EVENTFD)
        .ring(false, 0, 0, 128 + 16 * 64, 6, fd::FULL_EVENTFD)
        .connect();
    add("gen-full-eventfds", &mut c);
    regions(&mut c);
    add(
        "gen-refused-ring-bounds",
        c.ring(true, 0, 0, 4000, 6, fd::EVENTFD),
    );
    regions(&mut c);
    add(
        "gen-refused-ring-log2",
        c.ring(true, 0, 0, 0, 15, fd::EVENTFD),
    );
    regions(&mut c);
    add(
        "gen-refused-ring-region",
        c.ring(true, 0, 9, 0, 6, fd::EVENTFD),
    );
    regions(&mut c);
    add(
        "gen-refused-ring-twice",
        c.ring(true, 0, 0, 0, 6, fd::EVENTFD)
            .ring(true, 0, 0, 0, 6, fd::EVENTFD),
    );
    regions(&mut c);
    add("gen-refused-no-rings", c.connect());
    regions(&mut c);
    c.ring(true, 0, 0, 8, 6, fd::EVENTFD)
        .ring(false, 0, 0, 128 + 16 * 64, 6, fd::EVENTFD)
        .connect();
    add("gen-refused-ring-cookie", &mut c);
    add(
        "gen-refused-many-fds",
        c.init().region(0, S_4K, fd::SEVERAL | (5 << 3), 0),
    );
    // Out of order, or messages only the server sends.
    add("gen-refused-connect-first", c.connect());
    add("gen-refused-ack", c.op(0x05, &[]));
    add("gen-refused-hello", c.op(0x15, &[]));
    add("gen-refused-connected", c.init().op(0x25, &[]));
    add("gen-refused-unknown-type", c.op(0x45, &[0x34, 0x12]));
    add(
        "gen-disconnect",
        c.init().op(0x04, &[1, 0, 0, 0, b'b', b'y', b'e']),
    );
    // Datagrams of the wrong size: empty (a hang-up on seqpacket), short, long.
    add("gen-refused-short", c.op(0x06, &[10, 0, 3, 0]));
    add("gen-refused-long", c.op(0x06, &[0x2c, 0x01, 3, 0]));
    add("gen-empty-datagram", c.init().op(0x06, &[0, 0]));
    add("gen-idle", &mut c);
    let mut out: Vec<(String, Vec<u8>)> = v.into_iter().map(|(n, c)| (n, c.0)).collect();
    out.push(("edge-all-ones".into(), vec![0xff; 64]));
    out
}

/// The `stack_frames` target's input: an op byte (low 3 bits: what, high 5 bits:
/// variations), then the fields that op reads (see fuzz/bodies/stack_frames.rs).
struct Frames(Vec<u8>);

/// Selectors of the target's tables: addresses (then a host byte for ON_LINK), ports (then a
/// byte for EPHEMERAL).
mod sel {
    pub const IP_VICTIM: u8 = 0;
    pub const IP_PEER: u8 = 1;
    pub const IP_ON_LINK: u8 = 2;
    pub const IP_OFF_LINK: u8 = 3;
    pub const IP_BROADCAST: u8 = 5;
    pub const MAC_HOSTILE: u8 = 3;
    pub const MAC_ZERO: u8 = 4;
    pub const PORT_EPHEMERAL: u8 = 1;
}

impl Frames {
    fn new() -> Self {
        Frames(Vec::new())
    }
    fn op(&mut self, op: u8, fields: &[u8]) -> &mut Self {
        self.0.push(op);
        self.0.extend_from_slice(fields);
        self
    }
    /// Virtual time forward by `us` microseconds.
    fn time(&mut self, us: u16) -> &mut Self {
        self.op(0x00, &us.to_le_bytes())
    }
    /// A legitimate message of 8 + `len` bytes (`len` < 9000).
    fn send(&mut self, len: u16) -> &mut Self {
        self.op(0x01 | (2 << 3), &len.to_le_bytes())
    }
    /// ARP `oper` (1 request, 2 reply) from a hostile MAC claiming `spa` (an address
    /// selector and its host byte), asking about `tpa`.
    fn arp(&mut self, oper: u8, spa: &[u8], tpa: &[u8], extra: u8, tail: &[u8]) -> &mut Self {
        let mut f = vec![sel::MAC_HOSTILE];
        f.extend_from_slice(spa);
        f.push(sel::MAC_ZERO);
        f.extend_from_slice(tpa);
        f.extend_from_slice(tail);
        self.op(0x03 | ((oper - 1 + extra) << 3), &f)
    }
    /// ICMP echo request from on-link host `host`, `len` payload bytes.
    fn ping(&mut self, v: u8, host: u8, len: u16, tail: &[u8]) -> &mut Self {
        let mut f = Vec::new();
        if v & 1 != 0 {
            f.extend_from_slice(&[13, 0]); // timestamp request
        }
        f.extend_from_slice(&[sel::IP_ON_LINK, host]);
        f.extend_from_slice(&0x1234u16.to_le_bytes());
        f.extend_from_slice(&7u16.to_le_bytes());
        f.extend_from_slice(&len.to_le_bytes());
        f.extend(std::iter::repeat_n(0xab, usize::from(len)));
        f.extend_from_slice(tail);
        self.op(0x04 | (v << 3), &f)
    }
    /// A transport packet from on-link host `host` (port 40000 + `host`) to our port:
    /// `kind` and its fields (as `transport` reads them), flags, packet number, timestamp,
    /// then `after` (a BATCH's length table), then up to `payload` bytes. `aimed`: to the
    /// legitimate connection's id. `sum`: 0 right, 1 none, 2 wrong.
    #[allow(clippy::too_many_arguments)]
    fn transport(
        &mut self,
        host: u8,
        aimed: bool,
        sum: u8,
        kind: u8,
        fields: &[u8],
        after: &[u8],
        payload: &[u8],
    ) -> &mut Self {
        let mut f = vec![sel::IP_ON_LINK, host, sel::PORT_EPHEMERAL, host];
        if !aimed {
            f.extend_from_slice(&0x1111_2222_3333_4444u64.to_le_bytes());
        }
        f.extend_from_slice(&(0x5555_0000u64 + u64::from(host)).to_le_bytes());
        f.push(kind);
        f.extend_from_slice(fields);
        f.extend_from_slice(&0u16.to_le_bytes()); // flags
        f.extend_from_slice(&small(1).to_le_bytes()); // packet number
        f.extend_from_slice(&1_000u64.to_le_bytes()); // timestamp
        f.extend_from_slice(after);
        f.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        f.extend_from_slice(payload);
        self.op(0x05 | (u8::from(aimed) << 4) | (sum << 6), &f)
    }
    /// A UDP datagram of raw bytes from on-link host `host` to `port` (ours unless given).
    fn udp(&mut self, host: u8, port: Option<u16>, sum: u8, payload: &[u8]) -> &mut Self {
        let mut f = vec![sel::IP_ON_LINK, host, sel::PORT_EPHEMERAL, host];
        if let Some(p) = port {
            f.push(2);
            f.extend_from_slice(&p.to_le_bytes());
        }
        f.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        f.extend_from_slice(payload);
        self.op(0x06 | u8::from(port.is_some()) << 3 | (sum << 6), &f)
    }
    /// IPv4 from `src` (selector bytes) with header variations `tweaks` (selector byte then
    /// its fields), protocol `proto` and `len` payload bytes.
    fn ip(&mut self, src: &[u8], tweaks: &[u8], proto: u8, len: u16) -> &mut Self {
        let mut f = src.to_vec();
        f.extend_from_slice(tweaks);
        f.extend_from_slice(&len.to_le_bytes());
        f.push(proto);
        f.extend(std::iter::repeat_n(0x11, usize::from(len)));
        self.op(0x07, &f)
    }
    /// UDP to our port whose length field is `delta` off.
    fn udp_len(&mut self, host: u8, delta: u16, len: u16) -> &mut Self {
        let mut f = vec![sel::IP_ON_LINK, host, 0];
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(&[sel::PORT_EPHEMERAL, host]);
        f.extend_from_slice(&delta.to_le_bytes());
        f.extend(std::iter::repeat_n(0x22, usize::from(len)));
        self.op(0x07 | (1 << 3), &f)
    }
    /// `bytes` as a whole frame; `ours`: our MAC written over the first six.
    fn raw(&mut self, ours: bool, ethertype: u8, bytes: &[u8]) -> &mut Self {
        let mut f = (bytes.len() as u16).to_le_bytes().to_vec();
        f.extend_from_slice(bytes);
        self.op(0x02 | (u8::from(ours) << 3) | (ethertype << 4), &f)
    }
}

fn stack_frames_seeds() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Frames)> = Vec::new();
    let mut add =
        |n: &str, f: &mut Frames| v.push((n.to_string(), std::mem::replace(f, Frames::new())));
    let mut f = Frames::new();
    // The legitimate connection alone: small and multi-packet messages.
    add(
        "gen-legit-stream",
        f.send(100).time(50).send(3000).send(0).time(200).send(8000),
    );
    let on_link = |h: u8| [sel::IP_ON_LINK, h];
    // ARP: a request for our address, a reply, one claiming our own address, one claiming
    // the peer's (spoofing: the peer's messages may then be lost), broken and cut ones.
    add(
        "gen-arp-request",
        f.arp(1, &on_link(9), &[sel::IP_VICTIM], 0, &[]),
    );
    add(
        "gen-arp-reply",
        f.arp(2, &on_link(9), &[sel::IP_VICTIM], 0, &[]).send(10),
    );
    add(
        "gen-arp-conflict",
        f.arp(1, &[sel::IP_VICTIM], &[sel::IP_VICTIM], 0, &[]),
    );
    add(
        "gen-arp-spoof-peer",
        f.send(10)
            .arp(2, &[sel::IP_PEER], &[sel::IP_VICTIM], 0, &[])
            .send(10),
    );
    add(
        "gen-arp-broken",
        f.arp(1, &on_link(9), &[sel::IP_VICTIM], 4, &[6, 0, 8, 0, 6, 4]),
    );
    add(
        "gen-arp-truncated",
        f.arp(1, &on_link(9), &[sel::IP_VICTIM], 8, &[20]),
    );
    // Many on-link hosts asking: the cache stays bounded.
    for h in 0..40u8 {
        f.arp(1, &on_link(h), &[sel::IP_VICTIM], 0, &[]);
    }
    add("gen-arp-many", f.send(10));
    // ICMP: an echo request, another type, a bad checksum, a fragment.
    add("gen-icmp-echo", f.ping(0, 9, 56, &[]).time(1000));
    add("gen-icmp-other", f.ping(1, 9, 8, &[]));
    add("gen-icmp-bad-checksum", f.ping(2, 9, 8, &[]));
    add("gen-icmp-fragment", f.ping(4, 9, 8, &[4, 0x20, 0x00]));
    // Pings from many unresolved hosts: the replies wait on ARP, bounded.
    for h in 0..40u8 {
        f.ping(0, h, 8, &[]);
    }
    add("gen-icmp-many", f.time(60000).time(60000).send(10));
    // Transport packets of every kind to our port from a host with no connection.
    let data = [small(1), small(5), small(0)]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect::<Vec<_>>();
    let ack: Vec<u8> = [small(3)]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .chain([1])
        .chain(0b101u64.to_le_bytes())
        .chain(0u64.to_le_bytes())
        .chain(100u32.to_le_bytes())
        .chain(0u32.to_le_bytes())
        .chain((1u64 << 20).to_le_bytes())
        .collect();
    let nack: Vec<u8> = small(2)
        .to_le_bytes()
        .into_iter()
        .chain(3u32.to_le_bytes())
        .collect();
    let hello: Vec<u8> = (1u64 << 20)
        .to_le_bytes()
        .into_iter()
        .chain(1472u32.to_le_bytes())
        .collect();
    let code = 9u32.to_le_bytes().to_vec();
    // A BATCH of three (count - 1 = 2) of 3, 4 and 5 bytes.
    let batch: Vec<u8> = small(4).to_le_bytes().into_iter().chain([2]).collect();
    type Kinds<'a> = [(&'a str, u8, &'a [u8], &'a [u8], &'a [u8]); 9];
    let kinds: Kinds<'_> = [
        ("data", 0, &data, &[], b"hello"),
        ("ack", 1, &ack, &[], &[]),
        ("nack", 2, &nack, &[], &[]),
        ("connect", 3, &hello, &[], &[]),
        ("accept", 4, &hello, &[], &[]),
        ("close", 5, &code, &[], &[]),
        ("reset", 6, &code, &[], &[]),
        ("batch", 7, &batch, &[3, 4, 5], &[1; 12]),
        ("probe", 8, &[], &[], &[]),
    ];
    for (name, k, fields, after, payload) in kinds {
        f.transport(9, false, 0, k, fields, after, payload);
        add(&format!("gen-transport-{name}"), f.send(10));
        // The same aimed at the legitimate connection's id, from the wrong address.
        f.send(10).transport(9, true, 0, k, fields, after, payload);
        add(&format!("gen-aimed-{name}"), f.send(10));
    }
    // A CONNECT from many hosts: stateless answers, no state.
    for h in 0..40u8 {
        f.transport(h, false, 0, 3, &hello, &[], &[]);
    }
    add("gen-connect-many", f.send(10));
    add(
        "gen-transport-no-checksum",
        f.transport(9, false, 1, 3, &hello, &[], &[]),
    );
    add(
        "gen-transport-bad-checksum",
        f.transport(9, false, 2, 3, &hello, &[], &[]),
    );
    // UDP: raw bytes to our port, to another port, with lengths that disagree.
    add("gen-udp-garbage", f.udp(9, None, 0, &[0xee; 40]));
    add("gen-udp-other-port", f.udp(9, Some(9999), 0, &[0xee; 40]));
    add("gen-udp-length-short", f.udp_len(9, 0xfffc, 40));
    add("gen-udp-length-long", f.udp_len(9, 100, 40));
    // IPv4: options, a fragment, a wrong total length, a bad header checksum, an unknown
    // protocol, a wrong version; from off the subnet and from broadcast.
    add("gen-ip-options", f.ip(&on_link(9), &[1, 3], 17, 20));
    add(
        "gen-ip-fragment",
        f.ip(&on_link(9), &[4, 0x20, 0x00], 17, 20),
    );
    add(
        "gen-ip-total-length",
        f.ip(&on_link(9), &[2, 0x00, 0x10], 17, 20),
    );
    add("gen-ip-bad-checksum", f.ip(&on_link(9), &[64], 17, 20));
    add("gen-ip-unknown-protocol", f.ip(&on_link(9), &[0], 99, 20));
    add("gen-ip-version", f.ip(&on_link(9), &[32, 0x60], 17, 20));
    add("gen-ip-off-link", f.ip(&[sel::IP_OFF_LINK], &[0], 1, 8));
    add(
        "gen-ip-from-broadcast",
        f.ip(&[sel::IP_BROADCAST], &[0], 1, 8),
    );
    // Garbage frames: short, an unknown ethertype, IPv4 and ARP ethertypes.
    add("gen-garbage-short", f.raw(false, 0, &[1, 2, 3]));
    add("gen-garbage-ethertype", f.raw(true, 0, &[0x99; 60]));
    add("gen-garbage-ipv4", f.raw(true, 1, &[0x45; 60]));
    add("gen-garbage-arp", f.raw(true, 2, &[0x00; 42]));
    // Everything mixed with the legitimate messages.
    f.send(500)
        .arp(1, &on_link(7), &[sel::IP_VICTIM], 0, &[])
        .send(5000);
    f.ping(0, 7, 100, &[])
        .transport(7, false, 0, 0, &data, &[], b"hello");
    f.transport(7, true, 0, 1, &ack, &[], &[])
        .time(1000)
        .send(20)
        .raw(true, 1, &[0x45; 30]);
    f.time(30000).send(7000);
    add("gen-mixed", &mut f);
    let mut out: Vec<(String, Vec<u8>)> = v.into_iter().map(|(n, f)| (n, f.0)).collect();
    out.push(("edge-empty".into(), Vec::new()));
    out
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
        "memif_control" => memif_control_seeds(),
        "stack_frames" => stack_frames_seeds(),
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

/// The tests of this file one at a time: the `memif_control` body checks that an input
/// leaves the process's descriptor count as it found it, which another test opening seed
/// files at the same moment would upset.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn committed_seeds_are_what_the_encoders_make() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
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
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
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
                "memif_control" => {
                    let r = memif_control::run(data);
                    let up = name.starts_with("gen-handshake")
                        || name.starts_with("gen-connected")
                        || ["gen-by-hand", "gen-unsealed-region", "gen-full-eventfds"]
                            .contains(&name.as_str());
                    if up {
                        assert!(r.connected, "fuzz/seeds/{t}/{name} did not connect: {r:?}");
                    }
                    if name.starts_with("gen-refused-") {
                        assert!(r.refused, "fuzz/seeds/{t}/{name} was not refused: {r:?}");
                        assert!(!r.connected, "fuzz/seeds/{t}/{name}: {r:?}");
                    }
                    if name == "gen-connected-frame" {
                        assert_eq!(r.frames, 1, "fuzz/seeds/{t}/{name}: {r:?}");
                    }
                }
                "stack_frames" => {
                    let r = stack_frames::run(data);
                    let net = r.net;
                    let ep = r.ep;
                    let at_least = |what: &str, n: u64| {
                        assert!(n >= 1, "fuzz/seeds/{t}/{name}: no {what}: {r:?}");
                    };
                    if !r.spoofed {
                        assert_eq!(r.received, r.sent, "fuzz/seeds/{t}/{name}: {r:?}");
                    }
                    match name.as_str() {
                        "gen-legit-stream" => assert_eq!(r.received, 4, "{name}: {r:?}"),
                        "gen-arp-request" => at_least("ARP reply", net.arp_replies_out),
                        "gen-arp-conflict" => at_least("ARP conflict", net.arp_conflicts),
                        "gen-arp-spoof-peer" => assert!(r.spoofed, "{name}: {r:?}"),
                        "gen-arp-broken" | "gen-arp-truncated" => {
                            at_least("malformed ARP", net.arp_malformed)
                        }
                        "gen-icmp-echo" => at_least("echo request", net.icmp_echo_requests_in),
                        "gen-icmp-other" => at_least("other ICMP", net.icmp_other),
                        "gen-icmp-bad-checksum" => at_least("bad ICMP", net.icmp_malformed),
                        "gen-icmp-fragment" | "gen-ip-fragment" => {
                            at_least("fragment", net.ip_fragments)
                        }
                        "gen-connect-many" => at_least("hello", ep.hellos),
                        "gen-transport-bad-checksum" => {
                            at_least("bad UDP checksum", net.udp_bad_checksum)
                        }
                        "gen-transport-no-checksum" => at_least("no checksum", ep.rx_no_checksum),
                        "gen-udp-other-port" => at_least("UDP to no port", net.udp_no_port),
                        // Shorter or longer than the IP payload: malformed (a shorter one
                        // that a checksum passed by chance lost a message once).
                        "gen-udp-length-short" => at_least("malformed UDP", net.udp_malformed),
                        "gen-udp-length-long" => at_least("malformed UDP", net.udp_malformed),
                        "gen-ip-options" => at_least("IP options", net.ip_options),
                        "gen-ip-total-length" => at_least("malformed IP", net.ip_malformed),
                        "gen-ip-bad-checksum" => at_least("bad IP checksum", net.ip_bad_checksum),
                        "gen-ip-unknown-protocol" => {
                            at_least("unknown protocol", net.ip_unknown_protocol)
                        }
                        "gen-ip-version" => at_least("bad IP version", net.ip_bad_version),
                        "gen-garbage-short" => at_least("truncated frame", net.rx_truncated),
                        "gen-garbage-ethertype" => {
                            at_least("unknown ethertype", net.rx_unknown_ethertype)
                        }
                        n if n.starts_with("gen-aimed-") => {
                            at_least("packet from the wrong address", ep.rx_wrong_addr)
                        }
                        n if n.starts_with("gen-transport-") => {
                            at_least("datagram", ep.rx_datagrams)
                        }
                        _ => {}
                    }
                    if name.starts_with("gen-") {
                        assert!(
                            r.up,
                            "fuzz/seeds/{t}/{name}: the connection went down: {r:?}"
                        );
                    }
                }
                _ => unreachable!(),
            }
        }
        if t == "memif_control" {
            // After every hostile connection, the server still serves a legitimate client.
            assert!(
                memif_control::legit_client_connects(),
                "a legitimate memif client could not connect after the seeds"
            );
            let (refused, connects) = memif_control::server_counts();
            eprintln!("memif_control: {refused} connections refused, {connects} completed");
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
