#!/usr/bin/env bash
# GPU tests and benchmark of bypass, for a machine with an NVIDIA GPU but no Rust toolchain.
#
#   scripts/gpu-test.sh build          here (with cargo): build the GPU test binaries and the
#                                      benchmark in release, without the dpdk feature, and
#                                      copy them, stripped, into target/gpu-bundle/
#   scripts/gpu-test.sh fake [ARGS]    here, without a GPU: build tests/cuda_fake (a fake
#                                      libcuda.so.1 that defers every asynchronous copy) and
#                                      run the GPU tests against it (ARGS go to cargo test,
#                                      e.g. --all-features); checks the host side only
#   scripts/gpu-test.sh run [DIR]      there (with libcuda.so.1): run every binary of the
#                                      bundle (DIR, default target/gpu-bundle, or this
#                                      script's own directory when it sits in a bundle);
#                                      exits non-zero if any failed
#
# The bundle is self-contained: copy target/gpu-bundle/ anywhere and run
# `gpu-bundle/gpu-test.sh run`. The binaries need glibc >= the build machine's (2.36) and
# load libcuda.so.1 at run time; nothing else. In `run` mode the tests must find a GPU
# (BYPASS_REQUIRE_GPU=1): a missing driver fails instead of skipping.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)

# exe JSON PATTERN: the executable of the target whose line of cargo's JSON output matches.
exe() {
  echo "$1" | grep '"executable":"' | grep "$2" |
    sed 's/.*"executable":"\([^"]*\)".*/\1/' | head -1
}

build() {
  cd "$here/.." || exit 1
  local out=target/gpu-bundle
  rm -rf "$out"
  mkdir -p "$out"
  echo "==> building test binaries (release)"
  local json
  json=$(cargo test -j2 --release --no-run --message-format=json \
    -p bypass --lib --test gpu 2>/dev/null) || {
    cargo test -j2 --release --no-run -p bypass --lib --test gpu
    exit 1
  }
  echo "==> building the benchmark (release)"
  cargo build -j2 --release -p bypass-bench --bin gpu_recv_bench || exit 1
  local lib gpu
  lib=$(exe "$json" '"kind":\["lib"\]')
  gpu=$(exe "$json" '"kind":\["test"\][^}]*"name":"gpu"')
  if [ -z "$lib" ] || [ -z "$gpu" ]; then
    echo "could not find the test executables in cargo's output"
    exit 1
  fi
  strip -o "$out/bypass-unit-tests" "$lib"
  strip -o "$out/gpu" "$gpu"
  strip -o "$out/gpu_recv_bench" target/release/gpu_recv_bench
  cp "$here/gpu-test.sh" "$out/gpu-test.sh"
  # What `run` executes, one binary and its arguments per line.
  cat >"$out/MANIFEST" <<'MANIFEST'
bypass-unit-tests mem::gpu --test-threads=1 --nocapture
gpu --test-threads=1 --nocapture
gpu_recv_bench 512
MANIFEST
  echo "==> bundle:"
  ls -l "$out"
  du -sh "$out"
  local kib
  kib=$(du -sk "$out" | cut -f1)
  if [ "$kib" -gt $((64 * 1024)) ]; then
    echo "bundle is over 64 MiB"
    exit 1
  fi
}

fake() {
  cd "$here/.." || exit 1
  local dir=target/cuda-fake
  mkdir -p "$dir"
  cc -shared -fPIC -O2 -Wall -Wextra -Werror -o "$dir/libcuda.so.1" tests/cuda_fake/fake_cuda.c \
    -lpthread || exit 1
  export LD_LIBRARY_PATH="$PWD/$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" BYPASS_REQUIRE_GPU=1
  # The test binaries of the whole workspace, as scripts/test.sh's cargo test step builds them
  # (same packages, same features: nothing rebuilt there; selecting single targets would
  # unify features differently and rebuild half the tree), then the GPU ones run directly.
  local json lib gpu
  json=$(cargo test --workspace "$@" --no-run --message-format=json 2>/dev/null) || {
    cargo test --workspace "$@" --no-run
    return 1
  }
  lib=$(exe "$json" '#bypass@[^"]*","manifest_path":"[^"]*","target":{"kind":\["lib"\]')
  gpu=$(exe "$json" '"kind":\["test"\][^}]*"name":"gpu"')
  if [ -z "$lib" ] || [ -z "$gpu" ]; then
    echo "could not find the test executables in cargo's output"
    return 1
  fi
  "$lib" mem::gpu --test-threads=1 --nocapture || return 1
  "$gpu" --test-threads=1 --nocapture
}

run() {
  local dir=${1:-}
  if [ -z "$dir" ]; then
    if [ -f "$here/MANIFEST" ]; then dir=$here; else dir=$here/../target/gpu-bundle; fi
  fi
  cd "$dir" || exit 1
  [ -f MANIFEST ] || {
    echo "no MANIFEST in $dir: run '$0 build' first"
    exit 1
  }
  echo "==> $(date -u)  $(uname -n)  $(nproc) cores  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
  command -v nvidia-smi >/dev/null &&
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  export BYPASS_REQUIRE_GPU=1
  local failed=() name args t0
  while read -r name args; do
    [ -z "$name" ] && continue
    if [ ! -x "./$name" ]; then
      echo "==> $name: missing"
      failed+=("$name")
      continue
    fi
    echo
    echo "==> $name $args"
    t0=$SECONDS
    # shellcheck disable=SC2086
    if "./$name" $args; then
      echo "==> $name: ok ($((SECONDS - t0)) s)"
    else
      echo "==> $name: FAILED ($((SECONDS - t0)) s)"
      failed+=("$name")
    fi
  done <MANIFEST
  echo
  if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
  fi
  echo "all GPU checks passed"
}

case "${1:-}" in
build) build ;;
fake)
  shift
  fake "$@"
  ;;
run) run "${2:-}" ;;
*)
  echo "usage: $0 build | fake [CARGO TEST ARGS] | run [DIR]"
  exit 2
  ;;
esac
