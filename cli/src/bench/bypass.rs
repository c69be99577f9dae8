//! The bypass transport in `bypass bench`: one stack per connection over memif (the embedded
//! default), each run by the thread that uses the connection (run-to-completion).
//!
//! The benchmark moves a connection to its worker thread after `connect`/`accept`, but a
//! bypass [`Stack`] lives on the thread that polls it (it is `!Send`). So a [`BypassConn`]
//! starts as a plain description (socket path, role, addresses) and builds its stack, memif
//! interface and transport connection on the first call, on the worker thread, keeping them
//! in a thread-local table. A connection used from another thread after that fails with an
//! error; nothing is shared between threads.
//!
//! Addresses: a listener's address is `memif:PATH`; connection `i` of a listener uses the
//! memif socket `PATH-i.sock` (the peer serves it, the client connects), so the i-th
//! `connect` to an address meets the i-th `accept`. Each connection is its own memif link
//! between the two processes, with jumbo frames (IP MTU 9000).
//!
//! `BYPASS_BENCH_STATS=1` prints each connection's transport, port and network counters on
//! stderr when it is dropped (both processes; the peer inherits the environment), to see
//! retransmissions and drops behind a slow cell.
//!
//! How a connection builds its stack is a `Setup`: memif here, a lent DPDK queue in
//! [`super::bypass_dpdk`]; the lazy start, the thread-local table and the message calls are
//! shared.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bypass::pmd::memif::Role;
use bypass::proto::cc::ControllerFactory;
use bypass::proto::{MsgData, RecvMsg};
use bypass::socket::{Backend, Error, IdlePoll, Socket, Stack, DEFAULT_UDP_PORT};
use bytes::Bytes;

use super::transport::{ConnError, ConnOpts, Listener, MsgConn, Transport, Wait};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const SERVER_MAC: [u8; 6] = [0x02, 0xb9, 0x70, 0xbe, 0x00, 0x01];
const CLIENT_MAC: [u8; 6] = [0x02, 0xb9, 0x70, 0xbe, 0x00, 0x02];
/// Largest message the bench sends over bypass.
pub(super) const MAX_MSG: usize = 1 << 30;

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);
static NEXT_LISTENER: AtomicU64 = AtomicU64::new(0);

struct Live {
    key: u64,
    // Field order: the socket goes before its stack.
    sock: Socket,
    stack: Stack,
}

thread_local! {
    static LIVE: RefCell<Vec<Live>> = const { RefCell::new(Vec::new()) };
}

/// `bypass bench`'s bypass-over-memif transport.
#[derive(Default)]
pub struct BypassMemif {
    connects: Mutex<HashMap<String, u32>>,
}

impl BypassMemif {
    /// The transport (nothing is opened until a connection is used).
    pub fn new() -> BypassMemif {
        BypassMemif::default()
    }
}

impl Transport for BypassMemif {
    fn name(&self) -> &'static str {
        "bypass-memif"
    }

    fn variants(&self) -> &'static [Wait] {
        // The stack busy-polls; there is no blocking variant.
        &[Wait::Busy]
    }

    fn max_msg(&self) -> usize {
        MAX_MSG
    }

    fn listen(&self, _host: &str, opts: &ConnOpts) -> Result<Box<dyn Listener>, ConnError> {
        let n = NEXT_LISTENER.fetch_add(1, Ordering::Relaxed);
        if n == 0 {
            sweep_stale_sockets(&std::env::temp_dir());
        }
        let base = std::env::temp_dir().join(format!("bypass-bench-{}-{n}", std::process::id()));
        Ok(Box::new(BypassListener {
            base,
            next: 0,
            opts: *opts,
        }))
    }

    fn connect(&self, addr: &str, opts: &ConnOpts) -> Result<Box<dyn MsgConn>, ConnError> {
        let base = addr
            .strip_prefix("memif:")
            .ok_or_else(|| ConnError::Address(addr.to_owned()))?;
        let i = {
            let mut c = self.connects.lock().unwrap_or_else(|e| e.into_inner());
            let e = c.entry(addr.to_owned()).or_insert(0);
            *e += 1;
            *e - 1
        };
        Ok(Box::new(BypassConn::new(
            socket_path(&PathBuf::from(base), i),
            Role::Client,
            opts,
        )))
    }
}

