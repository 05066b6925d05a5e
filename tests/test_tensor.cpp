// Tests for Tensor: factories, views, printing, errors, the RNG and threads.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <mutex>
#include <thread>

#include "tensor/inkgrad.h"
#include "tests/test_util.h"

namespace ink {
namespace {

using testing_util::expect_error;

using ::testing::HasSubstr;

TEST(Tensor, FactoriesFillShapeAndValues) {
  Tensor z = zeros({2, 3});
  EXPECT_EQ(z.shape(), (Shape{2, 3}));
  EXPECT_EQ(z.numel(), 6);
  EXPECT_EQ(z.dim(), 2);
  for (float v : z.to_vector()) EXPECT_EQ(v, 0.0f);
  for (float v : ones({4}).to_vector()) EXPECT_EQ(v, 1.0f);
  for (float v : full({2, 2}, 3.5f).to_vector()) EXPECT_EQ(v, 3.5f);
  EXPECT_EQ(scalar(2.0f).item(), 2.0f);
  EXPECT_EQ(scalar(2.0f).dim(), 0);
  EXPECT_EQ(arange(4).to_vector(), (std::vector<float>{0, 1, 2, 3}));
  EXPECT_EQ(arange(1.0f, 2.0f, 0.25f).to_vector(), (std::vector<float>{1, 1.25f, 1.5f, 1.75f}));
  Tensor ids = from_vector_i64({3, 1, 4}, {3});
  EXPECT_EQ(ids.dtype(), DType::Int64);
  EXPECT_EQ(ids.to_vector_i64(), (std::vector<int64_t>{3, 1, 4}));
  EXPECT_EQ(zeros({2}, DType::Int64).to_vector_i64(), (std::vector<int64_t>{0, 0}));
}

TEST(Tensor, SizeAcceptsNegativeDims) {
  Tensor t = zeros({2, 3, 4});
  EXPECT_EQ(t.size(0), 2);
  EXPECT_EQ(t.size(-1), 4);
  expect_error([&] { t.size(3); }, "dim 3 is out of range for a tensor of rank 3");
}

TEST(Tensor, CopiesShareDataAndCloneDoesNot) {
  Tensor a = zeros({3});
  Tensor b = a;  // a handle copy
  b.data()[1] = 5.0f;
  EXPECT_EQ(a.to_vector()[1], 5.0f);
  Tensor c = a.clone();
  c.data()[1] = 7.0f;
  EXPECT_EQ(a.to_vector()[1], 5.0f);
}

TEST(Tensor, ReshapeAndViewShareStorage) {
  Tensor a = arange(6);
  Tensor b = a.reshape({2, 3});
  Tensor c = a.view({3, -1});
  EXPECT_EQ(c.shape(), (Shape{3, 2}));
  b.data()[5] = 42.0f;
  EXPECT_EQ(a.to_vector()[5], 42.0f);
  EXPECT_EQ(c.to_vector()[5], 42.0f);
  Tensor d = a.detach();
  EXPECT_EQ(d.data(), a.data());
}

TEST(Tensor, TransposeCopiesValuesInTheRightPlaces) {
  Tensor a = arange(6).reshape({2, 3});
  Tensor t = a.transpose(0, 1);
  EXPECT_EQ(t.shape(), (Shape{3, 2}));
  EXPECT_EQ(t.to_vector(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  Tensor p = arange(24).reshape({2, 3, 4}).permute({2, 0, 1});
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  // p[i, j, k] = a[j, k, i] = j*12 + k*4 + i
  EXPECT_EQ(p.to_vector()[1 * 6 + 1 * 3 + 2], 1 * 12 + 2 * 4 + 1);
}

TEST(Tensor, ToStringSummarises) {
  const std::string s = from_vector({1, 2, 3, 4}, {2, 2}).to_string();
  EXPECT_THAT(s, HasSubstr("[[1.0000, 2.0000], [3.0000, 4.0000]]"));
  EXPECT_THAT(s, HasSubstr("shape=[2, 2]"));
  const std::string big = arange(100).to_string();
  EXPECT_THAT(big, HasSubstr("..."));
  EXPECT_THAT(big, HasSubstr("99.0000"));
  EXPECT_EQ(Tensor().to_string(), "Tensor(undefined)");
}

TEST(Tensor, ItemNeedsOneElement) {
  expect_error([] { zeros({2, 2}).item(); }, "item: only a one-element tensor");
}

TEST(Tensor, ItemOnAnInt64TensorNamesItemAndPointsToItemI64) {
  const Tensor index = from_vector_i64({7}, {1});
  expect_error(
      [&] { (void)index.item(); },
      "item: expected a Float32 or Float64 tensor, got Int64 with shape [1] (use item_i64)");
  EXPECT_EQ(index.item_i64(), 7);
  expect_error([] { (void)scalar(2.0f).item_i64(); },
               "item_i64: expected an Int64 tensor, got Float32 with shape [] (use item)");
}

TEST(Tensor, ArangeRefusesInvalidAndOutOfRangeArguments) {
  expect_error([] { arange(0.0f, 1.0f, 0.0f); }, "arange: invalid range start=0 end=1 step=0");
  expect_error([] { arange(0.0f, INFINITY, 1.0f); }, "arange: invalid range");
  expect_error([] { arange(NAN, 1.0f, 1.0f); }, "arange: invalid range");
  // 3e68 elements: refused before the count is converted to int64 (undefined behaviour).
  expect_error([] { arange(0.0f, 3e38f, 1e-30f); },
               "arange: start=0 end=3e+38 step=1e-30 would give 3e+68 elements");
  expect_error([] { arange(-3e38f, 3e38f, 1.0f); }, "(at most 2^48 are allowed)");
  expect_error([] { arange(int64_t{-1}); }, "arange: end must be non-negative, got -1");
  // A step pointing away from end gives an empty range, as before.
  EXPECT_EQ(arange(0.0f, 3.0f, -1.0f).numel(), 0);
}

TEST(Tensor, RankFiveIsAnError) {
  expect_error([] { zeros({1, 2, 1, 2, 1}); }, "rank 5, which exceeds the maximum rank of 4");
  expect_error([] { arange(32).reshape({2, 2, 2, 2, 2}); }, "exceeds the maximum rank of 4");
}

TEST(Tensor, BadShapesAreErrors) {
  expect_error([] { zeros({-1, 2}); }, "negative size");
  expect_error([] { from_vector({1, 2, 3}, {2, 2}); }, "3 values do not fill shape [2, 2]");
  expect_error(
      [] {
        arange(6).reshape({4, -1});
      },
      "reshape: shape [4, -1] is invalid for an input of shape [6]");
  expect_error([] { arange(6).reshape({-1, -1}); }, "only one dim can be -1");
  expect_error(
      [] {
        zeros({int64_t{1} << 40, int64_t{1} << 40});
      },
      "element count overflows int64");
  expect_error([] { zeros({int64_t{1} << 30, int64_t{1} << 20}); }, "too large");
}

TEST(Tensor, DtypeMismatchIsAnError) {
  Tensor ids = from_vector_i64({1, 2}, {2});
  expect_error([&] { ids.data(); }, "expected a Float32 tensor, got Int64");
  expect_error([&] { add(ids, ids); }, "add: expected a Float32 tensor, got Int64");
  expect_error([&] { ids.set_requires_grad(true); }, "only Float32 tensors can require gradients");
}

TEST(Tensor, UndefinedTensorIsAnError) {
  expect_error([] { Tensor().shape(); }, "undefined");
  expect_error([] { relu(Tensor()); }, "relu: the input tensor is undefined");
}

TEST(Broadcast, AddsRowsAndColumns) {
  Tensor a = from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor row = from_vector({10, 20, 30}, {3});
  Tensor col = from_vector({100, 200}, {2, 1});
  EXPECT_EQ((a + row).to_vector(), (std::vector<float>{11, 22, 33, 14, 25, 36}));
  EXPECT_EQ((a + col).to_vector(), (std::vector<float>{101, 102, 103, 204, 205, 206}));
  EXPECT_EQ((row + col).shape(), (Shape{2, 3}));
  EXPECT_EQ((row + col).to_vector(), (std::vector<float>{110, 120, 130, 210, 220, 230}));
  EXPECT_EQ((a * 2.0f).to_vector(), (std::vector<float>{2, 4, 6, 8, 10, 12}));
  EXPECT_EQ((1.0f - a).to_vector()[5], -5.0f);
  EXPECT_EQ((6.0f / a).to_vector()[2], 2.0f);
}

TEST(Broadcast, MismatchNamesBothShapes) {
  expect_error(
      [] {
        zeros({2, 3}) + zeros({4});
      },
      "add: shapes [2, 3] and [4] cannot be broadcast (3 vs 4 at dim 1)");
  expect_error([] { zeros({2, 3}) * zeros({3, 3}); }, "mul: shapes [2, 3] and [3, 3]");
}

TEST(Matmul, ComputesProductsAndNamesShapesOnError) {
  Tensor a = from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor b = from_vector({1, 0, 0, 1, 1, 1}, {3, 2});
  EXPECT_EQ(matmul(a, b).to_vector(), (std::vector<float>{4, 5, 10, 11}));
  Tensor batched = matmul(cat({a.unsqueeze(0), (a * 2.0f).unsqueeze(0)}, 0), b);
  EXPECT_EQ(batched.shape(), (Shape{2, 2, 2}));
  EXPECT_EQ(batched.to_vector(), (std::vector<float>{4, 5, 10, 11, 8, 10, 20, 22}));
  Tensor bmm =
      matmul(cat({a.unsqueeze(0), a.unsqueeze(0)}, 0), cat({b.unsqueeze(0), b.unsqueeze(0)}, 0));
  EXPECT_EQ(bmm.to_vector(), (std::vector<float>{4, 5, 10, 11, 4, 5, 10, 11}));
  expect_error(
      [] {
        matmul(zeros({64, 96}), zeros({128, 256}));
      },
      "matmul: shapes [64, 96] and [128, 256] cannot be multiplied (96 != 128)");
  expect_error([] { matmul(zeros({2, 2, 2}), zeros({3, 2, 2})); }, "batch sizes differ");
  expect_error([] { matmul(zeros({4}), zeros({4})); }, "expected 2-D or 3-D operands");
}

TEST(Reduce, SumMeanMax) {
  Tensor a = from_vector({1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(a.sum().item(), 21.0f);
  EXPECT_EQ(a.sum({0}).to_vector(), (std::vector<float>{5, 7, 9}));
  EXPECT_EQ(a.sum({1}, true).shape(), (Shape{2, 1}));
  EXPECT_EQ(a.sum({1}, true).to_vector(), (std::vector<float>{6, 15}));
  EXPECT_EQ(a.sum({0, 1}).item(), 21.0f);
  EXPECT_EQ(a.mean().item(), 3.5f);
  EXPECT_EQ(a.mean({0}).to_vector(), (std::vector<float>{2.5f, 3.5f, 4.5f}));
  auto [values, indices] = max(from_vector({1, 9, 3, 7, 2, 8}, {2, 3}), 1);
  EXPECT_EQ(values.to_vector(), (std::vector<float>{9, 8}));
  EXPECT_EQ(indices.to_vector_i64(), (std::vector<int64_t>{1, 2}));
  expect_error([&] { a.sum({0, 0}); }, "dim 0 appears more than once");
  expect_error([&] { a.sum({2}); }, "sum: dim 2 is out of range for a tensor of rank 2");
}

TEST(Reduce, LargeSumIsAccurateAndThreadIndependent) {
  Generator gen(3);
  Tensor x = randn({1000, 300}, &gen);
  set_num_threads(1);
  const float one = x.sum().item();
  const auto cols1 = x.sum({0}).to_vector();
  set_num_threads(2);
  const float two = x.sum().item();
  const auto cols2 = x.sum({0}).to_vector();
  EXPECT_EQ(one, two);
  EXPECT_EQ(cols1, cols2);
  double ref = 0;
  for (float v : x.to_vector()) ref += v;
  EXPECT_NEAR(one, ref, 1e-3);
}

TEST(Reduce, DimZeroSumSplitsColumnsAcrossThreadsWithoutChangingAnyBit) {
  // [N, M] with M over several column blocks (the last one ragged): the bias-gradient shape.
  Generator gen(4);
  const int64_t N = 257, M = 1537;
  const Tensor x = randn({N, M}, &gen);
  // The reference adds each column's rows in order in float, as the kernel promises.
  const std::vector<float> v = x.to_vector();
  std::vector<float> expected(static_cast<size_t>(M));
  for (int64_t j = 0; j < M; ++j) {
    float acc = v[static_cast<size_t>(j)];
    for (int64_t i = 1; i < N; ++i) acc += v[static_cast<size_t>(i * M + j)];
    expected[static_cast<size_t>(j)] = acc;
  }
  const int threads = get_num_threads();
  set_num_threads(1);
  const std::vector<float> sum1 = x.sum({0}).to_vector(), mean1 = x.mean({0}).to_vector();
  const std::vector<float> mid1 = x.reshape({N, 29, 53}).sum({1}).to_vector();
  set_num_threads(2);
  const std::vector<float> sum2 = x.sum({0}).to_vector(), mean2 = x.mean({0}).to_vector();
  const std::vector<float> mid2 = x.reshape({N, 29, 53}).sum({1}).to_vector();
  set_num_threads(threads);
  EXPECT_EQ(sum1, expected);
  EXPECT_EQ(sum2, expected);
  EXPECT_EQ(mean1, mean2);
  EXPECT_EQ(mid1, mid2);
  EXPECT_FLOAT_EQ(mean1[5], expected[5] / static_cast<float>(N));
  // Summing a dim of size 0 gives zeros (it used to read past an empty buffer).
  EXPECT_EQ(zeros({0, 3}).sum({0}).to_vector(), (std::vector<float>{0, 0, 0}));
}

TEST(Cat, ConcatenatesAlongADim) {
  Tensor a = from_vector({1, 2, 3, 4}, {2, 2});
  Tensor b = from_vector({5, 6}, {2, 1});
  EXPECT_EQ(cat({a, b}, 1).to_vector(), (std::vector<float>{1, 2, 5, 3, 4, 6}));
  EXPECT_EQ(cat({a, a}, 0).shape(), (Shape{4, 2}));
  expect_error(
      [&] {
        cat({a, b}, 0);
      },
      "cat: tensor 1 has shape [2, 1], which does not match shape [2, 2] of tensor 0 "
      "except along dim 0");
}

TEST(Ops, SigmoidIsStableAtTheExtremes) {
  Tensor x = from_vector({-1000.0f, 0.0f, 1000.0f}, {3}).set_requires_grad(true);
  Tensor y = sigmoid(x);
  EXPECT_EQ(y.to_vector(), (std::vector<float>{0.0f, 0.5f, 1.0f}));
  y.sum().backward();
  for (float g : x.grad().to_vector()) EXPECT_TRUE(std::isfinite(g));
  EXPECT_EQ(x.grad().to_vector()[1], 0.25f);
}

TEST(Ops, ClampAndPow) {
  Tensor x = from_vector({-2, 0.5f, 3}, {3});
  EXPECT_EQ(clamp(x, 0.0f, 1.0f).to_vector(), (std::vector<float>{0, 0.5f, 1}));
  EXPECT_EQ(clamp(x, std::nullopt, 0.0f).to_vector(), (std::vector<float>{-2, 0, 0}));
  EXPECT_EQ(pow(x, 2.0f).to_vector(), (std::vector<float>{4, 0.25f, 9}));
  expect_error([&] { clamp(x, 2.0f, 1.0f); }, "clamp: min (2) must not exceed max (1)");
}

TEST(Embedding, GathersRowsAndRejectsBadIds) {
  Tensor table = arange(12).reshape({4, 3});
  Tensor out = embedding(table, from_vector_i64({3, 0, 3, 1}, {2, 2}));
  EXPECT_EQ(out.shape(), (Shape{2, 2, 3}));
  EXPECT_EQ(out.to_vector()[0], 9.0f);
  EXPECT_EQ(out.to_vector()[3 * 3 + 2], 5.0f);
  expect_error(
      [&] {
        embedding(table, from_vector_i64({1, 4}, {2}));
      },
      "embedding: index 4 at position 1 is out of range for a table of 4 rows");
  expect_error([&] { embedding(table, from_vector_i64({-1}, {1})); }, "index -1 at position 0");
  expect_error([&] { embedding(table, zeros({2})); }, "indices must be an Int64 tensor");
}

TEST(Random, ValuesArePinnedForASeed) {
  Generator g(42);
  EXPECT_EQ(g.next_u32(), 219053923u);
  EXPECT_EQ(g.next_u32(), 2290441147u);
  Generator u(42);
  EXPECT_FLOAT_EQ(u.uniform(), 0.0510024428f);
  EXPECT_FLOAT_EQ(u.uniform(), 0.533284843f);
  Generator n(42);
  EXPECT_FLOAT_EQ(n.normal(), 0.303112358f);
  EXPECT_FLOAT_EQ(n.normal(), -1.21937478f);
  Generator r(7);
  EXPECT_EQ(r.randint(5, 23), 7);
  EXPECT_EQ(r.randint(5, 23), 10);
}

TEST(Random, SameSeedSameTensorsAndStateRoundTrips) {
  Generator a(5), b(5);
  EXPECT_EQ(randn({10}, &a).to_vector(), randn({10}, &b).to_vector());
  manual_seed(11);
  const auto first = rand({4}).to_vector();
  manual_seed(11);
  EXPECT_EQ(rand({4}).to_vector(), first);
  Generator c(9);
  c.normal();
  const auto state = c.get_state();
  const float next = c.normal();
  Generator d(1);
  d.set_state(state);
  EXPECT_EQ(d.normal(), next);
}

TEST(Random, RandintStaysInRangeAndCoversIt) {
  Generator g(1);
  std::vector<int> counts(4, 0);
  for (int i = 0; i < 4000; ++i) {
    const int64_t v = g.randint(-2, 2);
    ASSERT_GE(v, -2);
    ASSERT_LT(v, 2);
    ++counts[v + 2];
  }
  for (int c : counts) EXPECT_GT(c, 850);
  expect_error([&] { g.randint(3, 3); }, "randint: low (3) must be less than high (3)");
}

TEST(Random, NormalHasUnitVariance) {
  Generator g(2);
  double s = 0, s2 = 0;
  const int n = 200000;
  for (int i = 0; i < n; ++i) {
    const double v = g.normal();
    s += v;
    s2 += v * v;
  }
  EXPECT_NEAR(s / n, 0.0, 0.01);
  EXPECT_NEAR(s2 / n, 1.0, 0.02);
}

TEST(Threads, SetAndRejectBadCounts) {
  set_num_threads(2);
  EXPECT_EQ(get_num_threads(), 2);
  set_num_threads(1);
  EXPECT_EQ(get_num_threads(), 1);
  expect_error([] { set_num_threads(0); }, "set_num_threads: n must be in [1, 1024], got 0");
}

TEST(Threads, ParallelForCoversTheRangeOnceAndRethrows) {
  set_num_threads(2);
  std::vector<int> hits(1000, 0);
  parallel_for(0, 1000, 10, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) ++hits[i];
  });
  for (int h : hits) EXPECT_EQ(h, 1);
  EXPECT_THROW(parallel_for(0, 1000, 10,
                            [](int64_t lo, int64_t) {
                              if (lo > 0) throw Error("boom");
                            }),
               Error);
  set_num_threads(1);
}

TEST(Threads, ResizingBetweenJobsRunsEachJobOnce) {
  // Workers created by a resize once replayed the previous (finished) job.
  int64_t total = 0;
  std::mutex m;
  for (int round = 0; round < 200; ++round) {
    set_num_threads(1 + round % 2);
    // Give new workers time to wake before the next job, as a busy program would.
    std::this_thread::sleep_for(std::chrono::microseconds(500));
    parallel_for(0, 64, 1, [&](int64_t lo, int64_t hi) {
      std::lock_guard<std::mutex> lock(m);
      total += hi - lo;
    });
  }
  set_num_threads(1);
  EXPECT_EQ(total, 200 * 64);
}

TEST(Threads, ElementwiseResultsDoNotDependOnThreadCount) {
  Generator gen(4);
  Tensor a = randn({300, 400}, &gen);
  Tensor b = randn({400}, &gen);
  set_num_threads(1);
  const auto one = sigmoid(a * b + 1.0f).to_vector();
  set_num_threads(2);
  const auto two = sigmoid(a * b + 1.0f).to_vector();
  set_num_threads(1);
  EXPECT_EQ(one, two);
}

TEST(Primitives, SinCosNarrowSplitChunk) {
  Tensor x = from_vector({0.0f, 0.5f, 1.0f}, {3});
  EXPECT_TRUE(allclose(sin(x), from_vector({0.0f, std::sin(0.5f), std::sin(1.0f)}, {3})));
  EXPECT_TRUE(allclose(cos(x), from_vector({1.0f, std::cos(0.5f), std::cos(1.0f)}, {3})));
  Tensor a = arange(12).reshape({3, 4});
  EXPECT_EQ(narrow(a, 1, 1, 2).to_vector(), (std::vector<float>{1, 2, 5, 6, 9, 10}));
  EXPECT_EQ(narrow(a, 0, -1, 1).to_vector(), (std::vector<float>{8, 9, 10, 11}));
  expect_error([&] { narrow(a, 1, 3, 2); },
               "narrow: the slice [3, 5) is out of range for dim 1 of size 4 (shape [3, 4])");
  const auto pieces = split(a, 3, 1);
  ASSERT_EQ(pieces.size(), 2u);
  EXPECT_EQ(pieces[0].shape(), (Shape{3, 3}));
  EXPECT_EQ(pieces[1].to_vector(), (std::vector<float>{3, 7, 11}));
  expect_error([&] { split(a, {1, 2}, 1); }, "split: sizes [1, 2] add up to 3, but dim 1");
  const auto chunks = chunk(a, 3, 0);
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(chunks[2].to_vector(), (std::vector<float>{8, 9, 10, 11}));
  EXPECT_EQ(chunk(arange(5), 2).size(), 2u);  // sizes 3 and 2, as torch.chunk
  Tensor ids = from_vector_i64({1, 2, 3, 4}, {2, 2});
  EXPECT_EQ(narrow(ids, 1, 1, 1).to_vector_i64(), (std::vector<int64_t>{2, 4}));
}

TEST(Matmul, TransposedAndBatchedLayoutsMatchTransposedCopies) {
  Generator gen(7);
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      // a is [2, 3, M=5, K=4] (or its transpose in the last two dims), b [2, 3, K, N=6].
      Tensor a = randn(ta ? Shape{2, 3, 4, 5} : Shape{2, 3, 5, 4}, &gen);
      Tensor b = randn(tb ? Shape{2, 3, 6, 4} : Shape{2, 3, 4, 6}, &gen);
      Tensor a_plain = ta ? a.transpose(2, 3) : a;
      Tensor b_plain = tb ? b.transpose(2, 3) : b;
      Tensor expected = matmul(a_plain.reshape({6, 5, 4}), b_plain.reshape({6, 4, 6}));
      Tensor got = matmul(a, b, ta, tb);
      EXPECT_EQ(got.shape(), (Shape{2, 3, 5, 6}));
      EXPECT_TRUE(allclose(got.reshape({6, 5, 6}), expected, 1e-5f, 1e-5f));
      // A 2-D right operand broadcast over the batch.
      Tensor w = randn(tb ? Shape{6, 4} : Shape{4, 6}, &gen);
      Tensor w_plain = tb ? w.transpose(0, 1) : w;
      EXPECT_TRUE(allclose(matmul(a, w, ta, tb), matmul(a_plain, w_plain), 1e-5f, 1e-5f));
    }
  }
  expect_error(
      [] {
        matmul(zeros({2, 3, 4}), zeros({2, 3, 4}), false, false);
      },
      "matmul: shapes [2, 3, 4] and [2, 3, 4] cannot be multiplied (4 != 3)");
  expect_error(
      [] {
        matmul(zeros({3, 4}), zeros({5, 4}), true, false);
      },
      "matmul: shapes [3, 4]^T and [5, 4] cannot be multiplied (3 != 5)");
}

TEST(Matmul, BatchedProductsDoNotDependOnThreadCount) {
  Generator gen(8);
  Tensor a = randn({16, 24, 40}, &gen).set_requires_grad(true);
  Tensor b = randn({16, 24, 40}, &gen).set_requires_grad(true);
  const int threads = get_num_threads();
  std::vector<std::vector<float>> results;
  for (int n : {1, 2, 3}) {
    set_num_threads(n);
    a.set_grad(Tensor());
    b.set_grad(Tensor());
    Tensor c = matmul(a, b, false, true);  // [16, 24, 24]
    c.sum().backward();
    std::vector<float> all = c.to_vector();
    for (float v : a.grad().to_vector()) all.push_back(v);
    for (float v : b.grad().to_vector()) all.push_back(v);
    results.push_back(all);
  }
  set_num_threads(threads);
  EXPECT_EQ(results[0], results[1]);
  EXPECT_EQ(results[0], results[2]);
}

}  // namespace
}  // namespace ink
