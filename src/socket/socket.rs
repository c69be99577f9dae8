//! [`Socket`]: one connection, whole messages in both directions.

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::rc::Rc;
use std::time::{Duration, Instant as StdInstant};

use bytes::Bytes;

use crate::mem::PktBuf;
use crate::proto::{
    CloseReason, ConnectionHandle, ConnectionStats, Event, Instant, RecvMsg, RecvTarget, SendError,
    State,
};

use super::stack::Inner;
use super::{gpu, Error};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SockState {
    Connecting,
    Open,
    Closed(CloseReason),
}

pub(super) struct SockInner {
    pub(super) state: SockState,
    pub(super) acked: u64,
    pub(super) last_sent: Option<u64>,
    pub(super) timeout: Option<Duration>,
    /// An empty segment list kept for the next [`Socket::send_buf`] (its capacity reused).
    pub(super) spare_segs: Vec<PktBuf>,
    /// Loop time each message was queued, by message id modulo the message window (more
    /// messages than that are never outstanding), for the completion-time histogram.
    pub(super) sent_at: Box<[u64]>,
}

/// One connection: whole messages in both directions. See the [module docs](super).
///
/// Errors tell what happened to the connection: [`Error::Closed`] after a graceful close
/// (ours or the peer's), [`Error::ConnectionReset`] when either side reset it (a dropped
/// `Socket` resets), [`Error::ConnectionLost`] when the peer stopped answering (it died, or
/// the path did) for the connection's idle timeout
/// ([`ConnectionConfig::idle_timeout`](crate::proto::ConnectionConfig::idle_timeout), set with
/// [`StackBuilder::connection_config`](super::StackBuilder::connection_config)).
///
/// Dropping a `Socket` without [`close`](Self::close) **resets** the connection, at once:
/// - messages queued with `send` that the peer has not acknowledged completely may never
///   arrive (none arrives in part: the peer's application gets whole messages or nothing,
///   then [`Error::ConnectionReset`]);
/// - messages received and not taken yet are discarded.
///
/// So the peer has every message sent when `close` returned `Ok` (it waits for the peer's
/// confirmation), or when [`flush`](Self::flush) returned before the drop.
/// (`socket::api::dropping_a_socket_resets_and_loses_only_unacknowledged_messages` pins it.)
pub struct Socket {
    pub(super) inner: Rc<RefCell<Inner>>,
    pub(super) h: ConnectionHandle,
    pub(super) s: RefCell<SockInner>,
    pub(super) remote: SocketAddr,
    pub(super) gpu: RefCell<gpu::GpuState>,
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
    pub(super) fn now_ns(&self) -> u64 {
        self.inner.borrow().rt.now().as_nanos()
    }

    /// The clock read now (not the last iteration's time, which is stale by however long the
    /// application ran since its last poll): where a blocking call's timeout starts.
    #[inline]
    pub(super) fn start_ns(&self) -> u64 {
        self.inner.borrow().fresh_now()
    }

    #[inline]
    pub(super) fn since(&self, start: u64) -> Duration {
        Duration::from_nanos(self.now_ns().saturating_sub(start))
    }
    /// The idle step of a blocking call begun at `start` with `timeout`
    /// ([`Inner::idle_wait`]).
    #[inline]
    pub(super) fn idle_wait(&self, start: u64, timeout: Option<Duration>) {
        let until = timeout.map(|t| start.saturating_add(t.as_nanos() as u64));
        self.inner.borrow_mut().idle_wait(until);
    }

