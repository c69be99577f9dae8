//! A running stack's telemetry end to end: two stacks over memif (each on its own thread)
//! recording into one `Metrics`, served over HTTP; counters checked against the traffic
//! driven, the exposition checked by `promtool`, a capture switched on at run time read back
//! by `tshark`, and `bypass stat` run against the stacks (as a process, and in a real
//! terminal under tmux).

#[path = "../../tests/harness/mod.rs"]
mod harness;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bypass::pmd::memif::Role;
use bypass::socket::{Backend, CaptureLimits, Metrics, Stack, StackBuilder, DEFAULT_UDP_PORT};
use bypass::telemetry::{Exporter, ExporterConfig};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0x77, 0, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0x77, 0, 2];

/// The tests each run two busy-polling stacks: one at a time, or on a small machine the
/// loops starve each other into peer timeouts.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn sock_path(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("bypass-metrics-{tag}-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// The bearer token the tests' exporters require on state-changing requests.
const TOKEN: &str = "test-token-5d1f";

fn build(m: &Metrics, path: &Path, role: Role) -> Stack {
    build_with(m, path, role, |b| b)
}

fn build_with(
    m: &Metrics,
    path: &Path,
    role: Role,
    more: impl FnOnce(StackBuilder) -> StackBuilder,
) -> Stack {
    let (ip, mac, pip, pmac, name) = match role {
        Role::Server => (SERVER_IP, SERVER_MAC, CLIENT_IP, CLIENT_MAC, "server"),
        Role::Client => (CLIENT_IP, CLIENT_MAC, SERVER_IP, SERVER_MAC, "client"),
    };
    let b = Stack::builder(
        Backend::Memif {
            socket: path.to_owned(),
            role,
            id: 0,
        },
        ip,
    )
    .mac(mac)
    .static_arp(pip, pmac)
    .metrics(m)
    .metrics_name(name)
    .link_timeout(Duration::from_secs(20));
    more(b).build().unwrap()
}

/// A server stack on its own thread: accepts one connection and receives (counting) until
/// `stop`; returns the messages received.
fn spawn_server(m: &Metrics, path: &Path, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    let (m, path) = (m.clone(), path.to_owned());
    thread::spawn(move || {
        let stack = build(&m, &path, Role::Server);
        let sock = stack.listen().accept(Duration::from_secs(20)).unwrap();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            match sock.try_recv() {
                Ok(Some(_)) => n += 1,
                Ok(None) => {}
                // The client closed: keep the loop running (and publishing) until told.
                Err(bypass::socket::Error::Closed) => {
                    while !stop.load(Ordering::Relaxed) {
                        stack.poll();
                    }
                }
                Err(e) => panic!("server: {e}"),
            }
        }
        n
    })
}

fn connect(stack: &Stack) -> bypass::socket::Socket {
    stack
        .connect(
            SocketAddrV4::new(SERVER_IP, DEFAULT_UDP_PORT),
            Duration::from_secs(20),
        )
        .unwrap()
}

fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    http_auth(addr, method, path, None)
}

/// `method path`, with `Authorization: Bearer <token>` when `token` is given.
fn http_auth(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP response");
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

/// Series of one scrape: (name, labels) -> value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn samples(body: &str) -> Samples {
    let mut out = Samples::new();
    for l in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (k, v) = l.rsplit_once(' ').expect("sample line");
        let (name, labels) = match k.split_once('{') {
            Some((n, rest)) => {
                let rest = rest.trim_end_matches('}');
                let labels = rest
                    .split("\",")
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (a, b) = kv.split_once("=\"").unwrap();
                        (a.to_string(), b.trim_end_matches('"').to_string())
                    })
                    .collect();
                (n.to_string(), labels)
            }
            None => (k.to_string(), BTreeMap::new()),
        };
        out.insert((name, labels), v.parse().unwrap());
    }
    out
}

