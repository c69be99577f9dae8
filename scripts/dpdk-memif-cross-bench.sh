#!/usr/bin/env bash
# pmd::dpdk (DPDK net_memif) against pmd::memif (pure Rust) over one memif link, 64 B frames,
# two processes, in one run with the pmd::dpdk <-> pmd::dpdk baseline. Needs a `bypass` binary
# with `memif-bench` (branch `memif`, merged): BYPASS_BIN (default target/release/bypass).
# Memif server / receiver / echoer on core 0, client / sender / pinger on core 1.
#
#   scripts/dpdk-memif-cross-bench.sh [SECS] [RTT_SAMPLES]
set -euo pipefail
SECS=${1:-5}
SAMPLES=${2:-50000}
cd "$(dirname "$0")/.."
cargo build -q -j2 --release -p bypass-bench --features dpdk --bin dpdk-memif-bench
D=$PWD/target/release/dpdk-memif-bench
M=${BYPASS_BIN:-$PWD/target/release/bypass}
"$M" memif-bench --help >/dev/null 2>&1 ||
  { echo "$M has no memif-bench (build it from a tree with pmd::memif)"; exit 1; }
tmp=$PWD/target/dpdk-memif-cross-logs
rm -rf "$tmp"; mkdir -p "$tmp"
SOCK=$tmp/memif.sock
cleanup() { for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done; rm -f "$SOCK"; }
trap cleanup EXIT
bg() { local n=$1; shift; "$@" >"$tmp/$n" 2>&1 & echo $! >"$tmp/$n.pid"; }
term() { for n in "$@"; do kill -TERM "$(cat "$tmp/$n.pid")" 2>/dev/null || true; done; }
wait_sock() { for _ in $(seq 1200); do [ -S "$SOCK" ] && break; sleep 0.05; done; sleep 0.5; }

# RTT: pmd::dpdk ping <-> pmd::dpdk echo (baseline)
rm -f "$SOCK"; bg e_srv "$D" echo --socket "$SOCK" --core 0 --secs 300; wait_sock
bg e_cli "$D" ping --socket "$SOCK" --core 1 --samples "$SAMPLES"; wait "$(cat "$tmp/e_cli.pid")" || true
term e_srv; wait || true
# RTT: pmd::memif ping (client) <-> pmd::dpdk echo (server)
rm -f "$SOCK"; bg g_srv "$D" echo --socket "$SOCK" --core 0 --secs 300; wait_sock
bg g_cli "$M" memif-bench --role client --socket "$SOCK" --mode ping --size 64 \
  --count "$SAMPLES" --warmup $((SAMPLES / 10)) --core 1; wait "$(cat "$tmp/g_cli.pid")" || true
term g_srv; wait || true
# RTT: pmd::dpdk ping (client) <-> pmd::memif pong (server)
rm -f "$SOCK"; bg h_srv "$M" memif-bench --role server --socket "$SOCK" --mode pong --size 64 \
  --count $((SAMPLES * 2)) --core 0; wait_sock
bg h_cli "$D" ping --socket "$SOCK" --core 1 --samples "$SAMPLES"; wait "$(cat "$tmp/h_cli.pid")" || true
term h_srv; wait || true
# Rate: pmd::memif tx (client) -> pmd::dpdk sink (server)
rm -f "$SOCK"; bg i_rx "$D" sink --socket "$SOCK" --core 0 --secs "$SECS"; wait_sock
bg i_tx "$M" memif-bench --role client --socket "$SOCK" --mode tx --size 64 --duration 300s --core 1
wait "$(cat "$tmp/i_rx.pid")" || true; term i_tx; wait || true
# Rate: pmd::dpdk source (client) -> pmd::memif rx (server)
rm -f "$SOCK"; bg j_rx "$M" memif-bench --role server --socket "$SOCK" --mode rx --size 64 \
  --duration "$((SECS + 2))s" --core 0; wait_sock
bg j_tx "$D" source --socket "$SOCK" --core 1 --secs 300
wait "$(cat "$tmp/j_rx.pid")" || true; term j_tx; wait || true

for f in e_cli g_cli h_cli i_rx j_rx; do echo "== $f"; grep -vE "TELEMETRY|mp action" "$tmp/$f" | tail -n 4; done
