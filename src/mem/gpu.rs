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
//! The unsafe code is fenced in this file: the `dlopen`/`dlsym` of the driver, the calls
//! through its function pointers, and the `Send`/`Sync` of its handles.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::{MemoryKind, PktBytes, Pool, Region};

// ---- the driver API, as the C header spells it ------------------------------------------

type CuResult = c_int;
type CuDevice = c_int;
type CuContext = *mut c_void;
type CuStream = *mut c_void;
type CuEvent = *mut c_void;
type CuDevicePtr = u64;

const CUDA_SUCCESS: CuResult = 0;
const CUDA_ERROR_NO_DEVICE: CuResult = 100;
const CUDA_ERROR_INVALID_DEVICE: CuResult = 101;
const CUDA_ERROR_NOT_READY: CuResult = 600;
const CU_STREAM_NON_BLOCKING: c_uint = 0x1;
const CU_EVENT_DISABLE_TIMING: c_uint = 0x2;
const CU_MEMHOSTREGISTER_PORTABLE: c_uint = 0x1;

/// Declares [`Driver`] (one function pointer per entry point, with its C prototype from
/// cuda.h) and `resolve`, which looks each up by name (the first name found of those listed:
/// the `_v2` names are the ones cuda.h maps the plain names to).
macro_rules! driver_api {
    ($( $field:ident : fn($($arg:ty),*) = $($name:literal)|+ ; )*) => {
        /// The driver entry points bypass uses, resolved from `libcuda.so.1`.
        struct Driver {
            $( $field: unsafe extern "C" fn($($arg),*) -> CuResult, )*
        }

        /// Resolve every entry point from the handle `h`.
        ///
        /// # Safety
        /// `h` must be a live `dlopen` handle of the CUDA driver, never closed afterwards.
        unsafe fn resolve(h: *mut c_void) -> Result<Driver, GpuError> {
            Ok(Driver {
                $( $field: {
                    let p = lookup(h, &[$(concat!($name, "\0")),+])?;
                    // SAFETY: p is the driver's function of that name, whose prototype in
                    // cuda.h is the field's type; the library is never unloaded.
                    unsafe {
                        std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($arg),*) -> CuResult>(p)
                    }
                }, )*
            })
        }
    };
}

driver_api! {
    init: fn(c_uint) = "cuInit";
    get_error_name: fn(CuResult, *mut *const c_char) = "cuGetErrorName";
    get_error_string: fn(CuResult, *mut *const c_char) = "cuGetErrorString";
    driver_get_version: fn(*mut c_int) = "cuDriverGetVersion";
    device_get_count: fn(*mut c_int) = "cuDeviceGetCount";
    device_get: fn(*mut CuDevice, c_int) = "cuDeviceGet";
    device_get_name: fn(*mut c_char, c_int, CuDevice) = "cuDeviceGetName";
    primary_ctx_retain: fn(*mut CuContext, CuDevice) = "cuDevicePrimaryCtxRetain";
    primary_ctx_release: fn(CuDevice) = "cuDevicePrimaryCtxRelease_v2" | "cuDevicePrimaryCtxRelease";
    ctx_set_current: fn(CuContext) = "cuCtxSetCurrent";
    mem_alloc: fn(*mut CuDevicePtr, usize) = "cuMemAlloc_v2";
    mem_free: fn(CuDevicePtr) = "cuMemFree_v2";
    mem_host_register: fn(*mut c_void, usize, c_uint) = "cuMemHostRegister_v2" | "cuMemHostRegister";
    mem_host_unregister: fn(*mut c_void) = "cuMemHostUnregister";
    memcpy_htod_async: fn(CuDevicePtr, *const c_void, usize, CuStream) = "cuMemcpyHtoDAsync_v2";
    memcpy_dtoh: fn(*mut c_void, CuDevicePtr, usize) = "cuMemcpyDtoH_v2";
    memset_d8: fn(CuDevicePtr, u8, usize) = "cuMemsetD8_v2";
    stream_create: fn(*mut CuStream, c_uint) = "cuStreamCreate";
    stream_destroy: fn(CuStream) = "cuStreamDestroy_v2" | "cuStreamDestroy";
    stream_synchronize: fn(CuStream) = "cuStreamSynchronize";
    event_create: fn(*mut CuEvent, c_uint) = "cuEventCreate";
    event_destroy: fn(CuEvent) = "cuEventDestroy_v2" | "cuEventDestroy";
    event_record: fn(CuEvent, CuStream) = "cuEventRecord";
    event_query: fn(CuEvent) = "cuEventQuery";
    event_synchronize: fn(CuEvent) = "cuEventSynchronize";
}

