//! The counting global allocator of the zero-allocation tests, written once: the `alloc` and
//! `gpu` test binaries and capi's unit tests each install it as their `#[global_allocator]`
//! (a global allocator is per binary) and include this file with `#[path]`.
//!
//! Counts are per thread: tests run on parallel threads of one process, so a test reads
//! [`allocs`] on its own thread before and after the window it measures; allocations of
//! other threads (other tests, the harness) never land in its count. Every allocating call
//! counts: `alloc`, `alloc_zeroed` and `realloc`.
//!
//! With `BYPASS_ALLOC_TRACE=N` in the environment, [`arm_trap`] makes the next N allocations
//! of this thread print a backtrace (to find where an unexpected one comes from).
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Counts every allocation, per thread, and forwards to the system allocator.
pub struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    /// Print a backtrace at the next this-many allocations (armed inside measured windows
    /// with BYPASS_ALLOC_TRACE=N, default 1).
    static TRAP: Cell<u32> = const { Cell::new(0) };
    static IN_TRAP: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if IN_TRAP.try_with(Cell::get).unwrap_or(true) {
        // The backtrace printer's own allocations are not the code under test's.
        return;
    }
    // `try_with`: allocations while this thread's locals are being destroyed are not ours.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
    if TRAP.try_with(Cell::get).unwrap_or(0) > 0 {
        IN_TRAP.with(|c| c.set(true));
        TRAP.with(|c| c.set(c.get() - 1));
        let bt = std::backtrace::Backtrace::force_capture();
        eprintln!(
            "unexpected allocation on {:?}:\n{bt}",
            std::thread::current().name()
        );
        IN_TRAP.with(|c| c.set(false));
    }
}

/// Allocations made on this thread so far.
pub fn allocs() -> u64 {
    ALLOCS.with(Cell::get)
}

/// With `BYPASS_ALLOC_TRACE=N` set, print a backtrace at this thread's next N allocations.
pub fn arm_trap() {
    if let Ok(v) = std::env::var("BYPASS_ALLOC_TRACE") {
        TRAP.with(|c| c.set(v.parse().unwrap_or(1)));
    }
}

/// Stop printing backtraces on this thread.
pub fn disarm_trap() {
    TRAP.with(|c| c.set(0));
}

// SAFETY: forwards to the system allocator; the counters are const-initialised thread-local
// Cells, which never allocate (the backtrace printer runs guarded against re-entry).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded contract.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded contract.
        unsafe { System.realloc(p, l, n) }
    }
}
