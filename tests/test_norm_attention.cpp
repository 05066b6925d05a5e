// The fused ops group_norm, layer_norm, silu, gelu, softmax, log_softmax, dropout and
// scaled_dot_product_attention (tensor/ops/nn_ops.cpp) and their layers (nn/norm_attention.h):
// gradchecks in Float64 (masks, a fully masked row, softmax at +-1000, reuse of an input), Float32
// against Float64, the errors and their wording, and PyTorch golden values and gradients from
// tests/data/layers_golden.json (written by scripts/make_layers_golden.py).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nn/norm_attention.h"
#include "tensor/inkgrad.h"
#include "tensor/nn_ops.h"
#include "test_util.h"

namespace ink {
namespace {

using ::testing::HasSubstr;
using Inputs = std::vector<Tensor>;
using json = nlohmann::json;
using testing_util::expect_error;

// ---- helpers ----

// Gradchecks run in Float64, as PyTorch's do.
constexpr DType kCheckDtype = DType::Float64;

Tensor from_doubles(const std::vector<double>& values, const Shape& shape, DType dtype) {
  if (dtype == DType::Float64) {
    Tensor t = empty(shape, DType::Float64);
    double* p = t.data_f64();
    for (size_t i = 0; i < values.size(); ++i) p[i] = values[i];
    return t;
  }
  return from_vector(std::vector<float>(values.begin(), values.end()), shape);
}

std::vector<double> to_doubles(const Tensor& t) {
  return t.to_vector_f64();
}

// Uniform values in [low, high) (drawn in float32, so they are exact in both dtypes).
Tensor rand_tensor(const Shape& shape, uint64_t seed, DType dtype = kCheckDtype, float low = -1.0f,
                   float high = 1.0f) {
  Generator gen(seed);
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = gen.uniform(low, high);
  return from_doubles(v, shape, dtype);
}

Tensor param(const Shape& shape, uint64_t seed, float low = -1.0f, float high = 1.0f) {
  return rand_tensor(shape, seed, kCheckDtype, low, high).set_requires_grad(true);
}

// Float64: tight tolerances (the finite differences are in double).
GradcheckResult check(const std::function<Tensor(const Inputs&)>& f, const Inputs& inputs) {
  GradcheckOptions options;
  options.eps = 1e-6;
  options.atol = 1e-7;
  options.rtol = 1e-5;
  return gradcheck(f, inputs, options);
}

void expect_gradcheck(const std::function<Tensor(const Inputs&)>& f, const Inputs& inputs) {
  const GradcheckResult r = check(f, inputs);
  EXPECT_TRUE(r.ok) << r.message;
}
// Variadic so that a lambda with commas in its captures or body needs no extra parentheses.
#define EXPECT_GRADCHECK(...)                                      \
  do {                                                             \
    SCOPED_TRACE("gradcheck at line " + std::to_string(__LINE__)); \
    expect_gradcheck(__VA_ARGS__);                                 \
  } while (0)

::testing::AssertionResult all_close(const Tensor& actual, const std::vector<double>& expected,
                                     double rtol, double atol) {
  if (!actual.defined()) return ::testing::AssertionFailure() << "undefined tensor";
  const std::vector<double> a = to_doubles(actual);
  if (a.size() != expected.size()) {
    return ::testing::AssertionFailure() << a.size() << " elements vs " << expected.size();
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (!(std::fabs(a[i] - expected[i]) <= atol + rtol * std::fabs(expected[i]))) {
      return ::testing::AssertionFailure()
             << "element " << i << ": " << a[i] << " vs " << expected[i];
    }
  }
  return ::testing::AssertionSuccess();
}

// ---- gradchecks (Float64) ----

TEST(FusedOpsGradcheck, GroupNormWithAndWithoutAffine) {
  Tensor x = param({2, 6, 3, 2}, 1, -2.0f, 3.0f);
  Tensor w = param({6}, 2, 0.5f, 1.5f);
  Tensor b = param({6}, 3);
  EXPECT_GRADCHECK([](const Inputs& v) { return group_norm(v[0], 3, v[1], v[2]); },
                   (Inputs{x, w, b}));
  EXPECT_GRADCHECK([](const Inputs& v) { return group_norm(v[0], 2, Tensor(), Tensor()); },
                   (Inputs{x}));
  // Rank 3 and rank 5 inputs, one group per channel.
  EXPECT_GRADCHECK([](const Inputs& v) { return group_norm(v[0], 4, v[1], v[2]); },
                   (Inputs{param({3, 4, 5}, 4), param({4}, 5), param({4}, 6)}));
  EXPECT_GRADCHECK([](const Inputs& v) { return group_norm(v[0], 1, v[1], Tensor()); },
                   (Inputs{param({2, 2, 2, 6}, 7), param({2}, 8)}));
}

TEST(FusedOpsGradcheck, LayerNormWithAndWithoutAffine) {
  Tensor x = param({2, 3, 5}, 10, -1.0f, 2.0f);
  Tensor w = param({5}, 11, 0.5f, 1.5f);
  Tensor b = param({5}, 12);
  EXPECT_GRADCHECK([](const Inputs& v) { return layer_norm(v[0], v[1], v[2]); }, (Inputs{x, w, b}));
  EXPECT_GRADCHECK([](const Inputs& v) { return layer_norm(v[0], Tensor(), Tensor()); },
                   (Inputs{x}));
  // The input used twice: as the normalised input and as a residual.
  EXPECT_GRADCHECK([](const Inputs& v) { return add(layer_norm(v[0], v[1], v[2]), v[0]); },
                   (Inputs{x, w, b}));
  // Before a linear layer, which saves the normalised values only weakly (they are remade from
  // x in backward).
  EXPECT_GRADCHECK(
      [](const Inputs& v) { return linear(layer_norm(v[0], v[1], v[2]), v[3], Tensor()); },
      (Inputs{x, w, b, param({4, 5}, 13)}));
}

TEST(FusedOpsGradcheck, SiluAndGelu) {
  Tensor x = param({3, 7}, 20, -4.0f, 4.0f);
  EXPECT_GRADCHECK([](const Inputs& v) { return silu(v[0]); }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return gelu(v[0]); }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return mul(silu(v[0]), gelu(v[0])); }, (Inputs{x}));
}

