#!/usr/bin/env bash
# Congestion control on an emulated path: `bypass sim path` (two processes over memif, each
# side's transmit shaped by the faults wrapper: rate limit + bounded tail-drop queue + delay),
# 64 B ping-pong RTT idle and beside a 1 MiB bulk transfer, per controller.
#
#   scripts/bench-cc-path.sh [--quick] [extra `bypass sim path` options]
#
# Prints a markdown report (command, date, machine, load, table) on stdout; the CSV goes to
# $OUT/cc-path.csv (default OUT=/tmp/bench-cc-path).
#
# Priority: both processes busy-poll, one per core. On a shared machine other sessions'
# work (compiles) gets an equal CPU share per session (sched_autogroup), which turns a 50 us
# ping-pong into multiples of the 4 ms scheduler tick. As root the run therefore gets its own
# session (setsid) whose autogroup is set to nice -20 for the length of the run (about 25 s;
# NO_PRIO=1 turns this off). The report says which was used.
set -euo pipefail
cd "$(dirname "$0")/.."

CMDLINE="scripts/bench-cc-path.sh${*:+ $*}"
QUICK=0
if [[ "${1:-}" == "--quick" ]]; then QUICK=1; shift; fi
OUT=${OUT:-/tmp/bench-cc-path}
mkdir -p "$OUT"
ARGS=(--csv "$OUT/cc-path.csv")
if [[ $QUICK == 1 ]]; then ARGS+=(--idle 200ms --warm 200ms --load 400ms); fi
ARGS+=("$@")

cargo build --release -j2 -q --bin bypass
B=target/release/bypass
PRIO="none (NO_PRIO=1 or not root)"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if [[ "${NO_PRIO:-0}" != 1 && $(id -u) == 0 && -w /proc/self/autogroup ]]; then
    PRIO="own session, autogroup nice -20"
    TABLE=$(setsid bash -c 'echo -20 > /proc/self/autogroup && exec "$0" "$@"' \
        "$B" sim path "${ARGS[@]}")
else
    TABLE=$("$B" sim path "${ARGS[@]}")
fi
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

echo "### bypass sim path ($(date -u))"
echo
echo "Command: \`$CMDLINE\`"
echo "(= \`$B sim path ${ARGS[*]}\`)"
echo "Machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p'); load average $LOAD_START -> $LOAD_END; priority: $PRIO"
echo
echo "$TABLE"
