//! memif: the shared-memory packet interface (protocol version 2), in pure Rust, both roles.
//!
//! Speaks to DPDK's `net_memif`, libmemif and VPP. Two processes on one host exchange frames
//! through descriptor rings and packet buffers in memory the client shares by file descriptor;
//! no kernel on the data path.
//!
//! Contract:
//! - [`Memif::new`] opens one control socket (a UNIX seqpacket socket: the server listens, the
//!   client connects) carrying one or more interfaces, told apart by id. A background control
//!   thread, asleep in `poll(2)`, runs the handshake (HELLO, INIT, ADD_REGION, ADD_RING,
//!   CONNECT, CONNECTED, DISCONNECT; region and interrupt fds by SCM_RIGHTS), notices a dead
//!   peer (the socket hangs up) and reconnects: a client retries every
//!   [`MemifConfig::reconnect_interval`] (backing off up to 32x while the server keeps
//!   refusing the handshake); a server accepts again. A handshake that does not finish in
//!   [`MemifConfig::handshake_timeout`] (5 s) is dropped, so a stuck peer cannot hold an
//!   interface. The data path never makes a system call for the control channel. (A thread
//!   rather than a `poll_control()` the application must call: DPDK does the same with its
//!   interrupt thread, a handshake or a reconnect never waits for a busy poll loop, and
//!   queue ports owned by different cores need no shared owner of the socket.)
//! - [`Memif::port`] gives one [`MemifPort`] per queue pair; each is a
//!   [`Port`](crate::pmd::Port) to be owned by one thread. A port polls its rings (no
//!   syscall, no lock, no allocation per packet); it picks up a new or lost connection by one
//!   atomic load per burst (Acquire: a plain load on x86), and reports it through
//!   [`Port::link`](crate::pmd::Port::link).
//! - Receive interrupts, both roles: our receive rings carry `RING_FLAG_MASK_INT` (the peer
//!   does not signal) while we poll. A loop that goes to sleep clears it
//!   ([`Port::rx_intr_arm`](crate::pmd::Port::rx_intr_arm)), looks at the ring once more and
//!   sleeps on the ring's eventfd, which the peer's transmit then signals; on waking it sets
//!   the flag again and drains the eventfd. Our transmit signals a peer's eventfd only while
//!   that peer's flag is clear: no system call while both sides poll.
//! - Client: owns the memory. Its buffer pool ([`Pool`], hugepages preferred) is memif region
//!   1, the rings are region 0. Received frames are [`PktBuf`](crate::mem::PktBuf)s over the shared region (zero
//!   copy); buffers from [`Port::alloc_tx`](crate::pmd::Port::alloc_tx) are sent without a
//!   copy (a foreign buffer is copied once). Server: maps the client's regions and copies
//!   frames in and out of its own pool, as DPDK's server does.
//! - Nothing the peer sends can crash us or make us touch memory outside its regions:
//!   control messages are validated and a violation is refused with a [`ControlError`] (sent
//!   to the peer in a DISCONNECT, logged, readable from [`Memif::last_error`]); every
//!   descriptor is validated on the data path (region index, offset + length inside the
//!   region, ring indices within what was posted) and bad ones are counted in
//!   [`PortStats::rx_errors`](crate::pmd::PortStats::rx_errors). A ring the peer leaves
//!   inconsistent (an index out of range, a posted buffer the transmitter cannot use, a
//!   chain never finished: no frame can move) is counted once when the port first finds it;
//!   when it stays so for [`MemifConfig::wedge_timeout`] while the port keeps polling, the
//!   control thread tears the connection down with [`ControlError::RingWedged`] (the port
//!   only stores to two atomics when a ring's health changes: no system call) and the
//!   client reconnects. An index of ours the peer overwrote is written again from our own
//!   state when the ring is found full or idle (counted). A peer that writes garbage
//!   into shared buffers can corrupt the frames it shares with us, nothing else. One hazard
//!   is outside what validation can catch:
//!   a peer that truncates a region file after we mapped it makes our next access to it
//!   fault (SIGBUS). Regions we create are sealed against shrinking and growing
//!   (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`). The server reads the seals of each region
//!   a peer passes: an unsealed one is logged (a `tracing` warning per region) and counted
//!   ([`Memif::unsealed_regions`]), or refused with
//!   [`MemifConfig::require_sealed_regions`] (off by default: not every peer seals).
//! - A peer chooses the sizes of its regions: all together they may not exceed
//!   [`MemifConfig::peer_region_limit`] (sized from the interface by default), and they are
//!   mapped without `mlock` or populating (the owner locks its memory). The interrupt fd a
//!   peer passes for a ring must be an eventfd; we make it non-blocking, so a full counter
//!   is a skipped, counted interrupt ([`Memif::interrupts_skipped`]), never a stall. The
//!   server bounds connections in their handshake ([`MemifConfig::max_pending_handshakes`],
//!   oldest dropped first, [`Memif::pending_dropped`]), pauses its listener when `accept`
//!   runs out of descriptors, can require a peer uid ([`MemifConfig::allowed_uid`]), and
//!   compares secrets in constant time.
//! - Frames larger than one buffer ([`InterfaceConfig::buffer_size`], 2048 by default): the
//!   server transmits them as descriptor chains (`MEMIF_DESC_FLAG_NEXT`) and receives chains
//!   of up to `buffer_size + 128` bytes; the client sends its own buffers as chains when
//!   their data spills into the slot's headroom, refuses (leaves in the `Vec`) a foreign
//!   buffer longer than one buffer, and gathers a received chain (DPDK sends one descriptor
//!   per mbuf segment) into its first buffer, for frames of up to one buffer; a longer
//!   chain is dropped and counted in `rx_errors`.
//!
//! ```no_run
//! use bypass::pmd::memif::{Memif, MemifConfig, Role};
//! use bypass::pmd::Port;
//!
//! // Talk to e.g. dpdk-testpmd --vdev=net_memif0,role=server,socket=/run/app.sock
//! // (DPDK's default abstract-namespace socket; a filesystem path needs socket-abstract=no).
//! let memif = Memif::new(MemifConfig::new("@/run/app.sock", Role::Client, 0))?;
//! let mut port = memif.port(0, 0)?;
//! let mut frames = Vec::with_capacity(bypass::pmd::MAX_BURST);
//! for _ in 0..1_000_000 {
//!     if port.rx_burst(&mut frames, 32) > 0 {
//!         port.tx_burst(&mut frames); // bounce them back, zero copy
//!         frames.clear(); // frames the ring had no room for are dropped here
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A socket is a path in the filesystem, or, written `@name`, a name in Linux's abstract
//! namespace: DPDK 22.11 uses the abstract namespace by default, so `socket=/run/x.sock`
//! there is `@/run/x.sock` here (or give DPDK `socket-abstract=no` and use the path).
#![allow(unsafe_code)]

