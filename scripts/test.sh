#!/usr/bin/env bash
# Runs every test of a configured build (default: build) with CTest.
# Usage: scripts/test.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${1:-build}"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j 2
