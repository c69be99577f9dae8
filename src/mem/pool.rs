//! `Pool`: fixed-size packet slots carved from one [`Region`] at start-up.
//!
//! Allocation and free are O(1), make no system call and no heap allocation:
//! - a thread that holds a [`CoreSlot`](super::CoreSlot) uses a private per-core cache (a
//!   plain stack of slot indices, no atomic operation);
//! - the cache refills from and spills to a shared lock-free free list (a bounded MPMC
//!   ring of slot indices, Vyukov's algorithm) in batches; threads without a core slot use
//!   that ring directly, so a buffer can be freed on any thread.
//!
//! Lifetime: the pool's memory lives while any handle or any slot off the shared ring (in a
//! buffer, posted to a device, or parked in a per-core cache) exists. That count moves only
//! when slots cross the shared ring, in batches, so a cached alloc/free pair performs no
//! atomic read-modify-write at all (each one drains the store buffer; they were a third of a
//! memif hop's CPU time). The thread that drops the last handle, and any core that frees into
//! a pool after that, return their cached slots at once; a core that cached slots of a pool
//! and never touches it again returns them when its [`CoreSlot`](super::CoreSlot) is released.
//!
//! Exhaustion is an error the caller acts on ([`PoolExhausted`]), counted in
//! [`PoolStats::failed`]; a pool never grows.

use std::cell::UnsafeCell;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::core_slot::{self, MAX_CORES};
use super::region::{HugePages, Region, RegionError};
use super::PktBuf;

/// Pads and aligns a value to a cache line pair (128 bytes, the adjacent-line prefetcher's
/// unit on x86) so per-core state never false-shares.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

/// How to build a pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Name for the region (shows in /proc/PID/maps) and in telemetry.
    pub name: String,
    /// Number of slots.
    pub slots: u32,
    /// Bytes per slot, headroom included. Rounded up to 64 (a cache line).
    pub slot_size: u32,
    /// Bytes reserved at the front of every buffer for headers to be prepended in place.
    pub headroom: u16,
    /// Hugepage policy for the region.
    pub hugepages: HugePages,
    /// Most free slots a per-core cache holds (0 disables the caches).
    pub cache_size: u32,
}

impl PoolConfig {
    /// A pool of `slots` slots of `slot_size` bytes, 128 bytes of headroom, hugepages
    /// preferred, per-core caches of 256.
    pub fn new(name: &str, slots: u32, slot_size: u32) -> PoolConfig {
        PoolConfig {
            name: name.to_owned(),
            slots,
            slot_size,
            headroom: 128,
            hugepages: HugePages::Prefer,
            cache_size: 256,
        }
    }
}

/// Errors building a pool.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The configuration cannot describe a pool.
    #[error("invalid pool configuration: {0}")]
    Config(&'static str),
    /// The region could not be had.
    #[error(transparent)]
    Region(#[from] RegionError),
}

/// No free slot: the caller should back off (drop, retry later, or apply backpressure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("buffer pool exhausted")]
pub struct PoolExhausted;

/// A snapshot of a pool's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Total slots.
    pub capacity: u32,
    /// Slots held by buffers (`PktBuf` or `PktBytes`, or posted to a device) now; exact
    /// when no alloc or free is in flight.
    pub in_use: u64,
    /// The most slots ever off the shared free list at once: held by buffers plus parked in
    /// per-core caches (sampled whenever slots leave the shared list). Without per-core
    /// caches this is exactly the most slots ever held by buffers; with them it can exceed
    /// that by up to a cache refill per core, never fall below it. Size pools by it.
    pub high_water: u64,
    /// Allocations refused because the pool was empty.
    pub failed: u64,
}

/// Bounded MPMC queue of slot indices (Dmitry Vyukov's algorithm): each cell carries a
/// sequence number that tells producers and consumers whose turn it is; no ABA, no lock.
struct FreeRing {
    cells: Box<[Cell]>,
    mask: usize,
    enq: CachePadded<AtomicUsize>,
    deq: CachePadded<AtomicUsize>,
}

struct Cell {
    seq: AtomicUsize,
    val: AtomicU32,
}

impl FreeRing {
    fn new(capacity: usize) -> FreeRing {
        let cap = capacity.next_power_of_two().max(2);
        FreeRing {
            cells: (0..cap)
                .map(|i| Cell {
                    seq: AtomicUsize::new(i),
                    val: AtomicU32::new(0),
                })
                .collect(),
            mask: cap - 1,
            enq: CachePadded(AtomicUsize::new(0)),
            deq: CachePadded(AtomicUsize::new(0)),
        }
    }

