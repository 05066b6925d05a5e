// The activation kernels of activation_kernels.h: the references, and the threaded drivers over
// the vectorised row primitives.
#include "tensor/kernels/activation_kernels.h"

#include <algorithm>
#include <cmath>

#include "tensor/kernels/activation_rows.h"
#include "tensor/parallel.h"

namespace ink::kernels {

namespace {

template <class T>
T sigmoid_of(T v) {
  if (v >= T(0)) return T(1) / (T(1) + std::exp(-v));
  const T e = std::exp(v);
  return e / (T(1) + e);
}

// In double for either T, so the float reference does not lose the tail's precision to the
// rounding of x / sqrt 2 (exp(-x^2 / 2) is very sensitive to it for large |x|).
template <class T>
T normal_cdf(T v) {
  return static_cast<T>(0.5 * std::erfc(-static_cast<double>(v) * 0.70710678118654752440));
}

template <class T>
T normal_pdf(T v) {
  const double d = v;
  return static_cast<T>(std::exp(-0.5 * d * d) * 0.39894228040143267794);
}

// Elementwise work is split into near-equal parts of whole blocks (a block is a multiple of
// every lane count, so each part but the last is whole vectors, and which elements take the
// scalar tail does not depend on the thread count), at least kChunk elements a part: fixed-size
// chunks would leave a 25,000-element tensor split 16,384 / 8,616 between two threads.
constexpr int64_t kBlock = 64;
constexpr int64_t kChunk = 16384;

template <class F>
void chunked(int64_t n, F f) {
  parallel_for(0, (n + kBlock - 1) / kBlock, kChunk / kBlock, [&](int64_t b0, int64_t b1) {
    const int64_t begin = b0 * kBlock;
    const int64_t end = std::min(n, b1 * kBlock);
    f(begin, end - begin);
  });
}

}  // namespace

template <class T>
void sigmoid_forward_naive(const T* x, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = sigmoid_of(x[i]);
}
template <class T>
void sigmoid_backward_naive(const T* y, const T* dy, T* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * y[i] * (T(1) - y[i]);
}
template <class T>
void silu_forward_naive(const T* x, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * sigmoid_of(x[i]);
}
template <class T>
void silu_backward_naive(const T* x, const T* dy, T* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const T s = sigmoid_of(x[i]);
    dx[i] = dy[i] * s * (T(1) + x[i] * (T(1) - s));
  }
}
template <class T>
void gelu_forward_naive(const T* x, T* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * normal_cdf(x[i]);
}
template <class T>
void gelu_backward_naive(const T* x, const T* dy, T* dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * (normal_cdf(x[i]) + x[i] * normal_pdf(x[i]));
}

#define INK_INSTANTIATE(T)                                                  \
  template void sigmoid_forward_naive<T>(const T*, T*, int64_t);            \
  template void sigmoid_backward_naive<T>(const T*, const T*, T*, int64_t); \
  template void silu_forward_naive<T>(const T*, T*, int64_t);               \
  template void silu_backward_naive<T>(const T*, const T*, T*, int64_t);    \
  template void gelu_forward_naive<T>(const T*, T*, int64_t);               \
  template void gelu_backward_naive<T>(const T*, const T*, T*, int64_t);
INK_INSTANTIATE(float)
INK_INSTANTIATE(double)
#undef INK_INSTANTIATE

void exp_forward(const float* x, float* y, int64_t n) {
  const auto& k = rows::best_row_kernels();
  chunked(n, [&](int64_t i, int64_t m) { k.exp(x + i, y + i, m); });
}
void erf_forward(const float* x, float* y, int64_t n) {
  const auto& k = rows::best_row_kernels();
  chunked(n, [&](int64_t i, int64_t m) { k.erf(x + i, y + i, m); });
}
void sigmoid_forward(const float* x, float* y, int64_t n) {
  const auto& k = rows::best_row_kernels();
  chunked(n, [&](int64_t i, int64_t m) { k.sigmoid_forward(x + i, y + i, m); });
}
void sigmoid_backward(const float* y, const float* dy, float* dx, int64_t n) {
  const auto& k = rows::best_row_kernels();
  chunked(n, [&](int64_t i, int64_t m) { k.sigmoid_backward(y + i, dy + i, dx + i, m); });
}
void silu_forward(const float* x, float* y, int64_t n) {
  const auto& k = rows::best_row_kernels();
  chunked(n, [&](int64_t i, int64_t m) { k.silu_forward(x + i, y + i, m); });
}
void silu_backward(const float* x, const float* dy, float* dx, int64_t n) {
  const auto& k = rows::best_row_kernels();
  chunked(n, [&](int64_t i, int64_t m) { k.silu_backward(x + i, dy + i, dx + i, m); });
}
void gelu_forward(const float* x, float* y, int64_t n) {
  const auto& k = rows::best_row_kernels();
  chunked(n, [&](int64_t i, int64_t m) { k.gelu_forward(x + i, y + i, m); });
}
void gelu_backward(const float* x, const float* dy, float* dx, int64_t n) {
  const auto& k = rows::best_row_kernels();
  chunked(n, [&](int64_t i, int64_t m) { k.gelu_backward(x + i, dy + i, dx + i, m); });
}

}  // namespace ink::kernels
