//! Not API (cargo feature `testing`): what the hostile memif peer harness
//! (tests/memif_hostile.rs, a separate process) needs to be that peer.
//!
//! - [`Memif::shared_memory`]: the memory of interface `id`'s live connection as this process
//!   maps it (a client: its own ring region and buffer pool; a server: the regions the client
//!   passed), with where its rings lie, so a peer can rewrite descriptors, ring indexes and
//!   frame bytes while its own stack and the process under test use them.
//! - [`PeerRegion`]: a memfd this process creates and maps, sealed or not, that it can pass
//!   as a region and later shrink.
//! - The control protocol's messages and socket calls, to drive a handshake by hand.
//!
//! Every accessor checks its offset against the region and its alignment, and reads or
//! writes with one atomic access: the bytes are shared with another process, which may write
//! them at any moment (that is what the memif data path is built to survive).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;

use super::{Conn, Memif};

pub use super::msg::{
    Msg, Name, ADD_RING_FLAG_C2S, MODE_ETHERNET, MSG_SIZE, NAME_LEN, REASON_LEN, RING_COOKIE,
    SECRET_LEN, VERSION,
};
pub use super::ring::{ring_bytes, DESC_FLAG_NEXT, DESC_SIZE, RING_HEADER};
pub use super::sys::{connect, eventfd, recv_msg, send_msg, Recv};

/// Where one ring lies: region index, byte offset in it, log2 of its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingAt {
    /// Region holding the ring.
    pub region: usize,
    /// Byte offset of the ring header in the region.
    pub offset: usize,
    /// log2 of the number of descriptors.
    pub log2: u8,
}

impl RingAt {
    /// Offset of the `head` index (u16).
    pub fn head(&self) -> usize {
        self.offset + 6
    }
    /// Offset of the `tail` index (u16).
    pub fn tail(&self) -> usize {
        self.offset + 64
    }
    /// Offset of descriptor `idx & mask` (16 bytes: u16 flags, u16 region, u32 length,
    /// u32 offset, u32 metadata).
    pub fn desc(&self, idx: u16) -> usize {
        let mask = ((1u32 << self.log2) - 1) as u16;
        self.offset + RING_HEADER + DESC_SIZE * (idx & mask) as usize
    }
    /// Number of descriptors.
    pub fn size(&self) -> u16 {
        ((1u32 << self.log2) as u16).max(1)
    }
}

/// Bounds- and alignment-checked atomic access to `len` bytes at `base`.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct Span {
    base: *mut u8,
    len: usize,
}

