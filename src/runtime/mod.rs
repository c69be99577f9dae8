//! The runtime: one poll loop per core, joining a [`Port`] to the transport.
//!
//! Contract:
//! - A [`Runtime`] owns one port (one queue pair), the L2/L3 layer ([`net::Net`]: Ethernet,
//!   ARP, IPv4, ICMP echo, UDP demux), a clock ([`Clock`]) and a timer wheel
//!   ([`timer::TimerWheel`]), and drives a [`UdpHandler`] (the transport endpoint, or a test
//!   application). It is generic over all of them, so the data path has no dynamic dispatch
//!   except [`Io::alloc_tx`] and ARP's buffer allocation.
//! - [`Runtime::poll_once`] is one iteration, in this order:
//!   1. read the clock once (clamped so `now` never goes backwards); every callback of the
//!      iteration sees that `now`;
//!   2. `rx_burst` up to the configured burst; stamp each frame's `meta.rx_timestamp`;
//!   3. dispatch each frame: ARP and ICMP echo are answered by the net layer, UDP datagrams
//!      to bound ports go to [`UdpHandler::on_datagram`] (payload zero copy), the rest is
//!      dropped and counted;
//!   4. expire timers due at `now` and call [`UdpHandler::on_timer`] for each;
//!   5. net housekeeping (ARP retries and give-ups);
//!   6. [`UdpHandler::on_poll`]: the transport emits what it has (its `poll_*` side);
//!   7. flush the transmit queue with `tx_burst`; frames the port did not take stay queued,
//!      in order, for the next iteration (never dropped silently; the queue is bounded and
//!      a full queue is backpressure to senders).
//! - The handler sees the received datagram's IPv4 ECN field ([`Io::rx_ecn`]);
//!   [`net::NetConfig::tx_ecn`] marks what it sends.
//! - Nothing in an iteration allocates on the heap, makes a system call (the TSC clock is
//!   read in user space; see [`clock`]) or takes a lock, given a port that doesn't.
//! - Idle: [`Runtime::sleep`], called by the application's loop (the socket layer's blocking
//!   calls, after an idle spell: `socket::IdlePoll`), is the one place the loop sleeps: on the
//!   port's receive interrupts until a frame, a deadline, the next timer or a ceiling.
//! - Threading: construct the runtime on the thread that will run it. With
//!   [`RuntimeConfig::pin_core`] it pins that thread to a CPU (core_affinity); with
//!   [`RuntimeConfig::core_slot`] it claims a [`CoreSlot`] so the pools give this thread a
//!   per-core cache. Holding a core slot makes the runtime `!Send`.
//! - Between cores: runtimes share nothing; an application whose request must reach another
//!   core's shard hands it over through [`handoff`] (bounded single-producer single-consumer
//!   queues, one each way between two cores: [`handoff::mesh`]), never by a lock or a wait
//!   on the other core: no allocation, system call or lock per hand-off.

pub mod clock;
pub mod handoff;
pub mod net;
pub mod timer;

mod arp;

use std::net::SocketAddrV4;

use std::time::Duration;

use crate::mem::{CoreError, CoreSlot, PktBuf, PoolExhausted};
use crate::pmd::{Port, RxIntr, RxWait, MAX_BURST};

use self::net::{Net, NetConfig, NetCounters, SendError};
use self::timer::{Expired, StaleHandle, TimerHandle, TimerWheel, WheelFull};
use crate::time::{Clock, Instant};

