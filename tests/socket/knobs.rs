//! The hostile-input limits a `StackBuilder` sets (issue 18) reach the running stack: each
//! is shown biting (a second connection from one source refused, a message over the receive
//! budget refused, unread messages copied out of their slots, a memif client of another user
//! or with too large a region refused), next to the same run without the limit; and a
//! nonsensical value is refused by `build` with an error that names the setting.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness;
use crate::socket_pair::{plain, serve_and_connect, End, PORT};

use bypass::mem::{HugePages, Pool, PoolConfig};
use bypass::pmd::memif::Role;
use bypass::pmd::pair::{pair, PairPort};
use bypass::runtime::net::ArpConfig;
use bypass::socket::{Backend, Error, Stack, StackBuilder};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 97, 0, 2);

fn ports() -> (PairPort, PairPort, Pool) {
    let pool = Pool::new(&PoolConfig {
        hugepages: HugePages::Never,
        ..PoolConfig::new("socket-knobs", 8192, 9216 + 256)
    })
    .unwrap();
    let (a, b) = pair(&pool, 1024, 9000).unwrap();
    (a, b, pool)
}

/// Two connections from the client's one address to a server whose builder got
/// `max_connections_per_source(limit)`: (connections the server accepted, confirms it
/// refused per source).
fn two_connections_from_one_source(limit: usize) -> (u64, u64) {
    let (a, b, _pool) = ports();
    let (server, stack, _first) = serve_and_connect(
        End {
            ip: SERVER,
            port: a,
            build: move |b: StackBuilder| b.max_connections_per_source(limit),
        },
        End {
            ip: CLIENT,
            port: b,
            build: plain,
        },
        |stack, _sock| {
            // Until the second connection is accepted or refused.
            let _ = harness::wait_for(
                "the server to accept or refuse a second connection",
                Duration::from_secs(10),
                || {
                    stack.poll();
                    let e = stack.stats().endpoint;
                    e.accepted + e.refused_per_source >= 2
                },
            );
            let e = stack.stats().endpoint;
            (e.accepted, e.refused_per_source)
        },
    );
    // A refused confirm gets no answer: this connect may report success (it heard the
    // cookie) or time out; the server's counters say what happened.
    let second = stack.connect(SocketAddrV4::new(SERVER, PORT), Duration::from_secs(1));
    let end = Instant::now() + Duration::from_millis(200);
    while Instant::now() < end {
        stack.poll();
    }
    let got = server.join().unwrap();
    drop(second);
    got
}

#[test]
fn max_connections_per_source_reaches_the_endpoint() {
    let _pair = harness::one_pair_at_a_time();
    let (accepted, refused) = two_connections_from_one_source(1);
    assert!(
        accepted == 1 && refused >= 1,
        "with max_connections_per_source(1) the second connection from the same address is \
         refused (each of its confirms): accepted {accepted}, refused {refused}"
    );
    let (accepted, refused) = two_connections_from_one_source(2);
    assert_eq!(
        (accepted, refused),
        (2, 0),
        "with a limit of 2 both are accepted"
    );
}

/// A 1 MiB message to a server whose builder got `rx_budget(budget)`: whether the server
/// received it within 3 s, and the packets its connection refused.
fn one_mib_message_under_budget(budget: Option<u64>) -> (bool, u64) {
    let (a, b, _pool) = ports();
    let (server, stack, sock) = serve_and_connect(
        End {
            ip: SERVER,
            port: a,
            build: move |b: StackBuilder| match budget {
                Some(n) => b.rx_budget(n),
                None => b,
            },
        },
        End {
            ip: CLIENT,
            port: b,
            build: plain,
        },
        |_stack, sock| {
            sock.set_timeout(Some(Duration::from_secs(3)));
            let got = sock.recv().map(|m| m.len() == 1 << 20);
            (got.unwrap_or(false), sock.stats().unwrap().rx_refused)
        },
    );
    let _ = sock.send(&vec![7u8; 1 << 20]);
    let end = Instant::now() + Duration::from_secs(4);
    while Instant::now() < end && !server.is_finished() {
        stack.poll();
    }
    server.join().unwrap()
}

#[test]
fn rx_budget_reaches_the_endpoint() {
    let _pair = harness::one_pair_at_a_time();
    let (delivered, refused) = one_mib_message_under_budget(Some(64 << 10));
    assert!(
        !delivered && refused > 0,
        "a 1 MiB message over rx_budget(64 KiB) must be refused packet by packet: delivered \
         {delivered}, refused {refused}"
    );
    let (delivered, refused) = one_mib_message_under_budget(None);
    assert!(
        delivered && refused == 0,
        "the default budget takes it: delivered {delivered}, refused {refused}"
    );
}

