#!/bin/bash
# The VM's two vCPUs move between "near" (cache-line floor ~0.08 us) and "far" (~0.38 us).
# This waits for far cores (floor checked every 8 s) and then interleaves client->server
# one-way rates: this build, another build (OLD, e.g. a copy of the binary before a change;
# defaults to this build) and dpdk-testpmd. Usage: [OLD=path] scripts/bench-memif-far.sh [SECONDS]
cd "$(dirname "$0")/.."
SOCK=/run/bpx-ab.sock
NEW=target/release/bypass
OLD=${OLD:-$NEW}
tp() { dpdk-testpmd -l $1 --main-lcore $2 --no-pci --no-huge -m 512 --file-prefix=$3 --vdev="net_memif0,role=$4,socket=$SOCK,id=0,socket-abstract=no" -- --forward-mode=$5 --txpkts=64 --auto-start --no-mlockall --total-num-mbufs=16384 --stats-period 1 > /tmp/$3.log 2>&1 & }
med() { grep -o 'Rx-pps: *[0-9]*' $1 | awk '{print $2}' | awk '$1>0' | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1e6}'; }
# secs BIN N: how BIN's memif-bench takes N seconds (builds before the clap CLI took `--secs N`).
secs() { if $1 memif-bench --help 2>&1 | grep -q -- --duration; then echo "--duration ${2}s"; else echo "--secs $2"; fi; }
byp() { local B=$1; rm -f $SOCK; $B memif-bench --role server --socket $SOCK --mode rx $(secs $B 6) --core 1 > /tmp/rx.txt 2>&1 & sleep 0.3; $B memif-bench --role client --socket $SOCK --mode tx $(secs $B 7) --core 0 > /tmp/tx.txt 2>&1; wait; grep -o 'mpps=[^ ]*' /tmp/rx.txt | cut -d= -f2 | xargs printf "%.1f"; }
tpm() { rm -f $SOCK; tp 0,1 0 ab_s server rxonly; A=$!; sleep 1.5; tp 1,0 1 ab_c client txonly; C=$!; sleep 7; kill $A $C; wait $A $C 2>/dev/null; med /tmp/ab_s.log; }
floor() { $NEW memif-bench --mode cacheline --count 100000 --warmup 10000 | grep -o " p50=[^ ]*" | cut -d= -f2; }
end=$((SECONDS + ${1:-420}))
while [ $SECONDS -lt $end ]; do
  f=$(floor)
  if awk -v f=$f 'BEGIN{exit !(f>0.3)}'; then
    a=$(byp $NEW); b=$(byp $OLD); c=$(tpm); g=$(floor)
    echo "$(date +%T) far $f | c->s new $a old $b testpmd $c | $g"
  else
    echo "$(date +%T) near $f"; sleep 8
  fi
done
rm -f $SOCK
