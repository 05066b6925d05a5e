// The evaluation metrics (models/eval_metrics.h): NumPy/SciPy reference values from
// tests/data/eval_golden.json (written by scripts/make_eval_golden.py), the eigen solver, and
// the known cases: a set against itself, one picture repeated, pictures of the wrong prompt.
// Then the judge (models/judge.h), evaluate() (models/eval_report.h) and `inkgrad eval`, and the
// scenes side of the command line: `inkgrad eval` on a scenes model, `inkgrad data --dataset
// scenes` and `inkgrad judge --dataset scenes`.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "models/diffusion/model.h"
#include "models/eval_metrics.h"
#include "models/eval_report.h"
#include "models/judge.h"
#include "models/registry.h"
#include "models/scenes_eval.h"
#include "models/shapes.h"
#include "models/text_to_image.h"
#include "models/word_tokenizer.h"
#include "nn/safetensors.h"
#include "tensor/autograd.h"
#include "tensor/gradcheck.h"
#include "tensor/ops.h"
#include "tensor/parallel.h"
#include "tests/test_util.h"

namespace ink {
namespace {

using json = nlohmann::json;
using testing_util::expect_error;

const json& golden() {
  static const json data = [] {
    std::ifstream file(INK_TEST_DATA_DIR "/eval_golden.json");
    if (!file) throw std::runtime_error("cannot open " INK_TEST_DATA_DIR "/eval_golden.json");
    return json::parse(file);
  }();
  return data;
}

// A feature set that owns its values.
struct OwnedRows {
  std::vector<float> values;
  int64_t count = 0;
  int64_t dim = 0;
  FeatureRows rows() const { return {values.data(), count, dim}; }
};

OwnedRows golden_rows(const char* name) {
  const json& j = golden().at(name);
  return {j.at("data").get<std::vector<float>>(), j.at("count").get<int64_t>(),
          j.at("dim").get<int64_t>()};
}

// Expects |actual - expected| <= tolerance * max(1, |expected|).
void expect_close(double actual, double expected, double tolerance, const char* what) {
  EXPECT_NEAR(actual, expected, tolerance * std::max(1.0, std::abs(expected))) << what;
}

// n pictures of `prompt` drawn from `seed`, as rows of kImagePixels values.
OwnedRows ground_truth(int64_t prompt, int64_t n, uint64_t seed) {
  OwnedRows set{std::vector<float>(static_cast<size_t>(n * kImagePixels)), n, kImagePixels};
  Generator gen(seed);
  for (int64_t i = 0; i < n; ++i) draw_shape(prompt, gen, set.values.data() + i * kImagePixels);
  return set;
}

// Each 28x28 picture averaged over 4x4 blocks: 49 features, a cheap stand-in for the judge's
// features in the tests of the feature-space metrics.
OwnedRows block_means(const OwnedRows& pictures) {
  constexpr int64_t kBlock = 4;
  constexpr int64_t kSide = kImageSide / kBlock;
  OwnedRows features{std::vector<float>(static_cast<size_t>(pictures.count * kSide * kSide)),
                     pictures.count, kSide * kSide};
  for (int64_t i = 0; i < pictures.count; ++i) {
    const float* picture = pictures.values.data() + i * kImagePixels;
    for (int64_t y = 0; y < kImageSide; ++y) {
      for (int64_t x = 0; x < kImageSide; ++x) {
        features.values[i * kSide * kSide + (y / kBlock) * kSide + x / kBlock] +=
            picture[y * kImageSide + x] / (kBlock * kBlock);
      }
    }
  }
  return features;
}

// `count` copies of row `index` of `set`.
OwnedRows repeated(const OwnedRows& set, int64_t index, int64_t count) {
  OwnedRows out{{}, count, set.dim};
  for (int64_t i = 0; i < count; ++i) {
    out.values.insert(out.values.end(), set.values.begin() + index * set.dim,
                      set.values.begin() + (index + 1) * set.dim);
  }
  return out;
}

// ---- against NumPy / SciPy ----

TEST(EvalGolden, MeanPairwiseDistanceAndDiversity) {
  const OwnedRows real = golden_rows("real");
  const OwnedRows generated = golden_rows("generated");
  expect_close(mean_pairwise_distance(real.rows()), golden().at("mean_pairwise_real"), 1e-12,
               "mean pairwise distance");
  expect_close(diversity(generated.rows(), real.rows()), golden().at("diversity_generated_vs_real"),
               1e-12, "diversity");
}

TEST(EvalGolden, CovarianceMatchesNumpyCov) {
  const GaussianFit fit = fit_gaussian(golden_rows("real").rows());
  const auto expected = golden().at("covariance_real").get<std::vector<double>>();
  ASSERT_EQ(fit.covariance.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    expect_close(fit.covariance[i], expected[i], 1e-12, "covariance");
  }
}

TEST(EvalGolden, EigenvaluesMatchNumpyEigvalsh) {
  const GaussianFit fit = fit_gaussian(golden_rows("real").rows());
  const SymmetricEigen eig = symmetric_eigen(fit.covariance, fit.dim);
  const auto expected = golden().at("eigenvalues_covariance_real").get<std::vector<double>>();
  ASSERT_EQ(eig.eigenvalues.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    expect_close(eig.eigenvalues[i], expected[i], 1e-10, "eigenvalue");
  }
}

TEST(EvalGolden, FrechetDistanceMatchesScipySqrtm) {
  const OwnedRows real = golden_rows("real");
  const OwnedRows generated = golden_rows("generated");
  const OwnedRows few = golden_rows("few");
  expect_close(frechet_distance(real.rows(), generated.rows()), golden().at("fd_real_generated"),
               1e-9, "FD real vs generated");
  // A singular covariance (5 points in 6 dimensions), in both orders: the order matters to the
  // route through S1^1/2, not to the result.
  expect_close(frechet_distance(real.rows(), few.rows()), golden().at("fd_real_few"), 1e-7,
               "FD real vs few");
  expect_close(frechet_distance(few.rows(), real.rows()), golden().at("fd_few_real"), 1e-7,
               "FD few vs real");
}

TEST(EvalGolden, PrecisionRecallMatchNumpy) {
  const OwnedRows real = golden_rows("real");
  const OwnedRows generated = golden_rows("generated");
  const int64_t k = golden().at("k");
  const std::vector<double> radii = kth_neighbour_distances(real.rows(), k);
  const auto expected_radii = golden().at("kth_radii_real").get<std::vector<double>>();
  ASSERT_EQ(radii.size(), expected_radii.size());
  for (size_t i = 0; i < radii.size(); ++i)
    expect_close(radii[i], expected_radii[i], 1e-12, "radius");
  const PrecisionRecall pr = precision_recall(real.rows(), generated.rows(), k);
  EXPECT_DOUBLE_EQ(pr.precision, golden().at("precision").get<double>());
  EXPECT_DOUBLE_EQ(pr.recall, golden().at("recall").get<double>());
  // The golden set is not a trivial case.
  EXPECT_GT(pr.precision, 0.0);
  EXPECT_LT(pr.precision, 1.0);
  EXPECT_GT(pr.recall, 0.0);
  EXPECT_LT(pr.recall, 1.0);
}

// ---- the eigen solver ----

TEST(SymmetricEigen, ReconstructsARandomSymmetricMatrix) {
  constexpr int64_t n = 12;
  Generator gen(3);
  std::vector<double> a(n * n);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j <= i; ++j) a[i * n + j] = a[j * n + i] = gen.normal();
  }
  const SymmetricEigen eig = symmetric_eigen(a, n);
  for (int64_t k = 1; k < n; ++k) EXPECT_LE(eig.eigenvalues[k - 1], eig.eigenvalues[k]);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double reconstructed = 0.0;  // (V diag(lambda) V^T)_ij
      double gram = 0.0;           // (V^T V)_ij
      for (int64_t k = 0; k < n; ++k) {
        reconstructed +=
            eig.eigenvectors[i * n + k] * eig.eigenvalues[k] * eig.eigenvectors[j * n + k];
        gram += eig.eigenvectors[k * n + i] * eig.eigenvectors[k * n + j];
      }
      EXPECT_NEAR(reconstructed, a[i * n + j], 1e-12);
      EXPECT_NEAR(gram, i == j ? 1.0 : 0.0, 1e-12);
    }
  }
}

