//! `faults`: a wrapper that injects seeded network faults into any [`Port`].
//!
//! Contract:
//! - [`Faults`] wraps a port and applies a [`FaultSpec`] to the frames it sends (`tx`) and/or
//!   receives (`rx`): loss (independent, or bursty with a Gilbert-Elliott two-state model),
//!   duplication, reordering, bit corruption, delay with jitter and a token-bucket rate limit
//!   with a bounded queue. Each fault has its own counter ([`LaneStats`]).
//! - Faults are drawn from an in-crate xoshiro256** generator ([`Xoshiro256`]) seeded from
//!   [`FaultConfig::seed`]; each direction has its own stream. Given the same seed, the same
//!   frames and the same clock readings, the wrapper makes the same decisions.
//! - Time comes from a [`Clock`] (see [`crate::time`]): [`MonotonicClock`] by default,
//!   [`ManualClock`](crate::time::ManualClock) for tests in virtual time. The clock is read
//!   once per call, never per frame, and only when a fault that needs time (delay, rate,
//!   reorder deadline) is configured.
//! - Frames a fault holds (delay, rate queue, reorder) sit in fixed-capacity queues allocated
//!   at construction; nothing is allocated per frame. A duplicate is a copy into a buffer
//!   from the inner port's [`Port::alloc_tx`]; when none is free the duplicate is skipped and
//!   counted.
//! - Backpressure still reaches the caller: when the wrapper's queue of frames waiting for
//!   the inner port is full, `tx_burst` leaves frames with the caller (counted in
//!   [`PortStats::tx_ring_full`]), and `rx_burst` stops pulling from the inner port.
//!   Frames dropped by a fault (loss, rate-limit tail drop, a full delay queue) are the
//!   injected faults and are counted as such.
//! - Held frames move on whenever the wrapper is called: `rx_burst` and `tx_burst` advance
//!   both directions; [`Faults::poll`] does so without sending or receiving.
//! - Order in which a frame meets the faults: loss, duplication, corruption (each copy on its
//!   own), reordering, rate limit, delay. Jitter never reorders (a frame's departure is
//!   never earlier than the previous frame's); reordering is its own fault.

use std::collections::VecDeque;

use super::{Link, Port, PortInfo, PortStats, MAX_BURST};
use crate::mem::{PktBuf, PoolExhausted};
use crate::rng::{SplitMix64, Xoshiro256};

use crate::time::{Clock, Instant, MonotonicClock};

/// How frames are lost.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Loss {
    /// No loss.
    #[default]
    None,
    /// Each frame is lost independently with probability `p`.
    Random {
        /// Loss probability, 0 to 1.
        p: f64,
    },
    /// Gilbert-Elliott: a two-state Markov chain (good, bad) stepped once per frame, with a
    /// loss probability per state. With `loss_good = 0` and `loss_bad = 1` losses come in
    /// bursts of mean length `1 / p_bad_good`, and the long-run loss rate is
    /// `p_good_bad / (p_good_bad + p_bad_good)`.
    GilbertElliott {
        /// Probability of moving from good to bad at a frame.
        p_good_bad: f64,
        /// Probability of moving from bad to good at a frame.
        p_bad_good: f64,
        /// Loss probability in the good state.
        loss_good: f64,
        /// Loss probability in the bad state.
        loss_bad: f64,
    },
}

/// Reordering: a frame is held back and released after later frames pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reorder {
    /// Probability a frame is held back, 0 to 1.
    pub probability: f64,
    /// The held frame is released right after this many later frames have passed (at least 1).
    pub after: u32,
    /// ... or once it has been held this long (nanoseconds), whichever comes first.
    pub max_hold_ns: u64,
}

/// Delay: frames are held until a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delay {
    /// Fixed delay in nanoseconds.
    pub ns: u64,
    /// Extra delay drawn uniformly from `[0, jitter_ns]` per frame (never reorders).
    pub jitter_ns: u64,
}

