// Diffusion samplers, each one plain function over a denoiser callable (as in k-diffusion's
// sampling.py), independent of any network class: DDPM (ancestral), DDIM (eta), Euler and
// DPM-Solver++(2M), plus classifier-free guidance as a wrapper around the denoiser.
//
// Legend: B = batch, x_t [B, ...] (images: [B, C, H, W]), T = the schedule's timesteps.
// Every sampler starts from x_T ~ N(0, I) in x_t space, walks the given timesteps (strictly
// decreasing, in [0, T); see trailing_timesteps) and returns the clean image. At each step the
// denoised estimate is x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), clipped to [-1, 1]
// (unless SampleOptions::clip_x0 is false), and the sampler continues from the clipped estimate.
// Samplers record no autograd graph. All randomness comes from the Generator passed in.
#pragma once

#include <any>
#include <cstdint>
#include <functional>
#include <limits>
#include <string_view>
#include <vector>

#include "models/diffusion/schedule.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace ink::diffusion {

// The network as a sampler sees it: predicted eps [B, ...] for x_t [B, ...] at integer
// timesteps [B] (Int64), given an opaque conditioning handle (for a text model, say, a struct
// holding the context and key mask; the sampler only passes it along).
using Denoiser =
    std::function<Tensor(const Tensor& x_t, const Tensor& timesteps, const std::any& cond)>;

// What a step callback sees, once per denoiser call.
struct StepInfo {
  int64_t step = 0;       // 0 .. num_steps-1
  int64_t num_steps = 0;  // the number of timesteps walked
  int64_t timestep = 0;   // t of this step
  Tensor x_t;             // [B, ...] the current sample at t (a detached handle: do not modify)
  Tensor x0_hat;          // [B, ...] the (clipped) denoised estimate at t
};
// For previews, films and progress; return false to stop sampling after this step.
using StepCallback = std::function<bool(const StepInfo&)>;

struct SampleOptions {
  double eta = 0.0;       // DDIM only: 0 = deterministic, 1 = the DDPM posterior variance
  bool clip_x0 = true;    // clip x0_hat to [-1, 1]
  StepCallback callback;  // optional
};

struct SampleResult {
  Tensor x0;               // [B, ...] the sample, or the last x0_hat when cancelled
  int64_t steps_done = 0;  // denoiser calls made
  bool cancelled = false;  // the callback asked to stop
};

// DDPM ancestral sampling: x_{t'} ~ q(x_{t'} | x_t, x0_hat), the Gaussian posterior between
// consecutive timesteps t > t' with abar ratio a = abar_t / abar_t' and b = 1 - a:
//   mean = sqrt(abar_t') b / (1 - abar_t) x0_hat + sqrt(a) (1 - abar_t') / (1 - abar_t) x_t,
//   variance = (1 - abar_t') / (1 - abar_t) b  (0 at the last step, which returns x0_hat).
SampleResult sample_ddpm(const Denoiser& denoiser, const Tensor& x_T, const std::any& cond,
                         const NoiseSchedule& schedule, const std::vector<int64_t>& timesteps,
                         Generator& generator, const SampleOptions& options = {});

// DDIM (Song et al. 2021): with eps_hat re-derived from x0_hat,
//   x_{t'} = sqrt(abar_t') x0_hat + sqrt(1 - abar_t' - s^2) eps_hat + s z,
//   s^2 = eta^2 (1 - abar_t') / (1 - abar_t) (1 - abar_t / abar_t').
// eta = 0 is deterministic (the generator is not used); eta must be in [0, 1].
SampleResult sample_ddim(const Denoiser& denoiser, const Tensor& x_T, const std::any& cond,
                         const NoiseSchedule& schedule, const std::vector<int64_t>& timesteps,
                         Generator& generator, const SampleOptions& options = {});

// Euler on the probability-flow ODE in k-diffusion's variables: y = x_t / sqrt(abar_t),
// sigma_t = sqrt((1 - abar_t) / abar_t), sigma after the last step = 0:
//   y' = x0_hat + (sigma' / sigma) (y - x0_hat). Deterministic.
SampleResult sample_euler(const Denoiser& denoiser, const Tensor& x_T, const std::any& cond,
                          const NoiseSchedule& schedule, const std::vector<int64_t>& timesteps,
                          Generator& generator, const SampleOptions& options = {});

// DPM-Solver++(2M) (Lu et al. 2022) in the same variables, lambda = -log sigma, h = lambda' -
// lambda: y' = (sigma' / sigma) y - expm1(-h) D, with D = x0_hat at the first step and
// D = (1 + 1/(2r)) x0_hat - 1/(2r) x0_hat_previous after it (r = h_previous / h); the last step
// (sigma' = 0) returns x0_hat. Deterministic.
SampleResult sample_dpmpp_2m(const Denoiser& denoiser, const Tensor& x_T, const std::any& cond,
                             const NoiseSchedule& schedule, const std::vector<int64_t>& timesteps,
                             Generator& generator, const SampleOptions& options = {});

enum class Sampler { DDPM, DDIM, Euler, DPMpp2M };
// "ddpm", "ddim", "euler", "dpmpp2m"; anything else is an ink::Error listing these.
Sampler parse_sampler(std::string_view name);
const char* sampler_name(Sampler sampler);
// Calls the sampler `sampler` names.
SampleResult sample(Sampler sampler, const Denoiser& denoiser, const Tensor& x_T,
                    const std::any& cond, const NoiseSchedule& schedule,
                    const std::vector<int64_t>& timesteps, Generator& generator,
                    const SampleOptions& options = {});

// Where guidance applies, as a range of noise levels sigma_t = sqrt((1 - abar_t) / abar_t)
// (k-diffusion's sigma, so the same interval means the same noise on any schedule). Guidance at
// high noise is what collapses the samples of a prompt onto a few modes, and at low noise it does
// little, so Kynkaenniemi et al. 2024 ("Applying guidance in a limited interval improves sample
// and distribution quality") guide only in sigma in (0.28, 5.42]; outside it eps = eps_c.
struct GuidanceInterval {
  double sigma_low = 0.0;  // guide where sigma_low < sigma_t <= sigma_high
  double sigma_high = std::numeric_limits<double>::infinity();
  bool contains(double sigma) const { return sigma > sigma_low && sigma <= sigma_high; }
  // 0 <= sigma_low < sigma_high, sigma_low finite (sigma_high may be infinite).
  bool valid() const;
  // Throws ink::Error unless valid().
  void validate() const;
};

// Classifier-free guidance around `model`: the returned denoiser, called with x_t [B, ...] and
// timesteps [B], calls `model` once on the doubled batch cat(x_t, x_t), cat(t, t) with the
// same `cond` handle, which must therefore describe 2B rows: rows 0..B-1 conditional, rows
// B..2B-1 unconditional (the empty or negative prompt). It returns
//   eps = eps_u + scale (eps_c - eps_u)
// for the rows whose timestep lies in `interval` (by schedule's sigma) and eps = eps_c for the
// others. When no row of a call is in the interval and `conditional` is given, that call is
// conditional(x_t, timesteps, cond) alone (half the work): it gets the same 2B-row handle and
// must return eps for the conditional rows 0..B-1. The samplers do not know about guidance.
Denoiser classifier_free_guidance(Denoiser model, double scale);
Denoiser classifier_free_guidance(Denoiser model, double scale, const NoiseSchedule& schedule,
                                  GuidanceInterval interval, Denoiser conditional = nullptr);

}  // namespace ink::diffusion
