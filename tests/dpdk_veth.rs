//! A kernel peer: a network namespace with one end of a veth pair, the other end in the root
//! namespace driven by pmd::dpdk (net_af_packet). A small responder on the port answers ARP
//! and ICMP echo (smoltcp::wire views); `ping -c 20 -i 0.05` from the namespace must get every
//! reply. Names and the 10.77.x.0/24 subnet are unique to this process and live only on the
//! veth pair this test makes; the namespace and the pair are removed on exit, even on failure.
#![cfg(feature = "dpdk")]

#[path = "harness/dpdk_common.rs"]
mod dpdk_common;
mod harness;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bypass::mem::PktBuf;
use bypass::pmd::dpdk::{Device, DeviceConfig, DpdkPool};
use bypass::pmd::{Port, MAX_BURST};
use dpdk_common::*;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr,
};

/// The namespace and veth pair; removed on drop (also when the test panics).
struct Net {
    ns: String,
    host_if: String,
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.ns]);
        let _ = run(&["ip", "link", "del", &self.host_if]);
    }
}

/// Counters of what the responder answered.
#[derive(Debug, Default)]
struct Answered {
    arp: u64,
    echo: u64,
    ignored: u64,
}

/// Answer one frame: an ARP request for `ip` or an ICMP echo request to `ip`. Anything else
/// (including malformed frames) is ignored.
fn answer(
    rx: &PktBuf,
    mac: EthernetAddress,
    ip: Ipv4Addr,
    tx: &mut PktBuf,
    n: &mut Answered,
) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(&rx[..]) else {
        return false;
    };
    let caps = ChecksumCapabilities::default();
    match eth.ethertype() {
        EthernetProtocol::Arp => {
            let Ok(p) = ArpPacket::new_checked(eth.payload()) else {
                return false;
            };
            let Ok(ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Request,
                source_hardware_addr,
                source_protocol_addr,
                target_protocol_addr,
                ..
            }) = ArpRepr::parse(&p)
            else {
                return false;
            };
            if target_protocol_addr != ip {
                return false;
            }
            let arp = ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: mac,
                source_protocol_addr: ip,
                target_hardware_addr: source_hardware_addr,
                target_protocol_addr: source_protocol_addr,
            };
            let er = EthernetRepr {
                src_addr: mac,
                dst_addr: source_hardware_addr,
                ethertype: EthernetProtocol::Arp,
            };
            let buf = tx.append(er.buffer_len() + arp.buffer_len()).expect("room");
            let mut f = EthernetFrame::new_unchecked(buf);
            er.emit(&mut f);
            arp.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
            n.arp += 1;
            true
        }
        EthernetProtocol::Ipv4 => {
            let Ok(p) = Ipv4Packet::new_checked(eth.payload()) else {
                return false;
            };
            let Ok(ipr) = Ipv4Repr::parse(&p, &caps) else {
                return false;
            };
            if ipr.dst_addr != ip || ipr.next_header != IpProtocol::Icmp {
                return false;
            }
            let Ok(icmp) = Icmpv4Packet::new_checked(p.payload()) else {
                return false;
            };
            let Ok(Icmpv4Repr::EchoRequest {
                ident,
                seq_no,
                data,
            }) = Icmpv4Repr::parse(&icmp, &caps)
            else {
                return false;
            };
            let reply = Icmpv4Repr::EchoReply {
                ident,
                seq_no,
                data,
            };
            let ipo = Ipv4Repr {
                src_addr: ip,
                dst_addr: ipr.src_addr,
                next_header: IpProtocol::Icmp,
                payload_len: reply.buffer_len(),
                hop_limit: 64,
            };
            let er = EthernetRepr {
                src_addr: mac,
                dst_addr: eth.src_addr(),
                ethertype: EthernetProtocol::Ipv4,
            };
            let total = er.buffer_len() + ipo.buffer_len() + reply.buffer_len();
            let Ok(buf) = tx.append(total) else {
                return false;
            };
            let mut f = EthernetFrame::new_unchecked(buf);
            er.emit(&mut f);
            let mut ipp = Ipv4Packet::new_unchecked(f.payload_mut());
            ipo.emit(&mut ipp, &caps);
            reply.emit(&mut Icmpv4Packet::new_unchecked(ipp.payload_mut()), &caps);
            n.echo += 1;
            true
        }
        _ => false,
    }
}

