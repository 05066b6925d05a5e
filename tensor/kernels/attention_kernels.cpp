// The attention kernels of attention_kernels.h.
#include "tensor/kernels/attention_kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "tensor/kernels/activation_rows.h"
#include "tensor/kernels/sgemm.h"
#include "tensor/parallel.h"

namespace ink::kernels {

template <class T>
void attention_forward_naive(const T* q, const T* k, const T* v, const uint8_t* key_valid, T* out,
                             T* weights, int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D,
                             bool per_query) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<double> s(Lk);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t bh = b * H + h;
      const T* qh = q + bh * Lq * D;
      const T* kh = k + bh * Lk * D;
      const T* vh = v + bh * Lk * D;
      for (int64_t i = 0; i < Lq; ++i) {
        const uint8_t* valid =
            key_valid ? key_valid + (per_query ? (b * Lq + i) * Lk : b * Lk) : nullptr;
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < Lk; ++j) {
          if (valid && !valid[j]) continue;
          double dot = 0.0;
          for (int64_t e = 0; e < D; ++e) dot += static_cast<double>(qh[i * D + e]) * kh[j * D + e];
          s[j] = dot * scale;
          m = std::max(m, s[j]);
        }
        double sum = 0.0;
        for (int64_t j = 0; j < Lk; ++j) {
          s[j] = (valid && !valid[j]) ? 0.0 : std::exp(s[j] - m);
          sum += s[j];
        }
        T* pt = weights + bh * Lk * Lq + i;  // column i of P^T
        for (int64_t j = 0; j < Lk; ++j) {
          pt[j * Lq] = sum > 0.0 ? static_cast<T>(s[j] / sum) : T(0);
        }
        for (int64_t e = 0; e < D; ++e) {
          double acc = 0.0;
          for (int64_t j = 0; j < Lk; ++j) acc += static_cast<double>(pt[j * Lq]) * vh[j * D + e];
          out[(bh * Lq + i) * D + e] = static_cast<T>(acc);
        }
      }
    }
  }
}

template <class T>
void attention_backward_naive(const T* dout, const T* q, const T* k, const T* v, const T* weights,
                              T* dq, T* dk, T* dv, int64_t B, int64_t H, int64_t Lq, int64_t Lk,
                              int64_t D) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<double> dS(Lq * Lk);
  for (int64_t bh = 0; bh < B * H; ++bh) {
    const T* qh = q + bh * Lq * D;
    const T* kh = k + bh * Lk * D;
    const T* vh = v + bh * Lk * D;
    const T* go = dout + bh * Lq * D;
    const T* Pt = weights + bh * Lk * Lq;  // [Lk, Lq]
    auto P = [&](int64_t i, int64_t j) { return static_cast<double>(Pt[j * Lq + i]); };
    // dS = P * (dP - rowsum(dP * P)), dP = dout v^T.
    for (int64_t i = 0; i < Lq; ++i) {
      double row = 0.0;
      for (int64_t j = 0; j < Lk; ++j) {
        double dp = 0.0;
        for (int64_t e = 0; e < D; ++e) dp += static_cast<double>(go[i * D + e]) * vh[j * D + e];
        dS[i * Lk + j] = dp;
        row += dp * P(i, j);
      }
      for (int64_t j = 0; j < Lk; ++j) dS[i * Lk + j] = P(i, j) * (dS[i * Lk + j] - row);
    }
    if (dv) {
      for (int64_t j = 0; j < Lk; ++j) {
        for (int64_t e = 0; e < D; ++e) {
          double acc = 0.0;
          for (int64_t i = 0; i < Lq; ++i) acc += P(i, j) * go[i * D + e];
          dv[(bh * Lk + j) * D + e] = static_cast<T>(acc);
        }
      }
    }
    if (dq) {
      for (int64_t i = 0; i < Lq; ++i) {
        for (int64_t e = 0; e < D; ++e) {
          double acc = 0.0;
          for (int64_t j = 0; j < Lk; ++j) acc += dS[i * Lk + j] * kh[j * D + e];
          dq[(bh * Lq + i) * D + e] = static_cast<T>(acc * scale);
        }
      }
    }
    if (dk) {
      for (int64_t j = 0; j < Lk; ++j) {
        for (int64_t e = 0; e < D; ++e) {
          double acc = 0.0;
          for (int64_t i = 0; i < Lq; ++i) acc += dS[i * Lk + j] * qh[i * D + e];
          dk[(bh * Lk + j) * D + e] = static_cast<T>(acc * scale);
        }
      }
    }
  }
}

#define INK_INSTANTIATE(T)                                                                        \
  template void attention_forward_naive<T>(const T*, const T*, const T*, const uint8_t*, T*, T*,  \
                                           int64_t, int64_t, int64_t, int64_t, int64_t, bool);    \
  template void attention_backward_naive<T>(const T*, const T*, const T*, const T*, const T*, T*, \
                                            T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t);
