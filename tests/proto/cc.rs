//! ECN-CE marks reach the sender's controller through the ACK's count, and the controller
//! sees RTT, hold time and acked bytes (what Swift needs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bypass::pmd::sim::LinkConfig;
use bypass::proto::cc::{
    AckEvent, Controller, ControllerFactory, FixedWindow, LossEvent, SendEvent,
};
use bypass::proto::testing::{run_transfer, Pair};
use bypass::proto::{EndpointConfig, Instant};

#[derive(Debug, Default)]
struct Seen {
    ce: AtomicU64,
    ack_ce: AtomicU64,
    acked: AtomicU64,
    rtt_samples: AtomicU64,
    sends: AtomicU64,
}

#[derive(Debug)]
struct Spy(FixedWindow, Arc<Seen>);

impl Controller for Spy {
    fn on_send(&mut self, _: Instant, _: &SendEvent) {
        self.1.sends.fetch_add(1, Ordering::Relaxed);
    }
    fn on_ack(&mut self, _: Instant, ev: &AckEvent) {
        self.1.acked.fetch_add(ev.bytes_acked, Ordering::Relaxed);
        self.1.ack_ce.fetch_add(ev.ecn_ce_delta, Ordering::Relaxed);
        if let (Some(rtt), Some(f)) = (ev.rtt, ev.fabric_rtt) {
            assert!(f <= rtt && ev.hold <= rtt);
            self.1.rtt_samples.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn on_loss(&mut self, _: Instant, _: &LossEvent) {}
    fn on_timeout(&mut self, _: Instant) {}
    fn on_ecn(&mut self, _: Instant, d: u64, _: u64) {
        self.1.ce.fetch_add(d, Ordering::Relaxed);
    }
    fn window(&self) -> u64 {
        self.0.window()
    }
    fn name(&self) -> &'static str {
        "spy"
    }
}

#[derive(Debug)]
struct SpyFactory(Arc<Seen>);

impl ControllerFactory for SpyFactory {
    fn build(&self, _: Instant, mtu: u64) -> Box<dyn Controller> {
        Box::new(Spy(FixedWindow::new(32 * mtu), self.0.clone()))
    }
}

#[test]
fn ecn_marks_and_samples_reach_the_controller() {
    let seen = Arc::new(Seen::default());
    let cfg = EndpointConfig {
        cc: Arc::new(SpyFactory(seen.clone())),
        ..EndpointConfig::default()
    };
    let mut p = Pair::new(
        cfg.clone(),
        EndpointConfig::default(),
        LinkConfig::default(),
        31,
    );
    p.ce_every = 10;
    let hs = p.connect().expect("connect");
    let sizes = [2_000_000usize];
    run_transfer(&mut p, hs, [&sizes, &[]], 31, 10_000_000_000, 1_000_000).unwrap();
    let s = &*seen;
    println!("{s:?}");
    // About a tenth of the ~1400 data packets arrived marked.
    let ce = s.ce.load(Ordering::Relaxed);
    assert!((50..=300).contains(&ce), "ce {ce}");
    // The same marks ride on the AckEvents (all but those on ACKs that acked nothing new).
    let ack_ce = s.ack_ce.load(Ordering::Relaxed);
    assert!(ack_ce > 0 && ack_ce <= ce, "ack_ce {ack_ce} ce {ce}");
    assert!(s.acked.load(Ordering::Relaxed) >= 2_000_000);
    assert!(s.rtt_samples.load(Ordering::Relaxed) > 10);
    assert!(s.sends.load(Ordering::Relaxed) >= 1400);
}

#[derive(Debug)]
struct Paced;

impl Controller for Paced {
    fn on_send(&mut self, _: Instant, _: &SendEvent) {}
    fn on_ack(&mut self, _: Instant, _: &AckEvent) {}
    fn on_loss(&mut self, _: Instant, _: &LossEvent) {}
    fn on_timeout(&mut self, _: Instant) {}
    fn window(&self) -> u64 {
        1 << 30
    }
    fn pacing_rate(&self) -> Option<u64> {
        Some(100_000_000) // 100 MB/s: a 1500 B packet every 15 us
    }
    fn name(&self) -> &'static str {
        "paced"
    }
}

#[derive(Debug)]
struct PacedFactory;

impl ControllerFactory for PacedFactory {
    fn build(&self, _: Instant, _: u64) -> Box<dyn Controller> {
        Box::new(Paced)
    }
}

/// The connection honours the controller's pacing: 1 MB at 100 MB/s takes about 10 ms of
/// virtual time even though the window never limits it.
#[test]
fn pacing_rate_spaces_departures() {
    let cfg = EndpointConfig {
        cc: Arc::new(PacedFactory),
        ..EndpointConfig::default()
    };
    let mut p = Pair::new(cfg, EndpointConfig::default(), LinkConfig::default(), 32);
    let hs = p.connect().expect("connect");
    let r = run_transfer(
        &mut p,
        hs,
        [&[1_000_000], &[]],
        32,
        10_000_000_000,
        1_000_000,
    )
    .unwrap();
    println!("1 MB paced at 100 MB/s: {} ns virtual", r.elapsed_ns);
    assert!(r.elapsed_ns >= 9_500_000, "{} ns", r.elapsed_ns);
    assert!(r.elapsed_ns <= 12_000_000, "{} ns", r.elapsed_ns);
}

