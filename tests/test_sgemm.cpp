// Tests for the sgemm kernel family: every kernel, and every micro-kernel instruction set this
// CPU can run, against sgemm_naive on all four layouts, ragged sizes, padded leading dimensions
// and alpha/beta combinations; bit-identical results for 1 and 2 threads; the registry's errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "tensor/error.h"
#include "tensor/kernels/sgemm.h"
#include "tensor/kernels/sgemm_packed.h"
#include "tensor/parallel.h"
#include "tensor/random.h"
#include "tests/test_util.h"

namespace {

using ink::kernels::Trans;
using ::testing::HasSubstr;

// One kernel under test, by name. The packed kernels appear once per micro-kernel set, so the
// AVX2 and portable code is checked even on an AVX-512 machine.
struct NamedKernel {
  std::string name;
  std::function<void(Trans, Trans, int64_t, int64_t, int64_t, float, const float*, int64_t,
                     const float*, int64_t, float, float*, int64_t)>
      fn;
};

std::vector<NamedKernel> kernels_under_test() {
  namespace packed = ink::kernels::packed;
  std::vector<NamedKernel> out;
  for (const auto& k : ink::kernels::sgemm_kernels()) {
    if (k.name != "naive") out.push_back({k.name, k.fn});
  }
  out.push_back({"sgemm", &ink::kernels::sgemm});
  for (const packed::MicroKernel* uk : packed::available_microkernels()) {
    out.push_back({std::string("packed[") + uk->isa + "]",
                   [uk](auto... args) { packed::sgemm_packed_with(*uk, args...); }});
    out.push_back({std::string("packed_mt[") + uk->isa + "]",
                   [uk](auto... args) { packed::sgemm_packed_mt_with(*uk, args...); }});
  }
  return out;
}

const char* layout_name(Trans ta, Trans tb) {
  if (ta == Trans::N) return tb == Trans::N ? "NN" : "NT";
  return tb == Trans::N ? "TN" : "TT";
}

// A problem with its operands. Leading dimensions are the stored row length plus a pad, and
// C's pad columns hold a sentinel that no kernel may overwrite.
struct Problem {
  Trans ta = Trans::N, tb = Trans::N;
  int64_t M = 0, N = 0, K = 0;
  float alpha = 1.0f, beta = 0.0f;
  int64_t lda = 0, ldb = 0, ldc = 0;
  std::vector<float> A, B, C;

  static constexpr float kSentinel = 12345.0f;

  Problem(Trans ta_, Trans tb_, int64_t M_, int64_t N_, int64_t K_, float alpha_, float beta_,
          int64_t pad, uint64_t seed)
      : ta(ta_), tb(tb_), M(M_), N(N_), K(K_), alpha(alpha_), beta(beta_) {
    ink::Generator gen(seed);
    const int64_t a_rows = ta == Trans::N ? M : K, a_cols = ta == Trans::N ? K : M;
    const int64_t b_rows = tb == Trans::N ? K : N, b_cols = tb == Trans::N ? N : K;
    lda = a_cols + pad;
    ldb = b_cols + 2 * pad;
    ldc = N + 3 * pad;
    A.resize(static_cast<size_t>(a_rows * lda));
    B.resize(static_cast<size_t>(b_rows * ldb));
    C.assign(static_cast<size_t>(M * ldc), kSentinel);
    for (float& x : A) x = gen.uniform(-1.0f, 1.0f);
    for (float& x : B) x = gen.uniform(-1.0f, 1.0f);
    for (int64_t i = 0; i < M; ++i) {
      for (int64_t j = 0; j < N; ++j) {
        // beta == 0 must never read C: fill it with NaN so a read would show.
        C[i * ldc + j] =
            beta == 0.0f ? std::numeric_limits<float>::quiet_NaN() : gen.uniform(-1.0f, 1.0f);
      }
    }
  }

  std::string describe() const {
    return std::string(layout_name(ta, tb)) + " M=" + std::to_string(M) +
           " N=" + std::to_string(N) + " K=" + std::to_string(K) +
           " alpha=" + std::to_string(alpha) + " beta=" + std::to_string(beta) +
           " lda=" + std::to_string(lda) + " ldb=" + std::to_string(ldb) +
           " ldc=" + std::to_string(ldc);
  }

