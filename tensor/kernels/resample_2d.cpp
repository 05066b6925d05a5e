// Nearest-neighbour upsampling, the phases of an upsampling convolution, and average pooling
// kernels (see resample_2d.h for the legend).
#include "tensor/kernels/resample_2d.h"

#include <algorithm>

#include "tensor/parallel.h"

namespace ink::kernels {

namespace {

// Planes per thread task: about 16 K elements each, so small tensors stay on one thread.
int64_t plane_grain(int64_t plane_size) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, plane_size));
}

}  // namespace

template <class T>
void upsample_nearest2d_forward(int64_t N, int64_t H, int64_t W, int64_t s, const T* x, T* y) {
  const int64_t HO = H * s, WO = W * s;
  parallel_for(0, N, plane_grain(HO * WO), [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const T* src = x + n * H * W;
      T* dst = y + n * HO * WO;
      for (int64_t oh = 0; oh < HO; ++oh) {
        const T* row = src + (oh / s) * W;
        T* out = dst + oh * WO;
        for (int64_t iw = 0; iw < W; ++iw) std::fill_n(out + iw * s, s, row[iw]);
      }
    }
  });
}

template <class T>
void upsample_nearest2d_backward(int64_t N, int64_t H, int64_t W, int64_t s, const T* dy, T* dx) {
  const int64_t HO = H * s, WO = W * s;
  parallel_for(0, N, plane_grain(HO * WO), [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const T* src = dy + n * HO * WO;
      T* dst = dx + n * H * W;
      for (int64_t ih = 0; ih < H; ++ih) {
        for (int64_t iw = 0; iw < W; ++iw) {
          T acc = 0;
          for (int64_t a = 0; a < s; ++a) {
            const T* row = src + (ih * s + a) * WO + iw * s;
            for (int64_t b = 0; b < s; ++b) acc += row[b];
          }
          dst[ih * W + iw] = acc;
        }
      }
    }
  });
}

template <class T>
void avg_pool2d_forward(int64_t N, int64_t H, int64_t W, int64_t k, const T* x, T* y) {
  const int64_t HO = H / k, WO = W / k;
  const T scale = T(1) / static_cast<T>(k * k);
  parallel_for(0, N, plane_grain(H * W), [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const T* src = x + n * H * W;
      T* dst = y + n * HO * WO;
      for (int64_t oh = 0; oh < HO; ++oh) {
        for (int64_t ow = 0; ow < WO; ++ow) {
          T acc = 0;
          for (int64_t a = 0; a < k; ++a) {
            const T* row = src + (oh * k + a) * W + ow * k;
            for (int64_t b = 0; b < k; ++b) acc += row[b];
          }
          dst[oh * WO + ow] = acc * scale;
        }
      }
    }
  });
}

template <class T>
void avg_pool2d_backward(int64_t N, int64_t H, int64_t W, int64_t k, const T* dy, T* dx) {
  const int64_t HO = H / k, WO = W / k;
  const T scale = T(1) / static_cast<T>(k * k);
  parallel_for(0, N, plane_grain(H * W), [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const T* src = dy + n * HO * WO;
      T* dst = dx + n * H * W;
      for (int64_t ih = 0; ih < H; ++ih) {
        for (int64_t iw = 0; iw < W; ++iw) {
          const bool inside = ih / k < HO && iw / k < WO;
          dst[ih * W + iw] = inside ? src[(ih / k) * WO + iw / k] * scale : T(0);
        }
      }
    }
  });
}

namespace {

// Which of the 2 taps of phase p the 3x3 tap i lands on (resample_2d.h).
constexpr int64_t phase_tap(int64_t p, int64_t i) {
  return (p + i + 1) / 2 - p;
}

// Calls fn(k, k4) for every 3x3 tap w[k] of w [O, C, 3, 3] and each phase tap w4[k4] of
// w4 [4 O, C, 2, 2] that it adds into.
template <class Fn>
void for_each_phase_tap(int64_t O, int64_t C, const Fn& fn) {
  for (int64_t ph = 0; ph < 4; ++ph) {
    const int64_t py = ph / 2, px = ph % 2;
    for (int64_t o = 0; o < O; ++o) {
      for (int64_t c = 0; c < C; ++c) {
        const int64_t k = (o * C + c) * 9, k4 = ((ph * O + o) * C + c) * 4;
        for (int64_t i = 0; i < 3; ++i) {
          for (int64_t j = 0; j < 3; ++j)
            fn(k + i * 3 + j, k4 + phase_tap(py, i) * 2 + phase_tap(px, j));
        }
      }
    }
  }
}

// Calls fn(row, even, odd) for every output row oh of every plane n = b O + o of
// y [B, O, 2H, 2W]: row is where that row starts in y, even and odd where the y4 [B, 4 O, H + 1,
// W + 1] rows start that its even and odd columns come from (phases (py, 0) and (py, 1), read
// from column 0 and 1): y[row + 2 w] = y4[even + w], y[row + 2 w + 1] = y4[odd + w]. Threads split
// the planes.
template <class Fn>
void for_each_interleaved_row(int64_t B, int64_t O, int64_t H, int64_t W, const Fn& fn) {
  const int64_t H1 = H + 1, W1 = W + 1;
  parallel_for(0, B * O, plane_grain(4 * H * W), [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t b = n / O, o = n % O;
      for (int64_t oh = 0; oh < 2 * H; ++oh) {
        const int64_t py = oh % 2, h = oh / 2;
        const int64_t even = ((b * 4 + 2 * py) * O + o) * H1 * W1 + (h + py) * W1;
        const int64_t odd = ((b * 4 + 2 * py + 1) * O + o) * H1 * W1 + (h + py) * W1 + 1;
        fn((n * 2 * H + oh) * 2 * W, even, odd);
      }
    }
  });
}

}  // namespace

