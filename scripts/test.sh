#!/usr/bin/env bash
# Runs every check and test of bypass. On a fresh Debian 12 machine, as root, it first installs
# what the tests need and reserves hugepages (with a fallback when it can't).
#
#   scripts/test.sh            everything (what CI runs: .ci/run calls exactly this)
#   QUICK=1 scripts/test.sh    skip valgrind, fuzzing, the long property runs and the
#                              README commands
#
# Nothing is skipped silently. A step that cannot run, and every test that skips a check
# (tests/harness: `harness::skip`, `harness::require_tool`), is listed under "skipped" in the
# summary with its reason. Once the package step has installed everything, strict mode is on
# (BYPASS_STRICT=1, exported to the tests; set BYPASS_STRICT=0 to turn it off): a tool this
# script installed that a test or step then does not find is a failure, not a skip.
# The last line is always `steps: N passed, N failed` (CI reads it).
set -uo pipefail
cd "$(dirname "$0")/.."

# The commit-msg hook (subjects of at most 72 characters) for whoever commits from this clone.
bash scripts/install-hooks.sh >/dev/null || true

passed=0
failed=0
failed_steps=()
skipped_steps=() # "step NAME: reason"
facts=()         # what the run covered, for the summary ("property cases: ...")
# Tests append one line per skip here (tests/harness/mod.rs).
BYPASS_SKIP_LOG=$(mktemp -t bypass-skips.XXXXXX)
export BYPASS_SKIP_LOG
trap 'rm -f "$BYPASS_SKIP_LOG"' EXIT
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
strict() { [ "${BYPASS_STRICT:-0}" = 1 ]; }
# A step that cannot run here: listed as skipped with its reason, or, with `fatal` (what is
# missing is something this script installs) in strict mode, failed.
skip_step() {
  local name=$1 reason=$2 fatal=${3:-}
  echo
  echo "==> $name"
  if [ -n "$fatal" ] && strict; then
    failed=$((failed + 1))
    failed_steps+=("$name")
    echo "==> $name: FAILED (BYPASS_STRICT=1 and $reason)"
  else
    skipped_steps+=("step $name: $reason")
    echo "==> $name: skipped ($reason)"
  fi
}

# ---- 1. system packages ------------------------------------------------------------------
PKGS=(libdpdk-dev dpdk-dev pkg-config clang libclang-dev tshark valgrind iproute2 iputils-ping socat curl
  prometheus tmux fonts-dejavu-core python3 python3-venv)
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
# Everything installed: from here on, a missing tool is a failure (unless the caller chose).
if [ $failed -eq 0 ] && [ -z "${BYPASS_STRICT:-}" ]; then
  export BYPASS_STRICT=1
