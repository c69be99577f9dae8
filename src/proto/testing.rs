//! A client/server [`Pair`] of endpoints driven in virtual time over [`pmd::sim`] links: the
//! harness for protocol tests, property tests, fuzzing and benchmarks (after quinn-proto's
//! `tests/util.rs`).
//!
//! Every datagram is framed in Ethernet/IPv4/UDP with real checksums ([`wire::frame`]), so
//! the links' bit flips are caught where a NIC and an IP stack would catch them. Each side
//! has its own packet pool; `Pool::stats().in_use` shows what is held.
//!
//! [`pmd::sim`]: crate::pmd::sim
//! [`wire::frame`]: crate::wire::frame

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use super::{ConnectionHandle, Endpoint, EndpointConfig, Event, Instant, RecvMsg};
use crate::mem::{HugePages, Pool, PoolConfig};
use crate::pmd::sim::{Link, LinkConfig};
use crate::wire::frame::{decap, encap, FrameAddrs};
use crate::wire::EthernetAddress;

/// Which endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// The connecting side.
    Client,
    /// The accepting side.
    Server,
}

/// Two endpoints joined by two simulated links.
#[derive(Debug)]
pub struct Pair {
    /// Virtual time.
    pub now: Instant,
    /// Client endpoint.
    pub client: Endpoint,
    /// Server endpoint.
    pub server: Endpoint,
    /// Client-to-server link.
    pub c2s: Link,
    /// Server-to-client link.
    pub s2c: Link,
    /// Client's packet pool.
    pub client_pool: Pool,
    /// Server's packet pool.
    pub server_pool: Pool,
    /// Frames dropped by decapsulation (corrupt, caught by checksums).
    pub bad_frames: u64,
    /// Transmits skipped because a pool was empty.
    pub pool_empty: u64,
    /// Mark every n-th delivered datagram ECN-CE, as a congested switch would (0: never).
    pub ce_every: u64,
    /// When each side's poll loop runs, `[client, server]` (`None`: always), as a host whose
    /// cores are shared with other work schedules it: while a side is off, its timers wait,
    /// it sends nothing and the frames sent to it wait on the link.
    pub sched: [Option<RunSchedule>; 2],
    /// When each side's loop last ran ([`Endpoint::note_poll`]).
    polled: [Instant; 2],
    delivered: u64,
    caddr: FrameAddrs,
    saddr: FrameAddrs,
}

/// A poll loop that runs `on_ns` of every `period_ns`, starting `phase_ns` into each period:
/// a descheduled process (see [`Pair::sched`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSchedule {
    /// Length of one period.
    pub period_ns: u64,
    /// Time the loop runs in each period.
    pub on_ns: u64,
    /// Where in the period it starts running.
    pub phase_ns: u64,
}

impl RunSchedule {
    /// Whether the loop runs at `t`.
    pub fn runs(&self, t: Instant) -> bool {
        self.offset(t) < self.on_ns
    }

    /// How far into its period `t` is.
    fn offset(&self, t: Instant) -> u64 {
        let period = self.period_ns.max(1);
        (t.as_nanos() + period - self.phase_ns % period) % period
    }

    /// The first time at or after `t` at which the loop runs.
    pub fn next_on(&self, t: Instant) -> Instant {
        if self.runs(t) {
            return t;
        }
        let period = self.period_ns.max(1);
        let x = (t.as_nanos() + period - self.phase_ns % period) % period;
        Instant::from_nanos(t.as_nanos() + (period - x))
    }
}

/// Client address used by pairs.
pub const CLIENT_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 40000);
/// Server address used by pairs.
pub const SERVER_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 7000);

fn pool(name: &str, slots: u32) -> Pool {
    let cfg = PoolConfig {
        hugepages: HugePages::Never,
        headroom: 192,
        cache_size: 0,
        ..PoolConfig::new(name, slots, 2048)
    };
    Pool::new(&cfg).expect("test pool")
}

