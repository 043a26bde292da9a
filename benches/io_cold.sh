#!/usr/bin/env bash
# Cold-cache I/O isolation (benches/io_cold.rs) on a device with a real queue.
#
# This VM's disk is cached by its host, so cold reads are never device-bound here. The kernel's
# blk-throttle (cgroup v1 blkio) turns it into one: reads of the bench's cgroup are limited to
# MBPS MB/s, and bios over the budget wait in a FIFO queue per cgroup, like requests at a saturated
# device. The script builds the bench, creates the cgroup (root and a writable blkio hierarchy
# needed; otherwise it runs unthrottled and says so), runs the bench inside it, and removes it.
#
# Usage: CARGO_TARGET_DIR=... benches/io_cold.sh [MBPS]   (default 20; PAGEGEN_BENCH_SMOKE=1: short)
# Also honoured: PAGEGEN_COLD_SECS, PAGEGEN_COLD_ROUNDS, PAGEGEN_COLD_DIR (see io_cold.rs).
set -euo pipefail
MBPS=${1:-20}
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$PWD/target}
bin=$(cargo bench --bench io_cold --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
[ -x "$bin" ] || { echo "io_cold.sh: could not build the bench" >&2; exit 1; }
data=${PAGEGEN_COLD_DIR:-$target/io-cold}
mkdir -p "$data"
export PAGEGEN_COLD_DIR=$data

# The whole disk under the data directory (blk-throttle takes disks, not partitions).
dev=$(stat -c '%Hd:%Ld' "$data" 2>/dev/null || true)
if [ -n "$dev" ] && [ -e "/sys/dev/block/$dev/partition" ]; then
  dev=$(cat "$(readlink -f "/sys/dev/block/$dev")/../dev")
fi
cg=/sys/fs/cgroup/blkio/pagegen_bench
throttled=0
made=0
cleanup() {
  if [ "$throttled" = 1 ]; then
    echo $$ > /sys/fs/cgroup/blkio/cgroup.procs 2>/dev/null || true
  fi
  if [ "$made" = 1 ]; then
    rmdir "$cg" 2>/dev/null || true
  fi
}
trap cleanup EXIT
if [ "$(id -u)" = 0 ] && [ -n "$dev" ] && [ -w /sys/fs/cgroup/blkio ] \
   && { [ -d "$cg" ] || { mkdir "$cg" 2>/dev/null && made=1; }; } \
   && echo "$dev $((MBPS * 1000000))" > "$cg/blkio.throttle.read_bps_device" 2>/dev/null; then
  echo $$ > "$cg/cgroup.procs"
  throttled=1
  export PAGEGEN_COLD_DEVICE_BPS=$((MBPS * 1000000))
  echo "io_cold.sh: reads of device $dev throttled to $MBPS MB/s (blk-throttle, cgroup $cg)"
else
  unset PAGEGEN_COLD_DEVICE_BPS
  echo "io_cold.sh: NOT throttled (needs root and a writable cgroup v1 blkio hierarchy):" \
       "the disk is host-cached, so this run shows no device queue"
fi
# Not exec: the trap must run to remove the cgroup.
"$bin" --bench
