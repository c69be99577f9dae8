//! A stack's telemetry: the counters, histogram and connection snapshots a
//! [`Stack`](super::Stack) publishes
//! into a [`Registry`], and the run-time packet capture of its port.
//!
//! Contract:
//! - Turned on per stack with [`StackBuilder::metrics`](super::StackBuilder::metrics) (a
//!   shared [`Metrics`], read in-process through [`Metrics::registry`]) or, with the cargo
//!   feature `metrics`, `StackBuilder::metrics_addr` (the stack starts its own exporter);
//!   the feature's `Metrics::serve` (in `http.rs`) serves a shared one.
//!   A stack built without either records nothing and pays one branch per poll iteration.
//! - The poll loop records the gap between its iterations into
//!   `bypass_poll_loop_gap_seconds` every iteration (two relaxed stores). Every
//!   [`PUBLISH_INTERVAL_NS`] of the runtime's clock (the clock the loop reads anyway: no extra
//!   clock read, no syscall) it copies the port's, the runtime's, the IP layer's and the
//!   endpoint's plain counters into its [`CoreCounters`] blocks and each live connection's
//!   snapshot into the [`ConnTable`](crate::telemetry::ConnTable): relaxed stores, no lock,
//!   no allocation. A scrape therefore lags the data path by at most about 1 ms while the
//!   loop runs; when the application stops polling, the numbers stop moving.
//! - Capture: the stack's port sits inside a
//!   [`CapturePort`](crate::pmd::pcap::CapturePort) (a forwarding wrapper).
//!   [`Metrics::capture_start`] (or `POST /capture?on=1&file=PATH` on the exporter) opens the
//!   file and builds the [`PcapWriter`] on the caller's thread, then hands it to the poll loop,
//!   which wraps its port in a [`Pcap`](crate::pmd::pcap::Pcap) at its next publish tick; [`Metrics::capture_stop`] (`on=0`) unwraps
//!   it and the caller's thread flushes and closes the file. The data path never opens,
//!   flushes or closes a file; it writes the pcap buffer out when it fills (256 KiB), as the
//!   `pmd::pcap` wrapper does. Caps (packets, bytes) end recording, not forwarding.
//! - Warnings (link down, malformed frames, pool exhaustion) are logged at the publish tick
//!   through [`RateLimited`], never per packet.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant as StdInstant};

use crate::mem::Pool;
use crate::pmd::memif::Memif;
use crate::pmd::pcap::{PcapConfig, PcapError, PcapStats, PcapWriter};
use crate::pmd::Port;
use crate::runtime::clock::SystemClock;
use crate::runtime::Runtime;
use crate::telemetry::{
    hist, ConnInfo, ConnPublisher, CoreCounters, CoreHistogram, CounterSet, MetricDesc, MetricKind,
    PortMetric, RateLimited, Registry,
};

use super::stack::{StackPort, Transport};

#[cfg(feature = "metrics")]
mod http;
#[cfg(feature = "metrics")]
pub(super) use http::start_own;

/// How often (runtime clock, ns) a polling stack copies its counters into the registry.
pub const PUBLISH_INTERVAL_NS: u64 = 1_000_000;

/// Most connections one stack shows in scrapes (the first this many connection slots).
pub const MAX_PUBLISHED_CONNECTIONS: usize = 1024;

/// The stack's own counters (labels `port`, `queue`), beyond [`PortMetric`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StackMetric {
    /// Poll-loop iterations.
    Iterations,
    /// Iterations that received, sent or expired something.
    BusyIterations,
    /// Timers expired.
    TimersFired,
    /// IP layer receive drops: frame shorter than an Ethernet header.
    RxTruncated,
    /// Destination MAC not ours.
    RxNotForUsMac,
    /// Ethertype neither ARP nor IPv4.
    RxUnknownEthertype,
    /// ARP malformed.
    RxArpMalformed,
    /// IPv4 header malformed or bad version.
    RxIpMalformed,
    /// IPv4 header checksum wrong.
    RxIpBadChecksum,
    /// IPv4 options or fragments (unsupported).
    RxIpUnsupported,
    /// IPv4 destination not ours.
    RxIpNotForUs,
    /// IP protocol neither ICMP nor UDP.
    RxIpUnknownProtocol,
    /// ICMP malformed.
    RxIcmpMalformed,
    /// UDP length or checksum wrong.
    RxUdpMalformed,
    /// UDP to an unbound port.
    RxUdpNoPort,
    /// Transmit: the runtime's transmit queue was full.
    TxQueueFull,
    /// Transmit: no route, or no headroom / over the MTU.
    TxNoRoute,
    /// Transmit: the destination's ARP entry stayed unresolved, or the pending queue was full.
    TxArpUnresolved,
    /// Transport datagrams whose header did not parse.
    TransportRxMalformed,
    /// Transport datagrams for an unknown connection id.
    TransportRxUnknownConnection,
    /// Transport datagrams for a known id from another address.
    TransportRxWrongAddress,
    /// Handshake confirms whose cookie did not verify.
    TransportRxBadCookie,
    /// Transport datagrams produced but not queued.
    TransportTxDropped,
    /// Live connections.
    Connections,
    /// Connections accepted.
    Accepted,
    /// Connections refused for lack of room.
    Refused,
    /// Connections freed.
    Closed,
    /// 1 while a capture is recording on this port.
    CaptureActive,
    /// Frames recorded by the current (or last) capture.
    CapturePackets,
    /// ARP packets whose sender claimed our IPv4 address.
    ArpConflicts,
    /// Verified confirms refused: `max_connections_per_source` from that address.
    RefusedPerSource,
    /// Hellos unanswered: the endpoint has no cookie key.
    TransportRxNoCookieKey,
    /// Hellos whose stateless answer was dropped: the answer queue was full.
    TransportRxStatelessQueueFull,
    /// Packets a connection refused over a receive limit (credit, message size, reassembly
    /// budgets).
    TransportRxOverLimit,
    /// Packets refused because a reassembly buffer could not grow.
    TransportRxAllocFailed,
    /// Single-packet messages copied out of their slots (`max_rx_slots`).
    TransportRxCopiedMessages,
    /// ARP cache entries gleaned from UDP datagrams.
    ArpGleaned,
    /// Received messages copied out of the pool because it was low.
    RxPoolLowCopies,
}

