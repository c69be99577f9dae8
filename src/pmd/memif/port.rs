//! One memif queue pair as a [`Port`]: the data path.

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::ring::{Desc, Ring, DESC_FLAG_NEXT, RING_FLAG_MASK_INT};
use super::{sys, Conn, IfShared, Role};
use crate::mem::{PktBuf, Pool, PoolExhausted};
use crate::pmd::{Link, Offloads, Port, PortInfo, PortStats, RxIntr, RxWait, MAX_BURST};

/// Region index of the client's buffer pool (region 0 holds the rings).
const BUFFER_REGION: u16 = 1;
/// Marks a transmit ring entry that continues a chain (its slot is owned by the first entry).
const NO_SLOT: u32 = u32::MAX;
/// Client receive: buffers consumed before the ring is refilled while frames keep arriving
/// (at most an eighth of it; the second call in a row that finds nothing refills the rest).
const RX_REFILL_BATCH: u16 = 32;
/// Client transmit: descriptors outstanding before a transmit reads the ring's tail to reclaim
/// them (the second receive call in a row that finds nothing reclaims whatever was consumed).
const TX_FREE_BATCH: u16 = 32;
/// Set in a transmit ring entry's slot when the posted buffer was a shared reference
/// ([`PktBuf::is_shared`]: a transport keeps the same slot for retransmission): reclaiming it
/// drops that reference instead of freeing the slot. Pools have fewer than 2^31 slots.
const SHARED_SLOT: u32 = 1 << 31;

/// Why no frame can move on a ring (the peer left it inconsistent). Reported to the control
/// thread through the interface's [`RingWatch`](super::RingWatch) slots; one that lasts
/// [`MemifConfig::wedge_timeout`](super::MemifConfig::wedge_timeout) tears the connection
/// down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Fault {
    /// The peer's index claims more than a ring (server) or than we posted (client), or is
    /// behind what we already took: we refuse the claim and wait.
    Index = 1,
    /// Server transmit: the next buffer the client posted lies outside its regions.
    Outside = 2,
    /// Server transmit: the next buffer the client posted has length 0.
    ZeroLength = 3,
    /// Receive: the descriptors up to the peer's index end in an unfinished chain
    /// (`DESC_FLAG_NEXT` on the last one). Not counted in `rx_errors` (a chain may be
    /// published in pieces); torn down only if it stays so.
    Unfinished = 4,
}

impl Fault {
    /// What a fault code means, for [`ControlError::RingWedged`](super::ControlError).
    pub(super) fn what(code: u8) -> &'static str {
        match code {
            1 => "index out of range",
            2 => "posted buffer outside the regions",
            3 => "posted buffer of length 0",
            4 => "descriptor chain never finished",
            _ => "inconsistent",
        }
    }
}

/// Index of the receive ring's [`Faults`] entry.
const RX: usize = 0;
/// Index of the transmit ring's.
const TX: usize = 1;

/// The faults a port's two rings are in, mirrored into its interface's `RingWatch` slots
/// when they change. An inconsistency is counted in `rx_errors` once, when the ring enters
/// it, not once per burst that finds it still there.
struct Faults {
    iface: Arc<IfShared>,
    /// Index of this queue's receive ring slot in `IfShared::rings` (the transmit one is
    /// next).
    base: usize,
    /// The fault code of each ring (0: none).
    code: [u8; 2],
    /// Bursts of the current episode of each ring that found it wrong.
    bursts: [u64; 2],
    /// Episodes so far (a new one each time a ring enters a fault).
    episode: u64,
}

impl Faults {
    /// The ring `dir` is consistent (one compare of a local byte when it already was).
    #[inline]
    fn ok(&mut self, dir: usize) {
        if self.code[dir] != 0 {
            self.clear(dir);
        }
    }

    #[cold]
    fn clear(&mut self, dir: usize) {
        self.code[dir] = 0;
        self.iface.rings[self.base + dir]
            .state
            .store(0, Ordering::Release);
    }

