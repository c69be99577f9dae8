#!/bin/bash
# #22 candidate (c), the memif client's idle upkeep in batches (branch lines2: 7b8da41 +
# dfe34ca), against its base (ae1891e: 7b8da41 + StackBuilder knobs, no data-path change),
# alternated base/cand four times in one run, then compared per pass.
set -u
D=$(cd "$(dirname "$0")" && pwd); cd "$D"
BASE=${BASE:-/tmp/bypass-ae1891e}; CAND=${CAND:-/tmp/bypass-lines2}
for pass in 1 2 3 4; do
  for v in base cand; do
    B=$BASE; [ $v = cand ] && B=$CAND
    echo "$(date +%T) $v pass $pass; load: $(cut -d' ' -f1-3 /proc/loadavg)"
    $B bench -q pingpong --sizes 64,1k --transports bypass-memif --duration 1s --rounds 3 --json > $v-$pass-pingpong.json
  done
done
for pass in 1 2 3 4; do
  echo "== pass $pass: bypass bench compare base-$pass-pingpong.json cand-$pass-pingpong.json"
  $CAND bench compare base-$pass-pingpong.json cand-$pass-pingpong.json | grep -E "^(old|new):|bypass-memif|regressed|WARNING"
done
