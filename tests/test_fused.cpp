// Tests for the fused activation, softmax and normalisation kernels: the vector exp and erf
// against the C library over a sweep (max error in ulps / relative), every row-primitive table
// this CPU can run and every fast kernel against its naive version (ragged sizes, +-1000, -inf),
// bit-identical results at 1 and 2 threads, and the naive backward kernels (in double) against
// finite differences of their forward.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "tensor/kernels/activation_kernels.h"
#include "tensor/kernels/activation_rows.h"
#include "tensor/kernels/norm_kernels.h"
#include "tensor/kernels/softmax_kernels.h"
#include "tensor/parallel.h"
#include "tensor/random.h"

namespace {

namespace k = ink::kernels;
namespace rows = ink::kernels::rows;

constexpr float kInf = std::numeric_limits<float>::infinity();

std::vector<float> random_vector(int64_t n, uint64_t seed, float low = -3.0f, float high = 3.0f) {
  ink::Generator gen(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = gen.uniform(low, high);
  return v;
}

std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// Distance in units in the last place between two finite floats of the same sign.
int64_t ulp_distance(float a, float b) {
  int32_t ia, ib;
  std::memcpy(&ia, &a, 4);
  std::memcpy(&ib, &b, 4);
  if (ia < 0) ia = std::numeric_limits<int32_t>::min() - ia;
  if (ib < 0) ib = std::numeric_limits<int32_t>::min() - ib;
  return std::abs(static_cast<int64_t>(ia) - static_cast<int64_t>(ib));
}

// Expects |a - b| <= atol + rtol * |b| element by element, naming the first failure.
void expect_close(const std::vector<float>& a, const std::vector<float>& b, float rtol, float atol,
                  const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(b[i])) {
      ASSERT_TRUE(std::isnan(a[i])) << what << " at " << i;
      continue;
    }
    if (a[i] == b[i]) continue;  // also equal infinities
    ASSERT_LE(std::fabs(a[i] - b[i]), atol + rtol * std::fabs(b[i]))
        << what << " at " << i << ": " << a[i] << " vs " << b[i];
  }
}

void expect_bitwise_equal(const std::vector<float>& a, const std::vector<float>& b,
                          const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << what;
}

// Runs fn at 1 and at 2 threads and restores the thread count.
template <class Fn>
void at_1_and_2_threads(Fn fn) {
  const int before = ink::get_num_threads();
  for (int threads : {1, 2}) {
    ink::set_num_threads(threads);
    fn(threads);
  }
  ink::set_num_threads(before);
}

const std::vector<int64_t> kRaggedSizes = {1, 2, 7, 8, 15, 16, 17, 31, 33, 100, 1000, 40001};

// ---- the vector exp and erf ----

TEST(VectorMath, ExpIsWithinTwoUlpOverItsWholeRange) {
  for (const rows::RowKernels* rk : rows::available_row_kernels()) {
    const int64_t n = 2000001;
    std::vector<float> x(n), y(n);
    for (int64_t i = 0; i < n; ++i) {
      x[i] = -87.33f + (88.72f + 87.33f) * static_cast<float>(i) / static_cast<float>(n - 1);
    }
    rk->exp(x.data(), y.data(), n);
    int64_t worst = 0;
    float worst_x = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
      const float ref = static_cast<float>(std::exp(static_cast<double>(x[i])));
      const int64_t d = ulp_distance(y[i], ref);
      if (d > worst) worst = d, worst_x = x[i];
    }
    EXPECT_LE(worst, 2) << rk->isa << ": worst at x = " << worst_x;
  }
}

TEST(VectorMath, ExpSpecialValues) {
  for (const rows::RowKernels* rk : rows::available_row_kernels()) {
    std::vector<float> x = {-kInf, -1000.0f, -88.0f, 0.0f,
                            89.0f, 1000.0f,  kInf,   std::numeric_limits<float>::quiet_NaN()};
    std::vector<float> y(x.size());
    rk->exp(x.data(), y.data(), static_cast<int64_t>(x.size()));
    EXPECT_EQ(y[0], 0.0f) << rk->isa;
    EXPECT_EQ(y[1], 0.0f) << rk->isa;
    EXPECT_EQ(y[2], 0.0f) << rk->isa;  // below FLT_MIN: flushed
    EXPECT_EQ(y[3], 1.0f) << rk->isa;
    EXPECT_EQ(y[4], kInf) << rk->isa;
    EXPECT_EQ(y[5], kInf) << rk->isa;
    EXPECT_EQ(y[6], kInf) << rk->isa;
    EXPECT_TRUE(std::isnan(y[7])) << rk->isa;
  }
}

