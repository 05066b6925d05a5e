// The row primitives of activation_rows.h written once against a tiny SIMD interface V, compiled
// by each instruction-set file (activation_rows_avx512.cpp, _avx2.cpp, _generic.cpp) with that
// file's flags. Include it only from those files. As in sgemm_microkernel.h, everything here has
// internal linkage so that an AVX-512 copy of an inline function can never be linked into
// code that runs on a CPU without AVX-512.
//
// Legend: n = elements in a row, L = V::lanes. A row is processed in registers of L lanes; the
// last n % L elements go through one partial load (padded with a neutral value) and a partial
// store, running the same instructions as the full registers.
//
// The SIMD interface V provides:
//   reg, mask, lanes
//   zero(), set1(x), load(p), store(p, x), load_partial(p, n, fill), store_partial(p, x, n)
//   add, sub, mul, div, fma(a, b, c) = a * b + c (one rounding), max, min, abs
//   round(x)                  nearest integer (ties to even), as a float
//   add_exponent(p, n)        p * 2^n by adding n (an integral float) to p's exponent bits
//   lt(a, b), gt(a, b), is_nan(a) -> mask;  blend(m, a, b) = m ? a : b
//   hsum(x), hmax(x)          horizontal sum (a fixed order) and maximum
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "tensor/kernels/activation_rows.h"

