#!/usr/bin/env bash
# Build every cargo-fuzz target in fuzz/ and run each for N seconds (default 10).
# Usage: scripts/fuzz-smoke.sh [seconds]
# Needs nightly and cargo-fuzz (`cargo install cargo-fuzz`); installs cargo-fuzz if missing.
set -euo pipefail
secs="${1:-10}"
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
cargo +nightly fuzz build
for t in $(cargo +nightly fuzz list); do
    echo "== fuzz target $t for ${secs}s"
    mkdir -p "corpus/$t"
    # The committed seeds (fuzz/seeds/<target>, made by tests/fuzz_seeds.rs) start the corpus
    # past the parsers' first checks; new inputs go to the untracked corpus/<target>.
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    cargo +nightly fuzz run "$t" "corpus/$t" "${seeds[@]}" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=4096 2>&1 \
        | grep -E "^(#[0-9]+.*(DONE|pulse)|Done|==[0-9]+==|SUMMARY|panicked|thread)" | tail -4
done