    /// Push `v`. The ring is sized to hold every slot, so this cannot fail for a pool's own
    /// indices; it returns false only if it would overflow (a double free upstream).
    #[inline]
    fn push(&self, v: u32) -> bool {
        let mut pos = self.enq.0.load(Ordering::Relaxed);
        loop {
            let cell = &self.cells[pos & self.mask];
            let seq = cell.seq.load(Ordering::Acquire);
            let diff = seq as isize - pos as isize;
            if diff == 0 {
                match self.enq.0.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        cell.val.store(v, Ordering::Relaxed);
                        cell.seq.store(pos + 1, Ordering::Release);
                        return true;
                    }
                    Err(p) => pos = p,
                }
            } else if diff < 0 {
                return false;
            } else {
                pos = self.enq.0.load(Ordering::Relaxed);
            }
        }
    }

    #[inline]
    fn pop(&self) -> Option<u32> {
        let mut pos = self.deq.0.load(Ordering::Relaxed);
        loop {
            let cell = &self.cells[pos & self.mask];
            let seq = cell.seq.load(Ordering::Acquire);
            let diff = seq as isize - (pos + 1) as isize;
            if diff == 0 {
                match self.deq.0.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        let v = cell.val.load(Ordering::Relaxed);
                        cell.seq.store(pos + self.mask + 1, Ordering::Release);
                        return Some(v);
                    }
                    Err(p) => pos = p,
                }
            } else if diff < 0 {
                return None;
            } else {
                pos = self.deq.0.load(Ordering::Relaxed);
            }
        }
    }

    /// Approximate number of entries (exact when no push/pop is in flight).
    fn len(&self) -> usize {
        let e = self.enq.0.load(Ordering::Acquire);
        let d = self.deq.0.load(Ordering::Acquire);
        e.saturating_sub(d)
    }
}

/// A per-core stack of free slot indices. Touched only by the thread holding that core slot.
struct CoreCache {
    len: AtomicUsize,
    slots: UnsafeCell<Box<[u32]>>,
}

pub(crate) struct PoolInner {
    base: NonNull<u8>,
    slot_size: usize,
    nslots: u32,
    headroom: u16,
    ring: FreeRing,
    caches: Box<[CachePadded<CoreCache>]>,
    cache_size: usize,
    /// Per-slot reference counts for `PktBytes` (shared views); meaningless while a `PktBuf`
    /// owns the slot (`freeze` sets it to 1; the last view may free without clearing it).
    pub(crate) refcnt: Box<[AtomicU32]>,
    /// Pool handles plus slots off the shared ring (held by buffers or parked in per-core
    /// caches). Changed only when slots cross the ring, in batches. The inner is freed when
    /// it reaches zero, so buffers may outlive every `Pool` handle.
    refs: CachePadded<AtomicUsize>,
    handles: AtomicUsize,
    /// Set when the last handle is dropped: frees stop parking slots in per-core caches.
    dead: std::sync::atomic::AtomicBool,
    high_water: AtomicU64,
    failed: AtomicU64,
    name: String,
    region: Region,
}

// SAFETY: the caches are UnsafeCell, but cache `i` is only touched by the thread holding core
// slot `i` (claimed exclusively, handed over with Acquire/Release); every other field is
// immutable or atomic. Slot memory is owned by exactly one buffer at a time.
unsafe impl Sync for PoolInner {}
// SAFETY: as above; nothing in PoolInner is tied to a thread.
unsafe impl Send for PoolInner {}

impl PoolInner {
    #[inline]
    pub(crate) fn slot_ptr(&self, slot: u32) -> *mut u8 {
        debug_assert!(slot < self.nslots);
        // SAFETY: slot < nslots, so the offset stays inside the region.
        unsafe { self.base.as_ptr().add(slot as usize * self.slot_size) }
    }

    #[inline]
    pub(crate) fn slot_size(&self) -> usize {
        self.slot_size
    }

    #[inline]
    pub(crate) fn headroom(&self) -> u16 {
        self.headroom
    }

