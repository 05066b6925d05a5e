#!/usr/bin/env bash
# Builds the test suite with ThreadSanitizer (the tsan preset, build-tsan) and runs it with two
# kernel threads, so that the thread pool, the multi-threaded sgemm and the threaded training
# step are checked for data races. Any report fails the run (halt_on_error).
#
#   scripts/tsan.sh [ctest regex]    e.g. scripts/tsan.sh 'Sgemm|Trainer'   (default: every test)
#
# Environment: INK_NUM_THREADS (default 2), CTEST_JOBS (default 2), TSAN_CXX (default clang++),
# TSAN_TARGETS (build only these targets, e.g. "test_parallel test_storage"; default: all).
# The quick check of the thread pool, the storage cache and the default generator:
#   TSAN_TARGETS="test_parallel parallel_probe test_storage" scripts/tsan.sh 'ParallelFor|Threads|DefaultGenerator|StorageCache'
# Not run by .ci/run because it takes several minutes on two cores (a third full build).
#
# Why clang: GCC runs the ifunc resolver of a target_clones function (nn/optim.cpp's Adam
# update) while the program is being loaded, before the TSan runtime is up, and GCC instruments
# that resolver, so every binary linking it crashes at start-up under GCC's TSan.
set -euo pipefail
cd "$(dirname "$0")/.."

export INK_NUM_THREADS="${INK_NUM_THREADS:-2}"
# second_deadlock_stack: a lock-order report shows both stacks. history_size: longer stacks for
# the earlier access of a race, which often sits deep in a kernel.
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 history_size=4 ${TSAN_OPTIONS:-}"

cmake --preset tsan -DCMAKE_CXX_COMPILER="${TSAN_CXX:-clang++}"
if [[ -n "${TSAN_TARGETS:-}" ]]; then
  # shellcheck disable=SC2086  # a list of target names
  cmake --build build-tsan --target ${TSAN_TARGETS}
else
  cmake --build build-tsan
fi

args=(--test-dir build-tsan --output-on-failure -j "${CTEST_JOBS:-2}")
if [[ $# -gt 0 ]]; then
  args+=(-R "$1")
fi
echo "=== ThreadSanitizer: ctest ${*:-(all tests)} with INK_NUM_THREADS=$INK_NUM_THREADS"
ctest "${args[@]}"
echo "=== ThreadSanitizer: no data races reported"
