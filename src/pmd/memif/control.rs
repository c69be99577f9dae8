//! The memif control channel: one thread per socket, asleep in `poll(2)`, that accepts or
//! connects, runs the handshake of each interface, validates everything the peer says, and
//! publishes (or withdraws) the connection the ports poll.
//!
//! Handshake (client C, server S), one message at a time:
//!
//! ```text
//! S: HELLO            C: INIT        -> S: ACK
//! C: ADD_REGION (fd) -> S: ACK   (region 0: rings, region 1: buffers)
//! C: ADD_RING (fd)   -> S: ACK   (client->server rings, then server->client rings)
//! C: CONNECT         -> S: CONNECTED        link up on both sides
//! either: DISCONNECT(reason) or a hang-up  link down; the client reconnects
//! ```

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::msg::{self, Msg, Name, MSG_SIZE, VERSION};
use super::port::Fault;
use super::ring::{ring_bytes, Ring, RING_FLAG_MASK_INT};
use super::sys::{self, Recv};
use super::{Conn, IfShared, QueueRings, RegionMap, Role, Shared, MAX_LOG2_RING_SIZE, MAX_REGIONS};
use crate::mem::Region;

pub use super::error::ControlError;
use super::error::{sock_err, type_name};

/// A ring the client announced.
struct RingSpec {
    region: u16,
    offset: u32,
    log2: u8,
    fd: Option<OwnedFd>,
}

/// What the client builds for one connection.
struct ClientSetup {
    ring_region: Region,
    nqp: u16,
    c2s: Vec<Ring>,
    s2c: Vec<Ring>,
    /// Eventfds: c2s rings then s2c rings.
    fds: Vec<OwnedFd>,
    /// Messages still to send, one per ACK, with the descriptor to pass.
    pending: VecDeque<(Msg, Option<SetupFd>)>,
}

/// A descriptor a queued configuration message passes, named by its owner (so sending it
/// borrows it from there, and it cannot be closed before it is sent).
#[derive(Debug, Clone, Copy)]
enum SetupFd {
    /// The ring region's memfd.
    RingRegion,
    /// The buffer pool's memfd.
    PoolRegion,
    /// Eventfd `k` of [`ClientSetup::fds`].
    Event(usize),
}

enum State {
    /// Server: waiting for INIT.
    AwaitInit,
    /// Server: collecting regions and rings until CONNECT.
    Configuring {
        regions: Vec<Region>,
        c2s: Vec<Option<RingSpec>>,
        s2c: Vec<Option<RingSpec>>,
    },
    /// Client: waiting for HELLO.
    AwaitHello,
    /// Client: sending the configuration, one message per ACK.
    Sending(Box<ClientSetup>),
    /// Client: CONNECT sent.
    AwaitConnected(Box<ClientSetup>),
    /// Up.
    Connected,
    /// Finished (refused or disconnected); dropped after this turn.
    Dead,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::AwaitInit => "waiting for INIT",
            State::Configuring { .. } => "waiting for ADD_REGION/ADD_RING/CONNECT",
            State::AwaitHello => "waiting for HELLO",
            State::Sending(_) => "waiting for ACK",
            State::AwaitConnected(_) => "waiting for CONNECTED",
            State::Connected => "connected",
            State::Dead => "closed",
        }
    }
}

/// First pause after `accept` fails for want of descriptors or memory (`EMFILE`, `ENFILE`,
/// `ENOBUFS`, `ENOMEM`); doubled on each failure in a row, up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause of the listener after repeated `accept` failures.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

struct Chan {
    sock: OwnedFd,
    /// When the channel was opened (for the handshake timeout).
    since: Instant,
    /// The handshake completed at some point.
    was_up: bool,
    /// Index of the interface in `Shared::ifaces`, once known.
    iface: Option<usize>,
    state: State,
}

/// The control thread's state.
pub(super) struct Control {
    shared: Arc<Shared>,
    listener: Option<OwnedFd>,
    chans: Vec<Chan>,
    /// Server: interface has a channel. Client: interface has a channel (connecting or up).
    busy: Vec<bool>,
    /// Client: when to try connecting each interface next.
    next_try: Vec<Instant>,
    /// Client: handshakes refused in a row (for back-off).
    refusals: Vec<u32>,
    /// Server: the listener is not polled before this (after `accept` failed for want of
    /// descriptors: polling a listener we cannot accept from would spin).
    accept_paused_until: Option<Instant>,
    /// Server: the current pause after `accept` failures in a row.
    accept_backoff: Duration,
    /// Per interface, per ring watched (`IfShared::rings`): the fault its port reported when
    /// first seen, when, and the port's bursts then.
    watch: Vec<Vec<Option<Seen>>>,
}