/// Sum of the series of `name` whose labels include `want`.
fn sum(s: &Samples, name: &str, want: &[(&str, &str)]) -> f64 {
    s.iter()
        .filter(|((n, l), _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| *v)
        .sum()
}

fn scrape(addr: SocketAddr) -> (String, Samples) {
    let (code, body) = http(addr, "GET", "/metrics");
    assert_eq!(code, 200, "{body}");
    let s = samples(&body);
    (body, s)
}

fn serve(m: &Metrics) -> Exporter {
    let mut cfg = ExporterConfig::new("127.0.0.1:0".parse().unwrap());
    cfg.token = Some(TOKEN.to_owned());
    m.serve(&cfg).unwrap()
}

#[test]
fn counters_move_by_the_traffic_sent_and_promtool_accepts_the_exposition() {
    let _pair = harness::one_pair_at_a_time();
    let _serial = serial();
    let path = sock_path("count");
    let m = Metrics::new();
    let exp = serve(&m);
    let stop = Arc::new(AtomicBool::new(false));
    let server = spawn_server(&m, &path, stop.clone());
    let stack = build(&m, &path, Role::Client);
    let sock = connect(&stack);
    sock.send(b"warm-up").unwrap();
    sock.flush().unwrap();
    let client = [("port", "client"), ("queue", "0")];
    let server_l = [("port", "server"), ("queue", "0")];
    let peer = format!("{CLIENT_IP}:{DEFAULT_UDP_PORT}");
    // The baseline: both loops have published the quiet state after the warm-up (every frame
    // sent counted as received on the other side, the warm-up delivered). A scrape taken
    // before the server's thread published (it can wait for a core on a busy machine) would
    // offset every difference below.
    let mut a = Samples::new();
    harness::settle(
        "both stacks to publish the quiet state after the warm-up",
        || {
            stack.poll_for(Duration::from_millis(50));
            a = scrape(exp.local_addr()).1;
            sum(
                &a,
                "bypass_conn_delivered_messages_total",
                &[("peer", &peer)],
            ) == 1.0
                && sum(&a, "bypass_port_tx_packets_total", &client)
                    == sum(&a, "bypass_port_rx_packets_total", &server_l)
                && sum(&a, "bypass_port_tx_packets_total", &server_l)
                    == sum(&a, "bypass_port_rx_packets_total", &client)
        },
    );

    const N: u64 = 1000;
    const LEN: usize = 200;
    for i in 0..N {
        let msg = vec![i as u8; LEN];
        sock.send(&msg).unwrap();
    }
    sock.flush().unwrap();
    // Let both loops publish the quiet state (ticks every 1 ms of polling); on a loaded
    // machine the server's thread may need a while longer (the asserts below say what
    // differs if it never comes).
    let deadline = Instant::now() + harness::SETTLE;
    let (body, b) = loop {
        stack.poll_for(Duration::from_millis(50));
        let (body, b) = scrape(exp.local_addr());
        let d = |name: &str, want: &[(&str, &str)]| sum(&b, name, want) - sum(&a, name, want);
        let settled = d("bypass_conn_delivered_messages_total", &[("peer", &peer)]) == N as f64
            && d("bypass_port_tx_packets_total", &client)
                == d("bypass_port_rx_packets_total", &server_l)
            && d("bypass_port_tx_packets_total", &server_l)
                == d("bypass_port_rx_packets_total", &client);
        if settled || Instant::now() > deadline {
            break (body, b);
        }
    };
    let d = |name: &str, want: &[(&str, &str)]| sum(&b, name, want) - sum(&a, name, want);
    let delivered = d("bypass_conn_delivered_messages_total", &[("peer", &peer)]);
    println!("server connection delivered {delivered} messages (sent {N})");
    assert_eq!(delivered, N as f64);

    let c_tx = d("bypass_port_tx_packets_total", &client);
    let s_rx = d("bypass_port_rx_packets_total", &server_l);
    let s_tx = d("bypass_port_tx_packets_total", &server_l);
    let c_rx = d("bypass_port_rx_packets_total", &client);
    println!("client tx {c_tx} server rx {s_rx}; server tx {s_tx} client rx {c_rx}");
    // Small messages queued together share frames (BATCH packets), but a frame carries at
    // most one datagram's worth of them (memif's 9000-byte MTU less IPv4 and UDP: 8972).
    assert!(
        c_tx >= (N as usize * LEN).div_ceil(8972) as f64,
        "client sent {c_tx} frames for {N} messages"
    );
    assert_eq!(c_tx, s_rx, "memif is lossless: every frame sent arrived");
    assert_eq!(s_tx, c_rx);
    assert!(s_tx >= 1.0, "the server acknowledged");
    let c_txb = d("bypass_port_tx_bytes_total", &client);
    let s_rxb = d("bypass_port_rx_bytes_total", &server_l);
    // Every message's bytes, plus Ethernet 14 + IPv4 20 + UDP 8 per frame at least.
    assert!(
        c_txb >= (N as usize * LEN) as f64 + 42.0 * c_tx,
        "client sent {c_txb} bytes"
    );
    assert_eq!(c_txb, s_rxb);
    for cause in [
        "no_buffer",
        "device_error",
        "bad_checksum",
        "malformed",
        "no_connection",
    ] {
        let mut l = client.to_vec();
        l.push(("cause", cause));
        assert_eq!(
            d("bypass_port_rx_dropped_packets_total", &l),
            0.0,
            "{cause}"
        );
    }
    assert!(d("bypass_runtime_poll_iterations_total", &client) > 0.0);
    assert!(d("bypass_poll_loop_gap_seconds_count", &client) > 0.0);
    // The client's 1000 messages were acknowledged: RTT samples reached its histogram.
    assert!(d("bypass_rtt_seconds_count", &client) > 0.0);
    // ... and their completions (queued to fully acknowledged) reached this one.
    assert!(d("bypass_message_completion_seconds_count", &client) > 0.0);
    assert_eq!(sum(&b, "bypass_port_link_up", &client), 1.0);
    assert_eq!(sum(&b, "bypass_transport_connections", &server_l), 1.0);
    assert_eq!(
        d("bypass_transport_accepted_connections_total", &server_l),
        0.0
    );
    assert_eq!(
        sum(&b, "bypass_transport_accepted_connections_total", &server_l),
        1.0
    );
    assert!(
        sum(&b, "bypass_pool_capacity_slots", &[]) > 0.0,
        "memif pools exported"
    );
    assert!(
        sum(&b, "bypass_conn_srtt_seconds", &[("peer", &peer)]) > 0.0,
        "srtt published"
    );

    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => harness::missing(
            "promtool not found on PATH (Debian package prometheus)",
            "the promtool check",
        ),
        Err(e) => panic!("promtool: {e}"),
        Ok(mut p) => {
            p.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
            let out = p.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            println!("promtool check metrics: {:?} {text}", out.status);
            assert!(
                out.status.success(),
                "promtool rejected the exposition:\n{text}"
            );
            // promtool exits 0 on lint warnings too; there should be none.
            assert!(text.trim().is_empty(), "promtool lint findings:\n{text}");
        }
    }

    sock.close().unwrap();
    stop.store(true, Ordering::Relaxed);
    assert_eq!(server.join().unwrap(), N + 1);
    drop(stack);
    // Connections closed: their series are gone from the next scrape.
    let (_, c) = scrape(exp.local_addr());
    assert_eq!(sum(&c, "bypass_conn_srtt_seconds", &[("peer", &peer)]), 0.0);
    let _ = std::fs::remove_file(&path);
}

