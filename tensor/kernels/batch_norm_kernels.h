// Batch normalisation kernels (training mode): batch statistics, the normalisation, and the
// backward through the batch statistics, as plain functions over raw pointers.
//
// Legend: B = batch, C = channels. x, y, dy, dx: [B, C] row-major, so one row holds every
//   channel of one sample and the inner loops run over contiguous channels (they vectorise).
//   gamma (weight), beta (bias), dgamma, dbeta: [C]. mean, inv_std: [C], with
//   inv_std = 1 / sqrt(var + eps) and var the biased batch variance.
// gamma and beta may be nullptr (no affine transform: ones and zeros). In the backward, dx,
// dgamma and dbeta may each be nullptr (not needed); those given are overwritten.
// Per-channel sums are accumulated in double, in a fixed order, so results do not depend on
// the thread count. Instantiated for float and double (gradcheck). tests/test_fused_home.cpp
// checks them against a naive version.
#pragma once

#include <cstdint>

namespace ink::kernels {

// mean[c] and the biased variance var[c] of x over b (two passes, so the variance does not
// suffer from cancellation).
template <class T>
void batch_norm_stats(const T* x, int64_t B, int64_t C, double* mean, double* var);

// y = x * scale + shift per channel, with scale = gamma * inv_std and shift = beta - mean * scale
// (the same arrangement as PyTorch's CPU kernel).
template <class T>
void batch_norm_apply(const T* x, const T* mean, const T* inv_std, const T* gamma, const T* beta,
                      int64_t B, int64_t C, T* y);

// With xhat = (x - mean) * inv_std and dxhat = dy * gamma:
//   dbeta = sum_b dy,   dgamma = sum_b dy * xhat,
//   dx = gamma * inv_std * (dy - dbeta / B - xhat * dgamma / B)
template <class T>
void batch_norm_backward(const T* dy, const T* x, const T* mean, const T* inv_std, const T* gamma,
                         int64_t B, int64_t C, T* dx, T* dgamma, T* dbeta);

}  // namespace ink::kernels
