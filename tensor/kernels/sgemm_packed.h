// Internal to the sgemm family: what the packed kernels (3 and 4) share. The driver in
// sgemm_packed.cpp does the blocking and packing; the micro-kernels, one set per instruction set,
// do the arithmetic. Tests include this header to check every micro-kernel set, not only the one
// the CPU would pick.
//
// Legend (as in sgemm.h): M = rows of C, N = columns of C, K = the shared dimension.
//   MR x NR = the register tile one micro-kernel call computes (MR rows, NR columns of C).
//   KC = the slice of K one call sums over; MC x KC = a packed block of A; KC x NC = of B.
#pragma once

#include <cstdint>
#include <vector>

#include "tensor/kernels/sgemm.h"

namespace ink::kernels::packed {

// The arguments of one micro-kernel call:
//   C[i, j] = alpha * sum_{p < k} a(i, p) * b(p, j) + beta * C[i, j]   for i < m, j < n.
// The operands are "panels":
//   a(i, p) = a[i * a_row_stride + p * a_k_stride]
//   b(p, j) = b[p * b_k_stride + j]   (along the tile, B's elements are contiguous)
// A packed A panel has a_row_stride == 1 and a_k_stride == MR; a packed B panel has
// b_k_stride == NR. An unpacked operand is passed directly with its own strides: A stored
// [K, M] (Trans::T) as (1, lda), A stored [M, K] (Trans::N) as (lda, 1), B stored [K, N]
// (Trans::N) with b_k_stride = ldb. Only the m rows and n columns that exist are read, so a
// ragged tile at the matrix edge never touches memory outside the operands.
struct MicroTile {
  int64_t k;
  const float* a;
  int64_t a_row_stride;
  int64_t a_k_stride;
  const float* b;
  int64_t b_k_stride;
  float* c;
  int64_t ldc;
  float alpha;
  float beta;  // 0: C is written without being read (NaN in C does not leak)
  int m;       // rows present, 1..MR
  int n;       // columns present, 1..NR
};

// One instruction set's micro-kernel and the packing routine that needs shuffles.
struct MicroKernel {
  const char* isa;  // "avx512", "avx2" or "generic"
  int mr;           // MR: rows of the register tile
  int nr;           // NR: columns of the register tile (a multiple of `lanes`)
  int lanes;        // floats per SIMD register; the threaded kernel splits N on this grain
  // Computes one tile (any m <= MR, n <= NR) as described at MicroTile.
  void (*tile)(const MicroTile& t);
  // Transposing pack: dst[p * width + j] = src[j * ld + p] for p < kc, j < w, and 0 for
  // w <= j < width. Used where the panel's columns are rows of the source (A stored [M, K],
  // B stored [N, K]).
  void (*pack_transposed)(const float* src, int64_t ld, int64_t kc, int w, int width, float* dst);
};

// The portable set compiles anywhere. The x86 sets return nullptr when they were not compiled
// in (non-x86 build) or when the CPU (or the OS) does not support their instructions.
const MicroKernel& microkernel_generic();
const MicroKernel* microkernel_avx2();
const MicroKernel* microkernel_avx512();

// Defined in the x86 files and returned without any check; only microkernel_avx2/avx512 (which
// check the CPU first) call them.
const MicroKernel& microkernel_avx2_unchecked();
const MicroKernel& microkernel_avx512_unchecked();

// The best set this CPU supports, chosen once at first use.
const MicroKernel& best_microkernel();

// Every set this CPU can run, best first (for tests and benchmarks).
std::vector<const MicroKernel*> available_microkernels();

// How the driver walks the problem; see make_plan in sgemm_packed.cpp for how each is chosen.
struct Plan {
  const MicroKernel* uk;
  int64_t mc, kc, nc;  // block sizes, multiples of MR / 1 / NR
  bool pack_a;         // false: A is read in place
  bool pack_b;         // false: B is read in place (only possible for Trans::N)
};

// The whole-problem description the driver passes around.
struct Problem {
  Trans trans_a, trans_b;
  int64_t M, N, K;
  float alpha;
  const float* A;
  int64_t lda;
  const float* B;
  int64_t ldb;
  float beta;
  float* C;
  int64_t ldc;
};

// Textbook plan: always pack both operands (kernel 3, "packed").
Plan plan_always_pack(const Problem& pr, const MicroKernel& uk);
// Plan that skips packing an operand when the copy would cost more than it saves
// (kernel 4, "packed_mt", and the default sgemm).
Plan plan_for_shape(const Problem& pr, const MicroKernel& uk);

// Computes rows [m_begin, m_end) and columns [n_begin, n_end) of C, over all of K, on the calling
// thread. Disjoint ranges may run concurrently: each thread packs into its own buffers.
void run_range(const Problem& pr, const Plan& plan, int64_t m_begin, int64_t m_end, int64_t n_begin,
               int64_t n_end);

// C = beta * C without reading C when beta == 0 (the K == 0 case).
void scale_c(int64_t M, int64_t N, float beta, float* C, int64_t ldc);

// Kernel 3 with an explicit micro-kernel set (tests use it to cover every ISA).
void sgemm_packed_with(const MicroKernel& uk, Trans trans_a, Trans trans_b, int64_t M, int64_t N,
                       int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                       int64_t ldb, float beta, float* C, int64_t ldc);
// Kernel 4 with an explicit micro-kernel set.
void sgemm_packed_mt_with(const MicroKernel& uk, Trans trans_a, Trans trans_b, int64_t M, int64_t N,
                          int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                          int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace ink::kernels::packed