/// Run `method path` (with the token) on the exporter from another thread while this thread
/// polls `stack` (the capture command is served by the poll loop).
fn http_while_polling(stack: &Stack, addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    http_while_polling_auth(stack, addr, method, path, Some(TOKEN))
}

fn http_while_polling_auth(
    stack: &Stack,
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&'static str>,
) -> (u16, String) {
    let (tx, rx) = mpsc::channel();
    let (method, path) = (method.to_owned(), path.to_owned());
    let h = thread::spawn(move || tx.send(http_auth(addr, &method, &path, token)).unwrap());
    let r = loop {
        stack.poll();
        if let Ok(r) = rx.try_recv() {
            break r;
        }
    };
    h.join().unwrap();
    r
}

/// Run the `curl` binary with `args` from another thread while this thread polls `stack`;
/// returns the HTTP status and the body (`-w` appends the status on a line of its own).
fn curl_while_polling(stack: &Stack, args: &[&str]) -> (u16, String) {
    let argv: Vec<String> = ["-sS", "--max-time", "60", "-w", "\n%{http_code}"]
        .iter()
        .chain(args)
        .map(|a| a.to_string())
        .collect();
    println!("curl {}", argv[5..].join(" "));
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || tx.send(Command::new("curl").args(&argv).output()).unwrap());
    let out = loop {
        stack.poll();
        if let Ok(o) = rx.try_recv() {
            break o.expect("running curl");
        }
    };
    h.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {args:?}: {}; stdout {text:?}; stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, code) = text.rsplit_once('\n').expect("curl's -w status line");
    (code.trim().parse().expect("HTTP status"), body.to_string())
}

