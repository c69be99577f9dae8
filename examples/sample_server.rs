//! Sample server over memif: streams fixed-size labelled records to a data loader in another
//! process (`examples/python/loader.py`), and a Rust receiver of the same stream for
//! comparison.
//!
//! ```text
//! cargo run --release --example sample_server -- /tmp/samples.sock [--once]
//! python examples/python/loader.py /tmp/samples.sock --count 1000 --size 1048576
//! cargo run --release --example sample_server -- /tmp/samples.sock --recv COUNT SIZE
//! ```
//!
//! Protocol (the server is 10.77.0.1:7200, as `echo_server`): the client sends one request of
//! 16 bytes, `count: u64` and `size: u64` little-endian; the server answers with `count`
//! records of `size` bytes (at least 16) and then waits for the client to close. Record `k`
//! starts with `k: u64` and `label: u64 = k % 10`; byte `j >= 16` is
//! `((k % 16) * 7 + j) % 251` (`k` and the label are written into one of 16 prepared records,
//! so the server's cost per record is the transport's, not filling memory). With `--once` it
//! exits after its first client.
//!
//! `--recv COUNT SIZE` is the client side in Rust: it asks for COUNT records of SIZE bytes,
//! receives each into one preallocated buffer posted as the receive target
//! (`Socket::post_target`: each packet is written once, at its offset), checks each record's
//! header (records arrive in completion order: each index once), and prints the receive
//! rate.

use std::any::Any;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bypass::pmd::memif::Role;
use bypass::proto::{MsgData, RecvTarget};
use bypass::socket::{Backend, Error, Stack, DEFAULT_UDP_PORT};
use bytes::{Bytes, BytesMut};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const SERVER_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 2];
/// Prepared records the server cycles through.
const PREPARED: u64 = 16;
/// Largest record the server prepares (16 x 64 MiB at most in memory).
const MAX_SIZE: u64 = 64 << 20;
/// The link for bulk transfer, as `bypass bench stream` sets it up for messages of 64 KiB and
/// more: 64 KiB frames in 64-descriptor rings (4 MiB in flight, which stays in cache), with
/// pool buffers beyond the rings. Both ends of the memif link must use the same MTU: the
/// client (loader.py) passes `mtu=65000, ring_log2=6, pool_buffers=512`. The memif peer is
/// the other stack itself, so both leave UDP checksums out (`omit_checksums`).
const BULK_MTU: u16 = 65000;
const BULK_RING: u8 = 6;
const BULK_EXTRA: u32 = 512;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return;
    }
    let r = match args.as_slice() {
        [s] => serve(PathBuf::from(s), false),
        [s, o] if o == "--once" => serve(PathBuf::from(s), true),
        [s, r, c, z] if r == "--recv" => match (c.parse(), z.parse()) {
            (Ok(c), Ok(z)) => recv(PathBuf::from(s), c, z),
            _ => usage(),
        },
        _ => usage(),
    };
    if let Err(e) = r {
        eprintln!("sample_server: {e}");
        std::process::exit(1);
    }
}

const USAGE: &str = "usage: sample_server SOCKET_PATH [--once | --recv COUNT SIZE]";

fn usage() -> ! {
    eprintln!("{USAGE}");
    std::process::exit(2);
}

/// Record `k` as the protocol defines it, for the prepared slot `k`.
fn record(k: u64, size: usize) -> Bytes {
    let mut b = BytesMut::zeroed(size);
    b[..8].copy_from_slice(&k.to_le_bytes());
    b[8..16].copy_from_slice(&(k % 10).to_le_bytes());
    for (j, x) in b.iter_mut().enumerate().skip(16) {
        *x = ((k as usize * 7 + j) % 251) as u8;
    }
    b.freeze()
}

