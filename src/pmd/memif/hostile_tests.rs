//! A hostile peer on a memif server, driven by hand (the helpers of `tests`): an interrupt
//! fd that is not an eventfd, an eventfd whose counter is full. Each is refused with a clear
//! reason or counted.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::msg::{Msg, Name, ADD_RING_FLAG_C2S, VERSION};
use super::ring::{Desc, Ring};
use super::sys;
use super::tests::{connect, expect_ack, expect_refused, init, memfd, recv, send};
use super::{Memif, MemifConfig, Role};
use crate::mem::HugePages;
use crate::pmd::Port;
use crate::test_harness as harness;

fn sock(tag: &str) -> String {
    format!("/tmp/bpx-hostile-{tag}-{}.sock", std::process::id())
}

fn server_with(tag: &str, f: impl FnOnce(&mut MemifConfig)) -> (Memif, String) {
    let path = sock(tag);
    let mut cfg = MemifConfig::new(&path, Role::Server, 0);
    cfg.interfaces[0].hugepages = HugePages::Never;
    f(&mut cfg);
    (Memif::new(cfg).unwrap(), path)
}

/// A blocking eventfd (as a hostile peer would pass it: our own are non-blocking).
fn blocking_eventfd() -> OwnedFd {
    rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap()
}

fn add_ring(c2s: bool, offset: u32, log2: u8) -> Msg {
    Msg::AddRing {
        flags: if c2s { ADD_RING_FLAG_C2S } else { 0 },
        index: 0,
        region: 0,
        offset,
        log2_ring_size: log2,
        private_hdr_size: 0,
    }
}

/// A peer passing a pipe as a ring's interrupt fd is refused at ADD_RING (a blocking
/// write to a pipe nobody reads would stall our data path once the pipe fills).
#[test]
fn memif_refuses_pipe_as_interrupt_fd() {
    let (_m, sock) = server_with("pipe", |_| {});
    let region = memfd(1 << 20);
    let mut p = [0i32; 2];
    // SAFETY: pipe2 fills two fresh descriptors, owned here from now on.
    let (rd, wr) = unsafe {
        assert_eq!(libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC), 0);
        (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1]))
    };
    for fd in [&wr, &rd] {
        let c = connect(&sock);
        send(&c, &init(0, VERSION), None);
        expect_ack(&c);
        send(
            &c,
            &Msg::AddRegion {
                index: 0,
                size: 1 << 20,
            },
            Some(&region),
        );
        expect_ack(&c);
        send(&c, &add_ring(true, 0, 4), Some(fd));
        expect_refused(&c, "not an eventfd (pipe:[");
    }
    // A regular file too.
    let c = connect(&sock);
    send(&c, &init(0, VERSION), None);
    expect_ack(&c);
    send(
        &c,
        &Msg::AddRegion {
            index: 0,
            size: 1 << 20,
        },
        Some(&region),
    );
    expect_ack(&c);
    send(&c, &add_ring(true, 0, 4), Some(&region));
    expect_refused(&c, "not an eventfd");
}

/// A peer whose s2c interrupt eventfd is blocking and preloaded to `u64::MAX - 1` (one more
/// signal would block a blocking write forever), with MASK_INT clear: our transmit still
/// returns, the frame is delivered, and the skipped interrupt is counted.
#[test]
fn memif_full_peer_eventfd_does_not_block_tx() {
    let (m, sock) = server_with("fullefd", |_| {});
    let mut port = m.port(0, 0).unwrap();
    const LEN: usize = 1 << 20;
    const LOG2: u8 = 4;
    let fd = memfd(LEN);
    // SAFETY: mapping our own memfd of LEN bytes, shared.
    let base = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        p.cast::<u8>()
    };
    // SAFETY: both rings lie inside the mapping (offsets 0 and 4096), which outlives them.
    let (c2s, s2c) = unsafe { (Ring::new(base, LOG2), Ring::new(base.add(4096), LOG2)) };
    c2s.init(0);
    s2c.init(0); // MASK_INT clear: "signal me".
    let full = blocking_eventfd();
    rustix::io::write(&full, &(u64::MAX - 1).to_ne_bytes()).unwrap();

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
    send(&c, &add_ring(true, 0, LOG2), Some(&sys::eventfd().unwrap()));
    expect_ack(&c);
    send(&c, &add_ring(false, 4096, LOG2), Some(&full));
    expect_ack(&c);
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
    harness::settle("the server's link up", || port.link().is_up());

    // Post one buffer for the server to fill.
    s2c.write_desc(
        0,
        Desc {
            flags: 0,
            region: 0,
            length: 2048,
            offset: 65536,
            metadata: 0,
        },
    );
    s2c.set_head(1, Ordering::Release);
    let mut b = port.alloc_tx().unwrap();
    b.extend_from_slice(&[0xcc; 64]).unwrap();
    // Transmit on another thread: before the fix this blocked forever in write(2).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut v = vec![b];
        let n = port.tx_burst(&mut v);
        let _ = tx.send(n);
        port
    });
    let n = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("tx_burst returned (it blocked on the peer's full eventfd)");
    assert_eq!(n, 1);
    assert_eq!(s2c.tail(Ordering::Acquire), 1);
    assert_eq!(s2c.read_desc(0).length, 64);
    assert_eq!(
        m.interrupts_skipped(0),
        1,
        "the skipped interrupt is counted"
    );
    // The peer's counter is untouched.
    let mut v = [0u8; 8];
    rustix::io::read(&full, &mut v).unwrap();
    assert_eq!(u64::from_ne_bytes(v), u64::MAX - 1);
    drop(c);
    // SAFETY: unmapping our own mapping; the server keeps its own until it drops the conn.
    unsafe { libc::munmap(base.cast(), LEN) };
}
