// Kernel 4 of the conv2d family: stride-1 convolutions as sums of shifted GEMMs, with no im2col.
//
// Legend as in conv2d.h: B, C, H, W = input; O, KH, KW = weight; HO, WO = output;
// P = padding, D = dilation; KK = KH * KW; tap t = (i, j), t = i * KW + j.
//   Hp = H + 2P, Wp = W + 2P   the zero-padded image xp [C, Hp, Wp] (plus a tail, below)
//   N = HO * Wp                output positions q = oh * Wp + ow for every ow < Wp: the last
//                              Wp - WO columns of each row are junk, computed and thrown away
//   off(t) = i D Wp + j D      where tap t's window starts in xp
// With stride 1, the input pixel under tap t of output q is xp[c, q + off(t)]: the col rows of
// tap t are xp itself, shifted by off(t). So instead of copying KK shifted copies into col
// (kernel 2's im2col, 9x the input for 3x3), each tap is one GEMM that reads xp in place:
//   forward  yq [O, N]    = sum_t  w_t [O, C] * (xp + off(t)) [C, N]    (row stride Hp Wp)
//            y[o, oh, ow] = yq[o, oh Wp + ow] + bias[o]                  for ow < WO
//   dX       the input gradient of a stride-1 convolution is itself one: dy padded by
//            (K - 1) D - P, convolved with the kernel flipped in (i, j) and transposed in (o, c)
//   dW       dw_t [O, C]  = sum_b dy_b [O, N] * (xp_b + off(t))^T, with dy_b zero at the junk
//            positions. Both operands are contiguous along the sum (q), so xp is stored channels
//            last (xt [Hp Wp, C]) and dy is packed into the micro-kernel's A panels. With
//            dilation 1 the taps of one kernel row i then sit side by side: column j C + c of
//            xt shifted by i Wp pixels is xp[c, q + i Wp + j], so a GEMM per row i gives
//            dwt_i [O, KW C] (3 C columns: whole 48-column tiles for C = 32 or 64, where one tap's
//            C columns would leave ragged ones). Other dilations use kernel 3's dW.
// The reads of the last rows of a shifted window run up to (KW - 1) D floats past the plane (for
// junk columns only), so xp has that many zeros after its last plane. The cost: N / (HO WO) =
// Wp / WO more multiply-adds (28 x 28: 1.07x, 14 x 14: 1.14x, 7 x 7: 1.29x for 3x3 with P = 1)
// against kernel 3's copies of col and col2im's scattered adds.
//
// Other geometries (stride > 1, KH != KW, P > (K - 1) D, and 1x1 without padding, which kernel 3
// already reads in place) go to kernel 3, so every geometry works.
//
// Threads take whole images, or split an image's columns when there are few images (see
// forward_all). dW folds images into a fixed number of slots added in order, as kernel 3 does.
// No result depends on the thread count.
#include <algorithm>
#include <cstring>
#include <vector>

#include "tensor/kernels/conv2d.h"
#include "tensor/kernels/sgemm.h"
#include "tensor/kernels/sgemm_packed.h"
#include "tensor/parallel.h"