TEST(VectorMath, ErfRelativeErrorBelow4e7) {
  for (const rows::RowKernels* rk : rows::available_row_kernels()) {
    const int64_t n = 2000001;
    std::vector<float> x(n), y(n);
    for (int64_t i = 0; i < n; ++i) {
      x[i] = -10.0f + 20.0f * static_cast<float>(i) / static_cast<float>(n - 1);
    }
    x[n / 2] = 1e-30f;  // tiny arguments stay relative-accurate
    rk->erf(x.data(), y.data(), n);
    double worst = 0.0;
    float worst_x = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
      const double ref = std::erf(static_cast<double>(x[i]));
      const double rel = std::fabs(y[i] - ref) / std::fabs(ref);
      if (rel > worst) worst = rel, worst_x = x[i];
    }
    EXPECT_LE(worst, 4e-7) << rk->isa << ": worst at x = " << worst_x;
  }
}

TEST(VectorMath, GeluKeepsRelativePrecisionInTheNegativeTail) {
  // gelu(x) = x * Phi(x) is tiny for x << 0; computing Phi as 1 + erf would lose every digit.
  for (const rows::RowKernels* rk : rows::available_row_kernels()) {
    const int64_t n = 100001;
    std::vector<float> x(n), y(n);
    for (int64_t i = 0; i < n; ++i) x[i] = -12.0f + 24.0f * static_cast<float>(i) / (n - 1);
    rk->gelu_forward(x.data(), y.data(), n);
    double worst = 0.0;
    float worst_x = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
      const double xd = x[i];
      const double ref = xd * 0.5 * std::erfc(-xd / std::sqrt(2.0));
      if (ref == 0.0) continue;
      const double rel = std::fabs(y[i] - ref) / std::fabs(ref);
      if (rel > worst) worst = rel, worst_x = x[i];
    }
    EXPECT_LE(worst, 2e-6) << rk->isa << ": worst at x = " << worst_x;
  }
}

// ---- activations: every table and the threaded drivers against the naive kernels ----

struct Activation {
  std::string name;
  // table row forward / backward, naive forward / backward, driver forward / backward
  std::function<void(const rows::RowKernels&, const float*, float*, int64_t)> row_forward;
  std::function<void(const rows::RowKernels&, const float*, const float*, float*, int64_t)>
      row_backward;  // (x or y, dy, dx)
  void (*naive_forward)(const float*, float*, int64_t);
  void (*naive_backward)(const float*, const float*, float*, int64_t);
  void (*fast_forward)(const float*, float*, int64_t);
  void (*fast_backward)(const float*, const float*, float*, int64_t);
  bool backward_from_output;  // sigmoid's backward reads y, the others read x
};

std::vector<Activation> activations() {
  return {
      {"sigmoid", [](const rows::RowKernels& r, auto... a) { r.sigmoid_forward(a...); },
       [](const rows::RowKernels& r, auto... a) { r.sigmoid_backward(a...); },
       &k::sigmoid_forward_naive<float>, &k::sigmoid_backward_naive<float>, &k::sigmoid_forward,
       &k::sigmoid_backward, true},
      {"silu", [](const rows::RowKernels& r, auto... a) { r.silu_forward(a...); },
       [](const rows::RowKernels& r, auto... a) { r.silu_backward(a...); },
       &k::silu_forward_naive<float>, &k::silu_backward_naive<float>, &k::silu_forward,
       &k::silu_backward, false},
      {"gelu", [](const rows::RowKernels& r, auto... a) { r.gelu_forward(a...); },
       [](const rows::RowKernels& r, auto... a) { r.gelu_backward(a...); },
       &k::gelu_forward_naive<float>, &k::gelu_backward_naive<float>, &k::gelu_forward,
       &k::gelu_backward, false},
  };
}

std::vector<float> activation_inputs(int64_t n, uint64_t seed) {
  std::vector<float> x = random_vector(n, seed, -8.0f, 8.0f);
  const float extremes[] = {1000.0f, -1000.0f, 0.0f, 30.0f, -30.0f, 88.0f, -88.0f};
  for (size_t i = 0; i < std::size(extremes) && i < x.size(); ++i)
    x[i * 3 % x.size()] = extremes[i];
  return x;
}

