//! `bypass stat ADDR`: a live, top-like view of a running stack, read from its Prometheus
//! endpoint (`http://ADDR/metrics`), with rates computed between two scrapes.
//!
//! `--once --json` prints one JSON object (totals and per-second rates over `--interval`) for
//! scripts; `--once` alone prints one text frame. The live view redraws with plain ANSI
//! escapes until interrupted (or `--count N` frames).
//!
//! ```text
//! bypass stat 127.0.0.1:9464 --interval 500ms --once --json
//! ```

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `bypass stat` options.
#[derive(clap::Args, Debug)]
pub struct StatArgs {
    /// host:port of a stack's metrics endpoint (StackBuilder::metrics_addr); an
    /// http://ADDR/metrics URL works too
    #[arg(value_name = "ADDR")]
    pub addr: String,
    /// Time between scrapes; rates are over this interval
    #[arg(long, value_name = "TIME", default_value = "1s", value_parser = positive_duration)]
    pub interval: Duration,
    /// Print one frame (two scrapes, --interval apart) and exit
    #[arg(long)]
    pub once: bool,
    /// With --once: one JSON object (totals and rates) instead of text
    #[arg(long, requires = "once")]
    pub json: bool,
    /// Stop after N frames
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = super::duration::parse(s)?;
    if d.is_zero() {
        return Err("the interval must be longer than 0".into());
    }
    Ok(d)
}

/// One series: labels (sorted) and value.
type Labels = BTreeMap<String, String>;

/// A scrape: metric name -> series.
#[derive(Debug, Default, Clone)]
struct Scrape {
    at: Option<Instant>,
    series: BTreeMap<String, Vec<(Labels, f64)>>,
}

impl Scrape {
    fn get(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.series.get(name)?.iter().find_map(|(l, v)| {
            want.iter()
                .all(|(k, x)| l.get(*k).map(String::as_str) == Some(*x))
                .then_some(*v)
        })
    }
    fn all(&self, name: &str) -> &[(Labels, f64)] {
        self.series.get(name).map_or(&[], Vec::as_slice)
    }
}

fn parse_labels(s: &str) -> Option<Labels> {
    // s: `a="x",b="y\"z"` (without braces)
    let mut out = Labels::new();
    let mut it = s.chars().peekable();
    loop {
        while it.peek() == Some(&',') || it.peek() == Some(&' ') {
            it.next();
        }
        let mut key = String::new();
        for c in it.by_ref() {
            if c == '=' {
                break;
            }
            key.push(c);
        }
        if key.is_empty() {
            return Some(out);
        }
        if it.next() != Some('"') {
            return None;
        }
        let mut val = String::new();
        loop {
            match it.next()? {
                '\\' => match it.next()? {
                    'n' => val.push('\n'),
                    c => val.push(c),
                },
                '"' => break,
                c => val.push(c),
            }
        }
        out.insert(key, val);
    }
}

fn parse(body: &str) -> Scrape {
    let mut s = Scrape {
        at: Some(Instant::now()),
        ..Scrape::default()
    };
    for line in body.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name, labels, rest) = match line.find('{') {
            Some(i) => {
                let Some(j) = line.rfind('}') else { continue };
                (&line[..i], &line[i + 1..j], &line[j + 1..])
            }
            None => match line.split_once(' ') {
                Some((n, r)) => (n, "", r),
                None => continue,
            },
        };
        let Some(v) = rest.split_whitespace().next() else {
            continue;
        };
        let v = match v {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => match v.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        let Some(l) = parse_labels(labels) else {
            continue;
        };
        s.series.entry(name.to_owned()).or_default().push((l, v));
    }
    s
}

fn scrape(addr: &str) -> Result<Scrape, String> {
    let sa = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let mut c = TcpStream::connect_timeout(&sa, Duration::from_secs(2)).map_err(|e| {
        format!("cannot connect to {addr}: {e} (is the stack running with metrics_addr?)")
    })?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        c,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut resp = String::new();
    c.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    let (head, body) = resp
        .split_once("\r\n\r\n")
        .ok_or("malformed HTTP response")?;
    if !head.lines().next().unwrap_or("").contains(" 200") {
        return Err(format!(
            "{addr}/metrics: {}",
            head.lines().next().unwrap_or("")
        ));
    }
    Ok(parse(body))
}

/// Per-second rate of a counter between two scrapes (0 when it went backwards: a restart).
fn rate(a: &Scrape, b: &Scrape, name: &str, l: &[(&str, &str)]) -> f64 {
    let dt = match (a.at, b.at) {
        (Some(x), Some(y)) => y.duration_since(x).as_secs_f64(),
        _ => 0.0,
    };
    match (a.get(name, l), b.get(name, l)) {
        (Some(x), Some(y)) if dt > 0.0 && y >= x => (y - x) / dt,
        _ => 0.0,
    }
}