impl Pair {
    /// A pair with the given endpoint and link settings; `seed` drives both links and both
    /// endpoints' ids.
    pub fn new(
        client: EndpointConfig,
        server: EndpointConfig,
        link: LinkConfig,
        seed: u64,
    ) -> Pair {
        Pair::with_links(client, server, link.clone(), link, seed)
    }

    /// As [`Pair::new`] with different links per direction.
    ///
    /// Both endpoints' cookie keys are derived from `seed` (replacing the configs'), so that
    /// a seeded run is the same in every process (the default key is random per process).
    pub fn with_links(
        mut client: EndpointConfig,
        mut server: EndpointConfig,
        c2s: LinkConfig,
        s2c: LinkConfig,
        seed: u64,
    ) -> Pair {
        for (i, cfg) in [&mut client, &mut server].into_iter().enumerate() {
            let k = seed ^ (0xc00c_1e00 + i as u64);
            cfg.cookie_key = [crate::rng::mix64(k), crate::rng::mix64(!k)];
        }
        let client_pool = pool("pair-client", 8192);
        let server_pool = pool("pair-server", 8192);
        let cmac = EthernetAddress([2, 0, 0, 0, 0, 1]);
        let smac = EthernetAddress([2, 0, 0, 0, 0, 2]);
        Pair {
            now: Instant::from_nanos(1_000_000),
            client: Endpoint::new(client, seed ^ 0x1111),
            server: Endpoint::new(server, seed ^ 0x2222),
            c2s: Link::new(c2s, seed ^ 0x3333, server_pool.clone()),
            s2c: Link::new(s2c, seed ^ 0x4444, client_pool.clone()),
            client_pool,
            server_pool,
            bad_frames: 0,
            pool_empty: 0,
            ce_every: 0,
            sched: [None, None],
            polled: [Instant::from_nanos(1_000_000); 2],
            delivered: 0,
            caddr: FrameAddrs {
                src_mac: cmac,
                dst_mac: smac,
                src: CLIENT_ADDR,
                dst: SERVER_ADDR,
            },
            saddr: FrameAddrs {
                src_mac: smac,
                dst_mac: cmac,
                src: SERVER_ADDR,
                dst: CLIENT_ADDR,
            },
        }
    }

    /// The endpoint of one side.
    pub fn endpoint(&mut self, p: Peer) -> &mut Endpoint {
        match p {
            Peer::Client => &mut self.client,
            Peer::Server => &mut self.server,
        }
    }

    /// Start a connection from the client and drive until both sides are connected (or
    /// `limit` of virtual time passed). Returns (client handle, server handle).
    pub fn connect(&mut self) -> Option<(ConnectionHandle, ConnectionHandle)> {
        let ch = self
            .client
            .connect(self.now, SocketAddr::V4(SERVER_ADDR))
            .ok()?;
        let deadline = self.now + std::time::Duration::from_secs(5);
        let mut sh = None;
        let mut client_up = false;
        while self.now < deadline {
            self.step();
            if sh.is_none() {
                sh = self.server.poll_incoming();
            }
            if let Some(c) = self.client.connection(ch) {
                while let Some(e) = c.poll_event() {
                    if matches!(e, Event::Connected) {
                        client_up = true;
                    }
                }
            } else {
                return None;
            }
            if client_up {
                if let Some(s) = sh {
                    let c = self.server.connection(s)?;
                    while c.poll_event().is_some() {}
                    return Some((ch, s));
                }
            }
        }
        None
    }

    fn transmit(&mut self, p: Peer, max: usize) -> usize {
        let (ep, pool, link, addrs) = match p {
            Peer::Client => (
                &mut self.client,
                &self.client_pool,
                &mut self.c2s,
                &self.caddr,
            ),
            Peer::Server => (
                &mut self.server,
                &self.server_pool,
                &mut self.s2c,
                &self.saddr,
            ),
        };
        let mut n = 0;
        while n < max {
            let Ok(mut buf) = pool.alloc() else {
                self.pool_empty += 1;
                break;
            };
            if ep.poll_transmit(self.now, &mut buf).is_none() {
                break;
            }
            if encap(&mut buf, addrs).is_ok() {
                link.send(self.now, buf);
            }
            n += 1;
        }
        n
    }

