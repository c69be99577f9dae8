//! ACK/SACK processing: an established client connection with data in flight is fed
//! arbitrary ACKs (right connection ids, arbitrary cumulative/bitmap/credit/timestamps),
//! interleaved with time steps and transmits. No panic; in-flight accounting stays sane.
//! (The body lives in fuzz/bodies/ack.rs, shared with the seed replay in tests/fuzz_seeds.rs.)
#![no_main]

#[path = "../bodies/ack.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
