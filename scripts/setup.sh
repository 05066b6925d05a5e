#!/usr/bin/env bash
# Installs the Debian packages inkgrad needs, then configures and builds it (Release, Ninja).
# Usage: scripts/setup.sh [build-dir]   (default: build). Safe to run again: it skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libgtest-dev libgmock-dev libbenchmark-dev
  libfmt-dev libstb-dev nlohmann-json3-dev libcli11-dev
  libcpp-httplib-dev         # inkgrad serve
  libopenblas-dev            # the reference row in bench_matmul (optional at build time)
  libdnnl-dev                # oneDNN: the reference row in bench_conv (optional at build time)
  clang libclang-rt-14-dev   # libFuzzer targets and sanitizer runtimes
)

# PyTorch 1.13 makes the golden numbers (scripts/make_*_golden.py) and times the PyTorch twins
# (scripts/time_torch_*.py). CI never runs Python, so it skips the large download there.
[ "${CI:-}" = "true" ] || PACKAGES+=(python3-torch)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

BUILD_DIR="${1:-build}"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$BUILD_DIR"
