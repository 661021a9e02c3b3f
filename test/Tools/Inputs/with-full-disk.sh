#!/bin/sh
# with-full-disk.sh DIR VAR[,VAR...] COMMAND...: runs COMMAND with each named
# environment variable (KVQ_CACHE_DIR, KVQ_DUMP_DIR, TMPDIR) pointing into a
# filesystem that is full: a 64 KiB tmpfs, mounted in a private mount
# namespace (unshare -rm: no root needed, nothing visible outside), then
# filled. What COMMAND left in those folders is listed in DIR/leftovers.txt
# (the tmpfs is gone when this returns). Exits with COMMAND's status.
# Used by test/Tools/full-disk.test.
set -eu
dir=$1 vars=$2
shift 2
mkdir -p "$dir/full"
exec unshare -rm sh -c '
  dir=$1 vars=$2; shift 2
  mount -t tmpfs -o size=64k tmpfs "$dir/full"
  for v in $(echo "$vars" | tr , " "); do
    mkdir -p "$dir/full/$v"
    export "$v=$dir/full/$v"
  done
  dd if=/dev/zero of="$dir/full/filler" bs=4k 2>/dev/null || true
  status=0
  "$@" || status=$?
  for v in $(echo "$vars" | tr , " "); do
    find "$dir/full/$v" -mindepth 1 -type f
  done > "$dir/leftovers.txt"
  exit $status' with-full-disk "$dir" "$vars" "$@"
