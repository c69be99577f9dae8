//! [`SendBuf`]: a message written in place into the stack's packet buffers and sent with no
//! copy (zero-copy send).
//!
//! Contract:
//! - [`Socket::send_buf`] takes `ceil(len / segment_len)` buffers from the port's transmit
//!   pool; `segment_len` is the connection's largest DATA payload, so each buffer is exactly
//!   one packet's payload (the last may be shorter), with the pool's headroom in front.
//! - The application writes the message into them ([`SendBuf::chunks_mut`],
//!   [`SendBuf::write_at`]); what it does not write is unspecified (old packet bytes of this
//!   process: write every byte).
//! - [`SendBuf::send`] queues the buffers as one message ([`Connection::send_segments`]). The
//!   first transmission of each buffer sends its slot itself: the transport header goes into
//!   its headroom, the runtime prepends UDP/IPv4/Ethernet below that, and the port transmits
//!   the slot (a memif client posts it to the ring as is; other ports copy, as they copy any
//!   foreign buffer). The connection keeps a shared reference to each slot to retransmit from
//!   (copying, then) until the peer acknowledges the message. See `mem`'s shared buffers.
//! - No heap allocation per message once warm: the segment list is reused.
//! - Dropping a `SendBuf` without sending it returns its buffers to the pool.
//!
//! [`Connection::send_segments`]: crate::proto::Connection::send_segments

use super::{Error, Socket};
use crate::mem::{PktBuf, PoolExhausted};
use crate::pmd::Port;
use crate::proto::SendError;

/// A message being written in place into packet buffers; see [`Socket::send_buf`].
pub struct SendBuf<'a> {
    sock: &'a Socket,
    segs: Vec<PktBuf>,
    len: usize,
    seg_len: usize,
}

impl std::fmt::Debug for SendBuf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBuf")
            .field("len", &self.len)
            .field("segments", &self.segs.len())
            .field("segment_len", &self.seg_len)
            .finish()
    }
}

