// The AVX-512 row primitives (16 floats per zmm register). Compiled with -mavx512f -mfma
// (see tensor/CMakeLists.txt) and only called after row_kernels_avx512() has checked the CPU.
#include <immintrin.h>

#include "tensor/kernels/activation_rows_impl.h"

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
// GCC 12 warns about its own avx512fintrin.h (GCC bug 105593, fixed in GCC 13), as in
// sgemm_microkernel_avx512.cpp.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace ink::kernels::rows {
namespace {

struct Avx512 {
  using reg = __m512;
  using mask = __mmask16;
  static constexpr int lanes = 16;
  static __mmask16 first(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static reg zero() { return _mm512_setzero_ps(); }
  static reg set1(float x) { return _mm512_set1_ps(x); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, reg x) { _mm512_storeu_ps(p, x); }
  static reg load_partial(const float* p, int n, float fill) {
    return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), first(n), p);
  }
  static void store_partial(float* p, reg x, int n) { _mm512_mask_storeu_ps(p, first(n), x); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg div(reg a, reg b) { return _mm512_div_ps(a, b); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static reg min(reg a, reg b) { return _mm512_min_ps(a, b); }
  static reg abs(reg a) { return _mm512_abs_ps(a); }
  static reg round(reg a) {
    return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static reg add_exponent(reg p, reg k) {
    const __m512i shift = _mm512_slli_epi32(_mm512_cvtps_epi32(k), 23);
    return _mm512_castsi512_ps(_mm512_add_epi32(_mm512_castps_si512(p), shift));
  }
  static mask lt(reg a, reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static mask gt(reg a, reg b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static mask is_nan(reg a) { return _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q); }
  static reg blend(mask m, reg a, reg b) { return _mm512_mask_blend_ps(m, b, a); }
  // Fixed order: 16 -> 8 -> 4 -> 2 -> 1 lanes, pairwise.
  static float hsum(reg x) {
    const __m256 h =
        _mm256_add_ps(_mm512_castps512_ps256(x),
                      _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
    const __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    const __m128 d = _mm_add_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_add_ss(d, _mm_movehdup_ps(d)));
  }
  static float hmax(reg x) { return _mm512_reduce_max_ps(x); }
};

constexpr RowKernels kAvx512 = make_row_kernels<Avx512>("avx512");

}  // namespace

const RowKernels& row_kernels_avx512_unchecked() {
  return kAvx512;
}

}  // namespace ink::kernels::rows
