// The noise schedules and samplers (models/diffusion/) against closed forms and the PyTorch
// twin: alphas_cumprod and trailing spacing from scripts/diffusion_twin.py (committed in
// tests/data/samplers_golden.json), a point-mass denoiser that every sampler must follow to the
// point, the DDPM step's posterior variance, the twin's results for a Gaussian denoiser,
// classifier-free guidance, callbacks and cancelling, determinism and errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "models/diffusion/samplers.h"
#include "models/diffusion/schedule.h"
#include "tensor/inkgrad.h"
#include "test_util.h"

namespace ink::diffusion {
namespace {

using json = nlohmann::json;
using testing_util::expect_error;

const json& golden() {
  static const json data = [] {
    std::ifstream file(INK_TEST_DATA_DIR "/samplers_golden.json");
    if (!file) throw std::runtime_error("cannot open " INK_TEST_DATA_DIR "/samplers_golden.json");
    return json::parse(file);
  }();
  return data;
}

const Shape kShape = {2, 1, 3, 3};

// The exact E[eps | x_t] when x_0 ~ N(mu, s^2): sqrt(1 - a) (x_t - sqrt(a) mu) / (a s^2 + 1 - a),
// a = abar_t of each row; mu has the shape of one row. s = 0 is a point mass at mu.
Denoiser gaussian_denoiser(const NoiseSchedule& schedule, std::vector<float> mu, double s,
                           int* calls = nullptr) {
  return [&schedule, mu = std::move(mu), s, calls](const Tensor& x_t, const Tensor& t,
                                                   const std::any&) {
    if (calls) ++*calls;
    const int64_t batch = x_t.size(0), row = x_t.numel() / batch;
    EXPECT_EQ(static_cast<size_t>(row), mu.size());
    std::vector<float> eps(static_cast<size_t>(x_t.numel()));
    const float* x = x_t.data();
    for (int64_t b = 0; b < batch; ++b) {
      const double a = schedule.alpha_bar(t.data_i64()[b]);
      for (int64_t i = 0; i < row; ++i) {
        const double v = x[b * row + i];
        eps[b * row + i] =
            static_cast<float>(std::sqrt(1 - a) * (v - std::sqrt(a) * mu[i]) / (a * s * s + 1 - a));
      }
    }
    return from_vector(eps, x_t.shape());
  };
}

std::vector<float> point_values() {
  return {0.3f, -0.7f, 0.9f, 0.0f, -1.0f, 0.55f, 1.0f, -0.2f, 0.1f};
}

double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

const Sampler kAllSamplers[] = {Sampler::DDPM, Sampler::DDIM, Sampler::Euler, Sampler::DPMpp2M};

// ---- schedules ----

TEST(NoiseSchedule, AlphasCumprodMatchTheTwin) {
  for (const char* name : {"linear", "cosine"}) {
    const NoiseSchedule schedule = NoiseSchedule::by_name(name);
    const auto expected = golden()["alphas_cumprod"][name].get<std::vector<double>>();
    ASSERT_EQ(schedule.num_timesteps(), 1000);
    ASSERT_EQ(schedule.alphas_cumprod().size(), expected.size());
    for (size_t t = 0; t < expected.size(); ++t) {
      EXPECT_NEAR(schedule.alphas_cumprod()[t], expected[t], 1e-13 * expected[t] + 1e-18)
          << name << " t = " << t;
    }
  }
}

TEST(NoiseSchedule, LinearBetasAndEdges) {
  const NoiseSchedule schedule = NoiseSchedule::linear();
  EXPECT_DOUBLE_EQ(schedule.betas().front(), 1e-4);
  EXPECT_NEAR(schedule.betas().back(), 0.02, 1e-15);
  EXPECT_DOUBLE_EQ(schedule.alpha_bar(0), 1.0 - 1e-4);
  EXPECT_EQ(schedule.alpha_bar(-1), 1.0);
  EXPECT_EQ(schedule.sigma(-1), 0.0);
  EXPECT_NEAR(schedule.sigma(999),
              std::sqrt((1 - schedule.alpha_bar(999)) / schedule.alpha_bar(999)), 1e-12);
  for (int64_t t = 1; t < 1000; ++t) EXPECT_LT(schedule.alpha_bar(t), schedule.alpha_bar(t - 1));
}

TEST(NoiseSchedule, Errors) {
  expect_error([] { NoiseSchedule::by_name("quadratic"); },
               "noise schedule: unknown name \"quadratic\" (expected \"linear\" or \"cosine\")");
  expect_error([] { NoiseSchedule({0.1, 1.0}); }, "NoiseSchedule: beta[1] = 1 is outside (0, 1)");
  expect_error([] { NoiseSchedule::linear().alpha_bar(1000); },
               "NoiseSchedule: timestep 1000 is outside [-1, 1000)");
  const NoiseSchedule schedule = NoiseSchedule::linear();
  expect_error(
      [&] {
        schedule.add_noise(zeros({2, 3}), zeros({2, 3}), zeros({3}, DType::Int64));
      },
      "add_noise: timesteps [3] (Int64) must be Int64 [B] for x0 [2, 3]");
  expect_error(
      [&] {
        schedule.add_noise(zeros({1, 3}), zeros({1, 3}), from_vector_i64({1000}, {1}));
      },
      "add_noise: timesteps[0] = 1000 is outside [0, 1000)");
}

TEST(NoiseSchedule, AddNoiseMixesPerRow) {
  const NoiseSchedule schedule = NoiseSchedule::linear();
  const Tensor x0 = from_vector({1, 2, -1, 0.5f}, {2, 2});
  const Tensor eps = from_vector({0.5f, -1, 2, 1}, {2, 2});
  const Tensor x_t = schedule.add_noise(x0, eps, from_vector_i64({0, 999}, {2}));
  const std::vector<float> got = x_t.to_vector();
  const double a0 = schedule.alpha_bar(0), a1 = schedule.alpha_bar(999);
  const double expected[] = {
      std::sqrt(a0) * 1 + std::sqrt(1 - a0) * 0.5, std::sqrt(a0) * 2 - std::sqrt(1 - a0),
      -std::sqrt(a1) + std::sqrt(1 - a1) * 2, std::sqrt(a1) * 0.5 + std::sqrt(1 - a1)};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(got[i], expected[i], 1e-6) << i;
}

// v = add_noise(eps, -x0) is the training target of a v-prediction; eps_from_v gives eps back.
TEST(NoiseSchedule, EpsFromVInvertsTheVTarget) {
  const NoiseSchedule schedule = NoiseSchedule::cosine();
  const Tensor x0 = from_vector({1, 2, -1, 0.5f, 0.25f, -0.75f}, {3, 2});
  const Tensor eps = from_vector({0.5f, -1, 2, 1, -0.3f, 0.8f}, {3, 2});
  const Tensor t = from_vector_i64({0, 500, 999}, {3});
  const Tensor x_t = schedule.add_noise(x0, eps, t);
  const Tensor v = schedule.add_noise(eps, neg(x0), t);
  const double a = schedule.alpha_bar(500);
  EXPECT_NEAR(v.to_vector()[2], std::sqrt(a) * 2 - std::sqrt(1 - a) * -1, 1e-6);
  const std::vector<float> back = eps_from_v(schedule, v, x_t, t).to_vector();
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(back[i], eps.to_vector()[i], 1e-5) << i;
  expect_error(
      [&] {
        eps_from_v(schedule, v, x_t, from_vector_i64({0, 1}, {2}));
      },
      "add_noise: timesteps [2] (Int64) must be Int64 [B]");
}

TEST(TrailingTimesteps, MatchTheTwin) {
  for (const auto& [steps, expected] : golden()["trailing_timesteps"].items()) {
    EXPECT_EQ(trailing_timesteps(1000, std::stoll(steps)), expected.get<std::vector<int64_t>>())
        << steps << " steps";
  }
  EXPECT_EQ(trailing_timesteps(10, 4), (std::vector<int64_t>{9, 7, 4, 1}));  // 7.5 -> 8, 2.5 -> 2
  expect_error([] { trailing_timesteps(1000, 0); },
               "trailing_timesteps: steps 0 must be in [1, 1000]");
  expect_error([] { trailing_timesteps(1000, 1001); },
               "trailing_timesteps: steps 1001 must be in [1, 1000]");
}

// ---- closed forms ----

// Float32 resolves x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar) to about
// 1e-7 / sqrt(abar) = 1e-7 sqrt(1 + sigma^2): 2e-3 at the cosine schedule's t = 999
// (abar = 2.4e-9), 2e-5 at the linear one's. The tolerances below scale with it.
double x0_resolution(const NoiseSchedule& schedule, int64_t t) {
  return 1.2e-7 * std::sqrt(1.0 + schedule.sigma(t) * schedule.sigma(t));
}

// A denoiser that returns the true eps of a point mass: every sampler lands on the point
// (DDPM too: its last step has zero variance and returns x0_hat).
TEST(Samplers, PointMassDenoiserLandsOnThePoint) {
  for (const char* schedule_name : {"linear", "cosine"}) {
    const NoiseSchedule schedule = NoiseSchedule::by_name(schedule_name);
    const std::vector<float> point = point_values();
    for (Sampler sampler : kAllSamplers) {
      for (int64_t steps : {1, 10, 50}) {
        Generator gen(7);
        const Tensor x_T = randn(kShape, &gen);
        int calls = 0;
        const SampleResult result = sample(sampler, gaussian_denoiser(schedule, point, 0.0, &calls),
                                           x_T, {}, schedule, trailing_timesteps(1000, steps), gen);
        EXPECT_EQ(calls, steps);
        EXPECT_EQ(result.steps_done, steps);
        EXPECT_FALSE(result.cancelled);
        ASSERT_EQ(result.x0.shape(), kShape);
        const std::vector<float> got = result.x0.to_vector();
        const double tolerance =
            1e-5 + 4 * x0_resolution(schedule, trailing_timesteps(1000, steps).back());
        for (size_t i = 0; i < got.size(); ++i) {
          EXPECT_NEAR(got[i], point[i % point.size()], tolerance)
              << sampler_name(sampler) << " " << schedule_name << " " << steps
              << " steps, i = " << i;
        }
      }
    }
  }
}

// With clipping, a point outside [-1, 1] lands on its clipped value; without, on itself.
TEST(Samplers, X0HatIsClipped) {
  const NoiseSchedule schedule = NoiseSchedule::linear();
  std::vector<float> point(9, 2.0f);
  point[3] = -1.5f;
  for (Sampler sampler : kAllSamplers) {
    for (bool clip : {true, false}) {
      Generator gen(3);
      SampleOptions options;
      options.clip_x0 = clip;
      const Tensor x = sample(sampler, gaussian_denoiser(schedule, point, 0.0), randn(kShape, &gen),
                              {}, schedule, trailing_timesteps(1000, 10), gen, options)
                           .x0;
      const std::vector<float> got = x.to_vector();
      for (size_t i = 0; i < got.size(); ++i) {
        const float p = point[i % 9];
        EXPECT_NEAR(got[i], clip ? std::clamp(p, -1.0f, 1.0f) : p, 1e-4)
            << sampler_name(sampler) << (clip ? " clipped" : " unclipped") << " i = " << i;
      }
    }
  }
}

// One DDPM step from a fixed x_t with the point-mass denoiser: x_t' ~ N(mean, variance) of the
// posterior q(x_t' | x_t, x_0). DDIM with eta = 1 has the same distribution.
TEST(Samplers, DdpmStepHasThePosteriorMeanAndVariance) {
  const NoiseSchedule schedule = NoiseSchedule::linear();
  const int64_t t = 600, t_next = 300;
  const double ab = schedule.alpha_bar(t), ab_next = schedule.alpha_bar(t_next);
  const double a = ab / ab_next, b = 1 - a;
  const double variance = (1 - ab_next) / (1 - ab) * b;
  const float c = 0.4f, x_value = -0.3f;
  const double mean =
      std::sqrt(ab_next) * b / (1 - ab) * c + std::sqrt(a) * (1 - ab_next) / (1 - ab) * x_value;
  const int64_t n = 20000;
  for (Sampler sampler : {Sampler::DDPM, Sampler::DDIM}) {
    Generator gen(11);
    SampleOptions options;
    options.eta = 1.0;
    std::vector<float> next;
    options.callback = [&](const StepInfo& info) {
      if (info.step == 1) next = info.x_t.to_vector();  // x_t' after the first step
      return true;
    };
    sample(sampler, gaussian_denoiser(schedule, {c}, 0.0), full({n, 1}, x_value), {}, schedule,
           {t, t_next}, gen, options);
    ASSERT_EQ(next.size(), static_cast<size_t>(n));
    double sum = 0, sum_sq = 0;
    for (float v : next) sum += v;
    const double m = sum / n;
    for (float v : next) sum_sq += (v - m) * (v - m);
    const double v = sum_sq / (n - 1);
    // Standard errors: sqrt(variance / n) for the mean, variance sqrt(2 / n) for the variance.
    EXPECT_NEAR(m, mean, 5 * std::sqrt(variance / n)) << sampler_name(sampler);
    EXPECT_NEAR(v, variance, 5 * variance * std::sqrt(2.0 / n)) << sampler_name(sampler);
    EXPECT_GT(variance, 0.01);  // the check is not vacuous
  }
}

// The deterministic samplers against the twin (float64) for the Gaussian denoiser: a path with
// clipping in the early steps and the 2M correction in use. The float32 error is set by the
// first step's resolution (see x0_resolution), damped by the later steps.
TEST(Samplers, GaussianDenoiserMatchesTheTwin) {
  const json& g = golden()["gaussian"];
  const Shape shape = g["shape"].get<Shape>();
  const auto x_T_values = g["x_T"].get<std::vector<double>>();
  const auto mu_values = g["mu"].get<std::vector<double>>();
  const Tensor x_T = from_vector(std::vector<float>(x_T_values.begin(), x_T_values.end()), shape);
  const std::vector<float> mu(mu_values.begin(), mu_values.end());
  ASSERT_EQ(g["runs"].size(), 12u);
  for (const json& run : g["runs"]) {
    const NoiseSchedule schedule = NoiseSchedule::by_name(run["schedule"].get<std::string>());
    const Sampler sampler = parse_sampler(run["sampler"].get<std::string>());
    SampleOptions options;
    options.clip_x0 = run["clip_x0"].get<bool>();
    Generator gen(0);
    const Tensor x =
        sample(sampler, gaussian_denoiser(schedule, mu, g["s"].get<double>()), x_T, {}, schedule,
               trailing_timesteps(1000, run["steps"].get<int64_t>()), gen, options)
            .x0;
    const double tolerance = 1e-4 + 0.25 * x0_resolution(schedule, 999);  // 1.5e-4, 6e-4
    EXPECT_LT(max_abs_diff(x.to_vector(), run["x0"].get<std::vector<double>>()), tolerance)
        << run["schedule"] << " " << run["sampler"] << " " << run["steps"] << " steps";
  }
}

// DDIM with eta = 0 is the Euler method on the probability-flow ODE in y = x_t / sqrt(abar):
// the two implementations must agree up to rounding for any denoiser. Each sampler's first
// step also sees x_T itself as x_t.
TEST(Samplers, DdimEqualsEulerAndTheFirstStepSeesXT) {
  const NoiseSchedule schedule = NoiseSchedule::cosine();
  Generator gen(4);
  const Tensor x_T = randn(kShape, &gen);
  std::vector<std::vector<float>> results;
  for (Sampler sampler : {Sampler::DDIM, Sampler::Euler, Sampler::DPMpp2M}) {
    SampleOptions options;
    options.callback = [&](const StepInfo& info) {
      if (info.step == 0) {
        const std::vector<float> a = info.x_t.to_vector(), b = x_T.to_vector();
        for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5 * std::abs(b[i]) + 1e-6);
      }
      return true;
    };
    results.push_back(sample(sampler, gaussian_denoiser(schedule, point_values(), 0.5), x_T, {},
                             schedule, trailing_timesteps(1000, 7), gen, options)
                          .x0.to_vector());
  }
  double ddim_vs_euler = 0, ddim_vs_dpm = 0;
  for (size_t i = 0; i < results[0].size(); ++i) {
    ddim_vs_euler = std::max(ddim_vs_euler, double(std::abs(results[0][i] - results[1][i])));
    ddim_vs_dpm = std::max(ddim_vs_dpm, double(std::abs(results[0][i] - results[2][i])));
  }
  EXPECT_LT(ddim_vs_euler, 1e-3);
  EXPECT_GT(ddim_vs_dpm, 1e-3);  // a second-order method takes a different path
}

// ---- determinism ----

TEST(Samplers, SameSeedSameSampleAndTheSeedMatters) {
  const NoiseSchedule schedule = NoiseSchedule::linear();
  auto run = [&](Sampler sampler, uint64_t seed, double eta) {
    Generator gen(seed);
    const Tensor x_T = randn(kShape, &gen);
    SampleOptions options;
    options.eta = eta;
    std::vector<float> path;  // every x_t along the way, not only the end point
    options.callback = [&](const StepInfo& info) {
      for (float v : info.x_t.to_vector()) path.push_back(v);
      return true;
    };
    sample(sampler, gaussian_denoiser(schedule, point_values(), 0.3), x_T, {}, schedule,
           trailing_timesteps(1000, 8), gen, options);
    return path;
  };
  for (auto [sampler, eta] :
       {std::pair{Sampler::DDPM, 0.0}, std::pair{Sampler::DDIM, 0.5}, std::pair{Sampler::DDIM, 0.0},
        std::pair{Sampler::Euler, 0.0}, std::pair{Sampler::DPMpp2M, 0.0}}) {
    EXPECT_EQ(run(sampler, 5, eta), run(sampler, 5, eta)) << sampler_name(sampler);
    EXPECT_NE(run(sampler, 5, eta), run(sampler, 6, eta)) << sampler_name(sampler);
  }
}

// DDIM with eta = 0 never draws from the generator.
TEST(Samplers, DeterministicSamplersLeaveTheGeneratorAlone) {
  const NoiseSchedule schedule = NoiseSchedule::linear();
  for (Sampler sampler : {Sampler::DDIM, Sampler::Euler, Sampler::DPMpp2M}) {
    Generator gen(9);
    const Generator before = gen;
    sample(sampler, gaussian_denoiser(schedule, point_values(), 0.3), zeros(kShape), {}, schedule,
           trailing_timesteps(1000, 5), gen);
    EXPECT_EQ(gen.get_state().state, before.get_state().state) << sampler_name(sampler);
  }
}

// ---- guidance, callbacks, errors ----

TEST(ClassifierFreeGuidance, OneBatchedCallCombinesTheHalves) {
  // A model whose eps depends on the row's conditioning: rows [0, B) get +1, rows [B, 2B) -1,
  // plus x_t, so eps_c = x + 1, eps_u = x - 1 and the guided eps = x - 1 + w * 2.
  int calls = 0;
  int64_t seen_batch = 0;
  std::vector<int64_t> seen_t;
  const Denoiser model = [&](const Tensor& x_t, const Tensor& t, const std::any& cond) {
    ++calls;
    seen_batch = x_t.size(0);
    seen_t = t.to_vector_i64();
    EXPECT_EQ(std::any_cast<int>(cond), 42);  // passed along untouched
    const int64_t half = x_t.size(0) / 2, row = x_t.numel() / x_t.size(0);
    std::vector<float> v = x_t.to_vector();
    for (int64_t i = 0; i < x_t.numel(); ++i) v[i] += i / row < half ? 1.0f : -1.0f;
    return from_vector(v, x_t.shape());
  };
  const Denoiser guided = classifier_free_guidance(model, 3.0);
  const Tensor x = from_vector({0.5f, -2, 1, 0}, {2, 2});
  const Tensor eps = guided(x, from_vector_i64({7, 9}, {2}), std::any(42));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(seen_batch, 4);
  EXPECT_EQ(seen_t, (std::vector<int64_t>{7, 9, 7, 9}));
  const std::vector<float> got = eps.to_vector();
  const std::vector<float> x_values = x.to_vector();
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(got[i], x_values[i] - 1 + 3 * 2) << i;
  expect_error([&] { classifier_free_guidance(model, 1.0)(x, from_vector_i64({1}, {1}), {}); },
               "classifier_free_guidance: timesteps [1] for x_t [2, 2]");
}

// A guidance interval: rows whose noise level sigma_t lies outside it get eps_c; a call with
// no row inside runs only the conditional denoiser when there is one.
TEST(ClassifierFreeGuidance, OnlyInsideItsIntervalOfNoiseLevels) {
  // eps_c = x + 1 for the first half of the rows, eps_u = x - 1 for the second (as above).
  int doubled_calls = 0, conditional_calls = 0;
  const Denoiser model = [&](const Tensor& x_t, const Tensor&, const std::any&) {
    ++doubled_calls;
    const int64_t half = x_t.size(0) / 2, row = x_t.numel() / x_t.size(0);
    std::vector<float> v = x_t.to_vector();
    for (int64_t i = 0; i < x_t.numel(); ++i) v[i] += i / row < half ? 1.0f : -1.0f;
    return from_vector(v, x_t.shape());
  };
  const Denoiser conditional = [&](const Tensor& x_t, const Tensor&, const std::any& cond) {
    ++conditional_calls;
    EXPECT_EQ(std::any_cast<int>(cond), 42);
    return add(x_t, 1.0f);
  };
  const NoiseSchedule schedule = NoiseSchedule::linear();
  // sigma_t = sqrt((1 - abar_t) / abar_t): pick an interval holding t = 500 but not t = 50 or 900.
  const auto sigma = [&](int64_t t) {
    return std::sqrt((1.0 - schedule.alpha_bar(t)) / schedule.alpha_bar(t));
  };
  const GuidanceInterval interval{sigma(400), sigma(600)};
  EXPECT_TRUE(interval.contains(sigma(500)));
  EXPECT_FALSE(interval.contains(sigma(400)));  // (low, high]
  EXPECT_TRUE(interval.contains(sigma(600)));
  const Denoiser guided = classifier_free_guidance(model, 3.0, schedule, interval, conditional);
  const Tensor x = from_vector({0.5f, -2, 1, 0, 3, 4}, {3, 2});
  const std::vector<float> xv = x.to_vector();

  // Mixed rows: one doubled call; the row at t = 500 is guided, the others are eps_c.
  const std::vector<float> mixed = guided(x, from_vector_i64({50, 500, 900}, {3}), 42).to_vector();
  EXPECT_EQ(doubled_calls, 1);
  EXPECT_EQ(conditional_calls, 0);
  for (int i = 0; i < 6; ++i) EXPECT_FLOAT_EQ(mixed[i], xv[i] + (i / 2 == 1 ? 5.0f : 1.0f)) << i;

  // No row inside: the conditional denoiser alone.
  const std::vector<float> outside = guided(x, from_vector_i64({50, 50, 900}, {3}), 42).to_vector();
  EXPECT_EQ(doubled_calls, 1);
  EXPECT_EQ(conditional_calls, 1);
  for (int i = 0; i < 6; ++i) EXPECT_FLOAT_EQ(outside[i], xv[i] + 1.0f) << i;
  // ... and without one, eps_c of a doubled call.
  const std::vector<float> no_conditional =
      classifier_free_guidance(model, 3.0, schedule, interval)(
          x, from_vector_i64({50, 50, 900}, {3}), 42)
          .to_vector();
  EXPECT_EQ(doubled_calls, 2);
  EXPECT_EQ(no_conditional, outside);

  expect_error(
      [&] {
        classifier_free_guidance(model, 3.0, schedule, {2.0, 1.0});
      },
      "guidance interval: needs 0 <= low < high (noise levels sigma), got (2, 1]");
  expect_error(
      [&] {
        classifier_free_guidance(model, 3.0, schedule, {-1.0, 1.0});
      },
      "guidance interval: needs 0 <= low < high");
  expect_error(
      [&] {
        guided(x, from_vector_i64({50, 50, 1000}, {3}), 42);
      },
      "classifier_free_guidance: timestep 1000 is outside [0, 1000)");
  expect_error(
      [&] {
        classifier_free_guidance(model, 3.0, schedule, interval,
                                 [](const Tensor&, const Tensor&, const std::any&) {
                                   return zeros({1, 2});
                                 })(x, from_vector_i64({50, 50, 50}, {3}), 42);
      },
      "classifier_free_guidance: the conditional model returned [1, 2] for x_t [3, 2]");
}

// Guidance wraps the denoiser: a sampler runs it like any other, one model call per step.
TEST(ClassifierFreeGuidance, DrivesASamplerWithOneCallPerStep) {
  const NoiseSchedule schedule = NoiseSchedule::linear();
  int calls = 0;
  const Denoiser point_mass = gaussian_denoiser(schedule, point_values(), 0.0, &calls);
  // Both halves see the same point mass, so any scale lands on the point.
  Generator gen(1);
  const SampleResult result =
      sample_ddim(classifier_free_guidance(point_mass, 7.5), randn(kShape, &gen), {}, schedule,
                  trailing_timesteps(1000, 6), gen);
  EXPECT_EQ(calls, 6);
  const std::vector<float> got = result.x0.to_vector();
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], point_values()[i % 9], 1e-4);
}

