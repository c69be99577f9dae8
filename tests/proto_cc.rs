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
