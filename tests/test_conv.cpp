// Tests for the conv2d kernel family and the resampling kernels: every kernel against the naive
// one on ragged shapes (forward, input gradient, weight and bias gradient) at 1 and 2 threads,
// bit-identical results across thread counts, and the registry's errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "tensor/error.h"
#include "tensor/kernels/conv2d.h"
#include "tensor/kernels/resample_2d.h"
#include "tensor/parallel.h"
#include "tensor/random.h"
#include "tests/test_util.h"

namespace {

using ink::kernels::Conv2dGeometry;
using ink::kernels::Conv2dKernel;

using ink::testing_util::ThreadCountGuard;

std::string describe(const Conv2dGeometry& g) {
  return "B=" + std::to_string(g.B) + " C=" + std::to_string(g.C) + " H=" + std::to_string(g.H) +
         " W=" + std::to_string(g.W) + " O=" + std::to_string(g.O) + " k=" + std::to_string(g.KH) +
         "x" + std::to_string(g.KW) + " stride=" + std::to_string(g.stride) +
         " padding=" + std::to_string(g.padding) + " dilation=" + std::to_string(g.dilation);
}

std::vector<float> random_vector(int64_t n, uint64_t seed) {
  ink::Generator gen(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = gen.uniform(-1.0f, 1.0f);
  return v;
}

// A problem's inputs, and what each pass of one kernel gives on them. Outputs start as NaN so
// that an element a kernel forgets to write shows up.
struct Operands {
  Conv2dGeometry g;
  std::vector<float> x, w, bias, dy;

  explicit Operands(const Conv2dGeometry& g_, uint64_t seed) : g(g_) {
    x = random_vector(g.B * g.C * g.H * g.W, seed);
    w = random_vector(g.O * g.CKK(), seed + 1);
    bias = random_vector(g.O, seed + 2);
    dy = random_vector(g.B * g.O * g.HO() * g.WO(), seed + 3);
  }
};

struct Results {
  std::vector<float> y, y_no_bias, dx, dw, dbias, dw_no_bias;
};

std::vector<float> nans(int64_t n) {
  return std::vector<float>(static_cast<size_t>(n), std::numeric_limits<float>::quiet_NaN());
}

Results run(const Conv2dKernel& k, const Operands& op) {
  const Conv2dGeometry& g = op.g;
  Results r;
  r.y = nans(g.B * g.O * g.HO() * g.WO());
  r.y_no_bias = r.y;
  r.dx = nans(g.B * g.C * g.H * g.W);
  r.dw = nans(g.O * g.CKK());
  r.dw_no_bias = r.dw;
  r.dbias = nans(g.O);
  k.forward(g, op.x.data(), op.w.data(), op.bias.data(), r.y.data());
  k.forward(g, op.x.data(), op.w.data(), nullptr, r.y_no_bias.data());
  k.backward_input(g, op.dy.data(), op.w.data(), r.dx.data());
  k.backward_weight(g, op.x.data(), op.dy.data(), r.dw.data(), r.dbias.data());
  k.backward_weight(g, op.x.data(), op.dy.data(), r.dw_no_bias.data(), nullptr);
  return r;
}

// Inputs are in [-1, 1], so a sum of `terms` products has a float rounding error of at most a
// few ulps of 1 per term; a missing or doubled term is off by far more.
void expect_near(const std::vector<float>& want, const std::vector<float>& got, int64_t terms,
                 const std::string& what) {
  ASSERT_EQ(want.size(), got.size()) << what;
  const float tol = 3e-7f * static_cast<float>(terms + 4);
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], tol + 1e-6f * std::fabs(want[i])) << what << " at " << i;
  }
}

void expect_identical(const std::vector<float>& a, const std::vector<float>& b,
                      const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  ASSERT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << what;
}

