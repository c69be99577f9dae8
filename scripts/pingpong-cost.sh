#!/bin/bash
# Instructions per 64 B round trip of the stack, under callgrind (examples/pingpong_cost.rs):
# the client's and server's turns (receive, then send_bytes), the receive call after each
# turn (where the queued message is transmitted), and one empty receive attempt. Repeatable
# whatever else the machine is doing.
# Each part is counted in a run of its own, collecting only inside that function: callgrind's
# program total is then exactly that function's inclusive count. (Reading inclusive counts
# off one run's `callgrind_annotate --inclusive` listing is wrong: an inlined function is
# listed once per source file it has code from, and the first line is only a part.)
# Usage: scripts/pingpong-cost.sh [PINGS (default 5000)] [BINARY (default: build the example)]
set -euo pipefail
cd "$(dirname "$0")/.."
PINGS=${1:-5000}
BIN=${2:-}
if [ -z "$BIN" ]; then
  cargo build --release -q --example pingpong_cost
  BIN=target/release/examples/pingpong_cost
fi
OUT=$(mktemp /tmp/pingpong-cost.XXXXXX)
count() {
  valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$OUT" --collect-atstart=no \
    --toggle-collect="pingpong_cost::$1" "$BIN" --pings "$PINGS" >"$OUT.log" 2>&1 ||
    { cat "$OUT.log" >&2; exit 1; }
  callgrind_annotate "$OUT" 2>/dev/null |
    awk -v n="$PINGS" '/PROGRAM TOTALS/ { c=$1; gsub(",","",c); printf "%.0f", c/n }'
}
c=$(count client_turn)
grep -E "per round trip|pingpong_cost size" "$OUT.log" || true
s=$(count server_turn)
a=$(count after_turn)
i=$(count idle_spins)
rm -f "$OUT" "$OUT.log"
echo "per round trip: client_turn $c server_turn $s after_turn x2 $a; one empty receive $i"
echo "turns $((c + s)), turns + after_turn $((c + s + a)) instructions"
