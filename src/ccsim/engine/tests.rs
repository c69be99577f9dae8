use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::*;
use crate::proto::cc::credit::CreditConfig;
use crate::proto::cc::{AckEvent, FixedWindow, FixedWindowFactory, LossEvent, SendEvent};

fn cfg(senders: usize) -> SimConfig {
    SimConfig {
        link: LinkConfig::gbps(100),
        senders,
        noise: Duration::ZERO,
        hold_min: Duration::from_nanos(500),
        hold_max: Duration::from_nanos(500),
        min_rto: Duration::from_micros(100),
        credit: None,
        seed: 1,
        trace_bin: Duration::from_micros(5),
        flow_traces: true,
    }
}

fn run_to_completion(sim: &mut Sim) {
    let mut guard = 0;
    while sim.run_until(sim.now() + 1_000_000) {
        guard += 1;
        assert!(guard < 10_000, "simulation did not finish");
    }
}

#[test]
fn one_flow_with_a_bdp_window_fills_the_link_without_queue() {
    let c = cfg(1);
    // 40 packets: a little above the BDP of the loop (10 us + serialisation + hold).
    let mut sim = Sim::new(c.clone(), &FixedWindowFactory { packets: 40 });
    let size = 8 << 20;
    let m = sim.submit(0, size, 0, 0);
    run_to_completion(&mut sim);
    let done = sim.msgs[m].done.expect("message delivered");
    let ideal = c.link.ser_ns(size * c.link.mtu / c.link.payload());
    assert!(done < ideal + ideal / 10, "{done} ns vs ideal {ideal} ns");
    assert_eq!(sim.stats.drops, 0);
    assert_eq!(sim.stats.retransmits, 0);
    let qmax = *sim.stats.queue_delay.iter().max().unwrap();
    assert!(qmax < 3_000, "queue stays short: {qmax} ns");
}

#[test]
fn oversized_window_overflows_the_buffer_and_recovers_every_byte() {
    let c = cfg(4);
    let mut sim = Sim::new(c.clone(), &FixedWindowFactory { packets: 200 });
    let ids: Vec<usize> = (0..4).map(|f| sim.submit(f, 2 << 20, 0, 0)).collect();
    run_to_completion(&mut sim);
    assert!(
        sim.stats.drops > 0,
        "4 x 800 KiB windows exceed a 1 MiB buffer"
    );
    assert!(sim.stats.retransmits >= sim.stats.drops);
    for i in ids {
        assert!(
            sim.msgs[i].done.is_some(),
            "message {i} completed despite loss"
        );
    }
    let payload: u64 = 4 * (2 << 20);
    assert_eq!(
        sim.stats.goodput_bytes, payload,
        "unique bytes counted once"
    );
    // The queue never exceeds the buffer: max delay <= buffer drain time.
    let cap = c.link.ser_ns(c.link.buffer);
    assert!(*sim.stats.queue_delay.iter().max().unwrap() as u64 <= cap);
}

/// A fixed window that counts the events it sees.
#[derive(Debug)]
struct Counting {
    inner: FixedWindow,
    ecn: Arc<AtomicU64>,
    loss: Arc<AtomicU64>,
    acks: Arc<AtomicU64>,
}
impl Controller for Counting {
    fn on_send(&mut self, _: Instant, _: &SendEvent) {}
    fn on_ack(&mut self, _: Instant, ev: &AckEvent) {
        assert!(ev.fabric_rtt.unwrap() <= ev.rtt.unwrap());
        assert_eq!(ev.rtt.unwrap() - ev.fabric_rtt.unwrap(), ev.hold);
        self.acks.fetch_add(1, Ordering::Relaxed);
    }
    fn on_loss(&mut self, _: Instant, ev: &LossEvent) {
        assert!(ev.packets_lost > 0);
        self.loss.fetch_add(1, Ordering::Relaxed);
    }
    fn on_timeout(&mut self, _: Instant) {}
    fn on_ecn(&mut self, _: Instant, ce: u64, _: u64) {
        self.ecn.fetch_add(ce, Ordering::Relaxed);
    }
    fn window(&self) -> u64 {
        self.inner.window()
    }
    fn name(&self) -> &'static str {
        "counting"
    }
}
#[derive(Debug, Default)]
struct CountingFactory {
    ecn: Arc<AtomicU64>,
    loss: Arc<AtomicU64>,
    acks: Arc<AtomicU64>,
    packets: u64,
}
impl ControllerFactory for CountingFactory {
    fn build(&self, _: Instant, max: u64) -> Box<dyn Controller> {
        Box::new(Counting {
            inner: FixedWindow::new(self.packets * max),
            ecn: self.ecn.clone(),
            loss: self.loss.clone(),
            acks: self.acks.clone(),
        })
    }
}

#[test]
fn controllers_see_ecn_marks_losses_and_acks() {
    // Small windows: a queue above K but no loss.
    let f = CountingFactory {
        packets: 20,
        ..CountingFactory::default()
    };
    let mut sim = Sim::new(cfg(4), &f);
    for fl in 0..4 {
        sim.submit(fl, 1 << 20, 0, 0);
    }
    run_to_completion(&mut sim);
    assert!(f.ecn.load(Ordering::Relaxed) > 0, "queue above K marks CE");
    assert_eq!(f.loss.load(Ordering::Relaxed), 0);
    assert_eq!(f.acks.load(Ordering::Relaxed), sim.stats.packets);
    // Large windows: losses reach on_loss.
    let g = CountingFactory {
        packets: 300,
        ..CountingFactory::default()
    };
    let mut sim = Sim::new(cfg(4), &g);
    for fl in 0..4 {
        sim.submit(fl, 2 << 20, 0, 0);
    }
    run_to_completion(&mut sim);
    assert!(g.loss.load(Ordering::Relaxed) > 0);
}

#[test]
fn credits_bound_the_incast_queue() {
    let mut c = cfg(32);
    let link = c.link;
    let budget = link.bdp() + 4 * link.mtu;
    c.credit = Some(CreditSetup {
        alloc: CreditConfig {
            budget,
            quantum: link.payload(),
            overcommit: 4,
            max_messages: 64,
            srpt_below: 4 * budget,
        },
        unscheduled: link.payload(),
    });
    // Windows far larger than the buffer: only the credits keep the queue short.
    let mut sim = Sim::new(c.clone(), &FixedWindowFactory { packets: 1000 });
    let ids: Vec<usize> = (0..32).map(|f| sim.submit(f, 256 << 10, 0, 0)).collect();
    run_to_completion(&mut sim);
    assert_eq!(sim.stats.drops, 0);
    for i in ids {
        assert!(sim.msgs[i].done.is_some());
    }
    let qmax = *sim.stats.queue_delay.iter().max().unwrap() as u64;
    assert!(
        qmax <= link.ser_ns(budget),
        "queue {qmax} ns within one budget"
    );
    // Without credits the same windows overflow the buffer.
    let mut sim = Sim::new(cfg(32), &FixedWindowFactory { packets: 1000 });
    for f in 0..32 {
        sim.submit(f, 256 << 10, 0, 0);
    }
    run_to_completion(&mut sim);
    assert!(sim.stats.drops > 0);
}
