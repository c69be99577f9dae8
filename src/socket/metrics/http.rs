//! The HTTP side of a stack's telemetry (cargo feature `metrics`): [`Metrics::serve`] starts
//! a [`Exporter`] with the capture switch (`/capture`) beside `/metrics`, and the exporter a
//! stack built with `StackBuilder::metrics_addr` owns.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::telemetry::{Exporter, ExporterConfig, ExporterError, HttpControl};

#[cfg(test)]
use super::CapturePolicy;
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

/// `/capture` on the exporter: `POST /capture?on=1&file=NAME[&port=NAME][&max_packets=N]
/// [&max_bytes=N][&snaplen=N]`, `POST /capture?on=0[&port=NAME]`, `GET /capture`.
/// Starting needs the [`CapturePolicy`](super::CapturePolicy) the application set (404
/// "capture not enabled" otherwise): `file` is a bare name created (0600, new) in its
/// directory, and the numbers may only lower its ceilings.
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
        Some(match (method, q.get("on").map(String::as_str)) {
            ("GET", _) => (200, json(&self.0.capture_status())),
            ("POST", Some("1")) => {
                let Some(policy) = self.0.capture_policy() else {
                    return Some(err(
                        404,
                        &"capture not enabled (the application sets a capture directory)",
                    ));
                };
                let Some(name) = q.get("file") else {
                    return Some(err(400, &"on=1 needs file=NAME"));
                };
                let file = match policy.file(name) {
                    Ok(f) => f,
                    Err(e) => return Some(err(400, &e)),
                };
                let limits = match http_limits(&q, policy.ceilings) {
                    Ok(l) => l,
                    Err(e) => return Some(err(400, &e)),
                };
                match self.0.capture_start(port, &file, limits) {
                    Ok(s) => (200, json(&s)),
                    Err(e @ (CaptureError::NoSuchPort(_) | CaptureError::Ambiguous(_))) => {
                        err(404, &e)
                    }
                    Err(e @ CaptureError::AlreadyRunning(_)) => err(409, &e),
                    Err(ref e @ CaptureError::File { ref source, .. })
                        if source.kind() == std::io::ErrorKind::AlreadyExists =>
                    {
                        err(409, e)
                    }
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

/// The limits of an HTTP capture: `max_packets`, `max_bytes`, `snaplen` from the query, each
/// at least 1 and at most its ceiling (an absent one gets the ceiling); `0`, `none` or a
/// number over the ceiling is refused, never read as "unlimited".
fn http_limits(
    q: &HashMap<String, String>,
    ceilings: CaptureLimits,
) -> Result<CaptureLimits, String> {
    let num = |k: &str, ceiling: Option<u64>| -> Result<Option<u64>, String> {
        let Some(v) = q.get(k) else {
            return Ok(ceiling);
        };
        let n: u64 = v
            .parse()
            .map_err(|_| format!("{k} must be a number from 1 up"))?;
        if n == 0 {
            return Err(format!("{k}=0 is refused (it does not lift the cap)"));
        }
        match ceiling {
            Some(c) if n > c => Err(format!(
                "{k} may be at most {c} (the application's ceiling)"
            )),
            _ => Ok(Some(n)),
        }
    };
    let snaplen = num("snaplen", Some(u64::from(ceilings.snaplen)))?
        .map_or(ceilings.snaplen, |s| u32::try_from(s).unwrap_or(u32::MAX));
    Ok(CaptureLimits {
        max_packets: num("max_packets", ceilings.max_packets)?,
        max_bytes: num("max_bytes", ceilings.max_bytes)?,
        snaplen,
    })
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
    token: Option<String>,
) -> Result<Exporter, ExporterError> {
    let mut cfg = ExporterConfig::new(addr);
    cfg.token = token;
    metrics.serve(&cfg)
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

    fn query(s: &str) -> HashMap<String, String> {
        s.split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    #[test]
    fn http_caps_lower_the_ceilings_and_never_lift_them() {
        let c = CaptureLimits {
            max_packets: Some(100),
            max_bytes: Some(10_000),
            snaplen: 128,
        };
        assert_eq!(http_limits(&query(""), c), Ok(c));
        assert_eq!(
            http_limits(&query("max_packets=5&max_bytes=2000&snaplen=64"), c),
            Ok(CaptureLimits {
                max_packets: Some(5),
                max_bytes: Some(2000),
                snaplen: 64
            })
        );
        for q in [
            "max_packets=0",
            "max_bytes=0",
            "snaplen=0",
            "max_packets=none",
            "max_packets=101",
            "max_bytes=10001",
            "snaplen=65535",
            "max_bytes=-1",
        ] {
            assert!(http_limits(&query(q), c).is_err(), "{q} accepted");
        }
    }

    #[test]
    fn capture_files_are_bare_names_inside_the_directory() {
        let p = CapturePolicy::new("/var/cap");
        assert_eq!(
            p.file("a.pcap"),
            Ok(std::path::PathBuf::from("/var/cap/a.pcap"))
        );
        for bad in ["", ".", "..", "../x", "/etc/passwd", "a/b", "..\\x", "a\0b"] {
            assert!(p.file(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn capture_is_refused_until_the_application_enables_it() {
        let m = Metrics::new();
        let h = CaptureHttp(m.clone());
        let (code, body) = h.handle("POST", "/capture?on=1&file=a.pcap").unwrap();
        assert_eq!(code, 404, "{body}");
        assert!(body.contains("capture not enabled"), "{body}");
        let dir = std::env::temp_dir().join(format!("bypass-capdir-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        m.enable_capture(CapturePolicy::new(&dir));
        for (q, want) in [
            ("file=..%2Fx", 400),
            ("file=%2Ftmp%2Fx", 400),
            ("file=a.pcap&max_packets=0", 400),
            ("file=a.pcap&max_bytes=0", 400),
            // Allowed past the checks: no stack is registered.
            ("file=a.pcap", 404),
        ] {
            let (code, body) = h.handle("POST", &format!("/capture?on=1&{q}")).unwrap();
            assert_eq!(code, want, "{q}: {body}");
        }
        assert!(!dir.join("a.pcap").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
