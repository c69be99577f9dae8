//! The hostile-input counters reach Prometheus (issue 18): provoke each refusal on a stack
//! built with metrics, then find its series in the text exposition with the value the code's
//! own counters hold, and have `promtool check metrics` accept the exposition.
#![cfg(feature = "metrics")]

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::harness;
use crate::socket_pair::{plain, serve_and_connect, End, PORT};

use bypass::mem::{HugePages, Pool, PoolConfig};
use bypass::pmd::memif::Role;
use bypass::pmd::pair::pair;
use bypass::socket::{Backend, Metrics, Stack, StackBuilder};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 2);

/// The value of the exposition's line for `series` (name with `_total` and labels, as
/// printed), or a panic that shows the exposition.
fn line_value(text: &str, series: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("series {series} missing from the exposition:\n{text}"));
    line[series.len() + 1..]
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// `promtool check metrics` accepts `text` with no lint finding (skipped, or failed under
/// BYPASS_STRICT, without promtool).
fn promtool_accepts(text: &str) {
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
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}: {said}\n{text}",
        out.status
    );
}

#[test]
fn transport_refusals_are_exported_by_cause() {
    let _pair = harness::one_pair_at_a_time();
    let pool = Pool::new(&PoolConfig {
        hugepages: HugePages::Never,
        ..PoolConfig::new("hostile-metrics", 8192, 9216 + 256)
    })
    .unwrap();
    let (a, b) = pair(&pool, 1024, 9000).unwrap();
    let m = Metrics::new();
    let ms = m.clone();
    let acked = Arc::new(AtomicBool::new(false));
    let small_in = acked.clone();
    let (server, stack, sock) = serve_and_connect(
        End {
            ip: SERVER,
            port: a,
            build: move |b: StackBuilder| {
                b.metrics(&ms)
                    .metrics_name("server")
                    .max_connections_per_source(1)
                    .max_rx_slots(4)
                    .rx_budget(64 << 10)
            },
        },
        End {
            ip: CLIENT,
            port: b,
            build: plain,
        },
        move |stack, _sock| {
            // Take nothing until 20 small messages and the second connection's fate are in,
            // and the 1 MiB message has been refused.
            let mut seen = (false, 0, 0);
            let e = harness::wait_for(
                "20 unread messages, a refused second connection and refused packets",
                Duration::from_secs(20),
                || {
                    stack.poll();
                    let e = stack.stats().endpoint;
                    seen = (
                        small_in.load(Ordering::Relaxed),
                        e.refused_per_source,
                        e.conn_rx_refused,
                    );
                    seen.0 && seen.1 >= 1 && seen.2 >= 1
                },
            )
            .map_err(|e| {
                format!("{e}: (20 acknowledged, refused per source, refused packets) {seen:?}")
            });
            // The published values equal the endpoint's counters once a publish tick (1 ms)
            // ran with no packet changing them (the client's retransmissions back off).
            let published = |name: &str, cause: Option<&str>| {
                let mut l = vec![("port", "server"), ("queue", "0")];
                l.extend(cause.map(|c| ("cause", c)));
                stack.metrics().unwrap().registry().value(name, &l)
            };
            let mut last = None;
            let settled = harness::wait_for(
                "the published counters to equal the endpoint's",
                Duration::from_secs(10),
                || {
                    stack.poll();
                    let es = stack.stats().endpoint;
                    let now = (
                        published("bypass_transport_refused_connections", Some("per_source")),
                        published("bypass_transport_rx_dropped_datagrams", Some("over_limit")),
                        published("bypass_transport_rx_copied_messages", None),
                    );
                    last = Some((es, now));
                    now == (
                        Some(es.refused_per_source),
                        Some(es.conn_rx_refused - es.conn_rx_alloc_failed),
                        Some(es.conn_rx_slots_copied),
                    )
                },
            );
            let text = stack.metrics().unwrap().registry().encode_text();
            (e, settled, last, text)
        },
    );
    let _second = stack.connect(SocketAddrV4::new(SERVER, PORT), Duration::from_secs(1));
    // One at a time, each acknowledged before the next is sent: a DATA packet, so a pool
    // slot, per message (the messages of one BATCH packet would share its slot).
    for k in 0..20u8 {
        sock.send(&[k; 100]).unwrap();
        sock.flush().unwrap();
    }
    // Delivered before the large message takes the whole receive budget.
    sock.flush().unwrap();
    acked.store(true, Ordering::Relaxed);
    let _ = sock.send(&vec![7u8; 1 << 20]);
    while !server.is_finished() {
        stack.poll();
    }
    let (e, settled, last, text) = server.join().unwrap();
    e.unwrap();
    settled.unwrap_or_else(|e| panic!("{e}: {last:?}"));
    let (es, _) = last.unwrap();
    let s = |name: &str, cause: &str| {
        if cause.is_empty() {
            format!(r#"{name}{{port="server",queue="0"}}"#)
        } else {
            format!(r#"{name}{{port="server",queue="0",cause="{cause}"}}"#)
        }
    };
    let drops = "bypass_transport_rx_dropped_datagrams_total";
    let refused = "bypass_transport_refused_connections_total";
    for (series, want) in [
        (s(refused, "per_source"), es.refused_per_source),
        (s(refused, "max_connections"), 0),
        (s("bypass_transport_rx_copied_messages_total", ""), 16),
        (
            s(drops, "over_limit"),
            es.conn_rx_refused - es.conn_rx_alloc_failed,
        ),
        (s(drops, "alloc_failed"), es.conn_rx_alloc_failed),
        (s(drops, "no_cookie_key"), 0),
        (s(drops, "stateless_queue_full"), es.stateless_dropped),
    ] {
        assert_eq!(line_value(&text, &series), want, "{series}");
    }
    assert!(es.conn_rx_refused > 0, "the 1 MiB message was refused");
    assert!(
        es.refused_per_source > 0,
        "the second connection was refused"
    );
    promtool_accepts(&text);
}

/// A connection to the memif control socket at `path` (SOCK_SEQPACKET, what memif speaks).
fn seqpacket(path: &Path) -> OwnedFd {
    // SAFETY: socket(2) with constant arguments; the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero bytes are a valid sockaddr_un.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let name = path.as_os_str().as_bytes();
    assert!(name.len() < addr.sun_path.len(), "socket path too long");
    for (d, &b) in addr.sun_path.iter_mut().zip(name) {
        *d = b as libc::c_char;
    }
    // SAFETY: addr is a valid sockaddr_un of the size passed; fd is open.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
        )
    };
    assert_eq!(
        r,
        0,
        "connect {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    fd
}

#[test]
fn memif_refusals_are_exported_by_cause() {
    let _pair = harness::one_pair_at_a_time();
    let path = std::env::temp_dir().join(format!(
        "bypass-hostile-metrics-{}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let m = Metrics::new();
    let stop = Arc::new(AtomicBool::new(false));
    let backend = |role| Backend::Memif {
        socket: path.clone(),
        role,
        id: 0,
    };
    let server = {
        let (m, stop, sb) = (m.clone(), stop.clone(), backend(Role::Server));
        thread::spawn(move || {
            let stack = Stack::builder(sb, SERVER)
                .metrics(&m)
                .metrics_name("memif-server")
                .memif_max_pending_handshakes(1)
                .memif_handshake_timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            while !stop.load(Ordering::Relaxed) {
                stack.poll();
            }
        })
    };
    harness::settle("the memif server's socket to appear", || path.exists());
    let client = Stack::builder(backend(Role::Client), CLIENT)
        .build()
        .unwrap();
    let value = |cause: Option<&str>, name: &str| {
        let mut l = vec![("port", "memif-server"), ("queue", "0")];
        l.extend(cause.map(|c| ("cause", c)));
        m.registry().value(name, &l)
    };
    let drops = |cause| value(Some(cause), "bypass_memif_dropped_handshakes");
    // Two idle control connections with room for one pending: the first is dropped.
    let _idle1 = seqpacket(&path);
    harness::settle("one pending handshake", || {
        value(None, "bypass_memif_pending_handshakes") == Some(1)
    });
    let _idle2 = seqpacket(&path);
    harness::settle(
        "bypass_memif_dropped_handshakes{cause=pending_full} = 1",
        || drops("pending_full") == Some(1),
    );
    // A third that sends garbage for its first message: it drops the second (pending), and
    // is refused before naming an interface.
    let mut bad = std::fs::File::from(seqpacket(&path));
    harness::settle(
        "bypass_memif_dropped_handshakes{cause=pending_full} = 2",
        || drops("pending_full") == Some(2),
    );
    let _ = bad.write_all(&[0xff; 128]);
    harness::settle("bypass_memif_dropped_handshakes{cause=refused} = 1", || {
        drops("refused") == Some(1)
    });
    let end = Instant::now() + Duration::from_millis(20);
    while Instant::now() < end {
        client.poll();
    }
    let text = m.registry().encode_text();
    let s = |name: &str, cause: &str| {
        if cause.is_empty() {
            format!(r#"{name}{{port="memif-server",queue="0"}}"#)
        } else {
            format!(r#"{name}{{port="memif-server",queue="0",cause="{cause}"}}"#)
        }
    };
    let d = "bypass_memif_dropped_handshakes_total";
    for (series, want) in [
        (s(d, "refused"), 1),
        (s(d, "pending_full"), 2),
        (s(d, "failed"), 0),
        (s("bypass_memif_accept_errors_total", ""), 0),
        (s("bypass_memif_unsealed_regions_total", ""), 0),
        (s("bypass_memif_interrupts_skipped_total", ""), 0),
        (s("bypass_memif_rings_wedged_total", ""), 0),
    ] {
        assert_eq!(line_value(&text, &series), want, "{series}");
    }
    promtool_accepts(&text);
    stop.store(true, Ordering::Relaxed);
    drop(client);
    server.join().unwrap();
}
