//! Whole Ethernet frames (ARP, ICMP, IPv4/UDP carrying transport packets of every kind,
//! garbage) into a whole stack at its default budgets, beside a legitimate connection in
//! virtual time: no panic, budgets held, the legitimate messages intact.
//! (The body lives in fuzz/bodies/stack_frames.rs, shared with the seed replay in
//! tests/fuzz_seeds.rs.)
#![no_main]

#[path = "../bodies/stack_frames.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = body::run(data);
});