TEST(SymmetricEigen, RepeatedEigenvaluesAndTinySizes) {
  // 2 I + 1 1^T has eigenvalues 2, 2, 5.
  const std::vector<double> a = {3, 1, 1, 1, 3, 1, 1, 1, 3};
  const SymmetricEigen eig = symmetric_eigen(a, 3);
  EXPECT_NEAR(eig.eigenvalues[0], 2.0, 1e-14);
  EXPECT_NEAR(eig.eigenvalues[1], 2.0, 1e-14);
  EXPECT_NEAR(eig.eigenvalues[2], 5.0, 1e-14);
  EXPECT_EQ(symmetric_eigen(std::vector<double>{-4.0}, 1).eigenvalues, std::vector<double>{-4.0});
  EXPECT_TRUE(symmetric_eigen(std::vector<double>{}, 0).eigenvalues.empty());
  expect_error(
      [] {
        symmetric_eigen(std::vector<double>{1, 2, 3}, 2);
      },
      "symmetric_eigen: a [2, 2] matrix needs 4 values, got 3");
}

// ---- known cases ----

TEST(EvalMetrics, GroundTruthAgainstItself) {
  for (int64_t prompt = 0; prompt < kNumShapePrompts; ++prompt) {
    SCOPED_TRACE(kShapePrompts[prompt]);
    const OwnedRows pictures = ground_truth(prompt, 128, 100 + prompt);
    const OwnedRows features = block_means(pictures);
    EXPECT_DOUBLE_EQ(diversity(pictures.rows(), pictures.rows()), 1.0);
    const GaussianFit fit = fit_gaussian(features.rows());
    double trace = 0.0;
    for (int64_t k = 0; k < fit.dim; ++k) trace += fit.covariance[k * fit.dim + k];
    EXPECT_LT(frechet_distance(fit, fit), 1e-9 * trace);
    const PrecisionRecall pr = precision_recall(features.rows(), features.rows());
    EXPECT_EQ(pr.precision, 1.0);
    EXPECT_EQ(pr.recall, 1.0);
  }
}

TEST(EvalMetrics, FreshGroundTruthIsTheCeiling) {
  // Two independent draws of the same prompt: as varied as each other, close in FD, and each
  // mostly on the other's manifold.
  for (int64_t prompt = 0; prompt < kNumShapePrompts; ++prompt) {
    SCOPED_TRACE(kShapePrompts[prompt]);
    const OwnedRows a = ground_truth(prompt, 256, 1);
    const OwnedRows b = ground_truth(prompt, 256, 2);
    EXPECT_NEAR(diversity(b.rows(), a.rows()), 1.0, 0.05);
    const OwnedRows fa = block_means(a);
    const OwnedRows fb = block_means(b);
    const PrecisionRecall pr = precision_recall(fa.rows(), fb.rows());
    // Scattered prompts (sparse dots) in 49 dims are the hardest for a k = 3 manifold: about 0.65.
    EXPECT_GT(pr.precision, 0.6);
    EXPECT_GT(pr.recall, 0.6);
    // Another prompt is much further away than a fresh draw of the same one.
    const OwnedRows other = block_means(ground_truth((prompt + 1) % kNumShapePrompts, 256, 3));
    EXPECT_LT(3.0 * frechet_distance(fa.rows(), fb.rows()),
              frechet_distance(fa.rows(), other.rows()));
  }
}

