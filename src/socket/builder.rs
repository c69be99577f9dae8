//! [`StackBuilder`]: a stack's settings, and [`build`](StackBuilder::build), which opens the
//! backend, waits for its link and assembles port, runtime and transport.

use std::cell::RefCell;
use std::net::Ipv4Addr;
#[cfg(feature = "metrics")]
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use crate::pmd::fanin::{FanIn, FanInStatsHandle};
use crate::pmd::faults::{FaultConfig, Faults};
use crate::pmd::memif::{InterfaceConfig, Memif, MemifConfig, MemifError, Role};
use crate::pmd::pcap::CapturePort;
use crate::pmd::{Link, Port, PortInfo};
use crate::proto::cc::swift::{SwiftConfig, SwiftFactory};
use crate::proto::cc::ControllerFactory;
use crate::proto::{ConnectionConfig, Endpoint, EndpointConfig};
use crate::runtime::clock::SystemClock;
use crate::runtime::net::{ArpConfig, NetConfig};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::time::Clock;

use super::metrics::{self, CaptureLimits, CapturePolicy, Metrics};
use super::stack::{Inner, StackPort, Transport};
use super::{Backend, Error, IdlePoll, Stack, DEFAULT_UDP_PORT};

/// Builds a [`Stack`]. Start with [`Stack::builder`].
#[derive(Debug)]
pub struct StackBuilder {
    /// Taken by `build` (an `Option` so the settings stay borrowable after it).
    pub(super) backend: Option<Backend>,
    ip: Ipv4Addr,
    prefix_len: u8,
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
    capture_dir: Option<PathBuf>,
    capture_limits: CaptureLimits,
    #[cfg(feature = "metrics")]
    metrics_token: Option<Redacted>,
    #[cfg(feature = "metrics")]
    metrics_allow_remote: bool,
    omit_checksums: bool,
    memif_ring: Option<u8>,
    memif_extra: Option<u32>,
    memif_peers: u32,
    memif_hugepages: Option<crate::mem::HugePages>,
    memif: MemifKnobs,
    rx_budget: Option<u64>,
    max_connections_per_source: usize,
    /// Per mille (see `rx_pool_reserve`).
    rx_pool_reserve: u32,
    faults: Option<FaultConfig>,
    idle_poll: IdlePoll,
    arp: Option<ArpConfig>,
    stateless_queue: Option<usize>,
}

/// The hostile-peer settings of a memif backend ([`MemifConfig`]) the builder passes on;
/// `None`: `MemifConfig::new`'s default.
#[derive(Debug, Default)]
struct MemifKnobs {
    require_sealed_regions: Option<bool>,
    max_peer_region_bytes: Option<u64>,
    max_pending_handshakes: Option<usize>,
    allowed_uid: Option<u32>,
    handshake_timeout: Option<Duration>,
    copy_rx: Option<bool>,
    wedge_timeout: Option<Duration>,
    /// Not printed by the builder's `Debug`.
    secret: Option<Redacted>,
}

impl MemifKnobs {
    /// The first setting that only a memif server uses, if one was given.
    fn server_only(&self) -> Option<&'static str> {
        if self.require_sealed_regions.is_some() {
            Some("memif_require_sealed_regions")
        } else if self.max_peer_region_bytes.is_some() {
            Some("memif_max_peer_region_bytes")
        } else if self.max_pending_handshakes.is_some() {
            Some("memif_max_pending_handshakes")
        } else if self.allowed_uid.is_some() {
            Some("memif_allowed_uid")
        } else {
            None
        }
    }

    /// The first setting given, if any.
    fn any(&self) -> Option<&'static str> {
        self.server_only()
            .or(self.handshake_timeout.map(|_| "memif_handshake_timeout"))
            .or(self.copy_rx.map(|_| "memif_copy_rx"))
            .or(self.wedge_timeout.map(|_| "memif_wedge_timeout"))
            .or(self.secret.as_ref().map(|_| "memif_secret"))
    }

    fn apply(&self, cfg: &mut MemifConfig) {
        if let Some(v) = self.require_sealed_regions {
            cfg.require_sealed_regions = v;
        }
        if let Some(v) = self.max_peer_region_bytes {
            cfg.max_peer_region_bytes = Some(v);
        }
        if let Some(v) = self.max_pending_handshakes {
            cfg.max_pending_handshakes = v;
        }
        if let Some(v) = self.allowed_uid {
            cfg.allowed_uid = Some(v);
        }
        if let Some(v) = self.handshake_timeout {
            cfg.handshake_timeout = v;
        }
        if let Some(v) = self.wedge_timeout {
            cfg.wedge_timeout = v;
        }
    }
}

impl StackBuilder {
    /// The defaults; [`Stack::builder`] is the public way in.
    pub(super) fn new(backend: Backend, ip: Ipv4Addr) -> StackBuilder {
        StackBuilder {
            backend: Some(backend),
            ip,
            prefix_len: 24,
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
            capture_dir: None,
            capture_limits: CaptureLimits::default(),
            #[cfg(feature = "metrics")]
            metrics_token: None,
            #[cfg(feature = "metrics")]
            metrics_allow_remote: false,
            omit_checksums: false,
            memif_ring: None,
            memif_extra: None,
            memif_peers: 1,
            memif_hugepages: None,
            memif: MemifKnobs::default(),
            rx_budget: None,
            max_connections_per_source: EndpointConfig::default().max_connections_per_source,
            rx_pool_reserve: DEFAULT_RX_POOL_RESERVE,
            faults: None,
            idle_poll: IdlePoll::default(),
            arp: None,
            stateless_queue: None,
        }
    }

