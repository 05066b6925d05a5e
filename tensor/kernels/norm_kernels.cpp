// The normalisation kernels of norm_kernels.h.
#include "tensor/kernels/norm_kernels.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "tensor/kernels/activation_rows.h"
#include "tensor/parallel.h"

namespace ink::kernels {

namespace {
template <class T>
T weight_or_one(const T* w, int64_t i) {
  return w ? w[i] : T(1);
}
template <class T>
T bias_or_zero(const T* b, int64_t i) {
  return b ? b[i] : T(0);
}
}  // namespace

// ---- references ----

namespace {
// One group's y = (x - mu) r w_c + b_c, in double.
template <class T>
void normalize_group_naive(const T* x, const T* weight, const T* bias, T* y, int64_t bg, double mu,
                           double r, int64_t Cg, int64_t S, int64_t G) {
  const int64_t n = Cg * S;
  const T* xg = x + bg * n;
  for (int64_t cg = 0; cg < Cg; ++cg) {
    const int64_t c = (bg % G) * Cg + cg;
    for (int64_t s = 0; s < S; ++s) {
      const int64_t i = cg * S + s;
      y[bg * n + i] =
          static_cast<T>((xg[i] - mu) * r * weight_or_one(weight, c) + bias_or_zero(bias, c));
    }
  }
}
}  // namespace

template <class T>
void group_norm_forward_naive(const T* x, const T* weight, const T* bias, T* y, T* mean, T* rstd,
                              int64_t B, int64_t C, int64_t S, int64_t G, double eps) {
  const int64_t Cg = C / G, n = Cg * S;
  for (int64_t bg = 0; bg < B * G; ++bg) {
    const T* xg = x + bg * n;
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += xg[i];
    const double mu = sum / static_cast<double>(n);
    double sq = 0.0;
    for (int64_t i = 0; i < n; ++i) sq += (xg[i] - mu) * (xg[i] - mu);
    const double r = 1.0 / std::sqrt(sq / static_cast<double>(n) + eps);
    mean[bg] = static_cast<T>(mu);
    rstd[bg] = static_cast<T>(r);
    normalize_group_naive(x, weight, bias, y, bg, mu, r, Cg, S, G);
  }
}

template <class T>
void group_norm_apply_naive(const T* x, const T* weight, const T* bias, const T* mean,
                            const T* rstd, T* y, int64_t B, int64_t C, int64_t S, int64_t G) {
  for (int64_t bg = 0; bg < B * G; ++bg) {
    normalize_group_naive(x, weight, bias, y, bg, static_cast<double>(mean[bg]),
                          static_cast<double>(rstd[bg]), C / G, S, G);
  }
}

template <class T>
void group_norm_backward_naive(const T* dy, const T* x, const T* weight, const T* mean,
                               const T* rstd, T* dx, T* dweight, T* dbias, int64_t B, int64_t C,
                               int64_t S, int64_t G) {
  const int64_t Cg = C / G, n = Cg * S;
  if (dweight) std::fill(dweight, dweight + C, T(0));
  if (dbias) std::fill(dbias, dbias + C, T(0));
  std::vector<double> dw(C, 0.0), db(C, 0.0);
  for (int64_t bg = 0; bg < B * G; ++bg) {
    const double mu = mean[bg], r = rstd[bg];
    double sum_dxhat = 0.0, sum_dxhat_xhat = 0.0;
    for (int64_t cg = 0; cg < Cg; ++cg) {
      const int64_t c = (bg % G) * Cg + cg;
      for (int64_t s = 0; s < S; ++s) {
        const int64_t i = bg * n + cg * S + s;
        const double xhat = (x[i] - mu) * r;
        const double dxhat = static_cast<double>(dy[i]) * weight_or_one(weight, c);
        sum_dxhat += dxhat;
        sum_dxhat_xhat += dxhat * xhat;
        dw[c] += static_cast<double>(dy[i]) * xhat;
        db[c] += dy[i];
      }
    }
    if (!dx) continue;
    for (int64_t cg = 0; cg < Cg; ++cg) {
      const int64_t c = (bg % G) * Cg + cg;
      for (int64_t s = 0; s < S; ++s) {
        const int64_t i = bg * n + cg * S + s;
        const double xhat = (x[i] - mu) * r;
        const double dxhat = static_cast<double>(dy[i]) * weight_or_one(weight, c);
        dx[i] = static_cast<T>(r * (dxhat - sum_dxhat / static_cast<double>(n) -
                                    xhat * sum_dxhat_xhat / static_cast<double>(n)));
      }
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    if (dweight) dweight[c] = static_cast<T>(dw[c]);
    if (dbias) dbias[c] = static_cast<T>(db[c]);
  }
}

template <class T>
void layer_norm_forward_naive(const T* x, const T* weight, const T* bias, T* y, T* mean, T* rstd,
                              int64_t N, int64_t D, double eps) {
  // A layer norm over D is a group norm with one group of one channel of D positions, except
  // that the affine runs along D instead of along channels.
  for (int64_t r = 0; r < N; ++r) {
    const T* xr = x + r * D;
    double sum = 0.0;
    for (int64_t j = 0; j < D; ++j) sum += xr[j];
    const double mu = sum / static_cast<double>(D);
    double sq = 0.0;
    for (int64_t j = 0; j < D; ++j) sq += (xr[j] - mu) * (xr[j] - mu);
    const double rs = 1.0 / std::sqrt(sq / static_cast<double>(D) + eps);
    mean[r] = static_cast<T>(mu);
    rstd[r] = static_cast<T>(rs);
    for (int64_t j = 0; j < D; ++j) {
      y[r * D + j] =
          static_cast<T>((xr[j] - mu) * rs * weight_or_one(weight, j) + bias_or_zero(bias, j));
    }
  }
}

template <class T>
void layer_norm_backward_naive(const T* dy, const T* x, const T* weight, const T* mean,
                               const T* rstd, T* dx, T* dweight, T* dbias, int64_t N, int64_t D) {
  std::vector<double> dw(D, 0.0), db(D, 0.0);
  for (int64_t r = 0; r < N; ++r) {
    const double mu = mean[r], rs = rstd[r];
    double sum_dxhat = 0.0, sum_dxhat_xhat = 0.0;
    for (int64_t j = 0; j < D; ++j) {
      const int64_t i = r * D + j;
      const double xhat = (x[i] - mu) * rs;
      const double dxhat = static_cast<double>(dy[i]) * weight_or_one(weight, j);
      sum_dxhat += dxhat;
      sum_dxhat_xhat += dxhat * xhat;
      dw[j] += static_cast<double>(dy[i]) * xhat;
      db[j] += dy[i];
    }
    if (!dx) continue;
    for (int64_t j = 0; j < D; ++j) {
      const int64_t i = r * D + j;
      const double xhat = (x[i] - mu) * rs;
      const double dxhat = static_cast<double>(dy[i]) * weight_or_one(weight, j);
      dx[i] = static_cast<T>(rs * (dxhat - sum_dxhat / static_cast<double>(D) -
                                   xhat * sum_dxhat_xhat / static_cast<double>(D)));
    }
  }
  for (int64_t j = 0; j < D; ++j) {
    if (dweight) dweight[j] = static_cast<T>(dw[j]);
    if (dbias) dbias[j] = static_cast<T>(db[j]);
  }
}

#define INK_INSTANTIATE(T)                                                                         \
  template void group_norm_forward_naive<T>(const T*, const T*, const T*, T*, T*, T*, int64_t,     \
                                            int64_t, int64_t, int64_t, double);                    \
  template void group_norm_apply_naive<T>(const T*, const T*, const T*, const T*, const T*, T*,    \
                                          int64_t, int64_t, int64_t, int64_t);                     \
  template void group_norm_backward_naive<T>(const T*, const T*, const T*, const T*, const T*, T*, \
                                             T*, T*, int64_t, int64_t, int64_t, int64_t);          \
  template void layer_norm_forward_naive<T>(const T*, const T*, const T*, T*, T*, T*, int64_t,     \
                                            int64_t, double);                                      \
  template void layer_norm_backward_naive<T>(const T*, const T*, const T*, const T*, const T*, T*, \
                                             T*, T*, int64_t, int64_t);
INK_INSTANTIATE(float)
INK_INSTANTIATE(double)
#undef INK_INSTANTIATE

// ---- fast versions ----

namespace {
// Enough elements per thread for the hand-off to pay.
int64_t grain_for(int64_t elements_per_item) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(elements_per_item, 1));
}
}  // namespace

