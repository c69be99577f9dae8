#!/bin/bash
# Run a command on a view of this machine where one tool is missing from /usr/bin, to see
# what scripts/test.sh and the tests do without it (issue 16: "the CI summary on a machine
# missing one tool"). Needs root (a private mount namespace; nothing outside it changes).
#
#   scripts/without-tool.sh tshark env BYPASS_STRICT=0 CI=true bash .ci/run
#
# /usr/bin is mirrored as symlinks to a second mount of the real directory, the tool left
# out. The second mount sits under /usr so that programs that find their files relative to
# their own path (gcc's cc1 in ../lib) still do.
set -euo pipefail
tool=${1:?usage: scripts/without-tool.sh TOOL COMMAND...}
shift
real=/usr/.bypass-without-tool
if [ "${BYPASS_WITHOUT_TOOL_NS:-}" != 1 ]; then
  mkdir -p "$real"
  rc=0
  BYPASS_WITHOUT_TOOL_NS=1 unshare -m --propagation private "$0" "$tool" "$@" || rc=$?
  rmdir "$real" 2>/dev/null || true
  exit $rc
fi
unset BYPASS_WITHOUT_TOOL_NS
fake=$(mktemp -d -t bypass-without-tool.XXXXXX)
mount --bind /usr/bin "$real"
for f in "$real"/*; do
  b=${f##*/}
  [ "$b" = "$tool" ] || ln -s "$f" "$fake/$b"
done
mount --bind "$fake" /usr/bin
rc=0
"$@" || rc=$?
umount /usr/bin
rm -rf "$fake"
exit $rc
