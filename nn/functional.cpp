// nn::functional forwards to the differentiable ops in tensor/ops/ (batch_norm.cpp and
// mse_loss.cpp), whose kernels live in tensor/kernels/; this layer only keeps the PyTorch names.
#include "nn/functional.h"

#include "tensor/ops.h"

namespace ink::nn::functional {

Tensor batch_norm(const Tensor& input, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight, const Tensor& bias, bool training, double momentum,
                  double eps) {
  return ink::batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps);
}

Tensor mse_loss(const Tensor& input, const Tensor& target) {
  return ink::mse_loss(input, target);
}

}  // namespace ink::nn::functional
