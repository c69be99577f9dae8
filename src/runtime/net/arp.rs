//! ARP: answering and learning from requests and replies, parking frames for an unresolved
//! next hop, sending and retrying requests.

use std::net::Ipv4Addr;

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
};

use super::super::arp::Learned;
use super::{Net, SendError, ARP_LEN, ETH_LEN};
use crate::mem::{PktBuf, PoolExhausted};
use crate::time::Instant;

impl Net {
    pub(super) fn handle_arp(&mut self, now: Instant, mut buf: PktBuf) {
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

    /// A UDP datagram from `ip` arrived in a frame from `mac`: where the cache has no entry
    /// for an on-link `ip`, add one (the answer to an unsolicited datagram, a handshake's
    /// stateless ACCEPT, then goes out without an ARP request and takes no pending queue),
    /// and release frames waiting on it. Never replaces an entry: only ARP does (RFC 826).
    /// One comparison when the sender is the last one seen.
    #[inline]
    pub(super) fn glean(&mut self, now: Instant, ip: Ipv4Addr, mac: [u8; 6]) {
        let key = (ip.to_bits(), mac);
        if self.last_glean != key {
            self.last_glean = key;
            self.glean_new(now, ip, mac);
        }
    }

    #[inline(never)]
    fn glean_new(&mut self, now: Instant, ip: Ipv4Addr, mac: [u8; 6]) {
        if !EthernetAddress(mac).is_unicast()
            || !self.on_link(ip)
            || ip == self.cfg.ip
            || ip.is_broadcast()
            || ip.is_unspecified()
        {
            return;
        }
        let Some(learned) = self.arp.glean(now, ip, mac) else {
            return;
        };
        self.counters.arp_gleaned += 1;
        if learned == Learned::Evicted {
            self.counters.arp_evictions += 1;
        }
        self.release_waiting(ip, mac);
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

    /// Queue a frame until `hop` resolves, sending the first request.
    pub(super) fn park(
        &mut self,
        now: Instant,
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
    pub fn poll(&mut self, now: Instant, alloc: &mut dyn FnMut() -> Result<PktBuf, PoolExhausted>) {
        if self.arp.pending_count != 0 {
            self.retry_arp(now, alloc);
        }
    }

    fn retry_arp(
        &mut self,
        now: Instant,
        alloc: &mut dyn FnMut() -> Result<PktBuf, PoolExhausted>,
    ) {
        for i in 0..self.arp.pending.len() {
            let Some(ip) = self.arp.pending[i].ip else {
                continue;
            };
            let p = &self.arp.pending[i];
            if now.nanos_since(p.last_request) < self.arp.cfg.retry_ns {
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
    use super::super::testutil::*;
    use super::super::*;
    use super::*;

    #[test]
    fn arp_request_for_us_is_answered_in_place_and_learned() {
        let p = pool();
        let mut n = net();
        assert!(feed(&mut n, &p, &ARP_REQUEST).is_none());
        assert_eq!(sent(&mut n), vec![ARP_REPLY.to_vec()]);
        assert_eq!(n.counters().arp_requests_in, 1);
        assert_eq!(n.counters().arp_replies_out, 1);
        assert_eq!(n.arp_lookup(Instant::from_nanos(2), IP_PEER), Some(PEER));
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
        assert_eq!(n.arp_lookup(Instant::from_nanos(2), IP_PEER), None);
        assert_eq!(n.counters().arp_ignored, 1);
        assert!(sent(&mut n).is_empty(), "no reply to a gratuitous request");
        // One that knows it under an old MAC updates.
        let mut n = net();
        n.arp.learn(Instant::ZERO, IP_PEER, [2, 0, 0, 0, 0, 0x99]);
        assert!(feed(&mut n, &p, &ann).is_none());
        assert_eq!(n.arp_lookup(Instant::from_nanos(2), IP_PEER), Some(PEER));
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
        assert_eq!(
            n.arp_lookup(Instant::from_nanos(2), IP_PEER),
            None,
            "not learned: not about us"
        );
    }

    #[test]
    fn unresolved_next_hop_parks_frames_until_arp_reply() {
        let p = pool();
        let mut n = net();
        for i in 0..3u8 {
            let mut b = p.alloc().unwrap();
            b.extend_from_slice(&[i]).unwrap();
            n.send_udp(
                Instant::from_nanos(0),
                7000,
                SocketAddrV4::new(IP_PEER, 5000),
                b,
                &mut || p.alloc(),
            )
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

    /// UDP_FRAME as sent by `mac`/`ip` (a spoofed source), its UDP checksum left out (0) and
    /// its IPv4 header checksum made right.
    fn udp_from(ip: Ipv4Addr, mac: [u8; 6]) -> Vec<u8> {
        let mut f = UDP_FRAME.to_vec();
        f[6..12].copy_from_slice(&mac);
        f[26..30].copy_from_slice(&ip.octets());
        f[40..42].fill(0);
        f[24..26].fill(0);
        let c = !smoltcp::wire::checksum::data(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    }

    /// Issue 18: an on-link host that sends hellos from many spoofed source addresses makes
    /// the transport answer each one; the answers must not take the ARP pending table (16
    /// destinations) from the destinations the stack itself needs to resolve. The answers
    /// go to the MAC the hello came from, and a peer we resolved by ARP keeps its entry
    /// while spoofed sources churn through a cache they overflow.
    #[test]
    fn spoofed_on_link_sources_do_not_starve_arp_resolution() {
        let p = crate::mem::Pool::new(&crate::mem::PoolConfig {
            hugepages: crate::mem::HugePages::Never,
            ..crate::mem::PoolConfig::new("net-arp-spoof", 1024, 2048)
        })
        .unwrap();
        let mut cfg = NetConfig::new(US, IP_US);
        cfg.prefix_len = 16;
        let mut n = Net::new(cfg);
        n.bind(7000);
        let now = Instant::from_nanos(1);
        let reply_to = |n: &mut Net, to: SocketAddrV4| {
            let mut b = p.alloc().unwrap();
            b.extend_from_slice(b"accept").unwrap();
            n.send_udp(now, 7000, to, b, &mut || p.alloc())
        };
        // A peer we resolved by ARP before the attack.
        let known = Ipv4Addr::new(10, 0, 0, 3);
        let known_mac = [2, 0, 0, 0, 0, 3];
        n.arp.learn(now, known, known_mac);
        // The attack: more spoofed on-link sources than the ARP cache holds (256), each
        // answered as the transport answers a hello.
        let spoofed = 300u16;
        let mut refused = 0;
        for k in 0..spoofed {
            let [hi, lo] = k.to_be_bytes();
            let ip = Ipv4Addr::new(10, 0, 100 + hi, lo);
            let mac = [2, 0, 0, 1, hi, lo];
            let d = n
                .handle_frame(now, frame(&p, &udp_from(ip, mac)))
                .expect("spoofed hello delivered to the bound port");
            if reply_to(&mut n, d.src).is_err() {
                refused += 1;
            }
            for f in sent(&mut n) {
                if f[12..14] == [0x08, 0x00] {
                    assert_eq!(
                        &f[0..6],
                        &mac,
                        "the answer goes to the MAC the hello came from"
                    );
                }
            }
        }
        // The stack's own traffic to an unresolved on-link peer: it must get a pending entry
        // and an ARP request, and be sent when the peer answers.
        let r = reply_to(&mut n, SocketAddrV4::new(IP_PEER, 5000));
        assert!(
            r.is_ok(),
            "a legitimate destination could not be resolved after {spoofed} spoofed hellos \
             ({refused} answers refused, arp_pending_full = {}): {r:?}",
            n.counters().arp_pending_full
        );
        let out = sent(&mut n);
        assert_eq!(out.len(), 1, "one ARP request for the legitimate peer");
        assert_eq!(&out[0][38..42], &IP_PEER.octets(), "ARP target");
        let mut reply = ARP_REPLY;
        reply[0..6].copy_from_slice(&US);
        reply[6..12].copy_from_slice(&PEER);
        reply[22..28].copy_from_slice(&PEER);
        reply[28..32].copy_from_slice(&IP_PEER.octets());
        reply[32..38].copy_from_slice(&US);
        reply[38..42].copy_from_slice(&IP_US.octets());
        assert!(feed(&mut n, &p, &reply).is_none());
        let out = sent(&mut n);
        assert_eq!(out.len(), 1, "the parked frame is released");
        assert_eq!(&out[0][0..6], &PEER, "to the resolved MAC");
        // The peer resolved before the attack still is, without a new request.
        assert_eq!(n.arp_lookup(now, known), Some(known_mac));
        reply_to(&mut n, SocketAddrV4::new(known, 5000)).unwrap();
        let out = sent(&mut n);
        assert_eq!(&out[0][0..6], &known_mac, "sent at once to the known peer");
        assert_eq!(refused, 0, "no answer to a hello was refused");
        assert_eq!(n.counters().arp_pending_full, 0);
        assert_eq!(n.counters().arp_gleaned, u64::from(spoofed));
        assert!(n.arp_entries() <= 256, "the cache stays bounded");
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
            let _ = n.send_udp(
                Instant::from_nanos(0),
                1,
                SocketAddrV4::new(IP_PEER, 2),
                b,
                &mut || p.alloc(),
            );
        }
        assert_eq!(
            n.counters().arp_pending_full,
            1,
            "queue of 2 per destination"
        );
        let mut requests = sent(&mut n).len();
        for t in (0..=1000).step_by(10) {
            n.poll(Instant::from_nanos(t), &mut || p.alloc());
            requests += sent(&mut n).len();
        }
        assert_eq!(requests, 3, "max_tries requests");
        assert_eq!(n.counters().arp_requests_out, 3);
        assert_eq!(n.counters().arp_unresolved_drops, 2);
        assert_eq!(n.arp_waiting(), 0);
        assert_eq!(p.stats().in_use, 0, "no buffer leaked");
    }
}
