//! The CUDA driver binding: `libcuda.so.1` opened with `dlopen` on first use, its entry points
//! resolved by name, and the one check that turns a `CUresult` into a [`GpuError`].

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::OnceLock;

use super::GpuError;

pub(super) type CuResult = c_int;
pub(super) type CuDevice = c_int;
pub(super) type CuContext = *mut c_void;
pub(super) type CuStream = *mut c_void;
pub(super) type CuEvent = *mut c_void;
pub(super) type CuDevicePtr = u64;

pub(super) const CUDA_SUCCESS: CuResult = 0;
pub(super) const CUDA_ERROR_NO_DEVICE: CuResult = 100;
pub(super) const CUDA_ERROR_INVALID_DEVICE: CuResult = 101;
pub(super) const CUDA_ERROR_NOT_READY: CuResult = 600;
pub(super) const CU_STREAM_NON_BLOCKING: c_uint = 0x1;
pub(super) const CU_EVENT_DISABLE_TIMING: c_uint = 0x2;
pub(super) const CU_MEMHOSTREGISTER_PORTABLE: c_uint = 0x1;

/// Declares [`Driver`] (one function pointer per entry point, with its C prototype from
/// cuda.h) and `resolve`, which looks each up by name (the first name found of those listed:
/// the `_v2` names are the ones cuda.h maps the plain names to).
macro_rules! driver_api {
    ($( $field:ident : fn($($arg:ty),*) = $($name:literal)|+ ; )*) => {
        /// The driver entry points bypass uses, resolved from `libcuda.so.1`.
        pub(super) struct Driver {
            $( pub(super) $field: unsafe extern "C" fn($($arg),*) -> CuResult, )*
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

static DRIVER: OnceLock<Result<Driver, GpuError>> = OnceLock::new();

pub(super) fn driver() -> Result<&'static Driver, GpuError> {
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
    pub(super) fn check(&self, call: &'static str, rc: CuResult) -> Result<(), GpuError> {
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

#[cfg(test)]
mod tests {
    use super::super::Gpu;
    use super::*;

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
}
