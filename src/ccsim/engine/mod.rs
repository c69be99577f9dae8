//! The packet-level discrete-event engine: senders running real [`Controller`]s, one
//! bottleneck FIFO, receivers that ACK every packet, in virtual time.
//!
//! Model (all times in virtual nanoseconds; deterministic for a given seed):
//! - Sender `i` is a host with its own NIC at the bottleneck's line rate. It sends MTU-sized
//!   packets (`mtu` bytes on the wire, `mtu - header` bytes of payload) while
//!   `in_flight + packet <= window()`, not before `earliest_departure`, and, with credits, only
//!   message bytes below the receiver's grant (retransmissions and the first `unscheduled`
//!   bytes of a message need no grant). A sender with several messages sends the one with the
//!   fewest bytes left first.
//! - Path: sender NIC serialisation, `base_rtt / 4` propagation, the bottleneck queue (FIFO,
//!   tail drop at `buffer` bytes, ECN-CE marked when the queue holds at least `ecn_k` bytes on
//!   arrival) drained at the line rate, `base_rtt / 4` to the receiver. ACKs and grants take
//!   `hold + base_rtt / 2` back and are never lost or queued.
//! - The receiver ACKs every packet after a hold time drawn uniformly from
//!   `[hold_min, hold_max]`, echoing the send timestamp, the hold time and the CE bit. The
//!   sender's RTT sample gets timestamp noise drawn uniformly from `[0, noise]` added.
//! - Loss detection: a packet is lost when a packet sent three packets later is acknowledged
//!   (the path does not reorder), or at the retransmission timeout
//!   (`max(min_rto, srtt + 4 rttvar)`, doubled per consecutive timeout). Lost packets are
//!   resent with new packet numbers. The controller sees the same events, in the same order,
//!   as from `proto`'s connection: `on_ecn` before `on_ack`, `on_loss` once per detection pass.
//!
//! Files: `mod.rs` holds the state and the event loop, `config.rs` the settings,
//! `sender.rs` the send path (windows, pacing, credits' announcements), `link.rs` the
//! bottleneck queue, `receiver.rs` ACKs and the receiver's credits, `recovery.rs` ACK
//! processing, RTT estimation, loss detection and the retransmission timeout.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use crate::proto::cc::credit::{CreditAllocator, SlotId};
use crate::proto::cc::{Controller, ControllerFactory};
use crate::proto::Instant;
use crate::rng::SplitMix64;

mod config;
mod link;
mod receiver;
mod recovery;
mod sender;
#[cfg(test)]
mod tests;

pub use config::{CreditSetup, LinkConfig, SimConfig};

/// A message handed to a sender.
#[derive(Debug, Clone)]
pub struct Message {
    /// Sending flow.
    pub flow: usize,
    /// Payload bytes.
    pub size: u64,
    /// When the application submitted it, ns.
    pub submit: u64,
    /// When the receiver had every byte, ns.
    pub done: Option<u64>,
    /// Caller's label (workload class, incast round).
    pub label: u32,
    chunks: u32,
    next_chunk: u32,
    /// Sender may send chunks whose end is at or below this byte offset.
    granted: u64,
    received_chunks: u32,
    recv_bits: Vec<u64>,
    slot: Option<SlotId>,
    announced: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PktState {
    Outstanding,
    Acked,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    pn: u64,
    msg: u32,
    chunk: u32,
    bytes: u32,
    time: u64,
    state: PktState,
}

#[derive(Debug, Clone, Copy)]
struct Packet {
    flow: u32,
    pn: u64,
    msg: u32,
    chunk: u32,
    bytes: u32,
    payload: u32,
    sent: u64,
    enq: u64,
    ce: bool,
}

#[derive(Debug)]
struct Flow {
    cc: Box<dyn Controller>,
    next_pn: u64,
    in_flight: u64,
    sent: VecDeque<Sent>,
    retx: VecDeque<(u32, u32)>,
    msgs: Vec<u32>,
    last_departure: Instant,
    nic_free: u64,
    wake_at: Option<u64>,
    srtt: Option<Duration>,
    rttvar: Duration,
    min_rtt: Duration,
    rto_at: Option<u64>,
    backoff: u32,
    /// When the receiver last sent an ACK to this flow: ACKs leave in order.
    last_ack: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Wake(u32),
    SwitchArrive(u32),
    LinkFree,
    RecvArrive(u32),
    Ack {
        flow: u32,
        pn: u64,
        sent: u64,
        hold: u64,
        ce: bool,
    },
    Grant {
        msg: u32,
        offset: u64,
    },
    Rto(u32),
    Submit(u32),
}

/// Per-run counters and samples.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Queueing delay of every packet that went through the bottleneck, ns.
    pub queue_delay: Vec<u32>,
    /// Highest queue (bytes) per trace bin.
    pub queue_trace: Vec<u32>,
    /// Unique payload bytes delivered per flow per trace bin.
    pub flow_trace: Vec<Vec<u32>>,
    /// Bytes the bottleneck transmitted (all packets).
    pub wire_bytes: u64,
    /// Unique payload bytes delivered.
    pub goodput_bytes: u64,
    /// Packets retransmitted.
    pub retransmits: u64,
    /// Packets dropped at the bottleneck.
    pub drops: u64,
    /// Retransmission timeouts.
    pub timeouts: u64,
    /// Packets sent (first transmissions and retransmissions).
    pub packets: u64,
}