    /// What blocking calls do while nothing happens: sleep after an idle spell (the default,
    /// [`IdlePoll::Sleep`] after 1 ms, 10 ms at most per sleep) or spin ([`IdlePoll::Spin`],
    /// for latency benchmarks). See [`IdlePoll`].
    pub fn idle_poll(mut self, policy: IdlePoll) -> Self {
        self.idle_poll = policy;
        self
    }

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
    /// The length of our subnet's prefix (default 24, at most 32): the addresses reached
    /// directly, by ARP. A server with more [`memif_peers`](Self::memif_peers) than a /24
    /// holds (253 besides itself) needs a shorter one, e.g. 16.
    pub fn prefix_len(mut self, len: u8) -> Self {
        self.prefix_len = len.min(32);
        self
    }
    /// Our Ethernet address. Default over [`Backend::Memif`]: derived from our IPv4 address
    /// ([`mac_for_ip`]: `02:b9:` and the four bytes of the address), so that the clients of
    /// one server, which have distinct addresses, have distinct MACs; over
    /// [`Backend::Port`]: the port's.
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
    /// memif server: serve `n` client processes at once on the one socket (default 1), each
    /// on its own interface: ids `id..id + n` of [`Backend::Memif`]'s `id`. Each interface
    /// is sized as the stack's only one would be (buffers for the [`mtu`](Self::mtu),
    /// [`memif_ring`](Self::memif_ring), [`memif_extra_buffers`](Self::memif_extra_buffers))
    /// and has its own buffer pool, so the server's packet memory is `n` times one
    /// interface's: with many peers, shorten the rings and the extra buffers. The stack's
    /// one poll loop serves them all through one port ([`pmd::fanin`](crate::pmd::fanin):
    /// each interface in turn on receive; on transmit, a frame goes to the interface its
    /// destination MAC was last seen on, a broadcast (ARP) to every connected one); the
    /// clients are remote hosts on the server's subnet, and connections from all of them
    /// arrive at the one [`Listener`](super::Listener).
    ///
    /// Each client needs its own interface id (a second client asking for an id that is
    /// serving gets [`Error::Backend`] "interface .. is serving another client" from its
    /// `build`) and its own IPv4 address (a client stack's default MAC is derived from its
    /// address, see [`mac`](Self::mac)). A client leaving frees its id for the next one.
    /// `n` is 1..=65534; [`Role::Server`] only. The default of
    /// [`memif_max_pending_handshakes`](Self::memif_max_pending_handshakes) grows to `n`.
    pub fn memif_peers(mut self, n: u32) -> Self {
        self.memif_peers = n;
        self
    }
    /// memif: where the interfaces' buffer pools (and a client's rings) live (default
    /// [`HugePages::Prefer`](crate::mem::HugePages::Prefer): 2 MiB hugepages, 4 KiB pages
    /// when none are free). Each pool takes at least one hugepage: a server with many
    /// [`memif_peers`](Self::memif_peers) and small pools may rather leave the machine's
    /// hugepages to others with `HugePages::Never`.
    pub fn memif_hugepages(mut self, policy: crate::mem::HugePages) -> Self {
        self.memif_hugepages = Some(policy);
        self
    }
    /// A static ARP entry (no resolution for that address).
    pub fn static_arp(mut self, ip: Ipv4Addr, mac: [u8; 6]) -> Self {
        self.static_arp.push((ip, mac));
        self
    }
    /// Largest message sent or accepted (default 1 GiB; at least 1). A longer message is
    /// refused by `send` ([`Error::MessageTooLarge`]) and, from a peer, packet by packet
    /// (`ConnectionStats::rx_refused`). Set it after
    /// [`connection_config`](Self::connection_config), which replaces it.
    pub fn max_message(mut self, bytes: u64) -> Self {
        self.conn.max_message = bytes;
        self
    }
    /// Per-connection transport settings (replaces what [`max_message`](Self::max_message)
    /// and [`max_rx_slots`](Self::max_rx_slots) set before).
    pub fn connection_config(mut self, conn: ConnectionConfig) -> Self {
        self.conn = conn;
        self
    }
    /// Bytes of reassembly buffers all connections together may hold
    /// ([`EndpointConfig::rx_budget`]; at least 1). Charged with the bytes that arrived, not
    /// the lengths messages claim; a packet over it is refused (the peer retransmits) and
    /// counted in `ConnectionStats::rx_refused`. Default: [`default_rx_budget`] of the
    /// machine's memory, read once by `build` (4 GiB, or a quarter of the physical memory
    /// where that is less).
    pub fn rx_budget(mut self, bytes: u64) -> Self {
        self.rx_budget = Some(bytes);
        self
    }
    /// Most connections accepted from one source IP address alive at once
    /// ([`EndpointConfig::max_connections_per_source`], default 64; at least 1 unless
    /// [`no_accept`](Self::no_accept)). One more is refused and counted
    /// (`EndpointStats::refused_per_source`): one host cannot take the whole table.
    pub fn max_connections_per_source(mut self, n: usize) -> Self {
        self.max_connections_per_source = n;
        self
    }
    /// Most pool slots one connection keeps for received single-packet messages the
    /// application has not taken ([`ConnectionConfig::max_rx_slots`], default 256); past it
    /// they are copied out of their slots (`ConnectionStats::rx_slots_copied`), so a peer
    /// cannot pin the pool with messages nobody reads. 0 copies every one. Set it after
    /// [`connection_config`](Self::connection_config), which replaces it.
    pub fn max_rx_slots(mut self, n: usize) -> Self {
        self.conn.max_rx_slots = n;
        self
    }