TEST(FusedOpsGradcheck, SoftmaxAndLogSoftmaxOnEveryDim) {
  Tensor x = param({2, 3, 4}, 30, -2.0f, 2.0f);
  for (int64_t dim : {0, 1, 2, -1}) {
    EXPECT_GRADCHECK([dim](const Inputs& v) { return softmax(v[0], dim); }, (Inputs{x}));
    EXPECT_GRADCHECK([dim](const Inputs& v) { return log_softmax(v[0], dim); }, (Inputs{x}));
  }
}

TEST(FusedOpsGradcheck, SoftmaxAtPlusMinus1000) {
  Tensor x = from_doubles({1000.0, -1000.0, 999.0, 999.5, -999.0, -1000.0, -1000.5, -999.5}, {2, 4},
                          kCheckDtype)
                 .set_requires_grad(true);
  // (In Float32 a finite-difference step cannot resolve values near 1000.)
  EXPECT_GRADCHECK([](const Inputs& v) { return softmax(v[0], -1); }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return log_softmax(v[0], -1); }, (Inputs{x}));
  const Tensor y = softmax(x, -1), l = log_softmax(x, -1);
  for (double v : to_doubles(y)) EXPECT_TRUE(std::isfinite(v));
  for (double v : to_doubles(l)) EXPECT_TRUE(std::isfinite(v));
  // Float32 too: exact limits, no NaN.
  const Tensor y32 = softmax(from_doubles({1000.0, -1000.0}, {1, 2}, DType::Float32), -1);
  EXPECT_EQ(to_doubles(y32), (std::vector<double>{1.0, 0.0}));
}

TEST(FusedOpsGradcheck, AttentionWithAndWithoutMask) {
  Tensor q = param({2, 2, 3, 4}, 40);
  Tensor k = param({2, 2, 5, 4}, 41);
  Tensor v = param({2, 2, 5, 4}, 42);
  const Tensor mask = from_vector_i64({1, 1, 0, 1, 0, 1, 0, 1, 1, 1}, {2, 5});
  EXPECT_GRADCHECK([](const Inputs& t) { return scaled_dot_product_attention(t[0], t[1], t[2]); },
                   (Inputs{q, k, v}));
  EXPECT_GRADCHECK(
      [mask](const Inputs& t) { return scaled_dot_product_attention(t[0], t[1], t[2], mask); },
      (Inputs{q, k, v}));
  // Self-attention: the same tensor as q, k and v.
  EXPECT_GRADCHECK([](const Inputs& t) { return scaled_dot_product_attention(t[0], t[0], t[0]); },
                   (Inputs{param({1, 2, 4, 3}, 43)}));
}

