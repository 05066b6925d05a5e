// Kernel 1 of the conv2d family: the reference direct loops, one output element at a time,
// summed in double. Also the Float64 path of the ops (instantiated for float and double).
//
// Legend as in conv2d.h: B, C, H, W = input; O, KH, KW = weight; HO, WO = output;
// S = stride, P = padding, D = dilation.
#include "tensor/kernels/conv2d.h"
#include "tensor/parallel.h"

namespace ink::kernels {

namespace {

// Input row ih = oh * S - P + i * D (and likewise for columns); -1 when it falls in the padding.
inline int64_t input_index(int64_t out, int64_t tap, int64_t size, const Conv2dGeometry& g) {
  const int64_t in = out * g.stride - g.padding + tap * g.dilation;
  return in >= 0 && in < size ? in : -1;
}

}  // namespace

template <class T>
void conv2d_forward_naive(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y) {
  const int64_t HO = g.HO(), WO = g.WO();
  // Threads split (image, output channel) planes: each output element is one thread's sum.
  parallel_for(0, g.B * g.O, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t plane = p0; plane < p1; ++plane) {
      const int64_t b = plane / g.O, o = plane % g.O;
      for (int64_t oh = 0; oh < HO; ++oh) {
        for (int64_t ow = 0; ow < WO; ++ow) {
          double acc = bias != nullptr ? static_cast<double>(bias[o]) : 0.0;
          for (int64_t c = 0; c < g.C; ++c) {
            for (int64_t i = 0; i < g.KH; ++i) {
              const int64_t ih = input_index(oh, i, g.H, g);
              if (ih < 0) continue;
              for (int64_t j = 0; j < g.KW; ++j) {
                const int64_t iw = input_index(ow, j, g.W, g);
                if (iw < 0) continue;
                acc += static_cast<double>(w[((o * g.C + c) * g.KH + i) * g.KW + j]) *
                       static_cast<double>(x[((b * g.C + c) * g.H + ih) * g.W + iw]);
              }
            }
          }
          y[(plane * HO + oh) * WO + ow] = static_cast<T>(acc);
        }
      }
    }
  });
}

template <class T>
void conv2d_backward_input_naive(const Conv2dGeometry& g, const T* dy, const T* w, T* dx) {
  const int64_t HO = g.HO(), WO = g.WO();
  // Gathers, for each input element, every (o, oh, ow, i, j) whose tap lands on it, so each dx
  // element is one sum owned by one thread.
  parallel_for(0, g.B * g.C, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t plane = p0; plane < p1; ++plane) {
      const int64_t b = plane / g.C, c = plane % g.C;
      for (int64_t ih = 0; ih < g.H; ++ih) {
        for (int64_t iw = 0; iw < g.W; ++iw) {
          double acc = 0.0;
          for (int64_t i = 0; i < g.KH; ++i) {
            // ih = oh * S - P + i * D  =>  oh = (ih + P - i * D) / S when it divides.
            const int64_t th = ih + g.padding - i * g.dilation;
            if (th < 0 || th % g.stride != 0 || th / g.stride >= HO) continue;
            const int64_t oh = th / g.stride;
            for (int64_t j = 0; j < g.KW; ++j) {
              const int64_t tw = iw + g.padding - j * g.dilation;
              if (tw < 0 || tw % g.stride != 0 || tw / g.stride >= WO) continue;
              const int64_t ow = tw / g.stride;
              for (int64_t o = 0; o < g.O; ++o) {
                acc += static_cast<double>(w[((o * g.C + c) * g.KH + i) * g.KW + j]) *
                       static_cast<double>(dy[((b * g.O + o) * HO + oh) * WO + ow]);
              }
            }
          }
          dx[(plane * g.H + ih) * g.W + iw] = static_cast<T>(acc);
        }
      }
    }
  });
}

template <class T>
void conv2d_backward_weight_naive(const Conv2dGeometry& g, const T* x, const T* dy, T* dw,
                                  T* dbias) {
  const int64_t HO = g.HO(), WO = g.WO();
  parallel_for(0, g.O * g.C, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t oc = p0; oc < p1; ++oc) {
      const int64_t o = oc / g.C, c = oc % g.C;
      for (int64_t i = 0; i < g.KH; ++i) {
        for (int64_t j = 0; j < g.KW; ++j) {
          double acc = 0.0;
          for (int64_t b = 0; b < g.B; ++b) {
            for (int64_t oh = 0; oh < HO; ++oh) {
              const int64_t ih = input_index(oh, i, g.H, g);
              if (ih < 0) continue;
              for (int64_t ow = 0; ow < WO; ++ow) {
                const int64_t iw = input_index(ow, j, g.W, g);
                if (iw < 0) continue;
                acc += static_cast<double>(dy[((b * g.O + o) * HO + oh) * WO + ow]) *
                       static_cast<double>(x[((b * g.C + c) * g.H + ih) * g.W + iw]);
              }
            }
          }
          dw[(oc * g.KH + i) * g.KW + j] = static_cast<T>(acc);
        }
      }
    }
  });
  if (dbias == nullptr) return;
  for (int64_t o = 0; o < g.O; ++o) {
    double acc = 0.0;
    for (int64_t b = 0; b < g.B; ++b) {
      const T* plane = dy + (b * g.O + o) * HO * WO;
      for (int64_t p = 0; p < HO * WO; ++p) acc += static_cast<double>(plane[p]);
    }
    dbias[o] = static_cast<T>(acc);
  }
}

template void conv2d_forward_naive<float>(const Conv2dGeometry&, const float*, const float*,
                                          const float*, float*);
template void conv2d_forward_naive<double>(const Conv2dGeometry&, const double*, const double*,
                                           const double*, double*);
template void conv2d_backward_input_naive<float>(const Conv2dGeometry&, const float*, const float*,
                                                 float*);
template void conv2d_backward_input_naive<double>(const Conv2dGeometry&, const double*,
                                                  const double*, double*);
template void conv2d_backward_weight_naive<float>(const Conv2dGeometry&, const float*, const float*,
                                                  float*, float*);
template void conv2d_backward_weight_naive<double>(const Conv2dGeometry&, const double*,
                                                   const double*, double*, double*);

}  // namespace ink::kernels
