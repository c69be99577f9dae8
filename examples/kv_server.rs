//! A small key-value store over memif: many client processes, one poll loop per core, values
//! kept and served without a copy.
//!
//! ```text
//! cargo run --release --example kv_server -- /tmp/kv.sock --clients 4 [--cores 2 [--shard-by-key]]
//! cargo run --release --example kv_client -- /tmp/kv.sock --id 0 --verify [--cores 2]
//! cargo run --release --example kv_client -- /tmp/kv.sock --id 1 --verify [--cores 2]
//! ```
//!
//! Clients that read each other's keys (the server sharded by key; every client PUTs its
//! keys, then GETs those of all `--clients 2`):
//!
//! ```text
//! cargo run --release --example kv_server -- /tmp/kv.sock --clients 2 --cores 2 --shard-by-key
//! cargo run --release --example kv_client -- /tmp/kv.sock --id 0 --cores 2 --key-space shared --clients 2 --verify
//! cargo run --release --example kv_client -- /tmp/kv.sock --id 1 --cores 2 --key-space shared --clients 2 --verify
//! ```
//!
//! # Protocol
//!
//! One request is one message, one response is one message (the transport keeps message
//! boundaries, so there is no framing of our own). Integers are little-endian.
//!
//! ```text
//! PUT request:  'P' | key_len: u16 | key | 0x00 | value       (the 0x00: see below)
//! GET request:  'G' | key_len: u16 | key
//! response:     status: u8 | body
//!   status 0 OK         PUT: no body; GET: the value
//!   status 1 NOT_FOUND  GET of a key never PUT (on this core, unless --shard-by-key)
//!   status 2 BAD        body: what was wrong, as text
//! ```
//!
//! Zero copy: the server keeps the PUT message itself (`Bytes`, a view of the packet buffer
//! it arrived in, or of the one buffer a multi-packet message was placed in) and answers a
//! GET with `send_bytes` of a slice of it: the byte before the value is the PUT's `0x00`,
//! which is exactly the GET response's OK status, so the response is `[0x00] ++ value`
//! without copying a byte. The client sends each request as one `Bytes` (`send_bytes`, no
//! copy) and compares the response it receives in place.
//!
//! # Serving
//!
//! `--clients N`: N client processes at once. The server stack serves them through one memif
//! socket (`StackBuilder::memif_peers`): client `--id I` takes interface `I`. All its
//! connections are served by one thread with `Stack::poll_ready`.
//!
//! `--cores K`: K stacks on K threads (with K > 1, pinned to cores 0..K), shared nothing: core `c`
//! serves the memif socket `SOCKET_PATH.c`, and client `I` goes to core `I % K`, on its
//! interface `I / K`. Each core holds its own shard of the store: a client sees the keys
//! PUT through its core (clients here use keys of their own, so that is all of them).
//!
//! `--shard-by-key` (with `--cores K`): one store across the cores instead, each key owned by
//! core `fnv1a64(key) % K`. A request that arrives on another core is handed to the owner
//! through a lock-free queue (`bypass::runtime::handoff`: a mesh of single-producer
//! single-consumer rings, one each way between two cores); the owner executes it and hands
//! the response back, which the receiving core sends on the client's connection. The request
//! and the response cross as `Bytes` (no copy: the PUT the owner keeps is still a view of the
//! packet buffer it arrived in on the other core, and a GET's answer a slice of it). Cores
//! never wait on each other: a hand-off that finds its queue full waits in a local backlog
//! while the core goes on polling its stack. Per connection at most one request is handed
//! off at a time, and the next request is read only once its response was sent, so
//! responses keep the order of the requests. While hand-offs flow a core polls without
//! sleeping (yielding its CPU on a turn with nothing to do, for the clients that may share
//! it); idle, it sleeps, and a core that hands something over rings the receiving core's
//! `Doorbell` (`Stack::doorbell`), which ends that sleep at once. (`--no-doorbell`: an idle
//! core sleeps at most `SHARD_NAP` at a time instead, which bounds the wait of a request
//! handed to it; kept to measure the difference.) With `--exit-after`, a core
//! that served its share of the connections keeps serving hand-offs until every core has;
//! each core prints how many requests it handed off and how many it served for the others.
//!
//! The server sleeps while idle (the default `IdlePoll::Sleep`): a store nobody talks to
//! does not burn its cores. Values kept for long hold packet buffers; when the receive pool
//! runs low the stack copies newly received messages out (`StackBuilder::rx_pool_reserve`),
//! so keeping every value is safe. `--exit-after M` exits once M connections have closed,
//! printing each core's count of connections and operations.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bypass::bytes::Bytes;
use bypass::mem::HugePages;
use bypass::pmd::memif::Role;
use bypass::runtime::handoff::{self, Full, Shard};
use bypass::socket::{Backend, Doorbell, Error, Socket, Stack};

