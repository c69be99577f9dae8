//! `PktBuf`: an owned packet buffer over one pool slot; `PktBytes`: a shared, read-only view
//! of a frozen buffer, and the hand-off to `bytes::Bytes`.
//!
//! Sharing for zero-copy transmit ([`PktBuf::share`]): a buffer can hand out a second
//! `PktBuf` over the same slot, so a transport keeps its payload for retransmission while a
//! port transmits the very slot the application wrote. Both become *shared*: they count in
//! the slot's reference count (the same one `PktBytes` uses) and the slot returns to the pool
//! when the last reference of any kind drops. The rule that keeps this sound: of all the
//! references to a slot, at most one may write in place, and only *below its write floor*
//! (the data offset at the moment of sharing: the headroom, where the port's headers go);
//! every byte from the floor up is read-only while another reference exists. A mutating
//! accessor that would write there (`data_mut`, `slot_mut`, `append`, a `prepend` reaching
//! above the floor, a `set_data` that grows the window) first checks the reference count:
//! if this is the last reference it writes in place (the buffer is exclusive again);
//! otherwise it copies the data into a fresh slot of the same pool (copy-on-write), or
//! reports the pool exhausted. Exclusive buffers (the common case) pay one well-predicted
//! branch for this.

use std::fmt;
use std::ops::{Deref, RangeBounds};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use super::pool::{PoolExhausted, PoolInner};

/// Per-packet metadata carried beside the data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    /// Receive time in nanoseconds on the runtime's clock (0 when not stamped).
    pub rx_timestamp: u64,
    /// Port the packet came in on.
    pub port: u16,
    /// Queue the packet came in on.
    pub queue: u16,
}

/// Not enough headroom or tailroom for the requested change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not enough room in the buffer: need {need} bytes, have {have}")]
pub struct NoRoom {
    /// Bytes asked for.
    pub need: usize,
    /// Bytes available.
    pub have: usize,
}

/// An owned packet buffer: one pool slot, with data at `[offset, offset + len)` of it,
/// headroom before (headers are prepended without moving the payload) and tailroom after.
/// Dropping it returns the slot to its pool.
pub struct PktBuf {
    pool: NonNull<PoolInner>,
    slot: u32,
    off: u32,
    len: u32,
    /// [`EXCLUSIVE`] when this buffer owns its slot alone; otherwise the buffer is one of
    /// several references counted in the slot's reference count, and this is its write
    /// floor: the slot offset below which it may write in place (see the module docs).
    floor: u32,
    /// Metadata (receive timestamp, port, queue).
    pub meta: Meta,
}

/// `PktBuf::floor` of a buffer that owns its slot alone.
const EXCLUSIVE: u32 = u32::MAX;

// SAFETY: a PktBuf owns its slot exclusively, or shares it under the write-floor rule with
// an atomic reference count (module docs); the pool inner is Send + Sync.
unsafe impl Send for PktBuf {}
// SAFETY: &PktBuf only gives shared reads of the slot.
unsafe impl Sync for PktBuf {}

impl PktBuf {
    /// # Safety
    /// The caller gives this buffer exclusive ownership of `slot` and one reference on `pool`;
    /// `off + len <= slot_size`.
    #[inline]
    pub(crate) unsafe fn from_slot(
        pool: NonNull<PoolInner>,
        slot: u32,
        off: u32,
        len: u32,
    ) -> PktBuf {
        PktBuf {
            pool,
            slot,
            off,
            len,
            floor: EXCLUSIVE,
            meta: Meta::default(),
        }
    }

    /// # Safety
    /// The caller gives this buffer one counted reference on `slot` (its share of the slot's
    /// reference count, which keeps the slot's reference on `pool`); `off + len <= slot_size`.
    /// The buffer is read-only (write floor 0) while other references exist.
    #[inline]
    pub(crate) unsafe fn from_shared_slot(
        pool: NonNull<PoolInner>,
        slot: u32,
        off: u32,
        len: u32,
    ) -> PktBuf {
        PktBuf {
            pool,
            slot,
            off,
            len,
            floor: 0,
            meta: Meta::default(),
        }
    }

