//! [`CopyQueue`]: asynchronous copies of packet payloads into device memory on one stream.

use std::fmt;
use std::sync::atomic::Ordering;

use super::driver::{
    CuEvent, CuStream, CUDA_ERROR_NOT_READY, CU_EVENT_DISABLE_TIMING, CU_STREAM_NON_BLOCKING,
};
use super::{Gpu, GpuBuffer, GpuError};
use crate::mem::PktBytes;

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
    pub(super) fn new(gpu: &Gpu, cfg: CopyQueueConfig) -> Result<CopyQueue, GpuError> {
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
    use super::super::tests::gpu_or_skip;
    use super::*;
    use crate::mem::{HugePages, Pool, PoolConfig};

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
}
