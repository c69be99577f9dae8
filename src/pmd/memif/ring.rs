//! A memif descriptor ring in shared memory.
//!
//! Layout (DPDK's `memif_ring_t`, 64-byte cache lines):
//!
//! ```text
//! offset   0  u32 cookie (0x3E31F20)   4  u16 flags (bit 0: MASK_INT)   6  u16 head
//! offset  64  u16 tail
//! offset 128  desc[1 << log2_size]: { u16 flags, u16 region, u32 length, u32 offset, u32 metadata }
//! ```
//!
//! Ownership: the producer of a ring advances `head`, the consumer advances `tail`; both are
//! free-running u16 counters (index = counter & mask). On a client-to-server ring the client
//! produces filled descriptors and the server returns them; on a server-to-client ring the
//! client produces empty buffers at `head` and the server fills them and advances `tail`.
//! Descriptors are published with a Release store of the index and read after an Acquire load
//! of it. The peer is another process and is not trusted: descriptors are read once into a
//! local copy ([`Desc`]) with volatile loads and validated by the caller from that copy.

use std::sync::atomic::{AtomicU16, Ordering};

use super::msg::RING_COOKIE;

/// Size of the ring header before the descriptors.
pub const RING_HEADER: usize = 128;
/// Size of one descriptor.
pub const DESC_SIZE: usize = 16;
/// Descriptor flag: the frame continues in the next descriptor.
pub const DESC_FLAG_NEXT: u16 = 1;
/// Ring flag: the receiver polls; the sender must not signal the interrupt eventfd.
pub const RING_FLAG_MASK_INT: u16 = 1;

/// Bytes a ring of `1 << log2` descriptors occupies.
pub const fn ring_bytes(log2: u8) -> usize {
    RING_HEADER + DESC_SIZE * (1usize << log2)
}

/// A copy of one descriptor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Desc {
    /// Flags ([`DESC_FLAG_NEXT`]).
    pub flags: u16,
    /// Region index of the buffer.
    pub region: u16,
    /// Buffer length (capacity when posted empty, frame length when filled).
    pub length: u32,
    /// Byte offset of the buffer in its region.
    pub offset: u32,
    /// Metadata (unused).
    pub metadata: u32,
}

/// A handle on one ring in a mapped region. Copyable; the owner of the mapping keeps it alive
/// (see `Conn` in the parent module).
#[derive(Debug, Clone, Copy)]
pub struct Ring {
    base: *mut u8,
    mask: u16,
}

// SAFETY: a Ring is a pointer into a shared mapping whose lifetime the holder of the owning
// connection guarantees; all accesses go through atomics or volatile copies.
unsafe impl Send for Ring {}

impl Ring {
    /// A handle on the ring at `base`.
    ///
    /// # Safety
    /// `base` must be 8-byte aligned and point to [`ring_bytes`]`(log2)` bytes of a mapping
    /// that outlives every use of the returned handle; `log2` must be 1..=15.
    pub unsafe fn new(base: *mut u8, log2: u8) -> Ring {
        debug_assert!((1..=15).contains(&log2));
        debug_assert_eq!(base as usize % 8, 0);
        Ring {
            base,
            mask: ((1u32 << log2) - 1) as u16,
        }
    }

    /// Number of descriptors.
    #[inline]
    pub fn size(&self) -> u16 {
        self.mask.wrapping_add(1)
    }

    /// The ring's address (feature `testing`: where the harness finds it in a region).
    #[cfg(feature = "testing")]
    pub fn base(&self) -> *mut u8 {
        self.base
    }

    /// Mask for indices.
    #[inline]
    pub fn mask(&self) -> u16 {
        self.mask
    }

    #[inline]
    fn atomic(&self, off: usize) -> &AtomicU16 {
        // SAFETY: off is 4 (flags), 6 (head) or 64 (tail), inside the ring header; base is 8-aligned so
        // the u16 is 2-aligned; the mapping outlives self (constructor contract). Both
        // processes access these words only atomically.
        unsafe { AtomicU16::from_ptr(self.base.add(off).cast::<u16>()) }
    }

    /// Load `head`.
    #[inline]
    pub fn head(&self, order: Ordering) -> u16 {
        self.atomic(6).load(order)
    }

    /// Store `head`.
    #[inline]
    pub fn set_head(&self, v: u16, order: Ordering) {
        self.atomic(6).store(v, order)
    }

    /// Load `tail`.
    #[inline]
    pub fn tail(&self, order: Ordering) -> u16 {
        self.atomic(64).load(order)
    }

    /// Store `tail`.
    #[inline]
    pub fn set_tail(&self, v: u16, order: Ordering) {
        self.atomic(64).store(v, order)
    }

    /// The ring's cookie word.
    pub fn cookie(&self) -> u32 {
        // SAFETY: offset 0 is inside the ring header, 4-aligned; volatile because the peer
        // may write it.
        unsafe { std::ptr::read_volatile(self.base.cast::<u32>()) }
    }

    /// The ring's flags.
    #[inline]
    pub fn flags(&self) -> u16 {
        // SAFETY: offset 4 is inside the ring header, 2-aligned.
        unsafe { std::ptr::read_volatile(self.base.add(4).cast::<u16>()) }
    }