/// 20 small messages to a server that reads none until they all arrived, its builder given
/// `max_rx_slots(slots)`: the messages copied out of their slots, and whether all 20 were
/// then read intact.
fn unread_messages_with_slots(slots: Option<usize>) -> (u64, bool) {
    let (a, b, _pool) = ports();
    let acked = Arc::new(AtomicBool::new(false));
    let seen = acked.clone();
    let (server, stack, sock) = serve_and_connect(
        End {
            ip: SERVER,
            port: a,
            build: move |b: StackBuilder| match slots {
                Some(n) => b.max_rx_slots(n),
                None => b,
            },
        },
        End {
            ip: CLIENT,
            port: b,
            build: plain,
        },
        move |stack, sock| {
            harness::wait_for(
                "the client to see its 20 messages acknowledged",
                Duration::from_secs(20),
                || {
                    stack.poll();
                    seen.load(Ordering::Relaxed)
                },
            )
            .unwrap();
            let copied = sock.stats().unwrap().rx_slots_copied;
            sock.set_timeout(Some(Duration::from_secs(3)));
            let intact = (0..20u8).all(|k| sock.recv().is_ok_and(|m| m[..] == [k; 100]));
            (copied, intact)
        },
    );
    // One at a time, each acknowledged before the next is sent: a DATA packet, so a pool
    // slot, per message (the messages of one BATCH packet would share its slot).
    for k in 0..20u8 {
        sock.send(&[k; 100]).unwrap();
        sock.flush().unwrap();
    }
    sock.flush().unwrap();
    acked.store(true, Ordering::Relaxed);
    while !server.is_finished() {
        stack.poll();
    }
    server.join().unwrap()
}

#[test]
fn max_rx_slots_reaches_the_connections() {
    let _pair = harness::one_pair_at_a_time();
    let (copied, intact) = unread_messages_with_slots(Some(4));
    assert_eq!(
        (copied, intact),
        (16, true),
        "with max_rx_slots(4), 16 of 20 unread messages are copied out of their slots"
    );
    let (copied, intact) = unread_messages_with_slots(None);
    assert_eq!((copied, intact), (0, true), "the default (256) copies none");
}

/// A socket path of this test's own.
fn socket_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("bypass-knobs-{what}-{}.sock", std::process::id()))
}

/// A memif server stack built with `server` and a client stack on the same socket: whether
/// the server's link was up once the client's `build` returned (`Err`: why not, from
/// `Stack::memif_last_error`) and the client's `build` result, as errors' texts.
fn memif_pair(
    what: &str,
    server: impl FnOnce(StackBuilder) -> StackBuilder + Send + 'static,
) -> (Result<(), String>, Result<(), String>) {
    memif_pair_with(what, server, |b| b)
}

/// [`memif_pair`] with the client's builder set by `client` too.
fn memif_pair_with(
    what: &str,
    server: impl FnOnce(StackBuilder) -> StackBuilder + Send + 'static,
    client: impl FnOnce(StackBuilder) -> StackBuilder,
) -> (Result<(), String>, Result<(), String>) {
    let path = socket_path(what);
    let _ = std::fs::remove_file(&path);
    let backend = |role| Backend::Memif {
        socket: path.clone(),
        role,
        id: 0,
    };
    let sb = backend(Role::Server);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let srv = thread::spawn(move || {
        // A server listens: its build does not wait for a client.
        let stack = server(Stack::builder(sb, SERVER))
            .build()
            .map_err(|e| e.to_string())?;
        // Keep the stack (and its link) until the client's build is over.
        let _ = done_rx.recv();
        if stack.link_up() {
            Ok(())
        } else {
            Err(format!(
                "link down; last memif error: {:?}",
                stack.memif_last_error(0).map(|e| e.to_string())
            ))
        }
    });
    harness::settle("the memif server's socket to appear", || path.exists());
    let client = client(Stack::builder(backend(Role::Client), CLIENT))
        .link_timeout(Duration::from_secs(2))
        .build();
    let _ = done_tx.send(());
    let server = srv.join().unwrap();
    (server, client.map(drop).map_err(|e| e.to_string()))
}