mod control;
mod error;
mod msg;
mod port;
mod ring;
mod sys;
// A hostile peer on the control socket and the rings, driven by hand through msg, ring and
// sys (the tests reach these internals from inside the crate); region seals.
#[cfg(test)]
mod seal_tests;
// A hostile peer's interrupt fds, region sizes, control-socket flood, secrets, peer uid.
#[cfg(test)]
mod copy_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
// A ring left inconsistent by the peer: counted once, torn down, reconnected.
#[cfg(test)]
mod wedge_tests;
// Not API: the hostile-peer harness's view of a connection's memory (tests/memif_hostile.rs).
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::mem::{HugePages, Pool, PoolConfig, PoolError, Region};
use crate::pmd::Link;

pub use control::ControlError;
pub use port::MemifPort;

use ring::Ring;

/// Which side of the protocol this socket takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Listens on the socket and maps the client's memory (DPDK `role=server`, formerly
    /// "master").
    Server,
    /// Connects to the socket and owns the shared memory (DPDK `role=client`, formerly
    /// "slave").
    Client,
}

/// One interface on a control socket.
#[derive(Debug, Clone)]
pub struct InterfaceConfig {
    /// Interface id (both peers must use the same).
    pub id: u32,
    /// Queue pairs wanted; the connection uses the smaller of both peers' numbers.
    pub queue_pairs: u16,
    /// Descriptors per ring, log2 (1..=14; 10 by default). The client may lower it to the
    /// server's maximum.
    pub log2_ring_size: u8,
    /// Data bytes per packet buffer (2048 by default; DPDK's `bsize`).
    pub buffer_size: u32,
    /// Pool buffers beyond those the rings hold, for frames held by the application.
    pub extra_buffers: u32,
    /// Shared secret (at most 23 bytes), or none.
    pub secret: Option<String>,
    /// Interface name sent in CONNECT / CONNECTED.
    pub name: String,
    /// Ethernet address reported by [`Port::info`](crate::pmd::Port::info).
    pub mac: [u8; 6],
    /// Hugepage policy for the buffer pool (and, on the client, the rings).
    pub hugepages: HugePages,
    /// Client: copy each received frame out of the shared region into a private pool
    /// before the stack reads it (a server always does). Off by default: a received frame
    /// is then handed up as it lies in the region (zero copy), which the server can still
    /// write, also after the frame's checksums were verified, so a hostile server can
    /// change a message the application already holds. Turn it on when the peer may be
    /// hostile (docs/SECURITY.md). It costs one copy of each frame and a second pool of
    /// `queue_pairs * 2^log2_ring_size + extra_buffers` buffers
    /// ([`Memif::rx_copy_pool`]); a frame that finds it empty is dropped and counted in
    /// `PortStats::rx_no_buffer`.
    pub copy_rx: bool,
}

