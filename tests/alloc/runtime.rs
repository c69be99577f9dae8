//! A counting global allocator shows the runtime's steady state allocates nothing: receive,
//! dispatch, UDP delivery, a zero-copy UDP echo, timers set/reset/cancelled per datagram,
//! ICMP echo, transmit. Counts are per thread, so the harness's threads don't disturb them.

use crate::runtime_util;

use std::net::SocketAddrV4;

use bypass::mem::PktBuf;
use bypass::pmd::Port;
use bypass::runtime::clock::SystemClock;
use bypass::runtime::net::NetConfig;
use bypass::runtime::timer::TimerHandle;
use bypass::runtime::{Io, Runtime, RuntimeConfig, UdpHandler};
use runtime_util::{pair, IP_A, IP_B};

use crate::counting::allocs;

/// Echoes every datagram back in the same buffer, and keeps one retransmission-style timer
/// per handler that it resets on each datagram.
#[derive(Default)]
struct Echo {
    echo: bool,
    received: u64,
    bytes: u64,
    rto: Option<TimerHandle>,
    timer_fired: u64,
}

impl UdpHandler for Echo {
    fn on_datagram(&mut self, io: &mut Io<'_>, src: SocketAddrV4, dst_port: u16, payload: PktBuf) {
        self.received += 1;
        self.bytes += payload.len() as u64;
        let deadline = io.now().add_nanos(1_000_000);
        match self.rto {
            Some(h) if io.reset_timer(h, deadline).is_ok() => {}
            _ => self.rto = Some(io.set_timer(deadline, 1).unwrap()),
        }
        // A short-lived timer armed and cancelled (an ack delay that gets piggybacked).
        let t = io.set_timer(io.now().add_nanos(10_000), 2).unwrap();
        assert_eq!(io.cancel_timer(t), Some(2));
        if self.echo {
            io.send_udp(dst_port, src, payload).unwrap();
        }
    }
    fn on_timer(&mut self, _io: &mut Io<'_>, _timer: TimerHandle, _token: u64) {
        self.timer_fired += 1;
    }
}

#[test]
fn steady_state_rx_dispatch_tx_allocates_nothing() {
    let clock = SystemClock::new();
    let (pa, pb) = pair(256, 1024);
    let mut cfg_a = RuntimeConfig::new(NetConfig::new(pa.info().mac, IP_A));
    cfg_a.core_slot = Some(7); // per-core pool cache on this thread
    let cfg_b = RuntimeConfig::new(NetConfig::new(pb.info().mac, IP_B));
    let mut a = Runtime::new(cfg_a, pa, Echo::default(), clock).unwrap();
    let mut b = Runtime::new(
        cfg_b,
        pb,
        Echo {
            echo: true,
            ..Default::default()
        },
        clock,
    )
    .unwrap();
    a.net_mut().bind(7000);
    b.net_mut().bind(8000);
    let dst = SocketAddrV4::new(IP_B, 8000);

    let round = |a: &mut Runtime<_, Echo, _>, b: &mut Runtime<_, Echo, _>, i: u32| {
        a.with_io(|_, io| {
            for _ in 0..4 {
                let mut buf = io.alloc_tx().unwrap();
                buf.extend_from_slice(&[i as u8; 256]).unwrap();
                io.send_udp(7000, dst, buf).unwrap();
            }
            if i.is_multiple_of(16) {
                io.send_ping(IP_B, 1, i as u16, 32).unwrap();
            }
        });
        a.poll_once();
        b.poll_once();
        a.poll_once();
    };

    // Warm up: ARP resolution (A parks its first frames), first use of every queue.
    for i in 0..200 {
        round(&mut a, &mut b, i);
    }
    assert_eq!(
        a.handler().received,
        800,
        "all echoes came back during warm-up"
    );

    let before = allocs();
    for i in 0..10_000 {
        round(&mut a, &mut b, i);
    }
    let n = allocs() - before;

    assert_eq!(a.handler().received, 800 + 40_000);
    assert_eq!(b.handler().received, 800 + 40_000);
    assert_eq!(a.handler().bytes, (800 + 40_000) * 256);
    assert!(a.net_counters().icmp_echo_replies_in >= 600);
    assert_eq!(a.net_counters().rx_drops() + b.net_counters().rx_drops(), 0);
    assert_eq!(
        n, 0,
        "steady state allocated {n} times over 10 000 rounds (40 000 echoes)"
    );
}
