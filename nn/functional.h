// Stateless differentiable functions of the nn layer: batch normalisation and the MSE loss, each
// a single fused op. They forward to ink::batch_norm and ink::mse_loss (tensor/ops/, with their
// kernels in tensor/kernels/), so the kernels can be tested and benchmarked on their own.
#pragma once

#include "tensor/tensor.h"

namespace ink::nn::functional {

// Batch normalisation of input [B, C] over the batch, as torch.nn.functional.batch_norm.
//   training: normalises with the batch mean and the biased batch variance. When running_mean /
//     running_var are given they are updated in place with
//       running = (1 - momentum) * running + momentum * batch_statistic,
//     using the unbiased variance (var * B / (B - 1)) for running_var, as PyTorch does.
//     Needs B > 1. The backward is the full batch-statistics gradient.
//   eval: normalises with running_mean / running_var (both required); B may be 1.
// weight (gamma) and bias (beta) are [C], or both undefined for no affine transform.
Tensor batch_norm(const Tensor& input, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight, const Tensor& bias, bool training, double momentum = 0.1,
                  double eps = 1e-5);

// mean((input - target)^2) over all elements, as torch.nn.functional.mse_loss with reduction
// "mean". The shapes must be equal (no broadcasting). Returns a scalar (shape []).
Tensor mse_loss(const Tensor& input, const Tensor& target);

}  // namespace ink::nn::functional

namespace ink::nn {
namespace F = functional;
}  // namespace ink::nn
