// bench_matmul: the sgemm kernel family on the model's matmul shapes and on squares, next to
// OpenBLAS in the same process when it was found at configure time.
//
// Legend: M, N, K as in tensor/kernels/sgemm.h; layouts NN = A*B (forward), NT = A*B^T
// (dX = dY * W^T), TN = A^T*B (dW = X^T * dY). The model's Linear layers are
// L1 = 96 -> 256, L2 = 256 -> 512, L3 = 512 -> 784, at batch 64.
// Two sets of rows per layer: "L1.fwd", "L1.dX", "L1.dW" store the weight as W [in, out]
// (the textbook layout, kept for comparison with earlier tables), and "L1.linear.fwd",
// "L1.linear.dX", "L1.linear.dW" time what ink::linear really runs, with the weight stored
// [out, in] as in PyTorch: forward y = x * W^T (NT, B stored [N, K]), dX = dY * W (NN) and
// dW = dY^T * X (TN, M = out, N = in). (linear's forward starts from the bias rows, beta = 1;
// here beta = 0 for every row, which costs the same GEMM.)
//
// Rows are named  kernel/shape/layout/MxNxK/threads:T  and report two counters:
//   GFLOP        a rate: 2 * M * N * K per iteration, shown as GFLOP/s
//   vs_openblas  this row's GFLOP/s divided by OpenBLAS's on the same shape and thread count,
//                measured in this process (the OpenBLAS row runs first; if it was filtered
//                out it is measured on the spot). Only when built with OpenBLAS.
// The single-threaded kernels (naive, blocked, packed) run with 1 thread only; packed_mt and
// OpenBLAS run with 1 and 2. naive is skipped above 1e8 flops (it would take seconds per row).
// Rows with 1 thread are timed in CPU time of the benchmark thread (Google Benchmark's default),
// so that time spent preempted on a shared machine does not count; rows with 2 threads in wall
// time (UseRealTime), the only honest clock for parallel work.
//
//   ./bench_matmul --benchmark_out=matmul.json --benchmark_out_format=json
//   python3 scripts/bench_table.py matmul.json
#include <benchmark/benchmark.h>

#include <time.h>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench/bench_clock.h"
#include "tensor/kernels/sgemm.h"
#include "tensor/parallel.h"
#include "tensor/random.h"

#ifdef INK_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace {

using ink::kernels::SgemmFn;
using ink::kernels::Trans;

struct Shape {
  std::string name;  // e.g. "L3.fwd", "b1024.L3.dW", "square"
  Trans ta, tb;
  int64_t M, N, K;

  std::string layout() const {
    return std::string(ta == Trans::N ? "N" : "T") + (tb == Trans::N ? "N" : "T");
  }
  std::string dims() const {
    return std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K);
  }
  double flops() const { return 2.0 * static_cast<double>(M) * N * K; }
  std::string key(int threads) const {
    return name + "/" + layout() + "/" + dims() + "/" + std::to_string(threads);
  }
};

// A Linear layer in -> out at batch b: forward Y[b, out] = X[b, in] * W[in, out], and its two
// backward products dX[b, in] = dY[b, out] * W^T and dW[in, out] = X^T * dY[b, out].
void add_layer(std::vector<Shape>& shapes, const std::string& name, int64_t batch, int64_t in,
               int64_t out) {
  shapes.push_back({name + ".fwd", Trans::N, Trans::N, batch, out, in});
  shapes.push_back({name + ".dX", Trans::N, Trans::T, batch, in, out});
  shapes.push_back({name + ".dW", Trans::T, Trans::N, in, out, batch});
}

// The same layer as ink::linear runs it, with W [out, in]: forward Y[b, out] = X[b, in] * W^T,
// dX[b, in] = dY[b, out] * W, and dW[out, in] = dY^T * X[b, in] (see tensor/ops/matmul.cpp).
void add_linear(std::vector<Shape>& shapes, const std::string& name, int64_t batch, int64_t in,
                int64_t out) {
  shapes.push_back({name + ".linear.fwd", Trans::N, Trans::T, batch, out, in});
  shapes.push_back({name + ".linear.dX", Trans::N, Trans::N, batch, in, out});
  shapes.push_back({name + ".linear.dW", Trans::T, Trans::N, out, in, batch});
}

// Both layouts of a layer, the model's right after the textbook one.
void add_both(std::vector<Shape>& shapes, const std::string& name, int64_t batch, int64_t in,
              int64_t out) {
  add_layer(shapes, name, batch, in, out);
  add_linear(shapes, name, batch, in, out);
}

std::vector<Shape> all_shapes() {
  std::vector<Shape> shapes;
  add_both(shapes, "L1", 64, 96, 256);
  add_both(shapes, "L2", 64, 256, 512);
  add_both(shapes, "L3", 64, 512, 784);
  add_both(shapes, "b256.L3", 256, 512, 784);
  add_both(shapes, "b1024.L3", 1024, 512, 784);
  for (int64_t n = 64; n <= 2048; n *= 2) shapes.push_back({"square", Trans::N, Trans::N, n, n, n});
  return shapes;
}