/// The transport side of a runtime: what it does with datagrams, timers and spare cycles.
pub trait UdpHandler {
    /// A UDP datagram arrived for `dst_port` (bound with [`Net::bind`]). `payload` is the
    /// received buffer, advanced past the headers (zero copy); its IPv4 ECN field is
    /// [`Io::rx_ecn`].
    fn on_datagram(&mut self, io: &mut Io<'_>, src: SocketAddrV4, dst_port: u16, payload: PktBuf);

    /// A timer set with [`Io::set_timer`] expired.
    fn on_timer(&mut self, io: &mut Io<'_>, timer: TimerHandle, token: u64) {
        let _ = (io, timer, token);
    }

    /// Called once per iteration after receive and timers: send what is ready.
    fn on_poll(&mut self, io: &mut Io<'_>) {
        let _ = io;
    }

    /// Called once per iteration after the flush of what `on_poll` sent: work that need
    /// not delay those frames (a transport's own deadline bookkeeping and the timeouts it
    /// finds due). What it sends is flushed in the same iteration.
    fn after_flush(&mut self, io: &mut Io<'_>) {
        let _ = io;
    }
}

/// What a handler can do during a callback: read `now`, get buffers, send, set timers.
pub struct Io<'a> {
    now: Instant,
    ecn: u8,
    checksummed: bool,
    net: &'a mut Net,
    timers: &'a mut TimerWheel<u64>,
    port: &'a mut dyn Port,
}

impl std::fmt::Debug for Io<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Io").field("now", &self.now).finish()
    }
}

impl Io<'_> {
    /// The iteration's time.
    #[inline]
    pub fn now(&self) -> Instant {
        self.now
    }

    /// In [`UdpHandler::on_datagram`]: the ECN field of the datagram's IPv4 header (0
    /// elsewhere).
    #[inline]
    pub fn rx_ecn(&self) -> u8 {
        self.ecn
    }

    /// In [`UdpHandler::on_datagram`]: whether the datagram carried ECN Congestion
    /// Experienced.
    #[inline]
    pub fn rx_ecn_ce(&self) -> bool {
        self.ecn == 3
    }

    /// In [`UdpHandler::on_datagram`]: whether the datagram carried a UDP checksum (it was
    /// checked; false means the field was 0, "no checksum"). True elsewhere.
    #[inline]
    pub fn rx_checksummed(&self) -> bool {
        self.checksummed
    }

    /// A transmit buffer from the port's pool (with the pool's headroom for headers).
    #[inline]
    pub fn alloc_tx(&mut self) -> Result<PktBuf, PoolExhausted> {
        self.port.alloc_tx()
    }

    /// Send `payload` from our UDP `src_port` to `dst` (see [`Net::send_udp`]).
    #[inline]
    pub fn send_udp(
        &mut self,
        src_port: u16,
        dst: SocketAddrV4,
        payload: PktBuf,
    ) -> Result<(), SendError> {
        self.send_udp_checksum(src_port, dst, payload, true)
    }

    /// [`send_udp`](Self::send_udp), leaving the UDP checksum out (0) when `checksum` is
    /// false (see [`Net::send_udp_checksum`]).
    #[inline]
    pub fn send_udp_checksum(
        &mut self,
        src_port: u16,
        dst: SocketAddrV4,
        payload: PktBuf,
        checksum: bool,
    ) -> Result<(), SendError> {
        let port = &mut *self.port;
        self.net
            .send_udp_checksum(self.now, src_port, dst, payload, checksum, &mut || {
                port.alloc_tx()
            })
    }

    /// Send an ICMP echo request (see [`Net::send_ping`]).
    pub fn send_ping(
        &mut self,
        dst: std::net::Ipv4Addr,
        ident: u16,
        seq: u16,
        payload_len: usize,
    ) -> Result<(), SendError> {
        let port = &mut *self.port;
        self.net
            .send_ping(self.now, dst, ident, seq, payload_len, &mut || {
                port.alloc_tx()
            })
    }

    /// Send a gratuitous ARP (see [`Net::announce`]).
    pub fn announce(&mut self) {
        let port = &mut *self.port;
        self.net.announce(&mut || port.alloc_tx());
    }

    /// Call [`UdpHandler::on_timer`] with `token` at `deadline`.
    #[inline]
    pub fn set_timer(&mut self, deadline: Instant, token: u64) -> Result<TimerHandle, WheelFull> {
        self.timers.insert(deadline, token)
    }

    /// Cancel a timer; its token, or `None` if it already fired or was cancelled.
    #[inline]
    pub fn cancel_timer(&mut self, timer: TimerHandle) -> Option<u64> {
        self.timers.cancel(timer)
    }

    /// Move a timer to a new deadline.
    #[inline]
    pub fn reset_timer(
        &mut self,
        timer: TimerHandle,
        deadline: Instant,
    ) -> Result<(), StaleHandle> {
        self.timers.reset(timer, deadline)
    }

    /// The L2/L3 layer (bindings, counters, ARP).
    #[inline]
    pub fn net(&mut self) -> &mut Net {
        self.net
    }
}