TEST(FusedOpsGradcheck, AttentionFullyMaskedRowGivesZerosAndZeroGradients) {
  Tensor q = param({2, 1, 3, 4}, 50);
  Tensor k = param({2, 1, 4, 4}, 51);
  Tensor v = param({2, 1, 4, 4}, 52);
  // Batch 1 has no valid key (Float32 mask this time).
  const Tensor mask = from_vector({1, 0, 1, 1, 0, 0, 0, 0}, {2, 4});
  EXPECT_GRADCHECK(
      [mask](const Inputs& t) { return scaled_dot_product_attention(t[0], t[1], t[2], mask); },
      (Inputs{q, k, v}));
  Tensor out = scaled_dot_product_attention(q, k, v, mask);
  sum(out).backward();
  const std::vector<double> o = to_doubles(out), dq = to_doubles(q.grad()),
                            dk = to_doubles(k.grad()), dv = to_doubles(v.grad());
  for (size_t i = 12; i < 24; ++i) {
    EXPECT_EQ(o[i], 0.0);
    EXPECT_EQ(dq[i], 0.0);
  }
  for (size_t i = 16; i < 32; ++i) {
    EXPECT_EQ(dk[i], 0.0);
    EXPECT_EQ(dv[i], 0.0);
  }
  // Keys 1 of batch 0 is masked: no gradient reaches it.
  for (size_t e = 4; e < 8; ++e) EXPECT_EQ(dv[e], 0.0);
}

TEST(FusedOpsGradcheck, AttentionWithAMaskForEachQuery) {
  // q [2, 2, 3, 4], k and v [2, 2, 4, 4]; mask [B, Lq, Lk]: batch 0 causal-like, batch 1 with one
  // query (row 2) that sees no key at all.
  Tensor q = param({2, 2, 3, 4}, 70);
  Tensor k = param({2, 2, 4, 4}, 71);
  Tensor v = param({2, 2, 4, 4}, 72);
  const Tensor mask = from_vector_i64({1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0,  //
                                       0, 1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0},
                                      {2, 3, 4});
  EXPECT_GRADCHECK(
      [mask](const Inputs& t) { return scaled_dot_product_attention(t[0], t[1], t[2], mask); },
      (Inputs{q, k, v}));
  // The same as attending, query by query, to that query's keys with a [B, Lk] mask.
  const Tensor full = scaled_dot_product_attention(q.detach(), k.detach(), v.detach(), mask);
  const std::vector<double> all = to_doubles(full);
  const std::vector<int64_t> m = {1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0,
                                  0, 1, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0};
  for (int64_t i = 0; i < 3; ++i) {
    std::vector<int64_t> row;
    for (int64_t b = 0; b < 2; ++b) {
      for (int64_t j = 0; j < 4; ++j) row.push_back(m[static_cast<size_t>((b * 3 + i) * 4 + j)]);
    }
    const Tensor one = scaled_dot_product_attention(narrow(q.detach(), 2, i, 1), k.detach(),
                                                    v.detach(), from_vector_i64(row, {2, 4}));
    const std::vector<double> got = to_doubles(one);
    for (int64_t b = 0; b < 2; ++b) {
      for (int64_t h = 0; h < 2; ++h) {
        for (int64_t e = 0; e < 4; ++e) {
          EXPECT_NEAR(all[static_cast<size_t>(((b * 2 + h) * 3 + i) * 4 + e)],
                      got[static_cast<size_t>((b * 2 + h) * 4 + e)], 1e-6)
              << "b " << b << " h " << h << " query " << i;
        }
      }
    }
  }
  // The query with no key: zeros, never NaN.
  for (int64_t h = 0; h < 2; ++h) {
    for (int64_t e = 0; e < 4; ++e)
      EXPECT_EQ(all[static_cast<size_t>(((2 + h) * 3 + 2) * 4 + e)], 0.0);
  }
  EXPECT_THROW(scaled_dot_product_attention(q, k, v, from_vector_i64(m, {2, 4, 3})), Error);
}