    /// Deliver each connection's messages in the order they were sent
    /// ([`ConnectionConfig::ordered`]) instead of the order they completed (the default: a
    /// message whose packets all arrived is handed over at once, even if an earlier one still
    /// waits for a retransmission). Turn it on when the application needs send order, as
    /// one writing a stream of chunks to a file in arrival order does; it costs head-of-line
    /// blocking under loss. Set it after [`connection_config`](Self::connection_config),
    /// which replaces it.
    pub fn ordered(mut self, on: bool) -> Self {
        self.conn.ordered = on;
        self
    }

    /// Wrap the stack's port in the fault injector ([`Faults`]): loss, duplication,
    /// corruption, reordering, delay and rate limits on either direction, drawn from the
    /// config's seed. For testing how an application behaves on a bad network (the
    /// transport recovers what the faults take); never set in production.
    pub fn faults(mut self, cfg: FaultConfig) -> Self {
        self.faults = Some(cfg);
        self
    }

    /// The share of the receive pool (0.0-1.0, default 0.25) kept for receiving: while fewer
    /// than this share of its packet buffers are free, received messages are handed to the
    /// application copied into memory of their own (as the kernel's copybreak does), and
    /// their packet buffers go back to the pool at once; zero copy resumes when twice the
    /// share is free again. Counted in [`StackStats::rx_pool_low_copies`](super::StackStats::rx_pool_low_copies) and
    /// `bypass_rx_pool_low_copied_messages_total`, logged (a warning) when it starts.
    ///
    /// Why: a received message is a view of the packet buffer it arrived in (zero copy),
    /// and a `Bytes` the application keeps keeps that buffer. An application that keeps
    /// what it receives (a store keeping the values of PUTs) would otherwise take every
    /// buffer of the pool, the port could receive nothing more, and its connections would
    /// die of silence (seen: 3,072 PUTs, then "idle timeout"). 0 turns the copy off: then
    /// the application must copy what it keeps for long.
    pub fn rx_pool_reserve(mut self, share: f64) -> Self {
        self.rx_pool_reserve = if share.is_finite() {
            (share.clamp(0.0, 1.0) * 1000.0).round() as u32
        } else {
            u32::MAX
        };
        self
    }

    /// memif client: copy each received frame out of the memory the server shares into a
    /// private pool before the stack reads it ([`InterfaceConfig::copy_rx`], default off:
    /// zero copy). Turn it on when the server may be hostile: without it, a received
    /// frame lies in memory the server can still write, so it can change a message after
    /// its checksum was verified, even while the application holds it (docs/SECURITY.md).
    /// One copy per frame; a memif server always copies (there it changes nothing).
    /// [`Backend::Memif`] only.
    pub fn memif_copy_rx(mut self, on: bool) -> Self {
        self.memif.copy_rx = Some(on);
        self
    }