fn tshark(args: &[&str]) -> Option<String> {
    match Command::new("tshark").args(args).output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("tshark: {e}"),
        Ok(o) => {
            assert!(
                o.status.success(),
                "tshark {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            Some(String::from_utf8_lossy(&o.stdout).into_owned())
        }
    }
}

#[test]
fn capture_switched_on_at_run_time_opens_in_tshark_without_malformed_frames() {
    let _pair = harness::one_pair_at_a_time();
    let _serial = serial();
    let path = sock_path("cap");
    let m = Metrics::new();
    let exp = serve(&m);
    let addr = exp.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let server = spawn_server(&m, &path, stop.clone());
    let dir = std::env::temp_dir().join(format!("bypass-cap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Capture is off until the application names a directory: the server stack did not.
    let (code, body) = http_auth(
        addr,
        "POST",
        "/capture?on=1&port=server&file=s.pcap",
        Some(TOKEN),
    );
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("capture not enabled"), "{body}");
    let stack = build_with(&m, &path, Role::Client, |b| {
        b.capture_dir(&dir).capture_limits(CaptureLimits {
            max_packets: Some(1000),
            max_bytes: Some(10 << 20),
            snaplen: 65535,
        })
    });
    let sock = connect(&stack);
    sock.send(b"before capture").unwrap();
    sock.flush().unwrap();

    let file = dir.join("client.pcap");
    let on = "/capture?on=1&port=client&file=client.pcap";
    // No token, a wrong one, a token in another scheme: 403, and no file.
    for token in [None, Some("test-token-5d1e"), Some("")] {
        let (code, body) = http_while_polling_auth(&stack, addr, "POST", on, token);
        assert_eq!(code, 403, "{token:?}: {body}");
    }
    assert!(!file.exists());
    // Names outside the directory, and caps over the ceilings or lifted with 0: 400.
    for bad in [
        "file=..%2Fescaped.pcap",
        "file=%2Ftmp%2Fescaped.pcap",
        "file=",
        "file=x.pcap&max_packets=0",
        "file=x.pcap&max_bytes=0",
        "file=x.pcap&max_packets=1001",
        "file=x.pcap&max_bytes=20000000",
        "file=x.pcap&snaplen=65536",
    ] {
        let (code, body) = http_while_polling(
            &stack,
            addr,
            "POST",
            &format!("/capture?on=1&port=client&{bad}"),
        );
        assert_eq!(code, 400, "{bad}: {body}");
    }
    assert!(!dir.join("x.pcap").exists());
    assert!(!dir.parent().unwrap().join("escaped.pcap").exists());
    let (code, body) = http_while_polling(&stack, addr, "POST", on);
    println!("capture on: {code} {body}");
    assert_eq!(code, 200, "{body}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }
    // A second start on the same port is refused while the first runs.
    let (code, body) = http_while_polling(
        &stack,
        addr,
        "POST",
        "/capture?on=1&port=client&file=x.pcap",
    );
    assert_eq!(code, 409, "{body}");
    assert!(!dir.join("x.pcap").exists());

    for i in 0..40u32 {
        // Single-packet and multi-packet messages.
        let len = if i % 4 == 0 { 20_000 } else { 100 + i as usize };
        sock.send(&vec![i as u8; len]).unwrap();
    }
    sock.flush().unwrap();
    stack.poll_for(Duration::from_millis(20));
    let (code, body) = http_while_polling(&stack, addr, "POST", "/capture?on=0&port=client");
    println!("capture off: {code} {body}");
    assert_eq!(code, 200, "{body}");
    let st: serde_json::Value = serde_json::from_str(&body).unwrap();
    let packets = st["packets"].as_u64().unwrap();
    assert!(packets >= 40, "{st}");
    assert_eq!(st["active"], false);
    // Stopping again: nothing runs.
    let (code, _) = http_while_polling(&stack, addr, "POST", "/capture?on=0&port=client");
    assert_eq!(code, 409);
    // An existing file is never reopened or truncated.
    let before = std::fs::metadata(&file).unwrap().len();
    let (code, body) = http_while_polling(&stack, addr, "POST", on);
    assert_eq!(code, 409, "{body}");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), before);

    // A capped capture: exactly max_packets frames, the rest counted as skipped.
    let capped = dir.join("capped.pcap");
    let (code, body) = http_while_polling(
        &stack,
        addr,
        "POST",
        "/capture?on=1&port=client&max_packets=5&file=capped.pcap",
    );
    assert_eq!(code, 200, "{body}");
    for i in 0..20u32 {
        // Over a quarter of the (9000-byte MTU) datagram: one frame per message (small
        // ones would share frames).
        sock.send(&vec![i as u8; 4000]).unwrap();
    }
    sock.flush().unwrap();
    stack.poll_for(Duration::from_millis(20));
    let (code, body) = http_while_polling(&stack, addr, "POST", "/capture?on=0");
    // Two stacks are registered: without port= the request is ambiguous.
    assert_eq!(code, 404, "{body}");
    let (code, body) = http_while_polling(&stack, addr, "POST", "/capture?on=0&port=client");
    assert_eq!(code, 200, "{body}");
    let capped_st: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(capped_st["packets"], 5, "{capped_st}");
    assert!(
        capped_st["skipped_limit"].as_u64().unwrap() > 0,
        "{capped_st}"
    );

    // The same switch driven by the `curl` binary, as an operator would (docs/PLAYBOOK.md):
    // without the token 403 and no file; with it 200 and a 0600 file inside the directory.
    if harness::require_tool("curl", "curl", "the curl run of /capture") {
        let url = format!("http://{addr}/capture?on=1&port=client&file=curl.pcap");
        let curl_file = dir.join("curl.pcap");
        let (code, body) = curl_while_polling(&stack, &["-X", "POST", &url]);
        assert_eq!(code, 403, "curl without the token: {body}");
        assert!(
            !curl_file.exists(),
            "a refused request created {curl_file:?}"
        );
        let auth = format!("Authorization: Bearer {TOKEN}");
        let (code, body) = curl_while_polling(&stack, &["-X", "POST", "-H", &auth, &url]);
        assert_eq!(code, 200, "curl with the token: {body}");
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::symlink_metadata(&curl_file).unwrap();
        assert!(meta.is_file(), "{curl_file:?} is not a plain file");
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "{:o}",
            meta.permissions().mode()
        );
        assert_eq!(
            curl_file.canonicalize().unwrap().parent(),
            Some(dir.canonicalize().unwrap().as_path()),
            "the capture file is not inside the capture directory"
        );
        let off = format!("http://{addr}/capture?on=0&port=client");
        let (code, body) = curl_while_polling(&stack, &["-X", "POST", &off]);
        assert_eq!(code, 403, "curl without the token: {body}");
        let (code, body) = curl_while_polling(&stack, &["-X", "POST", "-H", &auth, &off]);
        assert_eq!(code, 200, "curl with the token: {body}");
    }

    sock.close().unwrap();
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();

    let f = file.to_str().unwrap();
    let Some(all) = tshark(&["-r", f]) else {
        harness::missing(
            "tshark not found on PATH (Debian package tshark)",
            "the tshark checks",
        );
        return;
    };
    let frames = all.lines().count() as u64;
    println!(
        "tshark read {frames} frames; first: {:?}",
        all.lines().next()
    );
    assert_eq!(frames, packets);
    let malformed = tshark(&[
        "-r",
        f,
        "-Y",
        "_ws.malformed || _ws.expert.severity >= error",
    ])
    .unwrap();
    assert!(
        malformed.trim().is_empty(),
        "malformed frames:\n{malformed}"
    );
    let udp = tshark(&[
        "-r",
        f,
        "-Y",
        &format!("udp.port == {DEFAULT_UDP_PORT} && ip.src == {CLIENT_IP}"),
    ])
    .unwrap();
    assert!(udp.lines().count() >= 40, "{udp}");
    let c = capped.to_str().unwrap();
    assert_eq!(tshark(&["-r", c]).unwrap().lines().count(), 5);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&path);
}

