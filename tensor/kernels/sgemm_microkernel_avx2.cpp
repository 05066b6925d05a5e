// The AVX2 + FMA micro-kernel set: a 6 x 16 register tile (6 rows of C, two 8-float registers
// per row). Compiled with -mavx2 -mfma (see tensor/CMakeLists.txt) and only called after
// best_microkernel() has checked the CPU.
//
// Legend: MR = 6 rows, NR = 16 columns, lanes = 8 floats per ymm register.
//
// Why 6 x 16: there are only 16 ymm registers. 12 accumulators + 2 for a row of B + 1 for the
// broadcast of A = 15. Twelve independent sums cover the FMA latency (about 4 cycles) times the
// two FMA units, with a little margin. This is the shape BLIS uses on Haswell for the same reason.
#include "tensor/kernels/sgemm_microkernel.h"

namespace ink::kernels::packed {
namespace {

struct Avx2 {
  using reg = __m256;
  static constexpr int lanes = 8;
  // All-ones for the first n lanes: a window into {-1 x 8, 0 x 8}.
  static __m256i first(int n) {
    alignas(32) static const int kOnesThenZeros[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                                       0,  0,  0,  0,  0,  0,  0,  0};
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kOnesThenZeros + 8 - n));
  }
  static reg zero() { return _mm256_setzero_ps(); }
  static reg set1(float x) { return _mm256_set1_ps(x); }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static reg load_first(const float* p, int n) { return _mm256_maskload_ps(p, first(n)); }
  static void store(float* p, reg x) { _mm256_storeu_ps(p, x); }
  static void store_first(float* p, reg x, int n) { _mm256_maskstore_ps(p, first(n), x); }
  static reg broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
};

void pack_transposed_avx2(const float* src, int64_t ld, int64_t kc, int w, int width, float* dst) {
  pack_transposed_from(src, ld, kc, 0, w, width, dst);
}

constexpr int kMR = 6;
constexpr int kRegistersPerRow = 2;

constexpr MicroKernel kAvx2{"avx2",
                            kMR,
                            kRegistersPerRow* Avx2::lanes,
                            Avx2::lanes,
                            &tile_dispatch<Avx2, kMR, kRegistersPerRow>,
                            &pack_transposed_avx2};

}  // namespace

const MicroKernel& microkernel_avx2_unchecked() {
  return kAvx2;
}

}  // namespace ink::kernels::packed
