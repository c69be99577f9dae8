//! `Region`: one contiguous mapping of shareable memory, from 2 MiB hugepages when they can be
//! had, else from 4 KiB pages with the fallback reported.

#![forbid(unsafe_code)]

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{MemfdFlags, SealFlags};

use super::MemoryKind;

/// Size of the hugepages this layer asks for.
pub const HUGE_PAGE_SIZE: usize = 2 << 20;
/// Size of a base page on the platforms bypass runs on.
pub const BASE_PAGE_SIZE: usize = 4096;

/// Whether a region must, may or must not come from hugepages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HugePages {
    /// Use 2 MiB hugepages when the kernel can give them, else fall back to 4 KiB pages and
    /// report it (a `tracing` warning and [`Region::fallback`]).
    #[default]
    Prefer,
    /// Fail with [`RegionError::NoHugePages`] when hugepages cannot be had.
    Require,
    /// Use 4 KiB pages (tests, or memory that is not on the data path).
    Never,
}

/// How the pages under a region were obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageSize {
    /// 2 MiB hugepages (memfd with `MFD_HUGETLB`).
    Huge2M,
    /// 4 KiB base pages.
    Base4K,
    /// Mapped from a file descriptor another process passed us; page size as the owner chose.
    Foreign,
}

/// Why a region asked to prefer hugepages got base pages instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// The errno text of the call that failed (`memfd_create`, `ftruncate` or `mmap`).
    pub reason: String,
}

/// Errors creating or mapping a region.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// A zero-sized region was asked for.
    #[error("a region of 0 bytes was requested")]
    Empty,
    /// Hugepages were required but none (or not enough) are reserved.
    #[error(
        "{size} bytes of 2 MiB hugepages were required but could not be had ({reason}); reserve some: \
         `echo 256 > /proc/sys/vm/nr_hugepages` (as root), or allow the 4 KiB fallback"
    )]
    NoHugePages {
        /// Bytes requested (rounded to hugepages).
        size: usize,
        /// The failing call and its errno text.
        reason: String,
    },
    /// A system call failed.
    #[error("{call} failed: {source}")]
    Os {
        /// The call that failed.
        call: &'static str,
        /// Its errno.
        #[source]
        source: std::io::Error,
    },
}

/// One mapping of shareable memory.
///
/// Backed by a memfd so the mapping can be handed to another process by its file descriptor
/// (memif does this). The memory is host memory; [`Region::kind`] says whether a GPU has it
/// pinned. A region never hands out `&[u8]` over its memory: the pool that carves it does,
/// one owned slot at a time.
pub struct Region {
    /// The mapping (unmapped on drop). `MmapRaw` hands out only its address, never a slice.
    map: MmapRaw,
    fd: OwnedFd,
    pages: PageSize,
    locked: bool,
    /// The file is sealed against shrinking (ours: also growing and further seals).
    sealed: bool,
    kind: MemoryKind,
    fallback: Option<Fallback>,
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Region")
            .field("ptr", &self.map.as_ptr())
            .field("len", &self.map.len())
            .field("fd", &self.fd.as_raw_fd())
            .field("pages", &self.pages)
            .field("locked", &self.locked)
            .field("sealed", &self.sealed)
            .field("kind", &self.kind)
            .field("fallback", &self.fallback)
            .finish()
    }
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// A memfd that can be sealed. Kernels before 4.16 refuse seals on hugetlb memfds
/// (`EINVAL` for `MFD_HUGETLB | MFD_ALLOW_SEALING`): such a region is made unsealed.
fn memfd(name: &str, huge: bool) -> Result<OwnedFd, std::io::Error> {
    let name = name.replace('\0', "_");
    let mut flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    if huge {
        flags |= MemfdFlags::HUGETLB | MemfdFlags::HUGE_2MB;
    }
    match rustix::fs::memfd_create(&name, flags) {
        Err(rustix::io::Errno::INVAL) if huge => Ok(rustix::fs::memfd_create(
            &name,
            flags - MemfdFlags::ALLOW_SEALING,
        )?),
        r => Ok(r?),
    }
}

