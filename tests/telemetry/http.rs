//! The Prometheus endpoint: start it on 127.0.0.1:0, move counters by known amounts, scrape
//! /metrics with a plain TcpStream GET, check the values moved by exactly those amounts, and
//! have `promtool check metrics` accept the exposition.

use crate::harness;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use bypass::mem::{HugePages, Pool, PoolConfig};
use bypass::pmd::PortStats;
use bypass::telemetry::{
    hist, ConnInfo, Exporter, ExporterConfig, PortMetric, Registry, CONTENT_TYPE,
};

/// GET `path`; returns (status line, headers, body).
fn get(addr: SocketAddr, path: &str) -> (String, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP response");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

/// `name{labels}` -> value, for every sample line.
fn samples(body: &str) -> BTreeMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("sample line");
            (k.to_string(), v.parse::<f64>().expect("sample value"))
        })
        .collect()
}

fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (status, headers, body) = get(addr, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        headers
            .to_ascii_lowercase()
            .contains("text/plain; version=0.0.4"),
        "{headers}"
    );
    samples(&body)
}

fn delta(a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>, key: &str) -> f64 {
    b.get(key).unwrap_or_else(|| panic!("{key} missing")) - a.get(key).copied().unwrap_or(0.0)
}

#[test]
fn scrape_shows_exact_increments() {
    let r = Registry::new();
    let c0 = r.port_counters("memif0", 0);
    let c0b = r.port_counters("memif0", 0); // a second core on the same labels
    let c1 = r.port_counters("memif0", 1);
    let h = r.histogram(&hist::RTT, &[("port", "memif0")]);
    let exp = Exporter::start(
        r.clone(),
        &ExporterConfig::new("127.0.0.1:0".parse().unwrap()),
    )
    .unwrap();
    let addr = exp.local_addr();
    assert_ne!(addr.port(), 0);

    let before = scrape(addr);
    c0.add(PortMetric::RxPackets, 17);
    c0b.add(PortMetric::RxPackets, 25);
    c0.add(PortMetric::RxBytes, 17 * 64);
    c1.add(PortMetric::TxPackets, 5);
    c1.inc(PortMetric::RxDropMalformed);
    c1.set_link_up(true);
    // Mirroring a driver's cumulative counters.
    let ps = PortStats {
        tx_ring_full: 3,
        rx_errors: 2,
        ..PortStats::default()
    };
    c0.set(PortMetric::TxRingFull, ps.tx_ring_full);
    c0.set(PortMetric::RxDropDeviceError, ps.rx_errors);
    for ns in [500u64, 1_500, 1_500, 40_000] {
        h.record(ns);
    }
    let after = scrape(addr);

    let q0 = r#"{port="memif0",queue="0"}"#;
    let q1 = r#"{port="memif0",queue="1"}"#;
    assert_eq!(
        delta(
            &before,
            &after,
            &format!("bypass_port_rx_packets_total{q0}")
        ),
        42.0
    );
    assert_eq!(
        delta(&before, &after, &format!("bypass_port_rx_bytes_total{q0}")),
        1088.0
    );
    assert_eq!(
        delta(
            &before,
            &after,
            &format!("bypass_port_tx_packets_total{q1}")
        ),
        5.0
    );
    assert_eq!(
        delta(
            &before,
            &after,
            &format!("bypass_port_tx_packets_total{q0}")
        ),
        0.0
    );
    assert_eq!(
        delta(
            &before,
            &after,
            &format!("bypass_port_tx_ring_full_total{q0}")
        ),
        3.0
    );
    assert_eq!(
        delta(
            &before,
            &after,
            r#"bypass_port_rx_dropped_packets_total{port="memif0",queue="1",cause="malformed"}"#
        ),
        1.0
    );
    assert_eq!(
        delta(
            &before,
            &after,
            r#"bypass_port_rx_dropped_packets_total{port="memif0",queue="0",cause="device_error"}"#
        ),
        2.0
    );
    assert_eq!(after[&format!("bypass_port_link_up{q1}")], 1.0);
    assert_eq!(after[&format!("bypass_port_link_up{q0}")], 0.0);

    // Histogram: le bounds in seconds at 2^k ns; 500 ns <= 512 ns, 1500 ns <= 2048 ns.
    let hl = |le: &str| format!(r#"bypass_rtt_seconds_bucket{{port="memif0",le="{le}"}}"#);
    assert_eq!(after[&hl("2.56e-07")], 0.0);
    assert_eq!(after[&hl("5.12e-07")], 1.0);
    assert_eq!(after[&hl("1.024e-06")], 1.0);
    assert_eq!(after[&hl("2.048e-06")], 3.0);
    assert_eq!(after[&hl("6.5536e-05")], 4.0);
    assert_eq!(after[&hl("+Inf")], 4.0);
    assert_eq!(after[r#"bypass_rtt_seconds_count{port="memif0"}"#], 4.0);
    let sum = after[r#"bypass_rtt_seconds_sum{port="memif0"}"#];
    assert!((sum - 43.5e-6).abs() < 1e-12, "sum {sum}");

    // A second round moves by exactly the new amounts.
    c0.add(PortMetric::RxPackets, 1000);
    let again = scrape(addr);
    assert_eq!(
        delta(&after, &again, &format!("bypass_port_rx_packets_total{q0}")),
        1000.0
    );

    let (status, _, _) = get(addr, "/nope");
    assert!(status.contains(" 404 "), "{status}");
    drop(exp);
    // The listener is closed before the drop returns.
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_err(),
        "{addr} still accepts after the exporter's drop"
    );
}

#[test]
fn exposition_passes_promtool() {
    let r = Registry::new();
    let c = r.port_counters("memif0", 0);
    c.add(PortMetric::RxPackets, 3);
    c.set_link_up(true);
    let _c2 = r.port_counters("net_ring\"0\\x", 1); // label value that needs escaping
    let h = r.histogram(&hist::POLL_LOOP_GAP, &[("core", "1")]);
    for ns in [80u64, 900, 25_000, 3_000_000] {
        h.record(ns);
    }
    let pool = Pool::new(&PoolConfig {
        hugepages: HugePages::Prefer,
        ..PoolConfig::new("rx", 256, 2048)
    })
    .unwrap();
    r.register_pool(&pool);
    r.register_conns(|f: &mut dyn FnMut(&ConnInfo)| {
        f(&ConnInfo {
            conn_id: 0x1234_5678_9abc_def0,
            peer: "10.0.0.2:4791".parse().unwrap(),
            srtt: Duration::from_micros(14),
            min_rtt: Duration::from_micros(10),
            rttvar: Duration::from_micros(3),
            cwnd_bytes: 65536,
            pacing_rate_bytes_per_second: 3_000_000_000,
            bytes_in_flight: 8192,
            credit_bytes: 1 << 20,
            retransmitted_packets: 2,
            lost_packets: 1,
            reorder_window: Duration::from_micros(4),
            delivered_messages: 100,
            delivered_bytes: 409_600,
            tx_zero_copy_packets: 7,
            tx_batches: 3,
            tx_batched_messages: 90,
            rx_batches: 4,
            rx_segment_messages: 5,
            rx_segment_copied: 1,
        })
    });
    let exp = Exporter::start(
        r.clone(),
        &ExporterConfig::new("127.0.0.1:0".parse().unwrap()),
    )
    .unwrap();
    let (_, headers, body) = get(exp.local_addr(), "/metrics");
    assert!(headers.contains(CONTENT_TYPE), "{headers}");
    assert!(
        body.contains(r#"bypass_pool_capacity_slots{pool="rx"} 256"#),
        "{body}"
    );
    assert!(body.contains("# TYPE bypass_conn_retransmitted_packets_total counter"));
    for (name, v) in [
        ("bypass_conn_tx_zero_copy_packets_total", 7),
        ("bypass_conn_tx_batches_total", 3),
        ("bypass_conn_tx_batched_messages_total", 90),
        ("bypass_conn_rx_batches_total", 4),
        ("bypass_conn_rx_segment_messages_total", 5),
        ("bypass_conn_rx_segment_copied_total", 1),
    ] {
        let line = body
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{")))
            .unwrap_or_else(|| panic!("{name} missing:\n{body}"));
        assert!(line.ends_with(&format!(" {v}")), "{line}");
    }
    assert!(
        body.contains(r#"port="net_ring\"0\\x""#),
        "label not escaped:\n{body}"
    );

    if !harness::require_tool("promtool", "prometheus", "the promtool check") {
        return;
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "promtool check metrics: status {}, output: {text:?}",
        out.status
    );
    assert!(
        out.status.success(),
        "promtool rejected the exposition: {text}\n{body}"
    );
    // Lint findings (naming, units) are printed even when the status is 0: demand none.
    assert!(text.trim().is_empty(), "promtool lint findings: {text}");
}
