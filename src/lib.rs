//! bypass: a userspace kernel-bypass transport stack.
//!
//! The crate is one library whose modules are the layers of the stack, listed here top down:
//! a layer uses only layers below it, never one above (the exact dependencies, drawn from the
//! code: `docs/ARCHITECTURE.md`).
//!
//! ```text
//! socket     Stack, Listener, Socket: connect/accept/send/recv of whole messages; a stack's
//!            metrics (published into telemetry) and run-time capture
//! runtime    one poll loop per core: Port <-> UdpHandler (the transport), clock, timer wheel;
//!            runtime::net: Ethernet, ARP, IPv4, ICMP echo, UDP; runtime::handoff: queues
//!            between cores
//! ccsim      congestion-control experiments: the proto::cc controllers in a simulator
//!            (its front end, tables and plots: the `bypass` CLI's crate, cli/)
//! proto      sans-IO transport: Endpoint (demux, stateless handshake), Connection (loss
//!            recovery, credits, messages); proto::cc congestion controllers
//! wire       zero-copy header views: our transport header; Ethernet/IPv4/UDP/ARP/ICMP via smoltcp
//! pmd        poll-mode drivers: trait Port; memif (pure Rust), dpdk (feature), sim;
//!            wrappers over any Port: faults, pcap, pair
//! telemetry  per-core counters, histograms, the Registry a stack publishes into; the
//!            Prometheus HTTP exporter (feature `metrics`)
//! mem        hugepage regions, buffer pools, PktBuf, zero-copy hand-off, memory kinds, GPU memory
//! time       Instant (every now and deadline), the Clock trait, ManualClock (virtual time),
//!            MonotonicClock
//! rng        seeded, non-cryptographic generators (SplitMix64, xoshiro256**)
//! ```
//!
//! The default build is what an embedder needs. Cargo features: `dpdk` (the DPDK backend,
//! needs the system's DPDK), `metrics` (the HTTP exporter: `telemetry::Exporter`,
//! `StackBuilder::metrics_addr`; prometheus-client, serde_json). The tools (the
//! `bypass` command: benchmarks, plots, reports, memif-bench) are the crate `bypass-cli` in
//! cli/, with their dependencies (clap, plotters, tracing-subscriber).
//!
//! Unsafe code is denied at the crate root and allowed only in `mem`, the `pmd` backends
//! (`memif`, `dpdk`), `pmd::intr` (the `ppoll` an idle loop sleeps in), `runtime::clock`
//! (the TSC read) and `runtime::handoff` (the slots of its queue between cores); every unsafe
//! block carries a
//! `// SAFETY:` comment. (Outside this crate, the C API in capi/ and the Python package's
//! buffer protocol use unsafe code too.)
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod ccsim;
pub mod mem;
pub mod pmd;
pub mod proto;
pub mod rng;
pub mod runtime;
pub mod socket;
pub mod telemetry;
pub mod time;
pub mod wire;

/// The `bytes` crate, whose `Bytes` the socket API hands out and takes: use it from here and
/// the versions always match.
pub use bytes;

/// Shared with the integration tests: one way to skip a check, waits with generous deadlines.
#[cfg(test)]
#[path = "../tests/harness/mod.rs"]
pub(crate) mod test_harness;
