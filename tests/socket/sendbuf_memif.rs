//! Zero-copy send between two real OS processes over memif: this process is the memif
//! client and sends with `Socket::send_buf`; the `echo_server` example, in another process,
//! echoes every message back. Checks the messages (up to 1 MiB) come back intact, that every
//! chunk the application wrote went out in a frame lying in that very chunk's memory (the
//! slot of the shared memif region the peer reads, posted to the ring with no copy), and that
//! every buffer returns to the pool.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness;
use crate::port_spy;
use port_spy::Spy;

use bypass::pmd::memif::{InterfaceConfig, Memif, MemifConfig, Role};
use bypass::socket::{Backend, Stack};

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const SERVER_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 1];
const CLIENT_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 2];

/// target/<profile>/examples/echo_server, built with this test's cargo and profile.
fn echo_server_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps");
    let target_dir = profile_dir.parent().expect("target dir");
    let bin = profile_dir.join("examples").join("echo_server");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "--example",
        "echo_server",
        "--manifest-path",
    ])
    .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
    .arg("--target-dir")
    .arg(target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let st = cmd.status().expect("run cargo build --example echo_server");
    assert!(
        st.success(),
        "cargo build --example echo_server failed: {st}"
    );
    bin
}

/// The server process, killed (and reaped) if the test ends before it exits.
struct Proc(Option<Child>);

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn send_buf_over_memif_between_two_processes_posts_the_written_slots() {
    // Busy-polling stacks: one such test at a time in this binary (harness).
    let _pair = harness::one_pair_at_a_time();
    let path = std::env::temp_dir().join(format!("bypass-sendbuf-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let server = Command::new(echo_server_bin())
        .arg(&path)
        .arg("--once")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn echo_server");
    let mut server = Proc(Some(server));
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < Duration::from_secs(30), "no memif socket");
        std::thread::sleep(Duration::from_millis(10));
    }

    let mut ic = InterfaceConfig::new(0);
    ic.buffer_size = (9000u32 + 14).div_ceil(64) * 64;
    let mut cfg = MemifConfig::new(&path, Role::Client, 0);
    cfg.interfaces = vec![ic];
    let memif = Memif::new(cfg).expect("memif client");
    let pool = memif.pool(0).expect("the client's shared region");
    let region =
        pool.region().as_ptr() as usize..pool.region().as_ptr() as usize + pool.region().len();
    let ends = Arc::new(Mutex::new(Vec::new()));
    let port = Spy {
        inner: memif.port(0, 0).expect("memif port"),
        ends: ends.clone(),
    };
    let stack = Stack::builder(Backend::Port(Box::new(port)), CLIENT_IP)
        .mac(CLIENT_MAC)
        .static_arp(SERVER_IP, SERVER_MAC)
        .mtu(9000)
        .max_message(4 << 20)
        .link_timeout(Duration::from_secs(30))
        .build()
        .expect("client stack");
    let sock = stack
        .connect(SocketAddrV4::new(SERVER_IP, 7200), Duration::from_secs(10))
        .expect("connect to echo_server");
    sock.set_timeout(Some(Duration::from_secs(30)));
    for (k, len) in [100usize, 20_000, 1 << 20, 1 << 20].into_iter().enumerate() {
        ends.lock().unwrap().clear();
        let mut b = sock.send_buf(len).unwrap();
        let mut chunk_ends = Vec::new();
        let mut at = 0usize;
        for c in b.chunks_mut() {
            for x in c.iter_mut() {
                *x = (at.wrapping_mul(7) ^ k) as u8;
                at += 1;
            }
            let end = c.as_ptr() as usize + c.len();
            assert!(
                region.contains(&(end - 1)),
                "chunks lie in the shared memif region"
            );
            chunk_ends.push(end);
        }
        let zc0 = sock.tx_zero_copy();
        b.send().unwrap();
        let back = sock.recv().unwrap();
        assert_eq!(back.len(), len);
        if let Some(i) = (0..len).find(|&i| back[i] != (i.wrapping_mul(7) ^ k) as u8) {
            panic!("{len}-byte message differs first at byte {i}");
        }
        let zc = sock.tx_zero_copy() - zc0;
        let sent: HashSet<usize> = ends.lock().unwrap().iter().copied().collect();
        let same = chunk_ends.iter().filter(|e| sent.contains(e)).count();
        println!(
            "{len} B over memif: {} chunks, {zc} sent without a copy, {same} frames ended in a chunk",
            chunk_ends.len()
        );
        assert_eq!(zc as usize, chunk_ends.len());
        assert_eq!(same, chunk_ends.len(), "each chunk's own slot was posted");
    }
    sock.close().expect("close");
    drop(stack);
    let st = server
        .0
        .take()
        .expect("server")
        .wait()
        .expect("echo_server exit");
    assert!(st.success(), "echo_server: {st}");
    assert_eq!(pool.stats().in_use, 0, "every slot came back");
    drop(memif);
    let _ = std::fs::remove_file(&path);
}
