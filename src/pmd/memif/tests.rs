//! Bad input on a memif server's control socket and data path, driven by hand from this test:
//! every violation is refused with a clear DISCONNECT reason (never a crash), the server
//! keeps serving good clients, and bad descriptors are counted and never followed.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::msg::{Msg, Name, ADD_RING_FLAG_C2S, MSG_SIZE, VERSION};
use super::ring::{ring_bytes, Desc, Ring};
use super::sys::{self, Recv};
use super::{Memif, MemifConfig, Role};
use crate::pmd::Port;
use crate::test_harness as harness;

fn server(tag: &str) -> (Memif, String) {
    let sock = format!("/tmp/bpx-bad-{tag}-{}.sock", std::process::id());
    let m = Memif::new(MemifConfig::new(&sock, Role::Server, 0)).unwrap();
    (m, sock)
}

pub(super) fn recv(fd: &OwnedFd) -> Option<(Msg, Option<OwnedFd>)> {
    let mut buf = [0u8; MSG_SIZE];
    let end = Instant::now() + harness::SETTLE;
    while Instant::now() < end {
        match sys::recv_msg(fd.as_fd(), &mut buf).unwrap() {
            Recv::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
            Recv::Closed => return None,
            Recv::Msg { len, fd, .. } => return Some((Msg::decode(&buf[..len]).unwrap(), fd)),
        }
    }
    panic!("waited {:?} for a reply from the server", harness::SETTLE);
}

pub(super) fn send(fd: &OwnedFd, m: &Msg, with: Option<&OwnedFd>) {
    sys::send_msg(fd.as_fd(), &m.encode(), with.map(|f| f.as_fd())).unwrap();
}

pub(super) fn expect_ack(fd: &OwnedFd) {
    match recv(fd) {
        Some((Msg::Ack, _)) => {}
        other => panic!("expected ACK, got {other:?}"),
    }
}

/// The server answers with DISCONNECT whose reason contains `what`, then closes.
pub(super) fn expect_refused(fd: &OwnedFd, what: &str) {
    match recv(fd) {
        Some((Msg::Disconnect { reason, .. }, _)) => {
            let r = reason.to_string_lossy();
            println!("refused: {r}");
            assert!(r.contains(what), "reason {r:?} does not mention {what:?}");
        }
        other => panic!("expected DISCONNECT({what}), got {other:?}"),
    }
    assert!(recv(fd).is_none(), "server closes after refusing");
}

pub(super) fn connect(sock: &str) -> OwnedFd {
    let fd = sys::connect(std::path::Path::new(sock)).unwrap();
    match recv(&fd) {
        Some((Msg::Hello { min_version, .. }, _)) => assert_eq!(min_version, VERSION),
        other => panic!("expected HELLO, got {other:?}"),
    }
    fd
}

pub(super) fn init(id: u32, version: u16) -> Msg {
    Msg::Init {
        version,
        id,
        mode: 0,
        secret: Name::new(""),
        name: Name::new("raw-test"),
    }
}

/// Our own shared read-write mapping of `fd` (`len` bytes); unmapped when dropped.
pub(super) fn map_shared(fd: &OwnedFd, len: usize) -> memmap2::MmapRaw {
    memmap2::MmapOptions::new()
        .len(len)
        .map_raw(fd.as_raw_fd())
        .expect("mmap our memfd")
}

pub(super) fn memfd(len: usize) -> OwnedFd {
    // SAFETY: plain syscalls; the fd is fresh and owned here.
    unsafe {
        let fd = libc::memfd_create(c"bpx-test".as_ptr(), libc::MFD_CLOEXEC);
        assert!(fd >= 0);
        assert_eq!(libc::ftruncate(fd, len as libc::off_t), 0);
        OwnedFd::from_raw_fd(fd)
    }
}