/// The first of `names` (NUL-terminated) the library `h` defines.
fn lookup(h: *mut c_void, names: &[&'static str]) -> Result<*mut c_void, GpuError> {
    for n in names {
        // SAFETY: h is a live handle; n is NUL-terminated (driver_api! appends the NUL).
        let p = unsafe { libc::dlsym(h, n.as_ptr().cast()) };
        if !p.is_null() {
            return Ok(p);
        }
    }
    Err(GpuError::MissingSymbol {
        name: names[0].trim_end_matches('\0'),
    })
}

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

static DRIVER: OnceLock<Result<Driver, GpuError>> = OnceLock::new();

fn driver() -> Result<&'static Driver, GpuError> {
    DRIVER.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn dlerror_text() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl* call
    // on this thread; it is copied at once.
    unsafe {
        let e = libc::dlerror();
        if e.is_null() {
            "unknown loader error".to_owned()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

fn load() -> Result<Driver, GpuError> {
    // SAFETY: dlopen with a constant NUL-terminated name. The handle is never closed, so the
    // function pointers and the driver's static strings stay valid for the process.
    let h = unsafe { libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if h.is_null() {
        return Err(GpuError::DriverNotFound {
            detail: dlerror_text(),
        });
    }
    // SAFETY: h is the driver's live handle and is never closed.
    let d = unsafe { resolve(h)? };
    // SAFETY: cuInit(0) is the documented first call; flags must be 0.
    let rc = unsafe { (d.init)(0) };
    if rc == CUDA_ERROR_NO_DEVICE {
        return Err(GpuError::NoDevice {
            ordinal: 0,
            count: 0,
        });
    }
    d.check("cuInit", rc)?;
    Ok(d)
}

impl Driver {
    /// The one place a `CUresult` becomes a `Result` (as mio's `syscall!`). Builds no string:
    /// the driver's names and descriptions are static for the life of the process.
    fn check(&self, call: &'static str, rc: CuResult) -> Result<(), GpuError> {
        if rc == CUDA_SUCCESS {
            return Ok(());
        }
        let text = |f: unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult| {
            let mut p: *const c_char = std::ptr::null();
            // SAFETY: p is a valid out-pointer; the driver points it at a static string.
            let ok = unsafe { f(rc, &mut p) } == CUDA_SUCCESS && !p.is_null();
            if !ok {
                return "unknown CUDA error";
            }
            // SAFETY: the string is NUL-terminated and static in the never-unloaded driver.
            unsafe { CStr::from_ptr::<'static>(p) }
                .to_str()
                .unwrap_or("unknown CUDA error")
        };
        Err(GpuError::Driver {
            call,
            code: rc,
            name: text(self.get_error_name),
            message: text(self.get_error_string),
        })
    }
}

/// The CUDA driver version (`1000 * major + 10 * minor`, e.g. 13000 for 13.0).
pub fn driver_version() -> Result<i32, GpuError> {
    let d = driver()?;
    let mut v = 0;
    // SAFETY: v is a valid out-pointer.
    d.check("cuDriverGetVersion", unsafe {
        (d.driver_get_version)(&mut v)
    })?;
    Ok(v)
}

/// How many CUDA devices the driver sees.
pub fn device_count() -> Result<u32, GpuError> {
    let d = driver()?;
    let mut n = 0;
    // SAFETY: n is a valid out-pointer.
    d.check("cuDeviceGetCount", unsafe { (d.device_get_count)(&mut n) })?;
    Ok(n.max(0) as u32)
}

// ---- the device --------------------------------------------------------------------------

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

// ---- device memory -----------------------------------------------------------------------

struct DeviceMem {
    gpu: Gpu,
    ptr: CuDevicePtr,
    len: usize,
}

impl Drop for DeviceMem {
    fn drop(&mut self) {
        if self.gpu.bind().is_ok() {
            // SAFETY: ptr came from cuMemAlloc_v2 and is freed once, here. Copy queues that
            // wrote into it hold this allocation (an Arc) until their copies completed.
            unsafe { (self.gpu.drv().mem_free)(self.ptr) };
        }
    }
}

/// Device memory on one GPU: never a slice, addressed by offset, freed on drop.
///
/// The CPU reaches it only through the copy engine: [`write`](Self::write) and
/// [`read`](Self::read) (synchronous), [`CopyQueue::enqueue`] (asynchronous, from packet
/// buffers). A copy queue still copying into a buffer keeps the memory alive past the drop of
/// the `GpuBuffer` until its copies completed.
pub struct GpuBuffer {
    mem: Arc<DeviceMem>,
}

impl fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuBuffer")
            .field("gpu", &self.mem.gpu.ordinal())
            .field("ptr", &format_args!("{:#x}", self.mem.ptr))
            .field("len", &self.mem.len)
            .finish()
    }
}

impl GpuBuffer {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.mem.len
    }

    /// Never true: zero-byte buffers are refused.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The device it lives on.
    pub fn gpu(&self) -> &Gpu {
        &self.mem.gpu
    }

    /// The device's ordinal.
    pub fn device(&self) -> u32 {
        self.mem.gpu.ordinal()
    }

    /// What kind of memory this is: [`MemoryKind::Device`].
    pub fn kind(&self) -> MemoryKind {
        MemoryKind::Device {
            device: self.device(),
        }
    }

    /// The device address (`CUdeviceptr`), to hand to CUDA code (kernels, NCCL). It is not a
    /// host address: the CPU must not dereference it.
    pub fn device_ptr(&self) -> u64 {
        self.mem.ptr
    }

    fn span(&self, offset: usize, len: usize) -> Result<CuDevicePtr, GpuError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.mem.len => Ok(self.mem.ptr + offset as u64),
            _ => Err(GpuError::OutOfRange {
                offset: offset as u64,
                len: len as u64,
                capacity: self.mem.len as u64,
            }),
        }
    }

    /// Copy `src` to `offset` and wait until it landed (host to device).
    pub fn write(&self, offset: usize, src: &[u8]) -> Result<(), GpuError> {
        let dst = self.span(offset, src.len())?;
        if src.is_empty() {
            return Ok(());
        }
        let g = &self.mem.gpu;
        g.bind()?;
        let d = g.drv();
        // Async on the legacy default stream, then wait: src is borrowed only for this call.
        // SAFETY: dst..+len is inside the allocation; src is a live slice of that length.
        d.check("cuMemcpyHtoDAsync_v2", unsafe {
            (d.memcpy_htod_async)(dst, src.as_ptr().cast(), src.len(), std::ptr::null_mut())
        })?;
        // SAFETY: the null stream is the legacy default stream of the current context.
        d.check("cuStreamSynchronize", unsafe {
            (d.stream_synchronize)(std::ptr::null_mut())
        })
    }

    /// Copy `dst.len()` bytes from `offset` into `dst` (device to host, synchronous).
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Result<(), GpuError> {
        let src = self.span(offset, dst.len())?;
        if dst.is_empty() {
            return Ok(());
        }
        let g = &self.mem.gpu;
        g.bind()?;
        // SAFETY: src..+len is inside the allocation; dst is a live, writable slice.
        g.drv().check("cuMemcpyDtoH_v2", unsafe {
            (g.drv().memcpy_dtoh)(dst.as_mut_ptr().cast(), src, dst.len())
        })
    }

    /// Set every byte to `value` (synchronous).
    pub fn fill(&self, value: u8) -> Result<(), GpuError> {
        let g = &self.mem.gpu;
        g.bind()?;
        let d = g.drv();
        // SAFETY: the whole allocation.
        d.check("cuMemsetD8_v2", unsafe {
            (d.memset_d8)(self.mem.ptr, value, self.mem.len)
        })?;
        // SAFETY: the null stream is the legacy default stream of the current context.
        d.check("cuStreamSynchronize", unsafe {
            (d.stream_synchronize)(std::ptr::null_mut())
        })
    }

    /// Another handle on the same memory, for a copy queue or a receive target (crate only:
    /// the public handle is unique, so `&mut GpuBuffer` means no one else writes it).
    pub(crate) fn share(&self) -> GpuBuffer {
        GpuBuffer {
            mem: self.mem.clone(),
        }
    }

    /// Whether two handles address the same allocation.
    pub fn same(&self, other: &GpuBuffer) -> bool {
        Arc::ptr_eq(&self.mem, &other.mem)
    }
}

