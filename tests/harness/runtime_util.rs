//! Helpers for the runtime tests: a `pmd::pair` over a fresh pool, and a handler that
//! records what it receives.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddrV4};

use bypass::mem::{HugePages, PktBuf, Pool, PoolConfig};
pub use bypass::pmd::pair::PairPort;
use bypass::runtime::timer::TimerHandle;
use bypass::runtime::{Io, UdpHandler};
use bypass::time::Instant;

/// Two ports joined back to back by `pmd::pair` (rings of `depth` frames each way), over a
/// fresh pool of `slots` buffers.
pub fn pair(depth: usize, slots: u32) -> (PairPort, PairPort) {
    let pool = Pool::new(&PoolConfig {
        hugepages: HugePages::Never,
        ..PoolConfig::new("rt-pair", slots, 2048)
    })
    .unwrap();
    bypass::pmd::pair::pair(&pool, depth, 1500).unwrap()
}

/// A datagram as the recorder saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub at: Instant,
    pub src: SocketAddrV4,
    pub dst_port: u16,
    pub payload: Vec<u8>,
    pub ecn: u8,
}

/// Records datagrams and timers; optionally echoes datagrams back (zero copy) and arms a
/// timer per datagram.
#[derive(Debug, Default)]
pub struct Recorder {
    pub seen: Vec<Seen>,
    pub timers: Vec<(Instant, u64)>,
    pub echo: bool,
    /// Nanoseconds after a datagram's arrival.
    pub timer_after: Option<u64>,
}

impl UdpHandler for Recorder {
    fn on_datagram(&mut self, io: &mut Io<'_>, src: SocketAddrV4, dst_port: u16, payload: PktBuf) {
        self.seen.push(Seen {
            at: io.now(),
            src,
            dst_port,
            payload: payload.data().to_vec(),
            ecn: io.rx_ecn(),
        });
        if let Some(d) = self.timer_after {
            io.set_timer(io.now().add_nanos(d), dst_port as u64)
                .unwrap();
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
