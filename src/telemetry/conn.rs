//! Per-connection state in the style of Linux's `TCP_INFO`, read at scrape time.
//!
//! Connections live on their core and change every packet, so they are not counted through
//! blocks: the transport implements [`ConnSource`] (or passes a closure) that yields a
//! [`ConnInfo`] per live connection when the registry is read. How the source gets the
//! numbers off the data-path core without a lock (a published snapshot per core, refreshed
//! every few milliseconds) is the transport's choice; the registry only calls it from the
//! scraping thread.

use std::net::SocketAddr;
use std::time::Duration;

/// A snapshot of one connection's transport state. Durations are smoothed estimates as the
/// transport keeps them; counters are cumulative since the connection opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// Local connection id (label `conn`, printed in hex).
    pub conn_id: u64,
    /// The peer's address (label `peer`).
    pub peer: SocketAddr,
    /// Smoothed round-trip time.
    pub srtt: Duration,
    /// Lowest round-trip time seen (the base delay).
    pub min_rtt: Duration,
    /// Round-trip time variation.
    pub rttvar: Duration,
    /// Congestion window in bytes.
    pub cwnd_bytes: u64,
    /// Pacing rate in bytes per second (0 when not pacing).
    pub pacing_rate_bytes_per_second: u64,
    /// Bytes sent and not yet acknowledged or declared lost.
    pub bytes_in_flight: u64,
    /// Bytes the receiver has granted and the sender has not used yet.
    pub credit_bytes: u64,
    /// Packets retransmitted.
    pub retransmitted_packets: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
    /// The loss detector's current reorder window.
    pub reorder_window: Duration,
    /// Messages delivered to the application.
    pub delivered_messages: u64,
    /// Payload bytes delivered to the application.
    pub delivered_bytes: u64,
}

/// Something that yields the live connections' [`ConnInfo`] when asked (at scrape time).
pub trait ConnSource: Send + Sync + 'static {
    /// Call `f` once per live connection.
    fn visit(&self, f: &mut dyn FnMut(&ConnInfo));
}

impl<F> ConnSource for F
where
    F: Fn(&mut dyn FnMut(&ConnInfo)) + Send + Sync + 'static,
{
    fn visit(&self, f: &mut dyn FnMut(&ConnInfo)) {
        self(f)
    }
}
