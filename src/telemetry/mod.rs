//! Observability: counters, gauges and latency histograms a stack records into (the socket
//! layer copies the other layers' plain counters in; see `socket::metrics`), read by a
//! Prometheus endpoint, the CLI and tests; plus rate-limited logging.
//!
//! Contract:
//! - The data path records without a lock, an atomic read-modify-write, a syscall or an
//!   allocation: each core owns its blocks ([`CoreCounters`], [`CoreHistogram`]; `Send`, not
//!   `Sync`, not `Clone`) and updates them with relaxed loads and stores. Readers walk the
//!   [`Registry`] and sum blocks with equal labels; a read is not a consistent cut across
//!   metrics, but each counter read is monotonic.
//! - Pools ([`Registry::register_pool`]) and connections ([`Registry::register_conns`],
//!   [`ConnInfo`]) are read at scrape time, on the reader's thread; a core publishes its
//!   connections' snapshots lock-free through a [`ConnPublisher`] ([`Registry::conn_table`]).
//! - With the cargo feature `metrics` (off by default; the `bypass` CLI turns it on),
//!   `Exporter` serves the Prometheus text format over HTTP from its own thread (pin it off
//!   the poll-loop cores with `ExporterConfig::cpu`). Names follow Prometheus conventions:
//!   a `bypass_` prefix, units in the name, `_total` on counters, histograms in seconds.
//!   Without the feature the registry is still there to read in-process; the library then
//!   compiles no HTTP server and no Prometheus encoder.
//! - Nothing is logged per packet: log repeated conditions through [`RateLimited`] /
//!   [`warn_rate_limited!`](crate::warn_rate_limited).
//!
//! This layer depends on nothing above `mem`.

mod conn;
mod counters;
#[cfg(feature = "metrics")]
mod export;
mod histogram;
mod ratelimit;
mod registry;

pub use conn::{ConnInfo, ConnPublisher, ConnSource, ConnTable, SlotOutOfRange};
pub use counters::{CoreCounters, CounterSet, MetricDesc, MetricKind, PortMetric};
#[cfg(feature = "metrics")]
pub use export::{
    encode_text, Exporter, ExporterConfig, ExporterError, ExporterStats, HttpControl, CONTENT_TYPE,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEADER_BYTES, DEFAULT_REQUEST_TIMEOUT, MIN_HEADER_BYTES,
};
pub use histogram::{
    bucket_high, bucket_low, bucket_of, CoreHistogram, HistogramSnapshot, Percentiles, BUCKETS,
    SUB_BITS,
};
pub use ratelimit::RateLimited;
pub use registry::{
    hist, Family, FamilyKind, HistogramDesc, Labels, Registry, Value, LE_EXPONENTS,
};
