//! One memif server stack, many client processes (here: threads, each with its own client
//! `Stack`, interface id and address): the server listens before any client, serves N
//! interfaces through one poll loop, outlives its clients, and says what is wrong when a
//! client takes a busy interface or a second server opens its socket.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::harness;
use crate::socket_pair::PORT;

use bypass::mem::HugePages;
use bypass::pmd::memif::Role;
use bypass::socket::{Backend, Socket, Stack, StackBuilder};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// Message sizes each client sends: one packet, a jumbo frame, several packets, 64 KiB.
const SIZES: [usize; 4] = [64, 1500, 9000, 64 << 10];
/// Generous for a loaded 2-core machine with dozens of spinning threads.
const LONG: Duration = Duration::from_secs(120);

fn socket_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("bypass-many-{what}-{}.sock", std::process::id()))
}

/// Client `k`'s address: 10.96.1.0/16 onwards, one each.
fn client_ip(k: u32) -> Ipv4Addr {
    let h = 256 + k + 2;
    Ipv4Addr::new(10, 96, (h >> 8) as u8, h as u8)
}

/// Small memif rings and pools, 4 KiB pages: 256 interfaces fit in memory and leave the
/// machine's hugepages to others.
fn small(b: StackBuilder) -> StackBuilder {
    b.memif_ring(5)
        .memif_extra_buffers(32)
        .memif_hugepages(HugePages::Never)
        .prefix_len(16)
}

/// Message `j` of client `k`, `len` bytes: the two numbers, then a pattern of both.
fn message(k: u32, j: u32, len: usize) -> Vec<u8> {
    let mut m: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(31).wrapping_add(k * 7 + j * 13) as u8)
        .collect();
    m[..4].copy_from_slice(&k.to_le_bytes());
    m[4..8].copy_from_slice(&j.to_le_bytes());
    m
}

/// The client and message numbers of `m`, if every byte is what [`message`] wrote.
fn check(m: &[u8]) -> Result<(u32, u32), String> {
    if m.len() < 8 {
        return Err(format!("a message of {} bytes", m.len()));
    }
    let k = u32::from_le_bytes(m[..4].try_into().unwrap());
    let j = u32::from_le_bytes(m[4..8].try_into().unwrap());
    let want = message(k, j, m.len());
    match m.iter().zip(&want).position(|(a, b)| a != b) {
        None if SIZES.get(j as usize) == Some(&m.len()) => Ok((k, j)),
        None => Err(format!("client {k} message {j}: {} bytes", m.len())),
        Some(i) => Err(format!("client {k} message {j}: byte {i} differs")),
    }
}

/// What an echo server saw.
#[derive(Debug, Default)]
struct Served {
    /// Messages echoed, per client address.
    per_peer: HashMap<Ipv4Addr, usize>,
    /// (client, message) pairs received, each once.
    messages: HashSet<(u32, u32)>,
    /// Most connections open at once.
    max_open: usize,
    /// The server's fan-in counters at the end.
    fanin: Option<bypass::pmd::fanin::FanInStats>,
    errors: Vec<String>,
}

/// Serve on `stack` until `stop` is set and every connection is gone (or [`LONG`] passes
/// after `stop`): accept, check each message, echo it back. One thread, one poll loop.
fn serve_echo(stack: Stack, stop: Arc<AtomicBool>) -> Served {
    let listener = stack.listen();
    let mut socks: Vec<(Socket, Ipv4Addr)> = Vec::new();
    let mut s = Served::default();
    let mut stopping: Option<Instant> = None;
    loop {
        let mut busy = stack.poll();
        while let Some(sock) = listener.try_accept() {
            let SocketAddr::V4(a) = sock.peer_addr() else {
                unreachable!("IPv4 only")
            };
            socks.push((sock, *a.ip()));
            busy = true;
        }
        s.max_open = s.max_open.max(socks.len());
        socks.retain(|(sock, ip)| match sock.try_recv() {
            Ok(Some(m)) => {
                busy = true;
                match check(&m) {
                    Ok(key) => {
                        if !s.messages.insert(key) {
                            s.errors.push(format!("{key:?} received twice"));
                        }
                        *s.per_peer.entry(*ip).or_default() += 1;
                    }
                    Err(e) => s.errors.push(e),
                }
                if let Err(e) = sock.send_bytes(m) {
                    s.errors.push(format!("echo to {ip}: {e}"));
                }
                true
            }
            Ok(None) => true,
            // The client closed (or went away): done with it.
            Err(_) => false,
        });
        if stop.load(Ordering::Relaxed) {
            let t = *stopping.get_or_insert_with(Instant::now);
            if socks.is_empty() || t.elapsed() > LONG {
                s.fanin = stack.fanin_stats();
                return s;
            }
        }
        if !busy {
            thread::yield_now();
        }
    }
}

