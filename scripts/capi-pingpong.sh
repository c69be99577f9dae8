#!/bin/bash
# The C API's 64 B round trip against the Rust API's, alternated: each round measures the
# cache-line floor (`bypass memif-bench --mode cacheline` p50, us: the VM's vCPUs move
# between near ~0.06-0.08 and far ~0.36-0.41, and only rows of one floor compare), then
# examples/c/pingpong.c (two C processes over memif, zero-copy both ways; client core 0,
# server core 1) and `bypass bench pingpong` (two Rust processes over memif, send_bytes +
# recv_msg, busy-poll; client core 0, peer core 1), in alternating order.
# Usage: [ROUNDS=4] [SIZE=64] [DURATION_MS=1000] scripts/capi-pingpong.sh
# Needs the release builds: cargo build --release -p bypass-capi -p bypass --bin bypass, and
# PROFILE=release VALGRIND=0 scripts/capi-examples.sh (or the cc line below) for pingpong.
cd "$(dirname "$0")/.."
B=target/release/bypass
C=target/release/c-examples/pingpong
SIZE=${SIZE:-64}
DUR=${DURATION_MS:-1000}
[ -x "$B" ] && [ -x "$C" ] || { echo "build $B and $C first"; exit 1; }
c_run() {
  local s=/tmp/bypass-capi-pingpong-$$.sock
  rm -f "$s"
  "$C" server "$s" --core 1 $COPY >/dev/null &
  local sp=$!
  "$C" client "$s" --core 0 --size "$SIZE" --duration-ms "$DUR" $COPY
  wait $sp
}
rust_run() {
  $B bench -q pingpong --sizes "$SIZE" --transports bypass-memif --variants busy-poll \
    --duration "${DUR}ms" 2>&1 | grep -E "busy-poll"
}
for r in $(seq 1 "${ROUNDS:-4}"); do
  f=$($B memif-bench --mode cacheline --count 100000 --warmup 10000 | grep -o " p50=[^ ]*" | cut -d= -f2)
  echo "round $r $(date +%T) floor $f"
  if [ $((r % 2)) = 1 ]; then order="c_run rust_run"; else order="rust_run c_run"; fi
  for which in $order; do
    $which 2>&1 | sed "s/^/  ${which%_run} /"
  done
done
