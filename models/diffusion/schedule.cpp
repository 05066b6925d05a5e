// Noise schedules and timestep spacing (see schedule.h).
#include "models/diffusion/schedule.h"

#include <cmath>
#include <numbers>

#include "tensor/error.h"
#include "tensor/ops.h"

namespace ink::diffusion {

NoiseSchedule NoiseSchedule::linear(int64_t num_timesteps, double beta_start, double beta_end) {
  INK_CHECK(num_timesteps >= 1, "NoiseSchedule::linear: num_timesteps {} must be >= 1",
            num_timesteps);
  std::vector<double> betas(static_cast<size_t>(num_timesteps));
  // As torch.linspace: start + i * (end - start) / (T - 1).
  const double step = num_timesteps > 1 ? (beta_end - beta_start) / (num_timesteps - 1) : 0.0;
  for (int64_t i = 0; i < num_timesteps; ++i) betas[i] = beta_start + i * step;
  return NoiseSchedule(std::move(betas));
}

NoiseSchedule NoiseSchedule::cosine(int64_t num_timesteps, double s, double max_beta) {
  INK_CHECK(num_timesteps >= 1, "NoiseSchedule::cosine: num_timesteps {} must be >= 1",
            num_timesteps);
  const double T = static_cast<double>(num_timesteps);
  auto f = [&](double t) {
    const double c = std::cos((t / T + s) / (1.0 + s) * std::numbers::pi / 2.0);
    return c * c;
  };
  std::vector<double> betas(static_cast<size_t>(num_timesteps));
  for (int64_t i = 0; i < num_timesteps; ++i) {
    betas[i] = std::min(1.0 - f(i + 1.0) / f(static_cast<double>(i)), max_beta);
  }
  return NoiseSchedule(std::move(betas));
}

NoiseSchedule NoiseSchedule::by_name(std::string_view name, int64_t num_timesteps) {
  if (name == "linear") return linear(num_timesteps);
  if (name == "cosine") return cosine(num_timesteps);
  INK_FAIL("noise schedule: unknown name \"{}\" (expected \"linear\" or \"cosine\")", name);
}

NoiseSchedule::NoiseSchedule(std::vector<double> betas) : betas_(std::move(betas)) {
  INK_CHECK(!betas_.empty(), "NoiseSchedule: no betas");
  alphas_cumprod_.resize(betas_.size());
  double product = 1.0;
  for (size_t i = 0; i < betas_.size(); ++i) {
    INK_CHECK(betas_[i] > 0.0 && betas_[i] < 1.0, "NoiseSchedule: beta[{}] = {} is outside (0, 1)",
              i, betas_[i]);
    product *= 1.0 - betas_[i];
    alphas_cumprod_[i] = product;
  }
}

double NoiseSchedule::alpha_bar(int64_t t) const {
  INK_CHECK(t >= -1 && t < num_timesteps(), "NoiseSchedule: timestep {} is outside [-1, {})", t,
            num_timesteps());
  return t < 0 ? 1.0 : alphas_cumprod_[static_cast<size_t>(t)];
}

double NoiseSchedule::sigma(int64_t t) const {
  const double ab = alpha_bar(t);
  return std::sqrt((1.0 - ab) / ab);
}

Tensor NoiseSchedule::add_noise(const Tensor& x0, const Tensor& eps,
                                const Tensor& timesteps) const {
  INK_CHECK(x0.shape() == eps.shape(), "add_noise: x0 {} and eps {} differ in shape",
            shape_str(x0.shape()), shape_str(eps.shape()));
  INK_CHECK(x0.dim() >= 1 && timesteps.dtype() == DType::Int64 && timesteps.dim() == 1 &&
                timesteps.size(0) == x0.size(0),
            "add_noise: timesteps {} ({}) must be Int64 [B] for x0 {}",
            shape_str(timesteps.shape()), dtype_name(timesteps.dtype()), shape_str(x0.shape()));
  const int64_t batch = x0.size(0);
  std::vector<float> signal(static_cast<size_t>(batch)), noise(static_cast<size_t>(batch));
  const int64_t* t = timesteps.data_i64();
  for (int64_t b = 0; b < batch; ++b) {
    INK_CHECK(t[b] >= 0 && t[b] < num_timesteps(),
              "add_noise: timesteps[{}] = {} is outside [0, {})", b, t[b], num_timesteps());
    const double ab = alphas_cumprod_[static_cast<size_t>(t[b])];
    signal[b] = static_cast<float>(std::sqrt(ab));
    noise[b] = static_cast<float>(std::sqrt(1.0 - ab));
  }
  Shape coefficient_shape(static_cast<size_t>(x0.dim()), 1);  // [B, 1, ...]: broadcast per row
  coefficient_shape[0] = batch;
  return add(mul(x0, from_vector(signal, coefficient_shape)),
             mul(eps, from_vector(noise, coefficient_shape)));
}

Tensor eps_from_v(const NoiseSchedule& schedule, const Tensor& v, const Tensor& x_t,
                  const Tensor& timesteps) {
  return schedule.add_noise(v, x_t, timesteps);  // a v + s x_t: add_noise's own formula
}

std::vector<int64_t> trailing_timesteps(int64_t num_timesteps, int64_t steps) {
  INK_CHECK(steps >= 1 && steps <= num_timesteps,
            "trailing_timesteps: steps {} must be in [1, {}] (the number of timesteps)", steps,
            num_timesteps);
  std::vector<int64_t> out(static_cast<size_t>(steps));
  for (int64_t i = 0; i < steps; ++i) {
    // (i T) / steps exactly as the twin computes it; std::nearbyint rounds half to even, as
    // NumPy's and Python's round do (T = 1000, 16 steps: 937.5 -> 938).
    const double offset = static_cast<double>(i * num_timesteps) / static_cast<double>(steps);
    out[i] = static_cast<int64_t>(std::nearbyint(num_timesteps - offset)) - 1;
  }
  return out;
}

}  // namespace ink::diffusion
