//! The experiment scenarios and the metrics each produces.

use std::time::Duration;

use super::engine::{CreditSetup, LinkConfig, Sim, SimConfig};
use super::metrics::{converged_at, jain, mean_std, percentile, window_sum};
use crate::proto::cc::credit::CreditConfig;
use crate::proto::cc::cubic::CubicFactory;
use crate::proto::cc::dctcp::DctcpFactory;
use crate::proto::cc::swift::{SwiftConfig, SwiftFactory};
use crate::proto::cc::timely::{TimelyConfig, TimelyFactory};
use crate::proto::cc::ControllerFactory;
use crate::rng::SplitMix64;

/// The controllers compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cc {
    /// Swift with receiver-granted credits: the default stack.
    SwiftCredit,
    /// Swift with credits and ECN confirmation (a delay spike without CE marks is noise).
    SwiftEcnCredit,
    /// Swift alone.
    Swift,
    /// CUBIC (loss-based baseline).
    Cubic,
    /// DCTCP (ECN baseline).
    Dctcp,
    /// TIMELY with eRPC's parameters (RTT-gradient baseline).
    Timely,
}

impl Cc {
    /// Every controller, in table order.
    pub const ALL: [Cc; 6] = [
        Cc::SwiftCredit,
        Cc::SwiftEcnCredit,
        Cc::Swift,
        Cc::Cubic,
        Cc::Dctcp,
        Cc::Timely,
    ];

    /// Name in tables and file names.
    pub fn name(self) -> &'static str {
        match self {
            Cc::SwiftCredit => "swift+credit",
            Cc::SwiftEcnCredit => "swift+ecn+credit",
            Cc::Swift => "swift",
            Cc::Cubic => "cubic",
            Cc::Dctcp => "dctcp",
            Cc::Timely => "timely",
        }
    }

    /// Parse a name.
    pub fn parse(s: &str) -> Option<Cc> {
        Cc::ALL.into_iter().find(|c| c.name() == s)
    }

    /// The factory for a link.
    pub fn factory(self, link: &LinkConfig) -> Box<dyn ControllerFactory> {
        match self {
            Cc::SwiftCredit | Cc::SwiftEcnCredit | Cc::Swift => Box::new(SwiftFactory {
                config: SwiftConfig {
                    line_rate_bps: link.rate_bps,
                    // The fabric's unloaded delay, configured as Swift deployments do:
                    // propagation plus two serialisations (NIC, bottleneck), plus 0.5 us.
                    base_target: Some(
                        link.base_rtt + Duration::from_nanos(2 * link.ser_ns(link.mtu) + 500),
                    ),
                    ecn_confirm: self == Cc::SwiftEcnCredit,
                    // With credits the receiver bounds the burst, so a sender starts at one
                    // BDP and its window never throttles a grant; alone, Swift starts at 10.
                    init_cwnd: if self == Cc::Swift {
                        10.0
                    } else {
                        (link.bdp() as f64 / link.mtu as f64).max(10.0)
                    },
                    // A hop's allowance must hold a couple of packets, or the controller
                    // fights its own packet quantisation (1 us is 0.8 packets at 25 Gb/s).
                    per_hop: Duration::from_micros(1)
                        .max(Duration::from_nanos(2 * link.ser_ns(link.mtu))),
                    ..SwiftConfig::default()
                },
            }),
            Cc::Cubic => Box::new(CubicFactory::default()),
            Cc::Dctcp => Box::new(DctcpFactory::default()),
            Cc::Timely => Box::new(TimelyFactory {
                config: TimelyConfig {
                    line_rate_bps: link.rate_bps,
                    ..TimelyConfig::default()
                },
            }),
        }
    }

    /// The receiver credits this stack runs with.
    pub fn credit(self, link: &LinkConfig) -> Option<CreditSetup> {
        match self {
            Cc::SwiftCredit | Cc::SwiftEcnCredit => {
                // One BDP of the grant loop: propagation, two serialisations, the largest
                // hold time; plus two packets of slack.
                let rtt = link.base_rtt.as_nanos() as u64 + 2 * link.ser_ns(link.mtu) + HOLD_MAX_NS;
                let budget = link.rate_bps / 8 * rtt / 1_000_000_000 + 2 * link.mtu;
                Some(CreditSetup {
                    alloc: CreditConfig {
                        budget,
                        quantum: link.payload(),
                        overcommit: 4,
                        max_messages: 4096,
                        srpt_below: 4 * budget,
                    },
                    unscheduled: link.payload(),
                })
            }
            _ => None,
        }
    }
}