    /// memif server: refuse a client region not sealed against shrinking
    /// ([`MemifConfig::require_sealed_regions`], default off: accepted and counted in
    /// `Memif::unsealed_regions`). Turn it on when the peer may be hostile: one that
    /// truncates a region we mapped crashes us (SIGBUS). [`Backend::Memif`] with
    /// `Role::Server` only.
    pub fn memif_require_sealed_regions(mut self, on: bool) -> Self {
        self.memif.require_sealed_regions = Some(on);
        self
    }
    /// memif server: most bytes a client's regions may add up to
    /// ([`MemifConfig::max_peer_region_bytes`]; default: sized from the interface, see
    /// [`MemifConfig::peer_region_limit`]). A region over it is refused. At least
    /// [`MIN_PEER_REGION_BYTES`]. [`Backend::Memif`] with `Role::Server` only.
    pub fn memif_max_peer_region_bytes(mut self, bytes: u64) -> Self {
        self.memif.max_peer_region_bytes = Some(bytes);
        self
    }
    /// memif server: most control connections in their handshake at once
    /// ([`MemifConfig::max_pending_handshakes`], default 16; at least 1); one more drops the
    /// oldest (`Memif::pending_dropped`). [`Backend::Memif`] with `Role::Server` only.
    pub fn memif_max_pending_handshakes(mut self, n: usize) -> Self {
        self.memif.max_pending_handshakes = Some(n);
        self
    }
    /// memif server: let only a client running as user `uid` connect (`SO_PEERCRED`,
    /// [`MemifConfig::allowed_uid`]; default: whoever may open the socket). Others are
    /// refused (`Memif::refused`). [`Backend::Memif`] with `Role::Server` only.
    pub fn memif_allowed_uid(mut self, uid: u32) -> Self {
        self.memif.allowed_uid = Some(uid);
        self
    }
    /// memif: longest a control handshake may take before its connection is dropped
    /// ([`MemifConfig::handshake_timeout`], default 5 s; more than 0). [`Backend::Memif`]
    /// only.
    pub fn memif_handshake_timeout(mut self, d: Duration) -> Self {
        self.memif.handshake_timeout = Some(d);
        self
    }
    /// memif: how long a ring of a live connection may stay inconsistent (no frame can move
    /// on it) before the connection is torn down and counted in `Memif::rings_wedged`
    /// ([`MemifConfig::wedge_timeout`], default 1 s; more than 0). Shorter gives a link back
    /// sooner after a peer wedged it; below a few milliseconds a peer merely preempted in the
    /// middle of an update could be torn down. [`Backend::Memif`] only.
    pub fn memif_wedge_timeout(mut self, d: Duration) -> Self {
        self.memif.wedge_timeout = Some(d);
        self
    }
    /// memif: the interface's shared secret (at most 23 bytes; DPDK's `secret=`). A server
    /// refuses a client that does not present it (`ControlError::Secret`, sent in the
    /// DISCONNECT, logged); a client presents it. Default none. A secret is no
    /// authentication against a local user who can read it (it travels in the clear over
    /// the socket): restrict the socket by file mode or
    /// [`memif_allowed_uid`](Self::memif_allowed_uid) for that. [`Backend::Memif`] only.
    pub fn memif_secret(mut self, secret: impl Into<String>) -> Self {
        self.memif.secret = Some(Redacted(secret.into()));
        self
    }
    /// ARP: the cache's size and the bounds on unresolved destinations
    /// ([`ArpConfig`]; default 256 entries (at least `memif_peers` + 16), 16 destinations
    /// waiting at once with 64 frames queued each, a request every 200 ms, 5 tries, entries
    /// kept 60 s). A host that sends spoofed hellos from many on-link addresses fills the
    /// pending destinations (counted; the oldest is dropped), never more.
    pub fn arp(mut self, cfg: ArpConfig) -> Self {
        self.arp = Some(cfg);
        self
    }
    /// Stateless replies (cookie challenges, resets to unknown connections) queued for the
    /// next transmit at most ([`EndpointConfig::stateless_queue`], default 64, at least 1);
    /// one more is dropped and counted
    /// (`bypass_transport_rx_dropped_datagrams{cause="stateless_queue_full"}`), so a flood of
    /// hellos cannot grow memory.
    pub fn stateless_queue(mut self, n: usize) -> Self {
        self.stateless_queue = Some(n);
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
    /// memif peer must be there by then). A memif server does not wait: it listens.
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
    /// Let the HTTP capture switch (`POST /capture`) record this stack's frames into new files
    /// (mode 0600) in `dir`, which must exist; without this, `/capture` answers 404 "capture
    /// not enabled". Requests name a bare file name and may lower, never lift, the
    /// [`capture_limits`](Self::capture_limits). Sets the policy of the stack's
    /// [`Metrics`] (shared ones too: see [`Metrics::enable_capture`]).
    pub fn capture_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.capture_dir = Some(dir.into());
        self
    }
    /// The ceilings of an HTTP capture (default [`CaptureLimits::default`]: 100 000 frames,
    /// 100 MiB, snap length 65535): what a request gets when it names none, and the most it
    /// may ask for. A `None` cap here lets requests record without that cap.
    pub fn capture_limits(mut self, ceilings: CaptureLimits) -> Self {
        self.capture_limits = ceilings;
        self
    }
    /// The bearer token the stack's own exporter ([`metrics_addr`](Self::metrics_addr))
    /// requires on state-changing requests (every method but GET and HEAD, e.g.
    /// `POST /capture`): `Authorization: Bearer <token>`, compared in constant time; without
    /// it or with another: 403. With no token set, such requests are always refused (no
    /// token is generated). `GET /metrics` and `GET /capture` stay open (read-only).
    /// Cargo feature `metrics`.
    #[cfg(feature = "metrics")]
    pub fn metrics_token(mut self, token: impl Into<String>) -> Self {
        self.metrics_token = Some(Redacted(token.into()));
        self
    }
    /// Let [`metrics_addr`](Self::metrics_addr) be an address other than loopback
    /// (127.0.0.0/8, ::1); `build` refuses one otherwise. Cargo feature `metrics`.
    #[cfg(feature = "metrics")]
    pub fn metrics_allow_remote(mut self, allow: bool) -> Self {
        self.metrics_allow_remote = allow;
        self
    }
    /// The name this stack's series carry in label `port` and its capture is addressed by
    /// (default: the port's name). Give stacks of one process distinct names.
    pub fn metrics_name(mut self, name: &str) -> Self {
        self.metrics_name = Some(name.to_owned());
        self
    }

