//! A whole endpoint fed arbitrary datagrams: raw bytes, and well-formed packets of every
//! type (BATCH included) with arbitrary field values aimed at a live connection (right ids
//! and address), so they get past demultiplexing into connection logic (placement, acks,
//! close, reset, nack);
//! interleaved with time steps, application sends and reads. No panic; memory stays bounded
//! (connections, reassembly bytes, pool slots).
//! (The body lives in fuzz/bodies/endpoint.rs, shared with the seed replay in tests/fuzz_seeds.rs.)
#![no_main]

#[path = "../bodies/endpoint.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = body::run(data);
});