/// What the senders do.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    /// Long flows joining one by one, `interval` apart; the run ends `interval` after the
    /// last join.
    Join {
        /// Number of flows.
        flows: usize,
        /// Time between joins.
        interval: Duration,
    },
    /// Long flows all starting at once, for `duration`.
    Steady {
        /// Number of flows.
        flows: usize,
        /// Run length.
        duration: Duration,
    },
    /// Synchronised rounds: every sender sends one message of `size` bytes to the receiver;
    /// the next round starts `gap` after the last message of a round completed.
    Incast {
        /// Senders.
        senders: usize,
        /// Message size, bytes.
        size: u64,
        /// Rounds.
        rounds: usize,
        /// Pause between rounds (the compute phase of a training step).
        gap: Duration,
    },
    /// Poisson arrivals of small RPCs (512 B - 32 KiB, 98 %) and long messages (1 - 4 MiB,
    /// 2 %) at `load` of the line rate, from `senders` senders, for `duration`.
    Mixed {
        /// Senders.
        senders: usize,
        /// Offered load, fraction of the line rate.
        load: f64,
        /// Arrival period.
        duration: Duration,
    },
}

/// One scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Name in tables and file names.
    pub name: String,
    /// The path.
    pub link: LinkConfig,
    /// Timestamp noise bound.
    pub noise: Duration,
    /// The workload.
    pub workload: Workload,
}

/// Everything measured in one run (`None`: does not apply to the scenario).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// Queueing delay percentiles and max, us.
    pub queue_p50: Option<f64>,
    /// p99 queueing delay, us.
    pub queue_p99: Option<f64>,
    /// Largest queueing delay, us.
    pub queue_max: Option<f64>,
    /// Message completion time p50, us (RPCs only in mixed scenarios).
    pub mct_p50: Option<f64>,
    /// MCT p99, us.
    pub mct_p99: Option<f64>,
    /// MCT p99.9, us.
    pub mct_p999: Option<f64>,
    /// Slowdown (MCT / unloaded MCT) p50, all messages.
    pub slowdown_p50: Option<f64>,
    /// Slowdown p99.
    pub slowdown_p99: Option<f64>,
    /// Jitter: p99 - p50 of the scenario's completion times, us (RPC MCT in mixed scenarios,
    /// per-round incast completion time in incast scenarios, the first round excluded as
    /// warm-up).
    pub jitter: Option<f64>,
    /// Standard deviation of the same completion times, us.
    pub jitter_std: Option<f64>,
    /// Bottleneck utilisation while there was demand, percent.
    pub util: Option<f64>,
    /// Goodput (unique payload delivered) while there was demand, Gb/s.
    pub goodput: Option<f64>,
    /// Jain's index: worst over joins, 0.8-1.0 ms after each join (join); over the run after
    /// 1 ms (steady).
    pub jain: Option<f64>,
    /// Worst time over joins until every flow stayed within 10 % of its fair share for 10
    /// base RTTs, us; `Some(f64::INFINITY)` if some join never converged.
    pub converge: Option<f64>,
    /// Incast completion time p50 over rounds (after the warm-up round), us.
    pub ict_p50: Option<f64>,
    /// Incast completion time p99 over rounds, us.
    pub ict_p99: Option<f64>,
    /// Packets retransmitted.
    pub retransmits: u64,
    /// Packets dropped at the bottleneck.
    pub drops: u64,
    /// Retransmission timeouts.
    pub timeouts: u64,
}

/// One (scenario, controller) run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Scenario name.
    pub scenario: String,
    /// Controller.
    pub cc: Cc,
    /// Results.
    pub metrics: Metrics,
    /// Highest queue per trace bin, bytes.
    pub queue_trace: Vec<u32>,
    /// Payload delivered per flow per trace bin, bytes (join/steady scenarios).
    pub flow_trace: Vec<Vec<u32>>,
    /// Trace bin width.
    pub trace_bin: Duration,
    /// Line rate, bits per second.
    pub rate_bps: u64,
    /// Packets the run sent.
    pub packets: u64,
}

/// Trace bin width of every run.
pub const TRACE_BIN: Duration = Duration::from_micros(5);