/// A ring fault as the control thread first saw it (see [`Control::watch_rings`]).
#[derive(Debug, Clone, Copy)]
struct Seen {
    state: u64,
    since: Instant,
    bursts: u64,
}

impl Control {
    pub(super) fn new(shared: Arc<Shared>, listener: Option<OwnedFd>) -> Control {
        let n = shared.ifaces.len();
        Control {
            listener,
            chans: Vec::new(),
            busy: vec![false; n],
            next_try: vec![Instant::now(); n],
            refusals: vec![0; n],
            accept_paused_until: None,
            accept_backoff: ACCEPT_BACKOFF_MIN,
            watch: shared
                .ifaces
                .iter()
                .map(|f| vec![None; f.rings.len()])
                .collect(),
            shared,
        }
    }

    pub(super) fn run(mut self) {
        let mut ready: Vec<bool> = Vec::new();
        loop {
            if self.shared.stop.load(Ordering::Acquire) {
                break;
            }
            let now = Instant::now();
            if self.shared.cfg.role == Role::Client {
                self.connect_clients(now);
            }
            let mut timeout = self
                .shared
                .cfg
                .reconnect_interval
                .min(Duration::from_millis(200))
                .max(Duration::from_millis(1));
            // The listener sits out its back-off after accept failed (EMFILE): it stays
            // readable, and polling it would spin.
            let listen = match self.accept_paused_until {
                Some(t) if now < t => {
                    timeout = timeout.min(t - now);
                    false
                }
                _ => {
                    self.accept_paused_until = None;
                    true
                }
            };
            // The wake eventfd, the listener (server), then one socket per channel.
            let mut fds: Vec<BorrowedFd<'_>> = Vec::with_capacity(2 + self.chans.len());
            fds.push(self.shared.wake.as_fd());
            fds.extend(self.listener.as_ref().filter(|_| listen).map(|l| l.as_fd()));
            let first_chan = fds.len();
            fds.extend(self.chans.iter().map(|c| c.sock.as_fd()));
            let polled = sys::poll(&fds, &mut ready, timeout);
            drop(fds);
            if let Err(e) = polled {
                tracing::error!(error = %e, "memif control poll failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            if ready[0] {
                sys::eventfd_drain(self.shared.wake.as_fd());
            }
            if self.listener.is_some() && listen && ready[1] {
                self.accept_all();
            }
            let nchans = ready.len() - first_chan;
            for i in 0..nchans {
                if ready[first_chan + i] {
                    self.service(i);
                }
            }
            let now = Instant::now();
            let limit = self.shared.cfg.handshake_timeout;
            for i in 0..self.chans.len() {
                let c = &self.chans[i];
                if !matches!(c.state, State::Connected | State::Dead)
                    && now.duration_since(c.since) > limit
                {
                    self.fail(i, ControlError::Timeout(limit));
                }
            }
            self.watch_rings(now);
            self.reap();
            self.shared.pending.store(self.pending(), Ordering::Relaxed);
        }
        // Shutting down: tell every peer, withdraw every connection.
        for i in 0..self.chans.len() {
            let c = &self.chans[i];
            let _ = sys::send_msg(
                c.sock.as_fd(),
                &Msg::disconnect("interface closed").encode(),
                None,
            );
            self.chans[i].state = State::Dead;
        }
        self.reap();
    }

    /// Tear down a connection whose ring stays wedged: a fault its port reported (the same
    /// episode) that lasts [`MemifConfig::wedge_timeout`] while the port keeps finding it
    /// (its count of faulted bursts went up meanwhile: a port nobody polls, or one that has
    /// not yet seen a new connection, reports nothing new and tears nothing down). Runs at
    /// every turn of the loop (at least every 200 ms, the poll timeout), so the data path
    /// never makes a system call for this: the port only stores to two atomics when a
    /// ring's health changes or a burst finds it wrong.
    ///
    /// [`MemifConfig::wedge_timeout`]: super::MemifConfig::wedge_timeout
    fn watch_rings(&mut self, now: Instant) {
        let limit = self.shared.cfg.wedge_timeout;
        for n in 0..self.shared.ifaces.len() {
            let up = self
                .chans
                .iter()
                .position(|c| c.iface == Some(n) && matches!(c.state, State::Connected));
            let Some(i) = up else {
                self.watch[n].fill(None);
                continue;
            };
            let f = self.shared.ifaces[n].clone();
            let mut wedged = None;
            for (k, r) in f.rings.iter().enumerate() {
                let state = r.state.load(Ordering::Acquire);
                let bursts = r.bursts.load(Ordering::Relaxed);
                let w = &mut self.watch[n][k];
                match *w {
                    _ if state == 0 => *w = None,
                    Some(s) if s.state == state => {
                        let held = now.duration_since(s.since);
                        if held >= limit && bursts > s.bursts && wedged.is_none() {
                            wedged = Some((k, state, held));
                        }
                    }
                    _ => {
                        *w = Some(Seen {
                            state,
                            since: now,
                            bursts,
                        })
                    }
                }
            }
            let Some((k, state, held)) = wedged else {
                continue;
            };
            self.watch[n].fill(None);
            // Slot 2q is the port's receive ring, 2q + 1 its transmit ring.
            let rx = k % 2 == 0;
            let c2s = rx == (self.shared.cfg.role == Role::Server);
            let e = ControlError::RingWedged {
                ring: if c2s { "c2s" } else { "s2c" },
                queue: (k / 2) as u16,
                what: Fault::what(state as u8),
                ms: held.as_millis() as u64,
            };
            f.rings_wedged.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                socket = %self.shared.cfg.socket.display(),
                id = f.cfg.id,
                error = %e,
                "memif ring wedged; tearing the connection down"
            );
            self.fail(i, e);
        }
    }

