#!/usr/bin/env bash
# memif benchmark: bypass's pure-Rust memif against itself and against DPDK's net_memif
# (dpdk-testpmd), two processes pinned to the two cores, 64-byte frames, in one run.
#
#   scripts/bench-memif.sh [--quick]
#
# Prints a markdown report (command, date, machine, tables) on stdout; raw outputs are kept
# in $OUT (default /tmp/bench-memif). Needs root for testpmd; testpmd runs with --no-huge.
# JSON=FILE also writes the headline figures (bypass and testpmd one-way Mpps, the floor) as
# JSON for scripts/headline.py.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
OUT=${OUT:-/tmp/bench-memif}
mkdir -p "$OUT"
RTT_COUNT=${RTT_COUNT:-1000000}
RTT_WARMUP=${RTT_WARMUP:-100000}
SECS=${SECS:-8}
if [[ $QUICK == 1 ]]; then RTT_COUNT=100000; RTT_WARMUP=10000; SECS=4; fi

cargo build --release -j2 -q --bin bypass
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
B=target/release/bypass
TP=$(command -v dpdk-testpmd || true)
SOCK=/run/bpx-bench-$$.sock
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do
        [[ -n "$p" ]] && kill -TERM "$p" 2>/dev/null || true
    done
    sleep 1
    for p in "${PIDS[@]:-}"; do
        [[ -n "$p" ]] && kill -KILL "$p" 2>/dev/null || true
    done
    rm -f "$SOCK"
    rm -rf /var/run/dpdk/bpx_bench_*_$$
}
trap cleanup EXIT

field() { # field KEY FILE -> value of KEY=value on the first line that has it
    grep -o "$1=[^ ]*" "$2" | head -1 | cut -d= -f2
}

# testpmd with one forwarding lcore: main on $1, forwarding on $2.
testpmd() {
    local main=$1 fwd=$2 tag=$3 role=$4 mode=$5 log=$6
    "$TP" -l "$main,$fwd" --main-lcore "$main" --no-pci --no-huge -m 512 \
        --file-prefix="bpx_bench_${tag}_$$" \
        --vdev="net_memif0,role=$role,socket=$SOCK,id=0,socket-abstract=no" -- \
        --forward-mode="$mode" --txpkts=64 --auto-start --no-mlockall \
        --total-num-mbufs=16384 --stats-period 1 >"$log" 2>&1 &
    PIDS+=($!)
}

stop_all() {
    for p in "${PIDS[@]:-}"; do
        [[ -n "$p" ]] && kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]:-}"; do
        [[ -n "$p" ]] && wait "$p" 2>/dev/null || true
    done
    PIDS=()
    rm -f "$SOCK"
    sleep 0.5
}

# Median of testpmd's per-second Rx-pps samples, skipping zeros (start-up, shutdown).
testpmd_rx_mpps() {
    grep -o 'Rx-pps: *[0-9]*' "$1" | awk '{print $2}' | awk '$1>0' | sort -n |
        awk '{a[NR]=$1} END {if (NR==0) print "0"; else printf "%.3f", a[int((NR+1)/2)]/1e6}'
}

declare -A RTT RATE

# ---- round trips -------------------------------------------------------------------------
rtt_pair() { # name ping_role pong_role
    local name=$1 pr=$2 qr=$3
    "$B" memif-bench --role "$qr" --socket "$SOCK" --mode pong --duration 600s --core 1 \
        >"$OUT/$name.pong" 2>&1 &
    PIDS+=($!)
    sleep 0.3
    "$B" memif-bench --role "$pr" --socket "$SOCK" --mode ping --count "$RTT_COUNT" \
        --warmup "$RTT_WARMUP" --core 0 >"$OUT/$name.ping" 2>&1 || true
    stop_all
    RTT[$name]=$(grep rtt_us "$OUT/$name.ping" || echo "failed: $(tail -1 "$OUT/$name.ping")")
}
"$B" memif-bench --mode cacheline --count "$RTT_COUNT" --warmup "$RTT_WARMUP" >"$OUT/cacheline.ping" 2>&1 || true
RTT[cacheline-floor_two-threads]=$(grep rtt_us "$OUT/cacheline.ping" || echo failed)
rtt_pair bypass-client-ping_bypass-server-pong client server
rtt_pair bypass-server-ping_bypass-client-pong server client

