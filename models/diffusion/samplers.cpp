// The samplers and the classifier-free guidance wrapper (see samplers.h for the maths).
#include "models/diffusion/samplers.h"

#include <cmath>
#include <cstring>
#include <utility>

#include "tensor/autograd.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace ink::diffusion {
namespace {

// a x + b y, with the coefficients computed in double and applied in float.
Tensor combine(double a, const Tensor& x, double b, const Tensor& y) {
  return add(mul(x, static_cast<float>(a)), mul(y, static_cast<float>(b)));
}

// Rows [begin, begin + count) of x along dim 0, as a new tensor.
Tensor rows(const Tensor& x, int64_t begin, int64_t count) {
  Shape shape = x.shape();
  const int64_t row = x.numel() / shape[0];
  shape[0] = count;
  Tensor out = empty(shape);
  std::memcpy(out.data(), x.data() + begin * row, static_cast<size_t>(count * row) * sizeof(float));
  return out;
}

// One walk over the timesteps: checks the inputs once, then calls the denoiser and the
// callback at each step.
class Walk {
 public:
  Walk(const char* op, const Denoiser& denoiser, const Tensor& x_T, const std::any& cond,
       const NoiseSchedule& schedule, const std::vector<int64_t>& timesteps,
       const SampleOptions& options)
      : op_(op),
        denoiser_(denoiser),
        cond_(cond),
        schedule_(schedule),
        timesteps_(timesteps),
        options_(options) {
    INK_CHECK(static_cast<bool>(denoiser), "{}: the denoiser is empty", op);
    INK_CHECK(x_T.defined() && x_T.dtype() == DType::Float32 && x_T.dim() >= 1 && x_T.size(0) >= 1,
              "{}: x_T must be a Float32 tensor [B, ...] with B >= 1, got {}", op,
              x_T.defined() ? shape_str(x_T.shape()) : "an undefined tensor");
    INK_CHECK(!timesteps.empty(), "{}: no timesteps to walk", op);
    for (size_t i = 0; i < timesteps.size(); ++i) {
      INK_CHECK(timesteps[i] >= 0 && timesteps[i] < schedule.num_timesteps(),
                "{}: timesteps[{}] = {} is outside [0, {})", op, i, timesteps[i],
                schedule.num_timesteps());
      INK_CHECK(i == 0 || timesteps[i] < timesteps[i - 1],
                "{}: timesteps must decrease strictly, got {} then {} at index {}", op,
                timesteps[i - 1], timesteps[i], i);
    }
    shape_ = x_T.shape();
  }

  int64_t num_steps() const { return static_cast<int64_t>(timesteps_.size()); }
  int64_t timestep(int64_t step) const { return timesteps_[step]; }
  // The timestep after `step`, -1 after the last one.
  int64_t next_timestep(int64_t step) const {
    return step + 1 < num_steps() ? timesteps_[step + 1] : -1;
  }
  double alpha_bar(int64_t t) const { return schedule_.alpha_bar(t); }
  double sigma(int64_t t) const { return schedule_.sigma(t); }

  // x0_hat at `step` for the current x_t; runs the callback, which may cancel.
  Tensor x0_hat(int64_t step, const Tensor& x_t) {
    const int64_t t = timesteps_[step];
    const int64_t batch = shape_[0];
    Tensor t_batch = empty({batch}, DType::Int64);
    for (int64_t b = 0; b < batch; ++b) t_batch.data_i64()[b] = t;
    const Tensor eps = denoiser_(x_t, t_batch, cond_);
    INK_CHECK(eps.defined() && eps.dtype() == DType::Float32 && eps.shape() == shape_,
              "{}: the denoiser returned eps {} for x_t {} at t = {}", op_,
              eps.defined() ? shape_str(eps.shape()) : "(undefined)", shape_str(shape_), t);
    const double ab = alpha_bar(t);
    Tensor x0 = combine(1.0 / std::sqrt(ab), x_t, -std::sqrt((1.0 - ab) / ab), eps);
    if (options_.clip_x0) x0 = clamp(x0, -1.0f, 1.0f);
    ++steps_done_;
    if (options_.callback) {
      const StepInfo info{step, num_steps(), t, x_t.detach(), x0.detach()};
      cancelled_ = !options_.callback(info);
    }
    return x0;
  }

