#!/usr/bin/env bash
# The browser test of `inkgrad serve`: installs what it needs (Debian's chromium when missing,
# the committed node modules with `npm ci`: playwright-core only, never a browser download),
# builds inkgrad and the checkpoint maker, and runs tests/browser/serve_test.mjs.
# Usage: scripts/browser_test.sh [build-dir] [extra serve_test.mjs arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${1:-build}"
shift || true

if ! command -v chromium >/dev/null; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium
fi
command -v node >/dev/null || { echo "browser_test: needs node and npm (Debian: nodejs npm)"; exit 1; }

[ -f "$BUILD/build.ninja" ] || cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$BUILD" --target inkgrad make_tiny_checkpoint

(cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
CHROMIUM="$(command -v chromium)" node tests/browser/serve_test.mjs \
  --inkgrad "$BUILD/apps/inkgrad" --maker "$BUILD/tests/make_tiny_checkpoint" "$@"
