//! IPv4: validating received headers and prepending IPv4 and Ethernet headers to what is sent.

use std::net::Ipv4Addr;

use smoltcp::wire::{EthernetAddress, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet};

use super::{Net, SendError, ETH_LEN, IPV4_LEN, TTL};
use crate::mem::{PktBuf, PoolExhausted};
use crate::time::Instant;

impl Net {
    /// Validate the IPv4 header; answers ICMP echo itself (returns None). Some means a UDP
    /// packet to us, with the buffer truncated to the IPv4 total length.
    pub(super) fn handle_ipv4(&mut self, now: Instant, mut buf: PktBuf) -> Option<PktBuf> {
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