#[test]
fn kernel_peer_ping_over_veth() {
    for (tool, package) in [("ip", "iproute2"), ("ping", "iputils-ping")] {
        if !harness::require_tool(tool, package, "the kernel peer ping") {
            return;
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        harness::skip("network namespaces and veth pairs need root");
        return;
    }
    let pid = std::process::id();
    let net = Net {
        ns: format!("bypass-{pid}"),
        host_if: format!("bpv{}a", pid % 100_000),
    };
    let ns_if = format!("bpv{}b", pid % 100_000);
    let subnet = 1 + pid % 250;
    let our_ip = Ipv4Addr::new(10, 77, subnet as u8, 1);
    let peer_ip = format!("10.77.{subnet}.2");
    must(&["ip", "netns", "add", &net.ns]);
    must(&[
        "ip",
        "link",
        "add",
        &net.host_if,
        "type",
        "veth",
        "peer",
        "name",
        &ns_if,
    ]);
    must(&["ip", "link", "set", &ns_if, "netns", &net.ns]);
    let _ = run(&[
        "sysctl",
        "-qw",
        &format!("net.ipv6.conf.{}.disable_ipv6=1", net.host_if),
    ]);
    must(&["ip", "link", "set", &net.host_if, "up"]);
    must(&[
        "ip",
        "-n",
        &net.ns,
        "addr",
        "add",
        &format!("{peer_ip}/24"),
        "dev",
        &ns_if,
    ]);
    must(&["ip", "-n", &net.ns, "link", "set", &ns_if, "up"]);
    must(&["ip", "-n", &net.ns, "link", "set", "lo", "up"]);

    let eal = eal(0, "veth");
    let pool = pool("veth", 2048);
    let dpool = DpdkPool::new(&eal, &pool).expect("lend pool");
    let name = Device::probe(
        &eal,
        &format!("net_af_packet0,iface={},qpairs=1", net.host_if),
    )
    .expect("probe af_packet");
    let (dev, mut ports) =
        Device::open(&eal, &name, &dpool, &DeviceConfig::default()).expect("open af_packet");
    let mut port = ports.pop().expect("one port");
    let mac = EthernetAddress(port.info().mac);
    println!(
        "responder {our_ip} on {} ({}), mac {mac}",
        net.host_if,
        dev.driver()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let responder = std::thread::spawn(move || {
        let mut n = Answered::default();
        let mut rx = Vec::with_capacity(MAX_BURST);
        let mut tx = Vec::with_capacity(MAX_BURST);
        while !stop2.load(Ordering::Relaxed) {
            port.rx_burst(&mut rx, MAX_BURST);
            for b in rx.drain(..) {
                let Ok(mut out) = port.alloc_tx() else {
                    continue;
                };
                if answer(&b, mac, our_ip, &mut out, &mut n) {
                    tx.push(out);
                } else {
                    n.ignored += 1;
                }
            }
            while !tx.is_empty() {
                if port.tx_burst(&mut tx) == 0 {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        (n, port)
    });

    let out = run(&[
        "ip",
        "netns",
        "exec",
        &net.ns,
        "ping",
        "-c",
        "20",
        "-i",
        "0.05",
        "-W",
        "2",
        &our_ip.to_string(),
    ]);
    stop.store(true, Ordering::Relaxed);
    let (n, port) = responder.join().expect("responder thread");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    println!("responder answered {n:?}; port {:?}", port.stats());
    assert!(
        text.contains("20 packets transmitted, 20 received"),
        "ping: {text}"
    );
    assert!(text.contains(" 0% packet loss"), "ping: {text}");
    assert!(n.arp >= 1, "the namespace resolved us by ARP");
    assert!(n.echo >= 20);
    drop(port);
    drop(dev);
    drop(dpool);
    assert_eq!(pool.stats().in_use, 0, "{:?}", pool.stats());
    drop(net);
}
