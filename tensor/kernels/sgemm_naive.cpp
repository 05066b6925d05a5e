// Kernel 1 of the sgemm family: the reference triple loop, accumulating in double.
//
// Legend: M, N, K as in sgemm.h; C[i, j] = alpha * sum_p a(i, p) * b(p, j) + beta * C[i, j],
// with a(i, p) = A[i * lda + p] (Trans::N) or A[p * lda + i] (Trans::T), and b(p, j) likewise.
// The innermost loop walks p, so for Trans::N it reads B down a column, one cache line per
// element: that is what kernel 2 (sgemm_blocked.cpp) fixes first.
#include "tensor/kernels/sgemm.h"

namespace ink::kernels {

void sgemm_naive(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                 int64_t ldc) {
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double acc = 0.0;
      for (int64_t p = 0; p < K; ++p) {
        const float a = trans_a == Trans::N ? A[i * lda + p] : A[p * lda + i];
        const float b = trans_b == Trans::N ? B[p * ldb + j] : B[j * ldb + p];
        acc += static_cast<double>(a) * b;
      }
      float& c = C[i * ldc + j];
      const float scaled = alpha * static_cast<float>(acc);
      c = beta == 0.0f ? scaled : scaled + beta * c;
    }
  }
}

}  // namespace ink::kernels