    /// The ring `dir` is in fault `f` in this burst: counted in `rx_errors` (when `count`)
    /// on entering it; the burst is counted for the control thread.
    #[cold]
    fn fault(&mut self, dir: usize, f: Fault, count: bool, stats: &mut PortStats) {
        let w = &self.iface.rings[self.base + dir];
        if self.code[dir] != f as u8 {
            self.code[dir] = f as u8;
            if count {
                stats.rx_errors += 1;
            }
            self.episode += 1;
            self.bursts[dir] = 0;
            w.state
                .store(self.episode << 8 | f as u64, Ordering::Release);
        }
        self.bursts[dir] += 1;
        w.bursts.store(self.bursts[dir], Ordering::Relaxed);
    }

    /// A new connection (or none): both rings start clean.
    fn reset(&mut self) {
        self.clear(RX);
        self.clear(TX);
    }
}

/// One queue pair of a memif interface. Owned by one thread; see the module docs.
pub struct MemifPort {
    iface: Arc<IfShared>,
    queue: u16,
    seen_gen: u64,
    active: Option<Active>,
    stats: PortStats,
    info: PortInfo,
    pool: Pool,
    /// Client with `InterfaceConfig::copy_rx`: the private pool received frames are copied
    /// into before the stack reads them.
    rx_copy: Option<Pool>,
    headroom: u32,
    /// Data bytes of one buffer (what a client posts as a descriptor's length).
    cap: u32,
    /// Client: the last receive call found nothing (the next empty one does the upkeep).
    idle: bool,
    /// Server: receive polls that found nothing (wrapping; see `server_rx`).
    idle_polls: u16,
    faults: Faults,
}

/// Per-connection state of the queue pair.
struct Active {
    conn: Arc<Conn>,
    tx: Ring,
    rx: Ring,
    tx_int: Option<usize>,
    /// The eventfd the peer signals while our receive ring is unmasked (index into the
    /// connection's fds).
    rx_int: Option<usize>,
    /// Receive interrupts are armed (our receive ring's `RING_FLAG_MASK_INT` is clear).
    armed: bool,
    /// Client: pool slot posted at each ring index.
    tx_slots: Box<[u32]>,
    rx_slots: Box<[u32]>,
    /// Client tx: descriptors produced up to `tx_head`, reclaimed up to `tx_tail`.
    /// Server tx: descriptors filled up to `tx_tail`; `tx_head` is the client's head as last
    /// read (buffers known to be posted).
    tx_head: u16,
    tx_tail: u16,
    /// Client rx: buffers posted up to `rx_head`, consumed up to `rx_tail`.
    /// Server rx: descriptors consumed up to `rx_tail`.
    rx_head: u16,
    rx_tail: u16,
    client: bool,
    pool: Pool,
}

/// Take back a transmit ring entry's slot as posted by `client_tx` and drop it: a slot
/// returns to the pool, a shared reference is released (the slot returns with its last one).
///
/// # Safety
/// `marked` is a transmit ring entry's slot value as `client_tx` stored it, whose buffer was
/// given up with `into_raw` and not re-owned since.
unsafe fn reclaim(pool: &Pool, marked: u32) {
    if marked == NO_SLOT {
        return;
    }
    if marked & SHARED_SLOT != 0 {
        // SAFETY: forwarded contract; a shared buffer was posted.
        drop(unsafe { pool.from_raw_shared(marked & !SHARED_SLOT, 0, 0) });
    } else {
        // SAFETY: forwarded contract; an exclusive buffer was posted.
        drop(unsafe { pool.from_raw(marked, 0, 0) });
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        if !self.client {
            return;
        }
        // Take back every buffer still posted to the peer: the connection is gone (or being
        // replaced) and its rings are no longer ours to read.
        let mut i = self.tx_tail;
        while i != self.tx_head {
            let slot = self.tx_slots[(i & self.tx.mask()) as usize];
            // SAFETY: the slot was given up with into_raw when posted at ring index i and not
            // re-owned since (tx_tail..tx_head are exactly the unreclaimed ones; chain
            // continuations are NO_SLOT), shared or not as its mark says.
            unsafe { reclaim(&self.pool, slot) };
            i = i.wrapping_add(1);
        }
        let mut i = self.rx_tail;
        while i != self.rx_head {
            // SAFETY: as above for the receive ring's posted-but-unconsumed range.
            drop(unsafe {
                self.pool
                    .from_raw(self.rx_slots[(i & self.rx.mask()) as usize], 0, 0)
            });
            i = i.wrapping_add(1);
        }
    }
}