TEST(Activations, EveryTableMatchesNaive) {
  for (const Activation& a : activations()) {
    for (const rows::RowKernels* rk : rows::available_row_kernels()) {
      for (int64_t n : kRaggedSizes) {
        const std::string what = a.name + "[" + rk->isa + "] n=" + std::to_string(n);
        const std::vector<float> x = activation_inputs(n, 7 + n);
        const std::vector<float> dy = random_vector(n, 8 + n);
        std::vector<float> y(n), y_ref(n), dx(n), dx_ref(n);
        a.row_forward(*rk, x.data(), y.data(), n);
        a.naive_forward(x.data(), y_ref.data(), n);
        expect_close(y, y_ref, 2e-6f, 1e-30f, what + " forward");
        const float* first = a.backward_from_output ? y_ref.data() : x.data();
        a.row_backward(*rk, first, dy.data(), dx.data(), n);
        a.naive_backward(first, dy.data(), dx_ref.data(), n);
        expect_close(dx, dx_ref, 1e-5f, 1e-6f, what + " backward");
      }
    }
  }
}

TEST(Activations, DriversMatchNaiveAndAreIdenticalAtOneAndTwoThreads) {
  for (const Activation& a : activations()) {
    const int64_t n = 100003;
    const std::vector<float> x = activation_inputs(n, 11);
    const std::vector<float> dy = random_vector(n, 12);
    std::vector<float> y_ref(n), dx_ref(n);
    a.naive_forward(x.data(), y_ref.data(), n);
    const float* first = a.backward_from_output ? y_ref.data() : x.data();
    a.naive_backward(first, dy.data(), dx_ref.data(), n);
    std::vector<std::vector<float>> ys, dxs;
    at_1_and_2_threads([&](int) {
      std::vector<float> y(n), dx(n);
      a.fast_forward(x.data(), y.data(), n);
      a.fast_backward(first, dy.data(), dx.data(), n);
      expect_close(y, y_ref, 2e-6f, 1e-30f, a.name + " forward");
      expect_close(dx, dx_ref, 1e-5f, 1e-6f, a.name + " backward");
      ys.push_back(y);
      dxs.push_back(dx);
    });
    expect_bitwise_equal(ys[0], ys[1], a.name + " forward, 1 vs 2 threads");
    expect_bitwise_equal(dxs[0], dxs[1], a.name + " backward, 1 vs 2 threads");
  }
}

TEST(Activations, ExtremeInputsGiveExactLimits) {
  const std::vector<float> x = {1000.0f, -1000.0f};
  std::vector<float> y(2), dx(2);
  const std::vector<float> dy = {1.0f, 1.0f};
  k::sigmoid_forward(x.data(), y.data(), 2);
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[1], 0.0f);
  k::silu_forward(x.data(), y.data(), 2);
  EXPECT_EQ(y[0], 1000.0f);
  EXPECT_EQ(y[1], -0.0f);
  k::gelu_forward(x.data(), y.data(), 2);
  EXPECT_EQ(y[0], 1000.0f);
  EXPECT_EQ(y[1], -0.0f);
  k::gelu_backward(x.data(), dy.data(), dx.data(), 2);
  EXPECT_EQ(dx[0], 1.0f);
  EXPECT_EQ(dx[1], 0.0f);
  k::silu_backward(x.data(), dy.data(), dx.data(), 2);
  EXPECT_EQ(dx[0], 1.0f);
  EXPECT_EQ(dx[1], 0.0f);
}

// ---- softmax ----

struct SoftmaxShape {
  int64_t outer, D, inner;
};
const std::vector<SoftmaxShape> kSoftmaxShapes = {{1, 1, 1},  {3, 7, 1},    {5, 16, 1}, {4, 17, 1},
                                                  {2, 33, 1}, {64, 100, 1}, {3, 5, 4},  {2, 17, 3}};

std::vector<float> softmax_inputs(const SoftmaxShape& s, uint64_t seed) {
  std::vector<float> x = random_vector(s.outer * s.D * s.inner, seed, -5.0f, 5.0f);
  // A row at +-1000 and a few -inf (masked) entries, but no all -inf line.
  for (int64_t j = 0; j < s.D; ++j) x[j * s.inner] = (j % 2 ? 1000.0f : -1000.0f) + j;
  if (s.D > 2) x[(s.outer - 1) * s.D * s.inner + s.inner] = -kInf;
  return x;
}