#[test]
fn memif_allowed_uid_reaches_the_memif_server() {
    let _pair = harness::one_pair_at_a_time();
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    let (server, client) = memif_pair("uid-other", move |b| b.memif_allowed_uid(me + 1));
    let client = client.expect_err("a client of another user must be refused");
    assert!(
        client.contains("uid"),
        "the client's error should say the peer uid was refused: {client}"
    );
    assert!(server.is_err(), "the server saw no link: {server:?}");
    let (server, client) = memif_pair("uid-me", move |b| b.memif_allowed_uid(me));
    assert_eq!(
        (server, client),
        (Ok(()), Ok(())),
        "a client of the allowed user connects"
    );
}

#[test]
fn memif_secret_reaches_both_ends() {
    let _pair = harness::one_pair_at_a_time();
    let (server, client) = memif_pair("secret-none", |b| b.memif_secret("s3cret"));
    let client = client.expect_err("a client without the secret must be refused");
    assert!(
        client.contains("secret"),
        "the client's error should say the secret was refused: {client}"
    );
    assert!(server.is_err(), "the server saw no link: {server:?}");
    let (server, client) = memif_pair_with(
        "secret-wrong",
        |b| b.memif_secret("s3cret"),
        |b| b.memif_secret("guess"),
    );
    assert!(client.is_err() && server.is_err(), "{client:?} {server:?}");
    let (server, client) = memif_pair_with(
        "secret-same",
        |b| b.memif_secret("s3cret"),
        |b| b.memif_secret("s3cret"),
    );
    assert_eq!(
        (server, client),
        (Ok(()), Ok(())),
        "the same secret connects"
    );
}

/// `arp(ArpConfig { pending_dests, .. })`: connections to on-link addresses nobody answers
/// for wait on ARP; with room for one waiting destination the others are counted in
/// `arp_pending_full`, with the default's 16 none is.
#[test]
fn arp_limits_reach_the_runtime() {
    let pending_full = |arp: Option<ArpConfig>| {
        let (a, _b, _pool) = ports();
        let mut b = Stack::builder(Backend::Port(Box::new(a)), CLIENT)
            .no_accept()
            .link_timeout(Duration::from_millis(100));
        if let Some(c) = arp {
            b = b.arp(c);
        }
        let stack = b.build().unwrap();
        let socks: Vec<_> = (10..14)
            .map(|n| {
                stack
                    .connect_start(SocketAddrV4::new(Ipv4Addr::new(10, 97, 0, n), PORT))
                    .unwrap()
            })
            .collect();
        for _ in 0..100 {
            stack.poll();
        }
        drop(socks);
        stack.stats().net.arp_pending_full
    };
    assert_eq!(pending_full(None), 0, "16 destinations may wait by default");
    let one = ArpConfig {
        pending_dests: 1,
        ..ArpConfig::default()
    };
    assert!(
        pending_full(Some(one)) >= 3,
        "three of four destinations found no room"
    );
}

#[test]
fn memif_max_peer_region_bytes_reaches_the_memif_server() {
    let _pair = harness::one_pair_at_a_time();
    // The client's region at the stack's MTU (9000) holds 3072 buffers of 9088 bytes.
    let (server, client) = memif_pair("region-small", |b| b.memif_max_peer_region_bytes(4 << 20));
    let server = server.expect_err("a client region over 4 MiB must be refused");
    assert!(
        server.contains("region"),
        "the server's error should name the refused region: {server}"
    );
    assert!(client.is_err(), "the client saw no link: {client:?}");
    let (server, client) = memif_pair("region-big", |b| b.memif_max_peer_region_bytes(256 << 20));
    assert_eq!((server, client), (Ok(()), Ok(())), "256 MiB lets it in");
}

