//! `bypass bench` against a peer over DPDK, for real: two network namespaces joined by a veth
//! pair; `bypass bench-peer --transports bypass-dpdk` in one, `bypass bench --peer` in the
//! other, each over `net_af_packet` on its end of the pair with `--no-huge`. The control
//! channel is the kernel's TCP between the namespaces' kernel addresses (.1, .2); the bypass
//! stacks use other addresses on the same link (.11, .12): the client has a static ARP entry
//! for the peer (`--dpdk-arp`), the peer resolves the client by ARP. Checks that every
//! pingpong, stream and rpc cell completed with messages moved, that the multi-connection
//! stream cells say why they are n/a, and that the `--once` peer exits cleanly after the run.
//! Never asserts a speed.
//!
//! Also: the errors for a missing peer, missing DPDK options and a missing device say what to
//! do (no root needed).
//!
//! Names (namespaces `bpdp-PID-a`/`-b`, veth `bpdPIDa`/`b`) are unique to this process; the
//! namespaces (and with them the veth pair) are removed on exit, even on failure.
#![cfg(feature = "dpdk")]

#[path = "../../tests/harness/mod.rs"]
mod harness;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "../../tests/harness/dpdk_common.rs"]
mod dpdk_common;
use dpdk_common::{must, run};

const EXE: &str = env!("CARGO_BIN_EXE_bypass");

/// Two namespaces joined by a veth pair; removed on drop (also when the test panics).
struct Net {
    ns: [String; 2],
    ifs: [String; 2],
    /// Kernel addresses (control channel), then the stacks' addresses (DPDK).
    kernel_ip: [String; 2],
    dpdk_ip: [String; 2],
}

impl Net {
    fn new() -> Net {
        let pid = std::process::id();
        let net = Net {
            ns: [format!("bpdp-{pid}-a"), format!("bpdp-{pid}-b")],
            ifs: [
                format!("bpd{}a", pid % 100_000),
                format!("bpd{}b", pid % 100_000),
            ],
            kernel_ip: ["10.79.0.1".into(), "10.79.0.2".into()],
            dpdk_ip: ["10.79.0.11".into(), "10.79.0.12".into()],
        };
        for ns in &net.ns {
            must(&["ip", "netns", "add", ns]);
        }
        must(&[
            "ip",
            "link",
            "add",
            &net.ifs[0],
            "type",
            "veth",
            "peer",
            "name",
            &net.ifs[1],
        ]);
        for i in 0..2 {
            let (ns, dev) = (&net.ns[i], &net.ifs[i]);
            must(&["ip", "link", "set", dev, "netns", ns]);
            // No IPv6 chatter on the link.
            let _ = run(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
            ]);
            let cidr = format!("{}/24", net.kernel_ip[i]);
            must(&["ip", "-n", ns, "addr", "add", &cidr, "dev", dev]);
            must(&["ip", "-n", ns, "link", "set", dev, "up"]);
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        net
    }

    /// `ip netns exec NS bypass ARGS --dpdk "--vdev=net_af_packet0,iface=IF --no-huge"
    /// --dpdk-ip IP`, for end `i`.
    fn bypass(&self, i: usize, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns[i], EXE])
            .args(args)
            .args([
                "--transports",
                "bypass-dpdk",
                "--dpdk",
                &format!(
                    "--vdev=net_af_packet0,iface={} --no-huge -m 128 --log-level=warning",
                    self.ifs[i]
                ),
                "--dpdk-ip",
                &self.dpdk_ip[i],
            ]);
        c
    }
}

impl Net {
    /// The MAC of end `i` of the veth pair.
    fn mac(&self, i: usize) -> String {
        let o = run(&[
            "ip",
            "-n",
            &self.ns[i],
            "-o",
            "link",
            "show",
            "dev",
            &self.ifs[i],
        ]);
        let text = String::from_utf8_lossy(&o.stdout);
        text.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("no MAC in {text:?}"))
            .to_owned()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.ns {
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

/// A child process killed and reaped on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Reaped {
    /// Waits at most `limit` for the child to exit; then kills it. Returns (success, its
    /// stdout, its stderr).
    fn wait(mut self, limit: Duration) -> (bool, String, String) {
        let t0 = Instant::now();
        // Read the pipes while waiting, so a chatty child cannot block on a full pipe.
        let reader = |p: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                if let Some(mut p) = p {
                    let _ = p.read_to_string(&mut s);
                }
                s
            })
        };
        let out = reader(self.0.stdout.take().map(|p| Box::new(p) as _));
        let err = reader(self.0.stderr.take().map(|p| Box::new(p) as _));
        let ok = loop {
            if let Some(st) = self.0.try_wait().expect("wait") {
                break st.success();
            }
            if t0.elapsed() > limit {
                let _ = self.0.kill();
                let _ = self.0.wait();
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (
            ok,
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        )
    }
}

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {v}"))
}

fn rows<'a>(v: &'a Value, mode: &str) -> &'a Vec<Value> {
    let rows = v[mode]
        .as_array()
        .unwrap_or_else(|| panic!("no {mode} rows in {v}"));
    assert!(!rows.is_empty(), "empty {mode} rows in {v}");
    for r in rows {
        assert_eq!(r["transport"], "bypass-dpdk", "{r}");
    }
    rows
}

