//! A hostile peer on a memif server, driven by hand (the helpers of `tests`): an interrupt
//! fd that is not an eventfd, an eventfd whose counter is full, regions far larger than the
//! interface needs, a flood of connections that never handshake, wrong secrets and a peer
//! uid that is not allowed. Each is refused with a clear reason or counted, and the server
//! keeps serving a legitimate client.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::msg::{Msg, Name, ADD_RING_FLAG_C2S, MSG_SIZE, VERSION};
use super::ring::{Desc, Ring};
use super::sys::{self, Recv};
use super::tests::{connect, expect_ack, expect_refused, init, map_shared, memfd, recv, send};
use super::{Memif, MemifConfig, Role};
use crate::mem::{HugePages, Region};
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
    let map = map_shared(&fd, LEN);
    let base = map.as_mut_ptr();
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
    // (Our mapping goes with `map`, after the rings that point into it.)
    drop(map);
}

/// A peer offering a region far larger than the interface's rings and buffers need (a
/// sparse 1 GiB memfd against a default limit of about 160 MiB) is refused before it is
/// mapped, with a reason naming the limit; one within a configured limit passes.
#[test]
fn memif_refuses_oversized_peer_region() {
    let (m, sock) = server_with("bigregion", |_| {});
    let limit = m.shared.cfg.peer_region_limit(&m.shared.cfg.interfaces[0]);
    println!("default peer region limit: {limit} bytes");
    assert!(
        limit < 1 << 30 && limit > 64 << 20,
        "DPDK's largest layout fits"
    );
    let big = memfd(1 << 30);
    let c = connect(&sock);
    send(&c, &init(0, VERSION), None);
    expect_ack(&c);
    send(
        &c,
        &Msg::AddRegion {
            index: 0,
            size: 1 << 30,
        },
        Some(&big),
    );
    expect_refused(&c, "over the limit");

    // Two regions that are each fine but together too much (a configured limit of 2 MiB).
    let (_m2, sock2) = server_with("bigregion2", |c| c.max_peer_region_bytes = Some(2 << 20));
    let r = memfd(1 << 20);
    let c = connect(&sock2);
    send(&c, &init(0, VERSION), None);
    expect_ack(&c);
    for (index, ok) in [(0u16, true), (1, true), (2, false)] {
        send(
            &c,
            &Msg::AddRegion {
                index,
                size: 1 << 20,
            },
            Some(&r),
        );
        if ok {
            expect_ack(&c);
        } else {
            expect_refused(
                &c,
                "region 2 (1048576 bytes) over the limit: peer regions 3145728 > 2097152",
            );
        }
    }
}

fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// A peer's region is mapped without `mlock` and without populating it: mapping a sparse
/// 512 MiB memfd leaves our RSS where it was (before: `mlock` faulted in all of it where
/// CAP_IPC_LOCK or RLIMIT_MEMLOCK allowed).
#[test]
fn memif_peer_region_is_not_locked_or_populated() {
    const LEN: usize = 512 << 20;
    let fd = memfd(LEN);
    let before = rss_bytes();
    let r = Region::from_fd(fd, LEN).unwrap();
    let after = rss_bytes();
    println!(
        "RSS before {} MiB, after mapping 512 MiB: {} MiB, locked: {}",
        before >> 20,
        after >> 20,
        r.is_locked()
    );
    assert!(!r.is_locked());
    // Other tests run in parallel in this process: allow them some growth.
    assert!(
        after < before + (128 << 20),
        "RSS grew by {} MiB",
        (after - before) >> 20
    );
}