/// Settings of a [`Runtime`].
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Addresses, ARP and queue limits.
    pub net: NetConfig,
    /// Most frames taken per `rx_burst` (at most [`MAX_BURST`]).
    pub rx_burst: usize,
    /// Timer slab capacity.
    pub timers: usize,
    /// Timer wheel tick, as a power of two of ns (10 = 1024 ns).
    pub timer_tick_shift: u32,
    /// Pin the constructing thread to this CPU.
    pub pin_core: Option<usize>,
    /// Claim this [`CoreSlot`] for per-core pool caches.
    pub core_slot: Option<usize>,
}

impl RuntimeConfig {
    /// Defaults around `net`: bursts of 32, 4096 timers of 1024 ns ticks, no pinning, no core
    /// slot.
    pub fn new(net: NetConfig) -> RuntimeConfig {
        RuntimeConfig {
            net,
            rx_burst: 32,
            timers: 4096,
            timer_tick_shift: timer::DEFAULT_TICK_SHIFT,
            pin_core: None,
            core_slot: None,
        }
    }
}

/// Errors creating a [`Runtime`].
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The thread could not be pinned to the CPU (no such CPU, or not in this process's
    /// allowed set).
    #[error("cannot pin the thread to CPU {0}")]
    Pin(usize),
    /// The core slot could not be claimed.
    #[error(transparent)]
    CoreSlot(#[from] CoreError),
}

/// What one iteration did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollResult {
    /// The iteration's `now`.
    pub now: Instant,
    /// Frames received.
    pub rx: usize,
    /// Frames the port took for transmission.
    pub tx: usize,
    /// Timers expired.
    pub timers: usize,
    /// Frames still queued for transmission after the flush.
    pub tx_pending: usize,
}

impl PollResult {
    /// Whether the iteration did anything.
    pub fn busy(&self) -> bool {
        self.rx + self.tx + self.timers > 0
    }
}

/// Counters of a runtime's loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuntimeCounters {
    /// Iterations run.
    pub iterations: u64,
    /// Iterations that received, sent or expired something.
    pub busy_iterations: u64,
    /// Frames received.
    pub rx_frames: u64,
    /// Frames transmitted.
    pub tx_frames: u64,
    /// Flushes where the port took less than was queued.
    pub tx_partial: u64,
    /// Timers expired.
    pub timers_fired: u64,
    /// Times the clock read earlier than the previous iteration (clamped).
    pub clock_clamped: u64,
    /// Times the loop slept ([`Runtime::sleep`]: on the port's interrupts, or a nap).
    pub sleeps: u64,
    /// Sleeps a port's interrupt ended (a frame arrived), not the timeout.
    pub sleep_wakeups: u64,
    /// Time spent in those sleeps, in ns.
    pub slept_ns: u64,
}

/// How a [`Runtime::sleep`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slept {
    /// It did not sleep: frames were waiting, or the deadline was nearer than
    /// [`MIN_SLEEP`].
    No,
    /// It slept on the port's interrupts until a frame arrived (or the descriptor given to
    /// [`Runtime::sleep_or_wake`] was signalled).
    Woken,
    /// It slept on the port's interrupts to its timeout.
    TimedOut,
    /// The port has no receive interrupts: it napped ([`NAP`] at most).
    Napped,
}

/// A deadline nearer than this is spun to, not slept to (a sleep's own cost and the timer's
/// slack are tens of microseconds).
pub const MIN_SLEEP: Duration = Duration::from_micros(50);

