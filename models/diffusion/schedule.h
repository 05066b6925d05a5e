// Noise schedules of DDPM-style diffusion (the betas and their cumulative alpha products) and
// the timestep spacing the samplers walk. Independent of any network.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "tensor/tensor.h"

namespace ink::diffusion {

// What this object represents: the discrete forward process of T steps,
//   q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),  abar_t = prod_{s <= t} (1 - beta_s),
// for t = 0 .. T-1. abar_{-1} = 1 stands for the clean image after the last sampling step.
// Everything is kept in double; the tensor helpers cast the coefficients to float.
class NoiseSchedule {
 public:
  // DDPM's linear betas from beta_start to beta_end (Ho et al. 2020: T = 1000, 1e-4 .. 0.02).
  static NoiseSchedule linear(int64_t num_timesteps = 1000, double beta_start = 1e-4,
                              double beta_end = 0.02);
  // The cosine schedule (Nichol & Dhariwal 2021): abar(t) = f(t) / f(0),
  // f(t) = cos^2((t / T + s) / (1 + s) * pi / 2), each beta capped at max_beta.
  static NoiseSchedule cosine(int64_t num_timesteps = 1000, double s = 0.008,
                              double max_beta = 0.999);
  // "linear" or "cosine" with the defaults above; anything else is an ink::Error.
  static NoiseSchedule by_name(std::string_view name, int64_t num_timesteps = 1000);

  // Any betas with 0 < beta < 1 (an ink::Error names the first one that is not).
  explicit NoiseSchedule(std::vector<double> betas);

  int64_t num_timesteps() const { return static_cast<int64_t>(betas_.size()); }
  const std::vector<double>& betas() const { return betas_; }
  const std::vector<double>& alphas_cumprod() const { return alphas_cumprod_; }

  // abar_t for -1 <= t < T (abar_{-1} = 1); other t is an ink::Error.
  double alpha_bar(int64_t t) const;
  // sqrt((1 - abar_t) / abar_t): the noise level of x_t / sqrt(abar_t) (k-diffusion's sigma);
  // 0 at t = -1.
  double sigma(int64_t t) const;

  // x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, with one timestep per batch row:
  // x0 and eps [B, ...] Float32, timesteps [B] Int64 in [0, T). Differentiable in x0 and eps.
  Tensor add_noise(const Tensor& x0, const Tensor& eps, const Tensor& timesteps) const;

 private:
  std::vector<double> betas_;           // (T)
  std::vector<double> alphas_cumprod_;  // (T)
};

// eps from a v-prediction (Salimans & Ho 2022): x_t = a x0 + s eps and v = a eps - s x0, with
// a = sqrt(abar_t), s = sqrt(1 - abar_t), give eps = a v + s x_t. v and x_t [B, ...] Float32
// of one shape, timesteps [B] Int64; the training target v is add_noise(eps, -x0, t).
Tensor eps_from_v(const NoiseSchedule& schedule, const Tensor& v, const Tensor& x_t,
                  const Tensor& timesteps);

// "Trailing" spacing (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are
// Flawed"): t_i = round(T - i * T / steps) - 1 for i = 0 .. steps-1, so the first step is
// always at t = T - 1. For T = 1000 and 50 steps: 999, 979, ..., 19. An ink::Error unless
// 1 <= steps <= T.
std::vector<int64_t> trailing_timesteps(int64_t num_timesteps, int64_t steps);

}  // namespace ink::diffusion
