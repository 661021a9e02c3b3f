#!/usr/bin/env bash
# Installs what kvq needs on Debian 12 (bookworm), only what is missing.
# The CUDA 13 toolkit (nvcc, ptxas, nvrtc) is expected to be installed already;
# kvq never needs a GPU or the CUDA driver to build or test.
set -euo pipefail

packages=(
  libmlir-22-dev mlir-22-tools llvm-22-dev llvm-22-tools   # MLIR/LLVM 22, lit, FileCheck
  libzstd-dev zlib1g-dev libedit-dev                       # libLLVM's link dependencies
  libfmt-dev ninja-build ccache cmake g++ clang-format python3
  libgtest-dev libbenchmark-dev
  libboost-context-dev                                     # fibers for the CPU emulator
  libhiredis-dev redis-server                              # the remote kernel cache and its tests
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "kvq setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v llvm-config-22 >/dev/null; then
  echo "kvq setup: llvm-config-22 not found after installing llvm-22-dev" >&2
  exit 1
fi
