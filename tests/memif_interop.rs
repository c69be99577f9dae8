//! Interoperability with DPDK's net_memif (DPDK 22.11 `dpdk-testpmd`, macswap forwarding):
//! our client against testpmd as server, and our server against testpmd as client. Every
//! frame must come back with its payload intact. Skipped (with the reason printed) only
//! when dpdk-testpmd is not installed.

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

struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
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
    let vdev = format!("net_memif0,role={role},socket={sock},id=0,socket-abstract=no");
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
            "--forward-mode=macswap",
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
    Guard(child)
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
        println!("SKIPPED: dpdk-testpmd not installed");
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
        "30",
    ]);
    check_ping(ok, &text);
}

#[test]
fn memif_server_against_testpmd_client() {
    let Some(bin) = testpmd() else {
        println!("SKIPPED: dpdk-testpmd not installed");
        return;
    };
    let tag = format!("bpx_is{}", std::process::id());
    let sock = format!("/run/{tag}.sock");
    let _ = std::fs::remove_file(&sock);
    let mut server = Command::new(env!("CARGO_BIN_EXE_bypass"))
        .args([
            "memif-bench",
            "--role",
            "server",
            "--socket",
            &sock,
            "--mode",
            "ping",
            "--count",
            "20000",
            "--warmup",
            "100",
            "--link-timeout",
            "30",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bypass");
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