// Operands filled with uniform(-1, 1) from a fixed seed; C is overwritten (beta = 0).
struct Operands {
  std::vector<float> A, B, C;
  int64_t lda, ldb, ldc;

  explicit Operands(const Shape& s) {
    ink::Generator gen(1234);
    A.resize(static_cast<size_t>(s.M * s.K));
    B.resize(static_cast<size_t>(s.K * s.N));
    C.assign(static_cast<size_t>(s.M * s.N), 0.0f);
    for (float& x : A) x = gen.uniform(-1.0f, 1.0f);
    for (float& x : B) x = gen.uniform(-1.0f, 1.0f);
    lda = s.ta == Trans::N ? s.K : s.M;
    ldb = s.tb == Trans::N ? s.N : s.K;
    ldc = s.N;
  }
};

#ifdef INK_HAVE_OPENBLAS
// OpenBLAS GFLOP/s per shape and thread count, filled by the OpenBLAS rows.
std::map<std::string, double>& openblas_rates() {
  static std::map<std::string, double> rates;
  return rates;
}

void call_openblas(const Shape& s, Operands& op) {
  cblas_sgemm(CblasRowMajor, s.ta == Trans::N ? CblasNoTrans : CblasTrans,
              s.tb == Trans::N ? CblasNoTrans : CblasTrans, static_cast<int>(s.M),
              static_cast<int>(s.N), static_cast<int>(s.K), 1.0f, op.A.data(),
              static_cast<int>(op.lda), op.B.data(), static_cast<int>(op.ldb), 0.0f, op.C.data(),
              static_cast<int>(op.ldc));
}

// When the OpenBLAS row was filtered out: time it here, for at least 0.2 s.
double measure_openblas(const Shape& s, int threads) {
  openblas_set_num_threads(threads);
  Operands op(s);
  call_openblas(s, op);
  return ink::bench::measure_rate(s.flops(), threads, [&] { call_openblas(s, op); });
}

void bm_openblas(benchmark::State& state, const Shape& s, int threads) {
  openblas_set_num_threads(threads);
  Operands op(s);
  call_openblas(s, op);  // warm up: OpenBLAS starts its threads on first use
  const double rate =
      ink::bench::timed_loop(state, s.flops(), threads, [&] { call_openblas(s, op); });
  openblas_rates()[s.key(threads)] = rate;
  state.counters["vs_openblas"] = 1.0;
}
#endif

void bm_kernel(benchmark::State& state, const Shape& s, SgemmFn fn, int threads) {
#ifdef INK_HAVE_OPENBLAS
  auto it = openblas_rates().find(s.key(threads));
  const double reference = it != openblas_rates().end() ? it->second : measure_openblas(s, threads);
  // OpenBLAS's idle threads spin for a while after a call; let them go to sleep so they do not
  // compete with ours for the two cores.
  openblas_set_num_threads(1);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
#endif
  ink::set_num_threads(threads);
  Operands op(s);
  const auto call = [&] {
    fn(s.ta, s.tb, s.M, s.N, s.K, 1.0f, op.A.data(), op.lda, op.B.data(), op.ldb, 0.0f, op.C.data(),
       op.ldc);
  };
  call();  // warm up: packing buffers, thread pool
  const double rate = ink::bench::timed_loop(state, s.flops(), threads, call);
#ifdef INK_HAVE_OPENBLAS
  state.counters["vs_openblas"] = rate / reference;
#else
  (void)rate;
#endif
}

void register_all() {
  for (const Shape& s : all_shapes()) {
    for (int threads : {1, 2}) {
      const std::string suffix =
          "/" + s.name + "/" + s.layout() + "/" + s.dims() + "/threads:" + std::to_string(threads);
#ifdef INK_HAVE_OPENBLAS
      auto* reference =
          benchmark::RegisterBenchmark(("openblas" + suffix).c_str(), bm_openblas, s, threads);
      reference->Unit(benchmark::kMicrosecond);
      if (threads > 1) reference->UseRealTime();
#endif
      for (const auto& k : ink::kernels::sgemm_kernels()) {
        if (threads > 1 && k.name != "packed_mt") continue;  // the others ignore the thread count
        if (k.name == "naive" && s.flops() > 1e8) continue;
        auto* row =
            benchmark::RegisterBenchmark((k.name + suffix).c_str(), bm_kernel, s, k.fn, threads);
        row->Unit(benchmark::kMicrosecond);
        if (threads > 1) row->UseRealTime();
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("sgemm_isa", ink::kernels::sgemm_isa());
#ifdef INK_HAVE_OPENBLAS
  benchmark::AddCustomContext("openblas", openblas_get_config());
#endif
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