namespace ink::kernels::rows {
namespace {

// ---- exp ----
// exp(x) = 2^k * exp(r) with k = round(x / ln 2) and |r| <= ln(2) / 2. r is computed in two
// FMA steps against ln 2 split into a float and its remainder, which is exact enough that the
// error comes from the polynomial alone: the degree-7 Taylor series of exp on |r| <= 0.3466
// truncates at 0.3466^8 / 8! = 5e-9 relative, and Horner's scheme adds about one rounding.
template <class V>
typename V::reg vexp(typename V::reg x) {
  using reg = typename V::reg;
  const reg lo = V::set1(-87.3365f);  // ln(FLT_MIN): below it the result would be subnormal
  const reg hi = V::set1(88.7228f);   // ln(FLT_MAX)
  const reg xc = V::min(V::max(x, lo), hi);
  const reg k = V::round(V::mul(xc, V::set1(1.44269504088896341f)));
  reg r = V::fma(k, V::set1(-0.693145752f), xc);  // ln 2 = 0.693145752 + 1.42860677e-6
  r = V::fma(k, V::set1(-1.42860677e-6f), r);
  reg p = V::set1(1.0f / 5040.0f);
  p = V::fma(p, r, V::set1(1.0f / 720.0f));
  p = V::fma(p, r, V::set1(1.0f / 120.0f));
  p = V::fma(p, r, V::set1(1.0f / 24.0f));
  p = V::fma(p, r, V::set1(1.0f / 6.0f));
  p = V::fma(p, r, V::set1(0.5f));
  p = V::fma(p, r, V::set1(1.0f));
  p = V::fma(p, r, V::set1(1.0f));
  reg y = V::add_exponent(p, k);
  y = V::blend(V::lt(x, lo), V::zero(), y);
  y = V::blend(V::gt(x, hi), V::set1(std::numeric_limits<float>::infinity()), y);
  return V::blend(V::is_nan(x), x, y);
}

// ---- erf and the normal CDF ----
// For z = |x| < 1: erf(z) = z * P(z^2), P of degree 6. For z >= 1: erfc(z) = exp(-z^2) * Q(t)
// with t = 1 / (1 + z), Q of degree 9 (Q approximates the scaled erfc, smooth and bounded on
// [1, inf)). The coefficients are relative least-squares fits made by
// scripts/fit_erf_coefficients.py. exp(-z^2) is taken as exp(-h) * (1 - l) with h + l = z^2
// exactly (l from an FMA), so the large-|z| tail keeps its relative accuracy.
template <class V>
typename V::reg erf_small(typename V::reg z) {
  using reg = typename V::reg;
  const reg z2 = V::mul(z, z);
  reg p = V::set1(7.971048763e-05f);
  p = V::fma(p, z2, V::set1(-8.043373819e-04f));
  p = V::fma(p, z2, V::set1(5.191833246e-03f));
  p = V::fma(p, z2, V::set1(-2.685550973e-02f));
  p = V::fma(p, z2, V::set1(1.128362194e-01f));
  p = V::fma(p, z2, V::set1(-3.761262894e-01f));
  p = V::fma(p, z2, V::set1(1.128379107e+00f));
  return V::mul(z, p);
}

// exp(-z^2) for z >= 0, with z^2 split so that its rounding does not reach the result.
template <class V>
typename V::reg exp_minus_square(typename V::reg z) {
  using reg = typename V::reg;
  const reg h = V::mul(z, z);
  const reg l = V::fma(z, z, V::sub(V::zero(), h));  // z^2 - h, exactly
  return V::mul(vexp<V>(V::sub(V::zero(), h)), V::sub(V::set1(1.0f), l));
}

// erfc(z) for z >= 1, given e = exp(-z^2).
template <class V>
typename V::reg erfc_large(typename V::reg z, typename V::reg e) {
  using reg = typename V::reg;
  const reg t = V::div(V::set1(1.0f), V::add(V::set1(1.0f), z));
  reg q = V::set1(1.712662339e+00f);
  q = V::fma(q, t, V::set1(-3.763163328e+00f));
  q = V::fma(q, t, V::set1(2.369762182e+00f));
  q = V::fma(q, t, V::set1(6.884314418e-01f));
  q = V::fma(q, t, V::set1(-1.179099560e+00f));
  q = V::fma(q, t, V::set1(-1.592875868e-01f));
  q = V::fma(q, t, V::set1(2.636407614e-01f));
  q = V::fma(q, t, V::set1(5.658366680e-01f));
  q = V::fma(q, t, V::set1(5.641085505e-01f));
  q = V::fma(q, t, V::set1(1.691860575e-06f));
  return V::mul(e, q);
}

template <class V>
typename V::reg verf(typename V::reg x) {
  using reg = typename V::reg;
  const reg z = V::abs(x);
  const reg small = erf_small<V>(z);
  const reg large = V::sub(V::set1(1.0f), erfc_large<V>(z, exp_minus_square<V>(z)));
  const reg magnitude = V::blend(V::lt(z, V::set1(1.0f)), small, large);
  const reg y = V::blend(V::lt(x, V::zero()), V::sub(V::zero(), magnitude), magnitude);
  return V::blend(V::is_nan(x), x, y);
}

// Phi(x) = (1 + erf(x / sqrt 2)) / 2 and phi(x) = exp(-x^2 / 2) / sqrt(2 pi). For x <= -sqrt 2,
// Phi = erfc(|x| / sqrt 2) / 2 directly, never 1 - (a number close to 1), so the negative tail
// keeps full relative precision. exp(-x^2 / 2) is computed from x itself (x^2 split exactly and
// halved), not from the rounded z = |x| / sqrt 2: exp(-z^2) is 2 z^2 times as sensitive to z's
// rounding as z is, which at x = -8 would cost 4e-6.
template <class V>
void normal_cdf_pdf(typename V::reg x, typename V::reg* cdf, typename V::reg* pdf) {
  using reg = typename V::reg;
  const reg half = V::set1(0.5f);
  const reg z = V::mul(V::abs(x), V::set1(0.707106781186547524f));
  const reg h = V::mul(x, x);
  const reg l = V::fma(x, x, V::sub(V::zero(), h));  // x^2 - h, exactly
  const reg e = V::mul(vexp<V>(V::mul(h, V::set1(-0.5f))), V::sub(V::set1(1.0f), V::mul(l, half)));
  const reg small = V::mul(half, erf_small<V>(z));     // Phi(|x|) - 1/2, for z < 1
  const reg tail = V::mul(half, erfc_large<V>(z, e));  // 1 - Phi(|x|), for z >= 1
  const typename V::mask is_small = V::lt(z, V::set1(1.0f));
  const reg upper = V::blend(is_small, V::add(half, small), V::sub(V::set1(1.0f), tail));
  const reg lower = V::blend(is_small, V::sub(half, small), tail);
  *cdf = V::blend(V::lt(x, V::zero()), lower, upper);
  *pdf = V::mul(e, V::set1(0.398942280401432678f));
}

template <class V>
typename V::reg vsigmoid(typename V::reg x) {
  using reg = typename V::reg;
  // e = exp(-|x|) never overflows; s = 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0.
  const reg e = vexp<V>(V::sub(V::zero(), V::abs(x)));
  const reg d = V::div(V::set1(1.0f), V::add(V::set1(1.0f), e));
  return V::blend(V::lt(x, V::zero()), V::mul(e, d), d);
}

// ---- row loops ----
// f(reg) -> reg over one row.
template <class V, class F>
void map1(const float* x, float* y, int64_t n, F f) {
  constexpr int L = V::lanes;
  int64_t i = 0;
  for (; i + L <= n; i += L) V::store(y + i, f(V::load(x + i)));
  if (i < n) {
    const int rest = static_cast<int>(n - i);
    V::store_partial(y + i, f(V::load_partial(x + i, rest, 0.0f)), rest);
  }
}

// f(reg a, reg b) -> reg over two rows.
template <class V, class F>
void map2(const float* a, const float* b, float* y, int64_t n, F f) {
  constexpr int L = V::lanes;
  int64_t i = 0;
  for (; i + L <= n; i += L) V::store(y + i, f(V::load(a + i), V::load(b + i)));
  if (i < n) {
    const int rest = static_cast<int>(n - i);
    V::store_partial(
        y + i, f(V::load_partial(a + i, rest, 0.0f), V::load_partial(b + i, rest, 0.0f)), rest);
  }
}

template <class V>
float row_max(const float* x, int64_t n) {
  constexpr int L = V::lanes;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  typename V::reg m = V::set1(kNegInf);
  int64_t i = 0;
  for (; i + L <= n; i += L) m = V::max(m, V::load(x + i));
  if (i < n) m = V::max(m, V::load_partial(x + i, static_cast<int>(n - i), kNegInf));
  return V::hmax(m);
}

template <class V>
float row_sum(const float* x, int64_t n) {
  constexpr int L = V::lanes;
  typename V::reg s = V::zero();
  int64_t i = 0;
  for (; i + L <= n; i += L) s = V::add(s, V::load(x + i));
  if (i < n) s = V::add(s, V::load_partial(x + i, static_cast<int>(n - i), 0.0f));
  return V::hsum(s);
}

template <class V>
void exp_row(const float* x, float* y, int64_t n) {
  map1<V>(x, y, n, [](typename V::reg v) { return vexp<V>(v); });
}
template <class V>
void erf_row(const float* x, float* y, int64_t n) {
  map1<V>(x, y, n, [](typename V::reg v) { return verf<V>(v); });
}
template <class V>
void sigmoid_forward_row(const float* x, float* y, int64_t n) {
  map1<V>(x, y, n, [](typename V::reg v) { return vsigmoid<V>(v); });
}
template <class V>
void sigmoid_backward_row(const float* y, const float* dy, float* dx, int64_t n) {
  using reg = typename V::reg;
  map2<V>(y, dy, dx, n,
          [](reg s, reg g) { return V::mul(V::mul(g, s), V::sub(V::set1(1.0f), s)); });
}
template <class V>
void silu_forward_row(const float* x, float* y, int64_t n) {
  map1<V>(x, y, n, [](typename V::reg v) { return V::mul(v, vsigmoid<V>(v)); });
}
template <class V>
void silu_backward_row(const float* x, const float* dy, float* dx, int64_t n) {
  using reg = typename V::reg;
  map2<V>(x, dy, dx, n, [](reg v, reg g) {
    const reg s = vsigmoid<V>(v);
    const reg inner = V::fma(v, V::sub(V::set1(1.0f), s), V::set1(1.0f));  // 1 + x (1 - s)
    return V::mul(g, V::mul(s, inner));
  });
}
template <class V>
void gelu_forward_row(const float* x, float* y, int64_t n) {
  using reg = typename V::reg;
  map1<V>(x, y, n, [](reg v) {
    reg cdf, pdf;
    normal_cdf_pdf<V>(v, &cdf, &pdf);
    return V::mul(v, cdf);
  });
}
template <class V>
void gelu_backward_row(const float* x, const float* dy, float* dx, int64_t n) {
  using reg = typename V::reg;
  map2<V>(x, dy, dx, n, [](reg v, reg g) {
    reg cdf, pdf;
    normal_cdf_pdf<V>(v, &cdf, &pdf);
    return V::mul(g, V::fma(v, pdf, cdf));
  });
}

template <class V>
void softmax_row(const float* x, float* y, int64_t n) {
  using reg = typename V::reg;
  constexpr int L = V::lanes;
  const float m = row_max<V>(x, n);
  if (m == -std::numeric_limits<float>::infinity()) {  // empty or fully masked row
    for (int64_t i = 0; i < n; ++i) y[i] = 0.0f;
    return;
  }
  const reg mv = V::set1(m);
  reg s = V::zero();
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    const reg e = vexp<V>(V::sub(V::load(x + i), mv));
    V::store(y + i, e);
    s = V::add(s, e);
  }
  if (i < n) {
    const int rest = static_cast<int>(n - i);
    // Padding with -inf makes the padded lanes exp(-inf) = 0, so they add nothing to the sum.
    const reg e = vexp<V>(V::sub(V::load_partial(x + i, rest, -INFINITY), mv));
    V::store_partial(y + i, e, rest);
    s = V::add(s, e);
  }
  const reg inv = V::set1(1.0f / V::hsum(s));
  map1<V>(y, y, n, [inv](reg e) { return V::mul(e, inv); });
}

template <class V>
void log_softmax_row(const float* x, float* y, int64_t n) {
  using reg = typename V::reg;
  constexpr int L = V::lanes;
  const float m = row_max<V>(x, n);
  const reg mv = V::set1(m);
  reg s = V::zero();
  int64_t i = 0;
  for (; i + L <= n; i += L) s = V::add(s, vexp<V>(V::sub(V::load(x + i), mv)));
  if (i < n) {
    s = V::add(s, vexp<V>(V::sub(V::load_partial(x + i, static_cast<int>(n - i), -INFINITY), mv)));
  }
  const reg log_sum = V::set1(std::log(V::hsum(s)));
  map1<V>(x, y, n, [mv, log_sum](reg v) { return V::sub(V::sub(v, mv), log_sum); });
}

// ---- softmax down the columns of a block ----
// Attention keeps its scores transposed, [Lk, Lq]: the softmax over the few keys then runs down
// short columns, L queries at a time, with vertical operations only (no horizontal max or sum
// per query, whose latency dominated the row-wise form at Lk = 8-16).
template <class V>
void softmax_columns_block(float* s, int64_t rows, int64_t cols, int64_t ld, const uint8_t* valid) {
  using reg = typename V::reg;
  constexpr int L = V::lanes;
  bool any_valid = valid == nullptr;
  for (int64_t r = 0; r < rows && !any_valid; ++r) any_valid = valid[r] != 0;
  for (int64_t c = 0; c < cols; c += L) {
    const int w = static_cast<int>(std::min<int64_t>(L, cols - c));
    auto load = [&](int64_t r) {
      return w == L ? V::load(s + r * ld + c) : V::load_partial(s + r * ld + c, w, 0.0f);
    };
    auto store = [&](int64_t r, reg x) {
      if (w == L) {
        V::store(s + r * ld + c, x);
      } else {
        V::store_partial(s + r * ld + c, x, w);
      }
    };
    if (!any_valid) {  // no key to attend to: the weights are all 0
      for (int64_t r = 0; r < rows; ++r) store(r, V::zero());
      continue;
    }
    reg m = V::set1(-INFINITY);
    for (int64_t r = 0; r < rows; ++r) {
      if (!valid || valid[r]) m = V::max(m, load(r));
    }
    reg sum = V::zero();
    for (int64_t r = 0; r < rows; ++r) {
      if (valid && !valid[r]) {
        store(r, V::zero());
        continue;
      }
      const reg e = vexp<V>(V::sub(load(r), m));
      store(r, e);
      sum = V::add(sum, e);
    }
    const reg inv = V::div(V::set1(1.0f), sum);
    for (int64_t r = 0; r < rows; ++r) {
      if (!valid || valid[r]) store(r, V::mul(load(r), inv));
    }
  }
}

// d = p * (d - colsum(p * d)) in place, down the columns of [rows, cols] blocks.
template <class V>
void softmax_backward_columns_block(const float* p, float* d, int64_t rows, int64_t cols,
                                    int64_t ld) {
  using reg = typename V::reg;
  constexpr int L = V::lanes;
  for (int64_t c = 0; c < cols; c += L) {
    const int w = static_cast<int>(std::min<int64_t>(L, cols - c));
    auto load = [&](const float* base, int64_t r) {
      return w == L ? V::load(base + r * ld + c) : V::load_partial(base + r * ld + c, w, 0.0f);
    };
    reg dot = V::zero();
    for (int64_t r = 0; r < rows; ++r) dot = V::fma(load(p, r), load(d, r), dot);
    for (int64_t r = 0; r < rows; ++r) {
      const reg out = V::mul(load(p, r), V::sub(load(d, r), dot));
      if (w == L) {
        V::store(d + r * ld + c, out);
      } else {
        V::store_partial(d + r * ld + c, out, w);
      }
    }
  }
}

template <class V>
float row_dot(const float* a, const float* b, int64_t n) {
  constexpr int L = V::lanes;
  typename V::reg s = V::zero();
  int64_t i = 0;
  for (; i + L <= n; i += L) s = V::fma(V::load(a + i), V::load(b + i), s);
  if (i < n) {
    const int rest = static_cast<int>(n - i);
    s = V::fma(V::load_partial(a + i, rest, 0.0f), V::load_partial(b + i, rest, 0.0f), s);
  }
  return V::hsum(s);
}

template <class V>
void softmax_backward_row(const float* y, const float* dy, float* dx, int64_t n) {
  using reg = typename V::reg;
  const reg dot = V::set1(row_dot<V>(dy, y, n));
  map2<V>(y, dy, dx, n, [dot](reg s, reg g) { return V::mul(s, V::sub(g, dot)); });
}

template <class V>
void log_softmax_backward_row(const float* y, const float* dy, float* dx, int64_t n) {
  using reg = typename V::reg;
  const reg sum = V::set1(row_sum<V>(dy, n));
  map2<V>(y, dy, dx, n, [sum](reg l, reg g) { return V::sub(g, V::mul(vexp<V>(l), sum)); });
}

template <class V>
void mean_var_row(const float* x, int64_t n, float* mean, float* var) {
  using reg = typename V::reg;
  constexpr int L = V::lanes;
  const float m = row_sum<V>(x, n) / static_cast<float>(n);
  const reg mv = V::set1(m);
  reg s = V::zero();
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    const reg d = V::sub(V::load(x + i), mv);
    s = V::fma(d, d, s);
  }
  if (i < n) {
    // Padding with the mean makes the padded deviations 0.
    const reg d = V::sub(V::load_partial(x + i, static_cast<int>(n - i), m), mv);
    s = V::fma(d, d, s);
  }
  *mean = m;
  *var = V::hsum(s) / static_cast<float>(n);
}

