//! UDP: validating received datagrams for a bound port and sending them.

use std::net::SocketAddrV4;

use smoltcp::wire::{checksum, IpAddress, IpProtocol, Ipv4Packet, UdpPacket};

use super::{Net, SendError, ETH_LEN, IPV4_LEN, UDP_HEADERS_LEN, UDP_LEN};
use crate::mem::{PktBuf, PoolExhausted};
use crate::time::Instant;

impl Net {
    pub(super) fn check_udp(&mut self, buf: &PktBuf) -> Option<(SocketAddrV4, u16, usize, bool)> {
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

    /// Send `buf` (holding the UDP payload, with at least [`UDP_HEADERS_LEN`] bytes of
    /// headroom) from our `src_port` to `dst`. See the module contract. `alloc` gives a buffer
    /// for an ARP request when the next hop must be resolved.
    pub fn send_udp(
        &mut self,
        now: Instant,
        src_port: u16,
        dst: SocketAddrV4,
        buf: PktBuf,
        alloc: &mut dyn FnMut() -> Result<PktBuf, PoolExhausted>,
    ) -> Result<(), SendError> {
        self.send_udp_checksum(now, src_port, dst, buf, true, alloc)
    }

    /// [`send_udp`](Self::send_udp); with `checksum` false the UDP checksum is left out
    /// (0: "no checksum" in UDP over IPv4), for a peer that agreed to it over an intact link
    /// (see [`Offloads::intact`](crate::pmd::Offloads::intact)): the payload is then never
    /// read here. A port with transmit checksum offload fills it anyway.
    pub fn send_udp_checksum(
        &mut self,
        now: Instant,
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
}
#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;
    use super::*;

    #[test]
    fn udp_to_bound_port_is_delivered_zero_copy() {
        let p = pool();
        let mut n = net();
        let b = frame(&p, &UDP_FRAME);
        let slot = b.slot();
        let d = n
            .handle_frame(Instant::from_nanos(1), b)
            .expect("delivered");
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
        n.send_udp(
            Instant::from_nanos(0),
            1,
            SocketAddrV4::new(IP_PEER, 2),
            b,
            &mut || p.alloc(),
        )
        .unwrap();
        let f = sent(&mut n).pop().unwrap();
        assert_eq!(f[15] & 3, 2, "ECT(0)");
        assert!(Ipv4Packet::new_checked(&f[14..]).unwrap().verify_checksum());
        n.send_ping(Instant::from_nanos(0), IP_PEER, 1, 1, 0, &mut || p.alloc())
            .unwrap();
        let f = sent(&mut n).pop().unwrap();
        assert_eq!(f[15] & 3, 0, "ICMP is not ECN-capable");
    }

    #[test]
    fn send_udp_builds_headers_in_headroom() {
        let p = pool();
        let mut n = net();
        n.add_static_arp(IP_PEER, PEER);
        let mut b = p.alloc().unwrap();
        b.extend_from_slice(b"hello").unwrap();
        let slot = b.slot();
        n.send_udp(
            Instant::from_nanos(0),
            7000,
            SocketAddrV4::new(IP_PEER, 5000),
            b,
            &mut || p.alloc(),
        )
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
            Instant::ZERO,
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
        n.send_udp(
            Instant::from_nanos(0),
            7000,
            SocketAddrV4::new(IP_PEER, 5000),
            b,
            &mut || p.alloc(),
        )
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
    fn oversized_and_headroomless_sends_fail() {
        let p = pool();
        let mut n = net();
        n.add_static_arp(IP_PEER, PEER);
        let dst = SocketAddrV4::new(IP_PEER, 5000);
        let mut b = p.alloc().unwrap();
        b.append(1500 - 28 + 1).unwrap();
        assert!(matches!(
            n.send_udp(Instant::from_nanos(0), 1, dst, b, &mut || p.alloc()),
            Err(SendError::NoRoom)
        ));
        let mut b = p.alloc().unwrap();
        b.set_data(0, 4).unwrap();
        assert!(matches!(
            n.send_udp(Instant::from_nanos(0), 1, dst, b, &mut || p.alloc()),
            Err(SendError::NoRoom)
        ));
        assert_eq!(n.counters().tx_no_room, 2);
    }
}