if [[ -n "$TP" ]]; then
    # Our pinger (core 0) against testpmd macswap (forwarding lcore 1, main lcore 0).
    testpmd 0 1 rs server macswap "$OUT/tp-macswap-server.log"
    sleep 2
    "$B" memif-bench --role client --socket "$SOCK" --mode ping --count "$RTT_COUNT" \
        --warmup "$RTT_WARMUP" --core 0 >"$OUT/bypass-client-ping_testpmd-server-macswap.ping" 2>&1 || true
    stop_all
    RTT[bypass-client-ping_testpmd-server-macswap]=$(grep rtt_us "$OUT/bypass-client-ping_testpmd-server-macswap.ping" || echo failed)

    "$B" memif-bench --role server --socket "$SOCK" --mode ping --count "$RTT_COUNT" \
        --warmup "$RTT_WARMUP" --core 0 >"$OUT/bypass-server-ping_testpmd-client-macswap.ping" 2>&1 &
    PING=$!
    sleep 0.3
    testpmd 0 1 rc client macswap "$OUT/tp-macswap-client.log"
    wait $PING || true
    stop_all
    RTT[bypass-server-ping_testpmd-client-macswap]=$(grep rtt_us "$OUT/bypass-server-ping_testpmd-client-macswap.ping" || echo failed)
fi

# ---- one-way rate ------------------------------------------------------------------------
oneway() { # name tx_role rx_role
    local name=$1 tr=$2 rr=$3
    "$B" memif-bench --role "$rr" --socket "$SOCK" --mode rx --duration "${SECS}s" --core 1 \
        >"$OUT/$name.rx" 2>&1 &
    local rxp=$!
    PIDS+=($rxp)
    sleep 0.3
    "$B" memif-bench --role "$tr" --socket "$SOCK" --mode tx --duration "$((SECS + 1))s" --core 0 \
        >"$OUT/$name.tx" 2>&1 || true
    wait $rxp || true
    stop_all
    RATE[$name]=$(field mpps "$OUT/$name.rx")
}
oneway bypass-client-tx_bypass-server-rx client server
oneway bypass-server-tx_bypass-client-rx server client

if [[ -n "$TP" ]]; then
    # testpmd txonly (server, fwd lcore 0) -> testpmd rxonly (client, fwd lcore 1).
    # Server first: a net_memif client started before the server's socket exists may not
    # connect (this pair measured 0 in two of four runs started the other way round).
    testpmd 1 0 tx server txonly "$OUT/tp-txonly-server.log"
    sleep 2
    testpmd 0 1 rx client rxonly "$OUT/tp-rxonly-client.log"
    sleep "$((SECS + 3))"
    stop_all
    RATE[testpmd-server-txonly_testpmd-client-rxonly]=$(testpmd_rx_mpps "$OUT/tp-rxonly-client.log")

    # testpmd txonly (server, fwd lcore 0) -> bypass client rx (core 1).
    testpmd 1 0 tx2 server txonly "$OUT/tp-txonly-server2.log"
    sleep 2
    "$B" memif-bench --role client --socket "$SOCK" --mode rx --duration "${SECS}s" --core 1 \
        >"$OUT/testpmd-server-txonly_bypass-client-rx.rx" 2>&1 || true
    stop_all
    RATE[testpmd-server-txonly_bypass-client-rx]=$(field mpps "$OUT/testpmd-server-txonly_bypass-client-rx.rx")

    # bypass client tx (core 0) -> testpmd rxonly (server, fwd lcore 1).
    testpmd 0 1 rx2 server rxonly "$OUT/tp-rxonly-server.log"
    sleep 2
    "$B" memif-bench --role client --socket "$SOCK" --mode tx --duration "${SECS}s" --core 0 \
        >"$OUT/bypass-client-tx_testpmd-server-rxonly.tx" 2>&1 || true
    sleep 1
    stop_all
    RATE[bypass-client-tx_testpmd-server-rxonly]=$(testpmd_rx_mpps "$OUT/tp-rxonly-server.log")
fi