impl MemifPort {
    pub(super) fn new(iface: Arc<IfShared>, queue: u16) -> MemifPort {
        let pool = iface.pool.clone();
        let rx_copy = iface.rx_copy.clone();
        let headroom = pool.headroom() as u32;
        let cap = (pool.slot_size() as u32 - headroom).min(iface.cfg.buffer_size.max(1));
        let info = PortInfo {
            name: format!("memif:{}#{}", iface.socket.display(), iface.cfg.id),
            mtu: cap.saturating_sub(14).min(u16::MAX as u32) as u16,
            max_burst: MAX_BURST as u16,
            mac: iface.cfg.mac,
            queues: iface.cfg.queue_pairs,
            queue,
            // Frames are written to and read from memory both processes map.
            offloads: Offloads {
                intact: true,
                ..Offloads::default()
            },
        };
        let faults = Faults {
            iface: iface.clone(),
            base: 2 * queue as usize,
            code: [0; 2],
            bursts: [0; 2],
            episode: 0,
        };
        MemifPort {
            faults,
            iface,
            queue,
            seen_gen: u64::MAX,
            active: None,
            stats: PortStats::default(),
            info,
            pool,
            rx_copy,
            headroom,
            cap,
            idle: false,
            idle_polls: 0,
        }
    }

    /// Follow the interface's connection: one atomic load when nothing changed.
    #[inline]
    fn sync(&mut self) {
        let g = self.iface.gen.load(Ordering::Acquire);
        if g != self.seen_gen {
            self.resync();
        }
    }

    #[cold]
    fn resync(&mut self) {
        self.active = None;
        self.faults.reset();
        let guard = self.iface.conn.lock().unwrap_or_else(|e| e.into_inner());
        // The generation that goes with this connection: `publish` bumps it before it lets
        // go of the lock. (The one `sync` loaded may be older: taken from it, a connection
        // published in between would be taken up twice, the second time over buffers
        // already posted and perhaps filled.)
        self.seen_gen = self.iface.gen.load(Ordering::Acquire);
        let conn = guard.clone();
        drop(guard);
        let Some(conn) = conn else { return };
        let Some(q) = conn.queues.get(self.queue as usize).copied() else {
            return;
        };
        let size = q.rx.size().max(q.tx.size()) as usize;
        let client = self.iface.role == Role::Client;
        // Server: start from the indices the rings hold now (reset to 0 at CONNECT).
        let (tx_tail, rx_tail) = if client {
            (0, 0)
        } else {
            (q.tx.tail(Ordering::Relaxed), q.rx.tail(Ordering::Relaxed))
        };
        self.active = Some(Active {
            tx: q.tx,
            rx: q.rx,
            tx_int: q.tx_int,
            rx_int: q.rx_int,
            armed: false,
            tx_slots: if client {
                vec![0; size].into_boxed_slice()
            } else {
                Box::new([])
            },
            rx_slots: if client {
                vec![0; size].into_boxed_slice()
            } else {
                Box::new([])
            },
            // (Server: nothing known posted yet, so its first transmit reads the head.)
            tx_head: tx_tail,
            tx_tail,
            rx_head: 0,
            rx_tail,
            client,
            pool: self.pool.clone(),
            conn,
        });
        if client {
            // Give the server buffers to fill before the first receive call.
            if let Some(a) = self.active.as_mut() {
                Self::refill(a, self.cap, &mut self.stats);
            }
        }
    }

    /// Client: post empty buffers on the receive ring up to a full ring.
    fn refill(a: &mut Active, cap: u32, stats: &mut PortStats) {
        let ring = a.rx;
        let mask = ring.mask();
        let size = ring.size();
        let head0 = a.rx_head;
        while a.rx_head.wrapping_sub(a.rx_tail) < size {
            let Ok(b) = a.pool.alloc() else {
                stats.rx_no_buffer += 1;
                break;
            };
            let (slot, off, _) = b.into_raw();
            let offset = (a.pool.slot_offset(slot) + off as usize) as u32;
            ring.write_desc(
                a.rx_head,
                Desc {
                    flags: 0,
                    region: BUFFER_REGION,
                    length: cap,
                    offset,
                    metadata: 0,
                },
            );
            a.rx_slots[(a.rx_head & mask) as usize] = slot;
            a.rx_head = a.rx_head.wrapping_add(1);
        }
        if a.rx_head != head0 {
            ring.set_head(a.rx_head, Ordering::Release);
        }
    }