/// A quantile (seconds) of the histogram's observations between two scrapes, from its
/// cumulative `_bucket` series: the upper bound of the bucket holding it.
fn quantile(a: &Scrape, b: &Scrape, name: &str, l: &[(&str, &str)], q: f64) -> Option<f64> {
    let bucket = format!("{name}_bucket");
    let mut rows: Vec<(f64, f64)> = Vec::new();
    for (labels, v) in b.all(&bucket) {
        if !l
            .iter()
            .all(|(k, x)| labels.get(*k).map(String::as_str) == Some(*x))
        {
            continue;
        }
        let le = labels.get("le")?;
        let le: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().ok()?
        };
        let mut want: Vec<(&str, &str)> = l.to_vec();
        let les = labels.get("le").map(String::as_str).unwrap_or("");
        want.push(("le", les));
        let before = a.get(&bucket, &want).unwrap_or(0.0);
        rows.push((le, (v - before).max(0.0)));
    }
    rows.sort_by(|x, y| x.0.total_cmp(&y.0));
    let total = rows.last()?.1;
    if total <= 0.0 {
        return None;
    }
    rows.iter()
        .find(|(_, c)| *c >= q * total)
        .map(|(le, _)| *le)
}

fn fmt_rate(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn fmt_secs(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.is_infinite() => "inf".into(),
        Some(v) if v >= 1.0 => format!("{v:.2}s"),
        Some(v) if v >= 1e-3 => format!("{:.2}ms", v * 1e3),
        Some(v) => format!("{:.1}us", v * 1e6),
    }
}

const DROP_CAUSES: [&str; 5] = [
    "no_buffer",
    "device_error",
    "bad_checksum",
    "malformed",
    "no_connection",
];

fn ports(s: &Scrape) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = s
        .all("bypass_port_rx_packets_total")
        .iter()
        .map(|(l, _)| {
            (
                l.get("port").cloned().unwrap_or_default(),
                l.get("queue").cloned().unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

fn render_text(addr: &str, a: &Scrape, b: &Scrape, interval: f64) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "bypass stat {addr}   rates per second over {interval:.1} s   (q: Ctrl-C)"
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<14} {:>2} {:>4} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8}",
        "PORT",
        "Q",
        "LINK",
        "RX pkt/s",
        "RX Mb/s",
        "TX pkt/s",
        "TX Mb/s",
        "DROP/s",
        "RINGF/s",
        "POOLX/s",
        "ITER/s"
    );
    for (p, q) in ports(b) {
        let l = [("port", p.as_str()), ("queue", q.as_str())];
        let link = match b.get("bypass_port_link_up", &l) {
            Some(v) if v > 0.0 => "up",
            Some(_) => "DOWN",
            None => "?",
        };
        let drops: f64 = DROP_CAUSES
            .iter()
            .map(|c| {
                rate(
                    a,
                    b,
                    "bypass_port_rx_dropped_packets_total",
                    &[l[0], l[1], ("cause", c)],
                )
            })
            .sum();
        let _ = writeln!(
            o,
            "{:<14} {:>2} {:>4} {:>9} {:>9.1} {:>9} {:>9.1} {:>8} {:>8} {:>8} {:>8}",
            p,
            q,
            link,
            fmt_rate(rate(a, b, "bypass_port_rx_packets_total", &l)),
            rate(a, b, "bypass_port_rx_bytes_total", &l) * 8.0 / 1e6,
            fmt_rate(rate(a, b, "bypass_port_tx_packets_total", &l)),
            rate(a, b, "bypass_port_tx_bytes_total", &l) * 8.0 / 1e6,
            fmt_rate(drops),
            fmt_rate(rate(a, b, "bypass_port_tx_ring_full_total", &l)),
            fmt_rate(rate(a, b, "bypass_port_tx_pool_exhausted_total", &l)),
            fmt_rate(rate(a, b, "bypass_runtime_poll_iterations_total", &l)),
        );
        let mut causes = String::new();
        for c in DROP_CAUSES {
            let t = b
                .get(
                    "bypass_port_rx_dropped_packets_total",
                    &[l[0], l[1], ("cause", c)],
                )
                .unwrap_or(0.0);
            let _ = write!(causes, " {c}={t:.0}");
        }
        let g = "bypass_poll_loop_gap_seconds";
        let _ = writeln!(
            o,
            "{:<14}    drops total:{causes}   loop gap p50 {} p99 {} p99.9 {}",
            "",
            fmt_secs(quantile(a, b, g, &l, 0.5)),
            fmt_secs(quantile(a, b, g, &l, 0.99)),
            fmt_secs(quantile(a, b, g, &l, 0.999)),
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<14} {:>12} {:>8} {:>8} {:>5} {:>5}",
        "POOL", "IN USE/CAP", "HIGH", "FAIL/s", "HUGE", "FALLBK"
    );
    for (l, cap) in b.all("bypass_pool_capacity_slots") {
        let name = l.get("pool").cloned().unwrap_or_default();
        let pl = [("pool", name.as_str())];
        let _ = writeln!(
            o,
            "{:<14} {:>12} {:>8} {:>8} {:>5} {:>5}",
            name,
            format!(
                "{:.0}/{:.0}",
                b.get("bypass_pool_in_use_slots", &pl).unwrap_or(0.0),
                cap
            ),
            b.get("bypass_pool_high_water_slots", &pl).unwrap_or(0.0),
            fmt_rate(rate(a, b, "bypass_pool_alloc_failures_total", &pl)),
            b.get("bypass_pool_hugepages", &pl).unwrap_or(0.0),
            b.get("bypass_pool_hugepage_fallback", &pl).unwrap_or(0.0),
        );
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<17} {:<21} {:>9} {:>10} {:>10} {:>7} {:>7} {:>9}",
        "CONN", "PEER", "SRTT", "CWND", "INFLIGHT", "RETX/s", "LOST/s", "MSG/s"
    );
    for (l, srtt) in b.all("bypass_conn_srtt_seconds") {
        let id = l.get("conn").cloned().unwrap_or_default();
        let peer = l.get("peer").cloned().unwrap_or_default();
        let cl = [("conn", id.as_str()), ("peer", peer.as_str())];
        let _ = writeln!(
            o,
            "{:<17} {:<21} {:>9} {:>10.0} {:>10.0} {:>7} {:>7} {:>9}",
            id,
            peer,
            fmt_secs(Some(*srtt)),
            b.get("bypass_conn_cwnd_bytes", &cl).unwrap_or(0.0),
            b.get("bypass_conn_in_flight_bytes", &cl).unwrap_or(0.0),
            fmt_rate(rate(a, b, "bypass_conn_retransmitted_packets_total", &cl)),
            fmt_rate(rate(a, b, "bypass_conn_lost_packets_total", &cl)),
            fmt_rate(rate(a, b, "bypass_conn_delivered_messages_total", &cl)),
        );
    }
    for (l, v) in b.all("bypass_capture_active") {
        if *v > 0.0 {
            let p = l.get("port").cloned().unwrap_or_default();
            let n = b
                .get("bypass_capture_packets", &[("port", p.as_str())])
                .unwrap_or(0.0);
            let _ = writeln!(o, "\ncapture running on {p}: {n:.0} frames recorded");
        }
    }
    o
}

