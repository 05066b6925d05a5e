// What the kernel benchmarks (bench_matmul, bench_conv, bench_attention) share: the clock a row
// is timed with, the timed benchmark loop, and timing a reference call whose own row was
// filtered out.
//
// The clock: with one thread, the CPU time of this thread, which leaves out the time it spends
// preempted when the machine is shared; with more, the wall clock. Each benchmark registers its
// rows so that Google Benchmark's own columns match (UseRealTime for 2-thread rows).
#pragma once

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <ctime>

namespace ink::bench {

inline double seconds_now(int threads) {
  if (threads > 1) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Runs `call` as the benchmark loop; returns the seconds per call on seconds_now's clock.
template <class Call>
double seconds_per_call(benchmark::State& state, int threads, Call&& call) {
  const double start = seconds_now(threads);
  for (auto _ : state) {
    call();
    benchmark::ClobberMemory();
  }
  const double seconds = seconds_now(threads) - start;
  return state.iterations() ? seconds / static_cast<double>(state.iterations()) : 0.0;
}

// The benchmark loop for a call of `flops` floating-point operations: sets the GFLOP counter
// and returns the GFLOP/s reached.
template <class Call>
double timed_loop(benchmark::State& state, double flops, int threads, Call&& call) {
  const double seconds = seconds_per_call(state, threads, call);
  state.counters["GFLOP"] =
      benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  return seconds > 0.0 ? flops / seconds / 1e9 : 0.0;
}

// GFLOP/s of `call` (already warmed up) repeated for at least 0.2 s: the reference row's rate
// when that row was filtered out, so that a ratio can still be given.
template <class Call>
double measure_rate(double flops, int threads, Call&& call) {
  int64_t iterations = 0;
  const double start = seconds_now(threads);
  double seconds = 0.0;
  do {
    call();
    ++iterations;
    seconds = seconds_now(threads) - start;
  } while (seconds < 0.2);
  return flops * static_cast<double>(iterations) / seconds / 1e9;
}

}  // namespace ink::bench
