// A finite-difference gradient check for every differentiable op: with broadcasting on both
// sides, inputs used twice, scalars, and inputs kept away from kinks (ReLU at 0, clamp bounds).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tensor/inkgrad.h"
#include "tests/test_util.h"

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

// ---- gradcheck in double precision (issue 9) ----

// y = 3x with a backward that is off by `relative_error`.
GradcheckResult check_scaled_backward(double relative_error) {
  auto op = [relative_error](const Inputs& v) {
    Tensor out = mul(v[0].detach(), 3.0f);
    return record_op(out, "off_by_a_little", {v[0]},
                     [relative_error](const Tensor& g, const GradMask&) {
                       return std::vector<Tensor>{mul(g, 3.0 * (1.0 + relative_error))};
                     });
  };
  return gradcheck(op, {param({3, 4}, 40)});
}

TEST(GradcheckDouble, CatchesABackwardThatIsHalfAPercentOff) {
  const GradcheckResult r = check_scaled_backward(0.005);
  EXPECT_FALSE(r.ok);
  EXPECT_THAT(r.message, HasSubstr("relative error 0.005"));
  EXPECT_THAT(r.message, HasSubstr("in Float64"));
}

TEST(GradcheckDouble, CatchesATenthOfThatTooAndPassesTheExactBackward) {
  // The margin: 0.05% is still ten times the relative tolerance (1e-4) ...
  EXPECT_FALSE(check_scaled_backward(0.0005).ok);
  // ... while the exact backward passes.
  EXPECT_TRUE(check_scaled_backward(0.0).ok) << check_scaled_backward(0.0).message;
}

TEST(GradcheckDouble, RunsTheOpsInFloat64) {
  DType seen = DType::Int64;
  Tensor x = param({2, 3}, 41);
  ASSERT_TRUE(gradcheck(
                  [&seen](const Inputs& v) {
                    seen = v[0].dtype();
                    return tanh(matmul(v[0], v[0], false, true));
                  },
                  {x})
                  .ok);
  EXPECT_EQ(seen, DType::Float64);
  EXPECT_EQ(x.dtype(), DType::Float32);  // the caller's tensor is untouched
}

TEST(GradcheckDouble, TheSinglePrecisionCheckIsStillAvailable) {
  GradcheckOptions single;
  single.dtype = DType::Float32;
  single.eps = 1e-3;
  single.atol = 1e-3;
  single.rtol = 1e-2;
  DType seen = DType::Int64;
  EXPECT_TRUE(gradcheck(
                  [&seen](const Inputs& v) {
                    seen = v[0].dtype();
                    return sigmoid(v[0]);
                  },
                  {param({4}, 42)}, single)
                  .ok);
  EXPECT_EQ(seen, DType::Float32);
}

TEST(GradcheckDouble, HasNoSilentFloat32Fallback) {
  // conv2d does not promote types, so a captured Float32 weight next to the Float64 working copy
  // of the input is an error that names both dtypes, not a quiet retry in single precision.
  const Tensor w = param({2, 1, 3, 3}, 44).detach();
  ::testing::internal::CaptureStderr();
  testing_util::expect_error(
      [&] {
        (void)gradcheck([w](const Inputs& v) { return conv2d(v[0], w, Tensor(), 1, 1); },
                        {param({1, 1, 4, 4}, 45)});
      },
      "conv2d: dtypes differ: Float64 [1, 1, 4, 4] and Float32 [2, 1, 3, 3]");
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  // Given as an input (here one that needs no gradient), the weight is converted too and the
  // check runs in double.
  EXPECT_GRADCHECK([](const Inputs& v) { return conv2d(v[0], v[1], Tensor(), 1, 1); },
                   (Inputs{param({1, 1, 4, 4}, 45), w}));
}

TEST(Float64, ConversionIsDifferentiableAndPromotionConvertsGradientsBack) {
  Tensor x = param({3}, 43);
  Tensor y = x.to(DType::Float64);
  EXPECT_EQ(y.dtype(), DType::Float64);
  EXPECT_EQ(y.to_vector(), x.to_vector());
  // Float32 * Float64 computes in Float64; each input's gradient comes back in its own dtype.
  Tensor w = from_vector({1, 2, 3}, {3}).to(DType::Float64).set_requires_grad(true);
  Tensor z = sum(mul(x, w));
  EXPECT_EQ(z.dtype(), DType::Float64);
  z.backward();
  EXPECT_EQ(x.grad().dtype(), DType::Float32);
  EXPECT_EQ(w.grad().dtype(), DType::Float64);
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(w.grad().to_vector(), x.to_vector());
}