/// How long a loop whose port has no receive interrupts ([`RxIntr::Unsupported`]) sleeps at a
/// time: what the first frame after idle may wait, on top of the wake-up (timer slack adds
/// about 50 µs). 250 µs keeps an idle loop to a few percent of a core (each nap costs a few
/// microseconds of CPU; 100 µs naps cost 7 % of a core on the development VM).
pub const NAP: Duration = Duration::from_micros(250);

/// One poll loop: a port, the L2/L3 layer, a clock, a timer wheel and a handler.
pub struct Runtime<P: Port, H: UdpHandler, C: Clock> {
    port: P,
    net: Net,
    clock: C,
    timers: TimerWheel<u64>,
    handler: H,
    rx: Vec<PktBuf>,
    expired: Vec<Expired<u64>>,
    rx_burst: usize,
    now: Instant,
    counters: RuntimeCounters,
    /// The descriptors `sleep` waits on (capacity kept between sleeps).
    wait: RxWait,
    _core: Option<CoreSlot>,
}

impl<P: Port, H: UdpHandler, C: Clock> std::fmt::Debug for Runtime<P, H, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("net", &self.net)
            .field("now", &self.now)
            .field("counters", &self.counters)
            .finish()
    }
}

impl<P: Port, H: UdpHandler, C: Clock> Runtime<P, H, C> {
    /// A runtime over `port`, on the calling thread (pinned and holding a core slot if
    /// configured).
    pub fn new(cfg: RuntimeConfig, port: P, handler: H, clock: C) -> Result<Self, RuntimeError> {
        if let Some(cpu) = cfg.pin_core {
            // core_affinity panics (inside libc's CPU_SET) on an index past the CPU set, so
            // only pass it CPUs this process may run on.
            let allowed = core_affinity::get_core_ids().unwrap_or_default();
            if !allowed.iter().any(|c| c.id == cpu)
                || !core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
            {
                return Err(RuntimeError::Pin(cpu));
            }
        }
        let core = cfg.core_slot.map(CoreSlot::claim).transpose()?;
        let now = clock.now();
        let rx_burst = cfg.rx_burst.clamp(1, MAX_BURST);
        Ok(Runtime {
            net: Net::new(cfg.net),
            timers: TimerWheel::new(cfg.timers, cfg.timer_tick_shift, now),
            rx: Vec::with_capacity(rx_burst),
            expired: Vec::with_capacity(cfg.timers.min(4096)),
            rx_burst,
            now,
            counters: RuntimeCounters::default(),
            wait: RxWait::new(),
            _core: core,
            port,
            handler,
            clock,
        })
    }

    /// Hand every received frame to the net layer and the handler.
    fn dispatch(&mut self, now: Instant) {
        for mut buf in self.rx.drain(..) {
            if buf.meta.rx_timestamp == 0 {
                buf.meta.rx_timestamp = now.as_nanos();
            }
            if let Some(d) = self.net.handle_frame(now, buf) {
                let mut io = Io {
                    now,
                    ecn: d.ecn,
                    checksummed: d.checksummed,
                    net: &mut self.net,
                    timers: &mut self.timers,
                    port: &mut self.port,
                };
                self.handler
                    .on_datagram(&mut io, d.src, d.dst_port, d.payload);
            }
        }
    }

    /// One iteration of the loop (see the module contract).
    pub fn poll_once(&mut self) -> PollResult {
        let mut res = self.poll_rx();
        self.poll_rest(&mut res);
        res
    }

    /// The first half of an iteration: read the clock, receive a burst and dispatch it. An
    /// application on the loop thread that now has what it waited for may return to it and
    /// leave the rest of the iteration ([`poll_rest`](Self::poll_rest): timers, the handler's
    /// output, the flush) to its next call, off the path from arrival to its answer; the next
    /// [`poll_once`](Self::poll_once) does it anyway. Counted as an iteration.
    pub fn poll_rx(&mut self) -> PollResult {
        let now = self.tick();
        let n = self.port.rx_burst(&mut self.rx, self.rx_burst);
        if !self.rx.is_empty() {
            self.dispatch(now);
        }
        self.counters.iterations += 1;
        self.counters.rx_frames += n as u64;
        if n > 0 {
            self.counters.busy_iterations += 1;
        }
        PollResult {
            now,
            rx: n,
            ..Default::default()
        }
    }

