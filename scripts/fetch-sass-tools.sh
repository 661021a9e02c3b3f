#!/usr/bin/env bash
# Fetches NVIDIA's cuobjdump and nvdisasm (PyPI wheels nvidia-cuda-cuobjdump
# and nvidia-cuda-nvdisasm; Debian's CUDA toolkit install here lacks them)
# into build/tools/bin, where kvq-perf-report looks for them to count SASS
# instructions. Optional: without them the report leaves the SASS table out.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/build/tools"
if [ -x "$dest/bin/cuobjdump" ] && [ -x "$dest/bin/nvdisasm" ]; then
  echo "kvq: cuobjdump and nvdisasm already in $dest/bin"
  exit 0
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
fi
wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT
python3 -m pip download --quiet --no-deps --dest "$wheels" \
  nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm
mkdir -p "$dest/bin"
for wheel in "$wheels"/*.whl; do
  python3 - "$wheel" "$dest/bin" <<'PY'
import os, sys, zipfile
wheel, bin_dir = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if "/bin/" in name and not name.endswith("/"):
            target = os.path.join(bin_dir, os.path.basename(name))
            with open(target, "wb") as out:
                out.write(z.read(name))
            os.chmod(target, 0o755)
PY
done
"$dest/bin/cuobjdump" --version | tail -1