TEST(FusedOpsGradcheck, GradMaskSkipsInputsThatNeedNoGradient) {
  // Only the weight needs a gradient: the backward must not fail on the undefined ones.
  Tensor x = rand_tensor({2, 4, 3}, 60);
  Tensor w = param({4}, 61);
  EXPECT_GRADCHECK([x](const Inputs& v) { return group_norm(x, 2, v[0], Tensor()); }, (Inputs{w}));
  Tensor q = rand_tensor({1, 1, 3, 2}, 62), v = rand_tensor({1, 1, 4, 2}, 63);
  EXPECT_GRADCHECK([q, v](const Inputs& t) { return scaled_dot_product_attention(q, t[0], v); },
                   (Inputs{param({1, 1, 4, 2}, 64)}));
}

// ---- group_norm_silu and the recomputation of its output ----

TEST(FusedOpsGradcheck, GroupNormSiluAloneAndBeforeAConvolution) {
  Tensor x = param({2, 6, 3, 4}, 100, -2.0f, 3.0f);
  Tensor w = param({6}, 101, 0.5f, 1.5f);
  Tensor b = param({6}, 102);
  Tensor k = param({3, 6, 3, 3}, 103);
  EXPECT_GRADCHECK([](const Inputs& v) { return group_norm_silu(v[0], 3, v[1], v[2]); },
                   (Inputs{x, w, b}));
  EXPECT_GRADCHECK([](const Inputs& v) { return group_norm_silu(v[0], 2, Tensor(), Tensor()); },
                   (Inputs{x}));
  // The convolution saves the output only weakly; it is freed when the lambda returns, so its
  // backward runs on the remade output.
  EXPECT_GRADCHECK(
      [](const Inputs& v) {
        return conv2d(group_norm_silu(v[0], 3, v[1], v[2]), v[3], Tensor(), 1, 1);
      },
      (Inputs{x, w, b, k}));
}

// The fused op is the two ops it replaces, bit for bit, forward and backward, also when a
// convolution's backward works from the remade output (Float32, the fast kernels).
TEST(FusedOps, GroupNormSiluIsSiluOfGroupNormBitForBit) {
  const auto run = [](bool fused) {
    Tensor x = rand_tensor({3, 8, 9, 7}, 110, DType::Float32, -3.0f, 3.0f).set_requires_grad(true);
    Tensor w = rand_tensor({8}, 111, DType::Float32, 0.5f, 1.5f).set_requires_grad(true);
    Tensor b = rand_tensor({8}, 112, DType::Float32).set_requires_grad(true);
    Tensor k = rand_tensor({5, 8, 3, 3}, 113, DType::Float32).set_requires_grad(true);
    Tensor y = fused ? group_norm_silu(x, 4, w, b) : silu(group_norm(x, 4, w, b));
    const std::vector<float> values = y.to_vector();
    Tensor out = conv2d(y, k, Tensor(), 1, 1);
    y = Tensor();  // the convolution's saved input is now the only trace of it
    mul(out, out).sum().backward();
    return std::vector<std::vector<float>>{values, x.grad().to_vector(), w.grad().to_vector(),
                                           b.grad().to_vector(), k.grad().to_vector()};
  };
  const auto fused = run(true), composed = run(false);
  const char* names[] = {"output", "x.grad", "weight.grad", "bias.grad", "conv weight.grad"};
  for (size_t i = 0; i < fused.size(); ++i) {
    EXPECT_EQ(fused[i], composed[i]) << names[i] << " differs";
  }
}

TEST(FusedOps, AConvolutionDoesNotKeepTheGroupNormSiluOutputAlive) {
  Tensor x = rand_tensor({2, 4, 5, 5}, 120, DType::Float32).set_requires_grad(true);
  Tensor k = rand_tensor({2, 4, 3, 3}, 121, DType::Float32);
  Tensor y = group_norm_silu(x, 2, Tensor(), Tensor());
  const std::weak_ptr<Storage> storage = y.impl()->storage;
  Tensor loss = conv2d(y, k, Tensor(), 1, 1).sum();
  y = Tensor();
  EXPECT_TRUE(storage.expired()) << "the graph still holds the output";
  loss.backward();
  EXPECT_TRUE(x.grad().defined());

  // Without a graph nothing is attached: the output is ordinary storage.
  NoGradGuard no_grad;
  EXPECT_EQ(group_norm_silu(x, 2, Tensor(), Tensor()).impl()->storage->recompute(), nullptr);
}

