// The 2-D convolution kernel family (NCHW, as PyTorch): forward, input gradient and weight
// gradient, each a plain function over contiguous buffers.
//
// Legend: B = batch, C = input channels, H x W = input height and width, O = output channels,
//   KH x KW = kernel height and width, HO x WO = output height and width,
//   S = stride, P = zero padding (both sides), D = dilation, CKK = C * KH * KW.
//   x  [B, C, H, W]     w  [O, C, KH, KW]     bias [O]     y  [B, O, HO, WO]
//   HO = (H + 2P - D (KH - 1) - 1) / S + 1, and WO likewise.
//   y[b, o, oh, ow] = bias[o] + sum_{c, i, j} w[o, c, i, j] * x[b, c, oh S - P + i D, ow S - P + j
//   D] (x outside [0, H) x [0, W) reads as 0).
// Backward, given dy [B, O, HO, WO]:
//   dx [B, C, H, W]      = the transpose of the map above applied to dy (overwritten)
//   dw [O, C, KH, KW]    = sum_{b, oh, ow} dy[b, o, oh, ow] * x[b, c, ...] (overwritten)
//   dbias [O]            = sum_{b, oh, ow} dy[b, o, oh, ow] (overwritten; skipped when null)
//
// Every kernel gives results independent of ink::get_num_threads() bit for bit: threads split
// images or output channels, and sums over images are combined in an order fixed by the shape.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tensor/parallel.h"

namespace ink::kernels {

// The sizes of one convolution. All kernels require B, C, H, W, O, KH, KW, S, D >= 1, P >= 0
// and HO, WO >= 1 (the ops check this before calling).
struct Conv2dGeometry {
  int64_t B = 1, C = 1, H = 1, W = 1;  // input
  int64_t O = 1, KH = 1, KW = 1;       // weight
  int64_t stride = 1, padding = 0, dilation = 1;

  int64_t HO() const { return (H + 2 * padding - dilation * (KH - 1) - 1) / stride + 1; }
  int64_t WO() const { return (W + 2 * padding - dilation * (KW - 1) - 1) / stride + 1; }
  int64_t CKK() const { return C * KH * KW; }
  // Multiply-adds counted as 2 flops; the same count for forward, dX and dW.
  double flops() const {
    return 2.0 * static_cast<double>(B) * O * HO() * WO() * static_cast<double>(CKK());
  }
};

// 1. The reference: direct loops, accumulating in double.
// Templated so that Float64 ops (gradcheck) use it; instantiated for float and double.
template <class T>
void conv2d_forward_naive(const Conv2dGeometry& g, const T* x, const T* w, const T* bias, T* y);
template <class T>
void conv2d_backward_input_naive(const Conv2dGeometry& g, const T* dy, const T* w, T* dx);
template <class T>
void conv2d_backward_weight_naive(const Conv2dGeometry& g, const T* x, const T* dy, T* dw,
                                  T* dbias);

// 2. im2col + sgemm, one image at a time (conv2d_im2col.cpp): the textbook lowering.
//   forward  y_b [O, HO WO]  = w [O, CKK] * col_b [CKK, HO WO]
//   dX       col_b           = w^T * dy_b, then col2im adds col_b into dx_b
//   dW       dw [O, CKK]    += dy_b [O, HO WO] * col_b^T
// Threads only inside each GEMM.
void conv2d_forward_im2col(const Conv2dGeometry& g, const float* x, const float* w,
                           const float* bias, float* y);
void conv2d_backward_input_im2col(const Conv2dGeometry& g, const float* dy, const float* w,
                                  float* dx);
void conv2d_backward_weight_im2col(const Conv2dGeometry& g, const float* x, const float* dy,
                                   float* dw, float* dbias);

// 3. The same GEMMs over groups of images side by side (conv2d_grouped.cpp): col [CKK, G HO WO]
// so small images still give wide GEMMs, and threads take whole groups (no hand-off inside a
// GEMM). dW sums groups into a fixed number of partial slots, then adds the slots in order.
void conv2d_forward_grouped(const Conv2dGeometry& g, const float* x, const float* w,
                            const float* bias, float* y);
void conv2d_backward_input_grouped(const Conv2dGeometry& g, const float* dy, const float* w,
                                   float* dx);
void conv2d_backward_weight_grouped(const Conv2dGeometry& g, const float* x, const float* dy,
                                    float* dw, float* dbias);

// 4. Stride-1 convolutions as one GEMM per kernel tap over the zero-padded image read in
// place, shifted by the tap (conv2d_shifted.cpp): no im2col, no col2im. Other geometries go to
// kernel 3.
void conv2d_forward_shifted(const Conv2dGeometry& g, const float* x, const float* w,
                            const float* bias, float* y);
void conv2d_backward_input_shifted(const Conv2dGeometry& g, const float* dy, const float* w,
                                   float* dx);
void conv2d_backward_weight_shifted(const Conv2dGeometry& g, const float* x, const float* dy,
                                    float* dw, float* dbias);

using Conv2dForwardFn = void (*)(const Conv2dGeometry& g, const float* x, const float* w,
                                 const float* bias, float* y);
using Conv2dBackwardInputFn = void (*)(const Conv2dGeometry& g, const float* dy, const float* w,
                                       float* dx);
using Conv2dBackwardWeightFn = void (*)(const Conv2dGeometry& g, const float* x, const float* dy,
                                        float* dw, float* dbias);

// One member of the family: its three passes.
struct Conv2dKernel {
  std::string name;
  Conv2dForwardFn forward;
  Conv2dBackwardInputFn backward_input;
  Conv2dBackwardWeightFn backward_weight;
};

// Every kernel by name, simplest first ("naive" first), for tests and benchmarks.
const std::vector<Conv2dKernel>& conv2d_kernels();
// Looks a kernel up by name; throws ink::Error listing the known names if it does not exist.
const Conv2dKernel& conv2d_kernel(const std::string& name);
// The default kernel, used by ink::conv2d for Float32.
const Conv2dKernel& conv2d_default_kernel();

// Shared by the GEMM kernels (conv2d_im2col.cpp).
// col [CKK, ld] (its first HO*WO columns) from image xb [C, H, W]; padding reads as 0.
void conv2d_im2col(const Conv2dGeometry& g, const float* xb, float* col, int64_t ld);
// dxb [C, H, W] += the columns of col [CKK, ld] put back where im2col took them from.
void conv2d_col2im(const Conv2dGeometry& g, const float* col, int64_t ld, float* dxb);
// dbias[o] = sum over images and pixels of dy[b, o, :, :] (threads split o).
void conv2d_bias_grad(const Conv2dGeometry& g, const float* dy, float* dbias);

// Shared by kernels 3 and 4: runs fn(t0, t1) over task ranges covering [0, tasks) (groups of
// images, images, or dW slots): across threads when there are at least two tasks per thread,
// else in order on this thread (the GEMMs inside then use the threads).
template <class Fn>
void conv2d_for_each_task(int64_t tasks, const Fn& fn) {
  const int threads = in_parallel_region() ? 1 : get_num_threads();
  const int64_t grain = tasks >= 2 * threads ? 1 : tasks;
  parallel_for(0, tasks, grain, [&](int64_t t0, int64_t t1) { fn(t0, t1); });
}
// The weight gradient's partial sums over runs of images (kernels 3 and 4), added in order at
// the end; more slots than threads so that the threads stay balanced.
constexpr int64_t kConv2dWeightSlots = 8;

}  // namespace ink::kernels
