//! Memory: hugepage regions, packet-buffer pools, owned and shared packet buffers, and the
//! kinds of memory a payload can target.
//!
//! Contract:
//! - [`Region`] maps shareable memory (a memfd, so memif can pass it by fd), from 2 MiB
//!   hugepages when they can be had, else 4 KiB pages with the fallback logged and readable
//!   from [`Region::fallback`].
//! - [`Pool`] carves a region into fixed slots at start-up; [`Pool::alloc`] and dropping a
//!   buffer are O(1), lock-free, with no system call and no heap allocation (a per-core cache
//!   for threads holding a [`CoreSlot`], a shared lock-free ring otherwise). Exhaustion is
//!   [`PoolExhausted`], counted; pools never grow.
//! - [`PktBuf`] owns one slot, with headroom for headers and metadata; [`PktBuf::freeze`] makes
//!   a cloneable [`PktBytes`] with no copy and no allocation; both convert to `bytes::Bytes`
//!   with no copy.
//! - [`MemoryKind`]: host memory, host memory pinned for a GPU, and GPU device memory.
//!   Device memory is never handed out as `&[u8]`: packet pools only accept host-accessible
//!   regions, and device targets are addressed by handle and offset.
//! - [`gpu`]: GPU device memory as a receive target, through the CUDA driver loaded at run
//!   time (never needed to build): device buffers, pinned registration of host regions, and
//!   an asynchronous copy queue from packet buffers to device offsets.
#![allow(unsafe_code)]

mod core_slot;
pub mod gpu;
mod pktbuf;
mod pool;
mod region;

pub use core_slot::{current as current_core, CoreError, CoreSlot, MAX_CORES};
pub use pktbuf::{Meta, NoRoom, PktBuf, PktBytes};
pub use pool::{Pool, PoolConfig, PoolError, PoolExhausted, PoolStats};
pub use region::{
    Fallback, HugePages, PageSize, Region, RegionError, BASE_PAGE_SIZE, HUGE_PAGE_SIZE,
};

/// What kind of memory a region is. Regions are host memory, marked `HostPinned` while a GPU
/// has them registered ([`gpu::Gpu::pin_region`]); device memory is its own type
/// ([`gpu::GpuBuffer`]), addressed by (handle, offset) and never as a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemoryKind {
    /// Ordinary host memory.
    Host,
    /// Host memory registered with a GPU (page-locked, mapped for its copy engine / DMA).
    HostPinned {
        /// The GPU's ordinal.
        device: u32,
    },
    /// Memory on a GPU. Never dereferenced by the CPU.
    Device {
        /// The GPU's ordinal.
        device: u32,
    },
}

impl MemoryKind {
    /// Whether the CPU may read and write this memory through a pointer.
    pub fn host_accessible(self) -> bool {
        matches!(self, MemoryKind::Host | MemoryKind::HostPinned { .. })
    }
}
