//! Receiving messages into GPU memory: [`Socket::recv_into_gpu`] (one message, one call),
//! [`Socket::post_gpu`] + [`Socket::recv_gpu`] (several posted ahead), [`GpuTarget`].
//!
//! Each DATA segment of a multi-packet message is copied by the GPU's copy engine from its
//! packet buffer straight to its final offset in device memory (a [`GpuTarget`] posted to
//! the transport takes the buffer, a [`CopyQueue`] issues the asynchronous copy and holds the
//! buffer until the copy completed). The message is never reassembled in host memory. When
//! the last segment arrived, the copies still in flight are waited for, and the message is
//! handed to the application: the device memory then holds it whole.
//!
//! The transport binds a message to the first posted target when the message's first
//! packet arrives; a message that starts before any target is posted is reassembled in host
//! memory and copied from there ([`GpuRecvStats::staged_bytes`]). To receive a stream of
//! messages without staging, keep targets posted ahead of the sender ([`Socket::post_gpu`]).

use std::any::Any;

use super::{Error, Socket, Stack};
use crate::mem::gpu::{
    CopyQueue, CopyQueueConfig, CopyStats, Gpu, GpuBuffer, GpuError, PinnedPool,
};
use crate::mem::PktBuf;
use crate::proto::{MsgData, RecvTarget};

/// A [`RecvTarget`] in device memory: `capacity` bytes from `offset` of a [`GpuBuffer`],
/// filled by the copy engine through a [`CopyQueue`].
///
/// [`Socket::recv_into_gpu`] posts one per call; post your own with [`Socket::post_target`]
/// to have several messages in flight, and when one comes back in
/// [`MsgData::Target`], recover it with [`GpuTarget::from_target`] and call
/// [`finish`](Self::finish) before reading the device memory.
#[derive(Debug)]
pub struct GpuTarget {
    queue: CopyQueue,
    dst: GpuBuffer,
    base: u64,
    cap: u64,
    tag: u64,
    error: Option<GpuError>,
}

impl GpuTarget {
    /// A target over `dst[offset..]`, copying with `queue` (which must be on `dst`'s device
    /// for asynchronous copies; another device's queue makes each copy synchronous).
    pub fn new(queue: CopyQueue, dst: &GpuBuffer, offset: usize) -> Result<GpuTarget, GpuError> {
        let cap = match dst.len().checked_sub(offset) {
            Some(c) if c > 0 => c,
            _ => {
                return Err(GpuError::OutOfRange {
                    offset: offset as u64,
                    len: 0,
                    capacity: dst.len() as u64,
                })
            }
        };
        Ok(GpuTarget {
            queue,
            dst: dst.share(),
            base: offset as u64,
            cap: cap as u64,
            tag: 0,
            error: None,
        })
    }

    /// The target back from a delivered message's [`MsgData::Target`], if it is one.
    pub fn from_target(t: Box<dyn RecvTarget>) -> Result<Box<GpuTarget>, Box<dyn Any + Send>> {
        let any: Box<dyn Any + Send> = t;
        any.downcast::<GpuTarget>()
    }

    /// Wait for every copy into the target and give back its queue (to post the next
    /// target with). The device memory holds the message once this returns `Ok`; the first
    /// copy error, if any, is returned instead.
    pub fn finish(mut self) -> Result<CopyQueue, GpuError> {
        let done = self.queue.finish();
        match (self.error.take(), done) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(())) => Ok(self.queue),
        }
    }

    /// The copy queue's counters so far.
    pub fn stats(&self) -> CopyStats {
        self.queue.stats()
    }

    fn record(&mut self, r: Result<(), GpuError>) {
        if let Err(e) = r {
            self.error.get_or_insert(e);
        }
    }
}

impl RecvTarget for GpuTarget {
    fn capacity(&self) -> u64 {
        self.cap
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) {
        if self.error.is_none() {
            let r = self.dst.write((self.base + offset) as usize, data);
            self.record(r);
        }
    }

    fn write_buf(&mut self, offset: u64, buf: PktBuf) {
        if self.error.is_none() {
            let r = self
                .queue
                .enqueue(&self.dst, self.base + offset, buf.freeze());
            self.record(r);
        }
    }
}

/// Counters of a socket's receives into GPU memory ([`Socket::gpu_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpuRecvStats {
    /// Messages received into GPU memory.
    pub messages: u64,
    /// Bytes of those messages.
    pub bytes: u64,
    /// Of `bytes`, those copied to the device from each packet's buffer (segments placed at
    /// their offsets, single-packet messages, and `rx_segments` messages that arrived
    /// before a target).
    pub direct_bytes: u64,
    /// Of `bytes`, those of messages that had been reassembled in host memory first (they
    /// started arriving before a target was posted) and were then copied.
    pub staged_bytes: u64,
    /// Messages [`Socket::recv_into_gpu`] skipped: they completed into the target of an
    /// earlier call that timed out, or of a [`Socket::post_gpu`] (their bytes are where that
    /// target pointed).
    pub skipped: u64,
    /// The copy queues' counters: the asynchronous copies of the segments of multi-packet
    /// messages (single-packet and staged messages are one synchronous copy each).
    pub copy: CopyStats,
}

