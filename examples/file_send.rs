//! Sends a file to `file_recv` (another process) over memif; see `file_recv.rs` for the
//! protocol.
//!
//! ```text
//! cargo run --release --example file_recv -- /tmp/file.sock OUT_FILE
//! cargo run --release --example file_send -- /tmp/file.sock IN_FILE [CHUNK_BYTES]
//! ```
//!
//! The file is read whole, then sent as messages of `CHUNK_BYTES` (default 1 MiB) that are
//! slices of that one buffer: `Bytes::slice` shares it, so nothing is copied before the
//! transport writes each byte once into a packet buffer. Exits with status 0 only if the
//! receiver's checksum and length match ours.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bypass::pmd::memif::Role;
use bypass::socket::{Backend, Stack, DEFAULT_UDP_PORT};
use bytes::Bytes;

const RECV_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
const SEND_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
const RECV_MAC: [u8; 6] = [0x02, 0x78, 0, 0, 0, 1];
const SEND_MAC: [u8; 6] = [0x02, 0x78, 0, 0, 0, 2];

/// FNV-1a, 64 bits (the same as `file_recv`'s).
fn fnv1a64(data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in data {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn main() {
    common::init_log();
    let args = common::args(USAGE);
    let (socket, input, chunk) = match args.as_slice() {
        [s, f] => (s, f, 1 << 20),
        [s, f, c] => match c.parse::<usize>() {
            Ok(c) if c > 0 => (s, f, c),
            _ => usage(),
        },
        _ => usage(),
    };
    match run(PathBuf::from(socket), PathBuf::from(input), chunk) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("file_send: {e}");
            std::process::exit(1);
        }
    }
}

const USAGE: &str = "usage: file_send SOCKET_PATH IN_FILE [CHUNK_BYTES]";

fn usage() -> ! {
    eprintln!("{USAGE}");
    std::process::exit(2);
}

fn run(socket: PathBuf, input: PathBuf, chunk: usize) -> Result<bool, Box<dyn std::error::Error>> {
    let data = Bytes::from(std::fs::read(&input)?);
    let hash = fnv1a64(&data);
    let builder = Stack::builder(
        Backend::Memif {
            socket,
            role: Role::Client,
            id: 0,
        },
        SEND_IP,
    )
    .mac(SEND_MAC)
    .static_arp(RECV_IP, RECV_MAC)
    .no_accept()
    .link_timeout(Duration::from_secs(20));
    let stack = match common::faults_from_env() {
        Some(f) => builder.faults(f),
        None => builder,
    }
    .build()?;
    let sock = stack.connect(
        SocketAddrV4::new(RECV_IP, DEFAULT_UDP_PORT),
        Duration::from_secs(10),
    )?;
    sock.set_timeout(Some(Duration::from_secs(30)));
    let t0 = Instant::now();
    let mut header = Vec::with_capacity(12);
    header.extend_from_slice(b"BYPF");
    header.extend_from_slice(&(data.len() as u64).to_le_bytes());
    sock.send(&header)?;
    let mut at = 0;
    let mut chunks = 0u64;
    while at < data.len() {
        let end = (at + chunk).min(data.len());
        sock.send_bytes(data.slice(at..end))?;
        at = end;
        chunks += 1;
    }
    let mut trailer = Vec::with_capacity(12);
    trailer.extend_from_slice(b"BYPE");
    trailer.extend_from_slice(&hash.to_le_bytes());
    sock.send(&trailer)?;
    let ack = sock.recv()?;
    let elapsed = t0.elapsed();
    if ack.len() != 20 || &ack[..4] != b"BYPA" {
        return Err("the receiver's answer is not a BYPA acknowledgement".into());
    }
    let theirs = u64::from_le_bytes(ack[4..12].try_into()?);
    let their_len = u64::from_le_bytes(ack[12..20].try_into()?);
    sock.close()?;
    let ok = theirs == hash && their_len == data.len() as u64;
    println!(
        "file_send: sent {} bytes in {chunks} messages ({:.1} MiB/s); fnv1a64 {hash:016x}, receiver's {theirs:016x} over {their_len} bytes: {}",
        data.len(),
        data.len() as f64 / (1 << 20) as f64 / elapsed.as_secs_f64().max(1e-9),
        if ok { "checksum ok" } else { "checksum MISMATCH" }
    );
    Ok(ok)
}
