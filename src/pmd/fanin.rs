//! `fanin`: one [`Port`] over N member ports, so that one poll loop serves the peers behind
//! all of them (a memif server's N interfaces, one client process on each).
//!
//! Contract:
//! - [`FanIn::rx_burst`] takes from the members in turn, starting at the member after the one
//!   the last call ended on; each member may fill what is left of the burst. Work per call is
//!   bounded: each member is visited at most once. A member that always has a full burst
//!   waiting therefore gets one burst per turn, and no member starves another: every member
//!   with frames is served within N calls.
//! - A learning bridge: the source MAC of each frame received from member `m` is recorded as
//!   "behind `m`" (a MAC seen behind another member moves there). [`FanIn::tx_burst`] sends
//!   each unicast frame to the member behind its destination MAC. The table is preallocated
//!   (8 entries per member, 4-way set associative, a full set evicts one entry, counted): no
//!   allocation, no system call and no lock per frame. A member whose link goes down
//!   forgets its entries (noticed when it is visited: every receive call visits every
//!   member).
//! - Ethernet broadcast and multicast (ARP requests) go to every member that is up: copied
//!   into a buffer of each member's own ([`Port::alloc_tx`]) but the last, which gets the
//!   frame itself. A copy the member's pool cannot hold, or a ring refuses, is dropped and
//!   counted (a broadcast is best effort, as on a wire).
//! - A frame to a unicast MAC no member is known for, or to a member whose link is down, is
//!   dropped and counted ([`FanInStats::tx_unknown`], [`FanInStats::tx_member_down`]), not
//!   flooded: every peer behind a member speaks before it is spoken to (a client connects
//!   to the server; a server resolves a client's address by ARP, whose reply teaches the
//!   table), and flooding N copies of every such frame would cost N times the copy.
//! - Frames a member's ring refuses stay in the caller's `Vec` (the [`Port`] contract); in
//!   order among one member's frames, not across members (their order means nothing to
//!   different peers). `tx_burst` returns the frames it removed: sent, or dropped and
//!   counted as above.
//! - [`FanIn::link`] is up while any member is; [`FanIn::stats`] sums the members'
//!   counters; [`FanIn::alloc_tx`] takes from the members' pools in turn (the transport holds
//!   sent buffers until acknowledged: this spreads them over every pool), skipping one that
//!   is exhausted. [`FanIn::stats_handle`] reads the fan-in's own counters from elsewhere
//!   (`Stack::fanin_stats` over a memif server with many peers).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{Link, Offloads, Port, PortInfo, PortStats, RxIntr, RxWait, MAX_BURST};
use crate::mem::{PktBuf, PoolExhausted};

/// Ways per set of the MAC table.
const WAYS: usize = 4;
/// Table entries per member.
const ENTRIES_PER_MEMBER: usize = 8;
/// Largest number of members (the table stores member + 1 in 16 bits).
pub const MAX_MEMBERS: usize = u16::MAX as usize - 1;

/// What the fan-in itself counts (the members count the rest: [`FanIn::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanInStats {
    /// Unicast frames to a MAC no member is known for: dropped.
    pub tx_unknown: u64,
    /// Unicast frames to a member whose link is down: dropped.
    pub tx_member_down: u64,
    /// Broadcast or multicast frames sent (each once, whatever the number of copies).
    pub tx_broadcast: u64,
    /// Copies of a broadcast frame a member's pool or ring could not take: dropped.
    pub tx_broadcast_dropped: u64,
    /// MAC addresses learned behind a member (first seen, or moved from another member).
    pub learned: u64,
    /// MAC addresses that showed up behind another member than the table said.
    pub moved: u64,
    /// Entries evicted from a full set of the table to make room.
    pub evicted: u64,
    /// Entries forgotten because their member's link went down.
    pub forgotten: u64,
}

impl FanInStats {
    fn to_array(self) -> [u64; 8] {
        [
            self.tx_unknown,
            self.tx_member_down,
            self.tx_broadcast,
            self.tx_broadcast_dropped,
            self.learned,
            self.moved,
            self.evicted,
            self.forgotten,
        ]
    }

    fn from_array(a: [u64; 8]) -> FanInStats {
        let [tx_unknown, tx_member_down, tx_broadcast, tx_broadcast_dropped, learned, moved, evicted, forgotten] =
            a;
        FanInStats {
            tx_unknown,
            tx_member_down,
            tx_broadcast,
            tx_broadcast_dropped,
            learned,
            moved,
            evicted,
            forgotten,
        }
    }
}

