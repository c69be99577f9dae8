#!/usr/bin/env bash
# Build and run everything that needs DPDK: the dpdk-sys crate and the pmd::dpdk tests
# (net_ring, two processes over net_memif, a kernel peer over veth/netns). Installs the system
# packages when they are missing and we are root (CI). The tests use ordinary pages
# (--no-huge), so no hugepages need to be reserved.
#
#   scripts/dpdk-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! pkg-config --exists libdpdk 2>/dev/null || ! command -v dpdk-testpmd >/dev/null ||
   ! command -v clang >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libdpdk-dev dpdk-dev dpdk pkg-config \
      clang libclang-dev iproute2 iputils-ping
  else
    echo "DPDK is missing: apt-get install libdpdk-dev dpdk-dev pkg-config clang libclang-dev"
    exit 1
  fi
fi
echo "DPDK $(pkg-config --modversion libdpdk)"
cargo test -j2 -p dpdk-sys
cargo test -j2 --features dpdk --lib pmd::dpdk
for t in dpdk_ring dpdk_memif dpdk_veth dpdk_tap dpdk_memif_cross; do
  cargo test -j2 --features dpdk --test "$t" -- --nocapture
done