TEST(Samplers, CallbackSeesEveryStepAndCanCancel) {
  const NoiseSchedule schedule = NoiseSchedule::linear();
  const std::vector<int64_t> timesteps = trailing_timesteps(1000, 5);
  for (Sampler sampler : kAllSamplers) {
    std::vector<int64_t> seen;
    Tensor last_x0;
    SampleOptions options;
    options.callback = [&](const StepInfo& info) {
      EXPECT_EQ(info.num_steps, 5);
      EXPECT_EQ(info.step, static_cast<int64_t>(seen.size()));
      EXPECT_EQ(info.x_t.shape(), kShape);
      EXPECT_EQ(info.x0_hat.shape(), kShape);
      for (float v : info.x0_hat.to_vector()) EXPECT_LE(std::abs(v), 1.0f);
      seen.push_back(info.timestep);
      last_x0 = info.x0_hat;
      return info.step < 2;  // stop after the third step
    };
    Generator gen(2);
    const SampleResult result = sample(sampler, gaussian_denoiser(schedule, point_values(), 0.5),
                                       randn(kShape, &gen), {}, schedule, timesteps, gen, options);
    EXPECT_TRUE(result.cancelled) << sampler_name(sampler);
    EXPECT_EQ(result.steps_done, 3);
    EXPECT_EQ(seen, (std::vector<int64_t>{999, 799, 599}));
    EXPECT_EQ(result.x0.to_vector(), last_x0.to_vector());  // the latest estimate
  }
}

