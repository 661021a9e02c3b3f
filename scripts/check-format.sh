#!/usr/bin/env bash
# Fails if any tracked C++ file differs from clang-format's LLVM style.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
files=$(git ls-files '*.cpp' '*.h' 2>/dev/null || find . -name '*.cpp' -o -name '*.h' | grep -v '^./build')
if ! clang-format --dry-run --Werror $files 2>/tmp/kvq-format.log; then
  echo "format check: these files need clang-format -i:" >&2
  grep -o '^[^:]*\.\(cpp\|h\)' /tmp/kvq-format.log | sort -u >&2
  exit 1
fi
echo "format check: $(echo $files | wc -w) C++ files formatted"