// ---- the copy queue ----------------------------------------------------------------------

/// Sizing of a [`CopyQueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyQueueConfig {
    /// Most packet buffers held while their copies are in flight (each holds one pool slot;
    /// keep it well below the pool's size).
    pub depth: usize,
    /// Copies between two completion events (the granularity at which buffers are released).
    pub batch: usize,
}

impl Default for CopyQueueConfig {
    fn default() -> CopyQueueConfig {
        CopyQueueConfig {
            depth: 512,
            batch: 32,
        }
    }
}

/// Counters of a [`CopyQueue`] (since creation or the last [`CopyQueue::take_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Host-to-device copies issued.
    pub copies: u64,
    /// Bytes copied to the device.
    pub bytes: u64,
    /// Of `bytes`, those read from host memory registered with the driver (DMA).
    pub pinned_bytes: u64,
    /// Of `bytes`, those read from unregistered memory (staged by the driver).
    pub pageable_bytes: u64,
    /// Completion events recorded.
    pub events: u64,
    /// Times the queue was full and waited for its oldest batch.
    pub full_waits: u64,
}

impl CopyStats {
    /// Add `o` into `self`.
    pub fn add(&mut self, o: &CopyStats) {
        self.copies += o.copies;
        self.bytes += o.bytes;
        self.pinned_bytes += o.pinned_bytes;
        self.pageable_bytes += o.pageable_bytes;
        self.events += o.events;
        self.full_waits += o.full_waits;
    }
}

