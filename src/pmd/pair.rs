//! `pair`: two [`Port`]s joined back to back in one process, for tests and benchmarks.
//!
//! Contract:
//! - [`pair`] returns two ends, `a` and `b`; a frame sent on one is received on the other,
//!   in order, with no copy: the [`PktBuf`] itself (a pool slot handle) moves through a
//!   bounded ring of `depth` frames per direction. Both ends allocate from one [`Pool`].
//! - Each end is `Send`, so the two can be driven from two threads; the rings are lock-free
//!   (the standard library's bounded channel, whose `try_send` / `try_recv` take no lock
//!   while no thread blocks on it, and nothing here ever blocks) and allocate nothing after
//!   construction.
//! - A full ring refuses: [`Port::tx_burst`] leaves the frames it could not send with the
//!   caller, in order, and counts them in [`PortStats::tx_ring_full`] (each refused frame
//!   once per refusing call, so a caller spinning on a full ring counts up fast). Frames are
//!   never dropped because a ring is full.
//! - Dropping an end takes the link down for the other end ([`Port::link`] reports
//!   [`Link::Down`]); `tx_burst` then sends nothing. Frames already in flight to a live end
//!   can still be received. Frames in flight to an end that is dropped are freed with it
//!   (their slots return to the pool), as frames on a cable that is pulled are lost.
//! - Frames longer than `mtu + 14` (an Ethernet header) are dropped by the receiving end and
//!   counted in [`PortStats::rx_errors`], as a NIC drops giants.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;

use super::{Link, Offloads, Port, PortInfo, PortStats, MAX_BURST};
use crate::mem::{PktBuf, Pool, PoolConfig, PoolError, PoolExhausted};

/// Bytes of an Ethernet header (no VLAN tag), added to the MTU to get the largest frame.
const ETH_HEADER: usize = 14;

/// Errors building a pair.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// The ring depth was zero.
    #[error("pair ring depth must be at least 1")]
    ZeroDepth,
    /// The MTU was zero.
    #[error("pair MTU must be at least 1")]
    ZeroMtu,
    /// The pool could not be built.
    #[error(transparent)]
    Pool(#[from] PoolError),
}

/// What the two ends share: whether each is alive, and how many frames each ring holds.
#[derive(Debug)]
struct Shared {
    /// `alive[i]`: end `i` has not been dropped.
    alive: [AtomicBool; 2],
    /// `queued[i]`: frames in the ring towards end `i`, counted by the sender before it
    /// sends and uncounted by the receiver after it receives, so it never undercounts.
    queued: [AtomicUsize; 2],
}

/// One end of an in-process port pair. See the [module docs](self).
#[derive(Debug)]
pub struct PairPort {
    end: usize,
    pool: Pool,
    tx: SyncSender<PktBuf>,
    rx: Receiver<PktBuf>,
    shared: Arc<Shared>,
    depth: usize,
    mtu: u16,
    stats: PortStats,
}

/// Join two ports back to back: frames sent on one are received on the other.
///
/// `depth` is the capacity of the ring in each direction (frames); `mtu` the L3 MTU the ends
/// report (frames up to `mtu + 14` bytes pass). Both ends allocate transmit buffers from
/// `pool`.
pub fn pair(pool: &Pool, depth: usize, mtu: u16) -> Result<(PairPort, PairPort), PairError> {
    if depth == 0 {
        return Err(PairError::ZeroDepth);
    }
    if mtu == 0 {
        return Err(PairError::ZeroMtu);
    }
    // Ring towards end 0 and ring towards end 1.
    let (to0_tx, to0_rx) = sync_channel(depth);
    let (to1_tx, to1_rx) = sync_channel(depth);
    let shared = Arc::new(Shared {
        alive: [AtomicBool::new(true), AtomicBool::new(true)],
        queued: [AtomicUsize::new(0), AtomicUsize::new(0)],
    });
    let end = |end, tx, rx| PairPort {
        end,
        pool: pool.clone(),
        tx,
        rx,
        shared: shared.clone(),
        depth,
        mtu,
        stats: PortStats::default(),
    };
    Ok((end(0, to1_tx, to0_rx), end(1, to0_tx, to1_rx)))
}

/// [`pair`] over a new pool built from `cfg`.
pub fn pair_with_pool(
    cfg: &PoolConfig,
    depth: usize,
    mtu: u16,
) -> Result<(PairPort, PairPort), PairError> {
    let pool = Pool::new(cfg)?;
    pair(&pool, depth, mtu)
}

impl PairPort {
    /// Which end this is: 0 (`a`) or 1 (`b`).
    pub fn end(&self) -> usize {
        self.end
    }

    /// The pool transmit buffers come from.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Capacity of each ring, in frames.
    pub fn depth(&self) -> usize {
        self.depth
    }

    fn peer(&self) -> usize {
        1 - self.end
    }

    fn peer_alive(&self) -> bool {
        self.shared.alive[self.peer()].load(Ordering::Acquire)
    }
}

impl Port for PairPort {
    fn info(&self) -> PortInfo {
        PortInfo {
            name: format!("pair/{}", if self.end == 0 { 'a' } else { 'b' }),
            mtu: self.mtu,
            max_burst: MAX_BURST as u16,
            // Locally administered unicast addresses 02:00:00:00:00:0{1,2}.
            mac: [0x02, 0, 0, 0, 0, 1 + self.end as u8],
            queues: 1,
            queue: 0,
            // Frames move between two threads of one process, untouched.
            offloads: Offloads {
                intact: true,
                ..Offloads::default()
            },
        }
    }

