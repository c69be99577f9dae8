//! Prometheus text exposition (format 0.0.4) of a [`Registry`], served over HTTP by a small
//! HTTP/1.1 server of its own (std::net, no async runtime), off the data-path cores.
//!
//! Encoding goes through `prometheus-client`'s text encoder with one custom collector that
//! walks the registry on each scrape, so names, escaping, `_total` suffixes and histogram
//! `le` buckets follow the format as the maintained client writes it. Histograms are exported
//! in seconds with `le` bounds at 2^k ns ([`LE_EXPONENTS`]), which fall on edges of the
//! internal buckets; a bound counts the values `< 2^k` ns (a value of exactly 2^k ns, in whole
//! nanoseconds, lands in the next bound).
//!
//! The server answers `GET` and `HEAD` on `/metrics` (and `/`) with the exposition; other
//! requests go to the [`HttpControl`] given to [`Exporter::start_with_control`] (the stack's
//! run-time capture switch uses this), and what it does not take gets 404.
//!
//! Reads (GET, HEAD) need no credential. Every other request changes state and needs
//! `Authorization: Bearer <token>` with [`ExporterConfig::token`] (compared in constant
//! time); without it, with another, or when no token is configured: 403.
//!
//! Hostile clients (docs/SECURITY.md, section 3). Each limit is an [`ExporterConfig`] field;
//! what it refuses is counted by cause in `bypass_metrics_http_refused_total{cause=...}`
//! (published by the exporter beside the registry's series, and in [`Exporter::stats`]):
//! - at most [`ExporterConfig::max_connections`] connections are open at once; one more is
//!   answered 503 and closed (`connections`; a thread that cannot be started: `no_thread`);
//! - the request line and headers must arrive whole within
//!   [`ExporterConfig::request_timeout`] of the accept: one deadline for the whole request,
//!   so a byte a second does not keep a connection open; past it, 408 and closed (`timeout`).
//!   The response then has as long again to be read (`response_timeout`);
//! - the request line and headers together are at most [`ExporterConfig::max_header_bytes`]:
//!   431 (`headers_too_large`); nothing more is buffered;
//! - request bodies are refused (`Content-Length` above 0, any `Transfer-Encoding`): 413
//!   (`body`); what is not HTTP/1.0 or 1.1 request syntax: 400 (`malformed`); a
//!   state-changing request without the token: 403 (`forbidden`);
//! - every response closes its connection (`Connection: close`): no keep-alive, no
//!   pipelining.
//!
//! Threads: `bypass-metrics` accepts, waiting in `poll(2)` on the listener and an eventfd that
//! [`Exporter`]'s drop signals; each admitted connection is read, answered and closed by a
//! thread of its own (`bypass-metrics-conn`), so a slow client holds its own thread and
//! nobody else's, and there are at most `max_connections` of them. Scrapes run concurrently,
//! each walking the registry; [`HttpControl`] calls run one at a time (the capture switch has
//! one command slot per port). Dropping the [`Exporter`] shuts every open connection down, joins
//! every thread and closes the listener before it returns: the port is free again.
//! Allocation: a `max_header_bytes` buffer per connection and the response; nothing here is
//! on the data path.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::registry::{Family, FamilyKind, Registry, Value, LE_EXPONENTS};
use super::RateLimited;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The `Content-Type` of every other answer.
const TEXT: &str = "text/plain; charset=utf-8";

struct RegistryCollector {
    registry: Registry,
    /// Families published next to the registry's (the exporter's own counters).
    extra: Vec<Family>,
}

impl std::fmt::Debug for RegistryCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.registry.fmt(f)
    }
}

