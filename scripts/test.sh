#!/usr/bin/env bash
# Runs every kvq test: installs what is missing, builds, checks formatting,
# runs the lit suite (FileCheck tests and every gtest case), and prints one
# summary line. Exit status 0 only if nothing failed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KVQ_BUILD_DIR:-$root/build}

"$root/scripts/setup.sh"
"$root/scripts/build.sh" kvq-test-depends  # every binary the suite runs (test/CMakeLists.txt)

# A redis-server for the remote kernel cache tests (test/Tools/remote-cache.test,
# RemoteCacheTest), on a free port of 127.0.0.1, stopped when this script ends.
redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
  > "$build/redis-test.log" 2>&1 &
redis_pid=$!
trap 'kill "$redis_pid" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  redis-cli -p "$redis_port" ping > /dev/null 2>&1 && break
  sleep 0.1
done
export KVQ_TEST_REDIS="127.0.0.1:$redis_port"

status=0
format=ok
"$root/scripts/check-format.sh" || { status=1; format=FAILED; }

results="$build/test-results.xml"
lit=$(llvm-config-22 --bindir)/lit
"$lit" -sv --order=lexical --xunit-xml-output="$results" "$build/test" || status=1

# The Python package (python/): its environment under $build/python-venv
# (installed once: torch, transformers, optimum-quanto), then pytest.
python_results="$build/python-test-results.xml"
rm -f "$python_results"
if python=$("$root/scripts/python-setup.sh"); then
  # From the build folder: python/kvq_jit (the sources, without the built
  # extension) must not shadow the installed package.
  (cd "$build" && "$python" -m pytest -q -p no:cacheprovider \
    --junitxml="$python_results" "$root/python/tests") || status=1
else
  echo "kvq tests: the Python environment could not be set up" >&2
  status=1
fi

# One summary line over every lit and gtest case, and the reason of each skip
# (a gtest skip's reason comes from running that one case again).
python3 - "$results" "$build/test/unit" "$format" "$python_results" <<'PY' || status=1
import collections, re, subprocess, sys, xml.etree.ElementTree as ET
import os
cases = [(case, case.get("classname").split(".")[0])
         for case in ET.parse(sys.argv[1]).getroot().iter("testcase")]
if os.path.exists(sys.argv[4]):
    cases += [(case, "python") for case in ET.parse(sys.argv[4]).getroot().iter("testcase")]
else:
    print("kvq tests: no Python test results")
counts, suites, skipped = collections.Counter(), collections.Counter(), []
for case, suite in cases:
    suites[suite] += 1
    kinds = {child.tag for child in case}
    if kinds & {"failure", "error"}:
        counts["failed"] += 1
    elif "skipped" in kinds:
        counts["skipped"] += 1
        skipped.append(case)
    else:
        counts["passed"] += 1
detail = ", ".join(f"{n} {s}" for s, n in sorted(suites.items()))
print(f"kvq tests: {counts['passed']} passed, {counts['failed']} failed, "
      f"{counts['skipped']} skipped ({detail}); format check {sys.argv[3]}")
for case in skipped:
    cls, name = case.get("classname"), case.get("name")
    reason = next((c.get("message") for c in case if c.tag == "skipped" and c.get("message")),
                  "unsupported here")
    m = re.match(r"kvq-unit\._/([^/]+)/(.+)$", cls)
    if m:
        out = subprocess.run([f"{sys.argv[2]}/{m.group(1)}",
                              f"--gtest_filter={m.group(2)}.{name}"],
                             capture_output=True, text=True).stdout
        found = re.search(r"Skipped\n(.*)\n", out)
        reason = found.group(1).strip() if found else reason
    print(f"  skipped: {cls.split('.', 1)[1]}/{name}: {reason}")
sys.exit(1 if counts["failed"] or not counts["passed"] or not os.path.exists(sys.argv[4]) else 0)
PY
exit $status
