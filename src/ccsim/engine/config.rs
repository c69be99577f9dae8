//! The simulator's settings: the bottleneck link and path, receiver credits, one run.

use std::time::Duration;

use crate::proto::cc::credit::CreditConfig;

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
