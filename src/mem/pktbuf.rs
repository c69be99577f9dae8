//! `PktBuf`: an owned packet buffer over one pool slot; `PktBytes`: a shared, read-only view
//! of a frozen buffer, and the hand-off to `bytes::Bytes`.

use std::fmt;
use std::ops::{Deref, RangeBounds};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use super::pool::PoolInner;

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
    /// Metadata (receive timestamp, port, queue).
    pub meta: Meta,
}

// SAFETY: a PktBuf owns its slot exclusively; the pool inner is Send + Sync.
unsafe impl Send for PktBuf {}
// SAFETY: &PktBuf only gives shared reads of the owned slot.
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
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in data(), and &mut self makes the access exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.slot_base().add(self.off as usize),
                self.len as usize,
            )
        }
    }

    /// The whole slot, writable (for a driver filling a received frame). Use `set_data` after.
    #[inline]
    pub fn slot_mut(&mut self) -> &mut [u8] {
        // SAFETY: the whole slot is owned by this buffer.
        unsafe { std::slice::from_raw_parts_mut(self.slot_base(), self.inner().slot_size()) }
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
        self.off -= n as u32;
        self.len += n as u32;
        Ok(&mut self.data_mut()[..n])
    }

    /// Grow the data by `n` bytes at the end (into the tailroom) and return them.
    #[inline]
    pub fn append(&mut self, n: usize) -> Result<&mut [u8], NoRoom> {
        let have = self.tailroom();
        if n > have {
            return Err(NoRoom { need: n, have });
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

    /// Empty the buffer and restore the pool's default headroom.
    #[inline]
    pub fn reset(&mut self) {
        self.off = self.inner().headroom() as u32;
        self.len = 0;
        self.meta = Meta::default();
    }

    /// Give up ownership without freeing the slot (a driver posting it to a device ring).
    /// Returns `(slot, data offset, len)`; take it back with [`Pool::from_raw`](super::Pool::from_raw).
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
        this.inner().refcnt[this.slot as usize].store(1, Ordering::Relaxed);
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
        // SAFETY: we own the slot and one reference on the pool; neither is used afterwards.
        unsafe { PoolInner::free_slot(self.pool, self.slot) }
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
        let rc = &self.inner().refcnt[self.slot as usize];
        // The sole view (the common case: a received packet never cloned) frees without a
        // locked read-modify-write: no other view exists, so none can be made concurrently,
        // and the Acquire load orders us after every earlier view's Release decrement.
        if rc.load(Ordering::Acquire) == 1 || rc.fetch_sub(1, Ordering::Release) == 1 {
            std::sync::atomic::fence(Ordering::Acquire);
            // SAFETY: we were the last view, so we own the slot and its pool reference.
            unsafe { PoolInner::free_slot(self.pool, self.slot) }
        }
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