    #[inline]
    fn inner(&self) -> &PoolInner {
        // SAFETY: this buffer holds a reference on the pool inner.
        unsafe { self.pool.as_ref() }
    }

    #[inline]
    fn slot_base(&self) -> *mut u8 {
        self.inner().slot_ptr(self.slot)
    }

    /// Length of the data.
    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when the buffer holds no data.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes free in front of the data.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.off as usize
    }

    /// Bytes free after the data.
    #[inline]
    pub fn tailroom(&self) -> usize {
        self.inner().slot_size() - self.off as usize - self.len as usize
    }

    /// Total bytes of the slot.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.inner().slot_size()
    }

    /// Offset of the data inside the slot.
    #[inline]
    pub fn data_offset(&self) -> usize {
        self.off as usize
    }

    /// Index of the slot in its pool.
    #[inline]
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The data.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: the slot is owned by this buffer, off+len is inside it, and the region
        // outlives us (we hold a reference on the pool).
        unsafe {
            std::slice::from_raw_parts(self.slot_base().add(self.off as usize), self.len as usize)
        }
    }

    /// The data, writable.
    ///
    /// On a shared buffer (see the module docs) this first makes the buffer exclusive,
    /// copying its data into a fresh slot if another reference exists; if the pool has no
    /// free slot for that copy the data is dropped (the buffer becomes empty) and the empty
    /// slice is returned. Use [`try_data_mut`](Self::try_data_mut) where that must be told.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        if self.floor != EXCLUSIVE && self.make_exclusive().is_err() {
            self.len = 0;
            return &mut [];
        }
        // SAFETY: as in data(), and &mut self plus exclusive ownership of the slot make the
        // access exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.slot_base().add(self.off as usize),
                self.len as usize,
            )
        }
    }

    /// The data, writable, or [`PoolExhausted`] when the buffer is shared and no slot is free
    /// to copy it into (see [`data_mut`](Self::data_mut)).
    #[inline]
    pub fn try_data_mut(&mut self) -> Result<&mut [u8], PoolExhausted> {
        if self.floor != EXCLUSIVE {
            self.make_exclusive()?;
        }
        Ok(self.data_mut())
    }

    /// The first `n` bytes of the data, writable (headers just prepended), or `None` when the
    /// data is shorter. On a shared buffer they are written in place when they lie below the
    /// write floor (headers in the headroom of a shared payload); otherwise as
    /// [`try_data_mut`](Self::try_data_mut) (`None` if the copy finds no free slot).
    #[inline]
    pub fn head_mut(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.len as usize {
            return None;
        }
        if self.floor != EXCLUSIVE
            && self.off as usize + n > self.floor as usize
            && self.make_exclusive().is_err()
        {
            return None;
        }
        // SAFETY: [off, off+n) is inside the slot; either the buffer is exclusive, or those
        // bytes lie below its write floor, which no other reference reads (module docs).
        Some(unsafe { std::slice::from_raw_parts_mut(self.slot_base().add(self.off as usize), n) })
    }

    /// The whole slot, writable (for a driver filling a received frame). Use `set_data` after.
    /// A shared buffer is made exclusive first, as [`data_mut`](Self::data_mut) does; if that
    /// fails the empty slice is returned.
    #[inline]
    pub fn slot_mut(&mut self) -> &mut [u8] {
        if self.floor != EXCLUSIVE && self.make_exclusive().is_err() {
            self.len = 0;
            return &mut [];
        }
        // SAFETY: the whole slot is owned by this buffer.
        unsafe { std::slice::from_raw_parts_mut(self.slot_base(), self.inner().slot_size()) }
    }

    /// True when this buffer is one of several references to its slot (made by
    /// [`share`](Self::share), or re-owned with [`Pool::from_raw_shared`](super::Pool::from_raw_shared));
    /// it may have become the last one since (see [`is_unique`](Self::is_unique)).
    #[inline]
    pub fn is_shared(&self) -> bool {
        self.floor != EXCLUSIVE
    }

    /// True when no other reference to this buffer's slot exists (a `PktBuf` from `share`,
    /// a `PktBytes`, or a port's posting), so writing it in place is allowed.
    #[inline]
    pub fn is_unique(&self) -> bool {
        self.floor == EXCLUSIVE
            || self.inner().refcnt[self.slot as usize].load(Ordering::Acquire) == 1
    }

    /// This buffer's pool (to tell whether a buffer came from a given pool; see
    /// [`Pool::owns`](super::Pool::owns)).
    #[inline]
    pub(crate) fn pool_ptr(&self) -> NonNull<PoolInner> {
        self.pool
    }

    /// Make this buffer exclusive: in place when it is the last reference to its slot,
    /// otherwise by copying its data (same offset and length) into a fresh slot of the same
    /// pool and dropping its reference to the old one. Nothing to do on an exclusive buffer.
    pub fn make_exclusive(&mut self) -> Result<(), PoolExhausted> {
        if self.floor == EXCLUSIVE {
            return Ok(());
        }
        if self.is_unique() {
            // The last reference: the Acquire load above ordered us after every other
            // reference's Release decrement, and no new reference can appear (only an
            // existing one makes more). The count stays meaningless until the next share.
            self.floor = EXCLUSIVE;
            return Ok(());
        }
        let slot = self.inner().alloc_slot()?;
        let (off, len) = (self.off as usize, self.len as usize);
        // SAFETY: `slot` is ours alone (fresh from the pool); the source range is inside
        // our slot and read-only to every reference from the floor up, and the part below
        // our floor is only written through us; the two slots do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.slot_base().add(off),
                self.inner().slot_ptr(slot).add(off),
                len,
            );
        }
        // SAFETY: `alloc_slot` took a reference on the pool for `slot`, so it stays live
        // whatever our old reference's release does.
        let fresh = unsafe { PktBuf::from_slot(self.pool, slot, self.off, self.len) };
        let meta = self.meta;
        // Drops our reference to the shared slot.
        *self = fresh;
        self.meta = meta;
        Ok(())
    }

    /// A second reference to this buffer's slot, for transmitting it while keeping it (a
    /// transport's zero-copy send; see the module docs). The new buffer has the same data
    /// window and may write in place below it (prepend headers into the headroom); from then
    /// on neither writes the data in place while the other exists. No copy, no allocation.
    pub fn share(&mut self) -> PktBuf {
        let rc = &self.inner().refcnt[self.slot as usize];
        let floor = if self.floor == EXCLUSIVE {
            rc.store(2, Ordering::Relaxed);
            self.off
        } else {
            rc.fetch_add(1, Ordering::Relaxed);
            // Only the write rights this buffer had can be passed on.
            self.floor.min(self.off)
        };
        self.floor = 0;
        PktBuf {
            pool: self.pool,
            slot: self.slot,
            off: self.off,
            len: self.len,
            floor,
            meta: self.meta,
        }
    }

    /// Place the data at `[off, off + len)` of the slot.
    pub fn set_data(&mut self, off: usize, len: usize) -> Result<(), NoRoom> {
        let cap = self.capacity();
        if off.checked_add(len).is_none_or(|end| end > cap) {
            return Err(NoRoom {
                need: off.saturating_add(len),
                have: cap,
            });
        }
        if self.floor != EXCLUSIVE
            && (off < self.off as usize || off + len > (self.off + self.len) as usize)
            && self.make_exclusive().is_err()
        {
            // A shared buffer's window may only shrink (other references may write what
            // lies outside it); growing it needs the copy, and there is no slot for one.
            return Err(NoRoom { need: len, have: 0 });
        }
        self.off = off as u32;
        self.len = len as u32;
        Ok(())
    }

    /// Grow the data by `n` bytes at the front (into the headroom) and return them.
    #[inline]
    pub fn prepend(&mut self, n: usize) -> Result<&mut [u8], NoRoom> {
        if n > self.off as usize {
            return Err(NoRoom {
                need: n,
                have: self.off as usize,
            });
        }
        if self.floor != EXCLUSIVE && self.off > self.floor && self.make_exclusive().is_err() {
            // The new bytes would overlap what other references read; no slot to copy to.
            return Err(NoRoom { need: n, have: 0 });
        }
        self.off -= n as u32;
        self.len += n as u32;
        // SAFETY: [off, off+n) is inside the slot (n <= the old offset); either the buffer is
        // exclusive or those bytes lie below its write floor (checked above), which no other
        // reference reads.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.slot_base().add(self.off as usize), n) })
    }

    /// Grow the data by `n` bytes at the end (into the tailroom) and return them.
    #[inline]
    pub fn append(&mut self, n: usize) -> Result<&mut [u8], NoRoom> {
        let have = self.tailroom();
        if n > have {
            return Err(NoRoom { need: n, have });
        }
        if self.floor != EXCLUSIVE && self.make_exclusive().is_err() {
            return Err(NoRoom { need: n, have: 0 });
        }
        let old = self.len as usize;
        self.len += n as u32;
        Ok(&mut self.data_mut()[old..])
    }

    /// Append a copy of `src`.
    #[inline]
    pub fn extend_from_slice(&mut self, src: &[u8]) -> Result<(), NoRoom> {
        self.append(src.len())?.copy_from_slice(src);
        Ok(())
    }

    /// Remove `n` bytes from the front (after parsing a header). Saturates at the length.
    #[inline]
    pub fn advance(&mut self, n: usize) {
        let n = n.min(self.len as usize) as u32;
        self.off += n;
        self.len -= n;
    }

    /// Keep only the first `len` bytes.
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len as u32);
    }

    /// Empty the buffer and restore the pool's default headroom (a shared buffer keeps its
    /// reference: writing it later copies, as above).
    #[inline]
    pub fn reset(&mut self) {
        self.off = self.inner().headroom() as u32;
        self.len = 0;
        self.meta = Meta::default();
    }

    /// Give up ownership without freeing the slot (a driver posting it to a device ring).
    /// Returns `(slot, data offset, len)`; take it back with [`Pool::from_raw`](super::Pool::from_raw),
    /// or, for a buffer that [`is_shared`](Self::is_shared), with
    /// [`Pool::from_raw_shared`](super::Pool::from_raw_shared) (it still holds one counted
    /// reference on the slot, not the slot itself).
    #[inline]
    pub fn into_raw(self) -> (u32, u32, u32) {
        let r = (self.slot, self.off, self.len);
        std::mem::forget(self);
        r
    }

    /// Freeze into a shared, cloneable, read-only view with no copy and no allocation.
    #[inline]
    pub fn freeze(self) -> PktBytes {
        let this = std::mem::ManuallyDrop::new(self);
        if this.floor == EXCLUSIVE {
            this.inner().refcnt[this.slot as usize].store(1, Ordering::Relaxed);
        }
        // A shared buffer's counted reference becomes the view's.
        PktBytes {
            pool: this.pool,
            slot: this.slot,
            // SAFETY: inside the slot, see data().
            ptr: unsafe { this.slot_base().add(this.off as usize) },
            len: this.len as usize,
        }
    }

    /// Hand the data to the application as `bytes::Bytes` with no copy. The slot returns to
    /// the pool when the last clone of the `Bytes` drops. This costs one small heap
    /// allocation (the shared header `Bytes::from_owner` needs); [`PktBuf::freeze`] costs none.
    pub fn into_bytes(self) -> bytes::Bytes {
        bytes::Bytes::from_owner(self.freeze())
    }
}

