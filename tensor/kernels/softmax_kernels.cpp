// The softmax kernels of softmax_kernels.h.
#include "tensor/kernels/softmax_kernels.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "tensor/kernels/activation_rows.h"
#include "tensor/parallel.h"

namespace ink::kernels {

template <class T>
void softmax_forward_naive(const T* x, T* y, int64_t outer, int64_t D, int64_t inner) {
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t in = 0; in < inner; ++in) {
      const T* xr = x + o * D * inner + in;
      T* yr = y + o * D * inner + in;
      T m = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < D; ++j) m = std::max(m, xr[j * inner]);
      if (m == -std::numeric_limits<T>::infinity()) {
        for (int64_t j = 0; j < D; ++j) yr[j * inner] = T(0);
        continue;
      }
      double sum = 0.0;
      for (int64_t j = 0; j < D; ++j) sum += std::exp(static_cast<double>(xr[j * inner] - m));
      for (int64_t j = 0; j < D; ++j) {
        yr[j * inner] = static_cast<T>(std::exp(static_cast<double>(xr[j * inner] - m)) / sum);
      }
    }
  }
}

template <class T>
void log_softmax_forward_naive(const T* x, T* y, int64_t outer, int64_t D, int64_t inner) {
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t in = 0; in < inner; ++in) {
      const T* xr = x + o * D * inner + in;
      T* yr = y + o * D * inner + in;
      T m = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < D; ++j) m = std::max(m, xr[j * inner]);
      double sum = 0.0;
      for (int64_t j = 0; j < D; ++j) sum += std::exp(static_cast<double>(xr[j * inner] - m));
      const double log_sum = std::log(sum);
      for (int64_t j = 0; j < D; ++j) {
        yr[j * inner] = static_cast<T>(static_cast<double>(xr[j * inner] - m) - log_sum);
      }
    }
  }
}

template <class T>
void softmax_backward_naive(const T* y, const T* dy, T* dx, int64_t outer, int64_t D,
                            int64_t inner) {
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t in = 0; in < inner; ++in) {
      const int64_t base = o * D * inner + in;
      double dot = 0.0;
      for (int64_t j = 0; j < D; ++j) {
        dot += static_cast<double>(dy[base + j * inner]) * y[base + j * inner];
      }
      for (int64_t j = 0; j < D; ++j) {
        const int64_t i = base + j * inner;
        dx[i] = static_cast<T>(y[i] * (dy[i] - dot));
      }
    }
  }
}

template <class T>
void log_softmax_backward_naive(const T* y, const T* dy, T* dx, int64_t outer, int64_t D,
                                int64_t inner) {
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t in = 0; in < inner; ++in) {
      const int64_t base = o * D * inner + in;
      double sum = 0.0;
      for (int64_t j = 0; j < D; ++j) sum += dy[base + j * inner];
      for (int64_t j = 0; j < D; ++j) {
        const int64_t i = base + j * inner;
        dx[i] = static_cast<T>(dy[i] - std::exp(static_cast<double>(y[i])) * sum);
      }
    }
  }
}

#define INK_INSTANTIATE(T)                                                                    \
  template void softmax_forward_naive<T>(const T*, T*, int64_t, int64_t, int64_t);            \
  template void log_softmax_forward_naive<T>(const T*, T*, int64_t, int64_t, int64_t);        \
  template void softmax_backward_naive<T>(const T*, const T*, T*, int64_t, int64_t, int64_t); \
  template void log_softmax_backward_naive<T>(const T*, const T*, T*, int64_t, int64_t, int64_t);
INK_INSTANTIATE(float)
INK_INSTANTIATE(double)
#undef INK_INSTANTIATE

namespace {

// Runs a row primitive over every (outer, inner) line of D elements. inner == 1: the rows are
// contiguous and the primitive reads them in place. inner > 1: each line is gathered into a
// contiguous buffer, processed, and scattered back. Lines are split across threads.
using Unary = void (*)(const float*, float*, int64_t);
using Binary = void (*)(const float*, const float*, float*, int64_t);

void each_line(int64_t outer, int64_t D, int64_t inner, const float* a, const float* b, float* out,
               Unary unary, Binary binary) {
  const int64_t lines = outer * inner;
  const int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(D, 1));
  parallel_for(0, lines, grain, [&](int64_t l0, int64_t l1) {
    if (inner == 1) {
      for (int64_t l = l0; l < l1; ++l) {
        if (unary) {
          unary(a + l * D, out + l * D, D);
        } else {
          binary(a + l * D, b + l * D, out + l * D, D);
        }
      }
      return;
    }
    std::vector<float> buf(3 * D);
    float *ra = buf.data(), *rb = ra + D, *ro = rb + D;
    for (int64_t l = l0; l < l1; ++l) {
      const int64_t base = (l / inner) * D * inner + l % inner;
      for (int64_t j = 0; j < D; ++j) ra[j] = a[base + j * inner];
      if (unary) {
        unary(ra, ro, D);
      } else {
        for (int64_t j = 0; j < D; ++j) rb[j] = b[base + j * inner];
        binary(ra, rb, ro, D);
      }
      for (int64_t j = 0; j < D; ++j) out[base + j * inner] = ro[j];
    }
  });
}

}  // namespace

void softmax_forward(const float* x, float* y, int64_t outer, int64_t D, int64_t inner) {
  each_line(outer, D, inner, x, nullptr, y, rows::best_row_kernels().softmax, nullptr);
}
void log_softmax_forward(const float* x, float* y, int64_t outer, int64_t D, int64_t inner) {
  each_line(outer, D, inner, x, nullptr, y, rows::best_row_kernels().log_softmax, nullptr);
}
void softmax_backward(const float* y, const float* dy, float* dx, int64_t outer, int64_t D,
                      int64_t inner) {
  each_line(outer, D, inner, y, dy, dx, nullptr, rows::best_row_kernels().softmax_backward);
}
void log_softmax_backward(const float* y, const float* dy, float* dx, int64_t outer, int64_t D,
                          int64_t inner) {
  each_line(outer, D, inner, y, dy, dx, nullptr, rows::best_row_kernels().log_softmax_backward);
}

}  // namespace ink::kernels
