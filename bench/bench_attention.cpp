// bench_attention: the fused attention kernel at the U-Net's sizes, forward and backward, and the
// throughput of the fused group norm, layer norm and the vectorised activations; each fast row
// next to its naive reference measured in the same process.
//
// Legend: B = batch (64), H = heads, Lq = queries (the image positions: 28x28 = 784, 14x14 = 196,
// 7x7 = 49), Lk = keys (text tokens, 8-16), D = head dim. Group norm [B, C, S] with G groups;
// layer norm [N, D]; activations over n elements.
//
// Rows are named  kernel/case/threads:T  with kernel = naive or fast, and report
//   GFLOP/s (attention: the matmul flops, 2 * B * H * Lq * Lk * D per product; 2 products
//            forward, 4 backward) or GB/s (the others: every input read once and every output
//            written once);
//   vs_naive  the naive row's time divided by this row's (the naive row runs first, 1 thread).
// Rows with 1 thread are timed in CPU time of the benchmark thread (time spent preempted on a
// shared machine does not count), rows with 2 in wall time.
//
//   ./build/bench/bench_attention                                     (everything, ~1 minute)
//   ./build/bench/bench_attention --benchmark_filter='attention'      (attention rows only)
#include <benchmark/benchmark.h>

#include <time.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "bench/bench_clock.h"
#include "tensor/kernels/activation_kernels.h"
#include "tensor/kernels/activation_rows.h"
#include "tensor/kernels/attention_kernels.h"
#include "tensor/kernels/norm_kernels.h"
#include "tensor/parallel.h"
#include "tensor/random.h"

namespace {

namespace k = ink::kernels;

std::vector<float> random_vector(int64_t n, uint64_t seed) {
  ink::Generator gen(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = gen.uniform(-2.0f, 2.0f);
  return v;
}

// One benchmark case: a name, the work per call (flops or bytes) and a naive and a fast callable
// sharing their operands.
struct Case {
  std::string name;
  bool flops;   // true: `work` counts flops (GFLOP/s); false: bytes (GB/s)
  double work;  // per call
  std::function<void()> naive, fast;
};

std::map<std::string, double>& naive_seconds() {
  static std::map<std::string, double> m;
  return m;
}

// Runs fn as the benchmark loop (after one warm-up call: thread pool, packing buffers) and
// returns seconds per call.
double timed(benchmark::State& state, int threads, const std::function<void()>& fn) {
  fn();
  return ink::bench::seconds_per_call(state, threads, fn);
}

void bm_case(benchmark::State& state, const Case& c, bool naive, int threads) {
  ink::set_num_threads(threads);
  const double seconds = timed(state, threads, naive ? c.naive : c.fast);
  state.counters[c.flops ? "GFLOP/s" : "GB/s"] = seconds > 0 ? c.work / seconds / 1e9 : 0.0;
  if (naive) {
    naive_seconds()[c.name] = seconds;
  } else if (auto it = naive_seconds().find(c.name); it != naive_seconds().end() && seconds > 0) {
    state.counters["vs_naive"] = it->second / seconds;
  }
}

// Operands live as long as the program (the cases are registered once).
std::vector<float>& keep(std::vector<float> v) {
  static std::deque<std::vector<float>> store;  // a deque never moves its elements
  store.push_back(std::move(v));
  return store.back();
}

std::vector<Case> attention_cases() {
  struct Size {
    int64_t B, H, Lq, Lk, D;
  };
  const Size sizes[] = {{64, 1, 784, 16, 32}, {64, 2, 196, 16, 32}, {64, 4, 49, 16, 32},
                        {64, 4, 784, 8, 64},  {64, 2, 196, 8, 64},  {64, 1, 49, 8, 64}};
  std::vector<Case> cases;
  for (const Size& s : sizes) {
    const int64_t nq = s.B * s.H * s.Lq * s.D, nk = s.B * s.H * s.Lk * s.D;
    float* q = keep(random_vector(nq, 1)).data();
    float* kk = keep(random_vector(nk, 2)).data();
    float* v = keep(random_vector(nk, 3)).data();
    float* dout = keep(random_vector(nq, 4)).data();
    float* out = keep(std::vector<float>(nq)).data();
    float* w = keep(std::vector<float>(s.B * s.H * s.Lq * s.Lk)).data();
    float* dq = keep(std::vector<float>(nq)).data();
    float* dk = keep(std::vector<float>(nk)).data();
    float* dv = keep(std::vector<float>(nk)).data();
    static std::deque<std::vector<uint8_t>> masks;
    masks.emplace_back(s.B * s.Lk, 1);
    for (int64_t b = 0; b < s.B; ++b) masks.back()[b * s.Lk + s.Lk - 1] = 0;  // one padding key
    const uint8_t* mask = masks.back().data();
    const double product = 2.0 * s.B * s.H * s.Lq * s.Lk * s.D;
    const std::string dims = "B" + std::to_string(s.B) + ".H" + std::to_string(s.H) + ".Lq" +
                             std::to_string(s.Lq) + ".Lk" + std::to_string(s.Lk) + ".D" +
                             std::to_string(s.D);
    k::attention_forward(q, kk, v, mask, out, w, s.B, s.H, s.Lq, s.Lk,
                         s.D);  // weights for the backward rows
    cases.push_back(
        {"attention_fwd/" + dims, true, 2 * product,
         [=] { k::attention_forward_naive(q, kk, v, mask, out, w, s.B, s.H, s.Lq, s.Lk, s.D); },
         [=] { k::attention_forward(q, kk, v, mask, out, w, s.B, s.H, s.Lq, s.Lk, s.D); }});
    cases.push_back(
        {"attention_bwd/" + dims, true, 4 * product,
         [=] {
           k::attention_backward_naive(dout, q, kk, v, w, dq, dk, dv, s.B, s.H, s.Lq, s.Lk, s.D);
         },
         [=] { k::attention_backward(dout, q, kk, v, w, dq, dk, dv, s.B, s.H, s.Lq, s.Lk, s.D); }});
  }
  // The scenes text encoder's self-attention with phrase_attention: a mask for each query
  // [B, Lq, Lk] (B 32 = a batch of 16 and its CFG half, L = 21 tokens, D = 64 / 4 heads): the
  // null token alone, then two phrases of 7 and 6 words, then padding.
  {
    const int64_t B = 32, H = 4, L = 21, D = 16;
    const int64_t n = B * H * L * D;
    float* q = keep(random_vector(n, 7)).data();
    float* kk = keep(random_vector(n, 8)).data();
    float* v = keep(random_vector(n, 9)).data();
    float* out = keep(std::vector<float>(n)).data();
    float* w = keep(std::vector<float>(B * H * L * L)).data();
    static std::vector<uint8_t> phrases(static_cast<size_t>(B * L * L));
    const auto phrase = [](int64_t i) { return i == 0 ? -1 : i <= 7 ? 0 : i <= 13 ? 1 : 2; };
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t i = 0; i < L; ++i) {
        for (int64_t j = 0; j < L; ++j) {
          phrases[static_cast<size_t>((b * L + i) * L + j)] =
              j <= 13 && (j == 0 || phrase(i) == phrase(j));
        }
      }
    }
    const uint8_t* mask = phrases.data();
    cases.push_back(
        {"attention_fwd_query_mask/B32.H4.Lq21.Lk21.D16", true, 2 * 2.0 * B * H * L * L * D,
         [=] { k::attention_forward_naive(q, kk, v, mask, out, w, B, H, L, L, D, true); },
         [=] { k::attention_forward(q, kk, v, mask, out, w, B, H, L, L, D, true); }});
  }
  return cases;
}

