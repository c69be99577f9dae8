//! A client of `kv_server` (another process): PUTs values, GETs them back, and with
//! `--verify` checks every byte. Prints operations per second and latency percentiles.
//!
//! ```text
//! cargo run --release --example kv_server -- /tmp/kv.sock --clients 2
//! cargo run --release --example kv_client -- /tmp/kv.sock --id 0 --verify
//! cargo run --release --example kv_client -- /tmp/kv.sock --id 1 --verify
//! ```
//!
//! The protocol is described at the top of examples/kv_server.rs. Client `--id I` takes memif
//! interface `I / K` on core `I % K` of a server run with `--cores K` (pass the same
//! `--cores`), and the address 10.78.x.y of its own: several clients run at once, each with
//! its own id. Each request is built once as one `Bytes` and sent with `send_bytes` (no copy);
//! each response is checked in the `Bytes` it arrived in.
//!
//! `--key-space shared --clients P`: after PUTting its own keys, the client GETs the keys of
//! all P clients (ids 0..P, each with the same `--keys` and `--sizes`), so it reads values
//! written through other cores of a server run with `--shard-by-key`; a key another client
//! has not PUT yet is asked again until it is there. Values are known from (client, key), so
//! `--verify` checks those too.
//!
//! Besides the human line, the client prints one line for scripts (scripts/kv-scale.sh):
//! `kv_client I summary: ops=N secs=S ops_per_s=R p50_us=A p99_us=B`.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bypass::bytes::{BufMut, Bytes, BytesMut};
use bypass::pmd::memif::Role;
use bypass::socket::{Backend, Socket, Stack, DEFAULT_UDP_PORT};

const USAGE: &str =
    "usage: kv_client SOCKET_PATH [--id I] [--cores K] [--keys N] [--sizes LIST] [--rounds R]
                  [--key-space own|shared] [--clients P] [--verify]

  SOCKET_PATH   the server's memif socket (as given to kv_server)
  --id I        this client's number, distinct among the clients running at once (default 0;
                below the server's --clients)
  --cores K     the server's --cores (default 1): client I goes to core I % K
  --keys N      keys to PUT (default 24), sizes taken in turn from --sizes
  --sizes LIST  value sizes, e.g. 4k,64k,1m (default 4k,64k,1m; 1 B to 1 GiB)
  --rounds R    GET every key R times (default 2)
  --key-space S own (default): GET the keys this client PUT; shared: GET the keys of every
                client 0..P (same --keys and --sizes), waiting for those not PUT yet (with
                a server run with --shard-by-key)
  --clients P   with --key-space shared: the clients whose keys to read (default 1)
  --verify      check every byte of every value the server returns (otherwise: lengths)

Start kv_server first.";

const OK: u8 = 0;
const NOT_FOUND: u8 = 1;

/// With `--key-space shared`: the longest wait for another client's key to be PUT.
const SHARED_WAIT: Duration = Duration::from_secs(60);

fn main() {
    common::init_log();
    let mut o = Opts {
        socket: PathBuf::new(),
        id: 0,
        cores: 1,
        keys: 24,
        sizes: vec![4 << 10, 64 << 10, 1 << 20],
        rounds: 2,
        verify: false,
        shared: false,
        clients: 1,
    };
    let mut socket = None;
    let mut args = common::args(USAGE).into_iter();
    while let Some(a) = args.next() {
        let mut val = |name: &str| {
            args.next()
                .unwrap_or_else(|| usage(&format!("{name} takes a value")))
        };
        let num = |name: &str, v: String, min: u32| -> u32 {
            match v.parse::<u32>() {
                Ok(n) if n >= min => n,
                _ => usage(&format!(
                    "{name} takes a number of at least {min}, not {v:?}"
                )),
            }
        };
        match a.as_str() {
            "--id" => o.id = num("--id", val("--id"), 0),
            "--cores" => o.cores = num("--cores", val("--cores"), 1),
            "--keys" => o.keys = num("--keys", val("--keys"), 1),
            "--rounds" => o.rounds = num("--rounds", val("--rounds"), 0),
            "--sizes" => {
                let v = val("--sizes");
                o.sizes = v
                    .split(',')
                    .map(|s| {
                        parse_size(s).unwrap_or_else(|| {
                            usage(&format!(
                                "--sizes: {s:?} is not a size of 1 B to 1 GiB (e.g. 4k, 1m)"
                            ))
                        })
                    })
                    .collect();
            }
            "--verify" => o.verify = true,
            "--clients" => o.clients = num("--clients", val("--clients"), 1),
            "--key-space" => match val("--key-space").as_str() {
                "own" => o.shared = false,
                "shared" => o.shared = true,
                v => usage(&format!("--key-space is own or shared, not {v:?}")),
            },
            _ if a.starts_with('-') => usage(&format!("unknown option {a}")),
            _ if socket.is_none() => socket = Some(PathBuf::from(a)),
            _ => usage("one SOCKET_PATH only"),
        }
    }
    let Some(socket) = socket else {
        usage("give the server's memif socket path, e.g. /tmp/kv.sock")
    };
    o.socket = socket;
    if o.shared && o.id >= o.clients {
        usage("with --key-space shared, --clients P must be above --id");
    }
    if let Err(e) = run(&o) {
        eprintln!("kv_client {}: {e}", o.id);
        std::process::exit(1);
    }
}

