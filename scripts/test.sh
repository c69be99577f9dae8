#!/usr/bin/env bash
# Runs every check and test of bypass. On a fresh Debian 12 machine, as root, it first installs
# what the tests need and reserves hugepages (with a fallback when it can't).
#
#   scripts/test.sh            everything (what CI runs: .ci/run calls exactly this)
#   QUICK=1 scripts/test.sh    skip valgrind and fuzzing
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
failed_steps=()
step() {
  local name=$1
  shift
  echo
  echo "==> $name"
  local t0=$SECONDS
  if "$@"; then
    passed=$((passed + 1))
    echo "==> $name: ok ($((SECONDS - t0)) s)"
  else
    failed=$((failed + 1))
    failed_steps+=("$name")
    echo "==> $name: FAILED ($((SECONDS - t0)) s)"
  fi
}
note() { echo "    $*"; }

# ---- 1. system packages ------------------------------------------------------------------
PKGS=(libdpdk-dev dpdk-dev pkg-config clang libclang-dev tshark valgrind iproute2 iputils-ping socat
  prometheus tmux fonts-dejavu-core)
install_packages() {
  local missing=()
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    note "system packages present"
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${missing[*]}"
    echo "install them as root: apt-get install -y ${missing[*]}"
    return 1
  fi
  note "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; answer no without a prompt.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  (apt-get update -qq || true) && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
step "system packages" install_packages

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (stable 1.95 or newer) from https://rustup.rs"
  exit 1
fi

# ---- 2. hugepages --------------------------------------------------------------------------
hugepages() {
  local want=${BYPASS_HUGEPAGES:-256}
  local total
  total=$(awk '/^HugePages_Total/ {print $2}' /proc/meminfo)
  if [ "${total:-0}" -lt "$want" ] && [ -w /proc/sys/vm/nr_hugepages ]; then
    echo "$want" >/proc/sys/vm/nr_hugepages 2>/dev/null || true
  fi
  if ! mountpoint -q /dev/hugepages 2>/dev/null && [ "$(id -u)" -eq 0 ]; then
    mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages 2>/dev/null || true
  fi
  total=$(awk '/^HugePages_Total/ {print $2}' /proc/meminfo)
  if [ "${total:-0}" -gt 0 ]; then
    note "hugepages: $(grep -E '^HugePages_(Total|Free)' /proc/meminfo | tr -s ' ' | paste -sd' ')"
  else
    note "no hugepages could be reserved: regions fall back to 4 KiB pages (reported), DPDK tests use --no-huge"
    export BYPASS_NO_HUGE=1
  fi
  return 0
}
step "hugepages" hugepages

# ---- 3. format, lints, tests ---------------------------------------------------------------
step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --workspace --all-targets --all-features -- -D warnings
step "cargo doc (warnings are errors)" env RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features
step "cargo test" cargo test --workspace --all-features --no-fail-fast
# The 1 GiB message under 1 % loss is ignored where debug assertions slow it down; run it here
# with them on (the test profile is optimised).
step "1 GiB message under loss" cargo test --test proto_large -- --ignored --nocapture
# The GPU receive path against a fake CUDA driver (no GPU here): host-side logic only; the
# real GPU checks are scripts/gpu-test.sh build / run on a GPU machine.
step "GPU path (fake CUDA driver)" scripts/gpu-test.sh fake --all-features
# The C API (capi/): the C examples built with cc against bypass.h and libbypass, each run
# against its Rust counterpart as two processes over memif, both directions, the C side under
# valgrind memcheck.
capi_examples() {
  if command -v valgrind >/dev/null; then
    scripts/capi-examples.sh
  else
    note "valgrind not installed: the C examples run without it"
    VALGRIND=0 scripts/capi-examples.sh
  fi
}
step "C API examples against the Rust ones (valgrind)" capi_examples

# ---- 4. valgrind over the unsafe code in mem ----------------------------------------------
valgrind_mem() {
  local bin
  cargo build -q --bin bypass || return 1
  valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
    target/debug/bypass mem --iterations 20000 || return 1
  # The pool's concurrency and hand-off tests (not the proptest cases: too slow under valgrind).
  bin=$(cargo test -q --no-run --test mem_pool --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*mem_pool[^"]*"' | head -1 | cut -d'"' -f4)
  [ -n "$bin" ] || return 1
  valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
    --show-possibly-lost=no "$bin" --test-threads=2 --skip model_ 2>&1 | tail -3
}
if [ -z "${QUICK:-}" ] && command -v valgrind >/dev/null; then
  step "valgrind memcheck (mem)" valgrind_mem
fi

# ---- 5. fuzz targets ------------------------------------------------------------------------
fuzz() {
  if ! rustup toolchain list 2>/dev/null | grep -q nightly; then
    note "SKIP fuzz: no nightly toolchain installed (cargo-fuzz needs one: rustup toolchain install nightly)"
    return 0
  fi
  if [ ! -f fuzz/Cargo.toml ]; then
    note "SKIP fuzz: no fuzz targets yet"
    return 0
  fi
  if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install -q cargo-fuzz --locked || return 1
  fi
  if [ -x scripts/fuzz-smoke.sh ]; then
    scripts/fuzz-smoke.sh "${FUZZ_SECONDS:-10}"
  else
    (cd fuzz && cargo +nightly fuzz build)
  fi
}
if [ -z "${QUICK:-}" ]; then
  step "fuzz (build + short run)" fuzz
fi

echo
if [ $failed -gt 0 ]; then
  echo "failed steps: ${failed_steps[*]}"
fi
echo "steps: $passed passed, $failed failed"
[ $failed -eq 0 ]
