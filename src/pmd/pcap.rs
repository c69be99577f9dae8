//! `pcap`: capture the frames a [`Port`] sends and receives to a pcap file.
//!
//! Contract:
//! - [`PcapWriter`] writes the classic pcap format with nanosecond timestamps (magic
//!   `0xa1b23c4d`, written little-endian, version 2.4, link type 1: Ethernet), readable by
//!   tshark, tcpdump and Wireshark. It can be used on its own.
//! - Each frame is cut to the snap length; a packet cap and a byte cap (the whole file,
//!   header included) end the capture: once a record would pass either, it and every later
//!   frame are skipped and counted in [`PcapStats::skipped_limit`].
//! - Records are gathered in the writer's own buffer (allocated once, at construction) and
//!   handed to the underlying `Write` when it fills, on [`PcapWriter::flush`], on
//!   [`PcapWriter::finish`] and on drop: no allocation and normally no system call per frame.
//! - [`Pcap`] wraps any port: every frame the inner port accepts in `tx_burst` and every frame
//!   it returns from `rx_burst` is recorded, stamped with the wall clock (read once per burst).
//!   Frames the inner port refuses are not recorded (they are recorded when sent later).
//! - Capture can be switched on and off at run time through a shared [`CaptureSwitch`]
//!   (an `Arc<AtomicBool>`); a switched-off wrapper only forwards.
//! - An I/O error never reaches the data path: the wrapper stops capturing, counts the error
//!   in [`PcapStats::io_errors`] and keeps forwarding; [`Pcap::last_error`] tells why.
//! - [`CapturePort`] wraps a port in a [`Pcap`] only while a capture runs: a writer is
//!   attached ([`CapturePort::start`]) and detached ([`CapturePort::stop`]) at run time, by
//!   whoever owns the port (the stack's poll loop at its publish tick, for a capture switched
//!   through `socket::Metrics`). Without one it only forwards; switching moves the port and
//!   the writer, allocating nothing.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Link, Port, PortInfo, PortStats};
use crate::mem::{PktBuf, PoolExhausted};

/// Magic number of a pcap file with nanosecond timestamps.
pub const MAGIC_NANOS: u32 = 0xa1b2_3c4d;
/// Link type of Ethernet frames.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Bytes of the file header.
pub const FILE_HEADER_LEN: usize = 24;
/// Bytes of a record header.
pub const RECORD_HEADER_LEN: usize = 16;

/// How to capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcapConfig {
    /// Bytes of each frame kept (at least 1; the original length is recorded too).
    pub snaplen: u32,
    /// Most frames recorded; `None`: no limit.
    pub max_packets: Option<u64>,
    /// Most bytes of file (header and records); `None`: no limit.
    pub max_bytes: Option<u64>,
    /// Bytes buffered before they are written out.
    pub buffer_bytes: usize,
}

impl Default for PcapConfig {
    /// Snap length 65535, no caps, a 256 KiB buffer.
    fn default() -> PcapConfig {
        PcapConfig {
            snaplen: 65535,
            max_packets: None,
            max_bytes: None,
            buffer_bytes: 256 * 1024,
        }
    }
}

/// Capture counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PcapStats {
    /// Frames recorded.
    pub packets: u64,
    /// Bytes of file produced (header and records), buffered or written.
    pub bytes: u64,
    /// Frames recorded cut to the snap length.
    pub truncated: u64,
    /// Frames not recorded because a cap was reached.
    pub skipped_limit: u64,
    /// Write errors of the underlying writer.
    pub io_errors: u64,
}

/// Errors of a capture.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    /// The snap length was 0.
    #[error("pcap snaplen must be at least 1")]
    ZeroSnaplen,
    /// The underlying writer failed.
    #[error("writing the capture failed: {0}")]
    Io(#[from] io::Error),
}

/// What became of a frame given to [`PcapWriter::write_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded (perhaps cut to the snap length).
    Written,
    /// Skipped: a cap is reached.
    LimitReached,
}

/// The writer's state before a record, to take records back (see [`Pcap`]'s transmit).
#[derive(Debug, Clone, Copy)]
struct Mark {
    buf_len: usize,
    stats: PcapStats,
    full: bool,
}

/// Writes frames to a pcap stream. See the [module docs](self).
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: Option<W>,
    buf: Vec<u8>,
    cfg: PcapConfig,
    stats: PcapStats,
    /// A cap was reached: nothing more is recorded.
    full: bool,
}

