// Convolution and resampling ops for image models: conv2d, upsample_nearest2d, upsample_conv2d,
// avg_pool2d.
// The arithmetic is in tensor/kernels/conv2d*.cpp and resample_2d.cpp; this file checks the
// arguments, picks the kernel for the dtype and records the backward.
//
// Legend: B = batch, C = input channels, H x W = input size, O = output channels,
//   KH x KW = kernel size, HO x WO = output size (see tensor/kernels/conv2d.h).
#include <algorithm>
#include <string>
#include <type_traits>
#include <vector>

#include "tensor/kernels/conv2d.h"
#include "tensor/kernels/resample_2d.h"
#include "tensor/ops/ops_internal.h"

namespace ink {

using namespace detail;

namespace {

void check_image(const Tensor& x, const char* op, const char* what) {
  check_float(x, op);
  INK_CHECK(x.dim() == 4, "{}: {} must be 4-D [B, C, H, W], got {}", op, what,
            shape_str(x.shape()));
}

// An optional bias [O] for weight [O, ...], of x's dtype.
void check_bias(const Tensor& x, const Tensor& weight, const Tensor& bias, const char* op) {
  if (!bias.defined()) return;
  check_float(bias, op);
  check_same_dtype(x, bias, op);
  const int64_t O = weight.size(0);
  INK_CHECK(bias.dim() == 1 && bias.size(0) == O,
            "{}: bias {} does not match weight {} (expected [{}])", op, shape_str(bias.shape()),
            shape_str(weight.shape()), O);
}

// ---- the kernels by dtype: Float32 runs the fast family, Float64 the naive reference ----

template <class T>
const T* maybe(const Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}
template <class T>
T* maybe(Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

template <class T>
void conv_forward(const kernels::Conv2dGeometry& g, const Tensor& x, const Tensor& w,
                  const Tensor& bias, Tensor& y) {
  if constexpr (std::is_same_v<T, float>) {
    kernels::conv2d_default_kernel().forward(g, x.data(), w.data(), maybe<float>(bias), y.data());
  } else {
    kernels::conv2d_forward_naive<T>(g, x.data_ptr<T>(), w.data_ptr<T>(), maybe<T>(bias),
                                     y.data_ptr<T>());
  }
}

template <class T>
void conv_backward_input(const kernels::Conv2dGeometry& g, const Tensor& dy, const Tensor& w,
                         Tensor& dx) {
  if constexpr (std::is_same_v<T, float>) {
    kernels::conv2d_default_kernel().backward_input(g, dy.data(), w.data(), dx.data());
  } else {
    kernels::conv2d_backward_input_naive<T>(g, dy.data_ptr<T>(), w.data_ptr<T>(), dx.data_ptr<T>());
  }
}

// dw and/or dbias (either may be undefined: not needed).
template <class T>
void conv_backward_weight(const kernels::Conv2dGeometry& g, const Tensor& x, const Tensor& dy,
                          Tensor& dw, Tensor& dbias) {
  if (!dw.defined()) {  // the bias alone: dbias[o] = sum of dy[:, o, :, :]
    if constexpr (std::is_same_v<T, float>) {
      kernels::conv2d_bias_grad(g, dy.data(), dbias.data());
    } else {
      const int64_t HW = g.HO() * g.WO();
      const T* pdy = dy.data_ptr<T>();
      T* db = dbias.data_ptr<T>();
      for (int64_t o = 0; o < g.O; ++o) {
        T acc = 0;
        for (int64_t b = 0; b < g.B; ++b) {
          for (int64_t p = 0; p < HW; ++p) acc += pdy[(b * g.O + o) * HW + p];
        }
        db[o] = acc;
      }
    }
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    kernels::conv2d_default_kernel().backward_weight(g, x.data(), dy.data(), dw.data(),
                                                     maybe<float>(dbias));
  } else {
    kernels::conv2d_backward_weight_naive<T>(g, x.data_ptr<T>(), dy.data_ptr<T>(), dw.data_ptr<T>(),
                                             maybe<T>(dbias));
  }
}

}  // namespace

// ---- conv2d ----
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride,
              int64_t padding, int64_t dilation, int64_t groups) {
  check_image(x, "conv2d", "input");
  check_float(weight, "conv2d");
  check_same_dtype(x, weight, "conv2d");
  INK_CHECK(weight.dim() == 4, "conv2d: weight must be 4-D [O, C/groups, kH, kW], got {}",
            shape_str(weight.shape()));
  INK_CHECK(stride >= 1, "conv2d: stride must be >= 1, got {}", stride);
  INK_CHECK(padding >= 0, "conv2d: padding must be >= 0, got {}", padding);
  INK_CHECK(dilation >= 1, "conv2d: dilation must be >= 1, got {}", dilation);
  INK_CHECK(groups >= 1, "conv2d: groups must be >= 1, got {}", groups);
  const int64_t C = x.size(1), O = weight.size(0);
  INK_CHECK(C % groups == 0, "conv2d: input {} has {} channels, not divisible by groups = {}",
            shape_str(x.shape()), C, groups);
  INK_CHECK(O % groups == 0,
            "conv2d: weight {} has {} output channels, not divisible by groups = {}",
            shape_str(weight.shape()), O, groups);
  INK_CHECK(weight.size(1) * groups == C, "conv2d: input {} has {} channels, weight {} expects {}",
            shape_str(x.shape()), C, shape_str(weight.shape()), weight.size(1) * groups);
  INK_CHECK(groups == 1, "conv2d: groups = {} is not supported yet (only groups = 1)", groups);
  check_bias(x, weight, bias, "conv2d");
  kernels::Conv2dGeometry g;
  g.B = x.size(0), g.C = C, g.H = x.size(2), g.W = x.size(3);
  g.O = O, g.KH = weight.size(2), g.KW = weight.size(3);
  g.stride = stride, g.padding = padding, g.dilation = dilation;
  INK_CHECK(g.HO() >= 1 && g.WO() >= 1,
            "conv2d: input {} is too small for kernel {}x{} with padding {} and dilation {} "
            "(the output would be {}x{})",
            shape_str(x.shape()), g.KH, g.KW, padding, dilation, g.HO(), g.WO());
  const DType dtype = x.dtype();
  Tensor y = empty({g.B, O, g.HO(), g.WO()}, dtype);
  dispatch_floating(dtype, "conv2d",
                    [&](auto t) { conv_forward<decltype(t)>(g, x, weight, bias, y); });

  // dx = conv_transpose(dy, w) (col2im of w^T dy);  dw = dy * im2col(x)^T;  db = sum of dy
  std::vector<Tensor> inputs = {x, weight};
  if (bias.defined()) inputs.push_back(bias);
  // dx needs only the weight and dw only the input, so each is saved only for the other.
  return record_op(
      y, "conv2d", inputs,
      [g, dtype, has_bias = bias.defined(), x_shape = x.shape(), w_shape = weight.shape(),
       x = weight.requires_grad() ? SavedTensor(x) : SavedTensor(),
       w = x.requires_grad() ? SavedTensor(weight) : SavedTensor()](const Tensor& dy,
                                                                    const GradMask& needs) {
        std::vector<Tensor> grads(has_bias ? 3 : 2);
        dispatch_floating(dtype, "conv2d", [&](auto t) {
          using T = decltype(t);
          if (needs[0]) {
            grads[0] = empty(x_shape, dtype);
            conv_backward_input<T>(g, dy, w.get(), grads[0]);
          }
          if (needs[1]) grads[1] = empty(w_shape, dtype);
          if (needs[2]) grads[2] = empty({g.O}, dtype);
          if (needs[1] || needs[2]) {
            const Tensor saved_x = needs[1] ? x.get() : Tensor();
            Tensor no_bias;
            conv_backward_weight<T>(g, saved_x, dy, grads[1], has_bias ? grads[2] : no_bias);
          }
        });
        return grads;
      });
}

// ---- upsample_nearest2d ----
namespace {

Tensor upsample_nearest2d_values(const Tensor& x, int64_t scale) {
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  Tensor y = empty({B, C, H * scale, W * scale}, x.dtype());
  dispatch_floating(x.dtype(), "upsample_nearest2d", [&](auto t) {
    using T = decltype(t);
    kernels::upsample_nearest2d_forward<T>(B * C, H, W, scale, x.data_ptr<T>(), y.data_ptr<T>());
  });
  return y;
}

}  // namespace

Tensor upsample_nearest2d(const Tensor& x, int64_t scale) {
  check_image(x, "upsample_nearest2d", "input");
  INK_CHECK(scale >= 1, "upsample_nearest2d: scale must be >= 1, got {}", scale);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const DType dtype = x.dtype();
  // dx[h, w] = sum of dy over the scale x scale block copied from x[h, w]
  Tensor y = record_op(upsample_nearest2d_values(x, scale), "upsample_nearest2d", {x},
                       [B, C, H, W, scale, dtype](const Tensor& dy, const GradMask&) {
                         Tensor dx = empty({B, C, H, W}, dtype);
                         dispatch_floating(dtype, "upsample_nearest2d", [&](auto t) {
                           using T = decltype(t);
                           kernels::upsample_nearest2d_backward<T>(
                               B * C, H, W, scale, dy.data_ptr<T>(), dx.data_ptr<T>());
                         });
                         return std::vector<Tensor>{dx};
                       });
  // The convolution after it saves the scale^2 times larger output; keep the input instead.
  make_recomputable(
      y, [xs = SavedTensor(x), scale]() { return upsample_nearest2d_values(xs.get(), scale); });
  return y;
}

// ---- upsample_conv2d ----
// The phases of tensor/kernels/resample_2d.h: one 2x2 convolution with 4 O outputs and padding 1
// on x, interleaved. Saves x (not the 4x larger upsampled image) for dW.
Tensor upsample_conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_image(x, "upsample_conv2d", "input");
  check_float(weight, "upsample_conv2d");
  check_same_dtype(x, weight, "upsample_conv2d");
  INK_CHECK(weight.dim() == 4 && weight.size(2) == 3 && weight.size(3) == 3,
            "upsample_conv2d: weight must be [O, C, 3, 3], got {}", shape_str(weight.shape()));
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), O = weight.size(0);
  INK_CHECK(weight.size(1) == C, "upsample_conv2d: input {} has {} channels, weight {} expects {}",
            shape_str(x.shape()), C, shape_str(weight.shape()), weight.size(1));
  check_bias(x, weight, bias, "upsample_conv2d");
  kernels::Conv2dGeometry g;  // the phases' convolution
  g.B = B, g.C = C, g.H = H, g.W = W, g.O = 4 * O, g.KH = g.KW = 2, g.padding = 1;
  const DType dtype = x.dtype();
  Tensor w4 = empty({4 * O, C, 2, 2}, dtype), b4, y4 = empty({B, 4 * O, H + 1, W + 1}, dtype);
  Tensor y = empty({B, O, 2 * H, 2 * W}, dtype);
  dispatch_floating(dtype, "upsample_conv2d", [&](auto t) {
    using T = decltype(t);
    kernels::upsample_conv_weights<T>(O, C, weight.data_ptr<T>(), w4.data_ptr<T>());
    if (bias.defined()) {
      b4 = empty({4 * O}, dtype);
      for (int64_t ph = 0; ph < 4; ++ph) {
        std::copy_n(bias.data_ptr<T>(), O, b4.data_ptr<T>() + ph * O);
      }
    }
    conv_forward<T>(g, x, w4, b4, y4);
    kernels::upsample_conv_interleave<T>(B, O, H, W, y4.data_ptr<T>(), y.data_ptr<T>());
  });
  std::vector<Tensor> inputs = {x, weight};
  if (bias.defined()) inputs.push_back(bias);
  return record_op(
      y, "upsample_conv2d", inputs,
      [g, dtype, O, has_bias = bias.defined(), x_shape = x.shape(), w_shape = weight.shape(),
       x = weight.requires_grad() ? SavedTensor(x) : SavedTensor(),
       w4 = x.requires_grad() ? SavedTensor(w4) : SavedTensor()](const Tensor& dy,
                                                                 const GradMask& needs) {
        std::vector<Tensor> grads(has_bias ? 3 : 2);
        dispatch_floating(dtype, "upsample_conv2d", [&](auto t) {
          using T = decltype(t);
          Tensor dy4 = empty({g.B, g.O, g.H + 1, g.W + 1}, dtype);
          kernels::upsample_conv_interleave_backward<T>(g.B, O, g.H, g.W, dy.data_ptr<T>(),
                                                        dy4.data_ptr<T>());
          if (needs[0]) {
            grads[0] = empty(x_shape, dtype);
            conv_backward_input<T>(g, dy4, w4.get(), grads[0]);
          }
          if (!needs[1] && !needs[2]) return;
          Tensor dw4 = needs[1] ? empty({g.O, g.C, 2, 2}, dtype) : Tensor();
          Tensor db4 = has_bias && needs[2] ? empty({g.O}, dtype) : Tensor();
          conv_backward_weight<T>(g, needs[1] ? x.get() : Tensor(), dy4, dw4, db4);
          if (needs[1]) {
            grads[1] = empty(w_shape, dtype);
            kernels::upsample_conv_weights_backward<T>(O, g.C, dw4.data_ptr<T>(),
                                                       grads[1].data_ptr<T>());
          }
          if (db4.defined()) {  // db[o] = the four phases' sums, in phase order
            grads[2] = empty({O}, dtype);
            const T* src = db4.data_ptr<T>();
            T* dst = grads[2].data_ptr<T>();
            for (int64_t o = 0; o < O; ++o) {
              dst[o] = ((src[o] + src[O + o]) + src[2 * O + o]) + src[3 * O + o];
            }
          }
        });
        return grads;
      });
}