/// A memif stack's control-channel counters (labels `port`, `queue`; registered only for a
/// stack over [`Backend::Memif`](super::Backend::Memif)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MemifMetric {
    /// Control connections refused at or before INIT
    /// ([`Memif::refused`](crate::pmd::memif::Memif::refused)).
    DroppedRefused,
    /// Pending control connections dropped: `max_pending_handshakes` were waiting.
    DroppedPendingFull,
    /// Handshakes on the stack's interface that ended before the link came up.
    DroppedFailed,
    /// `accept` failures (out of descriptors), each followed by a pause.
    AcceptErrors,
    /// Peer regions not sealed against shrinking.
    UnsealedRegions,
    /// Interrupts not signalled because the peer's eventfd counter was full.
    InterruptsSkipped,
    /// Connections torn down because a ring stayed wedged.
    RingsWedged,
    /// Control connections in their handshake now.
    PendingHandshakes,
}

const MEMIF_DROP: &str = "bypass_memif_dropped_handshakes";
const MEMIF_DROP_HELP: &str = "memif control connections dropped before their link came up, by \
     cause: refused (at or before INIT: a malformed message, an unknown id, a wrong secret, \
     an interface already connected, a peer uid not allowed), pending_full \
     (max_pending_handshakes were waiting), failed (after INIT: a region too large or \
     unsealed, a bad ring, a protocol error, a timeout).";

const MEMIF_DESCS: &[MetricDesc] = &[
    d(MEMIF_DROP, MEMIF_DROP_HELP, C, Some(("cause", "refused"))),
    d(
        MEMIF_DROP,
        MEMIF_DROP_HELP,
        C,
        Some(("cause", "pending_full")),
    ),
    d(MEMIF_DROP, MEMIF_DROP_HELP, C, Some(("cause", "failed"))),
    d(
        "bypass_memif_accept_errors",
        "accept() failures on the memif socket (out of descriptors), each followed by a pause.",
        C,
        None,
    ),
    d(
        "bypass_memif_unsealed_regions",
        "memif peer regions not sealed against shrinking (accepted unless \
         require_sealed_regions, then refused).",
        C,
        None,
    ),
    d(
        "bypass_memif_interrupts_skipped",
        "memif interrupts not signalled because the peer's eventfd counter was full.",
        C,
        None,
    ),
    d(
        "bypass_memif_rings_wedged",
        "memif connections torn down because a ring stayed inconsistent (no frame could move \
         on it) for wedge_timeout; the client reconnects.",
        C,
        None,
    ),
    d(
        "bypass_memif_pending_handshakes",
        "memif control connections in their handshake now.",
        G,
        None,
    ),
];

impl CounterSet for MemifMetric {
    const DESCS: &'static [MetricDesc] = MEMIF_DESCS;
    #[inline]
    fn index(self) -> usize {
        self as usize
    }
}

const fn d(
    name: &'static str,
    help: &'static str,
    kind: MetricKind,
    label: Option<(&'static str, &'static str)>,
) -> MetricDesc {
    MetricDesc {
        name,
        help,
        kind,
        label,
    }
}

const C: MetricKind = MetricKind::Counter;
const G: MetricKind = MetricKind::Gauge;
const NET_RX: &str = "bypass_net_rx_dropped_packets";
const NET_RX_HELP: &str = "Frames the Ethernet/ARP/IPv4/UDP layer dropped on receive, by cause.";
const NET_TX: &str = "bypass_net_tx_dropped_packets";
const NET_TX_HELP: &str = "Frames the IP layer did not send, by cause.";
const TR_RX: &str = "bypass_transport_rx_dropped_datagrams";
const TR_RX_HELP: &str = "Transport datagrams dropped on receive, by cause.";
const REFUSED: &str = "bypass_transport_refused_connections";
const REFUSED_HELP: &str = "Incoming connections refused, by cause: max_connections (the table \
     is full), per_source (max_connections_per_source from that address).";