    fn link(&mut self) -> Link {
        if self.peer_alive() {
            Link::Up { speed_mbps: 0 }
        } else {
            Link::Down
        }
    }

    fn rx_burst(&mut self, out: &mut Vec<PktBuf>, max: usize) -> usize {
        let max = max.min(MAX_BURST);
        let max_frame = self.mtu as usize + ETH_HEADER;
        let mut taken = 0;
        let mut n = 0;
        while n < max {
            let mut pkt = match self.rx.try_recv() {
                Ok(p) => p,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            };
            taken += 1;
            if pkt.len() > max_frame {
                self.stats.rx_errors += 1;
                continue;
            }
            pkt.meta.rx_timestamp = 0;
            pkt.meta.port = self.end as u16;
            pkt.meta.queue = 0;
            self.stats.rx_bytes += pkt.len() as u64;
            out.push(pkt);
            n += 1;
        }
        if taken > 0 {
            self.shared.queued[self.end].fetch_sub(taken, Ordering::AcqRel);
        }
        self.stats.rx_packets += n as u64;
        n
    }

    fn tx_burst(&mut self, pkts: &mut Vec<PktBuf>) -> usize {
        if pkts.is_empty() || !self.peer_alive() {
            return 0;
        }
        let queued = &self.shared.queued[self.peer()];
        let room = self.depth.saturating_sub(queued.load(Ordering::Acquire));
        let n = room.min(pkts.len());
        self.stats.tx_ring_full += (pkts.len() - n) as u64;
        if n == 0 {
            return 0;
        }
        // Count before sending: `queued` then never undercounts the ring, so `room` frames
        // always fit and `try_send` cannot find it full.
        queued.fetch_add(n, Ordering::AcqRel);
        for pkt in pkts.drain(..n) {
            self.stats.tx_bytes += pkt.len() as u64;
            match self.tx.try_send(pkt) {
                Ok(()) => {}
                // The peer went away after the check: the frame is lost with the link.
                Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(_)) => {
                    debug_assert!(false, "pair ring full despite the room count");
                }
            }
        }
        self.stats.tx_packets += n as u64;
        n
    }

    fn alloc_tx(&mut self) -> Result<PktBuf, PoolExhausted> {
        self.pool.alloc()
    }

    fn stats(&self) -> PortStats {
        self.stats
    }
}

impl Drop for PairPort {
    fn drop(&mut self) {
        self.shared.alive[self.end].store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::HugePages;

    fn pool(slots: u32) -> Pool {
        let mut cfg = PoolConfig::new("pair-unit", slots, 2048);
        cfg.hugepages = HugePages::Never;
        Pool::new(&cfg).unwrap()
    }

    fn frame(port: &mut PairPort, len: usize, tag: u8) -> PktBuf {
        let mut p = port.alloc_tx().unwrap();
        p.append(len).unwrap().fill(tag);
        p
    }

    #[test]
    fn rejects_bad_config() {
        let p = pool(4);
        assert!(matches!(pair(&p, 0, 1500), Err(PairError::ZeroDepth)));
        assert!(matches!(pair(&p, 4, 0), Err(PairError::ZeroMtu)));
    }

    #[test]
    fn frames_cross_in_order_and_full_ring_refuses() {
        let p = pool(64);
        let (mut a, mut b) = pair(&p, 4, 1500).unwrap();
        let mut v: Vec<PktBuf> = (0..6).map(|i| frame(&mut a, 60, i)).collect();
        assert_eq!(a.tx_burst(&mut v), 4);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].data()[0], 4, "unsent frames stay in order");
        assert_eq!(a.stats().tx_ring_full, 2);
        let mut out = Vec::new();
        assert_eq!(b.rx_burst(&mut out, 3), 3);
        let tags: Vec<u8> = out.iter().map(|f| f.data()[0]).collect();
        assert_eq!(tags, [0, 1, 2]);
        assert_eq!(out[0].meta.port, 1);
        assert_eq!(a.tx_burst(&mut v), 2);
        assert_eq!(b.rx_burst(&mut out, 10), 3);
        let tags: Vec<u8> = out.iter().map(|f| f.data()[0]).collect();
        assert_eq!(tags, [0, 1, 2, 3, 4, 5]);
        drop(out);
        assert_eq!(p.stats().in_use, 0);
    }

    #[test]
    fn giants_are_dropped_and_counted() {
        let p = pool(8);
        let (mut a, mut b) = pair(&p, 8, 100).unwrap();
        let mut v = vec![frame(&mut a, 114, 1), frame(&mut a, 115, 2)];
        assert_eq!(a.tx_burst(&mut v), 2);
        let mut out = Vec::new();
        assert_eq!(b.rx_burst(&mut out, 8), 1);
        assert_eq!(out[0].len(), 114);
        assert_eq!(b.stats().rx_errors, 1);
    }

    #[test]
    fn link_goes_down_with_peer() {
        let p = pool(8);
        let (mut a, b) = pair(&p, 8, 1500).unwrap();
        assert!(a.link().is_up());
        drop(b);
        assert_eq!(a.link(), Link::Down);
        let mut v = vec![frame(&mut a, 60, 0)];
        assert_eq!(a.tx_burst(&mut v), 0);
        assert_eq!(v.len(), 1);
    }
}
