//! GPU memory as a receive target, through the CUDA driver API loaded at run time.
//!
//! Contract:
//! - CUDA is never needed to build or to run the rest of the stack: `libcuda.so.1` (the
//!   NVIDIA driver's user-space half) is opened with `dlopen` on first use, and the few
//!   driver entry points used here are resolved by name. Without it every call returns
//!   [`GpuError::DriverNotFound`], whose message says what to install.
//! - Device memory ([`GpuBuffer`]) is never exposed as `&[u8]`: it is addressed by
//!   (buffer, offset) and reached by the GPU's copy engine ([`GpuBuffer::write`],
//!   [`GpuBuffer::read`], [`CopyQueue`]). Dropping the last handle frees it.
//! - Host memory the copy engine reads from can be registered with the driver (page-locked
//!   and mapped for DMA): [`Gpu::pin_pool`] for a packet pool's region, [`Gpu::pin_region`]
//!   for a bare [`Region`]. A copy from registered memory is a true asynchronous DMA; a copy
//!   from ordinary memory still works (the driver stages it) and is counted apart
//!   ([`CopyStats::pageable_bytes`]).
//! - [`CopyQueue`] places packet payloads at their offsets in device memory: one
//!   asynchronous host-to-device copy per segment on the queue's own stream, an event
//!   recorded every `batch` copies, and each segment's packet buffer held until the event
//!   after it completed, then released. Its capacity is fixed at creation: no allocation, no
//!   lock and no system call per packet (the driver calls are user-space submissions); a
//!   full queue waits for its oldest batch. [`CopyQueue::finish`] waits for every copy.
//! - Everything here uses the device's primary context, made current on the calling thread
//!   by each call, so handles may move between threads.
//!
//! Payload reaches device memory only by the copy engine from host memory; a NIC writing
//! into device memory by DMA (DPDK external memory, header/payload split) is not built.
//!
//! The unsafe code is fenced in this module: the `dlopen`/`dlsym` of the driver, the calls
//! through its function pointers, and the `Send`/`Sync` of its handles.

mod buffer;
mod copy;
mod driver;

use std::ffi::{c_char, c_int, CStr};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{MemoryKind, Pool, Region};
use buffer::DeviceMem;
use driver::{
    driver, CuContext, CuDevice, CuDevicePtr, Driver, CUDA_ERROR_INVALID_DEVICE,
    CU_MEMHOSTREGISTER_PORTABLE,
};

pub use buffer::GpuBuffer;
pub use copy::{CopyQueue, CopyQueueConfig, CopyStats};
pub use driver::{device_count, driver_version};

/// Errors of the GPU target. Messages say what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// `libcuda.so.1` could not be loaded.
    #[error("CUDA driver not found (libcuda.so.1): install the NVIDIA driver ({detail})")]
    DriverNotFound {
        /// The loader's message (`dlerror`).
        detail: String,
    },
    /// The driver library lacks an entry point bypass needs.
    #[error("the CUDA driver lacks {name}: update the NVIDIA driver (CUDA 11 or later)")]
    MissingSymbol {
        /// The symbol.
        name: &'static str,
    },
    /// The driver loaded but sees no device of that ordinal.
    #[error(
        "no CUDA device {ordinal}: the driver sees {count} (check nvidia-smi and CUDA_VISIBLE_DEVICES)"
    )]
    NoDevice {
        /// The ordinal asked for.
        ordinal: u32,
        /// Devices the driver sees.
        count: u32,
    },
    /// A driver call failed.
    #[error("{call} failed: {name}: {message}")]
    Driver {
        /// The driver function.
        call: &'static str,
        /// Its `CUresult`.
        code: i32,
        /// The result's name (`CUDA_ERROR_...`).
        name: &'static str,
        /// The driver's description.
        message: &'static str,
    },
    /// A copy would reach outside a device buffer.
    #[error("{len} bytes at offset {offset} do not fit the {capacity}-byte device buffer")]
    OutOfRange {
        /// Offset in the buffer.
        offset: u64,
        /// Bytes to copy.
        len: u64,
        /// The buffer's length.
        capacity: u64,
    },
    /// A device buffer of zero bytes was asked for.
    #[error("a device buffer of 0 bytes was requested")]
    Empty,
}

struct GpuInner {
    drv: &'static Driver,
    dev: CuDevice,
    ctx: CuContext,
    ordinal: u32,
    name: String,
    /// Host ranges registered with the driver (start, end), for counting pinned copies.
    pinned: Mutex<Vec<(usize, usize)>>,
    /// Bumped on every change of `pinned`, so copy queues refresh their snapshot.
    pinned_gen: AtomicU64,
}

// SAFETY: the driver API is thread-safe; a primary context handle may be made current on any
// thread, and every call here makes it current first.
unsafe impl Send for GpuInner {}
// SAFETY: as above; the only interior mutability is behind a Mutex and an atomic.
unsafe impl Sync for GpuInner {}

