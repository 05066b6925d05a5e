// Tests for the fused attention kernels: the fast float version against the naive one (ragged
// sizes, key masks, a batch whose keys are all masked, large scores), bit-identical results at 1
// and 2 threads, and the naive backward (in double) against finite differences.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "tensor/kernels/attention_kernels.h"
#include "tensor/parallel.h"
#include "tensor/random.h"

namespace {

namespace k = ink::kernels;

template <class T>
std::vector<T> random_vector(int64_t n, uint64_t seed, float low = -1.0f, float high = 1.0f) {
  ink::Generator gen(seed);
  std::vector<T> v(static_cast<size_t>(n));
  for (T& x : v) x = static_cast<T>(gen.uniform(low, high));
  return v;
}

void expect_close(const std::vector<float>& a, const std::vector<float>& b, float rtol, float atol,
                  const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_FALSE(std::isnan(a[i])) << what << " at " << i;
    ASSERT_LE(std::fabs(a[i] - b[i]), atol + rtol * std::fabs(b[i]))
        << what << " at " << i << ": " << a[i] << " vs " << b[i];
  }
}

struct Shape {
  int64_t B, H, Lq, Lk, D;
  std::string name() const {
    return "B=" + std::to_string(B) + " H=" + std::to_string(H) + " Lq=" + std::to_string(Lq) +
           " Lk=" + std::to_string(Lk) + " D=" + std::to_string(D);
  }
};

// Batch b masks key j when (b + j) % 3 == 0; the last batch (when B > 1) masks every key.
std::vector<uint8_t> make_mask(const Shape& s) {
  std::vector<uint8_t> valid(s.B * s.Lk, 1);
  for (int64_t b = 0; b < s.B; ++b) {
    for (int64_t j = 0; j < s.Lk; ++j) {
      valid[b * s.Lk + j] = (b > 0 && b == s.B - 1) ? 0 : ((b + j) % 3 != 0 || s.Lk == 1);
    }
  }
  return valid;
}

struct Result {
  std::vector<float> out, weights, dq, dk, dv;
};

Result run_fast(const Shape& s, const std::vector<float>& q, const std::vector<float>& kk,
                const std::vector<float>& v, const std::vector<float>& dout, const uint8_t* valid) {
  Result r;
  r.out.resize(s.B * s.H * s.Lq * s.D);
  r.weights.resize(s.B * s.H * s.Lq * s.Lk);
  r.dq.resize(q.size());
  r.dk.resize(kk.size());
  r.dv.resize(v.size());
  k::attention_forward(q.data(), kk.data(), v.data(), valid, r.out.data(), r.weights.data(), s.B,
                       s.H, s.Lq, s.Lk, s.D);
  k::attention_backward(dout.data(), q.data(), kk.data(), v.data(), r.weights.data(), r.dq.data(),
                        r.dk.data(), r.dv.data(), s.B, s.H, s.Lq, s.Lk, s.D);
  return r;
}

Result run_naive(const Shape& s, const std::vector<float>& q, const std::vector<float>& kk,
                 const std::vector<float>& v, const std::vector<float>& dout,
                 const uint8_t* valid) {
  Result r;
  r.out.resize(s.B * s.H * s.Lq * s.D);
  r.weights.resize(s.B * s.H * s.Lq * s.Lk);
  r.dq.resize(q.size());
  r.dk.resize(kk.size());
  r.dv.resize(v.size());
  k::attention_forward_naive(q.data(), kk.data(), v.data(), valid, r.out.data(), r.weights.data(),
                             s.B, s.H, s.Lq, s.Lk, s.D);
  k::attention_backward_naive(dout.data(), q.data(), kk.data(), v.data(), r.weights.data(),
                              r.dq.data(), r.dk.data(), r.dv.data(), s.B, s.H, s.Lq, s.Lk, s.D);
  return r;
}

