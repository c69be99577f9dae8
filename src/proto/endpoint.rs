//! The endpoint: demultiplexes datagrams to connections by destination connection id,
//! answers handshakes statelessly, and owns the connections.
//!
//! Handshake (see docs/WIRE.md):
//! 1. client -> server `CONNECT` with dst cid 0 and its random cid as src (the hello);
//! 2. server -> client `ACCEPT` whose src cid is a cookie: a keyed hash (SipHash-2-4 under
//!    the caller's secret) of the client's address, the client's cid and a time bucket. The
//!    server keeps no state;
//! 3. client -> server `CONNECT` with dst = the cookie (the confirm, ack-eliciting and
//!    retransmitted until acked). Only a confirm whose cookie verifies for the current or the
//!    previous bucket creates server state.
//!
//! A spoofed hello costs one stateless ACCEPT (queue bounded, counted); a forged confirm fails
//! verification; packets for unknown ids are counted and dropped. No reply is sent to
//! unknown ids, so a reordered packet can never kill a connection that is being set up.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use super::cc::swift::SwiftFactory;
use super::cc::ControllerFactory;
use super::connection::{Budget, Connection, ConnectionStats, Side};
use super::cookie::siphash24;
use super::{ConnectionConfig, Instant};
use crate::mem::PktBuf;
use crate::rng::SplitMix64;
use crate::wire::transport::{Kind, Packet, Repr, FLAG_ACK_NOW, FLAG_INTACT};

/// A datagram [`Endpoint::poll_transmit_ex`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where it goes.
    pub dst: SocketAddr,
    /// It needs a UDP checksum. False only for a connection whose both ends advertised an
    /// intact link ([`ConnectionConfig::link_intact`]); the hello and the stateless replies
    /// (ACCEPT, RESET) always need one.
    pub checksum: bool,
}

/// Endpoint settings.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Secret for handshake cookies (SipHash-2-4 key). Default: the process's own key, drawn
    /// once from the OS ([`crate::rng::os_u64`]), so that nobody can forge cookies from a
    /// key written in the source. Should the OS have no randomness to give (no
    /// `getrandom(2)` and no `/dev/urandom`), the default is the all-zero key, which the
    /// endpoint takes as *no key*: it answers no hello (each counted in
    /// [`EndpointStats::no_cookie_key`]) and logs an error, rather than accept with a key
    /// anyone could guess. Tests that need repeatable cookies set their own.
    pub cookie_key: [u64; 2],
    /// Cookie time bucket; a cookie is valid for one to two periods.
    pub cookie_period: Duration,
    /// Accept incoming connections (server role).
    pub accept: bool,
    /// Most live connections.
    pub max_connections: usize,
    /// Most connections accepted from one source IP address (whatever its ports) alive at
    /// once; a verified confirm past it is refused and counted
    /// ([`EndpointStats::refused_per_source`]). Default 64.
    ///
    /// Why: the cookie proves only that the source can receive at its address, so without
    /// it one host could fill the whole connection table ([`max_connections`](Self::max_connections),
    /// 1024 by default) and starve every other; 64 leaves room for 16 such hosts and is far
    /// above what one client process opens in practice. Connections this endpoint opened
    /// itself ([`Endpoint::connect`]) do not count.
    pub max_connections_per_source: usize,
    /// Bytes of reassembly buffers all connections together may hold, charged by what the
    /// buffers hold (they grow with the bytes received), not by the lengths messages claim.
    /// Default 4 GiB.
    pub rx_budget: u64,
    /// Most stateless answers queued (more are dropped and counted).
    pub stateless_queue: usize,
    /// Settings for each connection.
    pub conn: ConnectionConfig,
    /// Congestion controller factory (default: Swift with
    /// [`SwiftConfig::software`](super::cc::swift::SwiftConfig::software); a fixed window is
    /// [`FixedWindowFactory`](super::cc::FixedWindowFactory)).
    pub cc: Arc<dyn ControllerFactory>,
    /// A gap at least this long between two iterations of the loop that drives the endpoint
    /// ([`Endpoint::note_poll`]) is a stall: the loop was descheduled (or the application
    /// kept it from polling) and what arrived meanwhile waited for it. A receiver adds the
    /// stall to the hold time it echoes and flags it; a sender does not read the delays of
    /// the ACKs it finds after one as a queue ([`AckEvent::stalled`]). Default 50 us: above
    /// an iteration of a running loop, below a scheduler slice (milliseconds).
    ///
    /// [`AckEvent::stalled`]: super::cc::AckEvent::stalled
    pub stall_threshold: Duration,
}