// ---- avg_pool2d ----
Tensor avg_pool2d(const Tensor& x, int64_t kernel) {
  check_image(x, "avg_pool2d", "input");
  INK_CHECK(kernel >= 1, "avg_pool2d: kernel must be >= 1, got {}", kernel);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  INK_CHECK(H >= kernel && W >= kernel, "avg_pool2d: input {} is smaller than the {}x{} window",
            shape_str(x.shape()), kernel, kernel);
  const DType dtype = x.dtype();
  Tensor y = empty({B, C, H / kernel, W / kernel}, dtype);
  dispatch_floating(dtype, "avg_pool2d", [&](auto t) {
    using T = decltype(t);
    kernels::avg_pool2d_forward<T>(B * C, H, W, kernel, x.data_ptr<T>(), y.data_ptr<T>());
  });
  // dx[h, w] = dy[h / k, w / k] / k^2 inside a whole window, 0 in the rows/columns left over
  return record_op(
      y, "avg_pool2d", {x}, [B, C, H, W, kernel, dtype](const Tensor& dy, const GradMask&) {
        Tensor dx = empty({B, C, H, W}, dtype);
        dispatch_floating(dtype, "avg_pool2d", [&](auto t) {
          using T = decltype(t);
          kernels::avg_pool2d_backward<T>(B * C, H, W, kernel, dy.data_ptr<T>(), dx.data_ptr<T>());
        });
        return std::vector<Tensor>{dx};
      });
}

}  // namespace ink