impl InterfaceConfig {
    /// Interface `id` with one queue pair and the defaults above.
    pub fn new(id: u32) -> InterfaceConfig {
        InterfaceConfig {
            id,
            queue_pairs: 1,
            log2_ring_size: 10,
            buffer_size: 2048,
            extra_buffers: 1024,
            secret: None,
            name: format!("bypass-memif{id}"),
            mac: [0x02, 0xb9, 0x70, 0, (id >> 8) as u8, id as u8],
            hugepages: HugePages::Prefer,
            copy_rx: false,
        }
    }
}

/// A control socket and its interfaces.
#[derive(Debug, Clone)]
pub struct MemifConfig {
    /// Path of the UNIX socket; `@name` for a name in the abstract namespace (DPDK's default).
    pub socket: PathBuf,
    /// Our role.
    pub role: Role,
    /// Interfaces on this socket (distinct ids).
    pub interfaces: Vec<InterfaceConfig>,
    /// How often a client retries connecting while the server is absent.
    pub reconnect_interval: Duration,
    /// Our software name sent in HELLO / INIT.
    pub app_name: String,
    /// Server: refuse a peer's region whose file is not sealed against shrinking
    /// (`F_SEAL_SHRINK`), with [`ControlError::RegionUnsealed`]. Off by default, for peers
    /// that do not seal: such a region is accepted with a warning and counted in
    /// [`Memif::unsealed_regions`]. A peer that truncates a region we mapped makes our next
    /// access to it fault (SIGBUS); turn this on when the peer may be hostile. (The client
    /// side maps only its own memory, which it seals.)
    pub require_sealed_regions: bool,
    /// Server: most bytes a peer's regions may add up to, per connection; a region that
    /// would go over is refused with [`ControlError::RegionTooLarge`]. `None` (the default)
    /// sizes it from the interface, see [`MemifConfig::peer_region_limit`]. Region sizes are
    /// the peer's choice: without a bound, a sparse 64 GiB memfd would be mapped as is.
    /// (Peer regions are never `mlock`ed or populated: see [`Region::from_fd`].)
    pub max_peer_region_bytes: Option<u64>,
    /// Server: most control connections waiting for their handshake at once (16 by
    /// default); one more drops the oldest, counted in [`Memif::pending_dropped`]. Each
    /// holds a descriptor: without a bound, a flood of idle connections would exhaust them.
    pub max_pending_handshakes: usize,
    /// Longest a handshake may take before its connection is dropped (5 s by default), so a
    /// stuck or hostile peer cannot hold an interface or a pending slot.
    pub handshake_timeout: Duration,
    /// Server: when set, only a peer running as this user id (`SO_PEERCRED`) may connect;
    /// others are refused with [`ControlError::PeerUid`] and counted in [`Memif::refused`].
    /// `None` by default: the socket file's permissions decide (an abstract socket has
    /// none: anyone in the network namespace can connect).
    pub allowed_uid: Option<u32>,
    /// How long a ring of a live connection may stay inconsistent (an index out of range, a
    /// posted buffer outside the peer's regions or of length 0, a descriptor chain never
    /// finished: no frame can move on it) while its port keeps polling it, before the
    /// control thread tears the connection down with [`ControlError::RingWedged`] (sent to
    /// the peer in a DISCONNECT, counted in [`Memif::rings_wedged`]); a client then
    /// reconnects, a server accepts again. 1 s by default: a peer's own indexes are never
    /// inconsistent, and one that rewrites and restores them (a hostile peer's transient
    /// mutation, held for microseconds, or a scheduler slice when it is preempted) is back
    /// in range long before; and a reconnect within about a second leaves the transport's
    /// connections above alive (their idle timeouts are seconds).
    pub wedge_timeout: Duration,
}

