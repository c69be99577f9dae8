//! What each end of a benchmark cell does on its connections: the client drivers (ping-pong,
//! stream sender, open-loop rpc) and the peer's server roles (echo, sink, rpc responder).
//!
//! The drivers only talk to [`MsgConn`], so every transport runs the same loops. Clocks are
//! `std::time::Instant` (CLOCK_MONOTONIC); latencies go into an hdrhistogram with 1 ns
//! resolution and 3 significant digits.
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;

use super::transport::{ConnError, MsgConn};

/// The smallest rpc message: it carries the request's sequence number.
pub const RPC_MIN_SIZE: usize = 8;

/// The most requests the rpc client sends before polling for responses again.
const RPC_MAX_BURST: u32 = 16;

/// A latency histogram in nanoseconds (1 ns to 1 hour, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// A message of `size` bytes with a recognisable pattern.
///
/// The bytes are made once per size for the life of the process (`Bytes::from_static`), so a
/// zero-copy transport's per-message `clone` costs no reference-count update: the harness
/// should not add atomic operations to the path it measures.
pub fn payload(size: usize) -> Bytes {
    static MADE: std::sync::Mutex<Vec<&'static [u8]>> = std::sync::Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = made.iter().find(|b| b.len() == size) {
        return Bytes::from_static(b);
    }
    let b: &'static [u8] = Vec::leak((0..size).map(|i| (i % 251) as u8).collect());
    made.push(b);
    Bytes::from_static(b)
}

/// What the peer does with each connection of a cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Answers each message of the cell's size with a message of the same size (ping-pong).
    Echo,
    /// Counts messages and bytes, answers nothing (stream).
    Sink,
    /// Answers each request with a response of the cell's size that carries the request's
    /// sequence number (its first 8 bytes).
    Rpc,
}

/// Messages and bytes a server connection has received (read by the control thread).
#[derive(Debug, Default)]
pub struct Counter {
    /// Messages received.
    pub msgs: AtomicU64,
    /// Payload bytes received.
    pub bytes: AtomicU64,
}

impl Counter {
    /// Counts one message. Each counter has one writer (its connection's thread), so a plain
    /// load and store do: a locked read-modify-write per message would drain the store buffer
    /// on the hot path being measured.
    #[inline]
    pub fn add(&self, bytes: u64) {
        let m = self.msgs.load(Ordering::Relaxed);
        self.msgs.store(m + 1, Ordering::Relaxed);
        let b = self.bytes.load(Ordering::Relaxed);
        self.bytes.store(b + bytes, Ordering::Relaxed);
    }
}

/// Serves one connection in `role` until `stop` is set or the client closes it.
pub fn serve(
    role: Role,
    conn: &mut dyn MsgConn,
    size: usize,
    stop: &AtomicBool,
    count: &Counter,
) -> Result<(), ConnError> {
    let response = payload(size);
    let mut out = BytesMut::new();
    while !stop.load(Ordering::Relaxed) {
        if role == Role::Sink {
            // The length is all a sink needs: no transport has to make the bytes one slice.
            match conn.recv_len() {
                Ok(len) => count.add(len as u64),
                Err(ConnError::TimedOut) => {}
                Err(ConnError::Closed) => return Ok(()),
                Err(e) => return Err(e),
            }
            continue;
        }
        let msg = match conn.recv_msg() {
            Ok(m) => m,
            Err(ConnError::TimedOut) => continue,
            Err(ConnError::Closed) => return Ok(()),
            Err(e) => return Err(e),
        };
        let len = msg.len();
        count.add(len as u64);
        match role {
            Role::Sink => {} // served by recv_len above
            Role::Echo => {
                if len != size {
                    return Err(ConnError::Protocol("ping of the wrong size"));
                }
                conn.send_msg(&response)?;
            }
            Role::Rpc => {
                if len < RPC_MIN_SIZE {
                    return Err(ConnError::Protocol("rpc request shorter than its header"));
                }
                // One amortised allocation per many responses (BytesMut reuses its block
                // once earlier responses are dropped).
                out.reserve(size.max(RPC_MIN_SIZE));
                out.extend_from_slice(&msg[..RPC_MIN_SIZE]);
                out.extend_from_slice(&response[RPC_MIN_SIZE.min(size)..]);
                let resp = out.split().freeze();
                // A send that times out is backpressure (the congestion controller holds the
                // response back while the client is behind), not a broken connection: keep
                // trying until the cell stops, rather than close on the client.
                loop {
                    match conn.send_msg(&resp) {
                        Err(ConnError::TimedOut) if !stop.load(Ordering::Relaxed) => continue,
                        r => break r?,
                    }
                }
            }
        }
    }
    Ok(())
}

