// The register-blocked micro-kernel of the packed sgemm kernels, written once against a tiny
// SIMD interface and compiled by each x86 file (sgemm_microkernel_avx512.cpp, ..._avx2.cpp)
// with that file's instruction-set flags. Include it only from those files.
//
// Legend: MR x NR = the register tile; a tile of C is MR rows by NR = NV * lanes columns.
//   k = how many steps of the shared dimension one call sums over (KC, or less at the end of K).
//   a(i, p), b(p, j) and C as described at MicroTile in sgemm_packed.h.
//
// Why everything here sits in an anonymous namespace: each including file is compiled with
// different -m flags. If two files emitted the same inline function under one name, the linker
// would keep either copy, and an AVX-512 copy could end up called on a CPU without AVX-512.
// Internal linkage gives every file its own copy.
//
// The SIMD interface V provides:
//   reg                          one register of `lanes` floats
//   zero(), set1(x)              all lanes 0 / x
//   load(p), store(p, x)         lanes floats, unaligned
//   load_first(p, n)             the first n lanes (1 <= n <= lanes), the rest 0, reading only n
//   store_first(p, x, n)         writes only the first n lanes
//   broadcast(p)                 *p in every lane
//   fma(a, b, c)                 a * b + c with one rounding
//   mul(a, b)
#pragma once

#include <immintrin.h>

#include <utility>

#include "tensor/kernels/sgemm_packed.h"

namespace ink::kernels::packed {
namespace {

// One micro-kernel call for a tile of exactly M_ROWS rows and NV registers per row, the last
// register holding t.n - (NV - 1) * lanes columns when kRagged. kRowsApart: A's rows are
// t.a_row_stride apart (A read in place from [M, K] storage) instead of adjacent (packed, or
// [K, M] storage); fixing the adjacent case at compile time keeps its addressing to constants.
//
// The inner loop is an outer product: per step p, NV registers of B (one row of the B panel)
// and M_ROWS broadcasts of A update M_ROWS * NV accumulators held in registers for the whole
// call. C is read and written once per call, after k steps, which is why KC is large.
template <class V, int M_ROWS, int NV, bool kRagged, bool kRowsApart>
void tile_kernel(const MicroTile& t) {
  using reg = typename V::reg;
  constexpr int kLanes = V::lanes;
  const int tail = t.n - (NV - 1) * kLanes;  // columns in the last register

  // Locals, so that storing into C does not make the compiler reload t's fields.
  float* const c_tile = t.c;
  const int64_t ldc = t.ldc;
  const int64_t k = t.k;
  const int64_t a_row_stride = kRowsApart ? t.a_row_stride : 1;

  // Ask for C's cache lines now; they arrive while the K loop runs instead of stalling the
  // stores at the end (with a small K, as in A^T * B at batch 64, that stall is not small).
#pragma GCC unroll 32
  for (int i = 0; i < M_ROWS; ++i) {
    const char* row = reinterpret_cast<const char*>(c_tile + i * ldc);
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) _mm_prefetch(row + v * kLanes * 4, _MM_HINT_T0);
    _mm_prefetch(row + t.n * 4 - 1, _MM_HINT_T0);  // the last line, when the row is unaligned
  }

  reg acc[M_ROWS][NV];
#pragma GCC unroll 32
  for (int i = 0; i < M_ROWS; ++i) {
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[i][v] = V::zero();
  }

  const float* a = t.a;
  const float* b = t.b;
  for (int64_t p = 0; p < k; ++p) {
    reg bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const bool last = v == NV - 1;
      bv[v] = kRagged && last ? V::load_first(b + v * kLanes, tail) : V::load(b + v * kLanes);
    }
#pragma GCC unroll 32
    for (int i = 0; i < M_ROWS; ++i) {
      const reg ai = V::broadcast(a + i * a_row_stride);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[i][v] = V::fma(ai, bv[v], acc[i][v]);
    }
    a += t.a_k_stride;
    b += t.b_k_stride;
  }