TEST(FusedOps, AWriteIntoARecomputableOutputIsCaughtAliveOrFreed) {
  Tensor x = rand_tensor({2, 4, 5, 5}, 130, DType::Float32).set_requires_grad(true);
  // The kernel needs a gradient, so the convolution's backward reads its saved input.
  Tensor k = rand_tensor({2, 4, 3, 3}, 131, DType::Float32).set_requires_grad(true);
  {  // written while alive, then backward
    Tensor y = group_norm_silu(x, 2, Tensor(), Tensor());
    Tensor loss = conv2d(y, k, Tensor(), 1, 1).sum();
    y.data()[0] = 5.0f;
    expect_error([&] { loss.backward(); }, "conv2d: a tensor saved for backward was modified");
  }
  {  // written, then freed before backward: the remade values would not be the ones used
    Tensor y = group_norm_silu(x, 2, Tensor(), Tensor());
    Tensor loss = conv2d(y, k, Tensor(), 1, 1).sum();
    y.data()[0] = 5.0f;
    y = Tensor();
    expect_error([&] { loss.backward(); }, "conv2d: a tensor saved for backward was modified");
  }
}

// ---- Float32 (fast kernels) against Float64 (reference kernels) ----

TEST(FusedOps, Float32MatchesFloat64) {
  const Tensor x64 = rand_tensor({4, 8, 7, 5}, 70, DType::Float64, -3.0f, 3.0f);
  const Tensor x32 = from_doubles(to_doubles(x64), x64.shape(), DType::Float32);
  const Tensor w64 = rand_tensor({8}, 71), b64 = rand_tensor({8}, 72);
  const Tensor w32 = from_doubles(to_doubles(w64), {8}, DType::Float32);
  const Tensor b32 = from_doubles(to_doubles(b64), {8}, DType::Float32);
  EXPECT_TRUE(all_close(group_norm(x32, 4, w32, b32), to_doubles(group_norm(x64, 4, w64, b64)),
                        1e-5, 1e-5));
  const Tensor lw64 = rand_tensor({5}, 73),
               lw32 = from_doubles(to_doubles(lw64), {5}, DType::Float32);
  EXPECT_TRUE(all_close(layer_norm(x32, lw32, Tensor()),
                        to_doubles(layer_norm(x64, lw64, Tensor())), 1e-5, 1e-5));
  EXPECT_TRUE(all_close(silu(x32), to_doubles(silu(x64)), 1e-6, 1e-7));
  EXPECT_TRUE(all_close(gelu(x32), to_doubles(gelu(x64)), 1e-6, 1e-7));
  EXPECT_TRUE(all_close(softmax(x32, 1), to_doubles(softmax(x64, 1)), 1e-5, 1e-8));
  EXPECT_TRUE(all_close(log_softmax(x32, -1), to_doubles(log_softmax(x64, -1)), 1e-6, 1e-6));
  EXPECT_TRUE(all_close(scaled_dot_product_attention(x32, x32, x32),
                        to_doubles(scaled_dot_product_attention(x64, x64, x64)), 1e-5, 1e-6));
}

// ---- dropout ----

TEST(FusedOps, DropoutIsTheIdentityInEvalAndScalesKeptElementsInTraining) {
  Generator gen(5);
  const Tensor x = rand_tensor({1000}, 80, DType::Float32, 1.0f, 2.0f).set_requires_grad(true);
  const Tensor same = dropout(x, 0.3, gen, /*training=*/false);
  EXPECT_EQ(to_doubles(same), to_doubles(x));
  Tensor y = dropout(x, 0.25, gen, true);
  const std::vector<double> xv = to_doubles(x), yv = to_doubles(y);
  int64_t dropped = 0;
  for (size_t i = 0; i < xv.size(); ++i) {
    if (yv[i] == 0.0) {
      ++dropped;
    } else {
      EXPECT_NEAR(yv[i], xv[i] / 0.75, 1e-6);
    }
  }
  EXPECT_GT(dropped, 200);
  EXPECT_LT(dropped, 300);
  // The gradient is the same mask: zero where dropped, 1 / (1 - p) where kept.
  sum(y).backward();
  const std::vector<double> g = to_doubles(x.grad());
  for (size_t i = 0; i < xv.size(); ++i) EXPECT_NEAR(g[i], yv[i] == 0.0 ? 0.0 : 1.0 / 0.75, 1e-6);
  // The same seed gives the same mask.
  Generator a(9), b(9);
  EXPECT_EQ(to_doubles(dropout(x, 0.5, a, true)), to_doubles(dropout(x, 0.5, b, true)));
  // Float64 gradcheck with a fixed mask (a fresh generator with the same seed per call).
  EXPECT_GRADCHECK(
      [](const Inputs& v) {
        Generator fixed(3);
        return dropout(v[0], 0.4, fixed, true);
      },
      (Inputs{param({4, 5}, 81)}));
}

