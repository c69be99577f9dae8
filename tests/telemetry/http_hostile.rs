//! Hostile metrics clients (issue 18): half-sent requests held open, a request dripped a byte
//! at a time, more connections than the cap, oversize headers, bodies and garbage. Each is
//! refused or timed out and counted by cause (`bypass_metrics_http_refused_total{cause=...}`)
//! while a well-behaved client still gets `/metrics`. The exporters here run with
//! `ExporterConfig::new`'s defaults (32 connections, 5 s per request, 8 KiB of headers), the
//! limits an application gets without choosing.

use crate::harness;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bypass::telemetry::{Exporter, ExporterConfig, ExporterError, Registry};

/// The defaults these tests rely on (`ExporterConfig::new`).
const CAP: usize = 32;
const DEADLINE: Duration = Duration::from_secs(5);
const HEADER_LIMIT: usize = 8 << 10;

fn start() -> Exporter {
    let r = Registry::new();
    r.port_counters("memif0", 0);
    Exporter::start(r, &ExporterConfig::new("127.0.0.1:0".parse().unwrap())).unwrap()
}

/// Everything the server sends until it closes (or 20 s pass, or the connection resets after
/// some bytes came: a reset after the response still delivered the response).
fn read_all(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "the server neither answered nor closed within 20 s (got {:?})",
                    String::from_utf8_lossy(&out)
                )
            }
            Err(e) => {
                assert!(
                    !out.is_empty() || e.kind() == ErrorKind::ConnectionReset,
                    "reading the response: {e}"
                );
                break;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Send `raw` (write errors ignored: the server may close before reading it all) and return
/// the status code of the reply, and the reply.
fn exchange(addr: SocketAddr, raw: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let _ = s.write_all(raw);
    let resp = read_all(&mut s);
    let code = resp
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status line in {resp:?}"));
    (code, resp)
}

fn get_metrics(addr: SocketAddr) -> (u16, String) {
    exchange(
        addr,
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// The value of `bypass_metrics_http_refused_total{cause="<cause>"}` in a fresh scrape.
fn refused(addr: SocketAddr, cause: &str) -> u64 {
    let (code, body) = get_metrics(addr);
    assert_eq!(code, 200, "{body}");
    let key = format!("bypass_metrics_http_refused_total{{cause=\"{cause}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("{key}missing from the exposition:\n{body}"))
        .trim()
        .parse()
        .unwrap()
}

/// A connection that sent the start of a request line and nothing more.
fn half_sent(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metr").unwrap();
    s
}

#[test]
fn half_sent_connections_do_not_delay_metrics() {
    let exp = start();
    let addr = exp.local_addr();
    // Under the cap: every one of them is admitted and held by the server.
    let held: Vec<TcpStream> = (0..CAP - 8).map(|_| half_sent(addr)).collect();
    let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let (tx, rx) = mpsc::channel();
    let t0 = Instant::now();
    thread::spawn(move || tx.send(get_metrics(addr)).unwrap());
    // Well inside the request deadline: served beside the held connections, not after them.
    let (code, body) = rx.recv_timeout(Duration::from_secs(4)).unwrap_or_else(|_| {
        panic!(
            "/metrics not answered within 4 s while {} half-sent and {} idle connections are held",
            held.len(),
            idle.len()
        )
    });
    println!(
        "/metrics answered in {:?} beside {} held connections",
        t0.elapsed(),
        held.len() + idle.len()
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("bypass_port_rx_packets_total"), "{body}");
}

#[test]
fn slow_drip_is_closed_at_the_request_deadline() {
    let exp = start();
    let addr = exp.local_addr();
    let mut s = TcpStream::connect(addr).unwrap();
    let t0 = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(250)))
        .unwrap();
    // A header that never ends, one byte each 250 ms: every read makes progress, so only a
    // deadline on the whole request ends it.
    let drip = b"GET /metrics HTTP/1.1\r\nX-Drip: ";
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let mut i = 0usize;
    let closed_at = loop {
        let b = drip.get(i).copied().unwrap_or(b'a');
        i += 1;
        if s.write_all(&[b]).is_err() {
            break t0.elapsed();
        }
        match s.read(&mut buf) {
            Ok(0) => break t0.elapsed(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break t0.elapsed(),
        }
        assert!(
            t0.elapsed() < DEADLINE + Duration::from_secs(20),
            "a connection dripping a byte each 250 ms is still open after {:?} ({i} bytes sent); \
             the request deadline is {DEADLINE:?}",
            t0.elapsed()
        );
    };
    let got = String::from_utf8_lossy(&got);
    println!("closed after {closed_at:?} and {i} bytes; reply {got:?}");
    assert!(
        closed_at >= DEADLINE - Duration::from_millis(300),
        "closed after {closed_at:?}, before the {DEADLINE:?} deadline"
    );
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 408 "), "{got}");
    assert_eq!(refused(addr, "timeout"), 1);
    // The server goes on serving.
    assert_eq!(get_metrics(addr).0, 200);
}

#[test]
fn connections_over_the_cap_get_503_and_the_server_keeps_serving() {
    let exp = start();
    let addr = exp.local_addr();
    let held: Vec<TcpStream> = (0..CAP).map(|_| half_sent(addr)).collect();
    let (code, resp) = get_metrics(addr);
    assert_eq!(
        code,
        503,
        "connection {} (cap {CAP}) was served: {resp}",
        CAP + 1
    );
    // Closing the held connections frees their slots: /metrics is served again. Refusals
    // met while the slots free up are counted too.
    drop(held);
    let mut refused_while_freeing = 0;
    harness::wait_for(
        "a /metrics answer once the held connections closed",
        harness::SETTLE,
        || match get_metrics(addr).0 {
            200 => true,
            503 => {
                refused_while_freeing += 1;
                thread::sleep(Duration::from_millis(20));
                false
            }
            other => panic!("/metrics answered {other}"),
        },
    )
    .unwrap();
    assert_eq!(refused(addr, "connections"), 1 + refused_while_freeing);
    assert_eq!(refused(addr, "timeout"), 0);
}

#[test]
fn oversize_headers_are_refused_with_431() {
    let exp = start();
    let addr = exp.local_addr();
    // Twice the limit in one header, then the end of the request.
    let big = "a".repeat(2 * HEADER_LIMIT);
    let (code, resp) = exchange(
        addr,
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    );
    assert_eq!(code, 431, "{}", &resp[..resp.len().min(300)]);
    // A header block that never ends (no blank line) is cut at the limit too, not read on.
    let mut s = TcpStream::connect(addr).unwrap();
    let line = format!("X-Pad: {}\r\n", "b".repeat(1000));
    let mut sent = 0;
    while sent < 64 * HEADER_LIMIT {
        if s.write_all(line.as_bytes()).is_err() {
            break;
        }
        sent += line.len();
    }
    let resp = read_all(&mut s);
    assert!(
        resp.starts_with("HTTP/1.1 431 "),
        "after {sent} bytes of headers: {}",
        &resp[..resp.len().min(300)]
    );
    assert_eq!(refused(addr, "headers_too_large"), 2);
    // Just under the limit is served.
    let ok = "c".repeat(HEADER_LIMIT - 200);
    let (code, _) = exchange(
        addr,
        format!("GET /metrics HTTP/1.1\r\nX-Ok: {ok}\r\n\r\n").as_bytes(),
    );
    assert_eq!(code, 200);
}

#[test]
fn bodies_and_malformed_requests_are_refused_and_counted() {
    let r = Registry::new();
    let mut cfg = ExporterConfig::new("127.0.0.1:0".parse().unwrap());
    cfg.token = Some("T".into());
    let exp = Exporter::start(r, &cfg).unwrap();
    let addr = exp.local_addr();
    for (raw, want) in [
        (
            &b"POST /capture?on=0 HTTP/1.1\r\nAuthorization: Bearer T\r\nContent-Length: 100000\r\n\r\nxxxx"[..],
            413,
        ),
        (
            b"POST /capture?on=0 HTTP/1.1\r\nAuthorization: Bearer T\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            413,
        ),
        (b"HELLO\r\n\r\n", 400),
        (b"GET metrics HTTP/1.1\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        (b"GET /metrics HTTP/1.1\r\nContent-Length: 12x\r\n\r\n", 400),
        (b"POST /capture?on=0 HTTP/1.1\r\nAuthorization: Bearer t\r\n\r\n", 403),
    ] {
        let (code, resp) = exchange(addr, raw);
        assert_eq!(code, want, "{}: {resp}", String::from_utf8_lossy(raw));
    }
    assert_eq!(refused(addr, "body"), 2);
    assert_eq!(refused(addr, "malformed"), 4);
    assert_eq!(refused(addr, "forbidden"), 1);
    // HEAD /metrics: the headers of the exposition, no body.
    let (code, resp) = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(code, 200, "{resp}");
    assert!(
        resp.ends_with("\r\n\r\n"),
        "HEAD answered with a body: {resp}"
    );
}

#[test]
fn dropped_exporter_stops_and_releases_its_port() {
    let exp = start();
    let addr = exp.local_addr();
    let mut held = half_sent(addr);
    assert_eq!(get_metrics(addr).0, 200);
    let t0 = Instant::now();
    drop(exp);
    let took = t0.elapsed();
    // The port is free the moment the drop returns.
    let again = TcpListener::bind(addr)
        .unwrap_or_else(|e| panic!("{addr} not free right after the exporter's drop: {e}"));
    println!("drop took {took:?}; {addr} bound again");
    assert!(
        took < DEADLINE,
        "the drop waited {took:?} for a held connection"
    );
    // The held connection was closed by the drop, not left to its deadline.
    let resp = read_all(&mut held);
    assert!(!resp.starts_with("HTTP/1.1 200"), "{resp}");
    drop(again);
}

#[test]
fn configured_limits_bite_where_set_and_stats_match_the_exposition() {
    let mut cfg = ExporterConfig::new("127.0.0.1:0".parse().unwrap());
    cfg.max_connections = 2;
    cfg.request_timeout = Duration::from_secs(1);
    cfg.max_header_bytes = 512;
    let exp = Exporter::start(Registry::new(), &cfg).unwrap();
    let addr = exp.local_addr();
    // 600 bytes of head: over 512, under the default 8 KiB.
    let pad = "p".repeat(560);
    let (code, _) = exchange(
        addr,
        format!("GET /metrics HTTP/1.1\r\nX: {pad}\r\n\r\n").as_bytes(),
    );
    assert_eq!(code, 431);
    // Two held connections fill the cap of 2; the third is refused. (The 431's connection
    // may still be closing: wait for it, then for both held ones to be admitted.)
    harness::settle("the 431's connection to close", || {
        exp.stats().open_connections == 0
    });
    let held: Vec<TcpStream> = (0..2).map(|_| half_sent(addr)).collect();
    harness::settle("both held connections admitted", || {
        exp.stats().open_connections == 2
    });
    let t0 = Instant::now();
    let (code, resp) = get_metrics(addr);
    assert_eq!(code, 503, "{resp}");
    // The 1 s deadline closes them, and /metrics is served again.
    let mut refused_while_waiting = 0;
    harness::settle(
        "the held connections to time out and /metrics to be served",
        || match get_metrics(addr).0 {
            200 => true,
            503 => {
                refused_while_waiting += 1;
                thread::sleep(Duration::from_millis(20));
                false
            }
            other => panic!("/metrics answered {other}"),
        },
    );
    let waited = t0.elapsed();
    println!("held connections closed by the 1 s deadline after {waited:?}");
    assert!(waited >= Duration::from_millis(700), "{waited:?}");
    // One freed slot is enough for that answer: wait for the other's timeout to be counted.
    harness::settle("both held connections counted as timed out", || {
        exp.stats().refused_timeout == 2
    });
    let s = exp.stats();
    println!("{s:?}");
    assert_eq!(s.refused_headers_too_large, 1);
    assert_eq!(s.refused_connections, 1 + refused_while_waiting);
    assert_eq!(s.refused_timeout, 2);
    // A connection's slot is given back just after it is closed and counted: with a cap of
    // 2, a scrape could be refused while the last ones are still being released.
    let quiet = || {
        harness::settle("every connection's slot given back", || {
            exp.stats().open_connections == 0
        })
    };
    quiet();
    assert_eq!(refused(addr, "timeout"), 2);
    quiet();
    assert_eq!(refused(addr, "headers_too_large"), 1);
    quiet();
    assert_eq!(refused(addr, "connections"), 1 + refused_while_waiting);
    drop(held);

    // Limits that cannot serve anything are refused at start, saying which.
    for (what, set) in [
        (
            "max_connections",
            &(|c: &mut ExporterConfig| c.max_connections = 0) as &dyn Fn(&mut ExporterConfig),
        ),
        ("request_timeout", &|c: &mut ExporterConfig| {
            c.request_timeout = Duration::ZERO
        }),
        ("max_header_bytes", &|c: &mut ExporterConfig| {
            c.max_header_bytes = 10
        }),
    ] {
        let mut c = ExporterConfig::new("127.0.0.1:0".parse().unwrap());
        set(&mut c);
        match Exporter::start(Registry::new(), &c) {
            Err(e @ ExporterError::Config(_)) => assert!(e.to_string().contains(what), "{e}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}