impl MemifConfig {
    /// One interface with id `id` on `socket` in `role`, with defaults.
    pub fn new(socket: impl Into<PathBuf>, role: Role, id: u32) -> MemifConfig {
        MemifConfig {
            socket: socket.into(),
            role,
            interfaces: vec![InterfaceConfig::new(id)],
            reconnect_interval: Duration::from_millis(100),
            app_name: "bypass".into(),
            require_sealed_regions: false,
            max_peer_region_bytes: None,
            max_pending_handshakes: 16,
            handshake_timeout: Duration::from_secs(5),
            allowed_uid: None,
            wedge_timeout: Duration::from_secs(1),
        }
    }

    /// The most bytes a peer's regions may add up to on interface `ic`:
    /// [`max_peer_region_bytes`](Self::max_peer_region_bytes) when set, else what the peer
    /// needs for `ic`'s queue pairs at the largest ring we offer in HELLO
    /// (2^[`MAX_LOG2_RING_SIZE`] descriptors): both rings per pair, one buffer of
    /// `buffer_size + 128` per descriptor, and `extra_buffers` more, all times 2 for
    /// slack (peers with larger buffers, their own layout), plus 16 MiB (hugepage rounding,
    /// small interfaces). The ring size is only known after the regions (ADD_RING comes
    /// later), so the limit assumes the largest. With the defaults (1 queue pair, 2048-byte
    /// buffers) that is about 160 MiB; DPDK's client at its largest (`rsize=14`) needs
    /// 64 MiB.
    pub fn peer_region_limit(&self, ic: &InterfaceConfig) -> u64 {
        if let Some(l) = self.max_peer_region_bytes {
            return l;
        }
        let ring = 1u64 << MAX_LOG2_RING_SIZE;
        let buf = ic.buffer_size as u64 + 128;
        let qp = ic.queue_pairs as u64;
        let need = 2 * qp * (ring::ring_bytes(MAX_LOG2_RING_SIZE) as u64 + ring * buf)
            + ic.extra_buffers as u64 * buf;
        2 * need + (16 << 20)
    }
}

/// Errors setting up a memif socket or taking a port.
#[derive(Debug, thiserror::Error)]
pub enum MemifError {
    /// The configuration is not usable.
    #[error("invalid memif configuration: {0}")]
    Config(String),
    /// The control socket could not be opened.
    #[error("memif socket {path}: {source}")]
    Socket {
        /// Socket path.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A buffer pool could not be built.
    #[error("memif buffer pool: {0}")]
    Pool(#[from] PoolError),
    /// The control thread could not be started.
    #[error("memif control thread: {0}")]
    Thread(std::io::Error),
    /// No interface with this id / queue on this socket.
    #[error("memif interface {id} has no queue {queue}")]
    NoSuchQueue {
        /// Interface id.
        id: u32,
        /// Queue index.
        queue: u16,
    },
    /// A server on this socket path is already open in this process (another [`Memif`]).
    #[error(
        "this process already serves memif socket {}: one Memif (one stack) per socket; it \
         serves many clients on interfaces of their own",
        path.display()
    )]
    AlreadyServed {
        /// Socket path.
        path: PathBuf,
    },
    /// The port for this queue was already taken.
    #[error("memif interface {id} queue {queue} is already taken")]
    QueueTaken {
        /// Interface id.
        id: u32,
        /// Queue index.
        queue: u16,
    },
}

/// Largest ring size we accept or offer (log2), as DPDK.
pub const MAX_LOG2_RING_SIZE: u8 = 14;
/// Most regions a peer may add.
pub const MAX_REGIONS: usize = 16;
/// Most queue pairs per interface.
pub const MAX_QUEUE_PAIRS: u16 = 255;

/// A mapped memif region as the data path sees it: base and length. The mapping's owner is
/// kept in the same [`Conn`].
#[derive(Debug, Clone, Copy)]
struct RegionMap {
    base: *mut u8,
    len: usize,
}

