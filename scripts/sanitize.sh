#!/usr/bin/env bash
# Builds kvq with AddressSanitizer + UndefinedBehaviorSanitizer into
# build-sanitize/ (KVQ_SANITIZE=ON: every kvq source, the emulator's
# runtime-compiled kernels, ucontext fibers annotated for ASan) and runs the
# unit tests and a short fuzz run under them. Any ASan or UBSan report fails.
# Leak detection is off: LLVM's and MLIR's process-lifetime singletons are
# not leaks, and LeakSanitizer needs ptrace, which sandboxes often forbid.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KVQ_SANITIZE_BUILD_DIR:-$root/build-sanitize}

"$root/scripts/setup.sh"
if [ ! -f "$build/build.ninja" ]; then
  cmake -G Ninja -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DKVQ_SANITIZE=ON -DMLIR_DIR="$(llvm-config-22 --cmakedir)/../mlir" >/dev/null
fi
ninja -C "$build" kvq-unit-tests kvq-cache-tests kvq-numerics-tests \
  kvq-compile-tests kvq-fuzz

export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export KVQ_CACHE_DIR="$build/sanitize-cache"
status=0
for test in kvq-unit-tests kvq-cache-tests kvq-numerics-tests kvq-compile-tests; do
  echo "sanitize: $test"
  "$build/test/unit/$test" --gtest_brief=1 || status=1
done
echo "sanitize: kvq-fuzz"
"$build/bin/kvq-fuzz" --target=spec --runs=100000 || status=1
"$build/bin/kvq-fuzz" --target=bundle --runs=100000 || status=1
"$build/bin/kvq-fuzz" --target=ir --runs=20000 "$root"/examples/*.mlir \
  "$root"/test/Dialect/KVQ/*.mlir || status=1
if [ $status -eq 0 ]; then
  echo "sanitize: no ASan or UBSan report"
fi
exit $status