/// A message received into GPU memory ([`Socket::recv_gpu`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuMsg {
    /// The ticket [`Socket::post_gpu`] returned for the target it landed in.
    pub ticket: u64,
    /// The sender's message id.
    pub id: u64,
    /// Offset of the message in the posted buffer.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
}

/// Per-socket state of the GPU receive path: spare copy queues, tickets, counters.
#[derive(Debug, Default)]
pub(super) struct GpuState {
    spare: Vec<CopyQueue>,
    next_ticket: u64,
    stats: GpuRecvStats,
}

impl GpuState {
    fn recycle(&mut self, mut q: CopyQueue) {
        self.stats.copy.add(&q.take_stats());
        if self.spare.len() < 64 {
            self.spare.push(q);
        }
    }
}

fn as_gpu(t: &dyn RecvTarget) -> Option<&GpuTarget> {
    let a: &dyn Any = t;
    a.downcast_ref::<GpuTarget>()
}

impl Socket {
    /// Receive the next message into device memory at `buf[offset..]`; returns its length.
    ///
    /// Each segment of a multi-packet message is copied by the GPU's copy engine from its
    /// packet buffer to its final offset (see [`GpuTarget`]); nothing is reassembled in host
    /// memory. A single-packet message is copied from its one buffer. A message that started
    /// arriving before the call (so the transport was already reassembling it in host
    /// memory) is copied from there ([`GpuRecvStats::staged_bytes`]). The copies are
    /// asynchronous DMA when the stack's packet pool is registered with the GPU
    /// ([`Gpu::pin_pool`](crate::mem::gpu::Gpu::pin_pool)), else staged by the driver. When
    /// this returns `Ok`, the device memory holds the message.
    ///
    /// Waits up to the socket's timeout. Errors: a message longer than `buf.len() - offset`
    /// is [`Error::MessageTooLarge`] (and is consumed); a driver failure is [`Error::Gpu`];
    /// a message that landed in a target the application posted itself with
    /// [`post_target`](Self::post_target) is [`Error::TargetMessage`]. After an error, a
    /// message that had already started landing in `buf` keeps landing there (the device
    /// memory is kept alive until it did) and a later call skips it
    /// ([`GpuRecvStats::skipped`]).
    ///
    /// Allocation: none per packet; one small box per call (the posted target); a copy queue
    /// (a CUDA stream and its events) on the first call, kept by the socket for the next.
    pub fn recv_into_gpu(&self, buf: &mut GpuBuffer, offset: usize) -> Result<usize, Error> {
        let ticket = self.post_gpu(buf, offset)?;
        loop {
            match self.recv_gpu() {
                Ok(m) if m.ticket == ticket => return Ok(m.len),
                Ok(_) => self.gpu.borrow_mut().stats.skipped += 1,
                Err(e) => {
                    self.gpu_withdraw(ticket);
                    return Err(e);
                }
            }
        }
    }

    /// Post `buf[offset..]` as the destination of an upcoming message; returns a ticket that
    /// [`recv_gpu`](Self::recv_gpu) reports with the message. Messages take posted targets
    /// in posting order (the order their first packets arrive). Post several ahead of the
    /// sender to receive a stream with no message staged in host memory; at most
    /// [`ConnectionConfig::max_targets`](crate::proto::ConnectionConfig::max_targets) are
    /// posted at once ([`Error::TooManyTargets`]).
    ///
    /// The device memory is kept alive by the target until its message completed (or the
    /// connection closed), even if `buf` is dropped.
    pub fn post_gpu(&self, buf: &GpuBuffer, offset: usize) -> Result<u64, Error> {
        let (queue, ticket) = {
            let mut g = self.gpu.borrow_mut();
            g.next_ticket += 1;
            let q = match g.spare.iter().rposition(|q| q.gpu() == buf.gpu()) {
                Some(i) => g.spare.swap_remove(i),
                None => buf.gpu().copy_queue(CopyQueueConfig::default())?,
            };
            (q, g.next_ticket)
        };
        let mut target = GpuTarget::new(queue, buf, offset)?;
        target.tag = ticket;
        let mut i = self.inner.borrow_mut();
        let Some(c) = i.ep().connection(self.h) else {
            return Err(Error::Closed);
        };
        match c.post_target(Box::new(target)) {
            Ok(()) => Ok(ticket),
            Err(full) => {
                drop(i);
                if let Ok(t) = GpuTarget::from_target(full.0) {
                    if let Ok(q) = t.finish() {
                        self.gpu.borrow_mut().recycle(q);
                    }
                }
                Err(Error::TooManyTargets)
            }
        }
    }