    /// The cache of the core slot this thread holds, if caches are on and it holds one.
    // The &mut comes from an UnsafeCell whose exclusivity is guaranteed by the core slot,
    // not by &self: that is the point of a per-core cache.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    fn my_cache(&self) -> Option<(&AtomicUsize, &mut [u32])> {
        if self.cache_size == 0 {
            return None;
        }
        let c = &self.caches[core_slot::current()?].0;
        // SAFETY: this thread holds that core slot, so it is the only one touching the
        // cache's slot array (see CoreSlot); the borrow ends before the slot is released.
        let slots = unsafe { &mut *c.slots.get() };
        Some((&c.len, slots))
    }

    /// Free slots this thread can see without walking other cores' caches: the shared ring's
    /// and this core's cache. Two or three loads, no write: cheap enough to sample on a
    /// receive path (other cores' caches hold at most `cache_size` each, so this can only
    /// under-count).
    #[inline]
    pub(crate) fn free_here(&self) -> usize {
        let mine = match self.cache_size {
            0 => 0,
            _ => core_slot::current().map_or(0, |i| self.caches[i].0.len.load(Ordering::Relaxed)),
        };
        self.ring.len() + mine
    }

    #[inline]
    pub(crate) fn nslots(&self) -> u32 {
        self.nslots
    }

    /// `k` slots just left the shared ring: count them (the caller holds a handle, so the
    /// inner is live) and sample the high-water mark.
    #[inline]
    fn popped(&self, k: usize) {
        let refs = self.refs.0.fetch_add(k, Ordering::Relaxed) + k;
        let off = refs.saturating_sub(self.handles.load(Ordering::Relaxed)) as u64;
        if off > self.high_water.load(Ordering::Relaxed) {
            self.high_water.fetch_max(off, Ordering::Relaxed);
        }
    }

    /// A slot for a caller holding a handle: from this core's cache (no atomic RMW), else
    /// from the shared ring (refilling the cache with a batch).
    #[inline]
    fn take(&self) -> Option<u32> {
        let Some((len, slots)) = self.my_cache() else {
            let s = self.ring.pop()?;
            self.popped(1);
            return Some(s);
        };
        // Only this thread stores `len`; others read it for diagnostics.
        let mut n = len.load(Ordering::Relaxed);
        if n == 0 {
            let want = self.cache_size.div_ceil(2);
            while n < want {
                match self.ring.pop() {
                    Some(s) => {
                        slots[n] = s;
                        n += 1;
                    }
                    None => break,
                }
            }
            if n == 0 {
                return None;
            }
            self.popped(n);
        }
        n -= 1;
        len.store(n, Ordering::Relaxed);
        Some(slots[n])
    }

    /// Return a slot; the result is how many references the caller must release (slots put
    /// back on the shared ring): 0 when it was parked in this core's cache.
    #[inline]
    fn put(&self, slot: u32) -> usize {
        let Some((len, slots)) = self.my_cache() else {
            let ok = self.ring.push(slot);
            debug_assert!(ok, "free ring overflow: double free");
            return 1;
        };
        let mut n = len.load(Ordering::Relaxed);
        if self.dead.load(Ordering::Relaxed) {
            // No handle is left: nothing will take from this cache again, so empty it.
            let ok = self.ring.push(slot);
            debug_assert!(ok, "free ring overflow: double free");
            let k = n + 1;
            while n > 0 {
                n -= 1;
                let ok = self.ring.push(slots[n]);
                debug_assert!(ok, "free ring overflow: double free");
            }
            len.store(0, Ordering::Relaxed);
            return k;
        }
        let mut spilled = 0;
        if n == self.cache_size {
            // Spill half so alternating alloc/free at the boundary doesn't thrash.
            while n > self.cache_size / 2 {
                n -= 1;
                let ok = self.ring.push(slots[n]);
                debug_assert!(ok, "free ring overflow: double free");
                spilled += 1;
            }
        }
        slots[n] = slot;
        len.store(n + 1, Ordering::Relaxed);
        spilled
    }

    /// Move every slot in core `id`'s cache back to the shared ring; returns how many (the
    /// references the caller must release).
    ///
    /// # Safety
    /// The caller is the thread holding core slot `id`.
    unsafe fn flush_core(&self, id: usize) -> usize {
        let Some(c) = self.caches.get(id) else {
            return 0;
        };
        // SAFETY: the caller holds core slot `id`, so no one else touches this cache.
        let slots = unsafe { &*c.0.slots.get() };
        let k = c.0.len.load(Ordering::Relaxed);
        let mut n = k;
        while n > 0 {
            n -= 1;
            let ok = self.ring.push(slots[n]);
            debug_assert!(ok, "free ring overflow: double free");
        }
        c.0.len.store(0, Ordering::Relaxed);
        k
    }

    /// Hand out one slot, counted.
    #[inline]
    pub(crate) fn alloc_slot(&self) -> Result<u32, PoolExhausted> {
        match self.take() {
            Some(s) => Ok(s),
            None => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                Err(PoolExhausted)
            }
        }
    }

    /// Return one slot.
    ///
    /// # Safety
    /// `this` must point to a live PoolInner, and `slot` must be a slot of it that the caller
    /// owned (handed out by `alloc_slot` and not returned since). The PoolInner may be freed
    /// by this call: the caller must not touch it afterwards.
    #[inline]
    pub(crate) unsafe fn free_slot(this: NonNull<PoolInner>, slot: u32) {
        // SAFETY: the caller guarantees `this` is live; our slot keeps a reference on it.
        let inner = unsafe { this.as_ref() };
        debug_assert!(slot < inner.nslots);
        let k = inner.put(slot);
        if k > 0 {
            // SAFETY: forwarded contract: the slot's reference (and those of the slots it
            // pushed with it) went back with them.
            unsafe { Self::release(this, k) };
        }
    }

    /// Drop `k` references (handles or slots put back on the shared ring).
    ///
    /// # Safety
    /// The caller holds `k` references on a live PoolInner and gives them up.
    unsafe fn release(this: NonNull<PoolInner>, k: usize) {
        // SAFETY: the caller holds a reference, so the inner is live.
        let refs = unsafe { &this.as_ref().refs.0 };
        if refs.fetch_sub(k, Ordering::Release) == k {
            fence(Ordering::Acquire);
            // SAFETY: that was the last reference; the inner was created by Box::leak in
            // Pool::new and nothing can reach it any more.
            drop(unsafe { Box::from_raw(this.as_ptr()) });
        }
    }
}