/// A reader of a [`FanIn`]'s [`FanInStats`] from anywhere (another thread, after the port
/// was moved into a runtime): the port copies its counters here, with relaxed stores, at
/// the end of a burst in which one changed (they change with rare events, never per frame
/// of a steady flow).
#[derive(Debug, Clone)]
pub struct FanInStatsHandle(Arc<[AtomicU64; 8]>);

impl FanInStatsHandle {
    /// The counters as last published.
    pub fn get(&self) -> FanInStats {
        FanInStats::from_array(std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed)))
    }
}

/// A preallocated MAC table: `sets` x [`WAYS`] entries, each `mac << 16 | (member + 1)`, 0
/// when empty.
#[derive(Debug)]
struct MacTable {
    entries: Box<[u64]>,
    mask: usize,
    /// The way a full set gives up next (round robin).
    victim: usize,
}

impl MacTable {
    fn new(members: usize) -> MacTable {
        let sets = (members * ENTRIES_PER_MEMBER / WAYS)
            .max(4)
            .next_power_of_two();
        MacTable {
            entries: vec![0; sets * WAYS].into_boxed_slice(),
            mask: sets - 1,
            victim: 0,
        }
    }

    #[inline]
    fn key(mac: &[u8; 6]) -> u64 {
        let mut k = [0u8; 8];
        k[2..].copy_from_slice(mac);
        u64::from_be_bytes(k)
    }

    #[inline]
    fn set(&self, key: u64) -> usize {
        // Fibonacci hashing of the 48-bit address.
        let h = key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        (h as usize & self.mask) * WAYS
    }

    /// The member `mac` is behind.
    #[inline]
    fn lookup(&self, mac: &[u8; 6]) -> Option<usize> {
        let key = Self::key(mac);
        let s = self.set(key);
        self.entries[s..s + WAYS]
            .iter()
            .find(|&&e| e != 0 && e >> 16 == key)
            .map(|&e| (e & 0xffff) as usize - 1)
    }

    /// Record `mac` behind `member`.
    #[inline]
    fn learn(&mut self, mac: &[u8; 6], member: usize, stats: &mut FanInStats) {
        let key = Self::key(mac);
        let s = self.set(key);
        let value = key << 16 | (member as u64 + 1);
        let set = &mut self.entries[s..s + WAYS];
        if let Some(e) = set.iter_mut().find(|e| **e != 0 && **e >> 16 == key) {
            if *e != value {
                *e = value;
                stats.moved += 1;
                stats.learned += 1;
            }
            return;
        }
        stats.learned += 1;
        if let Some(e) = set.iter_mut().find(|e| **e == 0) {
            *e = value;
            return;
        }
        stats.evicted += 1;
        self.victim = (self.victim + 1) % WAYS;
        set[self.victim] = value;
    }

    /// Forget every entry behind `member`.
    fn forget(&mut self, member: usize, stats: &mut FanInStats) {
        for e in self.entries.iter_mut() {
            if *e != 0 && (*e & 0xffff) as usize == member + 1 {
                *e = 0;
                stats.forgotten += 1;
            }
        }
    }
}

/// Where a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    Member(usize),
    Broadcast,
    Unknown,
}

/// One port over N member ports. See the [module docs](self).
#[derive(Debug)]
pub struct FanIn<P: Port> {
    members: Vec<P>,
    /// Link state of each member as last seen.
    up: Vec<bool>,
    /// The member the next receive call starts at.
    next_rx: usize,
    /// The member the next `alloc_tx` tries first.
    next_alloc: usize,
    table: MacTable,
    /// Frames being sorted by member (taken from the caller's `Vec`), and one member's batch.
    work: Vec<(usize, PktBuf)>,
    batch: Vec<PktBuf>,
    stats: FanInStats,
    /// `stats` as last published to `shared`.
    published: FanInStats,
    shared: FanInStatsHandle,
    info: PortInfo,
}

/// Errors building a [`FanIn`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FanInError {
    /// No member, or more than [`MAX_MEMBERS`].
    #[error("a fan-in port needs 1..={MAX_MEMBERS} members (got {0})")]
    Members(usize),
}

