//! The L2/L3 layer of a runtime: Ethernet, ARP, IPv4, ICMP echo and UDP over any port.
//!
//! Contract:
//! - Ingress: [`Net::handle_frame`] takes one received frame. ARP requests for our address
//!   are answered, ARP replies fill the cache and release frames waiting on them, ICMP echo
//!   requests to us are answered (both in place, in the received buffer: no allocation, no
//!   copy). A UDP datagram to our address and a bound port comes back as a [`Datagram`]
//!   whose buffer has been advanced past the Ethernet, IPv4 and UDP headers and truncated to
//!   the UDP payload (zero copy). Everything else is dropped and counted by cause in
//!   [`NetCounters`]; nothing that comes off the wire can make this code panic.
//! - What is dropped: frames not to our MAC or broadcast, unknown ethertypes, truncated or
//!   inconsistent lengths, IPv4 with a bad header checksum, with options, fragments, to
//!   another address, other protocols; ICMP and UDP with bad checksums or lengths; UDP to an
//!   unbound port. Header checksums are verified in software unless the port reports receive
//!   checksum offload (then the port has dropped bad frames).
//! - Egress: [`Net::send_udp`] prepends UDP, IPv4 and Ethernet headers into the buffer's
//!   headroom (the payload is written once, by the caller), computes the checksums in software
//!   unless the port reports transmit checksum offload, resolves the next hop (on-link
//!   destination, else the gateway) through the ARP cache and queues the frame for the port.
//!   An unresolved next hop parks the frame in a bounded per-destination queue and sends an
//!   ARP request (see [`ArpConfig`]). A UDP datagram from an on-link address the cache does
//!   not hold leaves its source MAC there (gleaned), so the answer to it needs neither: a
//!   host sending from many spoofed addresses cannot take the pending queues.
//! - The transmit queue ([`Net::tx_queue`]) is bounded; a full queue is backpressure
//!   ([`SendError::TxFull`] gives the buffer back). The runtime flushes it into the port and
//!   keeps what the port did not take for the next iteration.
//! - With transmit checksum offload the IPv4 header checksum is left 0 and the UDP checksum
//!   field holds the pseudo-header sum, the form DPDK's offload expects; a port that reports
//!   `tx_checksum` must request the offload for every frame it sends.
//! - Nothing here allocates on the data path: buffers come from the caller (a port's pool),
//!   queues are preallocated, the ARP cache has a fixed capacity.

mod arp;
mod ethernet;
mod icmp;
mod ipv4;
#[cfg(test)]
mod testutil;
mod udp;

use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::wire::EthernetAddress;

pub use super::arp::ArpConfig;
use super::arp::ArpTable;
use crate::mem::PktBuf;
use crate::pmd::Offloads;
use crate::time::Instant;

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const UDP_LEN: usize = 8;
const ARP_LEN: usize = 28;
/// Bytes of headers [`Net::send_udp`] prepends: Ethernet, IPv4, UDP.
pub const UDP_HEADERS_LEN: usize = ETH_LEN + IPV4_LEN + UDP_LEN;
const TTL: u8 = 64;

/// Addresses and limits of a [`Net`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Our Ethernet address (usually the port's).
    pub mac: [u8; 6],
    /// Our IPv4 address.
    pub ip: Ipv4Addr,
    /// Prefix length of the on-link subnet.
    pub prefix_len: u8,
    /// Next hop for destinations off the subnet.
    pub gateway: Option<Ipv4Addr>,
    /// L3 MTU: the largest IPv4 packet sent.
    pub mtu: u16,
    /// Hardware checksum offloads of the port.
    pub offloads: Offloads,
    /// Fill the UDP checksum on transmit (IPv4 allows 0 = none). On by default.
    pub udp_tx_checksum: bool,
    /// ECN codepoint set on every UDP datagram sent: 0 Not-ECT (the default), 2 ECT(0) for a
    /// transport that reacts to congestion marks (read them with [`Datagram::ecn`]).
    pub tx_ecn: u8,
    /// Most frames queued for the port.
    pub tx_queue_limit: usize,
    /// ARP settings.
    pub arp: ArpConfig,
    /// Static ARP entries (address, MAC).
    pub static_arp: Vec<(Ipv4Addr, [u8; 6])>,
}

