//! Echo client over memif: connects to `echo_server` (another process) and checks that every
//! message comes back unchanged.
//!
//! ```text
//! cargo run --release --example echo_server -- /tmp/echo.sock
//! cargo run --release --example echo_client -- /tmp/echo.sock [ROUNDS]
//! ```
//!
//! Each round sends messages of 1 B, 64 B, 1400 B, 8 KiB, 64 KiB and 1 MiB (single-packet and
//! multi-packet messages), waits for each echo and compares it byte for byte. It prints the
//! number of messages and bytes echoed and the median and worst round trip, and exits with
//! status 1 on any difference.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bypass::pmd::memif::Role;
use bypass::socket::{Backend, Stack, DEFAULT_UDP_PORT};
use bytes::Bytes;

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const SERVER_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 2];
const SIZES: [usize; 6] = [1, 64, 1400, 8 << 10, 64 << 10, 1 << 20];

fn main() {
    common::init_log();
    let args = common::args(USAGE);
    let (socket, rounds) = match args.as_slice() {
        [s] => (PathBuf::from(s), 10),
        [s, r] => match r.parse::<u32>() {
            Ok(r) => (PathBuf::from(s), r),
            Err(_) => usage(),
        },
        _ => usage(),
    };
    if let Err(e) = run(socket, rounds) {
        eprintln!("echo_client: {e}");
        std::process::exit(1);
    }
}

const USAGE: &str = "usage: echo_client SOCKET_PATH [ROUNDS]";

fn usage() -> ! {
    eprintln!("{USAGE}");
    std::process::exit(2);
}

fn run(socket: PathBuf, rounds: u32) -> Result<(), Box<dyn std::error::Error>> {
    let stack = Stack::builder(
        Backend::Memif {
            socket,
            role: Role::Client,
            id: 0,
        },
        CLIENT_IP,
    )
    .mac(CLIENT_MAC)
    .static_arp(SERVER_IP, SERVER_MAC)
    .no_accept()
    .link_timeout(Duration::from_secs(20))
    .build()?;
    let sock = stack.connect(
        SocketAddrV4::new(SERVER_IP, DEFAULT_UDP_PORT),
        Duration::from_secs(10),
    )?;
    let mut rtts = Vec::new();
    let (mut msgs, mut bytes) = (0u64, 0u64);
    for round in 0..rounds {
        for (k, &len) in SIZES.iter().enumerate() {
            let seed = (round as usize * SIZES.len() + k) as u8;
            let msg: Bytes = (0..len)
                .map(|i| (i as u8).wrapping_mul(131).wrapping_add(seed))
                .collect::<Vec<u8>>()
                .into();
            let t0 = Instant::now();
            sock.send_bytes(msg.clone())?;
            let back = sock.recv()?;
            rtts.push(t0.elapsed());
            if back != msg {
                return Err(format!(
                    "echo of {len} bytes differs (got {} bytes back)",
                    back.len()
                )
                .into());
            }
            msgs += 1;
            bytes += len as u64;
        }
    }
    sock.close()?;
    rtts.sort();
    let median = rtts.get(rtts.len() / 2).copied().unwrap_or_default();
    let worst = rtts.last().copied().unwrap_or_default();
    println!(
        "echo_client: {msgs} messages ({bytes} bytes) echoed intact; round trip median {median:?}, worst {worst:?} (sizes 1 B to 1 MiB)"
    );
    Ok(())
}
