#!/usr/bin/env bash
# Runs every kvq test: installs what is missing, builds, checks formatting,
# runs the lit suite (FileCheck tests and every gtest case), and prints one
# summary line. Exit status 0 only if nothing failed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KVQ_BUILD_DIR:-$root/build}

"$root/scripts/setup.sh"
"$root/scripts/build.sh" kvq kvq-opt kvq-translate kvq-cache kvq-run kvq-unit-tests kvq-compile-tests kvq-numerics-tests kvq-cache-tests

status=0
"$root/scripts/check-format.sh" || status=1

results="$build/test-results.json"
lit=$(llvm-config-22 --bindir)/lit
"$lit" -sv --order=lexical -o "$results" "$build/test" || status=1

python3 - "$results" <<'PY' || status=1
import collections, json, sys
tests = json.load(open(sys.argv[1]))["tests"]
codes = collections.Counter(t["code"] for t in tests)
passed = codes["PASS"] + codes["XFAIL"]
failed = codes["FAIL"] + codes["XPASS"] + codes["UNRESOLVED"] + codes["TIMEOUT"]
skipped = codes["UNSUPPORTED"] + codes["SKIPPED"] + codes["EXCLUDED"]
suites = collections.Counter(t["name"].split(" :: ")[0] for t in tests)
detail = ", ".join(f"{n} {s}" for s, n in sorted(suites.items()))
print(f"kvq tests: {passed} passed, {failed} failed, {skipped} skipped ({detail})")
for t in tests:
    if t["code"] in ("UNSUPPORTED", "SKIPPED"):
        print(f"  skipped: {t['name']}")
sys.exit(1 if failed or not tests else 0)
PY
exit $status