const std::vector<Shape> kShapes = {{1, 1, 1, 1, 1},    {2, 1, 3, 2, 4},   {3, 2, 7, 5, 8},
                                    {2, 4, 49, 16, 32}, {3, 3, 17, 9, 33}, {2, 2, 196, 8, 64},
                                    {2, 1, 50, 77, 16}};

TEST(Attention, FastMatchesNaiveWithAndWithoutMask) {
  for (const Shape& s : kShapes) {
    for (bool masked : {false, true}) {
      const std::string what = s.name() + (masked ? " masked" : "");
      const auto q = random_vector<float>(s.B * s.H * s.Lq * s.D, 1, -2.0f, 2.0f);
      const auto kk = random_vector<float>(s.B * s.H * s.Lk * s.D, 2, -2.0f, 2.0f);
      const auto v = random_vector<float>(s.B * s.H * s.Lk * s.D, 3);
      const auto dout = random_vector<float>(s.B * s.H * s.Lq * s.D, 4);
      const std::vector<uint8_t> mask = make_mask(s);
      const uint8_t* valid = masked ? mask.data() : nullptr;
      const Result ref = run_naive(s, q, kk, v, dout, valid);
      std::vector<Result> runs;
      const int before = ink::get_num_threads();
      for (int threads : {1, 2}) {
        ink::set_num_threads(threads);
        runs.push_back(run_fast(s, q, kk, v, dout, valid));
        const Result& r = runs.back();
        expect_close(r.out, ref.out, 1e-4f, 1e-5f, what + " out");
        expect_close(r.weights, ref.weights, 1e-4f, 1e-6f, what + " weights");
        expect_close(r.dq, ref.dq, 1e-3f, 1e-5f, what + " dq");
        expect_close(r.dk, ref.dk, 1e-3f, 1e-5f, what + " dk");
        expect_close(r.dv, ref.dv, 1e-4f, 1e-5f, what + " dv");
      }
      ink::set_num_threads(before);
      const auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
        return std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
      };
      EXPECT_TRUE(same(runs[0].out, runs[1].out)) << what;
      EXPECT_TRUE(same(runs[0].dq, runs[1].dq)) << what;
      EXPECT_TRUE(same(runs[0].dk, runs[1].dk)) << what;
      EXPECT_TRUE(same(runs[0].dv, runs[1].dv)) << what;
    }
  }
}

TEST(Attention, FastMatchesNaiveWithAMaskForEachQuery) {
  // [B, Lq, Lk]: query i of batch b sees key j when (i + 2 j + b) % 3 != 0; the last query of the
  // last batch sees no key.
  for (const Shape& s : kShapes) {
    std::vector<uint8_t> mask(static_cast<size_t>(s.B * s.Lq * s.Lk));
    for (int64_t b = 0; b < s.B; ++b) {
      for (int64_t i = 0; i < s.Lq; ++i) {
        for (int64_t j = 0; j < s.Lk; ++j) {
          const bool none = b == s.B - 1 && i == s.Lq - 1 && s.Lq > 1;
          mask[static_cast<size_t>((b * s.Lq + i) * s.Lk + j)] =
              !none && ((i + 2 * j + b) % 3 != 0 || j == 0);
        }
      }
    }
    const auto q = random_vector<float>(s.B * s.H * s.Lq * s.D, 5, -2.0f, 2.0f);
    const auto kk = random_vector<float>(s.B * s.H * s.Lk * s.D, 6, -2.0f, 2.0f);
    const auto v = random_vector<float>(s.B * s.H * s.Lk * s.D, 7);
    Result fast, ref;
    for (Result* r : {&fast, &ref}) {
      r->out.resize(q.size());
      r->weights.resize(static_cast<size_t>(s.B * s.H * s.Lq * s.Lk));
    }
    k::attention_forward(q.data(), kk.data(), v.data(), mask.data(), fast.out.data(),
                         fast.weights.data(), s.B, s.H, s.Lq, s.Lk, s.D, true);
    k::attention_forward_naive(q.data(), kk.data(), v.data(), mask.data(), ref.out.data(),
                               ref.weights.data(), s.B, s.H, s.Lq, s.Lk, s.D, true);
    expect_close(fast.out, ref.out, 1e-4f, 1e-5f, s.name() + " out");
    expect_close(fast.weights, ref.weights, 1e-4f, 1e-6f, s.name() + " weights");
    for (int64_t b = 0; b < s.B; ++b) {
      for (int64_t h = 0; h < s.H; ++h) {
        for (int64_t j = 0; j < s.Lk; ++j) {
          for (int64_t i = 0; i < s.Lq; ++i) {
            if (!mask[static_cast<size_t>((b * s.Lq + i) * s.Lk + j)]) {
              EXPECT_EQ(fast.weights[static_cast<size_t>(((b * s.H + h) * s.Lk + j) * s.Lq + i)],
                        0.0f)
                  << s.name();
            }
          }
        }
      }
    }
  }
}

