#!/usr/bin/env bash
# The C examples (examples/c/) against the Rust ones, as two processes over memif, in both
# directions: C echo client -> Rust echo server, Rust echo client -> C echo server, C file
# sender -> Rust file receiver, Rust file sender -> C file receiver. The C side runs under
# valgrind memcheck (definite leaks and memory errors fail it), libbypass included.
#
#   scripts/capi-examples.sh            # release build, valgrind on
#   PROFILE=debug VALGRIND=0 scripts/capi-examples.sh
#
# Release by default: the Rust examples wait 10 s for an answer, and a debug build of the
# stack (opt-level 0) under valgrind takes longer than that to echo 1 MiB.
#
# Builds libbypass (capi/), the Rust examples and the C examples (with `cc`, against
# capi/include/bypass.h; one of them also against libbypass.a) into target/$PROFILE/c-examples.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-release}
VALGRIND=${VALGRIND:-1}
ROUNDS=${ROUNDS:-2}
CC=${CC:-cc}
rel=()
[ "$PROFILE" = release ] && rel=(--release)
features=()
[ -n "${CAPI_FEATURES:-}" ] && features=(--features "$CAPI_FEATURES")

cargo build -q -p bypass-capi "${rel[@]}" "${features[@]}"
cargo build -q "${rel[@]}" --example echo_server --example echo_client --example file_send \
  --example file_recv
lib=$PWD/target/$PROFILE
out=$lib/c-examples
mkdir -p "$out"
cflags=(-std=c11 -O2 -g -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L -I capi/include)
for ex in echo_server echo_client file_send file_recv pingpong; do
  "$CC" "${cflags[@]}" "examples/c/$ex.c" -L "$lib" -lbypass -Wl,-rpath,"$lib" -o "$out/$ex"
done
# The static library links too (its native dependencies: see capi/README.md).
"$CC" "${cflags[@]}" examples/c/echo_client.c "$lib/libbypass.a" -lgcc_s -lutil -lrt -lpthread \
  -lm -ldl -lc -o "$out/echo_client_static"
"$CC" "${cflags[@]}" examples/c/pingpong.c "$lib/libbypass.a" -lgcc_s -lutil -lrt -lpthread \
  -lm -ldl -lc -o "$out/pingpong_static"
echo "built: $(cd "$out" && ls | tr '\n' ' ')"

work=$(mktemp -d /tmp/bypass-capi-examples.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

vg=()
if [ "$VALGRIND" = 1 ]; then
  command -v valgrind >/dev/null || { echo "valgrind not found (VALGRIND=0 to skip it)"; exit 1; }
  vg=(valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite)
fi
# `cvg NAME ARGS...`: sets CMD to run the C example NAME, under valgrind (log in
# $work/NAME.vg) unless VALGRIND=0.
cvg() {
  local name=$1
  shift
  if [ ${#vg[@]} -gt 0 ]; then
    CMD=("${vg[@]}" --log-file="$work/$name.vg" "$out/$name" "$@")
  else
    CMD=("$out/$name" "$@")
  fi
}
vg_summary() {
  [ ${#vg[@]} -gt 0 ] || return 0
  grep -E "ERROR SUMMARY|definitely lost|indirectly lost|possibly lost|still reachable|All heap blocks" \
    "$work/$1.vg" | sed "s/^==[0-9]*==/    valgrind $1:/"
}

# `pair TITLE SERVER_CMD... -- CLIENT_CMD...`: the server in the background (waits for its
# socket file), then the client; both must exit 0 within 300 s.
pair() {
  local title=$1 sock=$2
  shift 2
  local server=() client=()
  while [ "$1" != -- ]; do server+=("$1"); shift; done
  shift
  client=("$@")
  echo "== $title"
  timeout 300 "${server[@]}" >"$work/server.out" 2>&1 &
  local sp=$!
  pids+=("$sp")
  local i=0
  while [ ! -S "$sock" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
  local crc=0 src=0
  timeout 300 "${client[@]}" >"$work/client.out" 2>&1 || crc=$?
  wait "$sp" || src=$?
  sed 's/^/    /' "$work/server.out" "$work/client.out"
  if [ "$crc" != 0 ] || [ "$src" != 0 ]; then
    echo "   FAILED: server exit $src, client exit $crc"
    return 1
  fi
  if [ -e "$sock" ]; then
    echo "   FAILED: memif socket $sock left behind"
    return 1
  fi
}

rust=$lib/examples
input=$work/input.bin
head -c $((3 * 1024 * 1024 + 12345)) /dev/urandom >"$input"
failed=0

s=$work/echo1.sock
cvg echo_client "$s" "$ROUNDS"
pair "C echo_client -> Rust echo_server" "$s" "$rust/echo_server" "$s" --once -- "${CMD[@]}" && vg_summary echo_client || failed=1

s=$work/echo2.sock
cvg echo_server "$s" --once
pair "Rust echo_client -> C echo_server" "$s" "${CMD[@]}" -- "$rust/echo_client" "$s" "$ROUNDS" && vg_summary echo_server || failed=1

s=$work/file1.sock
cvg file_send "$s" "$input"
pair "C file_send -> Rust file_recv" "$s" "$rust/file_recv" "$s" "$work/out1.bin" -- "${CMD[@]}" && vg_summary file_send || failed=1
cmp "$input" "$work/out1.bin" && echo "    received file identical" || failed=1

s=$work/file2.sock
cvg file_recv "$s" "$work/out2.bin"
pair "Rust file_send -> C file_recv" "$s" "${CMD[@]}" -- "$rust/file_send" "$s" "$input" && vg_summary file_recv || failed=1
cmp "$input" "$work/out2.bin" && echo "    received file identical" || failed=1

s=$work/echo3.sock
pair "C echo_client (libbypass.a) -> C echo_server" "$s" "$out/echo_server" "$s" --once -- \
  "$out/echo_client_static" "$s" "$ROUNDS" || failed=1

[ $failed = 0 ] && echo "capi examples: all pairs passed" || echo "capi examples: FAILED"
exit $failed