impl<W: Write> PcapWriter<W> {
    /// Start a capture on `out`: the file header is buffered at once.
    pub fn new(out: W, cfg: PcapConfig) -> Result<PcapWriter<W>, PcapError> {
        if cfg.snaplen == 0 {
            return Err(PcapError::ZeroSnaplen);
        }
        let mut buf = Vec::with_capacity(cfg.buffer_bytes.max(FILE_HEADER_LEN));
        buf.extend_from_slice(&MAGIC_NANOS.to_le_bytes());
        buf.extend_from_slice(&2u16.to_le_bytes()); // version major
        buf.extend_from_slice(&4u16.to_le_bytes()); // version minor
        buf.extend_from_slice(&0i32.to_le_bytes()); // thiszone
        buf.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        buf.extend_from_slice(&cfg.snaplen.to_le_bytes());
        buf.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        Ok(PcapWriter {
            out: Some(out),
            buf,
            cfg,
            stats: PcapStats {
                bytes: FILE_HEADER_LEN as u64,
                ..PcapStats::default()
            },
            full: false,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PcapConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> PcapStats {
        self.stats
    }

    /// True once a cap is reached.
    pub fn is_full(&self) -> bool {
        self.full
    }

    /// The underlying writer (records still buffered are not in it yet).
    pub fn get_ref(&self) -> Option<&W> {
        self.out.as_ref()
    }

    /// Bytes a record of a frame of `len` bytes takes.
    fn record_len(&self, len: usize) -> usize {
        RECORD_HEADER_LEN + len.min(self.cfg.snaplen as usize)
    }

    /// Record `frame`, taken at `ts_ns` nanoseconds since the Unix epoch.
    pub fn write_frame(&mut self, ts_ns: u64, frame: &[u8]) -> Result<Recorded, PcapError> {
        let rec = self.record_len(frame.len());
        if self.buf.len() + rec > self.buf.capacity() {
            self.flush_buf()?;
            if rec > self.buf.capacity() {
                // A record larger than the whole buffer (a snap length above the buffer
                // size): grows the buffer once for good.
                self.buf.reserve(rec);
            }
        }
        Ok(self.push_record(ts_ns, frame))
    }

    /// Append a record to the buffer; the caller made room for it.
    fn push_record(&mut self, ts_ns: u64, frame: &[u8]) -> Recorded {
        if self.full {
            self.stats.skipped_limit += 1;
            return Recorded::LimitReached;
        }
        let incl = frame.len().min(self.cfg.snaplen as usize);
        let rec = (RECORD_HEADER_LEN + incl) as u64;
        let over_packets = self
            .cfg
            .max_packets
            .is_some_and(|m| self.stats.packets >= m);
        let over_bytes = self
            .cfg
            .max_bytes
            .is_some_and(|m| self.stats.bytes + rec > m);
        if over_packets || over_bytes {
            self.full = true;
            self.stats.skipped_limit += 1;
            return Recorded::LimitReached;
        }
        let secs = (ts_ns / 1_000_000_000) as u32;
        let nanos = (ts_ns % 1_000_000_000) as u32;
        self.buf.extend_from_slice(&secs.to_le_bytes());
        self.buf.extend_from_slice(&nanos.to_le_bytes());
        self.buf.extend_from_slice(&(incl as u32).to_le_bytes());
        self.buf
            .extend_from_slice(&(frame.len().min(u32::MAX as usize) as u32).to_le_bytes());
        self.buf.extend_from_slice(&frame[..incl]);
        self.stats.packets += 1;
        self.stats.bytes += rec;
        if incl < frame.len() {
            self.stats.truncated += 1;
        }
        Recorded::Written
    }

    /// Make sure `bytes` more can be buffered without writing out.
    fn reserve_for(&mut self, bytes: usize) -> Result<(), PcapError> {
        if self.buf.len() + bytes > self.buf.capacity() {
            self.flush_buf()?;
            if bytes > self.buf.capacity() {
                self.buf.reserve(bytes);
            }
        }
        Ok(())
    }

    fn mark(&self) -> Mark {
        Mark {
            buf_len: self.buf.len(),
            stats: self.stats,
            full: self.full,
        }
    }

    /// Take back every record made since `m` (nothing was written out since).
    fn rollback(&mut self, m: Mark) {
        debug_assert!(self.buf.len() >= m.buf_len);
        self.buf.truncate(m.buf_len);
        let io_errors = self.stats.io_errors;
        self.stats = m.stats;
        self.stats.io_errors = io_errors;
        self.full = m.full;
    }

    fn flush_buf(&mut self) -> Result<(), PcapError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some(out) = self.out.as_mut() else {
            return Ok(());
        };
        let r = out.write_all(&self.buf);
        self.buf.clear();
        r.map_err(|e| {
            self.stats.io_errors += 1;
            PcapError::Io(e)
        })
    }

    /// Write out everything buffered and flush the underlying writer.
    pub fn flush(&mut self) -> Result<(), PcapError> {
        self.flush_buf()?;
        if let Some(out) = self.out.as_mut() {
            out.flush().map_err(|e| {
                self.stats.io_errors += 1;
                PcapError::Io(e)
            })?;
        }
        Ok(())
    }

    /// Flush and return the underlying writer.
    pub fn finish(mut self) -> Result<W, PcapError> {
        self.flush()?;
        // `out` is Some until finish takes it; Drop then has nothing to flush.
        self.out.take().ok_or(PcapError::Io(io::Error::other(
            "pcap writer already finished",
        )))
    }
}

impl<W: Write> Drop for PcapWriter<W> {
    fn drop(&mut self) {
        // Best effort: errors here have nowhere to go (call `finish` to see them).
        let _ = self.flush();
    }
}

/// A run-time on/off switch for a capture, shared by clones.
#[derive(Debug, Clone)]
pub struct CaptureSwitch(Arc<AtomicBool>);

impl CaptureSwitch {
    /// A switch, on or off.
    pub fn new(enabled: bool) -> CaptureSwitch {
        CaptureSwitch(Arc::new(AtomicBool::new(enabled)))
    }

    /// Turn capture on or off.
    pub fn set_enabled(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed);
    }

    /// Whether capture is on.
    pub fn is_enabled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for CaptureSwitch {
    /// On.
    fn default() -> CaptureSwitch {
        CaptureSwitch::new(true)
    }
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A port wrapper that records every frame sent and received. See the [module docs](self).
#[derive(Debug)]
pub struct Pcap<P: Port, W: Write + Send> {
    inner: P,
    writer: PcapWriter<W>,
    switch: CaptureSwitch,
    last_error: Option<io::ErrorKind>,
    /// `marks[i]`: the writer's state before the record of the i-th frame of a transmit burst.
    marks: Vec<Mark>,
}

impl<P: Port, W: Write + Send> Pcap<P, W> {
    /// Wrap `inner`, capturing to `out` with `cfg`; capture starts on.
    pub fn new(inner: P, out: W, cfg: PcapConfig) -> Result<Self, PcapError> {
        Ok(Pcap::with_writer(inner, PcapWriter::new(out, cfg)?))
    }

    /// Wrap `inner`, capturing with `writer`; capture starts on.
    pub fn with_writer(inner: P, writer: PcapWriter<W>) -> Self {
        Pcap {
            inner,
            writer,
            switch: CaptureSwitch::default(),
            last_error: None,
            marks: Vec::with_capacity(super::MAX_BURST + 1),
        }
    }

    /// Turn capture on or off.
    pub fn set_enabled(&self, on: bool) {
        self.switch.set_enabled(on);
    }

    /// Whether capture is on (and has not stopped on an error).
    pub fn is_enabled(&self) -> bool {
        self.switch.is_enabled() && self.last_error.is_none()
    }

    /// A handle that switches this capture on and off from anywhere (another thread).
    pub fn switch(&self) -> CaptureSwitch {
        self.switch.clone()
    }

    /// Use `switch` (e.g. one shared by several wrappers) instead of this wrapper's own.
    pub fn set_switch(&mut self, switch: CaptureSwitch) {
        self.switch = switch;
    }

    /// Capture counters.
    pub fn capture_stats(&self) -> PcapStats {
        self.writer.stats()
    }

    /// The error that stopped the capture, if one did.
    pub fn last_error(&self) -> Option<io::ErrorKind> {
        self.last_error
    }

    /// Write out buffered records.
    pub fn flush(&mut self) -> Result<(), PcapError> {
        self.writer.flush()
    }

    /// The wrapped port.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// The wrapped port, mutably (frames sent on it directly are not captured).
    pub fn inner_mut(&mut self) -> &mut P {
        &mut self.inner
    }

    /// Unwrap into the port and the writer (call [`PcapWriter::finish`] to flush and get the
    /// underlying writer back).
    pub fn into_parts(self) -> (P, PcapWriter<W>) {
        (self.inner, self.writer)
    }

    fn fail(&mut self, e: PcapError) {
        self.last_error = Some(match e {
            PcapError::Io(e) => e.kind(),
            PcapError::ZeroSnaplen => io::ErrorKind::InvalidInput,
        });
    }
}

impl<P: Port, W: Write + Send> Port for Pcap<P, W> {
    fn info(&self) -> PortInfo {
        self.inner.info()
    }

    fn link(&mut self) -> Link {
        self.inner.link()
    }

    fn rx_burst(&mut self, out: &mut Vec<PktBuf>, max: usize) -> usize {
        let start = out.len();
        let n = self.inner.rx_burst(out, max);
        if n == 0 || !self.is_enabled() {
            return n;
        }
        let ts = wall_ns();
        for pkt in &out[start..] {
            if let Err(e) = self.writer.write_frame(ts, pkt.data()) {
                self.fail(e);
                break;
            }
        }
        n
    }

    fn tx_burst(&mut self, pkts: &mut Vec<PktBuf>) -> usize {
        if pkts.is_empty() || !self.is_enabled() {
            return self.inner.tx_burst(pkts);
        }
        // Record the whole burst before sending (the inner port takes the frames), with
        // room reserved so nothing is written out meanwhile; then take back the records of
        // the frames the inner port refused.
        let need: usize = pkts.iter().map(|p| self.writer.record_len(p.len())).sum();
        if let Err(e) = self.writer.reserve_for(need) {
            self.fail(e);
            return self.inner.tx_burst(pkts);
        }
        let ts = wall_ns();
        self.marks.clear();
        for pkt in pkts.iter() {
            self.marks.push(self.writer.mark());
            self.writer.push_record(ts, pkt.data());
        }
        let offered = pkts.len();
        let sent = self.inner.tx_burst(pkts);
        if sent < offered {
            self.writer.rollback(self.marks[sent]);
        }
        sent
    }

    fn alloc_tx(&mut self) -> Result<PktBuf, PoolExhausted> {
        self.inner.alloc_tx()
    }

    fn stats(&self) -> PortStats {
        self.inner.stats()
    }
    fn rx_intr_arm(&mut self, wait: &mut crate::pmd::RxWait) -> crate::pmd::RxIntr {
        self.inner.rx_intr_arm(wait)
    }
    fn rx_intr_disarm(&mut self) {
        self.inner.rx_intr_disarm()
    }
}

enum CaptureState<P: Port, W: Write + Send> {
    Plain(P),
    Capturing(Pcap<P, W>),
    /// Only inside `start`/`stop`.
    Switching,
}

/// A port that is wrapped in a [`Pcap`] while a capture runs, and forwards as is otherwise.
/// See the [module docs](self).
pub struct CapturePort<P: Port, W: Write + Send> {
    state: CaptureState<P, W>,
}

impl<P: Port, W: Write + Send> std::fmt::Debug for CapturePort<P, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapturePort")
            .field("capturing", &self.capture().is_some())
            .finish_non_exhaustive()
    }
}

impl<P: Port, W: Write + Send> CapturePort<P, W> {
    /// Wrap `port`, not capturing.
    pub fn new(port: P) -> Self {
        CapturePort {
            state: CaptureState::Plain(port),
        }
    }

