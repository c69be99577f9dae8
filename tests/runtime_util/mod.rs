//! Test doubles for the runtime tests: an in-process pair of ports joined back to back
//! (each with its own pool), with bounded rings so backpressure can be exercised, and a
//! handler that records what it receives.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};

use bypass::mem::{HugePages, PktBuf, Pool, PoolConfig, PoolExhausted};
use bypass::pmd::{Link, Offloads, Port, PortInfo, PortStats, MAX_BURST};
use bypass::runtime::timer::TimerHandle;
use bypass::runtime::{Io, UdpHandler};

type Ring = Arc<Mutex<VecDeque<PktBuf>>>;

/// One end of a back-to-back pair.
pub struct PairPort {
    name: String,
    mac: [u8; 6],
    pool: Pool,
    rx: Ring,
    peer_rx: Ring,
    ring_cap: usize,
    stats: PortStats,
}

/// Two ports joined back to back; each ring holds `ring_cap` frames.
pub fn pair(ring_cap: usize, slots: u32) -> (PairPort, PairPort) {
    let mk_pool = |n: &str| {
        Pool::new(&PoolConfig {
            hugepages: HugePages::Never,
            ..PoolConfig::new(n, slots, 2048)
        })
        .unwrap()
    };
    let a: Ring = Arc::new(Mutex::new(VecDeque::with_capacity(ring_cap)));
    let b: Ring = Arc::new(Mutex::new(VecDeque::with_capacity(ring_cap)));
    (
        PairPort {
            name: "pair-a".into(),
            mac: [2, 0, 0, 0, 0, 1],
            pool: mk_pool("pair-a"),
            rx: a.clone(),
            peer_rx: b.clone(),
            ring_cap,
            stats: PortStats::default(),
        },
        PairPort {
            name: "pair-b".into(),
            mac: [2, 0, 0, 0, 0, 2],
            pool: mk_pool("pair-b"),
            rx: b,
            peer_rx: a,
            ring_cap,
            stats: PortStats::default(),
        },
    )
}

impl PairPort {
    /// Put raw frame bytes on this port's receive ring (as if the peer sent them).
    pub fn inject(&self, bytes: &[u8]) {
        let mut b = self.pool.alloc().unwrap();
        b.extend_from_slice(bytes).unwrap();
        self.rx.lock().unwrap().push_back(b);
    }

    /// Frames waiting on this port's receive ring.
    pub fn rx_waiting(&self) -> usize {
        self.rx.lock().unwrap().len()
    }

    /// Take everything off the peer's receive ring (what this port sent), as bytes.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        self.peer_rx
            .lock()
            .unwrap()
            .drain(..)
            .map(|b| b.data().to_vec())
            .collect()
    }

    /// This port's pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl Port for PairPort {
    fn info(&self) -> PortInfo {
        PortInfo {
            name: self.name.clone(),
            mtu: 1500,
            max_burst: MAX_BURST as u16,
            mac: self.mac,
            queues: 1,
            queue: 0,
            offloads: Offloads::default(),
        }
    }
    fn link(&mut self) -> Link {
        Link::Up { speed_mbps: 0 }
    }
    fn rx_burst(&mut self, out: &mut Vec<PktBuf>, max: usize) -> usize {
        let mut q = self.rx.lock().unwrap();
        let n = max.min(MAX_BURST).min(q.len());
        for b in q.drain(..n) {
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += b.len() as u64;
            out.push(b);
        }
        n
    }
    fn tx_burst(&mut self, pkts: &mut Vec<PktBuf>) -> usize {
        let mut q = self.peer_rx.lock().unwrap();
        let n = pkts.len().min(self.ring_cap - q.len());
        for b in pkts.drain(..n) {
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += b.len() as u64;
            q.push_back(b);
        }
        if n < pkts.len() {
            self.stats.tx_ring_full += 1;
        }
        n
    }
    fn alloc_tx(&mut self) -> Result<PktBuf, PoolExhausted> {
        self.pool.alloc()
    }
    fn stats(&self) -> PortStats {
        self.stats
    }
}

/// A datagram as the recorder saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub at: u64,
    pub src: SocketAddrV4,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

/// Records datagrams and timers; optionally echoes datagrams back (zero copy) and arms a
/// timer per datagram.
#[derive(Debug, Default)]
pub struct Recorder {
    pub seen: Vec<Seen>,
    pub timers: Vec<(u64, u64)>,
    pub echo: bool,
    pub timer_after: Option<u64>,
}

impl UdpHandler for Recorder {
    fn on_datagram(&mut self, io: &mut Io<'_>, src: SocketAddrV4, dst_port: u16, payload: PktBuf) {
        self.seen.push(Seen {
            at: io.now(),
            src,
            dst_port,
            payload: payload.data().to_vec(),
        });
        if let Some(d) = self.timer_after {
            io.set_timer(io.now() + d, dst_port as u64).unwrap();
        }
        if self.echo {
            io.send_udp(dst_port, src, payload).unwrap();
        }
    }
    fn on_timer(&mut self, io: &mut Io<'_>, _timer: TimerHandle, token: u64) {
        self.timers.push((io.now(), token));
    }
}

pub const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const IP_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
