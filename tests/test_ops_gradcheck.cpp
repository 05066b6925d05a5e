// A finite-difference gradient check for every differentiable op: with broadcasting on both
// sides, inputs used twice, scalars, and inputs kept away from kinks (ReLU at 0, clamp bounds).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tensor/inkgrad.h"

namespace ink {
namespace {

using ::testing::HasSubstr;
using Inputs = std::vector<Tensor>;

Tensor param(const Shape& shape, uint64_t seed, float low = -1.0f, float high = 1.0f) {
  Generator gen(seed);
  return uniform(shape, low, high, &gen).set_requires_grad(true);
}

// Values in [0.5, 1.5] or [-1.5, -0.5], never near 0 (for relu, div, log of |x|, ...).
Tensor away_from_zero(const Shape& shape, uint64_t seed) {
  Generator gen(seed);
  Tensor t = uniform(shape, 0.5f, 1.5f, &gen);
  float* p = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (gen.uniform() < 0.5f) p[i] = -p[i];
  }
  return t.set_requires_grad(true);
}

#define EXPECT_GRADCHECK(f, inputs)                 \
  do {                                              \
    const GradcheckResult r = gradcheck(f, inputs); \
    EXPECT_TRUE(r.ok) << r.message;                 \
  } while (0)

TEST(Gradcheck, AddSubMulDivBroadcastOnBothSides) {
  // [3, 1] op [4] -> [3, 4]: each side is broadcast along a different dim.
  Tensor a = param({3, 1}, 1);
  Tensor b = away_from_zero({4}, 2);
  EXPECT_GRADCHECK([](const Inputs& x) { return add(x[0], x[1]); }, (Inputs{a, b}));
  EXPECT_GRADCHECK([](const Inputs& x) { return sub(x[0], x[1]); }, (Inputs{a, b}));
  EXPECT_GRADCHECK([](const Inputs& x) { return mul(x[0], x[1]); }, (Inputs{a, b}));
  EXPECT_GRADCHECK([](const Inputs& x) { return div(x[0], x[1]); }, (Inputs{a, b}));
  // Rank broadcast: [2, 3, 4] with [4] and with [3, 1].
  Tensor c = param({2, 3, 4}, 3);
  EXPECT_GRADCHECK([](const Inputs& x) { return mul(x[0], x[1]); }, (Inputs{c, b}));
  EXPECT_GRADCHECK([](const Inputs& x) { return div(x[1], x[0]); },
                   (Inputs{away_from_zero({3, 1}, 4), c}));
}

TEST(Gradcheck, InputUsedTwice) {
  Tensor x = param({5}, 5);
  EXPECT_GRADCHECK([](const Inputs& v) { return v[0] * v[0]; }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return (v[0] + v[0]) * sigmoid(v[0]); }, (Inputs{x}));
}

TEST(Gradcheck, ScalarOperands) {
  Tensor x = away_from_zero({2, 3}, 6);
  EXPECT_GRADCHECK([](const Inputs& v) { return v[0] + 2.0f; }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return v[0] - 2.0f; }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return v[0] * 3.0f; }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return v[0] / 4.0f; }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return 1.0f - v[0]; }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return 2.0f / v[0]; }, (Inputs{x}));
  // A rank-0 tensor broadcast against a matrix.
  Tensor s = param({}, 7);
  EXPECT_GRADCHECK([](const Inputs& v) { return v[0] * v[1]; }, (Inputs{x, s}));
}

TEST(Gradcheck, UnaryFunctions) {
  Tensor x = param({3, 4}, 8);
  Tensor positive = param({3, 4}, 9, 0.5f, 2.0f);
  Tensor kinked = away_from_zero({3, 4}, 10);
  EXPECT_GRADCHECK([](const Inputs& v) { return neg(v[0]); }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return exp(v[0]); }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return log(v[0]); }, (Inputs{positive}));
  EXPECT_GRADCHECK([](const Inputs& v) { return sqrt(v[0]); }, (Inputs{positive}));
  EXPECT_GRADCHECK([](const Inputs& v) { return pow(v[0], 3.0f); }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return pow(v[0], -1.5f); }, (Inputs{positive}));
  EXPECT_GRADCHECK([](const Inputs& v) { return relu(v[0]); }, (Inputs{kinked}));
  EXPECT_GRADCHECK([](const Inputs& v) { return sigmoid(v[0] * 3.0f); }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return tanh(v[0]); }, (Inputs{x}));
}

TEST(Gradcheck, ClampAwayFromTheBounds) {
  Tensor x = from_vector({-2.0f, -0.3f, 0.2f, 0.4f, 1.7f, 3.0f}, {2, 3}).set_requires_grad(true);
  EXPECT_GRADCHECK([](const Inputs& v) { return clamp(v[0], -1.0f, 1.0f); }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return clamp(v[0], 0.0f, std::nullopt); }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return clamp(v[0], std::nullopt, 0.3f); }, (Inputs{x}));
}

TEST(Gradcheck, Matmul) {
  EXPECT_GRADCHECK([](const Inputs& v) { return matmul(v[0], v[1]); },
                   (Inputs{param({3, 4}, 11), param({4, 5}, 12)}));
  EXPECT_GRADCHECK([](const Inputs& v) { return matmul(v[0], v[1]); },
                   (Inputs{param({2, 3, 4}, 13), param({2, 4, 2}, 14)}));
  EXPECT_GRADCHECK([](const Inputs& v) { return matmul(v[0], v[1]); },
                   (Inputs{param({2, 3, 4}, 15), param({4, 2}, 16)}));
  Tensor a = param({3, 3}, 17);
  EXPECT_GRADCHECK([](const Inputs& v) { return matmul(v[0], v[0]); }, (Inputs{a}));
}