/// Seal a sized memfd against shrinking and growing, and against further seals: a process we
/// share it with (a memif peer) can then neither truncate it under our mapping (a fault on
/// our next access) nor change its seals. Returns whether it worked.
fn seal(fd: BorrowedFd<'_>) -> bool {
    match rustix::fs::fcntl_add_seals(fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(error = %e, "memfd cannot be sealed; region shared unsealed");
            false
        }
    }
}

/// Map `len` bytes of `fd` shared, read-write, pre-faulted when `populate`.
fn map_shared(fd: BorrowedFd<'_>, len: usize, populate: bool) -> std::io::Result<MmapRaw> {
    let mut opts = MmapOptions::new();
    opts.len(len);
    if populate {
        opts.populate();
    }
    opts.map_raw(fd.as_raw_fd())
}

fn try_huge(name: &str, len: usize) -> Result<(OwnedFd, MmapRaw, bool), String> {
    let fd = memfd(name, true).map_err(|e| format!("memfd_create(MFD_HUGETLB): {e}"))?;
    rustix::fs::ftruncate(&fd, len as u64).map_err(|e| format!("ftruncate: {e}"))?;
    let sealed = seal(fd.as_fd());
    // Hugetlb reserves the pages at mmap time, so a shortage fails here rather than as a
    // SIGBUS on first touch. MAP_POPULATE then faults them in so HugePages_Free reflects it.
    let map = map_shared(fd.as_fd(), len, true).map_err(|e| format!("mmap(hugetlb): {e}"))?;
    Ok((fd, map, sealed))
}

impl Region {
    /// Map a new region of at least `size` bytes (rounded up to the page size used).
    ///
    /// `name` shows in `/proc/PID/maps` and helps an operator find the memory. With
    /// [`HugePages::Prefer`], a shortage of hugepages gives 4 KiB pages, a `tracing` warning
    /// and [`Region::fallback`] set; it is never silent.
    pub fn new(name: &str, size: usize, huge: HugePages) -> Result<Region, RegionError> {
        if size == 0 {
            return Err(RegionError::Empty);
        }
        let mut fallback = None;
        if huge != HugePages::Never {
            let len = round_up(size, HUGE_PAGE_SIZE);
            match try_huge(name, len) {
                Ok((fd, map, sealed)) => {
                    return Ok(Self::finish(map, fd, PageSize::Huge2M, sealed, None))
                }
                Err(reason) if huge == HugePages::Require => {
                    return Err(RegionError::NoHugePages { size: len, reason })
                }
                Err(reason) => {
                    tracing::warn!(
                        region = name,
                        bytes = len,
                        %reason,
                        "hugepages unavailable, falling back to 4 KiB pages \
                         (reserve some: echo 256 > /proc/sys/vm/nr_hugepages)"
                    );
                    fallback = Some(Fallback { reason });
                }
            }
        }
        let len = round_up(size, BASE_PAGE_SIZE);
        let fd = memfd(name, false).map_err(|source| RegionError::Os {
            call: "memfd_create",
            source,
        })?;
        rustix::fs::ftruncate(&fd, len as u64).map_err(|e| RegionError::Os {
            call: "ftruncate",
            source: e.into(),
        })?;
        let sealed = seal(fd.as_fd());
        let map = map_shared(fd.as_fd(), len, true).map_err(|source| RegionError::Os {
            call: "mmap",
            source,
        })?;
        Ok(Self::finish(map, fd, PageSize::Base4K, sealed, fallback))
    }

    /// Map `len` bytes of a region another process shared with us by `fd` (for example a
    /// memif peer's ADD_REGION). The region keeps the descriptor open.
    ///
    /// Neither `mlock`ed nor populated: `len` is the other process's choice (a sparse
    /// 64 GiB memfd would otherwise be faulted in whole, under `CAP_IPC_LOCK`, and charged
    /// to our `RLIMIT_MEMLOCK`), and the memory is its to keep resident: the owner locks
    /// its own mapping (our own regions are locked, DPDK's are hugepages, never swapped),
    /// and the pages are shared, so our mapping sees them resident too. Pages are faulted
    /// in as we touch them (the memif server touches only what descriptors point at).
    pub fn from_fd(fd: OwnedFd, len: usize) -> Result<Region, RegionError> {
        if len == 0 {
            return Err(RegionError::Empty);
        }
        let map = map_shared(fd.as_fd(), len, false).map_err(|source| RegionError::Os {
            call: "mmap",
            source,
        })?;
        let sealed = rustix::fs::fcntl_get_seals(&fd).is_ok_and(|s| s.contains(SealFlags::SHRINK));
        // Not locked: see above.
        Ok(Region {
            map,
            fd,
            pages: PageSize::Foreign,
            locked: false,
            sealed,
            kind: MemoryKind::Host,
            fallback: None,
        })
    }