fn render_json(addr: &str, a: &Scrape, b: &Scrape, interval: f64) -> serde_json::Value {
    use serde_json::{json, Map, Value};
    let mut ports_v = Vec::new();
    for (p, q) in ports(b) {
        let l = [("port", p.as_str()), ("queue", q.as_str())];
        let mut m = Map::new();
        m.insert("port".into(), json!(p));
        m.insert("queue".into(), json!(q));
        m.insert(
            "link_up".into(),
            json!(b.get("bypass_port_link_up", &l).unwrap_or(0.0) > 0.0),
        );
        for k in [
            "rx_packets",
            "rx_bytes",
            "tx_packets",
            "tx_bytes",
            "tx_ring_full",
            "tx_pool_exhausted",
        ] {
            let name = format!("bypass_port_{k}_total");
            m.insert(k.into(), json!(b.get(&name, &l).unwrap_or(0.0) as u64));
            m.insert(format!("{k}_per_second"), json!(rate(a, b, &name, &l)));
        }
        let mut drops = Map::new();
        for c in DROP_CAUSES {
            let name = "bypass_port_rx_dropped_packets_total";
            let cl = [l[0], l[1], ("cause", c)];
            drops.insert(
                c.into(),
                json!({ "total": b.get(name, &cl).unwrap_or(0.0) as u64,
                        "per_second": rate(a, b, name, &cl) }),
            );
        }
        m.insert("rx_dropped".into(), Value::Object(drops));
        let g = "bypass_poll_loop_gap_seconds";
        m.insert(
            "poll_loop_gap_seconds".into(),
            json!({ "p50": quantile(a, b, g, &l, 0.5), "p99": quantile(a, b, g, &l, 0.99),
                    "p999": quantile(a, b, g, &l, 0.999) }),
        );
        ports_v.push(Value::Object(m));
    }
    let pools: Vec<Value> = b
        .all("bypass_pool_capacity_slots")
        .iter()
        .map(|(l, cap)| {
            let name = l.get("pool").cloned().unwrap_or_default();
            let pl = [("pool", name.as_str())];
            json!({
                "pool": name, "capacity": *cap as u64,
                "in_use": b.get("bypass_pool_in_use_slots", &pl).unwrap_or(0.0) as u64,
                "high_water": b.get("bypass_pool_high_water_slots", &pl).unwrap_or(0.0) as u64,
                "alloc_failures": b.get("bypass_pool_alloc_failures_total", &pl).unwrap_or(0.0) as u64,
                "hugepages": b.get("bypass_pool_hugepages", &pl).unwrap_or(0.0) > 0.0,
            })
        })
        .collect();
    let conns: Vec<Value> = b
        .all("bypass_conn_srtt_seconds")
        .iter()
        .map(|(l, srtt)| {
            let id = l.get("conn").cloned().unwrap_or_default();
            let peer = l.get("peer").cloned().unwrap_or_default();
            let cl = [("conn", id.as_str()), ("peer", peer.as_str())];
            let m = "bypass_conn_delivered_messages_total";
            json!({
                "conn": id, "peer": peer, "srtt_seconds": srtt,
                "cwnd_bytes": b.get("bypass_conn_cwnd_bytes", &cl).unwrap_or(0.0) as u64,
                "in_flight_bytes": b.get("bypass_conn_in_flight_bytes", &cl).unwrap_or(0.0) as u64,
                "retransmitted_packets": b.get("bypass_conn_retransmitted_packets_total", &cl).unwrap_or(0.0) as u64,
                "lost_packets": b.get("bypass_conn_lost_packets_total", &cl).unwrap_or(0.0) as u64,
                "delivered_messages": b.get(m, &cl).unwrap_or(0.0) as u64,
                "delivered_messages_per_second": rate(a, b, m, &cl),
            })
        })
        .collect();
    json!({ "addr": addr, "interval_seconds": interval, "ports": ports_v, "pools": pools,
            "connections": conns })
}