fn usage(why: &str) -> ! {
    eprintln!("kv_client: {why}\n{USAGE}");
    std::process::exit(2);
}

struct Opts {
    socket: PathBuf,
    id: u32,
    cores: u32,
    keys: u32,
    sizes: Vec<usize>,
    rounds: u32,
    verify: bool,
    /// `--key-space shared`: GET the keys of clients 0..`clients`.
    shared: bool,
    clients: u32,
}

/// `64`, `4k` (4096), `1m` (1048576): 1 B to 1 GiB.
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mul) = match s.as_bytes().last()? {
        b'k' => (&s[..s.len() - 1], 1 << 10),
        b'm' => (&s[..s.len() - 1], 1 << 20),
        _ => (&s[..], 1),
    };
    let n = num.parse::<usize>().ok()?.checked_mul(mul)?;
    (1..=1 << 30).contains(&n).then_some(n)
}

/// Client `id`'s address: 10.78.1.0 onwards (the server's /16), one each.
fn client_ip(id: u32) -> Ipv4Addr {
    let h = 256 + id;
    Ipv4Addr::new(10, 78, (h >> 8) as u8, h as u8)
}

/// A PUT of key `j` of client `id`, `len` bytes of value: the message and where the value
/// starts in it.
fn put_request(id: u32, j: u32, len: usize) -> (Bytes, usize) {
    let key = format!("client{id}/key{j}");
    let mut m = BytesMut::with_capacity(4 + key.len() + len);
    m.put_u8(b'P');
    m.put_u16_le(key.len() as u16);
    m.put_slice(key.as_bytes());
    m.put_u8(OK);
    let at = m.len();
    let seed = id.wrapping_mul(2_654_435_761) ^ j.wrapping_mul(40_503);
    m.extend((0..len as u32).map(|i| (i.wrapping_mul(167) ^ seed ^ (i >> 8)) as u8));
    (m.freeze(), at)
}

fn get_request(id: u32, j: u32) -> Bytes {
    let key = format!("client{id}/key{j}");
    let mut m = BytesMut::with_capacity(3 + key.len());
    m.put_u8(b'G');
    m.put_u16_le(key.len() as u16);
    m.put_slice(key.as_bytes());
    m.freeze()
}

/// One request and its response; the round trip is pushed to `lat`.
fn call(sock: &Socket, req: Bytes, lat: &mut Vec<Duration>) -> Result<Bytes, String> {
    let t0 = Instant::now();
    sock.send_bytes(req).map_err(|e| format!("send: {e}"))?;
    let resp = sock.recv().map_err(|e| format!("recv: {e}"))?;
    lat.push(t0.elapsed());
    Ok(resp)
}

