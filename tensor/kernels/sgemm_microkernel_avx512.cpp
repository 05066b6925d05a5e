// The AVX-512 micro-kernel set: an 8 x 48 register tile (8 rows of C, three 16-float registers
// per row). Compiled with -mavx512f -mavx512vl -mfma (see tensor/CMakeLists.txt) and only called
// after best_microkernel() has checked the CPU.
//
// Legend: MR = 8 rows, NR = 48 columns, lanes = 16 floats per zmm register.
//
// Why 8 x 48: the tile needs MR * NR / 16 = 24 accumulators, plus 3 registers for a row of B
// and 1 for the broadcast of A: 28 of the 32 zmm registers. Each step of K issues 24 FMAs
// against 3 loads and 8 broadcasts, so the loads never limit. A Zen 5 core retires two 512-bit
// FMAs per cycle (measured: 237 GFLOP/s per core with zmm registers, 119 with ymm; Zen 4 splits
// each zmm FMA in two halves) with a latency of about 4 cycles, so at least 8 independent sums
// are needed to keep both units busy; 24 leaves a wide margin. MR = 8 also divides the model's
// batch of 64, so its row blocks have no ragged edge.
#include "tensor/kernels/sgemm_microkernel.h"

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
// GCC 12 warns about its own avx512fintrin.h here (the shuffles' pass-through operand is an
// "undefined" register; GCC bug 105593, fixed in GCC 13). Not a problem in this file.
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

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

// Copies the 16x16 block src[q * ld + p] (q, p < 16) to dst[p * width + q], in registers:
// four rounds of shuffles (64 in all) interleave 32-bit pairs, then 64-bit pairs, then 128-bit
// lanes twice. Not inlined on purpose: inside the packing loop the compiler would keep 16 row
// pointers alive and spill them and the 32 registers the transpose needs.
[[gnu::noinline]] void transpose16x16(const float* src, int64_t ld, float* dst, int64_t width) {
  __m512 r[16], t[16];
  for (int q = 0; q < 16; ++q) r[q] = _mm512_loadu_ps(src + q * ld);
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d t0 = _mm512_castps_pd(t[4 * i]), t1 = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d t2 = _mm512_castps_pd(t[4 * i + 2]), t3 = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  }
  for (int i = 0; i < 2; ++i) {
    for (int q = 0; q < 4; ++q) {
      t[8 * i + q] = _mm512_shuffle_f32x4(r[8 * i + q], r[8 * i + 4 + q], 0x88);
      t[8 * i + 4 + q] = _mm512_shuffle_f32x4(r[8 * i + q], r[8 * i + 4 + q], 0xdd);
    }
  }
  for (int q = 0; q < 8; ++q) {
    _mm512_storeu_ps(dst + q * width, _mm512_shuffle_f32x4(t[q], t[8 + q], 0x88));
    _mm512_storeu_ps(dst + (8 + q) * width, _mm512_shuffle_f32x4(t[q], t[8 + q], 0xdd));
  }
}

// The transposing pack, 16x16 blocks at a time (a quarter of a shuffle per float, half of what
// the 8x8 AVX blocks need); columns left over go through the 8x8 path.
void pack_transposed_avx512(const float* src, int64_t ld, int64_t kc, int w, int width,
                            float* dst) {
  int j = 0;
  for (; j + 16 <= w; j += 16) {
    int64_t p = 0;
    for (; p + 16 <= kc; p += 16) transpose16x16(src + j * ld + p, ld, dst + p * width + j, width);
    for (; p < kc; ++p) {
      for (int q = 0; q < 16; ++q) dst[p * width + j + q] = src[(j + q) * ld + p];
    }
  }
  pack_transposed_from(src, ld, kc, j, w, width, dst);
}

constexpr int kMR = 8;
constexpr int kRegistersPerRow = 3;

constexpr MicroKernel kAvx512{"avx512",
                              kMR,
                              kRegistersPerRow* Avx512::lanes,
                              Avx512::lanes,
                              &tile_dispatch<Avx512, kMR, kRegistersPerRow>,
                              &pack_transposed_avx512};

}  // namespace

const MicroKernel& microkernel_avx512_unchecked() {
  return kAvx512;
}

}  // namespace ink::kernels::packed
