//! `bypass memif-bench`: a driver that measures one memif side against any memif peer (our
//! own, or dpdk-testpmd), and the child role the integration tests spawn.
//!
//! Modes:
//! - `ping`: send one frame, spin until it comes back, record the round trip (hdrhistogram,
//!   ns); checks every reply carries the payload that was sent (MACs may be swapped).
//! - `pong`: bounce every received frame back unchanged (like testpmd `io` forwarding).
//! - `tx`: send frames of `--size` bytes as fast as the ring takes them, for `--duration`.
//! - `rx`: count received frames; report the rate between the first and the last second.
//! - `loopback`: both roles in this one thread forwarding circulating frames; CPU
//!   nanoseconds per hop (the driver's cost, independent of the scheduler's share of a core;
//!   compare with testpmd `io` forwarding between net_memif server and client in one
//!   process).
//! - `cacheline`: no memif; two threads on cores 0 and 1 bounce one cache line (the floor
//!   any shared-memory ping-pong on this machine can reach).
//!
//! Output is `key=value` lines (machine-readable, used by scripts/bench-memif.sh and tests).
//! The command line that fills [`Options`] is in [`super`] (`bypass memif-bench`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bypass::mem::PktBuf;
use bypass::pmd::memif::{InterfaceConfig, Memif, MemifConfig, Role};
use bypass::pmd::Port;

/// Options of one run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Role on the socket.
    pub role: Role,
    /// Socket path.
    pub socket: PathBuf,
    /// Interface id.
    pub id: u32,
    /// What to do.
    pub mode: String,
    /// Frame size in bytes.
    pub size: usize,
    /// Round trips to measure (ping) or frames to bounce before exiting (pong; 0 = forever).
    pub count: u64,
    /// Round trips to discard first (ping).
    pub warmup: u64,
    /// How long to run (tx, rx; pong also exits after this long when non-zero).
    pub duration: Duration,
    /// Core to pin to.
    pub core: Option<usize>,
    /// How long to wait for the link.
    pub link_timeout: Duration,
    /// Ring size, log2.
    pub log2_ring: u8,
    /// Ping: a measured frame not answered within this long is given up on (counted lost; a
    /// warm-up frame after at most 200 ms); an intact answer that comes later is counted
    /// late, not bad.
    pub answer_timeout: Duration,
    /// Client: copy received frames out of the shared region (`InterfaceConfig::copy_rx`).
    pub copy_rx: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            role: Role::Client,
            socket: PathBuf::from("/run/bypass-memif.sock"),
            id: 0,
            mode: "ping".into(),
            size: 64,
            count: 100_000,
            warmup: 10_000,
            duration: Duration::from_secs(5),
            core: None,
            link_timeout: Duration::from_secs(30),
            log2_ring: 10,
            answer_timeout: Duration::from_millis(200),
            copy_rx: false,
        }
    }
}

fn pin(core: Option<usize>) {
    if let Some(c) = core {
        let ok = core_affinity::set_for_current(core_affinity::CoreId { id: c });
        if !ok {
            tracing::warn!(core = c, "memif-bench: could not pin to the core");
        }
    }
}