TEST(Gradcheck, Linear) {
  EXPECT_GRADCHECK([](const Inputs& v) { return linear(v[0], v[1], v[2]); },
                   (Inputs{param({4, 3}, 18), param({5, 3}, 19), param({5}, 20)}));
  EXPECT_GRADCHECK([](const Inputs& v) { return linear(v[0], v[1]); },
                   (Inputs{param({2, 2, 3}, 21), param({4, 3}, 22)}));
}

TEST(Gradcheck, ShapeOps) {
  Tensor x = param({2, 3, 4}, 23);
  EXPECT_GRADCHECK([](const Inputs& v) { return reshape(v[0], {4, -1}); }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return view(v[0], {6, 4}) * 2.0f; }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return flatten(v[0], 1); }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return transpose(v[0], 0, 2); }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return permute(v[0], {1, 2, 0}); }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return unsqueeze(v[0], 1); }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return squeeze(unsqueeze(v[0], -1), -1); }, (Inputs{x}));
  EXPECT_GRADCHECK(
      [](const Inputs& v) {
        return expand(v[0], {3, 2, 4});
      },
      (Inputs{param({2, 1}, 24)}));
  EXPECT_GRADCHECK([](const Inputs& v) { return v[0].clone() * v[0]; }, (Inputs{param({3}, 25)}));
}

TEST(Gradcheck, Cat) {
  Tensor a = param({2, 3}, 26);
  Tensor b = param({2, 1}, 27);
  EXPECT_GRADCHECK([](const Inputs& v) { return cat({v[0], v[1]}, 1); }, (Inputs{a, b}));
  EXPECT_GRADCHECK([](const Inputs& v) { return cat({v[0], v[0]}, 0); }, (Inputs{a}));
}

TEST(Gradcheck, Reductions) {
  Tensor x = param({2, 3, 4}, 28);
  EXPECT_GRADCHECK([](const Inputs& v) { return sum(v[0]); }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return sum(v[0], {1}); }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return sum(v[0], {0, 2}, true); }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return mean(v[0]); }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return mean(v[0], {-1}, true); }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return sum_to(v[0], {3, 1}); }, (Inputs{x}));
}

TEST(Gradcheck, MaxAlongADimWithDistinctValues) {
  // Distinct values keep the argmax away from ties, where max is not differentiable.
  Tensor x =
      from_vector({0.1f, 0.9f, 0.3f, 0.7f, 0.2f, 0.8f, 0.5f, 0.4f}, {2, 4}).set_requires_grad(true);
  EXPECT_GRADCHECK([](const Inputs& v) { return max(v[0], 1).values; }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return max(v[0], 0, true).values; }, (Inputs{x}));
}

TEST(Gradcheck, Embedding) {
  Tensor table = param({5, 3}, 29);
  Tensor ids = from_vector_i64({4, 1, 4, 0, 2, 4}, {2, 3});
  EXPECT_GRADCHECK([ids](const Inputs& v) { return embedding(v[0], ids); }, (Inputs{table}));
  // With a padding_idx the forward still reads the padding row (as PyTorch does) but its
  // gradient is defined to be zero, so that case is tested in test_autograd instead.
}

TEST(Gradcheck, ACompositeMlp) {
  Tensor x = param({4, 3}, 30);
  Tensor w1 = param({5, 3}, 31);
  Tensor b1 = param({5}, 32);
  Tensor w2 = param({2, 5}, 33);
  EXPECT_GRADCHECK(
      [](const Inputs& v) {
        Tensor h = tanh(linear(v[0], v[1], v[2]));
        return sigmoid(linear(h, v[3])).mean({0});
      },
      (Inputs{x, w1, b1, w2}));
}

TEST(Gradcheck, ReportsTheFailingInputAndElement) {
  // An op with a deliberately wrong backward (factor 2 instead of 3).
  auto wrong = [](const Inputs& v) {
    Tensor out = mul(v[0].detach(), 3.0f);
    return record_op(out, "wrong", {v[0]}, [](const Tensor& g, const GradMask&) {
      return std::vector<Tensor>{mul(g, 2.0f)};
    });
  };
  const GradcheckResult r = gradcheck(wrong, {param({3}, 34)});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.input_index, 0);
  EXPECT_EQ(r.element_index, 0);
  EXPECT_THAT(r.message, HasSubstr("input 0 (shape [3]), element 0"));
  EXPECT_NEAR(r.numeric / r.analytic, 1.5, 0.01);  // numeric 3, analytic 2
}

TEST(Gradcheck, RefusesAllZeroGradients) {
  // relu of negative inputs has a true gradient of zero: the check must not pass vacuously.
  Tensor x = param({4}, 35, -2.0f, -1.0f);
  const GradcheckResult r = gradcheck([](const Inputs& v) { return relu(v[0]); }, {x});
  EXPECT_FALSE(r.ok);
  EXPECT_THAT(r.message, HasSubstr("every analytic gradient is exactly zero"));
}

TEST(Gradcheck, RestoresInputsAndTheirGradients) {
  Tensor x = param({3}, 36);
  const auto before = x.to_vector();
  ASSERT_TRUE(gradcheck([](const Inputs& v) { return exp(v[0]); }, {x}).ok);
  EXPECT_EQ(x.to_vector(), before);
  EXPECT_FALSE(x.grad().defined());
}

}  // namespace
}  // namespace ink