/// The rings of one queue pair on a live connection.
#[derive(Debug, Clone, Copy)]
struct QueueRings {
    tx: Ring,
    rx: Ring,
    /// The eventfd to signal after transmitting, when the peer asks for interrupts: an index
    /// into [`Conn::fds`].
    tx_int: Option<usize>,
    /// The eventfd the peer signals after transmitting to us while our receive ring's
    /// `RING_FLAG_MASK_INT` is clear (a sleeping loop): an index into [`Conn::fds`].
    rx_int: Option<usize>,
}

/// One live connection: the mappings and rings. Shared (Arc) by the control thread and the
/// ports; the mappings stay valid while any port still holds it, so a port never touches
/// unmapped memory even while the control thread tears the connection down.
struct Conn {
    alive: AtomicBool,
    regions: Vec<RegionMap>,
    queues: Vec<QueueRings>,
    peer: String,
    /// Owners of the mappings and descriptors the pointers above refer to.
    _regions: Vec<Region>,
    _pool: Option<Pool>,
    /// Ring eventfds, held open for the connection's life ([`QueueRings::tx_int`] and
    /// [`QueueRings::rx_int`] index it).
    fds: Vec<OwnedFd>,
}

// SAFETY: the raw pointers in `regions`/`queues` point into mappings owned by this same
// struct (`_regions`, `_pool`), which live as long as it does; all access through them is
// atomic or volatile (rings) or into buffers handed over by the ring protocol.
unsafe impl Send for Conn {}
// SAFETY: see Send; shared access only reads the pointers.
unsafe impl Sync for Conn {}

impl Conn {
    /// The address of `len` bytes at `offset` of region `region`, if all of it lies inside
    /// the region.
    #[inline]
    fn buffer(&self, region: u16, offset: u32, len: u32) -> Option<*mut u8> {
        let r = self.regions.get(region as usize)?;
        if offset as u64 + len as u64 > r.len as u64 {
            return None;
        }
        // SAFETY: offset + len <= r.len, so the pointer stays inside the mapping.
        Some(unsafe { r.base.add(offset as usize) })
    }
}

/// State of one interface shared by the control thread and its ports.
struct IfShared {
    cfg: InterfaceConfig,
    role: Role,
    socket: PathBuf,
    /// Bumped (Release) after `conn` changes, while its lock is still held (so that a
    /// port that reads both under the lock gets the pair that goes together); ports compare
    /// it once per burst.
    gen: AtomicU64,
    conn: Mutex<Option<Arc<Conn>>>,
    /// Client: the shared buffer pool (memif region 1). Server: the local pool frames are
    /// copied into.
    pool: Pool,
    /// Client with [`InterfaceConfig::copy_rx`]: the private pool received frames are
    /// copied into.
    rx_copy: Option<Pool>,
    taken: Mutex<Vec<bool>>,
    last_error: Mutex<Option<ControlError>>,
    connects: AtomicU64,
    /// Server: peer regions that arrived without `F_SEAL_SHRINK`.
    unsealed_regions: AtomicU64,
    /// Interrupts not signalled because the peer's eventfd counter was full.
    interrupts_skipped: AtomicU64,
    /// Handshakes on this interface that ended before its link came up.
    handshakes_failed: AtomicU64,
    /// What each port found wrong with its rings, for the control thread: two per queue pair
    /// (`2 * queue + 0` the port's receive ring, `+ 1` its transmit ring).
    rings: Box<[RingWatch]>,
    /// Connections torn down because a ring stayed wedged ([`ControlError::RingWedged`]).
    rings_wedged: AtomicU64,
}

/// One ring's health as its port last saw it, written by the port only when it changes (and
/// on each burst that finds it wrong), read by the control thread: a ring that stays wrong
/// for [`MemifConfig::wedge_timeout`] while the port keeps polling it is torn down.
#[derive(Default)]
struct RingWatch {
    /// 0 while the ring is consistent; else `episode << 8 | fault code` (see
    /// `port::Fault`): a new episode each time the port finds the ring wrong anew.
    state: AtomicU64,
    /// Bursts of the current episode that found the ring wrong.
    bursts: AtomicU64,
}

impl IfShared {
    fn publish(&self, conn: Option<Arc<Conn>>) {
        let mut g = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = g.take() {
            old.alive.store(false, Ordering::Release);
        }
        if conn.is_some() {
            self.connects.fetch_add(1, Ordering::Relaxed);
        }
        *g = conn;
        self.gen.fetch_add(1, Ordering::Release);
        drop(g);
    }

    fn set_error(&self, e: ControlError) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
    }
}

