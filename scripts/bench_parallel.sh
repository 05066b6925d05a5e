#!/usr/bin/env bash
# The thread pool beside a competing busy process, before and after the spin-then-block pool,
# in one run: builds bench_parallel and bench_parallel_before and runs them alternately.
#
#   scripts/bench_parallel.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -f build/CMakeCache.txt ]] || cmake --preset release >/dev/null
cmake --build build --target bench_parallel bench_parallel_before >/dev/null
for round in 1 2; do
  echo "=== round $round"
  build/bench/bench_parallel_before "$@"
  build/bench/bench_parallel "$@"
done