impl Drop for PktBuf {
    #[inline]
    fn drop(&mut self) {
        if self.floor != EXCLUSIVE {
            // SAFETY: we hold one counted reference on the slot and drop it here.
            unsafe { release_shared(self.pool, self.slot) };
            return;
        }
        // SAFETY: we own the slot and one reference on the pool; neither is used afterwards.
        unsafe { PoolInner::free_slot(self.pool, self.slot) }
    }
}

/// Drop one counted reference on `slot` (a shared `PktBuf` or a `PktBytes`); the last one
/// returns the slot to its pool.
///
/// # Safety
/// The caller holds one counted reference on `slot` of the live pool `pool` and gives it up.
#[inline]
unsafe fn release_shared(pool: NonNull<PoolInner>, slot: u32) {
    // SAFETY: our reference keeps the slot's reference on the pool, so the inner is live.
    let rc = unsafe { &pool.as_ref().refcnt[slot as usize] };
    // The sole reference (the common case: a received packet never cloned) frees without a
    // locked read-modify-write: no other reference exists, so none can be made concurrently,
    // and the Acquire load orders us after every earlier reference's Release decrement.
    if rc.load(Ordering::Acquire) == 1 || rc.fetch_sub(1, Ordering::Release) == 1 {
        std::sync::atomic::fence(Ordering::Acquire);
        // SAFETY: we were the last reference, so we own the slot and its pool reference.
        unsafe { PoolInner::free_slot(pool, slot) }
    }
}

