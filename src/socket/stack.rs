//! [`Stack`]: one runtime and its transport. `Transport` plugs a proto endpoint into the
//! runtime; `Inner` is the state the stack and its sockets share (the runtime, its telemetry,
//! the poll pieces); dropping the last of them lingers until the last packets left.

use std::cell::RefCell;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::rc::Rc;
use std::time::{Duration, Instant as StdInstant};

use crate::mem::{PktBuf, PoolExhausted};
use crate::pmd::memif::Memif;
use crate::pmd::pcap::CapturePort;
use crate::pmd::{Port, PortStats};
use crate::proto::{CloseReason, Endpoint, EndpointStats};
use crate::runtime::clock::SystemClock;
use crate::runtime::net::NetCounters;
use crate::runtime::{Io, Runtime, RuntimeCounters, UdpHandler};

use super::metrics::{self, Metrics};
use super::socket::SockState;
use super::{Backend, Error, IdlePoll, Listener, Socket, StackBuilder};

/// The stack's port: the backend's, inside the wrapper that captures it on demand
/// ([`Metrics::capture_start`]).
pub(super) type StackPort = CapturePort<Box<dyn Port>, File>;

/// The transport plugged into the runtime: a proto endpoint on one UDP port.
pub(super) struct Transport {
    pub(super) ep: Endpoint,
    pub(super) udp_port: u16,
    pub(super) spare: Option<PktBuf>,
    pub(super) tx_dropped: u64,
    pub(super) tx_pool_exhausted: u64,
}