fn run(o: &Opts) -> Result<(), String> {
    let core = o.id % o.cores;
    let path = common::kv_core_socket(&o.socket, core, o.cores);
    let stack = Stack::builder(
        Backend::Memif {
            socket: path.clone(),
            role: Role::Client,
            id: o.id / o.cores,
        },
        client_ip(o.id),
    )
    .prefix_len(16)
    .no_accept()
    // The server may still be starting (or busy with other clients on a loaded machine).
    .link_timeout(Duration::from_secs(60))
    .build()
    .map_err(|e| {
        format!(
            "memif {} (interface {}): {e}\n(is kv_server running with --clients above {} and --cores {}?)",
            path.display(),
            o.id / o.cores,
            o.id,
            o.cores
        )
    })?;
    let server = SocketAddrV4::new(common::kv_server_ip(core), DEFAULT_UDP_PORT);
    let sock = stack
        .connect(server, Duration::from_secs(30))
        .map_err(|e| format!("connect to {server}: {e}"))?;
    sock.set_timeout(Some(Duration::from_secs(60)));

    let mut lat = Vec::new();
    // A key never PUT is not found.
    let resp = call(&sock, get_request(o.id, u32::MAX), &mut lat)?;
    if resp[..] != [NOT_FOUND] {
        return Err(format!("GET of a key never PUT: status {:?}", resp.first()));
    }
    let t0 = Instant::now();
    let mut puts = Vec::with_capacity(o.keys as usize);
    let mut bytes = 0u64;
    for j in 0..o.keys {
        let len = o.sizes[j as usize % o.sizes.len()];
        let (req, at) = put_request(o.id, j, len);
        let resp = call(&sock, req.clone(), &mut lat)?;
        if resp[..] != [OK] {
            return Err(format!("PUT of key {j}: response {:?}", status(&resp)));
        }
        bytes += len as u64;
        puts.push((req, at));
    }
    // Whose keys to read: ours, or every client's (their PUTs known from (client, key)).
    let readers: Vec<u32> = if o.shared {
        (0..o.clients).collect()
    } else {
        vec![o.id]
    };
    let mut want_of: Vec<Vec<(Bytes, usize)>> = Vec::with_capacity(readers.len());
    for &owner in &readers {
        want_of.push(if owner == o.id {
            puts.clone()
        } else {
            (0..o.keys)
                .map(|j| put_request(owner, j, o.sizes[j as usize % o.sizes.len()]))
                .collect()
        });
    }
    let (mut gets, mut others, mut not_yet) = (0u64, 0u64, 0u64);
    for _ in 0..o.rounds {
        for (&owner, wants) in readers.iter().zip(&want_of) {
            for (j, (put, at)) in wants.iter().enumerate() {
                let mut resp = call(&sock, get_request(owner, j as u32), &mut lat)?;
                // Another client's key may not be PUT yet: ask again.
                let since = Instant::now();
                while owner != o.id && resp[..] == [NOT_FOUND] && since.elapsed() < SHARED_WAIT {
                    not_yet += 1;
                    std::thread::sleep(Duration::from_micros(200));
                    resp = call(&sock, get_request(owner, j as u32), &mut lat)?;
                }
                // The response is the status byte, then the value: what follows the key in the PUT.
                let want = &put[at - 1..];
                if resp.len() != want.len() || resp.first() != Some(&OK) {
                    return Err(format!(
                        "GET of client {owner}'s key {j}: {} bytes ({:?}), expected {} (status 0)",
                        resp.len(),
                        status(&resp),
                        want.len()
                    ));
                }
                if o.verify {
                    if let Some(i) = resp.iter().zip(want).position(|(a, b)| a != b) {
                        return Err(format!(
                            "GET of client {owner}'s key {j}: value byte {} differs",
                            i - 1
                        ));
                    }
                }
                gets += 1;
                others += u64::from(owner != o.id);
                bytes += (want.len() - 1) as u64;
            }
        }
    }
    let took = t0.elapsed();
    sock.close().map_err(|e| format!("close: {e}"))?;
    lat.sort_unstable();
    let pct = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    let ops = puts.len() as u64 + gets;
    println!(
        "kv_client {}: {} PUTs, {gets} GETs, {bytes} value bytes in {took:.2?}: {:.0} ops/s; latency p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        o.id,
        puts.len(),
        ops as f64 / took.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        pct(0.999),
        lat[lat.len() - 1]
    );
    println!(
        "kv_client {} summary: ops={ops} secs={:.6} ops_per_s={:.0} p50_us={:.1} p99_us={:.1}",
        o.id,
        took.as_secs_f64(),
        ops as f64 / took.as_secs_f64(),
        pct(0.5).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6
    );
    if o.shared {
        println!(
            "kv_client {}: {others} GETs of keys other clients PUT ({not_yet} asked again before the key was there)",
            o.id
        );
    }
    if o.verify {
        println!(
            "kv_client {}: all {gets} values intact (every byte checked)",
            o.id
        );
    }
    Ok(())
}

/// The status of a response, and its text if it is BAD.
fn status(resp: &[u8]) -> String {
    match resp.split_first() {
        None => "an empty response".into(),
        Some((2, why)) => format!("BAD: {}", String::from_utf8_lossy(why)),
        Some((s, body)) => format!("status {s}, {} bytes", body.len()),
    }
}