    /// Client: take back the transmit ring's buffers the server has consumed (reads the
    /// tail the server's core writes).
    fn reclaim_tx(a: &mut Active, stats: &mut PortStats, faults: &mut Faults) {
        let ring = a.tx;
        let mask = ring.mask();
        let outstanding = a.tx_head.wrapping_sub(a.tx_tail);
        let tail = ring.tail(Ordering::Acquire);
        if tail.wrapping_sub(a.tx_tail) > outstanding {
            faults.fault(TX, Fault::Index, true, stats);
            return;
        }
        faults.ok(TX);
        while a.tx_tail != tail {
            let slot = a.tx_slots[(a.tx_tail & mask) as usize];
            // SAFETY: posted at this index by into_raw (shared or not as marked); the peer
            // has returned it.
            unsafe { reclaim(&a.pool, slot) };
            a.tx_tail = a.tx_tail.wrapping_add(1);
        }
    }

    fn client_rx(&mut self, out: &mut Vec<PktBuf>, max: usize) -> usize {
        let Some(a) = self.active.as_mut() else {
            return 0;
        };
        let ring = a.rx;
        let mask = ring.mask();
        let tail = ring.tail(Ordering::Acquire);
        if tail == a.rx_tail {
            // Nothing arrived twice in a row: the time to do the rings' upkeep, off every
            // frame's path (a request-response peer waits here for the answer; the first
            // empty call is often the one in front of its own transmission). Post the
            // buffers taken since the last refill, and take back transmitted ones the
            // server has consumed.
            if self.idle {
                if a.rx_head.wrapping_sub(a.rx_tail) < ring.size() {
                    Self::refill(a, self.cap, &mut self.stats);
                }
                if a.tx_head != a.tx_tail {
                    Self::reclaim_tx(a, &mut self.stats, &mut self.faults);
                }
                // Our own heads as the server reads them: one the peer put back would
                // leave both sides waiting with rings that look healthy.
                if ring.head(Ordering::Relaxed) != a.rx_head {
                    restore_head(&ring, a.rx_head, &mut self.stats);
                }
                if a.tx.head(Ordering::Relaxed) != a.tx_head {
                    restore_head(&a.tx, a.tx_head, &mut self.stats);
                }
            }
            self.faults.ok(RX);
            self.idle = true;
            return 0;
        }
        self.idle = false;
        let avail = tail.wrapping_sub(a.rx_tail);
        let posted = a.rx_head.wrapping_sub(a.rx_tail);
        let mut n = 0;
        let tail0 = a.rx_tail;
        let mut unfinished = false;
        if avail > posted {
            // The peer claims to have filled buffers we never posted (or its tail went back
            // behind what we took): ignore the claim.
            self.faults.fault(RX, Fault::Index, true, &mut self.stats);
        } else {
            while n < max && a.rx_tail != tail {
                let idx = a.rx_tail;
                let d = ring.read_desc(idx);
                // A chain (the server split the frame over several of our buffers): take it
                // only once it is complete, and gather it into its first buffer.
                let mut end = idx.wrapping_add(1);
                let mut last = d;
                while last.flags & DESC_FLAG_NEXT != 0 {
                    if end == tail {
                        break;
                    }
                    last = ring.read_desc(end);
                    end = end.wrapping_add(1);
                }
                if last.flags & DESC_FLAG_NEXT != 0 {
                    unfinished = true;
                    break; // the rest of the chain is not published yet
                }
                a.rx_tail = end;
                let take = |i: u16| {
                    let slot = a.rx_slots[(i & mask) as usize];
                    let len = ring.read_desc(i).length;
                    // SAFETY: the slot was posted at ring index i by into_raw and the peer
                    // has returned it (i is below its tail); nothing else owns it. The length
                    // is clamped to the posted capacity: headroom + len <= slot size.
                    let b = unsafe { a.pool.from_raw(slot, self.headroom, len.min(self.cap)) };
                    (b, len <= self.cap)
                };
                let (mut b, mut ok) = take(idx);
                let mut i = idx.wrapping_add(1);
                while i != end {
                    let (seg, seg_ok) = take(i);
                    ok = ok && seg_ok && b.extend_from_slice(seg.data()).is_ok();
                    i = i.wrapping_add(1);
                }
                if !ok {
                    // A length beyond the posted buffer, or a chain longer than one buffer.
                    self.stats.rx_errors += 1;
                    continue;
                }
                if let Some(rp) = &self.rx_copy {
                    // Out of the memory the server writes, before anything reads the frame:
                    // what the stack checks is what the application gets. The shared slot
                    // goes back to the pool (and to the ring at the next refill).
                    match rp.alloc() {
                        Ok(mut c) => {
                            if c.extend_from_slice(b.data()).is_err() {
                                self.stats.rx_errors += 1;
                                continue;
                            }
                            b = c;
                        }
                        Err(PoolExhausted) => {
                            self.stats.rx_no_buffer += 1;
                            continue;
                        }
                    }
                }
                b.meta.queue = self.queue;
                self.stats.rx_bytes += b.len() as u64;
                out.push(b);
                n += 1;
            }
            if unfinished && a.rx_tail == tail0 {
                self.faults
                    .fault(RX, Fault::Unfinished, false, &mut self.stats);
            } else {
                self.faults.ok(RX);
            }
        }
        self.stats.rx_packets += n as u64;
        // Refill in batches while frames keep coming (one head store per batch, no
        // allocation in front of most frames' delivery); an idle call refills the rest.
        let size = ring.size();
        if size - a.rx_head.wrapping_sub(a.rx_tail) >= RX_REFILL_BATCH.min(size / 8).max(1) {
            Self::refill(a, self.cap, &mut self.stats);
        }
        n
    }

