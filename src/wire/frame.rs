//! Ethernet/IPv4/UDP framing of transport datagrams, through smoltcp's views.
//!
//! [`encap`] prepends UDP, IPv4 and Ethernet headers in the buffer's headroom (the datagram
//! is not moved) and fills both checksums; [`decap`] validates a received frame (lengths,
//! IPv4 header checksum, UDP checksum when non-zero) and advances the buffer to the UDP
//! payload. A frame that is not IPv4/UDP is [`DecapError::NotUdp`] so the caller can hand it
//! to ARP/ICMP handling.

use std::net::SocketAddrV4;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

use crate::mem::{NoRoom, PktBuf};

/// Bytes of Ethernet + IPv4 (no options) + UDP headers.
pub const UDP_FRAME_OVERHEAD: usize = 14 + 20 + 8;

/// Addresses of one direction of a UDP flow over Ethernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameAddrs {
    /// Source MAC.
    pub src_mac: EthernetAddress,
    /// Destination MAC.
    pub dst_mac: EthernetAddress,
    /// Source IPv4 address and UDP port.
    pub src: SocketAddrV4,
    /// Destination IPv4 address and UDP port.
    pub dst: SocketAddrV4,
}

/// What [`decap`] found in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapped {
    /// Source MAC.
    pub src_mac: EthernetAddress,
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Destination address and port.
    pub dst: SocketAddrV4,
    /// The IPv4 ECN field said Congestion Experienced.
    pub ecn_ce: bool,
}

/// Errors taking a frame apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecapError {
    /// Malformed Ethernet, IPv4 or UDP header, or a bad checksum.
    #[error("malformed or corrupt frame")]
    Malformed,
    /// Well-formed, but not IPv4/UDP (ARP, ICMP, ...).
    #[error("not an IPv4/UDP frame")]
    NotUdp,
}

/// Wrap the datagram in `buf` in UDP/IPv4/Ethernet headers, written into its headroom.
pub fn encap(buf: &mut PktBuf, a: &FrameAddrs) -> Result<(), NoRoom> {
    let caps = ChecksumCapabilities::default();
    let dgram_len = buf.len();
    if buf.headroom() < UDP_FRAME_OVERHEAD {
        return Err(NoRoom {
            need: UDP_FRAME_OVERHEAD,
            have: buf.headroom(),
        });
    }
    let (src_ip, dst_ip) = (IpAddress::Ipv4(*a.src.ip()), IpAddress::Ipv4(*a.dst.ip()));
    let udp = UdpRepr {
        src_port: a.src.port(),
        dst_port: a.dst.port(),
    };
    buf.prepend(8)?;
    udp.emit(
        &mut UdpPacket::new_unchecked(buf.data_mut()),
        &src_ip,
        &dst_ip,
        dgram_len,
        |_| {},
        &caps,
    );
    let ip = Ipv4Repr {
        src_addr: *a.src.ip(),
        dst_addr: *a.dst.ip(),
        next_header: IpProtocol::Udp,
        payload_len: dgram_len + 8,
        hop_limit: 64,
    };
    buf.prepend(ip.buffer_len())?;
    ip.emit(&mut Ipv4Packet::new_unchecked(buf.data_mut()), &caps);
    let eth = EthernetRepr {
        src_addr: a.src_mac,
        dst_addr: a.dst_mac,
        ethertype: EthernetProtocol::Ipv4,
    };
    buf.prepend(eth.buffer_len())?;
    eth.emit(&mut EthernetFrame::new_unchecked(buf.data_mut()));
    Ok(())
}

/// Validate an Ethernet/IPv4/UDP frame and advance `buf` to its UDP payload (trailing
/// Ethernet padding removed).
pub fn decap(buf: &mut PktBuf) -> Result<Decapped, DecapError> {
    let caps = ChecksumCapabilities::default();
    let (d, ip_off, ip_total) = {
        let data = buf.data();
        let eth = EthernetFrame::new_checked(data).map_err(|_| DecapError::Malformed)?;
        let eth_repr = EthernetRepr::parse(&eth).map_err(|_| DecapError::Malformed)?;
        if eth_repr.ethertype != EthernetProtocol::Ipv4 {
            return Err(DecapError::NotUdp);
        }
        let ip_bytes = eth.payload();
        let ip = Ipv4Packet::new_checked(ip_bytes).map_err(|_| DecapError::Malformed)?;
        let ip_repr = Ipv4Repr::parse(&ip, &caps).map_err(|_| DecapError::Malformed)?;
        if ip_repr.next_header != IpProtocol::Udp {
            return Err(DecapError::NotUdp);
        }
        let ecn_ce = ip.ecn() == 3;
        let hl = ip.header_len() as usize;
        let total = ip.total_len() as usize;
        let udp_bytes = &ip_bytes[hl..total];
        let udp = UdpPacket::new_checked(udp_bytes).map_err(|_| DecapError::Malformed)?;
        // The UDP length must be the IPv4 payload's exactly (as the runtime's net layer
        // checks): a shorter one can come from a corrupted frame that the checksum passes.
        if udp.len() as usize != udp_bytes.len() {
            return Err(DecapError::Malformed);
        }
        let (s, t) = (
            IpAddress::Ipv4(ip_repr.src_addr),
            IpAddress::Ipv4(ip_repr.dst_addr),
        );
        let udp_repr = UdpRepr::parse(&udp, &s, &t, &caps).map_err(|_| DecapError::Malformed)?;
        (
            Decapped {
                src_mac: eth_repr.src_addr,
                src: SocketAddrV4::new(ip_repr.src_addr, udp_repr.src_port),
                dst: SocketAddrV4::new(ip_repr.dst_addr, udp_repr.dst_port),
                ecn_ce,
            },
            14 + hl,
            udp.len() as usize,
        )
    };
    buf.advance(ip_off + 8);
    buf.truncate(ip_total - 8);
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::{HugePages, Pool, PoolConfig};
    use std::net::Ipv4Addr;

    fn pool() -> Pool {
        Pool::new(&PoolConfig {
            hugepages: HugePages::Never,
            ..PoolConfig::new("frame-test", 8, 2048)
        })
        .unwrap()
    }

    fn addrs() -> FrameAddrs {
        FrameAddrs {
            src_mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst_mac: EthernetAddress([2, 0, 0, 0, 0, 2]),
            src: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 4000),
            dst: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 5000),
        }
    }

    #[test]
    fn encap_decap_roundtrip_and_corruption() {
        let p = pool();
        let mut b = p.alloc().unwrap();
        b.extend_from_slice(b"hello bypass").unwrap();
        encap(&mut b, &addrs()).unwrap();
        assert_eq!(b.len(), 12 + UDP_FRAME_OVERHEAD);
        let mut c = p.alloc().unwrap();
        c.extend_from_slice(b.data()).unwrap();
        // Ethernet minimum-size padding must be removed.
        c.extend_from_slice(&[0; 10]).unwrap();
        let d = decap(&mut c).unwrap();
        assert_eq!(c.data(), b"hello bypass");
        assert_eq!(d.src, addrs().src);
        assert_eq!(d.dst, addrs().dst);
        // Any single flipped payload bit fails the UDP checksum.
        let mut e = p.alloc().unwrap();
        e.extend_from_slice(b.data()).unwrap();
        e.data_mut()[UDP_FRAME_OVERHEAD + 3] ^= 0x10;
        assert_eq!(decap(&mut e), Err(DecapError::Malformed));
    }
}