namespace {
// One group, per channel: y = (x - mean) * a + b with a = rstd * w. Centring first keeps the
// precision when |mean| * rstd is large (folding it into the shift would cancel).
void normalize_group(const rows::RowKernels& k, const float* x, const float* weight,
                     const float* bias, float* y, int64_t bg, float mu, float r, int64_t Cg,
                     int64_t S, int64_t G) {
  const int64_t n = Cg * S;
  for (int64_t cg = 0; cg < Cg; ++cg) {
    const int64_t c = (bg % G) * Cg + cg;
    k.scale_shift(x + bg * n + cg * S, y + bg * n + cg * S, S, mu, r * weight_or_one(weight, c),
                  bias_or_zero(bias, c));
  }
}
}  // namespace

void group_norm_forward(const float* x, const float* weight, const float* bias, float* y,
                        float* mean, float* rstd, int64_t B, int64_t C, int64_t S, int64_t G,
                        double eps) {
  const auto& k = rows::best_row_kernels();
  const int64_t Cg = C / G, n = Cg * S;
  parallel_for(0, B * G, grain_for(n), [&](int64_t g0, int64_t g1) {
    for (int64_t bg = g0; bg < g1; ++bg) {
      float mu, var;
      k.mean_var(x + bg * n, n, &mu, &var);
      const float r = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var) + eps));
      mean[bg] = mu;
      rstd[bg] = r;
      normalize_group(k, x, weight, bias, y, bg, mu, r, Cg, S, G);
    }
  });
}