fn encode_family(encoder: &mut DescriptorEncoder, fam: &Family) -> Result<(), std::fmt::Error> {
    let mt = match fam.kind {
        FamilyKind::Counter => MetricType::Counter,
        FamilyKind::Gauge => MetricType::Gauge,
        FamilyKind::Histogram => MetricType::Histogram,
    };
    let mut me = encoder.encode_descriptor(fam.name, fam.help, None, mt)?;
    for (labels, v) in &fam.series {
        let mut e = me.encode_family(labels)?;
        match (fam.kind, v) {
            (FamilyKind::Counter, Value::Int(n)) => {
                e.encode_counter::<NoLabelSet, u64, u64>(n, None)?
            }
            (FamilyKind::Counter, Value::Float(x)) => {
                e.encode_counter::<NoLabelSet, f64, f64>(x, None)?
            }
            (FamilyKind::Gauge, Value::Int(n)) => e.encode_gauge(n)?,
            (FamilyKind::Gauge, Value::Float(x)) => e.encode_gauge(x)?,
            (FamilyKind::Histogram, Value::Histogram(h)) => {
                let mut below = 0u64;
                let mut buckets = Vec::with_capacity(LE_EXPONENTS.clone().count());
                for k in LE_EXPONENTS {
                    let edge = (1u64 << k) - 1;
                    let at = h.count_at_or_below(edge);
                    buckets.push(((1u64 << k) as f64 / 1e9, at - below));
                    below = at;
                }
                // Bucket counts and the count come from one snapshot: consistent.
                e.encode_histogram::<NoLabelSet>(h.sum() as f64 / 1e9, h.count(), &buckets, None)?
            }
            _ => {}
        }
    }
    Ok(())
}

impl Collector for RegistryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for fam in self.registry.gather() {
            encode_family(&mut encoder, &fam)?;
        }
        for fam in &self.extra {
            encode_family(&mut encoder, fam)?;
        }
        Ok(())
    }
}

/// Encode everything in `registry` as Prometheus text.
pub fn encode_text(registry: &Registry) -> String {
    encode_with(registry, Vec::new())
}

fn encode_with(registry: &Registry, extra: Vec<Family>) -> String {
    let mut r = prometheus_client::registry::Registry::default();
    r.register_collector(Box::new(RegistryCollector {
        registry: registry.clone(),
        extra,
    }));
    let mut out = String::new();
    // Writing to a String cannot fail; a collector error leaves a partial body.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &r) {
        tracing::warn!(error = %e, "encoding metrics failed");
    }
    out
}

/// Extra endpoints served next to `/metrics` by the exporter's threads (off the data path).
/// Calls are serialised (one at a time per exporter, whichever connection's thread makes
/// it); `/metrics` is served meanwhile.
pub trait HttpControl: Send + Sync + 'static {
    /// Answer a request (`method` such as `"POST"`, `url` with its query string) with a
    /// status code and a body, or `None` when the request is not for this handler (404).
    fn handle(&self, method: &str, url: &str) -> Option<(u16, String)>;
}

/// [`ExporterConfig::max_connections`]'s default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 32;
/// [`ExporterConfig::request_timeout`]'s default.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// [`ExporterConfig::max_header_bytes`]'s default.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 8 << 10;
/// The least [`ExporterConfig::max_header_bytes`] may be: room for a request line and a
/// bearer token.
pub const MIN_HEADER_BYTES: usize = 256;

/// Where and how to serve metrics. Its `Debug` leaves the token out.
#[derive(Clone)]
pub struct ExporterConfig {
    /// Listen address, e.g. `127.0.0.1:9464` (port 0 picks a free one).
    pub addr: SocketAddr,
    /// Pin the exporter's threads to this CPU (choose one no poll loop runs on). `None`: the
    /// scheduler places them.
    pub cpu: Option<usize>,
    /// The bearer token state-changing requests (all but GET and HEAD) must carry; `None`:
    /// they are all refused (403).
    pub token: Option<String>,
    /// At most this many connections open at once (each has a thread while open); one more
    /// is answered 503 and closed, counted as `cause="connections"`. Default
    /// [`DEFAULT_MAX_CONNECTIONS`] (32); at least 1.
    pub max_connections: usize,
    /// Time from the accept to the end of the request's headers, for the whole request (not
    /// per read); past it the connection gets 408 and is closed, counted as
    /// `cause="timeout"`. Writing the response gets as long again. Default
    /// [`DEFAULT_REQUEST_TIMEOUT`] (5 s); above zero.
    pub request_timeout: Duration,
    /// Most bytes of request line and headers, the blank line that ends them included; more
    /// is answered 431, counted as `cause="headers_too_large"`. Default
    /// [`DEFAULT_MAX_HEADER_BYTES`] (8 KiB); at least [`MIN_HEADER_BYTES`].
    pub max_header_bytes: usize,
}

impl std::fmt::Debug for ExporterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExporterConfig")
            .field("addr", &self.addr)
            .field("cpu", &self.cpu)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("max_connections", &self.max_connections)
            .field("request_timeout", &self.request_timeout)
            .field("max_header_bytes", &self.max_header_bytes)
            .finish()
    }
}

