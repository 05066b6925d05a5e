// bench_peak: the machine's FMA peak, the yardstick for the "% of peak" figures in the docs.
// Each row runs 16 independent chains of fused multiply-adds on full registers (more chains than
// the FMA latency times the FMA units, so the units never wait), 2 flops per lane per FMA.
// Rows exist for the instruction sets this CPU has: avx512 (16 floats per register) and avx2
// (8). With --benchmark_filter=threads:2 both cores run a copy (the 2-core peak).
//
//   build/bench/bench_peak
#include <benchmark/benchmark.h>
#include <immintrin.h>

#include <cstdint>

namespace {

constexpr int kChains = 16;
constexpr int64_t kStepsPerIteration = 1 << 16;

__attribute__((target("avx512f"))) float fma_chains_avx512(int64_t steps) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(1.0f + 1e-3f * static_cast<float>(i));
  const __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
  for (int64_t s = 0; s < steps; ++s) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], m, c);
  }
  float sum = 0.0f;
  for (int i = 0; i < kChains; ++i) sum += _mm512_reduce_add_ps(acc[i]);
  return sum;
}

__attribute__((target("avx2,fma"))) float fma_chains_avx2(int64_t steps) {
  __m256 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(1.0f + 1e-3f * static_cast<float>(i));
  const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
  for (int64_t s = 0; s < steps; ++s) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], m, c);
  }
  alignas(32) float lanes[8];
  float sum = 0.0f;
  for (int i = 0; i < kChains; ++i) {
    _mm256_store_ps(lanes, acc[i]);
    for (float v : lanes) sum += v;
  }
  return sum;
}

template <float (*Fn)(int64_t), int kLanes>
void BM_FmaPeak(benchmark::State& state) {
  for (auto _ : state) {
    int64_t steps = kStepsPerIteration;
    benchmark::DoNotOptimize(steps);  // else the pure call may be hoisted out of the loop
    benchmark::DoNotOptimize(Fn(steps));
  }
  // GFLOP/s per thread; Google Benchmark sums the rate over threads.
  state.counters["GFLOP"] = benchmark::Counter(
      static_cast<double>(state.iterations()) * kStepsPerIteration * kChains * kLanes * 2 / 1e9,
      benchmark::Counter::kIsRate);
}

}  // namespace

int main(int argc, char** argv) {
  if (__builtin_cpu_supports("avx512f")) {
    benchmark::RegisterBenchmark("fma_peak/avx512", BM_FmaPeak<fma_chains_avx512, 16>)
        ->ThreadRange(1, 2)
        ->UseRealTime();
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    benchmark::RegisterBenchmark("fma_peak/avx2", BM_FmaPeak<fma_chains_avx2, 8>)
        ->ThreadRange(1, 2)
        ->UseRealTime();
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
