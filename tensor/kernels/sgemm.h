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

using SgemmFn = void (*)(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                         const float* A, int64_t lda, const float* B, int64_t ldb, float beta,
                         float* C, int64_t ldc);

// 1. The reference: a plain triple loop. Slow and obviously right.
void sgemm_naive(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                 const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                 int64_t ldc);

// 2. Loop-reordered (i, p, j) and cache-blocked, plain C++ (sgemm_blocked.cpp).
void sgemm_blocked(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                   const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                   int64_t ldc);

// 3. BLIS-style: MC/KC/NC blocks, packed panels of A and B, a register-blocked SIMD micro-kernel
// (AVX-512, AVX2+FMA or portable, chosen at run time). Single-threaded (sgemm_packed.cpp).
void sgemm_packed(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                  int64_t ldc);

// 4. Kernel 3 on ink::get_num_threads() threads, splitting C (never K, so the result is
// bit-identical for any thread count), and skipping packing on small shapes where it does not
// pay (sgemm_packed_mt.cpp).
void sgemm_packed_mt(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                     const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                     int64_t ldc);

// The name of the micro-kernel instruction set the packed kernels use on this CPU:
// "avx512", "avx2" or "generic".
const char* sgemm_isa();

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
