//! The HTTP side of a stack's telemetry (cargo feature `metrics`): [`Metrics::serve`] starts
//! a [`Exporter`] with the capture switch (`/capture`) beside `/metrics`, and the exporter a
//! stack built with `StackBuilder::metrics_addr` owns.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use crate::telemetry::{Exporter, ExporterConfig, ExporterError, HttpControl};

use super::{CaptureError, CaptureLimits, Metrics};

impl Metrics {
    /// Serve `/metrics` and the capture switch (`/capture`) from a thread of its own.
    pub fn serve(&self, cfg: &ExporterConfig) -> Result<Exporter, ExporterError> {
        Exporter::start_with_control(
            self.registry.clone(),
            cfg,
            Arc::new(CaptureHttp(self.clone())),
        )
    }
}

/// `/capture` on the exporter: `POST /capture?on=1&file=PATH[&port=NAME][&max_packets=N]
/// [&max_bytes=N][&snaplen=N]`, `POST /capture?on=0[&port=NAME]`, `GET /capture`.
struct CaptureHttp(Metrics);

impl HttpControl for CaptureHttp {
    fn handle(&self, method: &str, url: &str) -> Option<(u16, String)> {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        if path != "/capture" {
            return None;
        }
        let q: HashMap<String, String> = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        let port = q.get("port").map(String::as_str);
        let json = |v: &dyn erased::Ser| v.to_json();
        let err = |code: u16, e: &dyn std::fmt::Display| {
            (
                code,
                serde_json::json!({ "error": e.to_string() }).to_string() + "\n",
            )
        };
        let num = |k: &str| -> Result<Option<u64>, String> {
            match q.get(k) {
                None => Ok(None),
                Some(v) if v == "0" || v == "none" => Ok(None),
                Some(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("{k} must be a number")),
            }
        };
        Some(match (method, q.get("on").map(String::as_str)) {
            ("GET", _) => (200, json(&self.0.capture_status())),
            ("POST", Some("1")) => {
                let Some(file) = q.get("file") else {
                    return Some(err(400, &"on=1 needs file=PATH"));
                };
                let mut limits = CaptureLimits::default();
                match (num("max_packets"), num("max_bytes"), num("snaplen")) {
                    (Ok(p), Ok(b), Ok(s)) => {
                        if q.contains_key("max_packets") {
                            limits.max_packets = p;
                        }
                        if q.contains_key("max_bytes") {
                            limits.max_bytes = b;
                        }
                        if let Some(s) = s {
                            limits.snaplen = u32::try_from(s).unwrap_or(u32::MAX);
                        }
                    }
                    (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Some(err(400, &e)),
                }
                match self.0.capture_start(port, Path::new(file), limits) {
                    Ok(s) => (200, json(&s)),
                    Err(e @ (CaptureError::NoSuchPort(_) | CaptureError::Ambiguous(_))) => {
                        err(404, &e)
                    }
                    Err(e @ CaptureError::AlreadyRunning(_)) => err(409, &e),
                    Err(e) => err(500, &e),
                }
            }
            ("POST", Some("0")) => match self.0.capture_stop(port) {
                Ok(s) => (200, json(&s)),
                Err(e @ (CaptureError::NoSuchPort(_) | CaptureError::Ambiguous(_))) => err(404, &e),
                Err(e @ CaptureError::NotRunning(_)) => err(409, &e),
                Err(e) => err(500, &e),
            },
            _ => err(
                400,
                &"use GET /capture, or POST /capture?on=1&file=PATH / ?on=0",
            ),
        })
    }
}

mod erased {
    /// Serialize to a JSON line without naming the type (keeps the handler's closures simple).
    pub(super) trait Ser {
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default() + "\n"
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Start the exporter a stack built with `StackBuilder::metrics_addr` owns.
pub(in crate::socket) fn start_own(
    metrics: &Metrics,
    addr: SocketAddr,
) -> Result<Exporter, ExporterError> {
    metrics.serve(&ExporterConfig::new(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("%2Ftmp%2Fa+b.pcap"), "/tmp/a b.pcap");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("/x/y"), "/x/y");
    }
}