fn serve(socket: PathBuf, once: bool) -> Result<(), Box<dyn std::error::Error>> {
    let stack = Stack::builder(
        Backend::Memif {
            socket: socket.clone(),
            role: Role::Server,
            id: 0,
        },
        SERVER_IP,
    )
    .mac(SERVER_MAC)
    .static_arp(CLIENT_IP, CLIENT_MAC)
    .mtu(BULK_MTU)
    .memif_ring(BULK_RING)
    .memif_extra_buffers(BULK_EXTRA)
    .omit_checksums(true)
    // A loader polls its stack only when it takes a sample: between samples (a training
    // step) it answers nothing. A minute before the client counts as gone.
    .connection_config(bypass::proto::ConnectionConfig {
        idle_timeout: Duration::from_secs(60),
        max_probes: 300,
        ..Default::default()
    })
    .link_timeout(Duration::from_secs(24 * 3600))
    .build()?;
    println!(
        "sample_server: serving records on {SERVER_IP}:7200 over memif {}",
        socket.display()
    );
    let listener = stack.listen();
    loop {
        let sock = match listener.accept(Duration::from_secs(3600)) {
            Ok(s) => s,
            Err(Error::TimedOut { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        sock.set_timeout(None);
        let req = sock.recv()?;
        let (count, size) = match req.len() {
            16 => (
                u64::from_le_bytes(req[..8].try_into().unwrap_or_default()),
                u64::from_le_bytes(req[8..].try_into().unwrap_or_default()),
            ),
            n => {
                println!("sample_server: bad request of {n} bytes; dropping the client");
                continue;
            }
        };
        if !(16..=MAX_SIZE).contains(&size) {
            println!("sample_server: record size {size} out of 16..={MAX_SIZE}; dropping");
            continue;
        }
        let mut prepared: Vec<Bytes> = (0..PREPARED.min(count))
            .map(|k| record(k, size as usize))
            .collect();
        let t0 = Instant::now();
        let same = std::env::var_os("SAMPLE_SAME").is_some();
        for k in 0..count {
            let slot = (k % PREPARED) as usize;
            if k >= PREPARED && !same {
                // The prepared record with this record's header: the one small write per
                // record (a copy of the record only if the transport still holds the slot's
                // bytes, which it does not once they were acknowledged).
                let old = std::mem::take(&mut prepared[slot]);
                let mut b = old
                    .try_into_mut()
                    .unwrap_or_else(|old| BytesMut::from(&old[..]));
                b[..8].copy_from_slice(&k.to_le_bytes());
                b[8..16].copy_from_slice(&(k % 10).to_le_bytes());
                prepared[slot] = b.freeze();
            }
            sock.send_bytes(prepared[slot].clone())?;
        }
        let end = sock.recv();
        let secs = t0.elapsed().as_secs_f64();
        let mib = (count * size) as f64 / f64::from(1 << 20);
        match end {
            Err(Error::Closed) => println!(
                "sample_server: {count} records of {size} bytes sent in {secs:.3} s ({:.0} MiB/s)",
                mib / secs
            ),
            Err(e) => println!("sample_server: client gone: {e}"),
            Ok(m) => println!("sample_server: unexpected {}-byte message", m.len()),
        }
        drop(sock);
        if once {
            return Ok(());
        }
    }
}

/// The receive buffer posted as the target.
#[derive(Debug)]
struct VecTarget(Vec<u8>);

impl RecvTarget for VecTarget {
    fn capacity(&self) -> u64 {
        self.0.len() as u64
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) {
        let o = offset as usize;
        self.0[o..o + data.len()].copy_from_slice(data);
    }
}

fn recv(socket: PathBuf, count: u64, size: u64) -> Result<(), Box<dyn std::error::Error>> {
    let segments = std::env::var_os("SAMPLE_SEGMENTS").is_some();
    let stack = Stack::builder(
        Backend::Memif {
            socket,
            role: Role::Client,
            id: 0,
        },
        CLIENT_IP,
    )
    .connection_config(bypass::proto::ConnectionConfig {
        rx_segments: segments,
        ..Default::default()
    })
    .mac(CLIENT_MAC)
    .static_arp(SERVER_IP, SERVER_MAC)
    .mtu(BULK_MTU)
    .memif_ring(BULK_RING)
    .memif_extra_buffers(BULK_EXTRA)
    .omit_checksums(true)
    .no_accept()
    .link_timeout(Duration::from_secs(20))
    .build()?;
    let sock = stack.connect(
        SocketAddrV4::new(SERVER_IP, DEFAULT_UDP_PORT),
        Duration::from_secs(10),
    )?;
    let mut req = [0u8; 16];
    req[..8].copy_from_slice(&count.to_le_bytes());
    req[8..].copy_from_slice(&size.to_le_bytes());
    sock.send(&req)?;
    // The buffer the application keeps its record in; the target writes it in place, and a
    // message that was already being reassembled (or fits one packet) is copied into it.
    let mut buf: Option<Box<dyn RecvTarget>> = Some(Box::new(VecTarget(vec![0; size as usize])));
    let mut spare = vec![0u8; size as usize];
    let (mut landed, mut copied) = (0u64, 0u64);
    let mut seen = vec![false; count as usize];
    let mut t0 = None;
    // Experiments (bench/results/2026-12-07-python.md): SAMPLE_NO_TARGET=1 receives without
    // the posted buffer (reassembly, then a copy); SAMPLE_SEGMENTS=1 takes multi-packet
    // messages as their packet buffers (ConnectionConfig::rx_segments) and copies them once.
    let no_target = segments || std::env::var_os("SAMPLE_NO_TARGET").is_some();
    // SAMPLE_SAME=1 (both sides): the server sends its first prepared record over and over.
    let same_records = std::env::var_os("SAMPLE_SAME").is_some();
    for k in 0..count {
        if let Some(b) = buf.take().filter(|_| !no_target) {
            sock.post_target(b)?;
        }
        let m = sock.recv_msg()?;
        t0.get_or_insert_with(Instant::now);
        let head: [u8; 16] = match m.data {
            MsgData::Target(t) => {
                landed += 1;
                let any: Box<dyn Any> = t;
                let v = any.downcast::<VecTarget>().map_err(|_| "foreign target")?;
                let h = v.0[..16].try_into()?;
                buf = Some(v);
                h
            }
            _ => {
                copied += 1;
                if !m.copy_to_slice(&mut spare[..m.len as usize]) {
                    return Err("message in no buffer".into());
                }
                spare[..16].try_into()?
            }
        };
        // Records come in completion order: each index once, with its label.
        let got = u64::from_le_bytes(head[..8].try_into()?);
        let label = u64::from_le_bytes(head[8..].try_into()?);
        if !same_records
            && (got >= count
                || label != got % 10
                || std::mem::replace(&mut seen[got as usize], true))
        {
            return Err(format!("record {k}: bad or repeated header ({got}, {label})").into());
        }
    }
    let secs = t0.map(|t| t.elapsed().as_secs_f64()).unwrap_or_default();
    sock.close()?;
    // The first record starts the clock: count - 1 records in `secs`.
    let bytes = (count.saturating_sub(1) * size) as f64;
    println!(
        "sample_server --recv: {count} records of {size} bytes; {:.0} MiB/s ({:.0} records/s); \
         {landed} landed in the posted buffer, {copied} copied",
        bytes / f64::from(1 << 20) / secs,
        count.saturating_sub(1) as f64 / secs
    );
    Ok(())
}
