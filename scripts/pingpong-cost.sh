#!/bin/bash
# Instructions per 64 B round trip of the stack, under callgrind (examples/pingpong_cost.rs):
# the client's and server's turns (receive, then send_bytes), the loop iteration after each
# turn, and one empty receive attempt. Repeatable whatever else the machine is doing.
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
valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$OUT" --collect-atstart=no \
  --toggle-collect='pingpong_cost::client_turn' --toggle-collect='pingpong_cost::server_turn' \
  --toggle-collect='pingpong_cost::after_turn' --toggle-collect='pingpong_cost::idle_spins' \
  "$BIN" --pings "$PINGS" 2>&1 | grep -E "per round trip|pingpong_cost size" || true
callgrind_annotate --inclusive=yes "$OUT" 2>/dev/null |
  awk -v n="$PINGS" '/pingpong_cost::(client_turn|server_turn|after_turn|idle_spins)( |$)/ {
      c=$1; gsub(",","",c);
      for (i = 2; i <= NF; i++) if ($i ~ /pingpong_cost::/) f=$i;
      sub(/.*pingpong_cost::/,"",f);
      if (!(f in v)) v[f]=c/n }
    END {
      printf "per round trip: client_turn %.0f server_turn %.0f after_turn x2 %.0f; one empty receive %.0f\n",
        v["client_turn"], v["server_turn"], v["after_turn"], v["idle_spins"];
      printf "turns %.0f, turns + after_turn %.0f instructions\n",
        v["client_turn"]+v["server_turn"], v["client_turn"]+v["server_turn"]+v["after_turn"] }'
rm -f "$OUT"
