//! The ARP cache and the frames waiting on resolution.
//!
//! Contract:
//! - The cache is bounded (`capacity` entries, allocated at start-up). Dynamic entries expire
//!   `ttl_ns` after they were last confirmed; static entries never expire and are never
//!   overwritten by what arrives off the wire. When the cache is full a new dynamic entry
//!   evicts an expired one, else a gleaned one (below) closest to expiry, else the entry
//!   closest to expiry (counted).
//! - Gleaned entries: the source MAC of a UDP datagram from an on-link address we have no
//!   entry for ([`ArpTable::glean`]), so that the answer to an unsolicited packet (a
//!   handshake's stateless ACCEPT) goes back where the packet came from without an ARP
//!   request: hosts that send from many (spoofed) addresses then fill the cache, bounded and
//!   evicting each other first, never the pending table the stack's own destinations need.
//!   A glean never replaces an entry; ARP traffic about the address confirms or corrects it.
//! - Lookups allocate nothing. Inserts allocate nothing while the table is within its
//!   capacity (std's `HashMap` with preallocated capacity; churn of removals and inserts can
//!   make it rehash in place, which allocates nothing either).
//! - Frames to a next hop that isn't resolved wait in a per-destination queue of
//!   `queue_per_dest` frames, for at most `pending_dests` destinations at once; beyond either
//!   bound the frame is dropped and counted. Requests are retried every `retry_ns`, up to
//!   `max_tries`; then the waiting frames are dropped and counted.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::Ipv4Addr;

use crate::mem::PktBuf;
use crate::time::Instant;

/// A hasher for IPv4 addresses (one u32): a multiply, no per-process seed (the table is
/// bounded, so a collision flood costs a linear probe, not memory).
#[derive(Default)]
pub(crate) struct IpHasher(u64);

impl Hasher for IpHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = (v as u64 ^ 0x9e37_79b9_7f4a_7c15).wrapping_mul(0xff51_afd7_ed55_8ccd);
        self.0 ^= self.0 >> 29;
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct CacheEntry {
    pub mac: [u8; 6],
    /// `None` for a static entry.
    pub expires: Option<Instant>,
    /// Learned from an IPv4 frame's source, not from ARP (evicted first).
    pub gleaned: bool,
}

/// ARP settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpConfig {
    /// Most entries in the cache.
    pub capacity: usize,
    /// Life of a learned entry, ns.
    pub ttl_ns: u64,
    /// Interval between requests for an unresolved address, ns.
    pub retry_ns: u64,
    /// Requests sent before giving up on an address.
    pub max_tries: u32,
    /// Destinations that can be waiting on resolution at once.
    pub pending_dests: usize,
    /// Frames queued per waiting destination.
    pub queue_per_dest: usize,
}

impl Default for ArpConfig {
    fn default() -> Self {
        ArpConfig {
            capacity: 256,
            ttl_ns: 60_000_000_000,
            retry_ns: 200_000_000,
            max_tries: 5,
            pending_dests: 16,
            queue_per_dest: 64,
        }
    }
}

pub(crate) struct Pending {
    pub ip: Option<Ipv4Addr>,
    pub frames: VecDeque<PktBuf>,
    pub last_request: Instant,
    pub tries: u32,
}

pub(crate) struct ArpTable {
    pub cfg: ArpConfig,
    cache: HashMap<u32, CacheEntry, BuildHasherDefault<IpHasher>>,
    pub pending: Vec<Pending>,
    pub pending_count: usize,
}

/// What inserting into the cache did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Learned {
    /// New or refreshed entry.
    Updated,
    /// The cache was full; another entry was evicted to make room.
    Evicted,
    /// A static entry exists; left as is.
    Static,
}

impl ArpTable {
    pub fn new(cfg: ArpConfig) -> ArpTable {
        let cfg = ArpConfig {
            capacity: cfg.capacity.max(1),
            pending_dests: cfg.pending_dests.max(1),
            queue_per_dest: cfg.queue_per_dest.max(1),
            ..cfg
        };
        ArpTable {
            cache: HashMap::with_capacity_and_hasher(cfg.capacity, Default::default()),
            pending: (0..cfg.pending_dests)
                .map(|_| Pending {
                    ip: None,
                    frames: VecDeque::with_capacity(cfg.queue_per_dest),
                    last_request: Instant::ZERO,
                    tries: 0,
                })
                .collect(),
            pending_count: 0,
            cfg,
        }
    }