impl ExporterConfig {
    /// Serve on `addr`, unpinned, with the default limits.
    pub fn new(addr: SocketAddr) -> ExporterConfig {
        ExporterConfig {
            addr,
            cpu: None,
            token: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }

    fn check(&self) -> Result<(), ExporterError> {
        let bad = if self.max_connections == 0 {
            "max_connections is 0: every connection would be refused; use at least 1"
        } else if self.request_timeout.is_zero() {
            "request_timeout is 0: every request would time out; use at least a few ms"
        } else if self.max_header_bytes < MIN_HEADER_BYTES {
            "max_header_bytes is under MIN_HEADER_BYTES (256); use at least that"
        } else {
            return Ok(());
        };
        Err(ExporterError::Config(bad))
    }
}

/// Errors starting the exporter.
#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr} for metrics: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the server reported.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The exporter thread could not be started.
    #[error("cannot start the metrics thread: {0}")]
    Spawn(#[from] std::io::Error),
    /// An [`ExporterConfig`] limit is out of range (the message says which and what to use).
    #[error("invalid metrics exporter configuration: {0}")]
    Config(&'static str),
}

/// Why a request or connection was refused: the `cause` label of
/// `bypass_metrics_http_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Connections,
    NoThread,
    Timeout,
    ResponseTimeout,
    HeadersTooLarge,
    Body,
    Malformed,
    Forbidden,
}

impl Cause {
    const ALL: [Cause; 8] = [
        Cause::Connections,
        Cause::NoThread,
        Cause::Timeout,
        Cause::ResponseTimeout,
        Cause::HeadersTooLarge,
        Cause::Body,
        Cause::Malformed,
        Cause::Forbidden,
    ];

    fn label(self) -> &'static str {
        match self {
            Cause::Connections => "connections",
            Cause::NoThread => "no_thread",
            Cause::Timeout => "timeout",
            Cause::ResponseTimeout => "response_timeout",
            Cause::HeadersTooLarge => "headers_too_large",
            Cause::Body => "body",
            Cause::Malformed => "malformed",
            Cause::Forbidden => "forbidden",
        }
    }
}

/// What the exporter counted about its own clients ([`Exporter::stats`]); the same numbers
/// are published as `bypass_metrics_http_*`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExporterStats {
    /// Requests read whole and answered, whatever the status.
    pub requests: u64,
    /// Connections open now.
    pub open_connections: u64,
    /// Connections refused with 503 because `max_connections` were open.
    pub refused_connections: u64,
    /// Connections refused with 503 because no thread could be started for them.
    pub refused_no_thread: u64,
    /// Requests not whole within `request_timeout` (408, closed).
    pub refused_timeout: u64,
    /// Responses not read within `request_timeout` (closed).
    pub refused_response_timeout: u64,
    /// Request line and headers over `max_header_bytes` (431).
    pub refused_headers_too_large: u64,
    /// Requests with a body (413).
    pub refused_body: u64,
    /// Requests that are not HTTP/1.x syntax (400).
    pub refused_malformed: u64,
    /// State-changing requests without the token (403).
    pub refused_forbidden: u64,
    /// `accept(2)` failures (out of descriptors, ...); the listener backs off and retries.
    pub accept_errors: u64,
}

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    open: AtomicUsize,
    refused: [AtomicU64; Cause::ALL.len()],
    accept_errors: AtomicU64,
}