/// Fill `b` with a test frame: broadcast-free unicast MACs, ethertype 0x88b5 (local
/// experimental), then the sequence number, then a byte pattern.
fn fill(b: &mut PktBuf, size: usize, seq: u64) {
    let Ok(d) = b.append(size) else { return };
    d[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    d[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    d[12..14].copy_from_slice(&[0x88, 0xb5]);
    d[14..22].copy_from_slice(&seq.to_le_bytes());
    for (i, x) in d[22..].iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(7).wrapping_add(seq as u8);
    }
}

/// True when `d` is the frame `fill` made for `seq` (MAC addresses may be swapped).
fn check(d: &[u8], size: usize, seq: u64) -> bool {
    if d.len() != size || d[12..14] != [0x88, 0xb5] || d[14..22] != seq.to_le_bytes() {
        return false;
    }
    d[22..]
        .iter()
        .enumerate()
        .all(|(i, &x)| x == (i as u8).wrapping_mul(7).wrapping_add(seq as u8))
}

/// Whether `d` is an intact answer to a frame before `before` (one already given up on).
fn late_answer(d: &[u8], size: usize, before: u64) -> bool {
    d.len() == size
        && d.get(14..22).is_some_and(|s| {
            let seq = u64::from_le_bytes(s.try_into().unwrap_or_default());
            seq < before && check(d, size, seq)
        })
}

/// The physical floor for a ping-pong: two threads pinned to cores 0 and 1 bounce one cache
/// line (no memif, no process boundary), `count` round trips in an hdrhistogram.
pub fn cacheline(o: &Options) -> Result<String, String> {
    let h = cacheline_rtt((0, 1), o.warmup, o.count, None)?;
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    Ok(format!(
        "rtt_us cacheline samples={} p50={:.3} p90={:.3} p99={:.3} p99.9={:.3} p99.99={:.3} max={:.3} jitter_p99-p50={:.3}\n",
        h.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        q(0.9999),
        h.max() as f64 / 1000.0,
        q(0.99) - q(0.5)
    ))
}

/// Round trips of one cache line between a thread pinned to `cores.0` (which times them) and
/// one pinned to `cores.1` (which answers): `warmup` unrecorded round trips, then up to
/// `count` recorded ones (ns). With a `limit`, the whole measurement stops once it has run
/// that long, and the warm-up ends after a tenth of it at the latest (on a loaded machine
/// the two threads run together only part of the time, and each round trip waits for that).
/// The floor under any shared-memory ping-pong between those two cores, and a reading of
/// their current state (BENCHMARKING.md: the two vCPUs of a VM move between a near and a far
/// state). Fails when a thread cannot be pinned (no such core) or no round trip was recorded.
pub fn cacheline_rtt(
    cores: (usize, usize),
    warmup: u64,
    count: u64,
    limit: Option<Duration>,
) -> Result<hdrhistogram::Histogram<u64>, String> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    #[repr(align(128))]
    struct Line(AtomicU64);
    if cores.0 == cores.1 {
        return Err(format!("both ends on core {}", cores.0));
    }
    let pin = |c: usize| core_affinity::set_for_current(core_affinity::CoreId { id: c });
    let line = Arc::new(Line(AtomicU64::new(0)));
    // Set by whichever side stops first (done, a failed pin): the other stops spinning.
    let stop = Arc::new(AtomicBool::new(false));
    let (l2, stop2) = (line.clone(), stop.clone());
    let echo = std::thread::spawn(move || {
        if !pin(cores.1) {
            stop2.store(true, Ordering::Release);
            return false;
        }
        let mut want = 1u64;
        while !stop2.load(Ordering::Acquire) {
            if l2.0.load(Ordering::Acquire) == want {
                l2.0.store(want + 1, Ordering::Release);
                want += 2;
            } else {
                std::hint::spin_loop();
            }
        }
        true
    });
    let timer = std::thread::spawn(move || {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
            .map_err(|e| e.to_string())?;
        if !pin(cores.0) {
            stop.store(true, Ordering::Release);
            return Err(format!("cannot pin a thread to core {}", cores.0));
        }
        let start = Instant::now();
        let end = limit.map(|l| start + l);
        let warm_end = limit.map(|l| start + l / 10);
        let mut i = 0u64;
        let mut warm = warmup > 0;
        'run: while h.len() < count {
            let t0 = Instant::now();
            line.0.store(2 * i + 1, Ordering::Release);
            while line.0.load(Ordering::Acquire) != 2 * i + 2 {
                if stop.load(Ordering::Acquire) {
                    break 'run;
                }
                std::hint::spin_loop();
            }
            let rtt = t0.elapsed();
            i += 1;
            if !warm {
                let _ = h.record(rtt.as_nanos() as u64);
            } else if i >= warmup || warm_end.is_some_and(|e| t0 >= e) {
                warm = false;
            }
            if end.is_some_and(|e| t0 >= e) {
                break;
            }
        }
        stop.store(true, Ordering::Release);
        Ok(h)
    });
    let echo_pinned = echo.join().unwrap_or(false);
    let h = timer
        .join()
        .map_err(|_| "the timing thread panicked".to_string())??;
    if !echo_pinned {
        return Err(format!("cannot pin a thread to core {}", cores.1));
    }
    if h.is_empty() {
        return Err("no round trip completed in time".into());
    }
    Ok(h)
}

