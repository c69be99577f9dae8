#!/bin/bash
# Alternating A/B of a `bypass bench` command line: OLD (a copy of the binary before a change)
# then this build, ROUNDS times, with the cache-line floor (`memif-bench --mode cacheline`
# p50, us) before each pair: the VM's vCPUs move between near (~0.06-0.08), mid (~0.12) and
# far (~0.36-0.41) and only rows of one floor compare. Prints the bench's table rows. The
# order alternates (odd rounds old first, even rounds new first): the second run of a pair
# can find the cores in another state than the first.
# Usage: OLD=/tmp/bypass-before [ROUNDS=3] scripts/bench-ab.sh stream --sizes 1m --conns 1 ...
cd "$(dirname "$0")/.."
NEW=target/release/bypass
OLD=${OLD:?set OLD to the binary to compare with}
for r in $(seq 1 "${ROUNDS:-3}"); do
  f=$($NEW memif-bench --mode cacheline --count 100000 --warmup 10000 | grep -o " p50=[^ ]*" | cut -d= -f2)
  echo "round $r $(date +%T) floor $f"
  if [ $((r % 2)) = 1 ]; then order="OLD NEW"; else order="NEW OLD"; fi
  for which in $order; do
    tag=$(echo "$which" | tr A-Z a-z)
    ${!which} bench -q "$@" 2>&1 | grep -E "busy-poll|blocking" | sed "s/^/  $tag /"
  done
done