/// Remove the memif sockets (`bypass-bench-PID-N-I.sock`) that runs killed before they could
/// clean up left in `dir`: those whose process no longer exists. A run that ends normally
/// removes its own; a killed one (a timeout, Ctrl-C twice) cannot. Returns how many went.
fn sweep_stale_sockets(dir: &std::path::Path) -> usize {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("bypass-bench-"))
            .filter(|n| n.ends_with(".sock"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let is_socket = e.file_type().is_ok_and(|t| t.is_socket());
        if is_socket
            && pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            && std::fs::remove_file(e.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

fn socket_path(base: &std::path::Path, i: u32) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(format!("-{i}.sock"));
    PathBuf::from(s)
}

struct BypassListener {
    base: PathBuf,
    next: u32,
    opts: ConnOpts,
}

impl Listener for BypassListener {
    fn addr(&self) -> String {
        format!("memif:{}", self.base.display())
    }

    fn accept(&mut self, _timeout: Duration) -> Result<Box<dyn MsgConn>, ConnError> {
        // The stack is built by the thread that will use the connection (see module docs).
        let path = socket_path(&self.base, self.next);
        self.next += 1;
        Ok(Box::new(BypassConn::new(path, Role::Server, &self.opts)))
    }
}

/// How a [`BypassConn`] builds its stack and connection on the thread that first uses it, and
/// what it leaves to clean up. The memif transport builds a fresh memif link per connection;
/// the DPDK one (`bypass-dpdk`) lends the process's one DPDK queue to the stack.
pub(super) trait Setup: Send {
    /// Builds the stack and the connected socket (blocking at most about `opts.io_timeout`,
    /// at least 10 s for the link and the handshake).
    fn build(&mut self, opts: &ConnOpts) -> Result<(Stack, Socket), ConnError>;
    /// Runs when the connection is dropped, after its stack (if it was built on this thread).
    fn cleanup(&mut self) {}
}

/// memif: connection `i` of a listener is its own memif link on socket `PATH-i.sock`.
/// `role` is the transport's (the listener is the server, whose address the client
/// connects to); the memif role is the same, except in a stream cell, where the receiving
/// end (the listener) takes the memif client role: the client's memory holds the frames, so
/// it receives them in place, and the sender, the memif server, writes them there.
struct MemifSetup {
    path: PathBuf,
    role: Role,
    /// The memif role taken by `build` (the socket file is the memif server's to remove).
    memif_role: Role,
}

impl Setup for MemifSetup {
    fn build(&mut self, opts: &ConnOpts) -> Result<(Stack, Socket), ConnError> {
        self.memif_role = match (opts.stream, self.role) {
            (true, Role::Server) => Role::Client,
            (true, Role::Client) => Role::Server,
            (false, r) => r,
        };
        let backend = Backend::Memif {
            socket: self.path.clone(),
            role: self.memif_role,
            id: 0,
        };
        let setup = setup_timeout(opts);
        let (ip, mac, peer_ip, peer_mac) = match self.role {
            Role::Server => (SERVER_IP, SERVER_MAC, CLIENT_IP, CLIENT_MAC),
            Role::Client => (CLIENT_IP, CLIENT_MAC, SERVER_IP, SERVER_MAC),
        };
        let mut builder = Stack::builder(backend, ip);
        if let Some(cc) = controller_from_env()? {
            builder = builder.controller(cc);
        }
        if opts.stream {
            builder = stream_config(builder, opts.max_msg);
        }
        // Two bench processes over memif: the link is memory shared by the two stacks.
        // A latency benchmark: never sleep between messages (IdlePoll's default would).
        let stack = builder
            .idle_poll(IdlePoll::Spin)
            .omit_checksums(true)
            .mac(mac)
            .static_arp(peer_ip, peer_mac)
            .max_message(MAX_MSG as u64)
            .link_timeout(setup)
            .build()
            .map_err(to_conn_error)?;
        let sock = match self.role {
            Role::Server => stack.listen().accept(setup),
            Role::Client => stack.connect(SocketAddrV4::new(SERVER_IP, DEFAULT_UDP_PORT), setup),
        }
        .map_err(to_conn_error)?;
        Ok((stack, sock))
    }

    fn cleanup(&mut self) {
        if self.memif_role == Role::Server {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// How both ends of a stream cell's memif link are set up, as a user moving messages of
/// `max_msg` bytes one way would: zero-copy receive (the receiving end, the memif client, see
/// [`MemifSetup`], takes each multi-packet message as its packet buffers:
/// [`ConnectionConfig::rx_segments`](bypass::proto::ConnectionConfig::rx_segments)) and, for
/// messages of 64 KiB and more, bulk transfer: 64 KiB frames (a seventh of the packets of the
/// default 9000-byte MTU, as Linux's loopback carries 64 KiB segments) in a 64-descriptor ring
/// (4 MiB in flight per ring, which stays in cache where 1024 descriptors would not), with
/// pool buffers for a receive window of held packets. Small messages keep the default frames:
/// 64 B messages packed into 64 KiB BATCH packets went ~10 % slower. The measurements behind
/// these choices are in bench/results/ ("1 MiB stream").
fn stream_config(b: bypass::socket::StackBuilder, max_msg: usize) -> bypass::socket::StackBuilder {
    let b = b.connection_config(bypass::proto::ConnectionConfig {
        rx_segments: true,
        ..Default::default()
    });
    if max_msg < 64 << 10 {
        return b;
    }
    b.mtu(65000).memif_ring(6).memif_extra_buffers(512)
}

/// How long building a stack may wait for its link and its peer.
pub(super) fn setup_timeout(opts: &ConnOpts) -> Duration {
    opts.io_timeout.max(Duration::from_secs(10))
}

/// One bypass connection: a description until first used, then a live stack on the using
/// thread.
pub struct BypassConn {
    key: u64,
    setup: Box<dyn Setup>,
    opts: ConnOpts,
    started: bool,
    /// The message last received, kept so its bytes can be lent out: a view of the packet
    /// buffer for a single-packet message (no copy, no allocation; `Socket::recv` would
    /// allocate to hand out `Bytes`), the reassembly buffer otherwise.
    last: Option<RecvMsg>,
    /// How messages are sent (`BYPASS_BENCH_SEND`, memif only; DPDK always uses
    /// `send_bytes`: its port copies shared buffers). See [`SendMode`].
    send_mode: SendMode,
    /// `SendMode::SliceFill`'s message, reused.
    scratch: Vec<u8>,
}

/// How the bench's bypass connections send (`BYPASS_BENCH_SEND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendMode {
    /// `bytes` (the default): `Socket::send_bytes` of the bench's payload; the transport
    /// copies it into each packet as it sends it.
    Bytes,
    /// `buf`: `Socket::send_buf`, the payload copied into the chunks with `write_at`; a memif
    /// client transmits the chunks without a copy. Both this and `bytes` copy the payload
    /// once; `send_buf` keeps every packet's slot until the peer's ACK (bench/results/,
    /// "Zero-copy send").
    Buf,
    /// `buf-fill`: an application producing its message in place: `send_buf`, every chunk
    /// filled (memset), sent. No copy.
    BufFill,
    /// `slice-fill`: the same application producing into its own buffer (memset) and
    /// sending it with `Socket::send(&[u8])`: one copy into a `Bytes`, one into packets.
    SliceFill,
}

impl SendMode {
    fn from_env() -> SendMode {
        match std::env::var("BYPASS_BENCH_SEND").as_deref() {
            Ok("buf") => SendMode::Buf,
            Ok("buf-fill") => SendMode::BufFill,
            Ok("slice-fill") => SendMode::SliceFill,
            _ => SendMode::Bytes,
        }
    }
}

impl BypassConn {
    fn new(path: PathBuf, role: Role, opts: &ConnOpts) -> BypassConn {
        let mut c = BypassConn::with_setup(
            Box::new(MemifSetup {
                path,
                role,
                memif_role: role,
            }),
            opts,
        );
        c.send_mode = SendMode::from_env();
        c
    }

    /// A connection whose stack `setup` builds on first use.
    pub(super) fn with_setup(setup: Box<dyn Setup>, opts: &ConnOpts) -> BypassConn {
        BypassConn {
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            setup,
            opts: *opts,
            started: false,
            last: None,
            // DPDK ports copy shared buffers (the driver frees what it is given), so zero-copy
            // send would add a copy there; memif (BypassConn::new) reads the environment.
            send_mode: SendMode::Bytes,
            scratch: Vec::new(),
        }
    }

    /// The next message (waiting up to the receive timeout), after giving back the buffers
    /// of the one kept from the previous receive.
    fn next_msg(&mut self) -> Result<RecvMsg, ConnError> {
        let timeout = self.opts.recv_timeout;
        self.last = None;
        self.with(|s| {
            s.set_timeout(Some(timeout));
            s.recv_msg().map_err(to_conn_error)
        })
    }

    fn start(&mut self) -> Result<(), ConnError> {
        let (stack, sock) = self.setup.build(&self.opts)?;
        if let Some(pool) = stack.memif_pool() {
            super::meta::note_packet_region(pool.region());
        }
        sock.set_timeout(Some(self.opts.io_timeout));
        LIVE.with(|l| {
            l.borrow_mut().push(Live {
                key: self.key,
                sock,
                stack,
            })
        });
        self.started = true;
        Ok(())
    }

    fn with<R>(&mut self, f: impl FnOnce(&Socket) -> Result<R, ConnError>) -> Result<R, ConnError> {
        if !self.started {
            self.start()?;
        }
        let key = self.key;
        LIVE.with(|l| {
            let l = l.borrow();
            match l.iter().find(|c| c.key == key) {
                Some(c) => f(&c.sock),
                None => Err(ConnError::Protocol(
                    "bypass connection used from a thread other than the one that started it",
                )),
            }
        })
    }
}

/// `BYPASS_CC=fixed|swift|cubic|dctcp|timely` picks the congestion controller of the bench's
/// bypass stacks (default: the stack's default). Both processes read it (the peer inherits
/// the environment).
pub(super) fn controller_from_env() -> Result<Option<Arc<dyn ControllerFactory>>, ConnError> {
    use bypass::proto::cc;
    let Ok(name) = std::env::var("BYPASS_CC") else {
        return Ok(None);
    };
    let f: Arc<dyn ControllerFactory> = match name.as_str() {
        "fixed" => Arc::new(cc::FixedWindowFactory { packets: 64 }),
        "swift" => Arc::new(cc::swift::SwiftFactory::software()),
        "cubic" => Arc::new(cc::cubic::CubicFactory::default()),
        "dctcp" => Arc::new(cc::dctcp::DctcpFactory::default()),
        "timely" => Arc::new(cc::timely::TimelyFactory::default()),
        _ => {
            return Err(ConnError::Protocol(
                "BYPASS_CC: fixed, swift, cubic, dctcp or timely",
            ))
        }
    };
    Ok(Some(f))
}

/// A received message's bytes (the bench never posts a receive target). A stream cell's sink
/// takes segments but asks only for the length ([`MsgConn::recv_len`]); should a message of
/// several parts come here, it is joined by one copy first.
fn bytes_of(m: &mut RecvMsg) -> &[u8] {
    if let MsgData::Segments(s) = &m.data {
        if s.parts() > 1 {
            m.data = MsgData::Buffer(s.to_bytes());
        }
    }
    m.as_slice().unwrap_or(&[])
}

pub(super) fn to_conn_error(e: Error) -> ConnError {
    match e {
        Error::TimedOut { .. } => ConnError::TimedOut,
        Error::Closed | Error::ConnectionReset(_) => ConnError::Closed,
        Error::MessageTooLarge { len, max } => ConnError::TooLarge {
            len: len as usize,
            max: max as usize,
        },
        other => ConnError::Io(std::io::Error::other(other.to_string())),
    }
}

impl MsgConn for BypassConn {
    fn prepare(&mut self) -> Result<(), ConnError> {
        self.with(|_| Ok(()))
    }

    fn send_msg(&mut self, msg: &Bytes) -> Result<(), ConnError> {
        match self.send_mode {
            // A reference-count increment: the transport copies the payload into packet
            // buffers as it sends each packet.
            SendMode::Bytes => {
                self.with(|s| s.send_bytes(msg.clone()).map(|_| ()).map_err(to_conn_error))
            }
            // Zero-copy send: the payload is written once, here, into the packet buffers
            // that the port transmits.
            SendMode::Buf | SendMode::BufFill => {
                let fill = self.send_mode == SendMode::BufFill;
                self.with(|s| {
                    let mut b = s.send_buf(msg.len()).map_err(to_conn_error)?;
                    if fill {
                        for c in b.chunks_mut() {
                            c.fill(0x5a);
                        }
                    } else {
                        b.write_at(0, msg).map_err(to_conn_error)?;
                    }
                    b.send().map(|_| ()).map_err(to_conn_error)
                })
            }
            SendMode::SliceFill => {
                let mut scratch = std::mem::take(&mut self.scratch);
                scratch.clear();
                scratch.resize(msg.len(), 0x5a);
                let r = self.with(|s| s.send(&scratch).map(|_| ()).map_err(to_conn_error));
                self.scratch = scratch;
                r
            }
        }
    }

    fn recv_msg(&mut self) -> Result<&[u8], ConnError> {
        let m = self.next_msg()?;
        Ok(bytes_of(self.last.insert(m)))
    }

    fn recv_len(&mut self) -> Result<usize, ConnError> {
        // Dropped here: its buffers go back before the next receive.
        Ok(self.next_msg()?.len as usize)
    }

    fn recv_msg_before(&mut self, deadline: Instant) -> Result<Option<&[u8]>, ConnError> {
        self.last = None;
        loop {
            if let Some(m) = self.with(|s| s.try_recv_msg().map_err(to_conn_error))? {
                return Ok(Some(bytes_of(self.last.insert(m))));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }
}

impl Drop for BypassConn {
    fn drop(&mut self) {
        let key = self.key;
        // Only the thread that started it can reach it; elsewhere this finds nothing (and the
        // thread's own exit drops it).
        let _ = LIVE.try_with(|l| {
            let c = {
                let mut l = l.borrow_mut();
                l.iter()
                    .position(|c| c.key == key)
                    .map(|i| l.swap_remove(i))
            };
            if let Some(c) = c {
                if std::env::var_os("BYPASS_BENCH_STATS").is_some() {
                    let st = c.stack.stats();
                    eprintln!(
                        "bypass bench: connection {key} at its end: {:?}\n  port {:?}\n  net {:?}",
                        c.sock.stats(),
                        st.port,
                        st.net
                    );
                }
                let _ = c.sock.close();
            }
        });
        self.setup.cleanup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_sockets_of_dead_runs_are_swept_and_live_ones_kept() {
        let dir = std::env::temp_dir().join(format!("bypass-sweep-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        // Above the kernel's largest pid (pid_max is at most 2^22): no such process.
        let dead = dir.join("bypass-bench-4194999-0-0.sock");
        let live = dir.join(format!("bypass-bench-{}-0-0.sock", std::process::id()));
        let init = dir.join("bypass-bench-1-3-1.sock");
        let not_a_socket = dir.join("bypass-bench-4194998-0-0.sock");
        for p in [&dead, &live, &init] {
            // Binding leaves the socket file behind when the listener drops, as a killed
            // run does.
            drop(std::os::unix::net::UnixListener::bind(p).unwrap());
        }
        std::fs::write(&not_a_socket, b"x").unwrap();
        assert_eq!(sweep_stale_sockets(&dir), 1);
        assert!(!dead.exists(), "a dead run's socket was kept");
        assert!(
            live.exists() && init.exists(),
            "a live process's socket was removed"
        );
        assert!(
            not_a_socket.exists(),
            "a file that is not a socket was removed"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
