// The reference matrix product for any element type: a plain triple loop, used for Float64
// (gradcheck runs in double) and by tests as the naive version to check against.
//
// Legend (as in sgemm.h): C [M, N] = alpha * op(A) [M, K] * op(B) [K, N] + beta * C.
//   A is stored [M, K] (Trans::N) or [K, M] (Trans::T) with leading dim lda; likewise B is
//   [K, N] or [N, K] with ldb; C has leading dim ldc. beta == 0 never reads C.
#pragma once

#include <cstdint>

#include "tensor/kernels/sgemm.h"

namespace ink::kernels {

template <class T>
void gemm_reference(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, T alpha,
                    const T* A, int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      T acc = 0;
      for (int64_t p = 0; p < K; ++p) {
        const T a = trans_a == Trans::N ? A[i * lda + p] : A[p * lda + i];
        const T b = trans_b == Trans::N ? B[p * ldb + j] : B[j * ldb + p];
        acc += a * b;
      }
      T& c = C[i * ldc + j];
      c = beta == T{0} ? alpha * acc : alpha * acc + beta * c;
    }
  }
}

}  // namespace ink::kernels