TEST(Float64, OpsGiveTheSameValuesAsFloat32) {
  Tensor a = param({2, 3}, 44), b = param({3, 2}, 45);
  Tensor a64 = a.to(DType::Float64), b64 = b.to(DType::Float64);
  auto close = [](const Tensor& x64, const Tensor& x32) {
    return allclose(x64.to(DType::Float32), x32, 1e-5f, 1e-6f);
  };
  EXPECT_TRUE(close(matmul(a64, b64), matmul(a, b)));
  EXPECT_TRUE(close(linear(a64, b64.transpose(0, 1)), linear(a, b.transpose(0, 1))));
  EXPECT_TRUE(close(sum(exp(a64), {1}), sum(exp(a), {1})));
  EXPECT_TRUE(close(cat({a64, a64}, 0), cat({a, a}, 0)));
  EXPECT_TRUE(close(max(a64, 1).values, max(a, 1).values));
  EXPECT_TRUE(close(mse_loss(a64, a64 * 2.0f), mse_loss(a, a * 2.0f)));
  EXPECT_THAT(testing_util::error_of([&] { matmul(a64, b); }), HasSubstr("matmul: dtypes differ"));
}

// ---- primitives for phase 2 (issue 9) ----

TEST(Gradcheck, SinAndCos) {
  Tensor x = param({3, 4}, 50, -3.0f, 3.0f);
  EXPECT_GRADCHECK([](const Inputs& v) { return sin(v[0]); }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return cos(v[0]); }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return sin(v[0]) * cos(v[0]); }, (Inputs{x}));
}

TEST(Gradcheck, NarrowSplitAndChunk) {
  Tensor x = param({2, 5, 3}, 51);
  EXPECT_GRADCHECK([](const Inputs& v) { return narrow(v[0], 1, 1, 3); }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return narrow(v[0], -1, -2, 2); }, (Inputs{x}));
  EXPECT_GRADCHECK([](const Inputs& v) { return narrow(v[0], 0, 1, 1); }, (Inputs{x}));
  // Pieces used together (their gradients meet in x) and a piece used twice.
  EXPECT_GRADCHECK(
      [](const Inputs& v) {
        std::vector<Tensor> p = split(v[0], 2, 1);  // sizes 2, 2, 1
        return cat({p[0] * p[1], p[2] * p[2]}, 1);
      },
      (Inputs{x}));
  EXPECT_GRADCHECK(
      [](const Inputs& v) {
        std::vector<Tensor> p = split(v[0], {1, 4}, 1);
        return sum(p[0]) * p[1];
      },
      (Inputs{x}));
  EXPECT_GRADCHECK(
      [](const Inputs& v) {
        std::vector<Tensor> q = chunk(v[0], 3, -1);  // three [2, 5, 1]
        return q[0] * sigmoid(q[1]) + q[2];
      },
      (Inputs{x}));
}

TEST(Gradcheck, MatmulEveryLayout) {
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      auto mm = [ta, tb](const Inputs& v) { return matmul(v[0], v[1], ta, tb); };
      auto dims = [](bool t, int64_t rows, int64_t cols) {
        return t ? Shape{cols, rows} : Shape{rows, cols};
      };
      auto batched = [&](Shape lead, bool t, int64_t rows, int64_t cols) {
        Shape s = dims(t, rows, cols);
        lead.insert(lead.end(), s.begin(), s.end());
        return lead;
      };
      SCOPED_TRACE(::testing::Message() << "transpose_a=" << ta << " transpose_b=" << tb);
      // 2-D, batched 3-D and 4-D, and a 2-D operand broadcast on either side.
      EXPECT_GRADCHECK(mm, (Inputs{param(dims(ta, 3, 4), 52), param(dims(tb, 4, 2), 53)}));
      EXPECT_GRADCHECK(
          mm, (Inputs{param(batched({2}, ta, 3, 4), 54), param(batched({2}, tb, 4, 2), 55)}));
      EXPECT_GRADCHECK(
          mm, (Inputs{param(batched({2, 2}, ta, 2, 3), 56), param(batched({2, 2}, tb, 3, 2), 57)}));
      EXPECT_GRADCHECK(mm, (Inputs{param(batched({3}, ta, 2, 4), 58), param(dims(tb, 4, 3), 59)}));
      EXPECT_GRADCHECK(mm, (Inputs{param(dims(ta, 2, 4), 60), param(batched({3}, tb, 4, 3), 61)}));
    }
  }
  // q k^T with the same tensor on both sides.
  EXPECT_GRADCHECK([](const Inputs& v) { return matmul(v[0], v[0], false, true); },
                   (Inputs{param({2, 3, 4}, 62)}));
}

}  // namespace
}  // namespace ink
