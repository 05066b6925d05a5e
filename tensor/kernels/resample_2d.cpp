// Nearest-neighbour upsampling and average pooling kernels (see resample_2d.h for the legend).
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