/// Asynchronous copies of packet payloads into device memory, on one stream.
///
/// [`enqueue`](Self::enqueue) issues the copy and keeps the [`PktBytes`] (its pool slot)
/// until the copy completed; an event is recorded every `batch` copies and completed batches
/// are released as later copies are enqueued. All storage is sized at creation: enqueueing
/// allocates nothing. [`finish`](Self::finish) waits for everything and releases it; the
/// device memory is valid to read after it returns.
pub struct CopyQueue {
    gpu: Gpu,
    stream: CuStream,
    /// Ring of held buffers: `held[(head + i) % depth]` for i in 0..count.
    held: Box<[Option<PktBytes>]>,
    head: usize,
    count: usize,
    /// Ring of recorded events and, for each, the number of held buffers it covers.
    events: Box<[CuEvent]>,
    covers: Box<[usize]>,
    ev_head: usize,
    ev_count: usize,
    /// Copies enqueued since the last event.
    open: usize,
    batch: usize,
    /// The allocation the copies in flight write into (kept alive until they completed).
    dst: Option<GpuBuffer>,
    pinned: Vec<(usize, usize)>,
    pinned_gen: u64,
    stats: CopyStats,
}

// SAFETY: the stream and events belong to the device's primary context, which every call
// makes current on the calling thread; the queue is used by one thread at a time (&mut).
unsafe impl Send for CopyQueue {}

impl fmt::Debug for CopyQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CopyQueue")
            .field("gpu", &self.gpu.ordinal())
            .field("depth", &self.held.len())
            .field("batch", &self.batch)
            .field("in_flight", &self.count)
            .field("stats", &self.stats)
            .finish()
    }
}

