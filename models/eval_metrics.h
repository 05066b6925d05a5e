// The numbers `inkgrad eval` reports about a set of generated pictures, as plain functions over
// feature or pixel arrays (no tensors, no autograd): fidelity, diversity, the Fréchet distance
// between Gaussian fits of two feature sets, and k-nearest-neighbour precision and recall.
// Everything is accumulated in double; the results do not depend on the thread count.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace ink {

// What this represents: `count` vectors of `dim` floats each, row-major (row i starts at
// data + i * dim). Does not own the data. Legend used below: N = count, D = dim.
struct FeatureRows {
  const float* data = nullptr;
  int64_t count = 0;
  int64_t dim = 0;

  // Throws ink::Error naming `what` when count or dim is negative, or data is null with
  // count * dim > 0.
  void check(const char* what) const;
  const float* row(int64_t i) const { return data + i * dim; }
};

// The share of `predicted` (class indices, e.g. the judge's answers) equal to `expected`.
// Throws ink::Error for an empty list.
double fidelity(std::span<const int64_t> predicted, int64_t expected);

// The mean Euclidean distance over all pairs i < j of rows. Needs N >= 2.
double mean_pairwise_distance(const FeatureRows& rows);

// mean_pairwise_distance(samples) / mean_pairwise_distance(reference): 1 means as varied as the
// reference, 0 means every sample is the same picture. Throws ink::Error when the dims differ
// or the reference has no spread (all its rows equal).
double diversity(const FeatureRows& samples, const FeatureRows& reference);

// What this represents: the mean [D] and covariance [D, D] (row-major, unbiased: divided by
// N - 1, as numpy.cov) of a feature set.
struct GaussianFit {
  int64_t dim = 0;
  std::vector<double> mean;        // [D]
  std::vector<double> covariance;  // [D, D]
};

// Needs N >= 2.
GaussianFit fit_gaussian(const FeatureRows& rows);

// Eigenvalues and eigenvectors of a symmetric matrix [n, n] (row-major; only its symmetric part
// is used), by the cyclic Jacobi method in double. eigenvectors is [n, n] row-major with
// eigenvector k in column k; A = V diag(eigenvalues) V^T. Eigenvalues in ascending order.
struct SymmetricEigen {
  std::vector<double> eigenvalues;   // [n]
  std::vector<double> eigenvectors;  // [n, n]
};
SymmetricEigen symmetric_eigen(std::span<const double> matrix, int64_t n);

// The Fréchet distance between N(mu1, S1) and N(mu2, S2):
//   |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1^1/2 S2 S1^1/2))
// The square roots come from symmetric eigendecompositions, with the tiny negative eigenvalues
// that rounding leaves in a positive semi-definite matrix clamped to zero, so rank-deficient
// covariances (fewer samples than dimensions) are fine. This equals the FID formula
// tr(sqrt(S1 S2)) without the complex intermediate values of a general matrix square root.
// The result is clamped at 0. Throws ink::Error when the dims differ.
double frechet_distance(const GaussianFit& a, const GaussianFit& b);
// fit_gaussian of both, then frechet_distance.
double frechet_distance(const FeatureRows& a, const FeatureRows& b);

// Improved precision and recall (Kynkäänniemi et al., 2019). Each set's manifold is the union of
// balls around its points with radius the distance to the point's k-th nearest neighbour in
// the same set (the point itself not counted).
//   precision: the share of generated points inside the real manifold (are samples realistic?)
//   recall:    the share of real points inside the generated manifold (are all kinds covered?)
// A point on a ball's boundary counts as inside. Throws ink::Error when the dims differ or a
// set has k points or fewer.
struct PrecisionRecall {
  double precision = 0.0;
  double recall = 0.0;
};
PrecisionRecall precision_recall(const FeatureRows& real, const FeatureRows& generated,
                                 int64_t k = 3);

// The distance from each row to its k-th nearest neighbour among the other rows [N].
// Needs N > k >= 1.
std::vector<double> kth_neighbour_distances(const FeatureRows& rows, int64_t k);

}  // namespace ink