# ---- driver cost per frame, independent of the scheduler's share of a core -------------
# Both roles in one thread forwarding circulating frames (CPU time of that thread).
"$B" memif-bench --mode loopback --count 20000000 --core 1 >"$OUT/loopback.bypass" 2>&1 || true
LOOP_BYPASS=$(grep -o 'cpu_ns_per_hop=[^ ]*' "$OUT/loopback.bypass" | cut -d= -f2)
LOOP_TESTPMD=""
if [[ -n "$TP" ]]; then
    # testpmd io forwarding between a net_memif server and client in one process: CPU time
    # of its forwarding thread over a 5 s window, divided by the frames it forwarded.
    "$TP" -l 0,1 --no-pci --no-huge -m 512 --file-prefix="bpx_bench_lo_$$" \
        --vdev="net_memif0,role=server,socket=$SOCK,id=0,socket-abstract=no" \
        --vdev="net_memif1,role=client,socket=$SOCK,id=0,socket-abstract=no" -- \
        --forward-mode=io --tx-first --auto-start --no-mlockall --total-num-mbufs=16384 \
        --stats-period 1 >"$OUT/tp-loop.log" 2>&1 &
    TPL=$!
    PIDS+=($TPL)
    sleep 3
    worker_ticks() {
        for t in /proc/$TPL/task/*; do
            case "$(cat "$t/comm")" in *worker*) awk '{print $14+$15}' "$t/stat" ;; esac
        done | head -1
    }
    k1=$(worker_ticks); s1=$(date +%s.%N); n1=$(grep -c Rx-pps "$OUT/tp-loop.log")
    sleep 5
    k2=$(worker_ticks); s2=$(date +%s.%N)
    stop_all
    # Rx-pps lines printed during the window, both ports (the loop runs at the same rate on each).
    pps=$(grep -o 'Rx-pps: *[0-9]*' "$OUT/tp-loop.log" | awk '{print $2}' | tail -n +"$((n1 + 1))" | head -10 |
        awk '$1>0 {s+=$1; n++} END {if (n) printf "%.0f", 2*s/n; else print 0}')
    LOOP_TESTPMD=$(awk -v k1="$k1" -v k2="$k2" -v s1="$s1" -v s2="$s2" -v pps="$pps" -v hz="$(getconf CLK_TCK)" \
        'BEGIN { share=(k2-k1)/hz/(s2-s1); if (pps>0 && share>0) printf "%.1f", share*1e9/pps; else print "n/a" }')
    echo "testpmd loop: ticks $k1 -> $k2, window $s1 -> $s2, forwarded $pps frames/s (both ports)" >>"$OUT/tp-loop.log"
fi

# ---- report ------------------------------------------------------------------------------
echo "### memif ping-pong and one-way rate, 64 B frames"
echo
echo "- command: \`scripts/bench-memif.sh$([[ $QUICK == 1 ]] && echo ' --quick')\` (RTT_COUNT=$RTT_COUNT, RTT_WARMUP=$RTT_WARMUP, SECS=$SECS)"
echo "- date: $(date -u)"
echo "- machine: $(nproc) cores, $(lscpu | grep 'Model name' | sed 's/Model name: *//'); $(uname -r)"
echo "- DPDK: $(dpkg-query -W -f '${Version}' dpdk-dev 2>/dev/null || echo absent); testpmd runs --no-huge; bypass pools on 2 MiB hugepages when free"
echo "- load average (1/5/15 min) at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg) (other jobs share the 2 cores)"
echo "- pinning: pinger / transmitter on core 0, bouncer / receiver on core 1 (testpmd: its forwarding lcore there, main lcore on the other core)"
echo
echo "Round trip (one frame in flight), microseconds:"
echo
echo "| pair | samples | p50 | p90 | p99 | p99.9 | p99.99 | max | jitter p99-p50 |"
echo "|---|---|---|---|---|---|---|---|---|"
for k in cacheline-floor_two-threads bypass-client-ping_bypass-server-pong bypass-server-ping_bypass-client-pong \
    bypass-client-ping_testpmd-server-macswap bypass-server-ping_testpmd-client-macswap; do
    [[ -z "${RTT[$k]:-}" ]] && continue
    l=${RTT[$k]}
    g() { echo " $l" | grep -o " $1=[^ ]*" | cut -d= -f2; }
    echo "| $k | $(g samples) | $(g p50) | $(g p90) | $(g p99) | $(g p99.9) | $(g p99.99) | $(g max) | $(g jitter_p99-p50) |"
done
echo
echo "Driver cost, CPU nanoseconds per forwarded frame (one hop: rx_burst on one side and"
echo "tx_burst of the same frame back out of it; server and client in one thread, frames"
echo "circulating; CPU time of that thread, so independent of the share of a core it got):"
echo
echo "| forwarder | CPU ns per hop | Mpps per CPU-second |"
echo "|---|---|---|"
echo "| bypass memif server + client, one thread (server copies, client zero-copy) | ${LOOP_BYPASS:-failed} | $(awk -v n="${LOOP_BYPASS:-0}" 'BEGIN{ if (n>0) printf "%.1f", 1000/n; else print "n/a"}') |"
[[ -n "$TP" ]] && echo "| testpmd io, net_memif server + client in one process (both copy) | ${LOOP_TESTPMD} | $(awk -v n="${LOOP_TESTPMD:-0}" 'BEGIN{ if (n>0) printf "%.1f", 1000/n; else print "n/a"}') |"
echo
echo "One-way rate at the receiver, Mpps (frames/s / 1e6):"
echo
echo "| transmitter -> receiver | Mpps |"
echo "|---|---|"
for k in bypass-client-tx_bypass-server-rx bypass-server-tx_bypass-client-rx \
    testpmd-server-txonly_testpmd-client-rxonly testpmd-server-txonly_bypass-client-rx \
    bypass-client-tx_testpmd-server-rxonly; do
    [[ -z "${RATE[$k]:-}" ]] && continue
    echo "| $k | ${RATE[$k]} |"
done

# ---- JSON (JSON=FILE): what bench/README.md's headline row reads (scripts/headline.py) ------
if [[ -n "${JSON:-}" ]]; then
    num() { [[ "$1" =~ ^[0-9]+(\.[0-9]+)?$ ]] && echo "$1" || echo null; }
    floor_us=$(echo " ${RTT[cacheline-floor_two-threads]:-}" | grep -o ' p50=[^ ]*' | cut -d= -f2)
    floor999_us=$(echo " ${RTT[cacheline-floor_two-threads]:-}" | grep -o ' p99.9=[^ ]*' | cut -d= -f2)
    to_ns() { awk -v u="$1" 'BEGIN { if (u ~ /^[0-9.]+$/) printf "%.0f", u * 1000; else print "null" }'; }
    {
        echo "{"
        echo "  \"kind\": \"memif-vs-testpmd\","
        echo "  \"what\": \"64 B frames one way over memif, bypass client -> server (testpmd txonly -> rxonly beside it)\","
        echo "  \"header\": {"
        echo "    \"date_utc\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
        echo "    \"git_rev\": \"$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$([[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]] && echo -dirty)\","
        echo "    \"command_line\": [\"scripts/bench-memif.sh\"$([[ $QUICK == 1 ]] && echo ', "--quick"')],"
        echo "    \"cpu_model\": \"$(lscpu | grep 'Model name' | sed 's/Model name: *//')\","
        echo "    \"cpus\": $(nproc),"
        echo "    \"load_average_start\": \"$LOAD_START\","
        echo "    \"cacheline_floor\": {\"p50_ns\": $(to_ns "$floor_us"), \"p99_9_ns\": $(to_ns "$floor999_us")}"
        echo "  },"
        echo "  \"bypass_mpps\": $(num "${RATE[bypass-client-tx_bypass-server-rx]:-}"),"
        echo "  \"testpmd_mpps\": $(num "${RATE[testpmd-server-txonly_testpmd-client-rxonly]:-}"),"
        echo "  \"rates_mpps\": {"
        first=1
        for k in "${!RATE[@]}"; do
            [[ $first == 1 ]] || echo ","
            first=0
            printf '    "%s": %s' "$k" "$(num "${RATE[$k]}")"
        done
        echo
        echo "  }"
        echo "}"
    } >"$JSON"
    echo
    echo "JSON: $JSON"
fi