/// A token-bucket rate limit with a bounded queue in front of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained rate in bits per second (counting `overhead_bytes` per frame).
    pub bits_per_sec: u64,
    /// Bucket depth in bytes: how much may leave back to back after an idle spell.
    pub burst_bytes: u32,
    /// Frames the queue in front of the bucket holds; beyond that, arriving frames are
    /// dropped (tail drop, counted in [`LaneStats::rate_dropped`]).
    pub queue_frames: usize,
    /// Bytes added to each frame's length for the rate (e.g. 24 for Ethernet preamble,
    /// FCS and inter-frame gap; 0 to count frame bytes only).
    pub overhead_bytes: u32,
}

/// The faults applied in one direction.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    /// Loss model.
    pub loss: Loss,
    /// Probability a frame is duplicated, 0 to 1.
    pub duplicate: f64,
    /// Probability one random bit of a frame is flipped, 0 to 1.
    pub corrupt: f64,
    /// Bytes at the start of a frame corruption leaves alone (14 keeps the Ethernet header
    /// intact so the damage lands where IPv4/UDP checksums see it).
    pub corrupt_skip: usize,
    /// Reordering, if any.
    pub reorder: Option<Reorder>,
    /// Delay, if any.
    pub delay: Option<Delay>,
    /// Rate limit, if any.
    pub rate: Option<RateLimit>,
    /// Capacity (frames) of the delay queue and of the set of frames held for reordering.
    /// A frame arriving at a full delay queue is dropped (counted in
    /// [`LaneStats::overflow_dropped`]); one chosen for reordering when the set is full
    /// passes in order.
    pub queue_frames: usize,
}

impl Default for FaultSpec {
    /// No faults; queues of 4096 frames.
    fn default() -> FaultSpec {
        FaultSpec {
            loss: Loss::None,
            duplicate: 0.0,
            corrupt: 0.0,
            corrupt_skip: 0,
            reorder: None,
            delay: None,
            rate: None,
            queue_frames: 4096,
        }
    }
}

impl FaultSpec {
    /// True when the spec changes nothing.
    pub fn is_noop(&self) -> bool {
        let loss = match self.loss {
            Loss::None => false,
            Loss::Random { p } => p > 0.0,
            Loss::GilbertElliott {
                loss_good,
                loss_bad,
                ..
            } => loss_good > 0.0 || loss_bad > 0.0,
        };
        !loss
            && self.duplicate <= 0.0
            && self.corrupt <= 0.0
            && self.reorder.is_none_or(|r| r.probability <= 0.0)
            && self.delay.is_none()
            && self.rate.is_none()
    }

    fn needs_clock(&self) -> bool {
        self.delay.is_some() || self.rate.is_some() || self.reorder.is_some()
    }

    fn validate(&self) -> Result<(), FaultConfigError> {
        let prob = |what: &'static str, p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(FaultConfigError::Probability { what })
            }
        };
        match self.loss {
            Loss::None => {}
            Loss::Random { p } => prob("loss", p)?,
            Loss::GilbertElliott {
                p_good_bad,
                p_bad_good,
                loss_good,
                loss_bad,
            } => {
                prob("p_good_bad", p_good_bad)?;
                prob("p_bad_good", p_bad_good)?;
                prob("loss_good", loss_good)?;
                prob("loss_bad", loss_bad)?;
            }
        }
        prob("duplicate", self.duplicate)?;
        prob("corrupt", self.corrupt)?;
        if let Some(r) = self.reorder {
            prob("reorder", r.probability)?;
            if r.after == 0 {
                return Err(FaultConfigError::ReorderAfterZero);
            }
        }
        if let Some(r) = self.rate {
            if r.bits_per_sec == 0 || r.burst_bytes == 0 || r.queue_frames == 0 {
                return Err(FaultConfigError::Rate);
            }
        }
        if self.queue_frames == 0 {
            return Err(FaultConfigError::ZeroQueue);
        }
        Ok(())
    }
}

