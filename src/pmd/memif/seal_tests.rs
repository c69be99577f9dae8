//! A hand-driven peer on a server's control socket, in-process: region seals (an unsealed
//! region is warned about and counted, or refused with `require_sealed_regions`; a sealed one
//! passes silently) and control messages carrying more descriptors than fit.

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::{MemfdFlags, SealFlags};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

use super::msg::{Msg, Name, MSG_SIZE, VERSION};
use super::sys::{self, Recv};
use super::{ControlError, Memif, MemifConfig, Role};
use crate::mem::HugePages;

const REGION: usize = 1 << 16;

fn server(tag: &str, require_sealed: bool) -> (Memif, String) {
    let sock = format!("/tmp/bpx-unit-{tag}-{}.sock", std::process::id());
    let mut cfg = MemifConfig::new(&sock, Role::Server, 0);
    cfg.require_sealed_regions = require_sealed;
    cfg.interfaces[0].hugepages = HugePages::Never;
    cfg.interfaces[0].log2_ring_size = 4;
    cfg.interfaces[0].extra_buffers = 0;
    (Memif::new(cfg).unwrap(), sock)
}

fn recv(fd: &OwnedFd) -> Option<Msg> {
    let mut buf = [0u8; MSG_SIZE];
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        match sys::recv_msg(fd.as_fd(), &mut buf).unwrap() {
            Recv::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
            Recv::Closed => return None,
            Recv::Msg { len, .. } => return Some(Msg::decode(&buf[..len]).unwrap()),
        }
    }
    panic!("no reply from the server");
}

fn send(fd: &OwnedFd, m: &Msg, with: Option<BorrowedFd<'_>>) {
    sys::send_msg(fd.as_fd(), &m.encode(), with).unwrap();
}

fn expect_ack(fd: &OwnedFd) {
    match recv(fd) {
        Some(Msg::Ack) => {}
        other => panic!("expected ACK, got {other:?}"),
    }
}

fn expect_refused(fd: &OwnedFd, what: &str) {
    match recv(fd) {
        Some(Msg::Disconnect { reason, .. }) => {
            let r = reason.to_string_lossy();
            assert!(r.contains(what), "reason {r:?} does not mention {what:?}");
        }
        other => panic!("expected DISCONNECT({what}), got {other:?}"),
    }
}

/// Connect, read HELLO, send INIT for interface 0, read its ACK.
fn handshake(sock: &str) -> OwnedFd {
    let fd = sys::connect(Path::new(sock)).unwrap();
    assert!(matches!(recv(&fd), Some(Msg::Hello { .. })));
    send(
        &fd,
        &Msg::Init {
            version: VERSION,
            id: 0,
            mode: 0,
            secret: Name::new(""),
            name: Name::new("unit-peer"),
        },
        None,
    );
    expect_ack(&fd);
    fd
}

/// A memfd of `REGION` bytes, sealed against shrinking when `sealed`.
fn memfd(sealed: bool) -> OwnedFd {
    let fd = rustix::fs::memfd_create("bpx-unit", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .unwrap();
    rustix::fs::ftruncate(&fd, REGION as u64).unwrap();
    if sealed {
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK).unwrap();
    }
    fd
}

fn add_region(index: u16) -> Msg {
    Msg::AddRegion {
        index,
        size: REGION as u64,
    }
}

#[test]
fn memif_unsealed_region_is_counted_and_accepted_by_default() {
    let (m, sock) = server("unsealed", false);
    let c = handshake(&sock);
    let fd = memfd(false);
    send(&c, &add_region(0), Some(fd.as_fd()));
    expect_ack(&c);
    assert_eq!(m.unsealed_regions(0), 1);
    // One count (and one warning) per region.
    send(&c, &add_region(1), Some(fd.as_fd()));
    expect_ack(&c);
    assert_eq!(m.unsealed_regions(0), 2);
}

#[test]
fn memif_unsealed_region_is_refused_when_seals_are_required() {
    let (m, sock) = server("unsealed-req", true);
    let c = handshake(&sock);
    let fd = memfd(false);
    send(&c, &add_region(0), Some(fd.as_fd()));
    expect_refused(&c, "not sealed against shrinking");
    assert_eq!(m.unsealed_regions(0), 1);
    let end = Instant::now() + Duration::from_secs(30);
    while m.last_error(0).is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        m.last_error(0),
        Some(ControlError::RegionUnsealed { index: 0 })
    );
}

#[test]
fn memif_sealed_region_is_accepted_without_warning() {
    for require in [false, true] {
        let (m, sock) = server(&format!("sealed-{require}"), require);
        let c = handshake(&sock);
        let fd = memfd(true);
        send(&c, &add_region(0), Some(fd.as_fd()));
        expect_ack(&c);
        assert_eq!(
            m.unsealed_regions(0),
            0,
            "require_sealed_regions = {require}"
        );
    }
}

#[test]
fn memif_too_many_descriptors_are_refused() {
    let (_m, sock) = server("ctrunc", false);
    let c = handshake(&sock);
    let fds: Vec<OwnedFd> = (0..8).map(|_| memfd(true)).collect();
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
    let mut ctl = SendAncillaryBuffer::new(&mut space);
    assert!(ctl.push(SendAncillaryMessage::ScmRights(&borrowed)));
    let n = rustix::net::sendmsg(
        &c,
        &[std::io::IoSlice::new(&add_region(0).encode())],
        &mut ctl,
        SendFlags::NOSIGNAL,
    )
    .unwrap();
    assert_eq!(n, MSG_SIZE);
    expect_refused(&c, "too much ancillary data");
}