    fn client_tx(&mut self, pkts: &mut Vec<PktBuf>) -> usize {
        let Some(a) = self.active.as_mut() else {
            return 0;
        };
        let ring = a.tx;
        let mask = ring.mask();
        // Reclaim what the server has consumed, in batches (DPDK's tx_free_thresh): reading
        // the tail means fetching the cache line the server's core last wrote, and doing it
        // on every transmit would put that transfer in front of every frame's publication
        // (the head store waits for it). So only when TX_FREE_BATCH or more descriptors
        // are outstanding or the frames to send may not fit.
        let outstanding = a.tx_head.wrapping_sub(a.tx_tail);
        if outstanding >= TX_FREE_BATCH || ring.size() - outstanding < pkts.len() as u16 {
            Self::reclaim_tx(a, &mut self.stats, &mut self.faults);
        }
        let mut free = ring.size() - a.tx_head.wrapping_sub(a.tx_tail);
        let mut n = 0;
        let mut bytes = 0u64;
        while n < pkts.len() && free > 0 {
            let p = &pkts[n];
            let len = p.len() as u32;
            if a.pool.owns(p) {
                // Zero copy. A frame longer than one buffer (data reaching into the slot's
                // headroom or tailroom) goes out as a chain of descriptors over the same slot.
                // (No division for the common frame that fits one buffer.)
                let ndesc = if len <= self.cap {
                    1
                } else {
                    len.div_ceil(self.cap)
                };
                if ndesc > free as u32 {
                    break;
                }
                let base = (a.pool.slot_offset(p.slot()) + p.data_offset()) as u32;
                for k in 0..ndesc {
                    let seg = (len - k * self.cap).min(self.cap);
                    ring.write_desc(
                        a.tx_head,
                        Desc {
                            flags: if k + 1 < ndesc { DESC_FLAG_NEXT } else { 0 },
                            region: BUFFER_REGION,
                            length: seg,
                            offset: base + k * self.cap,
                            metadata: 0,
                        },
                    );
                    a.tx_slots[(a.tx_head & mask) as usize] = if k == 0 {
                        p.slot() | (u32::from(p.is_shared()) * SHARED_SLOT)
                    } else {
                        NO_SLOT
                    };
                    a.tx_head = a.tx_head.wrapping_add(1);
                }
                free -= ndesc as u16;
            } else {
                // A foreign buffer is copied once into one of ours (frames up to one buffer).
                if len > self.cap {
                    break;
                }
                let Ok(mut c) = a.pool.alloc() else { break };
                if c.extend_from_slice(p.data()).is_err() {
                    break;
                }
                let (slot, off, _) = c.into_raw();
                ring.write_desc(
                    a.tx_head,
                    Desc {
                        flags: 0,
                        region: BUFFER_REGION,
                        length: len,
                        offset: (a.pool.slot_offset(slot) + off as usize) as u32,
                        metadata: 0,
                    },
                );
                a.tx_slots[(a.tx_head & mask) as usize] = slot;
                a.tx_head = a.tx_head.wrapping_add(1);
                free -= 1;
            }
            bytes += len as u64;
            n += 1;
        }
        if n > 0 {
            ring.set_head(a.tx_head, Ordering::Release);
            if let Some(k) = a.tx_int {
                // A full counter (the peer's eventfd is non-blocking, see
                // `sys::interrupt_fd`) is a skipped interrupt, counted; the frames are on
                // the ring regardless.
                if ring.flags() & RING_FLAG_MASK_INT == 0
                    && !sys::eventfd_signal(a.conn.fds[k].as_fd())
                {
                    self.iface
                        .interrupts_skipped
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            for p in pkts.drain(..n) {
                if a.pool.owns(&p) {
                    // Now posted on the ring; reclaimed when the server returns it.
                    let _ = p.into_raw();
                }
            }
        }
        self.stats.tx_packets += n as u64;
        self.stats.tx_bytes += bytes;
        self.stats.tx_ring_full += pkts.len() as u64;
        n
    }

    fn server_rx(&mut self, out: &mut Vec<PktBuf>, max: usize) -> usize {
        let Some(a) = self.active.as_mut() else {
            return 0;
        };
        let ring = a.rx;
        let head = ring.head(Ordering::Acquire);
        let tail0 = a.rx_tail;
        let avail = head.wrapping_sub(tail0);
        if avail > ring.size() {
            // More than a ring posted, or a head behind what we already took.
            self.faults.fault(RX, Fault::Index, true, &mut self.stats);
            return 0;
        }
        if avail == 0 {
            // Nothing new: touch nothing the client reads (an idle poll must not pull the
            // tail's cache line away from the transmitter on every spin), except once in
            // 65536 idle polls our own tail as the client reads it: one the peer put back
            // would leave the client's transmit ring full of frames we took.
            self.faults.ok(RX);
            self.idle_polls = self.idle_polls.wrapping_add(1);
            if self.idle_polls == 0 && ring.tail(Ordering::Relaxed) != tail0 {
                restore_tail(&ring, tail0, &mut self.stats);
            }
            return 0;
        }
        let mut n = 0;
        let mut unfinished = false;
        while n < max && a.rx_tail != head {
            let start = a.rx_tail;
            let mut buf = match a.pool.alloc() {
                Ok(b) => Some(b),
                Err(PoolExhausted) => {
                    self.stats.rx_no_buffer += 1;
                    None
                }
            };
            let mut ok = true;
            let mut complete = false;
            while a.rx_tail != head {
                let d = ring.read_desc(a.rx_tail);
                a.rx_tail = a.rx_tail.wrapping_add(1);
                if ok {
                    if let Some(b) = buf.as_mut() {
                        ok = copy_in(&a.conn, &d, b);
                    }
                }
                if d.flags & DESC_FLAG_NEXT == 0 {
                    complete = true;
                    break;
                }
            }
            if !complete {
                // A chain the client has not finished publishing: take it next time.
                a.rx_tail = start;
                unfinished = true;
                break;
            }
            match buf {
                Some(mut b) if ok => {
                    b.meta.queue = self.queue;
                    self.stats.rx_bytes += b.len() as u64;
                    out.push(b);
                    n += 1;
                }
                Some(_) => self.stats.rx_errors += 1,
                None => {}
            }
        }
        if a.rx_tail != tail0 {
            ring.set_tail(a.rx_tail, Ordering::Release);
            self.faults.ok(RX);
        } else if unfinished {
            self.faults
                .fault(RX, Fault::Unfinished, false, &mut self.stats);
        }
        self.stats.rx_packets += n as u64;
        n
    }

    fn server_tx(&mut self, pkts: &mut Vec<PktBuf>) -> usize {
        let Some(a) = self.active.as_mut() else {
            return 0;
        };
        if pkts.is_empty() {
            return 0; // (checks nothing: says nothing about the ring's health)
        }
        let ring = a.tx;
        // The buffers the client posted run up to its head. The client keeps the ring
        // nearly full, so the head read earlier usually still covers this burst: read it
        // again (the cache line the client's core writes at every refill) only on reaching
        // the buffers known to be posted.
        let mut head = a.tx_head;
        let mut slot = a.tx_tail;
        let mut n = 0;
        let mut bytes = 0u64;
        // Why the burst stopped short, if the ring is at fault.
        let mut fault = None;
        'frames: for p in pkts.iter() {
            let start = slot;
            let mut src = p.data();
            loop {
                if slot == head {
                    let h = ring.head(Ordering::Acquire);
                    if h.wrapping_sub(a.tx_tail) > ring.size() {
                        // More than a ring posted, or a head behind the buffers we already
                        // filled (a head the client wrote back after we read a later one).
                        fault = Some(Fault::Index);
                        slot = start;
                        break 'frames;
                    }
                    a.tx_head = h;
                    head = h;
                    if slot == head {
                        // Full. If the tail in the ring is not the one we wrote (the peer
                        // put back an older one), the client waits for frames we already
                        // gave it while we wait for buffers: write ours again.
                        if n == 0 && ring.tail(Ordering::Relaxed) != a.tx_tail {
                            restore_tail(&ring, a.tx_tail, &mut self.stats);
                        }
                        slot = start;
                        break 'frames;
                    }
                }
                let d = ring.read_desc(slot);
                let Some(dst) = a.conn.buffer(d.region, d.offset, d.length) else {
                    // A buffer outside the client's regions: refuse to write there.
                    fault = Some(Fault::Outside);
                    slot = start;
                    break 'frames;
                };
                if d.length == 0 && !src.is_empty() {
                    fault = Some(Fault::ZeroLength);
                    slot = start;
                    break 'frames;
                }
                let c = src.len().min(d.length as usize);
                // SAFETY: dst..dst+d.length lies inside a mapped region (checked above) and
                // the client handed this buffer to us by posting it; src is our own buffer.
                unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, c) };
                src = &src[c..];
                let flags = if src.is_empty() { 0 } else { DESC_FLAG_NEXT };
                ring.write_len_flags(slot, c as u32, flags);
                slot = slot.wrapping_add(1);
                if src.is_empty() {
                    break;
                }
            }
            bytes += p.len() as u64;
            n += 1;
        }
        if n > 0 {
            a.tx_tail = slot;
            ring.set_tail(slot, Ordering::Release);
            if let Some(k) = a.tx_int {
                // A full counter (the peer's eventfd is non-blocking, see
                // `sys::interrupt_fd`) is a skipped interrupt, counted; the frames are on
                // the ring regardless.
                if ring.flags() & RING_FLAG_MASK_INT == 0
                    && !sys::eventfd_signal(a.conn.fds[k].as_fd())
                {
                    self.iface
                        .interrupts_skipped
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            pkts.drain(..n);
        }
        match fault {
            Some(f) => self.faults.fault(TX, f, true, &mut self.stats),
            None => self.faults.ok(TX),
        }
        self.stats.tx_packets += n as u64;
        self.stats.tx_bytes += bytes;
        self.stats.tx_ring_full += pkts.len() as u64;
        n
    }
}

/// Write again an index we own (a tail on the server, a head on the client) that the peer
/// overwrote with another value, counted in `rx_errors` (once per rewrite: the next check
/// finds ours). Safe against a hostile peer: the value is our own state, the one we would
/// store at our next transfer anyway; the peer, which can write the word at any time,
/// learns and gains nothing, and what it wrote is only ever read by itself.
#[cold]
fn restore_tail(ring: &Ring, v: u16, stats: &mut PortStats) {
    ring.set_tail(v, Ordering::Release);
    stats.rx_errors += 1;
}

/// [`restore_tail`] for a head.
#[cold]
fn restore_head(ring: &Ring, v: u16, stats: &mut PortStats) {
    ring.set_head(v, Ordering::Release);
    stats.rx_errors += 1;
}

/// Append the buffer `d` describes to `b`; false when the descriptor points outside the
/// regions or the frame outgrows the buffer.
#[inline]
fn copy_in(conn: &Conn, d: &Desc, b: &mut PktBuf) -> bool {
    let Some(src) = conn.buffer(d.region, d.offset, d.length) else {
        return false;
    };
    let Ok(dst) = b.append(d.length as usize) else {
        return false;
    };
    // SAFETY: src..src+length lies inside a mapped region (checked by `buffer`); dst is our
    // own buffer of that length; the two never overlap (different mappings).
    unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), d.length as usize) };
    true
}

