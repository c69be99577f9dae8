//! The server side of the memif control channel through a real UNIX socket: arbitrary
//! control messages, datagrams and attached descriptors; no panic, no hang, no descriptor or
//! mapping left over, a legitimate client still connects.
//! (The body lives in fuzz/bodies/memif_control.rs, shared with the seed replay in
//! tests/fuzz_seeds.rs.)
#![no_main]

// (The replay uses more of the body than the target does.)
#[allow(dead_code)]
#[path = "../bodies/memif_control.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = body::run(data);
});