TEST(EvalMetrics, OnePictureRepeated) {
  const OwnedRows real = ground_truth(5, 256, 7);  // circles
  const OwnedRows collapsed = repeated(ground_truth(5, 1, 8), 0, 256);
  EXPECT_EQ(diversity(collapsed.rows(), real.rows()), 0.0);
  const PrecisionRecall pr =
      precision_recall(block_means(real).rows(), block_means(collapsed).rows());
  EXPECT_LT(pr.recall, 0.05);  // the samples' manifold is one point
}

TEST(EvalMetrics, ShiftedFeaturesGiveTheSquaredShift) {
  // Same covariance, means 0.5 apart in each of the 49 dims: FD = 49 * 0.25.
  OwnedRows a = block_means(ground_truth(7, 200, 11));
  OwnedRows b = a;
  for (float& v : b.values) v += 0.5f;
  EXPECT_NEAR(frechet_distance(a.rows(), b.rows()), 49 * 0.25, 1e-4);
}

TEST(EvalMetrics, Fidelity) {
  const std::vector<int64_t> predicted = {2, 2, 3, 2};
  EXPECT_DOUBLE_EQ(fidelity(predicted, 2), 0.75);
  EXPECT_DOUBLE_EQ(fidelity(predicted, 5), 0.0);  // the wrong prompt
  expect_error([] { fidelity(std::vector<int64_t>{}, 0); }, "fidelity: no predictions");
}

TEST(EvalMetrics, SameResultAtAnyThreadCount) {
  const OwnedRows a = block_means(ground_truth(8, 300, 21));
  const OwnedRows b = block_means(ground_truth(8, 300, 22));
  const int threads = get_num_threads();
  set_num_threads(1);
  const double distance_1 = mean_pairwise_distance(a.rows());
  const double fd_1 = frechet_distance(a.rows(), b.rows());
  const PrecisionRecall pr_1 = precision_recall(a.rows(), b.rows());
  set_num_threads(3);
  EXPECT_EQ(mean_pairwise_distance(a.rows()), distance_1);
  EXPECT_EQ(frechet_distance(a.rows(), b.rows()), fd_1);
  const PrecisionRecall pr_3 = precision_recall(a.rows(), b.rows());
  EXPECT_EQ(pr_3.precision, pr_1.precision);
  EXPECT_EQ(pr_3.recall, pr_1.recall);
  set_num_threads(threads);
}

TEST(EvalMetrics, BadInput) {
  const OwnedRows a = golden_rows("real");
  const OwnedRows one = repeated(a, 0, 1);
  OwnedRows narrow = a;
  narrow.dim = 3;
  narrow.count = 2;
  expect_error([&] { mean_pairwise_distance(one.rows()); },
               "mean_pairwise_distance: needs at least 2 rows, got 1");
  expect_error([&] { diversity(a.rows(), narrow.rows()); },
               "diversity: feature sets of dimension 6 and 3 cannot be compared");
  expect_error([&] { diversity(a.rows(), repeated(a, 3, 4).rows()); },
               "diversity: the reference set has no spread (all 4 rows are equal)");
  expect_error([&] { frechet_distance(a.rows(), narrow.rows()); },
               "frechet_distance: feature sets of dimension 6 and 3 cannot be compared");
  expect_error([&] { fit_gaussian(one.rows()); }, "fit_gaussian: needs at least 2 rows, got 1");
  expect_error([&] { precision_recall(a.rows(), repeated(a, 0, 3).rows()); },
               "precision_recall: k = 3 needs more than 3 points in each set, got 40 real and 3 "
               "generated");
  expect_error([&] { precision_recall(a.rows(), a.rows(), 0); },
               "precision_recall: k must be at least 1, got 0");
  expect_error(
      [] {
        mean_pairwise_distance({nullptr, 4, 2});
      },
      "mean_pairwise_distance: a feature set of 4 x 2 has no data");
}

// ---- the judge's building blocks ----

// conv2d with padding 1, written out: out[b][o][y][x] = bias[o] + sum over c, dy, dx.
std::vector<float> naive_conv3x3(const Tensor& x, const Tensor& w, const Tensor& b) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), O = w.size(0);
  std::vector<float> out(static_cast<size_t>(B * O * H * W));
  const float* xv = x.data();
  const float* wv = w.data();
  for (int64_t n = 0; n < B; ++n)
    for (int64_t o = 0; o < O; ++o)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t xx = 0; xx < W; ++xx) {
          double sum = b.data()[o];
          for (int64_t c = 0; c < C; ++c)
            for (int64_t dy = 0; dy < 3; ++dy)
              for (int64_t dx = 0; dx < 3; ++dx) {
                const int64_t sy = y + dy - 1, sx = xx + dx - 1;
                if (sy < 0 || sy >= H || sx < 0 || sx >= W) continue;
                sum += double{xv[((n * C + c) * H + sy) * W + sx]} *
                       wv[((o * C + c) * 3 + dy) * 3 + dx];
              }
          out[((n * O + o) * H + y) * W + xx] = static_cast<float>(sum);
        }
  return out;
}