/// Poll `stack` (yielding the core between polls: dozens of threads share two cores) until
/// `cond` holds; an error naming `what` after [`LONG`].
fn poll_until(stack: &Stack, what: &str, mut cond: impl FnMut() -> bool) -> Result<(), String> {
    let end = Instant::now() + LONG;
    while !cond() {
        if Instant::now() > end {
            return Err(format!("waited {LONG:?} for {what}"));
        }
        if !stack.poll() {
            thread::yield_now();
        }
    }
    Ok(())
}

/// Client `k` on interface `id`: connect, send every size, check every echo, close.
/// `wave`: wait until that many clients (counted in `connected`) are connected at once.
fn client(path: &Path, k: u32, id: u32, wave: Option<(&AtomicUsize, usize)>) -> Result<(), String> {
    let stack = small(Stack::builder(
        Backend::Memif {
            socket: path.to_path_buf(),
            role: Role::Client,
            id,
        },
        client_ip(k),
    ))
    .no_accept()
    .link_timeout(LONG)
    .build()
    .map_err(|e| format!("client {k}: build: {e}"))?;
    if stack.memif_pool().is_none() {
        return Err(format!("client {k}: no memif pool on interface {id}"));
    }
    let sock = stack
        .connect(SocketAddrV4::new(SERVER, PORT), LONG)
        .map_err(|e| format!("client {k}: connect: {e}"))?;
    if let Some((connected, n)) = wave {
        connected.fetch_add(1, Ordering::SeqCst);
        poll_until(&stack, &format!("{n} clients connected at once"), || {
            connected.load(Ordering::SeqCst) >= n
        })
        .map_err(|e| format!("client {k}: {e}"))?;
    }
    for (j, &len) in SIZES.iter().enumerate() {
        sock.send(&message(k, j as u32, len))
            .map_err(|e| format!("client {k}: send {j}: {e}"))?;
    }
    // Echoes come back in completion order: check each once, whatever the order.
    let mut back = HashSet::new();
    let mut err = None;
    poll_until(
        &stack,
        &format!("client {k}'s {} echoes", SIZES.len()),
        || {
            match sock.try_recv() {
                Ok(Some(m)) => match check(&m) {
                    Ok((kk, j)) if kk == k && back.insert(j) => {}
                    Ok(other) => err = Some(format!("echo {other:?} is not ours or twice")),
                    Err(e) => err = Some(e),
                },
                Ok(None) => {}
                Err(e) => err = Some(format!("recv: {e}")),
            }
            err.is_some() || back.len() == SIZES.len()
        },
    )
    .map_err(|e| format!("client {k}: {e}"))?;
    if let Some(e) = err {
        return Err(format!("client {k}: {e}"));
    }
    sock.close()
        .map_err(|e| format!("client {k}: close: {e}"))?;
    Ok(())
}

/// A server with `peers` interfaces on `path`, serving on a thread until `stop`.
fn start_server(
    path: &Path,
    peers: u32,
    stop: &Arc<AtomicBool>,
) -> (thread::JoinHandle<Served>, Duration) {
    let _ = std::fs::remove_file(path);
    let (tx, rx) = mpsc::channel();
    let (path, stop) = (path.to_path_buf(), stop.clone());
    let h = thread::spawn(move || {
        let t0 = Instant::now();
        let stack = small(Stack::builder(
            Backend::Memif {
                socket: path,
                role: Role::Server,
                id: 0,
            },
            SERVER,
        ))
        .memif_peers(peers)
        // Long: a build that waited for a client would show in its time.
        .link_timeout(LONG)
        .build()
        .expect("server stack");
        tx.send(t0.elapsed()).unwrap();
        serve_echo(stack, stop)
    });
    let took = rx.recv_timeout(LONG).expect("the server's build returned");
    (h, took)
}

