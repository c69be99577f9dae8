//! Receives a file sent by `file_send` (another process) over memif and verifies its checksum.
//!
//! ```text
//! cargo run --release --example file_recv -- /tmp/file.sock OUT_FILE
//! cargo run --release --example file_send -- /tmp/file.sock IN_FILE   (another terminal)
//! ```
//!
//! The receiver serves the memif socket and accepts one connection on 10.78.0.1:7200. The
//! protocol is three kinds of message:
//!
//! - `BYPF` + total length (u64 LE): the header;
//! - the file's bytes, in messages of up to 1 MiB (each reassembled whole by the transport);
//! - `BYPE` + FNV-1a 64 of the whole file (u64 LE): the trailer.
//!
//! The receiver hashes what it wrote, answers `BYPA` + its hash + its length, and exits with
//! status 0 only if length and hash both match the sender's. It asks for messages in send
//! order (`StackBuilder::ordered`): by default they are delivered in completion order, and
//! under loss a later chunk can complete before an earlier one.
//!
//! To watch it survive a bad network, run both with e.g.
//! `BYPASS_FAULTS=loss=0.05,reorder=0.05,seed=7` (frames lost and reordered at random).

mod common;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bypass::pmd::memif::Role;
use bypass::proto::MsgData;
use bypass::socket::{Backend, Stack};

const RECV_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
const SEND_IP: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 2);
const RECV_MAC: [u8; 6] = [0x02, 0x78, 0, 0, 0, 1];
const SEND_MAC: [u8; 6] = [0x02, 0x78, 0, 0, 0, 2];

/// FNV-1a, 64 bits: tiny and good enough to catch a lost, duplicated or reordered chunk.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

fn main() {
    common::init_log();
    const USAGE: &str = "usage: file_recv SOCKET_PATH OUT_FILE";
    let args = common::args(USAGE);
    let [socket, out] = args.as_slice() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    match run(PathBuf::from(socket), PathBuf::from(out)) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("file_recv: {e}");
            std::process::exit(1);
        }
    }
}

fn u64_at(m: &[u8], at: usize) -> Result<u64, String> {
    m.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| format!("message of {} bytes too short", m.len()))
}

fn run(socket: PathBuf, out: PathBuf) -> Result<bool, Box<dyn std::error::Error>> {
    let builder = Stack::builder(
        Backend::Memif {
            socket: socket.clone(),
            role: Role::Server,
            id: 0,
        },
        RECV_IP,
    )
    .mac(RECV_MAC)
    .static_arp(SEND_IP, SEND_MAC)
    .link_timeout(Duration::from_secs(3600))
    // Chunks are written in the order they were sent: deliver in send order (the default
    // is completion order, in which under loss a later chunk can overtake an earlier one).
    .ordered(true);
    let stack = match common::faults_from_env() {
        Some(f) => builder.faults(f),
        None => builder,
    }
    .build()?;
    println!("file_recv: waiting on memif {}", socket.display());
    let sock = stack.listen().accept(Duration::from_secs(3600))?;
    sock.set_timeout(Some(Duration::from_secs(30)));
    let header = sock.recv()?;
    if header.get(..4) != Some(b"BYPF") {
        return Err("first message is not a BYPF header".into());
    }
    let total = u64_at(&header, 4)?;
    let t0 = Instant::now();
    let mut file = BufWriter::new(File::create(&out)?);
    let mut hash = Fnv1a::new();
    let mut got = 0u64;
    let mut chunks = 0u64;
    while got < total {
        let m = sock.recv_msg()?;
        // Single-packet chunks are views of the receive buffer, larger ones were reassembled
        // into one buffer: either way, no further copy before the write.
        let data: &[u8] = match &m.data {
            MsgData::Packet(p) => p,
            MsgData::Buffer(b) => b,
            MsgData::Segments(_) => return Err("unexpected segments message".into()),
            MsgData::Target(_) => return Err("unexpected target message".into()),
        };
        if got + data.len() as u64 > total {
            return Err(format!("more than the announced {total} bytes").into());
        }
        hash.update(data);
        file.write_all(data)?;
        got += data.len() as u64;
        chunks += 1;
    }
    file.flush()?;
    let elapsed = t0.elapsed();
    let trailer = sock.recv()?;
    if trailer.get(..4) != Some(b"BYPE") {
        return Err("no BYPE trailer after the data".into());
    }
    let theirs = u64_at(&trailer, 4)?;
    let mut ack = Vec::with_capacity(20);
    ack.extend_from_slice(b"BYPA");
    ack.extend_from_slice(&hash.0.to_le_bytes());
    ack.extend_from_slice(&got.to_le_bytes());
    sock.send(&ack)?;
    let ok = theirs == hash.0;
    println!(
        "file_recv: received {got} bytes in {chunks} messages into {} ({:.1} MiB/s); fnv1a64 {:016x}, sender's {theirs:016x}: {}",
        out.display(),
        got as f64 / (1 << 20) as f64 / elapsed.as_secs_f64().max(1e-9),
        hash.0,
        if ok { "checksum ok" } else { "checksum MISMATCH" }
    );
    // The sender closes once it has read our answer: that close is the proof the answer
    // arrived (dropping the socket now would reset the connection under it).
    match sock.recv() {
        Err(bypass::socket::Error::Closed) => Ok(ok),
        Err(e) => Err(format!("waiting for the sender to close: {e}").into()),
        Ok(m) => Err(format!("unexpected {}-byte message after the trailer", m.len()).into()),
    }
}