fi
note "strict mode: BYPASS_STRICT=${BYPASS_STRICT:-0}"

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
# The library as an embedder builds it, with default features, none and all (the workspace
# steps unify features across crates, so a feature set that breaks alone shows only here), and
# its default build free of the tools' dependencies (they belong to cli/).
library_features() {
  local f tools
  for f in "" --no-default-features --all-features; do
    echo "cargo clippy -p bypass --lib $f"
    cargo clippy -q -p bypass --lib $f -- -D warnings || return 1
  done
  tools=$(cargo tree -q -e normal -p bypass --prefix none |
    grep -oE '^(clap|plotters|tiny_http|prometheus-client|serde_json|tracing-subscriber) ' | sort -u)
  [ -z "$tools" ] || { echo "the library's default build pulls in:" $tools; return 1; }
}
step "library: default features, none, all" library_features
step "cargo doc (warnings are errors)" env RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features
step "architecture picture and dependency list match the code" python3 scripts/arch-diagram.py --check
step "cargo test" cargo test --workspace --all-features --no-fail-fast
# The steps below run test binaries and the CLI that step built, directly: a cargo command
# selecting one target or package unifies features differently and would rebuild half the
# tree (minutes on 2 cores). TEST_BUILD is cargo's list of what it built (nothing is rebuilt).
TEST_BUILD=
test_exe() { # test_exe NAME: the executable of integration test NAME
  if [ -z "$TEST_BUILD" ]; then
    TEST_BUILD=$(cargo test --workspace --all-features --no-run --message-format=json 2>/dev/null |
      grep '"executable":"')
  fi
  echo "$TEST_BUILD" | grep "\"kind\":\[\"test\"\][^}]*\"name\":\"$1\"" |
    sed 's/.*"executable":"\([^"]*\)".*/\1/' | head -1
}
lib_test_exe() { # the executable of the library's unit tests (crate bypass, all features)
  if [ -z "$TEST_BUILD" ]; then
    TEST_BUILD=$(cargo test --workspace --all-features --no-run --message-format=json 2>/dev/null |
      grep '"executable":"')
  fi
  echo "$TEST_BUILD" | grep '"kind":\["lib"\][^}]*"name":"bypass"' |
    sed 's/.*"executable":"\([^"]*\)".*/\1/' | head -1
}
run_test() { # run_test NAME ARGS...: run integration test NAME's binary (tests/NAME/main.rs or
  # tests/NAME.rs; a layer's binary holds its files as modules: `run_test proto prop::`)
  local exe
  exe=$(test_exe "$1")
  [ -n "$exe" ] || { echo "no test binary $1 in the cargo test build"; return 1; }
  shift
  "$exe" "$@"
}
# The transport's property test and seed sweep at real counts (the cargo test step runs 8
# cases and 1 seed per scenario to stay quick). The test profile is optimised, so this reuses
# that step's build; QUICK=1 keeps the quick counts.
PROP_CASES=${PROP_CASES:-256}
SWEEP_SEEDS=${SWEEP_SEEDS:-30}
[ -n "${QUICK:-}" ] && PROP_CASES=8 SWEEP_SEEDS=1
props_and_sweep() {
  local out props scenarios
  out=$(PROPTEST_CASES=$PROP_CASES run_test proto prop:: 2>&1)
  props=$(echo "$out" | grep -o 'test result: ok\. [0-9]* passed' | grep -o '[0-9]* passed' | cut -d' ' -f1)
  # A failure prints all of it: the panic names the seed, the impairment and the minimal
  # failing input, which is what reproduces it.
  if [ -n "$props" ]; then echo "$out" | tail -3; else echo "$out"; return 1; fi
  out=$(PROTO_SWEEP_SEEDS=$SWEEP_SEEDS run_test proto --exact regressions::sweep --nocapture 2>&1)
  if echo "$out" | grep -q 'test result: ok\. 1 passed'; then echo "$out" | tail -3; else echo "$out"; return 1; fi
  scenarios=$(echo "$out" | grep -o 'sweep: [0-9]* scenarios' | grep -o '[0-9]*')
  facts+=("property cases: $PROP_CASES x $props properties (proto prop::), sweep seeds: $SWEEP_SEEDS x ${scenarios:-?} scenarios (proto regressions::sweep)")
}
step "property tests and seed sweep" props_and_sweep
# Every committed fuzz seed replayed through the fuzz targets' own code, on stable.
fuzz_seeds() {
  local out n
  out=$(run_test fuzz_seeds --nocapture 2>&1)
  echo "$out" | grep -E '^replayed|test result'
  echo "$out" | grep -q 'test result: ok' || {
    echo "$out"
    return 1
  }
  n=$(echo "$out" | grep -o 'replayed [0-9]* fuzz seeds[^)]*)' | head -1)
  facts+=("fuzz seeds: ${n:-none replayed}")
  [ -n "$n" ]
}
step "fuzz seeds replayed" fuzz_seeds
# The 1 GiB message under 1 % loss is ignored where debug assertions slow it down; run it here
# with them on (the test profile is optimised).
step "1 GiB message under loss" run_test proto large:: --ignored --nocapture
# The GPU receive path against a fake CUDA driver (no GPU here): host-side logic only; the
# real GPU checks are scripts/gpu-test.sh build / run on a GPU machine.
step "GPU path (fake CUDA driver)" scripts/gpu-test.sh fake --all-features
# The Python package (python/): installed as a user would (`pip install ./python`, maturin
# from PyPI as the build backend) into a virtualenv of its own, then its pytest suite, which
# also runs the Python examples against the Rust examples built here.
python_package() {
  local venv=target/pyenv
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || { note "python3 -m venv failed (Debian: apt-get install python3-venv)"; return 1; }
  fi
  "$venv/bin/pip" install -q --upgrade pip >/dev/null || return 1
  "$venv/bin/pip" install -q ./python pytest numpy || return 1
  cargo build -q --release --example echo_server --example sample_server || return 1
  BYPASS_EXAMPLES_DIR=target/release/examples "$venv/bin/python" -m pytest -q python/tests
}
step "python package (pip install ./python, pytest)" python_package
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

