#!/usr/bin/env bash
# Regenerates docs/accuracy.md's two generated parts and keeps the rest:
#   1. the synthetic tables, the output of build/bin/kvq-eval (the document
#      up to the line "## On a real model's keys and values");
#   2. the real model's table, the output of `python -m kvq_jit.accuracy`
#      in build/python-venv, between the kvq_jit.accuracy markers.
# The prose around the real table (what it shows, the reading) is written by
# hand: check it against the new numbers. test/Tools/kvq-eval.test and
# python/tests/test_accuracy.py fail while either part is stale.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${KVQ_BUILD_DIR:-$root/build}
"$root/scripts/build.sh" kvq-eval >/dev/null
python=$("$root/scripts/python-setup.sh")
synthetic=$("$build/bin/kvq-eval")
real=$(cd "$build" && "$python" -m kvq_jit.accuracy 2>/dev/null)
SYNTHETIC="$synthetic" REAL="$real" "$python" - "$root/docs/accuracy.md" <<'PY'
import os, sys
path = sys.argv[1]
doc = open(path, encoding="utf-8").read()
header = "## On a real model's keys and values"
begin, end = "<!-- kvq_jit.accuracy: begin -->", "<!-- kvq_jit.accuracy: end -->"
if header not in doc or begin not in doc or end not in doc:
    sys.exit(f"{path}: no '{header}' section with the kvq_jit.accuracy markers")
rest = doc[doc.index(header):]
before, after = rest[:rest.index(begin) + len(begin)], rest[rest.index(end):]
doc = os.environ["SYNTHETIC"].rstrip("\n") + "\n\n" + before + "\n" \
    + os.environ["REAL"].strip("\n") + "\n" + after
open(path, "w", encoding="utf-8").write(doc)
PY
echo "docs/accuracy.md regenerated: check the reading under '## On a real model's keys and values'"