/// Faults for both directions and the seed they are drawn from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultConfig {
    /// Seed of the generators (each direction derives its own stream from it).
    pub seed: u64,
    /// Faults on frames sent through the wrapper.
    pub tx: FaultSpec,
    /// Faults on frames received through the wrapper.
    pub rx: FaultSpec,
}

/// An invalid fault configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FaultConfigError {
    /// A probability lay outside `[0, 1]` (or was NaN).
    #[error("fault probability `{what}` must lie in [0, 1]")]
    Probability {
        /// Which probability.
        what: &'static str,
    },
    /// `Reorder::after` was 0.
    #[error("reorder `after` must be at least 1")]
    ReorderAfterZero,
    /// A rate limit had a zero rate, burst or queue.
    #[error("rate limit needs a nonzero rate, burst and queue")]
    Rate,
    /// `queue_frames` was 0.
    #[error("fault queue_frames must be at least 1")]
    ZeroQueue,
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneStats {
    /// Frames that entered the direction.
    pub frames_in: u64,
    /// Frames that left it (to the inner port on tx, to the caller on rx).
    pub frames_out: u64,
    /// Frames lost (random or Gilbert-Elliott).
    pub lost: u64,
    /// Runs of consecutive lost frames (`lost / loss_bursts` is the mean burst length).
    pub loss_bursts: u64,
    /// Duplicates made.
    pub duplicated: u64,
    /// Duplicates skipped because the inner port had no free buffer (or one too small for
    /// the frame).
    pub duplicate_no_buffer: u64,
    /// Frames with a bit flipped.
    pub corrupted: u64,
    /// Frames held back for reordering.
    pub reordered: u64,
    /// Frames that went through the delay queue.
    pub delayed: u64,
    /// Frames dropped at the tail of a full rate-limit queue.
    pub rate_dropped: u64,
    /// Frames dropped because the delay queue (or the output queue) was full.
    pub overflow_dropped: u64,
}

/// Counters of both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Frames sent through the wrapper.
    pub tx: LaneStats,
    /// Frames received through the wrapper.
    pub rx: LaneStats,
}

/// A frame held back for reordering.
#[derive(Debug)]
struct Held {
    pkt: PktBuf,
    /// Released once `Lane::passed` reaches this.
    release_at: u64,
    /// ... or once the clock reaches this.
    deadline: Instant,
}

/// Units of the token bucket: one bit is `1e9` tokens, so a rate in bits per second adds
/// exactly `bits_per_sec` tokens per nanosecond.
const TOKENS_PER_BIT: i128 = 1_000_000_000;

/// One direction's fault pipeline.
#[derive(Debug)]
struct Lane {
    spec: FaultSpec,
    noop: bool,
    needs_clock: bool,
    rng: Xoshiro256,
    /// Gilbert-Elliott state.
    bad: bool,
    last_lost: bool,
    /// Frames that passed the reorder stage without being held.
    passed: u64,
    held: VecDeque<Held>,
    held_cap: usize,
    rate_q: VecDeque<PktBuf>,
    rate_cap: usize,
    tokens: i128,
    last_refill: Option<Instant>,
    delay_q: VecDeque<(Instant, PktBuf)>,
    delay_cap: usize,
    last_due: Instant,
    /// Frames ready to leave (to the inner port on tx, to the caller on rx).
    ready: VecDeque<PktBuf>,
    ready_cap: usize,
    stats: LaneStats,
}

