//! What every test binary shares: one way to skip a check, and waits on a condition with a
//! deadline generous enough for a loaded machine.
//!
//! Skips. A test that cannot run a check here says so through [`skip`] or [`require_tool`],
//! never with a bare `println!` (captured, so invisible when the test passes):
//! - the line `binary::test: reason` is appended to the file named by `BYPASS_SKIP_LOG`
//!   (scripts/test.sh sets it and lists the lines under `skipped:` in its summary), and
//!   printed to stderr;
//! - with `BYPASS_STRICT=1` (scripts/test.sh sets it once its package step has installed
//!   everything), a missing tool the script installs is a failure, not a skip: a green run
//!   then means dpdk-testpmd, tshark, promtool... really ran. Conditions of the machine the
//!   script cannot provide (root, a GPU, an invariant TSC, free hugepages) stay skips, listed.
//!
//! Waits. [`wait_for`] polls a condition until it holds or a deadline passes and returns how
//! long it took; its error names what it waited for and for how long. Deadlines are for the
//! failure case only (a condition that holds returns at once), so they are generous:
//! [`SETTLE`] for things that normally take milliseconds.
//!
//! Included with `#[path = "../harness/mod.rs"] mod harness;` by the per-layer test binaries
//! (`tests/<layer>/main.rs`), with `mod harness;` by the single-file ones and with `#[path]`
//! by the library's unit tests (`src/lib.rs`). The other shared helpers sit beside it, each
//! included with `#[path]` by the binaries that use it: `alloc.rs` (the counting global
//! allocator), `runtime_util.rs`, `port_spy.rs`, `socket_pair.rs` (a server and a client
//! stack, connected), `dpdk_common.rs`.
#![allow(dead_code)]

use std::io::Write;
use std::time::{Duration, Instant};

/// Env var: `1` makes a missing tool that scripts/test.sh installs fail the test.
pub const STRICT_ENV: &str = "BYPASS_STRICT";
/// Env var: the file that collects one line per skip.
pub const SKIP_LOG_ENV: &str = "BYPASS_SKIP_LOG";

/// Deadline for a condition that normally settles in milliseconds (buffers returning to a
/// pool, a frame crossing an in-process link): generous for a loaded 2-core machine, where a
/// thread can wait seconds for a core.
pub const SETTLE: Duration = Duration::from_secs(30);

/// Whether strict mode is on (`BYPASS_STRICT=1`).
pub fn strict() -> bool {
    std::env::var(STRICT_ENV).is_ok_and(|v| v == "1")
}

/// `binary::test` for the running test: the binary's name without cargo's hash, and the
/// test thread's name (libtest names each test's thread after the test).
pub fn test_name() -> String {
    let bin = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let bin = match bin.rsplit_once('-') {
        Some((b, hash)) if hash.len() == 16 && hash.bytes().all(|c| c.is_ascii_hexdigit()) => {
            b.to_string()
        }
        _ => bin,
    };
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    if test == "main" {
        bin
    } else {
        format!("{bin}::{test}")
    }
}

/// Record that the running test skipped (some of) its checks, and why: `reason` is a
/// condition of the machine (no root, no GPU, ...), which strict mode does not turn into a
/// failure. The caller returns (or leaves out the check) after this.
pub fn skip(reason: &str) {
    let line = format!("{}: {reason}", test_name());
    eprintln!("SKIP {line}");
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        // One write of one line, appended: lines from tests running in parallel (threads
        // and processes) do not interleave.
        let r = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = r {
            panic!("cannot append the skip to {}: {e}", path.to_string_lossy());
        }
    }
}

/// Whether `tool` is an executable file in a directory of `PATH`.
pub fn on_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            std::fs::metadata(d.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// True if `tool` is on `PATH`. If not: in strict mode the test fails, naming the tool and
/// the Debian package that has it (scripts/test.sh installed that package, so its absence is
/// a broken set-up, not a reason to pass); otherwise the skip of `what` is recorded.
#[track_caller]
pub fn require_tool(tool: &str, package: &str, what: &str) -> bool {
    if on_path(tool) {
        return true;
    }
    missing(
        &format!("{tool} not found on PATH (Debian package {package})"),
        what,
    );
    false
}

/// Something scripts/test.sh provides is missing (`why`): fail in strict mode, otherwise
/// record the skip of `what`.
#[track_caller]
pub fn missing(why: &str, what: &str) {
    assert!(
        !strict(),
        "{STRICT_ENV}=1: {why}; scripts/test.sh installs it, so {what} must run, not be skipped"
    );
    skip(&format!("{what} skipped: {why}"));
}

/// Poll `cond` until it returns true or `limit` passes; `Ok(time it took)`, or an error that
/// says what was awaited (`what`) and for how long. `cond` runs at least once, and once more
/// after the deadline (a condition that became true while the thread was descheduled counts).
pub fn wait_for(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<Duration, String> {
    let t0 = Instant::now();
    loop {
        if cond() {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() >= limit {
            return if cond() {
                Ok(t0.elapsed())
            } else {
                Err(format!(
                    "waited {:.1} s for {what}; it never happened",
                    t0.elapsed().as_secs_f64()
                ))
            };
        }
        std::thread::yield_now();
    }
}

/// [`wait_for`] with the [`SETTLE`] deadline; panics with its message if `cond` never holds.
#[track_caller]
pub fn settle(what: &str, cond: impl FnMut() -> bool) -> Duration {
    match wait_for(what, SETTLE, cond) {
        Ok(took) => took,
        Err(e) => panic!("{e}"),
    }
}

/// Held by every test of a binary that busy-polls a pair of stacks, so that its tests run one
/// at a time: each such test keeps two threads spinning, and two of them at once on a 2-core
/// machine starve each other's peers for whole scheduler slices, which turns the transport's
/// timeouts (and the tests' own) into failures that say nothing about the code: the
/// delay-based congestion controller reads a descheduled peer as a standing queue and paces
/// down (a 1 MiB echo was seen paced at 160 KB/s). A test that panicked while holding it does
/// not poison the others. A layer's test files share one binary (tests/<layer>/main.rs), so
/// every busy-polling test of every file of that binary takes it, not just those of one file.
pub fn one_pair_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static PAIRS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    PAIRS.lock().unwrap_or_else(|e| e.into_inner())
}
