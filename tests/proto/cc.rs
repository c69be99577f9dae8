//! ECN-CE marks reach the sender's controller through the ACK's count, and the controller
//! sees RTT, hold time and acked bytes (what Swift needs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bypass::pmd::sim::LinkConfig;
use bypass::proto::cc::{
    AckEvent, Controller, ControllerFactory, FixedWindow, LossEvent, SendEvent,
};
use bypass::proto::testing::{run_transfer, Pair, RunSchedule};
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

/// Two poll loops that share their cores with other work: each runs 4 ms of every 12 and
/// never at the same time as the other (the worst case of six busy threads on two cores).
/// Every ACK then reaches the sender after one of the two loops was descheduled, and its
/// delay is milliseconds of scheduling, not a queue. The receiver flags its own stall in the
/// hold time, the sender its own (`AckEvent::stalled`), and Swift does not cut on them: 4 MiB
/// each way complete in about a second of virtual time. Read as queueing delay instead, the
/// window fell to `min_cwnd` (a packet every few ms) and the transfer had not completed
/// after 120 s. Virtual time, seeded: the figure is the same on every run.
#[test]
fn loops_descheduled_in_turn_keep_their_window() {
    let mut p = Pair::new(
        EndpointConfig::default(),
        EndpointConfig::default(),
        LinkConfig::default(),
        7,
    );
    let hs = p.connect().expect("connect");
    let slice = |phase_ns| RunSchedule {
        period_ns: 12_000_000,
        on_ns: 4_000_000,
        phase_ns,
    };
    p.sched = [Some(slice(0)), Some(slice(6_000_000))];
    let sizes = [1usize << 20; 4];
    let r = run_transfer(&mut p, hs, [&sizes, &sizes], 7, 120_000_000_000, 50_000_000)
        .expect("transfer between descheduled loops");
    let c = p.client.connection(hs.0).expect("client connection");
    println!(
        "4 MiB each way, loops on 4 of 12 ms in turn: {} ms virtual, window {} B, {:?}",
        r.elapsed_ns / 1_000_000,
        c.controller().window(),
        c.stats()
    );
    // About 1.06 s; a window that collapsed takes minutes.
    assert!(
        r.elapsed_ns < 5_000_000_000,
        "took {} ms of virtual time",
        r.elapsed_ns / 1_000_000
    );
}

/// What a receiver's stall does to the samples: the server's loop runs 1 ms of every 3, so
/// the client's data (16 MiB) waits for it. Its ACKs flag the hold time (`AckEvent::stalled`), the
/// hold then includes the wait (not more than the RTT), and every message still arrives
/// exactly once.
#[test]
fn a_receivers_stall_is_flagged_in_its_acks() {
    let seen = Arc::new(Stalls::default());
    let cfg = EndpointConfig {
        cc: Arc::new(StallSpyFactory(seen.clone())),
        ..EndpointConfig::default()
    };
    let mut p = Pair::new(cfg, EndpointConfig::default(), LinkConfig::default(), 9);
    let hs = p.connect().expect("connect");
    p.sched[1] = Some(RunSchedule {
        period_ns: 3_000_000,
        on_ns: 1_000_000,
        phase_ns: 0,
    });
    let sizes = [64usize << 10; 256];
    let r = run_transfer(&mut p, hs, [&sizes, &[]], 9, 10_000_000_000, 10_000_000).unwrap();
    let wakes = r.elapsed_ns / 3_000_000;
    let s = &*seen;
    println!("{s:?} over {wakes} periods of the receiver");
    let (stalled, clean) = (
        s.stalled.load(Ordering::Relaxed),
        s.clean.load(Ordering::Relaxed),
    );
    // At least one flagged ACK for each time the receiver woke to data (the last wake may
    // find none) ...
    assert!(
        stalled + 1 >= wakes && wakes >= 2,
        "{stalled} flagged ACKs over {wakes} periods: {s:?}"
    );
    // ... whose hold includes the wait: a running loop here holds nothing beyond its
    // delayed-ACK wait, which is not hold time.
    assert!(
        s.max_stalled_hold_ns.load(Ordering::Relaxed) >= 50_000,
        "flagged holds without the wait: {s:?}"
    );
    assert!(clean > 0, "no ACK from a running loop: {s:?}");
}

#[derive(Debug, Default)]
struct Stalls {
    stalled: AtomicU64,
    clean: AtomicU64,
    max_stalled_hold_ns: AtomicU64,
}

#[derive(Debug)]
struct StallSpy(FixedWindow, Arc<Stalls>);

impl Controller for StallSpy {
    fn on_send(&mut self, _: Instant, _: &SendEvent) {}
    fn on_ack(&mut self, _: Instant, ev: &AckEvent) {
        let Some(rtt) = ev.rtt else { return };
        assert!(ev.hold <= rtt, "hold {:?} > rtt {rtt:?}", ev.hold);
        if ev.stalled {
            self.1.stalled.fetch_add(1, Ordering::Relaxed);
            self.1
                .max_stalled_hold_ns
                .fetch_max(ev.hold.as_nanos() as u64, Ordering::Relaxed);
        } else {
            self.1.clean.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn on_loss(&mut self, _: Instant, _: &LossEvent) {}
    fn on_timeout(&mut self, _: Instant) {}
    fn window(&self) -> u64 {
        self.0.window()
    }
    fn name(&self) -> &'static str {
        "stall-spy"
    }
}

#[derive(Debug)]
struct StallSpyFactory(Arc<Stalls>);

impl ControllerFactory for StallSpyFactory {
    fn build(&self, _: Instant, mtu: u64) -> Box<dyn Controller> {
        Box::new(StallSpy(FixedWindow::new(32 * mtu), self.0.clone()))
    }
}