  template <class Fn>
  std::vector<float> run(const Fn& fn) const {
    std::vector<float> out = C;
    fn(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, out.data(), ldc);
    return out;
  }
};

// Compares against the reference. Inputs are in [-1, 1], so each product is at most 1 and
// the float rounding error of a K-term sum grows at most like K ulps of 1: the tolerance
// scales with K. A missing or doubled term would be off by ~0.1 or more.
void expect_matches(const Problem& pr, const std::vector<float>& want,
                    const std::vector<float>& got, const std::string& kernel) {
  const float tol_sum = 2e-7f * static_cast<float>(pr.K + 4) * std::fabs(pr.alpha);
  for (int64_t i = 0; i < pr.M; ++i) {
    for (int64_t j = 0; j < pr.ldc; ++j) {
      const size_t at = static_cast<size_t>(i * pr.ldc + j);
      if (j >= pr.N) {
        ASSERT_EQ(got[at], Problem::kSentinel)
            << kernel << " wrote outside C at (" << i << ", " << j << ") for " << pr.describe();
        continue;
      }
      const float tol = tol_sum + 1e-6f * std::fabs(want[at]);
      ASSERT_NEAR(got[at], want[at], tol)
          << kernel << " at (" << i << ", " << j << ") for " << pr.describe();
    }
  }
}

void check_all_kernels(const Problem& pr) {
  const std::vector<float> want = pr.run(&ink::kernels::sgemm_naive);
  for (const NamedKernel& k : kernels_under_test()) {
    expect_matches(pr, want, pr.run(k.fn), k.name);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

constexpr Trans kLayouts[4][2] = {
    {Trans::N, Trans::N}, {Trans::N, Trans::T}, {Trans::T, Trans::N}, {Trans::T, Trans::T}};

const std::vector<int64_t> kRaggedSizes = {1, 3, 7, 15, 17, 31, 33, 63, 65, 127, 129};

using ink::testing_util::ThreadCountGuard;

TEST(Sgemm, RegistryListsTheFamilySimplestFirst) {
  std::vector<std::string> names;
  for (const auto& k : ink::kernels::sgemm_kernels()) names.push_back(k.name);
  EXPECT_THAT(names, ::testing::ElementsAre("naive", "blocked", "packed", "packed_mt"));
  EXPECT_EQ(ink::kernels::sgemm_kernel("packed_mt"), &ink::kernels::sgemm_packed_mt);
}

TEST(Sgemm, UnknownKernelNameListsTheKnownOnes) {
  try {
    ink::kernels::sgemm_kernel("strassen");
    FAIL() << "expected ink::Error";
  } catch (const ink::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("sgemm_kernel: unknown kernel \"strassen\""));
    EXPECT_THAT(e.what(), HasSubstr("known: naive, blocked, packed, packed_mt"));
  }
}

TEST(Sgemm, IsaIsOneOfTheMicroKernelSets) {
  EXPECT_THAT(std::string(ink::kernels::sgemm_isa()),
              ::testing::AnyOf("avx512", "avx2", "generic"));
}

// Every pair of ragged sizes for M and N, with K cycling through the same list, on all layouts.
TEST(Sgemm, RaggedSizesAllLayouts) {
  for (const auto& layout : kLayouts) {
    for (size_t im = 0; im < kRaggedSizes.size(); ++im) {
      for (size_t in = 0; in < kRaggedSizes.size(); ++in) {
        const int64_t K = kRaggedSizes[(im + 2 * in) % kRaggedSizes.size()];
        const Problem pr(layout[0], layout[1], kRaggedSizes[im], kRaggedSizes[in], K, 1.0f, 0.0f, 0,
                         1000 * im + in);
        check_all_kernels(pr);
        if (HasFatalFailure()) return;
      }
    }
  }
}

// 1000 in each position: several K blocks, several N blocks, several row blocks.
TEST(Sgemm, SizeThousand) {
  const int64_t cases[][3] = {{1000, 17, 33}, {33, 1000, 7}, {17, 31, 1000}, {65, 129, 1000}};
  for (const auto& layout : kLayouts) {
    for (const auto& c : cases) {
      check_all_kernels(Problem(layout[0], layout[1], c[0], c[1], c[2], 1.0f, 0.0f, 0, 7));
      if (HasFatalFailure()) return;
    }
  }
}

TEST(Sgemm, NonUnitLeadingDimensions) {
  const int64_t shapes[][3] = {{7, 33, 17}, {64, 96, 65}, {129, 63, 31}};
  for (const auto& layout : kLayouts) {
    for (const auto& s : shapes) {
      check_all_kernels(Problem(layout[0], layout[1], s[0], s[1], s[2], 1.0f, 0.5f, 5, 11));
      if (HasFatalFailure()) return;
    }
  }
}

TEST(Sgemm, AlphaBetaCombinations) {
  const float combos[][2] = {{1.0f, 0.0f},   {1.0f, 1.0f}, {0.5f, -2.0f},
                             {-1.5f, 0.25f}, {0.0f, 0.5f}, {2.0f, 0.0f}};
  for (const auto& layout : kLayouts) {
    for (const auto& ab : combos) {
      check_all_kernels(Problem(layout[0], layout[1], 33, 65, 300, ab[0], ab[1], 3, 5));
      if (HasFatalFailure()) return;
    }
  }
}

// beta == 0 overwrites C without reading it: NaN in C must not reach the result.
TEST(Sgemm, BetaZeroIgnoresNaNInC) {
  for (const auto& layout : kLayouts) {
    const Problem pr(layout[0], layout[1], 17, 63, 129, 1.0f, 0.0f, 1, 3);
    for (const NamedKernel& k : kernels_under_test()) {
      const std::vector<float> got = pr.run(k.fn);
      for (int64_t i = 0; i < pr.M; ++i) {
        for (int64_t j = 0; j < pr.N; ++j) {
          ASSERT_TRUE(std::isfinite(got[i * pr.ldc + j])) << k.name << " " << pr.describe();
        }
      }
    }
  }
}

// K == 0 leaves C = beta * C (zeros for beta == 0, even over NaN); M or N == 0 does nothing.
TEST(Sgemm, EmptyDimensions) {
  for (const NamedKernel& k : kernels_under_test()) {
    std::vector<float> c = {std::numeric_limits<float>::quiet_NaN(), 2.0f, 3.0f, 4.0f};
    const float a = 1.0f, b = 1.0f;
    k.fn(Trans::N, Trans::N, 2, 2, 0, 1.0f, &a, 1, &b, 2, 0.0f, c.data(), 2);
    EXPECT_THAT(c, ::testing::ElementsAre(0.0f, 0.0f, 0.0f, 0.0f)) << k.name;
    c = {1.0f, 2.0f, 3.0f, 4.0f};
    k.fn(Trans::N, Trans::N, 2, 2, 0, 1.0f, &a, 1, &b, 2, 0.5f, c.data(), 2);
    EXPECT_THAT(c, ::testing::ElementsAre(0.5f, 1.0f, 1.5f, 2.0f)) << k.name;
    k.fn(Trans::N, Trans::N, 0, 2, 3, 1.0f, &a, 3, &b, 2, 0.0f, c.data(), 2);
    k.fn(Trans::N, Trans::N, 2, 0, 3, 1.0f, &a, 3, &b, 2, 0.0f, c.data(), 2);
    EXPECT_THAT(c, ::testing::ElementsAre(0.5f, 1.0f, 1.5f, 2.0f)) << k.name;
  }
}

// The model's shapes at batch 64 (forward A*B, dX = dY*W^T, dW = X^T*dY), plus two shapes
// that packed_mt splits by rows (600 x 40) and by columns (B stored [N, K]): 1 and 2 threads
// give the same bits, and match the reference. (The first layer's 3 MFLOP stay on one thread.)
TEST(Sgemm, ThreadCountDoesNotChangeTheBits) {
  ThreadCountGuard guard;
  struct Case {
    Trans ta, tb;
    int64_t M, N, K;
  };
  const Case cases[] = {
      {Trans::N, Trans::N, 64, 256, 96},  {Trans::N, Trans::T, 64, 96, 256},
      {Trans::T, Trans::N, 96, 256, 64},  {Trans::N, Trans::N, 64, 784, 512},
      {Trans::N, Trans::T, 64, 512, 784}, {Trans::T, Trans::N, 512, 784, 64},
      {Trans::N, Trans::N, 600, 40, 300}, {Trans::T, Trans::T, 129, 250, 300},
  };
  std::vector<NamedKernel> threaded = {{"sgemm", &ink::kernels::sgemm}};
  for (const NamedKernel& k : kernels_under_test()) {
    if (k.name.rfind("packed_mt", 0) == 0) threaded.push_back(k);
  }
  for (const Case& c : cases) {
    const Problem pr(c.ta, c.tb, c.M, c.N, c.K, 1.0f, 0.5f, 0, 21);
    const std::vector<float> want = pr.run(&ink::kernels::sgemm_naive);
    for (const NamedKernel& k : threaded) {
      ink::set_num_threads(1);
      const std::vector<float> one = pr.run(k.fn);
      ink::set_num_threads(2);
      const std::vector<float> two = pr.run(k.fn);
      ASSERT_EQ(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)), 0)
          << k.name << " differs between 1 and 2 threads for " << pr.describe();
      expect_matches(pr, want, two, k.name);
      if (HasFatalFailure()) return;
    }
  }
}

}  // namespace
