// Fused normalisation kernels: group norm and layer norm, each one forward pass and one backward
// pass, saving exactly what the backward needs (the mean and rstd of each group or row).
//
// Legend:
//   group norm: B = batch, C = channels, S = spatial positions per channel (H * W, or 1),
//     G = groups (G divides C), Cg = C / G channels per group; a group is Cg * S contiguous
//     elements. x, y, dy, dx: [B, C, S]. weight, bias, dweight, dbias: [C].
//     mean, rstd: [B, G].
//   layer norm: N = rows (everything before the last dim), D = the normalised last dim.
//     x, y, dy, dx: [N, D]. weight, bias, dweight, dbias: [D]. mean, rstd: [N].
//   rstd = 1 / sqrt(var + eps), var the biased variance (divided by the count), as PyTorch.
//   xhat = (x - mean) * rstd;  y = xhat * weight + bias.
// weight and bias may be nullptr (no affine: as ones and zeros). In the backward, dx, dweight and
// dbias may each be nullptr (not needed); those given are overwritten, not accumulated.
//
// *_naive: the reference (sums in double), templated on float and double. The fast float
// versions use the vectorised row primitives (activation_rows.h); every sum stays inside one
// thread's group, row or column range, so the results are identical at any thread count.
#pragma once

#include <cstdint>

namespace ink::kernels {

template <class T>
void group_norm_forward_naive(const T* x, const T* weight, const T* bias, T* y, T* mean, T* rstd,
                              int64_t B, int64_t C, int64_t S, int64_t G, double eps);
// y from the mean and rstd a forward wrote: that forward's y again, bit for bit, without its
// statistics pass (for an op that remakes its output in backward). Also group_norm_apply.
template <class T>
void group_norm_apply_naive(const T* x, const T* weight, const T* bias, const T* mean,
                            const T* rstd, T* y, int64_t B, int64_t C, int64_t S, int64_t G);
// dx = rstd * (dxhat - mean_g(dxhat) - xhat * mean_g(dxhat * xhat)), dxhat = dy * weight;
// dweight = sum_{B,S}(dy * xhat); dbias = sum_{B,S}(dy).
template <class T>
void group_norm_backward_naive(const T* dy, const T* x, const T* weight, const T* mean,
                               const T* rstd, T* dx, T* dweight, T* dbias, int64_t B, int64_t C,
                               int64_t S, int64_t G);

template <class T>
void layer_norm_forward_naive(const T* x, const T* weight, const T* bias, T* y, T* mean, T* rstd,
                              int64_t N, int64_t D, double eps);
// dx = rstd * (dxhat - mean_D(dxhat) - xhat * mean_D(dxhat * xhat)), dxhat = dy * weight;
// dweight = sum_N(dy * xhat); dbias = sum_N(dy).
template <class T>
void layer_norm_backward_naive(const T* dy, const T* x, const T* weight, const T* mean,
                               const T* rstd, T* dx, T* dweight, T* dbias, int64_t N, int64_t D);

void group_norm_forward(const float* x, const float* weight, const float* bias, float* y,
                        float* mean, float* rstd, int64_t B, int64_t C, int64_t S, int64_t G,
                        double eps);
void group_norm_apply(const float* x, const float* weight, const float* bias, const float* mean,
                      const float* rstd, float* y, int64_t B, int64_t C, int64_t S, int64_t G);
// dx may be dy itself (each element of dy is read before the same element of dx is written),
// here and in group_norm_backward_naive.
void group_norm_backward(const float* dy, const float* x, const float* weight, const float* mean,
                         const float* rstd, float* dx, float* dweight, float* dbias, int64_t B,
                         int64_t C, int64_t S, int64_t G);
void layer_norm_forward(const float* x, const float* weight, const float* bias, float* y,
                        float* mean, float* rstd, int64_t N, int64_t D, double eps);
void layer_norm_backward(const float* dy, const float* x, const float* weight, const float* mean,
                         const float* rstd, float* dx, float* dweight, float* dbias, int64_t N,
                         int64_t D);

}  // namespace ink::kernels
