//! The server side of the memif control channel, driven through a real UNIX seqpacket socket:
//! arbitrary sequences of control messages (HELLO, INIT, ADD_REGION, ADD_RING, CONNECT,
//! DISCONNECT, ACK, unknown types) with arbitrary field values, truncated and oversized
//! datagrams, and descriptors attached where a message expects one or not (memfds of chosen
//! sizes, sealed or not, with ring cookies or not; eventfds, full eventfds, pipes, several
//! descriptors at once), against a `Memif` server in this process; once connected, bytes
//! written into the shared regions (ring indices, descriptors) and the server port's bursts.
//!
//! Properties: no panic; no hang (every reply comes within [`REPLY_TIMEOUT`], and the server
//! closes the connection once we stop); no descriptor or mapping left over after an input
//! (`/proc/self/fd` and our memfds in `/proc/self/maps`, checked every [`CHECK_EVERY`] inputs
//! and at every replay); a legitimate client still connects afterwards (every
//! [`LEGIT_EVERY`] inputs, and in the seed replay, [`legit_client_connects`]).
//!
//! Input: ops, each an op byte (low 4 bits: what; high 4 bits: variations) then the fields
//! it reads (missing bytes read as 0). One message per op, sent and answered in lockstep:
//! the server answers every message with ACK, CONNECTED or DISCONNECT, or closes; the input
//! ends at the first DISCONNECT or close.
//!
//! The body of fuzz target `memif_control`, shared by the target
//! (fuzz/fuzz_targets/memif_control.rs) and by the stable replay of the committed seeds
//! (tests/fuzz_seeds.rs).
use std::cell::RefCell;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bypass::mem::{HugePages, PktBuf};
use bypass::pmd::memif::{Memif, MemifConfig, MemifPort, Role};
use bypass::pmd::Port;
use rustix::event::{eventfd, EventfdFlags};
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

/// Longest wait for one reply, or for the server to close after we stopped: past it, the
/// input hangs the server (a panic, so the fuzzer reports it).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Inputs between two checks of the mappings during fuzzing (descriptors are checked after
/// every input; the replay checks both after every input).
pub const CHECK_EVERY: u64 = 16;
/// Inputs between two legitimate handshakes during fuzzing.
pub const LEGIT_EVERY: u64 = 2048;
/// The name of every memfd an input makes (what the mapping check looks for).
const MEMFD_NAME: &str = "fuzz-memif";

const MSG_SIZE: usize = 128;
const VERSION: u16 = 2 << 8;
const RING_COOKIE: u32 = 0x03E3_1F20;
const T_ACK: u16 = 1;
const T_HELLO: u16 = 2;
const T_INIT: u16 = 3;
const T_ADD_REGION: u16 = 4;
const T_ADD_RING: u16 = 5;
const T_CONNECT: u16 = 6;
const T_CONNECTED: u16 = 7;
const T_DISCONNECT: u16 = 8;
const RING_HEADER: u64 = 128;
const DESC_SIZE: u64 = 16;

/// Bytes a ring of `1 << log2` descriptors occupies.
fn ring_bytes(log2: u8) -> u64 {
    RING_HEADER + DESC_SIZE * (1u64 << log2.min(20))
}

struct Harness {
    socket: PathBuf,
    memif: Memif,
    port: MemifPort,
    /// Open descriptors of the process before the current input.
    base_fds: usize,
    runs: u64,
}

