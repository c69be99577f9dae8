//! The socket-like API: [`Stack`], [`Listener`], [`Socket`]: connect / accept / send / recv of
//! whole messages.
//!
//! Contract:
//! - A [`Stack`] is one runtime (one poll loop, one port queue pair, one transport endpoint)
//!   driven by the thread that owns it: run-to-completion, the application thread *is* the
//!   poll loop, which gives the lowest latency. `Stack`, `Listener` and `Socket` are `!Send`;
//!   give each core its own stack.
//! - Every call that waits (`connect`, `accept`, `recv`, `send` under backpressure) busy-polls
//!   the stack until it can proceed or its timeout passes; nothing sleeps in the kernel. The
//!   `try_*` forms never wait: "nothing yet" is `Ok(None)`, not an error.
//! - [`Stack::poll`] runs one iteration; [`Stack::poll_ready`] runs iterations until one of
//!   many sockets has something to read, for one thread serving thousands of connections.
//! - A stack is freed when its `Stack` and all its sockets are dropped; it first keeps polling
//!   for up to 100 ms, until no connection is left, so that its last packets (the
//!   acknowledgement of the peer's close, the reset of a dropped socket) leave before the port
//!   goes. A process may exit right after `recv` reported the peer's close.
//! - Messages are delivered whole and exactly once. Copies and heap allocations per message
//!   (measured by `tests/socket_no_alloc.rs` with a counting allocator, once warmed up):
//!   - `send_bytes(Bytes)`: no copy, no allocation in the stack (the payload is written once,
//!     into packet buffers, by the transport). The stack keeps a clone of the `Bytes` until
//!     the transport took it; cloning a *fresh* `Bytes` made from a `Vec` or `Box` allocates
//!     its shared header once (that is the `bytes` crate), so reuse a `Bytes` (or slices of
//!     one) to send without allocating;
//!   - `send(&[u8])`: one copy into a new `Bytes`, one allocation (made only when the send
//!     queue has room, so waiting under backpressure allocates nothing);
//!   - `send_buf(len)` ([`SendBuf`], zero-copy send): the application writes the message into
//!     packet buffers of the port's pool, one packet's payload each, and the stack copies
//!     nothing on first transmission (a memif client posts the very slots; other ports copy
//!     as they copy any foreign buffer; retransmissions copy); no allocation once warm (the
//!     segment list is reused);
//!   - `recv_msg()`: a single-packet message (up to `max_datagram` minus the transport
//!     header: about 1.4 KiB by default) is a [`PktBytes`](crate::mem::PktBytes) view of the
//!     receive buffer: no copy, no allocation. A multi-packet message is copied once into a
//!     reassembly buffer allocated for it (one allocation per message), or into a target
//!     posted with [`Socket::post_target`] (none: the target comes back in the message and
//!     can be posted again); with `ConnectionConfig::rx_segments` (set through
//!     [`StackBuilder::connection_config`]) it is handed out as its packet buffers instead
//!     (`MsgData::Segments`: no copy, one small allocation for the list);
//!   - `recv() -> Bytes`: as `recv_msg`, plus one small allocation for a single-packet message
//!     (`Bytes::from_owner` boxes the buffer's owner; see `mem`); segments are joined by one
//!     copy into a new buffer.
//! - A message can be received into GPU memory ([`Socket::recv_into_gpu`], or several posted
//!   ahead with [`Socket::post_gpu`] and taken with [`Socket::recv_gpu`]): the GPU's copy engine
//!   copies each segment from its packet buffer to its final offset in device memory, with no
//!   reassembly in host memory (see [`GpuTarget`]). CUDA is loaded at run time
//!   ([`mem::gpu`](crate::mem::gpu)); without it these calls return [`Error::Gpu`].
//!
//! # Example
//!
//! Two stacks, each on its own thread, joined by an in-process port pair
//! ([`pmd::pair`](crate::pmd::pair)); over memif the two would be two processes (see
//! `examples/echo_server.rs` and `examples/echo_client.rs`).
//!
//! ```
//! use std::net::{Ipv4Addr, SocketAddrV4};
//! use std::time::Duration;
//!
//! use bypass::mem::{HugePages, Pool, PoolConfig};
//! use bypass::pmd::pair::pair;
//! use bypass::socket::{Backend, Error, Stack, DEFAULT_UDP_PORT};
//!
//! let pool = Pool::new(&PoolConfig {
//!     hugepages: HugePages::Never,
//!     ..PoolConfig::new("doc-example", 2048, 9216 + 256)
//! })?;
//! let (a, b) = pair(&pool, 256, 9000)?;
//! let server_ip = Ipv4Addr::new(10, 0, 0, 1);
//! let (ready_tx, ready_rx) = std::sync::mpsc::channel();
//!
//! let server = std::thread::spawn(move || -> Result<u32, Error> {
//!     // The stack lives on the thread that polls it.
//!     let stack = Stack::builder(Backend::Port(Box::new(a)), server_ip).build()?;
//!     let listener = stack.listen();
//!     ready_tx.send(()).unwrap();
//!     let sock = listener.accept(Duration::from_secs(10))?;
//!     let mut echoed = 0;
//!     loop {
//!         match sock.recv() {
//!             Ok(msg) => {
//!                 sock.send_bytes(msg)?; // no copy: the received bytes go back out
//!                 echoed += 1;
//!             }
//!             Err(Error::Closed) => return Ok(echoed), // the client closed
//!             Err(e) => return Err(e),
//!         }
//!     }
//! });
//!
//! ready_rx.recv()?;
//! let stack = Stack::builder(Backend::Port(Box::new(b)), Ipv4Addr::new(10, 0, 0, 2)).build()?;
//! let sock = stack.connect(
//!     SocketAddrV4::new(server_ip, DEFAULT_UDP_PORT),
//!     Duration::from_secs(10),
//! )?;
//! for msg in [&b"hello"[..], &[7u8; 100_000][..]] {
//!     sock.send(msg)?;
//!     assert_eq!(sock.recv()?, msg); // delivered whole, however many packets it took
//! }
//! sock.close()?;
//! assert_eq!(server.join().unwrap()?, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod gpu;
pub mod metrics;
mod sendbuf;

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use bytes::Bytes;

use crate::mem::{PktBuf, PoolExhausted};
use crate::pmd::memif::{InterfaceConfig, Memif, MemifConfig, Role};
use crate::pmd::{Link, Port, PortStats};
use crate::proto::cc::swift::{SwiftConfig, SwiftFactory};
use crate::proto::cc::ControllerFactory;
use crate::proto::{
    CloseReason, ConnectionConfig, ConnectionHandle, ConnectionStats, Endpoint, EndpointConfig,
    EndpointStats, Event, Instant, RecvMsg, RecvTarget, SendError, State,
};
use crate::runtime::clock::SystemClock;
use crate::runtime::net::{NetConfig, NetCounters};
use crate::runtime::{Io, Runtime, RuntimeConfig, RuntimeCounters, UdpHandler};

pub use error::Error;
pub use gpu::{GpuMsg, GpuRecvStats, GpuTarget};
pub use metrics::{CaptureError, CaptureLimits, CaptureStatus, Metrics};
pub use sendbuf::SendBuf;