impl Drop for GpuInner {
    fn drop(&mut self) {
        // SAFETY: we retained the primary context once in Gpu::open; this releases it.
        unsafe { (self.drv.primary_ctx_release)(self.dev) };
    }
}

/// One CUDA device, through its primary context. Cheap to clone (a shared handle).
#[derive(Clone)]
pub struct Gpu {
    inner: Arc<GpuInner>,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gpu")
            .field("ordinal", &self.inner.ordinal)
            .field("name", &self.inner.name)
            .finish()
    }
}

impl PartialEq for Gpu {
    fn eq(&self, other: &Gpu) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) || self.inner.dev == other.inner.dev
    }
}

impl Gpu {
    /// Open device `ordinal` (loading the driver on first use) and retain its primary context.
    pub fn open(ordinal: u32) -> Result<Gpu, GpuError> {
        let drv = driver()?;
        let count = device_count()?;
        if ordinal >= count {
            return Err(GpuError::NoDevice { ordinal, count });
        }
        let mut dev: CuDevice = 0;
        // SAFETY: dev is a valid out-pointer; the ordinal is below the count.
        let rc = unsafe { (drv.device_get)(&mut dev, ordinal as c_int) };
        if rc == CUDA_ERROR_INVALID_DEVICE {
            return Err(GpuError::NoDevice { ordinal, count });
        }
        drv.check("cuDeviceGet", rc)?;
        let mut buf = [0 as c_char; 128];
        // SAFETY: buf holds 128 bytes; the driver writes a NUL-terminated name into it.
        drv.check("cuDeviceGetName", unsafe {
            (drv.device_get_name)(buf.as_mut_ptr(), buf.len() as c_int, dev)
        })?;
        // SAFETY: NUL-terminated by the driver (and the buffer ends in a zero we never wrote).
        let name = unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let mut ctx: CuContext = std::ptr::null_mut();
        // SAFETY: ctx is a valid out-pointer; dev came from cuDeviceGet.
        drv.check("cuDevicePrimaryCtxRetain", unsafe {
            (drv.primary_ctx_retain)(&mut ctx, dev)
        })?;
        Ok(Gpu {
            inner: Arc::new(GpuInner {
                drv,
                dev,
                ctx,
                ordinal,
                name,
                pinned: Mutex::new(Vec::new()),
                pinned_gen: AtomicU64::new(0),
            }),
        })
    }

    /// The device's ordinal.
    pub fn ordinal(&self) -> u32 {
        self.inner.ordinal
    }

    /// The device's name (e.g. "NVIDIA H100 80GB HBM3").
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    fn drv(&self) -> &'static Driver {
        self.inner.drv
    }

    /// Make the primary context current on this thread. Done on every call (a thread-local
    /// store in the driver, tens of nanoseconds) rather than cached, so that other CUDA code
    /// on the thread switching contexts cannot make us use the wrong one.
    fn bind(&self) -> Result<(), GpuError> {
        // SAFETY: ctx is the primary context we retained and still hold.
        let rc = unsafe { (self.drv().ctx_set_current)(self.inner.ctx) };
        self.drv().check("cuCtxSetCurrent", rc)
    }

    /// Allocate `len` bytes of device memory (contents undefined).
    pub fn alloc(&self, len: usize) -> Result<GpuBuffer, GpuError> {
        if len == 0 {
            return Err(GpuError::Empty);
        }
        self.bind()?;
        let mut ptr: CuDevicePtr = 0;
        // SAFETY: ptr is a valid out-pointer; the context is current.
        self.drv().check("cuMemAlloc_v2", unsafe {
            (self.drv().mem_alloc)(&mut ptr, len)
        })?;
        Ok(GpuBuffer {
            mem: Arc::new(DeviceMem {
                gpu: self.clone(),
                ptr,
                len,
            }),
        })
    }

    fn add_pinned(&self, start: usize, len: usize) {
        let mut p = self.inner.pinned.lock().unwrap_or_else(|e| e.into_inner());
        p.push((start, start + len));
        self.inner.pinned_gen.fetch_add(1, Ordering::Release);
    }

    fn remove_pinned(&self, start: usize) {
        let mut p = self.inner.pinned.lock().unwrap_or_else(|e| e.into_inner());
        p.retain(|&(s, _)| s != start);
        self.inner.pinned_gen.fetch_add(1, Ordering::Release);
    }

    /// Register `len` bytes at `ptr` with the driver (page-locked, mapped for DMA).
    ///
    /// # Safety
    /// `ptr..ptr+len` must be a live host mapping that stays mapped until
    /// [`unregister`](Self::unregister) is called on it.
    unsafe fn register(&self, ptr: *mut u8, len: usize) -> Result<(), GpuError> {
        self.bind()?;
        // SAFETY: the caller guarantees the range is mapped for as long as it is registered.
        let rc =
            unsafe { (self.drv().mem_host_register)(ptr.cast(), len, CU_MEMHOSTREGISTER_PORTABLE) };
        self.drv().check("cuMemHostRegister_v2", rc)?;
        self.add_pinned(ptr as usize, len);
        Ok(())
    }

    fn unregister(&self, ptr: *mut u8) {
        self.remove_pinned(ptr as usize);
        if self.bind().is_ok() {
            // SAFETY: ptr is the start of a range registered by `register`.
            unsafe { (self.drv().mem_host_unregister)(ptr.cast()) };
        }
    }

    /// Register a packet pool's region with the driver, so that copies from its buffers are
    /// DMA by the copy engine. The registration holds a handle on the pool (its region stays
    /// mapped) and ends when the returned value drops.
    pub fn pin_pool(&self, pool: &Pool) -> Result<PinnedPool, GpuError> {
        let r = pool.region();
        let (ptr, len) = (r.as_ptr(), r.len());
        // SAFETY: the PinnedPool keeps a Pool handle, and with it the region's mapping, until
        // it unregisters the range in Drop.
        unsafe { self.register(ptr, len)? };
        Ok(PinnedPool {
            pool: pool.clone(),
            gpu: self.clone(),
            ptr,
            len,
        })
    }

    /// Register a region with the driver and mark it [`MemoryKind::HostPinned`]. The
    /// registration ends (and the mark goes) with [`PinnedRegion::unpin`] or the drop.
    pub fn pin_region(&self, mut region: Region) -> Result<PinnedRegion, GpuError> {
        // SAFETY: the PinnedRegion owns the region, so the mapping outlives the registration.
        unsafe { self.register(region.as_ptr(), region.len())? };
        region.set_kind(MemoryKind::HostPinned {
            device: self.ordinal(),
        });
        Ok(PinnedRegion {
            region: Some(region),
            gpu: self.clone(),
        })
    }

    /// A copy queue on a new stream of this device (see [`CopyQueue`]).
    pub fn copy_queue(&self, cfg: CopyQueueConfig) -> Result<CopyQueue, GpuError> {
        CopyQueue::new(self, cfg)
    }
}