  bool cancelled() const { return cancelled_; }
  SampleResult result(Tensor x0) const { return {std::move(x0), steps_done_, cancelled_}; }

 private:
  const char* op_;
  const Denoiser& denoiser_;
  const std::any& cond_;
  const NoiseSchedule& schedule_;
  const std::vector<int64_t>& timesteps_;
  const SampleOptions& options_;
  Shape shape_;
  int64_t steps_done_ = 0;
  bool cancelled_ = false;
};

}  // namespace

SampleResult sample_ddpm(const Denoiser& denoiser, const Tensor& x_T, const std::any& cond,
                         const NoiseSchedule& schedule, const std::vector<int64_t>& timesteps,
                         Generator& generator, const SampleOptions& options) {
  NoGradGuard no_grad;
  Walk walk("sample_ddpm", denoiser, x_T, cond, schedule, timesteps, options);
  Tensor x = x_T.detach();
  for (int64_t i = 0; i < walk.num_steps(); ++i) {
    const Tensor x0 = walk.x0_hat(i, x);
    const int64_t t = walk.timestep(i), t_next = walk.next_timestep(i);
    if (walk.cancelled() || t_next < 0) return walk.result(x0);
    const double ab = walk.alpha_bar(t), ab_next = walk.alpha_bar(t_next);
    const double a = ab / ab_next, b = 1.0 - a;
    const double variance = (1.0 - ab_next) / (1.0 - ab) * b;
    x = combine(std::sqrt(ab_next) * b / (1.0 - ab), x0,
                std::sqrt(a) * (1.0 - ab_next) / (1.0 - ab), x);
    x = add(x, mul(randn(x.shape(), &generator), static_cast<float>(std::sqrt(variance))));
  }
  return walk.result(x);  // not reached: the last step returns above
}

SampleResult sample_ddim(const Denoiser& denoiser, const Tensor& x_T, const std::any& cond,
                         const NoiseSchedule& schedule, const std::vector<int64_t>& timesteps,
                         Generator& generator, const SampleOptions& options) {
  INK_CHECK(options.eta >= 0.0 && options.eta <= 1.0, "sample_ddim: eta {} is outside [0, 1]",
            options.eta);
  NoGradGuard no_grad;
  Walk walk("sample_ddim", denoiser, x_T, cond, schedule, timesteps, options);
  Tensor x = x_T.detach();
  for (int64_t i = 0; i < walk.num_steps(); ++i) {
    const Tensor x0 = walk.x0_hat(i, x);
    const int64_t t = walk.timestep(i), t_next = walk.next_timestep(i);
    if (walk.cancelled() || t_next < 0) return walk.result(x0);
    const double ab = walk.alpha_bar(t), ab_next = walk.alpha_bar(t_next);
    const Tensor eps = combine(1.0 / std::sqrt(1.0 - ab), x, -std::sqrt(ab / (1.0 - ab)), x0);
    const double variance =
        options.eta * options.eta * (1.0 - ab_next) / (1.0 - ab) * (1.0 - ab / ab_next);
    x = combine(std::sqrt(ab_next), x0, std::sqrt(std::max(1.0 - ab_next - variance, 0.0)), eps);
    if (variance > 0.0) {
      x = add(x, mul(randn(x.shape(), &generator), static_cast<float>(std::sqrt(variance))));
    }
  }
  return walk.result(x);
}