std::vector<Case> norm_cases() {
  std::vector<Case> cases;
  struct GN {
    int64_t B, C, S, G;
  };
  for (const GN& s : {GN{64, 32, 784, 8}, GN{64, 64, 196, 32}, GN{64, 128, 49, 32}}) {
    const int64_t n = s.B * s.C * s.S;
    float* x = keep(random_vector(n, 5)).data();
    float* dy = keep(random_vector(n, 6)).data();
    float* y = keep(std::vector<float>(n)).data();
    float* dx = keep(std::vector<float>(n)).data();
    float* w = keep(random_vector(s.C, 7)).data();
    float* b = keep(random_vector(s.C, 8)).data();
    float* dw = keep(std::vector<float>(s.C)).data();
    float* db = keep(std::vector<float>(s.C)).data();
    float* mean = keep(std::vector<float>(s.B * s.G)).data();
    float* rstd = keep(std::vector<float>(s.B * s.G)).data();
    k::group_norm_forward(x, w, b, y, mean, rstd, s.B, s.C, s.S, s.G, 1e-5);
    const std::string dims = "B" + std::to_string(s.B) + ".C" + std::to_string(s.C) + ".S" +
                             std::to_string(s.S) + ".G" + std::to_string(s.G);
    const double bytes = 4.0 * n;
    cases.push_back(
        {"group_norm_fwd/" + dims, false, 2 * bytes,
         [=] { k::group_norm_forward_naive(x, w, b, y, mean, rstd, s.B, s.C, s.S, s.G, 1e-5); },
         [=] { k::group_norm_forward(x, w, b, y, mean, rstd, s.B, s.C, s.S, s.G, 1e-5); }});
    cases.push_back(
        {"group_norm_bwd/" + dims, false, 3 * bytes,
         [=] {
           k::group_norm_backward_naive(dy, x, w, mean, rstd, dx, dw, db, s.B, s.C, s.S, s.G);
         },
         [=] { k::group_norm_backward(dy, x, w, mean, rstd, dx, dw, db, s.B, s.C, s.S, s.G); }});
  }
  for (const auto& shape :
       {std::pair<int64_t, int64_t>{64 * 784, 32}, {64 * 196, 64}, {64 * 49, 128}}) {
    const int64_t N = shape.first, D = shape.second;  // not bindings: lambdas capture them
    const int64_t n = N * D;
    float* x = keep(random_vector(n, 9)).data();
    float* dy = keep(random_vector(n, 10)).data();
    float* y = keep(std::vector<float>(n)).data();
    float* dx = keep(std::vector<float>(n)).data();
    float* w = keep(random_vector(D, 11)).data();
    float* b = keep(random_vector(D, 12)).data();
    float* dw = keep(std::vector<float>(D)).data();
    float* db = keep(std::vector<float>(D)).data();
    float* mean = keep(std::vector<float>(N)).data();
    float* rstd = keep(std::vector<float>(N)).data();
    k::layer_norm_forward(x, w, b, y, mean, rstd, N, D, 1e-5);
    const std::string dims = "N" + std::to_string(N) + ".D" + std::to_string(D);
    const double bytes = 4.0 * n;
    cases.push_back({"layer_norm_fwd/" + dims, false, 2 * bytes,
                     [=] { k::layer_norm_forward_naive(x, w, b, y, mean, rstd, N, D, 1e-5); },
                     [=] { k::layer_norm_forward(x, w, b, y, mean, rstd, N, D, 1e-5); }});
    cases.push_back({"layer_norm_bwd/" + dims, false, 3 * bytes,
                     [=] { k::layer_norm_backward_naive(dy, x, w, mean, rstd, dx, dw, db, N, D); },
                     [=] { k::layer_norm_backward(dy, x, w, mean, rstd, dx, dw, db, N, D); }});
  }
  return cases;
}