TEST(Softmax, EveryTableRowMatchesNaive) {
  for (const rows::RowKernels* rk : rows::available_row_kernels()) {
    for (int64_t n : kRaggedSizes) {
      const std::string what = std::string(rk->isa) + " n=" + std::to_string(n);
      std::vector<float> x = random_vector(n, 20 + n, -1000.0f, 1000.0f);
      if (n > 3) x[2] = -kInf;
      const std::vector<float> dy = random_vector(n, 21 + n);
      std::vector<float> y(n), y_ref(n), l(n), l_ref(n), dx(n), dx_ref(n);
      rk->softmax(x.data(), y.data(), n);
      k::softmax_forward_naive(x.data(), y_ref.data(), 1, n, 1);
      expect_close(y, y_ref, 1e-5f, 1e-30f, what + " softmax");
      rk->log_softmax(x.data(), l.data(), n);
      k::log_softmax_forward_naive(x.data(), l_ref.data(), 1, n, 1);
      expect_close(l, l_ref, 1e-6f, 1e-4f, what + " log_softmax");
      rk->softmax_backward(y_ref.data(), dy.data(), dx.data(), n);
      k::softmax_backward_naive(y_ref.data(), dy.data(), dx_ref.data(), 1, n, 1);
      expect_close(dx, dx_ref, 1e-4f, 1e-6f, what + " softmax backward");
      rk->log_softmax_backward(l_ref.data(), dy.data(), dx.data(), n);
      k::log_softmax_backward_naive(l_ref.data(), dy.data(), dx_ref.data(), 1, n, 1);
      expect_close(dx, dx_ref, 1e-4f, 1e-5f, what + " log_softmax backward");
    }
  }
}

TEST(Softmax, EveryTableColumnSoftmaxMatchesNaive) {
  // softmax_columns: [rows = keys, cols = queries], masked rows get 0 (attention's layout).
  for (const rows::RowKernels* rk : rows::available_row_kernels()) {
    for (int64_t rows_n : {1, 3, 16}) {
      for (int64_t cols : {1, 7, 16, 17, 49}) {
        const std::string what =
            std::string(rk->isa) + " " + std::to_string(rows_n) + "x" + std::to_string(cols);
        const int64_t ld = cols + 3;  // a padded leading dimension
        std::vector<float> s = random_vector(rows_n * ld, 90 + cols, -30.0f, 30.0f);
        std::vector<uint8_t> valid(rows_n, 1);
        if (rows_n > 2) valid[1] = 0;
        for (bool masked : {false, true}) {
          std::vector<float> got = s;
          rk->softmax_columns(got.data(), rows_n, cols, ld, masked ? valid.data() : nullptr);
          std::vector<float> column(rows_n), ref(rows_n);
          for (int64_t c = 0; c < cols; ++c) {
            for (int64_t r = 0; r < rows_n; ++r) {
              column[r] = masked && !valid[r] ? -kInf : s[r * ld + c];
            }
            k::softmax_forward_naive(column.data(), ref.data(), 1, rows_n, 1);
            for (int64_t r = 0; r < rows_n; ++r) {
              ASSERT_NEAR(got[r * ld + c], ref[r], 1e-6f + 1e-5f * ref[r]) << what << " " << r;
            }
          }
          for (int64_t r = 0; r < rows_n; ++r) {  // the padding columns are untouched
            for (int64_t c = cols; c < ld; ++c) ASSERT_EQ(got[r * ld + c], s[r * ld + c]) << what;
          }
          // The backward: d = p * (d - colsum(p * d)).
          std::vector<float> d = random_vector(rows_n * ld, 91 + cols), d_ref = d;
          rk->softmax_backward_columns(got.data(), d.data(), rows_n, cols, ld);
          for (int64_t c = 0; c < cols; ++c) {
            float dot = 0.0f;
            for (int64_t r = 0; r < rows_n; ++r) dot += got[r * ld + c] * d_ref[r * ld + c];
            for (int64_t r = 0; r < rows_n; ++r) {
              const float expected = got[r * ld + c] * (d_ref[r * ld + c] - dot);
              ASSERT_NEAR(d[r * ld + c], expected, 1e-5f) << what;
            }
          }
        }
        // No valid row: every weight is 0.
        std::vector<uint8_t> none(rows_n, 0);
        std::vector<float> got = s;
        rk->softmax_columns(got.data(), rows_n, cols, ld, none.data());
        for (int64_t r = 0; r < rows_n; ++r) {
          for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(got[r * ld + c], 0.0f) << what;
        }
      }
    }
  }
}

