#!/usr/bin/env bash
# Build every cargo-fuzz target in fuzz/ and run each for N seconds (default 10).
# Usage: scripts/fuzz-smoke.sh [seconds]
# Needs nightly and cargo-fuzz (`cargo install cargo-fuzz`); installs cargo-fuzz if missing.
# A target that crashes fails the script and prints the end of its log: the panic, and the
# artifact (fuzz/artifacts/<target>/crash-*) that `cargo +nightly fuzz run <target> <file>`
# replays.
set -uo pipefail
secs="${1:-10}"
cd "$(dirname "$0")/../fuzz" || exit 1
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz || exit 1
cargo +nightly fuzz build 2>&1 | tail -20
[ "${PIPESTATUS[0]}" -eq 0 ] || { echo "cargo +nightly fuzz build failed"; exit 1; }
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=()
for t in $(cargo +nightly fuzz list); do
    echo "== fuzz target $t for ${secs}s"
    mkdir -p "corpus/$t"
    # The committed seeds (fuzz/seeds/<target>, made by tests/fuzz_seeds.rs) start the corpus
    # past the parsers' first checks; new inputs go to the untracked corpus/<target>.
    seeds=()
    [ -d "seeds/$t" ] && seeds=("seeds/$t")
    if cargo +nightly fuzz run "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -max_len=4096 >"$logs/$t" 2>&1; then
        grep -E "^(#[0-9]+.*DONE|Done)" "$logs/$t" | tail -2
    else
        echo "!! fuzz target $t failed:"
        tail -40 "$logs/$t"
        failed+=("$t")
    fi
done
[ ${#failed[@]} -eq 0 ] || { echo "failed fuzz targets: ${failed[*]}"; exit 1; }