impl Lane {
    fn new(spec: FaultSpec, seed: u64) -> Lane {
        let q = spec.queue_frames;
        let noop = spec.is_noop();
        let (held_cap, delay_cap, rate_cap, ready_cap) = if noop {
            (0, 0, 0, 0)
        } else {
            let held_cap = if spec.reorder.is_some() { q } else { 0 };
            let delay_cap = if spec.delay.is_some() { q } else { 0 };
            let rate_cap = spec.rate.map_or(0, |r| r.queue_frames);
            (held_cap, delay_cap, rate_cap, 4 * MAX_BURST + held_cap)
        };
        Lane {
            needs_clock: !noop && spec.needs_clock(),
            noop,
            spec,
            rng: Xoshiro256::new(seed),
            bad: false,
            last_lost: false,
            passed: 0,
            held: VecDeque::with_capacity(held_cap),
            held_cap,
            rate_q: VecDeque::with_capacity(rate_cap),
            rate_cap,
            tokens: 0,
            last_refill: None,
            delay_q: VecDeque::with_capacity(delay_cap),
            delay_cap,
            last_due: Instant::ZERO,
            ready: VecDeque::with_capacity(ready_cap),
            ready_cap,
            stats: LaneStats::default(),
        }
    }

    /// Frames that can be taken in now without the output queue overflowing, whatever the
    /// faults do with them (each may be duplicated, and each may release held frames).
    fn intake_room(&self) -> usize {
        if self.ready.len() >= MAX_BURST {
            // The output is backing up (the inner port or the caller is not taking frames):
            // push back rather than let the delay and rate queues fill and drop.
            return 0;
        }
        let free = self
            .ready_cap
            .saturating_sub(self.ready.len() + self.held.len());
        let per_frame = if self.spec.duplicate > 0.0 { 2 } else { 1 };
        (free / per_frame).min(MAX_BURST)
    }

    fn lose(&mut self) -> bool {
        let lost = match self.spec.loss {
            Loss::None => false,
            Loss::Random { p } => self.rng.chance(p),
            Loss::GilbertElliott {
                p_good_bad,
                p_bad_good,
                loss_good,
                loss_bad,
            } => {
                if self.bad {
                    if self.rng.chance(p_bad_good) {
                        self.bad = false;
                    }
                } else if self.rng.chance(p_good_bad) {
                    self.bad = true;
                }
                self.rng.chance(if self.bad { loss_bad } else { loss_good })
            }
        };
        if lost {
            self.stats.lost += 1;
            if !self.last_lost {
                self.stats.loss_bursts += 1;
            }
        }
        self.last_lost = lost;
        lost
    }

    /// A frame enters the direction. `inner` gives the buffers for duplicates.
    fn ingest<P: Port + ?Sized>(&mut self, pkt: PktBuf, now: Instant, inner: &mut P) {
        self.stats.frames_in += 1;
        if self.lose() {
            return;
        }
        let dup = if self.rng.chance(self.spec.duplicate) {
            match inner.alloc_tx() {
                Ok(mut copy) => match copy.extend_from_slice(pkt.data()) {
                    Ok(()) => {
                        copy.meta = pkt.meta;
                        self.stats.duplicated += 1;
                        Some(copy)
                    }
                    Err(_) => {
                        self.stats.duplicate_no_buffer += 1;
                        None
                    }
                },
                Err(PoolExhausted) => {
                    self.stats.duplicate_no_buffer += 1;
                    None
                }
            }
        } else {
            None
        };
        self.after_dup(pkt, now);
        if let Some(copy) = dup {
            self.after_dup(copy, now);
        }
    }

    fn after_dup(&mut self, mut pkt: PktBuf, now: Instant) {
        if self.rng.chance(self.spec.corrupt) {
            let skip = self.spec.corrupt_skip;
            if pkt.len() > skip {
                let bit = self.rng.below(((pkt.len() - skip) * 8) as u64) as usize;
                // A shared frame (zero-copy send: the transport keeps the slot to retransmit
                // from) is copied before it is corrupted; with no slot for the copy it passes
                // intact.
                if let Ok(d) = pkt.try_data_mut() {
                    d[skip + bit / 8] ^= 1 << (bit % 8);
                    self.stats.corrupted += 1;
                }
            }
        }
        if let Some(r) = self.spec.reorder {
            if self.rng.chance(r.probability) && self.held.len() < self.held_cap {
                self.held.push_back(Held {
                    pkt,
                    release_at: self.passed + r.after as u64,
                    deadline: now.add_nanos(r.max_hold_ns),
                });
                self.stats.reordered += 1;
                return;
            }
            self.passed += 1;
            self.enter_rate(pkt, now);
            while self
                .held
                .front()
                .is_some_and(|h| h.release_at <= self.passed)
            {
                if let Some(h) = self.held.pop_front() {
                    self.enter_rate(h.pkt, now);
                }
            }
        } else {
            self.enter_rate(pkt, now);
        }
    }

