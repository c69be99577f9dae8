//! A virtual-time link model for protocol tests and congestion-control experiments.
//!
//! Contract:
//! - Time is virtual: the caller passes `now` (ns) to every call; nothing reads a clock.
//! - Everything random comes from one [`Xoshiro256`] seeded by the caller, so a run is a pure
//!   function of (seed, config, inputs): a failing seed reproduces exactly.
//! - A [`Link`] is one direction. Per frame, in order: a blackhole period drops everything;
//!   frames above the MTU are dropped; random loss and Gilbert-Elliott burst loss drop; the
//!   rate limiter serialises frames behind each other and a bounded queue tail-drops;
//!   then the frame travels `delay + U(0, jitter)`, plus `reorder_delay` with probability
//!   `reorder`; it may be duplicated (a copy from the link's pool) and may have one bit
//!   flipped (corruption, caught by the UDP checksum upstream).
//! - Frames are [`PktBuf`]s; the link owns them while in flight and returns them in arrival
//!   order from [`Link::recv`]. The link allocates no memory per frame after warm-up (its
//!   heap keeps its capacity).
//! - [`SimNet`] joins two links into a cable with a shared virtual clock and gives each end
//!   as a [`Port`] ([`SimPort`]), so anything written against `Port` runs over the model.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use super::{Link as LinkState, Offloads, Port, PortInfo, PortStats, MAX_BURST};
use crate::mem::{PktBuf, Pool, PoolExhausted};
use crate::rng::Xoshiro256;
use crate::time::Instant;

/// Gilbert-Elliott two-state burst loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Per-frame probability of moving from the good to the bad state.
    pub p_good_to_bad: f64,
    /// Per-frame probability of moving from the bad to the good state.
    pub p_bad_to_good: f64,
    /// Loss probability in the good state.
    pub loss_good: f64,
    /// Loss probability in the bad state.
    pub loss_bad: f64,
}

/// One direction's behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// Propagation delay (ns).
    pub delay_ns: u64,
    /// Extra uniform delay in [0, jitter) (ns); reorders frames closer than this.
    pub jitter_ns: u64,
    /// Independent loss probability.
    pub loss: f64,
    /// Burst loss, on top of `loss`.
    pub burst: Option<GilbertElliott>,
    /// Probability a frame is delivered twice.
    pub duplicate: f64,
    /// Probability a frame is held back by `reorder_delay_ns`.
    pub reorder: f64,
    /// Extra delay of a reordered frame (ns).
    pub reorder_delay_ns: u64,
    /// Probability one bit of the frame is flipped.
    pub corrupt: f64,
    /// Largest frame carried (bytes); larger ones are dropped.
    pub mtu: usize,
    /// Serialisation rate in bits per second (0: infinite).
    pub rate_bps: u64,
    /// Bytes the queue in front of the rate limiter holds (tail drop beyond).
    pub queue_bytes: u64,
    /// Drop everything sent in `[start, end)` (ns).
    pub blackhole: Option<(u64, u64)>,
}

impl Default for LinkConfig {
    fn default() -> LinkConfig {
        LinkConfig {
            delay_ns: 10_000,
            jitter_ns: 0,
            loss: 0.0,
            burst: None,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay_ns: 0,
            corrupt: 0.0,
            mtu: 1514,
            rate_bps: 0,
            queue_bytes: u64::MAX,
            blackhole: None,
        }
    }
}

/// Link counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames offered.
    pub sent: u64,
    /// Frames handed out by `recv` (duplicates included).
    pub delivered: u64,
    /// Dropped by random or burst loss.
    pub lost: u64,
    /// Dropped by the full queue.
    pub queue_drops: u64,
    /// Dropped for exceeding the MTU.
    pub mtu_drops: u64,
    /// Dropped in the blackhole.
    pub blackholed: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Frames with a flipped bit.
    pub corrupted: u64,
    /// Frames held back.
    pub reordered: u64,
}

struct InFlight {
    at: u64,
    seq: u64,
    buf: PktBuf,
}

