// The AVX-512 micro-kernel set: an 8 x 48 register tile (8 rows of C, three 16-float registers
// per row). Compiled with -mavx512f -mavx512vl -mfma (see tensor/CMakeLists.txt) and only called
// after best_microkernel() has checked the CPU.
//
// Legend: MR = 8 rows, NR = 48 columns, lanes = 16 floats per zmm register.
//
// Why 8 x 48: the tile needs MR * NR / 16 = 24 accumulators, plus 3 registers for a row of B
// and 1 for the broadcast of A: 28 of the 32 zmm registers. Each step of K issues 24 FMAs
// against 3 loads and 8 broadcasts, so the loads never limit. A core (Zen 4/5) retires
// up to two FMAs per cycle with a latency of about 4 cycles, so at least 8 independent sums are
// needed to keep both units busy; 24 leaves a wide margin. MR = 8 also divides the model's
// batch of 64, so its row blocks have no ragged edge.
#include "tensor/kernels/sgemm_microkernel.h"

namespace ink::kernels::packed {
namespace {

struct Avx512 {
  using reg = __m512;
  static constexpr int lanes = 16;
  static __mmask16 first(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static reg zero() { return _mm512_setzero_ps(); }
  static reg set1(float x) { return _mm512_set1_ps(x); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static reg load_first(const float* p, int n) { return _mm512_maskz_loadu_ps(first(n), p); }
  static void store(float* p, reg x) { _mm512_storeu_ps(p, x); }
  static void store_first(float* p, reg x, int n) { _mm512_mask_storeu_ps(p, first(n), x); }
  static reg broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
};

constexpr int kMR = 8;
constexpr int kRegistersPerRow = 3;

constexpr MicroKernel kAvx512{"avx512",
                              kMR,
                              kRegistersPerRow* Avx512::lanes,
                              Avx512::lanes,
                              &tile_dispatch<Avx512, kMR, kRegistersPerRow>,
                              &pack_transposed_avx};

}  // namespace

const MicroKernel& microkernel_avx512_unchecked() {
  return kAvx512;
}

}  // namespace ink::kernels::packed