    /// Start the stack: open the backend, wait for its link (up to
    /// [`link_timeout`](Self::link_timeout)), build the runtime on this thread.
    ///
    /// A memif server ([`Backend::Memif`] with [`Role::Server`]) does not wait: it returns
    /// as soon as its socket listens, and its link comes up when a client connects (and goes
    /// down and up again as clients leave and come: the stack outlives them).
    ///
    /// A setting that makes no sense is refused first, with [`Error::Config`] naming it.
    pub fn build(mut self) -> Result<Stack, Error> {
        self.check_limits()?;
        self.check_telemetry()?;
        let mut fanin = None;
        let (port, memif, memif_id): (Box<dyn Port>, Option<Memif>, u32) = match self.backend.take()
        {
            Some(Backend::Memif { socket, role, id }) => {
                if self.mac.is_none() {
                    self.mac = Some(mac_for_ip(self.ip));
                }
                let (m, p, f) = self.open_memif(&socket, role, id)?;
                fanin = f;
                (p, Some(m), id)
            }
            Some(Backend::Port(p)) => (p, None, 0),
            None => return Err(no_backend()),
        };
        let peers = if memif.is_some() { self.memif_peers } else { 1 };
        let pools: Vec<crate::mem::Pool> = memif
            .iter()
            .flat_map(|m| (0..peers).filter_map(move |k| m.pool(memif_id + k)))
            .collect();
        let packet_pool = pools.first().cloned();
        let mut port = match self.faults.take() {
            Some(cfg) => Box::new(Faults::new(port, cfg).map_err(|e| Error::Config {
                what: "faults",
                why: e.to_string(),
                fix: "give probabilities between 0 and 1 and non-zero queue sizes",
            })?) as Box<dyn Port>,
            None => port,
        };
        let info = port.info();
        // A memif server listens: its clients come (and go) after it started.
        let server = matches!(&memif, Some(m) if m.role() == Role::Server);
        let deadline = StdInstant::now() + self.link_timeout;
        while !server && !port.link().is_up() {
            // A server that refused our handshake for good says why: no need to wait.
            if let Some(m) = &memif {
                if let Some(e) = refused_for_good(m, memif_id) {
                    return Err(e);
                }
            }
            if StdInstant::now() >= deadline {
                // A memif peer that came and was refused says why (a limit set here).
                let refused = memif
                    .as_ref()
                    .and_then(|m| m.last_error(memif_id))
                    .map(|e| format!(" (the last peer was dropped: {e})"))
                    .unwrap_or_default();
                return Err(Error::Backend {
                    what: format!("port {}", info.name),
                    why: format!("link still down after {:?}{refused}", self.link_timeout),
                    fix: "start the peer (the other `bypass` process or memif application) \
                          on the same socket with the opposite role, or raise link_timeout",
                });
            }
            std::hint::spin_loop();
            std::thread::yield_now();
        }
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
        let max_message = self.conn.max_message;
        let max_send_msgs = self.conn.max_send_msgs;
        let rt = self.assemble(port, &info, SystemClock::new())?;
        #[cfg(feature = "metrics")]
        let mut exporter = None;
        #[cfg(feature = "metrics")]
        let shared = match (self.metrics, self.metrics_addr) {
            (Some(m), _) => Some(m),
            (None, Some(addr)) => {
                let m = Metrics::new();
                let token = self.metrics_token.take().map(|t| t.0);
                exporter =
                    Some(
                        metrics::start_own(&m, addr, token).map_err(|e| Error::Backend {
                            what: format!("metrics exporter on {addr}"),
                            why: e.to_string(),
                            fix: "choose a free address for metrics_addr (port 0 picks one)",
                        })?,
                    );
                Some(m)
            }
            (None, None) => None,
        };
        #[cfg(not(feature = "metrics"))]
        let shared = self.metrics;
        if let (Some(m), Some(dir)) = (&shared, self.capture_dir.take()) {
            m.enable_capture(CapturePolicy {
                dir,
                ceilings: self.capture_limits,
            });
        }
        let stack_metrics = shared.map(|m| {
            let name = self.metrics_name.unwrap_or_else(|| info.name.clone());
            let memif_id = memif.as_ref().map(|_| memif_id);
            metrics::StackMetrics::new(&m, &name, self.max_connections, pools, memif_id)
        });
        Ok(Stack {
            inner: Rc::new(RefCell::new(Inner {
                rt,
                metrics: stack_metrics,
                #[cfg(feature = "metrics")]
                _exporter: exporter,
                _memif: memif,
                fanin,
                packet_pool,
                max_message,
                max_send_msgs,
                rest_deferred: false,
                bell: None,
                rang: false,
                rx_pressure: super::stack::RxPressure::new(self.rx_pool_reserve),
                idle: super::stack::Idle::new(self.idle_poll),
                _core: core,
            })),
        })
    }
}

/// [`StackBuilder::rx_pool_reserve`]'s default, per mille.
const DEFAULT_RX_POOL_RESERVE: u32 = 250;

/// What [`StackBuilder::open_memif`] opened: the socket, the stack's port, and the fan-in's
/// counters when the port is one.
type OpenedMemif = (Memif, Box<dyn Port>, Option<FanInStatsHandle>);

impl StackBuilder {
    /// Interface `id` as this builder sizes it: buffers that hold a frame of the MTU (9000
    /// by default), the ring and extra buffers asked for.
    fn memif_interface(&self, id: u32) -> InterfaceConfig {
        let mut ic = InterfaceConfig::new(id);
        let mtu = if self.mtu == 0 { 9000 } else { self.mtu };
        ic.buffer_size = (u32::from(mtu) + 14).div_ceil(64) * 64;
        if let Some(r) = self.memif_ring {
            ic.log2_ring_size = r;
        }
        if let Some(n) = self.memif_extra {
            ic.extra_buffers = n;
        }
        if let Some(h) = self.memif_hugepages {
            ic.hugepages = h;
        }
        if let Some(c) = self.memif.copy_rx {
            ic.copy_rx = c;
        }
        if let Some(Redacted(s)) = &self.memif.secret {
            ic.secret = Some(s.clone());
        }
        ic
    }

