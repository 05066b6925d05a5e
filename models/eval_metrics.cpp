// The evaluation metrics. Pairwise work is split by rows across threads, each row's result
// written to its own slot and combined in order afterwards, so results are bit-identical at any
// thread count.
#include "models/eval_metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "tensor/error.h"
#include "tensor/parallel.h"

namespace ink {
namespace {

double squared_distance(const float* a, const float* b, int64_t dim) {
  double sum = 0.0;
  for (int64_t k = 0; k < dim; ++k) {
    const double d = static_cast<double>(a[k]) - static_cast<double>(b[k]);
    sum += d * d;
  }
  return sum;
}

void check_same_dim(const char* op, const FeatureRows& a, const FeatureRows& b) {
  INK_CHECK(a.dim == b.dim, "{}: feature sets of dimension {} and {} cannot be compared", op, a.dim,
            b.dim);
}

// Rows per parallel task: pairwise work on a few hundred rows is worth splitting.
constexpr int64_t kRowGrain = 16;

// C = A B for [n, n] row-major matrices.
std::vector<double> matmul_square(const std::vector<double>& a, const std::vector<double>& b,
                                  int64_t n) {
  std::vector<double> c(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < n; ++k) {
      const double aik = a[i * n + k];
      for (int64_t j = 0; j < n; ++j) c[i * n + j] += aik * b[k * n + j];
    }
  }
  return c;
}

// V diag(sqrt(max(lambda, 0))) V^T: the square root of a positive semi-definite matrix.
std::vector<double> psd_sqrt(const std::vector<double>& matrix, int64_t n) {
  const SymmetricEigen eig = symmetric_eigen(matrix, n);
  std::vector<double> root(static_cast<size_t>(n * n), 0.0);
  for (int64_t k = 0; k < n; ++k) {
    const double s = std::sqrt(std::max(eig.eigenvalues[k], 0.0));
    if (s == 0.0) continue;
    for (int64_t i = 0; i < n; ++i) {
      const double vik = eig.eigenvectors[i * n + k] * s;
      for (int64_t j = 0; j < n; ++j) root[i * n + j] += vik * eig.eigenvectors[j * n + k];
    }
  }
  return root;
}

}  // namespace

void FeatureRows::check(const char* what) const {
  INK_CHECK(count >= 0 && dim >= 0, "{}: a feature set needs count, dim >= 0, got {} x {}", what,
            count, dim);
  INK_CHECK(data != nullptr || count * dim == 0, "{}: a feature set of {} x {} has no data", what,
            count, dim);
}

double fidelity(std::span<const int64_t> predicted, int64_t expected) {
  INK_CHECK(!predicted.empty(), "fidelity: no predictions");
  const auto hits = std::count(predicted.begin(), predicted.end(), expected);
  return static_cast<double>(hits) / static_cast<double>(predicted.size());
}

double mean_pairwise_distance(const FeatureRows& rows) {
  rows.check("mean_pairwise_distance");
  INK_CHECK(rows.count >= 2, "mean_pairwise_distance: needs at least 2 rows, got {}", rows.count);
  std::vector<double> row_sums(static_cast<size_t>(rows.count), 0.0);
  parallel_for(0, rows.count, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      double sum = 0.0;
      for (int64_t j = i + 1; j < rows.count; ++j) {
        sum += std::sqrt(squared_distance(rows.row(i), rows.row(j), rows.dim));
      }
      row_sums[i] = sum;
    }
  });
  double total = 0.0;
  for (double s : row_sums) total += s;
  const double pairs = 0.5 * static_cast<double>(rows.count) * static_cast<double>(rows.count - 1);
  return total / pairs;
}

double diversity(const FeatureRows& samples, const FeatureRows& reference) {
  check_same_dim("diversity", samples, reference);
  const double spread = mean_pairwise_distance(reference);
  INK_CHECK(spread > 0.0, "diversity: the reference set has no spread (all {} rows are equal)",
            reference.count);
  return mean_pairwise_distance(samples) / spread;
}