template <class T>
void upsample_conv_weights(int64_t O, int64_t C, const T* w, T* w4) {
  std::fill(w4, w4 + 16 * O * C, T(0));
  for_each_phase_tap(O, C, [&](int64_t k, int64_t k4) { w4[k4] += w[k]; });
}

template <class T>
void upsample_conv_weights_backward(int64_t O, int64_t C, const T* dw4, T* dw) {
  std::fill(dw, dw + 9 * O * C, T(0));
  for_each_phase_tap(O, C, [&](int64_t k, int64_t k4) { dw[k] += dw4[k4]; });
}

template <class T>
void upsample_conv_interleave(int64_t B, int64_t O, int64_t H, int64_t W, const T* y4, T* y) {
  for_each_interleaved_row(B, O, H, W, [&](int64_t row, int64_t even, int64_t odd) {
    for (int64_t w = 0; w < W; ++w) {
      y[row + 2 * w] = y4[even + w];
      y[row + 2 * w + 1] = y4[odd + w];
    }
  });
}

template <class T>
void upsample_conv_interleave_backward(int64_t B, int64_t O, int64_t H, int64_t W, const T* dy,
                                       T* dy4) {
  // The rows and columns of y4 that no output reads get 0.
  const int64_t plane = (H + 1) * (W + 1);
  parallel_for(0, B * 4 * O, plane_grain(plane), [&](int64_t p0, int64_t p1) {
    std::fill(dy4 + p0 * plane, dy4 + p1 * plane, T(0));
  });
  for_each_interleaved_row(B, O, H, W, [&](int64_t row, int64_t even, int64_t odd) {
    for (int64_t w = 0; w < W; ++w) {
      dy4[even + w] = dy[row + 2 * w];
      dy4[odd + w] = dy[row + 2 * w + 1];
    }
  });
}

#define INK_UPSAMPLE_CONV(T)                                                                       \
  template void upsample_conv_weights<T>(int64_t, int64_t, const T*, T*);                          \
  template void upsample_conv_weights_backward<T>(int64_t, int64_t, const T*, T*);                 \
  template void upsample_conv_interleave<T>(int64_t, int64_t, int64_t, int64_t, const T*, T*);     \
  template void upsample_conv_interleave_backward<T>(int64_t, int64_t, int64_t, int64_t, const T*, \
                                                     T*);
INK_UPSAMPLE_CONV(float)
INK_UPSAMPLE_CONV(double)
#undef INK_UPSAMPLE_CONV

template void upsample_nearest2d_forward<float>(int64_t, int64_t, int64_t, int64_t, const float*,
                                                float*);
template void upsample_nearest2d_forward<double>(int64_t, int64_t, int64_t, int64_t, const double*,
                                                 double*);
template void upsample_nearest2d_backward<float>(int64_t, int64_t, int64_t, int64_t, const float*,
                                                 float*);
template void upsample_nearest2d_backward<double>(int64_t, int64_t, int64_t, int64_t, const double*,
                                                  double*);
template void avg_pool2d_forward<float>(int64_t, int64_t, int64_t, int64_t, const float*, float*);
template void avg_pool2d_forward<double>(int64_t, int64_t, int64_t, int64_t, const double*,
                                         double*);
template void avg_pool2d_backward<float>(int64_t, int64_t, int64_t, int64_t, const float*, float*);
template void avg_pool2d_backward<double>(int64_t, int64_t, int64_t, int64_t, const double*,
                                          double*);

}  // namespace ink::kernels
