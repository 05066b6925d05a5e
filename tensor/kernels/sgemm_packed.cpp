// Kernel 3 of the sgemm family: BLIS-style blocking with packed panels and a register-blocked
// SIMD micro-kernel. This file is the driver (blocking, packing, choosing the micro-kernel);
// the arithmetic lives in the sgemm_microkernel_*.cpp files.
//
// Legend: M, N, K as in sgemm.h. MR x NR = the micro-kernel's register tile.
//   KC = the slice of K summed per pass; MC x KC = the packed block of A; KC x NC = of B.
//
// The loops, from the outside in (the naming follows BLIS):
//   ic: M in steps of MC    A block [MC, KC] packed once and reused for every jc.
//   pc: K in steps of KC    one pass adds KC terms to every element of C (pc ascending, always).
//   jc: N in steps of NC    B block [KC, NC] packed once and reused for every ir.
//   ir: MC in steps of MR   one A micro-panel [MR, KC], kept in L1 across the whole jr loop.
//   jr: NC in steps of NR   one micro-kernel call: C[MR, NR] += A panel * B panel.
// The micro-kernel loads whole rows of B and broadcasts single elements of A, so B is the
// operand that streams (from L2) and A the one that sits (in L1): the mirror image of BLIS's
// column-major setup, because C here is row-major.
//
// Packing copies a block into the exact order the micro-kernel reads it: A as MR-wide column
// strips, B as NR-wide row strips, each contiguous along K. Reads become sequential and
// prefetch-friendly whatever the original leading dimension or layout, and a transposed operand
// (A stored [M, K], B stored [N, K]) is turned around once per block instead of once per use.
#include <algorithm>
#include <cstdlib>
#include <new>
#include <numeric>

#include "tensor/kernels/sgemm.h"
#include "tensor/kernels/sgemm_packed.h"