const STACK_DESCS: &[MetricDesc] = &[
    d(
        "bypass_runtime_poll_iterations",
        "Poll-loop iterations.",
        C,
        None,
    ),
    d(
        "bypass_runtime_busy_poll_iterations",
        "Poll-loop iterations that received, sent or expired something.",
        C,
        None,
    ),
    d(
        "bypass_runtime_timers_fired",
        "Timers expired by the poll loop.",
        C,
        None,
    ),
    d(NET_RX, NET_RX_HELP, C, Some(("cause", "truncated"))),
    d(NET_RX, NET_RX_HELP, C, Some(("cause", "mac_not_ours"))),
    d(NET_RX, NET_RX_HELP, C, Some(("cause", "unknown_ethertype"))),
    d(NET_RX, NET_RX_HELP, C, Some(("cause", "arp_malformed"))),
    d(NET_RX, NET_RX_HELP, C, Some(("cause", "ip_malformed"))),
    d(NET_RX, NET_RX_HELP, C, Some(("cause", "ip_bad_checksum"))),
    d(NET_RX, NET_RX_HELP, C, Some(("cause", "ip_unsupported"))),
    d(NET_RX, NET_RX_HELP, C, Some(("cause", "ip_not_ours"))),
    d(
        NET_RX,
        NET_RX_HELP,
        C,
        Some(("cause", "ip_unknown_protocol")),
    ),
    d(NET_RX, NET_RX_HELP, C, Some(("cause", "icmp_malformed"))),
    d(NET_RX, NET_RX_HELP, C, Some(("cause", "udp_malformed"))),
    d(NET_RX, NET_RX_HELP, C, Some(("cause", "udp_no_port"))),
    d(NET_TX, NET_TX_HELP, C, Some(("cause", "queue_full"))),
    d(NET_TX, NET_TX_HELP, C, Some(("cause", "no_route"))),
    d(NET_TX, NET_TX_HELP, C, Some(("cause", "arp_unresolved"))),
    d(TR_RX, TR_RX_HELP, C, Some(("cause", "malformed"))),
    d(TR_RX, TR_RX_HELP, C, Some(("cause", "unknown_connection"))),
    d(TR_RX, TR_RX_HELP, C, Some(("cause", "wrong_address"))),
    d(TR_RX, TR_RX_HELP, C, Some(("cause", "bad_cookie"))),
    d(
        "bypass_transport_tx_dropped_datagrams",
        "Transport datagrams produced that the IP layer could not queue.",
        C,
        None,
    ),
    d(
        "bypass_transport_connections",
        "Live transport connections.",
        G,
        None,
    ),
    d(
        "bypass_transport_accepted_connections",
        "Incoming connections accepted.",
        C,
        None,
    ),
    d(REFUSED, REFUSED_HELP, C, Some(("cause", "max_connections"))),
    d(
        "bypass_transport_closed_connections",
        "Connections closed and freed.",
        C,
        None,
    ),
    d(
        "bypass_capture_active",
        "1 while a packet capture is recording this port.",
        G,
        None,
    ),
    d(
        "bypass_capture_packets",
        "Frames recorded by the current or last capture of this port.",
        G,
        None,
    ),
    d(
        "bypass_net_arp_conflicts",
        "ARP packets from another host claiming our IPv4 address (a duplicate address).",
        C,
        None,
    ),
    d(REFUSED, REFUSED_HELP, C, Some(("cause", "per_source"))),
    d(TR_RX, TR_RX_HELP, C, Some(("cause", "no_cookie_key"))),
    d(
        TR_RX,
        TR_RX_HELP,
        C,
        Some(("cause", "stateless_queue_full")),
    ),
    d(TR_RX, TR_RX_HELP, C, Some(("cause", "over_limit"))),
    d(TR_RX, TR_RX_HELP, C, Some(("cause", "alloc_failed"))),
    d(
        "bypass_transport_rx_copied_messages",
        "Single-packet messages copied out of their pool slot because their connection held \
         max_rx_slots undelivered ones.",
        C,
        None,
    ),
    d(
        "bypass_net_arp_gleaned_entries",
        "ARP cache entries learned from the source of a UDP datagram (an on-link sender not \
         in the cache), not from ARP.",
        C,
        None,
    ),
    d(
        "bypass_rx_pool_low_copied_messages",
        "Received messages handed to the application copied out of the packet-buffer pool \
         because fewer than rx_pool_reserve of its buffers were free.",
        C,
        None,
    ),
];

impl CounterSet for StackMetric {
    const DESCS: &'static [MetricDesc] = STACK_DESCS;
    #[inline]
    fn index(self) -> usize {
        self as usize
    }
}

/// Telemetry shared by the stacks of a process: a [`Registry`] and the capture controls of
/// every stack registered with it. Cheap to clone (handles); `Send + Sync`.
#[derive(Clone, Default)]
pub struct Metrics {
    registry: Registry,
    captures: Arc<Mutex<Vec<Arc<CaptureCtl>>>>,
    /// What the HTTP `/capture` switch may do; `None` (the default): nothing.
    capture_policy: Arc<Mutex<Option<CapturePolicy>>>,
}

/// What the HTTP capture switch (`POST /capture`) may do, set by the application with
/// [`Metrics::enable_capture`] (or `StackBuilder::capture_dir`). Without one, `/capture`
/// answers 404 "capture not enabled". With one, a request names a bare file name (no `/`,
/// not `.` or `..`, not empty), created new (`O_CREAT|O_EXCL`, mode 0600) inside `dir`, and
/// its caps may lower `ceilings` but never lift them (`0` is refused, not "unlimited").
/// The in-process [`Metrics::capture_start`] is the application's own call and takes any path
/// and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturePolicy {
    /// The directory capture files are created in (it must exist).
    pub dir: PathBuf,
    /// The largest caps and snap length an HTTP request may ask for; they are also what it
    /// gets when it names none. A `None` cap here lets requests record without that cap.
    pub ceilings: CaptureLimits,
}