/// 200 connections that never send INIT: the server keeps at most
/// `max_pending_handshakes` (16) of them, drops the oldest (counted), and a legitimate
/// client still connects.
#[test]
fn memif_control_flood_stays_bounded() {
    let (m, sock) = server_with("flood", |_| {});
    let mut flood = Vec::new();
    let mut max_pending = 0;
    let end = Instant::now() + crate::test_harness::SETTLE;
    while flood.len() < 200 {
        // A full backlog refuses (EAGAIN) until the server accepts: retry.
        match sys::connect(Path::new(&sock)) {
            Ok(c) => flood.push(c),
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
        max_pending = max_pending.max(m.pending_handshakes());
        assert!(
            Instant::now() < end,
            "opened only {} connections",
            flood.len()
        );
    }
    harness::settle("the server to take the flood", || {
        max_pending = max_pending.max(m.pending_handshakes());
        m.pending_dropped() >= 200 - 16
    });
    println!(
        "flood: 200 connections, pending at most {max_pending}, dropped {}",
        m.pending_dropped()
    );
    assert!(max_pending <= 16, "pending {max_pending}");

    let path = sock.clone();
    let mut cfg = MemifConfig::new(&path, Role::Client, 0);
    cfg.interfaces[0].hugepages = HugePages::Never;
    cfg.interfaces[0].log2_ring_size = 4;
    cfg.interfaces[0].extra_buffers = 0;
    cfg.reconnect_interval = Duration::from_millis(20);
    let client = Memif::new(cfg).unwrap();
    assert!(
        client.wait_up(0, crate::test_harness::SETTLE),
        "legitimate client connects despite the flood: {:?}",
        client.last_error(0)
    );
    assert!(m.wait_up(0, crate::test_harness::SETTLE));
    assert!(m.pending_handshakes() <= 16);
    assert_eq!(m.accept_errors(), 0);
    drop(flood);
}

fn init_secret(secret: &str) -> Msg {
    Msg::Init {
        version: VERSION,
        id: 0,
        mode: 0,
        secret: Name::new(secret),
        name: Name::new("raw-test"),
    }
}

/// A wrong secret is refused whatever it shares with the right one (prefix, all but the
/// last byte, empty, longer); the right one is accepted. The comparison reads every byte.
#[test]
fn memif_wrong_secret_is_refused() {
    let (_m, sock) = server_with("secret", |c| {
        c.interfaces[0].secret = Some("s3cret-key".into())
    });
    for wrong in [
        "",
        "s",
        "s3cret-ke",
        "s3cret-kez",
        "s3cret-key!",
        "x3cret-key",
    ] {
        let c = connect(&sock);
        send(&c, &init_secret(wrong), None);
        expect_refused(&c, "incorrect secret");
    }
    let c = connect(&sock);
    send(&c, &init_secret("s3cret-key"), None);
    expect_ack(&c);

    use super::control::secret_eq;
    assert!(secret_eq(b"", b""));
    assert!(secret_eq(b"abc", b"abc"));
    assert!(!secret_eq(b"abc", b"abd"));
    assert!(!secret_eq(b"ab", b"abc"));
    assert!(!secret_eq(b"abc\0", b"abc"));
}

fn first_reply(fd: &OwnedFd) -> Msg {
    let mut buf = [0u8; MSG_SIZE];
    let end = Instant::now() + crate::test_harness::SETTLE;
    loop {
        match sys::recv_msg(fd.as_fd(), &mut buf).unwrap() {
            Recv::Msg { len, .. } => return Msg::decode(&buf[..len]).unwrap(),
            Recv::Closed => panic!("closed without a message"),
            Recv::WouldBlock => {
                assert!(Instant::now() < end, "no reply");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// With `allowed_uid`, a peer of another uid is refused before HELLO (counted in
/// `refused`); a peer of the allowed uid gets HELLO.
#[test]
fn memif_allowed_uid_refuses_other_users() {
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    let (m, sock) = server_with("uid", |c| c.allowed_uid = Some(me.wrapping_add(1)));
    let c = sys::connect(Path::new(&sock)).unwrap();
    match first_reply(&c) {
        Msg::Disconnect { reason, .. } => {
            let r = reason.to_string_lossy();
            assert!(r.contains(&format!("peer uid {me} not allowed")), "{r}");
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    harness::settle("the refusal counted", || m.refused() == 1);
    let (_m2, sock2) = server_with("uid2", |c| c.allowed_uid = Some(me));
    let c = sys::connect(Path::new(&sock2)).unwrap();
    assert!(matches!(first_reply(&c), Msg::Hello { .. }));
}

/// When `accept` fails for want of descriptors (EMFILE), the server pauses its listener
/// with a growing back-off instead of polling it hot, and accepts again once descriptors
/// are free. Runs in a child process: it exhausts the process's descriptors, which would
/// break the other tests running beside it.
#[test]
fn memif_accept_emfile_backs_off() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "pmd::memif::hostile_tests::emfile_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("BPX_EMFILE_CHILD", "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    println!("{text}");
    assert!(out.status.success(), "child failed");
    assert!(text.contains("emfile: done"), "child did not run");
}

/// The child half of [`memif_accept_emfile_backs_off`].
#[test]
#[ignore = "child process of memif_accept_emfile_backs_off"]
fn emfile_child() {
    if std::env::var("BPX_EMFILE_CHILD").is_err() {
        return;
    }
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let (m, sock) = server_with("emfile", |_| {});
    // Client sockets made now, connected once the descriptors are gone: they then wait in
    // the listener's backlog, which the server cannot accept from.
    let clients: Vec<OwnedFd> = (0..4)
        .map(|_| {
            rustix::net::socket_with(
                AddressFamily::UNIX,
                SocketType::SEQPACKET,
                SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
                None,
            )
            .unwrap()
        })
        .collect();
    // The control thread's CPU time, from a stat file opened now (no descriptor to open
    // one later).
    // A new thread names itself once it first runs, which on a loaded machine can be a
    // while after it was spawned: look for it until the harness's settle deadline.
    let find = || {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .map(|t| t.unwrap().path())
            .find(|t| {
                std::fs::read_to_string(t.join("comm")).is_ok_and(|c| c.trim() == "memif-ctl")
            })
    };
    let end = Instant::now() + crate::test_harness::SETTLE;
    let task = loop {
        match find() {
            Some(t) => break t,
            None if Instant::now() < end => std::thread::sleep(Duration::from_millis(5)),
            None => panic!(
                "no thread named memif-ctl after {:?}",
                crate::test_harness::SETTLE
            ),
        }
    };
    let mut stat = std::fs::File::open(task.join("stat")).unwrap();
    let null = std::fs::File::open("/dev/null").unwrap();
    let mut hog = Vec::new();
    loop {
        match rustix::io::dup(&null) {
            Ok(fd) => hog.push(fd),
            Err(rustix::io::Errno::MFILE) => break,
            Err(e) => panic!("dup: {e}"),
        }
    }
    let addr = SocketAddrUnix::new(sock.as_str()).unwrap();
    for c in &clients {
        rustix::net::connect(c, &addr).unwrap();
    }
    let t0 = Instant::now();
    let cpu0 = cpu_ticks(&mut stat);
    std::thread::sleep(Duration::from_secs(2));
    let cpu = cpu_ticks(&mut stat) - cpu0;
    let errors = m.accept_errors();
    println!(
        "emfile: {} descriptors held, accept_errors {errors}, control thread CPU {} ms in {:?}",
        hog.len(),
        cpu * 10,
        t0.elapsed()
    );
    // A hot loop burns a core: 2 s of CPU (less on a loaded machine, far above 0.5 s).
    assert!(cpu < 50, "control thread used {} ms of CPU", cpu * 10);
    // 10 ms doubling to 1 s: about 8 tries in 2 s; a hot loop would make millions.
    assert!((1..=20).contains(&errors), "accept_errors {errors}");
    drop(hog);
    // Descriptors back: the queued connections are accepted (after at most 1 s of pause)
    // and get HELLO.
    for c in &clients {
        match recv(c) {
            Some((Msg::Hello { .. }, _)) => {}
            other => panic!("expected HELLO, got {other:?}"),
        }
    }
    println!("emfile: done, accept_errors {}", m.accept_errors());
}

/// utime + stime (clock ticks, 100 per second) from a `/proc/.../stat` file, re-read.
fn cpu_ticks(f: &mut std::fs::File) -> u64 {
    use std::io::{Read, Seek};
    let mut s = String::new();
    f.rewind().unwrap();
    f.read_to_string(&mut s).unwrap();
    let after = &s[s.rfind(')').unwrap() + 1..];
    let v: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|x| x.parse().unwrap())
        .collect();
    v[0] + v[1]
}