std::vector<Case> activation_cases() {
  using Fwd = void (*)(const float*, float*, int64_t);
  using Bwd = void (*)(const float*, const float*, float*, int64_t);
  struct Act {
    const char* name;
    Fwd naive_fwd, fast_fwd;
    Bwd naive_bwd, fast_bwd;
  };
  const Act acts[] = {
      {"silu", &k::silu_forward_naive<float>, &k::silu_forward, &k::silu_backward_naive<float>,
       &k::silu_backward},
      {"gelu", &k::gelu_forward_naive<float>, &k::gelu_forward, &k::gelu_backward_naive<float>,
       &k::gelu_backward},
      {"sigmoid", &k::sigmoid_forward_naive<float>, &k::sigmoid_forward,
       &k::sigmoid_backward_naive<float>, &k::sigmoid_backward},
  };
  const int64_t n = 64 * 64 * 196;  // a [64, 64, 14, 14] activation
  float* x = keep(random_vector(n, 13)).data();
  float* dy = keep(random_vector(n, 14)).data();
  float* y = keep(std::vector<float>(n)).data();
  float* dx = keep(std::vector<float>(n)).data();
  std::vector<Case> cases;
  for (const Act& a : acts) {
    const std::string dims = "n" + std::to_string(n);
    cases.push_back({std::string(a.name) + "_fwd/" + dims, false, 8.0 * n,
                     [=] { a.naive_fwd(x, y, n); }, [=] { a.fast_fwd(x, y, n); }});
    cases.push_back({std::string(a.name) + "_bwd/" + dims, false, 12.0 * n,
                     [=] { a.naive_bwd(x, dy, dx, n); }, [=] { a.fast_bwd(x, dy, dx, n); }});
  }
  return cases;
}

void register_all() {
  static std::vector<Case> cases;
  for (auto* make : {&attention_cases, &norm_cases, &activation_cases}) {
    for (Case& c : make()) cases.push_back(std::move(c));
  }
  for (const Case& c : cases) {
    auto* naive = benchmark::RegisterBenchmark(("naive/" + c.name + "/threads:1").c_str(), bm_case,
                                               c, true, 1);
    naive->Unit(benchmark::kMicrosecond);
    for (int threads : {1, 2}) {
      auto* fast = benchmark::RegisterBenchmark(
          ("fast/" + c.name + "/threads:" + std::to_string(threads)).c_str(), bm_case, c, false,
          threads);
      fast->Unit(benchmark::kMicrosecond);
      if (threads > 1) fast->UseRealTime();
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("row_kernels_isa", ink::kernels::rows::best_row_kernels().isa);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
