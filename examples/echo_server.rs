//! Echo server over memif: a bypass stack in this process, the client in another.
//!
//! ```text
//! cargo run --release --example echo_server -- /tmp/echo.sock [--once]
//! cargo run --release --example echo_client -- /tmp/echo.sock      (another terminal)
//! ```
//!
//! The server serves the memif control socket (it creates the socket file and removes it on
//! exit) and accepts bypass connections on 10.77.0.1:7200; every message that arrives is sent
//! back unchanged, without a copy (`recv` gives a `Bytes` view, `send_bytes` hands it back).
//! With `--once` it exits after its first client closes; otherwise it waits for the next one.

mod common;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use bypass::pmd::memif::Role;
use bypass::socket::{Backend, Error, Stack};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const SERVER_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 2];

fn main() {
    common::init_log();
    let mut socket = None;
    let mut once = false;
    for a in common::args(USAGE) {
        match a.as_str() {
            "--once" => once = true,
            _ if socket.is_none() => socket = Some(PathBuf::from(a)),
            _ => usage(),
        }
    }
    let Some(socket) = socket else { usage() };
    if let Err(e) = run(socket, once) {
        eprintln!("echo_server: {e}");
        std::process::exit(1);
    }
}

const USAGE: &str = "usage: echo_server SOCKET_PATH [--once]";

fn usage() -> ! {
    eprintln!("{USAGE}");
    std::process::exit(2);
}

fn run(socket: PathBuf, once: bool) -> Result<(), Error> {
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
    // Wait as long as it takes for the first client's memif link.
    .link_timeout(Duration::from_secs(24 * 3600))
    .build()?;
    println!(
        "echo_server: listening on {SERVER_IP}:7200 over memif {}",
        socket.display()
    );
    let listener = stack.listen();
    loop {
        let sock = match listener.accept(Duration::from_secs(3600)) {
            Ok(s) => s,
            Err(Error::TimedOut { .. }) => continue,
            Err(e) => return Err(e),
        };
        // An idle client is fine: wait for messages without a deadline.
        sock.set_timeout(None);
        let (mut msgs, mut bytes) = (0u64, 0u64);
        let end = loop {
            match sock.recv() {
                Ok(m) => {
                    bytes += m.len() as u64;
                    msgs += 1;
                    sock.send_bytes(m)?;
                }
                Err(Error::Closed) => break None,
                Err(e) => break Some(e),
            }
        };
        match end {
            None => println!(
                "echo_server: {} closed after {msgs} messages ({bytes} bytes) echoed",
                sock.peer_addr()
            ),
            Some(e) => println!(
                "echo_server: {} gone after {msgs} messages: {e}",
                sock.peer_addr()
            ),
        }
        drop(sock);
        if once {
            return Ok(());
        }
    }
}
