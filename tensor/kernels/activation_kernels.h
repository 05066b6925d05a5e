// Elementwise activations: sigmoid, silu and gelu (exact erf form), forward and backward, plus
// the vector exp and erf they are built on.
//
// Legend: n = elements. x = the forward's input, y = its output, dy = the gradient of the loss
// with respect to y, dx = with respect to x (all n elements, contiguous).
//
// Two versions of each: *_naive, the reference (one std::exp / std::erfc per element, templated
// on float and double; the double path is what gradcheck runs), and the fast float version
// (the vectorised row primitives of activation_rows.h, AVX-512 / AVX2 / portable chosen at run
// time, split across threads in fixed chunks; elementwise, so identical at any thread count).
// y may alias x and dx may alias dy.
#pragma once

#include <cstdint>

namespace ink::kernels {

// ---- the reference versions ----
// sigmoid(x) = 1 / (1 + exp(-x)), evaluated so that exp never overflows.
template <class T>
void sigmoid_forward_naive(const T* x, T* y, int64_t n);
// dx = dy * y * (1 - y)
template <class T>
void sigmoid_backward_naive(const T* y, const T* dy, T* dx, int64_t n);
// silu(x) = x * sigmoid(x)
template <class T>
void silu_forward_naive(const T* x, T* y, int64_t n);
// dx = dy * s * (1 + x * (1 - s)), s = sigmoid(x)
template <class T>
void silu_backward_naive(const T* x, const T* dy, T* dx, int64_t n);
// gelu(x) = x * Phi(x), Phi the standard normal CDF = erfc(-x / sqrt 2) / 2
template <class T>
void gelu_forward_naive(const T* x, T* y, int64_t n);
// dx = dy * (Phi(x) + x * phi(x)), phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
template <class T>
void gelu_backward_naive(const T* x, const T* dy, T* dx, int64_t n);

// ---- the fast float versions (same formulas) ----
void exp_forward(const float* x, float* y, int64_t n);
void erf_forward(const float* x, float* y, int64_t n);
void sigmoid_forward(const float* x, float* y, int64_t n);
void sigmoid_backward(const float* y, const float* dy, float* dx, int64_t n);
void silu_forward(const float* x, float* y, int64_t n);
void silu_backward(const float* x, const float* dy, float* dx, int64_t n);
void gelu_forward(const float* x, float* y, int64_t n);
void gelu_backward(const float* x, const float* dy, float* dx, int64_t n);

}  // namespace ink::kernels
