// Batch normalisation kernels; see batch_norm_kernels.h for the legend.
#include "tensor/kernels/batch_norm_kernels.h"

#include <vector>

namespace ink::kernels {

template <class T>
void batch_norm_stats(const T* x, int64_t B, int64_t C, double* mean, double* var) {
  for (int64_t c = 0; c < C; ++c) mean[c] = var[c] = 0.0;
  for (int64_t b = 0; b < B; ++b) {
    const T* row = x + b * C;
    for (int64_t c = 0; c < C; ++c) mean[c] += row[c];
  }
  for (int64_t c = 0; c < C; ++c) mean[c] /= static_cast<double>(B);
  for (int64_t b = 0; b < B; ++b) {
    const T* row = x + b * C;
    for (int64_t c = 0; c < C; ++c) {
      const double d = row[c] - mean[c];
      var[c] += d * d;
    }
  }
  for (int64_t c = 0; c < C; ++c) var[c] /= static_cast<double>(B);
}

template <class T>
void batch_norm_apply(const T* x, const T* mean, const T* inv_std, const T* gamma, const T* beta,
                      int64_t B, int64_t C, T* y) {
  std::vector<T> scale(C), shift(C);
  for (int64_t c = 0; c < C; ++c) {
    scale[c] = inv_std[c] * (gamma ? gamma[c] : T{1});
    shift[c] = (beta ? beta[c] : T{0}) - mean[c] * scale[c];
  }
  for (int64_t b = 0; b < B; ++b) {
    const T* in = x + b * C;
    T* out = y + b * C;
    for (int64_t c = 0; c < C; ++c) out[c] = in[c] * scale[c] + shift[c];
  }
}

template <class T>
void batch_norm_backward(const T* dy, const T* x, const T* mean, const T* inv_std, const T* gamma,
                         int64_t B, int64_t C, T* dx, T* dgamma, T* dbeta) {
  std::vector<double> sum_dy(C, 0.0), sum_dy_xhat(C, 0.0);
  for (int64_t b = 0; b < B; ++b) {
    const T* g = dy + b * C;
    const T* in = x + b * C;
    for (int64_t c = 0; c < C; ++c) {
      const T xhat = (in[c] - mean[c]) * inv_std[c];
      sum_dy[c] += g[c];
      sum_dy_xhat[c] += static_cast<double>(g[c]) * xhat;
    }
  }
  if (dbeta) {
    for (int64_t c = 0; c < C; ++c) dbeta[c] = static_cast<T>(sum_dy[c]);
  }
  if (dgamma) {
    for (int64_t c = 0; c < C; ++c) dgamma[c] = static_cast<T>(sum_dy_xhat[c]);
  }
  if (!dx) return;
  std::vector<T> k(C), mean_dy(C), mean_dy_xhat(C);
  for (int64_t c = 0; c < C; ++c) {
    k[c] = (gamma ? gamma[c] : T{1}) * inv_std[c];
    mean_dy[c] = static_cast<T>(sum_dy[c] / static_cast<double>(B));
    mean_dy_xhat[c] = static_cast<T>(sum_dy_xhat[c] / static_cast<double>(B));
  }
  for (int64_t b = 0; b < B; ++b) {
    const T* g = dy + b * C;
    const T* in = x + b * C;
    T* out = dx + b * C;
    for (int64_t c = 0; c < C; ++c) {
      const T xhat = (in[c] - mean[c]) * inv_std[c];
      out[c] = k[c] * (g[c] - mean_dy[c] - xhat * mean_dy_xhat[c]);
    }
  }
}

#define INK_BATCH_NORM_KERNELS(T)                                                                 \
  template void batch_norm_stats<T>(const T*, int64_t, int64_t, double*, double*);                \
  template void batch_norm_apply<T>(const T*, const T*, const T*, const T*, const T*, int64_t,    \
                                    int64_t, T*);                                                 \
  template void batch_norm_backward<T>(const T*, const T*, const T*, const T*, const T*, int64_t, \
                                       int64_t, T*, T*, T*);
INK_BATCH_NORM_KERNELS(float)
INK_BATCH_NORM_KERNELS(double)
#undef INK_BATCH_NORM_KERNELS

}  // namespace ink::kernels