SampleResult sample_euler(const Denoiser& denoiser, const Tensor& x_T, const std::any& cond,
                          const NoiseSchedule& schedule, const std::vector<int64_t>& timesteps,
                          Generator& /*generator*/, const SampleOptions& options) {
  NoGradGuard no_grad;
  Walk walk("sample_euler", denoiser, x_T, cond, schedule, timesteps, options);
  Tensor y = mul(x_T.detach(), static_cast<float>(1.0 / std::sqrt(walk.alpha_bar(timesteps[0]))));
  for (int64_t i = 0; i < walk.num_steps(); ++i) {
    const int64_t t = walk.timestep(i), t_next = walk.next_timestep(i);
    const Tensor x0 = walk.x0_hat(i, mul(y, static_cast<float>(std::sqrt(walk.alpha_bar(t)))));
    if (walk.cancelled() || t_next < 0) return walk.result(x0);
    const double ratio = walk.sigma(t_next) / walk.sigma(t);
    y = combine(1.0 - ratio, x0, ratio, y);
  }
  return walk.result(y);
}

SampleResult sample_dpmpp_2m(const Denoiser& denoiser, const Tensor& x_T, const std::any& cond,
                             const NoiseSchedule& schedule, const std::vector<int64_t>& timesteps,
                             Generator& /*generator*/, const SampleOptions& options) {
  NoGradGuard no_grad;
  Walk walk("sample_dpmpp_2m", denoiser, x_T, cond, schedule, timesteps, options);
  Tensor y = mul(x_T.detach(), static_cast<float>(1.0 / std::sqrt(walk.alpha_bar(timesteps[0]))));
  Tensor previous_x0;  // x0_hat of the previous step
  double previous_h = 0.0;
  for (int64_t i = 0; i < walk.num_steps(); ++i) {
    const int64_t t = walk.timestep(i), t_next = walk.next_timestep(i);
    const Tensor x0 = walk.x0_hat(i, mul(y, static_cast<float>(std::sqrt(walk.alpha_bar(t)))));
    if (walk.cancelled() || t_next < 0) return walk.result(x0);
    const double sigma = walk.sigma(t), sigma_next = walk.sigma(t_next);
    const double h = std::log(sigma / sigma_next);  // lambda_next - lambda, lambda = -log sigma
    Tensor d = x0;
    if (previous_x0.defined()) {
      const double r = previous_h / h;
      d = combine(1.0 + 1.0 / (2.0 * r), x0, -1.0 / (2.0 * r), previous_x0);
    }
    y = combine(sigma_next / sigma, y, -std::expm1(-h), d);
    previous_x0 = x0;
    previous_h = h;
  }
  return walk.result(y);
}

Sampler parse_sampler(std::string_view name) {
  if (name == "ddpm") return Sampler::DDPM;
  if (name == "ddim") return Sampler::DDIM;
  if (name == "euler") return Sampler::Euler;
  if (name == "dpmpp2m") return Sampler::DPMpp2M;
  INK_FAIL("sampler: unknown name \"{}\" (expected ddpm, ddim, euler or dpmpp2m)", name);
}

const char* sampler_name(Sampler sampler) {
  switch (sampler) {
    case Sampler::DDPM:
      return "ddpm";
    case Sampler::DDIM:
      return "ddim";
    case Sampler::Euler:
      return "euler";
    case Sampler::DPMpp2M:
      return "dpmpp2m";
  }
  return "?";
}

SampleResult sample(Sampler sampler, const Denoiser& denoiser, const Tensor& x_T,
                    const std::any& cond, const NoiseSchedule& schedule,
                    const std::vector<int64_t>& timesteps, Generator& generator,
                    const SampleOptions& options) {
  switch (sampler) {
    case Sampler::DDPM:
      return sample_ddpm(denoiser, x_T, cond, schedule, timesteps, generator, options);
    case Sampler::DDIM:
      return sample_ddim(denoiser, x_T, cond, schedule, timesteps, generator, options);
    case Sampler::Euler:
      return sample_euler(denoiser, x_T, cond, schedule, timesteps, generator, options);
    case Sampler::DPMpp2M:
      return sample_dpmpp_2m(denoiser, x_T, cond, schedule, timesteps, generator, options);
  }
  INK_FAIL("sample: unknown sampler {}", static_cast<int>(sampler));
}

bool GuidanceInterval::valid() const {
  return std::isfinite(sigma_low) && sigma_low >= 0.0 && !std::isnan(sigma_high) &&
         sigma_high > sigma_low;
}