impl<P: Port> FanIn<P> {
    /// One port over `members` (at least one). Its [`PortInfo`] is the first member's, with
    /// the smallest MTU and burst of all, and the offloads they all have.
    pub fn new(members: Vec<P>) -> Result<FanIn<P>, FanInError> {
        let n = members.len();
        if n == 0 || n > MAX_MEMBERS {
            return Err(FanInError::Members(n));
        }
        let mut info = members[0].info();
        for m in &members[1..] {
            let i = m.info();
            info.mtu = info.mtu.min(i.mtu);
            info.max_burst = info.max_burst.min(i.max_burst);
            info.offloads = Offloads {
                rx_checksum: info.offloads.rx_checksum && i.offloads.rx_checksum,
                tx_checksum: info.offloads.tx_checksum && i.offloads.tx_checksum,
                intact: info.offloads.intact && i.offloads.intact,
            };
        }
        if n > 1 {
            info.name = format!("{} (+{} more)", info.name, n - 1);
        }
        info.queues = 1;
        info.queue = 0;
        Ok(FanIn {
            members,
            up: vec![false; n],
            next_rx: 0,
            next_alloc: 0,
            table: MacTable::new(n),
            work: Vec::with_capacity(MAX_BURST),
            batch: Vec::with_capacity(MAX_BURST),
            stats: FanInStats::default(),
            published: FanInStats::default(),
            shared: FanInStatsHandle(Arc::new(std::array::from_fn(|_| AtomicU64::new(0)))),
            info,
        })
    }

    /// A handle that reads this port's [`FanInStats`] from elsewhere.
    pub fn stats_handle(&self) -> FanInStatsHandle {
        self.shared.clone()
    }

    /// Copy the counters to the handle when one changed.
    #[inline]
    fn publish(&mut self) {
        if self.stats != self.published {
            self.published = self.stats;
            for (c, v) in self.shared.0.iter().zip(self.stats.to_array()) {
                c.store(v, Ordering::Relaxed);
            }
        }
    }

    /// The members, in order.
    pub fn members(&self) -> &[P] {
        &self.members
    }

    /// Member `i`, mutably (e.g. to read its link).
    pub fn member_mut(&mut self, i: usize) -> Option<&mut P> {
        self.members.get_mut(i)
    }

    /// What the fan-in counted itself.
    pub fn fanin_stats(&self) -> FanInStats {
        self.stats
    }

    /// The member the table has `mac` behind.
    pub fn member_of(&self, mac: [u8; 6]) -> Option<usize> {
        self.table.lookup(&mac)
    }

    /// Member `i`'s link as it is now; forgets its table entries when it went down.
    #[inline]
    fn refresh(&mut self, i: usize) -> bool {
        let up = self.members[i].link().is_up();
        if self.up[i] && !up {
            self.table.forget(i, &mut self.stats);
        }
        self.up[i] = up;
        up
    }

    #[inline]
    fn dest(&self, frame: &PktBuf) -> Dest {
        let d = frame.data();
        if d.len() < 14 {
            return Dest::Unknown;
        }
        if d[0] & 1 != 0 {
            return Dest::Broadcast;
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&d[..6]);
        match self.table.lookup(&mac) {
            Some(m) => Dest::Member(m),
            None => Dest::Unknown,
        }
    }

    /// Send `frame` to every member that is up: a copy to each but the last, which gets the
    /// frame. True when at least one member took it.
    fn flood(&mut self, frame: PktBuf) -> bool {
        self.stats.tx_broadcast += 1;
        let Some(last) = (0..self.members.len()).rev().find(|&i| self.up[i]) else {
            self.stats.tx_broadcast_dropped += 1;
            return false;
        };
        let mut any = false;
        for i in 0..last {
            if !self.up[i] {
                continue;
            }
            let copy = self.members[i].alloc_tx().ok().and_then(|mut b| {
                b.extend_from_slice(frame.data()).ok()?;
                Some(b)
            });
            match copy {
                Some(b) => any |= self.send_one(i, b),
                None => self.stats.tx_broadcast_dropped += 1,
            }
        }
        any |= self.send_one(last, frame);
        any
    }

    /// Send one broadcast copy to member `i`; a refused one is dropped and counted.
    fn send_one(&mut self, i: usize, b: PktBuf) -> bool {
        self.batch.clear();
        self.batch.push(b);
        let sent = self.members[i].tx_burst(&mut self.batch) == 1;
        if !sent {
            self.batch.clear();
            self.stats.tx_broadcast_dropped += 1;
        }
        sent
    }
}

impl<P: Port> Port for FanIn<P> {
    fn info(&self) -> PortInfo {
        self.info.clone()
    }