/// The UDP port the transport uses unless told otherwise.
pub const DEFAULT_UDP_PORT: u16 = 7200;

/// Where the stack's frames go.
pub enum Backend {
    /// memif over a UNIX socket (the embedded default: another process on this host).
    Memif {
        /// Control socket path.
        socket: PathBuf,
        /// Our role: one side serves the socket, the other connects.
        role: Role,
        /// Interface id (both sides use the same).
        id: u32,
    },
    /// Any port (an in-process `pmd::pair` end in tests, a DPDK queue pair, a wrapped port).
    Port(Box<dyn Port>),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Memif { socket, role, id } => f
                .debug_struct("Memif")
                .field("socket", socket)
                .field("role", role)
                .field("id", id)
                .finish(),
            Backend::Port(p) => f.debug_tuple("Port").field(&p.info().name).finish(),
        }
    }
}

/// Builds a [`Stack`]. Start with [`Stack::builder`].
#[derive(Debug)]
pub struct StackBuilder {
    backend: Backend,
    ip: Ipv4Addr,
    mac: Option<[u8; 6]>,
    udp_port: u16,
    mtu: u16,
    static_arp: Vec<(Ipv4Addr, [u8; 6])>,
    conn: ConnectionConfig,
    cc: Option<Arc<dyn ControllerFactory>>,
    max_connections: usize,
    pin_core: Option<usize>,
    core_slot: Option<usize>,
    accept: bool,
    link_timeout: Duration,
    seed: Option<u64>,
    metrics: Option<Metrics>,
    #[cfg(feature = "metrics")]
    metrics_addr: Option<SocketAddr>,
    metrics_name: Option<String>,
    omit_checksums: bool,
    memif_ring: Option<u8>,
    memif_extra: Option<u32>,
}

impl StackBuilder {
    /// Leave UDP checksums out between this stack and a peer stack that agrees, when both
    /// ends' links are intact ([`Offloads::intact`](crate::pmd::Offloads::intact): memif, an
    /// in-process pair). It saves a read of every payload on each side. Off by default:
    /// turn it on only where the memif peer is the other stack itself (two processes on one
    /// host). A memif peer that forwards frames on (a vswitch such as VPP in front of a NIC)
    /// would carry them over wires and through switch memory with no end-to-end check.
    pub fn omit_checksums(mut self, on: bool) -> Self {
        self.omit_checksums = on;
        self
    }