impl PartialEq for InFlight {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for InFlight {
    fn cmp(&self, o: &Self) -> Ordering {
        // Min-heap on (arrival time, sequence).
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// One direction of a simulated link.
pub struct Link {
    cfg: LinkConfig,
    rng: Xoshiro256,
    pool: Pool,
    heap: BinaryHeap<InFlight>,
    seq: u64,
    busy_until: u64,
    bad: bool,
    stats: LinkStats,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("in_flight", &self.heap.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Link {
    /// A link; `pool` supplies duplicate copies.
    pub fn new(cfg: LinkConfig, seed: u64, pool: Pool) -> Link {
        Link {
            cfg,
            rng: Xoshiro256::new(seed),
            pool,
            heap: BinaryHeap::with_capacity(1024),
            seq: 0,
            busy_until: 0,
            bad: false,
            stats: LinkStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// The configuration (change it between calls to script a scenario).
    pub fn config_mut(&mut self) -> &mut LinkConfig {
        &mut self.cfg
    }

    /// Frames in flight.
    pub fn in_flight(&self) -> usize {
        self.heap.len()
    }

    /// Offer a frame at `now`.
    pub fn send(&mut self, now: Instant, mut buf: PktBuf) {
        // The model's own arithmetic is in nanoseconds, as its configuration is.
        let now = now.as_nanos();
        self.stats.sent += 1;
        if self.cfg.blackhole.is_some_and(|(s, e)| now >= s && now < e) {
            self.stats.blackholed += 1;
            return;
        }
        if buf.len() > self.cfg.mtu {
            self.stats.mtu_drops += 1;
            return;
        }
        let mut drop = self.rng.chance(self.cfg.loss);
        if let Some(ge) = self.cfg.burst {
            self.bad = if self.bad {
                !self.rng.chance(ge.p_bad_to_good)
            } else {
                self.rng.chance(ge.p_good_to_bad)
            };
            drop |= self
                .rng
                .chance(if self.bad { ge.loss_bad } else { ge.loss_good });
        }
        if drop {
            self.stats.lost += 1;
            return;
        }
        let mut depart = now;
        if self.cfg.rate_bps > 0 {
            let start = self.busy_until.max(now);
            let queued_ns = start - now;
            let queued_bytes =
                (queued_ns as u128 * self.cfg.rate_bps as u128 / 8_000_000_000) as u64;
            if queued_bytes + buf.len() as u64 > self.cfg.queue_bytes {
                self.stats.queue_drops += 1;
                return;
            }
            let ser = (buf.len() as u128 * 8_000_000_000 / self.cfg.rate_bps as u128) as u64;
            self.busy_until = start + ser;
            depart = self.busy_until;
        }
        let mut at = depart + self.cfg.delay_ns + self.rng.below(self.cfg.jitter_ns);
        if self.rng.chance(self.cfg.reorder) {
            at += self.cfg.reorder_delay_ns;
            self.stats.reordered += 1;
        }
        if self.rng.chance(self.cfg.duplicate) {
            if let Ok(mut copy) = self.pool.alloc() {
                if copy.extend_from_slice(buf.data()).is_ok() {
                    self.stats.duplicated += 1;
                    let extra = self.rng.below(self.cfg.jitter_ns.max(1));
                    self.push(at + extra, copy);
                }
            }
        }
        if !buf.is_empty() && self.rng.chance(self.cfg.corrupt) {
            let bit = self.rng.below(buf.len() as u64 * 8);
            // A shared frame (zero-copy send) is copied first; with no slot for the copy it
            // passes intact.
            if let Ok(d) = buf.try_data_mut() {
                d[(bit / 8) as usize] ^= 1 << (bit % 8);
                self.stats.corrupted += 1;
            }
        }
        self.push(at, buf);
    }

    fn push(&mut self, at: u64, buf: PktBuf) {
        self.seq += 1;
        self.heap.push(InFlight {
            at,
            seq: self.seq,
            buf,
        });
    }

    /// Arrival time of the next frame.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.heap.peek().map(|f| Instant::from_nanos(f.at))
    }

    /// The next frame that has arrived by `now`.
    pub fn recv(&mut self, now: Instant) -> Option<PktBuf> {
        if self.heap.peek()?.at > now.as_nanos() {
            return None;
        }
        self.stats.delivered += 1;
        self.heap.pop().map(|f| f.buf)
    }

    /// Drop everything in flight (returns the buffers to their pools).
    pub fn clear(&mut self) {
        self.heap.clear();
    }
}

/// Two [`Link`]s (one per direction) and a virtual clock the driver sets; each end is a
/// [`SimPort`].
#[derive(Debug)]
pub struct SimNet {
    now: AtomicU64,
    links: [Mutex<Link>; 2],
}

impl SimNet {
    /// A cable from end 0 to end 1 over `a_to_b` and back over `b_to_a`.
    pub fn new(a_to_b: Link, b_to_a: Link) -> Arc<SimNet> {
        Arc::new(SimNet {
            now: AtomicU64::new(0),
            links: [Mutex::new(a_to_b), Mutex::new(b_to_a)],
        })
    }
    /// Set virtual time.
    pub fn set_now(&self, now: Instant) {
        self.now.store(now.as_nanos(), AtomicOrdering::Relaxed);
    }
    /// Virtual time.
    pub fn now(&self) -> Instant {
        Instant::from_nanos(self.now.load(AtomicOrdering::Relaxed))
    }
    /// Earliest arrival on either link.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.links
            .iter()
            .filter_map(|l| l.lock().ok()?.next_arrival())
            .min()
    }
    /// Counters of the link leaving end `end` (0 or 1).
    pub fn link_stats(&self, end: usize) -> LinkStats {
        self.links[end & 1]
            .lock()
            .map(|l| l.stats())
            .unwrap_or_default()
    }
    /// End `end` (0 or 1) as a port whose transmit buffers come from `pool`.
    pub fn port(self: &Arc<SimNet>, end: usize, pool: Pool, mac: [u8; 6]) -> SimPort {
        SimPort {
            net: self.clone(),
            end: end & 1,
            pool,
            mac,
            stats: PortStats::default(),
        }
    }
}

/// One end of a [`SimNet`] as a [`Port`]. A test harness; it takes a lock per burst.
#[derive(Debug)]
pub struct SimPort {
    net: Arc<SimNet>,
    end: usize,
    pool: Pool,
    mac: [u8; 6],
    stats: PortStats,
}

impl Port for SimPort {
    fn info(&self) -> PortInfo {
        PortInfo {
            name: format!("sim{}", self.end),
            mtu: 1500,
            max_burst: MAX_BURST as u16,
            mac: self.mac,
            queues: 1,
            queue: 0,
            offloads: Offloads::default(),
        }
    }
    fn link(&mut self) -> LinkState {
        LinkState::Up { speed_mbps: 0 }
    }
    fn rx_burst(&mut self, out: &mut Vec<PktBuf>, max: usize) -> usize {
        let now = self.net.now();
        let Ok(mut l) = self.net.links[1 - self.end].lock() else {
            return 0;
        };
        let mut n = 0;
        while n < max.min(MAX_BURST) {
            let Some(b) = l.recv(now) else { break };
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += b.len() as u64;
            out.push(b);
            n += 1;
        }
        n
    }
    fn tx_burst(&mut self, pkts: &mut Vec<PktBuf>) -> usize {
        let now = self.net.now();
        let Ok(mut l) = self.net.links[self.end].lock() else {
            return 0;
        };
        let n = pkts.len();
        for b in pkts.drain(..) {
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += b.len() as u64;
            l.send(now, b);
        }
        n
    }
    fn alloc_tx(&mut self) -> Result<PktBuf, PoolExhausted> {
        self.pool.alloc()
    }
    fn stats(&self) -> PortStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ns: u64) -> Instant {
        Instant::from_nanos(ns)
    }
    use crate::mem::{HugePages, PoolConfig};

    #[test]
    fn sim_ports_carry_frames_in_virtual_time() {
        let p = pool();
        let cfg = LinkConfig {
            delay_ns: 500,
            ..LinkConfig::default()
        };
        let net = SimNet::new(
            Link::new(cfg.clone(), 1, p.clone()),
            Link::new(cfg, 2, p.clone()),
        );
        let mut a = net.port(0, p.clone(), [2, 0, 0, 0, 0, 1]);
        let mut b = net.port(1, p.clone(), [2, 0, 0, 0, 0, 2]);
        let mut f = a.alloc_tx().unwrap();
        f.extend_from_slice(b"frame").unwrap();
        let mut v = vec![f];
        assert_eq!(a.tx_burst(&mut v), 1);
        assert!(v.is_empty());
        let mut rx = Vec::new();
        assert_eq!(b.rx_burst(&mut rx, 8), 0);
        assert_eq!(net.next_arrival(), Some(at(500)));
        net.set_now(at(500));
        assert_eq!(b.rx_burst(&mut rx, 8), 1);
        assert_eq!(rx[0].data(), b"frame");
        assert_eq!(a.stats().tx_packets, 1);
        assert_eq!(b.stats().rx_packets, 1);
        assert_eq!(a.rx_burst(&mut rx, 8), 0);
    }

    fn pool() -> Pool {
        Pool::new(&PoolConfig {
            hugepages: HugePages::Never,
            ..PoolConfig::new("sim-test", 256, 2048)
        })
        .unwrap()
    }

    fn frame(p: &Pool, n: usize, tag: u8) -> PktBuf {
        let mut b = p.alloc().unwrap();
        b.extend_from_slice(&vec![tag; n]).unwrap();
        b
    }

    #[test]
    fn delay_rate_and_queue() {
        let p = pool();
        let cfg = LinkConfig {
            delay_ns: 1000,
            rate_bps: 8_000_000_000, // 1 byte per ns
            queue_bytes: 300,
            ..LinkConfig::default()
        };
        let mut l = Link::new(cfg, 1, p.clone());
        for t in 0..4 {
            l.send(at(0), frame(&p, 100, t));
        }
        // 100 B serialise in 100 ns each; the fourth finds 300 B queued (the one being
        // serialised counts) and is dropped.
        assert_eq!(l.stats().queue_drops, 1);
        assert_eq!(l.next_arrival(), Some(at(1100)));
        assert!(l.recv(at(1099)).is_none());
        assert_eq!(l.recv(at(1100)).unwrap()[0], 0);
        assert_eq!(l.recv(at(2000)).unwrap()[0], 1);
        assert_eq!(l.recv(at(2000)).unwrap()[0], 2);
        assert!(l.recv(at(u64::MAX)).is_none());
        assert_eq!(p.stats().in_use, 0);
    }

    #[test]
    fn deterministic_from_seed() {
        let run = |seed| {
            let p = pool();
            let cfg = LinkConfig {
                jitter_ns: 5000,
                loss: 0.2,
                duplicate: 0.1,
                corrupt: 0.1,
                reorder: 0.1,
                reorder_delay_ns: 3000,
                burst: Some(GilbertElliott {
                    p_good_to_bad: 0.05,
                    p_bad_to_good: 0.3,
                    loss_good: 0.0,
                    loss_bad: 0.8,
                }),
                ..LinkConfig::default()
            };
            let mut l = Link::new(cfg, seed, p.clone());
            let mut out = Vec::new();
            for i in 0..100u64 {
                l.send(at(i * 100), frame(&p, 64, i as u8));
                while let Some(f) = l.recv(at(i * 100)) {
                    out.push(f.data().to_vec());
                }
            }
            while let Some(f) = l.recv(at(u64::MAX)) {
                out.push(f.data().to_vec());
            }
            (out, l.stats())
        };
        let (a, sa) = run(7);
        let (b, sb) = run(7);
        let (c, _) = run(8);
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        assert_ne!(a, c);
        assert!(sa.lost > 0 && sa.duplicated > 0 && sa.corrupted > 0 && sa.reordered > 0);
    }

    #[test]
    fn blackhole_and_mtu() {
        let p = pool();
        let cfg = LinkConfig {
            blackhole: Some((100, 200)),
            mtu: 100,
            ..LinkConfig::default()
        };
        let mut l = Link::new(cfg, 3, p.clone());
        l.send(at(150), frame(&p, 10, 0));
        l.send(at(50), frame(&p, 101, 0));
        l.send(at(250), frame(&p, 10, 0));
        assert_eq!(l.stats().blackholed, 1);
        assert_eq!(l.stats().mtu_drops, 1);
        assert!(l.recv(at(u64::MAX)).is_some());
    }
}
