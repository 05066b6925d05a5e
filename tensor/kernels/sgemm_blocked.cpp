// Kernel 2 of the sgemm family: the naive loops, reordered and cache-blocked. Plain C++.
//
// Legend: M, N, K as in sgemm.h; C[i, j] += a(i, p) * b(p, j).
//   BM x BK = a block of A, BK x BN = a block of B, BM x BN = the block of C they update.
//
// Two changes from the naive kernel, each worth several times its speed:
// 1. Loop order i, p, j instead of i, j, p. The innermost loop now walks a row of B and a row of
//    C, both contiguous, so the compiler turns it into SIMD loads, multiplies and adds. The
//    naive order walks a column of B, one cache line per element.
// 2. Blocking. A block of B (BK x BN) is reused for every row of the A block; it is sized to
//    stay in L2 (128 x 512 floats = 256 KiB), and the row of C being updated (BN floats = 2 KiB)
//    stays in L1 across the BK steps of p.
// A transposed B (stored [N, K]) would make the inner loop strided again, so its block is first
// copied into the [BK, BN] order: the idea that kernel 3 takes all the way (packing).
#include <algorithm>
#include <vector>

#include "tensor/kernels/sgemm.h"

namespace ink::kernels {

namespace {

constexpr int64_t kBlockM = 64;
constexpr int64_t kBlockN = 512;
constexpr int64_t kBlockK = 128;

}  // namespace

void sgemm_blocked(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                   int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  // C = beta * C first, so the blocks below only ever add. beta == 0 writes zeros without
  // reading C (0 * NaN would be NaN).
  for (int64_t i = 0; i < M; ++i) {
    float* c = C + i * ldc;
    if (beta == 0.0f) {
      std::fill(c, c + N, 0.0f);
    } else if (beta != 1.0f) {
      for (int64_t j = 0; j < N; ++j) c[j] *= beta;
    }
  }

  thread_local std::vector<float> b_copy;  // a transposed B block, in [BK, BN] order
  for (int64_t j0 = 0; j0 < N; j0 += kBlockN) {
    const int64_t j1 = std::min(N, j0 + kBlockN);
    for (int64_t p0 = 0; p0 < K; p0 += kBlockK) {
      const int64_t p1 = std::min(K, p0 + kBlockK);
      // b(p, j) = b_block[(p - p0) * b_ld + (j - j0)]
      const float* b_block = B + p0 * ldb + j0;
      int64_t b_ld = ldb;
      if (trans_b == Trans::T) {
        b_copy.resize(static_cast<size_t>(kBlockK * kBlockN));
        for (int64_t j = j0; j < j1; ++j) {
          for (int64_t p = p0; p < p1; ++p) b_copy[(p - p0) * kBlockN + (j - j0)] = B[j * ldb + p];
        }
        b_block = b_copy.data();
        b_ld = kBlockN;
      }
      for (int64_t i0 = 0; i0 < M; i0 += kBlockM) {
        const int64_t i1 = std::min(M, i0 + kBlockM);
        for (int64_t i = i0; i < i1; ++i) {
          float* c = C + i * ldc + j0;
          for (int64_t p = p0; p < p1; ++p) {
            const float a = alpha * (trans_a == Trans::N ? A[i * lda + p] : A[p * lda + i]);
            const float* b = b_block + (p - p0) * b_ld;
            for (int64_t j = 0; j < j1 - j0; ++j) c[j] += a * b[j];
          }
        }
      }
    }
  }
}

}  // namespace ink::kernels
