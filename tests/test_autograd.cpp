// Tests for the autograd engine: accumulation, graph lifetime, grad mode, deep graphs, leaks,
// the embedding scatter-add, anomaly detection and the DOT picture.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <thread>
#include <utility>

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
  const int64_t nodes_before = live_node_count();
  {
    Tensor x = scalar(1.0f).set_requires_grad(true);
    Tensor y = x;
    for (int i = 0; i < 100000; ++i) y = y + 1.0f;
    // Since issue 9 a node keeps no inputs alive (add saves nothing), so the chain is held by
    // its nodes, not by 100,000 tensors: count the nodes.
    EXPECT_GT(live_node_count(), nodes_before + 100000);
  }  // destroying the chain must neither recurse nor leak
  EXPECT_EQ(live_tensor_count(), before);
  EXPECT_EQ(live_node_count(), nodes_before);
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
    return record_op(out, "cube", {x}, [x = SavedTensor(x)](const Tensor& g, const GradMask&) {
      return std::vector<Tensor>{g * pow(x.get(), 2.0f) * 3.0f};  // d/dx x^3 = 3x^2
    });
  };
  Tensor x = scalar(2.0f).set_requires_grad(true);
  cube(x).backward();
  EXPECT_EQ(x.grad().item(), 12.0f);
}

// ---- the op contract (issue 9): masks, edges, saved tensors and versions ----

TEST(OpContract, BackwardIsToldWhichInputsNeedAGradient) {
  // A custom op over (data, parameter): its backward must be asked only for the parameter.
  std::vector<GradMask> seen;
  auto scaled = [&seen](const Tensor& a, const Tensor& b) {
    Tensor out = mul(a.detach(), b.detach());
    return record_op(out, "scaled", {a, b},
                     [&seen, a = SavedTensor(a)](const Tensor& g, const GradMask& needs) {
                       seen.push_back(needs);
                       return std::vector<Tensor>{Tensor(), needs[1] ? mul(g, a.get()) : Tensor()};
                     });
  };
  Tensor data = from_vector({1, 2}, {2});
  Tensor w = from_vector({3, 4}, {2}).set_requires_grad(true);
  scaled(data, w).sum().backward();
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_FALSE(seen[0][0]);
  EXPECT_TRUE(seen[0][1]);
  EXPECT_FALSE(seen[0][2]);  // past the end is false, never out of bounds
  EXPECT_EQ(w.grad().to_vector(), (std::vector<float>{1, 2}));
  EXPECT_FALSE(data.grad().defined());
}

TEST(OpContract, MatmulWithADataOperandComputesOnlyTheWeightGradient) {
  // dX = dY W^T would read W. With x data, matmul neither saves W nor computes dX: writing into
  // W after the forward is therefore harmless, and dW = X^T dY is still right.
  Tensor x = from_vector({1, 2, 3, 4}, {2, 2});
  Tensor w = from_vector({1, 0, 0, 1}, {2, 2}).set_requires_grad(true);
  Tensor y = matmul(x, w);
  {
    NoGradGuard no_grad;
    w.data()[0] = 100.0f;  // would be an error if the backward needed w
  }
  EXPECT_NO_THROW(y.sum().backward());
  EXPECT_EQ(w.grad().to_vector(), (std::vector<float>{4, 4, 6, 6}));  // X^T 1
  // The same write when x needs a gradient is an error, because then dX reads W.
  Tensor x2 = from_vector({1, 2, 3, 4}, {2, 2}).set_requires_grad(true);
  Tensor y2 = matmul(x2, w);
  w.data()[1] = 5.0f;
  expect_error([&] { y2.sum().backward(); }, "matmul: a tensor saved for backward was modified");
}

TEST(OpContract, LinearSkipsTheInputGradientOfData) {
  Tensor x = from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor w = ones({2, 3}).set_requires_grad(true);
  Tensor b = zeros({2}).set_requires_grad(true);
  Tensor y = linear(x, w, b);
  {
    NoGradGuard no_grad;
    w.data()[0] = 7.0f;  // not saved: x needs no gradient
  }
  y.sum().backward();
  EXPECT_EQ(w.grad().to_vector(), (std::vector<float>{5, 7, 9, 5, 7, 9}));
  EXPECT_EQ(b.grad().to_vector(), (std::vector<float>{2, 2}));
}

