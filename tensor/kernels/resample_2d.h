// Resampling kernels for the U-Net: nearest-neighbour upsampling by an integer factor and
// average pooling over non-overlapping square windows, with their backward passes.
//
// Legend: N = planes (batch * channels), H x W = input height and width, s = scale, k = window.
//   upsample_nearest2d: x [N, H, W] -> y [N, H s, W s],  y[n, oh, ow] = x[n, oh / s, ow / s]
//     backward: dx[n, ih, iw] = sum of dy over the s x s block it was copied to
//   avg_pool2d (stride k, no padding, floor): x [N, H, W] -> y [N, H / k, W / k], the window mean
//     backward: dx[n, ih, iw] = dy[n, ih / k, iw / k] / k^2, or 0 for rows/columns past the last
//     whole window
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

}  // namespace ink::kernels