#[test]
fn one_server_stack_serves_256_memif_clients_32_at_once() {
    let _pair = harness::one_pair_at_a_time();
    const N: u32 = 256;
    const WAVE: u32 = 32;
    let path = socket_path("256");
    let stop = Arc::new(AtomicBool::new(false));
    let (server, _) = start_server(&path, N, &stop);
    let t0 = Instant::now();
    for wave in 0..N / WAVE {
        let connected = AtomicUsize::new(0);
        let results: Vec<Result<(), String>> = thread::scope(|sc| {
            let hs: Vec<_> = (0..WAVE)
                .map(|i| {
                    let k = wave * WAVE + i;
                    let (path, connected) = (&path, &connected);
                    sc.spawn(move || client(path, k, k, Some((connected, WAVE as usize))))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert!(errors.is_empty(), "wave {wave}: {errors:#?}");
        assert_eq!(connected.load(Ordering::SeqCst), WAVE as usize);
    }
    let elapsed = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    let s = server.join().unwrap();
    eprintln!(
        "256 memif clients in waves of {WAVE}: {:.1} s, at most {} connections open at once",
        elapsed.as_secs_f64(),
        s.max_open
    );
    assert!(s.errors.is_empty(), "the server saw: {:#?}", s.errors);
    assert_eq!(
        s.per_peer.len(),
        N as usize,
        "distinct client addresses served"
    );
    assert!(
        s.per_peer.values().all(|&n| n == SIZES.len()),
        "every client's {} messages once each: {:?}",
        SIZES.len(),
        s.per_peer
            .iter()
            .filter(|(_, &n)| n != SIZES.len())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        s.messages.len(),
        N as usize * SIZES.len(),
        "every message once"
    );
    let f = s
        .fanin
        .expect("a server with 256 peers serves them through a fan-in");
    assert!(
        f.learned >= N as u64,
        "the fan-in learned each client's MAC behind its interface: {f:?}"
    );
    assert_eq!(f.moved, 0, "no two clients share a MAC: {f:?}");
    assert!(
        s.max_open >= WAVE as usize,
        "{WAVE} connections open at once on the server (most seen: {})",
        s.max_open
    );
}

#[test]
fn a_memif_server_listens_before_any_client_and_serves_one_that_comes_later() {
    let _pair = harness::one_pair_at_a_time();
    let path = socket_path("late");
    let stop = Arc::new(AtomicBool::new(false));
    let (server, took) = start_server(&path, 1, &stop);
    assert!(
        took < LONG / 2,
        "the server's build returned without a client (it took {took:?}; link_timeout {LONG:?})"
    );
    assert!(path.exists(), "the server listens on {}", path.display());
    thread::sleep(Duration::from_secs(2));
    client(&path, 0, 0, None).unwrap();
    stop.store(true, Ordering::Relaxed);
    let s = server.join().unwrap();
    assert!(s.errors.is_empty(), "{:#?}", s.errors);
    assert_eq!(s.messages.len(), SIZES.len(), "the late client's messages");
}

#[test]
fn a_client_leaves_and_another_takes_its_interface_id() {
    let _pair = harness::one_pair_at_a_time();
    let path = socket_path("reuse");
    let stop = Arc::new(AtomicBool::new(false));
    let (server, _) = start_server(&path, 2, &stop);
    // Client 0 on interface 1, then client 1 on the same interface once 0 is gone.
    client(&path, 0, 1, None).unwrap();
    client(&path, 1, 1, None).unwrap();
    stop.store(true, Ordering::Relaxed);
    let s = server.join().unwrap();
    assert!(s.errors.is_empty(), "{:#?}", s.errors);
    let peers: HashSet<Ipv4Addr> = s.per_peer.keys().copied().collect();
    assert_eq!(
        peers,
        HashSet::from([client_ip(0), client_ip(1)]),
        "both clients served, one after the other, on interface 1"
    );
    assert_eq!(s.messages.len(), 2 * SIZES.len());
}

#[test]
fn a_client_on_a_busy_interface_is_told_so_at_once() {
    let _pair = harness::one_pair_at_a_time();
    let path = socket_path("busy");
    let stop = Arc::new(AtomicBool::new(false));
    let (server, _) = start_server(&path, 1, &stop);
    let first = small(Stack::builder(
        Backend::Memif {
            socket: path.clone(),
            role: Role::Client,
            id: 0,
        },
        client_ip(0),
    ))
    .no_accept()
    .link_timeout(LONG)
    .build()
    .expect("the first client");
    let t0 = Instant::now();
    let second = small(Stack::builder(
        Backend::Memif {
            socket: path.clone(),
            role: Role::Client,
            id: 0,
        },
        client_ip(1),
    ))
    .no_accept()
    .link_timeout(LONG)
    .build();
    let took = t0.elapsed();
    let e = second.expect_err("interface 0 is taken").to_string();
    assert!(
        e.contains("memif interface 0 on")
            && e.contains("serving another client")
            && e.contains("use another interface id"),
        "the error names the busy interface and what to do: {e}"
    );
    assert!(
        took < LONG / 2,
        "told at the refusal, not after the link timeout ({LONG:?}): took {took:?}"
    );
    drop(first);
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
}

#[test]
fn a_second_server_on_the_same_socket_in_one_process_is_told_so() {
    let path = socket_path("twice");
    let _ = std::fs::remove_file(&path);
    let server = |ip| {
        Stack::builder(
            Backend::Memif {
                socket: path.clone(),
                role: Role::Server,
                id: 0,
            },
            ip,
        )
        .memif_hugepages(HugePages::Never)
        .build()
    };
    let first = server(SERVER).expect("the first server");
    let e = server(client_ip(0))
        .expect_err("the socket is served")
        .to_string();
    assert!(
        e.contains("this process already serves memif socket")
            && e.contains(&path.display().to_string())
            && e.contains("memif_peers"),
        "the error says this process serves the socket, and what to do: {e}"
    );
    drop(first);
    // Released with the first stack: a server may open it again.
    let again = server(SERVER).expect("a server after the first one closed");
    drop(again);
}