    /// Our IPv4 address.
    pub fn ip(mut self, ip: Ipv4Addr) -> Self {
        self.ip = ip;
        self
    }
    /// Our Ethernet address (default: the port's).
    pub fn mac(mut self, mac: [u8; 6]) -> Self {
        self.mac = Some(mac);
        self
    }
    /// The UDP port the transport listens on and sends from (default 7200).
    pub fn udp_port(mut self, port: u16) -> Self {
        self.udp_port = port;
        self
    }
    /// IP MTU (default 9000 on memif: jumbo frames in 9216-byte buffers; the port's MTU
    /// otherwise). memif sizes its buffers for it, up to 65000 (64 KiB frames, as Linux's
    /// loopback has: a seventh of the packets of 9000 for bulk transfers; pair it with a
    /// shorter [`memif_ring`](Self::memif_ring)).
    pub fn mtu(mut self, mtu: u16) -> Self {
        self.mtu = mtu;
        self
    }
    /// memif: descriptors per ring, log2 (1..=14, default 10). Each ring holds that many
    /// buffers of MTU size; with 64 KiB frames a short ring (6: 64 frames, 4 MiB) keeps
    /// the memory the two cores pass between them small enough to stay in cache.
    pub fn memif_ring(mut self, log2: u8) -> Self {
        self.memif_ring = Some(log2);
        self
    }
    /// memif: pool buffers beyond those the rings hold (default 1024), for frames the
    /// application holds: received messages, and with
    /// [`ConnectionConfig::rx_segments`] up to a receive window of packet buffers.
    pub fn memif_extra_buffers(mut self, n: u32) -> Self {
        self.memif_extra = Some(n);
        self
    }
    /// A static ARP entry (no resolution for that address).
    pub fn static_arp(mut self, ip: Ipv4Addr, mac: [u8; 6]) -> Self {
        self.static_arp.push((ip, mac));
        self
    }
    /// Largest message sent or accepted (default 1 GiB).
    pub fn max_message(mut self, bytes: u64) -> Self {
        self.conn.max_message = bytes;
        self
    }
    /// Per-connection transport settings.
    pub fn connection_config(mut self, conn: ConnectionConfig) -> Self {
        self.conn = conn;
        self
    }
    /// Congestion controller for new connections.
    pub fn controller(mut self, cc: Arc<dyn ControllerFactory>) -> Self {
        self.cc = Some(cc);
        self
    }
    /// Most live connections (default 4096).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }
    /// Pin the building thread (the poll loop) to this CPU.
    pub fn pin_core(mut self, cpu: usize) -> Self {
        self.pin_core = Some(cpu);
        self
    }
    /// Claim this `mem::CoreSlot` for per-core buffer caches (default: the first free one).
    pub fn core_slot(mut self, slot: usize) -> Self {
        self.core_slot = Some(slot);
        self
    }
    /// Refuse incoming connections (a client-only stack).
    pub fn no_accept(mut self) -> Self {
        self.accept = false;
        self
    }
    /// How long [`build`](Self::build) waits for the link to come up (default 10 s; the
    /// memif peer must be there by then).
    pub fn link_timeout(mut self, d: Duration) -> Self {
        self.link_timeout = d;
        self
    }
    /// Seed for connection ids (default: from the OS).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Record this stack's counters, connections and loop-gap histogram into `metrics`
    /// (read them with [`Metrics::registry`]; serve them with `Metrics::serve`, feature
    /// `metrics`) and let `metrics` switch packet capture of its port on and off. See
    /// [`metrics`].
    pub fn metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }
    /// As [`metrics`](Self::metrics) with a registry of the stack's own, served on `addr`
    /// (`/metrics`, `/capture`) by an exporter thread the stack owns (port 0: any free port;
    /// see [`Stack::metrics_addr`]). Cargo feature `metrics`.
    #[cfg(feature = "metrics")]
    pub fn metrics_addr(mut self, addr: SocketAddr) -> Self {
        self.metrics_addr = Some(addr);
        self
    }
    /// The name this stack's series carry in label `port` and its capture is addressed by
    /// (default: the port's name). Give stacks of one process distinct names.
    pub fn metrics_name(mut self, name: &str) -> Self {
        self.metrics_name = Some(name.to_owned());
        self
    }

    /// Start the stack: open the backend, wait for its link, build the runtime on this thread.
    pub fn build(self) -> Result<Stack, Error> {
        let (port, memif): (Box<dyn Port>, Option<Memif>) = match self.backend {
            Backend::Memif { socket, role, id } => {
                let mut ic = InterfaceConfig::new(id);
                let mtu = if self.mtu == 0 { 9000 } else { self.mtu };
                ic.buffer_size = (u32::from(mtu) + 14).div_ceil(64) * 64;
                if let Some(r) = self.memif_ring {
                    ic.log2_ring_size = r;
                }
                if let Some(n) = self.memif_extra {
                    ic.extra_buffers = n;
                }
                let mut cfg = MemifConfig::new(&socket, role, id);
                cfg.interfaces = vec![ic];
                let m = Memif::new(cfg).map_err(|e| Error::Backend {
                    what: format!("memif socket {}", socket.display()),
                    why: e.to_string(),
                    fix: "check the socket path's directory exists and is writable; one side \
                          must be Role::Server and the other Role::Client with the same id",
                })?;
                let p = m.port(id, 0).map_err(|e| Error::Backend {
                    what: "memif port".into(),
                    why: e.to_string(),
                    fix: "each interface queue can be opened once per process",
                })?;
                (Box::new(p), Some(m))
            }
            Backend::Port(p) => (p, None),
        };
        let pools: Vec<crate::mem::Pool> = memif.iter().filter_map(|m| m.pool(0)).collect();
        let packet_pool = pools.first().cloned();
        let mut port = port;
        let info = port.info();
        let deadline = StdInstant::now() + self.link_timeout;
        while !port.link().is_up() {
            if StdInstant::now() >= deadline {
                return Err(Error::Backend {
                    what: format!("port {}", info.name),
                    why: format!("link still down after {:?}", self.link_timeout),
                    fix: "start the peer (the other `bypass` process or memif application) \
                          on the same socket with the opposite role, or raise link_timeout",
                });
            }
            std::hint::spin_loop();
            std::thread::yield_now();
        }
        let mtu = if self.mtu == 0 {
            info.mtu.min(9000)
        } else {
            self.mtu.min(info.mtu)
        };
        let mut net = NetConfig::new(self.mac.unwrap_or(info.mac), self.ip);
        net.mtu = mtu;
        net.offloads = info.offloads;
        let mut conn = self.conn;
        // Both ends on intact links (memif, a pair) may leave UDP checksums out, where the
        // application allows it.
        conn.link_intact = info.offloads.intact && self.omit_checksums;
        net.static_arp = self.static_arp;
        let mut rcfg = RuntimeConfig::new(net);
        rcfg.pin_core = self.pin_core;
        // The stack claims its core slot itself (claim_any is atomic; probing first and
        // letting the runtime claim would race with other stacks starting).
        let core = match self.core_slot {
            Some(s) => crate::mem::CoreSlot::claim(s),
            None => crate::mem::CoreSlot::claim_any(),
        }
        .map_err(|e| Error::Backend {
            what: "core slot".into(),
            why: e.to_string(),
            fix: "give each stack its own core slot (StackBuilder::core_slot), one per thread",
        })?;
        // Datagrams fill the MTU (jumbo frames on memif) unless the caller chose a size.
        if conn.max_datagram == ConnectionConfig::default().max_datagram {
            conn.max_datagram = u32::from(mtu) - 28;
        }
        conn.max_datagram = conn.max_datagram.min(u32::from(mtu) - 28);
        let mut ecfg = EndpointConfig {
            accept: self.accept,
            max_connections: self.max_connections,
            conn,
            cookie_key: [os_random(), os_random()],
            ..EndpointConfig::default()
        };
        ecfg.cc = match self.cc {
            Some(cc) => cc,
            None => {
                let speed_mbps = match port.link() {
                    Link::Up { speed_mbps } => speed_mbps,
                    Link::Down => 0,
                };
                Arc::new(SwiftFactory {
                    config: SwiftConfig {
                        line_rate_bps: line_rate_bps(speed_mbps, info.offloads.intact),
                        ..SwiftConfig::software()
                    },
                })
            }
        };
        let max_message = ecfg.conn.max_message;
        let max_send_msgs = ecfg.conn.max_send_msgs;
        let seed = self.seed.unwrap_or_else(os_random);
        let transport = Transport {
            ep: Endpoint::new(ecfg, seed),
            udp_port: self.udp_port,
            spare: None,
            tx_dropped: 0,
            tx_pool_exhausted: 0,
        };
        let port = metrics::CapturePort::new(port);
        let mut rt = Runtime::new(rcfg, port, transport, SystemClock::new()).map_err(|e| {
            Error::Backend {
                what: "runtime".into(),
                why: e.to_string(),
                fix: "choose a CPU that exists (pin_core) and a free core slot",
            }
        })?;
        rt.net_mut().bind(self.udp_port);
        #[cfg(feature = "metrics")]
        let mut exporter = None;
        #[cfg(feature = "metrics")]
        let shared = match (self.metrics, self.metrics_addr) {
            (Some(m), _) => Some(m),
            (None, Some(addr)) => {
                let m = Metrics::new();
                exporter = Some(metrics::start_own(&m, addr).map_err(|e| Error::Backend {
                    what: format!("metrics exporter on {addr}"),
                    why: e.to_string(),
                    fix: "choose a free address for metrics_addr (port 0 picks one)",
                })?);
                Some(m)
            }
            (None, None) => None,
        };
        #[cfg(not(feature = "metrics"))]
        let shared = self.metrics;
        let stack_metrics = shared.map(|m| {
            let name = self.metrics_name.unwrap_or_else(|| info.name.clone());
            metrics::StackMetrics::new(&m, &name, self.max_connections, pools)
        });
        Ok(Stack {
            inner: Rc::new(RefCell::new(Inner {
                rt,
                metrics: stack_metrics,
                #[cfg(feature = "metrics")]
                _exporter: exporter,
                _memif: memif,
                packet_pool,
                max_message,
                max_send_msgs,
                rest_deferred: false,
                _core: core,
            })),
        })
    }
}

/// Line rate the default controller paces at most at (Swift also sizes its bursts from it):
/// the port's speed when it reports one; for a memory link (memif, a pair: intact, no speed)
/// [`MEMORY_LINK_BPS`]; otherwise Swift's default (100 Gb/s).
fn line_rate_bps(speed_mbps: u32, intact: bool) -> u64 {
    if speed_mbps > 0 {
        u64::from(speed_mbps) * 1_000_000
    } else if intact {
        MEMORY_LINK_BPS
    } else {
        SwiftConfig::default().line_rate_bps
    }
}

/// The pacing cap on a memory link: it has no wire, and one core's copies stay below this
/// (~35 GB/s = 280 Gb/s in cache here); Swift's 100 Gb/s default held a 1 MiB stream over
/// memif at 98 Gb/s (bench/results/, "1 MiB stream").
const MEMORY_LINK_BPS: u64 = 400_000_000_000;

fn os_random() -> u64 {
    let mut b = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        if f.read_exact(&mut b).is_ok() {
            return u64::from_le_bytes(b);
        }
    }
    // Fallback: time and address entropy (ids only need to be unpredictable to off-path
    // attackers; the cookie key is what matters, and urandom exists on every Linux).
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (&b as *const _ as u64).rotate_left(32)
}

/// The transport plugged into the runtime: a proto endpoint on one UDP port.
struct Transport {
    ep: Endpoint,
    udp_port: u16,
    spare: Option<PktBuf>,
    tx_dropped: u64,
    tx_pool_exhausted: u64,
}