TEST(Softmax, AllMinusInfinityRowGivesZeros) {
  for (const rows::RowKernels* rk : rows::available_row_kernels()) {
    std::vector<float> x(19, -kInf), y(19, 5.0f), ref(19, 5.0f);
    rk->softmax(x.data(), y.data(), 19);
    k::softmax_forward_naive(x.data(), ref.data(), 1, 19, 1);
    EXPECT_EQ(y, std::vector<float>(19, 0.0f)) << rk->isa;
    EXPECT_EQ(ref, std::vector<float>(19, 0.0f));
  }
}

TEST(Softmax, DriversMatchNaiveOnAnyDimAndAreIdenticalAtOneAndTwoThreads) {
  for (const SoftmaxShape& s : kSoftmaxShapes) {
    const std::string what = "[" + std::to_string(s.outer) + ", " + std::to_string(s.D) + ", " +
                             std::to_string(s.inner) + "]";
    const int64_t n = s.outer * s.D * s.inner;
    const std::vector<float> x = softmax_inputs(s, 30 + n);
    const std::vector<float> dy = random_vector(n, 31 + n);
    std::vector<float> y_ref(n), l_ref(n), dx_ref(n), dl_ref(n);
    k::softmax_forward_naive(x.data(), y_ref.data(), s.outer, s.D, s.inner);
    k::log_softmax_forward_naive(x.data(), l_ref.data(), s.outer, s.D, s.inner);
    k::softmax_backward_naive(y_ref.data(), dy.data(), dx_ref.data(), s.outer, s.D, s.inner);
    k::log_softmax_backward_naive(l_ref.data(), dy.data(), dl_ref.data(), s.outer, s.D, s.inner);
    for (float v : l_ref) ASSERT_FALSE(std::isnan(v)) << what;
    std::vector<std::vector<float>> runs;
    at_1_and_2_threads([&](int) {
      std::vector<float> y(n), l(n), dx(n), dl(n);
      k::softmax_forward(x.data(), y.data(), s.outer, s.D, s.inner);
      k::log_softmax_forward(x.data(), l.data(), s.outer, s.D, s.inner);
      k::softmax_backward(y_ref.data(), dy.data(), dx.data(), s.outer, s.D, s.inner);
      k::log_softmax_backward(l_ref.data(), dy.data(), dl.data(), s.outer, s.D, s.inner);
      expect_close(y, y_ref, 1e-5f, 1e-30f, what + " softmax");
      expect_close(l, l_ref, 1e-6f, 1e-4f, what + " log_softmax");
      expect_close(dx, dx_ref, 1e-4f, 1e-6f, what + " softmax backward");
      expect_close(dl, dl_ref, 1e-4f, 1e-5f, what + " log_softmax backward");
      for (auto* v : {&y, &l, &dx, &dl}) runs.push_back(*v);
    });
    for (int i = 0; i < 4; ++i) expect_bitwise_equal(runs[i], runs[i + 4], what + " threads");
  }
}

// ---- group norm and layer norm ----

struct GroupNormShape {
  int64_t B, C, S, G;
  bool affine;
};