/// Client and server each on a thread, sending until `stop`.
struct Traffic {
    stop: Arc<AtomicBool>,
    server_stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    client: JoinHandle<()>,
    server: JoinHandle<u64>,
    path: PathBuf,
}

impl Traffic {
    fn start(m: &Metrics, tag: &str) -> Traffic {
        let path = sock_path(tag);
        let stop = Arc::new(AtomicBool::new(false));
        let server_stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let server = spawn_server(m, &path, server_stop.clone());
        let client = {
            let (m, path, stop, sent) = (m.clone(), path.clone(), stop.clone(), sent.clone());
            thread::spawn(move || {
                let stack = build(&m, &path, Role::Client);
                let sock = connect(&stack);
                let msg = bytes::Bytes::from(vec![7u8; 1000]);
                while !stop.load(Ordering::Relaxed) {
                    sock.send_bytes(msg.clone()).unwrap();
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                sock.close().unwrap();
            })
        };
        Traffic {
            stop,
            server_stop,
            sent,
            client,
            server,
            path,
        }
    }

    fn stop(self) {
        // The client closes first (the server still polling), then the server stops.
        self.stop.store(true, Ordering::Relaxed);
        self.client.join().unwrap();
        self.server_stop.store(true, Ordering::Relaxed);
        self.server.join().unwrap();
        let _ = std::fs::remove_file(&self.path);
    }
}

fn bypass_bin() -> &'static str {
    env!("CARGO_BIN_EXE_bypass")
}