impl UdpHandler for Transport {
    #[inline]
    fn on_datagram(&mut self, io: &mut Io<'_>, src: SocketAddrV4, _dst: u16, payload: PktBuf) {
        self.ep.handle_rx(
            Instant::from_nanos(io.now()),
            SocketAddr::V4(src),
            false,
            io.rx_checksummed(),
            payload,
        );
    }

    /// Send what is ready; the deadlines come after the flush ([`after_flush`]), off the
    /// path of a frame the application just queued.
    #[inline]
    fn on_poll(&mut self, io: &mut Io<'_>) {
        // After this iteration's datagrams: the next ones tell whether the loop stalled.
        self.ep.note_poll(Instant::from_nanos(io.now()));
        self.transmit(io);
    }

    /// The endpoint's deadlines (recomputed for the connections touched this iteration) and
    /// the timeouts due; what they send goes out in this iteration.
    #[inline]
    fn after_flush(&mut self, io: &mut Io<'_>) {
        let now = Instant::from_nanos(io.now());
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
            self.transmit(io);
        }
    }
}

impl Transport {
    /// Queue the endpoint's datagrams in the runtime's transmit queue.
    #[inline]
    fn transmit(&mut self, io: &mut Io<'_>) {
        let now = Instant::from_nanos(io.now());
        // (Nothing ready: no buffer to prepare. Checked again after each datagram, so the
        // last one goes to the flush without a call that finds nothing.)
        while self.ep.has_transmit() {
            // Leave room in the runtime's transmit queue: a datagram the endpoint produced
            // and we could not queue would be a self-inflicted loss.
            if io.net().tx_space() < 2 {
                break;
            }
            let mut buf = match self.spare.take() {
                Some(b) => b,
                None => match io.alloc_tx() {
                    Ok(b) => b,
                    Err(PoolExhausted) => {
                        self.tx_pool_exhausted += 1;
                        break;
                    }
                },
            };
            match self
                .ep
                .poll_transmit_ex(now, &mut buf)
                .map(|t| (t.dst, t.checksum))
            {
                Some((SocketAddr::V4(dst), checksum)) => {
                    if io
                        .send_udp_checksum(self.udp_port, dst, buf, checksum)
                        .is_err()
                    {
                        self.tx_dropped += 1;
                    }
                }
                Some((SocketAddr::V6(_), _)) => {
                    self.tx_dropped += 1;
                    buf.reset();
                    self.spare = Some(buf);
                }
                None => {
                    buf.reset();
                    self.spare = Some(buf);
                    break;
                }
            }
        }
    }
}

struct Inner {
    rt: Runtime<metrics::CapturePort, Transport, SystemClock>,
    metrics: Option<metrics::StackMetrics>,
    #[cfg(feature = "metrics")]
    _exporter: Option<crate::telemetry::Exporter>,
    _memif: Option<Memif>,
    /// The memif interface's packet-buffer pool (None over a [`Backend::Port`]).
    packet_pool: Option<crate::mem::Pool>,
    max_message: u64,
    /// `ConnectionConfig::max_send_msgs`: a connection's send queue holds this many messages.
    max_send_msgs: usize,
    /// The last iteration stopped after its receive half (`Socket::try_recv_msg` handed out
    /// a message at once); the next `try_recv_msg` runs that rest first, any other poll
    /// does a whole iteration.
    rest_deferred: bool,
    // Declared after `rt`: released only after the runtime (and its buffers) are gone.
    _core: crate::mem::CoreSlot,
}

impl Inner {
    /// The runtime's clock read now, never behind the loop's own `now`.
    #[inline]
    fn fresh_now(&self) -> u64 {
        use crate::runtime::clock::Clock;
        self.rt.clock().now_ns().max(self.rt.now())
    }

    #[inline]
    fn poll(&mut self) -> bool {
        self.poll_result().busy()
    }

    #[inline]
    fn poll_result(&mut self) -> crate::runtime::PollResult {
        let mut r = self.rt.poll_rx();
        self.finish_poll(&mut r);
        r
    }

    /// A message was just queued: if the last iteration stopped after its receive half
    /// (`Socket::try_recv_msg` handed out a message before the rest), finish that iteration
    /// now, at a fresh time, so the message leaves at once. This is the answer to the message
    /// just received (request and response): between its queueing and its transmission there
    /// is then no application code and no receive attempt.
    #[inline]
    fn finish_deferred(&mut self) {
        if self.rest_deferred {
            let mut d = crate::runtime::PollResult {
                now: self.rt.tick(),
                ..Default::default()
            };
            self.finish_poll(&mut d);
        }
    }

    /// The rest of an iteration begun with `rt.poll_rx()`.
    #[inline]
    fn finish_poll(&mut self, r: &mut crate::runtime::PollResult) {
        self.rest_deferred = false;
        self.rt.poll_rest(r);
        if let Some(m) = &mut self.metrics {
            m.after_poll(&mut self.rt);
        }
    }
    fn ep(&mut self) -> &mut Endpoint {
        &mut self.rt.handler_mut().ep
    }
}

/// How long a dropped stack keeps polling to let its last packets out (see `Drop for Inner`).
const LINGER: Duration = Duration::from_millis(100);

impl Drop for Inner {
    /// Lingers: polls until no connection is left (closes confirmed, drains over, resets
    /// sent) and the port has taken every queued frame, or [`LINGER`] passes, so the last
    /// acknowledgement or reset leaves before the port goes (a memif peer that is slow to
    /// post receive buffers leaves frames queued here after their connection was freed).
    /// Without it a process that exits right after `recv` reported the peer's close would
    /// take the acknowledgement of that close with it, and the peer's `close` would end in
    /// `ConnectionLost` instead of `Ok`.
    fn drop(&mut self) {
        let end = StdInstant::now() + LINGER;
        loop {
            let r = self.poll_result();
            let idle = !r.busy() && r.tx_pending == 0;
            if (idle && self.ep().connection_count() == 0) || StdInstant::now() >= end {
                return;
            }
        }
    }
}

/// A transport stack on one core. See the [module docs](self).
///
/// Over memif, one process serves the control socket and the other connects; both name the
/// other's address with a static ARP entry (or let ARP resolve it):
///
/// ```no_run
/// use std::net::{Ipv4Addr, SocketAddrV4};
/// use std::time::Duration;
///
/// use bypass::pmd::memif::Role;
/// use bypass::socket::{Backend, Stack, DEFAULT_UDP_PORT};
///
/// let stack = Stack::builder(
///     Backend::Memif { socket: "/tmp/app.sock".into(), role: Role::Client, id: 0 },
///     Ipv4Addr::new(10, 0, 0, 2),
/// )
/// .static_arp(Ipv4Addr::new(10, 0, 0, 1), [0x02, 0, 0, 0, 0, 1])
/// .pin_core(2) // this thread becomes the poll loop of core 2
/// .build()?;
/// let sock = stack.connect(
///     SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), DEFAULT_UDP_PORT),
///     Duration::from_secs(5),
/// )?;
/// sock.send(b"request")?;
/// let reply = sock.recv()?;
/// # Ok::<(), bypass::socket::Error>(())
/// ```
pub struct Stack {
    inner: Rc<RefCell<Inner>>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack").finish_non_exhaustive()
    }
}