TEST(JudgeLayers, PatchConvMatchesANaiveConvolution) {
  Generator gen(5);
  const Tensor x = randn({2, 3, 5, 6}, &gen);
  const Tensor w = randn({4, 3, 3, 3}, &gen);
  const Tensor b = randn({4}, &gen);
  const Tensor y = patch_conv3x3(x, w, b);
  EXPECT_EQ(y.shape(), (Shape{2, 4, 5, 6}));
  const std::vector<float> expected = naive_conv3x3(x, w, b);
  const std::vector<float> actual = y.to_vector();
  for (size_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(actual[i], expected[i], 1e-5) << i;
}

TEST(JudgeLayers, PatchConvGradcheck) {
  Generator gen(6);
  const Tensor x = randn({2, 2, 4, 3}, &gen).set_requires_grad(true);
  const Tensor w = randn({3, 2, 3, 3}, &gen).set_requires_grad(true);
  const Tensor b = randn({3}, &gen).set_requires_grad(true);
  const auto f = [](const std::vector<Tensor>& v) { return patch_conv3x3(v[0], v[1], v[2]); };
  const GradcheckResult r = gradcheck(f, {x, w, b});
  EXPECT_TRUE(r.ok) << r.message;
  // The same input used twice (a residual-style reuse).
  const auto twice = [](const std::vector<Tensor>& v) {
    return patch_conv3x3(v[0], v[1], v[2]) * v[0].sum();
  };
  const Tensor x1 = randn({1, 3, 3, 3}, &gen).set_requires_grad(true);
  const Tensor w3 = randn({3, 3, 3, 3}, &gen).set_requires_grad(true);
  const GradcheckResult r2 = gradcheck(twice, {x1, w3, b});
  EXPECT_TRUE(r2.ok) << r2.message;
}

TEST(JudgeLayers, PatchConvLayerHasTheNamesOfConv2d) {
  Generator gen(7);
  PatchConv3x3 conv(2, 5, &gen);
  const NamedTensors params = conv.named_parameters();
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0].first, "weight");
  EXPECT_EQ(params[0].second.shape(), (Shape{5, 2, 3, 3}));
  EXPECT_EQ(params[1].first, "bias");
  const float bound = 1.0f / std::sqrt(18.0f);
  for (float v : params[0].second.to_vector()) EXPECT_LE(std::abs(v), bound);
  expect_error(
      [&] {
        conv.forward(zeros({1, 3, 4, 4}));
      },
      "patch_conv3x3: input [1, 3, 4, 4] does not match weight [5, 2, 3, 3]");
}

TEST(JudgeLayers, AveragePoolAndCrossEntropy) {
  const Tensor x =
      from_vector({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, {1, 1, 4, 4});
  EXPECT_EQ(average_pool_2x2(x).to_vector(), (std::vector<float>{3.5f, 5.5f, 11.5f, 13.5f}));
  expect_error(
      [] {
        average_pool_2x2(zeros({1, 1, 3, 4}));
      },
      "average_pool_2x2: expected [B, C, H, W] with even H and W, got [1, 1, 3, 4]");

  // -log softmax([1, 2, 3])[2] and -log softmax([0, 0, 1000])[0].
  const Tensor logits = from_vector({1, 2, 3, 0, 0, 1000}, {2, 3});
  const Tensor labels = from_vector_i64({2, 0}, {2});
  const double first = -(3.0 - std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)));
  EXPECT_NEAR(cross_entropy(logits, labels).item(), (first + 1000.0) / 2.0, 1e-3);
  const Tensor z =
      from_vector({0.3f, -1.2f, 0.8f, 2.0f, 0.1f, -0.5f}, {2, 3}).set_requires_grad(true);
  const GradcheckResult r =
      gradcheck([&](const std::vector<Tensor>& v) { return cross_entropy(v[0], labels); }, {z});
  EXPECT_TRUE(r.ok) << r.message;
  expect_error(
      [&] {
        cross_entropy(logits, from_vector_i64({2, 3}, {2}));
      },
      "cross_entropy: label 3 of sample 1 is not in [0, 3)");
}

TEST(JudgeLayers, AugmentationIsDeterministicAndInRange) {
  Generator a(9), b(9);
  for (int64_t prompt = 0; prompt < kNumShapePrompts; ++prompt) {
    std::vector<float> x(kImagePixels), y(kImagePixels);
    draw_shape(prompt, a, x.data());
    draw_shape(prompt, b, y.data());
    augment_picture(x.data(), a);
    augment_picture(y.data(), b);
    EXPECT_EQ(x, y);
    for (float v : x) {
      EXPECT_GE(v, 0.0f);
      EXPECT_LE(v, 1.0f);
    }
  }
}

// ---- the judge ----

std::string committed_judge() {
  return INK_SOURCE_DIR "/models/judge.safetensors";
}

Judge& shared_judge() {
  static std::unique_ptr<Judge> judge = load_judge(committed_judge());
  return *judge;
}

TEST(Judge, CommittedJudgeIsAccurateOnFreshGroundTruth) {
  // A seed the judge's own recipe never used, 1000 pictures of every prompt.
  EXPECT_GE(judge_accuracy(shared_judge(), 1000, 0xF2E5), 0.995);
  // Robust to the augmentation it was trained with, too.
  EXPECT_GE(judge_accuracy(shared_judge(), 200, 0xF2E6, /*augmented=*/true), 0.97);
}

TEST(Judge, WrongPromptScoresFidelityNearZero) {
  Generator gen(31);
  for (int64_t prompt = 0; prompt < kNumShapePrompts; ++prompt) {
    std::vector<float> pictures(100 * kImagePixels);
    for (int64_t i = 0; i < 100; ++i) draw_shape(prompt, gen, pictures.data() + i * kImagePixels);
    const Judgement j = judge_pictures(shared_judge(), from_vector(pictures, {100, kImagePixels}));
    EXPECT_GE(fidelity(j.predicted, prompt), 0.99);
    EXPECT_LE(fidelity(j.predicted, (prompt + 1) % kNumShapePrompts), 0.01);
    EXPECT_EQ(j.dim, 64);
    EXPECT_EQ(j.features.size(), 100u * 64u);
  }
}