impl Port for MemifPort {
    fn info(&self) -> PortInfo {
        self.info.clone()
    }

    fn link(&mut self) -> Link {
        self.sync();
        match &self.active {
            Some(a) if a.conn.alive.load(Ordering::Relaxed) => Link::Up { speed_mbps: 0 },
            _ => Link::Down,
        }
    }

    #[inline]
    fn rx_burst(&mut self, out: &mut Vec<PktBuf>, max: usize) -> usize {
        self.sync();
        let max = max.min(MAX_BURST);
        if self.iface.role == Role::Client {
            self.client_rx(out, max)
        } else {
            self.server_rx(out, max)
        }
    }

    #[inline]
    fn tx_burst(&mut self, pkts: &mut Vec<PktBuf>) -> usize {
        self.sync();
        if self.active.is_none() {
            return 0;
        }
        if self.iface.role == Role::Client {
            self.client_tx(pkts)
        } else {
            self.server_tx(pkts)
        }
    }

    fn alloc_tx(&mut self) -> Result<PktBuf, PoolExhausted> {
        self.pool.alloc()
    }

    fn stats(&self) -> PortStats {
        self.stats
    }

    /// Unmask our receive ring's interrupt, so the peer signals its eventfd when it posts
    /// (both roles: the peer's transmit checks `RING_FLAG_MASK_INT`), then look at the ring
    /// once more: a frame posted before the peer could see the flag clear is `Pending`. No
    /// link yet: `Armed` with no descriptor (the loop sleeps to its timeout or ceiling and
    /// finds the link at its next poll).
    fn rx_intr_arm(&mut self, wait: &mut RxWait) -> RxIntr {
        self.sync();
        let client = self.iface.role == Role::Client;
        let Some(a) = self.active.as_mut() else {
            return RxIntr::Armed;
        };
        let Some(k) = a.rx_int else {
            // The peer passed no eventfd for this ring: it cannot wake us.
            return RxIntr::Unsupported;
        };
        a.rx.set_interrupt(true);
        a.armed = true;
        // (A sequentially consistent store above, and a load here: the peer publishes its
        // head or tail before it reads the flag, so either it sees the flag clear and
        // signals, or we see its frame now. A peer that does not order its publication before
        // its flag read, as DPDK's and libmemif's transmit do not, can miss the signal in a
        // window of a store buffer's drain; the loop's sleep ceiling bounds that.)
        let pending = if client {
            a.rx.tail(Ordering::SeqCst) != a.rx_tail
        } else {
            a.rx.head(Ordering::SeqCst) != a.rx_tail
        };
        if pending {
            return RxIntr::Pending;
        }
        wait.push(a.conn.fds[k].as_fd());
        RxIntr::Armed
    }

    /// Mask the ring's interrupt again (the peer stops signalling while we poll) and drain
    /// the eventfd of what it signalled meanwhile.
    fn rx_intr_disarm(&mut self) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        if !a.armed {
            return;
        }
        a.armed = false;
        a.rx.set_interrupt(false);
        if let Some(k) = a.rx_int {
            sys::eventfd_drain(a.conn.fds[k].as_fd());
        }
    }
}

impl std::fmt::Debug for MemifPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemifPort")
            .field("name", &self.info.name)
            .field("queue", &self.queue)
            .field("connected", &self.active.is_some())
            .finish()
    }
}