/// Counters of a whole stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackStats {
    /// The port's counters.
    pub port: PortStats,
    /// Ethernet / ARP / IPv4 / UDP counters.
    pub net: NetCounters,
    /// Poll-loop counters.
    pub runtime: RuntimeCounters,
    /// Transport endpoint counters.
    pub endpoint: EndpointStats,
    /// Datagrams the transport produced that the runtime could not queue.
    pub tx_dropped: u64,
}

impl Stack {
    /// The poll loop's time (ns, read once per iteration from the runtime's clock: no
    /// system call), for timeouts of blocking calls.
    #[inline]
    fn now_ns(&self) -> u64 {
        self.inner.borrow().rt.now()
    }

    /// The clock read now (not the last iteration's time, which is stale by however long the
    /// application ran since its last poll): where a blocking call's timeout starts.
    #[inline]
    fn start_ns(&self) -> u64 {
        self.inner.borrow().fresh_now()
    }

    #[inline]
    fn since(&self, start: u64) -> Duration {
        Duration::from_nanos(self.now_ns().saturating_sub(start))
    }
    /// A builder for a stack over `backend`, with our address `ip`.
    pub fn builder(backend: Backend, ip: Ipv4Addr) -> StackBuilder {
        StackBuilder {
            backend,
            ip,
            mac: None,
            udp_port: DEFAULT_UDP_PORT,
            mtu: 0,
            static_arp: Vec::new(),
            conn: ConnectionConfig {
                max_message: 1 << 30,
                ..ConnectionConfig::default()
            },
            cc: None,
            max_connections: 4096,
            pin_core: None,
            core_slot: None,
            accept: true,
            link_timeout: Duration::from_secs(10),
            seed: None,
            metrics: None,
            #[cfg(feature = "metrics")]
            metrics_addr: None,
            metrics_name: None,
            omit_checksums: false,
            memif_ring: None,
            memif_extra: None,
        }
    }

    /// One iteration of the poll loop. True if it did anything.
    #[inline]
    pub fn poll(&self) -> bool {
        self.inner.borrow_mut().poll()
    }

    /// Poll for `d`.
    pub fn poll_for(&self, d: Duration) {
        let start = self.start_ns();
        while self.since(start) < d {
            self.poll();
        }
    }

    /// Connect to the stack at `addr` (its IP and UDP port), waiting up to `timeout` for the
    /// handshake. The handshake is retried for all of `timeout`: a peer that starts a little
    /// after us (two processes launched together) is reached, even when the transport's own
    /// handshake attempts (`ConnectionConfig::handshake_attempts`, about half a second by
    /// default) run out first; each new attempt is a fresh connection.
    pub fn connect(&self, addr: SocketAddrV4, timeout: Duration) -> Result<Socket, Error> {
        let start = self.start_ns();
        loop {
            let h = {
                let mut i = self.inner.borrow_mut();
                let now = Instant::from_nanos(i.rt.now());
                i.ep()
                    .connect(now, SocketAddr::V4(addr))
                    .map_err(|_| Error::TooManyConnections)?
            };
            let sock = Socket::new(self.inner.clone(), h);
            loop {
                self.poll();
                match sock.pump_events() {
                    Some(SockState::Open) => return Ok(sock),
                    // Nobody answered this connection's handshakes: try again with a new one
                    // while the caller's time lasts.
                    Some(SockState::Closed(CloseReason::HandshakeTimeout))
                        if self.since(start) < timeout =>
                    {
                        break
                    }
                    Some(SockState::Closed(CloseReason::HandshakeTimeout)) => {
                        return Err(Error::PeerUnreachable {
                            addr,
                            after: self.since(start),
                        })
                    }
                    Some(SockState::Closed(r)) => return Err(Error::from_close(r)),
                    _ => {}
                }
                if self.since(start) >= timeout {
                    sock.abort();
                    return Err(Error::PeerUnreachable {
                        addr,
                        after: timeout,
                    });
                }
            }
        }
    }

    /// Accept incoming connections.
    pub fn listen(&self) -> Listener {
        Listener {
            inner: self.inner.clone(),
        }
    }

    /// Run the loop until one of `socks` has a message or event to take, or `timeout`
    /// passes; returns the indices of the ready sockets (into `ready`, cleared first).
    ///
    /// One thread serving many connections:
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use bypass::socket::{Socket, Stack};
    /// # fn serve(stack: &Stack, socks: Vec<Socket>) -> Result<(), bypass::socket::Error> {
    /// let mut ready = Vec::new();
    /// loop {
    ///     let refs: Vec<&Socket> = socks.iter().collect();
    ///     stack.poll_ready(&refs, &mut ready, Duration::from_millis(10));
    ///     for &k in &ready {
    ///         if let Some(msg) = socks[k].try_recv()? {
    ///             socks[k].send_bytes(msg)?;
    ///         }
    ///     }
    /// }
    /// # }
    /// ```
    pub fn poll_ready(&self, socks: &[&Socket], ready: &mut Vec<usize>, timeout: Duration) {
        ready.clear();
        let start = self.start_ns();
        loop {
            self.poll();
            for (k, s) in socks.iter().enumerate() {
                if s.readable() {
                    ready.push(k);
                }
            }
            if !ready.is_empty() || self.since(start) >= timeout {
                return;
            }
        }
    }

    /// Counters.
    pub fn stats(&self) -> StackStats {
        let mut i = self.inner.borrow_mut();
        let tx_dropped = i.rt.handler().tx_dropped;
        StackStats {
            port: i.rt.port().stats(),
            net: *i.rt.net_counters(),
            runtime: *i.rt.counters(),
            endpoint: i.ep().stats(),
            tx_dropped,
        }
    }

    /// The packet-buffer pool of the stack's memif interface (None over a port given as
    /// [`Backend::Port`], whose driver owns its buffers): its [`Pool::region`](crate::mem::Pool::region)
    /// says whether the packets live on hugepages or on the 4 KiB fallback.
    pub fn memif_pool(&self) -> Option<crate::mem::Pool> {
        self.inner.borrow().packet_pool.clone()
    }

    /// Whether the port's link is up (memif: the peer process is there).
    pub fn link_up(&self) -> bool {
        self.inner.borrow_mut().rt.port_mut().link().is_up()
    }

    /// The telemetry this stack records into (None: built without metrics).
    pub fn metrics(&self) -> Option<Metrics> {
        self.inner
            .borrow()
            .metrics
            .as_ref()
            .map(|m| m.metrics().clone())
    }

    /// Where the stack's own exporter listens ([`StackBuilder::metrics_addr`]). Cargo feature
    /// `metrics`.
    #[cfg(feature = "metrics")]
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.inner
            .borrow()
            ._exporter
            .as_ref()
            .map(|e| e.local_addr())
    }

    /// Live connections.
    pub fn connections(&self) -> usize {
        self.inner.borrow_mut().ep().connection_count()
    }
}

/// Accepts connections; see [`Stack::listen`].
pub struct Listener {
    inner: Rc<RefCell<Inner>>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}

