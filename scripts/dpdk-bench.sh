#!/usr/bin/env bash
# 64 B frames over net_memif between two processes: bypass pmd::dpdk (dpdk-memif-bench) beside
# dpdk-testpmd, in one run. Receiver / memif server on core 0, sender / client on core 1;
# testpmd's main lcore sits on the other core (it only prints stats), its forwarding lcore on
# the core named. Prints a markdown table for bench/results/; every process's output is kept
# in target/dpdk-bench-logs/.
#
#   scripts/dpdk-bench.sh [SECS] [RTT_SAMPLES]
set -euo pipefail
SECS=${1:-5}
SAMPLES=${2:-50000}
cd "$(dirname "$0")/.."
cargo build -q -j2 --release -p bypass-bench --features dpdk --bin dpdk-memif-bench
B=$PWD/target/release/dpdk-memif-bench
command -v dpdk-testpmd >/dev/null || { echo "dpdk-testpmd not installed (apt-get install dpdk)"; exit 1; }
tmp=$PWD/target/dpdk-bench-logs
rm -rf "$tmp"; mkdir -p "$tmp"
SOCK=$tmp/memif.sock
cleanup() {
  for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
  rm -f "$SOCK"; rm -rf /var/run/dpdk/bypass-tp-*-$$
}
trap cleanup EXIT

# tp NAME ROLE FWD_CPU MODE: testpmd on net_memif in the background, output in $tmp/NAME, pid
# of its `timeout` in $tmp/NAME.pid (SIGINT to it ends testpmd, which prints its totals).
tp() {
  local main=$(( 1 - $3 ))
  timeout -s INT 300 dpdk-testpmd --lcores="0@$main,1@$3" --no-huge -m 512 --no-pci \
    --file-prefix "bypass-tp-$1-$$" --log-level=warning \
    --vdev="net_memif0,role=$2,id=0,socket=$SOCK,socket-abstract=no" -- \
    --forward-mode="$4" --auto-start --stats-period=1 --nb-cores=1 --total-num-mbufs=16384 \
    --port-topology=loop >"$tmp/$1" 2>&1 &
  echo $! >"$tmp/$1.pid"
}
# ours NAME ARGS...: dpdk-memif-bench in the background, output in $tmp/NAME, pid in NAME.pid.
ours() { local n=$1; shift; "$B" "$@" --socket "$SOCK" >"$tmp/$n" 2>&1 & echo $! >"$tmp/$n.pid"; }
# testpmd ends on SIGINT (its own handler); our driver on SIGTERM (a non-interactive shell
# starts background jobs with SIGINT ignored).
stop() { for n in "$@"; do kill -INT "$(cat "$tmp/$n.pid")" 2>/dev/null || true; done; }
stopo() { for n in "$@"; do kill -TERM "$(cat "$tmp/$n.pid")" 2>/dev/null || true; done; }
wait_sock() { for _ in $(seq 1200); do [ -S "$SOCK" ] && break; sleep 0.05; done; sleep 0.5; }
# A memif server's socket exists before its port is started; a client that connects earlier
# is dropped and does not retry. Wait for testpmd to start forwarding.
wait_tp() { for _ in $(seq 1200); do grep -q "packet forwarding - ports" "$tmp/$1" && break; sleep 0.05; done; sleep 0.5; }
# Mean of testpmd's per-second X-pps lines, first and last non-zero second dropped.
pps() { grep -oE "$1-pps: +[0-9]+" "$tmp/$2" | awk '{print $2}' | awk '$1>0' | sed '1d;$d' |
  awk '{s+=$1;n++} END {if(n) printf "%.3f (%d s)", s/n/1e6, n; else print "n/a"}'; }
res() { grep -oE "RESULT $1 [0-9.]+" "$tmp/$2" | awk '{print $3}' || echo n/a; }
rtt() { grep -oE "RESULT rtt_us .*" "$tmp/$1" | sed 's/RESULT rtt_us //' || echo n/a; }
# Let the sender run SECS plus start-up slack, then stop both.
settle() { sleep $((SECS + 3)); }

rm -f "$SOCK"; tp a_rx server 0 rxonly; wait_tp a_rx; tp a_tx client 1 txonly
settle; stop a_tx a_rx; wait || true
A=$(pps Rx a_rx)

rm -f "$SOCK"; ours b_rx sink --core 0 --secs "$SECS"; wait_sock; ours b_tx source --core 1 --secs 300
wait "$(cat "$tmp/b_rx.pid")" || true; stopo b_tx; wait || true
Bv=$(res sink_mpps b_rx)

rm -f "$SOCK"; ours c_rx sink --core 0 --secs "$SECS"; wait_sock; tp c_tx client 1 txonly
wait "$(cat "$tmp/c_rx.pid")" || true; stop c_tx; wait || true
C=$(res sink_mpps c_rx)

rm -f "$SOCK"; tp d_rx server 0 rxonly; wait_tp d_rx; ours d_tx source --core 1 --secs 300
settle; stopo d_tx; stop d_rx; wait || true
D=$(pps Rx d_rx)

rm -f "$SOCK"; ours e_srv echo --core 0 --secs 300; wait_sock
ours e_cli ping --core 1 --samples "$SAMPLES"; wait "$(cat "$tmp/e_cli.pid")" || true
stopo e_srv; wait || true
E=$(rtt e_cli)

rm -f "$SOCK"; tp f_srv server 0 io; wait_tp f_srv
ours f_cli ping --core 1 --samples "$SAMPLES"; wait "$(cat "$tmp/f_cli.pid")" || true
stop f_srv; wait || true
F=$(rtt f_cli)

echo
echo "Frame rate, 64 B, one way, counted at the receiver (Mpps; testpmd: mean of its steady seconds):"
echo
echo "| sender -> receiver (net_memif, copy mode) | Mpps |"
echo "|---|---|"
echo "| dpdk-testpmd txonly -> dpdk-testpmd rxonly | $A |"
echo "| bypass pmd::dpdk source -> bypass pmd::dpdk sink | $Bv |"
echo "| dpdk-testpmd txonly -> bypass pmd::dpdk sink | $C |"
echo "| bypass pmd::dpdk source -> dpdk-testpmd rxonly | $D |"
echo
echo "Round trip, 64 B, one frame in flight, $SAMPLES samples (us):"
echo
echo "| client <-> echo server | RTT |"
echo "|---|---|"
echo "| bypass ping <-> bypass echo | $E |"
echo "| bypass ping <-> dpdk-testpmd io (loop) | $F |"