#[test]
fn bench_against_a_dpdk_peer_in_another_namespace() {
    if !harness::require_tool("ip", "iproute2", "the DPDK peer bench") {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        harness::skip("network namespaces and veth pairs need root");
        return;
    }
    let net = Net::new();

    // The peer in namespace a: it prints its control address once DPDK is up.
    let listen = format!("{}:0", net.kernel_ip[0]);
    let mut peer = net.bypass(
        0,
        &["bench-peer", "--listen", &listen, "--once", "--core", "1"],
    );
    let mut peer = Reaped(
        peer.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start bench-peer"),
    );
    let stdout = peer.0.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        let _ = r.read_line(&mut line);
        let _ = tx.send(line);
        // Keep draining so the peer never blocks on its stdout.
        let _ = std::io::copy(&mut r, &mut std::io::sink());
    });
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
    let Some(addr) = line
        .trim()
        .strip_prefix("bypass-bench-peer listening on ")
        .map(str::to_owned)
    else {
        let (_, _, err) = peer.wait(Duration::from_secs(1));
        panic!("the peer printed {line:?} instead of its address; stderr:\n{err}");
    };

    // The client in namespace b, all three modes, tiny cells; the peer's MAC (its veth end's,
    // which net_af_packet reports as the port's) given statically.
    let arp = format!("{}={}", net.dpdk_ip[0], net.mac(0));
    let client = net
        .bypass(
            1,
            &[
                "bench",
                "pingpong",
                "stream",
                "rpc",
                "--peer",
                &addr,
                "--sizes",
                "64,64k",
                "--duration",
                "200ms",
                "--warmup",
                "50ms",
                "--rates",
                "2k",
                "--conns",
                "2",
                "--dpdk-arp",
                &arp,
                "--json",
                "-q",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bench");
    let (ok, out, err) = Reaped(client).wait(Duration::from_secs(60));
    println!("--- bench stderr ---\n{err}");
    assert!(ok, "bypass bench failed:\n{err}\n{out}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"));

    let pp = rows(&v, "pingpong");
    assert_eq!(pp.len(), 2, "{v}");
    for r in pp {
        assert_eq!(r["status"], "ok", "{r}");
        assert!(u(&r["rtt"], "samples") > 0, "{r}");
        println!(
            "pingpong {} B: {} round trips, p50 {} ns",
            u(r, "size"),
            u(&r["rtt"], "samples"),
            u(&r["rtt"], "p50_ns")
        );
    }
    let st = rows(&v, "stream");
    assert_eq!(st.len(), 4, "{v}");
    for r in st {
        if u(r, "conns") == 1 {
            assert_eq!(r["status"], "ok", "{r}");
            assert!(u(r, "sent_msgs") > 0 && u(r, "recv_msgs") > 0, "{r}");
            println!(
                "stream {} B: {} sent, {} received",
                u(r, "size"),
                u(r, "sent_msgs"),
                u(r, "recv_msgs")
            );
        } else {
            assert_eq!(r["status"], "not_applicable", "{r}");
            let note = r["note"].as_str().unwrap_or_default();
            assert!(note.contains("at most 1 connection"), "{r}");
        }
    }
    let rpc = rows(&v, "rpc");
    assert_eq!(rpc.len(), 1, "{v}");
    assert_eq!(rpc[0]["status"], "ok", "{}", rpc[0]);
    assert!(u(&rpc[0], "received") > 0, "{}", rpc[0]);
    println!(
        "rpc: {} sent, {} received",
        u(&rpc[0], "sent"),
        u(&rpc[0], "received")
    );

    // The --once peer was told QUIT: it exits by itself, successfully.
    let (ok, _, err) = peer.wait(Duration::from_secs(10));
    assert!(ok, "bench-peer did not exit cleanly:\n{err}");
    drop(net);
}

fn bypass(args: &[&str]) -> Output {
    Command::new(EXE).args(args).output().expect("run bypass")
}

#[test]
fn setup_errors_say_what_to_do() {
    // bypass-dpdk without --peer: the usage error names the peer command.
    let o = bypass(&["bench", "--transports", "bypass-dpdk"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("bypass bench-peer") && e.contains("--peer ADDR"),
        "{e}"
    );

    // --dpdk options without the transport.
    let o = bypass(&["bench", "--dpdk-ip", "10.0.0.1"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("--transports bypass-dpdk"), "{e}");

    // A peer that serves bypass-dpdk needs --dpdk and --dpdk-ip; it fails before listening.
    let o = bypass(&[
        "bench-peer",
        "--transports",
        "bypass-dpdk",
        "--dpdk-ip",
        "10.0.0.1",
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains("needs --dpdk \"EAL ARGS\""), "{e}");
    assert!(o.stdout.is_empty(), "it must not listen");

    // EAL arguments naming no device.
    let o = bypass(&[
        "bench-peer",
        "--transports",
        "bypass-dpdk",
        "--dpdk",
        "--no-huge",
        "--dpdk-ip",
        "10.0.0.1",
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{e}");
    assert!(e.contains("no DPDK device") && e.contains("--vdev="), "{e}");
}
