// Kernel 3 of the conv2d family: the im2col GEMMs over groups of images placed side by side.
//
// Legend as in conv2d.h; HW = HO * WO; G = images per group, nb = images in one group (G, or
// fewer in the last group); L = nb * HW, the width of a group's GEMM.
//   col  [CKK, L]   image k of the group in columns [k HW, (k + 1) HW)
//   ybuf [O, L]     the GEMM's output before it is scattered back to NCHW (nb > 1 only)
// Why groups: a small image gives a GEMM only a few columns wide (a 7x7 output: 49), narrow for
// a 48-column register tile; a group widens it, as long as its col buffer stays in L2 (see
// group_size). On the U-Net's 3x3 shapes a group is usually one image and nothing is copied.
//
// Threads: with at least two groups per thread, threads take whole groups (each GEMM runs on one
// thread, its own buffers, no hand-off inside); otherwise groups run one after another and each
// GEMM splits across threads. Both give the same bits: the GEMM's sums do not depend on how
// its output is split (sgemm.h).
//
// The weight gradient sums over images, so groups are folded into kConv2dWeightSlots partial sums
// (slot s takes a fixed run of groups, in order), and the slots are added in order at the end: the
// result depends on the shape only, never on which thread ran a slot.
#include <algorithm>
#include <vector>

#include "tensor/kernels/conv2d.h"
#include "tensor/kernels/sgemm.h"

namespace ink::kernels {

namespace {

// A group is as many images as fit both limits: its GEMM no wider than kMaxColumns, and its
// col buffer within kColBytes (half of a 512 KiB-1 MiB L2), so col stays in cache between
// im2col writing it and the GEMM reading it. Measured on the U-Net shapes at 1 thread: groups
// whose col spilled out of L2 (11 images of 7x7 at C = 128, 2.5 MB) ran 20-30% slower than
// one image at a time, so large images and wide layers get groups of one.
constexpr int64_t kMaxColumns = 512;
constexpr int64_t kColBytes = 256 * 1024;

bool is_pointwise(const Conv2dGeometry& g);

int64_t group_size(const Conv2dGeometry& g) {
  // A 1x1 convolution reads each image in place as its GEMM operand; grouping would add a copy
  // of the input (and of dy) that costs more than the wider GEMM saves (measured: 0.86x vs
  // 0.94x oneDNN forward, 0.72x vs 0.87x dX on 128 -> 64 channels at 14x14).
  if (is_pointwise(g)) return 1;
  const int64_t HW = g.HO() * g.WO();
  const int64_t by_columns = kMaxColumns / HW;
  const int64_t by_bytes = kColBytes / (g.CKK() * HW * static_cast<int64_t>(sizeof(float)));
  return std::clamp<int64_t>(std::min(by_columns, by_bytes), 1, g.B);
}

bool is_pointwise(const Conv2dGeometry& g) {
  return g.KH == 1 && g.KW == 1 && g.stride == 1 && g.padding == 0;
}

// dW [O, C] of a 1x1 convolution summed over images [b0, b1), as its transpose
// dW^T [C, O] += x_b [C, HW] * dy_b^T: x is read in place and only dy [O, HW], the smaller
// operand when O < C (the U-Net's skip projections halve the channels), is packed transposed,
// where dW = dy_b * x_b^T would transpose-pack x. Then written to `sum` [O, C].
void pointwise_weight_grad(const Conv2dGeometry& g, const float* x, const float* dy, int64_t b0,
                           int64_t b1, float* sum) {
  const int64_t HW = g.HO() * g.WO();
  std::vector<float> sum_t(static_cast<size_t>(g.C * g.O));
  for (int64_t b = b0; b < b1; ++b) {
    sgemm(Trans::N, Trans::T, g.C, g.O, HW, 1.0f, x + b * g.C * HW, HW, dy + b * g.O * HW, HW,
          b == b0 ? 0.0f : 1.0f, sum_t.data(), g.O);
  }
  for (int64_t o = 0; o < g.O; ++o) {
    for (int64_t c = 0; c < g.C; ++c) sum[o * g.C + c] = sum_t[c * g.O + o];
  }
}

}  // namespace

void conv2d_forward_grouped(const Conv2dGeometry& g, const float* x, const float* w,
                            const float* bias, float* y) {
  const int64_t HW = g.HO() * g.WO(), CKK = g.CKK();
  const int64_t G = group_size(g);
  const int64_t groups = (g.B + G - 1) / G;
  conv2d_for_each_task(groups, [&](int64_t t0, int64_t t1) {
    std::vector<float> col, ybuf;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b0 = t * G, nb = std::min(G, g.B - b0), L = nb * HW;
      const float* cols = x + b0 * g.C * g.H * g.W;
      if (nb > 1 || !is_pointwise(g)) {
        col.resize(static_cast<size_t>(CKK * L));
        for (int64_t k = 0; k < nb; ++k) {
          conv2d_im2col(g, x + (b0 + k) * g.C * g.H * g.W, col.data() + k * HW, L);
        }
        cols = col.data();
      }
      float* y0 = y + b0 * g.O * HW;
      if (nb == 1) {
        sgemm(Trans::N, Trans::N, g.O, HW, CKK, 1.0f, w, CKK, cols, HW, 0.0f, y0, HW);
        if (bias != nullptr) {
          for (int64_t o = 0; o < g.O; ++o) {
            for (int64_t p = 0; p < HW; ++p) y0[o * HW + p] += bias[o];
          }
        }
        continue;
      }
      ybuf.resize(static_cast<size_t>(g.O * L));
      sgemm(Trans::N, Trans::N, g.O, L, CKK, 1.0f, w, CKK, cols, L, 0.0f, ybuf.data(), L);
      for (int64_t k = 0; k < nb; ++k) {
        for (int64_t o = 0; o < g.O; ++o) {
          const float* src = ybuf.data() + o * L + k * HW;
          float* dst = y0 + (k * g.O + o) * HW;
          const float add = bias != nullptr ? bias[o] : 0.0f;
          for (int64_t p = 0; p < HW; ++p) dst[p] = src[p] + add;
        }
      }
    }
  });
}

