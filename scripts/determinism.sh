#!/usr/bin/env bash
# Checks that training is deterministic: the same seed and settings give bit-identical
# model.safetensors and optimizer.safetensors run after run, at 1 thread and at 2 threads, and
# 1 thread versus 2 threads. If 1 vs 2 threads differ, prints the largest absolute difference
# of the weights and fails only if it is over 1e-6 (the documented tolerance). Builds nothing.
#
#   scripts/determinism.sh [path to inkgrad, default build/apps/inkgrad]
#
# Environment: KEEP=1 keeps the work folder; MODEL=diffusion checks the diffusion recipe (tiny
# config) instead of the MLP.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${1:-$repo/build/apps/inkgrad}"
if [[ ! -x "$bin" ]]; then
  echo "determinism: $bin is not an executable; build inkgrad first or pass its path" >&2
  exit 2
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/inkgrad-determinism.XXXXXX")"
status=1
cleanup() {
  if [[ $status -eq 0 && "${KEEP:-0}" != 1 ]]; then rm -rf "$work"; else echo "determinism: files kept in $work" >&2; fi
}
trap cleanup EXIT

# Batches of 128 so that the matmuls are large enough to be split across 2 threads.
settings=(--model mlp --epochs 4 --samples-per-prompt 128 --batch-size 128 --seed 7 --quiet)
if [[ "${MODEL:-mlp}" == diffusion ]]; then
  # The diffusion recipe (tiny U-Net): noise, timesteps and prompt dropout all come from the
  # seeded streams; no preview grids or eval, which are not part of the checkpoint.
  settings=(--model diffusion --config tiny --epochs 2 --samples-per-prompt 16 --batch-size 48
            --seed 7 --quiet --preview-every 0 --eval-samples 0)
fi
start=$SECONDS

train() {  # name threads
  if ! "$bin" train --out "$work/$1" "${settings[@]}" --threads "$2" >"$work/$1.log" 2>&1; then
    cat "$work/$1.log" >&2
    echo "determinism: FAIL: inkgrad train --threads $2 failed" >&2
    exit 1
  fi
}

same_checkpoint() {  # run-a run-b
  cmp -s "$work/$1/model.safetensors" "$work/$2/model.safetensors" &&
    cmp -s "$work/$1/optimizer.safetensors" "$work/$2/optimizer.safetensors" &&
    cmp -s "$work/$1/losses.csv" "$work/$2/losses.csv"
}

# The largest |a - b| over the F32 tensors of two safetensors files with the same tensors, by a
# throwaway C++ helper (built only when needed; the header format is the one inkgrad writes).
max_abs_difference() {  # file-a file-b
  cat >"$work/diff.cpp" <<'EOF'
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <regex>
#include <string>
#include <vector>
static std::vector<char> read(const char* path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}
int main(int argc, char** argv) {
  if (argc != 3) return 2;
  const std::vector<char> a = read(argv[1]), b = read(argv[2]);
  uint64_t n = 0;
  if (a.size() < 8 || b.size() < 8) return 2;
  std::memcpy(&n, a.data(), 8);
  const std::string header(a.data() + 8, n);
  if (a.size() != b.size() || std::memcmp(a.data(), b.data(), 8 + n) != 0) {
    std::printf("different layouts\n");
    return 1;
  }
  const std::regex entry(R"re("([^"]+)":\{"dtype":"(F32|I64)","shape":\[[^\]]*\],"data_offsets":\[(\d+),(\d+)\]\})re");
  double worst = 0.0;
  std::string worst_name = "-";
  bool integers_equal = true;
  for (std::sregex_iterator it(header.begin(), header.end(), entry), end; it != end; ++it) {
    const size_t begin = 8 + n + std::stoull((*it)[3]), stop = 8 + n + std::stoull((*it)[4]);
    if ((*it)[2] == "I64") {
      integers_equal = integers_equal && std::memcmp(a.data() + begin, b.data() + begin, stop - begin) == 0;
      continue;
    }
    for (size_t k = begin; k + 4 <= stop; k += 4) {
      float x, y;
      std::memcpy(&x, a.data() + k, 4);
      std::memcpy(&y, b.data() + k, 4);
      const double d = std::fabs(static_cast<double>(x) - y);
      if (!(d <= worst)) worst = d, worst_name = (*it)[1];
    }
  }
  std::printf("%.3g (in %s)%s\n", worst, worst_name.c_str(), integers_equal ? "" : ", integer tensors differ");
  return worst <= 1e-6 && integers_equal ? 0 : 1;
}
EOF
  c++ -std=c++17 -O1 -o "$work/diff" "$work/diff.cpp"
  "$work/diff" "$1" "$2"
}

train threads1-a 1
train threads1-b 1
same_checkpoint threads1-a threads1-b ||
  { echo "determinism: FAIL: two runs at 1 thread gave different checkpoints" >&2; exit 1; }
train threads2-a 2
train threads2-b 2
same_checkpoint threads2-a threads2-b ||
  { echo "determinism: FAIL: two runs at 2 threads gave different checkpoints" >&2; exit 1; }

if same_checkpoint threads1-a threads2-a; then
  threads="1 vs 2 threads bit-identical"
else
  if ! difference="$(max_abs_difference "$work/threads1-a/model.safetensors" \
                                        "$work/threads2-a/model.safetensors")"; then
    echo "determinism: FAIL: 1 vs 2 threads: max abs weight difference $difference > 1e-6" >&2
    exit 1
  fi
  threads="1 vs 2 threads within 1e-6 (max abs weight difference $difference), not bit-identical"
fi
status=0
echo "determinism: run after run bit-identical at 1 and 2 threads; $threads ($((SECONDS - start))s)"