impl Socket {
    /// A `len`-byte message to write in place and send with no copy (zero-copy send; see
    /// [`SendBuf`]). While the port's pool has not enough free buffers and messages of this
    /// connection are in flight (their buffers return when the peer acknowledges them), it
    /// waits, busy-polling, up to the socket's timeout, as `send` waits for room in the send
    /// queue. Errors: [`Error::MessageTooLarge`] over the stack's maximum message,
    /// [`Error::PoolExhausted`] when the pool cannot provide the buffers (at once with
    /// nothing in flight, else after the timeout), [`Error::Closed`] (or the connection's
    /// error) once the connection is over.
    ///
    /// ```
    /// # use std::net::{Ipv4Addr, SocketAddrV4};
    /// # use std::time::Duration;
    /// # use bypass::mem::{HugePages, Pool, PoolConfig};
    /// # use bypass::pmd::pair::pair;
    /// # use bypass::socket::{Backend, Error, Stack, DEFAULT_UDP_PORT};
    /// # let pool = Pool::new(&PoolConfig {
    /// #     hugepages: HugePages::Never,
    /// #     ..PoolConfig::new("sendbuf-doc", 2048, 9216 + 256)
    /// # })?;
    /// # let (a, b) = pair(&pool, 256, 9000)?;
    /// # let server_ip = Ipv4Addr::new(10, 0, 0, 1);
    /// # let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    /// # let server = std::thread::spawn(move || -> Result<(), Error> {
    /// #     let stack = Stack::builder(Backend::Port(Box::new(a)), server_ip).build()?;
    /// #     let listener = stack.listen();
    /// #     ready_tx.send(()).unwrap();
    /// #     let sock = listener.accept(Duration::from_secs(10))?;
    /// #     loop {
    /// #         match sock.recv() {
    /// #             Ok(m) => { sock.send_bytes(m)?; }
    /// #             Err(Error::Closed) => return Ok(()),
    /// #             Err(e) => return Err(e),
    /// #         }
    /// #     }
    /// # });
    /// # ready_rx.recv()?;
    /// # let stack = Stack::builder(Backend::Port(Box::new(b)), Ipv4Addr::new(10, 0, 0, 2)).build()?;
    /// # let sock = stack.connect(SocketAddrV4::new(server_ip, DEFAULT_UDP_PORT), Duration::from_secs(10))?;
    /// // A 100 kB message written straight into packet buffers, one packet's payload each.
    /// let mut msg = sock.send_buf(100_000)?;
    /// let mut at = 0u64;
    /// for chunk in msg.chunks_mut() {
    ///     for b in chunk.iter_mut() {
    ///         *b = (at % 251) as u8;
    ///         at += 1;
    ///     }
    /// }
    /// msg.write_at(0, b"header")?; // or write any range
    /// let id = msg.send()?; // queued: no copy now, none on the first transmission
    /// let echo = sock.recv()?; // the server sends it back
    /// assert_eq!(&echo[..6], b"header");
    /// assert!(echo[6..].iter().enumerate().all(|(i, &b)| b == ((i + 6) % 251) as u8));
    /// # let _ = id;
    /// # sock.close()?;
    /// # server.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_buf(&self, len: usize) -> Result<SendBuf<'_>, Error> {
        // The poll loop's clock (no system call), read only once waiting starts.
        let mut start = None;
        loop {
            match self.try_send_buf(len) {
                Err(Error::PoolExhausted) => {
                    let timeout = self.s.borrow().timeout;
                    let t0 = *start.get_or_insert_with(|| self.start_ns());
                    let in_flight = {
                        let mut i = self.inner.borrow_mut();
                        i.ep()
                            .connection(self.h)
                            .is_some_and(|c| c.send_queue_len() > 0)
                    };
                    if !in_flight || timeout.is_some_and(|t| self.since(t0) >= t) {
                        return Err(Error::PoolExhausted);
                    }
                    if !self.inner.borrow_mut().poll() {
                        self.idle_wait(t0, timeout);
                    }
                }
                r => return r,
            }
        }
    }

    /// One attempt of [`send_buf`](Self::send_buf): [`Error::PoolExhausted`] at once when
    /// the pool has not enough free buffers now.
    pub fn try_send_buf(&self, len: usize) -> Result<SendBuf<'_>, Error> {
        self.pump_events();
        if let Some(e) = self.closed_error() {
            return Err(e);
        }
        let mut i = self.inner.borrow_mut();
        let max = i.max_message;
        if len as u64 > max {
            return Err(Error::MessageTooLarge {
                len: len as u64,
                max,
            });
        }
        let Some(mut seg_len) = i.ep().connection_ref(self.h).map(|c| c.max_payload_len()) else {
            return Err(Error::Closed);
        };
        let mut segs = std::mem::take(&mut self.s.borrow_mut().spare_segs);
        let mut left = len;
        while left > 0 {
            let mut b = match i.rt.port_mut().alloc_tx() {
                Ok(b) => b,
                Err(PoolExhausted) => {
                    segs.clear();
                    self.s.borrow_mut().spare_segs = segs;
                    return Err(Error::PoolExhausted);
                }
            };
            if segs.is_empty() {
                // A chunk is one packet's payload, and no more than a buffer holds.
                seg_len = seg_len.min(b.tailroom());
            }
            let take = left.min(seg_len);
            if take == 0 || b.append(take).is_err() {
                segs.clear();
                self.s.borrow_mut().spare_segs = segs;
                return Err(Error::SendBuf(
                    "the port's buffers hold no payload after their headroom",
                ));
            }
            segs.push(b);
            left -= take;
        }
        let seg_len = seg_len.max(1);
        drop(i);
        Ok(SendBuf {
            sock: self,
            segs,
            len,
            seg_len,
        })
    }
}

impl<'a> SendBuf<'a> {
    /// The message's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length message.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes per chunk (one packet's payload); the last chunk may be shorter.
    pub fn segment_len(&self) -> usize {
        self.seg_len
    }