void GuidanceInterval::validate() const {
  INK_CHECK(valid(), "guidance interval: needs 0 <= low < high (noise levels sigma), got ({}, {}]",
            sigma_low, sigma_high);
}

Denoiser classifier_free_guidance(Denoiser model, double scale) {
  // Every timestep is guided, so the schedule is never consulted.
  return classifier_free_guidance(std::move(model), scale, NoiseSchedule::linear(1),
                                  GuidanceInterval{});
}

Denoiser classifier_free_guidance(Denoiser model, double scale, const NoiseSchedule& schedule,
                                  GuidanceInterval interval, Denoiser conditional) {
  INK_CHECK(static_cast<bool>(model), "classifier_free_guidance: the model is empty");
  interval.validate();
  // Which timesteps are guided, looked up once (an empty table: every one).
  std::vector<char> guided;
  if (interval.sigma_low > 0.0 || std::isfinite(interval.sigma_high)) {
    guided.resize(static_cast<size_t>(schedule.num_timesteps()));
    for (int64_t t = 0; t < schedule.num_timesteps(); ++t) {
      const double abar = schedule.alpha_bar(t);
      guided[static_cast<size_t>(t)] = interval.contains(std::sqrt((1.0 - abar) / abar));
    }
  }
  return [model = std::move(model), conditional = std::move(conditional), scale,
          guided = std::move(guided)](const Tensor& x_t, const Tensor& timesteps,
                                      const std::any& cond) {
    const int64_t batch = x_t.size(0);
    INK_CHECK(timesteps.dtype() == DType::Int64 && timesteps.numel() == batch,
              "classifier_free_guidance: timesteps {} for x_t {}", shape_str(timesteps.shape()),
              shape_str(x_t.shape()));
    const int64_t* ts = timesteps.data_i64();
    const auto is_guided = [&](int64_t b) {
      if (guided.empty()) return true;
      INK_CHECK(ts[b] >= 0 && ts[b] < static_cast<int64_t>(guided.size()),
                "classifier_free_guidance: timestep {} is outside [0, {})", ts[b], guided.size());
      return guided[static_cast<size_t>(ts[b])] != 0;
    };
    int64_t guided_rows = 0;
    for (int64_t b = 0; b < batch; ++b) guided_rows += is_guided(b) ? 1 : 0;
    if (guided_rows == 0 && conditional) {
      Tensor eps = conditional(x_t, timesteps, cond);
      INK_CHECK(eps.defined() && eps.dtype() == DType::Float32 && eps.shape() == x_t.shape(),
                "classifier_free_guidance: the conditional model returned {} for x_t {}",
                eps.defined() ? shape_str(eps.shape()) : "(undefined)", shape_str(x_t.shape()));
      return eps;
    }
    Tensor t2 = empty({2 * batch}, DType::Int64);
    for (int64_t b = 0; b < 2 * batch; ++b) t2.data_i64()[b] = ts[b % batch];
    const Tensor eps = model(cat({x_t, x_t}, 0), t2, cond);
    Shape doubled = x_t.shape();
    doubled[0] *= 2;
    INK_CHECK(eps.defined() && eps.dtype() == DType::Float32 && eps.shape() == doubled,
              "classifier_free_guidance: the model returned {} for the doubled batch {}",
              eps.defined() ? shape_str(eps.shape()) : "(undefined)", shape_str(doubled));
    const Tensor eps_c = rows(eps, 0, batch), eps_u = rows(eps, batch, batch);
    if (guided_rows == 0) return eps_c;
    Tensor out = add(eps_u, mul(sub(eps_c, eps_u), static_cast<float>(scale)));
    if (guided_rows < batch) {  // rows outside the interval take eps_c
      const int64_t row = x_t.numel() / batch;
      for (int64_t b = 0; b < batch; ++b) {
        if (!is_guided(b))
          std::memcpy(out.data() + b * row, eps_c.data() + b * row, sizeof(float) * row);
      }
    }
    return out;
  };
}

}  // namespace ink::diffusion