void group_norm_apply(const float* x, const float* weight, const float* bias, const float* mean,
                      const float* rstd, float* y, int64_t B, int64_t C, int64_t S, int64_t G) {
  const auto& k = rows::best_row_kernels();
  const int64_t Cg = C / G;
  parallel_for(0, B * G, grain_for(Cg * S), [&](int64_t g0, int64_t g1) {
    for (int64_t bg = g0; bg < g1; ++bg) {
      normalize_group(k, x, weight, bias, y, bg, mean[bg], rstd[bg], Cg, S, G);
    }
  });
}

void group_norm_backward(const float* dy, const float* x, const float* weight, const float* mean,
                         const float* rstd, float* dx, float* dweight, float* dbias, int64_t B,
                         int64_t C, int64_t S, int64_t G) {
  const auto& k = rows::best_row_kernels();
  const int64_t Cg = C / G, n = Cg * S;
  // Pass 1, per (b, c): ds = sum_S(dy * (x - mean)), db = sum_S(dy). The rest follows:
  //   sum_g(dxhat)        = sum_c w_c db_bc
  //   sum_g(dxhat * xhat) = sum_c w_c rstd ds_bc
  //   dweight_c = sum_b rstd ds_bc,  dbias_c = sum_b db_bc.
  std::vector<float> ds(B * C), db(B * C);
  parallel_for(0, B * C, grain_for(S), [&](int64_t r0, int64_t r1) {
    for (int64_t bc = r0; bc < r1; ++bc) {
      const int64_t bg = (bc / C) * G + (bc % C) / Cg;
      k.dot_and_sum(dy + bc * S, x + bc * S, S, mean[bg], &ds[bc], &db[bc]);
    }
  });
  // Pass 2, per (b, g): the input gradient rearranged so that the row primitive sees scalars:
  //   dx = a_c dy + b (x - mean) + c,  a_c = rstd w_c,  b = -rstd^2 sum(dxhat xhat) / n,
  //   c = -rstd sum(dxhat) / n.
  if (dx) {
    parallel_for(0, B * G, grain_for(n), [&](int64_t g0, int64_t g1) {
      for (int64_t bg = g0; bg < g1; ++bg) {
        const int64_t b = bg / G, c0 = (bg % G) * Cg;
        const float mu = mean[bg], r = rstd[bg];
        float sum_dxhat = 0.0f, sum_dxhat_xhat = 0.0f;
        for (int64_t c = c0; c < c0 + Cg; ++c) {
          const float w = weight_or_one(weight, c);
          sum_dxhat += w * db[b * C + c];
          sum_dxhat_xhat += w * r * ds[b * C + c];
        }
        const float inv_n = 1.0f / static_cast<float>(n);
        const float bx = -r * r * sum_dxhat_xhat * inv_n;
        const float cx = -r * sum_dxhat * inv_n;
        for (int64_t c = c0; c < c0 + Cg; ++c) {
          const int64_t off = (b * C + c) * S;
          k.axpbypc(dy + off, x + off, dx + off, S, r * weight_or_one(weight, c), bx, mu, cx);
        }
      }
    });
  }
  // Pass 3, per channel (a loop over B, in order).
  for (int64_t c = 0; c < C; ++c) {
    float dw = 0.0f, dbc = 0.0f;
    for (int64_t b = 0; b < B; ++b) {
      dw += rstd[b * G + c / Cg] * ds[b * C + c];
      dbc += db[b * C + c];
    }
    if (dweight) dweight[c] = dw;
    if (dbias) dbias[c] = dbc;
  }
}

