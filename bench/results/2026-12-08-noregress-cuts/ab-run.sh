#!/bin/bash
# Old (9e5de3d, before the restructure and #18) against new (main at the time of the run),
# alternated old/new in one run, then compared. NEW is the binary given as $1 (here: the cuts, 9c1cfbd).
set -u
D=$(cd "$(dirname "$0")" && pwd); cd "$D"
OLD=/tmp/bypass-9e5de3d; NEW=${1:?usage: ab-run.sh NEW_BINARY}
for pass in 1 2 3; do
  for v in old new; do
    B=$OLD; [ $v = new ] && B=$NEW
    echo "$(date +%T) $v pass $pass; load: $(cut -d' ' -f1-3 /proc/loadavg)"
    $B bench -q pingpong --sizes 64 --transports bypass-memif --duration 1s --rounds 3 --json > $v-$pass-pingpong.json
    $B bench -q stream --sizes 64,1m --transports bypass-memif --conns 1 --duration 1s --rounds 3 --json > $v-$pass-stream.json
  done
done
for pass in 1 2 3; do for m in pingpong stream; do
  echo "== $m pass $pass: bypass bench compare old-$pass-$m.json new-$pass-$m.json"
  $NEW bench compare old-$pass-$m.json new-$pass-$m.json | grep -E "^(old|new):|bypass-memif|regressed|WARNING"
done; done
