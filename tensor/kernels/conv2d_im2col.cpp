// Kernel 2 of the conv2d family: im2col + the packed sgemm, one image at a time, and the
// im2col / col2im / bias-gradient helpers the GEMM kernels share.
//
// Legend as in conv2d.h: B, C, H, W = input; O, KH, KW = weight; HO, WO = output;
// S = stride, P = padding, D = dilation; CKK = C * KH * KW; HW = HO * WO.
//   col [CKK, HW]: row (c, i, j) holds x[c, oh S - P + i D, ow S - P + j D] for every (oh, ow),
//   so the convolution of one image is the GEMM  y_b [O, HW] = w [O, CKK] * col [CKK, HW].
#include <algorithm>
#include <cstring>
#include <vector>

#include "tensor/kernels/conv2d.h"
#include "tensor/kernels/sgemm.h"
#include "tensor/parallel.h"

namespace ink::kernels {

namespace {

// The output columns [lo, hi) whose input column ow S - P + j D falls inside [0, W).
void valid_columns(const Conv2dGeometry& g, int64_t j, int64_t WO, int64_t* lo, int64_t* hi) {
  const int64_t offset = j * g.dilation - g.padding;  // iw = ow S + offset
  *lo = offset >= 0 ? 0 : (-offset + g.stride - 1) / g.stride;
  *hi = g.W - 1 - offset < 0 ? 0 : std::min(WO, (g.W - 1 - offset) / g.stride + 1);
  *lo = std::min(*lo, *hi);
}

// dst[ow] = src[ow S + offset] for lo <= ow < hi, and 0 for the other ow < WO.
inline void copy_row(const float* __restrict src, float* __restrict dst, int64_t lo, int64_t hi,
                     int64_t WO, int64_t S, int64_t offset) {
  for (int64_t ow = 0; ow < lo; ++ow) dst[ow] = 0.0f;
  if (S == 1) {
    const float* s = src + offset;
    for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = s[ow];
  } else {
    for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = src[ow * S + offset];
  }
  for (int64_t ow = hi; ow < WO; ++ow) dst[ow] = 0.0f;
}

// dst[ow S + offset] += src[ow] for lo <= ow < hi (col2im's row).
inline void add_row(const float* __restrict src, float* __restrict dst, int64_t lo, int64_t hi,
                    int64_t S, int64_t offset) {
  if (S == 1) {
    float* d = dst + offset;
    for (int64_t ow = lo; ow < hi; ++ow) d[ow] += src[ow];
  } else {
    for (int64_t ow = lo; ow < hi; ++ow) dst[ow * S + offset] += src[ow];
  }
}

// A 1x1 kernel with stride 1 and no padding: col is the image itself.
bool is_pointwise(const Conv2dGeometry& g) {
  return g.KH == 1 && g.KW == 1 && g.stride == 1 && g.padding == 0;
}

}  // namespace

namespace {

// im2col for stride 1 when the output is as wide as the input (WO == W: a 3x3 kernel with
// padding 1, or a 1x1 without padding). Output row oh of col row (c, i, j) is input row
// ih = oh - P + i D shifted by offset = j D - P, so output rows [oh0, oh1) with a valid ih read
// one contiguous stretch of the input plane: one copy per col row instead of one per output row.
// The copy also fills each row's margins (ow < lo or ow >= hi, where the shift runs off the
// image) from the neighbouring input row; those are zeroed afterwards.
void im2col_same_width(const Conv2dGeometry& g, const float* xb, float* col, int64_t ld) {
  const int64_t HO = g.HO(), WO = g.WO();
  for (int64_t c = 0; c < g.C; ++c) {
    const float* plane = xb + c * g.H * g.W;
    for (int64_t i = 0; i < g.KH; ++i) {
      const int64_t shift = i * g.dilation - g.padding;  // ih = oh + shift
      const int64_t oh0 = std::clamp<int64_t>(-shift, 0, HO);
      const int64_t oh1 = std::clamp<int64_t>(g.H - shift, oh0, HO);
      for (int64_t j = 0; j < g.KW; ++j) {
        float* dst = col + ((c * g.KH + i) * g.KW + j) * ld;
        int64_t lo = 0, hi = 0;
        valid_columns(g, j, WO, &lo, &hi);
        const int64_t offset = j * g.dilation - g.padding;
        std::fill(dst, dst + oh0 * WO, 0.0f);
        std::fill(dst + oh1 * WO, dst + HO * WO, 0.0f);
        if (oh0 == oh1) continue;
        // Elements p = oh WO + ow for oh in [oh0, oh1), trimmed so that the first and last read
        // inside the plane: dst[p] = plane[p + shift W + offset].
        const int64_t first = oh0 * WO + lo, last = (oh1 - 1) * WO + hi;
        if (first < last) {
          const float* src = plane + shift * g.W + offset;
          std::copy(src + first, src + last, dst + first);
        }
        for (int64_t oh = oh0; oh < oh1; ++oh) {
          float* row = dst + oh * WO;
          for (int64_t ow = 0; ow < lo; ++ow) row[ow] = 0.0f;
          for (int64_t ow = hi; ow < WO; ++ow) row[ow] = 0.0f;
        }
      }
    }
  }
}

}  // namespace

void conv2d_im2col(const Conv2dGeometry& g, const float* xb, float* col, int64_t ld) {
  const int64_t HO = g.HO(), WO = g.WO();
  if (g.stride == 1 && WO == g.W) return im2col_same_width(g, xb, col, ld);
  for (int64_t c = 0; c < g.C; ++c) {
    for (int64_t i = 0; i < g.KH; ++i) {
      for (int64_t j = 0; j < g.KW; ++j) {
        float* dst = col + ((c * g.KH + i) * g.KW + j) * ld;
        int64_t lo = 0, hi = 0;
        valid_columns(g, j, WO, &lo, &hi);
        const int64_t offset = j * g.dilation - g.padding;
        for (int64_t oh = 0; oh < HO; ++oh, dst += WO) {
          const int64_t ih = oh * g.stride - g.padding + i * g.dilation;
          if (ih < 0 || ih >= g.H) {
            for (int64_t ow = 0; ow < WO; ++ow) dst[ow] = 0.0f;
            continue;
          }
          const float* src = xb + (c * g.H + ih) * g.W;  // iw = ow S + offset
          // Rows are short (WO = 7 to 32): plain loops the compiler vectorises, rather than
          // three library calls per row (which cost more than the copy at these lengths).
          copy_row(src, dst, lo, hi, WO, g.stride, offset);
        }
      }
    }
  }
}

void conv2d_col2im(const Conv2dGeometry& g, const float* col, int64_t ld, float* dxb) {
  const int64_t HO = g.HO(), WO = g.WO();
  for (int64_t c = 0; c < g.C; ++c) {
    for (int64_t i = 0; i < g.KH; ++i) {
      for (int64_t j = 0; j < g.KW; ++j) {
        const float* src = col + ((c * g.KH + i) * g.KW + j) * ld;
        int64_t lo = 0, hi = 0;
        valid_columns(g, j, WO, &lo, &hi);
        const int64_t offset = j * g.dilation - g.padding;
        for (int64_t oh = 0; oh < HO; ++oh, src += WO) {
          const int64_t ih = oh * g.stride - g.padding + i * g.dilation;
          if (ih < 0 || ih >= g.H) continue;
          float* dst = dxb + (c * g.H + ih) * g.W;  // iw = ow S + offset
          add_row(src, dst, lo, hi, g.stride, offset);
        }
      }
    }
  }
}

void conv2d_bias_grad(const Conv2dGeometry& g, const float* dy, float* dbias) {
  const int64_t HW = g.HO() * g.WO();
  parallel_for(0, g.O, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, g.B * HW)),
               [&](int64_t o0, int64_t o1) {
                 for (int64_t o = o0; o < o1; ++o) {
                   double acc = 0.0;  // B * HW terms: double keeps it independent of their order
                   for (int64_t b = 0; b < g.B; ++b) {
                     const float* plane = dy + (b * g.O + o) * HW;
                     float partial = 0.0f;
                     for (int64_t p = 0; p < HW; ++p) partial += plane[p];
                     acc += partial;
                   }
                   dbias[o] = static_cast<float>(acc);
                 }
               });
}

