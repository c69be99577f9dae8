//! The `bypass` command line as a newcomer meets it: help on every command, `--version`,
//! usage errors with exit status 2, one duration syntax, completions, man pages, and the
//! library's logs on stderr (`-v`, `-q`, `RUST_LOG`), passed down to child processes.
use std::process::{Command, Output};

const EXE: &str = env!("CARGO_BIN_EXE_bypass");

fn run(args: &[&str]) -> Output {
    run_env(args, &[])
}

fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(EXE);
    c.args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run bypass")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Exit status 0 and stdout; panics with both streams otherwise.
fn ok(args: &[&str]) -> String {
    let o = run(args);
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(0), "bypass {args:?}\n{out}\n{err}");
    out
}

/// Exit status 2 and stderr.
fn usage_error(args: &[&str]) -> String {
    let o = run(args);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "bypass {args:?}\n{err}");
    assert!(o.stdout.is_empty(), "bypass {args:?} printed on stdout");
    err
}

#[test]
fn help_on_every_command_exits_zero() {
    let top = ok(&["--help"]);
    for cmd in [
        "mem",
        "memif-bench",
        "bench",
        "bench-peer",
        "sim",
        "stat",
        "completions",
        "man",
    ] {
        assert!(top.contains(cmd), "`bypass --help` lists no {cmd}:\n{top}");
    }
    assert_eq!(ok(&["-h"]), ok(&["help"]));
    for path in [
        &["mem"][..],
        &["memif-bench"],
        &["bench"],
        &["bench-peer"],
        &["sim"],
        &["sim", "cc"],
        &["sim", "path"],
        &["stat"],
        &["completions"],
        &["man"],
    ] {
        let mut args = path.to_vec();
        args.push("--help");
        let help = ok(&args);
        let usage = format!("Usage: bypass {}", path.join(" "));
        assert!(help.contains(&usage), "{args:?}:\n{help}");
        // `bypass help CMD` prints the same page (not the top-level one).
        let mut via_help = vec!["help"];
        via_help.extend_from_slice(path);
        assert_eq!(ok(&via_help), help, "bypass help {path:?}");
    }
    let bench = ok(&["help", "bench"]);
    assert!(bench.contains("--duration <TIME>"), "{bench}");
    assert!(
        bench.contains("Modes: pingpong"),
        "no long description:\n{bench}"
    );
    assert!(bench.contains("bypass bench-peer"), "{bench}");
    assert!(
        !bench.contains("memif-bench"),
        "the top-level help:\n{bench}"
    );
    let memif = ok(&["memif-bench", "--help"]);
    assert!(memif.contains("--link-timeout <TIME>"), "{memif}");
    assert!(memif.contains("cacheline"), "{memif}");
    // The hidden server role of `sim path` stays out of its help.
    assert!(!ok(&["sim", "path", "--help"]).contains("--role"));
}

#[test]
fn version_names_the_crate_version_and_the_revision() {
    let v = ok(&["--version"]);
    assert_eq!(v, ok(&["-V"]));
    let want = format!("bypass {} (", env!("CARGO_PKG_VERSION"));
    assert!(v.starts_with(&want), "{v}");
    let rev = v
        .trim()
        .strip_prefix(&want)
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no (revision) in {v:?}"));
    let hash = rev.strip_suffix("-dirty").unwrap_or(rev);
    assert!(
        rev == "unknown" || (hash.len() >= 7 && hash.chars().all(|c| c.is_ascii_hexdigit())),
        "revision {rev:?}"
    );
    assert!(ok(&["bench", "--version"]).contains(rev));
}

#[test]
fn unknown_commands_and_options_are_usage_errors() {
    let e = usage_error(&["frob"]);
    assert!(e.contains("unrecognized subcommand 'frob'"), "{e}");
    assert!(e.contains("Usage: bypass"), "{e}");
    let e = usage_error(&[]);
    assert!(e.contains("Usage: bypass"), "{e}");
    let e = usage_error(&["memif-bench", "--bogus"]);
    assert!(e.contains("Usage: bypass memif-bench"), "{e}");
    let e = usage_error(&["memif-bench", "--mode", "warp"]);
    assert!(e.contains("possible values"), "{e}");
    let e = usage_error(&["mem", "--iterations", "many"]);
    assert!(e.contains("--iterations"), "{e}");
    let e = usage_error(&["stat", "127.0.0.1:1", "--json"]);
    assert!(e.contains("--once"), "{e}");
    usage_error(&["sim", "frob"]);
    usage_error(&["-v", "-q", "mem"]);
}