void layer_norm_forward(const float* x, const float* weight, const float* bias, float* y,
                        float* mean, float* rstd, int64_t N, int64_t D, double eps) {
  const auto& k = rows::best_row_kernels();
  std::vector<float> ones, zeros;
  if (!weight) ones.assign(D, 1.0f), weight = ones.data();
  if (!bias) zeros.assign(D, 0.0f), bias = zeros.data();
  parallel_for(0, N, grain_for(D), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      float mu, var;
      k.mean_var(x + r * D, D, &mu, &var);
      const float rs = static_cast<float>(1.0 / std::sqrt(static_cast<double>(var) + eps));
      mean[r] = mu;
      rstd[r] = rs;
      k.normalize_affine(x + r * D, y + r * D, D, mu, rs, weight, bias);
    }
  });
}

void layer_norm_backward(const float* dy, const float* x, const float* weight, const float* mean,
                         const float* rstd, float* dx, float* dweight, float* dbias, int64_t N,
                         int64_t D) {
  const auto& k = rows::best_row_kernels();
  std::vector<float> ones;
  if (!weight) ones.assign(D, 1.0f), weight = ones.data();
  if (dx) {
    parallel_for(0, N, grain_for(D), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        k.layer_norm_backward(x + r * D, dy + r * D, weight, mean[r], rstd[r], dx + r * D, D);
      }
    });
  }
  if (!dweight && !dbias) return;
  // dweight and dbias sum over rows: split the columns across threads (never the rows), each
  // column range walking every row in order.
  std::vector<float> dw_buf, db_buf;
  if (!dweight) dw_buf.resize(D), dweight = dw_buf.data();
  if (!dbias) db_buf.resize(D), dbias = db_buf.data();
  std::fill(dweight, dweight + D, 0.0f);
  std::fill(dbias, dbias + D, 0.0f);
  constexpr int64_t kColumns = 64;
  const int64_t blocks = (D + kColumns - 1) / kColumns;
  const int64_t block_grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(N * kColumns, 1));
  parallel_for(0, blocks, block_grain, [&](int64_t b0, int64_t b1) {
    const int64_t j0 = b0 * kColumns, j1 = std::min(D, b1 * kColumns);
    for (int64_t r = 0; r < N; ++r) {
      k.accumulate_affine_grads(x + r * D + j0, dy + r * D + j0, mean[r], rstd[r], dweight + j0,
                                dbias + j0, j1 - j0);
    }
  });
}

}  // namespace ink::kernels
