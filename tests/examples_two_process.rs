//! The examples as they are meant to run: each pair as two real OS processes over memif.
//! Checks the echo client's messages come back intact and the file sent arrives whole with
//! matching checksums (and equal bytes on disk); that both processes exit 0 within a
//! deadline; and that no memif socket file is left behind.
//!
//! The example binaries are built by `cargo test` (examples are always compiled); when only
//! this test was built (`cargo test --test examples_two_process`), the test builds them
//! with the same cargo, profile and target directory.

mod harness;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(120);

/// target/<profile>/examples, built.
fn examples_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        // target/<profile>/deps/examples_two_process-HASH
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary in target/<profile>/deps");
        let target_dir = profile_dir.parent().expect("target dir");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--examples", "--manifest-path"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir);
        if release {
            cmd.arg("--release");
        }
        if cfg!(feature = "dpdk") {
            cmd.args(["--features", "dpdk"]);
        }
        let st = cmd.status().expect("run cargo build --examples");
        assert!(st.success(), "cargo build --examples failed: {st}");
        profile_dir.join("examples")
    })
}

/// A child that is killed (and reaped) if the test fails before it exits.
struct Proc {
    name: &'static str,
    child: Option<Child>,
}

impl Proc {
    fn spawn(name: &'static str, args: &[&Path]) -> Proc {
        Proc::spawn_env(name, args, &[])
    }

    fn spawn_env(name: &'static str, args: &[&Path], env: &[(&str, &str)]) -> Proc {
        let bin = examples_dir().join(name);
        assert!(bin.exists(), "{} was not built", bin.display());
        let child = Command::new(&bin)
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        Proc {
            name,
            child: Some(child),
        }
    }