impl Listener {
    /// The poll loop's time (ns, read once per iteration from the runtime's clock: no
    /// system call), for timeouts of blocking calls.
    #[inline]
    fn now_ns(&self) -> u64 {
        self.inner.borrow().rt.now()
    }

    /// The clock read now (not the last iteration's time, which is stale by however long the
    /// application ran since its last poll): where a blocking call's timeout starts.
    #[inline]
    fn start_ns(&self) -> u64 {
        self.inner.borrow().fresh_now()
    }

    #[inline]
    fn since(&self, start: u64) -> Duration {
        Duration::from_nanos(self.now_ns().saturating_sub(start))
    }
    /// The next accepted connection, if one is ready (polls once).
    pub fn try_accept(&self) -> Option<Socket> {
        let mut i = self.inner.borrow_mut();
        i.poll();
        let h = i.ep().poll_incoming()?;
        drop(i);
        let s = Socket::new(self.inner.clone(), h);
        s.pump_events();
        Some(s)
    }

    /// Wait up to `timeout` for a connection.
    pub fn accept(&self, timeout: Duration) -> Result<Socket, Error> {
        let start = self.start_ns();
        loop {
            if let Some(s) = self.try_accept() {
                return Ok(s);
            }
            if self.since(start) >= timeout {
                return Err(Error::TimedOut { after: timeout });
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SockState {
    Connecting,
    Open,
    Closed(CloseReason),
}

struct SockInner {
    state: SockState,
    acked: u64,
    last_sent: Option<u64>,
    timeout: Option<Duration>,
    /// An empty segment list kept for the next [`Socket::send_buf`] (its capacity reused).
    spare_segs: Vec<PktBuf>,
    /// Loop time each message was queued, by message id modulo the message window (more
    /// messages than that are never outstanding), for the completion-time histogram.
    sent_at: Box<[u64]>,
}

/// One connection: whole messages in both directions. See the [module docs](self).
///
/// Errors tell what happened to the connection: [`Error::Closed`] after a graceful close
/// (ours or the peer's), [`Error::ConnectionReset`] when either side reset it (a dropped
/// `Socket` resets), [`Error::ConnectionLost`] when the peer stopped answering (it died, or
/// the path did) for the connection's idle timeout
/// ([`ConnectionConfig::idle_timeout`], set with [`StackBuilder::connection_config`]).
pub struct Socket {
    inner: Rc<RefCell<Inner>>,
    h: ConnectionHandle,
    s: RefCell<SockInner>,
    remote: SocketAddr,
    gpu: RefCell<gpu::GpuState>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("remote", &self.remote)
            .field("state", &self.s.borrow().state)
            .finish()
    }
}

impl Socket {
    /// The poll loop's time (ns, read once per iteration from the runtime's clock: no
    /// system call), for timeouts of blocking calls.
    #[inline]
    fn now_ns(&self) -> u64 {
        self.inner.borrow().rt.now()
    }

    /// The clock read now (not the last iteration's time, which is stale by however long the
    /// application ran since its last poll): where a blocking call's timeout starts.
    #[inline]
    fn start_ns(&self) -> u64 {
        self.inner.borrow().fresh_now()
    }

    #[inline]
    fn since(&self, start: u64) -> Duration {
        Duration::from_nanos(self.now_ns().saturating_sub(start))
    }
    fn new(inner: Rc<RefCell<Inner>>, h: ConnectionHandle) -> Socket {
        let remote = inner
            .borrow_mut()
            .ep()
            .connection(h)
            .map(|c| c.remote())
            .unwrap_or(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)));
        Socket {
            inner,
            h,
            s: RefCell::new(SockInner {
                state: SockState::Connecting,
                acked: 0,
                last_sent: None,
                spare_segs: Vec::new(),
                timeout: Some(Duration::from_secs(10)),
                sent_at: vec![0; crate::proto::MSG_WINDOW as usize].into_boxed_slice(),
            }),
            remote,
            gpu: RefCell::default(),
        }
    }

    /// Take the connection's events; returns the state if it changed.
    fn pump_events(&self) -> Option<SockState> {
        let mut i = self.inner.borrow_mut();
        let now = i.rt.now();
        let Inner { rt, metrics, .. } = &mut *i;
        let mut s = self.s.borrow_mut();
        let before = s.state;
        let ep = &mut rt.handler_mut().ep;
        let Some(c) = ep.connection_ref(self.h) else {
            if !matches!(s.state, SockState::Closed(_)) {
                s.state = SockState::Closed(CloseReason::LocalReset(0));
            }
            return (s.state != before).then_some(s.state);
        };
        if s.state == SockState::Connecting && c.state() == State::Established {
            s.state = SockState::Open;
        }
        // Nothing to take (the common case on every spin of a blocking call): looked at
        // without rescheduling the connection. Taking events may let it be freed, so that
        // goes through `connection`, which does.
        if !c.has_event() {
            return (s.state != before).then_some(s.state);
        }
        let Some(c) = ep.connection(self.h) else {
            return (s.state != before).then_some(s.state);
        };
        while let Some(ev) = c.poll_event() {
            match ev {
                Event::Connected => s.state = SockState::Open,
                Event::Acked { msg_id } => {
                    s.acked += 1;
                    if let Some(m) = metrics.as_ref() {
                        let sent = s.sent_at[(msg_id % crate::proto::MSG_WINDOW) as usize];
                        m.record_completion(now.saturating_sub(sent));
                    }
                }
                Event::Closed(r) => s.state = SockState::Closed(r),
            }
        }
        (s.state != before).then_some(s.state)
    }

    fn readable(&self) -> bool {
        self.pump_events();
        if matches!(self.s.borrow().state, SockState::Closed(_)) {
            return true;
        }
        let mut i = self.inner.borrow_mut();
        i.ep().connection_ref(self.h).is_some_and(|c| c.has_recv())
    }

    fn abort(&self) {
        let mut i = self.inner.borrow_mut();
        let now = Instant::from_nanos(i.rt.now());
        if let Some(c) = i.ep().connection(self.h) {
            c.reset(now, 0);
        }
    }

    /// Message `id` was queued at `now`: note it (for its completion time) and finish an
    /// iteration left half done, so it leaves at once ([`Inner::finish_deferred`]).
    #[inline]
    fn sent(&self, i: &mut Inner, id: u64, now: u64) {
        {
            let mut st = self.s.borrow_mut();
            st.last_sent = Some(id);
            st.sent_at[(id % crate::proto::MSG_WINDOW) as usize] = now;
        }
        i.finish_deferred();
    }

    fn closed_error(&self) -> Option<Error> {
        match self.s.borrow().state {
            SockState::Closed(r) => Some(Error::from_close(r)),
            _ => None,
        }
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.remote
    }

    /// Timeout of blocking `send`/`recv` (None waits forever; default 10 s).
    pub fn set_timeout(&self, t: Option<Duration>) {
        self.s.borrow_mut().timeout = t;
    }

    /// Queue `msg` (a zero-copy hand-off), waiting while the send queue is full. Returns the
    /// message id.
    pub fn send_bytes(&self, msg: Bytes) -> Result<u64, Error> {
        let len = msg.len() as u64;
        let max = self.inner.borrow().max_message;
        if len > max {
            return Err(Error::MessageTooLarge { len, max });
        }
        let timeout = self.s.borrow().timeout;
        let start = self.start_ns();
        let mut msg = Some(msg);
        loop {
            match self.try_send_inner(&mut msg) {
                Ok(Some(id)) => return Ok(id),
                Ok(None) => {}
                Err(e) => return Err(e),
            }
            if timeout.is_some_and(|t| self.since(start) >= t) {
                return Err(Error::TimedOut {
                    after: timeout.unwrap_or_default(),
                });
            }
            self.inner.borrow_mut().poll();
        }
    }

    /// Queue a copy of `msg`, waiting while the send queue is full.
    pub fn send(&self, msg: &[u8]) -> Result<u64, Error> {
        let max = self.inner.borrow().max_message;
        if msg.len() as u64 > max {
            return Err(Error::MessageTooLarge {
                len: msg.len() as u64,
                max,
            });
        }
        let timeout = self.s.borrow().timeout;
        let start = StdInstant::now();
        loop {
            if let Some(id) = self.try_send_copy(msg)? {
                return Ok(id);
            }
            if timeout.is_some_and(|t| start.elapsed() >= t) {
                return Err(Error::TimedOut {
                    after: timeout.unwrap_or_default(),
                });
            }
            self.inner.borrow_mut().poll();
        }
    }

    /// One attempt of [`send`](Self::send). The copy is made only when the send queue has
    /// room (waiting under backpressure allocates nothing), and it is moved into the
    /// transport: no `clone` to keep in case of `WouldBlock`, because a clone of a fresh
    /// `Bytes` allocates a second time (its shared header). If the transport refuses anyway,
    /// the copy is dropped and the next attempt copies again from `msg`.
    fn try_send_copy(&self, msg: &[u8]) -> Result<Option<u64>, Error> {
        self.pump_events();
        if let Some(e) = self.closed_error() {
            return Err(e);
        }
        let mut i = self.inner.borrow_mut();
        let (max, limit) = (i.max_message, i.max_send_msgs);
        let now = i.rt.now();
        let Some(c) = i.ep().connection(self.h) else {
            return Err(Error::Closed);
        };
        if c.send_queue_len() >= limit {
            return Ok(None);
        }
        match c.send(Bytes::copy_from_slice(msg)) {
            Ok(id) => {
                self.sent(&mut i, id, now);
                Ok(Some(id))
            }
            Err(SendError::WouldBlock) => Ok(None),
            Err(SendError::TooLarge) => Err(Error::MessageTooLarge {
                len: msg.len() as u64,
                max,
            }),
            Err(SendError::Closed) => Err(Error::Closed),
            Err(SendError::BadSegments) => Err(Error::SendBuf("segments of unequal length")),
        }
    }

    /// Queue `msg` if the send queue has room; `Ok(None)` (and `msg` untouched in its
    /// `Option`) if not.
    pub fn try_send(&self, msg: &mut Option<Bytes>) -> Result<Option<u64>, Error> {
        self.try_send_inner(msg)
    }

    fn try_send_inner(&self, msg: &mut Option<Bytes>) -> Result<Option<u64>, Error> {
        self.pump_events();
        if let Some(e) = self.closed_error() {
            return Err(e);
        }
        let Some(m) = msg.take() else { return Ok(None) };
        let mut i = self.inner.borrow_mut();
        let max = i.max_message;
        let now = i.rt.now();
        let Some(c) = i.ep().connection(self.h) else {
            return Err(Error::Closed);
        };
        // Keep a handle on the bytes: the transport takes them only on success.
        match c.send(m.clone()) {
            Ok(id) => {
                self.sent(&mut i, id, now);
                Ok(Some(id))
            }
            Err(SendError::WouldBlock) => {
                *msg = Some(m);
                Ok(None)
            }
            Err(SendError::TooLarge) => Err(Error::MessageTooLarge {
                len: m.len() as u64,
                max,
            }),
            Err(SendError::Closed) => Err(Error::Closed),
            Err(SendError::BadSegments) => Err(Error::SendBuf("segments of unequal length")),
        }
    }

    /// The next whole message, if one is ready (polls once when none is waiting). No copy
    /// for a single-packet message.
    pub fn try_recv_msg(&self) -> Result<Option<RecvMsg>, Error> {
        let mut i = self.inner.borrow_mut();
        // Deliver what is already here before polling for more: polling first would take in
        // a burst per message handed out, and the backlog would grow until the receive
        // window refused packets (which the peer then has to retransmit).
        // (Checked without rescheduling the connection: an empty check changes nothing.)
        if i.ep().connection_ref(self.h).is_some_and(|c| c.has_recv()) {
            if let Some(m) = i.ep().connection(self.h).and_then(|c| c.poll_recv()) {
                return Ok(Some(m));
            }
        }
        // The previous call returned a message before the rest of its iteration (below):
        // that rest runs first, at a fresh time, so what the application queued since (its
        // answer) leaves before anything else is done; if the receive that follows brings
        // nothing, this call's iteration is complete without a second rest.
        let resumed = i.rest_deferred;
        i.finish_deferred();
        // Receive. A message for us goes back to the caller at once: the rest of the
        // iteration (timers, the connection's deadlines, transmissions) runs at the start of
        // its next call, off the path from the message's arrival to the answer the caller is
        // about to send (and that rest covers this message's and the answer's bookkeeping
        // together). Only when the connection owes nothing (no ACK due: a lone request or
        // response, not a burst of a stream, whose ACKs and credit must not wait for the
        // application).
        let mut r = i.rt.poll_rx();
        if r.rx > 0
            && i.ep()
                .connection_ref(self.h)
                .is_some_and(|c| c.has_recv() && !c.may_transmit())
        {
            if let Some(c) = i.ep().connection(self.h) {
                if let Some(m) = c.poll_recv() {
                    if c.may_transmit() {
                        // Taking it opened the window enough for an update: send it now.
                        i.finish_poll(&mut r);
                    } else {
                        i.rest_deferred = true;
                    }
                    return Ok(Some(m));
                }
            }
        }
        if !(resumed && r.rx == 0) {
            i.finish_poll(&mut r);
        }
        if i.ep().connection_ref(self.h).is_some_and(|c| c.has_recv()) {
            if let Some(m) = i.ep().connection(self.h).and_then(|c| c.poll_recv()) {
                return Ok(Some(m));
            }
        }
        drop(i);
        self.pump_events();
        match self.closed_error() {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// Wait for the next whole message.
    ///
    /// The zero-copy, allocation-free way to receive (see the [module docs](self)):
    ///
    /// ```no_run
    /// # fn f(sock: &bypass::socket::Socket) -> Result<(), bypass::socket::Error> {
    /// use bypass::proto::MsgData;
    ///
    /// let msg = sock.recv_msg()?;
    /// let bytes: &[u8] = match &msg.data {
    ///     MsgData::Packet(p) => p,  // one packet: a view of the receive buffer
    ///     MsgData::Buffer(b) => b,  // several packets, reassembled
    ///     MsgData::Segments(s) => {
    ///         // several packets, as their buffers (ConnectionConfig::rx_segments)
    ///         for part in s.iter() {
    ///             let _ = part; // hand each part on in order, no copy
    ///         }
    ///         &[]
    ///     }
    ///     MsgData::Target(_) => &[], // written into a target posted with post_target
    /// };
    /// println!("message {} of {} bytes", msg.id, msg.len);
    /// // Dropping `msg` gives the packet buffer back to the pool.
    /// # Ok(()) }
    /// ```
    pub fn recv_msg(&self) -> Result<RecvMsg, Error> {
        let timeout = self.s.borrow().timeout;
        let start = self.start_ns();
        loop {
            if let Some(m) = self.try_recv_msg()? {
                return Ok(m);
            }
            if let Some(t) = timeout {
                if self.since(start) >= t {
                    return Err(Error::TimedOut { after: t });
                }
            }
        }
    }

    /// Wait for the next whole message, as `Bytes` (no copy; messages written into a
    /// posted target are returned by [`recv_msg`](Self::recv_msg) only). A message
    /// delivered as packet buffers (`ConnectionConfig::rx_segments`) is copied into one
    /// `Bytes` here: use `recv_msg` to read its parts in place.
    pub fn recv(&self) -> Result<Bytes, Error> {
        self.recv_msg()?.into_bytes().ok_or(Error::TargetMessage)
    }

    /// `try_recv_msg` as `Bytes`.
    pub fn try_recv(&self) -> Result<Option<Bytes>, Error> {
        self.try_recv_msg()?
            .map(|m| m.into_bytes().ok_or(Error::TargetMessage))
            .transpose()
    }

    /// Post a destination for the next multi-packet message that fits it (host or device
    /// memory); it comes back in [`RecvMsg::data`] as `MsgData::Target`.
    pub fn post_target(&self, t: Box<dyn RecvTarget>) -> Result<(), Error> {
        let mut i = self.inner.borrow_mut();
        match i.ep().connection(self.h) {
            Some(c) => c.post_target(t).map_err(|_| Error::TooManyTargets),
            None => Err(Error::Closed),
        }
    }

    /// Messages the peer acknowledged completely so far.
    pub fn acked(&self) -> u64 {
        self.pump_events();
        self.s.borrow().acked
    }

    /// Wait until every message sent so far is acknowledged.
    pub fn flush(&self) -> Result<(), Error> {
        let timeout = self.s.borrow().timeout;
        let start = self.start_ns();
        loop {
            self.inner.borrow_mut().poll();
            self.pump_events();
            if let Some(e) = self.closed_error() {
                return Err(e);
            }
            let done = {
                let mut i = self.inner.borrow_mut();
                i.ep()
                    .connection(self.h)
                    .is_none_or(|c| c.send_queue_len() == 0)
            };
            if done {
                return Ok(());
            }
            if let Some(t) = timeout {
                if self.since(start) >= t {
                    return Err(Error::TimedOut { after: t });
                }
            }
        }
    }

    /// Transport statistics of this connection (TCP_INFO-like).
    pub fn stats(&self) -> Option<ConnectionStats> {
        let mut i = self.inner.borrow_mut();
        i.ep().connection_ref(self.h).map(|c| c.stats())
    }

    /// Close gracefully: queued messages are delivered first. Waits up to the socket's
    /// timeout for the peer's confirmation.
    ///
    /// `close` takes the socket, so nothing can be sent on it afterwards:
    ///
    /// ```compile_fail
    /// # fn f(sock: bypass::socket::Socket) -> Result<(), bypass::socket::Error> {
    /// sock.close()?;
    /// sock.send(b"too late")?; // error[E0382]: borrow of moved value: `sock`
    /// # Ok(()) }
    /// ```
    ///
    /// To close but keep the `Socket` (for its [`stats`](Self::stats), or in a structure that
    /// outlives the connection), use [`shutdown`](Self::shutdown).
    pub fn close(self) -> Result<(), Error> {
        {
            let mut i = self.inner.borrow_mut();
            let now = Instant::from_nanos(i.rt.now());
            if let Some(c) = i.ep().connection(self.h) {
                c.close(now, 0);
            }
        }
        let timeout = self.s.borrow().timeout.unwrap_or(Duration::from_secs(10));
        let start = self.start_ns();
        loop {
            self.inner.borrow_mut().poll();
            self.pump_events();
            match self.s.borrow().state {
                SockState::Closed(CloseReason::LocalClose(_) | CloseReason::PeerClose(_)) => {
                    return Ok(())
                }
                SockState::Closed(r) => return Err(Error::from_close(r)),
                _ => {}
            }
            if self.since(start) >= timeout {
                return Err(Error::TimedOut { after: timeout });
            }
        }
    }
}

impl Socket {
    /// Close gracefully, as [`close`](Self::close) does, but keep the socket: every later
    /// `send`/`recv` reports [`Error::Closed`]. Closing again is a no-op.
    pub fn shutdown(&self) -> Result<(), Error> {
        {
            let mut i = self.inner.borrow_mut();
            let now = Instant::from_nanos(i.rt.now());
            if let Some(c) = i.ep().connection(self.h) {
                if matches!(c.state(), State::Handshake | State::Established) {
                    c.close(now, 0);
                }
            }
        }
        let timeout = self.s.borrow().timeout.unwrap_or(Duration::from_secs(10));
        let start = StdInstant::now();
        loop {
            self.inner.borrow_mut().poll();
            self.pump_events();
            match self.s.borrow().state {
                SockState::Closed(CloseReason::LocalClose(_) | CloseReason::PeerClose(_)) => {
                    return Ok(())
                }
                SockState::Closed(r) => return Err(Error::from_close(r)),
                _ => {}
            }
            if start.elapsed() >= timeout {
                return Err(Error::TimedOut { after: timeout });
            }
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // A socket dropped without close() is reset, so the peer learns at once and every
        // resource is freed; the endpoint frees the connection once its events are drained
        // (a draining one at the end of its drain).
        let Ok(mut i) = self.inner.try_borrow_mut() else {
            return;
        };
        let now = Instant::from_nanos(i.rt.now());
        if let Some(c) = i.ep().connection(self.h) {
            // A draining connection (the peer closed) is left to finish its drain: it
            // re-acknowledges the peer's CLOSE if our ACK was lost; a reset instead could
            // turn the peer's clean close into an error.
            if !matches!(c.state(), State::Closed | State::Draining) {
                c.reset(now, 0);
            }
            while c.poll_event().is_some() {}
            while c.poll_recv().is_some() {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_controller_paces_at_the_ports_rate() {
        // A NIC that reports 25 Gb/s.
        assert_eq!(line_rate_bps(25_000, false), 25_000_000_000);
        assert_eq!(line_rate_bps(25_000, true), 25_000_000_000);
        // memif or a pair: memory, no speed.
        assert_eq!(line_rate_bps(0, true), MEMORY_LINK_BPS);
        assert!(MEMORY_LINK_BPS > SwiftConfig::default().line_rate_bps);
        // A device that does not say: Swift's default.
        assert_eq!(
            line_rate_bps(0, false),
            SwiftConfig::default().line_rate_bps
        );
    }
}