    /// Read the clock into the loop's `now` (never backwards: a read behind the last one is
    /// counted in `clock_clamped` and ignored) and return it. [`poll_rx`](Self::poll_rx) does
    /// this; call it alone to run [`poll_rest`](Self::poll_rest) at a fresh time without a
    /// receive half (the rest of an iteration deferred while the application answered).
    #[inline]
    pub fn tick(&mut self) -> Instant {
        let t = self.clock.now();
        if t < self.now {
            self.counters.clock_clamped += 1;
        } else {
            self.now = t;
        }
        self.now
    }

    /// The second half of an iteration at `res.now` (after [`poll_rx`](Self::poll_rx)):
    /// expire timers, let the handler emit, flush. Adds to `res`.
    pub fn poll_rest(&mut self, res: &mut PollResult) {
        let now = res.now;
        // Timers. A handler may set timers due now from on_timer; those run next iteration.
        res.timers = self.timers.advance(now, &mut self.expired);
        for e in self.expired.drain(..) {
            let mut io = Io {
                now,
                ecn: 0,
                checksummed: true,
                net: &mut self.net,
                timers: &mut self.timers,
                port: &mut self.port,
            };
            self.handler.on_timer(&mut io, e.handle, e.value);
        }

        // Housekeeping and the handler's own output.
        {
            let port = &mut self.port;
            self.net.poll(now, &mut || port.alloc_tx());
        }
        let (handler, mut io) = self.handler_io(now);
        handler.on_poll(&mut io);

        // Flush; what the port doesn't take stays queued, in order.
        self.flush(res);
        // Then the handler's later work, and a flush of what it sent.
        let (handler, mut io) = self.handler_io(now);
        handler.after_flush(&mut io);
        if !self.net.tx_queue().is_empty() {
            self.flush(res);
        }
        res.tx_pending = self.net.tx_queue().len();

        self.counters.tx_frames += res.tx as u64;
        self.counters.timers_fired += res.timers as u64;
        // (An iteration whose receive half was busy was counted busy there.)
        if res.rx == 0 && res.tx + res.timers > 0 {
            self.counters.busy_iterations += 1;
        }
    }

    /// The handler and an [`Io`] at `now` (disjoint parts of the runtime).
    #[inline]
    fn handler_io(&mut self, now: Instant) -> (&mut H, Io<'_>) {
        (
            &mut self.handler,
            Io {
                now,
                ecn: 0,
                checksummed: true,
                net: &mut self.net,
                timers: &mut self.timers,
                port: &mut self.port,
            },
        )
    }

    /// Hand the queued frames to the port (adds to `res.tx`); what it refuses stays queued.
    #[inline]
    fn flush(&mut self, res: &mut PollResult) {
        let q = self.net.tx_queue();
        if !q.is_empty() {
            let queued = q.len();
            let sent = self.port.tx_burst(q);
            res.tx += sent;
            if sent < queued {
                self.counters.tx_partial += 1;
            }
        }
    }

    /// Run iterations until `stop` is set (checked every 64 iterations, a relaxed load).
    pub fn run(&mut self, stop: &std::sync::atomic::AtomicBool) {
        loop {
            for _ in 0..64 {
                self.poll_once();
            }
            if stop.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
        }
    }

    /// Sleep while idle: until the port has a frame, `deadline` or the next timer of the
    /// wheel, and for `max` at most (a ceiling on what a missed interrupt can cost). The
    /// caller decides when the loop is idle (nothing received, sent or due for a while); the
    /// deadline is its own (the transport's next timeout, a blocking call's end).
    ///
    /// The port arms its receive interrupts ([`Port::rx_intr_arm`]) and the thread sleeps in
    /// `ppoll(2)` on them; a port that has frames already waiting is not slept on
    /// ([`Slept::No`]). A port without interrupts makes this a nap of [`NAP`] (or less, to
    /// the deadline). A deadline nearer than [`MIN_SLEEP`] is not slept to. The clock is read
    /// here (not on the data path: only a loop that decided to sleep calls it); nothing is
    /// allocated once the descriptor set has held the port's descriptors.
    pub fn sleep(&mut self, deadline: Option<Instant>, max: Duration) -> Slept {
        self.sleep_or_wake(deadline, max, None)
    }