TEST(Judge, TrainingOnATinyBudgetIsDeterministicAndLearns) {
  JudgeTrainConfig config;
  config.judge = {4, 8, 16};
  config.steps = 100;
  config.pictures_per_prompt = 4;
  config.lr = 5e-3;
  config.seed = 77;
  std::vector<float> losses;
  const auto first = train_judge(config, [&](const JudgeProgress& p) { losses.push_back(p.loss); });
  ASSERT_EQ(losses.size(), 100u);
  const int threads = get_num_threads();
  set_num_threads(threads == 1 ? 2 : 1);
  const auto second = train_judge(config);
  set_num_threads(threads);
  const NamedTensors a = first->state_dict();
  const NamedTensors b = second->state_dict();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].second.to_vector(), b[i].second.to_vector());
  // Well above chance (1/9) after 100 small steps (0.63 when written).
  const double accuracy = judge_accuracy(*first, 30, 5);
  EXPECT_GT(accuracy, 0.4);
  float early = 0.0f, late = 0.0f;
  for (size_t i = 0; i < 10; ++i) {
    early += losses[i];
    late += losses[losses.size() - 1 - i];
  }
  EXPECT_LT(late, early);
}

TEST(Judge, FilesRoundTripAndRefuseOtherCheckpoints) {
  const std::string dir = ::testing::TempDir();
  Generator gen(1);
  Judge judge({4, 6, 10}, &gen);
  save_judge(dir + "/judge.safetensors", judge, {{"accuracy", "0.5"}});
  const auto loaded = load_judge(dir + "/judge.safetensors");
  EXPECT_EQ(loaded->config(), (JudgeConfig{4, 6, 10}));
  EXPECT_EQ(loaded->fc2->weight.to_vector(), judge.fc2->weight.to_vector());

  TextToImageModel model;
  save_safetensors(dir + "/model.safetensors", model.state_dict());
  expect_error([&] { load_judge(dir + "/model.safetensors"); },
               "model.safetensors is not a judge file (its metadata has no \"kind\"");
  save_safetensors(dir + "/other.safetensors", model.state_dict(), {{"kind", "text_to_image"}});
  expect_error([&] { load_judge(dir + "/other.safetensors"); },
               "other.safetensors is a \"text_to_image\" file, not a judge");
  save_safetensors(
      dir + "/wrong.safetensors", judge.state_dict(),
      {{"kind", "judge"}, {"config", R"({"channels1": 4, "channels2": 6, "hidden": 12})"}});
  expect_error([&] { load_judge(dir + "/wrong.safetensors"); },
               "the judge's parameters do not match its config");
}

// ---- evaluate() ----

// A "model" that draws from the shape generators, optionally of the wrong prompt or one
// picture repeated.
PromptSampler ground_truth_sampler(int64_t prompt_offset, bool collapsed) {
  return [=](int64_t prompt, int64_t n, Generator& gen) {
    Tensor out = empty({n, 1, kImageSide, kImageSide});
    for (int64_t i = 0; i < n; ++i) {
      Generator g = gen;
      draw_shape((prompt + prompt_offset) % kNumShapePrompts, collapsed ? g : gen,
                 out.data() + i * kImagePixels);
    }
    return out;
  };
}

EvalOptions small_options() {
  EvalOptions options;
  options.samples_per_prompt = 64;
  options.seed = 3;
  return options;
}

TEST(Evaluate, GroundTruthScoresLikeTheCeiling) {
  const EvalResult r = evaluate(ground_truth_sampler(0, false), shared_judge(), small_options());
  ASSERT_EQ(r.model.prompts.size(), 9u);
  // The judge errs on about 0.3% of sparse dots and 0.2% of squares, so 64 pictures of one
  // prompt may hold an error or two; over all 576 it is right at least 99% of the time.
  for (size_t p = 0; p < 9; ++p) {
    SCOPED_TRACE(r.model.prompts[p].prompt);
    EXPECT_GE(r.model.prompts[p].fidelity, 0.95);
    EXPECT_NEAR(r.model.prompts[p].diversity, 1.0, 0.1);
    EXPECT_GE(r.ceiling.prompts[p].fidelity, 0.95);
  }
  EXPECT_GE(r.model.overall.fidelity, 0.99);
  EXPECT_GE(r.ceiling.overall.fidelity, 0.99);
  EXPECT_GT(r.model.overall.precision, 0.8);
  EXPECT_GT(r.model.overall.recall, 0.8);
  // Ground truth is a fresh draw, just like the ceiling's, so its FD is of the same size.
  EXPECT_LT(r.model.overall.frechet_distance, 2.0 * r.ceiling.overall.frechet_distance + 1e-3);
  EXPECT_EQ(r.kept_samples.size(), 9u);
  EXPECT_EQ(r.kept_samples[0].size(), 8u * kImagePixels);
}

