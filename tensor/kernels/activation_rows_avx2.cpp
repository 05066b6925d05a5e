// The AVX2 + FMA row primitives (8 floats per ymm register). Compiled with -mavx2 -mfma (see
// tensor/CMakeLists.txt) and only called after row_kernels_avx2() has checked the CPU.
#include <immintrin.h>

#include "tensor/kernels/activation_rows_impl.h"

namespace ink::kernels::rows {
namespace {

struct Avx2 {
  using reg = __m256;
  using mask = __m256;  // all-ones lanes where true
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
  static void store(float* p, reg x) { _mm256_storeu_ps(p, x); }
  static reg load_partial(const float* p, int n, float fill) {
    const __m256i m = first(n);
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
  }
  static void store_partial(float* p, reg x, int n) { _mm256_maskstore_ps(p, first(n), x); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static reg div(reg a, reg b) { return _mm256_div_ps(a, b); }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  static reg min(reg a, reg b) { return _mm256_min_ps(a, b); }
  static reg abs(reg a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  static reg round(reg a) {
    return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  static reg add_exponent(reg p, reg k) {
    const __m256i shift = _mm256_slli_epi32(_mm256_cvtps_epi32(k), 23);
    return _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), shift));
  }
  static mask lt(reg a, reg b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static mask gt(reg a, reg b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static mask is_nan(reg a) { return _mm256_cmp_ps(a, a, _CMP_UNORD_Q); }
  static reg blend(mask m, reg a, reg b) { return _mm256_blendv_ps(b, a, m); }
  // Fixed order: 8 -> 4 -> 2 -> 1 lanes, pairwise.
  static float hsum(reg x) {
    const __m128 q = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    const __m128 d = _mm_add_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_add_ss(d, _mm_movehdup_ps(d)));
  }
  static float hmax(reg x) {
    const __m128 q = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    const __m128 d = _mm_max_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_max_ss(d, _mm_movehdup_ps(d)));
  }
};

constexpr RowKernels kAvx2 = make_row_kernels<Avx2>("avx2");

}  // namespace

const RowKernels& row_kernels_avx2_unchecked() {
  return kAvx2;
}

}  // namespace ink::kernels::rows
