//! The transport header parser on arbitrary bytes: never panics, and whatever parses
//! re-emits to the same header; a BATCH that parses has an in-bounds length table.
//! (The body lives in fuzz/bodies/header.rs, shared with the seed replay in tests/fuzz_seeds.rs.)
#![no_main]

#[path = "../bodies/header.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = body::run(data);
});