const USAGE: &str =
    "usage: kv_server SOCKET_PATH [--clients N] [--cores K] [--shard-by-key] [--exit-after M]

  SOCKET_PATH      the memif control socket to create (with --cores K > 1: SOCKET_PATH.0 ..
                   SOCKET_PATH.K-1, one per core)
  --clients N      client processes served at once (default 4); client --id I takes
                   interface I / K on core I % K
  --cores K        server stacks, one thread each (default 1)
  --shard-by-key   one store over the cores: a key belongs to core fnv1a64(key) % K, and a
                   request arriving on another core is handed to it and answered through it
  --exit-after M   exit after M client connections have closed (default: serve forever)
  --no-doorbell    with --shard-by-key: do not ring the receiving core after a hand-off;
                   idle cores nap 1 ms at a time instead (to compare)

The protocol is described at the top of examples/kv_server.rs.";

/// The status byte of a response.
pub const OK: u8 = 0;
pub const NOT_FOUND: u8 = 1;
pub const BAD: u8 = 2;

/// With `--shard-by-key --no-doorbell`: the longest an idle core sleeps in one poll, which
/// bounds how long a request handed to it waits.
const SHARD_NAP: Duration = Duration::from_millis(1);
/// With `--shard-by-key`: the longest an idle core waits in one poll (a doorbell ends it).
const SHARD_WAIT: Duration = Duration::from_millis(50);
/// With `--shard-by-key`: after a hand-off, a core polls without sleeping this long.
const SHARD_SPIN: Duration = Duration::from_millis(2);

