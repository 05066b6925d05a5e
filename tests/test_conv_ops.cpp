// Tests for the convolution, resampling and selection ops: finite-difference gradchecks (stride 2,
// padding, 1x1, with and without bias, an input used twice, broadcasting), the error messages,
// nn::Conv2d, and PyTorch's values and gradients from tests/data/layers_golden.json
// (scripts/make_layers_golden.py).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nn/conv.h"
#include "tensor/inkgrad.h"
#include "tests/test_util.h"

namespace ink {
namespace {

using ink::testing_util::expect_error;
using ink::testing_util::ThreadCountGuard;
using json = nlohmann::json;
using Inputs = std::vector<Tensor>;

Tensor param(const Shape& shape, uint64_t seed, float low = -1.0f, float high = 1.0f) {
  Generator gen(seed);
  return uniform(shape, low, high, &gen).set_requires_grad(true);
}

#define EXPECT_GRADCHECK(f, inputs)                 \
  do {                                              \
    const GradcheckResult r = gradcheck(f, inputs); \
    EXPECT_TRUE(r.ok) << r.message;                 \
  } while (0)

// ---- conv2d ----

TEST(Conv2dOp, OutputShapeFollowsPyTorch) {
  const Tensor x = zeros({2, 3, 28, 27});
  EXPECT_EQ(conv2d(x, zeros({8, 3, 3, 3}), Tensor(), 1, 1).shape(), (Shape{2, 8, 28, 27}));
  EXPECT_EQ(conv2d(x, zeros({8, 3, 3, 3}), zeros({8}), 2, 1).shape(), (Shape{2, 8, 14, 14}));
  EXPECT_EQ(conv2d(x, zeros({8, 3, 3, 3}), Tensor(), 1, 0).shape(), (Shape{2, 8, 26, 25}));
  EXPECT_EQ(conv2d(x, zeros({4, 3, 1, 1})).shape(), (Shape{2, 4, 28, 27}));
  EXPECT_EQ(conv2d(x, zeros({4, 3, 3, 3}), Tensor(), 1, 2, 2).shape(), (Shape{2, 4, 28, 27}));
}

TEST(Conv2dOp, GradcheckStridePaddingKernelSizeAndBias) {
  struct Case {
    int64_t C, O, k, stride, padding;
    bool bias;
  };
  const Case cases[] = {{3, 4, 3, 1, 1, true},  {3, 4, 3, 1, 1, false}, {2, 3, 3, 2, 1, true},
                        {2, 3, 3, 2, 0, false}, {3, 2, 3, 1, 0, true},  {5, 3, 1, 1, 0, true},
                        {5, 3, 1, 2, 1, false}};
  for (const Case& c : cases) {
    SCOPED_TRACE("C=" + std::to_string(c.C) + " O=" + std::to_string(c.O) +
                 " k=" + std::to_string(c.k) + " stride=" + std::to_string(c.stride) +
                 " padding=" + std::to_string(c.padding) + " bias=" + std::to_string(c.bias));
    Inputs in = {param({2, c.C, 5, 6}, 1), param({c.O, c.C, c.k, c.k}, 2)};
    if (c.bias) in.push_back(param({c.O}, 3));
    EXPECT_GRADCHECK(
        [&](const Inputs& v) {
          return conv2d(v[0], v[1], c.bias ? v[2] : Tensor(), c.stride, c.padding);
        },
        in);
  }
}

TEST(Conv2dOp, GradcheckInputUsedTwiceAndWeightOnly) {
  // y = conv(x, w) * x: x reaches the output through the conv and directly.
  Tensor x = param({2, 3, 4, 5}, 4), w = param({3, 3, 3, 3}, 5), b = param({3}, 6);
  EXPECT_GRADCHECK([](const Inputs& v) { return conv2d(v[0], v[1], v[2], 1, 1) * v[0]; },
                   (Inputs{x, w, b}));
  // Two convs sharing one weight.
  EXPECT_GRADCHECK(
      [](const Inputs& v) { return conv2d(conv2d(v[0], v[1], v[2], 1, 1), v[1], v[2], 2, 1); },
      (Inputs{x, w, b}));
  // Only the weight needs a gradient (the first layer of a network): x is an input that does
  // not require grad.
  EXPECT_GRADCHECK([](const Inputs& v) { return conv2d(v[0], v[1], v[2], 1, 1); },
                   (Inputs{x.detach(), w, b}));
  // Only the bias.
  EXPECT_GRADCHECK([](const Inputs& v) { return conv2d(v[0], v[1], v[2], 2, 1); },
                   (Inputs{x.detach(), w.detach(), b}));
  // Only the input.
  EXPECT_GRADCHECK([](const Inputs& v) { return conv2d(v[0], v[1], Tensor(), 2, 0); },
                   (Inputs{x, w.detach()}));
}

// conv2d saves x for dW and the weight for dX; writing either in place before backward is
// caught instead of giving a wrong gradient.
TEST(Conv2dOp, InputModifiedInPlaceBeforeBackwardIsAnError) {
  Tensor x = param({1, 2, 4, 4}, 30), w = param({3, 2, 3, 3}, 31);
  Tensor y = conv2d(x, w, Tensor(), 1, 1).sum();
  x.data()[0] = 5.0f;  // a write: bumps the storage's version
  expect_error([&] { y.backward(); }, "conv2d: a tensor saved for backward was modified in place");
  // When only the weight needs a gradient, only x is saved (dW needs it, dX is not computed),
  // so writing the weight before backward is harmless.
  const Tensor data = param({1, 2, 4, 4}, 32).detach();
  Tensor z = conv2d(data, w, Tensor(), 1, 1).sum();
  w.data()[0] = 0.25f;
  z.backward();
  EXPECT_TRUE(w.grad().defined());
}

TEST(Conv2dOp, ErrorsNameTheShapes) {
  const Tensor x = zeros({8, 3, 28, 28});
  expect_error(
      [&] {
        conv2d(x, zeros({32, 1, 3, 3}));
      },
      "conv2d: input [8, 3, 28, 28] has 3 channels, weight [32, 1, 3, 3] expects 1");
  expect_error(
      [&] {
        conv2d(zeros({3, 28, 28}), zeros({32, 3, 3, 3}));
      },
      "conv2d: input must be 4-D [B, C, H, W], got [3, 28, 28]");
  expect_error(
      [&] {
        conv2d(x, zeros({32, 3, 3}));
      },
      "conv2d: weight must be 4-D [O, C/groups, kH, kW], got [32, 3, 3]");
  expect_error(
      [&] {
        conv2d(x, zeros({32, 3, 3, 3}), zeros({16}));
      },
      "conv2d: bias [16] does not match weight [32, 3, 3, 3] (expected [32])");
  expect_error(
      [&] {
        conv2d(x, zeros({32, 3, 3, 3}), Tensor(), 0);
      },
      "conv2d: stride must be >= 1, got 0");
  expect_error(
      [&] {
        conv2d(x, zeros({32, 3, 3, 3}), Tensor(), 1, -1);
      },
      "conv2d: padding must be >= 0, got -1");
  expect_error(
      [&] {
        conv2d(x, zeros({32, 3, 3, 3}), Tensor(), 1, 0, 0);
      },
      "conv2d: dilation must be >= 1, got 0");
  expect_error(
      [&] {
        conv2d(zeros({1, 3, 2, 2}), zeros({4, 3, 3, 3}));
      },
      "conv2d: input [1, 3, 2, 2] is too small for kernel 3x3 with padding 0 and "
      "dilation 1 (the output would be 0x0)");
  // groups: an uneven split is named as such; an even one is not supported yet.
  expect_error(
      [&] {
        conv2d(x, zeros({32, 1, 3, 3}), Tensor(), 1, 1, 1, 2);
      },
      "conv2d: input [8, 3, 28, 28] has 3 channels, not divisible by groups = 2");
  expect_error(
      [&] {
        conv2d(zeros({8, 4, 6, 6}), zeros({6, 1, 3, 3}), Tensor(), 1, 1, 1, 4);
      },
      "conv2d: weight [6, 1, 3, 3] has 6 output channels, not divisible by groups = 4");
  expect_error(
      [&] {
        conv2d(zeros({8, 4, 6, 6}), zeros({8, 2, 3, 3}), Tensor(), 1, 1, 1, 2);
      },
      "conv2d: groups = 2 is not supported yet (only groups = 1)");
  expect_error(
      [&] {
        conv2d(x, from_vector_i64({1}, {1, 1, 1, 1}));
      },
      "conv2d: expected a Float32 tensor, got Int64");
}

// ---- resampling ----

TEST(ResampleOps, Gradchecks) {
  EXPECT_GRADCHECK([](const Inputs& v) { return upsample_nearest2d(v[0], 2); },
                   (Inputs{param({2, 3, 3, 4}, 7)}));
  EXPECT_GRADCHECK([](const Inputs& v) { return upsample_nearest2d(v[0], 3) * 0.5f; },
                   (Inputs{param({1, 2, 2, 3}, 8)}));
  EXPECT_GRADCHECK([](const Inputs& v) { return avg_pool2d(v[0], 2); },
                   (Inputs{param({2, 3, 6, 4}, 9)}));
  // Odd sizes: the last row and column take no part and get a zero gradient.
  EXPECT_GRADCHECK([](const Inputs& v) { return avg_pool2d(v[0], 2); },
                   (Inputs{param({1, 2, 5, 7}, 10)}));
  // Down and up again, the input used twice.
  EXPECT_GRADCHECK(
      [](const Inputs& v) { return upsample_nearest2d(avg_pool2d(v[0], 2), 2) * v[0]; },
      (Inputs{param({2, 2, 4, 6}, 11)}));
  // The U-Net's upsampling: a convolution on the upsampled tensor, which it saves only weakly
  // (the upsampled values are remade from the input in backward).
  EXPECT_GRADCHECK(
      [](const Inputs& v) { return conv2d(upsample_nearest2d(v[0], 2), v[1], v[2], 1, 1); },
      (Inputs{param({2, 2, 3, 3}, 12), param({3, 2, 3, 3}, 13), param({3}, 14)}));
}

TEST(ResampleOps, AConvolutionDoesNotKeepTheUpsampledTensorAlive) {
  Tensor x = randn({2, 3, 4, 4}).set_requires_grad(true);
  Tensor k = randn({2, 3, 3, 3}).set_requires_grad(true);
  Tensor up = upsample_nearest2d(x, 2);
  const std::weak_ptr<Storage> storage = up.impl()->storage;
  Tensor loss = conv2d(up, k, Tensor(), 1, 1).sum();
  up = Tensor();
  EXPECT_TRUE(storage.expired()) << "the graph still holds the 4x larger upsampled tensor";
  loss.backward();
  EXPECT_TRUE(k.grad().defined());
}

TEST(ResampleOps, Values) {
  const Tensor x = from_vector({1, 2, 3, 4, 5, 6}, {1, 1, 2, 3});
  EXPECT_THAT(upsample_nearest2d(x, 2).to_vector(),
              ::testing::ElementsAre(1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 4, 4, 5,
                                     5, 6, 6));
  EXPECT_THAT(avg_pool2d(x, 2).to_vector(), ::testing::ElementsAre(3.0f));  // (1+2+4+5)/4
}

TEST(ResampleOps, Errors) {
  expect_error(
      [] {
        upsample_nearest2d(zeros({3, 4, 4}));
      },
      "upsample_nearest2d: input must be 4-D [B, C, H, W], got [3, 4, 4]");
  expect_error(
      [] {
        upsample_nearest2d(zeros({1, 3, 4, 4}), 0);
      },
      "upsample_nearest2d: scale must be >= 1, got 0");
  expect_error(
      [] {
        avg_pool2d(zeros({1, 3, 1, 4}), 2);
      },
      "avg_pool2d: input [1, 3, 1, 4] is smaller than the 2x2 window");
  expect_error(
      [] {
        avg_pool2d(zeros({1, 3, 4, 4}), 0);
      },
      "avg_pool2d: kernel must be >= 1, got 0");
  expect_error(
      [] {
        avg_pool2d(zeros({4, 4}), 2);
      },
      "avg_pool2d: input must be 4-D [B, C, H, W], got [4, 4]");
}

// ---- upsample_conv2d: nearest x2 then a 3x3 convolution, as four 2x2 phases ----

TEST(UpsampleConvOp, Gradcheck) {
  EXPECT_GRADCHECK([](const Inputs& v) { return upsample_conv2d(v[0], v[1], v[2]); },
                   (Inputs{param({2, 2, 3, 4}, 20), param({3, 2, 3, 3}, 21), param({3}, 22)}));
  EXPECT_GRADCHECK([](const Inputs& v) { return upsample_conv2d(v[0], v[1]); },
                   (Inputs{param({1, 3, 1, 2}, 23), param({2, 3, 3, 3}, 24)}));
}

// The same values and gradients as the composition it replaces, at 1 and 2 threads, on odd and
// even sizes and with the U-Net's channel counts.
TEST(UpsampleConvOp, MatchesUpsampleThenConv) {
  struct Case {
    int64_t B, C, O, H, W;
    bool bias;
  };
  const Case cases[] = {{2, 3, 4, 5, 7, true},
                        {1, 1, 1, 1, 1, false},
                        {3, 64, 32, 14, 14, true},
                        {4, 64, 64, 7, 7, true},
                        {1, 5, 3, 2, 9, false}};
  ThreadCountGuard guard;
  for (const Case& c : cases) {
    for (int threads : {1, 2}) {
      set_num_threads(threads);
      SCOPED_TRACE("B=" + std::to_string(c.B) + " C=" + std::to_string(c.C) +
                   " O=" + std::to_string(c.O) + " H=" + std::to_string(c.H) +
                   " W=" + std::to_string(c.W) + " threads=" + std::to_string(threads));
      const Tensor x = param({c.B, c.C, c.H, c.W}, 30), w = param({c.O, c.C, 3, 3}, 31);
      const Tensor b = c.bias ? param({c.O}, 32) : Tensor();
      const Tensor dy = randn({c.B, c.O, 2 * c.H, 2 * c.W});
      const auto run = [&](bool fused) {
        for (Tensor t : {x, w, b}) {
          if (t.defined()) t.set_grad(Tensor());
        }
        Tensor y = fused ? upsample_conv2d(x, w, b) : conv2d(upsample_nearest2d(x, 2), w, b, 1, 1);
        (y * dy).sum().backward();
        return std::vector<Tensor>{y.detach(), x.grad(), w.grad(), c.bias ? b.grad() : zeros({1})};
      };
      const std::vector<Tensor> want = run(false), got = run(true);
      const char* names[] = {"y", "dx", "dw", "db"};
      for (size_t i = 0; i < want.size(); ++i) {
        EXPECT_EQ(got[i].shape(), want[i].shape()) << names[i];
        EXPECT_TRUE(allclose(got[i], want[i], 1e-4f, 1e-4f)) << names[i];
      }
    }
  }
}

TEST(UpsampleConvOp, Errors) {
  expect_error(
      [] {
        upsample_conv2d(zeros({2, 3, 4}), zeros({4, 3, 3, 3}));
      },
      "upsample_conv2d: input must be 4-D [B, C, H, W], got [2, 3, 4]");
  expect_error(
      [] {
        upsample_conv2d(zeros({1, 3, 4, 4}), zeros({4, 3, 1, 1}));
      },
      "upsample_conv2d: weight must be [O, C, 3, 3], got [4, 3, 1, 1]");
  expect_error(
      [] {
        upsample_conv2d(zeros({1, 3, 4, 4}), zeros({4, 2, 3, 3}));
      },
      "upsample_conv2d: input [1, 3, 4, 4] has 3 channels, weight [4, 2, 3, 3] expects 2");
  expect_error(
      [] {
        upsample_conv2d(zeros({1, 3, 4, 4}), zeros({4, 3, 3, 3}), zeros({3}));
      },
      "upsample_conv2d: bias [3] does not match weight [4, 3, 3, 3] (expected [4])");
}

// ---- selection ----

TEST(SelectionOps, IndexSelectValuesAndGradcheck) {
  const Tensor x = from_vector({0, 1, 2, 3, 4, 5}, {3, 2});
  EXPECT_THAT(index_select(x, 0, from_vector_i64({2, 0, 2}, {3})).to_vector(),
              ::testing::ElementsAre(4, 5, 0, 1, 4, 5));
  EXPECT_THAT(index_select(x, -1, from_vector_i64({1}, {1})).to_vector(),
              ::testing::ElementsAre(1, 3, 5));
  // A repeated index sums its gradients.
  const Tensor ids = from_vector_i64({1, 3, 1, 0}, {4});
  EXPECT_GRADCHECK([&](const Inputs& v) { return index_select(v[0], 1, ids); },
                   (Inputs{param({2, 4, 3}, 12)}));
  EXPECT_GRADCHECK([&](const Inputs& v) { return index_select(v[0], 0, ids) * 2.0f; },
                   (Inputs{param({5, 2}, 13)}));
}

TEST(SelectionOps, WhereAndMaskedFillWithBroadcasting) {
  const Tensor mask = from_vector_i64({1, 0, 1}, {3});
  const Tensor a = from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_THAT(where(mask, a, full({1}, -1.0f)).to_vector(),
              ::testing::ElementsAre(1, -1, 3, 4, -1, 6));
  EXPECT_THAT(masked_fill(a, from_vector({0, 1}, {2, 1}), 9.0f).to_vector(),
              ::testing::ElementsAre(1, 2, 3, 9, 9, 9));
  // Broadcasting on every side: mask [2, 1, 3], a [4, 1], b [3] -> [2, 4, 3].
  const Tensor m3 = from_vector({1, 0, 0, 0, 1, 1}, {2, 1, 3});
  EXPECT_GRADCHECK([&](const Inputs& v) { return where(m3, v[0], v[1]); },
                   (Inputs{param({4, 1}, 14), param({3}, 15)}));
  // The same input on both sides.
  EXPECT_GRADCHECK([&](const Inputs& v) { return where(m3, v[0], v[0] * 3.0f); },
                   (Inputs{param({4, 3}, 16)}));
  EXPECT_GRADCHECK([&](const Inputs& v) { return masked_fill(v[0], mask, -5.0f); },
                   (Inputs{param({4, 3}, 17)}));
}

TEST(SelectionOps, RepeatValuesAndGradcheck) {
  const Tensor x = from_vector({1, 2, 3}, {3});
  EXPECT_THAT(repeat(x, {2}).to_vector(), ::testing::ElementsAre(1, 2, 3, 1, 2, 3));
  EXPECT_EQ(repeat(x, {2, 2}).shape(), (Shape{2, 6}));
  const Tensor y = from_vector({1, 2, 3, 4}, {2, 2});
  EXPECT_THAT(repeat(y, {1, 2}).to_vector(), ::testing::ElementsAre(1, 2, 1, 2, 3, 4, 3, 4));
  EXPECT_THAT(repeat(y, {2, 1}).to_vector(), ::testing::ElementsAre(1, 2, 3, 4, 1, 2, 3, 4));
  EXPECT_GRADCHECK(
      [](const Inputs& v) {
        return repeat(v[0], {2, 1, 3});
      },
      (Inputs{param({2, 3}, 18)}));
  EXPECT_GRADCHECK(
      [](const Inputs& v) {
        return repeat(v[0], {3, 1}) * repeat(v[0], {3, 1});
      },
      (Inputs{param({2, 2}, 19)}));
}

TEST(SelectionOps, Errors) {
  const Tensor x = zeros({5, 3});
  expect_error(
      [&] {
        index_select(x, 0, from_vector_i64({1, 7}, {2}));
      },
      "index_select: index 7 at position 1 is out of range for dim 0 of x [5, 3] (size 5)");
  expect_error([&] { index_select(x, 0, from_vector({1}, {1})); },
               "index_select: indices must be a 1-D Int64 tensor, got Float32 with shape [1]");
  expect_error([&] { index_select(x, 2, from_vector_i64({1}, {1})); }, "index_select");
  expect_error([&] { where(zeros({4}), x, x); },
               "where: shapes [4] and [5, 3] cannot be broadcast");
  expect_error(
      [&] {
        masked_fill(zeros({3}), zeros({5, 3}), 1.0f);
      },
      "masked_fill: mask [5, 3] does not broadcast to x [3]");
  expect_error([&] { repeat(x, {2}); },
               "repeat: 1 repeats for x [5, 3]; the number of repeats must be at least x's rank 2");
  expect_error([&] { repeat(x, {1, -1}); }, "repeat: repeats must be >= 0, got 1, -1");
}

// ---- PyTorch goldens (tests/data/layers_golden.json) ----

const json& golden_cases() {
  static const json data = [] {
    std::ifstream file(INK_TEST_DATA_DIR "/layers_golden.json");
    if (!file) throw std::runtime_error("cannot open " INK_TEST_DATA_DIR "/layers_golden.json");
    return json::parse(file);
  }();
  return data.at("cases");
}

// The goldens' inputs are exact in float32 (scripts/make_layers_golden.py), so a Float64 tensor
// made from them is exact too; expected values are compared in the dtype under test.
Tensor to_tensor(const json& j, DType dtype = DType::Float32) {
  std::vector<float> values;
  for (const auto& v : j.at("data")) values.push_back(v.get<float>());
  return from_vector(values, j.at("shape").get<Shape>()).to(dtype);
}

// Largest |a - b| relative to max(1, |b|), for the messages.
// Float32 results within 2e-5 (relative to max(1, |value|)) of PyTorch's float64 numbers,
// Float64 results within 1e-12.
void expect_close(const Tensor& got, const json& want, const std::string& what) {
  const double tol = got.dtype() == DType::Float64 ? 1e-12 : 2e-5;
  ASSERT_EQ(got.shape(), want.at("shape").get<Shape>()) << what;
  const std::vector<double> a = got.to_vector_f64();
  const auto& b = want.at("data");
  for (size_t i = 0; i < a.size(); ++i) {
    const double expected = b[i].get<double>();
    ASSERT_NEAR(a[i], expected, tol * std::max(1.0, std::fabs(expected))) << what << " at " << i;
  }
}

// Runs one golden case: fn maps (input x, params by name) to the output; every gradient is
// checked against PyTorch's.
template <class Fn>
void check_golden(const std::string& name, Fn&& fn) {
  for (DType dtype : {DType::Float32, DType::Float64}) {
    SCOPED_TRACE(name + " in " + dtype_name(dtype));
    const json& c = golden_cases().at(name);
    Tensor x = to_tensor(c.at("inputs").at("x"), dtype).set_requires_grad(true);
    std::map<std::string, Tensor> params;
    for (const auto& [key, value] : c.at("params").items()) {
      params[key] = to_tensor(value, dtype).set_requires_grad(true);
    }
    const Tensor y = fn(x, params, c.at("attrs"));
    ASSERT_EQ(y.dtype(), dtype);
    expect_close(y, c.at("output"), "output");
    y.backward(to_tensor(c.at("grad_output"), dtype));
    expect_close(x.grad(), c.at("grads").at("x"), "grad x");
    for (auto& [key, p] : params) expect_close(p.grad(), c.at("grads").at(key), "grad " + key);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

TEST(ConvGoldens, Conv2dMatchesPyTorch) {
  int checked = 0;
  for (const auto& [name, c] : golden_cases().items()) {
    if (c.at("op") != "conv2d") continue;
    check_golden(name, [](const Tensor& x, std::map<std::string, Tensor>& p, const json& attrs) {
      const Tensor bias = p.count("bias") ? p["bias"] : Tensor();
      return conv2d(x, p["weight"], bias, attrs.at("stride").get<int64_t>(),
                    attrs.at("padding").get<int64_t>(), attrs.at("dilation").get<int64_t>(),
                    attrs.at("groups").get<int64_t>());
    });
    if (HasFatalFailure()) return;
    ++checked;
  }
  EXPECT_GE(checked, 7);
}

TEST(ConvGoldens, ResamplingMatchesPyTorch) {
  check_golden("upsample_nearest2d_x2", [](const Tensor& x, auto&, const json& attrs) {
    return upsample_nearest2d(x, attrs.at("scale").get<int64_t>());
  });
  for (const char* name : {"avg_pool2d_2", "avg_pool2d_2_odd"}) {
    check_golden(name, [](const Tensor& x, auto&, const json& attrs) {
      return avg_pool2d(x, attrs.at("kernel").get<int64_t>());
    });
  }
}

// ---- Float64 (gradcheck runs in double) ----

TEST(Conv2dOp, Float64MatchesFloat32AndKeepsItsDtype) {
  const Tensor x = param({2, 3, 7, 6}, 20).detach(), w = param({4, 3, 3, 3}, 21).detach();
  const Tensor b = param({4}, 22).detach();
  const Tensor y32 = conv2d(x, w, b, 2, 1);
  const Tensor y64 = conv2d(x.to(DType::Float64), w.to(DType::Float64), b.to(DType::Float64), 2, 1);
  EXPECT_EQ(y64.dtype(), DType::Float64);
  EXPECT_TRUE(allclose(y64.to(DType::Float32), y32, 1e-5f, 1e-6f));
  for (const Tensor& t :
       {upsample_nearest2d(x.to(DType::Float64)), avg_pool2d(x.to(DType::Float64)),
        index_select(x.to(DType::Float64), 1, from_vector_i64({0, 0}, {2})),
        repeat(x.to(DType::Float64), {1, 2, 1, 1}),
        masked_fill(x.to(DType::Float64), from_vector({1, 0}, {2, 1, 1, 1}), 0.5f),
        where(from_vector({1, 0}, {2, 1, 1, 1}), x.to(DType::Float64), x.to(DType::Float64))}) {
    EXPECT_EQ(t.dtype(), DType::Float64);
  }
  expect_error([&] { conv2d(x, w.to(DType::Float64)); },
               "conv2d: dtypes differ: Float32 [2, 3, 7, 6] and Float64 [4, 3, 3, 3]");
}

// ---- nn::Conv2d ----

TEST(Conv2dLayer, PyTorchNamesShapesAndRepr) {
  nn::Conv2d conv(3, 16, 3, 1, 1);
  const auto params = conv.named_parameters();
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0].first, "weight");
  EXPECT_EQ(params[0].second.shape(), (Shape{16, 3, 3, 3}));
  EXPECT_EQ(params[1].first, "bias");
  EXPECT_EQ(params[1].second.shape(), (Shape{16}));
  EXPECT_EQ(conv.to_string(), "Conv2d(3, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))");
  nn::Conv2d pointwise(8, 4, 1, 2, 0, false);
  EXPECT_FALSE(pointwise.bias.defined());
  EXPECT_EQ(pointwise.named_parameters().size(), 1u);
  EXPECT_EQ(pointwise.to_string(), "Conv2d(8, 4, kernel_size=(1, 1), stride=(2, 2), bias=False)");
  EXPECT_EQ(pointwise(zeros({2, 8, 7, 7})).shape(), (Shape{2, 4, 4, 4}));
}

TEST(Conv2dLayer, DefaultInitIsUniformWithinOneOverSqrtFanIn) {
  Generator gen(3);
  nn::Conv2d conv(16, 32, 3, 1, 1, true, &gen);
  const float bound = 1.0f / std::sqrt(16.0f * 9.0f);
  float largest = 0.0f;
  double sum = 0.0;
  for (float v : conv.weight.to_vector()) {
    largest = std::max(largest, std::fabs(v));
    sum += v;
  }
  EXPECT_LE(largest, bound);
  EXPECT_GT(largest, 0.95f * bound);  // spread over the whole range, not a narrower one
  EXPECT_NEAR(sum / conv.weight.numel(), 0.0, 0.01 * bound * 10);
  for (float v : conv.bias.to_vector()) EXPECT_LE(std::fabs(v), bound);
  // Same seed, same weights (weight drawn first, then bias).
  Generator again(3);
  nn::Conv2d twin(16, 32, 3, 1, 1, true, &again);
  EXPECT_EQ(twin.weight.to_vector(), conv.weight.to_vector());
  EXPECT_EQ(twin.bias.to_vector(), conv.bias.to_vector());
}

TEST(Conv2dLayer, WrongInputNamesTheShapes) {
  nn::Conv2d conv(3, 8, 3);
  expect_error(
      [&] {
        conv(zeros({2, 4, 9, 9}));
      },
      "Conv2d: expected input of shape [B, 3, H, W], got [2, 4, 9, 9]");
  expect_error([] { nn::Conv2d(0, 8, 3); },
               "Conv2d: in_channels and out_channels must be positive, got 0 and 8");
}

// The golden conv cases through the layer: the state_dict names and order match PyTorch's, and
// loading PyTorch's parameters gives its output and gradients.
TEST(ConvGoldens, Conv2dLayerMatchesPyTorch) {
  for (const auto& [name, c] : golden_cases().items()) {
    if (c.at("op") != "conv2d") continue;
    SCOPED_TRACE(name);
    const json& attrs = c.at("attrs");
    const Tensor x0 = to_tensor(c.at("inputs").at("x"));
    nn::Conv2d conv(x0.size(1), c.at("params").at("weight").at("shape")[0].get<int64_t>(),
                    attrs.at("kernel").get<int64_t>(), attrs.at("stride").get<int64_t>(),
                    attrs.at("padding").get<int64_t>(), attrs.at("bias").get<bool>());
    std::vector<std::string> names;
    for (const auto& [key, t] : conv.state_dict()) names.push_back(key);
    EXPECT_EQ(names, c.at("state_dict").get<std::vector<std::string>>());
    NamedTensors state;
    for (const auto& [key, value] : c.at("params").items())
      state.push_back({key, to_tensor(value)});
    conv.load_state_dict(state);
    Tensor x = x0.clone().detach().set_requires_grad(true);
    const Tensor y = conv(x);
    expect_close(y, c.at("output"), "output");
    y.backward(to_tensor(c.at("grad_output")));
    expect_close(x.grad(), c.at("grads").at("x"), "grad x");
    expect_close(conv.weight.grad(), c.at("grads").at("weight"), "grad weight");
    if (conv.bias.defined()) expect_close(conv.bias.grad(), c.at("grads").at("bias"), "grad bias");
    if (HasFatalFailure()) return;
  }
}

}  // namespace
}  // namespace ink
