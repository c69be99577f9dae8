//! The GPU receive path (tests skip without a CUDA driver): a binary of its own because
//! scripts/gpu-test.sh runs it against a fake libcuda.so.1 here and ships it, stripped, to a
//! GPU machine; `no_alloc` needs the counting allocator (tests/harness/alloc.rs), installed
//! as this binary's global allocator.
#[path = "../harness/alloc.rs"]
mod counting;
#[global_allocator]
static A: counting::Counting = counting::Counting;
#[path = "../harness/mod.rs"]
mod harness;

mod no_alloc;
mod recv;