impl Deref for PktBuf {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        self.data()
    }
}

impl AsRef<[u8]> for PktBuf {
    fn as_ref(&self) -> &[u8] {
        self.data()
    }
}

impl fmt::Debug for PktBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PktBuf")
            .field("slot", &self.slot)
            .field("off", &self.off)
            .field("len", &self.len)
            .field("shared", &(self.floor != EXCLUSIVE))
            .field("meta", &self.meta)
            .finish()
    }
}

/// A shared, read-only view of (part of) a frozen packet buffer. Cloning and slicing are O(1)
/// and allocate nothing (the reference count lives in the pool, per slot); the slot returns
/// to its pool when the last view drops. Converts into `bytes::Bytes` with no copy.
pub struct PktBytes {
    pool: NonNull<PoolInner>,
    slot: u32,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the slot is immutable while shared; the reference count is atomic.
unsafe impl Send for PktBytes {}
// SAFETY: as above.
unsafe impl Sync for PktBytes {}

impl PktBytes {
    #[inline]
    fn inner(&self) -> &PoolInner {
        // SAFETY: every view holds (a share of) the slot's reference on the pool.
        unsafe { self.pool.as_ref() }
    }

    /// A view of `range` of this view.
    ///
    /// # Panics
    /// When the range is out of bounds, as slicing does.
    pub fn slice(&self, range: impl RangeBounds<usize>) -> PktBytes {
        use std::ops::Bound::*;
        let start = match range.start_bound() {
            Included(&s) => s,
            Excluded(&s) => s + 1,
            Unbounded => 0,
        };
        let end = match range.end_bound() {
            Included(&e) => e + 1,
            Excluded(&e) => e,
            Unbounded => self.len,
        };
        assert!(
            start <= end && end <= self.len,
            "PktBytes::slice out of bounds"
        );
        let mut s = self.clone();
        // SAFETY: start <= len, inside the view.
        s.ptr = unsafe { s.ptr.add(start) };
        s.len = end - start;
        s
    }

