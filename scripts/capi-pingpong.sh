#!/bin/bash
# The C API's 64 B round trip against the Rust API's, alternated: each round measures the
# cache-line floor (`bypass memif-bench --mode cacheline` p50, us: the VM's vCPUs move
# between near ~0.06-0.08 and far ~0.36-0.41, and only rows of one floor compare), then
# examples/c/pingpong.c (two C processes over memif; client core 0, server core 1) and
# `bypass bench pingpong` (two Rust processes over memif, busy-poll; client core 0, peer
# core 1), in alternating order, making the same calls:
#   MODE=sendbuf (default): C bypass_socket_sendbuf + chunks + send, bypass_socket_recv_msg +
#     segments + release; Rust (BYPASS_BENCH_SEND=buf) Socket::send_buf + write_at + send,
#     Socket::recv_msg;
#   MODE=copy: C bypass_socket_send + bypass_socket_recv (--copy); Rust Socket::send_bytes +
#     Socket::recv_msg (the bench's default; the nearest Rust form, without the C API's two
#     copies).
# Usage: [MODE=sendbuf|copy] [ROUNDS=4] [SIZE=64] [DURATION_MS=1000] scripts/capi-pingpong.sh
# Needs the release builds: cargo build --release -p bypass-capi -p bypass-cli, and
# PROFILE=release VALGRIND=0 scripts/capi-examples.sh for pingpong and pingpong_static.
cd "$(dirname "$0")/.."
B=target/release/bypass
C=target/release/c-examples/pingpong
CS=target/release/c-examples/pingpong_static
SIZE=${SIZE:-64}
DUR=${DURATION_MS:-1000}
case ${MODE:-sendbuf} in
  sendbuf) COPY= ; export BYPASS_BENCH_SEND=buf ;;
  copy) COPY=--copy ; unset BYPASS_BENCH_SEND ;;
  *) echo "MODE: sendbuf or copy"; exit 2 ;;
esac
[ -x "$B" ] && [ -x "$C" ] && [ -x "$CS" ] || { echo "build $B, $C and $CS first"; exit 1; }
pp() {
  local bin=$1 s=/tmp/bypass-capi-pingpong-$$.sock
  rm -f "$s"
  "$bin" server "$s" --core 1 $COPY >/dev/null &
  local sp=$!
  "$bin" client "$s" --core 0 --size "$SIZE" --duration-ms "$DUR" $COPY
  wait $sp
}
# C against libbypass.so, and against libbypass.a (thread-locals of a shared library are
# reached through __tls_get_addr; linked statically, as in a Rust binary, they are not).
c_run() { pp "$C"; }
cstatic_run() { pp "$CS"; }
rust_run() {
  $B bench -q pingpong --sizes "$SIZE" --transports bypass-memif --variants busy-poll \
    --duration "${DUR}ms" 2>&1 | grep -E "busy-poll"
}
for r in $(seq 1 "${ROUNDS:-4}"); do
  f=$($B memif-bench --mode cacheline --count 100000 --warmup 10000 | grep -o " p50=[^ ]*" | cut -d= -f2)
  echo "round $r $(date +%T) floor $f"
  case $((r % 3)) in
    1) order="c_run cstatic_run rust_run" ;;
    2) order="rust_run c_run cstatic_run" ;;
    0) order="cstatic_run rust_run c_run" ;;
  esac
  for which in $order; do
    $which 2>&1 | sed "s/^/  ${which%_run} /"
  done
done