thread_local! {
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

fn with_harness<R>(f: impl FnOnce(&mut Harness) -> R) -> R {
    HARNESS.with(|h| {
        let mut h = h.borrow_mut();
        let h = h.get_or_insert_with(|| {
            // One server per thread (the replay runs tests on several), in the abstract
            // namespace: no file to clean up.
            static N: AtomicU32 = AtomicU32::new(0);
            let socket = PathBuf::from(format!(
                "@bypass-fuzz-memif-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let mut cfg = MemifConfig::new(&socket, Role::Server, 0);
            cfg.interfaces[0].hugepages = HugePages::Never;
            cfg.interfaces[0].log2_ring_size = 6;
            cfg.interfaces[0].extra_buffers = 64;
            let memif = Memif::new(cfg).expect("memif server");
            let port = memif.port(0, 0).expect("memif port");
            Harness {
                socket,
                memif,
                port,
                base_fds: open_fds(),
                runs: 0,
            }
        });
        f(h)
    })
}

/// Entries of `/proc/self/fd` (the directory's own descriptor included, the same each time).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// What each open descriptor is (for the message of a failed check).
fn fd_list() -> String {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| {
                    let l = std::fs::read_link(e.path()).unwrap_or_default();
                    format!("{}={}", e.file_name().to_string_lossy(), l.display())
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

/// Mappings of this input's memfds still in `/proc/self/maps`.
fn our_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map_or(0, |m| m.lines().filter(|l| l.contains(MEMFD_NAME)).count())
}

/// The input's fields: little-endian integers, 0 past the end.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let n = self.0.len().min(N);
        let mut b = [0u8; N];
        b[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        b
    }
    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.bytes())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.bytes())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.bytes())
    }
    /// `n` bytes (fewer at the end of the input).
    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

/// A 128-byte control message of type `t` with `fields` written at their offsets.
fn message(t: u16, fields: &[(usize, &[u8])]) -> [u8; MSG_SIZE] {
    let mut m = [0u8; MSG_SIZE];
    m[..2].copy_from_slice(&t.to_le_bytes());
    for (off, b) in fields {
        let end = (off + b.len()).min(MSG_SIZE);
        m[*off..end].copy_from_slice(&b[..end - off]);
    }
    m
}

/// Region sizes worth trying: page multiples around what a client needs, zero, one over the
/// server's limit (about 160 MiB with its defaults), huge.
const SIZES: [u64; 8] = [4096, 8192, 65536, 1 << 20, 16 << 20, 200 << 20, 0, 1 << 40];

/// Offsets worth trying in a region: the ring header's fields, the first descriptors, the
/// start of a second ring of each size.
fn offset(f: &mut Fields<'_>, sel: bool) -> u32 {
    let v = f.u32();
    if !sel {
        return v;
    }
    match v % 16 {
        0 => 0,
        1 => 4,
        2 => 6,
        3 => 64,
        4 => 128,
        5 => 144,
        k => ring_bytes((k - 5) as u8) as u32 + [0, 6, 64, 128][(v as usize >> 4) % 4],
    }
}

/// What one input made: descriptors we still hold (closed at the end of the input) and the
/// memfds, which `poke` writes into.
#[derive(Default)]
struct Held {
    mems: Vec<(OwnedFd, u64)>,
}

/// Descriptors to attach to a message, as the selector `s` asks (low 3 bits: kind; the rest
/// its variations). Returns none for kind 0.
fn fds(f: &mut Fields<'_>, s: u8, held: &mut Held) -> Vec<OwnedFd> {
    match s & 7 {
        0 => Vec::new(),
        1 => {
            let size = match s & 0x20 {
                0 => SIZES[(f.u8() % 8) as usize],
                _ => f.u64() % (1 << 33),
            };
            memfd(size, s & 8 != 0, s & 16 != 0, held)
                .into_iter()
                .collect()
        }
        2 => eventfd(0, EventfdFlags::CLOEXEC).ok().into_iter().collect(),
        3 => {
            // An eventfd whose counter is one short of its maximum: one more write would
            // block (or fail, non-blocking).
            let Ok(e) = eventfd(0, EventfdFlags::CLOEXEC) else {
                return Vec::new();
            };
            let _ = rustix::io::write(&e, &0xffff_ffff_ffff_fffeu64.to_ne_bytes());
            vec![e]
        }
        4 | 5 => match std::io::pipe() {
            Ok((r, _)) if s & 7 == 4 => vec![OwnedFd::from(r)],
            Ok((_, w)) => vec![OwnedFd::from(w)],
            Err(_) => Vec::new(),
        },
        6 => std::fs::File::open("/dev/null")
            .map(|f| vec![OwnedFd::from(f)])
            .unwrap_or_default(),
        _ => {
            // Several eventfds at once: 2 to 7 (the server takes at most 4 with a message and
            // refuses the message when the kernel cut the rest).
            let n = 2 + (s >> 3) as usize % 6;
            (0..n)
                .filter_map(|_| eventfd(0, EventfdFlags::CLOEXEC).ok())
                .collect()
        }
    }
}

