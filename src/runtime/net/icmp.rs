//! ICMP: answering echo requests in place, recording echo replies, sending echo requests.

use std::net::Ipv4Addr;

use smoltcp::wire::{
    EthernetAddress, EthernetFrame, Icmpv4Message, Icmpv4Packet, IpProtocol, Ipv4Packet,
};

use super::{EchoReply, Net, SendError, ETH_LEN, IPV4_LEN, TTL};
use crate::mem::{PktBuf, PoolExhausted};
use crate::time::Instant;

impl Net {
    pub(super) fn handle_icmp(&mut self, now: Instant, mut buf: PktBuf) {
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

    /// Send an ICMP echo request to `dst` with `payload_len` bytes of pattern data.
    pub fn send_ping(
        &mut self,
        now: Instant,
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
}
#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;

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
        assert_eq!(
            (r.from, r.ident, r.seq, r.at),
            (IP_US, 0x0102, 7, Instant::from_nanos(1))
        );
    }
}