    fn enter_rate(&mut self, pkt: PktBuf, now: Instant) {
        if self.spec.rate.is_some() {
            if self.rate_q.len() < self.rate_cap {
                self.rate_q.push_back(pkt);
            } else {
                self.stats.rate_dropped += 1;
            }
        } else {
            self.enter_delay(pkt, now);
        }
    }

    fn enter_delay(&mut self, pkt: PktBuf, now: Instant) {
        if let Some(d) = self.spec.delay {
            if self.delay_q.len() >= self.delay_cap {
                self.stats.overflow_dropped += 1;
                return;
            }
            let jitter = if d.jitter_ns > 0 {
                self.rng.below(d.jitter_ns + 1)
            } else {
                0
            };
            let due = now.add_nanos(d.ns).add_nanos(jitter).max(self.last_due);
            self.last_due = due;
            self.stats.delayed += 1;
            self.delay_q.push_back((due, pkt));
        } else {
            self.enter_ready(pkt);
        }
    }

    fn enter_ready(&mut self, pkt: PktBuf) {
        // `intake_room` keeps this from happening; the check keeps the queue from growing.
        if self.ready.len() >= self.ready_cap {
            self.stats.overflow_dropped += 1;
            return;
        }
        self.ready.push_back(pkt);
    }

    /// Move held frames whose time has come towards the output.
    fn pump(&mut self, now: Instant) {
        if self.noop {
            return;
        }
        while self.held.front().is_some_and(|h| h.deadline <= now) {
            if let Some(h) = self.held.pop_front() {
                self.enter_rate(h.pkt, now);
            }
        }
        if let Some(r) = self.spec.rate {
            let cap = r.burst_bytes as i128 * 8 * TOKENS_PER_BIT;
            match self.last_refill {
                None => self.tokens = cap,
                Some(last) => {
                    let add = now.nanos_since(last) as i128 * r.bits_per_sec as i128;
                    self.tokens = (self.tokens + add).min(cap);
                }
            }
            self.last_refill = Some(now);
            while let Some(front) = self.rate_q.front() {
                let need = (front.len() as i128 + r.overhead_bytes as i128) * 8 * TOKENS_PER_BIT;
                // A frame larger than the bucket leaves when the bucket is full, and the
                // debt is paid back before the next one: the long-run rate stays exact.
                let room_ok = self.spec.delay.is_some() || self.ready_room();
                if self.tokens < need.min(cap) || !room_ok {
                    break;
                }
                self.tokens -= need;
                if let Some(pkt) = self.rate_q.pop_front() {
                    self.enter_delay(pkt, now);
                }
            }
        }
        while self.ready_room() && self.delay_q.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, pkt)) = self.delay_q.pop_front() {
                self.ready.push_back(pkt);
            }
        }
    }

    /// Whether a frame may move from the delay or rate queue to the output queue. Frames
    /// held for reordering keep their place in the output queue's budget, so releasing them
    /// never overflows it.
    fn ready_room(&self) -> bool {
        self.ready.len() + self.held.len() < self.ready_cap
    }

    /// Frames held anywhere in the direction.
    fn held_frames(&self) -> usize {
        self.held.len() + self.rate_q.len() + self.delay_q.len() + self.ready.len()
    }
}

/// A port wrapper that injects faults. See the [module docs](self).
#[derive(Debug)]
pub struct Faults<P: Port, C: Clock = MonotonicClock> {
    inner: P,
    clock: C,
    tx: Lane,
    rx: Lane,
    scratch: Vec<PktBuf>,
    tx_refused: u64,
}

