#!/usr/bin/env bash
# Runs every command of README.md's ```sh blocks, literally, from the repository root, the way
# a newcomer would paste them; fails when one fails. scripts/test.sh runs it, so a README
# command that breaks fails CI.
#
#   scripts/readme-commands.sh [--list] [README]
#
# - A command is a line of a ```sh block (with its `\` continuation lines), comments and blank
#   lines left out. Commands run one after the other with `bash -c`, each with a time limit
#   (BYPASS_README_TIMEOUT, default 600 s); a command that ends in `&` runs in the background
#   and must have exited 0 by the end of its block (or within 60 s of it).
# - A block right after an HTML comment `<!-- ci: skip: REASON -->` is not run; its commands
#   are listed as skipped, with the reason, in the summary (and in $BYPASS_SKIP_LOG when set).
# - Each command's first lines of output and its exit code are printed.
# - `cargo install` builds into this checkout's target/ (CARGO_TARGET_DIR) so that CI does not
#   compile the release binary twice; the command itself is unchanged.
set -uo pipefail
cd "$(dirname "$0")/.."

LIST=0
if [[ "${1:-}" == "--list" ]]; then LIST=1; shift; fi
README=${1:-README.md}
LIMIT=${BYPASS_README_TIMEOUT:-600}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

# Emits one record per command: "BLOCK SKIPREASON COMMAND" separated by \037 (NUL-terminated).
commands() {
  awk '
    /^<!-- ci: skip: .* -->$/ { reason = $0; sub(/^<!-- ci: skip: /, "", reason); sub(/ -->$/, "", reason); pending = reason; next }
    /^```sh[ \t]*$/ { inblock = 1; block++; skip = pending; pending = ""; cmd = ""; next }
    /^```/ { if (inblock) { inblock = 0 } else { pending = "" }; next }
    !inblock { if ($0 !~ /^[ \t]*$/) pending = ""; next }
    {
      line = $0
      if (cmd == "" && (line ~ /^[ \t]*#/ || line ~ /^[ \t]*$/)) next
      if (line ~ /\\$/) { sub(/\\$/, "", line); cmd = cmd line; next }
      cmd = cmd line
      printf "%s\037%s\037%s%c", block, skip, cmd, 0
      cmd = ""
    }' "$README"
}

if [[ $LIST == 1 ]]; then
  commands | while IFS=$'\037' read -r -d '' block skip cmd; do
    printf '%s %s%s\n' "$block" "$cmd" "${skip:+   [skipped: $skip]}"
  done
  exit 0
fi

ran=0
failed=0
skipped=0
bg_pids=()
bg_cmds=()
current_block=""

wait_background() {
  local i pid deadline=$((SECONDS + 60))
  for i in "${!bg_pids[@]}"; do
    pid=${bg_pids[$i]}
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "FAILED (still running 60 s after its block ended): ${bg_cmds[$i]}"
      kill "$pid" 2>/dev/null
      failed=$((failed + 1))
    elif wait "$pid"; then
      echo "ok (background): ${bg_cmds[$i]}"
    else
      echo "FAILED (background, exit $?): ${bg_cmds[$i]}"
      failed=$((failed + 1))
    fi
  done
  bg_pids=()
  bg_cmds=()
}

logdir=$(mktemp -d /tmp/bypass-readme.XXXXXX)
n=0
while IFS=$'\037' read -r -d '' block skip cmd; do
  if [[ "$block" != "$current_block" ]]; then
    wait_background
    current_block=$block
  fi
  n=$((n + 1))
  if [[ -n "$skip" ]]; then
    echo "--- [$n] SKIP ($skip): $cmd"
    skipped=$((skipped + 1))
    [[ -n "${BYPASS_SKIP_LOG:-}" ]] && echo "README command '$cmd': $skip" >>"$BYPASS_SKIP_LOG"
    continue
  fi
  ran=$((ran + 1))
  log="$logdir/$n.log"
  if [[ "$cmd" =~ ^(.*[^&])\&[[:space:]]*$ ]]; then
    fg=${BASH_REMATCH[1]}
    echo "--- [$n] \$ $cmd"
    timeout "$LIMIT" bash -c "$fg" >"$log" 2>&1 </dev/null &
    bg_pids+=($!)
    bg_cmds+=("$cmd   (log: $log)")
    continue
  fi
  echo "--- [$n] \$ $cmd"
  t0=$SECONDS
  timeout "$LIMIT" bash -c "$cmd" >"$log" 2>&1 </dev/null
  rc=$?
  head -n 12 "$log" | sed 's/^/    | /'
  lines=$(wc -l <"$log")
  [ "$lines" -gt 12 ] && echo "    | ... ($lines lines: $log)"
  echo "    exit $rc ($((SECONDS - t0)) s)"
  if [ $rc -ne 0 ]; then
    failed=$((failed + 1))
    echo "FAILED: $cmd"
    tail -n 20 "$log" | sed 's/^/    ! /'
  fi
done < <(commands)
wait_background

echo "README commands: $ran run, $failed failed, $skipped skipped"
[ $failed -eq 0 ] && [ $ran -gt 0 ]