/// Round trips of a `size`-byte message: warm up for `warmup`, then record each round trip
/// (send to whole answer received) for `duration`.
pub fn pingpong(
    conn: &mut dyn MsgConn,
    size: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Histogram<u64>, ConnError> {
    conn.prepare()?;
    let msg = payload(size);
    let mut hist = new_histogram();
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut t0 = Instant::now();
    // The last round trip, recorded once the next ping is on its way: the bookkeeping runs
    // while the peer answers, not inside the next measured round trip.
    let mut last: Option<u64> = None;
    loop {
        conn.send_msg(&msg)?;
        if let Some(ns) = last.take() {
            hist.saturating_record(ns);
        }
        let got = conn.recv_msg()?.len();
        let t1 = Instant::now();
        if got != size {
            return Err(ConnError::Protocol("pong of the wrong size"));
        }
        if t0 >= measure_from {
            last = Some(nanos(t1 - t0));
        }
        if t1 >= end {
            if let Some(ns) = last {
                hist.saturating_record(ns);
            }
            return Ok(hist);
        }
        t0 = t1;
    }
}

/// Sends `msg` on `conn` until `stop` is set; returns the number of messages sent. Adds one
/// to `prepared` once the connection is ready (a bypass stack is built on first use), so the
/// caller starts its measurement only when every sender is sending.
pub fn stream_send(
    conn: &mut dyn MsgConn,
    msg: &Bytes,
    stop: &AtomicBool,
    prepared: &AtomicUsize,
) -> Result<u64, ConnError> {
    conn.prepare()?;
    prepared.fetch_add(1, Ordering::Release);
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        conn.send_msg(msg)?;
        sent += 1;
    }
    Ok(sent)
}

/// What an open-loop rpc run measured.
#[derive(Debug)]
pub struct RpcOutcome {
    /// Latency from each request's scheduled send time to its response, for requests
    /// scheduled in the measurement window.
    pub hist: Histogram<u64>,
    /// Requests scheduled (and sent) in the measurement window.
    pub sent: u64,
    /// Of those, responses received before the drain deadline.
    pub received: u64,
    /// How late the sender got behind its schedule at worst.
    pub max_send_lag: Duration,
}

