//! Device memory: [`GpuBuffer`], addressed by offset and reached by the copy engine.

use std::fmt;
use std::sync::Arc;

use super::driver::CuDevicePtr;
use super::{Gpu, GpuError, MemoryKind};

pub(super) struct DeviceMem {
    pub(super) gpu: Gpu,
    pub(super) ptr: CuDevicePtr,
    pub(super) len: usize,
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
/// [`read`](Self::read) (synchronous), [`CopyQueue::enqueue`](super::CopyQueue::enqueue)
/// (asynchronous, from packet buffers). A copy queue still copying into a buffer keeps the
/// memory alive past the drop of the `GpuBuffer` until its copies completed.
pub struct GpuBuffer {
    pub(super) mem: Arc<DeviceMem>,
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

    pub(super) fn span(&self, offset: usize, len: usize) -> Result<CuDevicePtr, GpuError> {
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

#[cfg(test)]
mod tests {
    use super::super::driver_version;
    use super::super::tests::gpu_or_skip;
    use super::*;

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
}
