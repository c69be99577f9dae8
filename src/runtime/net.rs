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
//!   ARP request (see [`ArpConfig`]).
//! - The transmit queue ([`Net::tx_queue`]) is bounded; a full queue is backpressure
//!   ([`SendError::TxFull`] gives the buffer back). The runtime flushes it into the port and
//!   keeps what the port did not take for the next iteration.
//! - With transmit checksum offload the IPv4 header checksum is left 0 and the UDP checksum
//!   field holds the pseudo-header sum, the form DPDK's offload expects; a port that reports
//!   `tx_checksum` must request the offload for every frame it sends.
//! - Nothing here allocates on the data path: buffers come from the caller (a port's pool),
//!   queues are preallocated, the ARP cache has a fixed capacity.

use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::wire::{
    checksum, ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    Icmpv4Message, Icmpv4Packet, IpAddress, IpProtocol, Ipv4Packet, UdpPacket,
};

pub use super::arp::ArpConfig;
use super::arp::{ArpTable, Learned};
use crate::mem::{PktBuf, PoolExhausted};
use crate::pmd::Offloads;

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
    pub at: u64,
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
    pub fn arp_lookup(&mut self, now: u64, ip: Ipv4Addr) -> Option<[u8; 6]> {
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

    // ---- ingress -------------------------------------------------------------------------

    /// Handle one received frame (see the module contract). Returns a datagram for the
    /// transport when it is UDP to a bound port; answers ARP and ICMP echo itself.
    pub fn handle_frame(&mut self, now: u64, buf: PktBuf) -> Option<Datagram> {
        self.counters.rx_frames += 1;
        let (dst, ethertype) = match EthernetFrame::new_checked(buf.data()) {
            Ok(f) => (f.dst_addr(), f.ethertype()),
            Err(_) => {
                self.counters.rx_truncated += 1;
                return None;
            }
        };
        if dst.0 != self.cfg.mac && !dst.is_broadcast() {
            self.counters.rx_not_for_us += 1;
            return None;
        }
        match ethertype {
            EthernetProtocol::Arp => {
                self.handle_arp(now, buf);
                None
            }
            EthernetProtocol::Ipv4 => {
                if dst.is_broadcast() {
                    // We take no broadcast IPv4 (no DHCP, no broadcast UDP).
                    self.counters.ip_not_for_us += 1;
                    return None;
                }
                let mut buf = self.handle_ipv4(now, buf)?;
                let (src, dst_port, len, checksummed) = self.check_udp(&buf)?;
                let ecn = buf.data()[ETH_LEN + 1] & 3;
                buf.advance(UDP_HEADERS_LEN);
                buf.truncate(len);
                self.counters.udp_delivered += 1;
                Some(Datagram {
                    src,
                    dst_port,
                    payload: buf,
                    ecn,
                    checksummed,
                })
            }
            _ => {
                self.counters.rx_unknown_ethertype += 1;
                None
            }
        }
    }

    fn handle_arp(&mut self, now: u64, mut buf: PktBuf) {
        let repr = match ArpPacket::new_checked(&buf.data()[ETH_LEN..]).and_then(|p| {
            // A wrong protocol or address length would make accessors index wrongly; the
            // repr parser checks all four type/length fields.
            ArpRepr::parse(&p)
        }) {
            Ok(r) => r,
            Err(_) => {
                self.counters.arp_malformed += 1;
                return;
            }
        };
        let ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr: sha,
            source_protocol_addr: spa,
            target_protocol_addr: tpa,
            ..
        } = repr
        else {
            self.counters.arp_malformed += 1;
            return;
        };
        if !sha.is_unicast() || spa.is_unspecified() || spa.is_broadcast() {
            self.counters.arp_malformed += 1;
            return;
        }
        if spa == self.cfg.ip {
            // Someone else claims our address (or our own announcement came back): never
            // learn or answer it.
            self.counters.arp_conflicts += 1;
            return;
        }
        let for_us = tpa == self.cfg.ip;
        // RFC 826: update an entry we have; add one when the packet is for us.
        if for_us || self.arp.contains(spa) {
            if self.arp.learn(now, spa, sha.0) == Learned::Evicted {
                self.counters.arp_evictions += 1;
            }
            self.release_waiting(spa, sha.0);
        }
        match operation {
            ArpOperation::Request if for_us => {
                self.counters.arp_requests_in += 1;
                // Answer in place: same buffer, same length.
                let mut frame = EthernetFrame::new_unchecked(buf.data_mut());
                frame.set_dst_addr(sha);
                frame.set_src_addr(EthernetAddress(self.cfg.mac));
                let mut p = ArpPacket::new_unchecked(&mut frame.payload_mut()[..ARP_LEN]);
                ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Reply,
                    source_hardware_addr: EthernetAddress(self.cfg.mac),
                    source_protocol_addr: self.cfg.ip,
                    target_hardware_addr: sha,
                    target_protocol_addr: spa,
                }
                .emit(&mut p);
                if self.queue_tx(buf) {
                    self.counters.arp_replies_out += 1;
                }
            }
            ArpOperation::Reply if for_us => self.counters.arp_replies_in += 1,
            _ => self.counters.arp_ignored += 1,
        }
    }

    /// Frames waiting on `ip` get its MAC and go to the transmit queue.
    fn release_waiting(&mut self, ip: Ipv4Addr, mac: [u8; 6]) {
        let Some(i) = self.arp.pending_index(ip) else {
            return;
        };
        while let Some(mut f) = self.arp.pending[i].frames.pop_front() {
            let Some(h) = f.head_mut(6) else {
                self.counters.tx_no_room += 1;
                continue;
            };
            h.copy_from_slice(&mac);
            if !self.queue_tx(f) {
                // Counted as tx_full; the rest can't fit either.
                let n = self.arp.pending[i].frames.len() as u64;
                self.counters.tx_full += n;
                self.arp.pending[i].frames.clear();
            }
        }
        self.arp.release_pending(i);
    }

    /// Validate the IPv4 header; answers ICMP echo itself (returns None). Some means a UDP
    /// packet to us, with the buffer truncated to the IPv4 total length.
    fn handle_ipv4(&mut self, now: u64, mut buf: PktBuf) -> Option<PktBuf> {
        let ip = &buf.data()[ETH_LEN..];
        if ip.len() < IPV4_LEN {
            self.counters.ip_malformed += 1;
            return None;
        }
        let p = Ipv4Packet::new_unchecked(ip);
        if p.version() != 4 {
            self.counters.ip_bad_version += 1;
            return None;
        }
        if p.check_len().is_err() {
            self.counters.ip_malformed += 1;
            return None;
        }
        if p.header_len() as usize != IPV4_LEN {
            self.counters.ip_options += 1;
            return None;
        }
        if !self.cfg.offloads.rx_checksum && !p.verify_checksum() {
            self.counters.ip_bad_checksum += 1;
            return None;
        }
        if p.more_frags() || p.frag_offset() != 0 {
            self.counters.ip_fragments += 1;
            return None;
        }
        if p.dst_addr() != self.cfg.ip {
            self.counters.ip_not_for_us += 1;
            return None;
        }
        let total = p.total_len() as usize;
        let proto = p.next_header();
        // Drop Ethernet padding after the IPv4 packet.
        buf.truncate(ETH_LEN + total);
        match proto {
            IpProtocol::Udp => Some(buf),
            IpProtocol::Icmp => {
                self.handle_icmp(now, buf);
                None
            }
            _ => {
                self.counters.ip_unknown_protocol += 1;
                None
            }
        }
    }

    fn handle_icmp(&mut self, now: u64, mut buf: PktBuf) {
        let data = &buf.data()[ETH_LEN + IPV4_LEN..];
        let icmp = match Icmpv4Packet::new_checked(data) {
            Ok(p) if p.verify_checksum() => p,
            _ => {
                self.counters.icmp_malformed += 1;
                return;
            }
        };
        match (icmp.msg_type(), icmp.msg_code()) {
            (Icmpv4Message::EchoRequest, 0) => {
                // Answer in place.
                let f = buf.data_mut();
                let (eth, rest) = f.split_at_mut(ETH_LEN);
                let mut e = EthernetFrame::new_unchecked(eth);
                let src_mac = e.src_addr();
                if !src_mac.is_unicast() {
                    self.counters.icmp_malformed += 1;
                    return;
                }
                self.counters.icmp_echo_requests_in += 1;
                e.set_dst_addr(src_mac);
                e.set_src_addr(EthernetAddress(self.cfg.mac));
                let (iph, icmp) = rest.split_at_mut(IPV4_LEN);
                let mut ip = Ipv4Packet::new_unchecked(iph);
                let peer = ip.src_addr();
                ip.set_src_addr(self.cfg.ip);
                ip.set_dst_addr(peer);
                ip.set_hop_limit(TTL);
                ip.fill_checksum();
                let mut m = Icmpv4Packet::new_unchecked(icmp);
                m.set_msg_type(Icmpv4Message::EchoReply);
                m.fill_checksum();
                if self.queue_tx(buf) {
                    self.counters.icmp_echo_replies_out += 1;
                }
            }
            (Icmpv4Message::EchoReply, 0) => {
                self.counters.icmp_echo_replies_in += 1;
                let from = Ipv4Packet::new_unchecked(&buf.data()[ETH_LEN..]).src_addr();
                self.last_echo_reply = Some(EchoReply {
                    from,
                    ident: icmp.echo_ident(),
                    seq: icmp.echo_seq_no(),
                    at: now,
                });
            }
            _ => self.counters.icmp_other += 1,
        }
    }

    fn check_udp(&mut self, buf: &PktBuf) -> Option<(SocketAddrV4, u16, usize, bool)> {
        let ip = Ipv4Packet::new_unchecked(&buf.data()[ETH_LEN..]);
        let (src_ip, dst_ip) = (ip.src_addr(), ip.dst_addr());
        let udp = match UdpPacket::new_checked(ip.payload()) {
            Ok(u) => u,
            Err(_) => {
                self.counters.udp_malformed += 1;
                return None;
            }
        };
        if !self.cfg.offloads.rx_checksum
            && !udp.verify_checksum(&IpAddress::Ipv4(src_ip), &IpAddress::Ipv4(dst_ip))
        {
            self.counters.udp_bad_checksum += 1;
            return None;
        }
        let dst_port = udp.dst_port();
        if !self.is_bound(dst_port) {
            self.counters.udp_no_port += 1;
            return None;
        }
        Some((
            SocketAddrV4::new(src_ip, udp.src_port()),
            dst_port,
            udp.len() as usize - UDP_LEN,
            udp.checksum() != 0,
        ))
    }
}