  // C = alpha * acc + beta * C. With beta == 0, C is only written.
  const reg alpha = V::set1(t.alpha);
  const reg beta = V::set1(t.beta);
  const bool read_c = t.beta != 0.0f;
#pragma GCC unroll 32
  for (int i = 0; i < M_ROWS; ++i) {
    float* c = c_tile + i * ldc;
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      const bool partial = kRagged && v == NV - 1;
      float* cv = c + v * kLanes;
      reg out = V::mul(alpha, acc[i][v]);
      if (read_c) {
        const reg old = partial ? V::load_first(cv, tail) : V::load(cv);
        out = V::fma(beta, old, out);
      }
      if (partial) {
        V::store_first(cv, out, tail);
      } else {
        V::store(cv, out);
      }
    }
  }
}

// The edge path: a table of tile_kernel instances, one per (rows present, registers present,
// last register full or not), so a ragged tile at the right or bottom edge runs the same
// register code with fewer rows or columns instead of a slow scalar loop.
template <class V, int MR, int NV, bool kRowsApart>
struct TileTable {
  using Fn = void (*)(const MicroTile&);
  Fn fns[MR][NV][2];

  template <int M_ROWS, int... Vs>
  constexpr void fill_row(std::integer_sequence<int, Vs...>) {
    ((fns[M_ROWS - 1][Vs][0] = &tile_kernel<V, M_ROWS, Vs + 1, false, kRowsApart>,
      fns[M_ROWS - 1][Vs][1] = &tile_kernel<V, M_ROWS, Vs + 1, true, kRowsApart>),
     ...);
  }
  template <int... Ms>
  constexpr void fill(std::integer_sequence<int, Ms...>) {
    (fill_row<Ms + 1>(std::make_integer_sequence<int, NV>{}), ...);
  }
  constexpr TileTable() : fns{} { fill(std::make_integer_sequence<int, MR>{}); }
};

template <class V, int MR, int NV>
void tile_dispatch(const MicroTile& t) {
  static constexpr TileTable<V, MR, NV, false> adjacent;
  static constexpr TileTable<V, MR, NV, true> apart;
  const int registers = (t.n + V::lanes - 1) / V::lanes;
  const bool ragged = t.n % V::lanes != 0;
  const auto& table = t.a_row_stride == 1 ? adjacent.fns : apart.fns;
  table[t.m - 1][registers - 1][ragged](t);
}

// Transposes the 8x8 block held in r[0..7] (row q becomes column q).
inline void transpose8x8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]);
  const __m256 t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]);
  const __m256 t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]);
  const __m256 t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]);
  const __m256 t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// The transposing pack (see MicroKernel::pack_transposed) for panel columns [j_begin, w) and the
// zero padding up to `width`, 8x8 blocks at a time: 8 loads, 24 shuffles and 8 stores move 64
// floats, several times faster than an element-by-element copy.
void pack_transposed_from(const float* src, int64_t ld, int64_t kc, int j_begin, int w, int width,
                          float* dst) {
  int j = j_begin;
  for (; j + 8 <= w; j += 8) {
    int64_t p = 0;
    for (; p + 8 <= kc; p += 8) {
      __m256 r[8];
      for (int q = 0; q < 8; ++q) r[q] = _mm256_loadu_ps(src + (j + q) * ld + p);
      transpose8x8(r);
      for (int q = 0; q < 8; ++q) _mm256_storeu_ps(dst + (p + q) * width + j, r[q]);
    }
    for (; p < kc; ++p) {
      for (int q = 0; q < 8; ++q) dst[p * width + j + q] = src[(j + q) * ld + p];
    }
  }
  // Columns left over (w - j_begin not a multiple of 8), then the zero padding.
  for (int64_t p = 0; p < kc; ++p) {
    for (int jj = j; jj < w; ++jj) dst[p * width + jj] = src[jj * ld + p];
    for (int jj = w; jj < width; ++jj) dst[p * width + jj] = 0.0f;
  }
}

}  // namespace
}  // namespace ink::kernels::packed
