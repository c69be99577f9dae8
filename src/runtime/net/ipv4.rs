//! IPv4: validating received headers and prepending IPv4 and Ethernet headers to what is sent.

use std::net::Ipv4Addr;

use smoltcp::wire::{EthernetAddress, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet};

use super::{Net, SendError, ETH_LEN, IPV4_LEN, TTL};
use crate::mem::{PktBuf, PoolExhausted};
use crate::time::Instant;

/// The fields of a received IPv4 header the layers above use, read once (see
/// [`Net::handle_ipv4`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct IpHdr {
    pub(super) src: Ipv4Addr,
    pub(super) dst: Ipv4Addr,
    /// Total length, checked: `IPV4_LEN..=` the bytes after the Ethernet header.
    pub(super) total: usize,
    /// The ECN bits of the TOS byte.
    pub(super) ecn: u8,
}

impl Net {
    /// Validate the IPv4 header; answers ICMP echo itself (returns None). Some means a UDP
    /// packet to us, with the buffer truncated to the IPv4 total length, and the header
    /// fields the caller needs, from the one read of the header.
    ///
    /// The frame may lie in memory another process can still write while we read it (a
    /// memif client receives zero-copy views of the region its peer maps): the header is
    /// copied once into a local and every field (version, IHL, total length, flags,
    /// addresses, protocol, ECN) is read and checked from that copy, never again from the
    /// buffer, so a racing writer cannot pass a check with one value and be used with
    /// another (a double fetch: a total length or IHL changed between the check and the
    /// slicing would panic).
    pub(super) fn handle_ipv4(&mut self, now: Instant, mut buf: PktBuf) -> Option<(PktBuf, IpHdr)> {
        let data = buf.data();
        let Some(avail) = data.len().checked_sub(ETH_LEN) else {
            self.counters.ip_malformed += 1;
            return None;
        };
        if avail < IPV4_LEN {
            self.counters.ip_malformed += 1;
            return None;
        }
        // The one read of the header (see above).
        let mut hdr = [0u8; IPV4_LEN];
        hdr.copy_from_slice(&data[ETH_LEN..ETH_LEN + IPV4_LEN]);
        let p = Ipv4Packet::new_unchecked(&hdr[..]);
        if p.version() != 4 {
            self.counters.ip_bad_version += 1;
            return None;
        }
        // Lengths from the copy: IHL at least 20, the total at least the header and within
        // the frame (what smoltcp's check_len checks, on values read once).
        let ihl = p.header_len() as usize;
        let total = p.total_len() as usize;
        if ihl < IPV4_LEN || ihl > avail || total < ihl || total > avail {
            self.counters.ip_malformed += 1;
            return None;
        }
        if ihl != IPV4_LEN {
            self.counters.ip_options += 1;
            return None;
        }
        // The checksum over the copy (IHL is 20: the copy is the whole header).
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
        let h = IpHdr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            total,
            ecn: hdr[1] & 3,
        };
        let proto = p.next_header();
        // Drop Ethernet padding after the IPv4 packet (`total` from the copy, checked above).
        buf.truncate(ETH_LEN + total);
        match proto {
            IpProtocol::Udp => Some((buf, h)),
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

    /// Prepend IPv4 and Ethernet headers and route the frame.
    pub(super) fn send_ipv4(
        &mut self,
        now: Instant,
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
}
#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;
    use super::*;

    #[test]
    fn off_link_goes_to_gateway_or_fails() {
        let p = pool();
        let mut n = net();
        let far = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 1), 9);
        let r = n.send_udp(
            Instant::from_nanos(0),
            1,
            far,
            p.alloc().unwrap(),
            &mut || p.alloc(),
        );
        assert!(matches!(r, Err(SendError::NoRoute(_))));
        assert_eq!(n.counters().tx_no_route, 1);
        let mut cfg = NetConfig::new(US, IP_US);
        cfg.gateway = Some(Ipv4Addr::new(10, 0, 0, 254));
        cfg.static_arp
            .push((Ipv4Addr::new(10, 0, 0, 254), [2, 0, 0, 0, 0, 0xfe]));
        let mut n = Net::new(cfg);
        n.send_udp(
            Instant::from_nanos(0),
            1,
            far,
            p.alloc().unwrap(),
            &mut || p.alloc(),
        )
        .unwrap();
        let f = sent(&mut n).pop().unwrap();
        assert_eq!(&f[0..6], &[2, 0, 0, 0, 0, 0xfe]);
        assert_eq!(&f[30..34], &[192, 168, 1, 1]);
    }
}