impl Default for EndpointConfig {
    fn default() -> EndpointConfig {
        EndpointConfig {
            cookie_key: process_cookie_key(),
            cookie_period: Duration::from_secs(10),
            accept: true,
            max_connections: 1024,
            max_connections_per_source: 64,
            rx_budget: 4 << 30,
            stateless_queue: 64,
            conn: ConnectionConfig::default(),
            cc: Arc::new(SwiftFactory::software()),
            stall_threshold: Duration::from_micros(50),
        }
    }
}

/// The process's cookie key: drawn from the OS once, the all-zero key (no key: the endpoint
/// answers no hello) if the OS has no randomness to give. See [`EndpointConfig::cookie_key`].
fn process_cookie_key() -> [u64; 2] {
    static KEY: std::sync::OnceLock<[u64; 2]> = std::sync::OnceLock::new();
    *KEY.get_or_init(|| match (crate::rng::os_u64(), crate::rng::os_u64()) {
        (Ok(a), Ok(b)) if [a, b] != [0, 0] => [a, b],
        (a, b) => {
            tracing::error!(
                "no randomness from the OS for the handshake cookie key ({:?}): endpoints \
                     with the default EndpointConfig::cookie_key accept no connection",
                a.and(b).err()
            );
            [0, 0]
        }
    })
}

/// Endpoint counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Datagrams handed to `handle`.
    pub rx_datagrams: u64,
    /// Datagrams whose transport header did not parse.
    pub rx_malformed: u64,
    /// Datagrams for connection ids we do not have (dropped, no state, no reply).
    pub rx_unknown_cid: u64,
    /// Datagrams for a known id from another address (dropped).
    pub rx_wrong_addr: u64,
    /// Hellos answered with a stateless ACCEPT.
    pub hellos: u64,
    /// Confirms whose cookie did not verify (dropped, no state).
    pub bad_cookies: u64,
    /// Connections created by a verified confirm.
    pub accepted: u64,
    /// Verified confirms refused for lack of room.
    pub refused: u64,
    /// Verified confirms refused because their source address already had
    /// [`EndpointConfig::max_connections_per_source`] connections.
    pub refused_per_source: u64,
    /// Hellos left unanswered because the endpoint has no cookie key (the all-zero key: the
    /// OS had no randomness for the default, see [`EndpointConfig::cookie_key`]).
    pub no_cookie_key: u64,
    /// Stateless answers dropped because the queue was full.
    pub stateless_dropped: u64,
    /// Connections freed.
    pub freed: u64,
    /// Datagrams without a UDP checksum (0 in the field) where none was agreed: a hello, a
    /// confirm unless both ends offer `INTACT`, or a packet of a connection whose ends did
    /// not both offer it (dropped: corruption on the way would have gone unnoticed).
    pub rx_no_checksum: u64,
    /// `ConnectionStats::rx_refused` of every connection, freed and live, summed: packets
    /// refused over a receive limit (credit, `max_message`, `max_rx_buffer`, `rx_budget`) or
    /// because a reassembly buffer could not grow.
    pub conn_rx_refused: u64,
    /// `ConnectionStats::rx_alloc_failed` of every connection, summed (also in
    /// `conn_rx_refused`).
    pub conn_rx_alloc_failed: u64,
    /// `ConnectionStats::rx_slots_copied` of every connection, summed.
    pub conn_rx_slots_copied: u64,
}

impl EndpointStats {
    /// Add a connection's receive-limit counters to the `conn_*` totals.
    fn add_connection(&mut self, c: &ConnectionStats) {
        self.conn_rx_refused += c.rx_refused;
        self.conn_rx_alloc_failed += c.rx_alloc_failed;
        self.conn_rx_slots_copied += c.rx_slots_copied;
    }
}

/// Names a connection of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionHandle(pub u32);

/// Why [`Endpoint::connect`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// `max_connections` reached.
    #[error("too many connections")]
    TooManyConnections,
}

#[derive(Default)]
struct CidHasher(u64);

impl Hasher for CidHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        // Ids are random (client) or keyed hashes (server): spread, don't re-hash.
        self.0 = v.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Demultiplexer and owner of connections. See the [module docs](super) for the call order.
