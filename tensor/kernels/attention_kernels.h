// Fused scaled dot-product attention with a key mask, forward and backward.
//
// Legend: B = batch, H = heads, Lq = queries, Lk = keys, D = head dim (d).
//   q, dq:      [B, H, Lq, D]
//   k, v, dk, dv: [B, H, Lk, D]
//   key_valid:  [B, Lk], nonzero = the key takes part; nullptr = every key does. With
//               per_query: [B, Lq, Lk], a mask of its own for each query (a causal or
//               block-diagonal pattern, say).
//   weights:    [B, H, Lk, Lq], P^T: P = softmax_k(q . k / sqrt(D)) over the valid keys, 0 at
//               masked keys, stored transposed (keys by queries) so that the softmax over the
//               few keys runs down columns with vertical SIMD operations only. Written by the
//               forward and read by the backward (the one thing it saves).
//   out, dout:  [B, H, Lq, D], out = P v.
// A query row whose keys are all masked gets P = 0, so its output row is 0 and it passes no
// gradient to q, k or v (a defined result, never NaN).
//
// Backward, per (b, h), with S = q k^T / sqrt(D):
//   dv = P^T dout;  dP = dout v^T;  dS = P * (dP - rowsum(dP * P));
//   dq = dS k / sqrt(D);  dk = dS^T q / sqrt(D).
// dq, dk, dv may each be nullptr (not needed); those given are overwritten.
//
// *_naive: plain loops (sums in double), templated on float and double. The fast float version
// runs each (b, h) on one thread: two sgemm calls (kernels::sgemm) around the column softmax in
// the forward (P^T = k q^T / sqrt(D), then out = (P^T)^T v); in the backward one transpose of
// P^T into P and four sgemm calls on P and dS by query rows, where the packed sgemm is fastest.
// (b, h) pairs are split across threads, so the result is identical at any thread count.
#pragma once

#include <cstdint>

namespace ink::kernels {

template <class T>
void attention_forward_naive(const T* q, const T* k, const T* v, const uint8_t* key_valid, T* out,
                             T* weights, int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t D,
                             bool per_query = false);
template <class T>
void attention_backward_naive(const T* dout, const T* q, const T* k, const T* v, const T* weights,
                              T* dq, T* dk, T* dv, int64_t B, int64_t H, int64_t Lq, int64_t Lk,
                              int64_t D);

void attention_forward(const float* q, const float* k, const float* v, const uint8_t* key_valid,
                       float* out, float* weights, int64_t B, int64_t H, int64_t Lq, int64_t Lk,
                       int64_t D, bool per_query = false);
void attention_backward(const float* dout, const float* q, const float* k, const float* v,
                        const float* weights, float* dq, float* dk, float* dv, int64_t B, int64_t H,
                        int64_t Lq, int64_t Lk, int64_t D);

}  // namespace ink::kernels
