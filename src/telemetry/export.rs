//! Prometheus text exposition (format 0.0.4) of a [`Registry`], served over HTTP from a thread
//! of its own, off the data-path cores.
//!
//! Encoding goes through `prometheus-client`'s text encoder with one custom collector that
//! walks the registry on each scrape, so names, escaping, `_total` suffixes and histogram
//! `le` buckets follow the format as the maintained client writes it. Histograms are exported
//! in seconds with `le` bounds at 2^k ns ([`LE_EXPONENTS`]), which fall on edges of the
//! internal buckets; a bound counts the values `< 2^k` ns (a value of exactly 2^k ns, in whole
//! nanoseconds, lands in the next bound).
//!
//! The server answers `GET /metrics` (and `/`) with the exposition; other requests go to the
//! [`HttpControl`] given to [`Exporter::start_with_control`] (the stack's run-time capture
//! switch uses this), and what it does not take gets 404. It is `tiny_http` on one thread:
//! scrapes are serialised, which is what a metrics endpoint needs.
//!
//! Reads (GET, HEAD) need no credential. Every other request changes state and needs
//! `Authorization: Bearer <token>` with [`ExporterConfig::token`] (compared in constant
//! time); without it, with another, or when no token is configured: 403.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::registry::{FamilyKind, Registry, Value, LE_EXPONENTS};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

struct RegistryCollector(Registry);

impl std::fmt::Debug for RegistryCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Collector for RegistryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for fam in self.0.gather() {
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
                        e.encode_histogram::<NoLabelSet>(
                            h.sum() as f64 / 1e9,
                            h.count(),
                            &buckets,
                            None,
                        )?
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

/// Encode everything in `registry` as Prometheus text.
pub fn encode_text(registry: &Registry) -> String {
    let mut r = prometheus_client::registry::Registry::default();
    r.register_collector(Box::new(RegistryCollector(registry.clone())));
    let mut out = String::new();
    // Writing to a String cannot fail; a collector error leaves a partial body.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &r) {
        tracing::warn!(error = %e, "encoding metrics failed");
    }
    out
}

/// Extra endpoints served next to `/metrics` by the exporter's thread (off the data path).
pub trait HttpControl: Send + Sync + 'static {
    /// Answer a request (`method` such as `"POST"`, `url` with its query string) with a
    /// status code and a body, or `None` when the request is not for this handler (404).
    fn handle(&self, method: &str, url: &str) -> Option<(u16, String)>;
}

/// Where and how to serve metrics. Its `Debug` leaves the token out.
#[derive(Clone)]
pub struct ExporterConfig {
    /// Listen address, e.g. `127.0.0.1:9464` (port 0 picks a free one).
    pub addr: SocketAddr,
    /// Pin the exporter thread to this CPU (choose one no poll loop runs on). `None`: the
    /// scheduler places it.
    pub cpu: Option<usize>,
    /// The bearer token state-changing requests (all but GET and HEAD) must carry; `None`:
    /// they are all refused (403).
    pub token: Option<String>,
}

impl std::fmt::Debug for ExporterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExporterConfig")
            .field("addr", &self.addr)
            .field("cpu", &self.cpu)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl ExporterConfig {
    /// Serve on `addr`, unpinned.
    pub fn new(addr: SocketAddr) -> ExporterConfig {
        ExporterConfig {
            addr,
            cpu: None,
            token: None,
        }
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
}

/// A running metrics endpoint. Dropping it stops serving and joins its thread; the listening
/// socket is closed by `tiny_http`'s accept thread a moment later.
pub struct Exporter {
    server: Arc<tiny_http::Server>,
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
        let server = tiny_http::Server::http(cfg.addr).map_err(|source| ExporterError::Bind {
            addr: cfg.addr,
            source,
        })?;
        let addr = server.server_addr().to_ip().unwrap_or(cfg.addr);
        let server = Arc::new(server);
        let s = server.clone();
        let cpu = cfg.cpu;
        let token = cfg.token.clone();
        let thread = std::thread::Builder::new()
            .name("bypass-metrics".into())
            .spawn(move || serve(&s, &registry, cpu, token.as_deref(), control.as_deref()))?;
        tracing::info!(%addr, "serving Prometheus metrics on /metrics");
        Ok(Exporter {
            server,
            addr,
            thread: Some(thread),
        })
    }

    /// The address it listens on (with the port the OS picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether `req` carries `Authorization: Bearer <token>` (`token` set).
fn authorized(req: &tiny_http::Request, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return false;
    };
    req.headers()
        .iter()
        .filter(|h| h.field.equiv("Authorization"))
        .any(|h| {
            let v = h.value.as_str().trim();
            match (v.get(..7), v.get(7..)) {
                (Some(scheme), Some(t)) if scheme.eq_ignore_ascii_case("bearer ") => {
                    constant_time_eq(t.trim_start().as_bytes(), token.as_bytes())
                }
                _ => false,
            }
        })
}

/// `a == b` in time that depends on their lengths only, not on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn serve(
    server: &tiny_http::Server,
    registry: &Registry,
    cpu: Option<usize>,
    token: Option<&str>,
    control: Option<&dyn HttpControl>,
) {
    if let Some(id) = cpu {
        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
            tracing::warn!(cpu = id, "could not pin the metrics thread");
        }
    }
    let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], CONTENT_TYPE.as_bytes())
        .expect("static header is valid");
    // `recv` returns an error once `unblock` is called (or the listener dies).
    while let Ok(req) = server.recv() {
        let path = req.url().split('?').next().unwrap_or("");
        let read_only = matches!(
            *req.method(),
            tiny_http::Method::Get | tiny_http::Method::Head
        );
        let resp = if *req.method() == tiny_http::Method::Get && (path == "/metrics" || path == "/")
        {
            tiny_http::Response::from_string(encode_text(registry)).with_header(header.clone())
        } else if !read_only && !authorized(&req, token) {
            tiny_http::Response::from_string(if token.is_some() {
                "forbidden: state-changing requests need Authorization: Bearer <token>\n"
            } else {
                "forbidden: no token is configured for state-changing requests\n"
            })
            .with_status_code(403)
        } else if let Some((code, body)) =
            control.and_then(|c| c.handle(req.method().as_str(), req.url()))
        {
            tiny_http::Response::from_string(body).with_status_code(code)
        } else {
            tiny_http::Response::from_string("not found; metrics are at /metrics\n")
                .with_status_code(404)
        };
        if let Err(e) = req.respond(resp) {
            tracing::debug!(error = %e, "metrics response not delivered");
        }
    }
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
}