/// State shared by the [`Memif`] handle and its control thread.
struct Shared {
    cfg: MemifConfig,
    ifaces: Vec<Arc<IfShared>>,
    stop: AtomicBool,
    wake: OwnedFd,
    refused: AtomicU64,
    /// Server: pending connections dropped to stay within `max_pending_handshakes` (or to
    /// free a descriptor after `accept` failed).
    pending_dropped: AtomicU64,
    /// Server: `accept` failures (out of descriptors or memory), each followed by a pause.
    accept_errors: AtomicU64,
    /// Server: connections in their handshake now (updated by the control thread).
    pending: AtomicUsize,
}

/// A memif control socket with its interfaces and control thread. Dropping it disconnects
/// every interface (ports still held see the link go down) and, for a server, removes the
/// socket file.
pub struct Memif {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// Server: this process's claim on the socket path (released after `Drop` removed the
    /// socket file).
    _served: Option<Served>,
}

/// The socket paths memif servers of this process listen on.
static SERVED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A server's claim on its socket path in [`SERVED`]: a second server of the same process on
/// the same path is refused with [`MemifError::AlreadyServed`] instead of finding the path
/// taken "by another process".
struct Served(PathBuf);

impl Served {
    fn claim(path: &std::path::Path) -> Result<Served, MemifError> {
        let mut served = SERVED.lock().unwrap_or_else(|e| e.into_inner());
        if served.iter().any(|p| p == path) {
            return Err(MemifError::AlreadyServed {
                path: path.to_path_buf(),
            });
        }
        served.push(path.to_path_buf());
        Ok(Served(path.to_path_buf()))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let mut served = SERVED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = served.iter().position(|p| *p == self.0) {
            served.swap_remove(i);
        }
    }
}

impl std::fmt::Debug for Memif {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memif")
            .field("socket", &self.shared.cfg.socket)
            .field("role", &self.shared.cfg.role)
            .finish()
    }
}

impl Memif {
    /// Open the control socket (listen or start connecting) and start the control thread.
    pub fn new(cfg: MemifConfig) -> Result<Memif, MemifError> {
        validate(&cfg)?;
        let mut ifaces = Vec::with_capacity(cfg.interfaces.len());
        for ic in &cfg.interfaces {
            let ring = 1u32 << ic.log2_ring_size;
            let slots = ic.queue_pairs as u32 * 2 * ring + ic.extra_buffers;
            // A server also takes frames a client sends from the headroom of its buffers
            // (chains up to buffer_size + 128 bytes), so its local slots have that much more.
            let (kind, extra) = match cfg.role {
                Role::Client => ("shm", 0),
                Role::Server => ("local", 128),
            };
            let mut pc = PoolConfig::new(
                &format!("memif{}-{kind}", ic.id),
                slots,
                ic.buffer_size + 128 + extra,
            );
            pc.headroom = 128;
            pc.hugepages = ic.hugepages;
            let pool = Pool::new(&pc)?;
            if pool.region().len() > u32::MAX as usize {
                return Err(MemifError::Config(
                    "buffer pool over 4 GiB: memif offsets are 32-bit".into(),
                ));
            }
            // A client's received frames, copied out of the region the server writes: as
            // many as its receive rings hold, plus those the application keeps.
            let rx_copy = if cfg.role == Role::Client && ic.copy_rx {
                let mut rc = PoolConfig::new(
                    &format!("memif{}-rx", ic.id),
                    ic.queue_pairs as u32 * ring + ic.extra_buffers,
                    ic.buffer_size + 128,
                );
                rc.headroom = 128;
                rc.hugepages = ic.hugepages;
                Some(Pool::new(&rc)?)
            } else {
                None
            };
            ifaces.push(Arc::new(IfShared {
                cfg: ic.clone(),
                role: cfg.role,
                socket: cfg.socket.clone(),
                gen: AtomicU64::new(0),
                conn: Mutex::new(None),
                pool,
                rx_copy,
                taken: Mutex::new(vec![false; ic.queue_pairs as usize]),
                last_error: Mutex::new(None),
                connects: AtomicU64::new(0),
                unsealed_regions: AtomicU64::new(0),
                interrupts_skipped: AtomicU64::new(0),
                handshakes_failed: AtomicU64::new(0),
                rings: (0..2 * ic.queue_pairs as usize)
                    .map(|_| RingWatch::default())
                    .collect(),
                rings_wedged: AtomicU64::new(0),
            }));
        }
        let wake = sys::eventfd().map_err(|source| MemifError::Socket {
            path: cfg.socket.clone(),
            source,
        })?;
        // Listen last, so a failure above leaves no socket file behind.
        let (listener, served) = match cfg.role {
            Role::Server => {
                // Before listen: its probe of a live socket would take ours for another
                // process's.
                let served = Served::claim(&cfg.socket)?;
                // Room for as many clients connecting at once as may be in their handshake.
                let backlog = cfg.max_pending_handshakes.clamp(16, 4096) as i32;
                let l = sys::listen_backlog(&cfg.socket, backlog).map_err(|source| {
                    MemifError::Socket {
                        path: cfg.socket.clone(),
                        source,
                    }
                })?;
                (Some(l), Some(served))
            }
            Role::Client => (None, None),
        };
        let shared = Arc::new(Shared {
            cfg,
            ifaces,
            stop: AtomicBool::new(false),
            wake,
            refused: AtomicU64::new(0),
            pending_dropped: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
        });
        let ctl = control::Control::new(shared.clone(), listener);
        let thread = std::thread::Builder::new()
            .name("memif-ctl".into())
            .spawn(move || ctl.run())
            .map_err(|e| {
                if shared.cfg.role == Role::Server && !sys::is_abstract(&shared.cfg.socket) {
                    let _ = std::fs::remove_file(&shared.cfg.socket);
                }
                MemifError::Thread(e)
            })?;
        Ok(Memif {
            shared,
            thread: Some(thread),
            _served: served,
        })
    }