/// `bypass stat`.
pub fn main(args: &StatArgs) -> ExitCode {
    let a = args.addr.as_str();
    let a = a.strip_prefix("http://").unwrap_or(a);
    let addr = a
        .trim_end_matches('/')
        .trim_end_matches("/metrics")
        .to_owned();
    let (once, json, count) = (args.once, args.json, args.count);
    let interval = args.interval.as_secs_f64();
    let step = args.interval;
    let mut prev = match scrape(&addr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bypass stat: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut frames = 0u64;
    let mut out = std::io::stdout();
    loop {
        std::thread::sleep(step);
        let cur = match scrape(&addr) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("bypass stat: {e}");
                return ExitCode::FAILURE;
            }
        };
        if once {
            if json {
                println!("{}", render_json(&addr, &prev, &cur, interval));
            } else {
                print!("{}", render_text(&addr, &prev, &cur, interval));
            }
            return ExitCode::SUCCESS;
        }
        // Home, clear screen, frame.
        let _ = write!(
            out,
            "\x1b[H\x1b[2J{}",
            render_text(&addr, &prev, &cur, interval)
        );
        let _ = out.flush();
        frames += 1;
        if count.is_some_and(|c| frames >= c) {
            return ExitCode::SUCCESS;
        }
        prev = cur;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exposition_lines() {
        let s = parse(
            "# HELP x y\n# TYPE a counter\na_total{port=\"m\\\"0\",queue=\"0\"} 12\nb 3.5\n\
             h_bucket{le=\"+Inf\"} 4\n",
        );
        assert_eq!(
            s.get("a_total", &[("port", "m\"0"), ("queue", "0")]),
            Some(12.0)
        );
        assert_eq!(s.get("b", &[]), Some(3.5));
        assert_eq!(s.get("h_bucket", &[("le", "+Inf")]), Some(4.0));
    }

    #[test]
    fn quantile_from_bucket_deltas() {
        let mut a = parse("h_bucket{le=\"1\"} 0\nh_bucket{le=\"2\"} 0\nh_bucket{le=\"+Inf\"} 0\n");
        let mut b =
            parse("h_bucket{le=\"1\"} 90\nh_bucket{le=\"2\"} 99\nh_bucket{le=\"+Inf\"} 100\n");
        a.at = Some(Instant::now());
        b.at = a.at.map(|t| t + Duration::from_secs(1));
        assert_eq!(quantile(&a, &b, "h", &[], 0.5), Some(1.0));
        assert_eq!(quantile(&a, &b, "h", &[], 0.99), Some(2.0));
        assert_eq!(quantile(&a, &b, "h", &[], 0.999), Some(f64::INFINITY));
    }
}