# ---- 4. valgrind over the unsafe code in mem and runtime::handoff ------------------------
valgrind_mem() {
  local bin
  # target/debug/bypass: the CLI as the cargo test step built it (test profile, all features).
  [ -x target/debug/bypass ] || cargo build -q --all-features --bin bypass || return 1
  valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
    target/debug/bypass mem --iterations 20000 || return 1
  # The pool's concurrency and hand-off tests (not the proptest cases: too slow under valgrind).
  bin=$(test_exe mem)
  [ -n "$bin" ] || { echo "no test binary mem in the cargo test build"; return 1; }
  valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
    --show-possibly-lost=no "$bin" pool:: --test-threads=2 --skip model_ 2>&1 | tail -3
  # The hand-off queue between cores (runtime::handoff, the runtime's other unsafe code): its
  # unit tests, drops counted, the two-thread stress test shortened.
  # (test_exe and lib_test_exe run in $(...): each lists the build itself.)
  bin=$(lib_test_exe)
  [ -n "$bin" ] || { echo "no unit-test binary of the library in the cargo test build"; return 1; }
  BYPASS_HANDOFF_STRESS_N=20000 valgrind -q --error-exitcode=99 --leak-check=full \
    --errors-for-leak-kinds=definite --show-possibly-lost=no "$bin" runtime::handoff:: \
    --test-threads=2 2>&1 | tail -3
}
if [ -n "${QUICK:-}" ]; then
  skip_step "valgrind memcheck (mem, runtime::handoff)" "QUICK=1"
elif ! command -v valgrind >/dev/null; then
  skip_step "valgrind memcheck (mem, runtime::handoff)" "valgrind not installed (Debian package valgrind)" fatal
else
  step "valgrind memcheck (mem, runtime::handoff)" valgrind_mem
fi

# ---- 5. fuzz targets ------------------------------------------------------------------------
# (Every committed seed of every target also replays under stable `cargo test`:
# tests/fuzz_seeds.rs, counted in the summary.)
fuzz() {
  if ! command -v cargo-fuzz >/dev/null 2>&1; then
    cargo install -q cargo-fuzz --locked || return 1
  fi
  if [ -x scripts/fuzz-smoke.sh ]; then
    scripts/fuzz-smoke.sh "${FUZZ_SECONDS:-10}"
  else
    (cd fuzz && cargo +nightly fuzz build)
  fi
}
if [ -n "${QUICK:-}" ]; then
  skip_step "fuzz (build + short run)" "QUICK=1"
elif [ ! -f fuzz/Cargo.toml ]; then
  skip_step "fuzz (build + short run)" "no fuzz targets (fuzz/Cargo.toml)"
elif ! rustup toolchain list 2>/dev/null | grep -q nightly; then
  skip_step "fuzz (build + short run)" \
    "no nightly toolchain (cargo-fuzz needs one: rustup toolchain install nightly)"
else
  step "fuzz (build + short run)" fuzz
fi

# ---- 6. the README's commands, as a newcomer runs them --------------------------------------
# Every command of README.md's sh blocks, literally (the main job's full default run first);
# blocks that cannot run here are listed as skipped with their reason.
if [ -n "${QUICK:-}" ]; then
  skip_step "README commands" "QUICK=1"
else
  step "README commands" scripts/readme-commands.sh
fi

# ---- summary ---------------------------------------------------------------------------------
# What ran, what was skipped and why, what failed; the last line is the one CI reads.
summary() {
  local skips=() line n reason names nskip_extra=0
  skips+=("${skipped_steps[@]}")
  if [ -s "$BYPASS_SKIP_LOG" ]; then
    # README commands one per line; tests grouped by reason ("N tests: reason: a, b, ..."),
    # so 15 GPU tests without a driver read as one line. Each skipped test still counts.
    while IFS= read -r line; do
      skips+=("$line")
    done < <(sort -u "$BYPASS_SKIP_LOG" | grep '^README command')
    while IFS=$'\t' read -r n reason names; do
      if [ "$n" -eq 1 ]; then
        skips+=("test $names: $reason")
      else
        skips+=("$n tests: $reason: $names")
        nskip_extra=$((nskip_extra + n - 1))
      fi
    done < <(sort -u "$BYPASS_SKIP_LOG" | grep -v '^README command' |
      awk '{ i = index($0, ": "); if (!i) next; t = substr($0, 1, i - 1); r = substr($0, i + 2)
             n[r]++; names[r] = names[r] (n[r] > 1 ? ", " : "") t }
           END { for (r in n) printf "%d\t%s\t%s\n", n[r], r, names[r] }' | sort -t$'\t' -k2)
  fi
  echo
  echo "==> summary"
  for line in "${facts[@]}"; do
    echo "$line"
  done
  if [ ${#skips[@]} -gt 0 ]; then
    echo "skipped (not run here, with the reason):"
    for line in "${skips[@]}"; do
      echo "  $line"
    done
  fi
  if [ $failed -gt 0 ]; then
    printf -v line '%s; ' "${failed_steps[@]}"
    echo "failed steps: ${line%; }"
  fi
  echo "skipped: $((${#skips[@]} + nskip_extra))"
  echo "steps: $passed passed, $failed failed"
}
summary
[ $failed -eq 0 ]
