// The row primitives behind the fused activation, softmax, norm and attention kernels: one table
// of plain functions per instruction set (AVX-512, AVX2 + FMA, portable), chosen at run time as
// the sgemm micro-kernels are. Each primitive works on one contiguous row on the calling thread;
// the drivers in activation_kernels.cpp, softmax_kernels.cpp, norm_kernels.cpp and
// attention_kernels.cpp split rows across threads.
//
// Legend: n = elements in the row. x, y, dy, dx: rows of n floats (y and dx may alias x / dy
// where noted). mean, rstd: the row's (or group's) statistics, rstd = 1 / sqrt(var + eps).
//
// The vector exp and erf (see activation_rows_impl.h), measured against double-precision libm
// over 2e7 evenly spaced points (AVX2 and portable tables; tests/test_fused.cpp asserts the bounds
// in brackets):
//   exp: max error 1 ulp [2] for results >= FLT_MIN; x < -87.3365 gives 0 (results below FLT_MIN
//        flush to zero), x > 88.7228 gives +inf, NaN stays NaN.
//   erf: max relative error 1.8e-7, 2 ulp [4e-7], on [-10, 10].
// Every lane runs the same instructions, so a value does not depend on where in a row (or in which
// thread's chunk) it sits: only the reductions (sums, maxima) depend on the row length.
#pragma once

#include <cstdint>
#include <vector>

namespace ink::kernels::rows {

struct RowKernels {
  const char* isa;  // "avx512", "avx2" or "generic"
  int lanes;        // floats per register

  // ---- elementwise (y may alias x) ----
  void (*exp)(const float* x, float* y, int64_t n);
  void (*erf)(const float* x, float* y, int64_t n);
  // sigmoid(x) = 1 / (1 + exp(-x)), stable at +-1000.
  void (*sigmoid_forward)(const float* x, float* y, int64_t n);
  // dx = dy * y * (1 - y), from the forward's output y.
  void (*sigmoid_backward)(const float* y, const float* dy, float* dx, int64_t n);
  // silu(x) = x * sigmoid(x).
  void (*silu_forward)(const float* x, float* y, int64_t n);
  // dx = dy * s * (1 + x * (1 - s)), s = sigmoid(x).
  void (*silu_backward)(const float* x, const float* dy, float* dx, int64_t n);
  // gelu(x) = x * Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2, the normal CDF.
  void (*gelu_forward)(const float* x, float* y, int64_t n);
  // dx = dy * (Phi(x) + x * phi(x)), phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
  void (*gelu_backward)(const float* x, const float* dy, float* dx, int64_t n);

  // ---- softmax over one row (y may alias x) ----
  // y = exp(x - max) / sum exp(x - max). -inf entries get 0; a row of only -inf gives all 0.
  void (*softmax)(const float* x, float* y, int64_t n);
  // y = x - max - log(sum exp(x - max)).
  void (*log_softmax)(const float* x, float* y, int64_t n);
  // dx = y * (dy - sum(dy * y)).
  void (*softmax_backward)(const float* y, const float* dy, float* dx, int64_t n);
  // dx = dy - exp(y) * sum(dy), y the log-probabilities.
  void (*log_softmax_backward)(const float* y, const float* dy, float* dx, int64_t n);

  // ---- normalisation ----
  // Two passes: mean = sum(x) / n, then var = sum((x - mean)^2) / n (biased, as PyTorch).
  void (*mean_var)(const float* x, int64_t n, float* mean, float* var);
  // y = (x - center) * a + b with scalars (group norm's per-channel affine). y may alias x.
  void (*scale_shift)(const float* x, float* y, int64_t n, float center, float a, float b);
  // y = (x - mean) * rstd * w + b, w and b rows of n (layer norm).
  void (*normalize_affine)(const float* x, float* y, int64_t n, float mean, float rstd,
                           const float* w, const float* b);
  // dot = sum(a * (b - center)), sum = sum(a).
  void (*dot_and_sum)(const float* a, const float* b, int64_t n, float center, float* dot,
                      float* sum);
  // out = a * dy + b * (x - center) + c with scalars (group norm's input gradient).
  void (*axpbypc)(const float* dy, const float* x, float* out, int64_t n, float a, float b,
                  float center, float c);
  // Layer norm's input gradient for one row: dxhat = dy * w, xhat = (x - mean) * rstd,
  // dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)).
  void (*layer_norm_backward)(const float* x, const float* dy, const float* w, float mean,
                              float rstd, float* dx, int64_t n);
  // dw += dy * (x - mean) * rstd and db += dy, over n columns of one row.
  void (*accumulate_affine_grads)(const float* x, const float* dy, float mean, float rstd,
                                  float* dw, float* db, int64_t n);

  // ---- softmax down the columns of a [rows, cols] block with leading dimension ld ----
  // (attention's transposed scores: rows = keys, cols = queries). In place: each column becomes
  // its softmax over the rows with valid[r] != 0 (all rows when valid is nullptr); the other rows
  // get 0, and with no valid row at all every entry is 0.
  void (*softmax_columns)(float* s, int64_t rows, int64_t cols, int64_t ld, const uint8_t* valid);
  // In place: d = p * (d - colsum(p * d)), p the softmax from above.
  void (*softmax_backward_columns)(const float* p, float* d, int64_t rows, int64_t cols,
                                   int64_t ld);
};

// The portable table compiles anywhere. The x86 tables are nullptr when not compiled in or not
// supported by this CPU.
const RowKernels& row_kernels_generic();
const RowKernels* row_kernels_avx2();
const RowKernels* row_kernels_avx512();
// Defined in the x86 files without any check; only the two functions above call them.
const RowKernels& row_kernels_avx2_unchecked();
const RowKernels& row_kernels_avx512_unchecked();

// The best table for this CPU, chosen once.
const RowKernels& best_row_kernels();
// Every table this CPU can run, best first (for tests and benchmarks).
std::vector<const RowKernels*> available_row_kernels();

}  // namespace ink::kernels::rows