    fn finish(
        map: MmapRaw,
        fd: OwnedFd,
        pages: PageSize,
        sealed: bool,
        fallback: Option<Fallback>,
    ) -> Region {
        // Lock the pages where allowed (RLIMIT_MEMLOCK, CAP_IPC_LOCK): a packet buffer must
        // never be swapped out. Hugetlb pages are never swapped anyway.
        let locked = map.lock().is_ok();
        if !locked && pages != PageSize::Huge2M {
            tracing::debug!(bytes = map.len(), "mlock refused; region may be swapped");
        }
        Region {
            map,
            fd,
            pages,
            locked,
            sealed,
            kind: MemoryKind::Host,
            fallback,
        }
    }

    /// Start of the mapping. Dereferencing it is the caller's business (see `Pool`).
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Length of the mapping in bytes (a multiple of the page size).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Always false: regions are never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The memfd behind the mapping, to share the region with another process.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Which pages back the region.
    pub fn pages(&self) -> PageSize {
        self.pages
    }

    /// True when the region is on 2 MiB hugepages.
    pub fn is_hugepage(&self) -> bool {
        self.pages == PageSize::Huge2M
    }

    /// True when `mlock` succeeded.
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// True when the file behind the region is sealed against shrinking (`F_SEAL_SHRINK`),
    /// so no process it is shared with can truncate it under a mapping. Regions made by
    /// [`Region::new`] are (with `F_SEAL_GROW` and `F_SEAL_SEAL` too) wherever the kernel
    /// supports seals on their kind of memfd (hugetlb memfds: Linux 4.16 on); a region
    /// from [`Region::from_fd`] is as its owner left it.
    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// Why hugepages were preferred but not used, if they were not.
    pub fn fallback(&self) -> Option<&Fallback> {
        self.fallback.as_ref()
    }

    /// The kind of memory.
    pub fn kind(&self) -> MemoryKind {
        self.kind
    }

    /// Mark the region as pinned for DMA by a GPU (done by the GPU target once it has
    /// registered the memory with the driver).
    pub fn set_kind(&mut self, kind: MemoryKind) {
        self.kind = kind;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_sealed(r: &Region) {
        assert!(r.is_sealed(), "{r:?}");
        let seals = rustix::fs::fcntl_get_seals(r.fd()).unwrap();
        assert!(seals.contains(SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL));
        assert_eq!(
            rustix::fs::ftruncate(r.fd(), 0),
            Err(rustix::io::Errno::PERM)
        );
        let big = r.len() as u64 * 2;
        assert_eq!(
            rustix::fs::ftruncate(r.fd(), big),
            Err(rustix::io::Errno::PERM)
        );
    }

    #[test]
    fn new_regions_are_sealed_against_resizing() {
        assert_sealed(&Region::new("bpx-unit-sealed", 4096, HugePages::Never).unwrap());
    }

    #[test]
    fn hugepage_regions_are_sealed_too() {
        // Only where hugepages are reserved (the Prefer fallback is covered above).
        match Region::new("bpx-unit-sealed-huge", HUGE_PAGE_SIZE, HugePages::Require) {
            Ok(r) => assert_sealed(&r),
            Err(e) => eprintln!("skipped: {e}"),
        }
    }

    #[test]
    fn a_foreign_region_reports_its_owners_seals() {
        let own = Region::new("bpx-unit-owner", 4096, HugePages::Never).unwrap();
        let dup = own.fd().try_clone_to_owned().unwrap();
        assert!(Region::from_fd(dup, 4096).unwrap().is_sealed());
        let bare = rustix::fs::memfd_create("bpx-unit-bare", MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&bare, 4096).unwrap();
        assert!(!Region::from_fd(bare, 4096).unwrap().is_sealed());
    }
}
