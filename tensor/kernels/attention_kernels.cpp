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
                             T* weights, int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<double> s(Lk);
  for (int64_t b = 0; b < B; ++b) {
    const uint8_t* valid = key_valid ? key_valid + b * Lk : nullptr;
    for (int64_t h = 0; h < H; ++h) {
      const int64_t bh = b * H + h;
      const T* qh = q + bh * Lq * D;
      const T* kh = k + bh * Lk * D;
      const T* vh = v + bh * Lk * D;
      for (int64_t i = 0; i < Lq; ++i) {
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
        T* p = weights + (bh * Lq + i) * Lk;
        for (int64_t j = 0; j < Lk; ++j) p[j] = sum > 0.0 ? static_cast<T>(s[j] / sum) : T(0);
        for (int64_t e = 0; e < D; ++e) {
          double acc = 0.0;
          for (int64_t j = 0; j < Lk; ++j) acc += static_cast<double>(p[j]) * vh[j * D + e];
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
    const T* P = weights + bh * Lq * Lk;
    // dS = P * (dP - rowsum(dP * P)), dP = dout v^T.
    for (int64_t i = 0; i < Lq; ++i) {
      double row = 0.0;
      for (int64_t j = 0; j < Lk; ++j) {
        double dp = 0.0;
        for (int64_t e = 0; e < D; ++e) dp += static_cast<double>(go[i * D + e]) * vh[j * D + e];
        dS[i * Lk + j] = dp;
        row += dp * P[i * Lk + j];
      }
      for (int64_t j = 0; j < Lk; ++j) dS[i * Lk + j] = P[i * Lk + j] * (dS[i * Lk + j] - row);
    }
    if (dv) {
      for (int64_t j = 0; j < Lk; ++j) {
        for (int64_t e = 0; e < D; ++e) {
          double acc = 0.0;
          for (int64_t i = 0; i < Lq; ++i)
            acc += static_cast<double>(P[i * Lk + j]) * go[i * D + e];
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
                                           int64_t, int64_t, int64_t, int64_t, int64_t);          \
  template void attention_backward_naive<T>(const T*, const T*, const T*, const T*, const T*, T*, \
                                            T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t);
INK_INSTANTIATE(float)
INK_INSTANTIATE(double)
#undef INK_INSTANTIATE

void attention_forward(const float* q, const float* k, const float* v, const uint8_t* key_valid,
                       float* out, float* weights, int64_t B, int64_t H, int64_t Lq, int64_t Lk,
                       int64_t D) {
  const auto& rk = rows::best_row_kernels();
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  const int64_t work = Lq * Lk * D;  // multiply-adds per (b, h) and matmul
  parallel_for(0, B * H, std::max<int64_t>(1, 32768 / std::max<int64_t>(work, 1)),
               [&](int64_t p0, int64_t p1) {
                 for (int64_t bh = p0; bh < p1; ++bh) {
                   const uint8_t* valid = key_valid ? key_valid + (bh / H) * Lk : nullptr;
                   float* P = weights + bh * Lq * Lk;
                   // S = q k^T / sqrt(D), into the weights buffer.
                   sgemm(Trans::N, Trans::T, Lq, Lk, D, scale, q + bh * Lq * D, D, k + bh * Lk * D,
                         D, 0.0f, P, Lk);
                   for (int64_t i = 0; i < Lq; ++i) {
                     float* row = P + i * Lk;
                     if (valid) {
                       for (int64_t j = 0; j < Lk; ++j) {
                         if (!valid[j]) row[j] = kNegInf;
                       }
                     }
                     rk.softmax(row, row, Lk);  // all -inf gives all 0
                   }
                   sgemm(Trans::N, Trans::N, Lq, D, Lk, 1.0f, P, Lk, v + bh * Lk * D, D, 0.0f,
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
  parallel_for(0, B * H, std::max<int64_t>(1, 32768 / std::max<int64_t>(work, 1)),
               [&](int64_t p0, int64_t p1) {
                 std::vector<float> dS(Lq * Lk);  // [Lq, Lk]: dP, then dS in place
                 for (int64_t bh = p0; bh < p1; ++bh) {
                   const float* P = weights + bh * Lq * Lk;
                   const float* go = dout + bh * Lq * D;
                   if (dv) {
                     sgemm(Trans::T, Trans::N, Lk, D, Lq, 1.0f, P, Lk, go, D, 0.0f,
                           dv + bh * Lk * D, D);
                   }
                   if (!dq && !dk) continue;
                   sgemm(Trans::N, Trans::T, Lq, Lk, D, 1.0f, go, D, v + bh * Lk * D, D, 0.0f,
                         dS.data(), Lk);
                   for (int64_t i = 0; i < Lq; ++i) {
                     rk.softmax_backward(P + i * Lk, dS.data() + i * Lk, dS.data() + i * Lk, Lk);
                   }
                   if (dq) {
                     sgemm(Trans::N, Trans::N, Lq, D, Lk, scale, dS.data(), Lk, k + bh * Lk * D, D,
                           0.0f, dq + bh * Lq * D, D);
                   }
                   if (dk) {
                     sgemm(Trans::T, Trans::N, Lk, D, Lq, scale, dS.data(), Lk, q + bh * Lq * D, D,
                           0.0f, dk + bh * Lk * D, D);
                   }
                 }
               });
}

}  // namespace ink::kernels
