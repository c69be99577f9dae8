//! The zero-allocation tests of every layer, in one binary: the counting allocator
//! (tests/harness/alloc.rs) is this binary's global allocator (one per binary), installed
//! once. Its counts are per thread, so these tests measure in parallel without disturbing
//! each other; the busy-polling ones still run one at a time (`harness::one_pair_at_a_time`).
#[path = "../harness/alloc.rs"]
mod counting;
#[global_allocator]
static A: counting::Counting = counting::Counting;
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../harness/runtime_util.rs"]
mod runtime_util;

mod handoff;
mod idle;
mod mem;
mod pmd_wrappers;
mod proto;
mod runtime;
mod socket;
mod socket_metrics;
mod telemetry;
