//! Integration tests of `pmd::pcap`: captures written through a pair open in tshark with
//! the right frames and nothing malformed.

use crate::harness;
use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;

use bypass::mem::{HugePages, PktBuf, Pool, PoolConfig};
use bypass::pmd::pair::{pair, PairPort};
use bypass::pmd::pcap::{Pcap, PcapConfig, PcapWriter};
use bypass::pmd::Port;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Address, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

const HDRS: usize = 14 + 20 + 8;

fn pool(slots: u32) -> Pool {
    let mut cfg = PoolConfig::new("pmd-wrappers-pcap", slots, 2048);
    cfg.hugepages = HugePages::Never;
    Pool::new(&cfg).expect("pool")
}

/// A valid Ethernet/IPv4/UDP frame (checksums filled) from `src` to `dst` port `dst_port`.
fn udp_frame(port: &mut impl Port, src: u8, dst: u8, dst_port: u16, payload_len: usize) -> PktBuf {
    let mut buf = port.alloc_tx().expect("buffer");
    let bytes = buf.append(HDRS + payload_len).expect("room");
    let mut eth = EthernetFrame::new_unchecked(&mut bytes[..]);
    EthernetRepr {
        src_addr: EthernetAddress([2, 0, 0, 0, 0, src]),
        dst_addr: EthernetAddress([2, 0, 0, 0, 0, dst]),
        ethertype: EthernetProtocol::Ipv4,
    }
    .emit(&mut eth);
    let (sip, dip) = (
        Ipv4Address::new(10, 0, 0, src),
        Ipv4Address::new(10, 0, 0, dst),
    );
    let caps = ChecksumCapabilities::default();
    let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
    Ipv4Repr {
        src_addr: sip,
        dst_addr: dip,
        next_header: IpProtocol::Udp,
        payload_len: 8 + payload_len,
        hop_limit: 64,
    }
    .emit(&mut ip, &caps);
    let mut udp = UdpPacket::new_unchecked(ip.payload_mut());
    UdpRepr {
        src_port: 40000,
        dst_port,
    }
    .emit(
        &mut udp,
        &IpAddress::Ipv4(sip),
        &IpAddress::Ipv4(dip),
        payload_len,
        |p| {
            for (i, b) in p.iter_mut().enumerate() {
                *b = i as u8;
            }
        },
        &caps,
    );
    buf
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!("bypass-{name}-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn have_tshark() -> bool {
    harness::require_tool("tshark", "tshark", "reading the capture with tshark")
}

/// Run tshark with `args` on `file`; its stdout lines. Fails the test if tshark fails.
fn tshark(file: &Path, args: &[&str]) -> Vec<String> {
    let out = Command::new("tshark")
        .arg("-n")
        .arg("-r")
        .arg(file)
        .args(args)
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "tshark {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Frames tshark flags: malformed under its default dissection, or, with everything above
/// UDP decoded as plain data (so application dissectors guessing from the port number do not
/// judge our test payloads), an expert warning or error, or a bad IPv4/UDP checksum.
fn bad_frames(file: &Path) -> Vec<String> {
    let mut bad = tshark(file, &["-Y", "_ws.malformed"]);
    bad.extend(tshark(
        file,
        &[
            "-d",
            "udp.port==1-65535,data",
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
            "-Y",
            "_ws.expert.severity >= warning || ip.checksum.status == 0 \
             || udp.checksum.status == 0 || !(ip.checksum.status == 1) \
             || !(udp.checksum.status == 1)",
        ],
    ));
    bad
}

fn send_all(port: &mut impl Port, mut v: Vec<PktBuf>, peer: &mut PairPort) {
    let mut out = Vec::new();
    while !v.is_empty() {
        port.tx_burst(&mut v);
        peer.rx_burst(&mut out, 256);
        out.clear();
    }
    while peer.rx_burst(&mut out, 256) > 0 {
        out.clear();
    }
}

#[test]
fn pcap_capture_opens_in_tshark_with_every_frame() {
    if !have_tshark() {
        return;
    }
    let dir = TempDir::new("pcap");
    let file = dir.0.join("pair.pcap");
    let p = pool(512);
    let (a, mut b) = pair(&p, 64, 1500).unwrap();
    let out = BufWriter::new(File::create(&file).unwrap());
    let mut pa = Pcap::new(a, out, PcapConfig::default()).unwrap();

    // 50 frames a -> b (recorded as sent), sizes 18..1018 B of payload, ports 5000+i.
    let mut expect = Vec::new();
    let v: Vec<PktBuf> = (0..50u16)
        .map(|i| {
            let len = 18 + 20 * i as usize;
            expect.push((HDRS + len, 5000 + i));
            udp_frame(&mut pa, 1, 2, 5000 + i, len)
        })
        .collect();
    send_all(&mut pa, v, &mut b);
    // 20 frames b -> a (recorded as received), ports 6000+i.
    let mut v: Vec<PktBuf> = (0..20u16)
        .map(|i| {
            expect.push((HDRS + 100, 6000 + i));
            udp_frame(&mut b, 2, 1, 6000 + i, 100)
        })
        .collect();
    assert_eq!(b.tx_burst(&mut v), 20);
    let mut got = Vec::new();
    while got.len() < 20 {
        pa.rx_burst(&mut got, 8);
    }
    drop(got);
    let stats = pa.capture_stats();
    assert_eq!(stats.packets, 70);
    let (_a, w) = pa.into_parts();
    w.finish().unwrap();
    assert_eq!(fs::metadata(&file).unwrap().len(), stats.bytes);

    let lines = tshark(
        &file,
        &["-T", "fields", "-e", "frame.len", "-e", "udp.dstport"],
    );
    println!(
        "tshark -T fields -e frame.len -e udp.dstport: {} lines, first {:?}, last {:?}",
        lines.len(),
        lines.first(),
        lines.last()
    );
    let fields: Vec<(usize, u16)> = lines
        .iter()
        .map(|l| {
            let mut it = l.split('\t');
            (
                it.next().unwrap().parse().unwrap(),
                it.next().unwrap().parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(fields, expect);
    let bad = bad_frames(&file);
    println!("malformed / warnings / bad checksums: {}", bad.len());
    assert!(bad.is_empty(), "tshark flags: {bad:?}");
    // Timestamps are nanosecond wall-clock times, in order.
    let times = tshark(&file, &["-T", "fields", "-e", "frame.time_epoch"]);
    let t: Vec<f64> = times.iter().map(|s| s.parse().unwrap()).collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(t.windows(2).all(|w| w[0] <= w[1]));
    assert!((now - t[0]).abs() < 600.0, "stamped with the wall clock");
    drop((_a, b));
    assert_eq!(p.stats().in_use, 0);
}

#[test]
fn pcap_records_only_frames_the_port_took() {
    if !have_tshark() {
        return;
    }
    let dir = TempDir::new("pcap-refused");
    let file = dir.0.join("refused.pcap");
    let p = pool(256);
    let (a, mut b) = pair(&p, 4, 1500).unwrap();
    let mut pa = Pcap::new(a, File::create(&file).unwrap(), PcapConfig::default()).unwrap();
    let mut v: Vec<PktBuf> = (0..10u16)
        .map(|i| udp_frame(&mut pa, 1, 2, 7000 + i, 32))
        .collect();
    // The ring takes 4; the other 6 stay with us and are not recorded yet.
    assert_eq!(pa.tx_burst(&mut v), 4);
    assert_eq!(pa.capture_stats().packets, 4);
    assert_eq!(pa.tx_burst(&mut v), 0);
    assert_eq!(pa.capture_stats().packets, 4);
    send_all(&mut pa, v, &mut b);
    assert_eq!(pa.capture_stats().packets, 10);
    // Switched off: forwarded, not recorded.
    let switch = pa.switch();
    switch.set_enabled(false);
    let v: Vec<PktBuf> = (0..3u16)
        .map(|i| udp_frame(&mut pa, 1, 2, 8000 + i, 32))
        .collect();
    send_all(&mut pa, v, &mut b);
    assert_eq!(pa.capture_stats().packets, 10);
    switch.set_enabled(true);
    let v = vec![udp_frame(&mut pa, 1, 2, 9000, 32)];
    send_all(&mut pa, v, &mut b);
    pa.into_parts().1.finish().unwrap();

    let ports = tshark(&file, &["-T", "fields", "-e", "udp.dstport"]);
    let want: Vec<String> = (7000..7010)
        .chain(std::iter::once(9000))
        .map(|p| p.to_string())
        .collect();
    println!("recorded ports: {ports:?}");
    assert_eq!(
        ports, want,
        "each frame once, in send order, none while off"
    );
    assert!(bad_frames(&file).is_empty());
}

#[test]
fn pcap_snaplen_and_caps_in_tshark() {
    if !have_tshark() {
        return;
    }
    let dir = TempDir::new("pcap-snap");
    let file = dir.0.join("snap.pcap");
    let p = pool(256);
    let (a, mut b) = pair(&p, 64, 1500).unwrap();
    let cfg = PcapConfig {
        snaplen: 42,
        max_packets: Some(5),
        ..PcapConfig::default()
    };
    let mut pa = Pcap::new(a, File::create(&file).unwrap(), cfg).unwrap();
    let v: Vec<PktBuf> = (0..8u16)
        .map(|i| udp_frame(&mut pa, 1, 2, 4000 + i, 200))
        .collect();
    send_all(&mut pa, v, &mut b);
    let s = pa.capture_stats();
    assert_eq!((s.packets, s.truncated, s.skipped_limit), (5, 5, 3));
    pa.into_parts().1.finish().unwrap();
    let lines = tshark(
        &file,
        &[
            "-T",
            "fields",
            "-e",
            "frame.len",
            "-e",
            "frame.cap_len",
            "-e",
            "udp.dstport",
        ],
    );
    println!("snaplen 42, cap 5: {lines:?}");
    let want: Vec<String> = (4000..4005)
        .map(|p| format!("{}\t42\t{p}", HDRS + 200))
        .collect();
    assert_eq!(lines, want);

    // The standalone writer and a byte cap: exactly the frames that fit.
    let file2 = dir.0.join("bytes.pcap");
    let cfg = PcapConfig {
        max_bytes: Some(24 + 3 * (16 + 60)),
        ..PcapConfig::default()
    };
    let mut w = PcapWriter::new(File::create(&file2).unwrap(), cfg).unwrap();
    let scratch = pool(4);
    let mut dummy = pair(&scratch, 1, 1500).unwrap().0;
    for i in 0..5u16 {
        let f = udp_frame(&mut dummy, 1, 2, 5000 + i, 18);
        w.write_frame(1_000_000_000 * (1_700_000_000 + i as u64) + 5, &f)
            .unwrap();
    }
    w.finish().unwrap();
    let lines = tshark(
        &file2,
        &[
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
            "-e",
            "udp.dstport",
        ],
    );
    println!("byte cap: {lines:?}");
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("1700000000.000000005"), "{}", lines[0]);
    let bad = bad_frames(&file2);
    assert!(bad.is_empty(), "tshark flags: {bad:?}");
    drop(dummy);
    assert_eq!(scratch.stats().in_use, 0);
}