TEST(GroupNorm, FastMatchesNaiveAndIsIdenticalAtOneAndTwoThreads) {
  const std::vector<GroupNormShape> shapes = {
      {1, 1, 1, 1, true}, {2, 4, 3, 2, true},     {3, 6, 17, 3, false},  {2, 32, 49, 8, true},
      {4, 5, 7, 5, true}, {2, 64, 196, 32, true}, {1, 12, 33, 1, false}, {8, 32, 1, 4, true}};
  for (const GroupNormShape& s : shapes) {
    const std::string what = "B=" + std::to_string(s.B) + " C=" + std::to_string(s.C) +
                             " S=" + std::to_string(s.S) + " G=" + std::to_string(s.G);
    const int64_t n = s.B * s.C * s.S;
    std::vector<float> x = random_vector(n, 40 + n, -2.0f, 4.0f);
    for (int64_t i = 0; i < std::min<int64_t>(n, 5); ++i) x[i] *= 1000.0f;  // large values
    const std::vector<float> dy = random_vector(n, 41 + n);
    const std::vector<float> w = random_vector(s.C, 42, 0.5f, 1.5f);
    const std::vector<float> b = random_vector(s.C, 43);
    const float* wp = s.affine ? w.data() : nullptr;
    const float* bp = s.affine ? b.data() : nullptr;
    std::vector<float> y_ref(n), mean_ref(s.B * s.G), rstd_ref(s.B * s.G), dx_ref(n), dw_ref(s.C),
        db_ref(s.C);
    k::group_norm_forward_naive(x.data(), wp, bp, y_ref.data(), mean_ref.data(), rstd_ref.data(),
                                s.B, s.C, s.S, s.G, 1e-5);
    k::group_norm_backward_naive(dy.data(), x.data(), wp, mean_ref.data(), rstd_ref.data(),
                                 dx_ref.data(), dw_ref.data(), db_ref.data(), s.B, s.C, s.S, s.G);
    std::vector<std::vector<float>> runs;
    at_1_and_2_threads([&](int) {
      std::vector<float> y(n), mean(s.B * s.G), rstd(s.B * s.G), dx(n), dw(s.C), db(s.C);
      k::group_norm_forward(x.data(), wp, bp, y.data(), mean.data(), rstd.data(), s.B, s.C, s.S,
                            s.G, 1e-5);
      k::group_norm_backward(dy.data(), x.data(), wp, mean_ref.data(), rstd_ref.data(), dx.data(),
                             dw.data(), db.data(), s.B, s.C, s.S, s.G);
      expect_close(y, y_ref, 1e-4f, 1e-4f, what + " y");
      expect_close(mean, mean_ref, 1e-5f, 1e-5f, what + " mean");
      expect_close(rstd, rstd_ref, 1e-4f, 0.0f, what + " rstd");
      expect_close(dx, dx_ref, 1e-3f, 1e-4f, what + " dx");
      expect_close(dw, dw_ref, 1e-3f, 1e-3f, what + " dweight");
      expect_close(db, db_ref, 1e-4f, 1e-4f, what + " dbias");
      for (auto* v : {&y, &mean, &rstd, &dx, &dw, &db}) runs.push_back(*v);
    });
    for (int i = 0; i < 6; ++i) expect_bitwise_equal(runs[i], runs[i + 6], what + " threads");
  }
}

TEST(LayerNorm, FastMatchesNaiveAndIsIdenticalAtOneAndTwoThreads) {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1},    {3, 7},   {5, 16}, {4, 17},
                                                           {64, 128}, {33, 65}, {7, 300}};
  for (const auto& shape : shapes) {
    const int64_t N = shape.first, D = shape.second;  // not bindings: a lambda captures them
    for (bool affine : {true, false}) {
      const std::string what = "N=" + std::to_string(N) + " D=" + std::to_string(D);
      const int64_t n = N * D;
      std::vector<float> x = random_vector(n, 50 + n, -1.0f, 3.0f);
      x[0] = 1000.0f;
      const std::vector<float> dy = random_vector(n, 51 + n);
      const std::vector<float> w = random_vector(D, 52, 0.5f, 1.5f);
      const std::vector<float> b = random_vector(D, 53);
      const float* wp = affine ? w.data() : nullptr;
      const float* bp = affine ? b.data() : nullptr;
      std::vector<float> y_ref(n), mean_ref(N), rstd_ref(N), dx_ref(n), dw_ref(D), db_ref(D);
      k::layer_norm_forward_naive(x.data(), wp, bp, y_ref.data(), mean_ref.data(), rstd_ref.data(),
                                  N, D, 1e-5);
      k::layer_norm_backward_naive(dy.data(), x.data(), wp, mean_ref.data(), rstd_ref.data(),
                                   dx_ref.data(), dw_ref.data(), db_ref.data(), N, D);
      std::vector<std::vector<float>> runs;
      at_1_and_2_threads([&](int) {
        std::vector<float> y(n), mean(N), rstd(N), dx(n), dw(D), db(D);
        k::layer_norm_forward(x.data(), wp, bp, y.data(), mean.data(), rstd.data(), N, D, 1e-5);
        k::layer_norm_backward(dy.data(), x.data(), wp, mean_ref.data(), rstd_ref.data(), dx.data(),
                               dw.data(), db.data(), N, D);
        expect_close(y, y_ref, 1e-4f, 1e-4f, what + " y");
        expect_close(mean, mean_ref, 1e-5f, 1e-5f, what + " mean");
        expect_close(rstd, rstd_ref, 1e-4f, 0.0f, what + " rstd");
        expect_close(dx, dx_ref, 1e-3f, 1e-4f, what + " dx");
        expect_close(dw, dw_ref, 1e-4f, 1e-4f, what + " dweight");
        expect_close(db, db_ref, 1e-4f, 1e-4f, what + " dbias");
        for (auto* v : {&y, &mean, &rstd, &dx, &dw, &db}) runs.push_back(*v);
      });
      for (int i = 0; i < 6; ++i) expect_bitwise_equal(runs[i], runs[i + 6], what + " threads");
    }
  }
}