    /// Open the memif socket with [`memif_peers`](Self::memif_peers) interfaces from `id`,
    /// and the stack's port over them: the interface's own, or a fan-in over all of them
    /// (with the handle to its counters).
    fn open_memif(
        &self,
        socket: &std::path::Path,
        role: Role,
        id: u32,
    ) -> Result<OpenedMemif, Error> {
        let n = self.memif_peers;
        let mut cfg = MemifConfig::new(socket, role, id);
        cfg.interfaces = (0..n).map(|k| self.memif_interface(id + k)).collect();
        // As many clients may be in their handshake at once as there are interfaces.
        cfg.max_pending_handshakes = cfg.max_pending_handshakes.max(n as usize);
        self.memif.apply(&mut cfg);
        let m = Memif::new(cfg).map_err(|e| Error::Backend {
            what: format!("memif socket {}", socket.display()),
            fix: match e {
                MemifError::AlreadyServed { .. } => {
                    "serve every client from the one server stack (StackBuilder::memif_peers), \
                     or give this stack another socket path"
                }
                _ => {
                    "check the socket path's directory exists and is writable; one side must \
                     be Role::Server and the other Role::Client with the same id"
                }
            },
            why: e.to_string(),
        })?;
        let mut ports = Vec::with_capacity(n as usize);
        for k in 0..n {
            ports.push(m.port(id + k, 0).map_err(|e| Error::Backend {
                what: "memif port".into(),
                why: e.to_string(),
                fix: "each interface queue can be opened once per process",
            })?);
        }
        if n == 1 {
            return Ok((m, Box::new(ports.pop().ok_or_else(no_backend)?), None));
        }
        let f = FanIn::new(ports).map_err(|e| Error::Config {
            what: "memif_peers",
            why: e.to_string(),
            fix: "serve 1..=65534 peers on one socket",
        })?;
        let h = f.stats_handle();
        Ok((m, Box::new(f), Some(h)))
    }
}

/// A memif client's handshake refused in a way that waiting does not cure: the interface
/// serves another client, or the server has no such interface.
fn refused_for_good(m: &Memif, id: u32) -> Option<Error> {
    let e = m.last_error(id)?;
    let path = m.socket().display();
    if e.interface_busy() {
        Some(Error::Backend {
            what: format!("memif interface {id} on {path}"),
            why: format!("it is serving another client (the server said: {e})"),
            fix: "use another interface id (Backend::Memif's id): each client of a server \
                  needs its own, and the server serves ids id..id+n \
                  (StackBuilder::memif_peers)",
        })
    } else if e.interface_unknown() {
        Some(Error::Backend {
            what: format!("memif interface {id} on {path}"),
            why: format!("the server has no such interface (it said: {e})"),
            fix: "use an id the server serves: Backend::Memif's id on the server up to \
                  id + StackBuilder::memif_peers - 1",
        })
    } else {
        None
    }
}

/// The Ethernet address a memif stack takes by default ([`StackBuilder::mac`]): locally
/// administered unicast `02:b9:` followed by the four bytes of `ip`, so that stacks with
/// distinct addresses have distinct MACs.
pub fn mac_for_ip(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0xb9, o[0], o[1], o[2], o[3]]
}

