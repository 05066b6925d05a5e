// The portable micro-kernel set: plain C++ that any compiler builds, written so that the
// compiler can vectorise the inner loop over columns with whatever SIMD the target has
// (SSE2 on any x86-64, NEON on ARM). It is the fallback, and the readable version of what the
// x86 files do with intrinsics.
//
// Legend: MR = 4 rows, NR = 8 columns. a(i, p), b(p, j) and C as at MicroTile in sgemm_packed.h.
//
// Why 4 x 8: 32 accumulators are 8 four-float registers out of the 16 that SSE2 has, leaving
// room for a row of B and the broadcast of A, so nothing spills to the stack.
#include "tensor/kernels/sgemm_packed.h"

namespace ink::kernels::packed {
namespace {

constexpr int kMR = 4;
constexpr int kNR = 8;

// Writes C = alpha * acc + beta * C for the m x n corner of the tile (C not read if beta == 0).
void store_tile(const MicroTile& t, const float (&acc)[kMR][kNR]) {
  for (int i = 0; i < t.m; ++i) {
    float* c = t.c + i * t.ldc;
    if (t.beta == 0.0f) {
      for (int j = 0; j < t.n; ++j) c[j] = t.alpha * acc[i][j];
    } else {
      for (int j = 0; j < t.n; ++j) c[j] = t.alpha * acc[i][j] + t.beta * c[j];
    }
  }
}

void tile_generic(const MicroTile& t) {
  float acc[kMR][kNR] = {};
  const float* a = t.a;
  const float* b = t.b;
  const int64_t rs = t.a_row_stride;
  if (t.m == kMR && t.n == kNR) {
    // Full tile: constant trip counts, so the j loop becomes SIMD code and acc stays in registers.
    for (int64_t p = 0; p < t.k; ++p) {
      for (int i = 0; i < kMR; ++i) {
        const float ai = a[i * rs];
        for (int j = 0; j < kNR; ++j) acc[i][j] += ai * b[j];
      }
      a += t.a_k_stride;
      b += t.b_k_stride;
    }
  } else {
    // Edge tile: only the m rows and n columns that exist are read.
    for (int64_t p = 0; p < t.k; ++p) {
      for (int i = 0; i < t.m; ++i) {
        const float ai = a[i * rs];
        for (int j = 0; j < t.n; ++j) acc[i][j] += ai * b[j];
      }
      a += t.a_k_stride;
      b += t.b_k_stride;
    }
  }
  store_tile(t, acc);
}

// dst[p * width + j] = src[j * ld + p], in 8 x 8 blocks so that both the reads (along p) and
// the writes (along j) stay within a few cache lines.
void pack_transposed_generic(const float* src, int64_t ld, int64_t kc, int w, int width,
                             float* dst) {
  constexpr int kBlock = 8;
  for (int j0 = 0; j0 < w; j0 += kBlock) {
    const int j1 = j0 + kBlock < w ? j0 + kBlock : w;
    for (int64_t p0 = 0; p0 < kc; p0 += kBlock) {
      const int64_t p1 = p0 + kBlock < kc ? p0 + kBlock : kc;
      for (int j = j0; j < j1; ++j) {
        for (int64_t p = p0; p < p1; ++p) dst[p * width + j] = src[j * ld + p];
      }
    }
  }
  for (int64_t p = 0; p < kc; ++p) {
    for (int j = w; j < width; ++j) dst[p * width + j] = 0.0f;
  }
}

constexpr MicroKernel kGeneric{"generic", kMR, kNR, 4, &tile_generic, &pack_transposed_generic};

}  // namespace

const MicroKernel& microkernel_generic() {
  return kGeneric;
}

}  // namespace ink::kernels::packed