    pub(super) fn new(inner: Rc<RefCell<Inner>>, h: ConnectionHandle) -> Socket {
        let remote = {
            let mut i = inner.borrow_mut();
            let ep = i.ep();
            // The slot stays this socket's until it drops (its id names it alone), and what
            // arrived before the socket existed is on the event list.
            ep.hold(h);
            ep.requeue_readable(h);
            ep.connection(h)
                .map(|c| c.remote())
                .unwrap_or(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)))
        };
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
    pub(super) fn pump_events(&self) -> Option<SockState> {
        let mut i = self.inner.borrow_mut();
        let now = i.rt.now().as_nanos();
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

    pub(super) fn readable(&self) -> bool {
        self.pump_events();
        if matches!(self.s.borrow().state, SockState::Closed(_)) {
            return true;
        }
        let mut i = self.inner.borrow_mut();
        i.ep().connection_ref(self.h).is_some_and(|c| c.has_recv())
    }

    pub(super) fn abort(&self) {
        let mut i = self.inner.borrow_mut();
        let now = i.rt.now();
        if let Some(c) = i.ep().connection(self.h) {
            c.reset(now, 0);
        }
    }

    /// Message `id` was queued at `now`: note it (for its completion time) and finish an
    /// iteration left half done, so it leaves at once ([`Inner::finish_deferred`]).
    #[inline]
    pub(super) fn sent(&self, i: &mut Inner, id: u64, now: Instant) {
        {
            let mut st = self.s.borrow_mut();
            st.last_sent = Some(id);
            st.sent_at[(id % crate::proto::MSG_WINDOW) as usize] = now.as_nanos();
        }
        i.finish_deferred();
    }

    pub(super) fn closed_error(&self) -> Option<Error> {
        match self.s.borrow().state {
            SockState::Closed(r) => Some(Error::from_close(r)),
            _ => None,
        }
    }

    /// This socket's id in [`Stack::poll_events`](super::Stack::poll_events): its slot in
    /// the stack, unique among the stack's live sockets.
    pub fn id(&self) -> super::SocketId {
        super::SocketId(self.h.0)
    }

    /// Whether the connection is established and not closed (a socket from
    /// [`Stack::connect_start`](super::Stack::connect_start) is not until its handshake
    /// completes).
    pub fn is_open(&self) -> bool {
        self.pump_events();
        self.s.borrow().state == SockState::Open
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
            if !self.inner.borrow_mut().poll() {
                self.idle_wait(start, timeout);
            }
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
        let loop_start = self.start_ns();
        loop {
            if let Some(id) = self.try_send_copy(msg)? {
                return Ok(id);
            }
            if timeout.is_some_and(|t| start.elapsed() >= t) {
                return Err(Error::TimedOut {
                    after: timeout.unwrap_or_default(),
                });
            }
            if !self.inner.borrow_mut().poll() {
                self.idle_wait(loop_start, timeout);
            }
        }
    }

    /// One attempt of [`send`](Self::send). The copy is made only when the send queue has
    /// room (waiting under backpressure allocates nothing), and it is moved into the
    /// transport: no `clone` to keep in case of `WouldBlock`, because a clone of a fresh
    /// `Bytes` allocates a second time (its shared header). If the transport refuses anyway,
    /// the copy is dropped and the next attempt copies again from `msg`.
    pub(super) fn try_send_copy(&self, msg: &[u8]) -> Result<Option<u64>, Error> {
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

    pub(super) fn try_send_inner(&self, msg: &mut Option<Bytes>) -> Result<Option<u64>, Error> {
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
                return Ok(Some(i.rx_pressure.deliver(m)));
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
        if r.rx > 0 {
            i.idle.last_active = r.now.as_nanos();
        }
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
                    return Ok(Some(i.rx_pressure.deliver(m)));
                }
            }
        }
        if !(resumed && r.rx == 0) {
            i.finish_poll(&mut r);
        }
        if i.ep().connection_ref(self.h).is_some_and(|c| c.has_recv()) {
            if let Some(m) = i.ep().connection(self.h).and_then(|c| c.poll_recv()) {
                return Ok(Some(i.rx_pressure.deliver(m)));
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
    /// The zero-copy, allocation-free way to receive (see the [module docs](super)):
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
            self.idle_wait(start, timeout);
        }
    }

    /// Wait for the next whole message, as `Bytes` (no copy; messages written into a
    /// posted target are returned by [`recv_msg`](Self::recv_msg) only). A message
    /// delivered as packet buffers (`ConnectionConfig::rx_segments`) is copied into one
    /// `Bytes` here: use `recv_msg` to read its parts in place.
    ///
    /// What a kept `Bytes` holds: a single-packet message is a view of the packet buffer it
    /// arrived in, and keeping the `Bytes` (or any slice of it) keeps that whole buffer out
    /// of the stack's receive pool until the last clone drops; a message reassembled from
    /// several packets is memory of its own. Keeping many messages is safe: while fewer than
    /// [`StackBuilder::rx_pool_reserve`](super::StackBuilder::rx_pool_reserve) of the pool's
    /// buffers are free, messages arrive copied into memory of their own instead (logged,
    /// and counted in `StackStats::rx_pool_low_copies`).
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
            self.idle_wait(start, timeout);
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
            let now = i.rt.now();
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
            self.idle_wait(start, Some(timeout));
        }
    }
}

impl Socket {
    /// Start a graceful close without waiting for it: queued messages are delivered first,
    /// then the peer confirms. [`Stack::poll_events`](super::Stack::poll_events) reports the
    /// socket when the close is over; its `try_recv` then returns [`Error::Closed`] (or the
    /// error that ended it otherwise). Keep the socket until then: dropping it earlier
    /// resets the connection. For a thread closing many connections at once, where
    /// [`close`](Self::close) would wait for each peer in turn. Closing again is a no-op.
    pub fn close_start(&self) {
        let mut i = self.inner.borrow_mut();
        let now = i.rt.now();
        if let Some(c) = i.ep().connection(self.h) {
            if matches!(c.state(), State::Handshake | State::Established) {
                c.close(now, 0);
            }
        }
    }

    /// Close gracefully, as [`close`](Self::close) does, but keep the socket: every later
    /// `send`/`recv` reports [`Error::Closed`]. Closing again is a no-op.
    pub fn shutdown(&self) -> Result<(), Error> {
        {
            let mut i = self.inner.borrow_mut();
            let now = i.rt.now();
            if let Some(c) = i.ep().connection(self.h) {
                if matches!(c.state(), State::Handshake | State::Established) {
                    c.close(now, 0);
                }
            }
        }
        let timeout = self.s.borrow().timeout.unwrap_or(Duration::from_secs(10));
        let start = StdInstant::now();
        let loop_start = self.start_ns();
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
            self.idle_wait(loop_start, Some(timeout));
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
        let now = i.rt.now();
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
        i.ep().release(self.h);
    }
}