impl NetConfig {
    /// Config for `mac`/`ip` on a /24, MTU 1500, no gateway, software checksums.
    pub fn new(mac: [u8; 6], ip: Ipv4Addr) -> NetConfig {
        NetConfig {
            mac,
            ip,
            prefix_len: 24,
            gateway: None,
            mtu: 1500,
            offloads: Offloads::default(),
            udp_tx_checksum: true,
            tx_ecn: 0,
            tx_queue_limit: 1024,
            arp: ArpConfig::default(),
            static_arp: Vec::new(),
        }
    }
}

/// Counters of the L2/L3 layer. Drops are counted by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Frames handed to [`Net::handle_frame`].
    pub rx_frames: u64,
    /// Dropped: shorter than an Ethernet header.
    pub rx_truncated: u64,
    /// Dropped: destination MAC neither ours nor broadcast.
    pub rx_not_for_us: u64,
    /// Dropped: ethertype neither ARP nor IPv4.
    pub rx_unknown_ethertype: u64,
    /// Dropped: ARP packet too short or not Ethernet/IPv4.
    pub arp_malformed: u64,
    /// ARP requests received for our address.
    pub arp_requests_in: u64,
    /// ARP replies received.
    pub arp_replies_in: u64,
    /// ARP packets not about us (ignored after learning what they tell).
    pub arp_ignored: u64,
    /// ARP packets whose sender claimed our own address (ignored).
    pub arp_conflicts: u64,
    /// ARP replies sent.
    pub arp_replies_out: u64,
    /// ARP requests sent.
    pub arp_requests_out: u64,
    /// Learned entries that evicted another from the full cache.
    pub arp_evictions: u64,
    /// Cache entries gleaned from UDP datagrams: the source MAC of an on-link sender we had
    /// no entry for, so that answers to it need no ARP request (see [`ArpConfig`]).
    pub arp_gleaned: u64,
    /// Frames dropped because their destination stayed unresolved.
    pub arp_unresolved_drops: u64,
    /// Frames dropped because the ARP pending queue (or the number of pending destinations)
    /// was full.
    pub arp_pending_full: u64,
    /// Dropped: IPv4 header truncated or its lengths inconsistent.
    pub ip_malformed: u64,
    /// Dropped: IP version not 4.
    pub ip_bad_version: u64,
    /// Dropped: IPv4 header checksum wrong.
    pub ip_bad_checksum: u64,
    /// Dropped: IPv4 options present.
    pub ip_options: u64,
    /// Dropped: IPv4 fragment.
    pub ip_fragments: u64,
    /// Dropped: IPv4 destination not ours.
    pub ip_not_for_us: u64,
    /// Dropped: IP protocol neither ICMP nor UDP.
    pub ip_unknown_protocol: u64,
    /// Dropped: ICMP truncated or with a bad checksum.
    pub icmp_malformed: u64,
    /// ICMP echo requests received.
    pub icmp_echo_requests_in: u64,
    /// ICMP echo replies sent.
    pub icmp_echo_replies_out: u64,
    /// ICMP echo requests sent ([`Net::send_ping`]).
    pub icmp_echo_requests_out: u64,
    /// ICMP echo replies received.
    pub icmp_echo_replies_in: u64,
    /// ICMP messages of other types (ignored).
    pub icmp_other: u64,
    /// Dropped: UDP length field inconsistent.
    pub udp_malformed: u64,
    /// Dropped: UDP checksum wrong.
    pub udp_bad_checksum: u64,
    /// Dropped: UDP to a port nobody bound.
    pub udp_no_port: u64,
    /// UDP datagrams delivered.
    pub udp_delivered: u64,
    /// UDP datagrams queued for transmission (or for ARP).
    pub udp_sent: u64,
    /// Frames not queued because the transmit queue was full.
    pub tx_full: u64,
    /// Dropped on send: no route (off-link destination and no gateway).
    pub tx_no_route: u64,
    /// Dropped on send: not enough headroom, or larger than the MTU.
    pub tx_no_room: u64,
    /// ARP or ICMP packets not sent because no transmit buffer was free.
    pub tx_alloc_failed: u64,
}