TEST(Attention, MaskedKeysGetZeroWeightAndFullyMaskedRowsGiveZeros) {
  const Shape s{3, 2, 5, 6, 8};
  const auto q = random_vector<float>(s.B * s.H * s.Lq * s.D, 10);
  const auto kk = random_vector<float>(s.B * s.H * s.Lk * s.D, 11);
  const auto v = random_vector<float>(s.B * s.H * s.Lk * s.D, 12);
  const auto dout = random_vector<float>(s.B * s.H * s.Lq * s.D, 13);
  const std::vector<uint8_t> mask = make_mask(s);  // batch 2 masks every key
  for (const Result& r :
       {run_fast(s, q, kk, v, dout, mask.data()), run_naive(s, q, kk, v, dout, mask.data())}) {
    for (int64_t b = 0; b < s.B; ++b) {
      for (int64_t h = 0; h < s.H; ++h) {
        for (int64_t i = 0; i < s.Lq; ++i) {
          float row_sum = 0.0f;
          for (int64_t j = 0; j < s.Lk; ++j) {
            const float p = r.weights[((b * s.H + h) * s.Lk + j) * s.Lq + i];  // [B, H, Lk, Lq]
            if (!mask[b * s.Lk + j]) {
              EXPECT_EQ(p, 0.0f);
            }
            row_sum += p;
          }
          EXPECT_NEAR(row_sum, b == s.B - 1 ? 0.0f : 1.0f, 1e-5f);
        }
      }
    }
    // The fully masked batch: zero output, zero gradients for its q, k and v.
    const int64_t q_begin = (s.B - 1) * s.H * s.Lq * s.D, k_begin = (s.B - 1) * s.H * s.Lk * s.D;
    for (size_t i = q_begin; i < r.out.size(); ++i) EXPECT_EQ(r.out[i], 0.0f);
    for (size_t i = q_begin; i < r.dq.size(); ++i) EXPECT_EQ(r.dq[i], 0.0f);
    for (size_t i = k_begin; i < r.dk.size(); ++i) EXPECT_EQ(r.dk[i], 0.0f);
    for (size_t i = k_begin; i < r.dv.size(); ++i) EXPECT_EQ(r.dv[i], 0.0f);
  }
}

TEST(Attention, LargeScoresStayFinite) {
  // Scores around +-1000 after scaling: the softmax is shifted by its maximum.
  const Shape s{1, 1, 4, 5, 4};
  const auto q = random_vector<float>(s.Lq * s.D, 20, 500.0f, 1000.0f);
  auto kk = random_vector<float>(s.Lk * s.D, 21, -1.0f, 1.0f);
  const auto v = random_vector<float>(s.Lk * s.D, 22);
  const auto dout = random_vector<float>(s.Lq * s.D, 23);
  const Result fast = run_fast(s, q, kk, v, dout, nullptr);
  const Result ref = run_naive(s, q, kk, v, dout, nullptr);
  expect_close(fast.out, ref.out, 1e-3f, 1e-4f, "out");
  expect_close(fast.dv, ref.dv, 1e-3f, 1e-4f, "dv");
}