namespace ink::kernels::packed {

// ---- Choosing the micro-kernel -------------------------------------------------------------

// INK_SGEMM_X86 is defined by tensor/CMakeLists.txt when it compiles the AVX2 and AVX-512 files
// (x86-64 with GCC or Clang). The CPU check runs here, in a file compiled for the baseline ISA,
// before any AVX code can execute.

const MicroKernel* microkernel_avx512() {
#ifdef INK_SGEMM_X86
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                         __builtin_cpu_supports("fma");
  if (ok) return &microkernel_avx512_unchecked();
#endif
  return nullptr;
}

const MicroKernel* microkernel_avx2() {
#ifdef INK_SGEMM_X86
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (ok) return &microkernel_avx2_unchecked();
#endif
  return nullptr;
}

std::vector<const MicroKernel*> available_microkernels() {
  std::vector<const MicroKernel*> sets;
  if (const MicroKernel* uk = microkernel_avx512()) sets.push_back(uk);
  if (const MicroKernel* uk = microkernel_avx2()) sets.push_back(uk);
  sets.push_back(&microkernel_generic());
  return sets;
}

const MicroKernel& best_microkernel() {
  static const MicroKernel& best = *available_microkernels().front();
  return best;
}

// ---- Block sizes -----------------------------------------------------------------------------
//
// The sizes come from the caches of one core of the target (AMD Zen 4/5): L1d 48 KiB,
// L2 1 MiB, L3 32 MiB shared. On a different machine they are still sensible, just not tuned.
//
// KC = 256. The A micro-panel [MR, KC] is reused by every micro-kernel call of the jr loop, so
// it must stay in L1: 8 x 256 floats = 8 KiB, a sixth of L1, leaving the rest for the B rows
// and C lines streaming past. A large KC also makes the C traffic (read and write the tile
// once per call) small next to the MR * NR * KC multiply-adds of the call.
//
// NC = half of L2 / (KC * 4 bytes) = 512, rounded down to a multiple of NR (480 for NR = 48).
// The B block [KC, NC] is read again for every MR rows of A, so it must stay in L2. The other
// half of L2 holds the A panels and C lines passing through.
//
// MC = 1024 (rounded to a multiple of MR): the A block [MC, KC] is 1 MiB, read from L3 once per
// B block. MC only bounds the packing buffer; the cache that matters for A is L1 (above).
constexpr int64_t kL2Bytes = int64_t{1} << 20;
constexpr int64_t kKC = 256;
constexpr int64_t kMC = 1024;

namespace {

int64_t round_down(int64_t x, int64_t multiple) {
  return std::max(multiple, x / multiple * multiple);
}
int64_t round_up(int64_t x, int64_t multiple) {
  return (x + multiple - 1) / multiple * multiple;
}

// Splits `total` into equal blocks of at most `limit` (rounded up to `multiple`), so the last
// block is not a sliver: K = 300 gives 152 + 148 rather than 256 + 44. Depends only on the shape,
// so every thread count uses the same K blocks and gets bit-identical sums.
int64_t balanced_block(int64_t total, int64_t limit, int64_t multiple) {
  const int64_t blocks = (total + limit - 1) / limit;
  return std::min(limit, round_up((total + blocks - 1) / blocks, multiple));
}

Plan base_plan(const Problem& pr, const MicroKernel& uk) {
  Plan plan{};
  plan.uk = &uk;
  plan.kc = balanced_block(pr.K, kKC, 1);
  plan.nc = balanced_block(pr.N, round_down(kL2Bytes / 2 / (kKC * 4), uk.nr), uk.nr);
  plan.mc = balanced_block(pr.M, round_down(kMC, uk.mr), uk.mr);
  return plan;
}

}  // namespace

Plan plan_always_pack(const Problem& pr, const MicroKernel& uk) {
  Plan plan = base_plan(pr, uk);
  plan.pack_a = true;
  plan.pack_b = true;
  return plan;
}

namespace {

// True when `rows` rows, `stride_bytes` apart, would crowd into a few sets of a cache that maps
// addresses to sets with period `period_bytes` (L1: 4 KiB, L2: 64 KiB on the target) and has
// room for `max_rows_per_set` of them per set. Rows whose stride is a multiple of a large power
// of two land in the same sets and evict each other; packing makes them contiguous.
bool rows_collide(int64_t rows, int64_t stride_bytes, int64_t period_bytes,
                  int64_t max_rows_per_set) {
  const int64_t distinct_offsets = period_bytes / std::gcd(stride_bytes, period_bytes);
  return rows > distinct_offsets * max_rows_per_set;
}

}  // namespace

Plan plan_for_shape(const Problem& pr, const MicroKernel& uk) {
  Plan plan = base_plan(pr, uk);
  // The micro-kernel can read A in place in either layout (it takes a row and a K stride for
  // A) and B in place when B is stored [K, N] (Trans::N: NR consecutive floats are NR columns
  // of C). Skipping the copy matters for the model's small shapes: at batch 64 each packed
  // element of B would be used only 64 / MR = 8 times, so packing costs 5-15% of the
  // multiplication itself.
  //
  // Reading in place costs nothing extra as long as what the micro-kernel walks stays in
  // cache: the A micro-panel (MR x KC) in L1, the B block (KC x NC) in L2. It does unless the
  // leading dimension maps those rows onto a few cache sets, which rows_collide detects (e.g.
  // a 1024-wide matrix: a 4 KiB stride puts every row in the same L1 sets). Those cases, and B
  // stored [N, K], are packed.
  constexpr int64_t kL1SetPeriod = 4 << 10;   // 48 KiB, 12 ways: 64 sets of 64 bytes
  constexpr int64_t kL2SetPeriod = 64 << 10;  // 1 MiB, 16 ways: 1024 sets of 64 bytes
  plan.pack_a = pr.trans_a == Trans::T ? rows_collide(plan.kc, pr.lda * 4, kL1SetPeriod, 4)
                                       : rows_collide(uk.mr, pr.lda * 4, kL1SetPeriod, 4);
  plan.pack_b = pr.trans_b == Trans::T || rows_collide(plan.kc, pr.ldb * 4, kL2SetPeriod, 8);
  return plan;
}

// ---- Packing ---------------------------------------------------------------------------------

namespace {

// A 64-byte aligned buffer that grows and never shrinks, one per thread and operand, so the
// packing allocates only on a thread's first (or first larger) multiplication.
class PackBuffer {
 public:
  PackBuffer() = default;
  PackBuffer(const PackBuffer&) = delete;
  PackBuffer& operator=(const PackBuffer&) = delete;
  ~PackBuffer() { std::free(data_); }

