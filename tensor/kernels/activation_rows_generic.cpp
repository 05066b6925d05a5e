// The portable row primitives: the same algorithms as the SIMD files with one float per
// "register", so any compiler builds them (the fallback on CPUs without AVX2, and the readable
// version of what the x86 files do). std::fma keeps the single rounding the SIMD FMAs have.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "tensor/kernels/activation_rows_impl.h"

namespace ink::kernels::rows {
namespace {

struct Scalar {
  using reg = float;
  using mask = bool;
  static constexpr int lanes = 1;
  static reg zero() { return 0.0f; }
  static reg set1(float x) { return x; }
  static reg load(const float* p) { return *p; }
  static void store(float* p, reg x) { *p = x; }
  static reg load_partial(const float* p, int n, float fill) { return n > 0 ? *p : fill; }
  static void store_partial(float* p, reg x, int n) {
    if (n > 0) *p = x;
  }
  static reg add(reg a, reg b) { return a + b; }
  static reg sub(reg a, reg b) { return a - b; }
  static reg mul(reg a, reg b) { return a * b; }
  static reg div(reg a, reg b) { return a / b; }
  static reg fma(reg a, reg b, reg c) { return std::fma(a, b, c); }
  // As the x86 max/min instructions: the second operand when either is NaN.
  static reg max(reg a, reg b) { return a > b ? a : b; }
  static reg min(reg a, reg b) { return a < b ? a : b; }
  static reg abs(reg a) { return std::fabs(a); }
  static reg round(reg a) { return std::nearbyint(a); }
  static reg add_exponent(reg p, reg k) {
    uint32_t bits;
    std::memcpy(&bits, &p, sizeof bits);
    bits += static_cast<uint32_t>(static_cast<int32_t>(k)) << 23;
    float out;
    std::memcpy(&out, &bits, sizeof out);
    return out;
  }
  static mask lt(reg a, reg b) { return a < b; }
  static mask gt(reg a, reg b) { return a > b; }
  static mask is_nan(reg a) { return std::isnan(a); }
  static reg blend(mask m, reg a, reg b) { return m ? a : b; }
  static float hsum(reg x) { return x; }
  static float hmax(reg x) { return x; }
};

constexpr RowKernels kGeneric = make_row_kernels<Scalar>("generic");

}  // namespace

const RowKernels& row_kernels_generic() {
  return kGeneric;
}

}  // namespace ink::kernels::rows
