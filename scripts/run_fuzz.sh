#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (INK_BUILD_FUZZ=ON) and runs each one for a bounded
# time, failing on any finding (crash, sanitizer report, leak, timeout or out-of-memory).
#
#   scripts/run_fuzz.sh [seconds per target, default 60]
#
# Environment: BUILD_DIR (default build-fuzz), FUZZ_OUT (default fuzz-out: new corpus entries and
# crash artifacts; the committed seed corpora in fuzz/corpus/ are only read).
set -euo pipefail

# The fuzz targets. Each reads its seeds from fuzz/corpus/<name without "fuzz_">/ and uses
# fuzz/<name without "fuzz_">.dict as a dictionary if that file exists.
TARGETS=(
  fuzz_safetensors
  fuzz_tokenizer
)

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 [seconds per target]" >&2
  exit 2
fi

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${BUILD_DIR:-$repo/build-fuzz}"
out="${FUZZ_OUT:-$repo/fuzz-out}"

cmake -S "$repo" -B "$build" -G Ninja \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER=clang++ \
  -DINK_BUILD_FUZZ=ON -DINK_BUILD_TESTS=OFF -DINK_BUILD_BENCH=OFF
cmake --build "$build" --target "${TARGETS[@]}"

status=0
for target in "${TARGETS[@]}"; do
  name="${target#fuzz_}"
  seeds="$repo/fuzz/corpus/$name"
  work="$out/$target/corpus"
  artifacts="$out/$target/artifacts"
  mkdir -p "$work" "$artifacts"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$artifacts/")
  if [[ -f "$repo/fuzz/$name.dict" ]]; then
    args+=(-dict="$repo/fuzz/$name.dict")
  fi
  echo "=== $target: ${seconds}s, seeds from ${seeds#"$repo"/}"
  # New inputs go to the first corpus folder ($work); the committed seeds are only read.
  if ! "$build/fuzz/$target" "${args[@]}" "$work" "$seeds"; then
    echo "=== $target: FINDING, reproducer(s) in $artifacts:" >&2
    ls -1 "$artifacts" >&2 || true
    status=1
  fi
done

if [[ $status -eq 0 ]]; then
  echo "=== all fuzz targets ran ${seconds}s each without findings"
fi
exit $status