GaussianFit fit_gaussian(const FeatureRows& rows) {
  rows.check("fit_gaussian");
  INK_CHECK(rows.count >= 2, "fit_gaussian: needs at least 2 rows, got {}", rows.count);
  const int64_t n = rows.count;
  const int64_t d = rows.dim;
  GaussianFit fit;
  fit.dim = d;
  fit.mean.assign(static_cast<size_t>(d), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < d; ++k) fit.mean[k] += rows.row(i)[k];
  }
  for (double& m : fit.mean) m /= static_cast<double>(n);
  // Centred copy [N, D], then covariance row by row (each row of the result is one task).
  std::vector<double> centred(static_cast<size_t>(n * d));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < d; ++k) centred[i * d + k] = rows.row(i)[k] - fit.mean[k];
  }
  fit.covariance.assign(static_cast<size_t>(d * d), 0.0);
  parallel_for(0, d, 4, [&](int64_t begin, int64_t end) {
    for (int64_t a = begin; a < end; ++a) {
      for (int64_t b = 0; b < d; ++b) {
        double sum = 0.0;
        for (int64_t i = 0; i < n; ++i) sum += centred[i * d + a] * centred[i * d + b];
        fit.covariance[a * d + b] = sum / static_cast<double>(n - 1);
      }
    }
  });
  return fit;
}

