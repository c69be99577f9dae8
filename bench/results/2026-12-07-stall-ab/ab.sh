#!/bin/bash
# Interleaved A/B of the 4-round echo (1 B .. 1 MiB) under stress-ng --cpu 4.
stress-ng --cpu 4 --timeout 900 >/dev/null 2>&1 &
SP=$!
sleep 1
for i in $(seq 1 12); do
  for v in old new; do
    rm -f /tmp/echo/ab.sock
    s=$(date +%s.%N)
    timeout 60 ./$v/echo_server /tmp/echo/ab.sock --once > $v.s.out 2>&1 & SRV=$!
    timeout 60 ./$v/stall_probe /tmp/echo/ab.sock 4 > $v.c.out 2>$v.c.err; rc=$?
    wait $SRV
    e=$(echo "$(date +%s.%N)-$s" | bc)
    worst=$(grep -o 'worst [^ ]*' $v.c.out | cut -d' ' -f2)
    echo "$v run $i rc=$rc total ${e}s worst ${worst:-none}"
  done
done
kill $SP; pkill stress-ng