/// A memfd of `size` bytes, sealed against shrinking or not, with the ring cookie written
/// where a ring of any size could start (offset 0 and right after a first ring), or not. A
/// duplicate stays in `held` for `poke`.
fn memfd(size: u64, sealed: bool, cookies: bool, held: &mut Held) -> Option<OwnedFd> {
    let fd = rustix::fs::memfd_create(MEMFD_NAME, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .ok()?;
    rustix::fs::ftruncate(&fd, size).ok()?;
    if cookies {
        let c = RING_COOKIE.to_le_bytes();
        for at in std::iter::once(0).chain((1..=14).map(ring_bytes)) {
            if at + 4 <= size {
                let _ = rustix::io::pwrite(&fd, &c, at);
            }
        }
    }
    if sealed {
        let _ = rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW);
    }
    if let Ok(dup) = fd.try_clone() {
        held.mems.push((dup, size));
    }
    Some(fd)
}

/// Our end of one control connection.
struct Client {
    sock: OwnedFd,
    /// The server closed or refused: nothing more is sent.
    done: bool,
}

/// What an answer was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Type(u16),
    Closed,
}

impl Client {
    fn connect(path: &std::path::Path) -> Client {
        let sock = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .expect("seqpacket socket");
        let name = &path.as_os_str().as_encoded_bytes()[1..];
        let addr = SocketAddrUnix::new_abstract_name(name).expect("socket name");
        rustix::net::connect(&sock, &addr).expect("connect to the memif server");
        for t in [
            rustix::net::sockopt::Timeout::Recv,
            rustix::net::sockopt::Timeout::Send,
        ] {
            rustix::net::sockopt::set_socket_timeout(&sock, t, Some(REPLY_TIMEOUT))
                .expect("socket timeout");
        }
        Client { sock, done: false }
    }

    /// Send one datagram with `fds` attached; false when the server is gone.
    fn send(&mut self, bytes: &[u8], fds: &[OwnedFd]) -> bool {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
        let mut ctl = SendAncillaryBuffer::new(&mut space);
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        if !borrowed.is_empty() {
            ctl.push(SendAncillaryMessage::ScmRights(&borrowed));
        }
        match rustix::net::sendmsg(
            &self.sock,
            &[IoSlice::new(bytes)],
            &mut ctl,
            SendFlags::NOSIGNAL,
        ) {
            Ok(_) => true,
            Err(rustix::io::Errno::AGAIN) => panic!("the memif server stopped reading (hang)"),
            Err(_) => {
                self.done = true;
                false
            }
        }
    }

    /// The next datagram from the server.
    fn recv(&mut self) -> Answer {
        let mut buf = [0u8; 256];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut ctl = RecvAncillaryBuffer::new(&mut space);
        match rustix::net::recvmsg(
            &self.sock,
            &mut [IoSliceMut::new(&mut buf)],
            &mut ctl,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(r) if r.bytes == 0 => Answer::Closed,
            Ok(r) => {
                assert_eq!(
                    r.bytes, MSG_SIZE,
                    "the server sent a datagram of {} bytes",
                    r.bytes
                );
                Answer::Type(u16::from_le_bytes([buf[0], buf[1]]))
            }
            Err(rustix::io::Errno::AGAIN) => {
                panic!("no answer from the memif server within {REPLY_TIMEOUT:?} (hang)")
            }
            Err(_) => Answer::Closed,
        }
    }