impl Counts {
    fn refuse(&self, c: Cause) {
        self.refused[c as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn refused(&self, c: Cause) -> u64 {
        self.refused[c as usize].load(Ordering::Relaxed)
    }

    fn stats(&self) -> ExporterStats {
        ExporterStats {
            requests: self.requests.load(Ordering::Relaxed),
            open_connections: self.open.load(Ordering::Relaxed) as u64,
            refused_connections: self.refused(Cause::Connections),
            refused_no_thread: self.refused(Cause::NoThread),
            refused_timeout: self.refused(Cause::Timeout),
            refused_response_timeout: self.refused(Cause::ResponseTimeout),
            refused_headers_too_large: self.refused(Cause::HeadersTooLarge),
            refused_body: self.refused(Cause::Body),
            refused_malformed: self.refused(Cause::Malformed),
            refused_forbidden: self.refused(Cause::Forbidden),
            accept_errors: self.accept_errors.load(Ordering::Relaxed),
        }
    }

    /// The exporter's own families, published after the registry's.
    fn families(&self) -> Vec<Family> {
        let int = |n: u64| Value::Int(n);
        vec![
            Family {
                name: "bypass_metrics_http_refused",
                help: "Connections and requests the metrics exporter refused, by cause.",
                kind: FamilyKind::Counter,
                series: Cause::ALL
                    .iter()
                    .map(|&c| {
                        (
                            vec![("cause".to_string(), c.label().to_string())],
                            int(self.refused(c)),
                        )
                    })
                    .collect(),
            },
            Family {
                name: "bypass_metrics_http_requests",
                help: "Requests the metrics exporter read whole and answered.",
                kind: FamilyKind::Counter,
                series: vec![(Vec::new(), int(self.requests.load(Ordering::Relaxed)))],
            },
            Family {
                name: "bypass_metrics_http_accept_errors",
                help: "Failed accepts on the metrics exporter's listener (it backs off).",
                kind: FamilyKind::Counter,
                series: vec![(Vec::new(), int(self.accept_errors.load(Ordering::Relaxed)))],
            },
            Family {
                name: "bypass_metrics_http_connections",
                help: "Connections open to the metrics exporter.",
                kind: FamilyKind::Gauge,
                series: vec![(Vec::new(), int(self.open.load(Ordering::Relaxed) as u64))],
            },
        ]
    }
}

/// What every thread of one exporter shares.
struct Ctx {
    registry: Registry,
    control: Option<Arc<dyn HttpControl>>,
    /// Held across each [`HttpControl::handle`] call.
    control_lock: Mutex<()>,
    token: Option<String>,
    cpu: Option<usize>,
    max_connections: usize,
    request_timeout: Duration,
    max_header_bytes: usize,
    counts: Counts,
    stop: AtomicBool,
    /// Signalled by the drop: wakes the accept thread.
    wake: OwnedFd,
}

/// A running metrics endpoint. Dropping it stops serving: open connections are shut down,
/// every thread is joined and the listening socket is closed before the drop returns.
pub struct Exporter {
    ctx: Arc<Ctx>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Exporter {
    /// Bind `cfg.addr` and serve `registry` from a new thread named `bypass-metrics`.
    pub fn start(registry: Registry, cfg: &ExporterConfig) -> Result<Exporter, ExporterError> {
        Exporter::start_inner(registry, cfg, None)
    }

    /// As [`Exporter::start`], also answering what `control` takes.
    pub fn start_with_control(
        registry: Registry,
        cfg: &ExporterConfig,
        control: Arc<dyn HttpControl>,
    ) -> Result<Exporter, ExporterError> {
        Exporter::start_inner(registry, cfg, Some(control))
    }

    fn start_inner(
        registry: Registry,
        cfg: &ExporterConfig,
        control: Option<Arc<dyn HttpControl>>,
    ) -> Result<Exporter, ExporterError> {
        cfg.check()?;
        let bind_err = |source: std::io::Error| ExporterError::Bind {
            addr: cfg.addr,
            source: Box::new(source),
        };
        let listener = TcpListener::bind(cfg.addr).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let wake = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )
        .map_err(std::io::Error::from)?;
        let ctx = Arc::new(Ctx {
            registry,
            control,
            control_lock: Mutex::new(()),
            token: cfg.token.clone(),
            cpu: cfg.cpu,
            max_connections: cfg.max_connections,
            request_timeout: cfg.request_timeout,
            max_header_bytes: cfg.max_header_bytes,
            counts: Counts::default(),
            stop: AtomicBool::new(false),
            wake,
        });
        let c = ctx.clone();
        let thread = std::thread::Builder::new()
            .name("bypass-metrics".into())
            .spawn(move || accept_loop(&listener, &c))?;
        tracing::info!(%addr, "serving Prometheus metrics on /metrics");
        Ok(Exporter {
            ctx,
            addr,
            thread: Some(thread),
        })
    }

    /// The address it listens on (with the port the OS picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it counted about its clients so far (also published as `bypass_metrics_http_*`).
    pub fn stats(&self) -> ExporterStats {
        self.ctx.counts.stats()
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.ctx.stop.store(true, Ordering::Release);
        if let Err(e) = rustix::io::write(&self.ctx.wake, &1u64.to_ne_bytes()) {
            // Cannot happen short of 2^64 - 1 wake-ups; the accept thread would then not
            // wake and the join below would wait for the next connection.
            tracing::warn!(error = %e, "could not wake the metrics accept thread");
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An admitted connection: a handle to shut it down with, and its thread.
struct Conn {
    stream: TcpStream,
    thread: JoinHandle<()>,
}

/// Pin the calling thread to `cpu` (if any); whether it worked.
fn pin(cpu: Option<usize>) -> bool {
    cpu.is_none_or(|id| core_affinity::set_for_current(core_affinity::CoreId { id }))
}

fn accept_loop(listener: &TcpListener, ctx: &Arc<Ctx>) {
    if !pin(ctx.cpu) {
        tracing::warn!(cpu = ?ctx.cpu, "could not pin the metrics thread");
    }
    let mut conns: Vec<Conn> = Vec::new();
    let mut backoff: Option<Duration> = None;
    let mut refusals = RateLimited::new(3, Duration::from_secs(10));
    let mut accept_errors = RateLimited::new(3, Duration::from_secs(10));
    loop {
        // Reap the connections that finished (their threads return; the stream clones held
        // here are closed).
        let mut i = 0;
        while i < conns.len() {
            if conns[i].thread.is_finished() {
                let _ = conns.swap_remove(i).thread.join();
            } else {
                i += 1;
            }
        }
        // Sleep until a connection comes or the drop signals; wake at least each second
        // while connections are open, to reap them, and after an accept error, to retry.
        let timeout = backoff.or((!conns.is_empty()).then_some(Duration::from_secs(1)));
        let ts = timeout.and_then(|t| rustix::event::Timespec::try_from(t).ok());
        let mut fds = [
            rustix::event::PollFd::new(listener, rustix::event::PollFlags::IN),
            rustix::event::PollFd::from_borrowed_fd(ctx.wake.as_fd(), rustix::event::PollFlags::IN),
        ];
        let _ = rustix::event::poll(&mut fds, ts.as_ref());
        if ctx.stop.load(Ordering::Acquire) {
            break;
        }
        loop {
            match listener.accept() {
                Ok((stream, _peer)) => {
                    backoff = None;
                    if let Some(c) = admit(stream, ctx, &mut refusals) {
                        conns.push(c);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionAborted => {}
                Err(e) => {
                    // Out of descriptors (EMFILE, ENFILE) or memory: the connection waits
                    // in the backlog; back off (10 ms doubling to 1 s) instead of spinning.
                    ctx.counts.accept_errors.fetch_add(1, Ordering::Relaxed);
                    let b = backoff.map_or(Duration::from_millis(10), |b| {
                        (b * 2).min(Duration::from_secs(1))
                    });
                    backoff = Some(b);
                    if let Some(suppressed) = accept_errors.allow(Instant::now()) {
                        tracing::warn!(error = %e, retry_in = ?b, suppressed, "metrics exporter cannot accept");
                    }
                    break;
                }
            }
        }
    }
    // Stopping: end every open connection now (a blocked read or write returns), then wait
    // for their threads. The listener closes when the caller's drop of it runs, after this.
    for c in &conns {
        let _ = c.stream.shutdown(Shutdown::Both);
    }
    for c in conns {
        let _ = c.thread.join();
    }
}

/// Admit `stream` on a thread of its own, or refuse it with 503 when `max_connections` are
/// open or no thread can be started.
fn admit(stream: TcpStream, ctx: &Arc<Ctx>, refusals: &mut RateLimited) -> Option<Conn> {
    let open = ctx.counts.open.load(Ordering::Acquire);
    if open >= ctx.max_connections {
        ctx.counts.refuse(Cause::Connections);
        if let Some(suppressed) = refusals.allow(Instant::now()) {
            tracing::warn!(
                open,
                suppressed,
                "metrics exporter at max_connections: refusing a connection with 503"
            );
        }
        refuse_now(
            stream,
            "503 Service Unavailable",
            "too many connections to the metrics exporter; retry later\n",
        );
        return None;
    }
    let handle = match stream.try_clone() {
        Ok(h) => h,
        Err(e) => {
            ctx.counts.refuse(Cause::NoThread);
            tracing::debug!(error = %e, "metrics exporter cannot duplicate a connection");
            refuse_now(
                stream,
                "503 Service Unavailable",
                "out of resources; retry later\n",
            );
            return None;
        }
    };
    ctx.counts.open.fetch_add(1, Ordering::AcqRel);
    let (c, s) = (ctx.clone(), stream);
    // The thread owns its stream; a spawn error drops the closure and so the stream (closed).
    let spawned = std::thread::Builder::new()
        .name("bypass-metrics-conn".into())
        .spawn(move || {
            let _open = OpenGuard(&c.counts.open);
            pin(c.cpu);
            serve_conn(s, &c);
        });
    match spawned {
        Ok(thread) => Some(Conn {
            stream: handle,
            thread,
        }),
        Err(e) => {
            ctx.counts.open.fetch_sub(1, Ordering::AcqRel);
            ctx.counts.refuse(Cause::NoThread);
            tracing::warn!(error = %e, "metrics exporter cannot start a connection thread");
            refuse_now(
                handle,
                "503 Service Unavailable",
                "out of threads; retry later\n",
            );
            None
        }
    }
}

/// Counts a connection open while it lives (a panicking handler included).
struct OpenGuard<'a>(&'a AtomicUsize);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Answer `status` on a connection never read from, without blocking the accept thread:
/// one non-blocking write (a fresh socket's send buffer takes it), what already arrived is
/// read so the close is not a reset that destroys the answer, and the connection is closed.
fn refuse_now(mut s: TcpStream, status: &str, body: &str) {
    let _ = s.set_nonblocking(true);
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {TEXT}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write(msg.as_bytes());
    let _ = s.shutdown(Shutdown::Write);
    let mut scratch = [0u8; 4096];
    for _ in 0..4 {
        match s.read(&mut scratch) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

/// How reading a request's head ended.
enum Head {
    /// The head is `buf[..n]` (its blank line included).
    Whole(usize),
    /// The client closed, or the connection failed, before a whole head.
    Gone,
    /// The deadline passed.
    TimedOut,
    /// `max_header_bytes` arrived without the blank line.
    TooLarge,
}

/// Read until the blank line that ends the head, into `buf` (its length is the limit),
/// before `deadline`: each read may wait only for what is left of it.
fn read_head(s: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> Head {
    let mut len = 0;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Head::TimedOut;
        }
        if s.set_read_timeout(Some(deadline - now)).is_err() {
            return Head::Gone;
        }
        match s.read(&mut buf[len..]) {
            Ok(0) => return Head::Gone,
            Ok(n) => {
                let from = len.saturating_sub(3);
                len += n;
                if let Some(end) = head_end(&buf[..len], from) {
                    return Head::Whole(end);
                }
                if len == buf.len() {
                    return Head::TooLarge;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return Head::Gone,
        }
    }
}

/// The end of the head (just past its blank line: CRLF CRLF, or LF LF) in `b`, searching
/// from `from`.
fn head_end(b: &[u8], from: usize) -> Option<usize> {
    (from..b.len()).find_map(|i| match (b[i], b.get(i + 1), b.get(i + 2)) {
        (b'\n', Some(b'\n'), _) => Some(i + 2),
        (b'\n', Some(b'\r'), Some(b'\n')) => Some(i + 3),
        _ => None,
    })
}

/// A request head, parsed.
#[derive(Debug, PartialEq, Eq)]
struct Request<'a> {
    method: &'a str,
    target: &'a str,
    /// An `Authorization: Bearer` carried the token.
    authorized: bool,
    /// It announces a body (`Content-Length` above 0, or a `Transfer-Encoding`).
    body: bool,
}

/// RFC 9110 `tchar`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// Parse a head (request line and header fields); `None`: not HTTP/1.x request syntax.
fn parse<'a>(head: &'a [u8], token: Option<&str>) -> Option<Request<'a>> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut parts = lines.next()?.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || !is_token(method)
        || !target.starts_with('/')
        || !target.bytes().all(|c| c.is_ascii_graphic())
        || !matches!(version, "HTTP/1.1" | "HTTP/1.0")
    {
        return None;
    }
    let mut req = Request {
        method,
        target,
        authorized: false,
        body: false,
    };
    let mut length: Option<u64> = None;
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        if !is_token(name) {
            return None; // also obsolete line folding (a leading space)
        }
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("content-length") {
            if value.is_empty() || !value.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let n: u64 = value.parse().ok()?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            req.body = true;
        } else if name.eq_ignore_ascii_case("authorization") {
            req.authorized |= bearer_matches(value, token);
        }
    }
    req.body |= length.is_some_and(|n| n > 0);
    Some(req)
}

/// Whether an `Authorization` value is `Bearer <token>` (`token` set).
fn bearer_matches(v: &str, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return false;
    };
    match (v.get(..7), v.get(7..)) {
        (Some(scheme), Some(t)) if scheme.eq_ignore_ascii_case("bearer ") => {
            constant_time_eq(t.trim_start().as_bytes(), token.as_bytes())
        }
        _ => false,
    }
}

/// `a == b` in time that depends on their lengths only, not on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Write all of `buf` before `deadline` (each write may wait only for what is left of it).
fn write_by(s: &mut TcpStream, buf: &[u8], deadline: Instant) -> std::io::Result<()> {
    let mut off = 0;
    while off < buf.len() {
        let now = Instant::now();
        if now >= deadline {
            return Err(ErrorKind::TimedOut.into());
        }
        s.set_write_timeout(Some(deadline - now))?;
        match s.write(&buf[off..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// An answer: status, content type, body, whether to send the body (not for HEAD).
struct Answer {
    code: u16,
    content_type: &'static str,
    body: String,
    send_body: bool,
}

impl Answer {
    fn text(code: u16, body: &str) -> Answer {
        Answer {
            code,
            content_type: TEXT,
            body: body.to_owned(),
            send_body: true,
        }
    }
}

/// Send `a` and close: the write half first, then what the client still sends is read
/// (at most 64 KiB, for at most a second) so the close does not reset the connection and
/// destroy the answer before the client read it.
fn answer(s: &mut TcpStream, a: &Answer, ctx: &Ctx, linger: bool) {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        a.code,
        reason(a.code),
        a.content_type,
        a.body.len()
    )
    .into_bytes();
    if a.send_body {
        out.extend_from_slice(a.body.as_bytes());
    }
    if let Err(e) = write_by(s, &out, Instant::now() + ctx.request_timeout) {
        if e.kind() == ErrorKind::TimedOut {
            ctx.counts.refuse(Cause::ResponseTimeout);
        }
        tracing::debug!(error = %e, "metrics response not delivered");
        return;
    }
    let _ = s.shutdown(Shutdown::Write);
    if linger {
        let until = Instant::now() + ctx.request_timeout.min(Duration::from_secs(1));
        let mut scratch = [0u8; 4096];
        let mut left = 64usize << 10;
        while left > 0 {
            let now = Instant::now();
            if now >= until || s.set_read_timeout(Some(until - now)).is_err() {
                break;
            }
            match s.read(&mut scratch) {
                Ok(0) => break,
                Ok(n) => left = left.saturating_sub(n),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
}

/// Read one request from `s`, answer it and close (on the connection's own thread). The
/// accept thread holds a clone of the stream (to shut it down on drop) until it reaps this
/// thread, so the connection is shut down here, whichever way it ended.
fn serve_conn(mut s: TcpStream, ctx: &Ctx) {
    serve_request(&mut s, ctx);
    let _ = s.shutdown(Shutdown::Both);
}

fn serve_request(s: &mut TcpStream, ctx: &Ctx) {
    let deadline = Instant::now() + ctx.request_timeout;
    let _ = s.set_nonblocking(false);
    let mut buf = vec![0u8; ctx.max_header_bytes];
    let n = match read_head(s, &mut buf, deadline) {
        Head::Whole(n) => n,
        Head::Gone => return,
        Head::TimedOut => {
            ctx.counts.refuse(Cause::Timeout);
            tracing::debug!(timeout = ?ctx.request_timeout, "metrics request not whole in time");
            let a = Answer::text(408, "request not received within the deadline\n");
            answer(s, &a, ctx, false);
            return;
        }
        Head::TooLarge => {
            ctx.counts.refuse(Cause::HeadersTooLarge);
            let a = Answer::text(
                431,
                &format!(
                    "request line and headers exceed {} bytes\n",
                    ctx.max_header_bytes
                ),
            );
            answer(s, &a, ctx, true);
            return;
        }
    };
    let a = respond(&buf[..n], ctx);
    answer(s, &a, ctx, true);
}

/// The answer to a request head.
fn respond(head: &[u8], ctx: &Ctx) -> Answer {
    ctx.counts.requests.fetch_add(1, Ordering::Relaxed);
    let Some(req) = parse(head, ctx.token.as_deref()) else {
        ctx.counts.refuse(Cause::Malformed);
        return Answer::text(400, "bad request: expected an HTTP/1.1 request\n");
    };
    if req.body {
        ctx.counts.refuse(Cause::Body);
        return Answer::text(
            413,
            "request bodies are not accepted; parameters go in the query string\n",
        );
    }
    let path = req.target.split('?').next().unwrap_or("");
    let head_only = req.method == "HEAD";
    let read_only = req.method == "GET" || head_only;
    let mut a = if read_only && (path == "/metrics" || path == "/") {
        Answer {
            code: 200,
            content_type: CONTENT_TYPE,
            body: encode_with(&ctx.registry, ctx.counts.families()),
            send_body: true,
        }
    } else if !read_only && !req.authorized {
        ctx.counts.refuse(Cause::Forbidden);
        Answer::text(
            403,
            if ctx.token.is_some() {
                "forbidden: state-changing requests need Authorization: Bearer <token>\n"
            } else {
                "forbidden: no token is configured for state-changing requests\n"
            },
        )
    } else if let Some((code, body)) = ctx.control.as_ref().and_then(|c| {
        let _one_at_a_time = ctx
            .control_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        c.handle(req.method, req.target)
    }) {
        Answer {
            code,
            content_type: TEXT,
            body,
            send_body: true,
        }
    } else {
        Answer::text(404, "not found; metrics are at /metrics\n")
    };
    a.send_body = !head_only;
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3cres"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn debug_leaves_the_token_out() {
        let mut c = ExporterConfig::new("127.0.0.1:0".parse().unwrap());
        c.token = Some("s3cret".into());
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn heads_end_at_the_first_blank_line() {
        let b = b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest";
        assert_eq!(head_end(b, 0), Some(b.len() - 4));
        let lf = b"GET / HTTP/1.1\nA: b\n\n";
        assert_eq!(head_end(lf, 0), Some(lf.len()));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
        // Searching from just before a split read still finds it.
        let b = b"GET / HTTP/1.1\r\n\r\n";
        assert_eq!(head_end(b, 14), Some(b.len()));
    }

    #[test]
    fn requests_parse_and_refuse_what_is_not_http() {
        let t = Some("T");
        let r = parse(
            b"POST /capture?on=0 HTTP/1.1\r\nHost: x\r\nauthorization:  bearer T \r\n\r\n",
            t,
        )
        .unwrap();
        assert_eq!(
            r,
            Request {
                method: "POST",
                target: "/capture?on=0",
                authorized: true,
                body: false
            }
        );
        let auth = |h: &str, token| {
            parse(format!("POST / HTTP/1.1\r\n{h}\r\n\r\n").as_bytes(), token)
                .unwrap()
                .authorized
        };
        assert!(!auth("Authorization: Bearer t", t));
        assert!(!auth("Authorization: Basic T", t));
        assert!(!auth("Authorization: Bearer T", None));
        assert!(auth(
            "X: y\r\nAuthorization: Bearer no\r\nAuthorization: Bearer T",
            t
        ));
        let body = |h: &str| {
            parse(format!("POST / HTTP/1.1\r\n{h}\r\n\r\n").as_bytes(), t).map(|r| r.body)
        };
        assert_eq!(body("Content-Length: 0"), Some(false));
        assert_eq!(body("Content-Length: 1"), Some(true));
        assert_eq!(body("Transfer-Encoding: chunked"), Some(true));
        assert_eq!(body("Content-Length: 1\r\nContent-Length: 2"), None);
        assert_eq!(body("Content-Length: -1"), None);
        assert_eq!(body("Content-Length: 99999999999999999999999"), None);
        for bad in [
            &b"GET / HTTP/1.1 x\r\n\r\n"[..],
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2.0\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nA b: c\r\n\r\n",
            b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
            b"GET / HTTP/1.1\r\nnocolon\r\n\r\n",
            b"GET /\xff HTTP/1.1\r\n\r\n",
            b"\r\n\r\n",
        ] {
            assert_eq!(parse(bad, t), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn limits_out_of_range_are_refused() {
        let base = ExporterConfig::new("127.0.0.1:0".parse().unwrap());
        let mut c = base.clone();
        c.max_connections = 0;
        assert!(c.check().is_err());
        let mut c = base.clone();
        c.request_timeout = Duration::ZERO;
        assert!(c.check().is_err());
        let mut c = base.clone();
        c.max_header_bytes = MIN_HEADER_BYTES - 1;
        assert!(c.check().is_err());
        assert!(base.check().is_ok());
    }
}
