//! Whole Ethernet frames into a whole stack at its default budgets: what a `Stack` runs per
//! received frame (the runtime's net layer: Ethernet, ARP, IPv4, ICMP, UDP; then the
//! transport endpoint), assembled by `StackBuilder::build_core` with the builder's defaults
//! over one end of an in-process pair, in virtual time. At the other end a second stack (the
//! legitimate peer) holds a connection to it and sends messages; the fuzzer's frames go in
//! through the same pair, interleaved with time steps and the peer's messages: ARP (any
//! operation, addresses, broken header), ICMP (echo and others), IPv4/UDP to our port
//! carrying transport packets of every kind (random connection ids, or the legitimate
//! connection's), UDP and IPv4 with inconsistent lengths, options, fragments, bad checksums,
//! and raw garbage.
//!
//! Properties: no panic; what the stack holds stays within its default budgets (connections,
//! reassembly bytes, ARP entries and frames waiting on ARP, the transmit queue) and every
//! pool slot comes back when the stacks are gone; the legitimate connection's messages
//! arrive intact and once each, and all of them arrive unless the input spoofed the peer
//! (any frame claiming its address: ARP for it, or IPv4 from it).
//!
//! Input: ops, each an op byte (low 3 bits: what; high 5 bits: variations) then the fields
//! it reads (missing bytes read as 0).
//!
//! The body of fuzz target `stack_frames`, shared by the target
//! (fuzz/fuzz_targets/stack_frames.rs) and by the stable replay of the committed seeds
//! (tests/fuzz_seeds.rs).
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::OnceLock;

use bypass::mem::{HugePages, Pool, PoolConfig};
use bypass::pmd::pair::pair;
use bypass::proto::{EndpointStats, Instant, State};
use bypass::runtime::net::{ArpConfig, NetCounters};
use bypass::socket::testing::StackCore;
use bypass::socket::{Backend, Stack, DEFAULT_UDP_PORT};
use bypass::time::{Clock, ManualClock};
use bypass::wire::transport::{AckRepr, Kind, Packet, Repr};

/// Pool slots: what a memif interface has by default (2 rings of 1024 and 1024 extra).
const SLOTS: u32 = 3072;
/// The pair's queue depth each way (a memif ring's default).
const DEPTH: usize = 1024;
const MTU: u16 = 1500;
/// `StackBuilder`'s default `max_connections`.
const MAX_CONNECTIONS: usize = 4096;
/// `EndpointConfig`'s default `rx_budget`.
const RX_BUDGET: u64 = 4 << 30;
/// `NetConfig`'s default transmit queue limit.
const TX_QUEUE: usize = 1024;

const VICTIM_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// The pair's addresses (end 0: the stack under test; end 1: the peer).
const VICTIM_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
const HOSTILE_MAC: [u8; 6] = [0x02, 0x66, 0x66, 0, 0, 9];

fn pool() -> &'static Pool {
    static P: OnceLock<Pool> = OnceLock::new();
    P.get_or_init(|| {
        Pool::new(&PoolConfig {
            hugepages: HugePages::Never,
            cache_size: 0,
            ..PoolConfig::new("fuzz-stack", SLOTS, 2048)
        })
        .expect("pool")
    })
}