    fn iface(&self, i: usize) -> &Arc<IfShared> {
        &self.shared.ifaces[i]
    }

    fn connect_clients(&mut self, now: Instant) {
        for i in 0..self.busy.len() {
            if self.busy[i] || now < self.next_try[i] {
                continue;
            }
            match sys::connect(&self.shared.cfg.socket) {
                Ok(sock) => {
                    self.busy[i] = true;
                    self.chans.push(Chan {
                        sock,
                        since: now,
                        was_up: false,
                        iface: Some(i),
                        state: State::AwaitHello,
                    });
                }
                Err(e) => {
                    tracing::trace!(error = %e, "memif connect failed; retrying");
                    self.next_try[i] = now + self.shared.cfg.reconnect_interval;
                }
            }
        }
    }

    /// Channels still in their handshake (server side: before CONNECT).
    fn pending(&self) -> usize {
        self.chans
            .iter()
            .filter(|c| matches!(c.state, State::AwaitInit | State::Configuring { .. }))
            .count()
    }

    /// Make room for one more pending channel: while [`MemifConfig::max_pending_handshakes`]
    /// are pending, drop the oldest (counted). The oldest rather than the newest: a flood
    /// of idle connections then cannot keep a legitimate client out (its handshake takes
    /// milliseconds; the flood's connections are older by then), and each dropped
    /// connection gives its descriptor back at once.
    ///
    /// [`MemifConfig::max_pending_handshakes`]: super::MemifConfig::max_pending_handshakes
    fn make_room(&mut self) {
        let max = self.shared.cfg.max_pending_handshakes.max(1);
        while self.pending() >= max {
            if !self.drop_oldest_pending() {
                return;
            }
        }
    }