/// Every live pool with per-core caches, so a thread giving up its core slot can return its
/// cached slots (otherwise they would be stranded until another thread claimed that slot).
/// Locked only when a pool is created or freed and when a core slot is released.
static POOLS: Mutex<Vec<PoolPtr>> = Mutex::new(Vec::new());

struct PoolPtr(NonNull<PoolInner>);
// SAFETY: the pointer is only dereferenced under the POOLS lock while the pool is registered
// (it deregisters itself under that lock before it is freed).
unsafe impl Send for PoolPtr {}

/// Run by `CoreSlot::drop` (registered with [`core_slot::on_release`]) on the thread giving
/// up core slot `id`, before it is released.
fn release_core(id: usize) {
    let mut last = Vec::new();
    {
        let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|p| {
            // SAFETY: registered pools are live (see POOLS); this thread still holds slot
            // `id`.
            let inner = unsafe { p.0.as_ref() };
            // SAFETY: this thread holds core slot `id` (CoreSlot::drop calls us first).
            let k = unsafe { inner.flush_core(id) };
            if k > 0 && inner.refs.0.fetch_sub(k, Ordering::Release) == k {
                // Our cached slots were the last references: free it once the lock is
                // released (its Drop takes the lock).
                fence(Ordering::Acquire);
                last.push(p.0);
                return false;
            }
            true
        });
    }
    for p in last {
        // SAFETY: its reference count reached zero above and it is off the registry, so
        // nothing else can reach it; it was created by Box::leak.
        drop(unsafe { Box::from_raw(p.as_ptr()) });
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        if self.cache_size > 0 {
            let me = self as *const PoolInner;
            let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
            pools.retain(|p| !std::ptr::eq(p.0.as_ptr(), me));
        }
    }
}

/// A handle on a buffer pool. Cloning is cheap; buffers keep the pool's memory alive, so a
/// buffer may outlive every handle.
pub struct Pool {
    inner: NonNull<PoolInner>,
}