    /// The MAC for `ip` if known and fresh. An expired entry is removed.
    #[inline]
    pub fn lookup(&mut self, now: Instant, ip: Ipv4Addr) -> Option<[u8; 6]> {
        let key = ip.to_bits();
        let e = *self.cache.get(&key)?;
        match e.expires {
            Some(t) if now >= t => {
                self.cache.remove(&key);
                None
            }
            _ => Some(e.mac),
        }
    }

    /// Whether there is an entry (fresh or not) for `ip`.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.cache.contains_key(&ip.to_bits())
    }

    pub fn insert_static(&mut self, ip: Ipv4Addr, mac: [u8; 6]) -> Learned {
        let r = self.make_room(ip, Instant::MAX);
        self.cache.insert(
            ip.to_bits(),
            CacheEntry {
                mac,
                expires: None,
                gleaned: false,
            },
        );
        r
    }

    /// Add `ip` at `mac`, learned from a frame `ip` sent us (not from ARP), unless the cache
    /// has an entry for it already (None: left as is).
    pub fn glean(&mut self, now: Instant, ip: Ipv4Addr, mac: [u8; 6]) -> Option<Learned> {
        if self.cache.contains_key(&ip.to_bits()) {
            return None;
        }
        let r = self.make_room(ip, now);
        self.cache.insert(
            ip.to_bits(),
            CacheEntry {
                mac,
                expires: Some(now.add_nanos(self.cfg.ttl_ns)),
                gleaned: true,
            },
        );
        Some(r)
    }

    pub fn learn(&mut self, now: Instant, ip: Ipv4Addr, mac: [u8; 6]) -> Learned {
        let key = ip.to_bits();
        if let Some(e) = self.cache.get_mut(&key) {
            if e.expires.is_none() {
                return Learned::Static;
            }
            *e = CacheEntry {
                mac,
                expires: Some(now.add_nanos(self.cfg.ttl_ns)),
                gleaned: false,
            };
            return Learned::Updated;
        }
        let r = self.make_room(ip, now);
        self.cache.insert(
            key,
            CacheEntry {
                mac,
                expires: Some(now.add_nanos(self.cfg.ttl_ns)),
                gleaned: false,
            },
        );
        r
    }

    /// Evict one dynamic entry if the cache is full and `ip` is new.
    fn make_room(&mut self, ip: Ipv4Addr, now: Instant) -> Learned {
        if self.cache.len() < self.cfg.capacity || self.cache.contains_key(&ip.to_bits()) {
            return Learned::Updated;
        }
        // Control path (an ARP packet, or a datagram from an address not cached yet): a scan
        // is fine. Expired entries go first, then gleaned ones, then those closest to expiry.
        let victim = self
            .cache
            .iter()
            .filter_map(|(k, e)| e.expires.map(|t| (*k, t, e.gleaned)))
            .min_by_key(|&(_, t, gleaned)| {
                if t <= now {
                    (0, Instant::ZERO)
                } else {
                    (if gleaned { 1 } else { 2 }, t)
                }
            });
        match victim {
            Some((k, _, _)) => {
                self.cache.remove(&k);
                Learned::Evicted
            }
            None => Learned::Static,
        }
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Index of the pending queue for `ip`, if any.
    pub fn pending_index(&self, ip: Ipv4Addr) -> Option<usize> {
        if self.pending_count == 0 {
            return None;
        }
        self.pending.iter().position(|p| p.ip == Some(ip))
    }

    /// Claim a free pending queue for `ip`.
    pub fn claim_pending(&mut self, ip: Ipv4Addr, now: Instant) -> Option<usize> {
        let i = self.pending.iter().position(|p| p.ip.is_none())?;
        let p = &mut self.pending[i];
        p.ip = Some(ip);
        p.last_request = now;
        p.tries = 0;
        self.pending_count += 1;
        Some(i)
    }

    pub fn release_pending(&mut self, i: usize) {
        if self.pending[i].ip.take().is_some() {
            self.pending_count -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }

    #[test]
    fn entries_expire_and_statics_stay() {
        let mut t = ArpTable::new(ArpConfig {
            capacity: 4,
            ttl_ns: 1000,
            ..Default::default()
        });
        t.learn(Instant::from_nanos(0), ip(1), [1; 6]);
        t.insert_static(ip(2), [2; 6]);
        assert_eq!(t.lookup(Instant::from_nanos(999), ip(1)), Some([1; 6]));
        assert_eq!(t.lookup(Instant::from_nanos(1000), ip(1)), None);
        assert!(!t.contains(ip(1)), "expired entry removed");
        assert_eq!(
            t.learn(Instant::from_nanos(5), ip(2), [9; 6]),
            Learned::Static
        );
        assert_eq!(
            t.lookup(Instant::from_nanos(u64::MAX - 1), ip(2)),
            Some([2; 6])
        );
    }

    #[test]
    fn full_cache_evicts_expired_then_oldest() {
        let mut t = ArpTable::new(ArpConfig {
            capacity: 2,
            ttl_ns: 100,
            ..Default::default()
        });
        t.learn(Instant::from_nanos(0), ip(1), [1; 6]); // expires 100
        t.learn(Instant::from_nanos(50), ip(2), [2; 6]); // expires 150
        assert_eq!(
            t.learn(Instant::from_nanos(60), ip(3), [3; 6]),
            Learned::Evicted
        );
        assert_eq!(t.len(), 2);
        assert!(!t.contains(ip(1)), "the entry closest to expiry went");
        assert_eq!(
            t.learn(Instant::from_nanos(200), ip(4), [4; 6]),
            Learned::Evicted
        );
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup(Instant::from_nanos(200), ip(4)), Some([4; 6]));
    }

    #[test]
    fn gleaned_entries_never_replace_and_are_evicted_first() {
        let mut t = ArpTable::new(ArpConfig {
            capacity: 3,
            ttl_ns: 1000,
            ..Default::default()
        });
        let at = Instant::from_nanos;
        t.learn(at(0), ip(1), [1; 6]);
        t.insert_static(ip(2), [2; 6]);
        assert_eq!(t.glean(at(1), ip(1), [9; 6]), None, "an ARP entry stays");
        assert_eq!(t.glean(at(1), ip(2), [9; 6]), None, "a static entry stays");
        assert_eq!(t.lookup(at(2), ip(1)), Some([1; 6]));
        assert_eq!(t.glean(at(5), ip(3), [3; 6]), Some(Learned::Updated));
        // Full: the next glean evicts the gleaned entry, though the ARP one expires first.
        assert_eq!(t.glean(at(10), ip(4), [4; 6]), Some(Learned::Evicted));
        assert!(t.contains(ip(1)) && !t.contains(ip(3)) && t.contains(ip(4)));
        // ARP about a gleaned address confirms it (no longer evicted first).
        assert_eq!(t.learn(at(20), ip(4), [5; 6]), Learned::Updated);
        assert_eq!(t.glean(at(30), ip(5), [6; 6]), Some(Learned::Evicted));
        assert!(
            !t.contains(ip(1)),
            "no gleaned entry left: the one closest to expiry"
        );
        assert_eq!(t.lookup(at(30), ip(4)), Some([5; 6]));
        // An expired entry goes before a gleaned one.
        assert_eq!(t.glean(at(1025), ip(6), [7; 6]), Some(Learned::Evicted));
        assert!(!t.contains(ip(4)), "expired at 1020");
        assert!(t.contains(ip(5)));
    }

    #[test]
    fn pending_queues_are_bounded() {
        let mut t = ArpTable::new(ArpConfig {
            pending_dests: 2,
            ..Default::default()
        });
        assert_eq!(t.claim_pending(ip(1), Instant::from_nanos(0)), Some(0));
        assert_eq!(t.claim_pending(ip(2), Instant::from_nanos(0)), Some(1));
        assert_eq!(t.claim_pending(ip(3), Instant::from_nanos(0)), None);
        assert_eq!(t.pending_index(ip(2)), Some(1));
        t.release_pending(0);
        assert_eq!(t.pending_index(ip(1)), None);
        assert_eq!(t.claim_pending(ip(3), Instant::from_nanos(0)), Some(0));
    }
}