/// A secret the builder's `Debug` does not print (the metrics token, the memif secret).
struct Redacted(String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The smallest [`StackBuilder::memif_max_peer_region_bytes`]: a ring of 2 descriptors
/// and one 2 KiB buffer each way, rounded up to a 2 MiB hugepage. A smaller limit refuses
/// every client.
pub const MIN_PEER_REGION_BYTES: u64 = 2 << 20;

/// The receive budget a stack gets by default ([`StackBuilder::rx_budget`]) on a machine with
/// `memory` bytes of physical memory (`None`: unknown): 4 GiB, or a quarter of the memory
/// where that is less, so that one stack's peers cannot make it hold more than the machine
/// can spare (the budget counts bytes they really sent, but it is reached by a peer that sends
/// messages and never completes them).
pub fn default_rx_budget(memory: Option<u64>) -> u64 {
    const CAP: u64 = 4 << 30;
    match memory {
        Some(m) => (m / 4).clamp(1 << 20, CAP),
        None => CAP,
    }
}

/// The machine's physical memory (`MemTotal` of /proc/meminfo), read when a stack is built.
fn machine_memory_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

impl StackBuilder {
    /// Refuse, before anything opens, limits that make no sense: a zero where at least one
    /// is needed, memif settings for another backend, a memif server's settings on a client.
    fn check_limits(&self) -> Result<(), Error> {
        let zero = |what: &'static str, fix: &'static str| {
            Err(Error::Config {
                what,
                why: "0 makes no sense".into(),
                fix,
            })
        };
        if self.conn.max_message == 0 {
            return zero(
                "max_message",
                "give the largest message the application sends or receives (default 1 GiB)",
            );
        }
        if self.max_connections == 0 {
            return zero(
                "max_connections",
                "allow at least 1 connection (default 4096)",
            );
        }
        if self.accept && self.max_connections_per_source == 0 {
            return zero(
                "max_connections_per_source",
                "allow at least 1 connection per source address (default 64), or build a \
                 client-only stack with no_accept()",
            );
        }
        if self.rx_pool_reserve > 1000 {
            return Err(Error::Config {
                what: "rx_pool_reserve",
                why: "not a number".into(),
                fix: "give the share of the receive pool kept free, 0.0 to 1.0 (default 0.25)",
            });
        }
        if let IdlePoll::Sleep { max_sleep, .. } = self.idle_poll {
            if max_sleep < crate::runtime::MIN_SLEEP {
                return Err(Error::Config {
                    what: "idle_poll",
                    why: format!(
                        "a max_sleep of {max_sleep:?} is below the shortest sleep ({:?}): it \
                         would never sleep",
                        crate::runtime::MIN_SLEEP
                    ),
                    fix: "give a max_sleep of 1 ms or more (default 10 ms), or IdlePoll::Spin",
                });
            }
        }
        if self.rx_budget == Some(0) {
            return zero(
                "rx_budget",
                "give the bytes of reassembly buffers all connections may hold (default: a \
                 quarter of the machine's memory, at most 4 GiB)",
            );
        }
        let role = match &self.backend {
            Some(Backend::Memif { role, .. }) => Some(*role),
            _ => None,
        };
        match (role, self.memif.any()) {
            (None, Some(what)) => {
                return Err(Error::Config {
                    what,
                    why: "the stack's backend is not memif".into(),
                    fix: "use Backend::Memif, or set it on the MemifConfig of the Memif whose \
                          port you pass as Backend::Port",
                })
            }
            (Some(Role::Client), _) => {
                if let Some(what) = self.memif.server_only() {
                    return Err(Error::Config {
                        what,
                        why: "only a memif server uses it (a client maps only its own memory \
                              and accepts no connection)"
                            .into(),
                        fix: "set it on the Role::Server side",
                    });
                }
            }
            _ => {}
        }
        if self.memif_peers != 1 {
            let id = match &self.backend {
                Some(Backend::Memif { id, .. }) => Some(*id),
                _ => None,
            };
            let why = match (role, id) {
                (Some(Role::Server), Some(id)) => {
                    if self.memif_peers == 0 {
                        Some("0 makes no sense".to_string())
                    } else if self.memif_peers as usize > crate::pmd::fanin::MAX_MEMBERS {
                        Some(format!(
                            "more than {} peers on one socket",
                            crate::pmd::fanin::MAX_MEMBERS
                        ))
                    } else if id.checked_add(self.memif_peers - 1).is_none() {
                        Some(format!(
                            "interface ids {id}..{id}+{} run past u32::MAX",
                            self.memif_peers
                        ))
                    } else {
                        None
                    }
                }
                (Some(Role::Client), _) => Some(
                    "a client is one peer: it connects on one interface id (give each client \
                     its own id)"
                        .to_string(),
                ),
                _ => Some("the stack's backend is not memif".to_string()),
            };
            if let Some(why) = why {
                return Err(Error::Config {
                    what: "memif_peers",
                    why,
                    fix: "set memif_peers(1..=65534) on a Backend::Memif server; each client \
                          connects with its own id in id..id+n",
                });
            }
        }
        if self.memif.max_pending_handshakes == Some(0) {
            return zero(
                "memif_max_pending_handshakes",
                "allow at least 1 pending handshake (default 16)",
            );
        }
        if self.memif.handshake_timeout == Some(Duration::ZERO) {
            return zero(
                "memif_handshake_timeout",
                "give a handshake time to complete (default 5 s)",
            );
        }
        if self.memif.wedge_timeout == Some(Duration::ZERO) {
            return zero(
                "memif_wedge_timeout",
                "give a wedged ring time to come back (default 1 s)",
            );
        }
        if let Some(Redacted(s)) = &self.memif.secret {
            if s.len() > 23 {
                return Err(Error::Config {
                    what: "memif_secret",
                    why: format!("{} bytes; memif carries at most 23", s.len()),
                    fix: "give a secret of at most 23 bytes",
                });
            }
        }
        if self.stateless_queue == Some(0) {
            return zero(
                "stateless_queue",
                "queue at least 1 stateless reply (default 64): with none, no handshake \
                 could be answered",
            );
        }
        if let Some(a) = self.arp {
            for (what, v) in [
                ("capacity", a.capacity),
                ("pending_dests", a.pending_dests),
                ("queue_per_dest", a.queue_per_dest),
                ("max_tries", a.max_tries as usize),
            ] {
                if v == 0 {
                    return Err(Error::Config {
                        what: "arp",
                        why: format!("ArpConfig::{what} is 0"),
                        fix: "give at least 1 (see ArpConfig::default())",
                    });
                }
            }
            if a.retry_ns == 0 || a.ttl_ns == 0 {
                return Err(Error::Config {
                    what: "arp",
                    why: "ArpConfig::retry_ns or ttl_ns is 0".into(),
                    fix: "give a retry interval and an entry life above 0 (see \
                          ArpConfig::default())",
                });
            }
        }
        if let Some(b) = self.memif.max_peer_region_bytes {
            if b < MIN_PEER_REGION_BYTES {
                return Err(Error::Config {
                    what: "memif_max_peer_region_bytes",
                    why: format!(
                        "{b} bytes is less than any client's region ({MIN_PEER_REGION_BYTES})"
                    ),
                    fix: "allow at least 2 MiB, or leave it to the default (sized from the \
                          interface)",
                });
            }
        }
        Ok(())
    }
}

/// `build` without a backend: cannot happen (it consumes the builder), an error rather than
/// a panic all the same.
fn no_backend() -> Error {
    Error::Backend {
        what: "stack backend".into(),
        why: "the builder's backend was already taken".into(),
        fix: "make a new StackBuilder for each stack",
    }
}

impl StackBuilder {
    /// The runtime and transport over `port` (whose link is up; `info` is its
    /// [`Port::info`]), with this builder's settings and `clock`: everything of a stack but
    /// its core slot, telemetry and memif control socket. `build` runs it with the system
    /// clock; `testing::StackCore` with a virtual one.
    pub(super) fn assemble<C: Clock>(
        &mut self,
        mut port: Box<dyn Port>,
        info: &PortInfo,
        clock: C,
    ) -> Result<Runtime<StackPort, Transport, C>, Error> {
        let mtu = if self.mtu == 0 {
            info.mtu.min(9000)
        } else {
            self.mtu.min(info.mtu)
        };
        let mut net = NetConfig::new(self.mac.unwrap_or(info.mac), self.ip);
        net.mtu = mtu;
        net.prefix_len = self.prefix_len;
        // An entry for each peer of a memif server, and room for the others.
        if let Some(a) = self.arp {
            net.arp = a;
        }
        net.arp.capacity = net.arp.capacity.max(self.memif_peers as usize + 16);
        net.offloads = info.offloads;
        let mut conn = self.conn.clone();
        // Both ends on intact links (memif, a pair) may leave UDP checksums out, where the
        // application allows it.
        conn.link_intact = info.offloads.intact && self.omit_checksums;
        net.static_arp = std::mem::take(&mut self.static_arp);
        let mut rcfg = RuntimeConfig::new(net);
        rcfg.pin_core = self.pin_core;
        // Datagrams fill the MTU (jumbo frames on memif) unless the caller chose a size.
        if conn.max_datagram == ConnectionConfig::default().max_datagram {
            conn.max_datagram = u32::from(mtu) - 28;
        }
        conn.max_datagram = conn.max_datagram.min(u32::from(mtu) - 28);
        let mut ecfg = EndpointConfig {
            accept: self.accept,
            max_connections: self.max_connections,
            max_connections_per_source: self.max_connections_per_source,
            rx_budget: self
                .rx_budget
                .unwrap_or_else(|| default_rx_budget(machine_memory_bytes())),
            conn,
            cookie_key: [os_random()?, os_random()?],
            ..EndpointConfig::default()
        };
        if let Some(n) = self.stateless_queue {
            ecfg.stateless_queue = n;
        }
        ecfg.cc = match self.cc.take() {
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
        let seed = match self.seed {
            Some(s) => s,
            None => os_random()?,
        };
        let transport = Transport {
            ep: Endpoint::new(ecfg, seed),
            udp_port: self.udp_port,
            spare: None,
            tx_dropped: 0,
            tx_pool_exhausted: 0,
        };
        let port = CapturePort::new(port);
        let mut rt = Runtime::new(rcfg, port, transport, clock).map_err(|e| Error::Backend {
            what: "runtime".into(),
            why: e.to_string(),
            fix: "choose a CPU that exists (pin_core) and a free core slot",
        })?;
        rt.net_mut().bind(self.udp_port);
        Ok(rt)
    }

    /// Refuse, before anything opens, a metrics address off loopback that was not allowed and
    /// a capture directory that is not one.
    fn check_telemetry(&self) -> Result<(), Error> {
        #[cfg(feature = "metrics")]
        if let Some(addr) = self.metrics_addr {
            if !addr.ip().is_loopback() && !self.metrics_allow_remote {
                return Err(Error::Backend {
                    what: format!("metrics exporter on {addr}"),
                    why: "the address is not loopback: anyone who reaches it reads the \
                          metrics"
                        .into(),
                    fix: "bind 127.0.0.1 (or ::1), or allow it with \
                          StackBuilder::metrics_allow_remote(true)",
                });
            }
        }
        if let Some(dir) = &self.capture_dir {
            if !dir.is_dir() {
                return Err(Error::Backend {
                    what: format!("capture directory {}", dir.display()),
                    why: "not a directory".into(),
                    fix: "create it (mode 0700, owned by the application) before build",
                });
            }
        }
        Ok(())
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

/// Eight bytes from the OS ([`crate::rng::os_u64`]) for the cookie key and the connection-id
/// seed: an error when it has none, never a fallback anyone could guess (the time of day).
fn os_random() -> Result<u64, Error> {
    crate::rng::os_u64().map_err(|e| Error::Backend {
        what: "randomness from the OS (handshake cookie key, connection ids)".into(),
        why: e.to_string(),
        fix: "allow getrandom(2) or /dev/urandom to the process (seccomp, chroot)",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_rx_budget_is_a_quarter_of_a_small_machine() {
        assert_eq!(default_rx_budget(None), 4 << 30, "unknown: 4 GiB");
        assert_eq!(
            default_rx_budget(Some(64 << 30)),
            4 << 30,
            "capped at 4 GiB"
        );
        assert_eq!(
            default_rx_budget(Some(2 << 30)),
            512 << 20,
            "a quarter of 2 GiB"
        );
        assert_eq!(default_rx_budget(Some(1000)), 1 << 20, "at least 1 MiB");
        let m = machine_memory_bytes().expect("MemTotal from /proc/meminfo");
        assert!(m >= 64 << 20, "{m} bytes of memory?");
        assert_eq!(default_rx_budget(Some(m)), (m / 4).min(4 << 30));
    }

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