    /// Set the ring's flags.
    pub fn set_flags(&self, f: u16) {
        // SAFETY: offset 4 is inside the ring header, 2-aligned.
        unsafe { std::ptr::write_volatile(self.base.add(4).cast::<u16>(), f) }
    }

    /// Ask the producer to signal the ring's interrupt (`on`: clear `RING_FLAG_MASK_INT`) or
    /// not (set it), as the ring's consumer. A sequentially consistent store: a load of
    /// head or tail after it is ordered after the flag's change, so the consumer's re-check
    /// after arming sees a frame the producer published without seeing the flag clear.
    pub fn set_interrupt(&self, on: bool) {
        let f = if on { 0 } else { RING_FLAG_MASK_INT };
        self.atomic(4).store(f, Ordering::SeqCst)
    }

    /// Initialise a fresh ring we own: cookie, flags, head = tail = 0, descriptors zeroed.
    pub fn init(&self, flags: u16) {
        // SAFETY: the cookie word is inside the header; 4-aligned.
        unsafe { std::ptr::write_volatile(self.base.cast::<u32>(), RING_COOKIE) };
        self.set_flags(flags);
        self.set_head(0, Ordering::Relaxed);
        self.set_tail(0, Ordering::Relaxed);
        for i in 0..self.size() {
            self.write_desc(i, Desc::default());
        }
    }

    #[inline]
    fn desc_ptr(&self, idx: u16) -> *mut u32 {
        // SAFETY: (idx & mask) < size, so the descriptor lies inside the ring's bytes.
        unsafe {
            self.base
                .add(RING_HEADER + DESC_SIZE * (idx & self.mask) as usize)
                .cast::<u32>()
        }
    }

    /// Read descriptor `idx & mask` once.
    #[inline]
    pub fn read_desc(&self, idx: u16) -> Desc {
        let p = self.desc_ptr(idx);
        // SAFETY: p points at a 16-byte, 4-aligned descriptor inside the mapping; volatile
        // reads because the peer process may write it concurrently (a misbehaving peer can
        // only give us garbage values, which the caller validates).
        unsafe {
            let w0 = std::ptr::read_volatile(p);
            Desc {
                flags: w0 as u16,
                region: (w0 >> 16) as u16,
                length: std::ptr::read_volatile(p.add(1)),
                offset: std::ptr::read_volatile(p.add(2)),
                metadata: std::ptr::read_volatile(p.add(3)),
            }
        }
    }

    /// Write descriptor `idx & mask`.
    #[inline]
    pub fn write_desc(&self, idx: u16, d: Desc) {
        let p = self.desc_ptr(idx);
        // SAFETY: as in read_desc.
        unsafe {
            std::ptr::write_volatile(p, d.flags as u32 | ((d.region as u32) << 16));
            std::ptr::write_volatile(p.add(1), d.length);
            std::ptr::write_volatile(p.add(2), d.offset);
            std::ptr::write_volatile(p.add(3), d.metadata);
        }
    }

    /// Write only the length and flags of descriptor `idx & mask` (a server filling a buffer
    /// the client posted).
    #[inline]
    pub fn write_len_flags(&self, idx: u16, length: u32, flags: u16) {
        let p = self.desc_ptr(idx);
        // SAFETY: as in read_desc. The flags share a word with the region index, which is
        // rewritten with the value just read (the client owns it; we keep it unchanged).
        unsafe {
            let w0 = std::ptr::read_volatile(p);
            std::ptr::write_volatile(p, (w0 & 0xffff_0000) | flags as u32);
            std::ptr::write_volatile(p.add(1), length);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_memif_ring_t() {
        let mut mem = vec![0u64; ring_bytes(4) / 8];
        let base = mem.as_mut_ptr().cast::<u8>();
        // SAFETY: mem is 8-aligned, ring_bytes(4) long and outlives the ring.
        let r = unsafe { Ring::new(base, 4) };
        r.init(RING_FLAG_MASK_INT);
        r.set_head(0x0102, Ordering::Release);
        r.set_tail(0x0304, Ordering::Release);
        r.write_desc(
            17, // wraps to 1
            Desc {
                flags: 1,
                region: 2,
                length: 3,
                offset: 4,
                metadata: 5,
            },
        );
        // SAFETY: reading back the bytes of the buffer we own.
        let bytes = unsafe { std::slice::from_raw_parts(base, ring_bytes(4)) };
        assert_eq!(&bytes[0..8], &[0x20, 0x1f, 0xe3, 0x03, 1, 0, 2, 1]);
        assert_eq!(&bytes[64..66], &[4, 3]);
        assert_eq!(
            &bytes[144..160],
            &[1, 0, 2, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0]
        );
        assert_eq!(r.read_desc(1).length, 3);
        r.write_len_flags(1, 99, 0);
        let d = r.read_desc(1);
        assert_eq!((d.flags, d.region, d.length, d.offset), (0, 2, 99, 4));
        assert_eq!(r.size(), 16);
        drop(mem);
    }
}