/// `memif_copy_rx` on a client stack: messages of one segment and of many arrive intact and
/// stay intact while the client holds them all, and the one-packet ones it holds lie outside
/// the region the server writes (in its private receive pool); without the setting they lie
/// in that region (zero copy). The echo goes back out of the shared region (a foreign buffer
/// is copied into it).
fn copy_rx_echo(copy_rx: bool) {
    let path = socket_path(&format!("copy-rx-{copy_rx}"));
    let _ = std::fs::remove_file(&path);
    let backend = |role| Backend::Memif {
        socket: path.clone(),
        role,
        id: 0,
    };
    let sb = backend(Role::Server);
    let sizes = [1usize, 100, 1400, 20_000, 3];
    let srv = thread::spawn(move || {
        let stack = Stack::builder(sb, SERVER).build().unwrap();
        let sock = stack.listen().accept(Duration::from_secs(20)).unwrap();
        for _ in 0..sizes.len() {
            let m = sock.recv().unwrap();
            sock.send_bytes(m).unwrap();
        }
        assert_eq!(sock.recv().unwrap_err(), Error::Closed);
    });
    harness::settle("the memif server's socket to appear", || path.exists());
    let stack = Stack::builder(backend(Role::Client), CLIENT)
        .memif_copy_rx(copy_rx)
        .link_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let sock = stack
        .connect(SocketAddrV4::new(SERVER, PORT), Duration::from_secs(10))
        .unwrap();
    let msg = |i: usize, n: usize| -> Vec<u8> { (0..n).map(|j| (i * 31 + j) as u8).collect() };
    let mut held = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        sock.send_bytes(msg(i, n).into()).unwrap();
        held.push(sock.recv().unwrap());
    }
    let shared = stack.memif_pool().expect("a memif stack's pool");
    let (lo, len) = (shared.region().as_ptr() as usize, shared.region().len());
    for (i, (m, &n)) in held.iter().zip(&sizes).enumerate() {
        assert_eq!(&m[..], &msg(i, n)[..], "echo {i} of {n} bytes");
        if n <= 1400 {
            let p = m.as_ptr() as usize;
            assert_eq!(
                (lo..lo + len).contains(&p),
                !copy_rx,
                "echo {i} of {n} bytes: in the server-writable region (copy_rx {copy_rx})"
            );
        }
    }
    drop(held);
    sock.close().unwrap();
    srv.join().unwrap();
    assert_eq!(stack.stats().port.rx_no_buffer, 0);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn memif_copy_rx_client_stack_exchanges_messages() {
    let _pair = harness::one_pair_at_a_time();
    copy_rx_echo(true);
    copy_rx_echo(false);
}

#[test]
fn nonsensical_limits_are_refused_by_build() {
    let port = || {
        let (a, _b, _pool) = ports();
        Backend::Port(Box::new(a))
    };
    let client = || Backend::Memif {
        socket: socket_path("never-opened"),
        role: Role::Client,
        id: 0,
    };
    type Setting = fn(StackBuilder) -> StackBuilder;
    let cases: Vec<(&str, Backend, Setting)> = vec![
        ("max_message", port(), |b| b.max_message(0)),
        ("max_connections", port(), |b| b.max_connections(0)),
        ("max_connections_per_source", port(), |b| {
            b.max_connections_per_source(0)
        }),
        ("rx_budget", port(), |b| b.rx_budget(0)),
        ("memif_allowed_uid", port(), |b| b.memif_allowed_uid(0)),
        ("memif_require_sealed_regions", client(), |b| {
            b.memif_require_sealed_regions(true)
        }),
        ("memif_max_peer_region_bytes", client(), |b| {
            b.memif_max_peer_region_bytes(64 << 20)
        }),
        ("memif_handshake_timeout", client(), |b| {
            b.memif_handshake_timeout(Duration::ZERO)
        }),
        ("memif_copy_rx", port(), |b| b.memif_copy_rx(true)),
        ("memif_wedge_timeout", port(), |b| {
            b.memif_wedge_timeout(Duration::from_secs(1))
        }),
        ("memif_wedge_timeout", client(), |b| {
            b.memif_wedge_timeout(Duration::ZERO)
        }),
        ("memif_secret", port(), |b| b.memif_secret("s")),
        ("memif_secret", client(), |b| b.memif_secret("x".repeat(24))),
        ("stateless_queue", port(), |b| b.stateless_queue(0)),
        ("arp", port(), |b| {
            b.arp(ArpConfig {
                pending_dests: 0,
                ..ArpConfig::default()
            })
        }),
        ("arp", port(), |b| {
            b.arp(ArpConfig {
                retry_ns: 0,
                ..ArpConfig::default()
            })
        }),
        ("memif_peers", client(), |b| b.memif_peers(2)),
        ("memif_peers", port(), |b| b.memif_peers(2)),
    ];
    for (name, backend, set) in cases {
        match set(Stack::builder(backend, CLIENT)).build() {
            Err(Error::Config { what, fix, .. }) => {
                assert_eq!(what, name);
                assert!(!fix.is_empty(), "{name}: the error says what to do");
            }
            other => panic!("{name}: expected Error::Config, got {other:?}"),
        }
    }
    assert!(
        !socket_path("never-opened").exists(),
        "nothing was opened before the check"
    );
    // What a client may set, and a client-only stack needs no per-source limit.
    let (a, _b, _pool) = ports();
    let r = Stack::builder(Backend::Port(Box::new(a)), CLIENT)
        .max_connections_per_source(0)
        .no_accept()
        .link_timeout(Duration::from_millis(1))
        .build();
    assert!(!matches!(r, Err(Error::Config { .. })), "{r:?}");
}