impl Span {
    fn at(&self, off: usize, size: usize) -> Option<*mut u8> {
        if off.checked_add(size)? > self.len || !off.is_multiple_of(size) {
            return None;
        }
        // SAFETY: off + size <= len, so the pointer stays inside the span.
        let p = unsafe { self.base.add(off) };
        (p as usize).is_multiple_of(size).then_some(p)
    }
    fn load_u8(&self, off: usize) -> Option<u8> {
        let p = self.at(off, 1)?;
        // SAFETY: p is inside a live shared mapping (the span's owner keeps it mapped); every
        // access of ours to it is atomic; the other process may write it at any time.
        Some(unsafe { AtomicU8::from_ptr(p) }.load(Ordering::Relaxed))
    }
    fn load_u16(&self, off: usize) -> Option<u16> {
        let p = self.at(off, 2)?.cast::<u16>();
        // SAFETY: as in load_u8; p is 2-aligned (checked by `at`).
        Some(unsafe { AtomicU16::from_ptr(p) }.load(Ordering::Acquire))
    }
    fn load_u32(&self, off: usize) -> Option<u32> {
        let p = self.at(off, 4)?.cast::<u32>();
        // SAFETY: as in load_u8; p is 4-aligned (checked by `at`).
        Some(unsafe { AtomicU32::from_ptr(p) }.load(Ordering::Relaxed))
    }
    fn store_u8(&self, off: usize, v: u8) -> bool {
        let Some(p) = self.at(off, 1) else {
            return false;
        };
        // SAFETY: as in load_u8.
        unsafe { AtomicU8::from_ptr(p) }.store(v, Ordering::Relaxed);
        true
    }
    fn store_u16(&self, off: usize, v: u16) -> bool {
        let Some(p) = self.at(off, 2) else {
            return false;
        };
        // SAFETY: as in load_u16.
        unsafe { AtomicU16::from_ptr(p.cast::<u16>()) }.store(v, Ordering::Release);
        true
    }
    fn store_u32(&self, off: usize, v: u32) -> bool {
        let Some(p) = self.at(off, 4) else {
            return false;
        };
        // SAFETY: as in load_u32.
        unsafe { AtomicU32::from_ptr(p.cast::<u32>()) }.store(v, Ordering::Relaxed);
        true
    }
    fn cas_u32(&self, off: usize, old: u32, new: u32) -> bool {
        let Some(p) = self.at(off, 4) else {
            return false;
        };
        // SAFETY: as in load_u32.
        unsafe { AtomicU32::from_ptr(p.cast::<u32>()) }
            .compare_exchange(old, new, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
    fn cas_u16(&self, off: usize, old: u16, new: u16) -> bool {
        let Some(p) = self.at(off, 2) else {
            return false;
        };
        // SAFETY: as in load_u16.
        unsafe { AtomicU16::from_ptr(p.cast::<u16>()) }
            .compare_exchange(old, new, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

/// Atomic, checked reads and writes of shared memory by (region, offset). Out of range or
/// misaligned: `None` / `false`.
pub trait SharedBytes {
    #[doc(hidden)]
    fn span(&self, region: usize) -> Option<Span>;

    /// Number of regions.
    fn regions(&self) -> usize;
    /// Length of region `r` (0 when there is none).
    fn region_len(&self, r: usize) -> usize {
        self.span(r).map_or(0, |s| s.len)
    }
    /// One byte.
    fn load_u8(&self, r: usize, off: usize) -> Option<u8> {
        self.span(r)?.load_u8(off)
    }
    /// A u16 (native order: memif is little-endian on the hosts it runs on).
    fn load_u16(&self, r: usize, off: usize) -> Option<u16> {
        self.span(r)?.load_u16(off)
    }
    /// A u32.
    fn load_u32(&self, r: usize, off: usize) -> Option<u32> {
        self.span(r)?.load_u32(off)
    }
    /// Write one byte.
    fn store_u8(&self, r: usize, off: usize, v: u8) -> bool {
        self.span(r).is_some_and(|s| s.store_u8(off, v))
    }
    /// Write a u16.
    fn store_u16(&self, r: usize, off: usize, v: u16) -> bool {
        self.span(r).is_some_and(|s| s.store_u16(off, v))
    }
    /// Write a u32.
    fn store_u32(&self, r: usize, off: usize, v: u32) -> bool {
        self.span(r).is_some_and(|s| s.store_u32(off, v))
    }
    /// Replace a u16 if it still holds `old`.
    fn cas_u16(&self, r: usize, off: usize, old: u16, new: u16) -> bool {
        self.span(r).is_some_and(|s| s.cas_u16(off, old, new))
    }
    /// Replace a u32 if it still holds `old`.
    fn cas_u32(&self, r: usize, off: usize, old: u32, new: u32) -> bool {
        self.span(r).is_some_and(|s| s.cas_u32(off, old, new))
    }
}

/// The memory of one live memif connection as this process maps it; keeps the mappings
/// alive while held (even after the connection went down).
pub struct SharedMemory {
    conn: Arc<Conn>,
}

impl std::fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemory")
            .field("regions", &self.conn.regions.len())
            .finish()
    }
}

impl SharedBytes for SharedMemory {
    fn span(&self, region: usize) -> Option<Span> {
        self.conn.regions.get(region).map(|r| Span {
            base: r.base,
            len: r.len,
        })
    }
    fn regions(&self) -> usize {
        self.conn.regions.len()
    }
}

impl SharedMemory {
    /// Queue pairs of the connection.
    pub fn queues(&self) -> usize {
        self.conn.queues.len()
    }

    /// Where queue pair `q`'s rings lie: (the ring this process transmits on, the ring it
    /// receives on).
    pub fn rings(&self, q: usize) -> Option<(RingAt, RingAt)> {
        let qr = self.conn.queues.get(q)?;
        let find = |base: *mut u8, log2: u8| -> Option<RingAt> {
            self.conn.regions.iter().enumerate().find_map(|(i, r)| {
                let off = (base as usize).checked_sub(r.base as usize)?;
                (off < r.len).then_some(RingAt {
                    region: i,
                    offset: off,
                    log2,
                })
            })
        };
        let log2 = |size: u16| {
            if size == 0 {
                16
            } else {
                size.trailing_zeros() as u8
            }
        };
        Some((
            find(qr.tx.base(), log2(qr.tx.size()))?,
            find(qr.rx.base(), log2(qr.rx.size()))?,
        ))
    }

    /// Whether the connection is still the interface's live one.
    pub fn alive(&self) -> bool {
        self.conn.alive.load(Ordering::Acquire)
    }
}

impl Memif {
    /// Not API (feature `testing`): the memory of interface `id`'s live connection.
    pub fn shared_memory(&self, id: u32) -> Option<SharedMemory> {
        let i = self.iface(id)?;
        let conn = i.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
        Some(SharedMemory { conn })
    }
}

/// A memfd of our own, mapped shared, to pass to a server as a region: sealed against
/// shrinking or not, and shrinkable while the server maps it.
pub struct PeerRegion {
    fd: OwnedFd,
    map: memmap2::MmapRaw,
}

impl std::fmt::Debug for PeerRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerRegion")
            .field("len", &self.map.len())
            .finish()
    }
}

impl PeerRegion {
    /// A zeroed memfd of `len` bytes, sealed with `F_SEAL_SHRINK` when `sealed`.
    pub fn new(len: usize, sealed: bool) -> std::io::Result<PeerRegion> {
        use rustix::fs::{MemfdFlags, SealFlags};
        let fd = rustix::fs::memfd_create(
            "bpx-hostile-peer",
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )?;
        rustix::fs::ftruncate(&fd, len as u64)?;
        if sealed {
            rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK)?;
        }
        let map = memmap2::MmapOptions::new().len(len).map_raw(&fd)?;
        Ok(PeerRegion { fd, map })
    }

    /// The memfd, to pass by SCM_RIGHTS.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Shrink the file to `len` bytes (fails on a sealed one). Touching our own mapping past
    /// `len` afterwards faults: the caller must not.
    pub fn truncate(&self, len: u64) -> std::io::Result<()> {
        Ok(rustix::fs::ftruncate(&self.fd, len)?)
    }
}

impl SharedBytes for PeerRegion {
    fn span(&self, region: usize) -> Option<Span> {
        (region == 0).then(|| Span {
            base: self.map.as_mut_ptr(),
            len: self.map.len(),
        })
    }
    fn regions(&self) -> usize {
        1
    }
}