template <class V>
void scale_shift_row(const float* x, float* y, int64_t n, float center, float a, float b) {
  using reg = typename V::reg;
  const reg cv = V::set1(center), av = V::set1(a), bv = V::set1(b);
  map1<V>(x, y, n, [cv, av, bv](reg v) { return V::fma(V::sub(v, cv), av, bv); });
}

template <class V>
void normalize_affine_row(const float* x, float* y, int64_t n, float mean, float rstd,
                          const float* w, const float* b) {
  using reg = typename V::reg;
  constexpr int L = V::lanes;
  const reg mv = V::set1(mean), rv = V::set1(rstd);
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    const reg xhat = V::mul(V::sub(V::load(x + i), mv), rv);
    V::store(y + i, V::fma(xhat, V::load(w + i), V::load(b + i)));
  }
  if (i < n) {
    const int rest = static_cast<int>(n - i);
    const reg xhat = V::mul(V::sub(V::load_partial(x + i, rest, 0.0f), mv), rv);
    V::store_partial(
        y + i, V::fma(xhat, V::load_partial(w + i, rest, 0.0f), V::load_partial(b + i, rest, 0.0f)),
        rest);
  }
}

template <class V>
void dot_and_sum_row(const float* a, const float* b, int64_t n, float center, float* dot,
                     float* sum) {
  using reg = typename V::reg;
  constexpr int L = V::lanes;
  const reg cv = V::set1(center);
  reg d = V::zero(), s = V::zero();
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    const reg av = V::load(a + i);
    d = V::fma(av, V::sub(V::load(b + i), cv), d);
    s = V::add(s, av);
  }
  if (i < n) {
    const int rest = static_cast<int>(n - i);
    const reg av = V::load_partial(a + i, rest, 0.0f);
    d = V::fma(av, V::sub(V::load_partial(b + i, rest, center), cv), d);
    s = V::add(s, av);
  }
  *dot = V::hsum(d);
  *sum = V::hsum(s);
}

