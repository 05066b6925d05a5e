// Softmax and log-softmax along one dimension, forward and backward.
//
// Legend: the tensor is viewed as [outer, D, inner] and the softmax runs along D (for the last
// dim, inner = 1 and each row of D is contiguous). x = input, y = output (probabilities, or
// log-probabilities for log_softmax), dy / dx = gradients with respect to y / x.
//
// Stable for large inputs: every row is shifted by its maximum first, so +-1000 give exact
// probabilities and finite logs. -inf entries get probability 0; a row of only -inf gives all 0
// (softmax) - the attention kernel relies on this for fully masked rows.
// The backward needs only y (saved by the forward), not x.
//
// *_naive: the reference (std::exp, sums in double), templated on float and double.
// The fast float versions use the vectorised row primitives (activation_rows.h), rows split
// across threads (each row's sums in one thread, so identical at any thread count).
#pragma once

#include <cstdint>

namespace ink::kernels {

template <class T>
void softmax_forward_naive(const T* x, T* y, int64_t outer, int64_t D, int64_t inner);
template <class T>
void log_softmax_forward_naive(const T* x, T* y, int64_t outer, int64_t D, int64_t inner);
// dx = y * (dy - sum_D(dy * y))
template <class T>
void softmax_backward_naive(const T* y, const T* dy, T* dx, int64_t outer, int64_t D,
                            int64_t inner);
// dx = dy - exp(y) * sum_D(dy)
template <class T>
void log_softmax_backward_naive(const T* y, const T* dy, T* dx, int64_t outer, int64_t D,
                                int64_t inner);

void softmax_forward(const float* x, float* y, int64_t outer, int64_t D, int64_t inner);
void log_softmax_forward(const float* x, float* y, int64_t outer, int64_t D, int64_t inner);
void softmax_backward(const float* y, const float* dy, float* dx, int64_t outer, int64_t D,
                      int64_t inner);
void log_softmax_backward(const float* y, const float* dy, float* dx, int64_t outer, int64_t D,
                          int64_t inner);

}  // namespace ink::kernels
