//! UDP: validating received datagrams for a bound port and sending them.

use std::net::SocketAddrV4;

use smoltcp::wire::{checksum, IpProtocol, UdpPacket};

use super::ipv4::IpHdr;
use super::{Net, SendError, ETH_LEN, IPV4_LEN, UDP_HEADERS_LEN, UDP_LEN};
use crate::mem::{PktBuf, PoolExhausted};
use crate::time::Instant;

impl Net {
    /// Validate the UDP header of a packet [`handle_ipv4`](Net::handle_ipv4) accepted (`ip`
    /// is its header, read once there). Some: the source, the destination port, the
    /// payload length and whether the datagram carried a checksum.
    ///
    /// As in `handle_ipv4`, the buffer may be memory a peer can still write: the UDP header
    /// is copied once and its length, ports and checksum field are read from the copy only;
    /// the IPv4 addresses and total length come from `ip`. Only the payload bytes are read
    /// from the buffer (for the checksum), and what a writer changes there can alter the
    /// verdict, never a length or a slice bound.
    pub(super) fn check_udp(
        &mut self,
        buf: &PktBuf,
        ip: &IpHdr,
    ) -> Option<(SocketAddrV4, u16, usize, bool)> {
        let data = buf.data();
        // `ip.total` was checked against the frame in handle_ipv4, and the buffer was
        // truncated to it; `get` keeps this safe even if a caller breaks that.
        let Some(datagram) = data.get(ETH_LEN + IPV4_LEN..ETH_LEN + ip.total) else {
            self.counters.udp_malformed += 1;
            return None;
        };
        if datagram.len() < UDP_LEN {
            self.counters.udp_malformed += 1;
            return None;
        }
        // The one read of the UDP header.
        let mut hdr = [0u8; UDP_LEN];
        hdr.copy_from_slice(&datagram[..UDP_LEN]);
        let udp = UdpPacket::new_unchecked(&hdr[..]);
        let udp_len = udp.len() as usize;
        // The UDP length must be the IPv4 payload's, exactly. A shorter one is never sent by
        // a peer of ours; accepting it trusted a length that a corrupted frame can carry
        // past the checksum (a bit flip in a field the sum counts twice), and the transport
        // then acknowledged a truncated packet whose data never came again: a message lost
        // (tests/proto/prop.rs, regression_ordered_acked_undelivered).
        if udp_len != datagram.len() {
            self.counters.udp_malformed += 1;
            return None;
        }
        let sum = udp.checksum();
        // 0: the sender computed no checksum (RFC 768), as smoltcp's verify_checksum.
        if !self.cfg.offloads.rx_checksum && sum != 0 {
            let ph = checksum::pseudo_header_v4(&ip.src, &ip.dst, IpProtocol::Udp, udp_len as u32);
            let ok = checksum::combine(&[
                ph,
                checksum::data(&hdr),
                checksum::data(&datagram[UDP_LEN..udp_len]),
            ]) == !0;
            if !ok {
                self.counters.udp_bad_checksum += 1;
                return None;
            }
        }
        let dst_port = udp.dst_port();
        if !self.is_bound(dst_port) {
            self.counters.udp_no_port += 1;
            return None;
        }
        Some((
            SocketAddrV4::new(ip.src, udp.src_port()),
            dst_port,
            udp_len - UDP_LEN,
            sum != 0,
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
    use smoltcp::wire::{IpAddress, Ipv4Packet};

    /// UDP_FRAME with `f` applied and the IPv4 header checksum made right again (so each
    /// case reaches the length check it is about). The UDP checksum is left stale: every
    /// case below is refused before it, or clears it.
    fn bent(f: impl Fn(&mut [u8])) -> Vec<u8> {
        let mut b = UDP_FRAME.to_vec();
        f(&mut b);
        // (An IHL other than 5 is refused before the checksum is looked at.)
        if b[ETH_LEN] & 0xf == 5 {
            Ipv4Packet::new_unchecked(&mut b[ETH_LEN..]).fill_checksum();
        }
        b
    }

    /// Every length a header claims is checked, from one read, against the bytes that are
    /// there: inconsistent IHL, total and UDP lengths are counted drops, never a panic (a
    /// peer that changes them while we read gets one of these verdicts; see
    /// `handle_ipv4`/`check_udp`: each field is read exactly once, from a local copy).
    #[test]
    fn inconsistent_header_lengths_are_counted_not_panics() {
        let p = pool();
        let mut n = net();
        // IHL 4 (16 bytes) < 20; IHL 15 (60 bytes) past the frame; total 19 < the header;
        // total past the frame; IHL 6 (24 bytes, within the frame): options.
        for f in [
            bent(|b| b[14] = 0x44),
            bent(|b| b[14] = 0x4f),
            bent(|b| b[16..18].copy_from_slice(&19u16.to_be_bytes())),
            bent(|b| b[16..18].copy_from_slice(&200u16.to_be_bytes())),
            bent(|b| b[14] = 0x46),
        ] {
            assert!(feed(&mut n, &p, &f).is_none());
        }
        assert_eq!(
            n.counters().ip_malformed,
            4,
            "IHL 4, IHL 15, total 19, total 200"
        );
        assert_eq!(n.counters().ip_options, 1, "IHL 6: options");
        // UDP length 7 (< its header), 100 (past the IPv4 total), 0, and one byte short of
        // the IPv4 payload: malformed.
        for len in [7u16, 100, 0] {
            let f = bent(|b| b[38..40].copy_from_slice(&len.to_be_bytes()));
            assert!(feed(&mut n, &p, &f).is_none());
        }
        let f = bent(|b| {
            let l = u16::from_be_bytes([b[38], b[39]]) - 1;
            b[38..40].copy_from_slice(&l.to_be_bytes());
        });
        assert!(feed(&mut n, &p, &f).is_none());
        assert_eq!(n.counters().udp_malformed, 4);
        // A total of exactly 28 (UDP header only, no payload, UDP length 8, no checksum).
        let f = bent(|b| {
            b[16..18].copy_from_slice(&28u16.to_be_bytes());
            b[38..40].copy_from_slice(&8u16.to_be_bytes());
            b[40..42].fill(0);
        });
        let d = feed(&mut n, &p, &f).expect("empty datagram delivered");
        assert!(d.payload.is_empty());
        assert!(!d.checksummed);
    }

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
