// Tests for the autograd engine: accumulation, graph lifetime, grad mode, deep graphs, leaks,
// the embedding scatter-add, anomaly detection and the DOT picture.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "tensor/inkgrad.h"
#include "tests/test_util.h"

namespace ink {
namespace {

using testing_util::expect_error;

using ::testing::HasSubstr;

TEST(Autograd, InputUsedTwiceSumsBothPaths) {
  Tensor a = scalar(3.0f).set_requires_grad(true);
  Tensor b = a + a;
  Tensor c = b + b;
  c.backward();
  EXPECT_EQ(a.grad().item(), 4.0f);  // dc/da = 4

  Tensor x = scalar(3.0f).set_requires_grad(true);
  (x * x).backward();
  EXPECT_EQ(x.grad().item(), 6.0f);  // d(x^2)/dx = 2x
}

TEST(Autograd, DiamondGraphSumsBeforeRunningTheNode) {
  // y = exp(x); z = y*2 + y*3 => dz/dx = 5 exp(x)
  Tensor x = scalar(0.5f).set_requires_grad(true);
  Tensor y = exp(x);
  Tensor z = y * 2.0f + y * 3.0f;
  z.backward();
  EXPECT_FLOAT_EQ(x.grad().item(), 5.0f * std::exp(0.5f));
}

TEST(Autograd, LeavesAccumulateUntilZeroGrad) {
  Tensor w = from_vector({1, 2}, {2}).set_requires_grad(true);
  (w * 3.0f).sum().backward();
  (w * 3.0f).sum().backward();
  EXPECT_EQ(w.grad().to_vector(), (std::vector<float>{6, 6}));
  const float* buffer = w.grad().data();
  w.zero_grad();
  EXPECT_EQ(w.grad().to_vector(), (std::vector<float>{0, 0}));
  EXPECT_EQ(w.grad().data(), buffer);  // zero_grad keeps the buffer
  (w * 2.0f).sum().backward();
  EXPECT_EQ(w.grad().to_vector(), (std::vector<float>{2, 2}));
}

TEST(Autograd, GraphIsFreedUnlessRetained) {
  Tensor x = scalar(2.0f).set_requires_grad(true);
  Tensor y = x * x;
  y.backward(Tensor(), /*retain_graph=*/true);
  y.backward();  // allowed: the first call kept the graph
  EXPECT_EQ(x.grad().item(), 8.0f);
  expect_error([&] { y.backward(); },
               "already freed by an earlier backward; pass retain_graph=true");
}

TEST(Autograd, NonScalarNeedsAnExplicitGradient) {
  Tensor x = from_vector({1, 2, 3}, {3}).set_requires_grad(true);
  Tensor y = x * 2.0f;
  expect_error([&] { y.backward(); },
               "a gradient can be implied only for a scalar output, but the output has shape [3]");
  expect_error([&] { y.backward(ones({2})); },
               "gradient of shape [2] (Float32) does not match the output's shape [3]");
  y.backward(from_vector({1, 10, 100}, {3}));
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{2, 20, 200}));
}

TEST(Autograd, NoGradGuardRecordsNothing) {
  Tensor x = scalar(1.0f).set_requires_grad(true);
  {
    NoGradGuard guard;
    EXPECT_FALSE(is_grad_enabled());
    Tensor y = x * 2.0f;
    EXPECT_FALSE(y.requires_grad());
    EXPECT_EQ(y.grad_fn(), nullptr);
    expect_error([&] { y.backward(); }, "does not require grad and has no grad_fn");
  }
  EXPECT_TRUE(is_grad_enabled());
  EXPECT_TRUE((x * 2.0f).requires_grad());
}

TEST(Autograd, DetachCutsTheGraphAndSharesData) {
  Tensor x = scalar(2.0f).set_requires_grad(true);
  Tensor y = x * x;
  Tensor d = y.detach();
  EXPECT_FALSE(d.requires_grad());
  EXPECT_TRUE(d.is_leaf());
  EXPECT_EQ(d.data(), y.data());
  Tensor z = d * x;  // gradient flows only through the second factor
  z.backward();
  EXPECT_EQ(x.grad().item(), 4.0f);
}

TEST(Autograd, OnlyLeavesCanChangeRequiresGrad) {
  Tensor x = scalar(2.0f).set_requires_grad(true);
  Tensor y = x * 2.0f;
  expect_error([&] { y.set_requires_grad(false); }, "only leaf tensors can change requires_grad");
}