pub struct Endpoint {
    cfg: EndpointConfig,
    rng: SplitMix64,
    budget: Budget,
    conns: Vec<Option<Connection>>,
    free: Vec<u32>,
    by_cid: HashMap<u64, u32, BuildHasherDefault<CidHasher>>,
    stateless: VecDeque<(SocketAddr, Repr)>,
    incoming: VecDeque<ConnectionHandle>,
    sched: Sched,
    live: usize,
    stats: EndpointStats,
    /// Live accepted connections per source address
    /// ([`EndpointConfig::max_connections_per_source`]).
    per_source: HashMap<IpAddr, u32>,
    /// The last iteration of the driving loop ([`Endpoint::note_poll`]); `None`: not told.
    last_poll: Option<Instant>,
}

/// What keeps the endpoint's per-poll work independent of how many connections are idle.
///
/// A connection's deadline ([`Connection::poll_timeout`]) and whether it may have something
/// to send change only when something happens to it: a datagram for it, its timer firing,
/// a transmission, or the application reaching it through [`Endpoint::connection`]. Each of
/// those *touches* the connection: it goes on the dirty list (deadline to recompute) and the
/// ready queue (to be asked for a datagram). Deadlines live in a min-heap with lazy deletion
/// (an entry is current only if its generation matches the slot's); the ready queue is
/// served round-robin, one datagram per turn, and a connection leaves it when it has nothing
/// to send. So `poll_timeout`, `handle_timeout` and `poll_transmit` cost O(touched log n), not
/// O(connections).
struct Sched {
    /// Per slot: generation of its current heap entry; whether it is on `dirty` / `ready`.
    gen: Vec<u32>,
    /// Per slot: the time of its current heap entry (None: it has none). A connection whose
    /// deadline moved later keeps its earlier entry (see `Endpoint::refresh`).
    due: Vec<Option<Instant>>,
    in_dirty: Vec<bool>,
    in_ready: Vec<bool>,
    dirty: Vec<u32>,
    ready: VecDeque<u32>,
    heap: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// Slots touched or freed since the last [`Endpoint::drain_changed`] (and whether a
    /// slot is on the list), for publishers that copy per-connection state out.
    in_changed: Vec<bool>,
    changed: Vec<u32>,
    /// Slots that got a message or an event since the application last took the list
    /// ([`Endpoint::pop_readable`]), and whether a slot is on it: the readiness event list.
    in_readable: Vec<bool>,
    readable: VecDeque<u32>,
    /// Per slot: an application object names it ([`Endpoint::hold`]); the slot is not
    /// reused while held, even after its connection was freed.
    held: Vec<bool>,
}

impl Sched {
    fn with_capacity(cap: usize) -> Sched {
        Sched {
            gen: Vec::with_capacity(cap),
            due: Vec::with_capacity(cap),
            in_dirty: Vec::with_capacity(cap),
            in_ready: Vec::with_capacity(cap),
            dirty: Vec::with_capacity(cap),
            ready: VecDeque::with_capacity(cap),
            heap: BinaryHeap::with_capacity(2 * cap + 64),
            in_changed: Vec::with_capacity(cap),
            changed: Vec::with_capacity(cap),
            in_readable: Vec::with_capacity(cap),
            readable: VecDeque::with_capacity(cap),
            held: Vec::with_capacity(cap),
        }
    }

    /// Slot `i` exists (a new connection may extend the table).
    fn grow(&mut self, i: usize) {
        while self.gen.len() <= i {
            self.gen.push(0);
            self.due.push(None);
            self.in_dirty.push(false);
            self.in_ready.push(false);
            self.in_changed.push(false);
            self.in_readable.push(false);
            self.held.push(false);
        }
    }

    /// It has something for the application (a message, an event): on the event list.
    #[inline]
    fn mark_readable(&mut self, i: u32) {
        let k = i as usize;
        if !self.in_readable[k] {
            self.in_readable[k] = true;
            self.readable.push_back(i);
        }
    }

    #[inline]
    fn touch(&mut self, i: u32) {
        self.touch_timers(i);
        self.make_ready(i);
    }

    /// Its deadlines are recomputed at the next `refresh`.
    #[inline]
    fn touch_timers(&mut self, i: u32) {
        let k = i as usize;
        if !self.in_dirty[k] {
            self.in_dirty[k] = true;
            self.dirty.push(i);
        }
        self.mark_changed(i);
    }

    /// Its state may have changed (or it was freed): a publisher should look at it.
    #[inline]
    fn mark_changed(&mut self, i: u32) {
        let k = i as usize;
        if !self.in_changed[k] {
            self.in_changed[k] = true;
            self.changed.push(i);
        }
    }