/// The RTT sample and hold time of the last ACK the controller saw.
#[derive(Debug, Default)]
struct LastAck {
    rtt_ns: AtomicU64,
    hold_ns: AtomicU64,
    samples: AtomicU64,
}

#[derive(Debug)]
struct Recorder(FixedWindow, Arc<LastAck>);

impl Controller for Recorder {
    fn on_send(&mut self, _: Instant, _: &SendEvent) {}
    fn on_ack(&mut self, _: Instant, ev: &AckEvent) {
        if let Some(rtt) = ev.rtt {
            self.1
                .rtt_ns
                .store(rtt.as_nanos() as u64, Ordering::Relaxed);
            self.1
                .hold_ns
                .store(ev.hold.as_nanos() as u64, Ordering::Relaxed);
            self.1.samples.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn on_loss(&mut self, _: Instant, _: &LossEvent) {}
    fn on_timeout(&mut self, _: Instant) {}
    fn window(&self) -> u64 {
        self.0.window()
    }
    fn name(&self) -> &'static str {
        "recorder"
    }
}

#[derive(Debug)]
struct RecorderFactory(Arc<LastAck>);

impl ControllerFactory for RecorderFactory {
    fn build(&self, _: Instant, mtu: u64) -> Box<dyn Controller> {
        Box::new(Recorder(FixedWindow::new(32 * mtu), self.0.clone()))
    }
}

/// A one-packet message is acknowledged after the receiver's delayed-ACK wait
/// (`max_ack_delay`, 20 us). That wait is deliberate: the sender's RTT sample and the echoed
/// hold time leave it out. What the receiver adds beyond it (here its loop is 50 us late
/// for the ACK deadline, as a descheduled poll loop would be) is host delay: it is the hold
/// time, and the fabric share (RTT - hold) stays the link's 2 x 10 us. Virtual time.
#[test]
fn delayed_ack_wait_is_neither_rtt_nor_hold_time() {
    let seen = Arc::new(LastAck::default());
    let cfg = EndpointConfig {
        cc: Arc::new(RecorderFactory(seen.clone())),
        ..EndpointConfig::default()
    };
    let max_ack_delay = cfg.conn.max_ack_delay;
    assert_eq!(max_ack_delay.as_nanos(), 20_000);
    let link = LinkConfig {
        delay_ns: 10_000,
        ..LinkConfig::default()
    };
    let mut p = Pair::new(cfg, EndpointConfig::default(), link, 33);
    let (ch, sh) = p.connect().expect("connect");
    // Let the handshake's last ACK land, so the next sample is the one under test.
    let settle = |p: &mut Pair| {
        let soon = |t: Option<Instant>, now: Instant| {
            t.is_some_and(|t| t <= now + std::time::Duration::from_micros(100))
        };
        while p.c2s.next_arrival().is_some()
            || p.s2c.next_arrival().is_some()
            || soon(p.client.poll_timeout(), p.now)
            || soon(p.server.poll_timeout(), p.now)
        {
            assert!(p.step());
        }
    };
    for late_ns in [0u64, 50_000] {
        settle(&mut p);
        let before = seen.samples.load(Ordering::Relaxed);
        let rx_before = p.server.connection(sh).unwrap().stats().rx_packets;
        p.client
            .connection(ch)
            .unwrap()
            .send(bytes::Bytes::from_static(&[7; 100]))
            .unwrap();
        // Run until the server has the packet; its ACK is now deferred.
        while p.server.connection(sh).unwrap().stats().rx_packets == rx_before {
            assert!(p.step());
        }
        let deadline = p.server.poll_timeout().unwrap();
        assert_eq!(
            deadline,
            p.now + max_ack_delay,
            "the ACK waits max_ack_delay"
        );
        // The server's loop comes back `late_ns` after the deadline.
        p.now = deadline + std::time::Duration::from_nanos(late_ns);
        // Run until the server's ACK was sent and has reached the client.
        let acks = p.server.connection(sh).unwrap().stats().tx_acks;
        while p.server.connection(sh).unwrap().stats().tx_acks == acks
            || p.s2c.next_arrival().is_some()
        {
            assert!(p.step());
        }
        assert!(seen.samples.load(Ordering::Relaxed) > before);
        while p.server.connection(sh).unwrap().poll_recv().is_some() {}
        let rtt = seen.rtt_ns.load(Ordering::Relaxed);
        let hold = seen.hold_ns.load(Ordering::Relaxed);
        println!("late {late_ns} ns: rtt {rtt} ns, hold {hold} ns");
        assert_eq!(
            hold, late_ns,
            "hold time = lateness beyond the deliberate wait"
        );
        // RTT = two link delays + the lateness (+ framing time, if any, nothing else).
        assert!(
            rtt >= 20_000 + late_ns && rtt < 21_000 + late_ns,
            "rtt {rtt} late {late_ns}"
        );
        assert!(rtt - hold < 21_000, "fabric share {}", rtt - hold);
    }
}