// Every kernel against naive at 1 and 2 threads, and each kernel bit-identical across them.
void check_all_kernels(const Conv2dGeometry& g, uint64_t seed) {
  ThreadCountGuard guard;
  const Operands op(g, seed);
  ink::set_num_threads(1);
  const Results want = run(ink::kernels::conv2d_kernel("naive"), op);
  const int64_t forward_terms = g.CKK(), input_terms = g.O * g.KH * g.KW;
  const int64_t weight_terms = g.B * g.HO() * g.WO();
  for (const Conv2dKernel& k : ink::kernels::conv2d_kernels()) {
    std::vector<Results> by_threads;
    for (int threads : {1, 2}) {
      ink::set_num_threads(threads);
      by_threads.push_back(run(k, op));
      const Results& got = by_threads.back();
      const std::string what = k.name + " threads=" + std::to_string(threads) + " " + describe(g);
      expect_near(want.y, got.y, forward_terms, what + " forward");
      expect_near(want.y_no_bias, got.y_no_bias, forward_terms, what + " forward without bias");
      expect_near(want.dx, got.dx, input_terms, what + " dX");
      expect_near(want.dw, got.dw, weight_terms, what + " dW");
      expect_near(want.dw, got.dw_no_bias, weight_terms, what + " dW without dbias");
      expect_near(want.dbias, got.dbias, weight_terms, what + " dbias");
      if (::testing::Test::HasFatalFailure()) return;
    }
    const std::string what = k.name + " 1 vs 2 threads " + describe(g);
    expect_identical(by_threads[0].y, by_threads[1].y, what + " forward");
    expect_identical(by_threads[0].dx, by_threads[1].dx, what + " dX");
    expect_identical(by_threads[0].dw, by_threads[1].dw, what + " dW");
    expect_identical(by_threads[0].dbias, by_threads[1].dbias, what + " dbias");
    if (::testing::Test::HasFatalFailure()) return;
  }
}

// Batches with more images than threads: the grouped kernel spreads groups of images over the
// threads and folds the weight gradient into 8 partial sums over runs of groups (B = 9, 19, 64
// give runs of different lengths); every kernel must match naive and stay bit-identical at 1 and
// 2 threads.
TEST(Conv2dKernels, LargeBatchesMatchNaiveAndDoNotDependOnThreads) {
  for (const int64_t B : {9, 19, 64}) {
    for (const int64_t stride : {1, 2}) {
      Conv2dGeometry g;
      g.B = B, g.C = 5, g.H = 7, g.W = 6, g.O = 4, g.KH = g.KW = 3, g.stride = stride,
      g.padding = 1;
      check_all_kernels(g, static_cast<uint64_t>(B * 10 + stride));
      if (::testing::Test::HasFatalFailure()) return;
    }
  }
}

TEST(Conv2dKernels, RegistryListsTheFamilySimplestFirst) {
  std::vector<std::string> names;
  for (const auto& k : ink::kernels::conv2d_kernels()) names.push_back(k.name);
  EXPECT_THAT(names, ::testing::ElementsAre("naive", "im2col", "grouped", "shifted"));
  EXPECT_EQ(&ink::kernels::conv2d_kernel("shifted"), &ink::kernels::conv2d_default_kernel());
}

TEST(Conv2dKernels, UnknownKernelNameListsTheKnownOnes) {
  ink::testing_util::expect_error([] { ink::kernels::conv2d_kernel("winograd"); },
                                  "conv2d_kernel: unknown kernel \"winograd\" (known: naive, "
                                  "im2col, grouped, shifted)");
}

TEST(Conv2dKernels, GeometryGivesPyTorchOutputSizes) {
  Conv2dGeometry g;
  g.H = 28, g.W = 7, g.KH = g.KW = 3, g.stride = 2, g.padding = 1;
  EXPECT_EQ(g.HO(), 14);
  EXPECT_EQ(g.WO(), 4);
  g.H = 33, g.W = 5, g.padding = 0, g.dilation = 2;
  EXPECT_EQ(g.HO(), 15);
  EXPECT_EQ(g.WO(), 1);
}