template <class V>
void axpbypc_row(const float* dy, const float* x, float* out, int64_t n, float a, float b,
                 float center, float c) {
  using reg = typename V::reg;
  const reg av = V::set1(a), bv = V::set1(b), mv = V::set1(center), cv = V::set1(c);
  map2<V>(dy, x, out, n,
          [av, bv, mv, cv](reg g, reg v) { return V::fma(av, g, V::fma(bv, V::sub(v, mv), cv)); });
}

template <class V>
void layer_norm_backward_row(const float* x, const float* dy, const float* w, float mean,
                             float rstd, float* dx, int64_t n) {
  using reg = typename V::reg;
  constexpr int L = V::lanes;
  const reg mv = V::set1(mean), rv = V::set1(rstd);
  // Pass 1: sums of dxhat and dxhat * xhat.
  reg s1 = V::zero(), s2 = V::zero();
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    const reg dxhat = V::mul(V::load(dy + i), V::load(w + i));
    const reg xhat = V::mul(V::sub(V::load(x + i), mv), rv);
    s1 = V::add(s1, dxhat);
    s2 = V::fma(dxhat, xhat, s2);
  }
  if (i < n) {
    const int rest = static_cast<int>(n - i);
    const reg dxhat =
        V::mul(V::load_partial(dy + i, rest, 0.0f), V::load_partial(w + i, rest, 0.0f));
    const reg xhat = V::mul(V::sub(V::load_partial(x + i, rest, 0.0f), mv), rv);
    s1 = V::add(s1, dxhat);
    s2 = V::fma(dxhat, xhat, s2);
  }
  const float inv_n = 1.0f / static_cast<float>(n);
  const reg mean1 = V::set1(V::hsum(s1) * inv_n), mean2 = V::set1(V::hsum(s2) * inv_n);
  // Pass 2: dx = rstd * (dxhat - mean1 - xhat * mean2).
  auto dx_of = [&](reg xv, reg gv, reg wv) {
    const reg xhat = V::mul(V::sub(xv, mv), rv);
    const reg dxhat = V::mul(gv, wv);
    return V::mul(rv, V::sub(V::sub(dxhat, mean1), V::mul(xhat, mean2)));
  };
  for (i = 0; i + L <= n; i += L) {
    V::store(dx + i, dx_of(V::load(x + i), V::load(dy + i), V::load(w + i)));
  }
  if (i < n) {
    const int rest = static_cast<int>(n - i);
    V::store_partial(dx + i,
                     dx_of(V::load_partial(x + i, rest, 0.0f), V::load_partial(dy + i, rest, 0.0f),
                           V::load_partial(w + i, rest, 0.0f)),
                     rest);
  }
}