impl NetCounters {
    /// Received frames that were consumed without a drop: delivered datagrams, ARP and ICMP
    /// messages handled or ignored. Every frame handed to [`Net::handle_frame`] lands in
    /// exactly one counter of this sum or of [`NetCounters::rx_drops`].
    pub fn rx_handled(&self) -> u64 {
        self.udp_delivered
            + self.arp_requests_in
            + self.arp_replies_in
            + self.arp_ignored
            + self.arp_conflicts
            + self.icmp_echo_requests_in
            + self.icmp_echo_replies_in
            + self.icmp_other
    }

    /// Sum of all receive-side drop counters.
    pub fn rx_drops(&self) -> u64 {
        self.rx_truncated
            + self.rx_not_for_us
            + self.rx_unknown_ethertype
            + self.arp_malformed
            + self.ip_malformed
            + self.ip_bad_version
            + self.ip_bad_checksum
            + self.ip_options
            + self.ip_fragments
            + self.ip_not_for_us
            + self.ip_unknown_protocol
            + self.icmp_malformed
            + self.udp_malformed
            + self.udp_bad_checksum
            + self.udp_no_port
    }
}

/// A UDP datagram for a bound port.
#[derive(Debug)]
pub struct Datagram {
    /// Sender.
    pub src: SocketAddrV4,
    /// Our port it was sent to.
    pub dst_port: u16,
    /// The payload: the received buffer advanced past the headers (zero copy).
    pub payload: PktBuf,
    /// The ECN field of its IPv4 header (3 = Congestion Experienced).
    pub ecn: u8,
    /// It carried a UDP checksum (checked: a wrong one is dropped before this). False for
    /// 0 in the field, "no checksum" in UDP over IPv4, which only the layer above can judge
    /// (the transport allows it only on a connection both ends agreed to send so).
    pub checksummed: bool,
}

/// Why a send failed. Only [`SendError::TxFull`] gives the buffer back (retry later); the
/// others drop it (counted) because retrying cannot help.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The transmit queue is full: backpressure. The buffer is returned.
    #[error("transmit queue full")]
    TxFull(PktBuf),
    /// The destination is off-link and there is no gateway.
    #[error("no route to {0}")]
    NoRoute(Ipv4Addr),
    /// Not enough headroom for the headers, or the packet exceeds the MTU.
    #[error("packet does not fit (headroom or MTU)")]
    NoRoom,
    /// No transmit buffer was free (for a packet the layer builds itself, e.g. a ping).
    #[error("no transmit buffer free")]
    NoBuffer,
    /// The next hop is unresolved and its ARP queue (or the pending table) is full.
    #[error("ARP queue full for {0}")]
    ArpQueueFull(Ipv4Addr),
}

/// The last ICMP echo reply received (for `ping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoReply {
    /// From.
    pub from: Ipv4Addr,
    /// Identifier.
    pub ident: u16,
    /// Sequence number.
    pub seq: u16,
    /// When it arrived (runtime ns).
    pub at: Instant,
}

