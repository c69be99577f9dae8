#!/usr/bin/env bash
# Installs the repository's git hooks (scripts/commit-msg) into this checkout; run once after
# cloning (scripts/test.sh runs it too). Works in worktrees. Leaves a different hook alone.
set -eu
cd "$(dirname "$0")/.."
git rev-parse --git-dir >/dev/null 2>&1 || exit 0
hooks=$(git rev-parse --git-path hooks)
mkdir -p "$hooks"
target="$hooks/commit-msg"
if [ -e "$target" ] && ! cmp -s "$target" scripts/commit-msg; then
  if ! grep -q 'scripts/install-hooks.sh' "$target"; then
    echo "install-hooks: $target exists and is not ours; left alone" >&2
    exit 0
  fi
fi
cp scripts/commit-msg "$target"
chmod +x "$target"
echo "installed $target"
