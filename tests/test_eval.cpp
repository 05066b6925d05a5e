// The evaluation metrics (models/eval_metrics.h): NumPy/SciPy reference values from
// tests/data/eval_golden.json (written by scripts/make_eval_golden.py), the eigen solver, and
// the known cases: a set against itself, one picture repeated, pictures of the wrong prompt.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "models/eval_metrics.h"
#include "models/shapes.h"
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

}  // namespace
}  // namespace ink