impl CopyQueue {
    fn new(gpu: &Gpu, cfg: CopyQueueConfig) -> Result<CopyQueue, GpuError> {
        let depth = cfg.depth.max(1);
        let batch = cfg.batch.clamp(1, depth);
        let nevents = depth.div_ceil(batch) + 1;
        gpu.bind()?;
        let d = gpu.drv();
        let mut stream: CuStream = std::ptr::null_mut();
        // SAFETY: stream is a valid out-pointer; the context is current.
        d.check("cuStreamCreate", unsafe {
            (d.stream_create)(&mut stream, CU_STREAM_NON_BLOCKING)
        })?;
        let mut q = CopyQueue {
            gpu: gpu.clone(),
            stream,
            held: (0..depth).map(|_| None).collect(),
            head: 0,
            count: 0,
            events: Vec::with_capacity(nevents).into_boxed_slice(),
            covers: vec![0; nevents].into_boxed_slice(),
            ev_head: 0,
            ev_count: 0,
            open: 0,
            batch,
            dst: None,
            pinned: Vec::with_capacity(8),
            pinned_gen: u64::MAX,
            stats: CopyStats::default(),
        };
        let mut events = Vec::with_capacity(nevents);
        for _ in 0..nevents {
            let mut e: CuEvent = std::ptr::null_mut();
            // SAFETY: e is a valid out-pointer; the context is current.
            let rc = unsafe { (d.event_create)(&mut e, CU_EVENT_DISABLE_TIMING) };
            if let Err(err) = d.check("cuEventCreate", rc) {
                q.events = events.into_boxed_slice(); // destroyed by Drop
                return Err(err);
            }
            events.push(e);
        }
        q.events = events.into_boxed_slice();
        Ok(q)
    }

    /// The device.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Copies enqueued and not yet known complete.
    pub fn in_flight(&self) -> usize {
        self.count
    }

    /// The counters.
    pub fn stats(&self) -> CopyStats {
        self.stats
    }

    /// The counters, reset to zero.
    pub fn take_stats(&mut self) -> CopyStats {
        std::mem::take(&mut self.stats)
    }

    fn is_pinned(&mut self, p: usize, len: usize) -> bool {
        let g = self.gpu.inner.pinned_gen.load(Ordering::Acquire);
        if g != self.pinned_gen {
            let src = self
                .gpu
                .inner
                .pinned
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.pinned.clone_from(&src);
            self.pinned_gen = g;
        }
        self.pinned
            .iter()
            .any(|&(s, e)| p >= s && p.saturating_add(len) <= e)
    }

    /// Copy `data` to `offset` in `dst` asynchronously; `data` is held until the copy
    /// completed. Waits for the oldest batch when `depth` buffers are in flight.
    pub fn enqueue(
        &mut self,
        dst: &GpuBuffer,
        offset: u64,
        data: PktBytes,
    ) -> Result<(), GpuError> {
        if dst.mem.gpu != self.gpu {
            // Another device's memory: a plain synchronous copy (the stream is ours).
            return dst.write(offset as usize, &data);
        }
        let len = data.len();
        let to = dst.span(offset as usize, len)?;
        if len == 0 {
            return Ok(());
        }
        if self.count == self.held.len() {
            self.wait_oldest()?;
        }
        if !self.dst.as_ref().is_some_and(|d| d.same(dst)) {
            self.dst = Some(dst.share());
        }
        self.gpu.bind()?;
        let d = self.gpu.drv();
        // SAFETY: `to..+len` is inside the allocation (span checked it), which `self.dst`
        // keeps alive; `data` (its pool slot) is held below until an event after this copy
        // completed, so the source stays valid and unwritten for the copy's duration.
        d.check("cuMemcpyHtoDAsync_v2", unsafe {
            (d.memcpy_htod_async)(to, data.as_ptr().cast(), len, self.stream)
        })?;
        let pinned = self.is_pinned(data.as_ptr() as usize, len);
        let s = &mut self.stats;
        s.copies += 1;
        s.bytes += len as u64;
        if pinned {
            s.pinned_bytes += len as u64;
        } else {
            s.pageable_bytes += len as u64;
        }
        let depth = self.held.len();
        self.held[(self.head + self.count) % depth] = Some(data);
        self.count += 1;
        self.open += 1;
        if self.open >= self.batch {
            self.record()?;
            self.reap()?;
        }
        Ok(())
    }

    /// Record an event after the open copies.
    fn record(&mut self) -> Result<(), GpuError> {
        if self.open == 0 {
            return Ok(());
        }
        if self.ev_count == self.events.len() {
            self.wait_event()?;
        }
        let i = (self.ev_head + self.ev_count) % self.events.len();
        let d = self.gpu.drv();
        self.gpu.bind()?;
        // SAFETY: the event and stream are ours, in the current context.
        d.check("cuEventRecord", unsafe {
            (d.event_record)(self.events[i], self.stream)
        })?;
        self.covers[i] = self.open;
        self.ev_count += 1;
        self.open = 0;
        self.stats.events += 1;
        Ok(())
    }