// ---- egress ------------------------------------------------------------------------------

impl Net {
    /// Send `buf` (holding the UDP payload, with at least [`UDP_HEADERS_LEN`] bytes of
    /// headroom) from our `src_port` to `dst`. See the module contract. `alloc` gives a buffer
    /// for an ARP request when the next hop must be resolved.
    pub fn send_udp(
        &mut self,
        now: u64,
        src_port: u16,
        dst: SocketAddrV4,
        buf: PktBuf,
        alloc: &mut dyn FnMut() -> Result<PktBuf, PoolExhausted>,
    ) -> Result<(), SendError> {
        self.send_udp_checksum(now, src_port, dst, buf, true, alloc)
    }

    /// [`send_udp`](Self::send_udp); with `checksum` false the UDP checksum is left out
    /// (0: "no checksum" in UDP over IPv4), for a peer that agreed to it over an intact link
    /// (see [`Offloads::intact`]): the payload is then never read here. A port with transmit
    /// checksum offload fills it anyway.
    pub fn send_udp_checksum(
        &mut self,
        now: u64,
        src_port: u16,
        dst: SocketAddrV4,
        mut buf: PktBuf,
        checksum: bool,
        alloc: &mut dyn FnMut() -> Result<PktBuf, PoolExhausted>,
    ) -> Result<(), SendError> {
        if self.tx.len() >= self.cfg.tx_queue_limit {
            self.counters.tx_full += 1;
            return Err(SendError::TxFull(buf));
        }
        let udp_len = buf.len() + UDP_LEN;
        if IPV4_LEN + udp_len > self.cfg.mtu as usize || buf.headroom() < UDP_HEADERS_LEN {
            self.counters.tx_no_room += 1;
            return Err(SendError::NoRoom);
        }
        let (src_ip, dst_ip) = (self.cfg.ip, *dst.ip());
        {
            let Ok(h) = buf.prepend(UDP_LEN) else {
                self.counters.tx_no_room += 1;
                return Err(SendError::NoRoom);
            };
            h[0..2].copy_from_slice(&src_port.to_be_bytes());
            h[2..4].copy_from_slice(&dst.port().to_be_bytes());
            h[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
            h[6..8].fill(0);
        }
        // The checksum is computed from a read of the datagram and written into the UDP
        // header alone: the payload may be a shared, read-only slot (zero-copy send, see
        // `mem`), and the header lies in its headroom, below the write floor.
        let ph = || checksum::pseudo_header_v4(&src_ip, &dst_ip, IpProtocol::Udp, udp_len as u32);
        // With transmit offload the device fills the checksum from the pseudo-header sum
        // whatever `checksum` says (a 0 there would make it compute a wrong one).
        let sum = if self.cfg.offloads.tx_checksum {
            Some(ph())
        } else if !checksum {
            None
        } else if self.cfg.udp_tx_checksum {
            let ph = ph();
            let s = !checksum::combine(&[ph, checksum::data(&buf.data()[..udp_len])]);
            // 0 means "no checksum" in UDP over IPv4 (RFC 768).
            Some(if s == 0 { 0xffff } else { s })
        } else {
            None
        };
        if let Some(sum) = sum {
            let Some(h) = buf.head_mut(UDP_LEN) else {
                self.counters.tx_no_room += 1;
                return Err(SendError::NoRoom);
            };
            h[6..8].copy_from_slice(&sum.to_be_bytes());
        }
        self.counters.udp_sent += 1;
        self.send_ipv4(
            now,
            dst_ip,
            IpProtocol::Udp,
            buf,
            self.cfg.offloads.tx_checksum,
            alloc,
        )
    }

    /// Send an ICMP echo request to `dst` with `payload_len` bytes of pattern data.
    pub fn send_ping(
        &mut self,
        now: u64,
        dst: Ipv4Addr,
        ident: u16,
        seq: u16,
        payload_len: usize,
        alloc: &mut dyn FnMut() -> Result<PktBuf, PoolExhausted>,
    ) -> Result<(), SendError> {
        let Ok(mut buf) = alloc() else {
            self.counters.tx_alloc_failed += 1;
            return Err(SendError::NoBuffer);
        };
        if self.tx.len() >= self.cfg.tx_queue_limit {
            self.counters.tx_full += 1;
            return Err(SendError::TxFull(buf));
        }
        if buf.headroom() < ETH_LEN + IPV4_LEN
            || buf.tailroom() < 8 + payload_len
            || IPV4_LEN + 8 + payload_len > self.cfg.mtu as usize
        {
            self.counters.tx_no_room += 1;
            return Err(SendError::NoRoom);
        }
        let Ok(m) = buf.append(8 + payload_len) else {
            self.counters.tx_no_room += 1;
            return Err(SendError::NoRoom);
        };
        for (i, b) in m[8..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut p = Icmpv4Packet::new_unchecked(m);
        p.set_msg_type(Icmpv4Message::EchoRequest);
        p.set_msg_code(0);
        p.set_echo_ident(ident);
        p.set_echo_seq_no(seq);
        p.fill_checksum();
        self.counters.icmp_echo_requests_out += 1;
        self.send_ipv4(now, dst, IpProtocol::Icmp, buf, false, alloc)
    }

    /// Prepend IPv4 and Ethernet headers and route the frame.
    fn send_ipv4(
        &mut self,
        now: u64,
        dst_ip: Ipv4Addr,
        proto: IpProtocol,
        mut buf: PktBuf,
        offload: bool,
        alloc: &mut dyn FnMut() -> Result<PktBuf, PoolExhausted>,
    ) -> Result<(), SendError> {
        let next_hop = if self.on_link(dst_ip) {
            dst_ip
        } else if let Some(gw) = self.cfg.gateway {
            gw
        } else {
            self.counters.tx_no_route += 1;
            return Err(SendError::NoRoute(dst_ip));
        };
        let payload_len = buf.len();
        let Ok(h) = buf.prepend(IPV4_LEN) else {
            self.counters.tx_no_room += 1;
            return Err(SendError::NoRoom);
        };
        let mut ip = Ipv4Packet::new_unchecked(h);
        ip.set_version(4);
        ip.set_header_len(IPV4_LEN as u8);
        ip.set_dscp(0);
        ip.set_ecn(if proto == IpProtocol::Udp {
            self.cfg.tx_ecn & 3
        } else {
            0
        });
        ip.set_total_len((IPV4_LEN + payload_len) as u16);
        // DF is set, so the identification only has to be unique for atomic datagrams
        // (RFC 6864); a counter costs nothing.
        self.ip_ident = self.ip_ident.wrapping_add(1);
        ip.set_ident(self.ip_ident);
        ip.clear_flags();
        ip.set_dont_frag(true);
        ip.set_frag_offset(0);
        ip.set_hop_limit(TTL);
        ip.set_next_header(proto);
        ip.set_src_addr(self.cfg.ip);
        ip.set_dst_addr(dst_ip);
        if offload {
            ip.set_checksum(0);
        } else {
            ip.fill_checksum();
        }
        let Ok(h) = buf.prepend(ETH_LEN) else {
            self.counters.tx_no_room += 1;
            return Err(SendError::NoRoom);
        };
        let mut eth = EthernetFrame::new_unchecked(h);
        eth.set_src_addr(EthernetAddress(self.cfg.mac));
        eth.set_ethertype(EthernetProtocol::Ipv4);
        if let Some(mac) = self.arp.lookup(now, next_hop) {
            eth.set_dst_addr(EthernetAddress(mac));
            // The callers checked for queue space and nothing was queued since.
            debug_assert!(self.tx.len() < self.cfg.tx_queue_limit);
            self.tx.push(buf);
            return Ok(());
        }
        eth.set_dst_addr(EthernetAddress([0; 6]));
        self.park(now, next_hop, buf, alloc)
    }

    /// Queue a frame until `hop` resolves, sending the first request.
    fn park(
        &mut self,
        now: u64,
        hop: Ipv4Addr,
        buf: PktBuf,
        alloc: &mut dyn FnMut() -> Result<PktBuf, PoolExhausted>,
    ) -> Result<(), SendError> {
        let i = match self.arp.pending_index(hop) {
            Some(i) => i,
            None => match self.arp.claim_pending(hop, now) {
                Some(i) => {
                    self.arp.pending[i].tries = 1;
                    self.send_arp_request(hop, alloc);
                    i
                }
                None => {
                    self.counters.arp_pending_full += 1;
                    return Err(SendError::ArpQueueFull(hop));
                }
            },
        };
        let q = &mut self.arp.pending[i].frames;
        if q.len() >= self.arp.cfg.queue_per_dest {
            self.counters.arp_pending_full += 1;
            return Err(SendError::ArpQueueFull(hop));
        }
        q.push_back(buf);
        Ok(())
    }

    /// Send a gratuitous ARP request (sender and target our address) so that peers which
    /// already know our address refresh their entry (after a restart, a MAC change).
    pub fn announce(&mut self, alloc: &mut dyn FnMut() -> Result<PktBuf, PoolExhausted>) {
        self.send_arp_request(self.cfg.ip, alloc);
    }

    fn send_arp_request(
        &mut self,
        target: Ipv4Addr,
        alloc: &mut dyn FnMut() -> Result<PktBuf, PoolExhausted>,
    ) {
        let Ok(mut buf) = alloc() else {
            self.counters.tx_alloc_failed += 1;
            return;
        };
        let Ok(f) = buf.append(ETH_LEN + ARP_LEN) else {
            self.counters.tx_alloc_failed += 1;
            return;
        };
        let mut eth = EthernetFrame::new_unchecked(f);
        eth.set_dst_addr(EthernetAddress::BROADCAST);
        eth.set_src_addr(EthernetAddress(self.cfg.mac));
        eth.set_ethertype(EthernetProtocol::Arp);
        let mut p = ArpPacket::new_unchecked(eth.payload_mut());
        ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: EthernetAddress(self.cfg.mac),
            source_protocol_addr: self.cfg.ip,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: target,
        }
        .emit(&mut p);
        if self.queue_tx(buf) {
            self.counters.arp_requests_out += 1;
        }
    }

    /// Housekeeping, once per loop iteration: retry ARP requests, give up on destinations
    /// that stay unresolved (their frames are dropped and counted). Cheap when nothing waits.
    #[inline]
    pub fn poll(&mut self, now: u64, alloc: &mut dyn FnMut() -> Result<PktBuf, PoolExhausted>) {
        if self.arp.pending_count != 0 {
            self.retry_arp(now, alloc);
        }
    }

    fn retry_arp(&mut self, now: u64, alloc: &mut dyn FnMut() -> Result<PktBuf, PoolExhausted>) {
        for i in 0..self.arp.pending.len() {
            let Some(ip) = self.arp.pending[i].ip else {
                continue;
            };
            let p = &self.arp.pending[i];
            if now.saturating_sub(p.last_request) < self.arp.cfg.retry_ns {
                continue;
            }
            if p.tries >= self.arp.cfg.max_tries {
                let n = p.frames.len() as u64;
                self.counters.arp_unresolved_drops += n;
                self.arp.pending[i].frames.clear();
                self.arp.release_pending(i);
                continue;
            }
            self.arp.pending[i].tries += 1;
            self.arp.pending[i].last_request = now;
            self.send_arp_request(ip, alloc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::{HugePages, Pool, PoolConfig};

    const UDP_FRAME: [u8; 47] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x21, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x14, 0x96, 0x0a, 0x00, 0x00, 0x02,
        0x0a, 0x00, 0x00, 0x01, 0x13, 0x88, 0x1b, 0x58, 0x00, 0x0d, 0x79, 0x1f, 0x68, 0x65, 0x6c,
        0x6c, 0x6f,
    ];
    const PING_FRAME: [u8; 50] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x24, 0x12, 0x34, 0x40, 0x00, 0x37, 0x01, 0x1d, 0xa3, 0x0a, 0x00, 0x00, 0x02,
        0x0a, 0x00, 0x00, 0x01, 0x08, 0x00, 0x65, 0x61, 0x01, 0x02, 0x00, 0x07, 0x61, 0x62, 0x63,
        0x64, 0x65, 0x66, 0x67, 0x68,
    ];
    const PONG_FRAME: [u8; 50] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x24, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x14, 0xa3, 0x0a, 0x00, 0x00, 0x01,
        0x0a, 0x00, 0x00, 0x02, 0x00, 0x00, 0x6d, 0x61, 0x01, 0x02, 0x00, 0x07, 0x61, 0x62, 0x63,
        0x64, 0x65, 0x66, 0x67, 0x68,
    ];
    const SENT_FRAME: [u8; 47] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x21, 0x00, 0x01, 0x40, 0x00, 0x40, 0x11, 0x26, 0xc9, 0x0a, 0x00, 0x00, 0x01,
        0x0a, 0x00, 0x00, 0x02, 0x1b, 0x58, 0x13, 0x88, 0x00, 0x0d, 0x79, 0x1f, 0x68, 0x65, 0x6c,
        0x6c, 0x6f,
    ];
    const ARP_REQUEST: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x0a, 0x00,
        0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x01,
    ];
    const ARP_REPLY: [u8; 42] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x00,
        0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x0a, 0x00, 0x00, 0x02,
    ];

    const US: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const PEER: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const IP_US: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const IP_PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn pool() -> Pool {
        Pool::new(&PoolConfig {
            hugepages: HugePages::Never,
            ..PoolConfig::new("net-test", 64, 2048)
        })
        .unwrap()
    }

    fn net() -> Net {
        let mut n = Net::new(NetConfig::new(US, IP_US));
        n.bind(7000);
        n
    }

    fn frame(p: &Pool, bytes: &[u8]) -> PktBuf {
        let mut b = p.alloc().unwrap();
        b.extend_from_slice(bytes).unwrap();
        b
    }

    /// Feed `bytes`; return the datagram if any.
    fn feed(n: &mut Net, p: &Pool, bytes: &[u8]) -> Option<Datagram> {
        n.handle_frame(1, frame(p, bytes))
    }

    fn sent(n: &mut Net) -> Vec<Vec<u8>> {
        n.tx_queue().drain(..).map(|b| b.data().to_vec()).collect()
    }

    #[test]
    fn udp_to_bound_port_is_delivered_zero_copy() {
        let p = pool();
        let mut n = net();
        let b = frame(&p, &UDP_FRAME);
        let slot = b.slot();
        let d = n.handle_frame(1, b).expect("delivered");
        assert_eq!(d.src, SocketAddrV4::new(IP_PEER, 5000));
        assert_eq!(d.dst_port, 7000);
        assert_eq!(d.payload.data(), b"hello");
        assert_eq!(d.payload.slot(), slot, "same buffer");
        assert_eq!(
            d.payload.headroom(),
            p.headroom() as usize + UDP_HEADERS_LEN
        );
        assert_eq!(n.counters().udp_delivered, 1);
        assert_eq!(n.counters().rx_drops(), 0);
    }

    #[test]
    fn ecn_is_delivered_and_set_on_transmit() {
        let p = pool();
        let mut n = net();
        let mut f = UDP_FRAME.to_vec();
        f[15] = 0x03; // ECN CE
        f[24] = 0;
        f[25] = 0;
        let c = !checksum::data(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(feed(&mut n, &p, &f).unwrap().ecn, 3);
        assert_eq!(feed(&mut n, &p, &UDP_FRAME).unwrap().ecn, 0);

        let mut cfg = NetConfig::new(US, IP_US);
        cfg.tx_ecn = 2;
        cfg.static_arp.push((IP_PEER, PEER));
        let mut n = Net::new(cfg);
        let b = p.alloc().unwrap();
        n.send_udp(0, 1, SocketAddrV4::new(IP_PEER, 2), b, &mut || p.alloc())
            .unwrap();
        let f = sent(&mut n).pop().unwrap();
        assert_eq!(f[15] & 3, 2, "ECT(0)");
        assert!(Ipv4Packet::new_checked(&f[14..]).unwrap().verify_checksum());
        n.send_ping(0, IP_PEER, 1, 1, 0, &mut || p.alloc()).unwrap();
        let f = sent(&mut n).pop().unwrap();
        assert_eq!(f[15] & 3, 0, "ICMP is not ECN-capable");
    }

    #[test]
    fn ethernet_padding_is_stripped() {
        let p = pool();
        let mut n = net();
        let mut padded = UDP_FRAME.to_vec();
        padded.resize(60, 0xee);
        let d = feed(&mut n, &p, &padded).unwrap();
        assert_eq!(d.payload.data(), b"hello");
    }

    #[test]
    fn arp_request_for_us_is_answered_in_place_and_learned() {
        let p = pool();
        let mut n = net();
        assert!(feed(&mut n, &p, &ARP_REQUEST).is_none());
        assert_eq!(sent(&mut n), vec![ARP_REPLY.to_vec()]);
        assert_eq!(n.counters().arp_requests_in, 1);
        assert_eq!(n.counters().arp_replies_out, 1);
        assert_eq!(n.arp_lookup(2, IP_PEER), Some(PEER));
    }

    #[test]
    fn gratuitous_arp_refreshes_known_entries_only() {
        let p = pool();
        // The peer announces itself.
        let mut peer = Net::new(NetConfig::new(PEER, IP_PEER));
        peer.announce(&mut || p.alloc());
        let ann = sent(&mut peer).pop().unwrap();
        assert_eq!(&ann[0..6], &[0xff; 6]);
        assert_eq!(&ann[28..32], &IP_PEER.octets(), "sender address");
        assert_eq!(&ann[38..42], &IP_PEER.octets(), "target address = sender");
        // A node that doesn't know the peer doesn't add it.
        let mut n = net();
        assert!(feed(&mut n, &p, &ann).is_none());
        assert_eq!(n.arp_lookup(2, IP_PEER), None);
        assert_eq!(n.counters().arp_ignored, 1);
        assert!(sent(&mut n).is_empty(), "no reply to a gratuitous request");
        // One that knows it under an old MAC updates.
        let mut n = net();
        n.arp.learn(0, IP_PEER, [2, 0, 0, 0, 0, 0x99]);
        assert!(feed(&mut n, &p, &ann).is_none());
        assert_eq!(n.arp_lookup(2, IP_PEER), Some(PEER));
        // Our own address claimed by someone else: ignored, counted.
        let mut me = Net::new(NetConfig::new(US, IP_PEER));
        assert!(feed(&mut me, &p, &ann).is_none());
        assert_eq!(me.counters().arp_conflicts, 1);
        assert_eq!(me.arp_entries(), 0);
    }

    #[test]
    fn arp_request_for_someone_else_is_ignored() {
        let p = pool();
        let mut n = net();
        let mut req = ARP_REQUEST;
        req[41] = 9; // target 10.0.0.9
        assert!(feed(&mut n, &p, &req).is_none());
        assert!(sent(&mut n).is_empty());
        assert_eq!(n.counters().arp_ignored, 1);
        assert_eq!(n.arp_lookup(2, IP_PEER), None, "not learned: not about us");
    }

    #[test]
    fn echo_request_is_answered_in_place() {
        let p = pool();
        let mut n = net();
        let mut padded = PING_FRAME.to_vec();
        padded.resize(64, 0);
        assert!(feed(&mut n, &p, &padded).is_none());
        assert_eq!(sent(&mut n), vec![PONG_FRAME.to_vec()]);
        assert_eq!(n.counters().icmp_echo_requests_in, 1);
        assert_eq!(n.counters().icmp_echo_replies_out, 1);
    }

    #[test]
    fn echo_reply_is_recorded() {
        let p = pool();
        // Seen from the peer's side, our PONG is a reply to it.
        let mut n = Net::new(NetConfig::new(PEER, IP_PEER));
        assert!(feed(&mut n, &p, &PONG_FRAME).is_none());
        let r = n.last_echo_reply().unwrap();
        assert_eq!((r.from, r.ident, r.seq, r.at), (IP_US, 0x0102, 7, 1));
    }

    #[test]
    fn send_udp_builds_headers_in_headroom() {
        let p = pool();
        let mut n = net();
        n.add_static_arp(IP_PEER, PEER);
        let mut b = p.alloc().unwrap();
        b.extend_from_slice(b"hello").unwrap();
        let slot = b.slot();
        n.send_udp(0, 7000, SocketAddrV4::new(IP_PEER, 5000), b, &mut || {
            p.alloc()
        })
        .unwrap();
        let q = n.tx_queue();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].slot(), slot, "payload not copied");
        assert_eq!(q[0].data(), &SENT_FRAME[..]);
    }

    #[test]
    fn send_udp_without_checksum_leaves_zero_and_is_accepted() {
        let p = pool();
        let mut n = net();
        n.add_static_arp(IP_PEER, PEER);
        let mut b = p.alloc().unwrap();
        b.extend_from_slice(b"hello").unwrap();
        n.send_udp_checksum(
            0,
            7000,
            SocketAddrV4::new(IP_PEER, 5000),
            b,
            false,
            &mut || p.alloc(),
        )
        .unwrap();
        let f = sent(&mut n).pop().unwrap();
        assert_eq!(&f[40..42], &[0, 0], "UDP checksum left out");
        assert_eq!(f[..40], SENT_FRAME[..40], "headers otherwise the same");
        assert_eq!(f[42..], SENT_FRAME[42..]);
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert!(
            ip.verify_checksum(),
            "the IPv4 header checksum is always filled"
        );
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(&IpAddress::Ipv4(IP_US), &IpAddress::Ipv4(IP_PEER)));
    }

    #[test]
    fn send_udp_with_tx_offload_leaves_partial_checksums() {
        let p = pool();
        let mut cfg = NetConfig::new(US, IP_US);
        cfg.offloads.tx_checksum = true;
        cfg.static_arp.push((IP_PEER, PEER));
        let mut n = Net::new(cfg);
        let mut b = p.alloc().unwrap();
        b.extend_from_slice(b"hello").unwrap();
        n.send_udp(0, 7000, SocketAddrV4::new(IP_PEER, 5000), b, &mut || {
            p.alloc()
        })
        .unwrap();
        let f = sent(&mut n).pop().unwrap();
        assert_eq!(&f[24..26], &[0, 0], "IPv4 checksum left to the device");
        let ph = checksum::pseudo_header_v4(&IP_US, &IP_PEER, IpProtocol::Udp, 13);
        assert_eq!(
            &f[40..42],
            &ph.to_be_bytes(),
            "UDP field holds the pseudo-header sum"
        );
    }

    #[test]
    fn unresolved_next_hop_parks_frames_until_arp_reply() {
        let p = pool();
        let mut n = net();
        for i in 0..3u8 {
            let mut b = p.alloc().unwrap();
            b.extend_from_slice(&[i]).unwrap();
            n.send_udp(0, 7000, SocketAddrV4::new(IP_PEER, 5000), b, &mut || {
                p.alloc()
            })
            .unwrap();
        }
        // One ARP request went out, the frames wait.
        let out = sent(&mut n);
        assert_eq!(out.len(), 1);
        let req = EthernetFrame::new_checked(&out[0][..]).unwrap();
        assert_eq!(req.ethertype(), EthernetProtocol::Arp);
        assert!(req.dst_addr().is_broadcast());
        assert_eq!(n.arp_waiting(), 3);
        // The peer answers (its reply to us mirrors ARP_REPLY with roles swapped).
        let mut reply = ARP_REPLY;
        reply[0..6].copy_from_slice(&US);
        reply[6..12].copy_from_slice(&PEER);
        reply[22..28].copy_from_slice(&PEER);
        reply[28..32].copy_from_slice(&IP_PEER.octets());
        reply[32..38].copy_from_slice(&US);
        reply[38..42].copy_from_slice(&IP_US.octets());
        assert!(feed(&mut n, &p, &reply).is_none());
        assert_eq!(n.counters().arp_replies_in, 1);
        let out = sent(&mut n);
        assert_eq!(out.len(), 3);
        for (i, f) in out.iter().enumerate() {
            assert_eq!(&f[0..6], &PEER, "destination MAC filled in");
            assert_eq!(f[UDP_HEADERS_LEN], i as u8, "in order");
        }
        assert_eq!(n.arp_waiting(), 0);
    }

    #[test]
    fn unresolved_next_hop_is_retried_then_given_up() {
        let p = pool();
        let mut cfg = NetConfig::new(US, IP_US);
        cfg.arp.retry_ns = 100;
        cfg.arp.max_tries = 3;
        cfg.arp.queue_per_dest = 2;
        let mut n = Net::new(cfg);
        for _ in 0..3 {
            let b = p.alloc().unwrap();
            let _ = n.send_udp(0, 1, SocketAddrV4::new(IP_PEER, 2), b, &mut || p.alloc());
        }
        assert_eq!(
            n.counters().arp_pending_full,
            1,
            "queue of 2 per destination"
        );
        let mut requests = sent(&mut n).len();
        for t in (0..=1000).step_by(10) {
            n.poll(t, &mut || p.alloc());
            requests += sent(&mut n).len();
        }
        assert_eq!(requests, 3, "max_tries requests");
        assert_eq!(n.counters().arp_requests_out, 3);
        assert_eq!(n.counters().arp_unresolved_drops, 2);
        assert_eq!(n.arp_waiting(), 0);
        assert_eq!(p.stats().in_use, 0, "no buffer leaked");
    }

    #[test]
    fn off_link_goes_to_gateway_or_fails() {
        let p = pool();
        let mut n = net();
        let far = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 1), 9);
        let r = n.send_udp(0, 1, far, p.alloc().unwrap(), &mut || p.alloc());
        assert!(matches!(r, Err(SendError::NoRoute(_))));
        assert_eq!(n.counters().tx_no_route, 1);
        let mut cfg = NetConfig::new(US, IP_US);
        cfg.gateway = Some(Ipv4Addr::new(10, 0, 0, 254));
        cfg.static_arp
            .push((Ipv4Addr::new(10, 0, 0, 254), [2, 0, 0, 0, 0, 0xfe]));
        let mut n = Net::new(cfg);
        n.send_udp(0, 1, far, p.alloc().unwrap(), &mut || p.alloc())
            .unwrap();
        let f = sent(&mut n).pop().unwrap();
        assert_eq!(&f[0..6], &[2, 0, 0, 0, 0, 0xfe]);
        assert_eq!(&f[30..34], &[192, 168, 1, 1]);
    }

    #[test]
    fn full_tx_queue_is_backpressure() {
        let p = pool();
        let mut cfg = NetConfig::new(US, IP_US);
        cfg.tx_queue_limit = 2;
        cfg.static_arp.push((IP_PEER, PEER));
        let mut n = Net::new(cfg);
        let dst = SocketAddrV4::new(IP_PEER, 5000);
        for _ in 0..2 {
            n.send_udp(0, 1, dst, p.alloc().unwrap(), &mut || p.alloc())
                .unwrap();
        }
        let r = n.send_udp(0, 1, dst, p.alloc().unwrap(), &mut || p.alloc());
        let Err(SendError::TxFull(b)) = r else {
            panic!("expected TxFull, got {r:?}")
        };
        assert_eq!(b.len(), 0, "buffer returned untouched");
        assert_eq!(n.counters().tx_full, 1);
    }

    #[test]
    fn oversized_and_headroomless_sends_fail() {
        let p = pool();
        let mut n = net();
        n.add_static_arp(IP_PEER, PEER);
        let dst = SocketAddrV4::new(IP_PEER, 5000);
        let mut b = p.alloc().unwrap();
        b.append(1500 - 28 + 1).unwrap();
        assert!(matches!(
            n.send_udp(0, 1, dst, b, &mut || p.alloc()),
            Err(SendError::NoRoom)
        ));
        let mut b = p.alloc().unwrap();
        b.set_data(0, 4).unwrap();
        assert!(matches!(
            n.send_udp(0, 1, dst, b, &mut || p.alloc()),
            Err(SendError::NoRoom)
        ));
        assert_eq!(n.counters().tx_no_room, 2);
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