    /// One message, then its answer (ACK, CONNECTED or DISCONNECT, or the server closing).
    fn exchange(&mut self, bytes: &[u8], fds: &[OwnedFd], reached: &mut Reached) -> Answer {
        if self.done || !self.send(bytes, fds) {
            return Answer::Closed;
        }
        reached.messages += 1;
        let a = self.recv();
        match a {
            Answer::Type(T_ACK) => reached.acks += 1,
            Answer::Type(T_CONNECTED) => reached.connected = true,
            Answer::Type(T_DISCONNECT) => {
                reached.refused = true;
                self.done = true;
            }
            Answer::Type(t) => panic!("the memif server answered with message type {t}"),
            Answer::Closed => self.done = true,
        }
        a
    }

    /// Stop sending and wait for the server to close its end (it does on our half-close).
    fn finish(self) {
        let _ = rustix::net::shutdown(&self.sock, rustix::net::Shutdown::Write);
        let end = Instant::now() + REPLY_TIMEOUT;
        let mut c = self;
        loop {
            if c.recv() == Answer::Closed {
                return;
            }
            assert!(
                Instant::now() < end,
                "the memif server kept the connection open after our half-close"
            );
        }
    }
}

/// How deep one input got (the seed replay checks its seeds reach where they aim).
#[derive(Debug, Default, Clone, Copy)]
pub struct Reached {
    /// Messages sent.
    pub messages: usize,
    /// ACKs received.
    pub acks: usize,
    /// The server answered CONNECTED at some point.
    pub connected: bool,
    /// The server refused with DISCONNECT.
    pub refused: bool,
    /// Frames the server port received from our rings.
    pub frames: usize,
}

/// A whole valid handshake, as a client does it: INIT, the ring region and a buffer region,
/// one ring each way of `1 << log2` descriptors, CONNECT.
fn handshake(c: &mut Client, log2: u8, held: &mut Held, reached: &mut Reached) {
    let rb = ring_bytes(log2);
    let init = message(T_INIT, &[(2, &VERSION.to_le_bytes()), (33, b"fuzz")]);
    if c.exchange(&init, &[], reached) != Answer::Type(T_ACK) {
        return;
    }
    let rings = (2 * rb).div_ceil(4096) * 4096;
    for (index, size) in [(0u16, rings), (1, 1 << 20)] {
        let fd = memfd(size, true, index == 0, held);
        let m = message(
            T_ADD_REGION,
            &[(2, &index.to_le_bytes()), (4, &size.to_le_bytes())],
        );
        if c.exchange(&m, &fd.into_iter().collect::<Vec<_>>(), reached) != Answer::Type(T_ACK) {
            return;
        }
    }
    for (flags, off) in [(1u16, 0u64), (0, rb)] {
        let fd: Vec<OwnedFd> = eventfd(0, EventfdFlags::CLOEXEC).into_iter().collect();
        let m = message(
            T_ADD_RING,
            &[
                (2, &flags.to_le_bytes()),
                (8, &(off as u32).to_le_bytes()),
                (12, &[log2]),
            ],
        );
        if c.exchange(&m, &fd, reached) != Answer::Type(T_ACK) {
            return;
        }
    }
    c.exchange(&message(T_CONNECT, &[(2, b"fuzz-client")]), &[], reached);
}

/// The server port's bursts: what the peer's rings hold now is read (and dropped), one frame
/// is offered the other way.
fn bursts(port: &mut MemifPort, reached: &mut Reached) {
    let mut rx: Vec<PktBuf> = Vec::new();
    reached.frames += port.rx_burst(&mut rx, 32);
    drop(rx);
    if let Ok(mut b) = port.alloc_tx() {
        let _ = b.extend_from_slice(&[0x5a; 60]);
        let mut tx = vec![b];
        port.tx_burst(&mut tx);
    }
}