    fn release(&mut self, n: usize) {
        let depth = self.held.len();
        for _ in 0..n {
            self.held[self.head] = None;
            self.head = (self.head + 1) % depth;
        }
        self.count -= n;
    }

    fn pop_event(&mut self) {
        let n = self.covers[self.ev_head];
        self.ev_head = (self.ev_head + 1) % self.events.len();
        self.ev_count -= 1;
        self.release(n);
    }

    /// Release every batch whose event completed, without waiting.
    fn reap(&mut self) -> Result<(), GpuError> {
        let d = self.gpu.drv();
        while self.ev_count > 0 {
            // SAFETY: a recorded event of ours.
            let rc = unsafe { (d.event_query)(self.events[self.ev_head]) };
            if rc == CUDA_ERROR_NOT_READY {
                break;
            }
            d.check("cuEventQuery", rc)?;
            self.pop_event();
        }
        Ok(())
    }

    /// Wait for the oldest recorded event and release its batch.
    fn wait_event(&mut self) -> Result<(), GpuError> {
        let d = self.gpu.drv();
        // SAFETY: a recorded event of ours.
        d.check("cuEventSynchronize", unsafe {
            (d.event_synchronize)(self.events[self.ev_head])
        })?;
        self.pop_event();
        Ok(())
    }

    fn wait_oldest(&mut self) -> Result<(), GpuError> {
        self.stats.full_waits += 1;
        if self.ev_count == 0 {
            self.record()?;
        }
        self.gpu.bind()?;
        self.wait_event()
    }

    /// Wait until every enqueued copy completed and release every held buffer. After it
    /// returns, the device memory holds the data.
    pub fn finish(&mut self) -> Result<(), GpuError> {
        if self.count == 0 && self.ev_count == 0 {
            self.dst = None;
            return Ok(());
        }
        self.gpu.bind()?;
        let d = self.gpu.drv();
        // SAFETY: our stream.
        d.check("cuStreamSynchronize", unsafe {
            (d.stream_synchronize)(self.stream)
        })?;
        self.ev_head = 0;
        self.ev_count = 0;
        self.open = 0;
        let n = self.count;
        self.release(n);
        self.head = 0;
        self.dst = None;
        Ok(())
    }
}