// ---- errors ----

TEST(FusedOps, ErrorsNameTheOpAndTheShapes) {
  const Tensor x = rand_tensor({2, 6, 3, 3}, 90, DType::Float32);
  expect_error([&] { group_norm(x, 4, Tensor(), Tensor()); },
               "group_norm: input [2, 6, 3, 3] has 6 channels, which 4 groups do not divide");
  expect_error([&] { group_norm(x, 3, rand_tensor({5}, 91, DType::Float32), Tensor()); },
               "group_norm: weight must have shape [6] for input [2, 6, 3, 3], got [5]");
  expect_error([&] { group_norm_silu(x, 4, Tensor(), Tensor()); },
               "group_norm_silu: input [2, 6, 3, 3] has 6 channels, which 4 groups do not divide");
  expect_error([&] { group_norm_silu(x, 3, Tensor(), rand_tensor({7}, 93, DType::Float32)); },
               "group_norm_silu: bias must have shape [6] for input [2, 6, 3, 3], got [7]");
  expect_error([&] { layer_norm(x, Tensor(), rand_tensor({4}, 92, DType::Float32)); },
               "layer_norm: bias must have shape [3] for input [2, 6, 3, 3], got [4]");
  expect_error([&] { softmax(x, 4); }, "softmax: dim 4 is out of range for input [2, 6, 3, 3]");
  expect_error([&] { log_softmax(x, -5); },
               "log_softmax: dim -5 is out of range for input [2, 6, 3, 3]");
  Generator gen;
  expect_error([&] { dropout(x, 1.5, gen, true); },
               "dropout: probability has to be between 0 and 1, but got 1.5");
  const Tensor q = rand_tensor({2, 2, 3, 4}, 93, DType::Float32);
  const Tensor k = rand_tensor({2, 2, 5, 4}, 94, DType::Float32);
  expect_error(
      [&] {
        scaled_dot_product_attention(q, k, rand_tensor({2, 2, 5, 3}, 95));
      },
      "scaled_dot_product_attention: q [2, 2, 3, 4], k [2, 2, 5, 4] and v [2, 2, 5, 3] "
      "do not match");
  expect_error(
      [&] {
        scaled_dot_product_attention(q, k, k, from_vector_i64({1, 1, 1}, {1, 3}));
      },
      "scaled_dot_product_attention: key_mask must be [2, 5] or [2, 3, 5] for q [2, 2, 3, 4] and "
      "k [2, 2, 5, 4], got [1, 3]");
  expect_error(
      [&] {
        scaled_dot_product_attention(rand_tensor({2, 3, 4}, 96), k, k);
      },
      "scaled_dot_product_attention: expected q [B, h, Lq, d]");
  expect_error(
      [&] {
        silu(from_vector_i64({1, 2}, {2}));
      },
      "silu: the input must be Float32 or Float64, got Int64");
}

// ---- layers ----

TEST(NormAttentionLayers, NamesInitialisationAndPrint) {
  nn::GroupNorm gn(4, 8);
  EXPECT_EQ(gn.to_string(), "GroupNorm(4, 8, eps=1e-05, affine=True)");
  EXPECT_EQ(to_doubles(gn.weight), std::vector<double>(8, 1.0));
  EXPECT_EQ(to_doubles(gn.bias), std::vector<double>(8, 0.0));
  nn::LayerNorm ln(16);
  EXPECT_EQ(ln.to_string(), "LayerNorm((16,), eps=1e-05, elementwise_affine=True)");
  EXPECT_EQ(nn::SiLU().to_string(), "SiLU()");
  EXPECT_EQ(nn::GELU().to_string(), "GELU(approximate='none')");
  EXPECT_EQ(nn::Dropout(0.1).to_string(), "Dropout(p=0.1, inplace=False)");
  EXPECT_EQ(nn::Identity().to_string(), "Identity()");
  nn::Attention attn(32, 16, 4);
  std::vector<std::string> names;
  for (const auto& [name, t] : attn.named_parameters()) names.push_back(name);
  EXPECT_EQ(names,
            (std::vector<std::string>{"to_q.weight", "to_q.bias", "to_k.weight", "to_k.bias",
                                      "to_v.weight", "to_v.bias", "to_out.weight", "to_out.bias"}));
  EXPECT_EQ(attn.to_k->weight.shape(), (Shape{32, 16}));
  EXPECT_THAT(attn.to_string(),
              HasSubstr("(to_k): Linear(in_features=16, out_features=32, bias=True)"));
}