TEST(Attention, BackwardSkipsTheGradientsNotAsked) {
  const Shape s{2, 2, 9, 5, 8};
  const auto q = random_vector<float>(s.B * s.H * s.Lq * s.D, 30);
  const auto kk = random_vector<float>(s.B * s.H * s.Lk * s.D, 31);
  const auto v = random_vector<float>(s.B * s.H * s.Lk * s.D, 32);
  const auto dout = random_vector<float>(s.B * s.H * s.Lq * s.D, 33);
  const Result all = run_fast(s, q, kk, v, dout, nullptr);
  std::vector<float> dk(kk.size());
  k::attention_backward(dout.data(), q.data(), kk.data(), v.data(), all.weights.data(), nullptr,
                        dk.data(), nullptr, s.B, s.H, s.Lq, s.Lk, s.D);
  EXPECT_EQ(dk, all.dk);
}

TEST(Attention, NaiveBackwardMatchesFiniteDifferences) {
  const Shape s{2, 2, 3, 4, 5};
  auto q = random_vector<double>(s.B * s.H * s.Lq * s.D, 40);
  auto kk = random_vector<double>(s.B * s.H * s.Lk * s.D, 41);
  auto v = random_vector<double>(s.B * s.H * s.Lk * s.D, 42);
  const auto r = random_vector<double>(s.B * s.H * s.Lq * s.D, 43);
  std::vector<uint8_t> mask = {1, 0, 1, 1, 1, 1, 0, 1};
  std::vector<double> out(r.size()), weights(s.B * s.H * s.Lq * s.Lk);
  auto loss = [&] {
    k::attention_forward_naive(q.data(), kk.data(), v.data(), mask.data(), out.data(),
                               weights.data(), s.B, s.H, s.Lq, s.Lk, s.D);
    double total = 0.0;
    for (size_t i = 0; i < out.size(); ++i) total += out[i] * r[i];
    return total;
  };
  auto numeric = [&](std::vector<double>& x) {
    std::vector<double> g(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      const double saved = x[i];
      x[i] = saved + 1e-6;
      const double up = loss();
      x[i] = saved - 1e-6;
      const double down = loss();
      x[i] = saved;
      g[i] = (up - down) / 2e-6;
    }
    return g;
  };
  const auto nq = numeric(q), nk = numeric(kk), nv = numeric(v);
  loss();
  std::vector<double> dq(q.size()), dk(kk.size()), dv(v.size());
  k::attention_backward_naive(r.data(), q.data(), kk.data(), v.data(), weights.data(), dq.data(),
                              dk.data(), dv.data(), s.B, s.H, s.Lq, s.Lk, s.D);
  for (const auto& [a, n, name] :
       {std::tuple{&dq, &nq, "dq"}, std::tuple{&dk, &nk, "dk"}, std::tuple{&dv, &nv, "dv"}}) {
    double largest = 0.0;
    for (size_t i = 0; i < a->size(); ++i) {
      EXPECT_NEAR((*a)[i], (*n)[i], 1e-7 + 1e-6 * std::fabs((*n)[i])) << name << " " << i;
      largest = std::max(largest, std::fabs((*a)[i]));
    }
    EXPECT_GT(largest, 1e-3) << name;
  }
  // Masked keys get no gradient.
  for (int64_t h = 0; h < s.H; ++h) {
    for (int64_t e = 0; e < s.D; ++e) {
      EXPECT_EQ(dk[((0 * s.H + h) * s.Lk + 1) * s.D + e], 0.0);
      EXPECT_EQ(dv[((1 * s.H + h) * s.Lk + 2) * s.D + e], 0.0);
    }
  }
}

}  // namespace