/// One input: no panic, no hang, nothing left over.
pub fn run(data: &[u8]) -> Reached {
    with_harness(|h| {
        let replay = cfg!(test);
        // The descriptors before and after the input, not against a count taken once:
        // libFuzzer opens its own between inputs (pipes to the symbolizer).
        h.base_fds = open_fds();
        let r = run_one(h, data);
        h.runs += 1;
        check_nothing_left(h, replay || h.runs % CHECK_EVERY == 0);
        if !replay && h.runs % LEGIT_EVERY == 0 {
            assert!(
                legit(h),
                "a legitimate client could not connect after {} inputs",
                h.runs
            );
        }
        r
    })
}

fn run_one(h: &mut Harness, data: &[u8]) -> Reached {
    let mut reached = Reached::default();
    let mut held = Held::default();
    let mut c = Client::connect(&h.socket);
    // The server speaks first.
    assert_eq!(
        c.recv(),
        Answer::Type(T_HELLO),
        "no HELLO from the memif server"
    );
    let mut f = Fields(data);
    while !c.done {
        let Some(&op) = f.0.first() else { break };
        f.0 = &f.0[1..];
        let v = op >> 4;
        match op & 15 {
            0 => {
                let version = if v & 1 == 0 { VERSION } else { f.u16() };
                let id = if v & 2 == 0 { 0 } else { f.u32() };
                let mode = if v & 4 == 0 { 0 } else { f.u8() };
                let secret: [u8; 24] = if v & 8 == 0 { [0; 24] } else { f.bytes() };
                let m = message(
                    T_INIT,
                    &[
                        (2, &version.to_le_bytes()),
                        (4, &id.to_le_bytes()),
                        (8, &[mode]),
                        (9, &secret),
                        (33, b"fuzz"),
                    ],
                );
                c.exchange(&m, &[], &mut reached);
            }
            1 => {
                let index = u16::from(f.u8() % 20);
                let size = if v & 1 == 0 {
                    SIZES[(f.u8() % 8) as usize]
                } else {
                    f.u64()
                };
                let s = f.u8();
                let fds = fds(&mut f, s, &mut held);
                let m = message(
                    T_ADD_REGION,
                    &[(2, &index.to_le_bytes()), (4, &size.to_le_bytes())],
                );
                c.exchange(&m, &fds, &mut reached);
            }
            2 => {
                let flags = if v & 2 == 0 {
                    u16::from(v & 1)
                } else {
                    f.u16()
                };
                let index = u16::from(f.u8() % 4);
                let region = u16::from(f.u8() % 20);
                let off = offset(&mut f, v & 4 == 0);
                let log2 = if v & 8 == 0 { 1 + f.u8() % 14 } else { f.u8() };
                let private = f.u16();
                let s = f.u8();
                let fds = fds(&mut f, s, &mut held);
                let m = message(
                    T_ADD_RING,
                    &[
                        (2, &flags.to_le_bytes()),
                        (4, &index.to_le_bytes()),
                        (6, &region.to_le_bytes()),
                        (8, &off.to_le_bytes()),
                        (12, &[log2]),
                        (13, &private.to_le_bytes()),
                    ],
                );
                c.exchange(&m, &fds, &mut reached);
            }
            3 => {
                let name: [u8; 32] = if v & 1 == 0 {
                    *b"fuzz-client\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
                } else {
                    f.bytes()
                };
                c.exchange(&message(T_CONNECT, &[(2, &name)]), &[], &mut reached);
            }
            4 => {
                let code = f.u32();
                let reason: [u8; 16] = f.bytes();
                let m = message(T_DISCONNECT, &[(2, &code.to_le_bytes()), (6, &reason)]);
                c.exchange(&m, &[], &mut reached);
            }
            5 => {
                // ACK, HELLO, CONNECTED, type 0 and unknown types, with any body.
                let t = match v & 7 {
                    0 => T_ACK,
                    1 => T_HELLO,
                    2 => T_CONNECTED,
                    3 => 0,
                    _ => f.u16(),
                };
                let body: [u8; 40] = f.bytes();
                let s = if v & 8 == 0 { 0 } else { f.u8() };
                let fds = fds(&mut f, s, &mut held);
                c.exchange(&message(t, &[(2, &body)]), &fds, &mut reached);
            }
            6 => {
                // A datagram of any length (0 to 511 bytes: truncated, oversized, empty).
                let len = (f.u16() % 512) as usize;
                let mut d = vec![0u8; len];
                let got = f.take(len.min(64));
                d[..got.len()].copy_from_slice(got);
                let s = if v & 1 == 0 { 0 } else { f.u8() };
                let fds = fds(&mut f, s, &mut held);
                c.exchange(&d, &fds, &mut reached);
            }
            7 => {
                // Write into a region we passed (ring indices, descriptors), then the bursts.
                if !held.mems.is_empty() {
                    let k = f.u8() as usize % held.mems.len();
                    let at = u64::from(offset(&mut f, v & 1 == 0));
                    let b: [u8; 16] = f.bytes();
                    let (fd, size) = &held.mems[k];
                    if at + 16 <= *size {
                        let _ = rustix::io::pwrite(fd, &b, at);
                    }
                }
                bursts(&mut h.port, &mut reached);
            }
            _ => handshake(&mut c, 1 + v % 8, &mut held, &mut reached),
        }
    }
    if reached.connected {
        bursts(&mut h.port, &mut reached);
    }
    c.finish();
    // The link is down now: the port lets go of the connection (and its mappings) at its
    // next burst.
    bursts(&mut h.port, &mut reached);
    drop(held);
    reached
}