void conv2d_backward_input_grouped(const Conv2dGeometry& g, const float* dy, const float* w,
                                   float* dx) {
  const int64_t HW = g.HO() * g.WO(), CKK = g.CKK();
  const int64_t image = g.C * g.H * g.W;
  const int64_t G = group_size(g);
  const int64_t groups = (g.B + G - 1) / G;
  conv2d_for_each_task(groups, [&](int64_t t0, int64_t t1) {
    std::vector<float> col, dybuf;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b0 = t * G, nb = std::min(G, g.B - b0), L = nb * HW;
      const float* dys = dy + b0 * g.O * HW;
      if (nb > 1) {  // gather the group's dy into [O, L]
        dybuf.resize(static_cast<size_t>(g.O * L));
        for (int64_t k = 0; k < nb; ++k) {
          for (int64_t o = 0; o < g.O; ++o) {
            std::copy_n(dys + (k * g.O + o) * HW, HW, dybuf.data() + o * L + k * HW);
          }
        }
        dys = dybuf.data();
      }
      float* dx0 = dx + b0 * image;
      if (nb == 1 && is_pointwise(g)) {  // col is dx itself
        sgemm(Trans::T, Trans::N, CKK, HW, g.O, 1.0f, w, CKK, dys, HW, 0.0f, dx0, HW);
        continue;
      }
      col.resize(static_cast<size_t>(CKK * L));
      sgemm(Trans::T, Trans::N, CKK, L, g.O, 1.0f, w, CKK, dys, L, 0.0f, col.data(), L);
      std::fill(dx0, dx0 + nb * image, 0.0f);
      for (int64_t k = 0; k < nb; ++k) conv2d_col2im(g, col.data() + k * HW, L, dx0 + k * image);
    }
  });
}

void conv2d_backward_weight_grouped(const Conv2dGeometry& g, const float* x, const float* dy,
                                    float* dw, float* dbias) {
  const int64_t HW = g.HO() * g.WO(), CKK = g.CKK();
  const int64_t G = group_size(g);
  const int64_t groups = (g.B + G - 1) / G;
  const int64_t slots = std::min(kConv2dWeightSlots, groups);
  const int64_t size = g.O * CKK;
  // Slot 0 sums straight into dw; slots 1.. into `partial` [slots - 1, O, CKK].
  std::vector<float> partial(static_cast<size_t>((slots - 1) * size));
  conv2d_for_each_task(slots, [&](int64_t s0, int64_t s1) {
    std::vector<float> col, dybuf;
    for (int64_t s = s0; s < s1; ++s) {
      float* sum = s == 0 ? dw : partial.data() + (s - 1) * size;
      if (is_pointwise(g)) {  // groups of one image (group_size)
        pointwise_weight_grad(g, x, dy, s * groups / slots, (s + 1) * groups / slots, sum);
        continue;
      }
      for (int64_t t = s * groups / slots; t < (s + 1) * groups / slots; ++t) {
        const int64_t b0 = t * G, nb = std::min(G, g.B - b0), L = nb * HW;
        const float* cols = x + b0 * g.C * g.H * g.W;
        if (nb > 1 || !is_pointwise(g)) {
          col.resize(static_cast<size_t>(CKK * L));
          for (int64_t k = 0; k < nb; ++k) {
            conv2d_im2col(g, x + (b0 + k) * g.C * g.H * g.W, col.data() + k * HW, L);
          }
          cols = col.data();
        }
        const float* dys = dy + b0 * g.O * HW;
        if (nb > 1) {
          dybuf.resize(static_cast<size_t>(g.O * L));
          for (int64_t k = 0; k < nb; ++k) {
            for (int64_t o = 0; o < g.O; ++o) {
              std::copy_n(dys + (k * g.O + o) * HW, HW, dybuf.data() + o * L + k * HW);
            }
          }
          dys = dybuf.data();
        }
        // sum [O, CKK] += dy_group [O, L] * col^T; the slot's first group overwrites.
        const bool first = t == s * groups / slots;
        sgemm(Trans::N, Trans::T, g.O, CKK, L, 1.0f, dys, L, cols, L, first ? 0.0f : 1.0f, sum,
              CKK);
      }
    }
  });
  if (slots > 1) {
    parallel_for(0, size, 16384, [&](int64_t e0, int64_t e1) {
      for (int64_t s = 1; s < slots; ++s) {
        const float* src = partial.data() + (s - 1) * size;
        for (int64_t e = e0; e < e1; ++e) dw[e] += src[e];
      }
    });
  }
  if (dbias != nullptr) conv2d_bias_grad(g, dy, dbias);
}

}  // namespace ink::kernels