/// Open-loop requests at `rate` per second: request `k` is due at `start + k / rate` whatever
/// happened to the earlier ones, and its latency is measured from that due time (so a stalled
/// sender or server cannot hide its delay: no coordinated omission). Between sends the client
/// waits for responses with [`MsgConn::recv_msg_before`] until the next request is due: it
/// sleeps or spins as the connection's [`super::transport::Wait`] says. Requests due during the
/// warm-up are sent but not recorded. After the last request, responses are awaited up to
/// `drain`; the rest count as lost.
pub fn rpc(
    conn: &mut dyn MsgConn,
    size: usize,
    rate: f64,
    warmup: Duration,
    duration: Duration,
    drain: Duration,
) -> Result<RpcOutcome, ConnError> {
    // Set-up (a bypass stack and its memif link are built on first use) must not eat into the
    // open-loop schedule: it would show as lateness that every later request inherits.
    conn.prepare()?;
    let size = size.max(RPC_MIN_SIZE);
    let interval_ns = 1e9 / rate;
    let due = |k: u64| Duration::from_nanos((k as f64 * interval_ns) as u64);
    let warm_n = (warmup.as_secs_f64() * rate).ceil() as u64;
    let total_n = warm_n + (duration.as_secs_f64() * rate).ceil() as u64;
    let pad = payload(size);
    let mut out = BytesMut::new();
    let mut hist = new_histogram();
    let (mut next, mut received, mut max_lag) = (0u64, 0u64, Duration::ZERO);
    let start = Instant::now();
    let mut drain_deadline: Option<Instant> = None;
    loop {
        let elapsed = start.elapsed();
        // Send what is due by now, at most a burst before looking at responses again: a
        // sender that fell behind keeps draining its responses (its lateness is measured).
        let mut burst = 0;
        while next < total_n && due(next) <= elapsed && burst < RPC_MAX_BURST {
            out.reserve(size);
            out.extend_from_slice(&next.to_le_bytes());
            out.extend_from_slice(&pad[RPC_MIN_SIZE..]);
            let req = out.split().freeze();
            conn.send_msg(&req)?;
            max_lag = max_lag.max(elapsed - due(next));
            next += 1;
            burst += 1;
        }
        // Wait for a response until the next request is due (not at all if already behind),
        // then take the ones already there too (at most a few bursts' worth, so a steady
        // stream of responses cannot hold up the sends).
        let mut wake = if burst == RPC_MAX_BURST {
            Instant::now()
        } else if next < total_n {
            start + due(next)
        } else {
            *drain_deadline.get_or_insert_with(|| Instant::now() + drain)
        };
        let mut taken = 0;
        while taken < 4 * RPC_MAX_BURST {
            let Some(msg) = conn.recv_msg_before(wake)? else {
                break;
            };
            let t = Instant::now();
            if msg.len() != size {
                return Err(ConnError::Protocol("rpc response of the wrong size"));
            }
            let mut id = [0u8; 8];
            id.copy_from_slice(&msg[..8]);
            let id = u64::from_le_bytes(id);
            if id >= next {
                return Err(ConnError::Protocol("response to a request never sent"));
            }
            if id >= warm_n {
                received += 1;
                hist.saturating_record(nanos(t - (start + due(id))));
            }
            taken += 1;
            // The rest: only what is already there.
            wake = start;
        }
        if next == total_n {
            let d = *drain_deadline.get_or_insert_with(|| Instant::now() + drain);
            if received == total_n - warm_n || Instant::now() >= d {
                break;
            }
        }
    }
    Ok(RpcOutcome {
        hist,
        sent: total_n - warm_n,
        received,
        max_send_lag: max_lag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// An in-process "server" that answers every message with the same bytes after `delay`;
    /// a send made during `[stall_from, stall_to)` (measured from creation) blocks until
    /// `stall_to`, like a send into a full socket buffer while the peer is descheduled.
    struct FakeConn {
        born: Instant,
        delay: Duration,
        stall_from: Duration,
        stall_to: Duration,
        queue: VecDeque<(Instant, Bytes)>,
        last: Bytes,
        /// When each send was made and each receive returned.
        sends: Vec<Instant>,
        recvs: Vec<Instant>,
    }

    impl FakeConn {
        fn new(delay: Duration, stall: (Duration, Duration)) -> Self {
            FakeConn {
                born: Instant::now(),
                delay,
                stall_from: stall.0,
                stall_to: stall.1,
                queue: VecDeque::new(),
                last: Bytes::new(),
                sends: Vec::new(),
                recvs: Vec::new(),
            }
        }
    }

    impl MsgConn for FakeConn {
        fn send_msg(&mut self, msg: &Bytes) -> Result<(), ConnError> {
            let at = self.born.elapsed();
            if at >= self.stall_from && at < self.stall_to {
                std::thread::sleep(self.stall_to - at);
            }
            self.sends.push(Instant::now());
            self.queue
                .push_back((Instant::now() + self.delay, msg.clone()));
            Ok(())
        }
        fn recv_msg(&mut self) -> Result<&[u8], ConnError> {
            let (ready, _) = *self.queue.front().ok_or(ConnError::TimedOut)?;
            while Instant::now() < ready {}
            self.last = self.queue.pop_front().expect("front exists").1;
            self.recvs.push(Instant::now());
            Ok(&self.last)
        }
        fn recv_msg_before(&mut self, deadline: Instant) -> Result<Option<&[u8]>, ConnError> {
            loop {
                let ready = self.queue.front().map(|(r, _)| *r <= Instant::now());
                if ready == Some(true) || Instant::now() >= deadline {
                    break;
                }
            }
            match self.queue.front() {
                Some((ready, _)) if *ready <= Instant::now() => {
                    self.last = self.queue.pop_front().expect("front exists").1;
                    Ok(Some(&self.last))
                }
                _ => Ok(None),
            }
        }
    }

    #[test]
    fn pingpong_records_every_round_trip_after_the_warmup() {
        let mut c = FakeConn::new(Duration::from_micros(50), (Duration::MAX, Duration::MAX));
        let warmup = Duration::from_millis(20);
        let before = Instant::now();
        let h = pingpong(&mut c, 64, warmup, Duration::from_millis(100)).unwrap();
        // Round trip i (i >= 1) starts when the answer to i - 1 was taken: between the fake's
        // return of receive i - 1 and its send i. It is recorded when it starts after the
        // warm-up, which ends `warmup` after pingpong's start (between `before` and the first
        // send). So the count lies between these bounds however the machine schedules us;
        // a 100 ms window of 50 us round trips has room for up to 2,000.
        let (s, r) = (&c.sends, &c.recvs);
        assert_eq!(s.len(), r.len());
        let surely = (1..r.len()).filter(|&i| r[i - 1] >= s[0] + warmup).count() as u64;
        let maybe = (1..s.len()).filter(|&i| s[i] >= before + warmup).count() as u64;
        assert!(
            surely <= h.len() && h.len() <= maybe && h.len() <= 2000,
            "{surely} <= {} <= {maybe} of {} round trips",
            h.len(),
            s.len()
        );
        if !h.is_empty() {
            // Each at least the fake's delay.
            assert!(h.min() >= 50_000, "{}", h.min());
        }
    }

    #[test]
    fn rpc_sends_on_schedule_and_counts_a_stall_against_every_request_it_delayed() {
        // 10k req/s for 300 ms; the sender is stuck from 100 to 150 ms.
        let stall = (Duration::from_millis(100), Duration::from_millis(150));
        let mut c = FakeConn::new(Duration::from_micros(20), stall);
        let out = rpc(
            &mut c,
            64,
            10_000.0,
            Duration::ZERO,
            Duration::from_millis(300),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(out.sent, 3000);
        assert_eq!(out.received, 3000);
        assert_eq!(out.hist.len(), 3000);
        assert!(
            out.max_send_lag >= Duration::from_millis(45),
            "{:?}",
            out.max_send_lag
        );
        // The ~500 requests due during the stall waited for it: measured from their due time,
        // at least a sixth of all samples are >= 1 ms late and the slowest 5 % >= 35 ms. A
        // measurement from the actual send time would show one slow sample. (Only lower
        // bounds: a descheduled test thread adds late samples, never removes them.)
        let slow = out
            .hist
            .iter_recorded()
            .filter(|v| v.value_iterated_to() >= 1_000_000);
        let slow: u64 = slow.map(|v| v.count_at_value()).sum();
        assert!(slow >= 450, "{slow}");
        assert!(out.hist.value_at_quantile(0.95) >= 5_000_000);
        assert!(out.hist.max() >= 45_000_000, "{}", out.hist.max());
    }

    #[test]
    fn rpc_counts_unanswered_requests_as_lost() {
        // Every answer comes after the drain deadline.
        let mut c = FakeConn::new(Duration::from_secs(5), (Duration::MAX, Duration::MAX));
        let out = rpc(
            &mut c,
            16,
            1_000.0,
            Duration::ZERO,
            Duration::from_millis(50),
            Duration::from_millis(20),
        )
        .unwrap();
        assert_eq!((out.sent, out.received, out.hist.len()), (50, 0, 0));
    }

    #[test]
    fn echo_server_rejects_a_ping_of_the_wrong_size_and_stops_on_request() {
        let mut c = FakeConn::new(Duration::ZERO, (Duration::MAX, Duration::MAX));
        c.send_msg(&payload(10)).unwrap();
        let (stop, count) = (AtomicBool::new(false), Counter::default());
        assert!(matches!(
            serve(Role::Echo, &mut c, 64, &stop, &count),
            Err(ConnError::Protocol(_))
        ));
        stop.store(true, Ordering::Relaxed);
        assert!(serve(Role::Echo, &mut c, 64, &stop, &count).is_ok());
    }
}
