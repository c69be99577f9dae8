#!/bin/bash
set -u
D=/work/main/bench/results/2026-12-07-final-noregress/bisect
mkdir -p $D; cd $D
MID=/tmp/bypass-7f04baa; NEW=/tmp/bypass-00e685d
for pass in 1 2; do
  for v in mid new; do
    B=$MID; [ $v = new ] && B=$NEW
    echo "$(date +%T) $v pass $pass; load: $(cut -d' ' -f1-3 /proc/loadavg)"
    $B bench -q pingpong --sizes 64 --transports bypass-memif --duration 1s --rounds 3 --json > $v-$pass-pingpong.json
    $B bench -q stream --sizes 64,1m --transports bypass-memif --conns 1 --duration 1s --rounds 3 --json > $v-$pass-stream.json
  done
done
for pass in 1 2; do for m in pingpong stream; do
  echo "== $m pass $pass: bypass bench compare mid-$pass-$m.json new-$pass-$m.json"
  $NEW bench compare mid-$pass-$m.json new-$pass-$m.json | grep -E "^(old|new):|bypass-memif|regressed|WARNING"
done; done