    /// Capture from now on with `writer`. A capture already running is left as it is and
    /// `writer` comes back.
    pub fn start(&mut self, writer: PcapWriter<W>) -> Result<(), PcapWriter<W>> {
        match std::mem::replace(&mut self.state, CaptureState::Switching) {
            CaptureState::Plain(p) => {
                self.state = CaptureState::Capturing(Pcap::with_writer(p, writer));
                Ok(())
            }
            st => {
                self.state = st;
                Err(writer)
            }
        }
    }

    /// End the running capture and hand its writer back (call [`PcapWriter::finish`] to
    /// flush it); `None` when none runs.
    pub fn stop(&mut self) -> Option<PcapWriter<W>> {
        match std::mem::replace(&mut self.state, CaptureState::Switching) {
            CaptureState::Capturing(pc) => {
                let (p, w) = pc.into_parts();
                self.state = CaptureState::Plain(p);
                Some(w)
            }
            st => {
                self.state = st;
                None
            }
        }
    }

    /// The running capture, for its counters and state.
    pub fn capture(&self) -> Option<&Pcap<P, W>> {
        match &self.state {
            CaptureState::Capturing(p) => Some(p),
            _ => None,
        }
    }
}

/// Forward a `Port` call to the port in either state (`Switching` exists only inside
/// `start` and `stop`).
macro_rules! forward {
    ($state:expr, $p:ident => $e:expr) => {
        match $state {
            CaptureState::Plain($p) => $e,
            CaptureState::Capturing($p) => $e,
            CaptureState::Switching => unreachable!("port used while switching capture"),
        }
    };
}

/// `f` on a capturing port's [`Pcap`] (out of line: the path of a running capture).
#[cold]
#[inline(never)]
fn capturing<P: Port, W: Write + Send, R>(
    s: &mut CaptureState<P, W>,
    f: impl FnOnce(&mut dyn Port) -> R,
) -> R {
    forward!(s, p => f(p))
}

impl<P: Port, W: Write + Send> Port for CapturePort<P, W> {
    fn info(&self) -> PortInfo {
        forward!(&self.state, p => p.info())
    }
    #[inline]
    fn link(&mut self) -> Link {
        forward!(&mut self.state, p => p.link())
    }
    // The data path: no capture is one compare and the inner port's call; the capture's
    // code stays out of line, so this wrapper adds nothing else to every burst.
    #[inline]
    fn rx_burst(&mut self, out: &mut Vec<PktBuf>, max: usize) -> usize {
        match &mut self.state {
            CaptureState::Plain(p) => p.rx_burst(out, max),
            s => capturing(s, |p| p.rx_burst(out, max)),
        }
    }
    #[inline]
    fn tx_burst(&mut self, pkts: &mut Vec<PktBuf>) -> usize {
        match &mut self.state {
            CaptureState::Plain(p) => p.tx_burst(pkts),
            s => capturing(s, |p| p.tx_burst(pkts)),
        }
    }
    #[inline]
    fn alloc_tx(&mut self) -> Result<PktBuf, PoolExhausted> {
        match &mut self.state {
            CaptureState::Plain(p) => p.alloc_tx(),
            s => capturing(s, |p| p.alloc_tx()),
        }
    }
    fn stats(&self) -> PortStats {
        forward!(&self.state, p => p.stats())
    }
    fn rx_intr_arm(&mut self, wait: &mut crate::pmd::RxWait) -> crate::pmd::RxIntr {
        forward!(&mut self.state, p => p.rx_intr_arm(wait))
    }
    fn rx_intr_disarm(&mut self) {
        forward!(&mut self.state, p => p.rx_intr_disarm())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_header_bytes() {
        let w = PcapWriter::new(Vec::new(), PcapConfig::default()).unwrap();
        let v = w.finish().unwrap();
        assert_eq!(
            v,
            [
                0x4d, 0x3c, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0,
                0, 0
            ]
        );
    }

    #[test]
    fn record_bytes_and_snaplen() {
        let cfg = PcapConfig {
            snaplen: 4,
            ..PcapConfig::default()
        };
        let mut w = PcapWriter::new(Vec::new(), cfg).unwrap();
        let ts = 1_700_000_000 * 1_000_000_000 + 123_456_789;
        assert_eq!(w.write_frame(ts, &[1, 2, 3]).unwrap(), Recorded::Written);
        assert_eq!(
            w.write_frame(ts + 1, &[9, 8, 7, 6, 5, 4]).unwrap(),
            Recorded::Written
        );
        let s = w.stats();
        assert_eq!((s.packets, s.truncated), (2, 1));
        assert_eq!(s.bytes, 24 + 16 + 3 + 16 + 4);
        let v = w.finish().unwrap();
        assert_eq!(v.len() as u64, s.bytes);
        let r = &v[24..];
        assert_eq!(&r[0..4], &1_700_000_000u32.to_le_bytes());
        assert_eq!(&r[4..8], &123_456_789u32.to_le_bytes());
        assert_eq!(&r[8..12], &3u32.to_le_bytes());
        assert_eq!(&r[12..16], &3u32.to_le_bytes());
        assert_eq!(&r[16..19], &[1, 2, 3]);
        let r = &r[19..];
        assert_eq!(&r[4..8], &123_456_790u32.to_le_bytes());
        assert_eq!(&r[8..12], &4u32.to_le_bytes());
        assert_eq!(&r[12..16], &6u32.to_le_bytes());
        assert_eq!(&r[16..], &[9, 8, 7, 6]);
    }

    #[test]
    fn caps_stop_the_capture() {
        let cfg = PcapConfig {
            max_packets: Some(2),
            ..PcapConfig::default()
        };
        let mut w = PcapWriter::new(Vec::new(), cfg).unwrap();
        for _ in 0..2 {
            assert_eq!(w.write_frame(0, &[0; 10]).unwrap(), Recorded::Written);
        }
        assert_eq!(w.write_frame(0, &[0; 10]).unwrap(), Recorded::LimitReached);
        assert_eq!(w.stats().skipped_limit, 1);

        let cfg = PcapConfig {
            max_bytes: Some(24 + 2 * 26),
            ..PcapConfig::default()
        };
        let mut w = PcapWriter::new(Vec::new(), cfg).unwrap();
        assert_eq!(w.write_frame(0, &[0; 10]).unwrap(), Recorded::Written);
        assert_eq!(w.write_frame(0, &[0; 10]).unwrap(), Recorded::Written);
        assert_eq!(w.write_frame(0, &[0; 1]).unwrap(), Recorded::LimitReached);
        assert!(w.is_full());
        let v = w.finish().unwrap();
        assert_eq!(v.len(), 24 + 2 * 26);
    }

    #[test]
    fn small_buffer_writes_through() {
        let cfg = PcapConfig {
            buffer_bytes: 32,
            ..PcapConfig::default()
        };
        let mut w = PcapWriter::new(Vec::new(), cfg).unwrap();
        for i in 0..10u8 {
            w.write_frame(0, &[i; 40]).unwrap();
        }
        let v = w.finish().unwrap();
        assert_eq!(v.len(), 24 + 10 * 56);
        assert_eq!(v[24 + 9 * 56 + 16], 9);
    }

    #[test]
    fn capture_port_attaches_and_detaches_a_writer() {
        use crate::mem::{HugePages, Pool, PoolConfig};
        let pool = Pool::new(&PoolConfig {
            hugepages: HugePages::Never,
            ..PoolConfig::new("pcap-capture-port", 64, 2048)
        })
        .unwrap();
        let (a, mut b) = crate::pmd::pair::pair(&pool, 16, 1500).unwrap();
        let mut port = CapturePort::new(a);
        let send = |port: &mut CapturePort<_, Vec<u8>>, len: usize| {
            let mut f = port.alloc_tx().unwrap();
            f.append(len).unwrap().fill(7);
            let mut v = vec![f];
            assert_eq!(port.tx_burst(&mut v), 1);
        };
        let writer = || PcapWriter::new(Vec::new(), PcapConfig::default()).unwrap();

        send(&mut port, 60); // not capturing: forwarded only
        assert!(port.capture().is_none() && port.stop().is_none());
        port.start(writer()).unwrap();
        send(&mut port, 61);
        // A second capture is refused and keeps the first.
        assert!(port.start(writer()).is_err());
        send(&mut port, 62);
        assert_eq!(port.capture().unwrap().capture_stats().packets, 2);
        let file = port.stop().unwrap().finish().unwrap();
        assert_eq!(
            file.len(),
            FILE_HEADER_LEN + 2 * RECORD_HEADER_LEN + 61 + 62
        );
        send(&mut port, 63);
        assert!(port.capture().is_none());

        // Every frame reached the peer, captured or not.
        let mut got = Vec::new();
        b.rx_burst(&mut got, 16);
        let lens: Vec<usize> = got.iter().map(|p| p.len()).collect();
        assert_eq!(lens, [60, 61, 62, 63]);
    }

    struct Failing;
    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn io_error_is_reported_not_panicked() {
        let mut w = PcapWriter::new(Failing, PcapConfig::default()).unwrap();
        w.write_frame(0, &[0; 10]).unwrap();
        assert!(matches!(w.flush(), Err(PcapError::Io(_))));
        assert_eq!(w.stats().io_errors, 1);
    }
}