// A sample of the cross product H, W in {1, 2, 3, 7, 14, 28, 33}, C in {1, 3, 5, 32, 64},
// stride 1/2, padding 0/1, kernel 1x1/3x3: every (H, W) pair, with C, O, B, stride, padding
// and kernel size cycling through their values at co-prime periods, so each value meets many
// of the others. Shapes whose output would be empty (3x3 on a 1x1 image without padding) are
// skipped.
TEST(Conv2dKernels, RaggedShapesMatchNaive) {
  const int64_t sizes[] = {1, 2, 3, 7, 14, 28, 33};
  const int64_t channels[] = {1, 3, 5, 32, 64};
  const int64_t outputs[] = {1, 4, 7, 16};
  const int64_t batches[] = {1, 2, 3};
  int64_t n = 0;
  for (int64_t H : sizes) {
    for (int64_t W : sizes) {
      Conv2dGeometry g;
      g.B = batches[n % 3];
      g.H = H, g.W = W;
      g.C = channels[n % 5];
      g.O = outputs[n % 4];
      g.KH = g.KW = (n / 2) % 2 == 0 ? 3 : 1;
      g.stride = 1 + n % 2;
      g.padding = (n / 3) % 2;
      ++n;
      if (g.HO() < 1 || g.WO() < 1) continue;
      // Keep the naive reference quick: the big channel counts on the big images use one image.
      if (g.C * H * W > 20000) g.B = 1;
      SCOPED_TRACE(describe(g));
      check_all_kernels(g, static_cast<uint64_t>(100 * n));
      if (HasFatalFailure()) return;
    }
  }
}

// Every combination of stride, padding and kernel size on a few fixed ragged shapes.
TEST(Conv2dKernels, EveryStridePaddingAndKernelSize) {
  const int64_t shapes[][3] = {{5, 7, 3}, {3, 33, 2}, {32, 14, 1}};  // {C, H, W}
  for (const auto& s : shapes) {
    for (int64_t k : {1, 3}) {
      for (int64_t stride : {1, 2}) {
        for (int64_t padding : {0, 1}) {
          Conv2dGeometry g;
          g.B = 2, g.C = s[0], g.H = s[1], g.W = s[2], g.O = 5;
          g.KH = g.KW = k, g.stride = stride, g.padding = padding;
          if (g.HO() < 1 || g.WO() < 1) continue;
          check_all_kernels(g, 7);
          if (HasFatalFailure()) return;
        }
      }
    }
  }
}

// Batches large enough that the grouped kernel forms several groups (a ragged last one) and
// several dW slots, and runs them on both threads.
TEST(Conv2dKernels, ManyImagesFormSeveralGroups) {
  const int64_t cases[][5] = {
      // B, C, H (= W), O, stride
      {43, 5, 7, 8, 1},   // groups of 10 images (512 / 49 columns): 5 groups, the last of 3
      {9, 3, 28, 4, 1},   // one image per group: 9 groups; dW: 8 slots, the last with 2
      {70, 3, 3, 6, 2},   // tiny images: one group of all 70
      {23, 4, 14, 5, 2},  // 7x7 output, groups of 10: 3 groups, the last of 3
  };
  for (const auto& c : cases) {
    for (int64_t k : {1, 3}) {
      Conv2dGeometry g;
      g.B = c[0], g.C = c[1], g.H = g.W = c[2], g.O = c[3], g.stride = c[4];
      g.KH = g.KW = k, g.padding = k == 3 ? 1 : 0;
      check_all_kernels(g, 11);
      if (HasFatalFailure()) return;
    }
  }
}

TEST(Conv2dKernels, DilationMatchesNaive) {
  Conv2dGeometry g;
  g.B = 2, g.C = 3, g.H = 9, g.W = 11, g.O = 4, g.KH = g.KW = 3, g.padding = 2, g.dilation = 2;
  check_all_kernels(g, 5);
}

// The naive kernel itself, on a case small enough to work out by hand: a 2x2 image, a 2x2
// kernel, one channel, no padding: y = sum of x * w.
TEST(Conv2dKernels, NaiveOnAHandWorkedCase) {
  Conv2dGeometry g;
  g.H = g.W = 3, g.KH = g.KW = 2, g.padding = 0;
  const std::vector<double> x = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const std::vector<double> w = {1, 0, 0, -1};  // x[i, j] - x[i + 1, j + 1]
  const double bias = 0.5;
  std::vector<double> y(4);
  ink::kernels::conv2d_forward_naive<double>(g, x.data(), w.data(), &bias, y.data());
  EXPECT_THAT(y, ::testing::ElementsAre(-3.5, -3.5, -3.5, -3.5));
  // dx = the kernel stamped at each output position, weighted by dy.
  const std::vector<double> dy = {1, 0, 0, 2};
  std::vector<double> dx(9);
  ink::kernels::conv2d_backward_input_naive<double>(g, dy.data(), w.data(), dx.data());
  EXPECT_THAT(dx, ::testing::ElementsAre(1, 0, 0, 0, 1, 0, 0, 0, -2));
  std::vector<double> dw(4), db(1);
  ink::kernels::conv2d_backward_weight_naive<double>(g, x.data(), dy.data(), dw.data(), db.data());
  // dw[i, j] = x[i, j] * 1 + x[i + 1, j + 1] * 2
  EXPECT_THAT(dw, ::testing::ElementsAre(1 + 2 * 5, 2 + 2 * 6, 4 + 2 * 8, 5 + 2 * 9));
  EXPECT_EQ(db[0], 3.0);
}

