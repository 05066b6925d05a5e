// The layers and losses of nn/: initialisation, forward values, error messages, hand-checked
// BatchNorm statistics, and finite-difference gradient checks of the fused ops.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "nn/functional.h"
#include "nn/layers.h"
#include "tensor/inkgrad.h"
#include "tests/test_util.h"

namespace ink::nn {
namespace {

using testing_util::error_of;

using ::testing::HasSubstr;
using Inputs = std::vector<Tensor>;

Tensor random_tensor(const Shape& shape, uint64_t seed, float low = -1.0f, float high = 1.0f) {
  Generator gen(seed);
  return uniform(shape, low, high, &gen);
}

// ---- Linear ----

TEST(Linear, InitialisesWithinPyTorchBoundsAndIsSeeded) {
  Generator gen(7);
  Linear layer(16, 4, true, &gen);
  EXPECT_EQ(layer.weight.shape(), (Shape{4, 16}));
  EXPECT_EQ(layer.bias.shape(), (Shape{4}));
  const float bound = 1.0f / 4.0f;  // 1 / sqrt(16)
  float largest = 0.0f;
  for (const Tensor& t : {layer.weight, layer.bias}) {
    for (float v : t.to_vector()) {
      EXPECT_LE(std::abs(v), bound);
      largest = std::max(largest, std::abs(v));
    }
  }
  EXPECT_GT(largest, 0.8f * bound);  // the whole range is used
  Generator same(7);
  Linear again(16, 4, true, &same);
  EXPECT_EQ(again.weight.to_vector(), layer.weight.to_vector());
  EXPECT_EQ(again.bias.to_vector(), layer.bias.to_vector());
  EXPECT_TRUE(layer.weight.requires_grad());
}

TEST(Linear, ForwardIsXWTransposedPlusB) {
  Linear layer(3, 2);
  {
    NoGradGuard no_grad;
    std::vector<float> w{1, 2, 3, 4, 5, 6}, b{0.5f, -1};
    std::copy(w.begin(), w.end(), layer.weight.data());
    std::copy(b.begin(), b.end(), layer.bias.data());
  }
  Tensor y = layer(from_vector({1, 0, -1, 2, 1, 0}, {2, 3}));
  EXPECT_EQ(y.to_vector(), (std::vector<float>{-1.5f, -3, 4.5f, 12}));
}

TEST(Linear, WithoutBiasHasNoBiasParameter) {
  Linear layer(3, 2, false);
  EXPECT_FALSE(layer.bias.defined());
  ASSERT_EQ(layer.named_parameters().size(), 1u);
  EXPECT_EQ(layer.named_parameters()[0].first, "weight");
  EXPECT_EQ(layer.to_string(), "Linear(in_features=3, out_features=2, bias=False)");
}

TEST(Linear, WrongInputShapeNamesBothShapes) {
  Linear layer(32, 128);
  EXPECT_THAT(error_of([&] {
                layer(zeros({4, 16}));
              }),
              HasSubstr("Linear: expected input of shape [*, 32], got [4, 16]"));
}

// ---- Embedding ----

TEST(Embedding, PaddingRowStartsAtZeroAndOtherRowsAreStandardNormal) {
  Generator gen(3);
  Embedding emb(28, 32, 0, &gen);
  const std::vector<float> w = emb.weight.to_vector();
  double sum = 0, sum_sq = 0;
  for (int64_t i = 0; i < 32; ++i) EXPECT_EQ(w[i], 0.0f);
  for (size_t i = 32; i < w.size(); ++i) {
    sum += w[i];
    sum_sq += w[i] * w[i];
  }
  const double n = static_cast<double>(w.size() - 32);
  EXPECT_NEAR(sum / n, 0.0, 0.15);
  EXPECT_NEAR(sum_sq / n, 1.0, 0.15);
  EXPECT_EQ(emb.to_string(), "Embedding(28, 32, padding_idx=0)");
  EXPECT_EQ(Embedding(5, 2).to_string(), "Embedding(5, 2)");
  EXPECT_EQ(Embedding(5, 2, -1).padding_idx(), 4);  // negative counts from the end
}

TEST(Embedding, ForwardPicksRowsAndPaddingRowGetsNoGradient) {
  Embedding emb(4, 2, 0);
  Tensor ids = from_vector_i64({2, 0, 2, 3}, {2, 2});
  Tensor out = emb(ids);
  ASSERT_EQ(out.shape(), (Shape{2, 2, 2}));
  const std::vector<float> w = emb.weight.to_vector(), o = out.to_vector();
  EXPECT_EQ(o[0], w[4]);
  EXPECT_EQ(o[7], w[7]);
  sum(out).backward();
  // Row 2 appears twice, row 3 once, row 0 is padding, row 1 is unused.
  EXPECT_EQ(emb.weight.grad().to_vector(), (std::vector<float>{0, 0, 0, 0, 2, 2, 1, 1}));
}

TEST(Embedding, OutOfRangeIndexIsAnError) {
  Embedding emb(28, 4, 0);
  EXPECT_THAT(error_of([&] {
                emb(from_vector_i64({1, 28}, {2}));
              }),
              HasSubstr("index 28 at position 1 is out of range"));
  EXPECT_THROW(emb(from_vector_i64({-1}, {1})), Error);
  EXPECT_THAT(error_of([&] { emb(zeros({2})); }), HasSubstr("Embedding: indices must be"));
  EXPECT_THAT(error_of([] { Embedding(4, 2, 4); }), HasSubstr("padding_idx 4"));
}

// Without a padding row: a padding row's gradient is zero by definition, which finite
// differences of the forward do not see.
TEST(Embedding, GradcheckWithRepeatedIds) {
  Tensor weight = random_tensor({5, 3}, 11).set_requires_grad(true);
  Tensor ids = from_vector_i64({1, 3, 1, 1, 4, 0}, {2, 3});
  const GradcheckResult r =
      gradcheck([&](const Inputs& in) { return embedding(in[0], ids); }, {weight});
  EXPECT_TRUE(r.ok) << r.message;
}

// ---- BatchNorm1d ----

TEST(BatchNorm1d, HandCheckedRunningStatistics) {
  BatchNorm1d bn(1);
  Tensor y = bn(from_vector({1, 2, 3, 4}, {4, 1}));
  // mean 2.5, biased var 1.25, unbiased var 5/3.
  EXPECT_FLOAT_EQ(bn.running_mean.item(), 0.25f);
  EXPECT_NEAR(bn.running_var.item(), 1.0666667f, 1e-6);
  EXPECT_EQ(bn.num_batches_tracked.item_i64(), 1);
  EXPECT_EQ(bn.num_batches_tracked.dtype(), DType::Int64);
  EXPECT_EQ(bn.num_batches_tracked.shape(), Shape{});
  const float inv_std = 1.0f / std::sqrt(1.25f + 1e-5f);
  const std::vector<float> out = y.to_vector();
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(out[i], (i + 1 - 2.5f) * inv_std, 1e-6);
}

TEST(BatchNorm1d, TrainingWithBatchOfOneIsAnErrorButEvalWorks) {
  BatchNorm1d bn(256);
  EXPECT_THAT(error_of([&] {
                bn(zeros({1, 256}));
              }),
              HasSubstr("BatchNorm1d: expected more than 1 value per channel when training, got "
                        "input of shape [1, 256]"));
  EXPECT_EQ(bn.num_batches_tracked.item_i64(), 0);  // the failed call changed nothing
  bn.eval();
  Tensor y = bn(full({1, 256}, 3.0f));
  EXPECT_NEAR(y.to_vector()[0], 3.0f / std::sqrt(1.0f + 1e-5f), 1e-6);
  EXPECT_EQ(bn.num_batches_tracked.item_i64(), 0);
  EXPECT_EQ(bn.running_mean.to_vector()[0], 0.0f);
}

TEST(BatchNorm1d, AnInputTheOpRefusesIsNotCounted) {
  // The layer's parameters are Float32: a Float64 batch fails batch_norm's dtype check, and the
  // count and the running statistics stay as they were (PyTorch counts it anyway).
  BatchNorm1d bn(3);
  bn(from_vector({0, 1, 2, 3, 4, 5}, {2, 3}));
  const std::vector<float> mean_before = bn.running_mean.to_vector();
  EXPECT_THAT(
      error_of([&] {
        bn(zeros({2, 3}, DType::Float64));
      }),
      HasSubstr("batch_norm: weight must be a Float64 tensor of shape [3] for input [2, 3], "
                "got Float32 [3]"));
  EXPECT_EQ(bn.num_batches_tracked.item_i64(), 1);
  EXPECT_EQ(bn.running_mean.to_vector(), mean_before);
  EXPECT_THAT(error_of([&] {
                bn(from_vector_i64({0, 1, 2, 3, 4, 5}, {2, 3}));
              }),
              HasSubstr("batch_norm"));
  EXPECT_EQ(bn.num_batches_tracked.item_i64(), 1);
}

TEST(BatchNorm1d, MomentumNoneIsTheCumulativeAverage) {
  BatchNorm1d bn(1, 1e-5, std::nullopt);
  EXPECT_FALSE(bn.momentum().has_value());
  EXPECT_EQ(BatchNorm1d(1).momentum(), 0.1);
  bn(from_vector({1, 3}, {2, 1}));                // mean 2, unbiased var 2
  bn(from_vector({4, 8}, {2, 1}));                // mean 6, unbiased var 8
  EXPECT_FLOAT_EQ(bn.running_mean.item(), 4.0f);  // (2 + 6) / 2
  EXPECT_FLOAT_EQ(bn.running_var.item(), 5.0f);   // (2 + 8) / 2
  EXPECT_EQ(bn.num_batches_tracked.item_i64(), 2);
  EXPECT_EQ(bn.to_string(),
            "BatchNorm1d(1, eps=1e-05, momentum=None, affine=True, track_running_stats=True)");
}

TEST(BatchNorm1d, WrongShapeNamesIt) {
  BatchNorm1d bn(256);
  EXPECT_THAT(error_of([&] {
                bn(zeros({4, 128}));
              }),
              HasSubstr("BatchNorm1d: expected input of shape [B, 256], got [4, 128]"));
}

TEST(BatchNorm1d, UpdatesStatisticsUnderNoGradInTrainingMode) {
  BatchNorm1d bn(2);
  NoGradGuard no_grad;
  Tensor y = bn(from_vector({0, 1, 2, 3}, {2, 2}));
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(bn.num_batches_tracked.item_i64(), 1);
  EXPECT_FLOAT_EQ(bn.running_mean.to_vector()[1], 0.2f);
}

TEST(BatchNorm1d, PrintsLikePyTorch) {
  EXPECT_EQ(BatchNorm1d(256).to_string(),
            "BatchNorm1d(256, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)");
  BatchNorm1d plain(3, 1e-3, 0.01, false);
  EXPECT_EQ(plain.to_string(),
            "BatchNorm1d(3, eps=0.001, momentum=0.01, affine=False, track_running_stats=True)");
  EXPECT_TRUE(plain.named_parameters().empty());
  EXPECT_EQ(plain.named_buffers().size(), 3u);
}

TEST(BatchNorm1d, GradcheckTrainingModeThroughBatchStatistics) {
  Tensor x = random_tensor({5, 3}, 21, -2.0f, 2.0f).set_requires_grad(true);
  Tensor gamma = random_tensor({3}, 22, 0.5f, 1.5f).set_requires_grad(true);
  Tensor beta = random_tensor({3}, 23).set_requires_grad(true);
  const GradcheckResult r = gradcheck(
      [](const Inputs& in) {
        return F::batch_norm(in[0], Tensor(), Tensor(), in[1], in[2], /*training=*/true);
      },
      {x, gamma, beta});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(BatchNorm1d, GradcheckTrainingModeWithInputUsedTwiceAndNoAffine) {
  // x feeds both the normalisation and a residual add, so its gradient sums two paths.
  Tensor x = random_tensor({4, 2}, 31, -2.0f, 2.0f).set_requires_grad(true);
  const GradcheckResult r = gradcheck(
      [](const Inputs& in) {
        return mul(F::batch_norm(in[0], Tensor(), Tensor(), Tensor(), Tensor(), true), in[0]);
      },
      {x});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(BatchNorm1d, GradcheckEvalMode) {
  BatchNorm1d bn(3);
  {
    NoGradGuard no_grad;
    bn(random_tensor({6, 3}, 41, -3.0f, 3.0f));  // non-trivial running statistics
  }
  bn.eval();
  Tensor x = random_tensor({2, 3}, 42).set_requires_grad(true);
  const GradcheckResult r = gradcheck(
      [&](const Inputs& in) {
        return F::batch_norm(in[0], bn.running_mean, bn.running_var, in[1], in[2], false);
      },
      {x, random_tensor({3}, 43).set_requires_grad(true),
       random_tensor({3}, 44).set_requires_grad(true)});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(BatchNorm1d, TrainingGraphIsFreedAfterBackward) {
  BatchNorm1d bn(8);
  const int64_t before = live_tensor_count();
  {
    Tensor x = random_tensor({4, 8}, 5).set_requires_grad(true);
    sum(bn(x)).backward();
  }
  bn.zero_grad();
  bn.weight.set_grad(Tensor());
  bn.bias.set_grad(Tensor());
  EXPECT_EQ(live_tensor_count(), before);
}

// ---- mse_loss ----

TEST(MseLoss, ValueAndGradcheck) {
  Tensor a = from_vector({1, 2, 3, 4}, {2, 2});
  Tensor b = from_vector({0, 2, 5, 3}, {2, 2});
  EXPECT_FLOAT_EQ(F::mse_loss(a, b).item(), (1 + 0 + 4 + 1) / 4.0f);
  EXPECT_EQ(F::mse_loss(a, b).shape(), Shape{});
  const GradcheckResult r = gradcheck([](const Inputs& in) { return F::mse_loss(in[0], in[1]); },
                                      {random_tensor({3, 4}, 51).set_requires_grad(true),
                                       random_tensor({3, 4}, 52).set_requires_grad(true)});
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(MseLoss, ShapeMismatchNamesBothShapes) {
  EXPECT_THAT(error_of([] {
                F::mse_loss(zeros({4, 784}), zeros({4, 1, 28, 28}));
              }),
              HasSubstr("mse_loss: input shape [4, 784] and target shape [4, 1, 28, 28]"));
}

// ---- ReLU, Sigmoid, Sequential ----

TEST(Activations, ReluAndSigmoid) {
  Tensor x = from_vector({-2, 0.5f}, {2});
  EXPECT_EQ(ReLU()(x).to_vector(), (std::vector<float>{0, 0.5f}));
  EXPECT_NEAR(Sigmoid()(x).to_vector()[1], 1.0f / (1.0f + std::exp(-0.5f)), 1e-7);
  EXPECT_EQ(ReLU().to_string(), "ReLU()");
  EXPECT_EQ(Sigmoid().to_string(), "Sigmoid()");
}

TEST(Sequential, NamesChildrenByPositionAndChainsForward) {
  auto seq = std::make_shared<Sequential>(std::make_shared<Linear>(3, 4), std::make_shared<ReLU>());
  seq->push_back(std::make_shared<Linear>(4, 2));
  ASSERT_EQ(seq->size(), 3u);
  std::vector<std::string> names;
  for (const auto& [name, p] : seq->named_parameters()) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"}));
  EXPECT_EQ(seq->named_children()[1].first, "1");

  Tensor x = random_tensor({5, 3}, 61);
  auto first = seq->at<Linear>(0);
  Tensor expected = (*(*seq)[2])(relu(first->forward(x)));
  EXPECT_EQ(seq->forward(x).to_vector(), expected.to_vector());
  EXPECT_THAT(error_of([&] { seq->at<Linear>(1); }), HasSubstr("module 1 is a ReLU"));
  EXPECT_THAT(error_of([&] { (*seq)[3]; }), HasSubstr("index 3 is out of range for 3 modules"));
}

}  // namespace
}  // namespace ink::nn
