// Mean squared error kernels; see mse_loss_kernels.h for the legend.
#include "tensor/kernels/mse_loss_kernels.h"

namespace ink::kernels {

template <class T>
double mse_loss_forward(const T* input, const T* target, int64_t n) {
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(input[i]) - static_cast<double>(target[i]);
    total += d * d;
  }
  return total / static_cast<double>(n);
}

template <class T>
void mse_loss_backward(const T* input, const T* target, int64_t n, T scale, T* dinput, T* dtarget) {
  for (int64_t i = 0; i < n; ++i) {
    const T g = scale * (input[i] - target[i]);
    if (dinput) dinput[i] = g;
    if (dtarget) dtarget[i] = -g;
  }
}

template double mse_loss_forward<float>(const float*, const float*, int64_t);
template double mse_loss_forward<double>(const double*, const double*, int64_t);
template void mse_loss_backward<float>(const float*, const float*, int64_t, float, float*, float*);
template void mse_loss_backward<double>(const double*, const double*, int64_t, double, double*,
                                        double*);

}  // namespace ink::kernels