TEST(Evaluate, CollapsedAndWrongModelsScoreBadly) {
  const EvalResult collapsed =
      evaluate(ground_truth_sampler(0, true), shared_judge(), small_options());
  const EvalResult wrong =
      evaluate(ground_truth_sampler(1, false), shared_judge(), small_options());
  for (size_t p = 0; p < 9; ++p) {
    SCOPED_TRACE(collapsed.model.prompts[p].prompt);
    EXPECT_EQ(collapsed.model.prompts[p].diversity, 0.0);
    EXPECT_LT(collapsed.model.prompts[p].recall, 0.05);
    EXPECT_LE(wrong.model.prompts[p].fidelity, 0.02);
    EXPECT_GT(wrong.model.prompts[p].frechet_distance,
              5.0 * wrong.ceiling.prompts[p].frechet_distance);
  }
  EXPECT_LT(wrong.model.overall.fidelity, 0.02);
}

TEST(Evaluate, SameSeedSameNumbersAndJson) {
  const EvalResult a = evaluate(ground_truth_sampler(0, false), shared_judge(), small_options());
  const EvalResult b = evaluate(ground_truth_sampler(0, false), shared_judge(), small_options());
  const std::string json_a = eval_json(a, {{"checkpoint", "\"x\""}});
  EXPECT_EQ(json_a, eval_json(b, {{"checkpoint", "\"x\""}}));
  const nlohmann::json j = nlohmann::json::parse(json_a);
  EXPECT_EQ(j.at("checkpoint"), "x");
  EXPECT_EQ(j.at("samples_per_prompt"), 64);
  EXPECT_EQ(j.at("model").at("prompts").size(), 9u);
  EXPECT_EQ(j.at("model").at("prompts")[5].at("prompt"), "circle");
  EXPECT_DOUBLE_EQ(j.at("ceiling").at("overall").at("recall").get<double>(),
                   a.ceiling.overall.recall);
  EXPECT_THAT(eval_table(a), ::testing::HasSubstr("two vertical lines"));
}

TEST(Evaluate, BadInput) {
  EvalOptions options = small_options();
  options.samples_per_prompt = 3;
  expect_error([&] { evaluate(ground_truth_sampler(0, false), shared_judge(), options); },
               "evaluate: 3 samples per prompt are too few");
  const PromptSampler wrong_shape = [](int64_t, int64_t n, Generator&) { return zeros({n, 10}); };
  expect_error([&] { evaluate(wrong_shape, shared_judge(), small_options()); },
               "evaluate: the model returned [64, 10] for 64 samples of \"horizontal line\"");
  const PromptSampler nan = [](int64_t, int64_t n, Generator&) {
    return full({n, 1, 28, 28}, std::nanf(""));
  };
  expect_error([&] { evaluate(nan, shared_judge(), small_options()); },
               "evaluate: sample 1 of \"horizontal line\" has a nan pixel");
}

// ---- inkgrad eval, end to end ----

struct CliRun {
  int code = -1;
  std::string out, err;
};