const LONG: u64 = 1 << 30;
/// Largest receiver hold time in every run, ns.
const HOLD_MAX_NS: u64 = 1200;
const US: f64 = 1000.0;

/// The full scenario set.
pub fn all() -> Vec<Scenario> {
    let l100 = LinkConfig::gbps(100);
    let l25 = LinkConfig::gbps(25);
    let ms = Duration::from_millis;
    let us = Duration::from_micros;
    let mut v = vec![
        sc(
            "join8-100g",
            l100,
            0,
            Workload::Join {
                flows: 8,
                interval: us(1500),
            },
        ),
        sc(
            "join8-25g",
            l25,
            0,
            Workload::Join {
                flows: 8,
                interval: us(1500),
            },
        ),
        sc("incast16x1m-100g", l100, 0, incast(16, 1 << 20, 10)),
        sc("incast16x4m-100g", l100, 0, incast(16, 4 << 20, 5)),
        sc("incast64x16k-100g", l100, 0, incast(64, 16 << 10, 40)),
        sc("incast64x64k-100g", l100, 0, incast(64, 64 << 10, 40)),
        sc("incast64x256k-100g", l100, 0, incast(64, 256 << 10, 10)),
        sc("incast16x256k-25g", l25, 0, incast(16, 256 << 10, 10)),
        sc("incast64x64k-25g", l25, 0, incast(64, 64 << 10, 10)),
    ];
    for load in [30, 60, 80] {
        v.push(sc(
            &format!("mixed{load}-100g"),
            l100,
            0,
            Workload::Mixed {
                senders: 16,
                load: load as f64 / 100.0,
                duration: ms(10),
            },
        ));
    }
    for noise in [1, 5] {
        v.push(sc(
            &format!("noise{noise}us-8flows-100g"),
            l100,
            noise,
            Workload::Steady {
                flows: 8,
                duration: ms(5),
            },
        ));
    }
    v.push(sc(
        "noise5us-incast64x64k-100g",
        l100,
        5,
        incast(64, 64 << 10, 20),
    ));
    v
}

/// A reduced, quick set for snapshot tests.
pub fn reduced() -> Vec<Scenario> {
    let l100 = LinkConfig::gbps(100);
    let us = Duration::from_micros;
    vec![
        sc(
            "join4-100g",
            l100,
            0,
            Workload::Join {
                flows: 4,
                interval: us(1200),
            },
        ),
        sc("incast64x64k-100g", l100, 0, incast(64, 64 << 10, 4)),
        sc(
            "mixed60-100g",
            l100,
            0,
            Workload::Mixed {
                senders: 8,
                load: 0.6,
                duration: Duration::from_millis(2),
            },
        ),
    ]
}

fn incast(senders: usize, size: u64, rounds: usize) -> Workload {
    Workload::Incast {
        senders,
        size,
        rounds,
        gap: Duration::from_micros(10),
    }
}

fn sc(name: &str, link: LinkConfig, noise_us: u64, workload: Workload) -> Scenario {
    Scenario {
        name: name.to_string(),
        link,
        noise: Duration::from_micros(noise_us),
        workload,
    }
}

fn senders(w: &Workload) -> usize {
    match *w {
        Workload::Join { flows, .. } | Workload::Steady { flows, .. } => flows,
        Workload::Incast { senders, .. } | Workload::Mixed { senders, .. } => senders,
    }
}

/// Unloaded completion time of a message of `size` bytes, ns: every packet serialised once
/// at the line rate, the last one once more at the bottleneck, one-way propagation.
pub fn ideal_mct(link: &LinkConfig, size: u64) -> f64 {
    let pkts = size.div_ceil(link.payload()).max(1);
    let wire = size + pkts * link.header;
    let last = wire - (pkts - 1) * link.mtu;
    (link.ser_ns(wire) + link.ser_ns(last)) as f64 + link.base_rtt.as_nanos() as f64 / 2.0
}

/// Run one scenario with one controller.
pub fn run(s: &Scenario, cc: Cc, seed: u64) -> Run {
    run_with(s, cc, seed, None)
}