/// Nothing an input made is left: descriptors (and mappings when `maps`), given the server a
/// moment (it closes after it answered).
fn check_nothing_left(h: &mut Harness, maps: bool) {
    let end = Instant::now() + REPLY_TIMEOUT;
    loop {
        let fds = open_fds();
        let maps = if maps { our_mappings() } else { 0 };
        if fds == h.base_fds && maps == 0 {
            return;
        }
        assert!(
            Instant::now() < end,
            "left over after {} inputs: {fds} descriptors open (baseline {}), {maps} \
             mappings of our memfds; open: {}",
            h.runs,
            h.base_fds,
            fd_list()
        );
        let mut rx = Vec::new();
        h.port.rx_burst(&mut rx, 32);
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A legitimate client (a `Memif` client in this process) connects to the server that took
/// every input so far; the link comes up on both sides, and goes down again when it leaves.
fn legit(h: &mut Harness) -> bool {
    let mut cfg = MemifConfig::new(&h.socket, Role::Client, 0);
    cfg.interfaces[0].hugepages = HugePages::Never;
    cfg.interfaces[0].log2_ring_size = 6;
    cfg.interfaces[0].extra_buffers = 64;
    let Ok(client) = Memif::new(cfg) else {
        return false;
    };
    let up = client.wait_up(0, REPLY_TIMEOUT) && h.memif.wait_up(0, REPLY_TIMEOUT);
    drop(client);
    let end = Instant::now() + REPLY_TIMEOUT;
    while h.memif.link(0).is_up() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut rx = Vec::new();
    h.port.rx_burst(&mut rx, 32);
    check_nothing_left(h, true);
    up
}

/// After the inputs so far, a legitimate client still connects (and leaves nothing behind).
pub fn legit_client_connects() -> bool {
    with_harness(legit)
}

/// Connections the server refused before they named an interface, and connections it
/// completed, so far.
pub fn server_counts() -> (u64, u64) {
    with_harness(|h| (h.memif.refused(), h.memif.connects(0)))
}