INK_INSTANTIATE(float)
INK_INSTANTIATE(double)
#undef INK_INSTANTIATE

void attention_forward(const float* q, const float* k, const float* v, const uint8_t* key_valid,
                       float* out, float* weights, int64_t B, int64_t H, int64_t Lq, int64_t Lk,
                       int64_t D, bool per_query) {
  const auto& rk = rows::best_row_kernels();
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  const int64_t work = Lq * Lk * D;  // multiply-adds per (b, h) and matmul
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(work, 1));
  parallel_for(0, B * H, grain, [&](int64_t p0, int64_t p1) {
    for (int64_t bh = p0; bh < p1; ++bh) {
      float* Pt = weights + bh * Lk * Lq;  // [Lk, Lq]
      // S^T = k q^T / sqrt(D), then the softmax down each query's column.
      sgemm(Trans::N, Trans::T, Lk, Lq, D, scale, k + bh * Lk * D, D, q + bh * Lq * D, D, 0.0f, Pt,
            Lq);
      if (key_valid && per_query) {
        // Each query has its own mask: masked scores become -FLT_MAX (exp gives exactly 0 next
        // to any valid score), then the masked weights are set to 0, which also empties the
        // column of a query with no valid key (its -FLT_MAX scores would share the weight).
        const uint8_t* mask = key_valid + (bh / H) * Lq * Lk;  // [Lq, Lk]
        for (int64_t i = 0; i < Lq; ++i) {
          for (int64_t j = 0; j < Lk; ++j) {
            if (!mask[i * Lk + j]) Pt[j * Lq + i] = -std::numeric_limits<float>::max();
          }
        }
        rk.softmax_columns(Pt, Lk, Lq, Lq, nullptr);
        for (int64_t i = 0; i < Lq; ++i) {
          for (int64_t j = 0; j < Lk; ++j) {
            if (!mask[i * Lk + j]) Pt[j * Lq + i] = 0.0f;
          }
        }
      } else {
        rk.softmax_columns(Pt, Lk, Lq, Lq, key_valid ? key_valid + (bh / H) * Lk : nullptr);
      }
      // out = P v = (P^T)^T v
      sgemm(Trans::T, Trans::N, Lq, D, Lk, 1.0f, Pt, Lq, v + bh * Lk * D, D, 0.0f,
            out + bh * Lq * D, D);
    }
  });
}

void attention_backward(const float* dout, const float* q, const float* k, const float* v,
                        const float* weights, float* dq, float* dk, float* dv, int64_t B, int64_t H,
                        int64_t Lq, int64_t Lk, int64_t D) {
  const auto& rk = rows::best_row_kernels();
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  const int64_t work = Lq * Lk * D;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(work, 1));
  parallel_for(0, B * H, grain, [&](int64_t p0, int64_t p1) {
    // The backward's products read P and dS by query rows ([Lq, Lk]), the layout in which the
    // packed sgemm handles them best (measured: 49 vs 39 GFLOP/s on B 64, H 1, Lq 784, Lk 16,
    // D 32 against products on P^T and dS^T directly), so P^T is turned around once per (b, h).
    std::vector<float> P(Lq * Lk), dS(Lq * Lk);  // [Lq, Lk] each
    for (int64_t bh = p0; bh < p1; ++bh) {
      const float* Pt = weights + bh * Lk * Lq;
      for (int64_t i = 0; i < Lq; ++i) {
        for (int64_t j = 0; j < Lk; ++j) P[i * Lk + j] = Pt[j * Lq + i];
      }
      const float* go = dout + bh * Lq * D;
      // dv = P^T dout
      if (dv) {
        sgemm(Trans::T, Trans::N, Lk, D, Lq, 1.0f, P.data(), Lk, go, D, 0.0f, dv + bh * Lk * D, D);
      }
      if (!dq && !dk) continue;
      // dP = dout v^T, then dS = P * (dP - rowsum(dP * P)) row by row
      sgemm(Trans::N, Trans::T, Lq, Lk, D, 1.0f, go, D, v + bh * Lk * D, D, 0.0f, dS.data(), Lk);
      for (int64_t i = 0; i < Lq; ++i) {
        rk.softmax_backward(P.data() + i * Lk, dS.data() + i * Lk, dS.data() + i * Lk, Lk);
      }
      // dq = dS k / sqrt(D);  dk = dS^T q / sqrt(D)
      if (dq) {
        sgemm(Trans::N, Trans::N, Lq, D, Lk, scale, dS.data(), Lk, k + bh * Lk * D, D, 0.0f,
              dq + bh * Lq * D, D);
      }
      if (dk) {
        sgemm(Trans::T, Trans::N, Lk, D, Lq, scale, dS.data(), Lk, q + bh * Lq * D, D, 0.0f,
              dk + bh * Lk * D, D);
      }
    }
  });
}

}  // namespace ink::kernels