impl<P: Port> Faults<P, MonotonicClock> {
    /// Wrap `inner` with the faults of `cfg`, timed by the real monotonic clock.
    pub fn new(inner: P, cfg: FaultConfig) -> Result<Self, FaultConfigError> {
        Faults::with_clock(inner, cfg, MonotonicClock::new())
    }
}

impl<P: Port, C: Clock> Faults<P, C> {
    /// Wrap `inner` with the faults of `cfg`, timed by `clock`.
    pub fn with_clock(inner: P, cfg: FaultConfig, clock: C) -> Result<Self, FaultConfigError> {
        cfg.tx.validate()?;
        cfg.rx.validate()?;
        let mut sm = SplitMix64::new(cfg.seed);
        let tx_seed = sm.next_u64();
        let rx_seed = sm.next_u64();
        Ok(Faults {
            inner,
            clock,
            tx: Lane::new(cfg.tx, tx_seed),
            rx: Lane::new(cfg.rx, rx_seed),
            scratch: Vec::with_capacity(MAX_BURST),
            tx_refused: 0,
        })
    }

    /// The wrapped port.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// The wrapped port, mutably (frames sent on it directly bypass the faults).
    pub fn inner_mut(&mut self) -> &mut P {
        &mut self.inner
    }

    /// Unwrap; frames still held by the faults are freed.
    pub fn into_inner(self) -> P {
        self.inner
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Fault counters.
    pub fn fault_stats(&self) -> FaultStats {
        FaultStats {
            tx: self.tx.stats,
            rx: self.rx.stats,
        }
    }

    /// Frames held by the faults now (reorder, rate queue, delay queue, output queue), as
    /// `(tx, rx)`.
    pub fn held(&self) -> (usize, usize) {
        (self.tx.held_frames(), self.rx.held_frames())
    }

    /// Move frames whose time has come: held transmit frames go to the inner port, held
    /// receive frames become ready for the next `rx_burst`.
    pub fn poll(&mut self) {
        if self.tx.noop && self.rx.noop {
            return;
        }
        let now = self.clock.now();
        self.rx.pump(now);
        self.pump_tx(now);
    }

    fn now_for(&self, lane: &Lane) -> Instant {
        if lane.needs_clock {
            self.clock.now()
        } else {
            Instant::ZERO
        }
    }

    fn pump_tx(&mut self, now: Instant) {
        if self.tx.noop {
            return;
        }
        self.tx.pump(now);
        self.flush_tx();
    }

    /// Hand ready transmit frames to the inner port, in bursts, until it refuses.
    fn flush_tx(&mut self) {
        while !self.tx.ready.is_empty() {
            let n = self.tx.ready.len().min(MAX_BURST);
            self.scratch.extend(self.tx.ready.drain(..n));
            let sent = self.inner.tx_burst(&mut self.scratch);
            self.tx.stats.frames_out += sent as u64;
            let refused = !self.scratch.is_empty();
            while let Some(pkt) = self.scratch.pop() {
                self.tx.ready.push_front(pkt);
            }
            if refused {
                break;
            }
        }
    }
}

impl<P: Port, C: Clock + Send> Port for Faults<P, C> {
    fn info(&self) -> PortInfo {
        let mut info = self.inner.info();
        // Frames corrupted here were not what the peer wrote (or will read).
        if self.tx.spec.corrupt > 0.0 || self.rx.spec.corrupt > 0.0 {
            info.offloads.intact = false;
        }
        info
    }

    fn link(&mut self) -> Link {
        self.inner.link()
    }