    /// Drop the oldest channel still in its handshake (counted); false when there is none.
    fn drop_oldest_pending(&mut self) -> bool {
        let Some((i, _)) = self
            .chans
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c.state, State::AwaitInit | State::Configuring { .. }))
            .min_by_key(|(_, c)| c.since)
        else {
            return false;
        };
        self.shared.pending_dropped.fetch_add(1, Ordering::Relaxed);
        let max = self.shared.cfg.max_pending_handshakes.max(1);
        self.fail(i, ControlError::TooManyPending(max));
        true
    }

    /// Accept what the listener holds, at most `max_pending_handshakes` per call: a flood
    /// that connects as fast as we accept then cannot keep the control thread from serving
    /// the channels it has (poll returns at once while the backlog is not empty).
    fn accept_all(&mut self) {
        for _ in 0..self.shared.cfg.max_pending_handshakes.max(1) {
            let Some(l) = &self.listener else { return };
            match sys::accept(l.as_fd()) {
                Ok(Some(sock)) => {
                    self.accept_backoff = ACCEPT_BACKOFF_MIN;
                    if let Some(allowed) = self.shared.cfg.allowed_uid {
                        let uid = sys::peer_uid(sock.as_fd()).unwrap_or(u32::MAX);
                        if uid != allowed {
                            let e = ControlError::PeerUid { uid, allowed };
                            let _ = sys::send_msg(
                                sock.as_fd(),
                                &Msg::disconnect(&e.to_string()).encode(),
                                None,
                            );
                            self.shared.refused.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                socket = %self.shared.cfg.socket.display(),
                                error = %e,
                                "memif connection refused"
                            );
                            continue;
                        }
                    }
                    self.make_room();
                    // Close the dropped ones now: a flood must not hold descriptors until
                    // the backlog is empty.
                    self.reap();
                    let hello = Msg::Hello {
                        name: Name::new(&self.shared.cfg.app_name),
                        min_version: VERSION,
                        max_version: VERSION,
                        max_region: (MAX_REGIONS - 1) as u16,
                        max_s2c_ring: super::MAX_QUEUE_PAIRS - 1,
                        max_c2s_ring: super::MAX_QUEUE_PAIRS - 1,
                        max_log2_ring_size: MAX_LOG2_RING_SIZE,
                    };
                    if sys::send_msg(sock.as_fd(), &hello.encode(), None).is_ok() {
                        self.chans.push(Chan {
                            sock,
                            since: Instant::now(),
                            was_up: false,
                            iface: None,
                            state: State::AwaitInit,
                        });
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // Out of descriptors (EMFILE, ENFILE) or memory: the connection stays in
                    // the backlog and the listener stays readable. Pause the listener with a
                    // growing back-off rather than spin on it, and give a descriptor back by
                    // dropping the oldest pending channel, if any.
                    self.shared.accept_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        error = %e,
                        pause = ?self.accept_backoff,
                        "memif accept failed; pausing the listener"
                    );
                    self.accept_paused_until = Some(Instant::now() + self.accept_backoff);
                    self.accept_backoff = (self.accept_backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    self.drop_oldest_pending();
                    break;
                }
            }
        }
    }

    /// Read and handle every pending message on channel `i`.
    fn service(&mut self, i: usize) {
        let mut buf = [0u8; MSG_SIZE];
        loop {
            if matches!(self.chans[i].state, State::Dead) {
                return;
            }
            let r = sys::recv_msg(self.chans[i].sock.as_fd(), &mut buf);
            let res = match r {
                Ok(Recv::WouldBlock) => return,
                Ok(Recv::Closed) => Err(ControlError::Closed),
                Err(e) => Err(sock_err("recvmsg", e)),
                Ok(Recv::Msg {
                    len,
                    truncated,
                    ctl_truncated,
                    fd,
                }) => {
                    if ctl_truncated {
                        Err(ControlError::CtlTruncated)
                    } else if truncated {
                        Err(ControlError::Truncated)
                    } else {
                        match Msg::decode(&buf[..len]) {
                            Ok(m) => self.handle(i, m, fd),
                            Err(e) => Err(ControlError::Malformed(e)),
                        }
                    }
                }
            };
            if let Err(e) = res {
                self.fail(i, e);
                return;
            }
        }
    }

    /// Refuse or drop channel `i` with `e`: tell the peer (unless it is gone), record, log.
    fn fail(&mut self, i: usize, e: ControlError) {
        let c = &mut self.chans[i];
        let quiet = matches!(
            e,
            ControlError::Closed | ControlError::PeerDisconnect(_) | ControlError::Socket { .. }
        );
        if !quiet {
            let _ = sys::send_msg(
                c.sock.as_fd(),
                &Msg::disconnect(&e.to_string()).encode(),
                None,
            );
        }
        let was_up = matches!(c.state, State::Connected);
        // A pending channel dropped to make room is counted in `pending_dropped` alone.
        let dropped = matches!(e, ControlError::TooManyPending(_));
        c.state = State::Dead;
        match c.iface {
            Some(n) => {
                if was_up {
                    tracing::info!(
                        socket = %self.shared.cfg.socket.display(),
                        id = self.shared.ifaces[n].cfg.id,
                        reason = %e,
                        "memif link down"
                    );
                } else {
                    if !dropped {
                        self.shared.ifaces[n]
                            .handshakes_failed
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::warn!(
                        socket = %self.shared.cfg.socket.display(),
                        id = self.shared.ifaces[n].cfg.id,
                        error = %e,
                        "memif connection refused"
                    );
                }
                self.shared.ifaces[n].set_error(e);
            }
            None => {
                if !dropped {
                    self.shared.refused.fetch_add(1, Ordering::Relaxed);
                }
                tracing::warn!(
                    socket = %self.shared.cfg.socket.display(),
                    error = %e,
                    "memif connection refused"
                );
            }
        }
    }

    /// Drop dead channels; withdraw their connections.
    fn reap(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.chans.len() {
            if matches!(self.chans[i].state, State::Dead) {
                let c = self.chans.swap_remove(i);
                if let Some(n) = c.iface {
                    self.busy[n] = false;
                    // Reconnect quickly after a connection that worked (a restarted peer);
                    // back off (up to 32x) while the peer keeps refusing the handshake.
                    self.refusals[n] = if c.was_up { 0 } else { self.refusals[n] + 1 };
                    let factor = 1u32 << self.refusals[n].saturating_sub(1).min(5);
                    self.next_try[n] = now + self.shared.cfg.reconnect_interval * factor;
                    self.shared.ifaces[n].publish(None);
                }
            } else {
                i += 1;
            }
        }
    }

    /// Channel `i`'s peer passed region `index` without `F_SEAL_SHRINK`: it could truncate
    /// the file under our mapping, and our next access to the lost pages would fault
    /// (SIGBUS), which no validation can catch. Counted; refused when the configuration
    /// requires sealed regions, else warned about once for this region.
    fn unsealed_region(&self, i: usize, index: u16) -> Result<(), ControlError> {
        let f = self.iface(self.chans[i].iface.unwrap_or(0));
        f.unsealed_regions.fetch_add(1, Ordering::Relaxed);
        if self.shared.cfg.require_sealed_regions {
            return Err(ControlError::RegionUnsealed { index });
        }
        tracing::warn!(
            socket = %self.shared.cfg.socket.display(),
            id = f.cfg.id,
            region = index,
            "memif peer's region is not sealed against shrinking (F_SEAL_SHRINK): if the peer \
             truncates it, our next access to it faults (SIGBUS) and kills this process; \
             MemifConfig::require_sealed_regions refuses such peers"
        );
        Ok(())
    }

    fn send(&self, i: usize, m: &Msg, fd: Option<BorrowedFd<'_>>) -> Result<(), ControlError> {
        sys::send_msg(self.chans[i].sock.as_fd(), &m.encode(), fd)
            .map_err(|e| sock_err("sendmsg", e))
    }

    fn handle(&mut self, i: usize, m: Msg, fd: Option<OwnedFd>) -> Result<(), ControlError> {
        if let Msg::Disconnect { reason, .. } = &m {
            return Err(ControlError::PeerDisconnect(reason.to_string_lossy()));
        }
        let state = std::mem::replace(&mut self.chans[i].state, State::Dead);
        let unexpected = |m: &Msg, s: &State| ControlError::Unexpected {
            got: type_name(m),
            state: s.name(),
        };
        let next = match (state, m) {
            // ---- server ----
            (
                State::AwaitInit,
                Msg::Init {
                    version,
                    id,
                    mode,
                    secret,
                    ..
                },
            ) => {
                if version != VERSION {
                    return Err(ControlError::Version {
                        min: version,
                        max: version,
                    });
                }
                let n = self
                    .shared
                    .ifaces
                    .iter()
                    .position(|f| f.cfg.id == id)
                    .ok_or(ControlError::UnknownId(id))?;
                if self.busy[n] {
                    return Err(ControlError::AlreadyConnected(id));
                }
                if mode != msg::MODE_ETHERNET {
                    return Err(ControlError::Mode(mode));
                }
                let want = self.iface(n).cfg.secret.as_deref().unwrap_or("");
                if !secret_eq(secret.as_bytes(), want.as_bytes()) {
                    return Err(ControlError::Secret);
                }
                self.busy[n] = true;
                self.chans[i].iface = Some(n);
                self.send(i, &Msg::Ack, None)?;
                State::Configuring {
                    regions: Vec::new(),
                    c2s: Vec::new(),
                    s2c: Vec::new(),
                }
            }
            (
                State::Configuring {
                    mut regions,
                    c2s,
                    s2c,
                },
                Msg::AddRegion { index, size },
            ) => {
                let fd = fd.ok_or(ControlError::MissingFd("ADD_REGION"))?;
                if index as usize != regions.len() || regions.len() >= MAX_REGIONS {
                    return Err(ControlError::RegionIndex {
                        index,
                        expected: regions.len() as u16,
                    });
                }
                let file = sys::file_size(fd.as_fd()).map_err(|e| sock_err("fstat", e))?;
                if size == 0 || size > file || size > isize::MAX as u64 {
                    return Err(ControlError::RegionSize { index, size, file });
                }
                // The sizes are the peer's choice: bound what all its regions add up to.
                let n = self.chans[i].iface.unwrap_or(0);
                let limit = self.shared.cfg.peer_region_limit(&self.iface(n).cfg);
                let total = regions.iter().map(|r| r.len() as u64).sum::<u64>() + size;
                if total > limit {
                    return Err(ControlError::RegionTooLarge {
                        index,
                        size,
                        total,
                        limit,
                    });
                }
                if !sys::shrink_sealed(fd.as_fd()) {
                    self.unsealed_region(i, index)?;
                }
                let r =
                    Region::from_fd(fd, size as usize).map_err(|e| ControlError::RegionMap {
                        index,
                        reason: e.to_string(),
                    })?;
                regions.push(r);
                self.send(i, &Msg::Ack, None)?;
                State::Configuring { regions, c2s, s2c }
            }
            (
                State::Configuring {
                    regions,
                    mut c2s,
                    mut s2c,
                },
                Msg::AddRing {
                    flags,
                    index,
                    region,
                    offset,
                    log2_ring_size,
                    ..
                },
            ) => {
                let n = self.chans[i].iface.unwrap_or(0);
                let max = self.iface(n).cfg.queue_pairs;
                if !(1..=MAX_LOG2_RING_SIZE).contains(&log2_ring_size) {
                    return Err(ControlError::RingSize(log2_ring_size));
                }
                let list = if flags & msg::ADD_RING_FLAG_C2S != 0 {
                    &mut c2s
                } else {
                    &mut s2c
                };
                if index >= max || list.get(index as usize).is_some_and(|r| r.is_some()) {
                    return Err(ControlError::RingIndex { index, max });
                }
                let r = regions
                    .get(region as usize)
                    .ok_or(ControlError::RingRegion(region))?;
                let size = ring_bytes(log2_ring_size);
                if offset % 8 != 0 || offset as usize + size > r.len() {
                    return Err(ControlError::RingBounds {
                        offset,
                        size,
                        region_len: r.len(),
                    });
                }
                // We write the ring's interrupt fd from the data path: it must be an eventfd,
                // made non-blocking, or a pipe / a preloaded counter would stall us.
                if let Some(fd) = &fd {
                    sys::interrupt_fd(fd.as_fd()).map_err(|e| ControlError::InterruptFd {
                        index,
                        kind: match e {
                            sys::NotEventfd::Kind(k) => k,
                            sys::NotEventfd::Os(e) => format!("cannot check it: {e}"),
                        },
                    })?;
                }
                if list.len() <= index as usize {
                    list.resize_with(index as usize + 1, || None);
                }
                list[index as usize] = Some(RingSpec {
                    region,
                    offset,
                    log2: log2_ring_size,
                    fd,
                });
                self.send(i, &Msg::Ack, None)?;
                State::Configuring { regions, c2s, s2c }
            }
            (State::Configuring { regions, c2s, s2c }, Msg::Connect { if_name }) => {
                let conn = server_conn(regions, c2s, s2c, if_name.to_string_lossy())?;
                let n = self.chans[i].iface.unwrap_or(0);
                let name = Name::new(&self.iface(n).cfg.name);
                self.iface(n).publish(Some(conn.clone()));
                tracing::info!(
                    socket = %self.shared.cfg.socket.display(),
                    id = self.iface(n).cfg.id,
                    peer = %conn.peer,
                    queues = conn.queues.len(),
                    "memif link up (server)"
                );
                self.send(i, &Msg::Connected { if_name: name }, None)?;
                State::Connected
            }
            // ---- client ----
            (
                State::AwaitHello,
                Msg::Hello {
                    min_version,
                    max_version,
                    max_region,
                    max_s2c_ring,
                    max_c2s_ring,
                    max_log2_ring_size,
                    ..
                },
            ) => {
                if min_version > VERSION || max_version < VERSION {
                    return Err(ControlError::Version {
                        min: min_version,
                        max: max_version,
                    });
                }
                if max_region < 1 {
                    return Err(ControlError::Hello("fewer than 2 regions"));
                }
                if max_log2_ring_size == 0 {
                    return Err(ControlError::Hello("ring size 0"));
                }
                let n = self.chans[i].iface.unwrap_or(0);
                let setup = self.client_setup(n, max_c2s_ring, max_s2c_ring, max_log2_ring_size)?;
                let mut setup = Box::new(setup);
                self.send_next(i, &mut setup)?;
                State::Sending(setup)
            }
            (State::Sending(mut setup), Msg::Ack) => {
                let connect = self.send_next(i, &mut setup)?;
                if connect {
                    State::AwaitConnected(setup)
                } else {
                    State::Sending(setup)
                }
            }
            (State::AwaitConnected(setup), Msg::Connected { if_name }) => {
                let n = self.chans[i].iface.unwrap_or(0);
                let conn = client_conn(*setup, self.iface(n), if_name.to_string_lossy());
                self.iface(n).publish(Some(conn.clone()));
                tracing::info!(
                    socket = %self.shared.cfg.socket.display(),
                    id = self.iface(n).cfg.id,
                    peer = %conn.peer,
                    queues = conn.queues.len(),
                    "memif link up (client)"
                );
                State::Connected
            }
            (s, m) => return Err(unexpected(&m, &s)),
        };
        if matches!(next, State::Connected) {
            self.chans[i].was_up = true;
        }
        self.chans[i].state = next;
        Ok(())
    }

    /// Send the next queued configuration message; true when it was CONNECT.
    fn send_next(&self, i: usize, setup: &mut ClientSetup) -> Result<bool, ControlError> {
        let Some((m, fd)) = setup.pending.pop_front() else {
            return Err(ControlError::Unexpected {
                got: "ACK",
                state: "configuration already sent",
            });
        };
        let f = &self.shared.ifaces[self.chans[i].iface.unwrap_or(0)];
        let bfd = fd.map(|fd| match fd {
            SetupFd::RingRegion => setup.ring_region.fd(),
            SetupFd::PoolRegion => f.pool.region().fd(),
            SetupFd::Event(k) => setup.fds[k].as_fd(),
        });
        self.send(i, &m, bfd)?;
        Ok(matches!(m, Msg::Connect { .. }))
    }

    fn client_setup(
        &self,
        n: usize,
        max_c2s: u16,
        max_s2c: u16,
        max_log2: u8,
    ) -> Result<ClientSetup, ControlError> {
        let f = self.iface(n);
        let cfg = &f.cfg;
        let nqp = cfg
            .queue_pairs
            .min(max_c2s.saturating_add(1))
            .min(max_s2c.saturating_add(1));
        let log2 = cfg.log2_ring_size.min(max_log2);
        let rb = ring_bytes(log2);
        // The interface's policy holds for the rings too: `Never` means no hugepage at all.
        let ring_region = Region::new(
            &format!("memif{}-rings", cfg.id),
            2 * nqp as usize * rb,
            cfg.hugepages,
        )
        .map_err(|e| ControlError::Setup(e.to_string()))?;
        let mut c2s = Vec::new();
        let mut s2c = Vec::new();
        let mut fds = Vec::new();
        for k in 0..2 * nqp as usize {
            // SAFETY: k * rb + rb <= region length; the region is page-aligned and rb is a
            // multiple of 16, so the ring is 8-aligned; the region outlives the rings (both
            // end up in the same Conn, or are dropped together on failure).
            let r = unsafe { Ring::new(ring_region.as_ptr().add(k * rb), log2) };
            r.init(0);
            if k < nqp as usize {
                c2s.push(r);
            } else {
                s2c.push(r);
            }
            fds.push(sys::eventfd().map_err(|e| ControlError::Setup(e.to_string()))?);
        }
        let mut pending = VecDeque::new();
        pending.push_back((
            Msg::Init {
                version: VERSION,
                id: cfg.id,
                mode: msg::MODE_ETHERNET,
                secret: Name::new(cfg.secret.as_deref().unwrap_or("")),
                name: Name::new(&self.shared.cfg.app_name),
            },
            None,
        ));
        pending.push_back((
            Msg::AddRegion {
                index: 0,
                size: ring_region.len() as u64,
            },
            Some(SetupFd::RingRegion),
        ));
        pending.push_back((
            Msg::AddRegion {
                index: 1,
                size: f.pool.region().len() as u64,
            },
            Some(SetupFd::PoolRegion),
        ));
        for k in 0..fds.len() {
            let c2s_ring = k < nqp as usize;
            let q = if c2s_ring { k } else { k - nqp as usize };
            pending.push_back((
                Msg::AddRing {
                    flags: if c2s_ring { msg::ADD_RING_FLAG_C2S } else { 0 },
                    index: q as u16,
                    region: 0,
                    offset: (k * rb) as u32,
                    log2_ring_size: log2,
                    private_hdr_size: 0,
                },
                Some(SetupFd::Event(k)),
            ));
        }
        pending.push_back((
            Msg::Connect {
                if_name: Name::new(&cfg.name),
            },
            None,
        ));
        Ok(ClientSetup {
            ring_region,
            nqp,
            c2s,
            s2c,
            fds,
            pending,
        })
    }
}