#[test]
fn stat_once_json_reports_rates_of_a_running_stack() {
    let _pair = harness::one_pair_at_a_time();
    let _serial = serial();
    let m = Metrics::new();
    let exp = serve(&m);
    let t = Traffic::start(&m, "statjson");
    let deadline = Instant::now() + Duration::from_secs(20);
    while t.sent.load(Ordering::Relaxed) < 100 {
        assert!(Instant::now() < deadline, "no traffic");
        thread::sleep(Duration::from_millis(10));
    }
    let out = Command::new(bypass_bin())
        .args([
            "stat",
            &exp.local_addr().to_string(),
            "--once",
            "--json",
            "--interval",
            "500ms",
        ])
        .output()
        .unwrap();
    t.stop();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("bypass stat --once --json: {text}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ports = v["ports"].as_array().unwrap();
    let client = ports.iter().find(|p| p["port"] == "client").unwrap();
    let server = ports.iter().find(|p| p["port"] == "server").unwrap();
    assert!(
        client["tx_packets_per_second"].as_f64().unwrap() > 0.0,
        "{client}"
    );
    assert!(
        server["rx_packets_per_second"].as_f64().unwrap() > 0.0,
        "{server}"
    );
    assert!(client["tx_bytes"].as_u64().unwrap() > 0);
    assert_eq!(client["link_up"], true);
    let conns = v["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 2, "{conns:?}");
    assert!(conns
        .iter()
        .any(|c| c["delivered_messages_per_second"].as_f64().unwrap() > 0.0));
    assert!(!v["pools"].as_array().unwrap().is_empty());
}

#[test]
fn stat_live_view_in_a_real_terminal() {
    let _pair = harness::one_pair_at_a_time();
    let _serial = serial();
    if !harness::require_tool("tmux", "tmux", "the live view in a terminal") {
        return;
    }
    let m = Metrics::new();
    let exp = serve(&m);
    let t = Traffic::start(&m, "stattmux");
    let sock = format!("bypass-stat-test-{}", std::process::id());
    let session = "stat";
    let cmd = format!(
        "{} stat {} --interval 500ms",
        bypass_bin(),
        exp.local_addr()
    );
    let ok = Command::new("tmux")
        .args([
            "-L",
            &sock,
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "160",
            "-y",
            "40",
            &cmd,
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    // Wait for a frame that shows both ports moving (the asserts below say what is missing
    // if none comes).
    let deadline = Instant::now() + Duration::from_secs(60);
    let screen = loop {
        thread::sleep(Duration::from_millis(700));
        let out = Command::new("tmux")
            .args(["-L", &sock, "capture-pane", "-p", "-t", session])
            .output()
            .unwrap();
        let screen = String::from_utf8_lossy(&out.stdout).into_owned();
        let moving = |port: &str| {
            screen.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                // PORT Q LINK RX-pkt/s RX-Mb/s TX-pkt/s ...
                f.len() >= 6 && f[0] == port && f[2] == "up" && f[3] != "0" && f[5] != "0"
            })
        };
        if (moving("client") && moving("server")) || Instant::now() > deadline {
            break screen;
        }
    };
    // Send a key like an operator would: Ctrl-C ends the view.
    let _ = Command::new("tmux")
        .args(["-L", &sock, "send-keys", "-t", session, "C-c"])
        .status();
    thread::sleep(Duration::from_millis(300));
    let _ = Command::new("tmux")
        .args(["-L", &sock, "kill-server"])
        .stderr(Stdio::null())
        .status();
    t.stop();
    println!("--- tmux capture-pane ---\n{screen}\n---");
    assert!(screen.contains("PORT"), "no header:\n{screen}");
    assert!(screen.contains("CONN"), "no connection table:\n{screen}");
    for port in ["client", "server"] {
        assert!(
            screen.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() >= 6 && f[0] == port && f[2] == "up" && f[3] != "0" && f[5] != "0"
            }),
            "{port} shows no rates:\n{screen}"
        );
    }
}