#[test]
fn durations_have_one_syntax() {
    // A bad duration: a clear error naming the option, exit status 2.
    let e = usage_error(&["bench", "--duration", "5"]);
    assert!(e.contains("--duration") && e.contains("has no unit"), "{e}");
    let e = usage_error(&["bench", "--duration=fast"]);
    assert!(e.contains("not a duration"), "{e}");
    let e = usage_error(&["stat", "127.0.0.1:1", "--interval", "3days"]);
    assert!(e.contains("unknown unit"), "{e}");
    let e = usage_error(&["stat", "127.0.0.1:1", "--interval", "0s"]);
    assert!(e.contains("longer than 0"), "{e}");
    usage_error(&["sim", "path", "--idle-ms", "50"]);
    usage_error(&["memif-bench", "--secs", "5"]);

    // `--key=value`, and the duration reaches the run: the report says 300ms per cell.
    let out = ok(&[
        "bench",
        "pingpong",
        "--transports=kernel-udp",
        "--variants=blocking",
        "--sizes=64",
        "--duration=300ms",
        "--warmup=10ms",
        "--json",
        "-q",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let context = v["context"].as_str().unwrap_or_default();
    assert!(context.contains("300ms per cell"), "{context}");
    assert_eq!(v["pingpong"].as_array().map(Vec::len), Some(1), "{v}");
}

#[test]
fn completions_and_man_pages() {
    let bash = ok(&["completions", "bash"]);
    assert!(
        bash.contains("complete -F") && bash.contains("memif-bench"),
        "{bash}"
    );
    assert!(ok(&["completions", "zsh"]).contains("#compdef bypass"));
    usage_error(&["completions", "tcsh"]);

    let dir = std::env::temp_dir().join(format!("bypass-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ok(&["man", "--out", dir.to_str().expect("utf-8 temp dir")]);
    for page in [
        "bypass.1",
        "bypass-mem.1",
        "bypass-memif-bench.1",
        "bypass-bench.1",
        "bypass-bench-peer.1",
        "bypass-sim-cc.1",
        "bypass-sim-path.1",
        "bypass-stat.1",
    ] {
        let roff =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            roff.starts_with(".ie") || roff.contains(".TH"),
            "{page}:\n{roff}"
        );
    }
    let bench = std::fs::read_to_string(dir.join("bypass-bench.1")).unwrap_or_default();
    assert!(bench.contains("duration"), "{bench}");
    // Rendered by man(1) where it is installed.
    let rendered = Command::new("man")
        .args(["-l", "-P", "cat"])
        .arg(dir.join("bypass-bench.1"))
        .env("MANWIDTH", "100")
        .output();
    if let Ok(r) = rendered {
        if r.status.success() {
            let page = text(&r.stdout);
            assert!(
                page.contains("bypass-bench") && page.contains("--duration"),
                "{page}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn logs_show_on_stderr_and_follow_the_flags() {
    // memif's control thread logs "memif link up" at info level.
    let loopback = ["memif-bench", "--mode", "loopback", "--count", "2000"];
    let with = |pre: &[&str], env: &[(&str, &str)]| {
        let mut args = pre.to_vec();
        args.extend_from_slice(&loopback);
        let o = run_env(&args, env);
        let (out, err) = (text(&o.stdout), text(&o.stderr));
        assert!(o.status.success(), "{args:?} {env:?}\n{out}\n{err}");
        assert!(out.contains("cpu_ns_per_hop="), "{out}");
        err.contains("memif link up")
    };
    assert!(!with(&[], &[]), "info lines at the default level");
    assert!(with(&["-v"], &[]), "-v shows info lines");
    assert!(
        with(&[], &[("RUST_LOG", "bypass=info")]),
        "RUST_LOG is read"
    );
    assert!(
        !with(&["-v"], &[("RUST_LOG", "error")]),
        "RUST_LOG overrides -v"
    );
}

#[test]
fn bench_passes_its_verbosity_to_the_peer() {
    // Both processes log their memif link coming up at info level: the client here, and the
    // peer `bench` spawns only if it was given -v too.
    let o = run(&[
        "-v",
        "bench",
        "pingpong",
        "--transports",
        "bypass-memif",
        "--sizes",
        "64",
        "--duration",
        "50ms",
        "--warmup",
        "10ms",
        "--no-pin",
        "--json",
    ]);
    let err = text(&o.stderr);
    let ups = err.matches("memif link up").count();
    assert!(ups >= 2, "link-up lines from both processes:\n{err}");
    assert!(
        err.contains("(server)") && err.contains("(client)"),
        "{err}"
    );
}

/// `bypass ... | head` closes the pipe early: the process ends quietly on SIGPIPE, as any
/// Unix filter does, instead of panicking in `println!` with "failed printing to stdout".
#[test]
fn a_closed_stdout_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader); // closed before the first write: every write fails with EPIPE
    let o = Command::new(EXE)
        .args(["completions", "bash"])
        .env_remove("RUST_LOG")
        .stdout(writer)
        .output()
        .expect("run bypass");
    let err = text(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        o.status.signal(),
        Some(libc::SIGPIPE),
        "status {:?}, stderr: {err}",
        o.status
    );
}