TEST(Norms, BackwardSkipsTheGradientsNotAsked) {
  // dx, dweight, dbias may each be nullptr; the ones given must not change.
  const int64_t B = 2, C = 4, S = 5, G = 2, n = B * C * S;
  const std::vector<float> x = random_vector(n, 60), dy = random_vector(n, 61);
  const std::vector<float> w = random_vector(C, 62);
  std::vector<float> y(n), mean(B * G), rstd(B * G), dx_all(n), dw_all(C), db_all(C), dx(n), dw(C);
  k::group_norm_forward(x.data(), w.data(), nullptr, y.data(), mean.data(), rstd.data(), B, C, S, G,
                        1e-5);
  k::group_norm_backward(dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx_all.data(),
                         dw_all.data(), db_all.data(), B, C, S, G);
  k::group_norm_backward(dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(),
                         nullptr, nullptr, B, C, S, G);
  k::group_norm_backward(dy.data(), x.data(), w.data(), mean.data(), rstd.data(), nullptr,
                         dw.data(), nullptr, B, C, S, G);
  expect_bitwise_equal(dx, dx_all, "group_norm dx alone");
  expect_bitwise_equal(dw, dw_all, "group_norm dweight alone");
}

TEST(Norms, ApplyRemakesTheForwardOutputAndBackwardRunsInPlace) {
  // group_norm_apply from the forward's statistics gives its y bit for bit; the backward with
  // dx == dy gives the out-of-place dx.
  const int64_t B = 3, C = 8, S = 37, G = 4, n = B * C * S;
  const std::vector<float> x = random_vector(n, 70), dy = random_vector(n, 71);
  const std::vector<float> w = random_vector(C, 72), b = random_vector(C, 73);
  std::vector<float> y(n), y2(n), mean(B * G), rstd(B * G), dx(n);
  k::group_norm_forward(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), B, C, S,
                        G, 1e-5);
  k::group_norm_apply(x.data(), w.data(), b.data(), mean.data(), rstd.data(), y2.data(), B, C, S,
                      G);
  expect_bitwise_equal(y2, y, "group_norm_apply");
  k::group_norm_backward(dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(),
                         nullptr, nullptr, B, C, S, G);
  std::vector<float> in_place = dy;
  k::group_norm_backward(in_place.data(), x.data(), w.data(), mean.data(), rstd.data(),
                         in_place.data(), nullptr, nullptr, B, C, S, G);
  expect_bitwise_equal(in_place, dx, "group_norm_backward in place");

  const std::vector<double> xd(x.begin(), x.end()), wd(w.begin(), w.end()), bd(b.begin(), b.end());
  std::vector<double> yd(n), yd2(n), meand(B * G), rstdd(B * G);
  k::group_norm_forward_naive(xd.data(), wd.data(), bd.data(), yd.data(), meand.data(),
                              rstdd.data(), B, C, S, G, 1e-5);
  k::group_norm_apply_naive(xd.data(), wd.data(), bd.data(), meand.data(), rstdd.data(), yd2.data(),
                            B, C, S, G);
  EXPECT_EQ(yd2, yd) << "group_norm_apply_naive in double";
}

// ---- the naive backward kernels, in double, against finite differences ----