    fn deliver(&mut self, p: Peer) -> usize {
        let (ep, link) = match p {
            Peer::Client => (&mut self.client, &mut self.s2c),
            Peer::Server => (&mut self.server, &mut self.c2s),
        };
        let mut n = 0;
        while let Some(mut f) = link.recv(self.now) {
            n += 1;
            self.delivered += 1;
            let ce = self.ce_every > 0 && self.delivered.is_multiple_of(self.ce_every);
            match decap(&mut f) {
                Ok(d) => ep.handle(self.now, SocketAddr::V4(d.src), d.ecn_ce || ce, f),
                Err(_) => self.bad_frames += 1,
            }
        }
        n
    }

    /// One round at the current time: timers, transmits, arrivals. If nothing happened,
    /// advance virtual time to the next event. Returns false when there is no next event.
    pub fn step(&mut self) -> bool {
        self.step_to(None)
    }

    /// [`step`](Self::step), never moving time past `limit`: when nothing is due before it,
    /// time moves to `limit` and false is returned (as `step` returns false when nothing is
    /// due at all). For a test that watches what happens in a span of virtual time.
    pub fn step_until(&mut self, limit: Instant) -> bool {
        if self.now >= limit {
            return false;
        }
        self.step_to(Some(limit))
    }

    fn step_to(&mut self, limit: Option<Instant>) -> bool {
        let on = [self.runs(Peer::Client), self.runs(Peer::Server)];
        // A running loop polls all the time: it last ran just now, or, woken since the last
        // step, when it was descheduled (the end of its previous run).
        for (i, p) in [Peer::Client, Peer::Server].into_iter().enumerate() {
            if !on[i] {
                continue;
            }
            let mut last = self.now;
            if let Some(s) = self.sched[i] {
                let start = self.now.as_nanos().saturating_sub(s.offset(self.now));
                if self.polled[i].as_nanos() < start {
                    let prev_end = (start + s.on_ns).saturating_sub(s.period_ns.max(1));
                    last = Instant::from_nanos(prev_end.max(self.polled[i].as_nanos()));
                }
            }
            self.endpoint(p).note_poll(last);
            self.polled[i] = last;
        }
        // A scheduled loop (one that stalls) runs as the runtime does: what arrived first,
        // then the timers, which would otherwise expire on ACKs that waited for it. Others
        // keep the order the seeded tests were pinned with.
        let mut work = 0;
        for (i, p) in [Peer::Client, Peer::Server].into_iter().enumerate() {
            if on[i] && self.sched[i].is_some() {
                work += self.deliver(p);
            }
        }
        if on[0] {
            self.client.handle_timeout(self.now);
        }
        if on[1] {
            self.server.handle_timeout(self.now);
        }
        if on[0] {
            work += self.transmit(Peer::Client, 64);
        }
        if on[1] {
            work += self.transmit(Peer::Server, 64);
        }
        for (i, p) in [Peer::Client, Peer::Server].into_iter().enumerate() {
            if on[i] && self.sched[i].is_none() {
                work += self.deliver(p);
            }
        }
        for (i, p) in [Peer::Client, Peer::Server].into_iter().enumerate() {
            if on[i] {
                let now = self.now;
                self.endpoint(p).note_poll(now);
                self.polled[i] = now;
            }
        }
        if work > 0 {
            return true;
        }
        // Each side's next event, moved to when that side runs next.
        let now = self.now;
        let later = |sched: Option<RunSchedule>, t: Option<Instant>| {
            t.map(|t| sched.map_or(t, |s| s.next_on(t.max(now))))
        };
        let [cs, ss] = self.sched;
        let next = [
            later(ss, self.c2s.next_arrival()),
            later(cs, self.s2c.next_arrival()),
            later(cs, self.client.poll_timeout()),
            later(ss, self.server.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min();
        let next = next.map(|t| t.max(Instant::from_nanos(self.now.as_nanos() + 1)));
        match (next, limit) {
            (Some(t), Some(l)) if t > l => {
                self.now = l;
                false
            }
            (Some(t), _) => {
                self.now = t;
                true
            }
            (None, Some(l)) => {
                self.now = l;
                false
            }
            (None, None) => false,
        }
    }

    /// Whether a side's poll loop runs now (see [`Pair::sched`]).
    pub fn runs(&self, p: Peer) -> bool {
        let s = match p {
            Peer::Client => self.sched[0],
            Peer::Server => self.sched[1],
        };
        s.is_none_or(|s| s.runs(self.now))
    }

    /// Drain one connection's events and messages into the given sinks.
    pub fn drain(
        &mut self,
        p: Peer,
        h: ConnectionHandle,
        mut on_event: impl FnMut(Event),
        mut on_msg: impl FnMut(RecvMsg),
    ) {
        if let Some(c) = self.endpoint(p).connection(h) {
            while let Some(m) = c.poll_recv() {
                on_msg(m);
            }
            while let Some(e) = c.poll_event() {
                on_event(e);
            }
        }
    }
}

/// Deterministic message content: 8-byte words of splitmix64 over (tag, word index).
pub fn pattern(tag: u64, len: usize) -> bytes::Bytes {
    let mut v = vec![0u8; len];
    fill_pattern(tag, 0, &mut v);
    bytes::Bytes::from(v)
}

fn word(tag: u64, i: u64) -> u64 {
    crate::rng::mix64(
        tag.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(i.wrapping_mul(0xbf58_476d_1ce4_e5b9)),
    )
}

/// Fill `out` with the pattern bytes starting at byte `offset` (a multiple of 8).
pub fn fill_pattern(tag: u64, offset: u64, out: &mut [u8]) {
    let mut chunks = out.chunks_exact_mut(8);
    let mut i = offset / 8;
    for c in &mut chunks {
        c.copy_from_slice(&word(tag, i).to_le_bytes());
        i += 1;
    }
    let rem = chunks.into_remainder();
    let w = word(tag, i).to_le_bytes();
    let n = rem.len();
    rem.copy_from_slice(&w[..n]);
}

/// True if `data` is `pattern(tag, data.len())`.
pub fn check_pattern(tag: u64, data: &[u8]) -> bool {
    let mut buf = [0u8; 4096];
    let mut off = 0usize;
    while off < data.len() {
        let n = (data.len() - off).min(buf.len());
        fill_pattern(tag, off as u64, &mut buf[..n]);
        if buf[..n] != data[off..off + n] {
            return false;
        }
        off += n;
    }
    true
}

/// Tag of message `id` sent in direction `dir` (0: client to server) under `seed`.
pub fn msg_tag(seed: u64, dir: u64, id: u64) -> u64 {
    word(seed ^ 0x5eed, (dir << 40) ^ id)
}

/// Outcome of [`run_transfer`].
#[derive(Debug, Clone, Default)]
pub struct TransferReport {
    /// Virtual time taken (ns).
    pub elapsed_ns: u64,
    /// Steps taken.
    pub steps: u64,
    /// Messages received per direction.
    pub received: [usize; 2],
    /// Receive order per direction (message ids), for order checks.
    pub order: [Vec<u64>; 2],
}

/// Send `sizes[0]` from client to server and `sizes[1]` back, with backpressure, and check
/// that every message arrives exactly once with the right bytes and every send is acked.
/// Fails on a duplicate, a corrupt or unexpected message, a connection end, or when
/// `limit_ns` of virtual time or `max_steps` pass.
pub fn run_transfer(
    pair: &mut Pair,
    (ch, sh): (ConnectionHandle, ConnectionHandle),
    sizes: [&[usize]; 2],
    seed: u64,
    limit_ns: u64,
    max_steps: u64,
) -> Result<TransferReport, String> {
    let start = pair.now;
    let mut next = [0usize; 2];
    let mut got: [Vec<bool>; 2] = [vec![false; sizes[0].len()], vec![false; sizes[1].len()]];
    let mut acked = [0usize; 2];
    let mut rep = TransferReport::default();
    let ends = [(Peer::Client, ch), (Peer::Server, sh)];
    loop {
        for dir in 0..2 {
            let (p, h) = ends[dir];
            let c = pair
                .endpoint(p)
                .connection(h)
                .ok_or_else(|| format!("dir {dir}: connection gone"))?;
            while next[dir] < sizes[dir].len() {
                let id = next[dir] as u64;
                let data = pattern(msg_tag(seed, dir as u64, id), sizes[dir][next[dir]]);
                match c.send(data) {
                    Ok(got_id) if got_id == id => next[dir] += 1,
                    Ok(other) => return Err(format!("send returned id {other}, want {id}")),
                    Err(super::SendError::WouldBlock) => break,
                    Err(e) => return Err(format!("send: {e}")),
                }
            }
        }
        if !pair.step() {
            return Err("simulation idle before completion".into());
        }
        rep.steps += 1;
        for dir in 0..2 {
            // Receiver of direction `dir` is the other end.
            let (p, h) = ends[1 - dir];
            let mut err = None;
            let mut evs = Vec::new();
            pair.drain(
                p,
                h,
                |e| evs.push(e),
                |m| {
                    let id = m.id as usize;
                    if id >= got[dir].len() {
                        err = Some(format!("dir {dir}: unexpected message {id}"));
                        return;
                    }
                    if got[dir][id] {
                        err = Some(format!("dir {dir}: message {id} delivered twice"));
                        return;
                    }
                    got[dir][id] = true;
                    rep.order[dir].push(m.id);
                    let want = sizes[dir][id];
                    // Segments (ConnectionConfig::rx_segments) are checked through a copy.
                    let joined = m.segments().map(|s| s.to_vec());
                    let ok = m.len as usize == want
                        && m.as_slice().or(joined.as_deref()).is_some_and(|s| {
                            s.len() == want && check_pattern(msg_tag(seed, dir as u64, m.id), s)
                        });
                    if !ok {
                        err = Some(format!(
                            "dir {dir}: message {id} corrupt (len {} want {want})",
                            m.len
                        ));
                    }
                    rep.received[dir] += 1;
                },
            );
            if let Some(e) = err {
                return Err(e);
            }
            for e in evs {
                match e {
                    // Acked events belong to the sender of direction 1 - dir.
                    Event::Acked { .. } => acked[1 - dir] += 1,
                    Event::Closed(r) => return Err(format!("connection closed: {r}")),
                    Event::Connected => {}
                }
            }
        }
        if rep.received[0] == sizes[0].len()
            && rep.received[1] == sizes[1].len()
            && acked[0] == sizes[0].len()
            && acked[1] == sizes[1].len()
        {
            rep.elapsed_ns = pair.now.as_nanos() - start.as_nanos();
            return Ok(rep);
        }
        if pair.now.as_nanos() - start.as_nanos() > limit_ns || rep.steps > max_steps {
            return Err(format!(
                "timeout: now {} steps {} received {:?}/{:?} acked {:?} client {:?} server {:?}",
                pair.now.as_nanos(),
                rep.steps,
                rep.received,
                [sizes[0].len(), sizes[1].len()],
                acked,
                pair.client.connection(ch).map(|c| (
                    c.state(),
                    c.stats(),
                    c.send_queue_len(),
                    c.bytes_in_flight()
                )),
                pair.server.connection(sh).map(|c| (
                    c.state(),
                    c.stats(),
                    c.send_queue_len(),
                    c.bytes_in_flight()
                )),
            ));
        }
    }
}