    /// Our role on the socket.
    pub fn role(&self) -> Role {
        self.shared.cfg.role
    }

    /// The socket's path (`@name`: in the abstract namespace).
    pub fn socket(&self) -> &std::path::Path {
        &self.shared.cfg.socket
    }

    fn iface(&self, id: u32) -> Option<&Arc<IfShared>> {
        self.shared.ifaces.iter().find(|i| i.cfg.id == id)
    }

    /// The port for queue pair `queue` of interface `id` (each can be taken once).
    pub fn port(&self, id: u32, queue: u16) -> Result<MemifPort, MemifError> {
        let i = self
            .iface(id)
            .ok_or(MemifError::NoSuchQueue { id, queue })?;
        let mut taken = i.taken.lock().unwrap_or_else(|e| e.into_inner());
        match taken.get_mut(queue as usize) {
            None => Err(MemifError::NoSuchQueue { id, queue }),
            Some(true) => Err(MemifError::QueueTaken { id, queue }),
            Some(t) => {
                *t = true;
                Ok(MemifPort::new(i.clone(), queue))
            }
        }
    }

    /// Link state of interface `id` (Down for an unknown id).
    pub fn link(&self, id: u32) -> Link {
        match self.iface(id) {
            Some(i) if i.gen.load(Ordering::Acquire) > 0 => {
                let g = i.conn.lock().unwrap_or_else(|e| e.into_inner());
                match &*g {
                    Some(c) if c.alive.load(Ordering::Acquire) => Link::Up { speed_mbps: 0 },
                    _ => Link::Down,
                }
            }
            _ => Link::Down,
        }
    }