    /// The message as writable chunks, in order: chunk `k` is bytes
    /// `[k * segment_len, ...)` of the message, each one packet buffer.
    pub fn chunks_mut(&mut self) -> impl Iterator<Item = &mut [u8]> + '_ {
        // The buffers are fresh from the pool: exclusive, so data_mut writes in place.
        self.segs.iter_mut().map(|b| b.data_mut())
    }

    /// The message's chunks, read-only.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.segs.iter().map(|b| b.data())
    }

    /// Write `src` at byte `offset` of the message (across chunks as needed).
    /// [`Error::SendBuf`] when it would run past the end; nothing is written then.
    pub fn write_at(&mut self, offset: usize, src: &[u8]) -> Result<(), Error> {
        if offset
            .checked_add(src.len())
            .is_none_or(|end| end > self.len)
        {
            return Err(Error::SendBuf("write_at past the end of the message"));
        }
        let mut off = offset;
        let mut src = src;
        while !src.is_empty() {
            let (k, o) = (off / self.seg_len, off % self.seg_len);
            let dst = &mut self.segs[k].data_mut()[o..];
            let n = dst.len().min(src.len());
            dst[..n].copy_from_slice(&src[..n]);
            src = &src[n..];
            off += n;
        }
        Ok(())
    }

    /// Queue the message, waiting (busy-polling, up to the socket's timeout) while the send
    /// queue is full. Returns the message id, as [`Socket::send_bytes`] does.
    pub fn send(mut self) -> Result<u64, Error> {
        let sock = self.sock;
        let timeout = sock.s.borrow().timeout;
        let mut start = None;
        loop {
            if let Some(id) = self.try_queue()? {
                return Ok(id);
            }
            let t0 = *start.get_or_insert_with(|| sock.now_ns());
            if timeout.is_some_and(|t| sock.since(t0) >= t) {
                return Err(Error::TimedOut {
                    after: timeout.unwrap_or_default(),
                });
            }
            if !sock.inner.borrow_mut().poll() {
                sock.idle_wait(t0, timeout);
            }
        }
    }

    /// Queue the message if the send queue has room now: `Ok(Ok(id))`; `Ok(Err(self))` to
    /// retry later.
    pub fn try_send(mut self) -> Result<Result<u64, SendBuf<'a>>, Error> {
        match self.try_queue()? {
            Some(id) => Ok(Ok(id)),
            None => Ok(Err(self)),
        }
    }

    fn try_queue(&mut self) -> Result<Option<u64>, Error> {
        let sock = self.sock;
        sock.pump_events();
        if let Some(e) = sock.closed_error() {
            return Err(e);
        }
        let mut i = sock.inner.borrow_mut();
        let (max, limit) = (i.max_message, i.max_send_msgs);
        let now = i.rt.now();
        let Some(c) = i.ep().connection(sock.h) else {
            return Err(Error::Closed);
        };
        if c.send_queue_len() >= limit {
            return Ok(None);
        }
        match c.send_segments(&mut self.segs) {
            Ok(id) => {
                sock.sent(&mut i, id, now);
                Ok(Some(id))
            }
            Err(SendError::WouldBlock) => Ok(None),
            Err(SendError::TooLarge) => Err(Error::MessageTooLarge {
                len: self.len as u64,
                max,
            }),
            Err(SendError::Closed) => Err(Error::Closed),
            Err(SendError::BadSegments) => Err(Error::SendBuf("segments of unequal length")),
        }
    }
}

impl Drop for SendBuf<'_> {
    /// Returns unsent buffers to their pool and keeps the (emptied) list for the next
    /// [`Socket::send_buf`].
    fn drop(&mut self) {
        self.segs.clear();
        if let Ok(mut st) = self.sock.s.try_borrow_mut() {
            if st.spare_segs.capacity() < self.segs.capacity() {
                st.spare_segs = std::mem::take(&mut self.segs);
            }
        }
    }
}

impl Socket {
    /// First transmissions of this connection that sent an application-written buffer
    /// ([`SendBuf`]) itself, with no copy.
    pub fn tx_zero_copy(&self) -> u64 {
        let mut i = self.inner.borrow_mut();
        i.ep()
            .connection_ref(self.h)
            .map_or(0, |c| c.tx_zero_copy())
    }
}