// ---- Resampling ------------------------------------------------------------------------------

// The resampling kernels against loops written from the definition, for float and double, at
// 1 and 2 threads.
template <class T>
void check_resample(int64_t N, int64_t H, int64_t W, int64_t s) {
  ThreadCountGuard guard;
  ink::Generator gen(static_cast<uint64_t>(N * 1000 + H * 10 + W));
  const auto fill = [&](int64_t n) {
    std::vector<T> v(static_cast<size_t>(n));
    for (T& e : v) e = static_cast<T>(gen.uniform(-1.0f, 1.0f));
    return v;
  };
  const std::vector<T> x = fill(N * H * W);
  const std::vector<T> dy_up = fill(N * H * s * W * s);
  const int64_t HO = H / s, WO = W / s;
  const std::vector<T> dy_pool = fill(N * HO * WO);

  std::vector<T> up(x.size() * s * s), dx_up(x.size()), pool(dy_pool.size()), dx_pool(x.size());
  std::vector<T> up_want(up.size()), dx_up_want(x.size(), 0), pool_want(pool.size(), 0);
  std::vector<T> dx_pool_want(x.size(), 0);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t oh = 0; oh < H * s; ++oh) {
      for (int64_t ow = 0; ow < W * s; ++ow) {
        const size_t out = static_cast<size_t>((n * H * s + oh) * W * s + ow);
        const size_t in = static_cast<size_t>((n * H + oh / s) * W + ow / s);
        up_want[out] = x[in];
        dx_up_want[in] += dy_up[out];
      }
    }
    for (int64_t ih = 0; ih < HO * s; ++ih) {
      for (int64_t iw = 0; iw < WO * s; ++iw) {
        const size_t in = static_cast<size_t>((n * H + ih) * W + iw);
        const size_t out = static_cast<size_t>((n * HO + ih / s) * WO + iw / s);
        pool_want[out] += x[in] / static_cast<T>(s * s);
        dx_pool_want[in] = dy_pool[out] / static_cast<T>(s * s);
      }
    }
  }
  const T tol = std::is_same_v<T, float> ? T(1e-6) : T(1e-14);
  const std::string what = "N=" + std::to_string(N) + " H=" + std::to_string(H) +
                           " W=" + std::to_string(W) + " s=" + std::to_string(s);
  for (int threads : {1, 2}) {
    ink::set_num_threads(threads);
    ink::kernels::upsample_nearest2d_forward<T>(N, H, W, s, x.data(), up.data());
    ink::kernels::upsample_nearest2d_backward<T>(N, H, W, s, dy_up.data(), dx_up.data());
    ink::kernels::avg_pool2d_forward<T>(N, H, W, s, x.data(), pool.data());
    ink::kernels::avg_pool2d_backward<T>(N, H, W, s, dy_pool.data(), dx_pool.data());
    for (size_t i = 0; i < up.size(); ++i) ASSERT_EQ(up[i], up_want[i]) << what << " up " << i;
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_NEAR(dx_up[i], dx_up_want[i], tol * 8) << what << " up dX " << i;
      ASSERT_NEAR(dx_pool[i], dx_pool_want[i], tol) << what << " pool dX " << i;
    }
    for (size_t i = 0; i < pool.size(); ++i) {
      ASSERT_NEAR(pool[i], pool_want[i], tol * 8) << what << " pool " << i;
    }
  }
}

TEST(ResampleKernels, MatchTheDefinition) {
  for (int64_t s : {2, 3}) {
    for (int64_t H : {1, 2, 7, 14}) {
      for (int64_t W : {1, 3, 28}) {
        check_resample<float>(3, H, W, s);
        check_resample<double>(2, H, W, s);
        if (HasFatalFailure()) return;
      }
    }
  }
  check_resample<float>(64 * 8, 28, 28, 2);  // enough planes to split across threads
}

}  // namespace