void conv2d_forward_im2col(const Conv2dGeometry& g, const float* x, const float* w,
                           const float* bias, float* y) {
  const int64_t HW = g.HO() * g.WO(), CKK = g.CKK();
  std::vector<float> col(is_pointwise(g) ? 0 : static_cast<size_t>(CKK * HW));
  for (int64_t b = 0; b < g.B; ++b) {
    const float* xb = x + b * g.C * g.H * g.W;
    float* yb = y + b * g.O * HW;
    const float* cols = xb;
    if (!is_pointwise(g)) {
      conv2d_im2col(g, xb, col.data(), HW);
      cols = col.data();
    }
    sgemm(Trans::N, Trans::N, g.O, HW, CKK, 1.0f, w, CKK, cols, HW, 0.0f, yb, HW);
    if (bias == nullptr) continue;
    for (int64_t o = 0; o < g.O; ++o) {
      for (int64_t p = 0; p < HW; ++p) yb[o * HW + p] += bias[o];
    }
  }
}

void conv2d_backward_input_im2col(const Conv2dGeometry& g, const float* dy, const float* w,
                                  float* dx) {
  const int64_t HW = g.HO() * g.WO(), CKK = g.CKK();
  const int64_t image = g.C * g.H * g.W;
  std::vector<float> col(is_pointwise(g) ? 0 : static_cast<size_t>(CKK * HW));
  for (int64_t b = 0; b < g.B; ++b) {
    const float* dyb = dy + b * g.O * HW;
    float* dxb = dx + b * image;
    if (is_pointwise(g)) {  // col is dx itself
      sgemm(Trans::T, Trans::N, CKK, HW, g.O, 1.0f, w, CKK, dyb, HW, 0.0f, dxb, HW);
      continue;
    }
    sgemm(Trans::T, Trans::N, CKK, HW, g.O, 1.0f, w, CKK, dyb, HW, 0.0f, col.data(), HW);
    std::fill(dxb, dxb + image, 0.0f);
    conv2d_col2im(g, col.data(), HW, dxb);
  }
}

void conv2d_backward_weight_im2col(const Conv2dGeometry& g, const float* x, const float* dy,
                                   float* dw, float* dbias) {
  const int64_t HW = g.HO() * g.WO(), CKK = g.CKK();
  std::vector<float> col(is_pointwise(g) ? 0 : static_cast<size_t>(CKK * HW));
  for (int64_t b = 0; b < g.B; ++b) {
    const float* xb = x + b * g.C * g.H * g.W;
    const float* cols = xb;
    if (!is_pointwise(g)) {
      conv2d_im2col(g, xb, col.data(), HW);
      cols = col.data();
    }
    // dw += dy_b [O, HW] * col^T; the first image overwrites.
    sgemm(Trans::N, Trans::T, g.O, CKK, HW, 1.0f, dy + b * g.O * HW, HW, cols, HW,
          b == 0 ? 0.0f : 1.0f, dw, CKK);
  }
  if (dbias != nullptr) conv2d_bias_grad(g, dy, dbias);
}

}  // namespace ink::kernels
