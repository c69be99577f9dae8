//! Ethernet: the ingress dispatch of a received frame by destination and ethertype.

use smoltcp::wire::{EthernetFrame, EthernetProtocol};

use super::{Datagram, Net, UDP_HEADERS_LEN};
use crate::mem::PktBuf;
use crate::time::Instant;

impl Net {
    /// Handle one received frame (see the module contract). Returns a datagram for the
    /// transport when it is UDP to a bound port; answers ARP and ICMP echo itself.
    pub fn handle_frame(&mut self, now: Instant, buf: PktBuf) -> Option<Datagram> {
        self.counters.rx_frames += 1;
        let (dst, src_mac, ethertype) = match EthernetFrame::new_checked(buf.data()) {
            Ok(f) => (f.dst_addr(), f.src_addr(), f.ethertype()),
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
                // Header fields come from one read each (handle_ipv4 and check_udp say
                // why): the buffer may be memory a peer still writes.
                let (mut buf, ip) = self.handle_ipv4(now, buf)?;
                let (src, dst_port, len, checksummed) = self.check_udp(&buf, &ip)?;
                let ecn = ip.ecn;
                self.glean(now, ip.src, src_mac.0);
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
}
#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn ethernet_padding_is_stripped() {
        let p = pool();
        let mut n = net();
        let mut padded = UDP_FRAME.to_vec();
        padded.resize(60, 0xee);
        let d = feed(&mut n, &p, &padded).unwrap();
        assert_eq!(d.payload.data(), b"hello");
    }
}