impl CapturePolicy {
    /// Files in `dir`, ceilings [`CaptureLimits::default`].
    pub fn new(dir: impl Into<PathBuf>) -> CapturePolicy {
        CapturePolicy {
            dir: dir.into(),
            ceilings: CaptureLimits::default(),
        }
    }

    /// The path of the capture file `name` inside [`dir`](Self::dir), or why `name` is not a
    /// bare file name.
    pub fn file(&self, name: &str) -> Result<PathBuf, &'static str> {
        if name.is_empty() || name == "." || name == ".." {
            return Err("file must be a file name, not empty, . or ..");
        }
        if name.contains('/') || name.contains('\\') || name.contains('\0') {
            return Err(
                "file must be a bare file name (no /): it is created in the capture directory",
            );
        }
        Ok(self.dir.join(name))
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Caps and snap length of a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureLimits {
    /// Most frames recorded (default 100 000); `None`: no cap.
    pub max_packets: Option<u64>,
    /// Most bytes of file (default 100 MiB); `None`: no cap.
    pub max_bytes: Option<u64>,
    /// Bytes of each frame kept (default 65535).
    pub snaplen: u32,
}

impl Default for CaptureLimits {
    fn default() -> CaptureLimits {
        CaptureLimits {
            max_packets: Some(100_000),
            max_bytes: Some(100 << 20),
            snaplen: 65535,
        }
    }
}

/// A capture's state, as [`Metrics::capture_status`] and the HTTP endpoint report it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "metrics", derive(serde::Serialize))]
pub struct CaptureStatus {
    /// The stack's metrics name (label `port`).
    pub port: String,
    /// Whether a capture is recording now.
    pub active: bool,
    /// The file of the current or last capture.
    pub file: Option<PathBuf>,
    /// Frames recorded (current or last capture; the stopped figure is exact, a running one
    /// is at most one publish tick old).
    pub packets: u64,
    /// Bytes of file produced.
    pub bytes: u64,
    /// Frames not recorded because a cap was reached.
    pub skipped_limit: u64,
    /// Write errors (recording stopped at the first).
    pub io_errors: u64,
}

/// Why a capture could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// No stack with that metrics name (or none at all) is registered.
    #[error("no stack named {0:?} is registered for capture")]
    NoSuchPort(String),
    /// Several stacks are registered and none was named.
    #[error("several stacks are registered ({0}); name one with port=")]
    Ambiguous(String),
    /// The capture file could not be created (it must not exist yet).
    #[error("cannot create capture file {path}: {source}")]
    File {
        /// The path asked for.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The pcap writer refused the settings or failed to write the file.
    #[error("capture: {0}")]
    Pcap(#[from] PcapError),
    /// A capture is already running on that port.
    #[error("a capture is already running on {0}")]
    AlreadyRunning(String),
    /// No capture is running on that port.
    #[error("no capture is running on {0}")]
    NotRunning(String),
    /// The stack's poll loop did not take the command in time (the application is not
    /// polling the stack).
    #[error("the stack {0} did not answer within 2 s: is its poll loop running?")]
    NotPolling(String),
}

const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

impl Metrics {
    /// An empty registry and no stacks.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// The registry the stacks record into (register more of your own, read it in tests).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Let the HTTP capture switch record into files in `policy.dir` within
    /// `policy.ceilings` (replaces an earlier policy). Without this, `POST /capture` is
    /// refused; [`Metrics::capture_start`] works either way.
    pub fn enable_capture(&self, policy: CapturePolicy) {
        *self
            .capture_policy
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(policy);
    }

    /// The policy set by [`Metrics::enable_capture`], if any.
    pub fn capture_policy(&self) -> Option<CapturePolicy> {
        self.capture_policy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn find(&self, port: Option<&str>) -> Result<Arc<CaptureCtl>, CaptureError> {
        let all = self.captures.lock().unwrap_or_else(PoisonError::into_inner);
        match port {
            Some(p) => all
                .iter()
                .find(|c| c.name == p)
                .cloned()
                .ok_or_else(|| CaptureError::NoSuchPort(p.to_owned())),
            None => match all.len() {
                0 => Err(CaptureError::NoSuchPort(String::new())),
                1 => Ok(all[0].clone()),
                _ => Err(CaptureError::Ambiguous(
                    all.iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                )),
            },
        }
    }

    /// Start capturing the frames of stack `port` (its metrics name; `None`: the only stack)
    /// into a new pcap file at `file` (which must not exist; created with mode 0600). Waits up
    /// to 2 s for the stack's poll loop to take it.
    pub fn capture_start(
        &self,
        port: Option<&str>,
        file: &Path,
        limits: CaptureLimits,
    ) -> Result<CaptureStatus, CaptureError> {
        let ctl = self.find(port)?;
        use std::os::unix::fs::OpenOptionsExt;
        // O_CREAT|O_EXCL: never an existing file, never through a symlink; 0600: the frames
        // are the application's traffic.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file)
            .map_err(|source| CaptureError::File {
                path: file.to_owned(),
                source,
            })?;
        let writer = PcapWriter::new(
            f,
            PcapConfig {
                snaplen: limits.snaplen,
                max_packets: limits.max_packets,
                max_bytes: limits.max_bytes,
                ..PcapConfig::default()
            },
        )?;
        let reply = match ctl.command(Cmd::Start(writer)) {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(file);
                return Err(e);
            }
        };
        match reply {
            Reply::Started => {
                *ctl.file.lock().unwrap_or_else(PoisonError::into_inner) = Some(file.to_owned());
                tracing::info!(port = %ctl.name, file = %file.display(), "capture started");
                Ok(ctl.status())
            }
            Reply::Refused(w) => {
                drop(w);
                let _ = std::fs::remove_file(file);
                Err(CaptureError::AlreadyRunning(ctl.name.clone()))
            }
            Reply::Stopped(_) | Reply::NotRunning => unreachable_reply(&ctl.name),
        }
    }

    /// Stop the capture of stack `port` (`None`: the only stack), flush and close its file.
    pub fn capture_stop(&self, port: Option<&str>) -> Result<CaptureStatus, CaptureError> {
        let ctl = self.find(port)?;
        match ctl.command(Cmd::Stop)? {
            Reply::Stopped(w) => {
                let s = w.stats();
                w.finish()?;
                ctl.set_stats(&s, false);
                tracing::info!(port = %ctl.name, packets = s.packets, bytes = s.bytes, "capture stopped");
                Ok(ctl.status())
            }
            Reply::NotRunning => Err(CaptureError::NotRunning(ctl.name.clone())),
            Reply::Started | Reply::Refused(_) => unreachable_reply(&ctl.name),
        }
    }

    /// The capture state of every registered stack.
    pub fn capture_status(&self) -> Vec<CaptureStatus> {
        let all = self.captures.lock().unwrap_or_else(PoisonError::into_inner);
        all.iter().map(|c| c.status()).collect()
    }
}

fn unreachable_reply<T>(port: &str) -> Result<T, CaptureError> {
    // The poll loop answers Start with Started/Refused and Stop with Stopped/NotRunning.
    Err(CaptureError::NotPolling(port.to_owned()))
}

enum Cmd {
    Start(PcapWriter<File>),
    Stop,
}

enum Reply {
    Started,
    Refused(PcapWriter<File>),
    Stopped(PcapWriter<File>),
    NotRunning,
}

#[derive(Default)]
struct Mailbox {
    cmd: Option<Cmd>,
    reply: Option<Reply>,
}

/// One stack's capture control: written by the controlling thread, served by the poll loop
/// at its publish tick.
struct CaptureCtl {
    name: String,
    /// Set when `mailbox.cmd` holds a command: the poll loop looks at the mutex only then,
    /// and only with `try_lock`.
    pending: AtomicBool,
    mailbox: Mutex<Mailbox>,
    file: Mutex<Option<PathBuf>>,
    active: AtomicBool,
    packets: AtomicU64,
    bytes: AtomicU64,
    skipped: AtomicU64,
    io_errors: AtomicU64,
}

impl CaptureCtl {
    fn new(name: String) -> CaptureCtl {
        CaptureCtl {
            name,
            pending: AtomicBool::new(false),
            mailbox: Mutex::new(Mailbox::default()),
            file: Mutex::new(None),
            active: AtomicBool::new(false),
            packets: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            io_errors: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mailbox> {
        self.mailbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hand `cmd` to the poll loop and wait for its reply.
    fn command(&self, cmd: Cmd) -> Result<Reply, CaptureError> {
        {
            let mut m = self.lock();
            m.reply = None;
            m.cmd = Some(cmd);
        }
        self.pending.store(true, Ordering::Release);
        let deadline = StdInstant::now() + COMMAND_TIMEOUT;
        loop {
            std::thread::sleep(Duration::from_millis(1));
            let mut m = self.lock();
            if let Some(r) = m.reply.take() {
                return Ok(r);
            }
            if StdInstant::now() >= deadline && m.cmd.is_some() {
                // Not taken: withdraw it (dropping a Start's writer closes the file).
                m.cmd = None;
                self.pending.store(false, Ordering::Release);
                return Err(CaptureError::NotPolling(self.name.clone()));
            }
        }
    }

    fn set_stats(&self, s: &PcapStats, active: bool) {
        self.active.store(active, Ordering::Relaxed);
        self.packets.store(s.packets, Ordering::Relaxed);
        self.bytes.store(s.bytes, Ordering::Relaxed);
        self.skipped.store(s.skipped_limit, Ordering::Relaxed);
        self.io_errors.store(s.io_errors, Ordering::Relaxed);
    }

    /// Serve a pending command on the stack's `port` (publish tick only) and report capture
    /// progress.
    fn serve(&self, port: &mut StackPort, c: &CoreCounters<StackMetric>) {
        if self.pending.load(Ordering::Acquire) {
            if let Ok(mut m) = self.mailbox.try_lock() {
                if let Some(cmd) = m.cmd.take() {
                    m.reply = Some(match cmd {
                        Cmd::Start(w) => match port.start(w) {
                            Ok(()) => Reply::Started,
                            Err(w) => Reply::Refused(w),
                        },
                        Cmd::Stop => port.stop().map_or(Reply::NotRunning, Reply::Stopped),
                    });
                }
                self.pending.store(false, Ordering::Release);
            }
        }
        if let Some(p) = port.capture() {
            let s = p.capture_stats();
            self.set_stats(&s, p.is_enabled());
            c.set(StackMetric::CaptureActive, u64::from(p.is_enabled()));
            c.set(StackMetric::CapturePackets, s.packets);
        } else {
            c.set(StackMetric::CaptureActive, 0);
        }
    }

    fn status(&self) -> CaptureStatus {
        CaptureStatus {
            port: self.name.clone(),
            active: self.active.load(Ordering::Relaxed),
            file: self
                .file
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            skipped_limit: self.skipped.load(Ordering::Relaxed),
            io_errors: self.io_errors.load(Ordering::Relaxed),
        }
    }
}

/// See `StackMetrics::seen`.
#[derive(Debug, Clone, Copy, Default)]
struct SeenConn {
    cid: Option<u64>,
    counts: [u64; 3],
}

/// What a stack records into; lives in the stack, used by its poll loop only.
pub(super) struct StackMetrics {
    metrics: Metrics,
    port: CoreCounters<PortMetric>,
    stack: CoreCounters<StackMetric>,
    gap: CoreHistogram,
    rtt: CoreHistogram,
    completion: CoreHistogram,
    conns: ConnPublisher,
    /// memif's counters and the stack's interface id (a memif backend only).
    memif: Option<(CoreCounters<MemifMetric>, u32)>,
    live: Vec<bool>,
    /// Per connection slot: the `conn_*` counters last added into `live_sums`, and the
    /// connection they came from (a slot is reused by new connections).
    seen: Vec<SeenConn>,
    /// The live connections' `conn_*` counters (refused, alloc failed, slots copied), kept
    /// up to date from the connections that changed: with `Endpoint::base_stats` the
    /// endpoint's totals without reading every connection per tick.
    live_sums: [u64; 3],
    capture: Arc<CaptureCtl>,
    last_ns: u64,
    next_tick: u64,
    link_was_up: bool,
    last_malformed: u64,
    last_pool_failures: u64,
    pools: Vec<Pool>,
    warn_malformed: RateLimited,
    warn_pool: RateLimited,
}

impl StackMetrics {
    /// A message was completely acknowledged `ns` after the application queued it (as seen
    /// when its socket next took its events).
    pub(super) fn record_completion(&self, ns: u64) {
        self.completion.record(ns);
    }

    /// Register a stack named `name` (label `port`) in `metrics`.
    pub(super) fn new(
        metrics: &Metrics,
        name: &str,
        max_connections: usize,
        pools: Vec<Pool>,
        memif_id: Option<u32>,
    ) -> StackMetrics {
        let r = &metrics.registry;
        let labels = [("port", name), ("queue", "0")];
        for p in &pools {
            r.register_pool(p);
        }
        let cap = max_connections.clamp(1, MAX_PUBLISHED_CONNECTIONS);
        let capture = Arc::new(CaptureCtl::new(name.to_owned()));
        metrics
            .captures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(capture.clone());
        StackMetrics {
            metrics: metrics.clone(),
            port: r.counters(&labels),
            stack: r.counters(&labels),
            gap: r.histogram(&hist::POLL_LOOP_GAP, &labels),
            rtt: r.histogram(&hist::RTT, &labels),
            completion: r.histogram(&hist::MESSAGE_COMPLETION, &labels),
            conns: r.conn_table(cap),
            memif: memif_id.map(|id| (r.counters(&labels), id)),
            live: vec![false; cap],
            seen: Vec::new(),
            live_sums: [0; 3],
            capture,
            last_ns: 0,
            next_tick: 0,
            link_was_up: true,
            last_malformed: 0,
            last_pool_failures: 0,
            pools,
            warn_malformed: RateLimited::new(5, Duration::from_secs(10)),
            warn_pool: RateLimited::new(5, Duration::from_secs(10)),
        }
    }

    /// The shared telemetry this stack records into.
    pub(super) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// After each poll-loop iteration: the loop gap, and the publish tick when it is due
    /// (`memif`: the stack's memif backend, whose counters it copies too).
    #[inline]
    pub(super) fn after_poll(
        &mut self,
        rt: &mut Runtime<StackPort, Transport, SystemClock>,
        memif: Option<&Memif>,
        rx_pool_low_copies: u64,
    ) {
        let now = rt.now().as_nanos();
        if self.last_ns != 0 {
            self.gap.record(now.saturating_sub(self.last_ns));
        }
        self.last_ns = now;
        if now >= self.next_tick {
            self.next_tick = now + PUBLISH_INTERVAL_NS;
            self.publish(rt);
            self.stack
                .set(StackMetric::RxPoolLowCopies, rx_pool_low_copies);
            self.publish_memif(memif);
        }
    }

    /// memif's control-channel counters (relaxed loads of its atomics).
    #[cold]
    fn publish_memif(&self, memif: Option<&Memif>) {
        let (Some((c, id)), Some(m)) = (&self.memif, memif) else {
            return;
        };
        use MemifMetric as M;
        c.set(M::DroppedRefused, m.refused());
        c.set(M::DroppedPendingFull, m.pending_dropped());
        c.set(M::DroppedFailed, m.handshakes_failed(*id));
        c.set(M::AcceptErrors, m.accept_errors());
        c.set(M::UnsealedRegions, m.unsealed_regions(*id));
        c.set(M::InterruptsSkipped, m.interrupts_skipped(*id));
        c.set(M::RingsWedged, m.rings_wedged(*id));
        c.set(M::PendingHandshakes, m.pending_handshakes() as u64);
    }

    #[cold]
    fn publish(&mut self, rt: &mut Runtime<StackPort, Transport, SystemClock>) {
        // The connections that changed since the last tick (O(changed), not O(connections):
        // idle connections cost nothing here), and with them the endpoint's totals.
        self.publish_conns(rt);
        let (p, s) = (&self.port, &self.stack);
        let ps = rt.port().stats();
        let link_up = rt.port_mut().link().is_up();
        let n = *rt.net_counters();
        let r = *rt.counters();
        let tr = rt.handler();
        let (tx_dropped, tx_pool_exhausted) = (tr.tx_dropped, tr.tx_pool_exhausted);
        let mut es = tr.ep.base_stats();
        es.conn_rx_refused += self.live_sums[0];
        es.conn_rx_alloc_failed += self.live_sums[1];
        es.conn_rx_slots_copied += self.live_sums[2];
        let conns = tr.ep.connection_count() as u64;

        p.set(PortMetric::RxPackets, ps.rx_packets);
        p.set(PortMetric::RxBytes, ps.rx_bytes);
        p.set(PortMetric::TxPackets, ps.tx_packets);
        p.set(PortMetric::TxBytes, ps.tx_bytes);
        p.set(PortMetric::RxDropNoBuffer, ps.rx_no_buffer);
        p.set(
            PortMetric::RxDropDeviceError,
            ps.rx_errors.saturating_sub(ps.rx_bad_checksum),
        );
        p.set(PortMetric::RxDropBadChecksum, ps.rx_bad_checksum);
        p.set(PortMetric::TxRingFull, ps.tx_ring_full);
        let malformed = n.rx_truncated
            + n.arp_malformed
            + n.ip_malformed
            + n.ip_bad_version
            + n.ip_bad_checksum
            + n.ip_options
            + n.ip_fragments
            + n.icmp_malformed
            + n.udp_malformed
            + n.udp_bad_checksum
            + es.rx_malformed;
        let no_conn = n.rx_not_for_us
            + n.rx_unknown_ethertype
            + n.ip_not_for_us
            + n.ip_unknown_protocol
            + n.udp_no_port
            + es.rx_unknown_cid
            + es.rx_wrong_addr;
        p.set(PortMetric::RxDropMalformed, malformed);
        p.set(PortMetric::RxDropNoConnection, no_conn);
        p.set(
            PortMetric::TxPoolExhausted,
            tx_pool_exhausted + n.tx_alloc_failed,
        );
        p.set_link_up(link_up);

        use StackMetric as M;
        s.set(M::Iterations, r.iterations);
        s.set(M::BusyIterations, r.busy_iterations);
        s.set(M::TimersFired, r.timers_fired);
        s.set(M::RxTruncated, n.rx_truncated);
        s.set(M::RxNotForUsMac, n.rx_not_for_us);
        s.set(M::RxUnknownEthertype, n.rx_unknown_ethertype);
        s.set(M::RxArpMalformed, n.arp_malformed);
        s.set(M::RxIpMalformed, n.ip_malformed + n.ip_bad_version);
        s.set(M::RxIpBadChecksum, n.ip_bad_checksum);
        s.set(M::RxIpUnsupported, n.ip_options + n.ip_fragments);
        s.set(M::RxIpNotForUs, n.ip_not_for_us);
        s.set(M::RxIpUnknownProtocol, n.ip_unknown_protocol);
        s.set(M::RxIcmpMalformed, n.icmp_malformed);
        s.set(M::RxUdpMalformed, n.udp_malformed + n.udp_bad_checksum);
        s.set(M::RxUdpNoPort, n.udp_no_port);
        s.set(M::TxQueueFull, n.tx_full);
        s.set(M::TxNoRoute, n.tx_no_route + n.tx_no_room);
        s.set(
            M::TxArpUnresolved,
            n.arp_unresolved_drops + n.arp_pending_full,
        );
        s.set(M::TransportRxMalformed, es.rx_malformed);
        s.set(M::TransportRxUnknownConnection, es.rx_unknown_cid);
        s.set(M::TransportRxWrongAddress, es.rx_wrong_addr);
        s.set(M::TransportRxBadCookie, es.bad_cookies);
        s.set(M::TransportTxDropped, tx_dropped);
        s.set(M::Connections, conns);
        s.set(M::Accepted, es.accepted);
        s.set(M::Refused, es.refused);
        s.set(M::Closed, es.freed);
        s.set(M::ArpConflicts, n.arp_conflicts);
        s.set(M::RefusedPerSource, es.refused_per_source);
        s.set(M::TransportRxNoCookieKey, es.no_cookie_key);
        s.set(M::TransportRxStatelessQueueFull, es.stateless_dropped);
        s.set(
            M::TransportRxOverLimit,
            es.conn_rx_refused - es.conn_rx_alloc_failed.min(es.conn_rx_refused),
        );
        s.set(M::TransportRxAllocFailed, es.conn_rx_alloc_failed);
        s.set(M::TransportRxCopiedMessages, es.conn_rx_slots_copied);
        s.set(M::ArpGleaned, n.arp_gleaned);

        self.capture.serve(rt.port_mut(), &self.stack);
        self.warnings(link_up, malformed);
    }

    fn publish_conns(&mut self, rt: &mut Runtime<StackPort, Transport, SystemClock>) {
        let (live, seen, sums) = (&mut self.live, &mut self.seen, &mut self.live_sums);
        let (conns, rtt) = (&self.conns, &self.rtt);
        rt.handler_mut().ep.drain_changed(|h, c| {
            let i = h.0 as usize;
            if i >= seen.len() {
                // A slot past any seen before: the table grows (rarely, and never per packet).
                seen.resize(i + 1, SeenConn::default());
            }
            let old = seen[i];
            // Whatever was added for the slot's previous connection leaves the live sums:
            // freed, its counters are in the endpoint's base now.
            let fresh = c.as_ref().map(|c| c.local_cid());
            if old.cid.is_some() && fresh != old.cid {
                for (s, o) in sums.iter_mut().zip(old.counts) {
                    *s -= o;
                }
                seen[i] = SeenConn::default();
            }
            let Some(c) = c else {
                if i < live.len() && live[i] {
                    let _ = conns.clear(i);
                    live[i] = false;
                }
                return;
            };
            let st = c.stats();
            let counts = [st.rx_refused, st.rx_alloc_failed, st.rx_slots_copied];
            let prev = seen[i].counts;
            for ((s, n), p) in sums.iter_mut().zip(counts).zip(prev) {
                *s += n - p;
            }
            seen[i] = SeenConn {
                cid: Some(c.local_cid()),
                counts,
            };
            if i >= live.len() {
                return; // beyond the published table
            }
            // The connection keeps its last 64 samples; a connection that received ACKs
            // changed, so it is drained each tick it had samples (every one unless it takes
            // more than 64 per ms).
            c.drain_rtt_samples(|ns| rtt.record(ns));
            let cc = c.controller();
            let info = ConnInfo {
                conn_id: c.local_cid(),
                peer: c.remote(),
                srtt: c.rtt(),
                min_rtt: c.min_rtt(),
                rttvar: c.rttvar(),
                cwnd_bytes: cc.window(),
                pacing_rate_bytes_per_second: cc.pacing_rate().unwrap_or(0),
                bytes_in_flight: c.bytes_in_flight(),
                credit_bytes: c.send_credit(),
                retransmitted_packets: st.retransmits,
                lost_packets: st.lost,
                reorder_window: c.reorder_window(),
                delivered_messages: st.rx_messages,
                delivered_bytes: st.rx_message_bytes,
                tx_zero_copy_packets: c.tx_zero_copy(),
                tx_batches: st.tx_batches,
                tx_batched_messages: st.tx_batched_msgs,
                rx_batches: st.rx_batches,
                rx_segment_messages: st.rx_segment_msgs,
                rx_segment_copied: st.rx_segment_copied,
            };
            // In range: i < capacity.
            let _ = conns.publish(i, &info);
            live[i] = true;
        });
    }

    fn warnings(&mut self, link_up: bool, malformed: u64) {
        if link_up != self.link_was_up {
            if link_up {
                tracing::info!(port = %self.capture.name, "link up");
            } else {
                tracing::warn!(port = %self.capture.name, "link down");
            }
            self.link_was_up = link_up;
        }
        if malformed > self.last_malformed {
            let new = malformed - self.last_malformed;
            self.last_malformed = malformed;
            crate::warn_rate_limited!(
                self.warn_malformed,
                StdInstant::now(),
                port = %self.capture.name,
                new,
                total = malformed,
                "dropped malformed frames"
            );
        }
        let failures: u64 = self.pools.iter().map(|p| p.stats().failed).sum();
        if failures > self.last_pool_failures {
            let new = failures - self.last_pool_failures;
            self.last_pool_failures = failures;
            crate::warn_rate_limited!(
                self.warn_pool,
                StdInstant::now(),
                port = %self.capture.name,
                new,
                total = failures,
                "buffer pool exhausted"
            );
        }
    }
}

impl Drop for StackMetrics {
    fn drop(&mut self) {
        for i in 0..self.live.len() {
            if self.live[i] {
                let _ = self.conns.clear(i);
            }
        }
        self.capture.active.store(false, Ordering::Relaxed);
        self.stack.set(StackMetric::CaptureActive, 0);
        self.metrics
            .captures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|c| !Arc::ptr_eq(c, &self.capture));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_descs_match_enum_order() {
        assert_eq!(
            StackMetric::RxPoolLowCopies.index() + 1,
            StackMetric::DESCS.len()
        );
        assert_eq!(
            StackMetric::DESCS[StackMetric::RefusedPerSource.index()].label,
            Some(("cause", "per_source"))
        );
        assert_eq!(
            StackMetric::DESCS[StackMetric::TransportRxAllocFailed.index()].label,
            Some(("cause", "alloc_failed"))
        );
        assert_eq!(
            MemifMetric::PendingHandshakes.index() + 1,
            MemifMetric::DESCS.len()
        );
        assert_eq!(
            MemifMetric::DESCS[MemifMetric::DroppedFailed.index()].label,
            Some(("cause", "failed"))
        );
        assert_eq!(
            StackMetric::DESCS[StackMetric::RxUdpNoPort.index()].label,
            Some(("cause", "udp_no_port"))
        );
        assert_eq!(
            StackMetric::DESCS[StackMetric::Connections.index()].name,
            "bypass_transport_connections"
        );
    }
}