std::string read_text(const std::string& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// Runs the inkgrad binary with `args` (each quoted for the shell).
CliRun inkgrad(const std::vector<std::string>& args) {
  static int counter = 0;
  const std::string base = ::testing::TempDir() + "/inkgrad_eval_cli_" +
                           std::to_string(::getpid()) + "_" + std::to_string(counter++);
  std::string command = std::string("'") + INKGRAD_BINARY + "'";
  for (const std::string& arg : args) command += " '" + arg + "'";
  command += " >" + base + ".out 2>" + base + ".err </dev/null";
  const int status = std::system(command.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 1000, read_text(base + ".out"),
          read_text(base + ".err")};
}

// A failure: exit code 1 and exactly one line on stderr naming the problem.
void expect_cli_error(const std::vector<std::string>& args, const std::string& problem) {
  const CliRun r = inkgrad(args);
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_THAT(r.err, ::testing::StartsWith("inkgrad: error: "));
  EXPECT_THAT(r.err, ::testing::HasSubstr(problem));
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

class EvalCli : public ::testing::Test {
 protected:
  // A tiny training run, made once per test process (ctest runs tests in parallel processes):
  // train ends with its own short eval.
  static std::string run_dir() {
    static const std::string dir = [] {
      const std::string d =
          ::testing::TempDir() + "/inkgrad_eval_run_" + std::to_string(::getpid());
      std::filesystem::remove_all(d);
      const CliRun r = inkgrad({"train", "--model", "mlp", "--epochs", "1", "--samples-per-prompt",
                                "8", "--batch-size", "16", "--seed", "5", "-q", "--out", d});
      EXPECT_EQ(r.code, 0) << r.err;
      EXPECT_THAT(r.out, ::testing::HasSubstr("eval.json (mlp, 128 samples per prompt"));
      return d;
    }();
    return dir;
  }
};

TEST_F(EvalCli, TrainWritesEvalJson) {
  const nlohmann::json j = nlohmann::json::parse(read_text(run_dir() + "/eval.json"));
  EXPECT_EQ(j.at("samples_per_prompt"), 128);
  EXPECT_EQ(j.at("seed"), 5);
  EXPECT_GE(j.at("ceiling").at("overall").at("fidelity").get<double>(), 0.99);
  // The model's kind has its own key; "model" holds the model's scores.
  EXPECT_EQ(j.at("model_kind"), "mlp");
  EXPECT_EQ(j.at("model").at("prompts").size(), 9u);
  // Each row counts what the judge took its samples for: all 128 of them, most often first,
  // the prompt's own count being its fidelity.
  for (const auto& row : j.at("model").at("prompts")) {
    int64_t total = 0, previous = INT64_MAX, own = 0;
    for (const auto& [answer, count] : row.at("judged").items()) {
      EXPECT_LE(count.get<int64_t>(), previous) << row;
      previous = count.get<int64_t>();
      total += previous;
      if (answer == row.at("prompt")) own = previous;
    }
    EXPECT_EQ(total, 128) << row;
    EXPECT_DOUBLE_EQ(static_cast<double>(own) / 128.0, row.at("fidelity").get<double>()) << row;
    EXPECT_EQ(row.at("judged").begin().key(), row.at("judged_as")) << row;
  }
}

TEST_F(EvalCli, EvalPrintsTheTableAndWritesItsFiles) {
  const std::string out =
      ::testing::TempDir() + "/inkgrad_eval_out_" + std::to_string(::getpid()) + "/nested";
  std::filesystem::remove_all(out);
  const CliRun r = inkgrad({"eval", "--checkpoint", run_dir() + "/model.safetensors", "-n", "16",
                            "--seed", "2", "--out", out});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_THAT(r.out, ::testing::HasSubstr("sparse dots"));
  EXPECT_THAT(r.out, ::testing::HasSubstr("overall"));
  const nlohmann::json j = nlohmann::json::parse(read_text(out + "/eval.json"));
  EXPECT_EQ(j.at("samples_per_prompt"), 16);
  EXPECT_EQ(j.at("seed"), 2);
  EXPECT_THAT(j.at("checkpoint").get<std::string>(), ::testing::EndsWith("model.safetensors"));
  EXPECT_TRUE(std::filesystem::file_size(out + "/eval.png") > 1000);
  // The same seed gives the same file.
  const std::string first = read_text(out + "/eval.json");
  ASSERT_EQ(inkgrad({"eval", "--checkpoint", run_dir() + "/model.safetensors", "-n", "16", "--seed",
                     "2", "--out", out})
                .code,
            0);
  EXPECT_EQ(read_text(out + "/eval.json"), first);
}

TEST_F(EvalCli, BadInputGivesOneLineErrors) {
  const std::string model = run_dir() + "/model.safetensors";
  expect_cli_error({"eval", "--checkpoint", model, "-n", "0"},
                   "-n must be between 4 and 4096 (precision and recall compare 3 nearest "
                   "neighbours), got 0");
  expect_cli_error({"eval", "--checkpoint", committed_judge()},
                   "is the judge network, not a model to evaluate");
  expect_cli_error({"eval", "--checkpoint", run_dir() + "/optimizer.safetensors"},
                   "is not a checkpoint of a model inkgrad can evaluate (it is a training state");
  expect_cli_error({"eval", "--checkpoint", run_dir()}, "is a folder, not a checkpoint file");
  expect_cli_error({"eval", "--checkpoint", run_dir() + "/missing.safetensors"},
                   "missing.safetensors");
  // An unwritable folder: one below a regular file.
  expect_cli_error({"eval", "--checkpoint", model, "--out", model + "/sub"},
                   "cannot create the output folder");
  expect_cli_error({"eval", "--checkpoint", model, "--out", model}, "is a file, not a folder");
  expect_cli_error({"eval", "--checkpoint", model, "--judge", model},
                   "is not a judge file (its metadata has no \"kind\"");
  expect_cli_error({"judge", "--steps", "0"}, "--steps must be between 1 and 1000000, got 0");
}

// ---- the scenes CLI: eval on a scenes model, data and judge ----

class ScenesCli : public ::testing::Test {
 protected:
  static std::string dir() {
    static const std::string d = [] {
      const std::string path =
          ::testing::TempDir() + "/inkgrad_scenes_cli_" + std::to_string(::getpid());
      std::filesystem::remove_all(path);
      std::filesystem::create_directories(path);
      return path;
    }();
    return d;
  }
  // An untrained diffusion model of the scenes world (tiny preset, 3 x 32 x 32, word tokens), as
  // `inkgrad train --model diffusion --dataset scenes --config tiny` configures it: fast to
  // write, and enough to run the whole eval.
  static std::string scenes_checkpoint() {
    static const std::string path = [] {
      diffusion::DiffusionConfig config = diffusion::DiffusionConfig::preset("tiny");
      config.in_channels = scenes::kChannels;
      config.image_size = scenes::kSide;
      config.tokenizer = "word";
      config.vocab_size = WordTokenizer().vocab_size();
      config.max_length = WordTokenizer::kDefaultMaxLength;
      Generator gen(4321);
      const diffusion::TextToImageDiffusion model(config, &gen);
      const std::string file = dir() + "/scenes_model.safetensors";
      save_model(model, file);
      return file;
    }();
    return path;
  }
};

TEST_F(ScenesCli, EvalOnAnUntrainedScenesModelReportsEverySplitAndAttribute) {
  const std::string out = dir() + "/eval";
  const std::vector<std::string> args = {"eval",
                                         "--checkpoint",
                                         scenes_checkpoint(),
                                         "-n",
                                         "3",
                                         "--steps",
                                         "2",
                                         "--seed",
                                         "6",
                                         "--out",
                                         out};
  const CliRun r = inkgrad(args);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_THAT(r.out, ::testing::HasSubstr("on scenes: 38 prompts, 3 pictures each, seed 6"));
  EXPECT_THAT(r.out, ::testing::HasSubstr("scenes_judge.safetensors"));
  EXPECT_THAT(r.out, ::testing::HasSubstr("held-out"));
  EXPECT_THAT(r.out, ::testing::HasSubstr("open attributes, normalised entropy"));
  EXPECT_THAT(r.out, ::testing::HasSubstr("a red triangle on the left and a blue circle"));
  const json j = json::parse(read_text(out + "/eval.json"));
  EXPECT_EQ(j.at("dataset"), "scenes");
  EXPECT_EQ(j.at("model_kind"), "diffusion");
  EXPECT_EQ(j.at("pictures_per_prompt"), 3);
  EXPECT_EQ(j.at("seed"), 6);
  EXPECT_EQ(j.at("sampling"), "diffusion (ddim, 2 steps, guidance 3 at sigma in (0.28,5.42])");
  EXPECT_THAT(j.at("judge").get<std::string>(), ::testing::EndsWith("scenes_judge.safetensors"));
  const json& model = j.at("model");
  const json& ceiling = j.at("ceiling");
  for (const char* split : {"seen", "held_out"}) {
    EXPECT_GE(ceiling.at(split).at("picture_accuracy").get<double>(), 0.99) << split;
    EXPECT_GT(model.at(split).at("pictures").get<int64_t>(), 0);
    for (const char* key : {"picture_accuracy", "count_accuracy", "shape_accuracy",
                            "color_accuracy", "size_accuracy", "place_accuracy"}) {
      const json& v = model.at(split).at(key);
      if (v.is_null()) continue;  // an untrained model may find no object to score
      EXPECT_GE(v.get<double>(), 0.0) << split << " " << key;
      EXPECT_LE(v.get<double>(), 1.0) << split << " " << key;
    }
    for (const char* key : {"open_entropy", "color_entropy", "size_entropy", "place_entropy"}) {
      EXPECT_TRUE(model.at(split).contains(key)) << split << " " << key;
      EXPECT_TRUE(ceiling.at(split).at(key).is_number()) << split << " " << key;
    }
  }
  EXPECT_EQ(model.at("prompts").size(), scenes::eval_prompts().size());
  EXPECT_GT(std::filesystem::file_size(out + "/eval.png"), 1000u);
  // The same seed gives the same file.
  const std::string first = read_text(out + "/eval.json");
  ASSERT_EQ(inkgrad(args).code, 0);
  EXPECT_EQ(read_text(out + "/eval.json"), first);
}

TEST_F(ScenesCli, EvalErrors) {
  const std::string model = scenes_checkpoint();
  expect_cli_error({"eval", "--checkpoint", model, "-n", "0"},
                   "-n must be between 1 and 4096, got 0");
  expect_cli_error({"eval", "--checkpoint", model, "--steps", "0"},
                   "generate: steps must be in [1, 1000], got 0");
  expect_cli_error({"eval", "--checkpoint", model, "--sampler", "magic"}, "magic");
  expect_cli_error({"eval", "--checkpoint", model, "--judge", committed_judge()},
                   "is a \"judge\" file, not a scenes judge");
  expect_cli_error({"eval", "--checkpoint", model, "--judge", model},
                   "is not a scenes judge file (its metadata has no \"kind\"");
  // The sampler flags are for models with a sampler.
  Generator gen(1);
  const std::string mlp = dir() + "/mlp.safetensors";
  save_model(*make_model("mlp", "", &gen), mlp);
  expect_cli_error({"eval", "--checkpoint", mlp, "--steps", "5"},
                   "--guidance, --steps and --sampler set how a diffusion model samples; " + mlp +
                       " holds a mlp model, which has no sampler");
}

TEST_F(ScenesCli, DataDrawsLabelledScenesGrids) {
  const std::string all = dir() + "/data/all.png";
  CliRun r = inkgrad(
      {"data", "--dataset", "scenes", "--prompt", "all", "--seed", "2", "-n", "4", "-o", all});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::HasSubstr("36 scenes pictures of every sample prompt (seed 2"));
  EXPECT_GT(std::filesystem::file_size(all), 1000u);
  const std::string first = read_text(all);
  ASSERT_EQ(inkgrad({"data", "--dataset", "scenes", "--prompt", "all", "--seed", "2", "-n", "4",
                     "-o", all})
                .code,
            0);
  EXPECT_EQ(read_text(all), first);  // the same seed, the same picture

  r = inkgrad({"data", "--dataset", "scenes", "--prompt", "training", "-n", "5", "--seed", "3",
               "-o", dir() + "/data/training.png"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::HasSubstr("   1  "));  // the prompts in full, numbered
  EXPECT_THAT(r.out, ::testing::HasSubstr("5 scenes pictures of the training distribution"));
  r = inkgrad({"data", "--dataset", "scenes", "--prompt", "a large green circle at the top", "-n",
               "3", "-o", dir() + "/data/one.png"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out,
              ::testing::HasSubstr("3 scenes pictures of \"a large green circle at the top\""));

  expect_cli_error(
      {"data", "--dataset", "scenes", "--prompt", "a red blob", "-o", dir() + "/x.png"},
      "--prompt \"a red blob\" is not a scenes prompt (scenes: unexpected \"blob\"");
  expect_cli_error(
      {"data", "--dataset", "scenes", "--prompt", "all", "-n", "0", "-o", dir() + "/x.png"},
      "-n must be between 1 and 256, got 0");
  expect_cli_error({"data", "--dataset", "cats", "--prompt", "all", "-o", dir() + "/x.png"},
                   "--dataset must be shapes or scenes, got \"cats\"");
}

TEST_F(ScenesCli, JudgeTrainsTheScenesShapeNet) {
  const std::string file = dir() + "/judge/scenes_judge.safetensors";
  const CliRun r =
      inkgrad({"judge", "--dataset", "scenes", "--steps", "3", "--seed", "9", "-q", "-o", file});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, ::testing::HasSubstr("held-out ground-truth crops"));
  const SafetensorsReader header(file);
  EXPECT_EQ(header.metadata().at("kind"), scenes::kScenesJudgeKind);
  EXPECT_EQ(header.metadata().at("recipe"), "inkgrad judge --dataset scenes --steps 3 --seed 9");
  EXPECT_NO_THROW(scenes::load_shape_net(file));
  expect_cli_error({"judge", "--dataset", "dogs"},
                   "--dataset must be shapes or scenes, got \"dogs\"");
}

}  // namespace
}  // namespace ink