/// The L2/L3 state of one runtime: addresses, ARP, UDP port bindings, the transmit queue.
pub struct Net {
    cfg: NetConfig,
    net_mask: u32,
    arp: ArpTable,
    bound: Box<[u64; 1024]>,
    tx: Vec<PktBuf>,
    counters: NetCounters,
    last_echo_reply: Option<EchoReply>,
    ip_ident: u16,
    /// The source (IPv4 address, MAC) last gleaned or found cached: a stream from one
    /// sender costs one comparison per datagram, not a cache lookup.
    last_glean: (u32, [u8; 6]),
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net")
            .field("ip", &self.cfg.ip)
            .field("mac", &EthernetAddress(self.cfg.mac))
            .field("tx_queued", &self.tx.len())
            .finish()
    }
}

impl Net {
    /// A layer for `cfg`.
    pub fn new(cfg: NetConfig) -> Net {
        let prefix = cfg.prefix_len.min(32) as u32;
        let net_mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        let mut arp = ArpTable::new(cfg.arp);
        for &(ip, mac) in &cfg.static_arp {
            arp.insert_static(ip, mac);
        }
        let limit = cfg.tx_queue_limit.max(1);
        Net {
            tx: Vec::with_capacity(limit),
            net_mask,
            arp,
            bound: Box::new([0; 1024]),
            counters: NetCounters::default(),
            last_echo_reply: None,
            ip_ident: 0,
            last_glean: (0, [0; 6]),
            cfg: NetConfig {
                tx_queue_limit: limit,
                ..cfg
            },
        }
    }

    /// The configuration.
    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    /// Counters.
    pub fn counters(&self) -> &NetCounters {
        &self.counters
    }

    /// The last ICMP echo reply received.
    pub fn last_echo_reply(&self) -> Option<EchoReply> {
        self.last_echo_reply
    }

    /// Deliver datagrams to UDP `port`.
    pub fn bind(&mut self, port: u16) {
        self.bound[port as usize / 64] |= 1 << (port % 64);
    }

    /// Stop delivering to `port`.
    pub fn unbind(&mut self, port: u16) {
        self.bound[port as usize / 64] &= !(1 << (port % 64));
    }

    /// Whether `port` is bound.
    #[inline]
    pub fn is_bound(&self, port: u16) -> bool {
        self.bound[port as usize / 64] & (1 << (port % 64)) != 0
    }

    /// Add a static ARP entry.
    pub fn add_static_arp(&mut self, ip: Ipv4Addr, mac: [u8; 6]) {
        self.arp.insert_static(ip, mac);
    }

    /// The MAC the cache holds for `ip`, if fresh at `now`.
    pub fn arp_lookup(&mut self, now: Instant, ip: Ipv4Addr) -> Option<[u8; 6]> {
        self.arp.lookup(now, ip)
    }

    /// Frames queued for the port (the runtime flushes this).
    pub fn tx_queue(&mut self) -> &mut Vec<PktBuf> {
        &mut self.tx
    }

    /// Frames that can still be queued before [`SendError::TxFull`].
    pub fn tx_space(&self) -> usize {
        self.cfg.tx_queue_limit - self.tx.len()
    }

    /// Entries in the ARP cache (fresh or not yet found expired).
    pub fn arp_entries(&self) -> usize {
        self.arp.len()
    }

    /// Frames parked waiting on ARP, over all destinations.
    pub fn arp_waiting(&self) -> usize {
        self.arp.pending.iter().map(|p| p.frames.len()).sum()
    }

    #[inline]
    fn on_link(&self, ip: Ipv4Addr) -> bool {
        (ip.to_bits() ^ self.cfg.ip.to_bits()) & self.net_mask == 0
    }

    #[inline]
    fn queue_tx(&mut self, frame: PktBuf) -> bool {
        if self.tx.len() >= self.cfg.tx_queue_limit {
            self.counters.tx_full += 1;
            return false;
        }
        self.tx.push(frame);
        true
    }
}
#[cfg(test)]
mod tests {
    use smoltcp::wire::checksum;

    use super::testutil::*;
    use super::*;