/// The driver's own cost, independent of how much of a core the scheduler grants: a client
/// and a server port in this one thread forward 256 circulating frames back and forth
/// (each side sends back out what it receives), timed in CPU time of this thread. Reports
/// CPU nanoseconds per hop (a frame received on one side and sent back out of it).
pub fn loopback(o: &Options) -> Result<String, String> {
    let sock = std::env::temp_dir().join(format!("bpx-memif-loop-{}.sock", std::process::id()));
    let mk = |role| {
        let mut cfg = MemifConfig::new(&sock, role, o.id);
        cfg.interfaces[0].log2_ring_size = o.log2_ring;
        cfg.interfaces[0].copy_rx = o.copy_rx;
        Memif::new(cfg).map_err(|e| e.to_string())
    };
    let server = mk(Role::Server)?;
    let client = mk(Role::Client)?;
    pin(o.core);
    let _core = bypass::mem::CoreSlot::claim_any().ok();
    let mut c = client.port(o.id, 0).map_err(|e| e.to_string())?;
    let mut s = server.port(o.id, 0).map_err(|e| e.to_string())?;
    let end = Instant::now() + Duration::from_secs(10);
    while !(c.link().is_up() && s.link().is_up()) {
        if Instant::now() > end {
            return Err("loopback link did not come up".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // Prime the loop with 256 frames from the client, then forward whatever arrives on
    // each side back out of the same side (testpmd `io` forwarding between a memif server
    // and client in one process does the same work).
    let mut v: Vec<PktBuf> = Vec::with_capacity(bypass::pmd::MAX_BURST);
    for _ in 0..256 {
        let mut b = c
            .alloc_tx()
            .map_err(|_| "client pool exhausted".to_string())?;
        let Ok(d) = b.append(o.size) else { break };
        d[..14].copy_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x88, 0xb5]);
        v.push(b);
    }
    while !v.is_empty() {
        c.tx_burst(&mut v);
    }
    let mut hops = 0u64;
    let mut warm = true;
    let (mut t0, mut h0) = (thread_cpu(), 0u64);
    let wall = Instant::now();
    while hops - h0 < o.count || warm {
        for p in [&mut s, &mut c] {
            p.rx_burst(&mut v, 32);
            hops += v.len() as u64;
            while !v.is_empty() {
                p.tx_burst(&mut v);
            }
        }
        if warm && hops >= o.count / 10 {
            warm = false;
            t0 = thread_cpu();
            h0 = hops;
        }
        if wall.elapsed() > Duration::from_secs(120) {
            return Err("loopback stalled".into());
        }
    }
    let cpu = thread_cpu() - t0;
    let f = (hops - h0) as f64;
    Ok(format!(
        "loopback size={} copy_rx={} hops={} cpu_ns_per_hop={:.1} mpps_per_cpu={:.2} \
         (one hop = rx_burst on one side + tx_burst of the same frame back out of it)\n",
        o.size,
        o.copy_rx,
        hops - h0,
        cpu / f * 1e9,
        f / cpu / 1e6
    ))
}

/// Run one benchmark; returns the report.
pub fn run(o: &Options) -> Result<String, String> {
    if o.mode == "cacheline" {
        return cacheline(o);
    }
    if o.mode == "loopback" {
        return loopback(o);
    }
    let mut cfg = MemifConfig::new(&o.socket, o.role, o.id);
    let mut ic = InterfaceConfig::new(o.id);
    ic.log2_ring_size = o.log2_ring;
    ic.copy_rx = o.copy_rx;
    cfg.interfaces = vec![ic];
    cfg.reconnect_interval = Duration::from_millis(20);
    let memif = Memif::new(cfg).map_err(|e| e.to_string())?;
    let mut port = memif.port(o.id, 0).map_err(|e| e.to_string())?;
    pin(o.core);
    // This thread is the poll loop: per-core pool caches make alloc/free cheaper.
    let _core = bypass::mem::CoreSlot::claim_any().ok();
    let deadline = Instant::now() + o.link_timeout;
    while !port.link().is_up() {
        if Instant::now() > deadline {
            return Err(format!(
                "link did not come up in {:?} (last error: {:?})",
                o.link_timeout,
                memif.last_error(o.id)
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "link=up peer={:?} pool_on_hugepages={}",
        memif.peer_name(o.id).unwrap_or_default(),
        memif.pool(o.id).is_some_and(|p| p.region().is_hugepage())
    );
    match o.mode.as_str() {
        "ping" => ping(&mut port, o, &mut out)?,
        "pong" => pong(&mut port, o, &mut out),
        "tx" => tx(&mut port, o, &mut out),
        "rx" => rx(&mut port, o, &mut out),
        m => return Err(format!("unknown mode {m}")),
    }
    let s = port.stats();
    let _ = writeln!(
        out,
        "stats rx_packets={} tx_packets={} rx_errors={} rx_no_buffer={} tx_ring_full={}",
        s.rx_packets, s.tx_packets, s.rx_errors, s.rx_no_buffer, s.tx_ring_full
    );
    Ok(out)
}

/// How long ping waits for the answer to a warm-up frame at most.
const WARMUP_ANSWER_TIMEOUT: Duration = Duration::from_millis(200);

fn ping(port: &mut impl Port, o: &Options, out: &mut String) -> Result<(), String> {
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .map_err(|e| e.to_string())?;
    let mut txv: Vec<PktBuf> = Vec::with_capacity(bypass::pmd::MAX_BURST);
    let mut rxv: Vec<PktBuf> = Vec::with_capacity(bypass::pmd::MAX_BURST);
    let mut bad = 0u64;
    let mut lost = 0u64;
    let mut lost_warmup = 0u64;
    // Intact answers to frames given up on (counted in lost_warmup or lost) that came after
    // all: a peer still starting, or a loaded machine, answers late; not a bad frame.
    let mut late_warmup = 0u64;
    let mut late = 0u64;
    let total = o.warmup + o.count;
    let mut seq = 0u64;
    while seq < total {
        let mut b = port.alloc_tx().map_err(|_| "pool exhausted".to_string())?;
        fill(&mut b, o.size, seq);
        txv.push(b);
        let t0 = Instant::now();
        while port.tx_burst(&mut txv) == 0 {
            if !port.link().is_up() {
                return Err(format!("link went down at seq {seq}: {:?}", port.stats()));
            }
        }
        // Warm-up frames are given up on after 200 ms at most: a peer still starting drops
        // some, and waiting longer for them only delays the run.
        let limit = if seq < o.warmup {
            o.answer_timeout.min(WARMUP_ANSWER_TIMEOUT)
        } else {
            o.answer_timeout
        };
        let mut spins = 0u64;
        let mut got = false;
        while !got {
            if port.rx_burst(&mut rxv, bypass::pmd::MAX_BURST) > 0 {
                let t1 = Instant::now();
                for f in rxv.drain(..) {
                    if check(f.data(), o.size, seq) {
                        got = true;
                    } else if late_answer(f.data(), o.size, seq.min(o.warmup)) {
                        late_warmup += 1;
                    } else if late_answer(f.data(), o.size, seq) {
                        late += 1;
                    } else {
                        bad += 1;
                    }
                }
                if got && seq >= o.warmup {
                    let _ = h.record((t1 - t0).as_nanos() as u64);
                }
            }
            spins += 1;
            if !got && spins.is_multiple_of(65536) && t0.elapsed() > limit {
                // A frame sent while the peer was still starting may be dropped by it.
                if seq < o.warmup {
                    tracing::warn!(
                        seq,
                        timeout = ?o.answer_timeout,
                        "memif-bench: frame not answered in time (warmup)"
                    );
                    lost_warmup += 1;
                } else {
                    lost += 1;
                }
                break;
            }
        }
        seq += 1;
    }
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    let _ = writeln!(
        out,
        "rtt_us size={} samples={} p50={:.3} p90={:.3} p99={:.3} p99.9={:.3} p99.99={:.3} max={:.3} jitter_p99-p50={:.3}",
        o.size,
        h.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        q(0.9999),
        h.max() as f64 / 1000.0,
        q(0.99) - q(0.5)
    );
    let _ = writeln!(
        out,
        "ping bad_frames={bad} lost={lost} lost_in_warmup={lost_warmup} \
         late_in_warmup={late_warmup} late={late}"
    );
    if bad > 0 || lost > 0 {
        return Err(format!("{out}ping: {bad} bad frames, {lost} lost"));
    }
    Ok(())
}

fn pong(port: &mut impl Port, o: &Options, out: &mut String) {
    let mut v: Vec<PktBuf> = Vec::with_capacity(bypass::pmd::MAX_BURST);
    let start = Instant::now();
    let mut n = 0u64;
    let mut iter = 0u64;
    loop {
        if port.rx_burst(&mut v, bypass::pmd::MAX_BURST) > 0 {
            while !v.is_empty() {
                let k = port.tx_burst(&mut v);
                n += k as u64;
                if k == 0 && !port.link().is_up() {
                    v.clear();
                }
            }
        }
        iter += 1;
        if iter.is_multiple_of(4096) {
            if o.count > 0 && n >= o.count {
                break;
            }
            if !o.duration.is_zero() && start.elapsed() > o.duration {
                break;
            }
        }
    }
    let _ = writeln!(out, "pong bounced={n}");
}

fn tx(port: &mut impl Port, o: &Options, out: &mut String) {
    let mut v: Vec<PktBuf> = Vec::with_capacity(64);
    let start = Instant::now();
    let cpu0 = thread_cpu();
    let mut sent = 0u64;
    let mut seq = 0u64;
    let mut iter = 0u64;
    // Frames are a copy of one template with the sequence number written in, as
    // dpdk-testpmd's txonly builds them (a header template copied into each mbuf): the
    // generator's cost is not what this measures. (`fill`'s per-byte pattern, which the
    // ping-pong checks, cost ~130 instructions a frame.)
    let mut template = vec![0u8; o.size];
    {
        let Ok(mut b) = port.alloc_tx() else {
            let _ = writeln!(out, "tx: no buffer");
            return;
        };
        fill(&mut b, o.size, 0);
        template.copy_from_slice(b.data());
    }
    loop {
        while v.len() < 32 {
            let Ok(mut b) = port.alloc_tx() else { break };
            if b.extend_from_slice(&template).is_ok() && o.size >= 22 {
                b.data_mut()[14..22].copy_from_slice(&seq.to_le_bytes());
            }
            seq += 1;
            v.push(b);
        }
        sent += port.tx_burst(&mut v) as u64;
        iter += 1;
        if iter.is_multiple_of(1024) && start.elapsed() > o.duration {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = (thread_cpu() - cpu0).max(1e-9);
    let _ = writeln!(
        out,
        "tx size={} frames={} secs={:.3} mpps={:.3} cpu_share={:.3} mpps_per_cpu={:.3}",
        o.size,
        sent,
        secs,
        sent as f64 / secs / 1e6,
        cpu / secs,
        sent as f64 / cpu / 1e6
    );
}

/// CPU seconds this thread has run (so rates can be normalised to a whole core when the
/// machine is shared: frames per CPU-second).
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn rx(port: &mut impl Port, o: &Options, out: &mut String) {
    let mut v: Vec<PktBuf> = Vec::with_capacity(bypass::pmd::MAX_BURST);
    let mut n = 0u64;
    let mut first: Option<Instant> = None;
    let mut mark: Option<(Instant, u64, f64)> = None;
    let mut end_mark = (Instant::now(), 0u64, 0.0f64);
    let mut iter = 0u64;
    loop {
        let k = port.rx_burst(&mut v, bypass::pmd::MAX_BURST);
        if k > 0 {
            n += k as u64;
            v.clear();
            if first.is_none() {
                first = Some(Instant::now());
            }
        }
        iter += 1;
        if iter.is_multiple_of(1024) {
            if let Some(f) = first {
                let now = Instant::now();
                let el = (now - f).as_secs_f64();
                // Measure from 1 s after the first frame to 1 s before the end.
                if mark.is_none() && el >= 1.0 {
                    mark = Some((now, n, thread_cpu()));
                }
                if el <= o.duration.as_secs_f64() - 1.0 {
                    end_mark = (now, n, thread_cpu());
                }
                if el > o.duration.as_secs_f64() {
                    break;
                }
            } else if iter.is_multiple_of(1 << 20) && !port.link().is_up() {
                break;
            }
        }
    }
    let (t0, n0, c0) = mark.unwrap_or((first.unwrap_or(end_mark.0), 0, end_mark.2));
    let secs = (end_mark.0 - t0).as_secs_f64().max(1e-9);
    let cpu = (end_mark.2 - c0).max(1e-9);
    let frames = end_mark.1.saturating_sub(n0) as f64;
    let _ = writeln!(
        out,
        "rx size={} frames={} window_secs={:.3} mpps={:.3} cpu_share={:.3} mpps_per_cpu={:.3}",
        o.size,
        n,
        secs,
        frames / secs / 1e6,
        cpu / secs,
        frames / cpu / 1e6
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern() {
        let pool = bypass::mem::Pool::new(&bypass::mem::PoolConfig::new("t", 2, 2304)).unwrap();
        let mut b = pool.alloc().unwrap();
        fill(&mut b, 100, 42);
        assert!(check(b.data(), 100, 42));
        assert!(!check(b.data(), 100, 43));
    }

    /// An intact answer to an earlier frame is late, not bad; a corrupted one, or one to a
    /// frame not sent yet, is bad.
    #[test]
    fn late_answers_are_told_from_bad_frames() {
        let pool = bypass::mem::Pool::new(&bypass::mem::PoolConfig::new("t", 2, 2304)).unwrap();
        let mut b = pool.alloc().unwrap();
        fill(&mut b, 100, 3);
        assert!(late_answer(b.data(), 100, 5));
        assert!(!late_answer(b.data(), 100, 3), "not before frame 3");
        assert!(!late_answer(b.data(), 64, 5), "wrong size");
        let mut d = b.data().to_vec();
        d[40] ^= 1;
        assert!(!late_answer(&d, 100, 5), "corrupted");
    }
}