    /// Arms every member into the one `wait` (the loop sleeps until a frame reaches any
    /// member). A member with frames already waiting makes it `Pending` at once; a member
    /// without receive interrupts makes the whole port `Unsupported` (the loop then naps),
    /// and the members armed so far are disarmed again.
    fn rx_intr_arm(&mut self, wait: &mut RxWait) -> RxIntr {
        for i in 0..self.members.len() {
            match self.members[i].rx_intr_arm(wait) {
                RxIntr::Armed => {}
                // The caller disarms the port (every member) before its next receive.
                RxIntr::Pending => return RxIntr::Pending,
                RxIntr::Unsupported => {
                    for m in &mut self.members[..i] {
                        m.rx_intr_disarm();
                    }
                    return RxIntr::Unsupported;
                }
            }
        }
        RxIntr::Armed
    }

    fn rx_intr_disarm(&mut self) {
        for m in &mut self.members {
            m.rx_intr_disarm();
        }
    }

    /// Up while any member is (visits every member: a member gone down forgets its entries).
    fn link(&mut self) -> Link {
        let mut any = false;
        for i in 0..self.members.len() {
            any |= self.refresh(i);
        }
        self.publish();
        if any {
            Link::Up { speed_mbps: 0 }
        } else {
            Link::Down
        }
    }

    fn rx_burst(&mut self, out: &mut Vec<PktBuf>, max: usize) -> usize {
        let max = max.min(MAX_BURST);
        let n = self.members.len();
        let mut got = 0;
        let mut i = self.next_rx;
        for _ in 0..n {
            if got >= max {
                break;
            }
            if self.refresh(i) {
                let start = out.len();
                let k = self.members[i].rx_burst(out, max - got);
                for f in &out[start..start + k] {
                    let d = f.data();
                    // A unicast source address: learn where it lives.
                    if d.len() >= 14 && d[6] & 1 == 0 {
                        let mut mac = [0u8; 6];
                        mac.copy_from_slice(&d[6..12]);
                        self.table.learn(&mac, i, &mut self.stats);
                    }
                }
                got += k;
            }
            i = if i + 1 == n { 0 } else { i + 1 };
        }
        self.next_rx = i;
        self.publish();
        got
    }

    fn tx_burst(&mut self, pkts: &mut Vec<PktBuf>) -> usize {
        if pkts.is_empty() {
            return 0;
        }
        let queued = pkts.len();
        // Sort the frames by destination; broadcasts and undeliverable frames are dealt with
        // here, in order.
        let mut work = std::mem::take(&mut self.work);
        work.clear();
        work.reserve(queued);
        for f in pkts.drain(..) {
            match self.dest(&f) {
                Dest::Broadcast => {
                    self.flood(f);
                }
                Dest::Unknown => self.stats.tx_unknown += 1,
                Dest::Member(m) if !self.up[m] => self.stats.tx_member_down += 1,
                Dest::Member(m) => work.push((m, f)),
            }
        }
        // One batch per member, in the order of each member's first frame.
        let mut batch = std::mem::take(&mut self.batch);
        while let Some(&(m, _)) = work.first() {
            batch.clear();
            batch.extend(work.extract_if(.., |(d, _)| *d == m).map(|(_, f)| f));
            self.members[m].tx_burst(&mut batch);
            // Refused (ring full): back to the caller, to retry.
            pkts.append(&mut batch);
        }
        self.work = work;
        self.batch = batch;
        self.publish();
        queued - pkts.len()
    }

    /// A buffer from the members' pools in turn (one that is exhausted is skipped).
    fn alloc_tx(&mut self) -> Result<PktBuf, PoolExhausted> {
        let n = self.members.len();
        for _ in 0..n {
            let i = self.next_alloc;
            self.next_alloc = if i + 1 == n { 0 } else { i + 1 };
            if let Ok(b) = self.members[i].alloc_tx() {
                return Ok(b);
            }
        }
        Err(PoolExhausted)
    }

    /// The members' counters, summed.
    fn stats(&self) -> PortStats {
        let mut s = PortStats::default();
        for m in &self.members {
            let p = m.stats();
            s.rx_packets += p.rx_packets;
            s.rx_bytes += p.rx_bytes;
            s.tx_packets += p.tx_packets;
            s.tx_bytes += p.tx_bytes;
            s.rx_no_buffer += p.rx_no_buffer;
            s.tx_ring_full += p.tx_ring_full;
            s.rx_errors += p.rx_errors;
            s.rx_bad_checksum += p.rx_bad_checksum;
        }
        s
    }
}
