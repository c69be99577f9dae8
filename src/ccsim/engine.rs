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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use crate::proto::cc::credit::{CreditAllocator, CreditConfig, SlotId};
use crate::proto::cc::{AckEvent, Controller, ControllerFactory, LossEvent, SendEvent};
use crate::proto::Instant;

/// The bottleneck link and the path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// Line rate of the bottleneck and of every sender's NIC, bits per second.
    pub rate_bps: u64,
    /// Propagation round trip (excluding serialisation and hold time).
    pub base_rtt: Duration,
    /// Bytes on the wire per full packet.
    pub mtu: u64,
    /// Header bytes per packet (Ethernet, IP, UDP, transport).
    pub header: u64,
    /// Bottleneck buffer, bytes (tail drop beyond).
    pub buffer: u64,
    /// ECN marking threshold, bytes of queue.
    pub ecn_k: u64,
}

impl LinkConfig {
    /// A link of `gbps` Gb/s with the defaults used in the experiments: 10 us base RTT,
    /// 4 KiB MTU with 64 B of headers, a buffer of 1 MiB and ECN K = max(BDP / 5, 2 MTU).
    pub fn gbps(gbps: u64) -> LinkConfig {
        let rate_bps = gbps * 1_000_000_000;
        let base_rtt = Duration::from_micros(10);
        let mtu = 4096;
        let bdp = rate_bps / 8 * base_rtt.as_nanos() as u64 / 1_000_000_000;
        LinkConfig {
            rate_bps,
            base_rtt,
            mtu,
            header: 64,
            buffer: 1 << 20,
            ecn_k: (bdp / 5).max(2 * mtu),
        }
    }

    /// Bandwidth-delay product in bytes (line rate x base RTT).
    pub fn bdp(&self) -> u64 {
        (self.rate_bps as u128 * self.base_rtt.as_nanos() / 8 / 1_000_000_000) as u64
    }

    /// Payload bytes per full packet.
    pub fn payload(&self) -> u64 {
        self.mtu - self.header
    }

    /// Serialisation time of `bytes` at the line rate, ns (rounded up).
    pub fn ser_ns(&self, bytes: u64) -> u64 {
        (bytes * 8 * 1_000_000_000).div_ceil(self.rate_bps)
    }
}

/// Receiver credits, as the transport would run them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditSetup {
    /// Allocator parameters.
    pub alloc: CreditConfig,
    /// Bytes of each message a sender sends before any grant.
    pub unscheduled: u64,
}

/// One simulation's settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The path.
    pub link: LinkConfig,
    /// Number of senders (one controller each).
    pub senders: usize,
    /// Timestamp noise: each RTT sample gets `U[0, noise]` added.
    pub noise: Duration,
    /// Receiver hold time lower bound.
    pub hold_min: Duration,
    /// Receiver hold time upper bound.
    pub hold_max: Duration,
    /// Floor of the retransmission timeout.
    pub min_rto: Duration,
    /// Receiver credits (`None`: senders are limited by their controllers only).
    pub credit: Option<CreditSetup>,
    /// Seed of every random draw.
    pub seed: u64,
    /// Trace bin width (queue and per-flow delivery traces).
    pub trace_bin: Duration,
    /// Keep per-flow delivery traces (needed for rates, fairness and convergence).
    pub flow_traces: bool,
}

/// Deterministic generator (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// From a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in `[lo, hi]` nanoseconds.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next_u64() % (hi - lo + 1)
        }
    }
}

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
    rng: Rng,
    /// What happened.
    pub stats: Stats,
    completed: Vec<u32>,
}