    /// Index of the slot in its pool.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// True when fewer than `per_mille` thousandths of this view's pool are free (as seen
    /// from this thread: the shared free list and this core's cache). Used by the socket
    /// layer to stop lending packet buffers to the application when the pool runs low.
    #[inline]
    pub(crate) fn pool_below(&self, per_mille: u32) -> bool {
        let i = self.inner();
        (i.free_here() as u64) * 1000 < u64::from(i.nslots()) * u64::from(per_mille)
    }

    /// This view's pool: its slots free as [`pool_below`](Self::pool_below) sees them, and
    /// all its slots (for a message saying how low it is).
    pub(crate) fn pool_free(&self) -> (usize, u32) {
        let i = self.inner();
        (i.free_here(), i.nslots())
    }
}

impl Clone for PktBytes {
    #[inline]
    fn clone(&self) -> PktBytes {
        self.inner().refcnt[self.slot as usize].fetch_add(1, Ordering::Relaxed);
        PktBytes { ..*self }
    }
}

impl Drop for PktBytes {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: every view holds one counted reference on the slot; this one goes.
        unsafe { release_shared(self.pool, self.slot) }
    }
}

impl Deref for PktBytes {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr/len lie inside a slot that no one writes while it is shared.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl AsRef<[u8]> for PktBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl From<PktBytes> for bytes::Bytes {
    fn from(b: PktBytes) -> bytes::Bytes {
        bytes::Bytes::from_owner(b)
    }
}

impl fmt::Debug for PktBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PktBytes")
            .field("slot", &self.slot)
            .field("len", &self.len)
            .finish()
    }
}