/// A packet pool's region registered with a GPU. See [`Gpu::pin_pool`].
///
/// Dropping it makes the memory pageable again: drop it only once the copy queues reading
/// from the pool finished (sockets finish theirs before they hand a message out).
pub struct PinnedPool {
    pool: Pool,
    gpu: Gpu,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the pointer is only used to unregister the range; Pool and Gpu are Send + Sync.
unsafe impl Send for PinnedPool {}
// SAFETY: as above.
unsafe impl Sync for PinnedPool {}

impl fmt::Debug for PinnedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedPool")
            .field("pool", &self.pool.name())
            .field("gpu", &self.gpu.ordinal())
            .field("bytes", &self.len)
            .finish()
    }
}

impl PinnedPool {
    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
    /// Bytes registered.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Never true: a registration covers a whole, non-empty region.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl Drop for PinnedPool {
    fn drop(&mut self) {
        self.gpu.unregister(self.ptr);
    }
}

/// A region registered with a GPU and marked [`MemoryKind::HostPinned`]. See
/// [`Gpu::pin_region`].
pub struct PinnedRegion {
    region: Option<Region>,
    gpu: Gpu,
}

impl fmt::Debug for PinnedRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedRegion")
            .field("region", &self.region)
            .field("gpu", &self.gpu.ordinal())
            .finish()
    }
}

impl PinnedRegion {
    /// The region.
    pub fn region(&self) -> &Region {
        self.region.as_ref().expect("present until unpin or drop")
    }

    /// End the registration and give the region back, marked [`MemoryKind::Host`] again.
    pub fn unpin(mut self) -> Region {
        let mut r = self.region.take().expect("present until unpin or drop");
        self.gpu.unregister(r.as_ptr());
        r.set_kind(MemoryKind::Host);
        r
    }
}

impl Drop for PinnedRegion {
    fn drop(&mut self) {
        if let Some(r) = &self.region {
            self.gpu.unregister(r.as_ptr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::HugePages;

    /// The GPU, or None (with the reason printed) where this machine has no driver or device.
    pub(super) fn gpu_or_skip(test: &str) -> Option<Gpu> {
        match Gpu::open(0) {
            Ok(g) => Some(g),
            Err(e @ (GpuError::DriverNotFound { .. } | GpuError::NoDevice { .. })) => {
                if std::env::var_os("BYPASS_REQUIRE_GPU").is_some() {
                    panic!("{test}: BYPASS_REQUIRE_GPU is set but: {e}");
                }
                crate::test_harness::skip(&format!("no CUDA driver or device here ({e})"));
                None
            }
            Err(e) => panic!("{test}: the CUDA driver is present but failed: {e}"),
        }
    }

    #[test]
    fn pin_region_marks_kind() {
        let Some(g) = gpu_or_skip("pin_region_marks_kind") else {
            return;
        };
        let r = Region::new("gpu-region", 2 << 20, HugePages::Prefer).unwrap();
        let p = g.pin_region(r).unwrap();
        assert_eq!(p.region().kind(), MemoryKind::HostPinned { device: 0 });
        let r = p.unpin();
        assert_eq!(r.kind(), MemoryKind::Host);
    }
}