    /// Wait up to `timeout` for interface `id` to come up; true when it did.
    pub fn wait_up(&self, id: u32, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if self.link(id).is_up() {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Number of queue pairs the live connection of interface `id` uses (0 when down).
    pub fn active_queues(&self, id: u32) -> u16 {
        self.iface(id)
            .and_then(|i| {
                i.conn
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map(|c| c.queues.len() as u16)
            })
            .unwrap_or(0)
    }

    /// The peer's software / interface name on the live connection of interface `id`.
    pub fn peer_name(&self, id: u32) -> Option<String> {
        self.iface(id).and_then(|i| {
            i.conn
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|c| c.peer.clone())
        })
    }

    /// How many times interface `id` has connected.
    pub fn connects(&self, id: u32) -> u64 {
        self.iface(id)
            .map(|i| i.connects.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Server: regions interface `id`'s peers passed without sealing them against shrinking
    /// (each warned about, or refused with
    /// [`MemifConfig::require_sealed_regions`]). Always 0 on a client.
    pub fn unsealed_regions(&self, id: u32) -> u64 {
        self.iface(id)
            .map(|i| i.unsealed_regions.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Handshakes on interface `id` that ended after its INIT was accepted and before its
    /// link came up: refused (a region too large or unsealed, a bad ring, a protocol error:
    /// [`last_error`](Self::last_error) says which was last), timed out, or abandoned by the
    /// peer. Those refused at or before INIT (a wrong secret or id, an interface already
    /// connected) are in [`refused`](Self::refused); pending ones dropped to make room in
    /// [`pending_dropped`](Self::pending_dropped) only.
    pub fn handshakes_failed(&self, id: u32) -> u64 {
        self.iface(id)
            .map(|i| i.handshakes_failed.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Connections of interface `id` torn down because one of their rings stayed wedged
    /// for [`MemifConfig::wedge_timeout`] ([`ControlError::RingWedged`]; the peer was told
    /// why in a DISCONNECT, and [`last_error`](Self::last_error) names the ring). Each wedge
    /// counts one `rx_errors` on the port when it is first seen, not one per burst.
    pub fn rings_wedged(&self, id: u32) -> u64 {
        self.iface(id)
            .map(|i| i.rings_wedged.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// The last protocol error seen on interface `id` (a refused peer, a dropped connection).
    pub fn last_error(&self, id: u32) -> Option<ControlError> {
        self.iface(id).and_then(|i| {
            i.last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        })
    }

    /// Control connections refused before they named an interface (server: bad INIT, unknown
    /// id, malformed first message).
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// Server: pending control connections dropped because
    /// [`MemifConfig::max_pending_handshakes`] were already waiting (the oldest goes), or to
    /// free a descriptor after `accept` failed.
    pub fn pending_dropped(&self) -> u64 {
        self.shared.pending_dropped.load(Ordering::Relaxed)
    }

    /// Server: control connections in their handshake now (at most
    /// [`MemifConfig::max_pending_handshakes`]).
    pub fn pending_handshakes(&self) -> usize {
        self.shared.pending.load(Ordering::Relaxed)
    }

    /// Server: `accept` failures (out of descriptors or memory); after each the listener
    /// pauses (10 ms, doubling up to 1 s) instead of spinning.
    pub fn accept_errors(&self) -> u64 {
        self.shared.accept_errors.load(Ordering::Relaxed)
    }

    /// Interrupts interface `id`'s ports did not signal because the peer's eventfd counter
    /// was full (the write would have blocked; the frames were sent regardless).
    pub fn interrupts_skipped(&self, id: u32) -> u64 {
        self.iface(id)
            .map(|i| i.interrupts_skipped.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// The buffer pool of interface `id` (client: the shared region; server: local).
    pub fn pool(&self, id: u32) -> Option<Pool> {
        self.iface(id).map(|i| i.pool.clone())
    }

    /// The private pool a client's received frames are copied into
    /// ([`InterfaceConfig::copy_rx`]); `None` without it (or on a server, which copies into
    /// [`Memif::pool`]).
    pub fn rx_copy_pool(&self, id: u32) -> Option<Pool> {
        self.iface(id).and_then(|i| i.rx_copy.clone())
    }
}

impl Drop for Memif {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        sys::eventfd_signal(self.shared.wake.as_fd());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if self.shared.cfg.role == Role::Server && !sys::is_abstract(&self.shared.cfg.socket) {
            let _ = std::fs::remove_file(&self.shared.cfg.socket);
        }
    }
}

fn validate(cfg: &MemifConfig) -> Result<(), MemifError> {
    let bad = |s: &str| Err(MemifError::Config(s.into()));
    if cfg.interfaces.is_empty() {
        return bad("no interface");
    }
    for (n, i) in cfg.interfaces.iter().enumerate() {
        if cfg.interfaces[..n].iter().any(|j| j.id == i.id) {
            return bad("two interfaces with the same id");
        }
        if i.queue_pairs == 0 || i.queue_pairs > MAX_QUEUE_PAIRS {
            return bad("queue_pairs must be 1..=255");
        }
        if !(1..=MAX_LOG2_RING_SIZE).contains(&i.log2_ring_size) {
            return bad("log2_ring_size must be 1..=14");
        }
        if i.buffer_size < 64 || i.buffer_size > 65535 {
            return bad("buffer_size must be 64..=65535");
        }
        if i.secret
            .as_ref()
            .is_some_and(|s| s.len() >= msg::SECRET_LEN)
        {
            return bad("secret longer than 23 bytes");
        }
    }
    Ok(())
}