TEST(OpContract, AddSumCatExpandKeepNoInputAlive) {
  // An intermediate result used only by ops whose backward needs no values is freed as soon as
  // its handle goes, long before backward: the node keeps an edge, not the tensor.
  Tensor x = randn({256}).set_requires_grad(true);
  Tensor b = randn({256}).set_requires_grad(true);
  auto check_freed = [&](const char* what, auto&& use) {
    Tensor h = x * 2.0f;  // mul by a scalar saves nothing either
    std::weak_ptr<Storage> storage = h.impl()->storage;
    std::weak_ptr<TensorImpl> impl = h.impl_ptr();
    Tensor y = use(h);
    h = Tensor();
    EXPECT_TRUE(impl.expired()) << what;
    EXPECT_TRUE(storage.expired()) << what;
    x.zero_grad();
    y.sum().backward();
    EXPECT_NE(x.grad().to_vector()[0], 0.0f) << what;
  };
  check_freed("add", [&](const Tensor& h) { return add(h, b); });
  check_freed("sum", [&](const Tensor& h) { return sum(h, {0}); });
  check_freed("cat", [&](const Tensor& h) { return cat({h, b}, 0); });
  check_freed("expand", [&](const Tensor& h) { return expand(h, {3, 256}); });
  check_freed("reshape", [&](const Tensor& h) { return reshape(h, {16, 16}).sum(); });
}

TEST(OpContract, WritingIntoASavedTensorIsAnError) {
  // The example: y = x * w saves w for dy/dx; changing w before backward used to give
  // x.grad = 100 silently (the right answer uses w = 2).
  Tensor x = scalar(3.0f).set_requires_grad(true);
  Tensor w = scalar(2.0f);
  Tensor y = x * w;
  w.data()[0] = 100.0f;
  expect_error([&] { y.backward(); },
               "mul: a tensor saved for backward was modified in place (version 2, saved at "
               "version 1)");
}

TEST(OpContract, VersionsAreSharedByViewsAndOnlyWritesBumpThem) {
  Tensor w = from_vector({1, 2, 3, 4}, {4});
  const uint64_t v0 = w.version();
  Tensor view = w.reshape({2, 2});
  EXPECT_EQ(view.version(), v0);
  (void)std::as_const(w).data();  // a read
  (void)std::as_const(view).to_vector();
  EXPECT_EQ(w.version(), v0);
  view.data()[3] = 5.0f;  // a write through a view bumps the shared counter
  EXPECT_EQ(w.version(), v0 + 1);
  w.bump_version();
  EXPECT_EQ(view.version(), v0 + 2);
  EXPECT_NE(w.clone().impl()->storage, w.impl()->storage);

  // A write through a view of a saved tensor is caught too, and reads never are.
  Tensor x = from_vector({1, 2, 3, 4}, {4}).set_requires_grad(true);
  Tensor y = exp(x);  // saves its output
  Tensor y_view = y.detach().reshape({2, 2});
  (void)std::as_const(y_view).data();
  Tensor loss = (y * 1.0f).sum();
  loss.backward(Tensor(), /*retain_graph=*/true);
  y_view.data()[0] = 0.0f;
  x.zero_grad();
  expect_error([&] { loss.backward(); }, "exp: a tensor saved for backward was modified in place");
}

TEST(OpContract, LeafAccumulatorIsSharedAndHoldsNoCycle) {
  const int64_t nodes_before = live_node_count();
  {
    Tensor w = from_vector({1, 2}, {2}).set_requires_grad(true);
    Tensor y = w * 2.0f + w * 3.0f;  // two ops, one accumulator for w
    EXPECT_EQ(y.grad_fn()->edges.size(), 2u);
    const auto& left = y.grad_fn()->edges[0].node->edges[0].node;
    const auto& right = y.grad_fn()->edges[1].node->edges[0].node;
    EXPECT_TRUE(left->is_accumulator());
    EXPECT_EQ(left, right);
    y.sum().backward();
    EXPECT_EQ(w.grad().to_vector(), (std::vector<float>{5, 5}));
  }
  EXPECT_EQ(live_node_count(), nodes_before);
}

TEST(OpContract, BackwardOfALeafAccumulatesTheSeed) {
  Tensor w = from_vector({1, 2}, {2}).set_requires_grad(true);
  w.backward(from_vector({3, 4}, {2}));
  EXPECT_EQ(w.grad().to_vector(), (std::vector<float>{3, 4}));
}

TEST(OpContract, GradModeIsPerThread) {
  Tensor x = scalar(1.0f).set_requires_grad(true);
  NoGradGuard guard;  // on this thread only
  bool other_thread_records = false;
  std::thread([&] { other_thread_records = (x * 2.0f).requires_grad(); }).join();
  EXPECT_TRUE(other_thread_records);
  EXPECT_FALSE((x * 2.0f).requires_grad());
}

}  // namespace
}  // namespace ink
