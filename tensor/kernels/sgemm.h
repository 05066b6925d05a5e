// The matmul kernel family: C = alpha * op(A) * op(B) + beta * C, single precision, row-major.
//
// Legend: M = rows of op(A) and C, N = columns of op(B) and C, K = the shared dimension.
//   op(A) is [M, K]: A is stored [M, K] (Trans::N) or [K, M] (Trans::T), with leading dim lda.
//   op(B) is [K, N]: B is stored [K, N] (Trans::N) or [N, K] (Trans::T), with leading dim ldb.
//   C is [M, N] with leading dim ldc.
// Backprop uses three layouts: A*B (forward), A*B^T (dA = dC * B^T), A^T*B (dB = A^T * dC).
//
// When beta == 0, C is overwritten and its old contents are never read (NaNs in C do not leak).
// The kernels are plain functions: no autograd, no allocation visible to the caller.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ink::kernels {

enum class Trans : uint8_t { N, T };

using SgemmFn = void (*)(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K,
                         float alpha, const float* A, int64_t lda, const float* B, int64_t ldb,
                         float beta, float* C, int64_t ldc);

// 1. The reference: a plain triple loop. Slow and obviously right.
void sgemm_naive(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                 int64_t ldc);

// The default kernel: the fastest one in the family (used by ink::matmul and ink::linear).
void sgemm(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha,
           const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
           int64_t ldc);

// Every kernel of the family by name, simplest first, so tests and benchmarks can loop over
// them. "naive" is always first.
struct SgemmKernel {
  std::string name;
  SgemmFn fn;
};
const std::vector<SgemmKernel>& sgemm_kernels();
// Looks a kernel up by name; throws ink::Error listing the known names if it does not exist.
SgemmFn sgemm_kernel(const std::string& name);

}  // namespace ink::kernels