TEST(NormAttentionLayers, ConstructorAndForwardErrors) {
  expect_error([] { nn::GroupNorm(3, 8); },
               "GroupNorm: num_channels 8 is not divisible by num_groups 3");
  expect_error([] { nn::Attention(30, 8, 4); },
               "Attention: query_dim 30 is not divisible by heads 4");
  nn::Attention attn(8, 6, 2);
  expect_error(
      [&] {
        attn(rand_tensor({2, 3, 8}, 1, DType::Float32), rand_tensor({2, 4, 5}, 2, DType::Float32));
      },
      "Attention: expected context of shape [2, Lc, 6] for x [2, 3, 8], got [2, 4, 5]");
  nn::GroupNorm gn(2, 4);
  expect_error(
      [&] {
        gn(rand_tensor({2, 3, 5}, 3, DType::Float32));
      },
      "GroupNorm: expected input of shape [B, 4, *], got [2, 3, 5]");
}

TEST(NormAttentionLayers, DropoutFollowsTrainAndEval) {
  Generator gen(1);
  nn::Dropout drop(0.5, &gen);
  const Tensor x = rand_tensor({64}, 4, DType::Float32, 1.0f, 2.0f);
  const std::vector<double> train_out = to_doubles(drop(x));
  EXPECT_NE(train_out, to_doubles(x));
  drop.eval();
  EXPECT_EQ(to_doubles(drop(x)), to_doubles(x));
}

TEST(NormAttentionLayers, AttentionGradcheckInFloat64) {
  // The layer's composition (projections, head split, attention) in Float64.
  const Tensor x = param({2, 3, 4}, 5), context = param({2, 2, 3}, 6);
  const Tensor mask = from_vector_i64({1, 0, 1, 1}, {2, 2});
  auto heads = [](const Tensor& t, int64_t length) {
    return permute(reshape(t, {2, length, 2, 2}), {0, 2, 1, 3});
  };
  EXPECT_GRADCHECK(
      [&](const Inputs& v) {
        const Tensor q = heads(v[0], 3), k = heads(linear(v[1], v[2]), 2),
                     val = heads(linear(v[1], v[3]), 2);
        return scaled_dot_product_attention(q, k, val, mask);
      },
      (Inputs{x, context, param({4, 3}, 7), param({4, 3}, 8)}));
}

// ---- PyTorch goldens ----

const json& golden() {
  static const json data = [] {
    std::ifstream file(INK_TEST_DATA_DIR "/layers_golden.json");
    if (!file) throw std::runtime_error("cannot open " INK_TEST_DATA_DIR "/layers_golden.json");
    return json::parse(file);
  }();
  return data;
}

Tensor golden_tensor(const json& j, DType dtype) {
  const Shape shape = j.at("shape").get<Shape>();
  if (j.value("dtype", "") == "int64") {
    return from_vector_i64(j.at("data").get<std::vector<int64_t>>(), shape);
  }
  return from_doubles(j.at("data").get<std::vector<double>>(), shape, dtype);
}

std::vector<double> golden_values(const json& j) {
  return j.at("data").get<std::vector<double>>();
}