    /// Wait (up to the socket's timeout) for the next message and place it in the next
    /// target posted with [`post_gpu`](Self::post_gpu): a multi-packet message was placed
    /// segment by segment as it arrived; a single-packet or staged one is copied now, into
    /// the oldest posted target not yet in use (a message that arrived as packet buffers,
    /// `ConnectionConfig::rx_segments`, is copied part by part from those buffers, with no
    /// staging copy). When this returns, the device memory holds the message.
    ///
    /// Errors: no target posted when a message arrives: [`Error::NotPosted`] (the message is
    /// consumed); a message longer than that target: [`Error::MessageTooLarge`] (consumed;
    /// the target stays posted); a driver failure: [`Error::Gpu`]; a message in a target the
    /// application posted with [`post_target`](Self::post_target): [`Error::TargetMessage`].
    pub fn recv_gpu(&self) -> Result<GpuMsg, Error> {
        let m = self.recv_msg()?;
        let (id, len) = (m.id, m.len);
        match m.data {
            MsgData::Target(t) => {
                let Ok(t) = GpuTarget::from_target(t) else {
                    return Err(Error::TargetMessage);
                };
                let (ticket, offset) = (t.tag, t.base as usize);
                let q = t.finish()?;
                let mut g = self.gpu.borrow_mut();
                g.recycle(q);
                g.stats.messages += 1;
                g.stats.bytes += len;
                g.stats.direct_bytes += len;
                Ok(GpuMsg {
                    ticket,
                    id,
                    offset,
                    len: len as usize,
                })
            }
            MsgData::Packet(p) => self.gpu_place(id, p.len(), [(0, &p[..])], true),
            MsgData::Buffer(b) => self.gpu_place(id, b.len(), [(0, &b[..])], false),
            // Reached host memory as packet buffers (rx_segments): each copied from its
            // packet buffer to its offset, no staging copy.
            MsgData::Segments(s) => self.gpu_place(
                id,
                s.len(),
                s.iter_with_offsets().map(|(o, p)| (o as usize, &p[..])),
                true,
            ),
        }
    }

    /// Copy a message of `len` bytes that reached host memory as `parts` (message offset,
    /// bytes) into the oldest posted GPU target. `direct`: from the packet buffers (else
    /// from a host reassembly buffer, counted as staged).
    fn gpu_place<'a>(
        &self,
        id: u64,
        len: usize,
        parts: impl IntoIterator<Item = (usize, &'a [u8])>,
        direct: bool,
    ) -> Result<GpuMsg, Error> {
        let t = {
            let mut i = self.inner.borrow_mut();
            let Some(c) = i.ep().connection(self.h) else {
                return Err(Error::Closed);
            };
            let mut first = true;
            let mut cap = None;
            let t = c.unpost_target(|t| {
                let take = first && as_gpu(t).is_some_and(|g| g.cap >= len as u64);
                if first {
                    cap = Some(t.capacity());
                }
                first = false;
                take
            });
            match (t, cap) {
                (Some(t), _) => t,
                (None, None) => return Err(Error::NotPosted { len: len as u64 }),
                (None, Some(max)) => {
                    return Err(Error::MessageTooLarge {
                        len: len as u64,
                        max,
                    })
                }
            }
        };
        let Ok(t) = GpuTarget::from_target(t) else {
            return Err(Error::TargetMessage); // unreachable: only a GpuTarget was taken
        };
        let (ticket, offset) = (t.tag, t.base as usize);
        let r = parts
            .into_iter()
            .try_for_each(|(o, bytes)| t.dst.write(offset + o, bytes));
        if let Ok(q) = t.finish() {
            self.gpu.borrow_mut().recycle(q);
        }
        r?;
        let mut g = self.gpu.borrow_mut();
        g.stats.messages += 1;
        g.stats.bytes += len as u64;
        if direct {
            g.stats.direct_bytes += len as u64;
        } else {
            g.stats.staged_bytes += len as u64;
        }
        Ok(GpuMsg {
            ticket,
            id,
            offset,
            len,
        })
    }

    /// Take back the target posted under `ticket` if no message used it.
    fn gpu_withdraw(&self, ticket: u64) {
        let t = {
            let mut i = self.inner.borrow_mut();
            let Some(c) = i.ep().connection(self.h) else {
                return;
            };
            c.unpost_target(|t| as_gpu(t).is_some_and(|g| g.tag == ticket))
        };
        if let Some(Ok(t)) = t.map(GpuTarget::from_target) {
            if let Ok(q) = t.finish() {
                self.gpu.borrow_mut().recycle(q);
            }
        }
    }

    /// Counters of this socket's receives into GPU memory.
    pub fn gpu_stats(&self) -> GpuRecvStats {
        self.gpu.borrow().stats
    }
}

impl Stack {
    /// Register the pool this stack receives packets into with `gpu`, so that copies from
    /// received packets to device memory are asynchronous DMA rather than staged by the
    /// driver. With [`Backend::Memif`](super::Backend::Memif) that is the memif interface's
    /// buffer pool; with [`Backend::Port`](super::Backend::Port) the stack does not know the
    /// port's pool (`Ok(None)`): register the pool you built the port with, with
    /// [`Gpu::pin_pool`]. Keep the returned registration while receiving into GPU memory.
    pub fn pin_for_gpu(&self, gpu: &Gpu) -> Result<Option<PinnedPool>, Error> {
        let pool = self.inner.borrow().packet_pool.clone();
        match pool {
            Some(p) => Ok(Some(gpu.pin_pool(&p)?)),
            None => Ok(None),
        }
    }
}
