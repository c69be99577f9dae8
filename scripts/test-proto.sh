#!/usr/bin/env bash
# Transport tests: the default (debug) run, then the long ones in release: the 1 GiB message,
# a wide seed sweep and many property-test cases.
# Usage: scripts/test-proto.sh [proptest cases (default 256)] [sweep seeds (default 30)]
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${1:-256}"
seeds="${2:-30}"
cargo test -j2 --lib -- wire:: proto:: pmd::sim::
cargo test -j2 --test proto
cargo test -j2 --test alloc -- proto::
cargo test -j2 --release --test proto -- large:: --nocapture
PROTO_SWEEP_SEEDS="$seeds" cargo test -j2 --release --test proto -- regressions::
PROPTEST_CASES="$cases" cargo test -j2 --release --test proto -- prop::