impl Drop for CopyQueue {
    fn drop(&mut self) {
        let d = self.gpu.drv();
        if self.gpu.bind().is_err() {
            return; // leak the handles rather than free buffers a copy may still read
        }
        // SAFETY: our stream; waiting makes it safe to release the held buffers.
        unsafe { (d.stream_synchronize)(self.stream) };
        for e in self.events.iter() {
            // SAFETY: events we created; the stream is idle.
            unsafe { (d.event_destroy)(*e) };
        }
        // SAFETY: our stream, idle.
        unsafe { (d.stream_destroy)(self.stream) };
        // `held` and `dst` drop after this: the copies that read/wrote them are complete.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::{HugePages, PoolConfig};

    /// The GPU, or None (with the reason printed) where this machine has no driver or device.
    fn gpu_or_skip(test: &str) -> Option<Gpu> {
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
    fn absent_driver_is_a_typed_error_with_the_fix() {
        match driver() {
            Ok(_) => eprintln!("libcuda.so.1 present: nothing to check here"),
            Err(GpuError::DriverNotFound { detail }) => {
                let e = GpuError::DriverNotFound { detail };
                let msg = e.to_string();
                assert!(
                    msg.starts_with("CUDA driver not found (libcuda.so.1)"),
                    "{msg}"
                );
                assert!(msg.contains("install the NVIDIA driver"), "{msg}");
                assert!(matches!(Gpu::open(0), Err(GpuError::DriverNotFound { .. })));
                assert!(matches!(
                    device_count(),
                    Err(GpuError::DriverNotFound { .. })
                ));
            }
            Err(e) => eprintln!("driver present but unusable: {e}"),
        }
    }

    #[test]
    fn alloc_write_read_fill() {
        let Some(g) = gpu_or_skip("alloc_write_read_fill") else {
            return;
        };
        eprintln!("device 0: {} (driver {:?})", g.name(), driver_version());
        assert!(matches!(g.alloc(0), Err(GpuError::Empty)));
        assert!(matches!(
            Gpu::open(999),
            Err(GpuError::NoDevice { ordinal: 999, .. })
        ));
        let len = 3 << 20;
        let b = g.alloc(len).unwrap();
        assert_eq!(b.len(), len);
        assert_eq!(b.kind(), MemoryKind::Device { device: 0 });
        let pat: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
        b.write(0, &pat).unwrap();
        let mut back = vec![0u8; len];
        b.read(0, &mut back).unwrap();
        assert!(back == pat, "round trip differs");
        b.fill(0xab).unwrap();
        let mut part = vec![0u8; 4096];
        b.read(len - 4096, &mut part).unwrap();
        assert!(part.iter().all(|&x| x == 0xab));
        assert!(matches!(
            b.write(len - 1, &[1, 2]),
            Err(GpuError::OutOfRange { .. })
        ));
        assert!(matches!(
            b.read(usize::MAX, &mut part),
            Err(GpuError::OutOfRange { .. })
        ));
    }

    #[test]
    fn pinned_pool_copies_are_dma_and_release_buffers() {
        let Some(g) = gpu_or_skip("pinned_pool_copies_are_dma_and_release_buffers") else {
            return;
        };
        let pool = Pool::new(&PoolConfig {
            hugepages: HugePages::Prefer,
            ..PoolConfig::new("gpu-unit", 1024, 4096)
        })
        .unwrap();
        let pinned = g.pin_pool(&pool).unwrap();
        assert_eq!(pinned.len(), pool.region().len());
        // The driver refuses to register the same memory twice; the error names the call.
        match g.pin_pool(&pool) {
            Err(e @ GpuError::Driver { call, .. }) => {
                assert_eq!(call, "cuMemHostRegister_v2");
                eprintln!("second registration: {e}");
            }
            other => panic!("a second registration succeeded: {other:?}"),
        }
        // A per-core cache hands a freed slot straight back to the next alloc, so a buffer
        // released before its copy completed would be overwritten (the fake driver in
        // tests/cuda_fake defers copies until an event or the stream is waited for).
        let core = crate::mem::CoreSlot::claim_any().unwrap();
        let dev = g.alloc(4 << 20).unwrap();
        dev.fill(0).unwrap();
        let mut q = g
            .copy_queue(CopyQueueConfig {
                depth: 64,
                batch: 8,
            })
            .unwrap();
        let seg = 3000usize;
        let n = 1000usize; // more than depth: the queue must recycle
        let mut want = vec![0u8; dev.len()];
        for i in 0..n {
            let mut b = pool.alloc().unwrap();
            let fill = (i % 251) as u8;
            b.extend_from_slice(&vec![fill; seg]).unwrap();
            want[i * seg..(i + 1) * seg].fill(fill);
            q.enqueue(&dev, (i * seg) as u64, b.freeze()).unwrap();
            assert!(q.in_flight() <= 64);
        }
        q.finish().unwrap();
        assert_eq!(q.in_flight(), 0);
        assert_eq!(pool.stats().in_use, 0, "every held buffer went back");
        let s = q.stats();
        assert_eq!(s.copies, n as u64);
        assert_eq!(s.bytes, (n * seg) as u64);
        assert_eq!(s.pinned_bytes, s.bytes, "pool memory is registered");
        assert!(s.full_waits > 0 || s.events >= (n / 8) as u64);
        let mut back = vec![0u8; dev.len()];
        dev.read(0, &mut back).unwrap();
        assert!(back == want, "device contents differ");
        drop(pinned);
        // After unpinning, copies still work and count as pageable.
        let mut b = pool.alloc().unwrap();
        b.extend_from_slice(&[9u8; 100]).unwrap();
        q.enqueue(&dev, 0, b.freeze()).unwrap();
        q.finish().unwrap();
        assert_eq!(q.stats().pageable_bytes, 100);
        drop(core);
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