const DUP_THRESH: u64 = 3;
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
            rng: Rng::new(cfg.seed),
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

    fn wake(&mut self, f: usize, at: u64) {
        let flow = &mut self.flows[f];
        if flow.wake_at.is_some_and(|w| w <= at) {
            return;
        }
        flow.wake_at = Some(at);
        self.schedule(at, Ev::Wake(f as u32));
    }

    /// The next (message, chunk) flow `f` may send, without taking it.
    fn next_chunk(&self, f: usize) -> Option<(u32, u32, bool)> {
        let flow = &self.flows[f];
        if let Some(&(m, c)) = flow.retx.front() {
            return Some((m, c, true));
        }
        let payload = self.cfg.link.payload();
        let mut best: Option<(u64, u32)> = None;
        for &m in &flow.msgs {
            let msg = &self.msgs[m as usize];
            if msg.next_chunk >= msg.chunks {
                continue;
            }
            let end = ((msg.next_chunk as u64 + 1) * payload).min(msg.size);
            if end > msg.granted {
                continue;
            }
            let left = msg.size - msg.next_chunk as u64 * payload;
            if best.is_none_or(|(l, _)| left < l) {
                best = Some((left, m));
            }
        }
        best.map(|(_, m)| (m, self.msgs[m as usize].next_chunk, false))
    }

    fn chunk_payload(&self, m: u32, c: u32) -> u64 {
        let payload = self.cfg.link.payload();
        let msg = &self.msgs[m as usize];
        (msg.size - c as u64 * payload).min(payload).max(1)
    }

    fn try_send(&mut self, f: usize) {
        loop {
            let now = self.now;
            if self.flows[f].nic_free > now {
                let t = self.flows[f].nic_free;
                self.wake(f, t);
                return;
            }
            let Some((m, c, retx)) = self.next_chunk(f) else {
                return;
            };
            let payload = self.chunk_payload(m, c);
            let bytes = payload + self.cfg.link.header;
            let flow = &self.flows[f];
            if flow.in_flight + bytes > flow.cc.window() {
                return; // an ACK reopens the window
            }
            let ed = flow
                .cc
                .earliest_departure(Instant::from_nanos(now), flow.last_departure, bytes)
                .as_nanos();
            if ed > now {
                self.wake(f, ed);
                return;
            }
            // Send it.
            if retx {
                self.flows[f].retx.pop_front();
                self.stats.retransmits += 1;
            } else {
                let msg = &mut self.msgs[m as usize];
                msg.next_chunk += 1;
                if msg.next_chunk == msg.chunks {
                    // Fully sent: only retransmissions (from `retx`) can need it again.
                    self.flows[f].msgs.retain(|&x| x != m);
                }
            }
            self.stats.packets += 1;
            let ser = self.cfg.link.ser_ns(bytes);
            let flow = &mut self.flows[f];
            let pn = flow.next_pn;
            flow.next_pn += 1;
            flow.in_flight += bytes;
            flow.sent.push_back(Sent {
                pn,
                msg: m,
                chunk: c,
                bytes: bytes as u32,
                time: now,
                state: PktState::Outstanding,
            });
            let t = Instant::from_nanos(now);
            flow.last_departure = t;
            flow.nic_free = now + ser;
            let app_limited = false;
            let in_flight = flow.in_flight;
            flow.cc.on_send(
                t,
                &SendEvent {
                    pn,
                    bytes,
                    in_flight,
                    retransmit: retx,
                    app_limited,
                },
            );
            if flow.rto_at.is_none() {
                let at = now + self.rto(f);
                self.flows[f].rto_at = Some(at);
                self.schedule(at, Ev::Rto(f as u32));
            }
            let pkt = Packet {
                flow: f as u32,
                pn,
                msg: m,
                chunk: c,
                bytes: bytes as u32,
                payload: payload as u32,
                sent: now,
                enq: 0,
                ce: false,
            };
            let id = self.alloc_pkt(pkt);
            let arrive = now + ser + self.cfg.link.base_rtt.as_nanos() as u64 / 4;
            self.schedule(arrive, Ev::SwitchArrive(id));
        }
    }

    /// Send a header-only announcement of message `m` (its length, asking for grants). It
    /// crosses the bottleneck like any packet but is not congestion controlled or
    /// retransmitted.
    fn announce(&mut self, f: usize, m: u32) {
        let bytes = self.cfg.link.header;
        let ser = self.cfg.link.ser_ns(bytes);
        let start = self.flows[f].nic_free.max(self.now);
        self.flows[f].nic_free = start + ser;
        let pkt = Packet {
            flow: f as u32,
            pn: u64::MAX,
            msg: m,
            chunk: ANNOUNCE,
            bytes: bytes as u32,
            payload: 0,
            sent: start,
            enq: 0,
            ce: false,
        };
        let id = self.alloc_pkt(pkt);
        let arrive = start + ser + self.cfg.link.base_rtt.as_nanos() as u64 / 4;
        self.schedule(arrive, Ev::SwitchArrive(id));
    }

    fn alloc_pkt(&mut self, pkt: Packet) -> u32 {
        match self.free_pkts.pop() {
            Some(id) => {
                self.pkts[id as usize] = pkt;
                id
            }
            None => {
                self.pkts.push(pkt);
                (self.pkts.len() - 1) as u32
            }
        }
    }

    fn rto(&self, f: usize) -> u64 {
        let flow = &self.flows[f];
        let base = match flow.srtt {
            Some(s) => (s + 4 * flow.rttvar).max(self.cfg.min_rto),
            None => self.cfg.min_rto.max(3 * self.cfg.link.base_rtt),
        };
        (base.as_nanos() as u64) << flow.backoff.min(10)
    }

    fn switch_arrive(&mut self, p: u32) {
        let bytes = self.pkts[p as usize].bytes as u64;
        if self.queue_bytes + bytes > self.cfg.link.buffer {
            self.stats.drops += 1;
            self.free_pkts.push(p);
            return;
        }
        let pkt = &mut self.pkts[p as usize];
        pkt.ce = self.queue_bytes >= self.cfg.link.ecn_k;
        pkt.enq = self.now;
        self.queue.push_back(p);
        self.queue_bytes += bytes;
        self.trace_queue();
        if !self.link_busy {
            self.start_tx();
        }
    }

    fn start_tx(&mut self) {
        let Some(&p) = self.queue.front() else {
            self.link_busy = false;
            return;
        };
        self.link_busy = true;
        let pkt = self.pkts[p as usize];
        let wait = self.now - pkt.enq;
        self.stats
            .queue_delay
            .push(wait.min(u32::MAX as u64) as u32);
        let ser = self.cfg.link.ser_ns(pkt.bytes as u64);
        self.schedule(self.now + ser, Ev::LinkFree);
    }

    fn link_free(&mut self) {
        let Some(p) = self.queue.pop_front() else {
            self.link_busy = false;
            return;
        };
        let bytes = self.pkts[p as usize].bytes as u64;
        self.queue_bytes -= bytes;
        self.stats.wire_bytes += bytes;
        self.trace_queue();
        let at = self.now + self.cfg.link.base_rtt.as_nanos() as u64 / 4;
        self.schedule(at, Ev::RecvArrive(p));
        self.start_tx();
    }

    fn recv_arrive(&mut self, p: u32) {
        let pkt = self.pkts[p as usize];
        self.free_pkts.push(p);
        let now = self.now;
        if pkt.chunk == ANNOUNCE {
            let back = now + self.cfg.link.base_rtt.as_nanos() as u64 / 2;
            self.credit_arrive(pkt, false, false, back);
            return;
        }
        let bin = self.bin(now);
        let msg = &mut self.msgs[pkt.msg as usize];
        if msg.recv_bits.is_empty() {
            msg.recv_bits = vec![0; (msg.chunks as usize).div_ceil(64)];
        }
        let (w, b) = ((pkt.chunk / 64) as usize, pkt.chunk % 64);
        let fresh = msg.recv_bits[w] & (1 << b) == 0;
        if fresh {
            msg.recv_bits[w] |= 1 << b;
            msg.received_chunks += 1;
            self.stats.goodput_bytes += pkt.payload as u64;
            if let Some(tr) = self.stats.flow_trace.get_mut(pkt.flow as usize) {
                if tr.len() <= bin {
                    tr.resize(bin + 1, 0);
                }
                tr[bin] += pkt.payload;
            }
        }
        let complete = fresh && msg.received_chunks == msg.chunks;
        if complete {
            msg.done = Some(now);
            self.completed.push(pkt.msg);
        }
        let hold = self.rng.between(
            self.cfg.hold_min.as_nanos() as u64,
            self.cfg.hold_max.as_nanos() as u64,
        );
        // The receiver processes a flow's packets in order: its ACKs never overtake.
        let leave = (now + hold).max(self.flows[pkt.flow as usize].last_ack);
        self.flows[pkt.flow as usize].last_ack = leave;
        let hold = leave - now;
        let back = leave + self.cfg.link.base_rtt.as_nanos() as u64 / 2;
        self.credit_arrive(pkt, fresh, complete, back);
        self.schedule(
            back,
            Ev::Ack {
                flow: pkt.flow,
                pn: pkt.pn,
                sent: pkt.sent,
                hold,
                ce: pkt.ce,
            },
        );
    }

    /// Credits at the receiver: open a slot on first sight of a message, account fresh
    /// bytes, close on completion, send the grants (arriving at `back`).
    fn credit_arrive(&mut self, pkt: Packet, fresh: bool, complete: bool, back: u64) {
        let (Some(alloc), Some(setup)) = (self.credit.as_mut(), self.cfg.credit) else {
            return;
        };
        let msg = &mut self.msgs[pkt.msg as usize];
        if !msg.announced && msg.done.is_none_or(|_| complete) {
            msg.announced = true;
            let pre = if msg.size <= setup.unscheduled {
                msg.size
            } else {
                0
            };
            // A full table leaves the message waiting; it is retried on its next packet. (A
            // message announced while the table is full has no next packet here: the
            // transport re-announces; the experiments size the table so it never fills.)
            msg.slot = alloc.open(pkt.msg as u64, msg.size, pre).ok();
            msg.announced = msg.slot.is_some();
        }
        if let Some(slot) = msg.slot {
            if fresh {
                alloc.on_data(slot, pkt.payload as u64);
            }
            if complete {
                alloc.close(slot);
                msg.slot = None;
            }
        }
        while let Some(g) = alloc.poll_grant() {
            self.seq += 1;
            self.events.push(Reverse((
                back,
                self.seq,
                Ev::Grant {
                    msg: g.tag as u32,
                    offset: g.offset,
                },
            )));
        }
    }

    fn on_ack(&mut self, f: usize, pn: u64, sent: u64, hold: u64, ce: bool) {
        let now = self.now;
        let t = Instant::from_nanos(now);
        let noise = self.rng.between(0, self.cfg.noise.as_nanos() as u64);
        let flow = &mut self.flows[f];
        let Some(front) = flow.sent.front().map(|s| s.pn) else {
            return;
        };
        if pn < front {
            return; // already declared lost and dropped from the record
        }
        let idx = (pn - front) as usize;
        let Some(entry) = flow.sent.get_mut(idx) else {
            return;
        };
        if entry.state != PktState::Outstanding {
            return; // late ACK of a packet declared lost
        }
        entry.state = PktState::Acked;
        let bytes = entry.bytes as u64;
        flow.in_flight -= bytes;
        flow.backoff = 0;
        // RTT estimation as the transport does it (RFC 6298 on fabric samples).
        let rtt = Duration::from_nanos(now - sent + noise);
        let hold = Duration::from_nanos(hold);
        let fabric = rtt.saturating_sub(hold);
        flow.min_rtt = flow.min_rtt.min(fabric);
        match flow.srtt {
            None => {
                flow.srtt = Some(fabric);
                flow.rttvar = fabric / 2;
            }
            Some(s) => {
                let d = s.abs_diff(fabric);
                flow.rttvar = (flow.rttvar * 3 + d) / 4;
                flow.srtt = Some((s * 7 + fabric) / 8);
            }
        }
        if ce {
            let in_flight = flow.in_flight;
            flow.cc.on_ecn(t, 1, in_flight);
        }
        let ev = AckEvent {
            bytes_acked: bytes,
            packets_acked: 1,
            rtt: Some(rtt),
            hold,
            fabric_rtt: Some(fabric),
            srtt: flow.srtt.unwrap_or(rtt),
            min_rtt: flow.min_rtt,
            in_flight: flow.in_flight,
            ecn_ce_delta: 0,
            newest_sent: Instant::from_nanos(sent),
            stalled: false,
        };
        flow.cc.on_ack(t, &ev);
        // Packet-threshold loss detection.
        let mut lost_bytes = 0;
        let mut lost_pkts = 0;
        let mut newest_lost = 0;
        while let Some(s) = flow.sent.front().copied() {
            match s.state {
                PktState::Acked => {
                    flow.sent.pop_front();
                }
                PktState::Outstanding if s.pn + DUP_THRESH <= pn => {
                    flow.sent.pop_front();
                    flow.in_flight -= s.bytes as u64;
                    flow.retx.push_back((s.msg, s.chunk));
                    lost_bytes += s.bytes as u64;
                    lost_pkts += 1;
                    newest_lost = s.time;
                }
                PktState::Outstanding => break,
            }
        }
        if lost_pkts > 0 {
            let in_flight = flow.in_flight;
            flow.cc.on_loss(
                t,
                &LossEvent {
                    bytes_lost: lost_bytes,
                    packets_lost: lost_pkts,
                    newest_lost_sent: Instant::from_nanos(newest_lost),
                    in_flight,
                },
            );
        }
        // Re-arm the retransmission timer from this ACK.
        if self.flows[f].in_flight > 0 {
            let at = now + self.rto(f);
            self.flows[f].rto_at = Some(at);
            self.schedule(at, Ev::Rto(f as u32));
        } else {
            self.flows[f].rto_at = None;
        }
        self.try_send(f);
    }

    fn on_rto(&mut self, f: usize) {
        let now = self.now;
        if self.flows[f].rto_at != Some(now) {
            return;
        }
        self.flows[f].rto_at = None;
        let flow = &mut self.flows[f];
        if flow.in_flight == 0 {
            return;
        }
        self.stats.timeouts += 1;
        while let Some(s) = flow.sent.pop_front() {
            if s.state == PktState::Outstanding {
                flow.retx.push_back((s.msg, s.chunk));
            }
        }
        flow.in_flight = 0;
        flow.backoff += 1;
        flow.cc.on_timeout(Instant::from_nanos(now));
        self.try_send(f);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::proto::cc::{FixedWindow, FixedWindowFactory};

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
}