fn main() {
    common::init_log();
    let mut socket = None;
    let (mut clients, mut cores, mut exit_after) = (4u32, 1u32, None);
    let mut shard_by_key = false;
    let mut doorbell = true;
    let mut args = common::args(USAGE).into_iter();
    while let Some(a) = args.next() {
        let mut num = |name: &str| -> u32 {
            match args.next().map(|v| v.parse::<u32>()) {
                Some(Ok(v)) if v > 0 => v,
                _ => usage(&format!("{name} takes a number of at least 1")),
            }
        };
        match a.as_str() {
            "--clients" => clients = num("--clients"),
            "--cores" => cores = num("--cores"),
            "--shard-by-key" => shard_by_key = true,
            "--no-doorbell" => doorbell = false,
            "--exit-after" => exit_after = Some(num("--exit-after") as u64),
            _ if a.starts_with('-') => usage(&format!("unknown option {a}")),
            _ if socket.is_none() => socket = Some(PathBuf::from(a)),
            _ => usage("one SOCKET_PATH only"),
        }
    }
    let Some(socket) = socket else {
        usage("give the memif socket path to serve, e.g. /tmp/kv.sock")
    };
    if clients < cores {
        usage("--clients must be at least --cores (each core serves at least one client)");
    }
    // Each core serves the clients I with I % K == c: ceil(N / K) interfaces.
    let per_core = clients.div_ceil(cores);
    // With --shard-by-key: the queues between the cores (room for every client's one
    // request in flight, and its response), and how many cores have served their share.
    let mut shards: Vec<Option<Shard<Handoff>>> = if shard_by_key && cores > 1 {
        handoff::mesh(cores as usize, 2 * clients as usize)
            .into_iter()
            .map(Some)
            .collect()
    } else {
        (0..cores).map(|_| None).collect()
    };
    let done = Arc::new(AtomicU32::new(0));
    // Each core's doorbell, set once its stack is built (a core rings the receiving core's
    // after a hand-off; one not built yet polls anyway).
    let bells: Arc<Vec<OnceLock<Doorbell>>> =
        Arc::new((0..cores).map(|_| OnceLock::new()).collect());
    let threads: Vec<_> = (0..cores)
        .map(|c| {
            let path = common::kv_core_socket(&socket, c, cores);
            // Spread the end condition: core c stops after its share of the connections.
            let quota =
                exit_after.map(|m| m / cores as u64 + u64::from((c as u64) < m % cores as u64));
            let mesh = shards[c as usize].take().map(|shard| Mesh {
                shard,
                done: done.clone(),
                bells: doorbell.then(|| bells.clone()),
            });
            std::thread::spawn(move || serve_core(c, &path, per_core, quota, cores > 1, mesh))
        })
        .collect();
    let mut failed = false;
    let mut total = Served::default();
    for (c, t) in threads.into_iter().enumerate() {
        match t.join() {
            Ok(Ok(s)) => {
                println!(
                    "kv_server: core {c}: {} connections, {} PUTs, {} GETs, {} keys held, {} values copied out of a low pool",
                    s.conns, s.puts, s.gets, s.keys, s.pool_copies
                );
                if shard_by_key {
                    println!(
                        "kv_server: core {c}: {} requests handed off to other cores, {} served for other cores, {} hand-offs waited in the backlog",
                        s.handed_off, s.served_for_others, s.backlogged
                    );
                }
                total.conns += s.conns;
                total.puts += s.puts;
                total.gets += s.gets;
            }
            Ok(Err(e)) => {
                eprintln!("kv_server: core {c}: {e}");
                failed = true;
            }
            Err(_) => {
                eprintln!("kv_server: core {c}: the thread panicked");
                failed = true;
            }
        }
    }
    println!(
        "kv_server: {} connections served on {cores} cores, {} PUTs, {} GETs",
        total.conns, total.puts, total.gets
    );
    if failed {
        std::process::exit(1);
    }
}

fn usage(why: &str) -> ! {
    eprintln!("kv_server: {why}\n{USAGE}");
    std::process::exit(2);
}

/// What one core did.
#[derive(Default)]
struct Served {
    conns: u64,
    puts: u64,
    gets: u64,
    keys: usize,
    pool_copies: u64,
    /// Requests received here and handed to the core owning their key.
    handed_off: u64,
    /// Requests executed here for other cores.
    served_for_others: u64,
    /// Hand-offs that found their queue full and waited in the local backlog.
    backlogged: u64,
}

/// What crosses between cores with `--shard-by-key`; the peer core is the queue's.
enum Handoff {
    /// A request for a key the receiving core owns, from the sender's connection `conn`.
    Request { conn: u64, req: Bytes },
    /// The response to a request handed over, for the receiving core's connection `conn`.
    Response { conn: u64, resp: Bytes },
}

/// One core's side of the store's sharding by key.
struct Mesh {
    shard: Shard<Handoff>,
    /// Cores that served their share of the connections (they stop when all have).
    done: Arc<AtomicU32>,
    /// Every core's doorbell (`None`: `--no-doorbell`).
    bells: Option<Arc<Vec<OnceLock<Doorbell>>>>,
}

/// A connection the core serves.
struct Conn {
    /// Unique on this core: a response handed back names it.
    id: u64,
    sock: Socket,
    /// A request of this connection is at another core: read the next only after its
    /// response was sent (responses keep the order of requests).
    waiting: bool,
}

/// The core owning `key` among `cores` (FNV-1a: the same on every core and every run).
fn owner(key: &[u8], cores: usize) -> usize {
    let h = key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (h % cores as u64) as usize
}

/// The key of a well-formed request (`None`: the request is served where it arrived, which
/// answers BAD).
fn request_key(req: &[u8]) -> Option<&[u8]> {
    let klen = u16::from_le_bytes([*req.get(1)?, *req.get(2)?]) as usize;
    req.get(3..3usize.checked_add(klen)?)
}