    fn rx_burst(&mut self, out: &mut Vec<PktBuf>, max: usize) -> usize {
        let max = max.min(MAX_BURST);
        if !self.tx.noop {
            let now = self.now_for(&self.tx);
            self.pump_tx(now);
        }
        if self.rx.noop {
            let n = self.inner.rx_burst(out, max);
            self.rx.stats.frames_in += n as u64;
            self.rx.stats.frames_out += n as u64;
            return n;
        }
        let now = self.now_for(&self.rx);
        self.rx.pump(now);
        let room = self.rx.intake_room();
        if room > 0 {
            self.inner.rx_burst(&mut self.scratch, room);
            for pkt in self.scratch.drain(..) {
                self.rx.ingest(pkt, now, &mut self.inner);
            }
            self.rx.pump(now);
        }
        let mut n = 0;
        while n < max {
            match self.rx.ready.pop_front() {
                Some(pkt) => {
                    out.push(pkt);
                    n += 1;
                }
                None => break,
            }
        }
        self.rx.stats.frames_out += n as u64;
        n
    }

    fn tx_burst(&mut self, pkts: &mut Vec<PktBuf>) -> usize {
        if self.tx.noop {
            let n = self.inner.tx_burst(pkts);
            self.tx.stats.frames_in += n as u64;
            self.tx.stats.frames_out += n as u64;
            return n;
        }
        let now = self.now_for(&self.tx);
        self.pump_tx(now);
        let n = pkts.len().min(self.tx.intake_room());
        self.tx_refused += (pkts.len() - n) as u64;
        for pkt in pkts.drain(..n) {
            self.tx.ingest(pkt, now, &mut self.inner);
        }
        self.pump_tx(now);
        n
    }

    fn alloc_tx(&mut self) -> Result<PktBuf, PoolExhausted> {
        self.inner.alloc_tx()
    }

    /// The inner port's counters, with frames this wrapper refused to take counted in
    /// `tx_ring_full`. Fault counters are in [`Faults::fault_stats`].
    fn stats(&self) -> PortStats {
        let mut s = self.inner.stats();
        s.tx_ring_full += self.tx_refused;
        s
    }

    /// The inner port's interrupts when this wrapper holds no frames back (no delay, loss or
    /// reordering configured); otherwise none (its queues release frames by time, not by
    /// interrupt).
    fn rx_intr_arm(&mut self, wait: &mut crate::pmd::RxWait) -> crate::pmd::RxIntr {
        if self.tx.noop && self.rx.noop {
            self.inner.rx_intr_arm(wait)
        } else {
            crate::pmd::RxIntr::Unsupported
        }
    }

    fn rx_intr_disarm(&mut self) {
        if self.tx.noop && self.rx.noop {
            self.inner.rx_intr_disarm()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_bad_specs() {
        let bad = FaultSpec {
            loss: Loss::Random { p: 1.5 },
            ..FaultSpec::default()
        };
        assert_eq!(
            bad.validate(),
            Err(FaultConfigError::Probability { what: "loss" })
        );
        let nan = FaultSpec {
            duplicate: f64::NAN,
            ..FaultSpec::default()
        };
        assert!(nan.validate().is_err());
        let rate = FaultSpec {
            rate: Some(RateLimit {
                bits_per_sec: 0,
                burst_bytes: 1500,
                queue_frames: 8,
                overhead_bytes: 0,
            }),
            ..FaultSpec::default()
        };
        assert_eq!(rate.validate(), Err(FaultConfigError::Rate));
        let reorder = FaultSpec {
            reorder: Some(Reorder {
                probability: 0.1,
                after: 0,
                max_hold_ns: 1,
            }),
            ..FaultSpec::default()
        };
        assert_eq!(reorder.validate(), Err(FaultConfigError::ReorderAfterZero));
        assert!(FaultSpec::default().is_noop());
        assert!(FaultSpec::default().validate().is_ok());
    }

    #[test]
    fn manual_clock_is_shared_and_monotonic() {
        use crate::time::ManualClock;
        let c = ManualClock::new(10);
        let d = c.clone();
        c.advance(5);
        assert_eq!(d.now_ns(), 15);
        d.set(3);
        assert_eq!(c.now_ns(), 15);
        d.set(100);
        assert_eq!(c.now_ns(), 100);
    }
}