// SAFETY: PoolInner is Send + Sync; the handle is a counted reference to it.
unsafe impl Send for Pool {}
// SAFETY: as above.
unsafe impl Sync for Pool {}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = self.inner();
        f.debug_struct("Pool")
            .field("name", &i.name)
            .field("slots", &i.nslots)
            .field("slot_size", &i.slot_size)
            .field("headroom", &i.headroom)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Pool {
    /// Build a pool: map its region and put every slot on the free list.
    pub fn new(cfg: &PoolConfig) -> Result<Pool, PoolError> {
        if cfg.slots == 0 {
            return Err(PoolError::Config("slots must be at least 1"));
        }
        let slot_size = (cfg.slot_size as usize).div_ceil(64) * 64;
        if slot_size <= cfg.headroom as usize {
            return Err(PoolError::Config("slot_size must exceed headroom"));
        }
        if slot_size > u32::MAX as usize / 2 {
            return Err(PoolError::Config("slot_size too large"));
        }
        let bytes = slot_size
            .checked_mul(cfg.slots as usize)
            .ok_or(PoolError::Config("slots * slot_size overflows"))?;
        let region = Region::new(&cfg.name, bytes, cfg.hugepages)?;
        Ok(Self::over_region(region, cfg, slot_size))
    }

    /// Build a pool over an existing host region (the region must hold `slots * slot_size`
    /// bytes, slot_size rounded up to 64).
    pub fn with_region(region: Region, cfg: &PoolConfig) -> Result<Pool, PoolError> {
        let slot_size = (cfg.slot_size as usize).div_ceil(64) * 64;
        if cfg.slots == 0 || slot_size <= cfg.headroom as usize {
            return Err(PoolError::Config("slots >= 1 and slot_size > headroom"));
        }
        if !region.kind().host_accessible() {
            return Err(PoolError::Config(
                "a packet pool needs host-accessible memory",
            ));
        }
        if slot_size * cfg.slots as usize > region.len() {
            return Err(PoolError::Config("region too small for slots * slot_size"));
        }
        Ok(Self::over_region(region, cfg, slot_size))
    }

    fn over_region(region: Region, cfg: &PoolConfig, slot_size: usize) -> Pool {
        let n = cfg.slots as usize;
        let cache_size = (cfg.cache_size as usize).min(n);
        let ring = FreeRing::new(n);
        for s in 0..cfg.slots {
            ring.push(s);
        }
        let caches = (0..if cache_size > 0 { MAX_CORES } else { 0 })
            .map(|_| {
                CachePadded(CoreCache {
                    len: AtomicUsize::new(0),
                    slots: UnsafeCell::new(vec![0; cache_size].into_boxed_slice()),
                })
            })
            .collect();
        let inner = Box::new(PoolInner {
            base: NonNull::new(region.as_ptr()).expect("mapping is non-null"),
            slot_size,
            nslots: cfg.slots,
            headroom: cfg.headroom,
            ring,
            caches,
            cache_size,
            refcnt: (0..n).map(|_| AtomicU32::new(0)).collect(),
            refs: CachePadded(AtomicUsize::new(1)),
            handles: AtomicUsize::new(1),
            dead: std::sync::atomic::AtomicBool::new(false),
            high_water: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            name: cfg.name.clone(),
            region,
        });
        let inner = NonNull::from(Box::leak(inner));
        if cache_size > 0 {
            core_slot::on_release(release_core);
            POOLS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(PoolPtr(inner));
        }
        Pool { inner }
    }

    #[inline]
    fn inner(&self) -> &PoolInner {
        // SAFETY: a handle holds a reference, so the inner is live.
        unsafe { self.inner.as_ref() }
    }

    /// Take one buffer: empty, with the configured headroom in front of its data.
    #[inline]
    pub fn alloc(&self) -> Result<PktBuf, PoolExhausted> {
        let slot = self.inner().alloc_slot()?;
        // SAFETY: alloc_slot handed us exclusive ownership of `slot` and took a reference on
        // the inner for it.
        Ok(unsafe { PktBuf::from_slot(self.inner, slot, self.inner().headroom as u32, 0) })
    }

    /// Re-own a slot previously given up with [`PktBuf::into_raw`] (a driver that posted the
    /// buffer to a device ring takes it back), with its data at `offset..offset+len` of the
    /// slot.
    ///
    /// # Safety
    /// `slot` must have come from `PktBuf::into_raw` on an exclusive (not
    /// [`PktBuf::is_shared`]) buffer of this pool and not been re-owned since; `offset + len`
    /// must not exceed the slot size.
    pub unsafe fn from_raw(&self, slot: u32, offset: u32, len: u32) -> PktBuf {
        debug_assert!(slot < self.inner().nslots);
        debug_assert!((offset + len) as usize <= self.inner().slot_size);
        // SAFETY: forwarded contract; into_raw kept the slot's reference on the inner.
        unsafe { PktBuf::from_slot(self.inner, slot, offset, len) }
    }

    /// Re-own a *shared* buffer's reference previously given up with
    /// [`PktBuf::into_raw`] (a driver posted a [`PktBuf::is_shared`] buffer and the device
    /// returned it). The result is read-only while other references exist (see
    /// [`PktBuf::share`]); dropping it drops that one reference.
    ///
    /// # Safety
    /// `slot` must have come from `PktBuf::into_raw` on a shared buffer of this pool and not
    /// been re-owned since; `offset + len` must not exceed the slot size.
    pub unsafe fn from_raw_shared(&self, slot: u32, offset: u32, len: u32) -> PktBuf {
        debug_assert!(slot < self.inner().nslots);
        debug_assert!((offset + len) as usize <= self.inner().slot_size);
        // SAFETY: forwarded contract; into_raw kept the buffer's counted reference.
        unsafe { PktBuf::from_shared_slot(self.inner, slot, offset, len) }
    }

    /// True when `buf` is a slot of this pool.
    #[inline]
    pub fn owns(&self, buf: &PktBuf) -> bool {
        buf.pool_ptr() == self.inner
    }

    /// Counters.
    pub fn stats(&self) -> PoolStats {
        let i = self.inner();
        let handles = i.handles.load(Ordering::Acquire);
        let refs = i.refs.0.load(Ordering::Acquire);
        PoolStats {
            capacity: i.nslots,
            in_use: refs.saturating_sub(handles + self.cached_slots()) as u64,
            high_water: i.high_water.load(Ordering::Relaxed),
            failed: i.failed.load(Ordering::Relaxed),
        }
    }

    /// Free slots on the shared list plus those in per-core caches (exact when quiescent).
    pub fn free_slots(&self) -> usize {
        let i = self.inner();
        i.ring.len() + self.cached_slots()
    }

    /// Free slots sitting in per-core caches (exact when quiescent). A core's cache holds at
    /// most `cache_size` slots that other threads cannot take while that core's thread lives;
    /// size a pool with that slack.
    pub fn cached_slots(&self) -> usize {
        self.inner()
            .caches
            .iter()
            .map(|c| c.0.len.load(Ordering::Relaxed))
            .sum()
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner().name
    }

    /// Number of slots.
    pub fn capacity(&self) -> u32 {
        self.inner().nslots
    }

    /// Bytes per slot (headroom included).
    pub fn slot_size(&self) -> usize {
        self.inner().slot_size
    }

    /// Headroom of a fresh buffer.
    pub fn headroom(&self) -> u16 {
        self.inner().headroom
    }

    /// The region the slots live in (to share it with a peer by fd, or register it for DMA).
    pub fn region(&self) -> &Region {
        &self.inner().region
    }

    /// Byte offset of `slot` inside the region.
    pub fn slot_offset(&self, slot: u32) -> usize {
        slot as usize * self.inner().slot_size
    }

    /// The slot containing region offset `offset`, if any.
    pub fn slot_at(&self, offset: usize) -> Option<u32> {
        let s = offset / self.inner().slot_size;
        (s < self.inner().nslots as usize).then_some(s as u32)
    }

    /// True when both handles refer to the same pool.
    pub fn same(&self, other: &Pool) -> bool {
        self.inner == other.inner
    }
}

impl Clone for Pool {
    fn clone(&self) -> Pool {
        let i = self.inner();
        i.handles.fetch_add(1, Ordering::Relaxed);
        i.refs.0.fetch_add(1, Ordering::Relaxed);
        Pool { inner: self.inner }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let i = self.inner();
        let mut k = 1;
        if i.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The last handle: nothing can allocate from this pool again. Stop parking freed
            // slots in caches and give back this core's, so the memory goes as soon as the
            // last buffer does.
            i.dead.store(true, Ordering::Relaxed);
            if let Some(id) = core_slot::current() {
                // SAFETY: this thread holds core slot `id`.
                k += unsafe { i.flush_core(id) };
            }
        }
        // SAFETY: this handle held one reference, and the flushed slots one each.
        unsafe { PoolInner::release(self.inner, k) };
    }
}