/// Compare a received secret with ours in time that does not depend on where they differ:
/// both are padded into fixed buffers of the wire field's size and every byte is compared,
/// with no early exit, so a peer cannot learn the secret a byte at a time by timing refusals.
pub(super) fn secret_eq(got: &[u8], want: &[u8]) -> bool {
    let mut a = [0u8; msg::SECRET_LEN];
    let mut b = [0u8; msg::SECRET_LEN];
    let (ga, wb) = (got.len().min(a.len()), want.len().min(b.len()));
    a[..ga].copy_from_slice(&got[..ga]);
    b[..wb].copy_from_slice(&want[..wb]);
    let mut diff = (got.len() != want.len()) as u8;
    for k in 0..a.len() {
        diff |= a[k] ^ b[k];
    }
    std::hint::black_box(diff) == 0
}

/// Server side of CONNECT: check the rings and build the connection.
fn server_conn(
    regions: Vec<Region>,
    c2s: Vec<Option<RingSpec>>,
    s2c: Vec<Option<RingSpec>>,
    peer: String,
) -> Result<Arc<Conn>, ControlError> {
    let count = |v: &Vec<Option<RingSpec>>| v.iter().take_while(|r| r.is_some()).count();
    let nqp = count(&c2s).min(count(&s2c));
    if nqp == 0 {
        return Err(ControlError::NoRings);
    }
    let maps: Vec<RegionMap> = regions
        .iter()
        .map(|r| RegionMap {
            base: r.as_ptr(),
            len: r.len(),
        })
        .collect();
    let mut fds = Vec::new();
    let mut queues = Vec::new();
    let mut c2s = c2s.into_iter();
    let mut s2c = s2c.into_iter();
    for q in 0..nqp {
        let (Some(Some(rx)), Some(Some(tx))) = (c2s.next(), s2c.next()) else {
            return Err(ControlError::NoRings);
        };
        let mk = |s: &RingSpec| -> Ring {
            let m = maps[s.region as usize];
            // SAFETY: ADD_RING checked region index, 8-byte alignment of the offset (regions
            // are page-aligned) and that offset + ring_bytes(log2) fits in the region; the
            // mapping lives in this Conn.
            unsafe { Ring::new(m.base.add(s.offset as usize), s.log2) }
        };
        let (rxr, txr) = (mk(&rx), mk(&tx));
        for r in [&rxr, &txr] {
            if r.cookie() != msg::RING_COOKIE {
                return Err(ControlError::RingCookie {
                    index: q as u16,
                    cookie: r.cookie(),
                });
            }
            r.set_head(0, Ordering::Relaxed);
            r.set_tail(0, Ordering::Relaxed);
        }
        // We poll our receive ring: ask the client not to signal it.
        rxr.set_flags(RING_FLAG_MASK_INT);
        let rx_int = rx.fd.map(|f| {
            fds.push(f);
            fds.len() - 1
        });
        let tx_int = tx.fd.map(|f| {
            fds.push(f);
            fds.len() - 1
        });
        queues.push(QueueRings {
            tx: txr,
            rx: rxr,
            tx_int,
            rx_int,
        });
    }
    Ok(Arc::new(Conn {
        alive: AtomicBool::new(true),
        regions: maps,
        queues,
        peer,
        _regions: regions,
        _pool: None,
        fds,
    }))
}

/// Client side of CONNECTED: the connection over our own memory.
fn client_conn(setup: ClientSetup, f: &IfShared, peer: String) -> Arc<Conn> {
    let pool = f.pool.clone();
    let maps = vec![
        RegionMap {
            base: setup.ring_region.as_ptr(),
            len: setup.ring_region.len(),
        },
        RegionMap {
            base: pool.region().as_ptr(),
            len: pool.region().len(),
        },
    ];
    let nqp = setup.nqp as usize;
    let queues = (0..nqp)
        .map(|q| {
            let rx = setup.s2c[q];
            // We poll our receive rings: ask the server not to signal them.
            rx.set_flags(RING_FLAG_MASK_INT);
            // Eventfds: client-to-server rings, then server-to-client rings.
            QueueRings {
                tx: setup.c2s[q],
                rx,
                tx_int: Some(q),
                rx_int: Some(nqp + q),
            }
        })
        .collect();
    Arc::new(Conn {
        alive: AtomicBool::new(true),
        regions: maps,
        queues,
        peer,
        _regions: vec![setup.ring_region],
        _pool: Some(pool),
        fds: setup.fds,
    })
}
