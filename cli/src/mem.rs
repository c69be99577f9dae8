//! `bypass mem`: shows what memory this machine gives the stack (hugepages or the fallback)
//! and exercises a pool end to end.

use std::fmt::Write;
use std::process::ExitCode;
use std::time::Instant;

use bypass::mem::{CoreSlot, HugePages, Pool, PoolConfig};
use clap::Args;

/// `bypass mem` options.
#[derive(Args, Debug)]
pub struct MemArgs {
    /// Alloc+free pairs to time (one thread)
    #[arg(long, value_name = "N", default_value_t = 10_000_000)]
    pub iterations: u64,
}

/// `bypass mem`.
pub fn main(args: &MemArgs) -> ExitCode {
    match run(args.iterations) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bypass mem: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Build a pool the way the stack would, cycle every buffer through it, and report.
fn run(iterations: u64) -> Result<String, String> {
    let mut out = String::new();
    let pool = Pool::new(&PoolConfig {
        hugepages: HugePages::Prefer,
        ..PoolConfig::new("bypass-selftest", 8192, 2048)
    })
    .map_err(|e| e.to_string())?;
    let r = pool.region();
    let _ = writeln!(
        out,
        "region: {} bytes, pages {:?}, mlocked {}, kind {:?}",
        r.len(),
        r.pages(),
        r.is_locked(),
        r.kind()
    );
    if let Some(f) = r.fallback() {
        let _ = writeln!(out, "hugepage fallback: {}", f.reason);
    }
    let _core = CoreSlot::claim_any().ok();
    let n = iterations.max(1);
    let t = Instant::now();
    for _ in 0..n {
        // One buffer at a time out of 8192: exhaustion here is a pool bug.
        let b = pool
            .alloc()
            .map_err(|e| format!("a pool of {} slots: {e}", pool.capacity()))?;
        std::hint::black_box(&b);
    }
    let ns = t.elapsed().as_nanos() as f64 / n as f64;
    let mut held = Vec::with_capacity(pool.capacity() as usize);
    while let Ok(b) = pool.alloc() {
        held.push(b);
    }
    let full = held.len();
    drop(held);
    let s = pool.stats();
    let _ = writeln!(
        out,
        "pool: {} slots of {} B; alloc+free {:.1} ns (one thread, {} pairs); drained {} slots; \
         stats {:?}",
        pool.capacity(),
        pool.slot_size(),
        ns,
        n,
        full,
        s
    );
    Ok(out)
}