// Central differences of loss(inputs) = sum(forward(inputs) * r) with respect to one input.
std::vector<double> numeric_gradient(std::vector<double>& input,
                                     const std::function<double()>& loss) {
  std::vector<double> g(input.size());
  const double h = 1e-6;
  for (size_t i = 0; i < input.size(); ++i) {
    const double saved = input[i];
    input[i] = saved + h;
    const double up = loss();
    input[i] = saved - h;
    const double down = loss();
    input[i] = saved;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

void expect_gradient(const std::vector<double>& analytic, const std::vector<double>& numeric,
                     const std::string& what) {
  ASSERT_EQ(analytic.size(), numeric.size());
  double largest = 0.0;
  for (size_t i = 0; i < analytic.size(); ++i) {
    EXPECT_NEAR(analytic[i], numeric[i], 1e-6 + 1e-5 * std::fabs(numeric[i])) << what << " " << i;
    largest = std::max(largest, std::fabs(analytic[i]));
  }
  EXPECT_GT(largest, 1e-3) << what << ": the gradient is zero, the check would pass vacuously";
}

double weighted_sum(const std::vector<double>& y, const std::vector<double>& r) {
  double s = 0.0;
  for (size_t i = 0; i < y.size(); ++i) s += y[i] * r[i];
  return s;
}

TEST(NaiveBackward, ActivationsAndSoftmaxMatchFiniteDifferences) {
  const int64_t n = 12;
  std::vector<double> x = to_double(random_vector(n, 70, -3.0f, 3.0f));
  const std::vector<double> r = to_double(random_vector(n, 71));
  using Fwd = void (*)(const double*, double*, int64_t);
  using Bwd = void (*)(const double*, const double*, double*, int64_t);
  struct Case {
    const char* name;
    Fwd forward;
    Bwd backward;
    bool from_output;
  };
  const Case cases[] = {
      {"sigmoid", &k::sigmoid_forward_naive<double>, &k::sigmoid_backward_naive<double>, true},
      {"silu", &k::silu_forward_naive<double>, &k::silu_backward_naive<double>, false},
      {"gelu", &k::gelu_forward_naive<double>, &k::gelu_backward_naive<double>, false},
  };
  for (const Case& c : cases) {
    std::vector<double> y(n), dx(n);
    auto loss = [&] {
      c.forward(x.data(), y.data(), n);
      return weighted_sum(y, r);
    };
    const std::vector<double> numeric = numeric_gradient(x, loss);
    c.forward(x.data(), y.data(), n);
    c.backward(c.from_output ? y.data() : x.data(), r.data(), dx.data(), n);
    expect_gradient(dx, numeric, c.name);
  }
  // softmax / log_softmax over the middle dim of [2, 3, 2]
  for (bool log : {false, true}) {
    std::vector<double> y(n), dx(n);
    auto forward = [&] {
      if (log) {
        k::log_softmax_forward_naive(x.data(), y.data(), 2, 3, 2);
      } else {
        k::softmax_forward_naive(x.data(), y.data(), 2, 3, 2);
      }
    };
    const std::vector<double> numeric = numeric_gradient(x, [&] {
      forward();
      return weighted_sum(y, r);
    });
    forward();
    if (log) {
      k::log_softmax_backward_naive(y.data(), r.data(), dx.data(), 2, 3, 2);
    } else {
      k::softmax_backward_naive(y.data(), r.data(), dx.data(), 2, 3, 2);
    }
    expect_gradient(dx, numeric, log ? "log_softmax" : "softmax");
  }
}

TEST(NaiveBackward, GroupNormAndLayerNormMatchFiniteDifferences) {
  const int64_t B = 2, C = 6, S = 3, G = 3, n = B * C * S;
  std::vector<double> x = to_double(random_vector(n, 80));
  std::vector<double> w = to_double(random_vector(C, 81, 0.5f, 1.5f));
  std::vector<double> b = to_double(random_vector(C, 82));
  const std::vector<double> r = to_double(random_vector(n, 83));
  std::vector<double> y(n), mean(B * G), rstd(B * G), dx(n), dw(C), db(C);
  auto gn_loss = [&] {
    k::group_norm_forward_naive(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), B,
                                C, S, G, 1e-5);
    return weighted_sum(y, r);
  };
  const auto nx = numeric_gradient(x, gn_loss), nw = numeric_gradient(w, gn_loss),
             nb = numeric_gradient(b, gn_loss);
  gn_loss();
  k::group_norm_backward_naive(r.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(),
                               dw.data(), db.data(), B, C, S, G);
  expect_gradient(dx, nx, "group_norm dx");
  expect_gradient(dw, nw, "group_norm dweight");
  expect_gradient(db, nb, "group_norm dbias");

  const int64_t N = 4, D = 9;
  x.resize(N * D);
  y.resize(N * D);
  dx.resize(N * D);
  w = to_double(random_vector(D, 84, 0.5f, 1.5f));
  b = to_double(random_vector(D, 85));
  dw.resize(D);
  db.resize(D);
  mean.resize(N);
  rstd.resize(N);
  const std::vector<double> r2 = to_double(random_vector(N * D, 86));
  auto ln_loss = [&] {
    k::layer_norm_forward_naive(x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), N,
                                D, 1e-5);
    return weighted_sum(y, r2);
  };
  const auto lx = numeric_gradient(x, ln_loss), lw = numeric_gradient(w, ln_loss),
             lb = numeric_gradient(b, ln_loss);
  ln_loss();
  k::layer_norm_backward_naive(r2.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(),
                               dw.data(), db.data(), N, D);
  expect_gradient(dx, lx, "layer_norm dx");
  expect_gradient(dw, lw, "layer_norm dweight");
  expect_gradient(db, lb, "layer_norm dbias");
}

}  // namespace
