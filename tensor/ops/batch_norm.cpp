// batch_norm: one fused op in training mode (kernels in tensor/kernels/batch_norm_kernels.*),
// and a per-channel affine map built from differentiable ops in eval mode.
// Legend: B = batch, C = channels; input [B, C].
#include <cmath>

#include "tensor/kernels/batch_norm_kernels.h"
#include "tensor/ops/ops_internal.h"

namespace ink {

using namespace detail;

namespace {

void check_channel_vector(const Tensor& t, const char* what, int64_t C, const Tensor& input,
                          DType dtype) {
  INK_CHECK(t.dtype() == dtype && t.shape() == Shape{C},
            "batch_norm: {} must be a {} tensor of shape [{}] for input {}, got {} {}", what,
            dtype_name(dtype), C, shape_str(input.shape()), dtype_name(t.dtype()),
            shape_str(t.shape()));
}

Tensor batch_norm_training(const Tensor& input, const Tensor& running_mean,
                           const Tensor& running_var, const Tensor& weight, const Tensor& bias,
                           double momentum, double eps) {
  const int64_t B = input.size(0), C = input.size(1);
  std::vector<double> mean64(C), var64(C);
  dispatch_floating(input.dtype(), "batch_norm", [&](auto zero) {
    using T = decltype(zero);
    kernels::batch_norm_stats(input.data_ptr<T>(), B, C, mean64.data(), var64.data());
  });

  if (running_mean.defined()) {  // running = (1 - momentum) * running + momentum * batch value
    Tensor mean_buffer = running_mean, var_buffer = running_var;  // handles on the same data
    float* rm = mean_buffer.data();
    float* rv = var_buffer.data();
    const double unbiased = static_cast<double>(B) / static_cast<double>(B - 1);
    for (int64_t c = 0; c < C; ++c) {
      rm[c] = static_cast<float>((1.0 - momentum) * rm[c] + momentum * mean64[c]);
      rv[c] = static_cast<float>((1.0 - momentum) * rv[c] + momentum * var64[c] * unbiased);
    }
  }

  Tensor output = empty(input.shape(), input.dtype());
  // mean [C] and inv_std [C], saved for the backward in the input's dtype.
  Tensor mean = empty({C}, input.dtype()), inv_std = empty({C}, input.dtype());
  dispatch_floating(input.dtype(), "batch_norm", [&](auto zero) {
    using T = decltype(zero);
    T* pm = mean.data_ptr<T>();
    T* ps = inv_std.data_ptr<T>();
    for (int64_t c = 0; c < C; ++c) {
      pm[c] = static_cast<T>(mean64[c]);
      ps[c] = static_cast<T>(1.0 / std::sqrt(var64[c] + eps));
    }
    kernels::batch_norm_apply(
        input.data_ptr<T>(), std::as_const(mean).data_ptr<T>(),
        std::as_const(inv_std).data_ptr<T>(), weight.defined() ? weight.data_ptr<T>() : nullptr,
        bias.defined() ? bias.data_ptr<T>() : nullptr, B, C, output.data_ptr<T>());
  });

  std::vector<Tensor> inputs{input};
  if (weight.defined()) inputs.push_back(weight);
  if (bias.defined()) inputs.push_back(bias);
  // dx = gamma * inv_std * (dy - mean_b(dy) - xhat * mean_b(dy * xhat)); dgamma = sum_b dy xhat;
  // dbeta = sum_b dy (the full batch-statistics gradient, see batch_norm_kernels.h)
  return record_op(
      output, "batch_norm", inputs,
      [x = SavedTensor(input), gamma = SavedTensor(weight), affine = bias.defined(),
       mean = SavedTensor(mean), inv_std = SavedTensor(inv_std), B,
       C](const Tensor& grad_output, const GradMask& needs) {
        const bool need_dx = needs[0];
        const bool need_dgamma = gamma.defined() && needs[1];
        const bool need_dbeta = affine && needs[2];
        const Tensor& vx = x.get();
        const DType dtype = vx.dtype();
        Tensor dx = need_dx ? empty(vx.shape(), dtype) : Tensor();
        Tensor dgamma = need_dgamma ? empty({C}, dtype) : Tensor();
        Tensor dbeta = need_dbeta ? empty({C}, dtype) : Tensor();
        dispatch_floating(dtype, "batch_norm_backward", [&](auto zero) {
          using T = decltype(zero);
          kernels::batch_norm_backward(
              grad_output.data_ptr<T>(), vx.data_ptr<T>(), mean.get().data_ptr<T>(),
              inv_std.get().data_ptr<T>(), gamma.defined() ? gamma.get().data_ptr<T>() : nullptr, B,
              C, need_dx ? dx.data_ptr<T>() : nullptr, need_dgamma ? dgamma.data_ptr<T>() : nullptr,
              need_dbeta ? dbeta.data_ptr<T>() : nullptr);
        });
        std::vector<Tensor> grads{dx};
        if (gamma.defined()) grads.push_back(dgamma);
        if (affine) grads.push_back(dbeta);
        return grads;
      });
}

}  // namespace

Tensor batch_norm(const Tensor& input, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight, const Tensor& bias, bool training, double momentum,
                  double eps) {
  INK_CHECK(input.defined() && is_floating(input.dtype()) && input.dim() == 2,
            "batch_norm: expected a Float32 input of shape [B, C], got {}",
            input.defined()
                ? fmt::format("{} {}", dtype_name(input.dtype()), shape_str(input.shape()))
                : std::string("an undefined tensor"));
  const int64_t C = input.size(1);
  INK_CHECK(weight.defined() == bias.defined(),
            "batch_norm: weight and bias must both be given or both be undefined");
  INK_CHECK(running_mean.defined() == running_var.defined(),
            "batch_norm: running_mean and running_var must both be given or both be undefined");
  if (weight.defined()) {
    check_channel_vector(weight, "weight", C, input, input.dtype());
    check_channel_vector(bias, "bias", C, input, input.dtype());
  }
  if (running_mean.defined()) {  // the running statistics are Float32 buffers
    check_channel_vector(running_mean, "running_mean", C, input, DType::Float32);
    check_channel_vector(running_var, "running_var", C, input, DType::Float32);
  }

  if (training) {
    INK_CHECK(input.size(0) > 1,
              "batch_norm: expected more than 1 value per channel when training, got input of "
              "shape {}",
              shape_str(input.shape()));
    return batch_norm_training(input, running_mean, running_var, weight, bias, momentum, eps);
  }

  // Eval: a fixed per-channel affine map, y = x * scale + shift, built from differentiable ops so
  // that gradients still reach input, weight and bias.
  INK_CHECK(running_mean.defined(), "batch_norm: eval mode needs running_mean and running_var");
  Tensor inv_std = rdiv(1.0f, sqrt(add(running_var.detach(), static_cast<float>(eps))));
  Tensor scale = weight.defined() ? mul(weight, inv_std) : inv_std;
  Tensor shift = neg(mul(running_mean.detach(), scale));
  if (bias.defined()) shift = add(bias, shift);
  return add(mul(input, scale), shift);
}

}  // namespace ink