    /// It is asked to transmit at the next `poll_transmit`.
    #[inline]
    fn make_ready(&mut self, i: u32) {
        let k = i as usize;
        if !self.in_ready[k] {
            self.in_ready[k] = true;
            self.ready.push_back(i);
        }
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("live", &self.live)
            .field("stats", &self.stats)
            .finish()
    }
}

impl Endpoint {
    /// An endpoint; `seed` drives connection-id generation (give it real randomness in
    /// production, a fixed value in tests).
    pub fn new(cfg: EndpointConfig, seed: u64) -> Endpoint {
        let cap = cfg.max_connections.min(1 << 16);
        Endpoint {
            budget: Budget {
                used: Arc::new(AtomicU64::new(0)),
                limit: cfg.rx_budget,
            },
            rng: SplitMix64::new(seed),
            conns: Vec::with_capacity(cap),
            free: Vec::with_capacity(cap),
            by_cid: HashMap::with_capacity_and_hasher(cap, Default::default()),
            stateless: VecDeque::with_capacity(cfg.stateless_queue),
            incoming: VecDeque::with_capacity(cap),
            sched: Sched::with_capacity(cap),
            live: 0,
            stats: EndpointStats::default(),
            per_source: HashMap::with_capacity(cap.min(1024)),
            last_poll: None,
            cfg,
        }
    }

    /// Counters. The `conn_*` totals read every live connection: O(connection slots), for a
    /// publish tick or a test, not per packet.
    pub fn stats(&self) -> EndpointStats {
        let mut s = self.stats;
        for c in self.conns.iter().flatten() {
            s.add_connection(&c.stats());
        }
        s
    }

    /// The counters of the endpoint and of the connections already freed: [`stats`]
    /// without the live connections' `conn_*` counters. O(1): a publisher adds the live ones
    /// it follows through [`drain_changed`](Self::drain_changed).
    ///
    /// [`stats`]: Self::stats
    pub fn base_stats(&self) -> EndpointStats {
        self.stats
    }

    /// Visit each connection slot touched (a packet handled, a timer, a transmission, the
    /// application through [`connection`](Self::connection)) or freed since the last call,
    /// once: `f(handle, Some(connection))`, or `None` for a slot whose connection was freed
    /// since (a slot freed and taken again by a new connection in between shows the new
    /// one). For publishers that copy per-connection state out on a tick: O(changed), not
    /// O(connections), and nothing is rescheduled (what `f` may change through the `&mut`
    /// must not move a deadline: draining RTT samples, reading stats). Idle connections are
    /// not visited.
    pub fn drain_changed(&mut self, mut f: impl FnMut(ConnectionHandle, Option<&mut Connection>)) {
        while let Some(i) = self.sched.changed.pop() {
            let k = i as usize;
            self.sched.in_changed[k] = false;
            f(ConnectionHandle(i), self.conns[k].as_mut());
        }
    }

    /// The next connection that got a message or an event (a connection established or
    /// closed, a message acknowledged) since it was last taken from this list, each once
    /// however much it got: the readiness event list, O(1) per connection, never a scan of
    /// all connections. The connection may have been freed since (check
    /// [`connection_ref`](Self::connection_ref)). Bounded by the connection slots: a list
    /// nobody takes costs nothing but its slots.
    #[inline]
    pub fn pop_readable(&mut self) -> Option<ConnectionHandle> {
        let i = self.sched.readable.pop_front()?;
        self.sched.in_readable[i as usize] = false;
        Some(ConnectionHandle(i))
    }

    /// Put `h` on the event list ([`pop_readable`](Self::pop_readable)) if its connection has
    /// a message or an event waiting; false if it has none (or is gone).
    #[inline]
    pub fn requeue_readable(&mut self, h: ConnectionHandle) -> bool {
        let Some(c) = self.connection_ref(h) else {
            return false;
        };
        if !(c.has_recv() || c.has_event()) {
            return false;
        }
        self.sched.mark_readable(h.0);
        true
    }

    /// Whether `h` has a message waiting (without rescheduling it).
    #[inline]
    pub fn has_recv(&self, h: ConnectionHandle) -> bool {
        self.connection_ref(h).is_some_and(|c| c.has_recv())
    }

    /// An application object names `h` (a socket): its slot is not given to another
    /// connection, even once this one is freed, until [`release`](Self::release), so the
    /// handle keeps naming this connection (or none) for as long as it is held. False (and
    /// nothing held) if the connection is already gone.
    pub fn hold(&mut self, h: ConnectionHandle) -> bool {
        let k = h.0 as usize;
        if self.conns.get(k).is_none_or(|c| c.is_none()) {
            return false;
        }
        self.sched.held[k] = true;
        true
    }