/// [`run`], with the credit stacks' unscheduled bytes per message set to `unscheduled`
/// (default: one packet's payload; messages up to this size go without a grant, larger ones
/// announce themselves and wait for grants).
pub fn run_with(s: &Scenario, cc: Cc, seed: u64, unscheduled: Option<u64>) -> Run {
    let link = s.link;
    let credit = cc.credit(&link).map(|mut c| {
        if let Some(u) = unscheduled {
            c.unscheduled = u;
        }
        c
    });
    let flow_traces = matches!(s.workload, Workload::Join { .. } | Workload::Steady { .. });
    let cfg = SimConfig {
        link,
        senders: senders(&s.workload),
        noise: s.noise,
        hold_min: Duration::from_nanos(200),
        hold_max: Duration::from_nanos(HOLD_MAX_NS),
        min_rto: Duration::from_micros(100),
        credit,
        seed,
        trace_bin: TRACE_BIN,
        flow_traces,
    };
    let factory = cc.factory(&link);
    let mut sim = Sim::new(cfg, &*factory);
    let bin_ns = TRACE_BIN.as_nanos() as u64;
    let payload_rate = link.rate_bps as f64 / 8.0 * link.payload() as f64 / link.mtu as f64; // B/s
    let mut m = Metrics::default();
    let active_ns: f64;
    match s.workload {
        Workload::Join { flows, interval } => {
            let iv = interval.as_nanos() as u64;
            for f in 0..flows {
                sim.submit(f, LONG, f as u64 * iv, 0);
            }
            let end = flows as u64 * iv;
            sim.run_until(end);
            active_ns = end as f64;
            let tr = &sim.stats.flow_trace;
            let width = (10 * link.base_rtt.as_nanos() as u64 / bin_ns) as usize;
            let mut worst_jain: f64 = 1.0;
            let mut worst_conv: f64 = 0.0;
            for j in 1..flows {
                let n = j + 1;
                let tj = j as u64 * iv;
                let active: Vec<Vec<u32>> = tr[..n].to_vec();
                let fair = payload_rate / n as f64 * (width as u64 * bin_ns) as f64 / 1e9;
                let from = (tj / bin_ns) as usize;
                let limit = ((tj + iv) / bin_ns) as usize;
                let conv = converged_at(&active, from, limit, width, fair, 0.10)
                    .map_or(f64::INFINITY, |b| (b - from) as f64 * bin_ns as f64 / US);
                worst_conv = worst_conv.max(conv);
                let (a, b) = (
                    ((tj + 800_000) / bin_ns) as usize,
                    ((tj + 1_000_000) / bin_ns) as usize,
                );
                let x: Vec<f64> = active.iter().map(|t| window_sum(t, a, b)).collect();
                worst_jain = worst_jain.min(jain(&x).unwrap_or(0.0));
            }
            m.jain = Some(worst_jain);
            m.converge = Some(worst_conv);
        }
        Workload::Steady { flows, duration } => {
            for f in 0..flows {
                sim.submit(f, LONG, 0, 0);
            }
            let end = duration.as_nanos() as u64;
            sim.run_until(end);
            active_ns = end as f64;
            let a = (1_000_000 / bin_ns) as usize;
            let b = (end / bin_ns) as usize;
            let x: Vec<f64> = sim
                .stats
                .flow_trace
                .iter()
                .map(|t| window_sum(t, a, b))
                .collect();
            m.jain = jain(&x);
        }
        Workload::Incast {
            senders,
            size,
            rounds,
            gap,
        } => {
            let mut icts = Vec::new();
            let mut start = 0u64;
            let mut busy = 0u64;
            let mut done = Vec::new();
            let cap = 2_000_000_000u64; // 2 s of virtual time: a wedged run ends
            for r in 0..rounds {
                for f in 0..senders {
                    sim.submit(f, size, start, r as u32);
                }
                let mut left = senders;
                let mut end = start;
                while left > 0 {
                    let Some(t) = sim.next_event() else { break };
                    if t > cap {
                        break;
                    }
                    sim.run_until(t);
                    done.clear();
                    sim.take_completed(&mut done);
                    for &i in &done {
                        left -= 1;
                        end = end.max(sim.msgs[i as usize].done.unwrap_or(t));
                    }
                }
                if left > 0 {
                    break;
                }
                icts.push((end - start) as f64 / US);
                busy += end - start;
                start = end + gap.as_nanos() as u64;
            }
            active_ns = busy as f64;
            // The first round is a warm-up (controllers start from their initial windows),
            // as the first step of a training job is: completion-time statistics use the
            // rounds after it.
            if icts.len() > 1 {
                icts.remove(0);
            }
            let mut v = icts.clone();
            m.ict_p50 = percentile(&mut v, 0.5);
            m.ict_p99 = percentile(&mut v, 0.99);
            if let (Some(p50), Some(p99)) = (m.ict_p50, m.ict_p99) {
                m.jitter = Some(p99 - p50);
            }
            m.jitter_std = mean_std(&icts).map(|x| x.1);
        }
        Workload::Mixed {
            senders,
            load,
            duration,
        } => {
            let mut rng = SplitMix64::new(seed ^ 0x5eed);
            let mean = 0.98 * (512.0 + 32768.0) / 2.0 + 0.02 * (2.5 * 1048576.0);
            let lambda = load * link.rate_bps as f64 / 8.0 / mean; // msgs per second
            let mut t = 0.0f64;
            let end = duration.as_nanos() as f64;
            loop {
                t += -(1.0 - rng.next_f64()).ln() / lambda * 1e9;
                if t >= end {
                    break;
                }
                let f = (rng.next_u64() % senders as u64) as usize;
                let (size, label) = if rng.next_f64() < 0.98 {
                    (rng.between(512, 32 << 10), 0)
                } else {
                    (rng.between(1 << 20, 4 << 20), 1)
                };
                sim.submit(f, size, t as u64, label);
            }
            let cap = 4 * duration.as_nanos() as u64;
            sim.run_until(cap);
            let last = sim.msgs.iter().filter_map(|m| m.done).max().unwrap_or(cap);
            active_ns = last as f64;
            let mut rpc: Vec<f64> = sim
                .msgs
                .iter()
                .filter(|m| m.label == 0)
                .filter_map(|m| m.done.map(|d| (d - m.submit) as f64 / US))
                .collect();
            m.mct_p50 = percentile(&mut rpc, 0.5);
            m.mct_p99 = percentile(&mut rpc, 0.99);
            m.mct_p999 = percentile(&mut rpc, 0.999);
            if let (Some(p50), Some(p99)) = (m.mct_p50, m.mct_p99) {
                m.jitter = Some(p99 - p50);
            }
            m.jitter_std = mean_std(&rpc).map(|x| x.1);
        }
    }
    // Completion times and slowdown over every completed message (incast, mixed).
    if matches!(s.workload, Workload::Incast { .. } | Workload::Mixed { .. }) {
        let mut slow: Vec<f64> = sim
            .msgs
            .iter()
            .filter_map(|msg| {
                msg.done
                    .map(|d| (d - msg.submit) as f64 / ideal_mct(&link, msg.size))
            })
            .collect();
        m.slowdown_p50 = percentile(&mut slow, 0.5);
        m.slowdown_p99 = percentile(&mut slow, 0.99);
        if m.mct_p50.is_none() {
            let mut mct: Vec<f64> = sim
                .msgs
                .iter()
                .filter_map(|msg| msg.done.map(|d| (d - msg.submit) as f64 / US))
                .collect();
            m.mct_p50 = percentile(&mut mct, 0.5);
            m.mct_p99 = percentile(&mut mct, 0.99);
            m.mct_p999 = percentile(&mut mct, 0.999);
        }
    }
    let mut q: Vec<f64> = sim
        .stats
        .queue_delay
        .iter()
        .map(|&d| d as f64 / US)
        .collect();
    m.queue_p50 = percentile(&mut q, 0.5);
    m.queue_p99 = percentile(&mut q, 0.99);
    m.queue_max = q.last().copied();
    if active_ns > 0.0 {
        let secs = active_ns / 1e9;
        m.util = Some(sim.stats.wire_bytes as f64 * 8.0 / (link.rate_bps as f64 * secs) * 100.0);
        m.goodput = Some(sim.stats.goodput_bytes as f64 * 8.0 / secs / 1e9);
    }
    m.retransmits = sim.stats.retransmits;
    m.drops = sim.stats.drops;
    m.timeouts = sim.stats.timeouts;
    let stats = std::mem::take(&mut sim.stats);
    Run {
        scenario: s.name.clone(),
        cc,
        metrics: m,
        queue_trace: stats.queue_trace,
        flow_trace: stats.flow_trace,
        trace_bin: TRACE_BIN,
        rate_bps: link.rate_bps,
        packets: stats.packets,
    }
}