/// The input's fields: little-endian integers, 0 past the end.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let n = self.0.len().min(N);
        let mut b = [0u8; N];
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        b
    }
    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.bytes())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }
    /// Small values most of the time, anything sometimes.
    fn num(&mut self) -> u64 {
        let v = self.u64();
        match v & 3 {
            0 => v,
            _ => (v >> 2) % 5000,
        }
    }
    /// `n` bytes: from the input while it lasts, then zeros.
    fn payload(&mut self, n: usize) -> Vec<u8> {
        let k = n.min(self.0.len());
        let mut v = self.0[..k].to_vec();
        self.0 = &self.0[k..];
        v.resize(n, 0);
        v
    }
    fn mac(&mut self) -> [u8; 6] {
        match self.u8() % 6 {
            0 => VICTIM_MAC,
            1 => [0xff; 6],
            2 => PEER_MAC,
            3 => HOSTILE_MAC,
            4 => [0; 6],
            _ => self.bytes(),
        }
    }
    fn ip(&mut self) -> Ipv4Addr {
        match self.u8() % 9 {
            0 => VICTIM_IP,
            1 => PEER_IP,
            // On the subnet: hosts nobody answers ARP for.
            2 => Ipv4Addr::new(10, 0, 0, 3 + self.u8() % 250),
            3 => Ipv4Addr::new(192, 168, 7, 9),
            4 => Ipv4Addr::UNSPECIFIED,
            5 => Ipv4Addr::BROADCAST,
            6 => Ipv4Addr::new(10, 0, 0, 255),
            7 => Ipv4Addr::new(224, 0, 0, 1),
            _ => Ipv4Addr::from(self.u32()),
        }
    }
    fn port(&mut self) -> u16 {
        match self.u8() % 3 {
            0 => DEFAULT_UDP_PORT,
            1 => 40000 + self.u8() as u16,
            _ => self.u16(),
        }
    }
}

/// The Internet checksum of `parts` (one's complement of the one's-complement sum).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for p in parts {
        for c in p.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Variations of an IPv4 header, read from the input when the op asks for them.
#[derive(Default, Clone, Copy)]
struct IpTweaks {
    /// Option words (0 to 10).
    options: u8,
    /// Added to the total length (wrapping).
    len_delta: u16,
    /// Flags and fragment offset.
    frag: u16,
    ttl: u8,
    /// The TOS byte (ECN in its low bits).
    tos: u8,
    version: u8,
    bad_checksum: bool,
}

impl IpTweaks {
    fn read(f: &mut Fields<'_>) -> IpTweaks {
        let sel = f.u8();
        IpTweaks {
            options: if sel & 1 != 0 { f.u8() % 11 } else { 0 },
            len_delta: if sel & 2 != 0 { f.u16() } else { 0 },
            frag: if sel & 4 != 0 { f.u16() } else { 0 },
            ttl: if sel & 8 != 0 { f.u8() } else { 64 },
            tos: if sel & 16 != 0 { f.u8() } else { 0 },
            version: if sel & 32 != 0 { f.u8() >> 4 } else { 4 },
            bad_checksum: sel & 64 != 0,
        }
    }

    fn plain() -> IpTweaks {
        IpTweaks {
            ttl: 64,
            version: 4,
            ..IpTweaks::default()
        }
    }
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8], t: IpTweaks) -> Vec<u8> {
    let hl = 20 + 4 * usize::from(t.options);
    let total = ((hl + payload.len()) as u16).wrapping_add(t.len_delta);
    let mut h = vec![0u8; hl];
    h[0] = (t.version << 4) | (hl / 4) as u8;
    h[1] = t.tos;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[6..8].copy_from_slice(&t.frag.to_be_bytes());
    h[8] = t.ttl;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&[&h]) ^ u16::from(t.bad_checksum);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// How a UDP datagram's checksum is written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum UdpSum {
    Right,
    /// 0: "no checksum".
    None,
    Wrong,
}

