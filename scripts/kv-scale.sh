#!/usr/bin/env bash
# kv_server on 1..N cores: for each k, the server with `--cores k` and CLIENTS_PER_CORE * k
# kv_client processes at once (each its own keys, every byte checked), and a table of k,
# clients, ops/s, p50, p99 from the clients' `summary:` lines.
#
#   scripts/kv-scale.sh [N]          N: the most cores (default: nproc)
#
# Environment:
#   CLIENTS_PER_CORE  client processes per server core (default 2)
#   KEYS, SIZES, ROUNDS  each client's --keys, --sizes, --rounds (default 64, 64,1k, 20:
#                     small values, so the table is about requests, not bytes)
#   SHARD=1           run the server with --shard-by-key: about (k-1)/k of the requests
#                     arrive on a core that does not own their key and are handed over;
#                     adds a column of hand-offs (same clients' work as without: compare)
#   KEY_SPACE=shared  with SHARD=1: every client GETs every client's keys (--key-space
#                     shared; k times the GETs of own keys, and waits for keys not PUT yet)
#   SERVER_ARGS       more kv_server arguments (e.g. --no-doorbell)
#   PROFILE           cargo profile of the examples (default release)
#   BIN               a folder holding kv_server and kv_client already built (no build)
#   OUT               where the raw outputs go (default /tmp/kv-scale)
#
# The figures: ops/s is all clients' operations over the slowest client's time (they start
# together); p50 is the median of the clients' medians, p99 the worst client's p99. With more
# processes than cores (the server spins while traffic flows) the clients are time-sliced:
# say so next to the figures.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${1:-$(nproc)}
CLIENTS_PER_CORE=${CLIENTS_PER_CORE:-2}
KEYS=${KEYS:-64}
SIZES=${SIZES:-64,1k}
ROUNDS=${ROUNDS:-20}
SHARD=${SHARD:-0}
KEY_SPACE=${KEY_SPACE:-own}
PROFILE=${PROFILE:-release}
OUT=${OUT:-/tmp/kv-scale}
mkdir -p "$OUT"
TARGET=${CARGO_TARGET_DIR:-target}

if [[ -n ${BIN:-} ]]; then
  : # examples already built
elif [[ $PROFILE == release ]]; then
  cargo build -q --release --example kv_server --example kv_client
  BIN=$TARGET/release/examples
else
  cargo build -q --profile "$PROFILE" --example kv_server --example kv_client
  BIN=$TARGET/$([[ $PROFILE == dev ]] && echo debug || echo "$PROFILE")/examples
fi

SOCK=/tmp/kv-scale-$$.sock
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do
    [[ -n "$p" ]] && kill "$p" 2>/dev/null || true
  done
  rm -f "$SOCK" "$SOCK".*
}
trap cleanup EXIT

server_args=()
client_args=()
[[ $SHARD == 1 ]] && server_args+=(--shard-by-key)
# shellcheck disable=SC2206 # words on purpose
[[ -n ${SERVER_ARGS:-} ]] && server_args+=($SERVER_ARGS)

echo "kv-scale: 1..$N cores, $CLIENTS_PER_CORE clients per core, --keys $KEYS --sizes $SIZES --rounds $ROUNDS$([[ $SHARD == 1 ]] && echo ", --shard-by-key, --key-space $KEY_SPACE")${SERVER_ARGS:+, server $SERVER_ARGS}"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %-8s %12s %10s %10s%s\n' cores clients ops/s p50_us p99_us \
  "$([[ $SHARD == 1 ]] && printf ' %10s' handed_off)"
for ((k = 1; k <= N; k++)); do
  clients=$((k * CLIENTS_PER_CORE))
  PIDS=()
  "$BIN/kv_server" "$SOCK" --clients "$clients" --cores "$k" --exit-after "$clients" \
    "${server_args[@]}" >"$OUT/server-$k.out" 2>&1 &
  server=$!
  PIDS+=("$server")
  client_args=(--cores "$k" --keys "$KEYS" --sizes "$SIZES" --rounds "$ROUNDS" --verify)
  [[ $SHARD == 1 ]] && client_args+=(--key-space "$KEY_SPACE" --clients "$clients")
  cpids=()
  for ((i = 0; i < clients; i++)); do
    timeout 300 "$BIN/kv_client" "$SOCK" --id "$i" "${client_args[@]}" \
      >"$OUT/client-$k-$i.out" 2>&1 &
    cpids+=($!)
    PIDS+=($!)
  done
  failed=0
  for p in "${cpids[@]}"; do wait "$p" || failed=1; done
  timeout 60 tail --pid="$server" -f /dev/null || failed=1
  wait "$server" || failed=1
  if [[ $failed == 1 ]]; then
    echo "k=$k: a process failed; outputs in $OUT (server-$k.out, client-$k-*.out)" >&2
    exit 1
  fi
  # kv_client I summary: ops=N secs=S ops_per_s=R p50_us=A p99_us=B
  summaries=$(cat "$OUT"/client-"$k"-*.out | grep ' summary: ')
  field() { grep -o " $1=[0-9.]*" <<<"$summaries" | cut -d= -f2; }
  ops=$(field ops | awk '{s += $1} END {print s}')
  secs=$(field secs | sort -g | tail -1)
  p50=$(field p50_us | sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}')
  p99=$(field p99_us | sort -g | tail -1)
  line=$(awk -v k="$k" -v c="$clients" -v ops="$ops" -v secs="$secs" -v p50="$p50" -v p99="$p99" \
    'BEGIN {printf "%-6d %-8d %12.0f %10.1f %10.1f", k, c, ops / secs, p50, p99}')
  if [[ $SHARD == 1 ]]; then
    handed=$(grep -o '[0-9]* requests handed off' "$OUT/server-$k.out" | awk '{s += $1} END {print s + 0}')
    line+=$(printf ' %10d' "$handed")
  fi
  echo "$line"
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