TEST(Samplers, Errors) {
  const NoiseSchedule schedule = NoiseSchedule::linear();
  const Denoiser good = gaussian_denoiser(schedule, point_values(), 0.0);
  Generator gen(0);
  const Tensor x = zeros(kShape);
  expect_error(
      [&] {
        sample_ddim(good, x, {}, schedule, {500, 500}, gen);
      },
      "sample_ddim: timesteps must decrease strictly, got 500 then 500 at index 1");
  expect_error(
      [&] {
        sample_euler(good, x, {}, schedule, {1000, 5}, gen);
      },
      "sample_euler: timesteps[0] = 1000 is outside [0, 1000)");
  expect_error([&] { sample_ddpm(good, x, {}, schedule, {}, gen); }, "sample_ddpm: no timesteps");
  expect_error([&] { sample_dpmpp_2m(Denoiser(), x, {}, schedule, {5}, gen); },
               "sample_dpmpp_2m: the denoiser is empty");
  expect_error(
      [&] {
        sample_ddpm(good, zeros({0, 3}), {}, schedule, {5}, gen);
      },
      "sample_ddpm: x_T must be a Float32 tensor [B, ...] with B >= 1, got [0, 3]");
  SampleOptions options;
  options.eta = 1.5;
  expect_error([&] { sample_ddim(good, x, {}, schedule, {5}, gen, options); },
               "sample_ddim: eta 1.5 is outside [0, 1]");
  const Denoiser wrong = [](const Tensor& x_t, const Tensor&, const std::any&) {
    return zeros({x_t.size(0), 4});
  };
  expect_error(
      [&] {
        sample_ddim(wrong, x, {}, schedule, {10, 5}, gen);
      },
      "sample_ddim: the denoiser returned eps [2, 4] for x_t [2, 1, 3, 3] at t = 10");
  expect_error([] { parse_sampler("heun"); },
               "sampler: unknown name \"heun\" (expected ddpm, ddim, euler or dpmpp2m)");
  for (Sampler sampler : kAllSamplers) EXPECT_EQ(parse_sampler(sampler_name(sampler)), sampler);
}

}  // namespace
}  // namespace ink::diffusion