template <class V>
void accumulate_affine_grads_row(const float* x, const float* dy, float mean, float rstd, float* dw,
                                 float* db, int64_t n) {
  using reg = typename V::reg;
  constexpr int L = V::lanes;
  const reg mv = V::set1(mean), rv = V::set1(rstd);
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    const reg g = V::load(dy + i);
    const reg xhat = V::mul(V::sub(V::load(x + i), mv), rv);
    V::store(dw + i, V::fma(g, xhat, V::load(dw + i)));
    V::store(db + i, V::add(V::load(db + i), g));
  }
  if (i < n) {
    const int rest = static_cast<int>(n - i);
    const reg g = V::load_partial(dy + i, rest, 0.0f);
    const reg xhat = V::mul(V::sub(V::load_partial(x + i, rest, 0.0f), mv), rv);
    V::store_partial(dw + i, V::fma(g, xhat, V::load_partial(dw + i, rest, 0.0f)), rest);
    V::store_partial(db + i, V::add(V::load_partial(db + i, rest, 0.0f), g), rest);
  }
}

template <class V>
constexpr RowKernels make_row_kernels(const char* isa) {
  return RowKernels{isa,
                    V::lanes,
                    &exp_row<V>,
                    &erf_row<V>,
                    &sigmoid_forward_row<V>,
                    &sigmoid_backward_row<V>,
                    &silu_forward_row<V>,
                    &silu_backward_row<V>,
                    &gelu_forward_row<V>,
                    &gelu_backward_row<V>,
                    &softmax_row<V>,
                    &log_softmax_row<V>,
                    &softmax_backward_row<V>,
                    &log_softmax_backward_row<V>,
                    &mean_var_row<V>,
                    &scale_shift_row<V>,
                    &normalize_affine_row<V>,
                    &dot_and_sum_row<V>,
                    &axpbypc_row<V>,
                    &layer_norm_backward_row<V>,
                    &accumulate_affine_grads_row<V>,
                    &softmax_columns_block<V>,
                    &softmax_backward_columns_block<V>};
}

}  // namespace
}  // namespace ink::kernels::rows
