//! Interoperability with DPDK's net_memif (DPDK 22.11 `dpdk-testpmd`, macswap forwarding):
//! our client against testpmd as server, and our server against testpmd as client. Every
//! frame must come back with its payload intact. Skipped (with the reason printed) only
//! when dpdk-testpmd is not installed.

#[path = "../../tests/harness/mod.rs"]
mod harness;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn testpmd() -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", "command -v dpdk-testpmd"])
        .output()
        .ok()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!p.is_empty()).then(|| PathBuf::from(p))
}

/// A testpmd child and its --file-prefix; stopped (and its runtime directory removed) on drop.
struct Guard(Child, String);
impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.1));
        // Keep testpmd's log only when the test failed.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(format!("/tmp/{}.testpmd.log", self.1));
        }
    }
}
impl Guard {
    fn stop(&mut self) {
        // SIGINT lets testpmd release its memif socket and files; then make sure it is gone.
        // SAFETY: signalling a child we spawned, by its pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        for _ in 0..50 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_testpmd(bin: &PathBuf, tag: &str, role: &str, sock: &str) -> Guard {
    spawn_testpmd_with(bin, tag, role, sock, &["--forward-mode=macswap"])
}

fn spawn_testpmd_with(bin: &PathBuf, tag: &str, role: &str, sock: &str, fwd: &[&str]) -> Guard {
    // `@name` is our spelling of an abstract-namespace socket: testpmd's default.
    let vdev = match sock.strip_prefix('@') {
        Some(name) => format!("net_memif0,role={role},socket={name},id=0"),
        None => format!("net_memif0,role={role},socket={sock},id=0,socket-abstract=no"),
    };
    let log = std::fs::File::create(format!("/tmp/{tag}.testpmd.log")).unwrap();
    let child = Command::new(bin)
        .args([
            "-l",
            "0,1",
            "--no-pci",
            "--no-huge",
            "-m",
            "512",
            &format!("--file-prefix={tag}"),
            &format!("--vdev={vdev}"),
            "--",
        ])
        .args(fwd)
        .args([
            "--auto-start",
            "--no-mlockall",
            "--total-num-mbufs=16384",
            "--stats-period",
            "100",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn dpdk-testpmd");
    Guard(child, tag.to_string())
}

fn bypass(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_bypass"))
        .arg("memif-bench")
        .args(args)
        .output()
        .expect("run bypass");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn check_ping(ok: bool, text: &str) {
    println!("{text}");
    assert!(ok, "ping against testpmd failed:\n{text}");
    assert!(text.contains("bad_frames=0 lost=0"), "{text}");
    assert!(text.contains("samples=20000"), "{text}");
    assert!(text.contains("peer=\"net_memif0\""), "{text}");
}

#[test]
fn memif_client_against_testpmd_server() {
    let Some(bin) = testpmd() else {
        harness::missing(
            "dpdk-testpmd not found on PATH (Debian package dpdk-dev)",
            "this test",
        );
        return;
    };
    let tag = format!("bpx_ic{}", std::process::id());
    let sock = format!("/run/{tag}.sock");
    let _ = std::fs::remove_file(&sock);
    let _tp = spawn_testpmd(&bin, &tag, "server", &sock);
    let (ok, text) = bypass(&[
        "--role",
        "client",
        "--socket",
        &sock,
        "--mode",
        "ping",
        "--count",
        "20000",
        "--warmup",
        "100",
        "--link-timeout",
        "30s",
        // A loaded machine can hold testpmd off the CPU for longer than the 200 ms default:
        // a late answer is not a lost frame.
        "--answer-timeout",
        "10s",
    ]);
    check_ping(ok, &text);
}

#[test]
fn memif_server_against_testpmd_client() {
    let Some(bin) = testpmd() else {
        harness::missing(
            "dpdk-testpmd not found on PATH (Debian package dpdk-dev)",
            "this test",
        );
        return;
    };
    let tag = format!("bpx_is{}", std::process::id());
    let sock = format!("/run/{tag}.sock");
    let _ = std::fs::remove_file(&sock);
    let mut server = spawn_bypass_server_ping(&sock);
    // Let the server bind before testpmd's client tries to connect (it retries anyway).
    std::thread::sleep(Duration::from_millis(300));
    let tp = spawn_testpmd(&bin, &tag, "client", &sock);
    let out = {
        let mut waited = 0;
        loop {
            if let Ok(Some(_)) = server.try_wait() {
                break;
            }
            waited += 1;
            if waited > 600 {
                let _ = server.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        server.wait_with_output().unwrap()
    };
    drop(tp);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    check_ping(out.status.success(), &text);
    assert!(
        !std::path::Path::new(&sock).exists(),
        "socket file left behind"
    );
}

/// Two queue pairs against testpmd (`--rxq=2 --txq=2`, macswap): frames sent on each of our
/// queues come back on that queue, payload intact, MAC addresses swapped.
#[test]
fn memif_client_two_queues_against_testpmd_server() {
    use bypass::pmd::memif::{InterfaceConfig, Memif, MemifConfig, Role};
    use bypass::pmd::Port;
    use std::time::Instant;

    let Some(bin) = testpmd() else {
        harness::missing(
            "dpdk-testpmd not found on PATH (Debian package dpdk-dev)",
            "this test",
        );
        return;
    };
    let tag = format!("bpx_iq{}", std::process::id());
    let sock = format!("/run/{tag}.sock");
    let _ = std::fs::remove_file(&sock);
    let vdev = format!("net_memif0,role=server,socket={sock},id=0,socket-abstract=no");
    let log = std::fs::File::create(format!("/tmp/{tag}.testpmd.log")).unwrap();
    let _tp = Guard(
        Command::new(&bin)
            .args([
                "-l",
                "0,1",
                "--no-pci",
                "--no-huge",
                "-m",
                "512",
                &format!("--file-prefix={tag}"),
                &format!("--vdev={vdev}"),
                "--",
                "--forward-mode=macswap",
                "--rxq=2",
                "--txq=2",
                "--auto-start",
                "--no-mlockall",
                "--total-num-mbufs=16384",
                // Without a stats period, non-interactive testpmd exits at EOF on stdin.
                "--stats-period",
                "100",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn dpdk-testpmd"),
        tag.clone(),
    );
    let mut cfg = MemifConfig::new(&sock, Role::Client, 0);
    let mut ic = InterfaceConfig::new(0);
    ic.queue_pairs = 2;
    cfg.interfaces = vec![ic];
    cfg.reconnect_interval = Duration::from_millis(50);
    let m = Memif::new(cfg).unwrap();
    assert!(
        m.wait_up(0, Duration::from_secs(30)),
        "link up: {:?}",
        m.last_error(0)
    );
    assert_eq!(m.active_queues(0), 2);
    for q in 0..2u16 {
        let mut port = m.port(0, q).unwrap();
        let mut back = vec![];
        let end = Instant::now() + Duration::from_secs(10);
        let mut seq = 0u8;
        // Resend until testpmd's forwarding has started and 100 frames came back.
        while back.len() < 100 && Instant::now() < end {
            let mut v = vec![];
            for _ in 0..10 {
                let mut b = port.alloc_tx().unwrap();
                let d = b.append(128).unwrap();
                d[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xbb]);
                d[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xaa]);
                d[12..14].copy_from_slice(&[0x88, 0xb5]);
                d[14] = q as u8;
                d[15] = seq;
                d[16..].fill(seq ^ 0x3c);
                seq = seq.wrapping_add(1);
                v.push(b);
            }
            port.tx_burst(&mut v);
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(20) {
                port.rx_burst(&mut back, 64);
            }
        }
        assert!(back.len() >= 100, "queue {q}: {} frames back", back.len());
        for f in &back {
            let d = f.data();
            assert_eq!(d.len(), 128);
            assert_eq!(&d[..6], &[2, 0, 0, 0, 0, 0xaa], "macswap swapped dst");
            assert_eq!(&d[6..12], &[2, 0, 0, 0, 0, 0xbb], "macswap swapped src");
            assert_eq!(d[14], q as u8, "came back on the queue it was sent on");
            assert!(d[16..].iter().all(|&x| x == d[15] ^ 0x3c), "payload intact");
        }
        assert_eq!(port.stats().rx_errors, 0);
        println!("queue {q}: {} frames back, {:?}", back.len(), port.stats());
    }
}

/// Our server outlives a testpmd client that is killed mid-stream: the link goes down, and a
/// restarted testpmd reconnects and forwards again.
#[test]
fn memif_server_survives_testpmd_client_restart() {
    use bypass::pmd::memif::{Memif, MemifConfig, MemifPort, Role};
    use bypass::pmd::Port;
    use std::time::Instant;

    let Some(bin) = testpmd() else {
        harness::missing(
            "dpdk-testpmd not found on PATH (Debian package dpdk-dev)",
            "this test",
        );
        return;
    };
    let tag = format!("bpx_ir{}", std::process::id());
    let sock = format!("/run/{tag}.sock");
    let m = Memif::new(MemifConfig::new(&sock, Role::Server, 0)).unwrap();
    let mut port = m.port(0, 0).unwrap();

    // Send frames until `n` came back (or 10 s pass); returns how many came back.
    fn bounce(port: &mut MemifPort, n: usize) -> usize {
        let mut back = vec![];
        let end = Instant::now() + Duration::from_secs(10);
        while back.len() < n && Instant::now() < end {
            let mut v = vec![];
            for _ in 0..8 {
                let mut b = port.alloc_tx().unwrap();
                b.append(64).unwrap().fill(0x77);
                v.push(b);
            }
            port.tx_burst(&mut v);
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(5) {
                port.rx_burst(&mut back, 64);
            }
        }
        assert!(back
            .iter()
            .all(|f| f.len() == 64 && f.data()[12..].iter().all(|&x| x == 0x77)));
        back.len()
    }

    let wait = |port: &mut MemifPort, up: bool| {
        let end = Instant::now() + Duration::from_secs(30);
        while port.link().is_up() != up && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(2));
        }
        port.link().is_up() == up
    };

    let mut tp = spawn_testpmd(&bin, &tag, "client", &sock);
    assert!(wait(&mut port, true), "link up with testpmd");
    assert!(bounce(&mut port, 200) >= 200);
    // SIGKILL: no DISCONNECT message, the socket just dies.
    tp.0.kill().unwrap();
    tp.0.wait().unwrap();
    assert!(wait(&mut port, false), "link down after testpmd was killed");
    println!("after kill: {:?}", m.last_error(0));
    let tag2 = format!("{tag}b");
    let _tp2 = spawn_testpmd(&bin, &tag2, "client", &sock);
    assert!(wait(&mut port, true), "link up with the restarted testpmd");
    assert!(bounce(&mut port, 200) >= 200);
    assert_eq!(m.connects(0), 2);
    println!("stats {:?}", port.stats());
}

/// DPDK 22.11 puts memif sockets in the abstract namespace by default: our `@name` spelling
/// reaches testpmd with no `socket-abstract=no`, in both roles.
#[test]
fn memif_abstract_socket_against_testpmd_both_roles() {
    let Some(bin) = testpmd() else {
        harness::missing(
            "dpdk-testpmd not found on PATH (Debian package dpdk-dev)",
            "this test",
        );
        return;
    };
    // Our client, testpmd server.
    let tag = format!("bpx_ia{}", std::process::id());
    let sock = format!("@/run/{tag}.sock");
    let tp = spawn_testpmd(&bin, &tag, "server", &sock);
    let (ok, text) = bypass(&[
        "--role",
        "client",
        "--socket",
        &sock,
        "--mode",
        "ping",
        "--count",
        "20000",
        "--warmup",
        "100",
        "--link-timeout",
        "30s",
        // A loaded machine can hold testpmd off the CPU for longer than the 200 ms default:
        // a late answer is not a lost frame.
        "--answer-timeout",
        "10s",
    ]);
    drop(tp);
    check_ping(ok, &text);

    // Our server, testpmd client.
    let tag = format!("bpx_ib{}", std::process::id());
    let sock = format!("@/run/{tag}.sock");
    let server = spawn_bypass_server_ping(&sock);
    std::thread::sleep(Duration::from_millis(300));
    let tp = spawn_testpmd(&bin, &tag, "client", &sock);
    let out = server.wait_with_output().unwrap();
    drop(tp);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    check_ping(out.status.success(), &text);
}

/// testpmd sends 2000-byte frames as two 1000-byte mbuf segments, which net_memif puts on
/// the ring as a two-descriptor chain: our client gathers each chain into one frame.
#[test]
fn memif_client_gathers_multisegment_frames_from_testpmd() {
    use bypass::pmd::memif::{Memif, MemifConfig, Role};
    use bypass::pmd::Port;
    use std::time::Instant;

    let Some(bin) = testpmd() else {
        harness::missing(
            "dpdk-testpmd not found on PATH (Debian package dpdk-dev)",
            "this test",
        );
        return;
    };
    let tag = format!("bpx_im{}", std::process::id());
    let sock = format!("/run/{tag}.sock");
    let _ = std::fs::remove_file(&sock);
    let _tp = spawn_testpmd_with(
        &bin,
        &tag,
        "server",
        &sock,
        &["--forward-mode=txonly", "--txpkts=1000,1000"],
    );
    let m = Memif::new(MemifConfig::new(&sock, Role::Client, 0)).unwrap();
    assert!(
        m.wait_up(0, Duration::from_secs(30)),
        "{:?}",
        m.last_error(0)
    );
    let mut port = m.port(0, 0).unwrap();
    let mut got = Vec::with_capacity(256);
    let mut n = 0;
    let end = Instant::now() + Duration::from_secs(20);
    while n < 10_000 && Instant::now() < end {
        port.rx_burst(&mut got, 256);
        for f in got.drain(..) {
            assert_eq!(f.len(), 2000, "a whole two-segment frame");
            n += 1;
        }
    }
    let s = port.stats();
    println!("{n} frames, {s:?}");
    assert!(n >= 10_000);
    assert_eq!(s.rx_errors, 0);
    assert_eq!(s.rx_bytes, s.rx_packets * 2000);
}

/// Our memif server as `bypass memif-bench`, pinging 20,000 frames at whoever connects.
fn spawn_bypass_server_ping(sock: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_bypass"))
        .args([
            "memif-bench",
            "--role",
            "server",
            "--socket",
            sock,
            "--mode",
            "ping",
            "--count",
            "20000",
            "--warmup",
            "100",
            "--link-timeout",
            "30s",
            "--answer-timeout",
            "10s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bypass")
}
