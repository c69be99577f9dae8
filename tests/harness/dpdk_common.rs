//! Helpers shared by the DPDK integration tests: child processes (each with its own EAL),
//! pools, frames.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bypass::mem::{HugePages, Pool, PoolConfig};
use bypass::pmd::dpdk::{Eal, EalConfig};
use bypass::pmd::Port;

/// Env var naming the role a child test process plays.
pub const ROLE: &str = "BYPASS_DPDK_ROLE";

/// Start `test` (an `#[ignore]`d test of this same binary) in a child process with `env`.
pub fn spawn_child(test: &str, env: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("current exe");
    let mut c = Command::new(exe);
    c.args([
        "--ignored",
        "--exact",
        test,
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c.spawn().expect("spawn child test process")
}

/// Wait for a child with a deadline; kill it when the deadline passes. Returns (success,
/// stdout + stderr).
pub fn wait_child(mut c: Child, limit: Duration) -> (bool, String) {
    let t0 = Instant::now();
    let ok = loop {
        if let Some(st) = c.try_wait().expect("wait") {
            break st.success();
        }
        if t0.elapsed() > limit {
            let _ = c.kill();
            let _ = c.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    use std::io::Read;
    if let Some(mut s) = c.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = c.stderr.take() {
        let _ = s.read_to_string(&mut out);
    }
    (ok, out)
}

/// Start this process's EAL on `core` with ordinary pages and a file prefix unique to the
/// process and role.
pub fn eal(core: usize, role: &str) -> Eal {
    let mut cfg = EalConfig::new();
    cfg.cores = vec![core];
    cfg.file_prefix = Some(format!("bypass-{role}-{}", std::process::id()));
    Eal::init(&cfg).expect("EAL init")
}

/// A 4 KiB-page pool of `n` slots of 2 KiB + headroom.
pub fn pool(name: &str, n: u32) -> Pool {
    let mut pc = PoolConfig::new(name, n, 2048 + 128);
    pc.hugepages = HugePages::Never;
    Pool::new(&pc).expect("pool")
}

/// Poll until the port's link is up or `limit` passes.
pub fn wait_link(p: &mut dyn Port, limit: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if p.link().is_up() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Poll until the port's link is down (the peer closed its end), for up to 30 s (generous:
/// the peer is another process, which on a busy machine can wait seconds for a core); panics
/// naming `who` and the wait if it stays up.
pub fn wait_link_down(p: &mut dyn Port, who: &str) {
    let limit = Duration::from_secs(30);
    let t0 = Instant::now();
    while p.link().is_up() {
        assert!(
            t0.elapsed() < limit,
            "{who}: waited {limit:?} for the peer to close (link down); it stayed up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A test frame: broadcast-free local addresses, ethertype 0x88b5, a sequence number, a
/// deterministic pattern.
pub fn frame(seq: u32, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(20)];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    f[14..18].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in f[18..].iter_mut().enumerate() {
        *b = (seq as usize).wrapping_mul(31).wrapping_add(i) as u8;
    }
    f
}

/// The frame a sender sends after its last test frame: ethertype 0x88b6.
pub fn done_frame() -> Vec<u8> {
    let mut f = frame(u32::MAX, 60);
    f[12..14].copy_from_slice(&[0x88, 0xb6]);
    f
}

/// Whether `b` is [`done_frame`].
pub fn is_done(b: &[u8]) -> bool {
    b.len() >= 14 && b[12..14] == [0x88, 0xb6]
}

/// Run test `child` twice as child processes over the memif socket `sock`: first as
/// `server_role` (which serves the socket), then as `client_role`; wait for both, remove the
/// socket, print both outputs, assert both succeeded, and return the server's output.
#[allow(dead_code)] // not every test binary that includes this module uses it
pub fn run_memif_pair(child: &str, sock: &str, server_role: &str, client_role: &str) -> String {
    let _ = std::fs::remove_file(sock);
    let env = |role: &str| {
        vec![
            (ROLE, role.to_owned()),
            ("BYPASS_MEMIF_SOCK", sock.to_owned()),
        ]
    };
    let server = spawn_child(child, &env(server_role));
    // The client retries until the server's socket exists.
    let client = spawn_child(child, &env(client_role));
    let (sok, sout) = wait_child(server, Duration::from_secs(90));
    let (cok, cout) = wait_child(client, Duration::from_secs(30));
    let _ = std::fs::remove_file(sock);
    println!("--- {server_role} ---\n{sout}\n--- {client_role} ---\n{cout}");
    assert!(sok, "{server_role} failed");
    assert!(cok, "{client_role} failed");
    sout
}

/// Runs a command (`args[0]` is the program) and returns its output.
pub fn run(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Runs a command that must succeed.
pub fn must(args: &[&str]) {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Whether `tool` is on the PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