impl UdpHandler for Transport {
    #[inline]
    fn on_datagram(&mut self, io: &mut Io<'_>, src: SocketAddrV4, _dst: u16, payload: PktBuf) {
        self.ep.handle_rx(
            io.now(),
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
        self.ep.note_poll(io.now());
        self.transmit(io);
    }

    /// The endpoint's deadlines (recomputed for the connections touched this iteration) and
    /// the timeouts due; what they send goes out in this iteration.
    #[inline]
    fn after_flush(&mut self, io: &mut Io<'_>) {
        let now = io.now();
        if self.ep.poll_timeout().is_some_and(|t| t <= now) {
            self.ep.handle_timeout(now);
            self.transmit(io);
        }
    }
}

impl Transport {
    /// Queue the endpoint's datagrams in the runtime's transmit queue.
    #[inline]
    pub(super) fn transmit(&mut self, io: &mut Io<'_>) {
        let now = io.now();
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

/// A stack's idle-poll policy ([`IdlePoll`]) and the loop time (ns) of its last activity:
/// a frame received, sent or still queued, a timer fired.
pub(super) struct Idle {
    /// `IdlePoll::Sleep`'s settings in ns (`None`: spin).
    sleep: Option<(u64, std::time::Duration)>,
    pub(super) last_active: u64,
}

impl Idle {
    pub(super) fn new(policy: IdlePoll) -> Idle {
        Idle {
            sleep: match policy {
                IdlePoll::Spin => None,
                IdlePoll::Sleep {
                    sleep_after,
                    max_sleep,
                } => Some((
                    u64::try_from(sleep_after.as_nanos()).unwrap_or(u64::MAX),
                    max_sleep,
                )),
            },
            last_active: 0,
        }
    }
}

pub(super) struct Inner {
    pub(super) rt: Runtime<StackPort, Transport, SystemClock>,
    pub(super) metrics: Option<metrics::StackMetrics>,
    #[cfg(feature = "metrics")]
    pub(super) _exporter: Option<crate::telemetry::Exporter>,
    pub(super) _memif: Option<Memif>,
    /// The fan-in port's counters (a memif server with more than one peer).
    pub(super) fanin: Option<crate::pmd::fanin::FanInStatsHandle>,
    /// The memif interface's packet-buffer pool (None over a [`Backend::Port`]).
    pub(super) packet_pool: Option<crate::mem::Pool>,
    pub(super) max_message: u64,
    /// `ConnectionConfig::max_send_msgs`: a connection's send queue holds this many messages.
    pub(super) max_send_msgs: usize,
    /// The last iteration stopped after its receive half (`Socket::try_recv_msg` handed out
    /// a message at once); the next `try_recv_msg` runs that rest first, any other poll
    /// does a whole iteration.
    pub(super) rest_deferred: bool,
    /// Lending packet buffers to the application is stopped while the receive pool is low
    /// ([`StackBuilder::rx_pool_reserve`]).
    pub(super) rx_pressure: RxPressure,
    /// The idle-poll policy and when the loop last did anything.
    pub(super) idle: Idle,
    /// [`Stack::doorbell`]'s bell, once one was asked for.
    pub(super) bell: Option<std::sync::Arc<super::doorbell::Bell>>,
    /// The bell rang (taken by an idle sleep) and no multi-socket wait has returned for it
    /// yet.
    pub(super) rang: bool,
    // Declared after `rt`: released only after the runtime (and its buffers) are gone.
    pub(super) _core: crate::mem::CoreSlot,
}

/// The state of [`StackBuilder::rx_pool_reserve`]: whether received messages are being
/// copied out of the pool (the pool is low), and the counts.
#[derive(Debug)]
pub(super) struct RxPressure {
    /// Per mille of the pool that must stay free (0: never copy).
    pub(super) reserve: u32,
    /// Copying now: entered below `reserve`, left at twice it (hysteresis, so the state does
    /// not flap with every burst while the application holds the pool near the line).
    on: bool,
    /// Messages delivered; the pool is sampled every `SAMPLE` of them while not copying.
    delivered: u32,
    /// Messages copied out of the pool because it was low.
    pub(super) copies: u64,
    /// Times the pool went low.
    pub(super) episodes: u64,
    log: crate::telemetry::RateLimited,
}

impl RxPressure {
    /// The pool is looked at once per this many messages while it is not low: at most this
    /// many more slots can be lent after it crosses the line.
    const SAMPLE: u32 = 16;

    pub(super) fn new(reserve: u32) -> RxPressure {
        RxPressure {
            reserve,
            on: false,
            delivered: 0,
            copies: 0,
            episodes: 0,
            log: crate::telemetry::RateLimited::new(2, Duration::from_secs(10)),
        }
    }

    /// A message on its way to the application: handed over as it is (a view of its packet
    /// buffers: zero copy) unless the pool those buffers belong to is low, in which case it
    /// is copied into memory of its own and the buffers go back to the pool at once, so
    /// messages the application keeps cannot take the buffers the port needs to receive.
    ///
    /// The common case, the pool not low and this message not one the pool is sampled at,
    /// is this inlined check: a counter and a compare.
    #[inline(always)]
    pub(super) fn deliver(&mut self, m: crate::proto::RecvMsg) -> crate::proto::RecvMsg {
        use crate::proto::MsgData;
        if self.reserve == 0 {
            return m;
        }
        if self.on {
            return self.deliver_slow(m);
        }
        if matches!(m.data, MsgData::Packet(_) | MsgData::Segments(_)) {
            self.delivered = self.delivered.wrapping_add(1);
            if !self.delivered.is_multiple_of(Self::SAMPLE) {
                return m;
            }
            return self.deliver_slow(m);
        }
        m
    }

    /// [`deliver`](Self::deliver) when copying, or at a sample: look at the pool.
    #[inline(never)]
    fn deliver_slow(&mut self, mut m: crate::proto::RecvMsg) -> crate::proto::RecvMsg {
        use crate::proto::MsgData;
        let low = match &m.data {
            MsgData::Packet(_) | MsgData::Segments(_) => {
                if self.on {
                    self.delivered = self.delivered.wrapping_add(1);
                }
                // Leaving needs twice the reserve free (capped at the whole pool).
                let line = if self.on {
                    (2 * self.reserve).min(1000)
                } else {
                    self.reserve
                };
                let first = match &m.data {
                    MsgData::Packet(p) => Some(p),
                    MsgData::Segments(s) => s.part(0),
                    _ => None,
                };
                match first {
                    Some(p) if p.pool_below(line) => Some(p.pool_free()),
                    _ => None,
                }
            }
            MsgData::Buffer(_) | MsgData::Target(_) => return m,
        };
        if low.is_some() != self.on {
            self.on = low.is_some();
            if let Some((free, slots)) = low {
                self.episodes += 1;
                crate::warn_rate_limited!(
                    self.log,
                    StdInstant::now(),
                    free,
                    slots,
                    reserve_percent = f64::from(self.reserve) / 10.0,
                    episodes = self.episodes,
                    "receive pool low: fewer buffers free than the reserve, held by received \
                     messages the application has not read yet or keeps (or by messages still \
                     being reassembled); received messages are copied out of the pool until it \
                     recovers (read sooner, copy what you keep, or give the stack a larger \
                     pool: memif_extra_buffers)"
                );
            } else {
                tracing::info!(
                    copies = self.copies,
                    "receive pool recovered: zero-copy again"
                );
            }
        }
        if self.on {
            let bytes = match &m.data {
                MsgData::Packet(p) => bytes::Bytes::copy_from_slice(p),
                MsgData::Segments(s) => s.to_bytes(),
                _ => return m,
            };
            m.data = MsgData::Buffer(bytes);
            self.copies += 1;
        }
        m
    }
}

impl Inner {
    /// The runtime's clock read now, never behind the loop's own `now`.
    #[inline]
    pub(super) fn fresh_now(&self) -> u64 {
        use crate::time::Clock;
        self.rt.clock().now().max(self.rt.now()).as_nanos()
    }

    #[inline]
    pub(super) fn poll(&mut self) -> bool {
        self.poll_result().busy()
    }

    #[inline]
    pub(super) fn poll_result(&mut self) -> crate::runtime::PollResult {
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
    pub(super) fn finish_deferred(&mut self) {
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
    pub(super) fn finish_poll(&mut self, r: &mut crate::runtime::PollResult) {
        self.rest_deferred = false;
        self.rt.poll_rest(r);
        if r.busy() || r.tx_pending > 0 {
            self.idle.last_active = r.now.as_nanos();
        }
        if let Some(m) = &mut self.metrics {
            m.after_poll(&mut self.rt, self._memif.as_ref(), self.rx_pressure.copies);
        }
    }
    /// Called by a blocking call after an iteration that did not give it what it waits for:
    /// with [`IdlePoll::Sleep`], once the loop has been idle for `sleep_after`, sleep until a
    /// frame arrives, the endpoint's next deadline, `until` (the call's own timeout, loop
    /// time in ns) or the ceiling ([`Runtime::sleep`](crate::runtime::Runtime::sleep)).
    /// While traffic flows this is one comparison.
    #[inline]
    pub(super) fn idle_wait(&mut self, until: Option<u64>) {
        let Some((after, max)) = self.idle.sleep else {
            return;
        };
        let now = self.rt.now().as_nanos();
        if now.saturating_sub(self.idle.last_active) < after {
            return;
        }
        self.sleep(until, max);
    }

    #[cold]
    fn sleep(&mut self, until: Option<u64>, max: Duration) {
        let mut deadline = self.ep().poll_timeout();
        if let Some(u) = until {
            let u = crate::time::Instant::from_nanos(u);
            deadline = Some(deadline.map_or(u, |d| d.min(u)));
        }
        let Some(bell) = self.bell.as_deref() else {
            self.rt.sleep(deadline, max);
            return;
        };
        // A ring is taken here, whichever blocking call sleeps (so that a `Socket::recv`
        // does not spin on it), and kept for the next multi-socket wait to return on.
        if !bell.enter_sleep() {
            bell.take();
            self.rang = true;
            return;
        }
        self.rt.sleep_or_wake(deadline, max, Some(bell.fd()));
        bell.leave_sleep();
        self.rang |= bell.take();
    }

    /// Whether the doorbell rang since the last multi-socket wait returned for it (and
    /// forget it).
    #[inline]
    pub(super) fn take_rang(&mut self) -> bool {
        match &self.bell {
            None => false,
            Some(b) => std::mem::take(&mut self.rang) | b.take(),
        }
    }

    /// [`Stack::poll_events`]'s harvest: the endpoint's event list (sockets only: a
    /// connection not yet accepted is listed again when its socket is made). Returns the
    /// connections waiting to be accepted.
    fn take_events(&mut self, ready: &mut Vec<SocketId>) -> usize {
        let ep = self.ep();
        while let Some(h) = ep.pop_readable() {
            if ep.is_held(h) {
                ready.push(SocketId(h.0));
            }
        }
        ep.incoming_len()
    }

    pub(super) fn ep(&mut self) -> &mut Endpoint {
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

/// A transport stack on one core. See the [module docs](super).
///
/// Over memif, one process serves the control socket and the others connect (one client per
/// interface; a server serves [`StackBuilder::memif_peers`] of them); both name the
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
    pub(super) inner: Rc<RefCell<Inner>>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack").finish_non_exhaustive()
    }
}

/// Names a [`Socket`] of a stack in [`Stack::poll_events`]: its slot, a small integer
/// below the stack's `max_connections`, unique among the stack's live sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub(super) u32);

impl SocketId {
    /// The slot as an index, for a `Vec` that maps ids back to sockets.
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
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
    /// Received messages copied out of the packet-buffer pool because it was low
    /// ([`StackBuilder::rx_pool_reserve`]).
    pub rx_pool_low_copies: u64,
    /// Times the receive pool went low.
    pub rx_pool_low_episodes: u64,
}

impl Stack {
    /// The poll loop's time (ns, read once per iteration from the runtime's clock: no
    /// system call), for timeouts of blocking calls.
    #[inline]
    fn now_ns(&self) -> u64 {
        self.inner.borrow().rt.now().as_nanos()
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
        StackBuilder::new(backend, ip)
    }

    /// One iteration of the poll loop. True if it did anything.
    #[inline]
    pub fn poll(&self) -> bool {
        self.inner.borrow_mut().poll()
    }

    /// Poll for `d` (sleeping while idle, as blocking calls do: [`IdlePoll`]).
    pub fn poll_for(&self, d: Duration) {
        let start = self.start_ns();
        let end = start.saturating_add(d.as_nanos() as u64);
        while self.since(start) < d {
            if !self.poll() {
                self.idle_wait(Some(end));
            }
        }
    }

    /// [`Inner::idle_wait`] (the blocking calls' idle step).
    #[inline]
    pub(super) fn idle_wait(&self, until: Option<u64>) {
        self.inner.borrow_mut().idle_wait(until);
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
                let now = i.rt.now();
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
                self.idle_wait(Some(start.saturating_add(timeout.as_nanos() as u64)));
            }
        }
    }

    /// Start connecting to the stack at `addr` without waiting: the socket is returned at
    /// once, its handshake runs as the stack is polled, and [`poll_events`](Self::poll_events)
    /// reports the socket when it is established ([`Socket::is_open`]) or failed (its next
    /// call returns the error, [`Error::ConnectionLost`] when nobody answered within the
    /// transport's handshake attempts). For a client opening many connections from one
    /// thread; sending before it is open waits in `send` (or `try_send` returns `Ok(None)`).
    pub fn connect_start(&self, addr: SocketAddrV4) -> Result<Socket, Error> {
        let h = {
            let mut i = self.inner.borrow_mut();
            let now = i.rt.now();
            i.ep()
                .connect(now, SocketAddr::V4(addr))
                .map_err(|_| Error::TooManyConnections)?
        };
        Ok(Socket::new(self.inner.clone(), h))
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
    /// Cost: every iteration of the loop looks at every socket given, O(`socks.len()`) per
    /// spin whether they are active or not; a thread serving many connections should use
    /// [`poll_events`](Self::poll_events), which costs O(ready).
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
            if !ready.is_empty()
                || self.inner.borrow_mut().take_rang()
                || self.since(start) >= timeout
            {
                return;
            }
            self.idle_wait(Some(start.saturating_add(timeout.as_nanos() as u64)));
        }
    }

    /// Run the loop until some socket of this stack got something, a connection waits to
    /// be accepted, or `timeout` passes: the readiness event list, for one thread serving
    /// many connections. `ready` (cleared first) receives the [`SocketId`] of each socket
    /// that got a message or an event (established, closed, a message acknowledged, which
    /// also frees room in its send queue) since the last call, once each. Returns how many
    /// connections wait for [`Listener::try_accept`].
    ///
    /// Cost: O(sockets ready) per call and nothing per idle connection (the endpoint lists
    /// the connections a datagram or a timer touched; no socket is scanned), against
    /// [`poll_ready`](Self::poll_ready)'s O(sockets given) per spin. No allocation once
    /// `ready` has grown to the largest batch.
    ///
    /// The contract is edge-triggered (epoll's `EPOLLET`): a socket is reported when something
    /// arrives for it, not while something is waiting. On a socket reported, call
    /// [`Socket::try_recv`] (or `try_recv_msg`) until it returns `Ok(None)` or an error (a
    /// closed connection shows as the error of that call); what is left unread is reported
    /// again only with the next arrival. So a socket the application holds back on purpose (a
    /// peer that does not read our answers: its `try_send` returns `Ok(None)`) costs nothing
    /// per call until its peer acknowledges something, which reports it again. A socket
    /// accepted (or connected with [`connect_start`](Self::connect_start)) after its first
    /// messages arrived is reported by the next call.
    ///
    /// A [`SocketId`] is the socket's slot in the stack: a small integer below
    /// [`max_connections`](StackBuilder::max_connections), unique among the stack's live
    /// sockets (a slot is not reused while its `Socket` exists), so a `Vec` indexed by
    /// [`SocketId::index`] maps it back to the socket:
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use bypass::socket::{Socket, Stack};
    /// # fn serve(stack: &Stack) -> Result<(), bypass::socket::Error> {
    /// let listener = stack.listen();
    /// let mut socks: Vec<Option<Socket>> = Vec::new();
    /// let mut ready = Vec::new();
    /// loop {
    ///     if stack.poll_events(&mut ready, Duration::from_millis(10)) > 0 {
    ///         while let Some(s) = listener.try_accept() {
    ///             let k = s.id().index();
    ///             if socks.len() <= k {
    ///                 socks.resize_with(k + 1, || None);
    ///             }
    ///             socks[k] = Some(s);
    ///         }
    ///     }
    ///     for id in &ready {
    ///         let Some(s) = socks.get(id.index()).and_then(|s| s.as_ref()) else { continue };
    ///         let closed = loop {
    ///             match s.try_recv() {
    ///                 Ok(Some(msg)) => {
    ///                     s.send_bytes(msg)?;
    ///                 }
    ///                 Ok(None) => break false,
    ///                 Err(_) => break true,
    ///             }
    ///         };
    ///         if closed {
    ///             socks[id.index()] = None; // drop it
    ///         }
    ///     }
    /// }
    /// # }
    /// ```
    pub fn poll_events(&self, ready: &mut Vec<SocketId>, timeout: Duration) -> usize {
        ready.clear();
        let start = self.start_ns();
        loop {
            let (incoming, rang) = {
                let mut i = self.inner.borrow_mut();
                i.poll();
                (i.take_events(ready), i.take_rang())
            };
            if !ready.is_empty() || incoming > 0 || rang || self.since(start) >= timeout {
                return incoming;
            }
            self.idle_wait(Some(start.saturating_add(timeout.as_nanos() as u64)));
        }
    }

    /// A [`Doorbell`](super::Doorbell) that wakes this stack's loop from another thread:
    /// after `ring`, the stack's current or next [`poll_ready`](Self::poll_ready) or
    /// [`poll_events`](Self::poll_events) returns (with nothing ready, if nothing is), also
    /// from an idle sleep. All calls give the same bell. For work that reaches this core by
    /// another path than its port (a hand-off queue from another core): push it, then ring.
    pub fn doorbell(&self) -> Result<super::Doorbell, Error> {
        let mut i = self.inner.borrow_mut();
        if let Some(b) = &i.bell {
            return Ok(super::Doorbell(b.clone()));
        }
        let d = super::Doorbell::new().map_err(|e| Error::Backend {
            what: "doorbell eventfd".into(),
            why: e.to_string(),
            fix: "raise the open-file limit (ulimit -n)",
        })?;
        i.bell = Some(d.0.clone());
        Ok(d)
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
            rx_pool_low_copies: i.rx_pressure.copies,
            rx_pool_low_episodes: i.rx_pressure.episodes,
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

    /// The counters of the port a memif server with more than one
    /// [`memif_peers`](StackBuilder::memif_peers) serves them through
    /// ([`pmd::fanin`](crate::pmd::fanin)): frames to a MAC no client was seen with (dropped),
    /// broadcasts, MACs learned and moved between interfaces (two clients with one address
    /// show as moves). `None` for any other stack.
    pub fn fanin_stats(&self) -> Option<crate::pmd::fanin::FanInStats> {
        self.inner.borrow().fanin.as_ref().map(|h| h.get())
    }

    /// Why the memif peer on interface `id` was last refused or dropped, as memif's control
    /// channel recorded it ([`Memif::last_error`]): a client's region over a limit, a peer's
    /// DISCONNECT and its reason, ... `None` over another backend, for an interface the stack
    /// does not have, or when nothing went wrong.
    pub fn memif_last_error(&self, id: u32) -> Option<crate::pmd::memif::ControlError> {
        self.inner
            .borrow()
            ._memif
            .as_ref()
            .and_then(|m| m.last_error(id))
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
