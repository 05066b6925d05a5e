// Kernel 4 of the sgemm family, and the default: the packed kernel run on several threads, with
// a cheaper plan for the small shapes where copying the operands would cost more than it saves.
//
// Legend: M, N, K as in sgemm.h; MR x NR = the micro-kernel tile; lanes = floats per register.
//
// Threads split C into disjoint column ranges (or row ranges), and every thread runs the whole
// K loop for its range, packing into its own buffers. K is never
// split, and the K blocks depend only on the shape, so each element of C is the same sequence
// of fused multiply-adds for any thread count: results are bit-identical with 1 or 2 threads.
#include <algorithm>

#include "tensor/kernels/sgemm.h"
#include "tensor/kernels/sgemm_packed.h"
#include "tensor/parallel.h"

namespace ink::kernels::packed {

namespace {

// Below this many flops per thread, handing work to another thread costs more than it saves.
// The pool's workers spin between jobs, so a hand-off costs about 1 us; 1 MFLOP takes about
// 5 us on one core. Every layer of the model (the smallest is 64 x 256 x 96, 3 MFLOP) splits.
constexpr double kMinFlopsPerThread = 1.0e6;

}  // namespace

void sgemm_packed_mt_with(const MicroKernel& uk, Trans trans_a, Trans trans_b, int64_t M, int64_t N,
                          int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                          int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) return scale_c(M, N, beta, C, ldc);
  const Problem pr{trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc};
  const Plan plan = plan_for_shape(pr, uk);

  const double flops = 2.0 * static_cast<double>(M) * static_cast<double>(N) * K;
  const int threads = in_parallel_region() ? 1 : get_num_threads();
  const auto useful_threads =
      static_cast<int64_t>(std::min<double>(threads, flops / kMinFlopsPerThread));
  if (useful_threads <= 1) {
    run_range(pr, plan, 0, M, 0, N);
    return;
  }
  // Which side of C to split: a thread working on a column range must still pack all of A
  // (every row meets its columns), one on a row range all of B. Split so that the copy every
  // thread repeats is the cheaper one (an operand read in place costs nothing; a transposing
  // pack about twice a plain copy), and on a tie split the longer side.
  const auto pack_cost = [](bool packed, bool transposing, int64_t rows, int64_t cols) {
    return packed ? static_cast<double>(rows) * cols * (transposing ? 2.0 : 1.0) : 0.0;
  };
  const double repeated_if_columns = pack_cost(plan.pack_a, trans_a == Trans::N, M, K);
  const double repeated_if_rows = pack_cost(plan.pack_b, trans_b == Trans::T, K, N);
  const bool split_columns =
      repeated_if_columns != repeated_if_rows ? repeated_if_columns < repeated_if_rows : N >= M;
  // Column ranges start on a whole register (lanes floats), row ranges on a whole micro-tile.
  if (split_columns) {
    const int64_t units = (N + uk.lanes - 1) / uk.lanes;
    parallel_for(0, units, (units + useful_threads - 1) / useful_threads,
                 [&](int64_t u0, int64_t u1) {
                   run_range(pr, plan, 0, M, u0 * uk.lanes, std::min(N, u1 * uk.lanes));
                 });
  } else {
    const int64_t units = (M + uk.mr - 1) / uk.mr;
    parallel_for(0, units, (units + useful_threads - 1) / useful_threads,
                 [&](int64_t u0, int64_t u1) {
                   run_range(pr, plan, u0 * uk.mr, std::min(M, u1 * uk.mr), 0, N);
                 });
  }
}

}  // namespace ink::kernels::packed

namespace ink::kernels {

void sgemm_packed_mt(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                     const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                     int64_t ldc) {
  packed::sgemm_packed_mt_with(packed::best_microkernel(), trans_a, trans_b, M, N, K, alpha, A, lda,
                               B, ldb, beta, C, ldc);
}

}  // namespace ink::kernels
