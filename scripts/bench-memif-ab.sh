#!/bin/bash
# Interleaved A/B of one-way memif rates: bypass and dpdk-testpmd, both directions, three
# rounds, with the two-thread cache-line floor measured before and after each round (the
# VM's two vCPUs move between "near", floor ~0.08 us, and "far", ~0.38 us; only rows of one
# round compare). Needs a release build and dpdk-testpmd.
cd "$(dirname "$0")/.."
B=target/release/bypass; SOCK=/run/bpx-ab.sock
tp() { dpdk-testpmd -l $1 --main-lcore $2 --no-pci --no-huge -m 512 --file-prefix=$3 --vdev="net_memif0,role=$4,socket=$SOCK,id=0,socket-abstract=no" -- --forward-mode=$5 --txpkts=64 --auto-start --no-mlockall --total-num-mbufs=16384 --stats-period 1 > /tmp/$3.log 2>&1 & }
med() { grep -o 'Rx-pps: *[0-9]*' $1 | awk '{print $2}' | awk '$1>0' | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1e6}'; }
byp() { rm -f $SOCK; $B memif-bench --role $2 --socket $SOCK --mode rx --duration 6s --core 1 > /tmp/rx.txt 2>&1 & sleep 0.3; $B memif-bench --role $1 --socket $SOCK --mode tx --duration 7s --core 0 > /tmp/tx.txt 2>&1; wait; grep -o 'mpps=[^ ]*' /tmp/rx.txt | cut -d= -f2 | xargs printf "%.1f"; }
tpm() { rm -f $SOCK; if [ $1 = server ]; then tp 1,0 1 ab_s server txonly; A=$!; sleep 1.5; tp 0,1 0 ab_c client rxonly; C=$!; RX=/tmp/ab_c.log; else tp 0,1 0 ab_s server rxonly; A=$!; sleep 1.5; tp 1,0 1 ab_c client txonly; C=$!; RX=/tmp/ab_s.log; fi; sleep 7; kill $A $C; wait $A $C 2>/dev/null; med $RX; }
floor() { $B memif-bench --mode cacheline --count 200000 --warmup 10000 | grep -o " p50=[^ ]*" | cut -d= -f2; }
echo "round floor_us | s->c bypass testpmd | c->s bypass testpmd | floor_after"
for k in 1 2 3; do
  f=$(floor); a=$(byp server client); b=$(tpm server); c=$(byp client server); d=$(tpm client); g=$(floor)
  echo "$k $f | $a $b | $c $d | $g"
done
rm -f $SOCK
