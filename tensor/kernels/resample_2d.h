// Resampling kernels for the U-Net: nearest-neighbour upsampling by an integer factor and
// average pooling over non-overlapping square windows, with their backward passes.
//
// Legend: N = planes (batch * channels), H x W = input height and width, s = scale, k = window.
//   upsample_nearest2d: x [N, H, W] -> y [N, H s, W s],  y[n, oh, ow] = x[n, oh / s, ow / s]
//     backward: dx[n, ih, iw] = sum of dy over the s x s block it was copied to
//   avg_pool2d (stride k, no padding, floor): x [N, H, W] -> y [N, H / k, W / k], the window mean
//     backward: dx[n, ih, iw] = dy[n, ih / k, iw / k] / k^2, or 0 for rows/columns past the last
//     whole window
//
// Nearest x2 upsampling followed by a 3x3 convolution with padding 1, computed at the input's
// resolution (ink::upsample_conv2d). Each output pixel (2h + py, 2w + px) sees a 3x3 window of
// the upsampled image, which covers only 2x2 input pixels: rows h + d for d in {py - 1, py}
// (tap i lands on d = floor((py + i - 1) / 2)), and the same for columns. So each of the 4
// phases ph = 2 py + px is a 2x2 convolution whose taps sum the 3x3 taps that land on the same
// input pixel, and all four are one convolution with 4 O outputs, a 2x2 kernel and padding 1
// (output [H + 1, W + 1]; phase (py, px) reads it shifted by (py, px)). 16 instead of 36
// multiply-adds per output pixel and input channel.
//   upsample_conv_weights: w [O, C, 3, 3] -> w4 [4 O, C, 2, 2],
//     w4[ph O + o, c, a, b] = sum of w[o, c, i, j] over i with tap(py, i) = a, j with tap(px, j) =
//     b, tap(p, i) = floor((p + i - 1) / 2) + 1 - p   (p = 0: i = 0 -> 0, i = 1, 2 -> 1;
//                                                   p = 1: i = 0, 1 -> 0, i = 2 -> 1)
//     backward: dw[o, c, i, j] = sum over phases of dw4[ph O + o, c, tap(py, i), tap(px, j)]
//   upsample_conv_interleave: y4 [B, 4 O, H + 1, W + 1] -> y [B, O, 2 H, 2 W],
//     y[b, o, 2 h + py, 2 w + px] = y4[b, ph O + o, h + py, w + px]
//     backward: dy4 from dy by the same map, 0 where no output pixel reads y4
// Outputs are overwritten. Threads split planes, so results do not depend on the thread count.
// Templated on the element type (float and double are instantiated).
#pragma once

#include <cstdint>

namespace ink::kernels {

template <class T>
void upsample_nearest2d_forward(int64_t N, int64_t H, int64_t W, int64_t s, const T* x, T* y);
template <class T>
void upsample_nearest2d_backward(int64_t N, int64_t H, int64_t W, int64_t s, const T* dy, T* dx);

template <class T>
void avg_pool2d_forward(int64_t N, int64_t H, int64_t W, int64_t k, const T* x, T* y);
template <class T>
void avg_pool2d_backward(int64_t N, int64_t H, int64_t W, int64_t k, const T* dy, T* dx);

template <class T>
void upsample_conv_weights(int64_t O, int64_t C, const T* w, T* w4);
template <class T>
void upsample_conv_weights_backward(int64_t O, int64_t C, const T* dw4, T* dw);
template <class T>
void upsample_conv_interleave(int64_t B, int64_t O, int64_t H, int64_t W, const T* y4, T* y);
template <class T>
void upsample_conv_interleave_backward(int64_t B, int64_t O, int64_t H, int64_t W, const T* dy,
                                       T* dy4);

}  // namespace ink::kernels