    /// Let go of a slot taken with [`hold`](Self::hold): if its connection was freed
    /// meanwhile, the slot is free for the next connection.
    pub fn release(&mut self, h: ConnectionHandle) {
        let k = h.0 as usize;
        if !self.sched.held.get(k).copied().unwrap_or(false) {
            return;
        }
        self.sched.held[k] = false;
        if self.conns[k].is_none() {
            self.free.push(h.0);
        }
    }

    /// Whether `h` is held ([`hold`](Self::hold)).
    #[inline]
    pub fn is_held(&self, h: ConnectionHandle) -> bool {
        self.sched.held.get(h.0 as usize).copied().unwrap_or(false)
    }

    /// Live connections (including closed ones whose last event was not taken yet).
    pub fn connection_count(&self) -> usize {
        self.live
    }

    /// Bytes of reassembly buffers held by all connections.
    pub fn rx_buffered(&self) -> u64 {
        self.budget.used.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The connection behind a handle (`None` once freed). The caller may change it, so it
    /// is rescheduled (its deadline recomputed, asked for datagrams) at the next poll.
    pub fn connection(&mut self, h: ConnectionHandle) -> Option<&mut Connection> {
        let c = self.conns.get_mut(h.0 as usize).and_then(|c| c.as_mut())?;
        self.sched.touch(h.0);
        Some(c)
    }

    /// The connection behind a handle, read-only and without rescheduling it: for checks
    /// that run on every spin of a busy-polling caller (is a message or an event waiting?),
    /// which must not make each poll recompute the connection's deadline.
    pub fn connection_ref(&self, h: ConnectionHandle) -> Option<&Connection> {
        self.conns.get(h.0 as usize).and_then(|c| c.as_ref())
    }

    /// Handles of all live connections.
    pub fn handles(&self) -> impl Iterator<Item = ConnectionHandle> + '_ {
        self.conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_some())
            .map(|(i, _)| ConnectionHandle(i as u32))
    }

    fn insert(&mut self, c: Connection) -> ConnectionHandle {
        let cid = c.local_cid;
        let i = match self.free.pop() {
            Some(i) => {
                self.conns[i as usize] = Some(c);
                i
            }
            None => {
                self.conns.push(Some(c));
                (self.conns.len() - 1) as u32
            }
        };
        self.by_cid.insert(cid, i);
        self.live += 1;
        self.sched.grow(i as usize);
        self.sched.touch(i);
        ConnectionHandle(i)
    }

    fn fresh_cid(&mut self) -> u64 {
        loop {
            let c = self.rng.next_u64();
            if c != 0 && !self.by_cid.contains_key(&c) {
                return c;
            }
        }
    }

    /// Start a connection to `remote` (client role).
    pub fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddr,
    ) -> Result<ConnectionHandle, ConnectError> {
        if self.live >= self.cfg.max_connections {
            return Err(ConnectError::TooManyConnections);
        }
        let cid = self.fresh_cid();
        let cc = self.cfg.cc.build(now, self.cfg.conn.max_datagram as u64);
        let c = Connection::new(
            Side::Client,
            now,
            self.cfg.conn.clone(),
            cid,
            0,
            remote,
            cc,
            self.budget.clone(),
        );
        Ok(self.insert(c))
    }

    /// Connections accepted and not yet taken with [`poll_incoming`](Self::poll_incoming).
    #[inline]
    pub fn incoming_len(&self) -> usize {
        self.incoming.len()
    }

    /// A connection the endpoint accepted since the last call.
    #[must_use]
    pub fn poll_incoming(&mut self) -> Option<ConnectionHandle> {
        self.incoming.pop_front()
    }

    fn bucket(&self, now: Instant) -> u64 {
        now.as_nanos() / (self.cfg.cookie_period.as_nanos().max(1) as u64)
    }

    fn cookie(&self, bucket: u64, client_cid: u64, remote: SocketAddr) -> u64 {
        let (a, b) = match remote {
            SocketAddr::V4(v) => (u32::from(*v.ip()) as u64, 0),
            SocketAddr::V6(v) => {
                let o = u128::from(*v.ip());
                (o as u64, (o >> 64) as u64)
            }
        };
        let h = siphash24(
            self.cfg.cookie_key[0],
            self.cfg.cookie_key[1],
            &[bucket, client_cid, a, b ^ ((remote.port() as u64) << 48)],
        );
        let hi = h & !0xf;
        (if hi == 0 { 0x10 } else { hi }) | (bucket & 0xf)
    }

    fn verify_cookie(&self, now: Instant, cid: u64, client_cid: u64, remote: SocketAddr) -> bool {
        let cur = self.bucket(now);
        let cand = cur.wrapping_sub(cur.wrapping_sub(cid & 0xf) & 0xf);
        cand <= cur && cur - cand <= 1 && self.cookie(cand, client_cid, remote) == cid
    }

    /// Process one received datagram (the UDP payload) from `remote`. `ecn_ce`: the IP header
    /// carried ECN Congestion Experienced. Never panics; malformed input is counted. The
    /// datagram is taken as having carried a (checked) UDP checksum; see
    /// [`handle_rx`](Self::handle_rx).
    pub fn handle(&mut self, now: Instant, remote: SocketAddr, ecn_ce: bool, buf: PktBuf) {
        self.handle_rx(now, remote, ecn_ce, true, buf);
    }

    /// [`handle`](Self::handle), told whether the datagram carried a UDP checksum
    /// (`checksummed`; false: 0 in the field). One without is taken only where both ends
    /// agreed to leave checksums out (each offered `INTACT`: an established connection whose
    /// [`Connection::needs_checksum`] is false, or a confirm offering it to a server whose
    /// config does); anything else is dropped and counted (`rx_no_checksum`), as corruption
    /// on its way would have gone unnoticed.
    pub fn handle_rx(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        ecn_ce: bool,
        checksummed: bool,
        mut buf: PktBuf,
    ) {
        self.stats.rx_datagrams += 1;
        let repr = match Packet::new_checked(buf.data()).and_then(|p| Repr::parse(&p)) {
            Ok(r) => r,
            Err(_) => {
                self.stats.rx_malformed += 1;
                return;
            }
        };
        buf.advance(repr.buffer_len());
        let stall = self.stall_before(now);
        if repr.dst_cid == 0 {
            if !checksummed {
                // A hello always carries one (it goes before the peer's flags are known).
                self.stats.rx_no_checksum += 1;
                return;
            }
            match repr.kind {
                Kind::Connect { .. } if self.cfg.accept && self.cfg.cookie_key == [0, 0] => {
                    self.stats.no_cookie_key += 1;
                }
                Kind::Connect { .. } if self.cfg.accept && repr.src_cid != 0 => {
                    if self.stateless.len() >= self.cfg.stateless_queue {
                        self.stats.stateless_dropped += 1;
                        return;
                    }
                    self.stats.hellos += 1;
                    let s = self.cookie(self.bucket(now), repr.src_cid, remote);
                    let ans = Repr {
                        flags: Connection::offer_flags(&self.cfg.conn),
                        dst_cid: repr.src_cid,
                        src_cid: s,
                        pn: 0,
                        tx_timestamp: now.as_nanos(),
                        kind: Kind::Accept {
                            credit: self.cfg.conn.rx_window,
                            max_datagram: self.cfg.conn.max_datagram,
                        },
                    };
                    self.stateless.push_back((remote, ans));
                }
                _ => self.stats.rx_unknown_cid += 1,
            }
            return;
        }
        if let Some(&i) = self.by_cid.get(&repr.dst_cid) {
            let Some(c) = self.conns[i as usize].as_mut() else {
                self.stats.rx_unknown_cid += 1;
                return;
            };
            if c.remote != remote {
                self.stats.rx_wrong_addr += 1;
                return;
            }
            if !checksummed && c.needs_checksum() {
                self.stats.rx_no_checksum += 1;
                return;
            }
            c.handle_packet(now, &repr, buf, ecn_ce, stall);
            // Asked to transmit only if the packet left it something to send (an ACK owed,
            // window opened by an ACK, a loss to repair).
            let ready = c.may_transmit();
            let readable = c.has_recv() || c.has_event();
            self.sched.touch_timers(i);
            if ready {
                self.sched.make_ready(i);
            }
            if readable {
                self.sched.mark_readable(i);
            }
            return;
        }
        let Kind::Connect {
            credit,
            max_datagram,
        } = repr.kind
        else {
            self.stats.rx_unknown_cid += 1;
            return;
        };
        let agreed = self.cfg.conn.link_intact && repr.flags & FLAG_INTACT != 0;
        if !(checksummed || agreed) {
            // A confirm carries 0 only when its sender had our INTACT and offers it too.
            self.stats.rx_no_checksum += 1;
            return;
        }
        if !self.cfg.accept
            || repr.flags & FLAG_ACK_NOW == 0
            || !self.verify_cookie(now, repr.dst_cid, repr.src_cid, remote)
        {
            self.stats.bad_cookies += 1;
            return;
        }
        if self.live >= self.cfg.max_connections {
            self.stats.refused += 1;
            return;
        }
        let from = self.per_source.get(&remote.ip()).copied().unwrap_or(0);
        if from as usize >= self.cfg.max_connections_per_source {
            self.stats.refused_per_source += 1;
            return;
        }
        let cc = self.cfg.cc.build(now, self.cfg.conn.max_datagram as u64);
        let mut c = Connection::new(
            Side::Server,
            now,
            self.cfg.conn.clone(),
            repr.dst_cid,
            repr.src_cid,
            remote,
            cc,
            self.budget.clone(),
        );
        c.set_peer_params(credit, max_datagram, repr.flags);
        c.handle_packet(now, &repr, buf, ecn_ce, stall);
        let readable = c.has_recv() || c.has_event();
        let h = self.insert(c);
        if readable {
            self.sched.mark_readable(h.0);
        }
        *self.per_source.entry(remote.ip()).or_insert(0) += 1;
        self.stats.accepted += 1;
        self.incoming.push_back(h);
    }

    /// Recompute the deadlines of the connections touched since the last call.
    ///
    /// A connection's heap entry is replaced only when its deadline moved earlier (or it had
    /// none). One that moved later (the common case: each packet sent pushes the probe
    /// timeout on) keeps its earlier entry, which wakes `handle_timeout` early once; that
    /// finds nothing due and schedules the real deadline. So the heap holds a lower bound of
    /// each connection's deadline, and a busy connection costs no heap operation per packet.
    fn refresh(&mut self) {
        while let Some(i) = self.sched.dirty.pop() {
            let k = i as usize;
            self.sched.in_dirty[k] = false;
            let Some(c) = self.conns[k].as_ref() else {
                self.sched.gen[k] = self.sched.gen[k].wrapping_add(1);
                self.sched.due[k] = None;
                continue;
            };
            // A connection that is over is due at once, to be freed.
            let due = if c.is_drained() {
                Some(Instant::ZERO)
            } else {
                c.poll_timeout()
            };
            if let Some(old) = self.sched.due[k] {
                if due.is_none_or(|t| t >= old) {
                    continue; // the entry in the heap comes first
                }
            }
            self.sched.gen[k] = self.sched.gen[k].wrapping_add(1);
            self.sched.due[k] = due;
            if let Some(t) = due {
                self.sched.heap.push(Reverse((t, i, self.sched.gen[k])));
            }
        }
        // Stale entries (superseded deadlines) leave the heap when they reach its top; if
        // they pile up below it, rebuild from the live deadlines (amortised O(1)).
        if self.sched.heap.len() > 2 * self.live + 64 {
            let gen = &self.sched.gen;
            self.sched
                .heap
                .retain(|Reverse((_, i, g))| gen[*i as usize] == *g);
        }
    }

    /// Drop stale entries from the top of the heap; the current earliest deadline, if any.
    fn earliest(&mut self) -> Option<Instant> {
        self.refresh();
        while let Some(&Reverse((t, i, g))) = self.sched.heap.peek() {
            if self.sched.gen[i as usize] == g && self.conns[i as usize].is_some() {
                return Some(t);
            }
            self.sched.heap.pop();
        }
        None
    }

    /// The loop that drives this endpoint ran an iteration at `now`. A driver calls it once
    /// per iteration, after the iteration's datagrams were handed to
    /// [`handle`](Self::handle); the next iteration's datagrams then tell from the gap
    /// whether the loop stalled in between ([`EndpointConfig::stall_threshold`]). A driver
    /// that never calls it gets no stall detection (every gap reads as none).
    #[inline]
    pub fn note_poll(&mut self, now: Instant) {
        self.last_poll = Some(now);
    }

    /// The stall of the driving loop before `now`: the gap since its last iteration, if at
    /// least the threshold.
    #[inline]
    fn stall_before(&self, now: Instant) -> Duration {
        match self.last_poll {
            Some(t) => {
                let gap = now.saturating_duration_since(t);
                if gap >= self.cfg.stall_threshold {
                    gap
                } else {
                    Duration::ZERO
                }
            }
            None => Duration::ZERO,
        }
    }

    /// Run the timers due at `now` and free connections that are over and whose last event
    /// was taken. Cost: O(log connections) per connection due or touched.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.refresh();
        // Each connection due runs once per call: what it touches is recomputed at the next
        // call (a deadline that stays due until a transmission, such as a pending ACK, must
        // not spin here).
        while let Some(&Reverse((t, i, g))) = self.sched.heap.peek() {
            if t > now {
                break;
            }
            self.sched.heap.pop();
            let k = i as usize;
            if self.sched.gen[k] != g {
                continue; // superseded
            }
            // Its entry is used up: the touch below schedules its next deadline.
            self.sched.due[k] = None;
            let Some(c) = self.conns[k].as_mut() else {
                continue;
            };
            if c.poll_timeout().is_some_and(|t| now >= t) {
                c.handle_timeout(now);
                if c.has_event() {
                    self.sched.mark_readable(i);
                }
            }
            if c.is_drained() {
                if c.side() == Side::Server {
                    let ip = c.remote.ip();
                    if let Some(n) = self.per_source.get_mut(&ip) {
                        *n -= 1;
                        if *n == 0 {
                            self.per_source.remove(&ip);
                        }
                    }
                }
                let cid = c.local_cid;
                let cs = c.stats();
                self.stats.add_connection(&cs);
                self.by_cid.remove(&cid);
                self.conns[k] = None;
                // A held slot is freed when its holder lets go ([`Endpoint::release`]).
                if !self.sched.held[k] {
                    self.free.push(i);
                }
                self.live -= 1;
                self.stats.freed += 1;
                self.sched.mark_changed(i);
                // Its heap entries are stale from now on (slot reuse bumps the generation).
                self.sched.gen[k] = self.sched.gen[k].wrapping_add(1);
                self.sched.due[k] = None;
                continue;
            }
            // Its deadline moved; it may also have something to send now.
            self.sched.touch(i);
        }
    }

    /// The earliest time `handle_timeout` is due. O(log connections) per connection whose
    /// deadline moved earlier since the last call (not O(connections)). It may be earlier than
    /// any connection's deadline (a connection whose deadline moved later keeps its earlier
    /// wake-up): `handle_timeout` then finds nothing due and the next call gives the later
    /// time. It is never later than a deadline.
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.earliest()
    }

    /// Write the next datagram into `buf` (empty, with headroom for
    /// [`MAX_HEADER_LEN`](crate::wire::transport::MAX_HEADER_LEN) plus whatever the caller
    /// prepends after). Returns its destination, or `None` when nothing is due.
    /// Connections take turns, one datagram each; only those touched since they last had
    /// nothing to send are asked. [`poll_transmit_ex`](Self::poll_transmit_ex) also says
    /// whether the datagram needs a UDP checksum.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut PktBuf) -> Option<SocketAddr> {
        self.poll_transmit_ex(now, buf).map(|t| t.dst)
    }

    /// Whether [`poll_transmit`](Self::poll_transmit) may have a datagram: a stateless reply
    /// is queued or a connection is ready. False means it has none (a caller can skip
    /// preparing a buffer for it).
    #[inline]
    pub fn has_transmit(&self) -> bool {
        !self.stateless.is_empty() || !self.sched.ready.is_empty()
    }

    /// [`poll_transmit`](Self::poll_transmit), with what the layer below needs to know about
    /// the datagram: its destination and whether it needs a UDP checksum.
    #[must_use]
    pub fn poll_transmit_ex(&mut self, now: Instant, buf: &mut PktBuf) -> Option<Transmit> {
        if let Some((dst, r)) = self.stateless.pop_front() {
            if r.prepend_to(buf).is_ok() {
                return Some(Transmit {
                    dst,
                    checksum: true,
                });
            }
            return None;
        }
        while let Some(i) = self.sched.ready.pop_front() {
            let k = i as usize;
            let Some(c) = self.conns[k].as_mut() else {
                self.sched.in_ready[k] = false;
                continue;
            };
            if c.poll_transmit(now, buf) {
                let t = Transmit {
                    dst: c.remote,
                    checksum: c.needs_checksum(),
                };
                // Back of the queue (round-robin) if it may have more; its timers changed.
                if c.may_transmit() {
                    self.sched.ready.push_back(i);
                } else {
                    self.sched.in_ready[k] = false;
                }
                self.sched.touch_timers(i);
                return Some(t);
            }
            self.sched.in_ready[k] = false;
        }
        None
    }
}