/// Serve `peers` clients on memif socket `path` until `quota` connections have closed.
fn serve_core(
    c: u32,
    path: &Path,
    peers: u32,
    quota: Option<u64>,
    pin: bool,
    mut mesh: Option<Mesh>,
) -> Result<Served, Error> {
    // A socket file left by a server that was killed would make the bind fail.
    let _ = std::fs::remove_file(path);
    let mut b = Stack::builder(
        Backend::Memif {
            socket: path.to_path_buf(),
            role: Role::Server,
            id: 0,
        },
        common::kv_server_ip(c),
    );
    if pin {
        // One core each: shared nothing.
        b = b.pin_core(c as usize);
    }
    let stack = b
        .prefix_len(16)
        .memif_peers(peers)
        // Shorter rings than the default: the server's packet memory is `peers` times one
        // interface's (see `memif_peers`).
        .memif_ring(8)
        .memif_extra_buffers(512)
        .memif_hugepages(HugePages::Prefer)
        .build()?;
    println!(
        "kv_server: core {c}: {} serving {peers} clients over memif {}",
        common::kv_server_ip(c),
        path.display()
    );
    if let Some(bells) = mesh.as_ref().and_then(|m| m.bells.as_ref()) {
        let _ = bells[c as usize].set(stack.doorbell()?);
    }
    let listener = stack.listen();
    let mut conns: Vec<Conn> = Vec::new();
    let mut next_id = 0u64;
    // The store: key -> the PUT message, and where its value starts (after the 0x00).
    let mut store: HashMap<Bytes, (Bytes, usize)> = HashMap::new();
    let mut served = Served::default();
    let mut closed = 0u64;
    let mut ready = Vec::new();
    let mut gone = Vec::new();
    // Hand-offs to send at the end of this turn, and those whose queue was full: (core,
    // message, whether it already waited a turn).
    let mut backlog: Vec<(usize, Handoff, bool)> = Vec::new();
    let mut retry: Vec<(usize, Handoff, bool)> = Vec::new();
    let mut spin_until = Instant::now();
    let mut counted_done = false;
    loop {
        if quota.is_some_and(|q| closed >= q) {
            let Some(m) = &mesh else { break };
            // Served our share; the others may still hand requests to us.
            if !counted_done {
                m.done.fetch_add(1, Ordering::AcqRel);
                counted_done = true;
            }
            if m.done.load(Ordering::Acquire) == m.shard.shards() as u32 && backlog.is_empty() {
                break;
            }
        }
        while let Some(s) = listener.try_accept() {
            // A client may think for as long as it likes between requests.
            s.set_timeout(None);
            conns.push(Conn {
                id: next_id,
                sock: s,
                waiting: false,
            });
            next_id += 1;
            served.conns += 1;
        }
        let timeout = match &mesh {
            None => Duration::from_millis(50),
            // Hand-offs in flight or just past: poll without sleeping.
            Some(_) if !backlog.is_empty() || Instant::now() < spin_until => Duration::ZERO,
            Some(_) if conns.iter().any(|k| k.waiting) => Duration::ZERO,
            Some(m) if m.bells.is_some() => SHARD_WAIT,
            Some(_) => SHARD_NAP,
        };
        let refs: Vec<&Socket> = conns.iter().map(|k| &k.sock).collect();
        stack.poll_ready(&refs, &mut ready, timeout);
        gone.clear();
        // Whether a request was read this turn.
        let mut worked = false;
        for &k in &ready {
            let conn = &mut conns[k];
            while !conn.waiting {
                match conn.sock.try_recv() {
                    Ok(Some(req)) => {
                        worked = true;
                        if let Some(m) = &mesh {
                            let cores = m.shard.shards();
                            let to = request_key(&req).map(|key| owner(key, cores));
                            if let Some(to) = to.filter(|&to| to != c as usize) {
                                backlog.push((to, Handoff::Request { conn: conn.id, req }, false));
                                conn.waiting = true;
                                served.handed_off += 1;
                                break;
                            }
                        }
                        let resp = handle(&mut store, &mut served, req);
                        if let Err(e) = conn.sock.send_bytes(resp) {
                            eprintln!("kv_server: core {c}: {}: {e}", peer(&conn.sock));
                            gone.push(k);
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(Error::Closed) => {
                        gone.push(k);
                        break;
                    }
                    Err(e) => {
                        eprintln!("kv_server: core {c}: {} gone: {e}", peer(&conn.sock));
                        gone.push(k);
                        break;
                    }
                }
            }
        }
        if let Some(m) = &mut mesh {
            let mut moved = !backlog.is_empty();
            while let Some((from, msg)) = m.shard.try_recv() {
                moved = true;
                match msg {
                    Handoff::Request { conn, req } => {
                        served.served_for_others += 1;
                        let resp = handle(&mut store, &mut served, req);
                        backlog.push((from, Handoff::Response { conn, resp }, false));
                    }
                    Handoff::Response { conn, resp } => {
                        // A connection that closed meanwhile has no use for it.
                        let Some(k) = conns.iter().position(|k| k.id == conn) else {
                            continue;
                        };
                        conns[k].waiting = false;
                        if let Err(e) = conns[k].sock.send_bytes(resp) {
                            eprintln!("kv_server: core {c}: {}: {e}", peer(&conns[k].sock));
                            if !gone.contains(&k) {
                                gone.push(k);
                            }
                        }
                    }
                }
            }
            // Hand over what is queued here; what does not fit waits for the next turn (the
            // two lists keep their capacity: no allocation once grown).
            std::mem::swap(&mut backlog, &mut retry);
            for (to, msg, waited) in retry.drain(..) {
                match m.shard.try_send(to, msg) {
                    Ok(()) => {
                        if let Some(b) = m.bells.as_ref().and_then(|b| b[to].get()) {
                            b.ring();
                        }
                    }
                    Err(Full(msg)) => {
                        served.backlogged += u64::from(!waited);
                        backlog.push((to, msg, true));
                    }
                }
            }
            if moved {
                spin_until = Instant::now() + SHARD_SPIN;
            } else if !worked {
                // Polling without sleeping and nothing to do this turn: let a process that
                // shares this CPU run (on a core of its own this returns at once). On the
                // loaded 2-core VM, 5x the ops/s and 1/25 the p99 of spinning.
                std::thread::yield_now();
            }
        }
        // Highest index first: swap_remove keeps the lower ones in place.
        gone.sort_unstable();
        for &k in gone.iter().rev() {
            conns.swap_remove(k);
            closed += 1;
        }
    }
    served.keys = store.len();
    served.pool_copies = stack.stats().rx_pool_low_copies;
    Ok(served)
}

fn peer(s: &Socket) -> SocketAddr {
    s.peer_addr()
}

/// The response to `req`.
fn handle(store: &mut HashMap<Bytes, (Bytes, usize)>, served: &mut Served, req: Bytes) -> Bytes {
    let bad = |why: &str| {
        let mut v = vec![BAD];
        v.extend_from_slice(why.as_bytes());
        Bytes::from(v)
    };
    if req.len() < 3 {
        return bad("a request is at least op, key length");
    }
    let klen = u16::from_le_bytes([req[1], req[2]]) as usize;
    let Some(key_end) = 3usize.checked_add(klen).filter(|&e| e <= req.len()) else {
        return bad("the key is longer than the request");
    };
    // A slice of the request: the key costs no copy either.
    let key = req.slice(3..key_end);
    match req[0] {
        b'P' => {
            if req.get(key_end) != Some(&OK) {
                return bad("PUT: the byte after the key must be 0x00");
            }
            served.puts += 1;
            store.insert(key, (req, key_end));
            Bytes::from_static(&[OK])
        }
        b'G' if key_end == req.len() => {
            served.gets += 1;
            match store.get(&key) {
                // [0x00] ++ value: a slice of the PUT message, no copy.
                Some((put, at)) => put.slice(*at..),
                None => Bytes::from_static(&[NOT_FOUND]),
            }
        }
        b'G' => bad("GET: bytes after the key"),
        _ => bad("unknown op (PUT is 'P', GET is 'G')"),
    }
}