#[test]
fn metrics_addr_off_loopback_is_refused_unless_allowed() {
    let path = sock_path("remote");
    let b = |addr: &str| {
        Stack::builder(
            Backend::Memif {
                socket: path.clone(),
                role: Role::Server,
                id: 0,
            },
            SERVER_IP,
        )
        .metrics_addr(addr.parse().unwrap())
        .link_timeout(Duration::from_millis(1))
    };
    for addr in ["0.0.0.0:0", "10.77.0.1:0", "[::]:0"] {
        let Err(e) = b(addr).build() else {
            panic!("built on {addr}")
        };
        println!("{addr}: {e}");
        assert!(e.to_string().contains("metrics_allow_remote"), "{e}");
    }
    // Allowed: the check passes and the server is built (it listens without a client), its
    // exporter on the address asked for.
    let s = b("0.0.0.0:0")
        .metrics_allow_remote(true)
        .build()
        .expect("allowed: the server builds");
    let at = s.metrics_addr().expect("the stack's exporter");
    assert!(at.ip().is_unspecified(), "bound where asked: {at}");
    drop(s);
    // A capture directory that does not exist is refused too.
    let Err(e) = b("127.0.0.1:0")
        .capture_dir("/nonexistent/bypass-capture")
        .build()
    else {
        panic!("built with no capture directory")
    };
    assert!(e.to_string().contains("capture directory"), "{e}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn an_idle_connection_does_not_block_other_clients() {
    let m = Metrics::new();
    let exp = serve(&m);
    let addr = exp.local_addr();
    // Slowloris: one connection that says nothing, one that sends half a request line.
    let _idle = TcpStream::connect(addr).unwrap();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(b"GET /metr").unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(http(addr, "GET", "/metrics")).unwrap());
    let (code, body) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("/metrics blocked by an idle connection");
    assert_eq!(code, 200, "{body}");
    // State-changing requests without the token are refused on any path.
    let (code, _) = http(addr, "POST", "/capture?on=0");
    assert_eq!(code, 403);
    let (code, _) = http(addr, "DELETE", "/metrics");
    assert_eq!(code, 403);
}