namespace ink::kernels {

namespace {

bool supported(const Conv2dGeometry& g) {
  const bool pointwise = g.KH == 1 && g.KW == 1 && g.padding == 0;
  return g.stride == 1 && g.KH == g.KW && g.padding <= (g.KH - 1) * g.dilation && !pointwise;
}

// The padded image: xp [C, Hp, Wp] then (KW - 1) D zeros.
struct Padded {
  int64_t Hp, Wp, plane;
  int64_t tail;    // (KW - 1) D: how far the last window reads past a plane
  int64_t floats;  // of xp [C, Hp, Wp] and its tail
  explicit Padded(const Conv2dGeometry& g)
      : Hp(g.H + 2 * g.padding),
        Wp(g.W + 2 * g.padding),
        plane(Hp * Wp),
        tail((g.KW - 1) * g.dilation),
        floats(g.C * plane + tail) {}
  // Of the same image stored channels last (xt, dW): (plane + tail) pixels of C floats.
  int64_t channels_last_floats(const Conv2dGeometry& g) const { return (plane + tail) * g.C; }
  int64_t offset(const Conv2dGeometry& g, int64_t i, int64_t j) const {
    return i * g.dilation * Wp + j * g.dilation;
  }
};

// xp from one image xb [C, H, W]; every padding float is rewritten, so the buffer can be reused.
void pad_image(const Conv2dGeometry& g, const Padded& p, const float* xb, float* xp) {
  const int64_t P = g.padding;
  for (int64_t c = 0; c < g.C; ++c) {
    float* dst = xp + c * p.plane;
    std::fill(dst, dst + P * p.Wp, 0.0f);
    for (int64_t h = 0; h < g.H; ++h) {
      float* row = dst + (P + h) * p.Wp;
      std::fill(row, row + P, 0.0f);
      std::memcpy(row + P, xb + (c * g.H + h) * g.W, static_cast<size_t>(g.W) * sizeof(float));
      std::fill(row + P + g.W, row + p.Wp, 0.0f);
    }
    std::fill(dst + (P + g.H) * p.Wp, dst + p.plane, 0.0f);
  }
  std::fill(xp + g.C * p.plane, xp + p.floats, 0.0f);
}

// The weights regrouped for the micro-kernel: tap t's [O, C] matrix as MR-row strips, strip r
// holding w_t[r MR + m, c] at wt[((t * strips + r) * C + c) * MR + m] (rows past O are 0). Built by
// the caller from w (forward) or from the flipped, transposed w (dX), through weight(o, c, t).
struct TapWeights {
  int64_t O, C, KK, mr, strips;
  std::vector<float> data;
  template <class Weight>
  TapWeights(int64_t O_, int64_t C_, int64_t KK_, int64_t mr_, const Weight& weight)
      : O(O_), C(C_), KK(KK_), mr(mr_), strips((O_ + mr_ - 1) / mr_) {
    data.assign(static_cast<size_t>(KK * strips * C * mr), 0.0f);
    for (int64_t t = 0; t < KK; ++t) {
      for (int64_t o = 0; o < O; ++o) {
        for (int64_t c = 0; c < C; ++c) {
          data[static_cast<size_t>(((t * strips + o / mr) * C + c) * mr + o % mr)] =
              weight(o, c, t);
        }
      }
    }
  }
  const float* strip(int64_t t, int64_t r) const { return data.data() + (t * strips + r) * C * mr; }
};

// One image's buffers: xp (the padded input) and yq (the output over every position q).
struct ImageBuffers {
  std::vector<float> xp, yq;
  ImageBuffers(const Conv2dGeometry& g, const Padded& p)
      : xp(static_cast<size_t>(p.floats)), yq(static_cast<size_t>(g.O * g.HO() * p.Wp)) {}
};

// Columns [n0, n1) of yq (n0 a multiple of NR) from xp. For each NR-wide run of positions and
// each MR rows of O, the micro-kernel adds every tap's [MR, C] x [C, NR] product into one tile of
// yq, which stays in L1 across the taps; the taps' windows of xp overlap, so B comes from L1 too.
void compute_columns(const Conv2dGeometry& g, const Padded& p, const TapWeights& wt,
                     ImageBuffers& buf, int64_t n0, int64_t n1) {
  const packed::MicroKernel& uk = packed::best_microkernel();
  const int64_t N = g.HO() * p.Wp;
  packed::MicroTile tile{};
  tile.k = g.C;
  tile.a_row_stride = 1;
  tile.a_k_stride = uk.mr;
  tile.b_k_stride = p.plane;
  tile.ldc = N;
  tile.alpha = 1.0f;
  for (int64_t n = n0; n < n1; n += uk.nr) {
    tile.n = static_cast<int>(std::min<int64_t>(uk.nr, n1 - n));
    for (int64_t r = 0; r < wt.strips; ++r) {
      tile.m = static_cast<int>(std::min<int64_t>(uk.mr, g.O - r * uk.mr));
      tile.c = buf.yq.data() + r * uk.mr * N + n;
      for (int64_t i = 0; i < g.KH; ++i) {
        for (int64_t j = 0; j < g.KW; ++j) {
          const int64_t t = i * g.KW + j;
          tile.a = wt.strip(t, r);
          tile.b = buf.xp.data() + p.offset(g, i, j) + n;
          tile.beta = t == 0 ? 0.0f : 1.0f;
          uk.tile(tile);
        }
      }
    }
  }
}

// yb [O, HO, WO] = the valid columns of yq, plus the bias.
void write_output(const Conv2dGeometry& g, const Padded& p, const ImageBuffers& buf,
                  const float* bias, float* yb) {
  const int64_t HO = g.HO(), WO = g.WO(), N = HO * p.Wp;
  for (int64_t o = 0; o < g.O; ++o) {
    const float add = bias != nullptr ? bias[o] : 0.0f;
    for (int64_t oh = 0; oh < HO; ++oh) {
      const float* src = buf.yq.data() + o * N + oh * p.Wp;
      float* dst = yb + (o * HO + oh) * WO;
      for (int64_t ow = 0; ow < WO; ++ow) dst[ow] = src[ow] + add;
    }
  }
}

// With at least two images per thread, threads take whole images; otherwise the images run in
// order and threads split each one's columns (NR-wide runs). A tile's sums are the same either
// way, so the result does not depend on the thread count.
void forward_all(const Conv2dGeometry& g, const float* x, const TapWeights& wt, const float* bias,
                 float* y) {
  const Padded p(g);
  const int64_t in_image = g.C * g.H * g.W, out_image = g.O * g.HO() * g.WO();
  const int64_t N = g.HO() * p.Wp, nr = packed::best_microkernel().nr;
  const int threads = in_parallel_region() ? 1 : get_num_threads();
  if (g.B >= 2 * threads) {
    parallel_for(0, g.B, 1, [&](int64_t b0, int64_t b1) {
      ImageBuffers buf(g, p);
      for (int64_t b = b0; b < b1; ++b) {
        pad_image(g, p, x + b * in_image, buf.xp.data());
        compute_columns(g, p, wt, buf, 0, N);
        write_output(g, p, buf, bias, y + b * out_image);
      }
    });
    return;
  }
  ImageBuffers buf(g, p);
  const int64_t runs = (N + nr - 1) / nr;
  for (int64_t b = 0; b < g.B; ++b) {
    pad_image(g, p, x + b * in_image, buf.xp.data());
    parallel_for(0, runs, 1, [&](int64_t r0, int64_t r1) {
      compute_columns(g, p, wt, buf, r0 * nr, std::min(N, r1 * nr));
    });
    write_output(g, p, buf, bias, y + b * out_image);
  }
}

// dW's operands for one image. xt: the padded image channels last, xt[(h Wp + w) C + c] =
// xp[c, h, w], then (KW - 1) D pixels of zeros, so that tap t's window starts at pixel off(t)
// and b(q, c) = xt[(q + off(t)) C + c] is contiguous along c, as the micro-kernel reads B.
void pad_image_channels_last(const Conv2dGeometry& g, const Padded& p, const float* xb, float* xt) {
  const int64_t P = g.padding;
  std::fill(xt, xt + p.channels_last_floats(g), 0.0f);
  // c innermost: each pixel's C floats are written in one run (the reads, one per plane, stay in
  // a few cache lines per plane from one pixel to the next).
  for (int64_t h = 0; h < g.H; ++h) {
    for (int64_t w = 0; w < g.W; ++w) {
      const float* src = xb + h * g.W + w;
      float* dst = xt + ((P + h) * p.Wp + P + w) * g.C;
      for (int64_t c = 0; c < g.C; ++c) dst[c] = src[c * g.H * g.W];
    }
  }
}

// dyt: dy_b [O, HO, WO] as the micro-kernel's A panels, strip r holding a(m, q) = dy[r MR + m,
// q] at dyt[(r N + q) MR + m], zero for junk positions (ow >= WO) and rows past O, so that
// junk positions add nothing to dW.
void pack_output_gradient(const Conv2dGeometry& g, const Padded& p, int64_t mr, const float* dyb,
                          float* dyt) {
  const int64_t HO = g.HO(), WO = g.WO(), N = HO * p.Wp;
  const int64_t strips = (g.O + mr - 1) / mr;
  std::fill(dyt, dyt + strips * N * mr, 0.0f);
  for (int64_t r = 0; r < strips; ++r) {
    const int64_t rows = std::min(mr, g.O - r * mr);
    for (int64_t oh = 0; oh < HO; ++oh) {
      for (int64_t ow = 0; ow < WO; ++ow) {
        const float* src = dyb + (r * mr * HO + oh) * WO + ow;
        float* dst = dyt + (r * N + oh * p.Wp + ow) * mr;
        for (int64_t m = 0; m < rows; ++m) dst[m] = src[m * HO * WO];
      }
    }
  }
}

}  // namespace

void conv2d_forward_shifted(const Conv2dGeometry& g, const float* x, const float* w,
                            const float* bias, float* y) {
  if (!supported(g)) return conv2d_forward_grouped(g, x, w, bias, y);
  const int64_t KK = g.KH * g.KW;
  const TapWeights wt(g.O, g.C, KK, packed::best_microkernel().mr,
                      [&](int64_t o, int64_t c, int64_t t) { return w[(o * g.C + c) * KK + t]; });
  forward_all(g, x, wt, bias, y);
}

void conv2d_backward_input_shifted(const Conv2dGeometry& g, const float* dy, const float* w,
                                   float* dx) {
  if (!supported(g)) return conv2d_backward_input_grouped(g, dy, w, dx);
  // The transposed convolution: input dy [B, O, HO, WO], output dx [B, C, H, W], padding
  // (K - 1) D - P (>= 0 by `supported`), weights wt[t, c, o] = w[o, c, KH - 1 - i, KW - 1 - j].
  Conv2dGeometry t_g = g;
  t_g.C = g.O, t_g.H = g.HO(), t_g.W = g.WO(), t_g.O = g.C;
  t_g.padding = (g.KH - 1) * g.dilation - g.padding;
  const int64_t KK = g.KH * g.KW;
  const TapWeights wt(
      g.C, g.O, KK, packed::best_microkernel().mr,
      [&](int64_t c, int64_t o, int64_t t) { return w[(o * g.C + c) * KK + (KK - 1 - t)]; });
  forward_all(t_g, dy, wt, nullptr, dx);
}

void conv2d_backward_weight_shifted(const Conv2dGeometry& g, const float* x, const float* dy,
                                    float* dw, float* dbias) {
  if (!supported(g) || g.dilation != 1) return conv2d_backward_weight_grouped(g, x, dy, dw, dbias);
  const packed::MicroKernel& uk = packed::best_microkernel();
  const Padded p(g);
  const int64_t HO = g.HO(), WO = g.WO(), N = HO * p.Wp;
  const int64_t strips = (g.O + uk.mr - 1) / uk.mr;
  const int64_t row = g.KW * g.C;         // the columns (j, c) of one kernel row i
  const int64_t size = g.KH * g.O * row;  // one dwt [KH, O, KW C]
  const int64_t kc = std::min<int64_t>(N, 256);
  // Slot s sums images [s B / slots, (s + 1) B / slots) into sums[s], in order.
  const int64_t slots = std::min(kConv2dWeightSlots, g.B);
  std::vector<float> sums(static_cast<size_t>(slots * size));
  conv2d_for_each_task(slots, [&](int64_t s0, int64_t s1) {
    std::vector<float> xt(static_cast<size_t>(p.channels_last_floats(g))),
        dyt(static_cast<size_t>(strips * N * uk.mr));
    packed::MicroTile tile{};
    tile.a_row_stride = 1;
    tile.a_k_stride = uk.mr;
    tile.b_k_stride = g.C;
    tile.ldc = row;
    tile.alpha = 1.0f;
    for (int64_t s = s0; s < s1; ++s) {
      float* sum = sums.data() + s * size;
      const int64_t first_image = s * g.B / slots;
      for (int64_t b = first_image; b < (s + 1) * g.B / slots; ++b) {
        pad_image_channels_last(g, p, x + b * g.C * g.H * g.W, xt.data());
        pack_output_gradient(g, p, uk.mr, dy + b * g.O * HO * WO, dyt.data());
        for (int64_t q0 = 0; q0 < N; q0 += kc) {
          tile.k = std::min(kc, N - q0);
          tile.beta = b == first_image && q0 == 0 ? 0.0f : 1.0f;
          for (int64_t i = 0; i < g.KH; ++i) {
            for (int64_t r = 0; r < strips; ++r) {
              tile.m = static_cast<int>(std::min<int64_t>(uk.mr, g.O - r * uk.mr));
              tile.a = dyt.data() + (r * N + q0) * uk.mr;
              for (int64_t n0 = 0; n0 < row; n0 += uk.nr) {
                tile.n = static_cast<int>(std::min<int64_t>(uk.nr, row - n0));
                tile.b = xt.data() + (q0 + i * p.Wp) * g.C + n0;
                tile.c = sum + (i * g.O + r * uk.mr) * row + n0;
                uk.tile(tile);
              }
            }
          }
        }
      }
    }
  });
  // dw[o, c, i, j] = the slots' dwt[i, o, j C + c], added in slot order (split over o, so
  // the order of each sum does not depend on the thread count).
  parallel_for(0, g.O, std::max<int64_t>(1, (1 << 14) / (g.C * g.KH * g.KW * slots)),
               [&](int64_t o0, int64_t o1) {
                 for (int64_t o = o0; o < o1; ++o) {
                   for (int64_t c = 0; c < g.C; ++c) {
                     for (int64_t i = 0; i < g.KH; ++i) {
                       for (int64_t j = 0; j < g.KW; ++j) {
                         const int64_t e = (i * g.O + o) * row + j * g.C + c;
                         float acc = sums[e];
                         for (int64_t s = 1; s < slots; ++s) acc += sums[s * size + e];
                         dw[((o * g.C + c) * g.KH + i) * g.KW + j] = acc;
                       }
                     }
                   }
                 }
               });
  if (dbias != nullptr) conv2d_bias_grad(g, dy, dbias);
}

}  // namespace ink::kernels