  float* get(int64_t floats) {
    if (floats > capacity_) {
      std::free(data_);
      const auto bytes = static_cast<size_t>(round_up(floats * 4, 64));
      data_ = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (data_ == nullptr) throw std::bad_alloc();
      capacity_ = floats;
    }
    return data_;
  }

 private:
  float* data_ = nullptr;
  int64_t capacity_ = 0;
};

thread_local PackBuffer t_pack_a;
thread_local PackBuffer t_pack_b;

// dst[p * width + j] = src[p * ld + j] for p < kc, j < w, zero for w <= j < width: the
// non-transposing pack, a row-by-row copy.
void pack_rows(const float* src, int64_t ld, int64_t kc, int w, int width, float* dst) {
  constexpr int64_t kRowsAhead = 4;
  for (int64_t p = 0; p < kc; ++p) {
    const float* s = src + p * ld;
#if defined(__GNUC__) || defined(__clang__)
    // Each source row is a separate short run (often in another 4 KiB page), which the hardware
    // prefetcher picks up too late; ask for a row a few steps ahead.
    if (p + kRowsAhead < kc) {
      for (int j = 0; j < w; j += 16) __builtin_prefetch(s + kRowsAhead * ld + j);
    }
#endif
    float* d = dst + p * width;
    for (int j = 0; j < w; ++j) d[j] = s[j];
    for (int j = w; j < width; ++j) d[j] = 0.0f;
  }
}

// Packs A[ic : ic + mc, pc : pc + kc] as MR-row strips: strip r holds a(i, p) at
// dst[r * MR * kc + p * MR + i]. The last strip is zero-padded to MR rows.
void pack_a_block(const Problem& pr, const MicroKernel& uk, int64_t ic, int64_t mc, int64_t pc,
                  int64_t kc, float* dst) {
  for (int64_t ir = 0; ir < mc; ir += uk.mr) {
    const int rows = static_cast<int>(std::min<int64_t>(uk.mr, mc - ir));
    float* strip = dst + ir * kc;
    if (pr.trans_a == Trans::T) {  // stored [K, M]: a(i, p) = A[p * lda + i]
      pack_rows(pr.A + pc * pr.lda + ic + ir, pr.lda, kc, rows, uk.mr, strip);
    } else {  // stored [M, K]: a(i, p) = A[i * lda + p]
      uk.pack_transposed(pr.A + (ic + ir) * pr.lda + pc, pr.lda, kc, rows, uk.mr, strip);
    }
  }
}

// Packs B[pc : pc + kc, jc : jc + nc] as NR-column strips: strip s holds b(p, j) at
// dst[s * NR * kc + p * NR + j]. The last strip is zero-padded to NR columns.
void pack_b_block(const Problem& pr, const MicroKernel& uk, int64_t pc, int64_t kc, int64_t jc,
                  int64_t nc, float* dst) {
  for (int64_t jr = 0; jr < nc; jr += uk.nr) {
    const int cols = static_cast<int>(std::min<int64_t>(uk.nr, nc - jr));
    float* strip = dst + jr * kc;
    if (pr.trans_b == Trans::N) {  // stored [K, N]: b(p, j) = B[p * ldb + j]
      pack_rows(pr.B + pc * pr.ldb + jc + jr, pr.ldb, kc, cols, uk.nr, strip);
    } else {  // stored [N, K]: b(p, j) = B[j * ldb + p]
      uk.pack_transposed(pr.B + (jc + jr) * pr.ldb + pc, pr.ldb, kc, cols, uk.nr, strip);
    }
  }
}

}  // namespace

// ---- The loops -------------------------------------------------------------------------------

void run_range(const Problem& pr, const Plan& plan, int64_t m_begin, int64_t m_end, int64_t n_begin,
               int64_t n_end) {
  const MicroKernel& uk = *plan.uk;
  float* a_buffer = plan.pack_a ? t_pack_a.get(round_up(plan.mc, uk.mr) * plan.kc) : nullptr;
  float* b_buffer = plan.pack_b ? t_pack_b.get(round_up(plan.nc, uk.nr) * plan.kc) : nullptr;

  MicroTile t{};
  t.ldc = pr.ldc;
  t.alpha = pr.alpha;
  for (int64_t ic = m_begin; ic < m_end; ic += plan.mc) {
    const int64_t mc = std::min(plan.mc, m_end - ic);
    for (int64_t pc = 0; pc < pr.K; pc += plan.kc) {
      const int64_t kc = std::min(plan.kc, pr.K - pc);
      t.k = kc;
      t.beta = pc == 0 ? pr.beta : 1.0f;  // later passes add to what the first pass wrote

      // Where A micro-panel ir starts, and its stride along K.
      const float* a_block;
      int64_t a_strip_step;  // from one MR-row strip to the next
      if (plan.pack_a) {
        pack_a_block(pr, uk, ic, mc, pc, kc, a_buffer);
        a_block = a_buffer;
        a_strip_step = uk.mr * kc;
        t.a_row_stride = 1;
        t.a_k_stride = uk.mr;
      } else if (pr.trans_a == Trans::T) {  // read in place: a(i, p) = A[p * lda + i]
        a_block = pr.A + pc * pr.lda + ic;
        a_strip_step = uk.mr;
        t.a_row_stride = 1;
        t.a_k_stride = pr.lda;
      } else {  // read in place: a(i, p) = A[i * lda + p]
        a_block = pr.A + ic * pr.lda + pc;
        a_strip_step = uk.mr * pr.lda;
        t.a_row_stride = pr.lda;
        t.a_k_stride = 1;
      }

      for (int64_t jc = n_begin; jc < n_end; jc += plan.nc) {
        const int64_t nc = std::min(plan.nc, n_end - jc);
        const float* b_block;
        int64_t b_strip_step;  // from one NR-column strip to the next
        if (plan.pack_b) {
          pack_b_block(pr, uk, pc, kc, jc, nc, b_buffer);
          b_block = b_buffer;
          b_strip_step = uk.nr * kc;
          t.b_k_stride = uk.nr;
        } else {  // Trans::N read in place
          b_block = pr.B + pc * pr.ldb + jc;
          b_strip_step = uk.nr;
          t.b_k_stride = pr.ldb;
        }

        for (int64_t ir = 0; ir < mc; ir += uk.mr) {
          t.a = a_block + (ir / uk.mr) * a_strip_step;
          t.m = static_cast<int>(std::min<int64_t>(uk.mr, mc - ir));
          float* c_row = pr.C + (ic + ir) * pr.ldc + jc;
          for (int64_t jr = 0; jr < nc; jr += uk.nr) {
            t.b = b_block + (jr / uk.nr) * b_strip_step;
            t.n = static_cast<int>(std::min<int64_t>(uk.nr, nc - jr));
            t.c = c_row + jr;
            uk.tile(t);
          }
        }
      }
    }
  }
}

void scale_c(int64_t M, int64_t N, float beta, float* C, int64_t ldc) {
  for (int64_t i = 0; i < M; ++i) {
    float* c = C + i * ldc;
    if (beta == 0.0f) {
      std::fill(c, c + N, 0.0f);
    } else {
      for (int64_t j = 0; j < N; ++j) c[j] *= beta;
    }
  }
}

void sgemm_packed_with(const MicroKernel& uk, Trans trans_a, Trans trans_b, int64_t M, int64_t N,
                       int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                       int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) return scale_c(M, N, beta, C, ldc);
  const Problem pr{trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc};
  run_range(pr, plan_always_pack(pr, uk), 0, M, 0, N);
}

}  // namespace ink::kernels::packed

namespace ink::kernels {

void sgemm_packed(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const float* A, int64_t lda, const float* B, int64_t ldb, float beta, float* C,
                  int64_t ldc) {
  packed::sgemm_packed_with(packed::best_microkernel(), trans_a, trans_b, M, N, K, alpha, A, lda, B,
                            ldb, beta, C, ldc);
}

}  // namespace ink::kernels