TEST(Autograd, EmbeddingScatterAddsRepeatedIds) {
  Tensor table = zeros({5, 2}).set_requires_grad(true);
  Tensor out = embedding(table, from_vector_i64({3, 3, 1}, {3}));
  out.backward(from_vector({1, 2, 10, 20, 100, 200}, {3, 2}));
  const auto g = table.grad().to_vector();
  EXPECT_EQ(g[3 * 2 + 0], 11.0f);  // row 3 = g0 + g1
  EXPECT_EQ(g[3 * 2 + 1], 22.0f);
  EXPECT_EQ(g[1 * 2 + 0], 100.0f);
  for (int row : {0, 2, 4}) {
    EXPECT_EQ(g[row * 2 + 0], 0.0f);
    EXPECT_EQ(g[row * 2 + 1], 0.0f);
  }
}

TEST(Autograd, EmbeddingPaddingRowGetsNoGradient) {
  Tensor table = ones({3, 2}).set_requires_grad(true);
  embedding(table, from_vector_i64({0, 2, 0}, {3}), 0).sum().backward();
  EXPECT_EQ(table.grad().to_vector(), (std::vector<float>{0, 0, 0, 0, 1, 1}));
}

TEST(Autograd, DeepChainDoesNotOverflowTheStack) {
  Tensor x = scalar(1.0f).set_requires_grad(true);
  Tensor y = x;
  for (int i = 0; i < 100000; ++i) y = y * 1.0f + 0.0f;  // 200,000 ops
  y.backward();
  EXPECT_EQ(x.grad().item(), 1.0f);
}

TEST(Autograd, DeepChainFreesWithoutBackward) {
  const int64_t before = live_tensor_count();
  {
    Tensor x = scalar(1.0f).set_requires_grad(true);
    Tensor y = x;
    for (int i = 0; i < 100000; ++i) y = y + 1.0f;
    EXPECT_GT(live_tensor_count(), before + 100000);
  }  // destroying the chain must neither recurse nor leak
  EXPECT_EQ(live_tensor_count(), before);
}

TEST(Autograd, GraphsDoNotLeak) {
  const int64_t before = live_tensor_count();
  std::weak_ptr<TensorImpl> weak_hidden;
  std::weak_ptr<Node> weak_node;
  {
    Tensor w = randn({4, 3}).set_requires_grad(true);
    Tensor x = randn({2, 4});
    Tensor hidden = relu(matmul(x, w));
    weak_hidden = hidden.impl_ptr();
    weak_node = hidden.grad_fn();
    Tensor loss = (sigmoid(hidden) * hidden).mean();
    loss.backward(Tensor(), /*retain_graph=*/true);
  }
  EXPECT_TRUE(weak_hidden.expired());
  EXPECT_TRUE(weak_node.expired());
  EXPECT_EQ(live_tensor_count(), before);
}

TEST(Autograd, AnomalyDetectionNamesTheOp) {
  set_detect_anomaly(true);
  Tensor x = from_vector({-1.0f, 1.0f}, {2}).set_requires_grad(true);
  expect_error([&] { log(x); }, "detect_anomaly: op log produced a non-finite value");
  Tensor z = scalar(0.0f).set_requires_grad(true);
  Tensor s = sqrt(z);  // sqrt(0) = 0 is finite, its gradient 1/(2*0) is not
  expect_error([&] { s.backward(); }, "the backward of op sqrt produced a non-finite gradient");
  set_detect_anomaly(false);
  EXPECT_NO_THROW(log(x));
}

TEST(Autograd, ToDotShowsOpsShapesAndNames) {
  Tensor w = randn({3, 2}).set_requires_grad(true).set_name("weight");
  Tensor x = randn({4, 3});
  Tensor y = relu(matmul(x, w)).sum();
  const std::string dot = to_dot(y);
  EXPECT_THAT(dot, HasSubstr("digraph"));
  EXPECT_THAT(dot, HasSubstr("weight\\n[3, 2]"));
  EXPECT_THAT(dot, HasSubstr("matmul\\n[4, 2]"));
  EXPECT_THAT(dot, HasSubstr("relu\\n[4, 2]"));
  EXPECT_THAT(dot, HasSubstr("sum\\n[]"));
  EXPECT_THAT(dot, HasSubstr("->"));
}

TEST(Autograd, UserDefinedOpJoinsTheGraph) {
  // A custom op: cube, with its backward right below.
  auto cube = [](const Tensor& x) {
    Tensor out = pow(x.detach(), 3.0f);
    return record_op(out, "cube", {x}, [x = x.detach()](const Tensor& g) {
      return std::vector<Tensor>{g * pow(x, 2.0f) * 3.0f};  // d/dx x^3 = 3x^2
    });
  };
  Tensor x = scalar(2.0f).set_requires_grad(true);
  cube(x).backward();
  EXPECT_EQ(x.grad().item(), 12.0f);
}

}  // namespace
}  // namespace ink