    #[test]
    fn full_tx_queue_is_backpressure() {
        let p = pool();
        let mut cfg = NetConfig::new(US, IP_US);
        cfg.tx_queue_limit = 2;
        cfg.static_arp.push((IP_PEER, PEER));
        let mut n = Net::new(cfg);
        let dst = SocketAddrV4::new(IP_PEER, 5000);
        for _ in 0..2 {
            n.send_udp(
                Instant::from_nanos(0),
                1,
                dst,
                p.alloc().unwrap(),
                &mut || p.alloc(),
            )
            .unwrap();
        }
        let r = n.send_udp(
            Instant::from_nanos(0),
            1,
            dst,
            p.alloc().unwrap(),
            &mut || p.alloc(),
        );
        let Err(SendError::TxFull(b)) = r else {
            panic!("expected TxFull, got {r:?}")
        };
        assert_eq!(b.len(), 0, "buffer returned untouched");
        assert_eq!(n.counters().tx_full, 1);
    }

    /// Each malformed variant of a good frame is dropped and counted under its cause.
    #[test]
    fn malformed_frames_are_counted_by_cause() {
        let p = pool();
        let fix_ip_csum = |f: &mut [u8]| {
            f[24] = 0;
            f[25] = 0;
            let c = !checksum::data(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
        };
        type Mutate = Box<dyn Fn(&mut Vec<u8>)>;
        type Counter = fn(&NetCounters) -> u64;
        let cases: Vec<(&str, Mutate, Counter)> = vec![
            ("truncated", Box::new(|f| f.truncate(10)), |c| {
                c.rx_truncated
            }),
            ("other mac", Box::new(|f| f[0] = 0x04), |c| c.rx_not_for_us),
            (
                "ipv6 ethertype",
                Box::new(|f| f[12..14].copy_from_slice(&[0x86, 0xdd])),
                |c| c.rx_unknown_ethertype,
            ),
            ("ip truncated", Box::new(|f| f.truncate(30)), |c| {
                c.ip_malformed
            }),
            (
                "ip total_len too big",
                Box::new(move |f| {
                    f[17] = 0x40;
                    fix_ip_csum(f);
                }),
                |c| c.ip_malformed,
            ),
            ("ip version 6", Box::new(|f| f[14] = 0x65), |c| {
                c.ip_bad_version
            }),
            ("ip bad checksum", Box::new(|f| f[25] ^= 1), |c| {
                c.ip_bad_checksum
            }),
            (
                "ip options",
                Box::new(move |f| {
                    f[14] = 0x46;
                    f[17] += 4;
                    f.splice(34..34, [1, 1, 1, 0]);
                    fix_ip_csum(f);
                }),
                |c| c.ip_options,
            ),
            (
                "ip more fragments",
                Box::new(move |f| {
                    f[20] = 0x20;
                    fix_ip_csum(f);
                }),
                |c| c.ip_fragments,
            ),
            (
                "ip fragment offset",
                Box::new(move |f| {
                    f[21] = 0x08;
                    fix_ip_csum(f);
                }),
                |c| c.ip_fragments,
            ),
            (
                "ip not for us",
                Box::new(move |f| {
                    f[33] = 7;
                    fix_ip_csum(f);
                }),
                |c| c.ip_not_for_us,
            ),
            (
                "ip proto tcp",
                Box::new(move |f| {
                    f[23] = 6;
                    fix_ip_csum(f);
                }),
                |c| c.ip_unknown_protocol,
            ),
            ("udp length too big", Box::new(|f| f[39] = 0x20), |c| {
                c.udp_malformed
            }),
            ("udp length too small", Box::new(|f| f[39] = 4), |c| {
                c.udp_malformed
            }),
            ("udp bad checksum", Box::new(|f| f[42] ^= 0x20), |c| {
                c.udp_bad_checksum
            }),
            (
                "udp unbound port",
                Box::new(|f| {
                    f[37] = 0x59;
                    f[41] = f[41].wrapping_sub(1); // keep the checksum right
                }),
                |c| c.udp_no_port,
            ),
        ];
        for (name, mutate, counter) in cases {
            let mut n = net();
            let mut f = UDP_FRAME.to_vec();
            mutate(&mut f);
            assert!(feed(&mut n, &p, &f).is_none(), "{name}: delivered");
            assert_eq!(counter(n.counters()), 1, "{name}: counter");
            assert_eq!(n.counters().rx_drops(), 1, "{name}: exactly one drop");
        }
        // ICMP and ARP.
        let mut n = net();
        let mut f = PING_FRAME.to_vec();
        f[40] ^= 1;
        assert!(feed(&mut n, &p, &f).is_none());
        assert_eq!(n.counters().icmp_malformed, 1, "icmp bad checksum");
        let mut f = ARP_REQUEST.to_vec();
        f.truncate(30);
        assert!(feed(&mut n, &p, &f).is_none());
        let mut f = ARP_REQUEST.to_vec();
        f[19] = 16; // protocol address length
        assert!(feed(&mut n, &p, &f).is_none());
        assert_eq!(n.counters().arp_malformed, 2);
        assert!(sent(&mut n).is_empty());
        assert_eq!(p.stats().in_use, 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let p = pool();
        let mut n = net();
        let mut x: u64 = 0x1234_5678;
        for len in 0..600usize {
            let mut f: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            // Make many of them get past the Ethernet and IP checks.
            if len > 14 && len % 2 == 0 {
                f[0..6].copy_from_slice(&US);
                f[12..14].copy_from_slice(&[0x08, (len % 3 == 0) as u8 * 6]);
            }
            if len > 34 && len % 4 == 0 {
                f[14] = 0x45;
                f[30..34].copy_from_slice(&IP_US.octets());
            }
            let _ = feed(&mut n, &p, &f);
            n.tx_queue().clear();
        }
        assert_eq!(n.counters().rx_frames, 600);
    }

    /// Mutations of valid frames (bit flips, byte sets, truncation, extension): never a
    /// panic, and every frame is accounted for exactly once, handled or dropped by cause.
    #[derive(Debug, Clone)]
    enum Mutation {
        Flip(usize, u8),
        Set(usize, u8),
        Truncate(usize),
        Extend(Vec<u8>),
    }

    fn mutation() -> impl proptest::strategy::Strategy<Value = Mutation> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0usize..64, 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
            2 => (0usize..64, any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
            1 => (0usize..64).prop_map(Mutation::Truncate),
            1 => proptest::collection::vec(any::<u8>(), 0..32).prop_map(Mutation::Extend),
        ]
    }

    proptest::proptest! {
        #[test]
        fn mutated_frames_are_accounted_exactly_once(
            base in 0usize..4,
            muts in proptest::collection::vec(mutation(), 0..6),
        ) {
            let p = pool();
            let mut n = net();
            let mut f = [&UDP_FRAME[..], &PING_FRAME[..], &ARP_REQUEST[..], &PONG_FRAME[..]][base].to_vec();
            for m in muts {
                match m {
                    Mutation::Flip(i, b) if !f.is_empty() => { let l = f.len(); f[i % l] ^= 1 << b }
                    Mutation::Set(i, v) if !f.is_empty() => { let l = f.len(); f[i % l] = v }
                    Mutation::Truncate(l) => f.truncate(l),
                    Mutation::Extend(x) => f.extend_from_slice(&x),
                    _ => {}
                }
            }
            let _ = feed(&mut n, &p, &f);
            let c = *n.counters();
            proptest::prop_assert_eq!(c.rx_frames, 1);
            proptest::prop_assert_eq!(c.rx_handled() + c.rx_drops(), 1, "{:?}", c);
            drop(n);
            proptest::prop_assert_eq!(p.stats().in_use, 0);
        }
    }
}