    /// [`sleep`](Self::sleep), also woken when `wake` becomes readable (an eventfd another
    /// thread signals: a [`Doorbell`](crate::socket::Doorbell)). On a port without receive
    /// interrupts the nap is a wait on `wake` alone, so it ends at once when it is signalled.
    /// The caller drains `wake`.
    pub fn sleep_or_wake(
        &mut self,
        deadline: Option<Instant>,
        max: Duration,
        wake: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Slept {
        let now = self.clock.now().max(self.now);
        let mut until = now + max;
        if let Some(d) = deadline {
            until = until.min(d);
        }
        if let Some(t) = self.timers.next_deadline() {
            until = until.min(t);
        }
        let mut timeout = until.saturating_duration_since(now);
        if timeout < MIN_SLEEP {
            return Slept::No;
        }
        self.wait.clear();
        let armed = self.port.rx_intr_arm(&mut self.wait);
        let slept = match (armed, wake) {
            (RxIntr::Pending, _) => Slept::No,
            (RxIntr::Armed, _) => {
                if let Some(w) = wake {
                    self.wait.push(w);
                }
                match self.wait.wait(timeout) {
                    Ok(true) => Slept::Woken,
                    Ok(false) => Slept::TimedOut,
                    // (ppoll fails only on a bad argument: spin rather than sleep wrongly.)
                    Err(_) => Slept::No,
                }
            }
            (RxIntr::Unsupported, None) => {
                timeout = timeout.min(NAP);
                std::thread::sleep(timeout);
                Slept::Napped
            }
            (RxIntr::Unsupported, Some(w)) => {
                // Nothing wakes it on a frame: a nap, but one the doorbell ends.
                self.wait.push(w);
                match self.wait.wait(timeout.min(NAP)) {
                    Ok(true) => Slept::Woken,
                    Ok(false) => Slept::Napped,
                    Err(_) => Slept::No,
                }
            }
        };
        if armed != RxIntr::Unsupported {
            self.port.rx_intr_disarm();
        }
        if slept != Slept::No {
            self.counters.sleeps += 1;
            self.counters.sleep_wakeups += u64::from(slept == Slept::Woken);
            let after = self.clock.now();
            self.counters.slept_ns += after.nanos_since(now);
        }
        slept
    }

    /// Run `f` with an [`Io`] at the last iteration's `now` (to send or set timers from
    /// outside a callback, e.g. an application on the loop thread).
    pub fn with_io<R>(&mut self, f: impl FnOnce(&mut H, &mut Io<'_>) -> R) -> R {
        let now = self.now;
        let (handler, mut io) = self.handler_io(now);
        f(handler, &mut io)
    }

    /// The last iteration's `now`.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The handler, mutable.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// The L2/L3 layer.
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// The L2/L3 layer, mutable (bind ports, static ARP).
    pub fn net_mut(&mut self) -> &mut Net {
        &mut self.net
    }

    /// L2/L3 counters.
    pub fn net_counters(&self) -> &NetCounters {
        self.net.counters()
    }

    /// Loop counters.
    pub fn counters(&self) -> &RuntimeCounters {
        &self.counters
    }

    /// The port.
    pub fn port(&self) -> &P {
        &self.port
    }

    /// The port, mutable.
    pub fn port_mut(&mut self) -> &mut P {
        &mut self.port
    }

    /// The timer wheel.
    pub fn timers(&self) -> &TimerWheel<u64> {
        &self.timers
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Take the runtime apart: the port and the handler (the core slot is released).
    pub fn into_parts(self) -> (P, H) {
        (self.port, self.handler)
    }
}
