//! A small key-value store over memif: many client processes, one poll loop per core, values
//! kept and served without a copy.
//!
//! ```text
//! cargo run --release --example kv_server -- /tmp/kv.sock --clients 4 [--cores 2]
//! cargo run --release --example kv_client -- /tmp/kv.sock --id 0 --verify [--cores 2]
//! cargo run --release --example kv_client -- /tmp/kv.sock --id 1 --verify [--cores 2]
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
//!   status 1 NOT_FOUND  GET of a key never PUT (on this core)
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
//! The server sleeps while idle (the default `IdlePoll::Sleep`): a store nobody talks to
//! does not burn its cores. Values kept for long hold packet buffers; when the receive pool
//! runs low the stack copies newly received messages out (`StackBuilder::rx_pool_reserve`),
//! so keeping every value is safe. `--exit-after M` exits once M connections have closed,
//! printing each core's count of connections and operations.

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bypass::bytes::Bytes;
use bypass::mem::HugePages;
use bypass::pmd::memif::Role;
use bypass::socket::{Backend, Error, Socket, Stack};

const USAGE: &str = "usage: kv_server SOCKET_PATH [--clients N] [--cores K] [--exit-after M]

  SOCKET_PATH      the memif control socket to create (with --cores K > 1: SOCKET_PATH.0 ..
                   SOCKET_PATH.K-1, one per core)
  --clients N      client processes served at once (default 4); client --id I takes
                   interface I / K on core I % K
  --cores K        server stacks, one thread each (default 1)
  --exit-after M   exit after M client connections have closed (default: serve forever)

The protocol is described at the top of examples/kv_server.rs.";

/// The status byte of a response.
pub const OK: u8 = 0;
pub const NOT_FOUND: u8 = 1;
pub const BAD: u8 = 2;

fn main() {
    common::init_log();
    let mut socket = None;
    let (mut clients, mut cores, mut exit_after) = (4u32, 1u32, None);
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
    let threads: Vec<_> = (0..cores)
        .map(|c| {
            let path = core_socket(&socket, c, cores);
            // Spread the end condition: core c stops after its share of the connections.
            let quota =
                exit_after.map(|m| m / cores as u64 + u64::from((c as u64) < m % cores as u64));
            std::thread::spawn(move || serve_core(c, &path, per_core, quota, cores > 1))
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

/// Core `c`'s memif socket: the path itself with one core, `PATH.c` with several.
fn core_socket(path: &Path, c: u32, cores: u32) -> PathBuf {
    if cores == 1 {
        return path.to_path_buf();
    }
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{c}"));
    PathBuf::from(s)
}

/// Core `c`'s server address (clients: see kv_client).
fn server_ip(c: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 78, 0, 1 + c as u8)
}

/// What one core did.
#[derive(Default)]
struct Served {
    conns: u64,
    puts: u64,
    gets: u64,
    keys: usize,
    pool_copies: u64,
}

/// Serve `peers` clients on memif socket `path` until `quota` connections have closed.
fn serve_core(
    c: u32,
    path: &Path,
    peers: u32,
    quota: Option<u64>,
    pin: bool,
) -> Result<Served, Error> {
    // A socket file left by a server that was killed would make the bind fail.
    let _ = std::fs::remove_file(path);
    let mut b = Stack::builder(
        Backend::Memif {
            socket: path.to_path_buf(),
            role: Role::Server,
            id: 0,
        },
        server_ip(c),
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
        server_ip(c),
        path.display()
    );
    let listener = stack.listen();
    let mut socks: Vec<Socket> = Vec::new();
    // The store: key -> the PUT message, and where its value starts (after the 0x00).
    let mut store: HashMap<Bytes, (Bytes, usize)> = HashMap::new();
    let mut served = Served::default();
    let mut closed = 0u64;
    let mut ready = Vec::new();
    let mut gone = Vec::new();
    while quota.is_none_or(|q| closed < q) {
        while let Some(s) = listener.try_accept() {
            // A client may think for as long as it likes between requests.
            s.set_timeout(None);
            socks.push(s);
            served.conns += 1;
        }
        let refs: Vec<&Socket> = socks.iter().collect();
        stack.poll_ready(&refs, &mut ready, Duration::from_millis(50));
        gone.clear();
        for &k in &ready {
            let sock = &socks[k];
            loop {
                match sock.try_recv() {
                    Ok(Some(req)) => {
                        let resp = handle(&mut store, &mut served, req);
                        if let Err(e) = sock.send_bytes(resp) {
                            eprintln!("kv_server: core {c}: {}: {e}", peer(sock));
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
                        eprintln!("kv_server: core {c}: {} gone: {e}", peer(sock));
                        gone.push(k);
                        break;
                    }
                }
            }
        }
        // Highest index first: swap_remove keeps the lower ones in place.
        gone.sort_unstable();
        for &k in gone.iter().rev() {
            socks.swap_remove(k);
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