    /// Waits for exit (killing it at `deadline`); returns (success, stdout, stderr).
    fn finish(mut self, deadline: Instant) -> (bool, String, String) {
        let mut child = self.child.take().expect("child");
        let status = loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                break Some(st);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        match status {
            None => panic!(
                "{} still running after {DEADLINE:?}; killed\nstdout:\n{out}\nstderr:\n{err}",
                self.name
            ),
            Some(st) => (st.success(), out, err),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A unique path under the temp dir, removed (if still there) when dropped.
struct TempPath(PathBuf);

impl TempPath {
    fn new(what: &str) -> TempPath {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        TempPath(
            std::env::temp_dir().join(format!("bypass-examples-{}-{n}-{what}", std::process::id())),
        )
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn fnv1a64(data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for &b in data {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[test]
fn echo_server_and_client_as_two_processes() {
    let _one = harness::one_pair_at_a_time();
    let sock = TempPath::new("echo.sock");
    let server = Proc::spawn("echo_server", &[&sock.0, Path::new("--once")]);
    let client = Proc::spawn("echo_client", &[&sock.0, Path::new("4")]);
    let deadline = Instant::now() + DEADLINE;
    let (c_ok, c_out, c_err) = client.finish(deadline);
    let (s_ok, s_out, s_err) = server.finish(deadline);
    assert!(c_ok, "echo_client failed:\n{c_out}\n{c_err}");
    assert!(s_ok, "echo_server failed:\n{s_out}\n{s_err}");
    // 4 rounds of 6 sizes: 1 + 64 + 1400 + 8 KiB + 64 KiB + 1 MiB per round.
    let bytes = 4 * (1 + 64 + 1400 + (8 << 10) + (64 << 10) + (1 << 20));
    assert!(
        c_out.contains(&format!("24 messages ({bytes} bytes) echoed intact")),
        "{c_out}"
    );
    assert!(
        s_out.contains(&format!("closed after 24 messages ({bytes} bytes) echoed")),
        "{s_out}"
    );
    assert!(
        !sock.0.exists(),
        "memif socket {} left behind",
        sock.0.display()
    );
}

fn transfer(len: usize, chunk: Option<usize>) {
    transfer_with(len, chunk, &[]);
}

/// `transfer`, both processes with the environment `env` (e.g. `BYPASS_FAULTS`).
fn transfer_with(len: usize, chunk: Option<usize>, env: &[(&str, &str)]) {
    let _one = harness::one_pair_at_a_time();
    let sock = TempPath::new("file.sock");
    let input = TempPath::new("in.bin");
    let output = TempPath::new("out.bin");
    // Deterministic, incompressible-looking content.
    let mut rng = bypass::rng::SplitMix64::new(len as u64);
    let data: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
    std::fs::write(&input.0, &data).unwrap();
    let hash = format!("{:016x}", fnv1a64(&data));

    let recv = Proc::spawn_env("file_recv", &[&sock.0, &output.0], env);
    let chunk_arg = chunk.map(|c| PathBuf::from(c.to_string()));
    let mut send_args: Vec<&Path> = vec![&sock.0, &input.0];
    if let Some(c) = &chunk_arg {
        send_args.push(c);
    }
    let send = Proc::spawn_env("file_send", &send_args, env);
    let deadline = Instant::now() + DEADLINE;
    let (s_ok, s_out, s_err) = send.finish(deadline);
    let (r_ok, r_out, r_err) = recv.finish(deadline);
    assert!(s_ok, "file_send failed:\n{s_out}\n{s_err}");
    assert!(r_ok, "file_recv failed:\n{r_out}\n{r_err}");
    assert!(
        r_out.contains(&format!("received {len} bytes"))
            && r_out.contains(&format!("fnv1a64 {hash}, sender's {hash}: checksum ok")),
        "{r_out}"
    );
    assert!(
        s_out.contains(&format!("sent {len} bytes"))
            && s_out.contains(&format!(
                "fnv1a64 {hash}, receiver's {hash} over {len} bytes: checksum ok"
            )),
        "{s_out}"
    );
    let got = std::fs::read(&output.0).unwrap();
    assert_eq!(got.len(), len);
    assert!(got == data, "the received file differs from the one sent");
    assert!(
        !sock.0.exists(),
        "memif socket {} left behind",
        sock.0.display()
    );
}

#[test]
fn file_of_a_few_mib_in_one_mib_messages() {
    transfer((4 << 20) + 12_345, None);
}

#[test]
fn file_in_single_packet_messages() {
    transfer((2 << 20) + 7, Some(8000));
}

/// Issue 20: the file examples stay correct on a bad network. 5 % of the frames each way
/// lost and 5 % reordered (the faults wrapper, `BYPASS_FAULTS`): 64 KiB chunks complete out
/// of send order; the receiver asks for send order (`StackBuilder::ordered`), so the file
/// and its checksum come out whole. (With completion order it wrote a later chunk first and
/// took the trailer for data: "more than the announced 8000000 bytes".)
#[test]
fn file_under_five_percent_loss_and_reorder() {
    transfer_with(
        (3 << 20) + 321,
        Some(65536),
        &[("BYPASS_FAULTS", "loss=0.05,reorder=0.05,seed=11")],
    );
}

/// kv_server on two cores and four kv_client processes (ids 0-3, two on each core), each
/// PUTting 4 KiB, 64 KiB and 1 MiB values and GETting every one back twice with every byte
/// checked; the server counts each core's connections and operations.
#[test]
fn kv_server_serves_four_client_processes_on_two_cores_with_values_intact() {
    let _one = harness::one_pair_at_a_time();
    let sock = TempPath::new("kv.sock");
    let core_sock = |c: u32| {
        let mut s = sock.0.clone().into_os_string();
        s.push(format!(".{c}"));
        PathBuf::from(s)
    };
    let (clients, (ok, out, err)) = kv_two_cores(&sock, &[], &[]);
    for (id, out, err) in &clients {
        // 12 keys GET twice each (the default --rounds 2).
        assert!(
            out.contains(&format!(
                "kv_client {id}: all {} values intact (every byte checked)",
                2 * KV_KEYS
            )),
            "kv_client --id {id} did not report every value intact:\n{out}\n{err}"
        );
        assert!(
            out.contains(&format!(
                "kv_client {id}: {KV_KEYS} PUTs, {} GETs",
                2 * KV_KEYS
            )),
            "{out}"
        );
    }
    assert!(ok, "kv_server failed:\n{out}\n{err}");
    // Two clients per core; each client's GET of a missing key counts among the GETs.
    for c in 0..2 {
        let want = format!(
            "kv_server: core {c}: 2 connections, {} PUTs, {} GETs, {} keys held",
            2 * KV_KEYS,
            2 * (2 * KV_KEYS + 1),
            2 * KV_KEYS
        );
        assert!(out.contains(&want), "expected {want:?} in:\n{out}\n{err}");
        let path = core_sock(c);
        assert!(
            !path.exists(),
            "memif socket {} left behind",
            path.display()
        );
    }
}

/// Issue 20: kv_server on two cores sharded by key (`--shard-by-key`): four kv_client
/// processes, two on each core, each PUT 12 keys and then GET the keys of all four clients
/// (`--key-space shared`), every byte checked. A key lives on core hash(key) % 2, so about
/// half of each client's requests arrive on a core that does not own their key and are
/// handed over through the cores' lock-free queues and answered back: each core reports
/// requests handed off (> 0), and what one core handed off the other served.
#[test]
fn kv_server_sharded_by_key_serves_keys_written_through_the_other_core() {
    let _one = harness::one_pair_at_a_time();
    let sock = TempPath::new("kvshard.sock");
    let (clients, (ok, out, err)) = kv_two_cores(
        &sock,
        &["--shard-by-key"],
        &[
            "--sizes",
            "100,4k,64k,200k",
            "--key-space",
            "shared",
            "--clients",
            "4",
        ],
    );
    for (id, out, err) in &clients {
        // Every client's 12 keys GET twice each (the default --rounds 2), three quarters of
        // them PUT by the other clients, half of those through the other core.
        let gets = 2 * 4 * KV_KEYS;
        assert!(
            out.contains(&format!(
                "kv_client {id}: all {gets} values intact (every byte checked)"
            )),
            "kv_client --id {id} did not report every value intact:\n{out}\n{err}"
        );
        assert!(
            out.contains(&format!("kv_client {id}: {KV_KEYS} PUTs, {gets} GETs")),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "kv_client {id}: {} GETs of keys other clients PUT",
                2 * 3 * KV_KEYS
            )),
            "{out}"
        );
    }
    assert!(ok, "kv_server failed:\n{out}\n{err}");
    // "kv_server: core C: N requests handed off to other cores, M served for other cores"
    let counts = |c: u32| -> (u64, u64) {
        let prefix = format!("kv_server: core {c}: ");
        let line = out
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .find(|l| l.contains("requests handed off"))
            .unwrap_or_else(|| panic!("no hand-off count of core {c} in:\n{out}\n{err}"));
        let num = |after: &str| -> u64 {
            line.split(after)
                .next()
                .unwrap()
                .split(' ')
                .next_back()
                .unwrap()
                .parse()
                .unwrap()
        };
        (num(" requests handed off"), num(" served for other cores"))
    };
    let (h0, s0) = counts(0);
    let (h1, s1) = counts(1);
    assert!(
        h0 > 0 && h1 > 0,
        "no requests handed off between the cores:\n{out}"
    );
    assert_eq!((h0, h1), (s1, s0), "hand-offs lost or doubled:\n{out}");
    // Every PUT was executed once, by the key's core: 48 keys held between them.
    let total = format!(
        "kv_server: 4 connections served on 2 cores, {} PUTs",
        4 * KV_KEYS
    );
    assert!(out.contains(&total), "expected {total:?} in:\n{out}\n{err}");
    let held: usize = (0..2)
        .map(|c| {
            let prefix = format!("kv_server: core {c}: 2 connections, ");
            let line = out
                .lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no line of core {c} in:\n{out}\n{err}"));
            let (_, rest) = line.split_once(" GETs, ").unwrap();
            rest.split(' ').next().unwrap().parse::<usize>().unwrap()
        })
        .sum();
    assert_eq!(held, 4 * KV_KEYS as usize, "{out}");
    eprintln!("{out}");
}

/// Keys each kv_client of the kv tests PUTs.
const KV_KEYS: u32 = 12;

/// kv_server on two cores (`--clients 4 --cores 2 --exit-after 4` and `server_args`) and
/// four kv_client processes, ids 0-3, two on each core (`--cores 2 --keys 12 --verify` and
/// `client_args`). Returns each client's id, stdout and stderr (each exited 0) and the
/// server's exit, stdout and stderr.
#[allow(clippy::type_complexity)]
fn kv_two_cores(
    sock: &TempPath,
    server_args: &[&str],
    client_args: &[&str],
) -> (Vec<(String, String, String)>, (bool, String, String)) {
    let spawn = |exe: &'static str, argv: Vec<String>| {
        let mut args = vec![sock.0.as_path()];
        args.extend(argv.iter().map(Path::new));
        Proc::spawn(exe, &args)
    };
    let own = |fixed: &[&str], extra: &[&str]| -> Vec<String> {
        fixed.iter().chain(extra).map(|a| a.to_string()).collect()
    };
    let server = spawn(
        "kv_server",
        own(
            &["--clients", "4", "--cores", "2", "--exit-after", "4"],
            server_args,
        ),
    );
    let keys = KV_KEYS.to_string();
    let clients: Vec<(String, Proc)> = (0..4)
        .map(|id| {
            let id = id.to_string();
            let mut argv = own(&["--id", &id, "--cores", "2", "--keys", &keys], client_args);
            argv.push("--verify".into());
            let c = spawn("kv_client", argv);
            (id, c)
        })
        .collect();
    let deadline = Instant::now() + DEADLINE;
    let outs = clients
        .into_iter()
        .map(|(id, c)| {
            let (ok, out, err) = c.finish(deadline);
            assert!(ok, "kv_client --id {id} failed:\n{out}\n{err}");
            (id, out, err)
        })
        .collect();
    (outs, server.finish(deadline))
}