fn raw_send(fd: &OwnedFd, bytes: &[u8]) {
    // SAFETY: sending a valid buffer on our socket.
    let n = unsafe { libc::send(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
    assert_eq!(n as usize, bytes.len());
}

#[test]
fn memif_refuses_malformed_control_messages() {
    let (m, sock) = server("ctl");
    let add_region = |index, size| Msg::AddRegion { index, size };

    // Wrong protocol version.
    let c = connect(&sock);
    send(&c, &init(0, 0x0100), None);
    expect_refused(&c, "version");

    // Unknown interface id.
    let c = connect(&sock);
    send(&c, &init(99, VERSION), None);
    expect_refused(&c, "ID 99 not found");

    // A datagram that is not 128 bytes.
    let c = connect(&sock);
    raw_send(&c, &[3u8; 64]);
    expect_refused(&c, "64 bytes");

    // An unknown message type.
    let c = connect(&sock);
    let mut b = [0u8; MSG_SIZE];
    b[0] = 42;
    raw_send(&c, &b);
    expect_refused(&c, "unknown control message type 42");

    // A message out of order (the client has no business sending HELLO or CONNECT first).
    let c = connect(&sock);
    send(
        &c,
        &Msg::Connect {
            if_name: Name::new("x"),
        },
        None,
    );
    expect_refused(&c, "unexpected CONNECT");

    // ADD_REGION without its fd.
    let c = connect(&sock);
    send(&c, &init(0, VERSION), None);
    expect_ack(&c);
    send(&c, &add_region(0, 4096), None);
    expect_refused(&c, "without a file descriptor");

    // Regions out of order.
    let c = connect(&sock);
    send(&c, &init(0, VERSION), None);
    expect_ack(&c);
    send(&c, &add_region(1, 4096), Some(&memfd(4096)));
    expect_refused(&c, "invalid region index 1");

    // A region larger than the file behind it (mapping it would fault).
    let c = connect(&sock);
    send(&c, &init(0, VERSION), None);
    expect_ack(&c);
    send(&c, &add_region(0, 1 << 20), Some(&memfd(4096)));
    expect_refused(&c, "invalid region 0 size");

    // A ring that does not fit in its region; a ring in a region never added; a bad index.
    for (ring, what) in [
        (
            Msg::AddRing {
                flags: ADD_RING_FLAG_C2S,
                index: 0,
                region: 0,
                offset: 65536 - 64,
                log2_ring_size: 10,
                private_hdr_size: 0,
            },
            "outside region",
        ),
        (
            Msg::AddRing {
                flags: 0,
                index: 0,
                region: 3,
                offset: 0,
                log2_ring_size: 4,
                private_hdr_size: 0,
            },
            "unknown region 3",
        ),
        (
            Msg::AddRing {
                flags: 0,
                index: 7,
                region: 0,
                offset: 0,
                log2_ring_size: 4,
                private_hdr_size: 0,
            },
            "invalid ring index 7",
        ),
        (
            Msg::AddRing {
                flags: 0,
                index: 0,
                region: 0,
                offset: 0,
                log2_ring_size: 20,
                private_hdr_size: 0,
            },
            "invalid ring size",
        ),
    ] {
        let c = connect(&sock);
        send(&c, &init(0, VERSION), None);
        expect_ack(&c);
        send(&c, &add_region(0, 65536), Some(&memfd(65536)));
        expect_ack(&c);
        send(&c, &ring, Some(&sys::eventfd().unwrap()));
        expect_refused(&c, what);
    }

    // CONNECT without rings; CONNECT with a ring lacking the memif cookie.
    let c = connect(&sock);
    send(&c, &init(0, VERSION), None);
    expect_ack(&c);
    send(&c, &add_region(0, 65536), Some(&memfd(65536)));
    expect_ack(&c);
    send(
        &c,
        &Msg::Connect {
            if_name: Name::new("x"),
        },
        None,
    );
    expect_refused(&c, "no complete queue pair");

    let c = connect(&sock);
    send(&c, &init(0, VERSION), None);
    expect_ack(&c);
    send(&c, &add_region(0, 65536), Some(&memfd(65536)));
    expect_ack(&c);
    for (flags, offset) in [(ADD_RING_FLAG_C2S, 0), (0, 4096)] {
        let r = Msg::AddRing {
            flags,
            index: 0,
            region: 0,
            offset,
            log2_ring_size: 4,
            private_hdr_size: 0,
        };
        send(&c, &r, Some(&sys::eventfd().unwrap()));
        expect_ack(&c);
    }
    send(
        &c,
        &Msg::Connect {
            if_name: Name::new("x"),
        },
        None,
    );
    expect_refused(&c, "cookie");

    // `refused()` counts the connections refused before they named an interface: the five
    // above that fail at or before INIT (version, unknown id, size, unknown type, CONNECT
    // first). The nine refused after a good INIT belong to interface 0: its last error is
    // the latest of them. (Each refusal is counted before the server closes the connection,
    // and `expect_refused` waited for that close: the count is final here.)
    assert_eq!(
        m.refused(),
        5,
        "connections refused before naming an interface"
    );
    let last = m.last_error(0).map(|e| e.to_string()).unwrap_or_default();
    assert!(
        last.contains("cookie"),
        "interface 0's last error: {last:?}"
    );
    assert!(!m.link(0).is_up());

    // The server still serves a well-behaved client.
    let client = Memif::new(MemifConfig::new(&sock, Role::Client, 0)).unwrap();
    assert!(
        client.wait_up(0, Duration::from_secs(10)),
        "good client connects"
    );
    assert!(m.wait_up(0, Duration::from_secs(10)));
}

/// A hand-driven client that completes the handshake over its own memory, then posts bad
/// descriptors: the server's port counts them in rx_errors, never reads or writes outside
/// the client's region, and still carries the good frames around them.
#[test]
fn memif_server_validates_descriptors() {
    let (m, sock) = server("desc");
    let mut port = m.port(0, 0).unwrap();
    const LEN: usize = 1 << 20;
    const LOG2: u8 = 4;
    let fd = memfd(LEN);
    let map = map_shared(&fd, LEN);
    let base = map.as_mut_ptr();
    let rb = ring_bytes(LOG2);
    // SAFETY: both rings lie inside the mapping (offsets 0 and 4096), which outlives them.
    let (c2s, s2c) = unsafe { (Ring::new(base, LOG2), Ring::new(base.add(4096), LOG2)) };
    assert!(rb < 4096);
    c2s.init(0);
    s2c.init(0);

    let c = connect(&sock);
    send(&c, &init(0, VERSION), None);
    expect_ack(&c);
    send(
        &c,
        &Msg::AddRegion {
            index: 0,
            size: LEN as u64,
        },
        Some(&fd),
    );
    expect_ack(&c);
    for (flags, offset) in [(ADD_RING_FLAG_C2S, 0u32), (0, 4096)] {
        let r = Msg::AddRing {
            flags,
            index: 0,
            region: 0,
            offset,
            log2_ring_size: LOG2,
            private_hdr_size: 0,
        };
        send(&c, &r, Some(&sys::eventfd().unwrap()));
        expect_ack(&c);
    }
    send(
        &c,
        &Msg::Connect {
            if_name: Name::new("raw"),
        },
        None,
    );
    match recv(&c) {
        Some((Msg::Connected { .. }, _)) => {}
        other => panic!("expected CONNECTED, got {other:?}"),
    }
    harness::settle("the server's link up after CONNECTED", || {
        port.link().is_up()
    });

    // Client -> server: good, bad region, out of bounds, offset overflow, good.
    let write = |off: usize, byte: u8, len: usize| {
        // SAFETY: inside our mapping.
        unsafe { std::ptr::write_bytes(base.add(off), byte, len) };
    };
    write(65536, 0xaa, 64);
    write(131072, 0xbb, 100);
    let d = |region, offset, length| Desc {
        flags: 0,
        region,
        length,
        offset,
        metadata: 0,
    };
    c2s.write_desc(0, d(0, 65536, 64));
    c2s.write_desc(1, d(5, 65536, 64));
    c2s.write_desc(2, d(0, LEN as u32 - 10, 64));
    c2s.write_desc(3, d(0, u32::MAX - 8, 64));
    c2s.write_desc(4, d(0, 131072, 100));
    c2s.set_head(5, Ordering::Release);
    let mut got = vec![];
    harness::settle("the server to take all 5 descriptors", || {
        c2s.tail(Ordering::Acquire) == 5 || {
            port.rx_burst(&mut got, 32);
            false
        }
    });
    assert_eq!(got.len(), 2, "the two good frames");
    assert!(got[0].data().iter().all(|&b| b == 0xaa) && got[0].len() == 64);
    assert!(got[1].data().iter().all(|&b| b == 0xbb) && got[1].len() == 100);
    assert_eq!(port.stats().rx_errors, 3);

    // A head more than a ring ahead of the tail: refused, nothing consumed.
    c2s.set_head(5 + 100, Ordering::Release);
    assert_eq!(port.rx_burst(&mut got, 32), 0);
    assert_eq!(port.stats().rx_errors, 4);
    assert_eq!(c2s.tail(Ordering::Acquire), 5);

    // Server -> client: a posted buffer outside the region is never written.
    s2c.write_desc(0, d(0, LEN as u32 - 100, 2048));
    s2c.set_head(1, Ordering::Release);
    let mut out = vec![got.pop().unwrap()];
    assert_eq!(port.tx_burst(&mut out), 0);
    assert_eq!(out.len(), 1, "the frame stays with the caller");
    assert_eq!(port.stats().rx_errors, 5);
    // Fixed by the client: now it goes out, intact.
    s2c.write_desc(0, d(0, 200_000, 2048));
    assert_eq!(port.tx_burst(&mut out), 1);
    assert_eq!(s2c.tail(Ordering::Acquire), 1);
    let back = s2c.read_desc(0);
    assert_eq!(back.length, 100);
    // SAFETY: inside our mapping.
    let bytes = unsafe { std::slice::from_raw_parts(base.add(200_000), 100) };
    assert!(bytes.iter().all(|&b| b == 0xbb));

    // The client goes away: link down.
    drop(c);
    harness::settle("the link down after the client went away", || {
        !port.link().is_up()
    });
    // (Our mapping goes with `map`, after the rings that point into it.)
    drop(map);
}

/// A hand-driven server that completes the handshake with our client, then returns bad
/// descriptors: the client counts them in rx_errors, drops them, and keeps the good ones.
#[test]
fn memif_client_validates_descriptors() {
    let sock = format!("/tmp/bpx-bad-rawsrv-{}.sock", std::process::id());
    let l = sys::listen(std::path::Path::new(&sock)).unwrap();
    let mut cfg = MemifConfig::new(&sock, Role::Client, 0);
    cfg.interfaces[0].log2_ring_size = 4;
    cfg.reconnect_interval = Duration::from_millis(20);
    let client = Memif::new(cfg).unwrap();
    let mut port = client.port(0, 0).unwrap();
    let end = Instant::now() + harness::SETTLE;
    let c = loop {
        if let Some(c) = sys::accept(l.as_fd()).unwrap() {
            break c;
        }
        assert!(
            Instant::now() < end,
            "waited {:?} for the client to connect",
            harness::SETTLE
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    send(
        &c,
        &Msg::Hello {
            name: Name::new("raw-server"),
            min_version: VERSION,
            max_version: VERSION,
            max_region: 15,
            max_s2c_ring: 0,
            max_c2s_ring: 0,
            max_log2_ring_size: 14,
        },
        None,
    );
    let mut regions: Vec<(*mut u8, usize)> = vec![];
    let mut rings = vec![];
    loop {
        let (m, fd) = recv(&c).expect("client hung up during handshake");
        match m {
            Msg::Init { .. } => send(&c, &Msg::Ack, None),
            Msg::AddRegion { size, .. } => {
                let fd = fd.expect("region fd");
                // SAFETY: mapping the client's region file of `size` bytes, shared.
                let p = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        size as usize,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED,
                        fd.as_raw_fd(),
                        0,
                    )
                };
                assert_ne!(p, libc::MAP_FAILED);
                regions.push((p.cast::<u8>(), size as usize));
                send(&c, &Msg::Ack, None);
            }
            Msg::AddRing {
                flags,
                region,
                offset,
                log2_ring_size,
                ..
            } => {
                assert!(fd.is_some(), "ring eventfd passed");
                rings.push((flags, region, offset, log2_ring_size));
                send(&c, &Msg::Ack, None);
            }
            Msg::Connect { .. } => {
                send(
                    &c,
                    &Msg::Connected {
                        if_name: Name::new("raw"),
                    },
                    None,
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(regions.len(), 2, "rings region and buffer region");
    let ring = |c2s: bool| {
        let &(_, region, offset, log2) = rings
            .iter()
            .find(|r| (r.0 & ADD_RING_FLAG_C2S != 0) == c2s)
            .unwrap();
        // SAFETY: the ring lies inside the mapped region (the client's own layout).
        unsafe { Ring::new(regions[region as usize].0.add(offset as usize), log2) }
    };
    let (c2s, s2c) = (ring(true), ring(false));
    harness::settle("the server's link up after CONNECTED", || {
        port.link().is_up()
    });
    let mut got = vec![];
    port.rx_burst(&mut got, 32);
    assert_eq!(s2c.head(Ordering::Acquire), 16, "client posted a full ring");

    // A length beyond the posted buffer, then a good frame.
    let d1 = s2c.read_desc(1);
    let (base, len) = regions[d1.region as usize];
    assert!(d1.offset as usize + 60 <= len);
    // SAFETY: inside the client's buffer region, in a buffer posted to us.
    unsafe { std::ptr::write_bytes(base.add(d1.offset as usize), 0xcd, 60) };
    s2c.write_len_flags(0, 100_000, 0);
    s2c.write_len_flags(1, 60, 0);
    s2c.set_tail(2, Ordering::Release);
    assert_eq!(port.rx_burst(&mut got, 32), 1);
    assert_eq!(got[0].len(), 60);
    assert!(got[0].data().iter().all(|&b| b == 0xcd));
    assert_eq!(port.stats().rx_errors, 1);

    // A tail beyond what the client posted: ignored.
    s2c.set_tail(2 + 40, Ordering::Release);
    assert_eq!(port.rx_burst(&mut got, 32), 0);
    assert_eq!(port.stats().rx_errors, 2);

    // A chain of two segments: gathered into one frame once complete.
    for (i, byte) in [(2u16, 0x11u8), (3, 0x22)] {
        let d = s2c.read_desc(i);
        // SAFETY: inside the client's buffer region, in a buffer posted to us.
        unsafe { std::ptr::write_bytes(base.add(d.offset as usize), byte, 64) };
    }
    s2c.write_len_flags(2, 64, 1);
    s2c.write_len_flags(3, 64, 0);
    s2c.set_tail(3, Ordering::Release); // only the first segment published yet
    assert_eq!(port.rx_burst(&mut got, 32), 0, "incomplete chain waits");
    s2c.set_tail(4, Ordering::Release);
    assert_eq!(port.rx_burst(&mut got, 32), 1);
    let f = got.pop().unwrap();
    assert_eq!(f.len(), 128);
    assert!(f.data()[..64].iter().all(|&b| b == 0x11) && f.data()[64..].iter().all(|&b| b == 0x22));
    // A chain longer than one buffer: dropped, counted once.
    for i in 4..6u16 {
        s2c.write_len_flags(i, 2000, if i == 4 { 1 } else { 0 });
    }
    s2c.set_tail(6, Ordering::Release);
    assert_eq!(port.rx_burst(&mut got, 32), 0);
    assert_eq!(port.stats().rx_errors, 3);

    // Client -> server: a tail beyond the client's head is refused; nothing is reclaimed.
    // (The client reads the tail when it needs room: a burst as long as the ring.)
    let mut out = vec![got.pop().unwrap()];
    assert_eq!(port.tx_burst(&mut out), 1);
    assert_eq!(c2s.head(Ordering::Acquire), 1);
    c2s.set_tail(30, Ordering::Release);
    let mut out: Vec<_> = (0..16)
        .map(|_| {
            let mut b = port.alloc_tx().unwrap();
            b.extend_from_slice(&[0x33; 60]).unwrap();
            b
        })
        .collect();
    assert_eq!(
        port.tx_burst(&mut out),
        15,
        "the ring's 15 free entries, none reclaimed"
    );
    assert_eq!(c2s.head(Ordering::Acquire), 16);
    assert_eq!(port.stats().rx_errors, 4);

    drop(c);
    harness::settle("the link down after the client went away", || {
        !port.link().is_up()
    });
    drop(port);
    drop(client);
    for (p, n) in regions {
        // SAFETY: unmapping our own mappings of the client's regions.
        unsafe { libc::munmap(p.cast(), n) };
    }
    let _ = std::fs::remove_file(&sock);
}

/// A client that claims the interface and then stalls is dropped after the handshake
/// timeout, so it cannot hold the interface against good clients.
#[test]
fn memif_stalled_handshake_times_out() {
    let (m, sock) = server("stall");
    let c = connect(&sock);
    send(&c, &init(0, VERSION), None);
    expect_ack(&c);
    // A good client is refused while the stalled one holds interface 0 ...
    let good = Memif::new(MemifConfig::new(&sock, Role::Client, 0)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!good.link(0).is_up());
    // ... until the stalled handshake times out (5 s); then it gets in.
    let mut buf = [0u8; MSG_SIZE];
    let end = Instant::now() + Duration::from_secs(10);
    let reason = loop {
        match sys::recv_msg(c.as_fd(), &mut buf).unwrap() {
            Recv::Msg { len, .. } => match Msg::decode(&buf[..len]).unwrap() {
                Msg::Disconnect { reason, .. } => break reason.to_string_lossy(),
                other => panic!("unexpected {other:?}"),
            },
            Recv::Closed => panic!("closed without a reason"),
            Recv::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
        }
        assert!(Instant::now() < end, "stalled client never dropped");
    };
    println!("stalled client: {reason}");
    assert!(reason.contains("handshake not finished"));
    assert!(good.wait_up(0, Duration::from_secs(10)));
    assert!(m.wait_up(0, Duration::from_secs(10)));
}
