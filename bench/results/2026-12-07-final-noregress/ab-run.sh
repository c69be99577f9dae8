#!/bin/bash
# old (9e5de3d: main at the start of this session) vs new (main with #17's restructure and
# this session's transport changes), alternated twice per mode.
set -u
D=/work/main/bench/results/2026-12-07-final-noregress
OLD=/tmp/ab-old/target/release/bypass
NEW=/tmp/ab-new/target/release/bypass
cd $D
for mode in pingpong stream; do
  for pass in 1 2; do
    for v in old new; do
      B=$OLD; [ $v = new ] && B=$NEW
      if [ $mode = pingpong ]; then args="pingpong --sizes 64"; else args="stream --sizes 64,1m"; fi
      f=$v-$pass-$mode.json
      echo "$(date +%T) $v pass $pass $mode -> $f; load: $(cut -d' ' -f1-3 /proc/loadavg)"
      $B bench -q $args --duration 1s --rounds 3 --json > $f
    done
  done
done
for mode in pingpong stream; do
  for pass in 1 2; do
    echo "== $mode pass $pass: bypass bench compare old-$pass-$mode.json new-$pass-$mode.json"
    $NEW bench compare old-$pass-$mode.json new-$pass-$mode.json
    echo "exit $?"
  done
done