SymmetricEigen symmetric_eigen(std::span<const double> matrix, int64_t n) {
  INK_CHECK(n >= 0 && static_cast<int64_t>(matrix.size()) == n * n,
            "symmetric_eigen: a [{}, {}] matrix needs {} values, got {}", n, n, n * n,
            matrix.size());
  // a: the symmetric part of the input, rotated towards diagonal; v: the accumulated rotations.
  std::vector<double> a(static_cast<size_t>(n * n));
  std::vector<double> v(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    v[i * n + i] = 1.0;
    for (int64_t j = 0; j < n; ++j) a[i * n + j] = 0.5 * (matrix[i * n + j] + matrix[j * n + i]);
  }
  double total = 0.0;
  for (double x : a) total += x * x;
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0.0;
    for (int64_t p = 0; p < n; ++p) {
      for (int64_t q = p + 1; q < n; ++q) off += a[p * n + q] * a[p * n + q];
    }
    // Converged when the off-diagonal part is negligible against the whole matrix.
    if (off <= 1e-30 * total || off == 0.0) break;
    for (int64_t p = 0; p < n; ++p) {
      for (int64_t q = p + 1; q < n; ++q) {
        const double apq = a[p * n + q];
        if (apq == 0.0) continue;
        // The rotation [[c, s], [-s, c]] in the (p, q) plane that zeroes a[p][q]:
        // t = tan(angle) is the smaller root of t^2 + 2 theta t - 1 = 0.
        const double theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
        const double t =
            std::abs(theta) > 1e150
                ? 0.5 / theta
                : std::copysign(1.0, theta) / (std::abs(theta) + std::sqrt(theta * theta + 1.0));
        const double c = 1.0 / std::sqrt(t * t + 1.0);
        const double s = t * c;
        for (int64_t k = 0; k < n; ++k) {  // columns p and q: A J
          const double akp = a[k * n + p];
          const double akq = a[k * n + q];
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (int64_t k = 0; k < n; ++k) {  // rows p and q: J^T (A J)
          const double apk = a[p * n + k];
          const double aqk = a[q * n + k];
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
        a[p * n + q] = 0.0;
        a[q * n + p] = 0.0;
        for (int64_t k = 0; k < n; ++k) {
          const double vkp = v[k * n + p];
          const double vkq = v[k * n + q];
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  // Ascending eigenvalues, with their eigenvector columns.
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t x, int64_t y) { return a[x * n + x] < a[y * n + y]; });
  SymmetricEigen result;
  result.eigenvalues.resize(static_cast<size_t>(n));
  result.eigenvectors.resize(static_cast<size_t>(n * n));
  for (int64_t k = 0; k < n; ++k) {
    result.eigenvalues[k] = a[order[k] * n + order[k]];
    for (int64_t i = 0; i < n; ++i) result.eigenvectors[i * n + k] = v[i * n + order[k]];
  }
  return result;
}

double frechet_distance(const GaussianFit& a, const GaussianFit& b) {
  INK_CHECK(a.dim == b.dim, "frechet_distance: Gaussians of dimension {} and {} cannot be compared",
            a.dim, b.dim);
  const int64_t d = a.dim;
  double mean_term = 0.0;
  double traces = 0.0;
  for (int64_t k = 0; k < d; ++k) {
    const double diff = a.mean[k] - b.mean[k];
    mean_term += diff * diff;
    traces += a.covariance[k * d + k] + b.covariance[k * d + k];
  }
  // tr(sqrt(S1 S2)) = tr(sqrt(S1^1/2 S2 S1^1/2)): the same eigenvalues, but of a symmetric
  // positive semi-definite matrix, so a symmetric eigendecomposition gives them exactly.
  const std::vector<double> root_a = psd_sqrt(a.covariance, d);
  const std::vector<double> inner =
      matmul_square(matmul_square(root_a, b.covariance, d), root_a, d);
  const SymmetricEigen eig = symmetric_eigen(inner, d);
  double trace_root = 0.0;
  for (double lambda : eig.eigenvalues) trace_root += std::sqrt(std::max(lambda, 0.0));
  return std::max(mean_term + traces - 2.0 * trace_root, 0.0);
}

double frechet_distance(const FeatureRows& a, const FeatureRows& b) {
  check_same_dim("frechet_distance", a, b);
  return frechet_distance(fit_gaussian(a), fit_gaussian(b));
}

std::vector<double> kth_neighbour_distances(const FeatureRows& rows, int64_t k) {
  rows.check("kth_neighbour_distances");
  INK_CHECK(k >= 1 && rows.count > k,
            "kth_neighbour_distances: k = {} needs more than {} rows, got {}", k, k, rows.count);
  std::vector<double> radii(static_cast<size_t>(rows.count));
  parallel_for(0, rows.count, kRowGrain, [&](int64_t begin, int64_t end) {
    std::vector<double> distances(static_cast<size_t>(rows.count - 1));
    for (int64_t i = begin; i < end; ++i) {
      int64_t m = 0;
      for (int64_t j = 0; j < rows.count; ++j) {
        if (j != i) distances[m++] = squared_distance(rows.row(i), rows.row(j), rows.dim);
      }
      std::nth_element(distances.begin(), distances.begin() + (k - 1), distances.end());
      radii[i] = std::sqrt(distances[k - 1]);
    }
  });
  return radii;
}

namespace {

// The share of `points` within radii[j] of some manifold row j.
double share_inside(const FeatureRows& manifold, const std::vector<double>& radii,
                    const FeatureRows& points) {
  std::vector<char> inside(static_cast<size_t>(points.count), 0);
  parallel_for(0, points.count, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t j = 0; j < manifold.count && !inside[i]; ++j) {
        inside[i] =
            std::sqrt(squared_distance(points.row(i), manifold.row(j), points.dim)) <= radii[j];
      }
    }
  });
  const auto hits = std::count(inside.begin(), inside.end(), 1);
  return static_cast<double>(hits) / static_cast<double>(points.count);
}

}  // namespace

PrecisionRecall precision_recall(const FeatureRows& real, const FeatureRows& generated, int64_t k) {
  check_same_dim("precision_recall", real, generated);
  INK_CHECK(k >= 1, "precision_recall: k must be at least 1, got {}", k);
  INK_CHECK(real.count > k && generated.count > k,
            "precision_recall: k = {} needs more than {} points in each set, got {} real and {} "
            "generated",
            k, k, real.count, generated.count);
  PrecisionRecall result;
  result.precision = share_inside(real, kth_neighbour_distances(real, k), generated);
  result.recall = share_inside(generated, kth_neighbour_distances(generated, k), real);
  return result;
}

}  // namespace ink