fn udp(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
    sum: UdpSum,
    len_delta: u16,
) -> Vec<u8> {
    let len = (8 + payload.len()) as u16;
    let mut d = Vec::with_capacity(8 + payload.len());
    d.extend_from_slice(&src.port().to_be_bytes());
    d.extend_from_slice(&dst.port().to_be_bytes());
    d.extend_from_slice(&len.wrapping_add(len_delta).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    let c = match sum {
        UdpSum::None => 0,
        _ => {
            let mut ph = [0u8; 12];
            ph[..4].copy_from_slice(&src.ip().octets());
            ph[4..8].copy_from_slice(&dst.ip().octets());
            ph[9] = 17;
            ph[10..12].copy_from_slice(&len.to_be_bytes());
            let c = match checksum(&[&ph, &d]) {
                0 => 0xffff,
                c => c,
            };
            if sum == UdpSum::Wrong {
                c ^ 0x5a5a
            } else {
                c
            }
        }
    };
    d[6..8].copy_from_slice(&c.to_be_bytes());
    d
}

/// A whole Ethernet/IPv4/UDP frame to the stack under test.
fn udp_frame(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
    sum: UdpSum,
    ip: IpTweaks,
) -> Vec<u8> {
    let d = udp(src, dst, payload, sum, 0);
    ethernet(
        VICTIM_MAC,
        HOSTILE_MAC,
        0x0800,
        &ipv4(*src.ip(), *dst.ip(), 17, &d, ip),
    )
}

/// A transport packet with fields from the input (as the `endpoint` target builds them).
fn transport(f: &mut Fields<'_>, dst_cid: u64, src_cid: u64) -> Vec<u8> {
    let kind = match f.u8() % 9 {
        0 => Kind::Data {
            msg_id: f.num(),
            msg_len: f.num(),
            offset: f.num(),
        },
        1 => {
            let cumulative = f.num();
            Kind::Ack(AckRepr {
                cumulative,
                sack_base: cumulative.wrapping_add(u64::from(f.u8())),
                sack_bits: f.u64(),
                echo_timestamp: f.u64(),
                hold_ns: f.u32(),
                ecn_ce: f.u32(),
                credit: f.u64(),
            })
        }
        2 => Kind::Nack {
            first: f.num(),
            count: f.u32(),
        },
        3 => Kind::Connect {
            credit: f.u64(),
            max_datagram: f.u32(),
        },
        4 => Kind::Accept {
            credit: f.u64(),
            max_datagram: f.u32(),
        },
        5 => Kind::Close { code: f.u32() },
        6 => Kind::Reset { code: f.u32() },
        7 => Kind::Batch {
            msg_id: f.num(),
            count: (f.u8() % 24) as u16 + 1,
        },
        _ => Kind::Probe,
    };
    let r = Repr {
        flags: f.u16(),
        dst_cid,
        src_cid,
        pn: f.num(),
        tx_timestamp: f.u64(),
        kind,
    };
    let mut out = vec![0u8; r.buffer_len()];
    r.emit(&mut Packet::new_unchecked(&mut out[..]));
    let body = match kind {
        Kind::Data {
            msg_len, offset, ..
        } => (msg_len.saturating_sub(offset).min(1400)) as usize,
        Kind::Batch { count, .. } => {
            // A length table (lengths from the input), then bytes.
            let lens: Vec<u16> = (0..count).map(|_| u16::from(f.u8())).collect();
            for l in &lens {
                out.extend_from_slice(&l.to_le_bytes());
            }
            lens.iter()
                .map(|&l| usize::from(l))
                .sum::<usize>()
                .min(1400)
        }
        _ => 0,
    };
    let n = body.min(usize::from(f.u16()));
    out.extend(f.payload(n));
    out
}

/// Byte `i` of legitimate message `k` (its first 8 bytes are `k`).
fn pattern(k: u64, i: usize) -> u8 {
    if i < 8 {
        k.to_le_bytes()[i]
    } else {
        (k as u8).wrapping_mul(31).wrapping_add(i as u8)
    }
}

/// How deep one input got, and what the stack counted (the seed replay checks its seeds
/// reach where they aim).
#[derive(Debug, Default, Clone, Copy)]
pub struct Reached {
    /// Frames injected.
    pub injected: usize,
    /// Legitimate messages the peer's connection took.
    pub sent: usize,
    /// Legitimate messages received, intact.
    pub received: usize,
    /// The input spoofed the peer (so its messages need not all arrive).
    pub spoofed: bool,
    /// The legitimate connection was still up at the end.
    pub up: bool,
    /// The stack under test's net counters.
    pub net: NetCounters,
    /// Its endpoint's counters.
    pub ep: EndpointStats,
    /// Most connections it held at once.
    pub max_connections: usize,
}

struct Harness {
    clock: ManualClock,
    victim: StackCore<ManualClock>,
    peer: StackCore<ManualClock>,
    /// The connection, on each side.
    vh: Option<bypass::proto::ConnectionHandle>,
    ph: bypass::proto::ConnectionHandle,
    /// Lengths of the messages the peer's connection took, by index.
    sent: Vec<usize>,
    seen: Vec<bool>,
    reached: Reached,
}

impl Harness {
    fn new() -> Harness {
        let clock = ManualClock::new(1_000_000_000);
        let (a, b) = pair(pool(), DEPTH, MTU).expect("pair");
        let victim = Stack::builder(Backend::Port(Box::new(a)), VICTIM_IP)
            .static_arp(PEER_IP, PEER_MAC)
            .seed(1)
            .build_core(clock.clone())
            .expect("stack under test");
        // (The peer needs no default budgets: a small connection table costs less per input.)
        let mut peer = Stack::builder(Backend::Port(Box::new(b)), PEER_IP)
            .static_arp(VICTIM_IP, VICTIM_MAC)
            .max_connections(4)
            .seed(2)
            .build_core(clock.clone())
            .expect("peer stack");
        let now = Instant::from_nanos(clock.now_ns());
        let ph = peer
            .endpoint()
            .connect(
                now,
                SocketAddr::V4(SocketAddrV4::new(VICTIM_IP, DEFAULT_UDP_PORT)),
            )
            .expect("connect");
        let mut h = Harness {
            clock,
            victim,
            peer,
            vh: None,
            ph,
            sent: Vec::new(),
            seen: Vec::new(),
            reached: Reached::default(),
        };
        for _ in 0..20 {
            h.step(10_000);
            if h.vh.is_some() && h.peer_state() == Some(State::Established) {
                break;
            }
        }
        assert!(
            h.vh.is_some() && h.peer_state() == Some(State::Established),
            "the legitimate connection did not come up"
        );
        h
    }

    fn peer_state(&mut self) -> Option<State> {
        let ph = self.ph;
        self.peer.endpoint().connection(ph).map(|c| c.state())
    }

    /// Move time by `ns`, poll both stacks a few times, take what arrived, check the budgets.
    fn step(&mut self, ns: u64) {
        self.clock.advance(ns);
        for _ in 0..4 {
            let a = self.victim.poll();
            let b = self.peer.poll();
            self.take();
            if !a.busy() && !b.busy() {
                break;
            }
        }
        self.check_budgets();
    }

    /// Messages and events on both sides; the legitimate messages checked.
    fn take(&mut self) {
        let peer_addr = SocketAddr::V4(SocketAddrV4::new(PEER_IP, DEFAULT_UDP_PORT));
        while let Some(h) = self.victim.endpoint().poll_incoming() {
            let from_peer = self
                .victim
                .endpoint()
                .connection(h)
                .is_some_and(|c| c.remote() == peer_addr);
            if from_peer && self.vh.is_none() {
                self.vh = Some(h);
            }
        }
        let handles: Vec<_> = self.victim.endpoint().handles().collect();
        for h in handles {
            let legit = Some(h) == self.vh;
            let Some(c) = self.victim.endpoint().connection(h) else {
                continue;
            };
            while c.poll_event().is_some() {}
            while let Some(m) = c.poll_recv() {
                assert!(legit, "a message on a connection the peer did not open");
                let data = m.into_bytes().expect("a message in host memory");
                let mut k = [0u8; 8];
                let n = data.len().min(8);
                k[..n].copy_from_slice(&data[..n]);
                let k = u64::from_le_bytes(k) as usize;
                assert!(k < self.sent.len(), "message {k} was never sent");
                assert!(!self.seen[k], "message {k} delivered twice");
                assert_eq!(data.len(), self.sent[k], "message {k}'s length");
                assert!(
                    data.iter()
                        .enumerate()
                        .all(|(i, &b)| b == pattern(k as u64, i)),
                    "message {k} arrived with other bytes"
                );
                self.seen[k] = true;
                self.reached.received += 1;
            }
        }
        let handles: Vec<_> = self.peer.endpoint().handles().collect();
        for h in handles {
            if let Some(c) = self.peer.endpoint().connection(h) {
                while c.poll_event().is_some() {}
                while c.poll_recv().is_some() {}
            }
        }
    }

    fn check_budgets(&mut self) {
        let ep = self.victim.endpoint();
        let conns = ep.connection_count();
        assert!(conns <= MAX_CONNECTIONS, "{conns} connections");
        assert!(
            ep.rx_buffered() <= RX_BUDGET,
            "{} reassembly bytes",
            ep.rx_buffered()
        );
        self.reached.max_connections = self.reached.max_connections.max(conns);
        let net = self.victim.net();
        let arp = ArpConfig::default();
        // The cache's capacity, and the static entry for the peer.
        assert!(
            net.arp_entries() <= arp.capacity + 1,
            "{} ARP entries",
            net.arp_entries()
        );
        assert!(
            net.arp_waiting() <= arp.pending_dests * arp.queue_per_dest,
            "{} frames waiting on ARP",
            net.arp_waiting()
        );
        assert!(net.tx_space() <= TX_QUEUE);
        assert!(pool().stats().in_use <= u64::from(SLOTS));
    }

    /// A frame into the stack under test, through the pair. A frame that claims the peer's
    /// address (an ARP sender, an IPv4 source), whatever op made it, marks the input as
    /// spoofing the peer: such frames may legitimately cost the peer's connection.
    fn inject(&mut self, frame: &[u8]) {
        let at = |r: std::ops::Range<usize>| frame.get(r).is_some_and(|b| b == PEER_IP.octets());
        self.reached.spoofed |= match frame.get(12..14) {
            Some([0x08, 0x06]) => at(28..32),
            Some([0x08, 0x00]) => at(26..30),
            _ => false,
        };
        let Ok(mut b) = pool().alloc() else { return };
        if b.extend_from_slice(&frame[..frame.len().min(2048 - 128)])
            .is_err()
        {
            return;
        }
        let mut v = vec![b];
        self.peer.port_mut().tx_burst(&mut v);
        self.reached.injected += 1;
    }

    fn send(&mut self, len: usize) {
        let k = self.sent.len() as u64;
        let data: Vec<u8> = (0..len).map(|i| pattern(k, i)).collect();
        let ph = self.ph;
        let Some(c) = self.peer.endpoint().connection(ph) else {
            return;
        };
        if c.send(bytes::Bytes::from(data)).is_ok() {
            self.sent.push(len);
            self.seen.push(false);
        }
    }

    /// The stack under test's id of the legitimate connection, and the peer's.
    fn cids(&mut self) -> (u64, u64) {
        let ph = self.ph;
        let v = self
            .peer
            .endpoint()
            .connection(ph)
            .map_or((0, 0), |c| (c.remote_cid(), c.local_cid()));
        v
    }
}

/// One input: no panic, the properties above hold.
pub fn run(data: &[u8]) -> Reached {
    let mut h = Harness::new();
    let (vcid, pcid) = h.cids();
    let mut f = Fields(data);
    while let Some(&op) = f.0.first() {
        f.0 = &f.0[1..];
        let v = op >> 3;
        match op & 7 {
            0 => {
                let unit = [1_000, 10_000, 100_000, 1_000][usize::from(v & 3)];
                h.step((u64::from(f.u16()) * unit).min(100_000_000));
                continue;
            }
            1 => {
                let max = [64, 1500, 9000, 65536][usize::from(v & 3)];
                let len = 8 + usize::from(f.u16()) % max;
                h.send(len);
            }
            2 => {
                // Garbage, with our address and an ethertype we handle when asked.
                let len = usize::from(f.u16()) % 1600;
                let mut frame = f.payload(len);
                if v & 1 != 0 && frame.len() >= 6 {
                    frame[..6].copy_from_slice(&VICTIM_MAC);
                }
                if frame.len() >= 14 {
                    if v & 2 != 0 {
                        frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
                    } else if v & 4 != 0 {
                        frame[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
                    }
                }
                h.inject(&frame);
            }
            3 => {
                let oper = match v & 3 {
                    0 => 1,
                    1 => 2,
                    _ => f.u16(),
                };
                let (sha, spa, tha, tpa) = (f.mac(), f.ip(), f.mac(), f.ip());
                let mut a = Vec::with_capacity(28);
                let (htype, ptype, hlen, plen) = if v & 4 != 0 {
                    (f.u16(), f.u16(), f.u8(), f.u8())
                } else {
                    (1, 0x0800, 6, 4)
                };
                a.extend_from_slice(&htype.to_be_bytes());
                a.extend_from_slice(&ptype.to_be_bytes());
                a.extend_from_slice(&[hlen, plen]);
                a.extend_from_slice(&oper.to_be_bytes());
                a.extend_from_slice(&sha);
                a.extend_from_slice(&spa.octets());
                a.extend_from_slice(&tha);
                a.extend_from_slice(&tpa.octets());
                if v & 8 != 0 {
                    a.truncate(usize::from(f.u8()) % 28);
                }
                let dst = if v & 16 != 0 { VICTIM_MAC } else { [0xff; 6] };
                h.inject(&ethernet(dst, sha, 0x0806, &a));
            }
            4 => {
                let (ty, code) = if v & 1 != 0 { (f.u8(), f.u8()) } else { (8, 0) };
                let src = f.ip();
                let mut m = vec![ty, code, 0, 0];
                m.extend_from_slice(&f.u16().to_be_bytes());
                m.extend_from_slice(&f.u16().to_be_bytes());
                let n = usize::from(f.u16()) % 1400;
                m.extend(f.payload(n));
                let c = checksum(&[&m]) ^ u16::from(v & 2 != 0);
                m[2..4].copy_from_slice(&c.to_be_bytes());
                let t = if v & 4 != 0 {
                    IpTweaks::read(&mut f)
                } else {
                    IpTweaks::plain()
                };
                h.inject(&ethernet(
                    VICTIM_MAC,
                    HOSTILE_MAC,
                    0x0800,
                    &ipv4(src, VICTIM_IP, 1, &m, t),
                ));
            }
            5 | 6 => {
                // UDP: a transport packet (5) or raw bytes (6), to our port unless asked.
                let src = SocketAddrV4::new(f.ip(), f.port());
                let dport = if v & 1 != 0 {
                    f.port()
                } else {
                    DEFAULT_UDP_PORT
                };
                let payload = if op & 7 == 5 {
                    let dst_cid = if v & 2 != 0 { vcid } else { f.u64() };
                    let src_cid = if v & 4 != 0 { pcid } else { f.u64() };
                    transport(&mut f, dst_cid, src_cid)
                } else {
                    let n = usize::from(f.u16()) % 1472;
                    f.payload(n)
                };
                let sum = match (v >> 3) & 3 {
                    0 | 3 => UdpSum::Right,
                    1 => UdpSum::None,
                    _ => UdpSum::Wrong,
                };
                let dst = SocketAddrV4::new(VICTIM_IP, dport);
                h.inject(&udp_frame(src, dst, &payload, sum, IpTweaks::plain()));
            }
            _ => {
                // IPv4 with any protocol and header, or UDP with lengths that disagree.
                let src = f.ip();
                let t = IpTweaks::read(&mut f);
                let n = usize::from(f.u16()) % 1480;
                let (proto, body) = if v & 1 != 0 {
                    let s = SocketAddrV4::new(src, f.port());
                    let d = SocketAddrV4::new(VICTIM_IP, DEFAULT_UDP_PORT);
                    let delta = f.u16();
                    let p = f.payload(n);
                    (17, udp(s, d, &p, UdpSum::Right, delta))
                } else {
                    (f.u8(), f.payload(n))
                };
                h.inject(&ethernet(
                    VICTIM_MAC,
                    HOSTILE_MAC,
                    0x0800,
                    &ipv4(src, VICTIM_IP, proto, &body, t),
                ));
            }
        }
        h.step(0);
    }
    // Let the legitimate connection finish: up to 5 s of virtual time, while it lives.
    for _ in 0..500 {
        if h.reached.received == h.sent.len() || h.peer_state() != Some(State::Established) {
            break;
        }
        h.step(10_000_000);
    }
    h.reached.sent = h.sent.len();
    let state = h.peer_state();
    h.reached.up = state == Some(State::Established);
    if !h.reached.spoofed {
        assert_eq!(
            h.reached.received,
            h.sent.len(),
            "legitimate messages lost (connection {state:?})"
        );
    }
    h.reached.net = *h.victim.net().counters();
    h.reached.ep = h.victim.endpoint().stats();
    let reached = h.reached;
    drop(h);
    assert_eq!(
        pool().stats().in_use,
        0,
        "pool slots held after the stacks are gone"
    );
    reached
}