/// The simulator. Drive it with [`Sim::submit`] and [`Sim::run_until`].
#[derive(Debug)]
pub struct Sim {
    cfg: SimConfig,
    now: u64,
    seq: u64,
    events: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    flows: Vec<Flow>,
    /// Every message submitted, in submission order.
    pub msgs: Vec<Message>,
    pkts: Vec<Packet>,
    free_pkts: Vec<u32>,
    queue: VecDeque<u32>,
    queue_bytes: u64,
    link_busy: bool,
    credit: Option<CreditAllocator>,
    rng: SplitMix64,
    /// What happened.
    pub stats: Stats,
    completed: Vec<u32>,
}

/// `chunk` of an announcement packet.
const ANNOUNCE: u32 = u32::MAX;

impl Sim {
    /// A simulator whose senders' controllers come from `factory`.
    pub fn new(cfg: SimConfig, factory: &dyn ControllerFactory) -> Sim {
        let flows = (0..cfg.senders)
            .map(|_| Flow {
                cc: factory.build(Instant::ZERO, cfg.link.mtu),
                next_pn: 0,
                in_flight: 0,
                sent: VecDeque::new(),
                retx: VecDeque::new(),
                msgs: Vec::new(),
                last_departure: Instant::ZERO,
                nic_free: 0,
                wake_at: None,
                srtt: None,
                rttvar: Duration::ZERO,
                min_rtt: Duration::MAX,
                rto_at: None,
                backoff: 0,
                last_ack: 0,
            })
            .collect();
        let credit = cfg.credit.map(|c| CreditAllocator::new(c.alloc));
        let stats = Stats {
            flow_trace: if cfg.flow_traces {
                vec![Vec::new(); cfg.senders]
            } else {
                Vec::new()
            },
            ..Stats::default()
        };
        Sim {
            rng: SplitMix64::new(cfg.seed),
            cfg,
            now: 0,
            seq: 0,
            events: BinaryHeap::new(),
            flows,
            msgs: Vec::new(),
            pkts: Vec::new(),
            free_pkts: Vec::new(),
            queue: VecDeque::new(),
            queue_bytes: 0,
            link_busy: false,
            credit,
            stats,
            completed: Vec::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// Current virtual time, ns.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The controller of `flow` (for traces).
    pub fn controller(&self, flow: usize) -> &dyn Controller {
        &*self.flows[flow].cc
    }

    /// Submit a message of `size` bytes to `flow` at time `at` (ns, not before now).
    /// Returns its index in [`Sim::msgs`].
    pub fn submit(&mut self, flow: usize, size: u64, at: u64, label: u32) -> usize {
        let payload = self.cfg.link.payload();
        let chunks = size.div_ceil(payload).max(1) as u32;
        // With credits, a message larger than `unscheduled` waits for grants (its sender
        // announces it with a header-only packet); a smaller one goes at once.
        let granted = match self.cfg.credit {
            Some(c) if size > c.unscheduled => 0,
            _ => u64::MAX,
        };
        let id = self.msgs.len();
        self.msgs.push(Message {
            flow,
            size,
            submit: at,
            done: None,
            label,
            chunks,
            next_chunk: 0,
            granted,
            received_chunks: 0,
            recv_bits: Vec::new(),
            slot: None,
            announced: false,
        });
        self.schedule(at.max(self.now), Ev::Submit(id as u32));
        id
    }

    /// Messages completed since the last call (indices into [`Sim::msgs`]).
    pub fn take_completed(&mut self, out: &mut Vec<u32>) {
        out.append(&mut self.completed);
    }

    /// Time of the next event, if any.
    pub fn next_event(&self) -> Option<u64> {
        self.events.peek().map(|Reverse((t, _, _))| *t)
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq, ev)));
    }

    fn bin(&self, t: u64) -> usize {
        (t / self.cfg.trace_bin.as_nanos().max(1) as u64) as usize
    }

    fn trace_queue(&mut self) {
        let b = self.bin(self.now);
        let q = &mut self.stats.queue_trace;
        if q.len() <= b {
            q.resize(b + 1, 0);
        }
        q[b] = q[b].max(self.queue_bytes as u32);
    }

    /// Process every event up to and including `until` (ns). Returns false when no event is
    /// left.
    pub fn run_until(&mut self, until: u64) -> bool {
        while let Some(&Reverse((t, _, ev))) = self.events.peek() {
            if t > until {
                return true;
            }
            self.events.pop();
            self.now = t;
            self.handle(ev);
        }
        false
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Submit(m) => {
                let f = self.msgs[m as usize].flow;
                self.flows[f].msgs.push(m);
                if self.msgs[m as usize].granted == 0 {
                    self.announce(f, m);
                }
                self.try_send(f);
            }
            Ev::Wake(f) => {
                let f = f as usize;
                if self.flows[f].wake_at == Some(self.now) {
                    self.flows[f].wake_at = None;
                    self.try_send(f);
                }
            }
            Ev::SwitchArrive(p) => self.switch_arrive(p),
            Ev::LinkFree => self.link_free(),
            Ev::RecvArrive(p) => self.recv_arrive(p),
            Ev::Ack {
                flow,
                pn,
                sent,
                hold,
                ce,
            } => self.on_ack(flow as usize, pn, sent, hold, ce),
            Ev::Grant { msg, offset } => {
                let m = &mut self.msgs[msg as usize];
                m.granted = m.granted.max(offset);
                let f = m.flow;
                self.try_send(f);
            }
            Ev::Rto(f) => self.on_rto(f as usize),
        }
    }
}