// Runs one golden case in `dtype`: the inputs as leaves, fn(inputs, params) as the output,
// backward with the case's grad_output; checks the output and every gradient.
void check_golden(const std::string& name, DType dtype,
                  const std::function<Tensor(std::map<std::string, Tensor>&)>& fn) {
  SCOPED_TRACE(name + (dtype == DType::Float32 ? " (Float32)" : " (Float64)"));
  const json& c = golden().at("cases").at(name);
  std::map<std::string, Tensor> tensors;
  for (const auto& [key, value] : c.at("inputs").items()) {
    Tensor t = golden_tensor(value, dtype);
    if (t.dtype() != DType::Int64) t.set_requires_grad(true);
    tensors[key] = t;
  }
  const json params = c.value("params", json::object());  // a named copy: items() refers to it
  for (const auto& [key, value] : params.items()) {
    tensors[key] = golden_tensor(value, dtype).set_requires_grad(true);
  }
  const bool exact = dtype != DType::Float32;
  const double rtol = exact ? 1e-10 : 2e-5;
  const double atol = exact ? 1e-12 : 2e-6;
  Tensor out = fn(tensors);
  EXPECT_TRUE(all_close(out, golden_values(c.at("output")), rtol, atol)) << "output";
  out.backward(golden_tensor(c.at("grad_output"), dtype));
  for (const auto& [key, value] : c.at("grads").items()) {
    EXPECT_TRUE(all_close(tensors.at(key).grad(), golden_values(value), rtol, 10 * atol))
        << "gradient of " << key;
  }
}

class Golden : public ::testing::TestWithParam<DType> {};

TEST_P(Golden, NormsAndActivations) {
  const DType dt = GetParam();
  using T = std::map<std::string, Tensor>;
  check_golden("group_norm", dt,
               [](T& t) { return group_norm(t["x"], 3, t["weight"], t["bias"]); });
  check_golden("group_norm_rank3", dt,
               [](T& t) { return group_norm(t["x"], 2, t["weight"], t["bias"]); });
  check_golden("layer_norm", dt, [](T& t) { return layer_norm(t["x"], t["weight"], t["bias"]); });
  check_golden("layer_norm_no_affine", dt,
               [](T& t) { return layer_norm(t["x"], Tensor(), Tensor()); });
  check_golden("silu", dt, [](T& t) { return silu(t["x"]); });
  check_golden("gelu", dt, [](T& t) { return gelu(t["x"]); });
  check_golden("softmax_lastdim", dt, [](T& t) { return softmax(t["x"], -1); });
  check_golden("softmax_dim1", dt, [](T& t) { return softmax(t["x"], 1); });
  check_golden("log_softmax_lastdim", dt, [](T& t) { return log_softmax(t["x"], -1); });
  check_golden("log_softmax_dim0", dt, [](T& t) { return log_softmax(t["x"], 0); });
}

TEST_P(Golden, ScaledDotProductAttention) {
  const DType dt = GetParam();
  using T = std::map<std::string, Tensor>;
  for (const char* name : {"sdpa_masked", "sdpa_all_masked_row", "sdpa_query_mask"}) {
    check_golden(name, dt, [](T& t) {
      return scaled_dot_product_attention(t["q"], t["k"], t["v"], t["key_mask"]);
    });
  }
  check_golden("sdpa_no_mask", dt,
               [](T& t) { return scaled_dot_product_attention(t["q"], t["k"], t["v"]); });
}

TEST_P(Golden, AttentionLayer) {
  const DType dt = GetParam();
  if (dt != DType::Float32) GTEST_SKIP() << "the layer's parameters are Float32";
  (void)dt;
  using T = std::map<std::string, Tensor>;
  for (const char* name : {"attention_cross", "attention_self"}) {
    const json& c = golden().at("cases").at(name);
    const json& attrs = c.at("attrs");
    nn::Attention attn(attrs.at("query_dim").get<int64_t>(), attrs.at("context_dim").get<int64_t>(),
                       attrs.at("heads").get<int64_t>());
    std::vector<std::string> names;
    for (const auto& [key, value] : attn.state_dict()) names.push_back(key);
    EXPECT_EQ(names, c.at("state_dict").get<std::vector<std::string>>());
    check_golden(name, dt, [&attn](T& t) {
      // Load the golden parameters into the layer, then check the gradients of the layer's own
      // parameters (the map's entries become those handles).
      NamedTensors state;
      for (const auto& [key, value] : attn.named_parameters()) state.emplace_back(key, t.at(key));
      attn.load_state_dict(state);
      for (const auto& [key, value] : attn.named_parameters()) t[key] = value;
      return attn(t["x"], t.count("context") ? t["context"] : Tensor(),
                  t.count("key_mask") ? t["key_mask"] : Tensor());
    });
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, Golden, ::testing::Values(DType::Float64, DType::Float32),
                         [](const auto& dtype_info) {  // gtest's own parameter is `info`
                           return std::string(dtype_info.param == DType::Float64 ? "Float64"
                                                                                 : "Float32");
                         });

}  // namespace
}  // namespace ink
