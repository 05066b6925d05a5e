// The fused batch_norm and mse_loss ops: each forward kernel, with its backward kernel and the
// record_op call that joins them, right below.
//
// B = batch, C = channels. Inputs are row-major [B, C], so one row holds every channel of one
// sample and the inner loops run over contiguous channels (they vectorise). Per-channel sums are
// accumulated in double, in a fixed order, so results do not depend on the thread count.
#include "nn/functional.h"

#include <cmath>
#include <vector>

#include "tensor/autograd.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace ink::nn::functional {

namespace {

// ---- batch_norm kernels (training mode) ----

// Batch statistics: mean[c] and biased variance var[c] of x [B, C] over b (two passes, so the
// variance does not suffer from cancellation).
void batch_norm_stats(const float* x, int64_t B, int64_t C, std::vector<double>& mean,
                      std::vector<double>& var) {
  mean.assign(C, 0.0);
  var.assign(C, 0.0);
  for (int64_t b = 0; b < B; ++b) {
    const float* row = x + b * C;
    for (int64_t c = 0; c < C; ++c) mean[c] += row[c];
  }
  for (int64_t c = 0; c < C; ++c) mean[c] /= static_cast<double>(B);
  for (int64_t b = 0; b < B; ++b) {
    const float* row = x + b * C;
    for (int64_t c = 0; c < C; ++c) {
      const double d = row[c] - mean[c];
      var[c] += d * d;
    }
  }
  for (int64_t c = 0; c < C; ++c) var[c] /= static_cast<double>(B);
}

// y = x * scale + shift per channel, with scale = gamma * inv_std and shift = beta - mean * scale
// (the same arrangement as PyTorch's CPU kernel). gamma/beta may be null (1 and 0).
void batch_norm_apply(const float* x, const float* mean, const float* inv_std, const float* gamma,
                      const float* beta, int64_t B, int64_t C, float* y) {
  std::vector<float> scale(C), shift(C);
  for (int64_t c = 0; c < C; ++c) {
    scale[c] = inv_std[c] * (gamma ? gamma[c] : 1.0f);
    shift[c] = (beta ? beta[c] : 0.0f) - mean[c] * scale[c];
  }
  for (int64_t b = 0; b < B; ++b) {
    const float* in = x + b * C;
    float* out = y + b * C;
    for (int64_t c = 0; c < C; ++c) out[c] = in[c] * scale[c] + shift[c];
  }
}

// With xhat = (x - mean) * inv_std and dxhat = dy * gamma:
//   dbeta  = sum_b dy,   dgamma = sum_b dy * xhat
//   dx = (1/B) * inv_std * (B * dxhat - sum_b dxhat - xhat * sum_b dxhat * xhat)
//      = gamma * inv_std * (dy - dbeta / B - xhat * dgamma / B)
// dx, dgamma, dbeta may each be null when not needed.
void batch_norm_backward(const float* dy, const float* x, const float* mean, const float* inv_std,
                         const float* gamma, int64_t B, int64_t C, float* dx, float* dgamma,
                         float* dbeta) {
  std::vector<double> sum_dy(C, 0.0), sum_dy_xhat(C, 0.0);
  for (int64_t b = 0; b < B; ++b) {
    const float* g = dy + b * C;
    const float* in = x + b * C;
    for (int64_t c = 0; c < C; ++c) {
      const float xhat = (in[c] - mean[c]) * inv_std[c];
      sum_dy[c] += g[c];
      sum_dy_xhat[c] += static_cast<double>(g[c]) * xhat;
    }
  }
  if (dbeta) {
    for (int64_t c = 0; c < C; ++c) dbeta[c] = static_cast<float>(sum_dy[c]);
  }
  if (dgamma) {
    for (int64_t c = 0; c < C; ++c) dgamma[c] = static_cast<float>(sum_dy_xhat[c]);
  }
  if (!dx) return;
  std::vector<float> k(C), mean_dy(C), mean_dy_xhat(C);
  for (int64_t c = 0; c < C; ++c) {
    k[c] = (gamma ? gamma[c] : 1.0f) * inv_std[c];
    mean_dy[c] = static_cast<float>(sum_dy[c] / static_cast<double>(B));
    mean_dy_xhat[c] = static_cast<float>(sum_dy_xhat[c] / static_cast<double>(B));
  }
  for (int64_t b = 0; b < B; ++b) {
    const float* g = dy + b * C;
    const float* in = x + b * C;
    float* out = dx + b * C;
    for (int64_t c = 0; c < C; ++c) {
      const float xhat = (in[c] - mean[c]) * inv_std[c];
      out[c] = k[c] * (g[c] - mean_dy[c] - xhat * mean_dy_xhat[c]);
    }
  }
}

void check_channel_vector(const Tensor& t, const char* what, int64_t C, const Shape& input) {
  INK_CHECK(t.dtype() == DType::Float32 && t.shape() == Shape{C},
            "batch_norm: {} must be a Float32 tensor of shape [{}] for input {}, got {} {}", what,
            C, shape_str(input), dtype_name(t.dtype()), shape_str(t.shape()));
}

Tensor batch_norm_training(const Tensor& input, const Tensor& running_mean,
                           const Tensor& running_var, const Tensor& weight, const Tensor& bias,
                           double momentum, double eps) {
  const int64_t B = input.size(0), C = input.size(1);
  std::vector<double> mean64, var64;
  batch_norm_stats(input.data(), B, C, mean64, var64);

  if (running_mean.defined()) {
    Tensor mean_buffer = running_mean, var_buffer = running_var;  // handles on the same data
    float* rm = mean_buffer.data();
    float* rv = var_buffer.data();
    const double unbiased = static_cast<double>(B) / static_cast<double>(B - 1);
    for (int64_t c = 0; c < C; ++c) {
      rm[c] = static_cast<float>((1.0 - momentum) * rm[c] + momentum * mean64[c]);
      rv[c] = static_cast<float>((1.0 - momentum) * rv[c] + momentum * var64[c] * unbiased);
    }
  }

  std::vector<float> mean(C), inv_std(C);
  for (int64_t c = 0; c < C; ++c) {
    mean[c] = static_cast<float>(mean64[c]);
    inv_std[c] = static_cast<float>(1.0 / std::sqrt(var64[c] + eps));
  }
  Tensor output = empty(input.shape());
  batch_norm_apply(input.data(), mean.data(), inv_std.data(),
                   weight.defined() ? weight.data() : nullptr,
                   bias.defined() ? bias.data() : nullptr, B, C, output.data());

  std::vector<Tensor> inputs{input};
  if (weight.defined()) inputs.push_back(weight);
  if (bias.defined()) inputs.push_back(bias);
  return record_op(output, "batch_norm", inputs,
                   [x = SavedTensor(input), gamma = SavedTensor(weight), affine = bias.defined(),
                    mean = std::move(mean), inv_std = std::move(inv_std), B,
                    C](const Tensor& grad_output, const GradMask& needs) {
                     const bool need_dx = needs[0];
                     const bool need_dgamma = gamma.defined() && needs[1];
                     const bool need_dbeta = affine && needs[2];
                     const Tensor& vx = x.get();
                     Tensor dx = need_dx ? empty(vx.shape()) : Tensor();
                     Tensor dgamma = need_dgamma ? empty({C}) : Tensor();
                     Tensor dbeta = need_dbeta ? empty({C}) : Tensor();
                     batch_norm_backward(grad_output.data(), vx.data(), mean.data(), inv_std.data(),
                                         gamma.defined() ? gamma.get().data() : nullptr, B, C,
                                         need_dx ? dx.data() : nullptr,
                                         need_dgamma ? dgamma.data() : nullptr,
                                         need_dbeta ? dbeta.data() : nullptr);
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
  INK_CHECK(input.defined() && input.dtype() == DType::Float32 && input.dim() == 2,
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
    check_channel_vector(weight, "weight", C, input.shape());
    check_channel_vector(bias, "bias", C, input.shape());
  }
  if (running_mean.defined()) {
    check_channel_vector(running_mean, "running_mean", C, input.shape());
    check_channel_vector(running_var, "running_var", C, input.shape());
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

// ---- mse_loss ----

Tensor mse_loss(const Tensor& input, const Tensor& target) {
  INK_CHECK(input.defined() && target.defined(), "mse_loss: input and target must be defined");
  INK_CHECK(input.shape() == target.shape(),
            "mse_loss: input shape {} and target shape {} must be equal", shape_str(input.shape()),
            shape_str(target.shape()));
  INK_CHECK(input.dtype() == DType::Float32 && target.dtype() == DType::Float32,
            "mse_loss: input and target must be Float32, got {} and {}", dtype_name(input.dtype()),
            dtype_name(target.dtype()));
  const int64_t n = input.numel();
  const float* a = input.data();
  const float* b = target.data();
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    total += d * d;
  }
  Tensor output = scalar(static_cast<float>(total / static_cast<double>(n)));

  // d/dinput mean((a - b)^2) = 2 (a - b) / n; d/dtarget is its negative.
  return record_op(output, "mse_loss", {input, target},
                   [a_saved = SavedTensor(input), b_saved = SavedTensor(target), n](
                       const Tensor& grad_output, const GradMask& needs) {
                     const float k = 2.0f * grad_output.item() / static_cast<float>(n);
                     const Tensor& va = a_saved.get();
                     const Tensor& vb = b_saved.get();
                     Tensor da = needs[0] ? empty(va.shape()) : Tensor();
                     Tensor db = needs[1] ? empty(vb.shape()) : Tensor();
                     const float* pa = va.data();
                     const float* pb = vb.data();
                     float* out_a = needs[0] ? da.data() : nullptr;
                     float* out_b = needs[1] ? db.data() : nullptr;
                     for (int64_t i = 0; i < n; ++i) {
                       const float g = k * (pa[i] - pb[i]);
                       if (out_a) out_a[i] = g;
                       if (out_b) out_b[i] = -g;
                     }
                     return std::vector<Tensor>{da, db};
                   });
}

}  // namespace ink::nn::functional
