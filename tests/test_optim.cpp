// Adam and SGD: hand-checked steps, option checks, no allocation per step, and state files that
// resume training bit for bit and reject state that does not fit the parameters. AdamW against
// PyTorch (tests/data/optim_golden.json, from scripts/make_optim_golden.py), the learning-rate
// schedule, and the EMA of weights with its state file.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "nn/functional.h"
#include "nn/layers.h"
#include "nn/optim.h"
#include "tensor/inkgrad.h"
#include "tests/test_util.h"

namespace ink::nn {
namespace {

using testing_util::error_of;

using ::testing::AllOf;
using ::testing::HasSubstr;

std::string temp_path(const std::string& name) {
  return (std::filesystem::path(::testing::TempDir()) / name).string();
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() &&
         std::memcmp(a.data(), b.data(), static_cast<size_t>(a.numel()) * sizeof(float)) == 0;
}

TEST(Adam, FirstStepIsLrTimesSignOfGradient) {
  // After one step m = (1-b1) g and v = (1-b2) g^2, so the bias-corrected step is
  // -lr * g / (|g| + eps).
  Tensor p = from_vector({1.0f, -2.0f, 0.5f, 3.0f}, {4}).set_requires_grad(true);
  const std::vector<float> start = p.to_vector();
  const std::vector<float> g{0.3f, -4.0f, 1e-3f, 0.0f};
  p.set_grad(from_vector(g, {4}));
  const double lr = 0.01, eps = 1e-8;
  Adam adam({{"p", p}}, {.lr = lr, .eps = eps});
  adam.step();
  EXPECT_EQ(adam.step_count(), 1);
  for (size_t i = 0; i < g.size(); ++i) {
    const double expected = -lr * g[i] / (std::abs(g[i]) + eps);
    EXPECT_NEAR(p.to_vector()[i] - start[i], expected, 1e-7) << i;
  }
}

TEST(Adam, SkipsParametersWithoutGradient) {
  Tensor a = ones({2}).set_requires_grad(true);
  Tensor b = ones({2}).set_requires_grad(true);
  a.set_grad(ones({2}));
  Adam adam({{"a", a}, {"b", b}});
  adam.step();
  EXPECT_NE(a.to_vector()[0], 1.0f);
  EXPECT_EQ(b.to_vector(), (std::vector<float>{1, 1}));
}

TEST(Adam, StepAllocatesNoTensors) {
  Linear layer(64, 64);
  Adam adam(layer.named_parameters());
  sum(layer(ones({2, 64}))).backward();
  adam.step();
  const int64_t before = live_tensor_count();
  adam.step();
  adam.zero_grad();
  EXPECT_EQ(live_tensor_count(), before);
}

TEST(Adam, RejectsBadOptionsAndParameters) {
  Tensor p = ones({2}).set_requires_grad(true);
  EXPECT_THAT(error_of([&] {
                Adam({{"p", p}}, {.lr = -1.0});
              }),
              HasSubstr("invalid learning rate: -1"));
  EXPECT_THAT(error_of([&] {
                Adam({{"p", p}}, {.betas = {0.9, 1.0}});
              }),
              HasSubstr("invalid beta parameter at index 1: 1"));
  EXPECT_THAT(error_of([&] {
                Adam({{"p", p}, {"p", ones({2})}});
              }),
              HasSubstr("parameter name \"p\" appears more than once"));
  EXPECT_THAT(error_of([&] {
                Adam({{"p", p}, {"q", p}});
              }),
              HasSubstr("\"q\" is the same tensor as an earlier parameter"));
}

TEST(SGD, PlainAndMomentumStepsByHand) {
  Tensor p = from_vector({1.0f}, {1}).set_requires_grad(true);
  SGD plain({{"p", p}}, {.lr = 0.1});
  p.set_grad(from_vector({2.0f}, {1}));
  plain.step();
  EXPECT_FLOAT_EQ(p.item(), 0.8f);

  Tensor q = from_vector({1.0f}, {1}).set_requires_grad(true);
  SGD momentum({{"q", q}}, {.lr = 0.1, .momentum = 0.9});
  q.set_grad(from_vector({1.0f}, {1}));
  momentum.step();  // buf = 1
  momentum.step();  // buf = 0.9 + 1 = 1.9
  EXPECT_FLOAT_EQ(q.item(), 1.0f - 0.1f - 0.19f);
  EXPECT_THAT(error_of([&] {
                SGD({{"q", q}}, {.nesterov = true});
              }),
              HasSubstr("nesterov momentum requires a momentum and zero dampening"));
}

// A small regression problem, trained with `make_optimizer` for `steps` steps from a fixed start.
struct Problem {
  Problem() : layer(4, 3, true, &gen) {
    x = uniform({8, 4}, -1, 1, &gen);
    y = uniform({8, 3}, -1, 1, &gen);
  }
  void train(Optimizer& opt, int steps) {
    for (int i = 0; i < steps; ++i) {
      opt.zero_grad();
      F::mse_loss(layer(x), y).backward();
      opt.step();
    }
  }
  Generator gen{5};
  Linear layer;
  Tensor x, y;
};

template <typename MakeOptimizer>
void expect_resume_is_bit_exact(MakeOptimizer make_optimizer, const std::string& file) {
  Problem straight;
  auto straight_opt = make_optimizer(straight.layer);
  straight.train(*straight_opt, 7);

  // Train 3 steps, save model and optimizer, then continue in fresh objects for 4 more.
  const std::string model_path = temp_path(file + ".model"), opt_path = temp_path(file + ".opt");
  {
    Problem first;
    auto opt = make_optimizer(first.layer);
    first.train(*opt, 3);
    save_state_dict(first.layer, model_path);
    opt->save(opt_path);
  }
  Problem resumed;
  auto opt = make_optimizer(resumed.layer);
  opt->options().lr = 123.0;  // overwritten by load, as in PyTorch
  load_state_dict_file(resumed.layer, model_path);
  opt->load(opt_path);
  EXPECT_EQ(opt->step_count(), 3);
  resumed.train(*opt, 4);
  EXPECT_TRUE(same_bits(resumed.layer.weight, straight.layer.weight));
  EXPECT_TRUE(same_bits(resumed.layer.bias, straight.layer.bias));
  std::filesystem::remove(model_path);
  std::filesystem::remove(opt_path);
}

TEST(OptimizerState, AdamResumesBitExactly) {
  expect_resume_is_bit_exact(
      [](Linear& layer) {
        return std::make_unique<Adam>(layer.named_parameters(),
                                      AdamOptions{.lr = 0.05, .weight_decay = 0.01});
      },
      "adam_resume");
}

TEST(OptimizerState, SgdResumesBitExactly) {
  expect_resume_is_bit_exact(
      [](Linear& layer) {
        return std::make_unique<SGD>(layer.named_parameters(),
                                     SGDOptions{.lr = 0.1, .momentum = 0.9, .nesterov = true});
      },
      "sgd_resume");
}

TEST(OptimizerState, LayoutAndMetadata) {
  Problem problem;
  Adam adam(problem.layer.named_parameters(), {.lr = 0.003, .betas = {0.8, 0.99}});
  problem.train(adam, 2);
  const SafetensorsFile state = adam.state_dict();
  std::vector<std::string> names;
  for (const auto& [name, t] : state.tensors) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"state.step", "state.weight.exp_avg",
                                             "state.weight.exp_avg_sq", "state.bias.exp_avg",
                                             "state.bias.exp_avg_sq"}));
  EXPECT_EQ(state.tensors[0].second.dtype(), DType::Int64);
  EXPECT_EQ(state.tensors[0].second.item_i64(), 2);
  EXPECT_EQ(state.metadata.at("optimizer"), "Adam");
  EXPECT_EQ(state.metadata.at("lr"), "0.003");
  EXPECT_EQ(state.metadata.at("beta1"), "0.8");
  EXPECT_EQ(state.metadata.at("beta2"), "0.99");

  // SGD writes a momentum buffer only once a parameter has one.
  SGD sgd(problem.layer.named_parameters(), {.lr = 0.1, .momentum = 0.5});
  EXPECT_EQ(sgd.state_dict().tensors.size(), 1u);
  problem.train(sgd, 1);
  EXPECT_EQ(sgd.state_dict().tensors.size(), 3u);
}

TEST(OptimizerState, MismatchedStateIsRejectedWholeAndChangesNothing) {
  Problem problem;
  Adam adam(problem.layer.named_parameters(), {.lr = 0.01});
  problem.train(adam, 2);
  SafetensorsFile state = adam.state_dict();
  const Tensor exp_avg_before = state.tensors[1].second.clone();  // state.weight.exp_avg

  SafetensorsFile bad = state;
  for (auto& [name, t] : bad.tensors) {
    if (name == "state.weight.exp_avg") t = zeros({2, 2});
  }
  std::erase_if(bad.tensors, [](const auto& e) { return e.first == "state.bias.exp_avg_sq"; });
  bad.tensors.emplace_back("state.other.exp_avg", zeros({1}));
  bad.metadata["lr"] = "fast";
  const std::string message = error_of([&] { adam.load_state_dict(bad); });
  EXPECT_THAT(message,
              AllOf(HasSubstr("Adam.load_state_dict: 4 problems"),
                    HasSubstr("\"state.weight.exp_avg\" expected Float32 [3, 4], file has Float32 "
                              "[2, 2]"),
                    HasSubstr("missing \"state.bias.exp_avg_sq\""),
                    HasSubstr("unexpected \"state.other.exp_avg\""),
                    HasSubstr("metadata \"lr\" is \"fast\"")));
  EXPECT_EQ(adam.options().lr, 0.01);
  EXPECT_EQ(adam.step_count(), 2);
  EXPECT_TRUE(same_bits(adam.state_dict().tensors[1].second, exp_avg_before));

  // A state file of another optimizer, or of other parameters, is refused.
  const std::string path = temp_path("adam_state.st");
  adam.save(path);
  SGD sgd(problem.layer.named_parameters(), {.lr = 0.1, .momentum = 0.9});
  EXPECT_THAT(error_of([&] { sgd.load(path); }),
              AllOf(HasSubstr("the state is for optimizer \"Adam\", not \"SGD\""),
                    HasSubstr("while loading " + path)));
  Linear other(2, 2);
  Adam other_adam(other.named_parameters());
  EXPECT_THAT(
      error_of([&] { other_adam.load(path); }),
      HasSubstr("\"state.weight.exp_avg\" expected Float32 [2, 2], file has Float32 [3, 4]"));
  std::filesystem::remove(path);
}

TEST(OptimizerState, NumbersRoundTripExactly) {
  for (double v : {1e-3, 0.1, 0.999, 1e-8, 3.0e-4, 0.123456789012345678}) {
    std::vector<std::string> problems;
    EXPECT_EQ(parse_number({{"x", format_number(v)}}, "x", problems), v);
    EXPECT_TRUE(problems.empty());
  }
}

// ---- AdamW (golden numbers from PyTorch 1.13) ----

using json = nlohmann::json;

const json& optim_golden() {
  static const json data = [] {
    std::ifstream file(INK_TEST_DATA_DIR "/optim_golden.json");
    if (!file) throw std::runtime_error("cannot open " INK_TEST_DATA_DIR "/optim_golden.json");
    return json::parse(file);
  }();
  return data;
}

Tensor golden_tensor(const json& j) {
  const auto values = j.at("data").get<std::vector<double>>();
  return from_vector(std::vector<float>(values.begin(), values.end()), j.at("shape").get<Shape>());
}

// |actual - expected| <= 1e-7 + 1e-5 |expected| everywhere, as the other PyTorch goldens.
::testing::AssertionResult close_to(const Tensor& actual, const json& expected_json) {
  const std::vector<float> a = actual.to_vector();
  const std::vector<float> e = golden_tensor(expected_json).to_vector();
  if (a.size() != e.size()) return ::testing::AssertionFailure() << "sizes differ";
  for (size_t i = 0; i < a.size(); ++i) {
    const double diff = std::abs(static_cast<double>(a[i]) - e[i]);
    if (!(diff <= 1e-7 + 1e-5 * std::abs(static_cast<double>(e[i])))) {
      return ::testing::AssertionFailure() << "element " << i << ": " << a[i] << " vs " << e[i];
    }
  }
  return ::testing::AssertionSuccess();
}

TEST(AdamW, MatchesPyTorchOnFixedGradients) {
  for (const json& g : optim_golden().at("adamw")) {
    const json& o = g.at("options");
    SCOPED_TRACE(o.dump());
    NamedTensors params;
    for (const auto& [name, value] : g.at("params").items()) {
      params.emplace_back(name, golden_tensor(value).set_requires_grad(true));
    }
    AdamW adamw(params, {.lr = o.at("lr"),
                         .betas = {o.at("betas")[0], o.at("betas")[1]},
                         .eps = o.at("eps"),
                         .weight_decay = o.at("weight_decay")});
    for (size_t step = 0; step < g.at("grads").size(); ++step) {
      SCOPED_TRACE("step " + std::to_string(step + 1));
      for (auto& [name, p] : params) p.set_grad(golden_tensor(g.at("grads")[step].at(name)));
      adamw.step();
      for (const auto& [name, p] : params) {
        EXPECT_TRUE(close_to(p, g.at("after")[step].at(name))) << name;
      }
    }
  }
}

TEST(AdamW, TenStepsOnLinearRegressionMatchPyTorch) {
  const json& g = optim_golden().at("adamw_regression");
  Linear layer(3, 2);
  NamedTensors initial;
  for (const auto& [name, value] : g.at("initial").items()) {
    initial.emplace_back(name, golden_tensor(value));
  }
  layer.load_state_dict(initial);
  AdamW adamw(layer.named_parameters(), {.lr = 0.01, .weight_decay = 0.1});
  const Tensor x = golden_tensor(g.at("x")), y = golden_tensor(g.at("y"));
  for (const json& expected_loss : g.at("losses")) {
    adamw.zero_grad();
    Tensor loss = F::mse_loss(layer(x), y);
    EXPECT_NEAR(loss.item(), expected_loss.get<double>(),
                1e-5 * std::abs(expected_loss.get<double>()));
    loss.backward();
    adamw.step();
  }
  for (const auto& [name, tensor] : layer.state_dict()) {
    EXPECT_TRUE(close_to(tensor, g.at("final").at(name))) << name;
  }
}

TEST(AdamW, DecaysTheParameterNotTheGradient) {
  // With a zero gradient Adam's moments stay zero, so the step is the decay alone:
  // p * (1 - lr * wd), where Adam's L2 decay would instead move p by about lr.
  Tensor p = from_vector({2.0f, -4.0f}, {2}).set_requires_grad(true);
  p.set_grad(zeros({2}));
  AdamW adamw({{"p", p}}, {.lr = 0.1, .weight_decay = 0.5});
  adamw.step();
  const float shrink = static_cast<float>(1.0 - 0.1 * 0.5);
  EXPECT_EQ(p.to_vector(), (std::vector<float>{2.0f * shrink, -4.0f * shrink}));
  EXPECT_EQ(adamw.type_name(), "AdamW");
  EXPECT_THAT(error_of([&] {
                AdamW({{"p", p}}, {.weight_decay = -1.0});
              }),
              HasSubstr("AdamW: invalid weight_decay value: -1"));
}

TEST(AdamW, WithoutDecayIsBitForBitAdam) {
  Problem a, b;
  Adam adam(a.layer.named_parameters(), {.lr = 0.02});
  AdamW adamw(b.layer.named_parameters(), {.lr = 0.02, .weight_decay = 0.0});
  a.train(adam, 5);
  b.train(adamw, 5);
  EXPECT_TRUE(same_bits(a.layer.weight, b.layer.weight));
  EXPECT_TRUE(same_bits(a.layer.bias, b.layer.bias));
}

TEST(OptimizerState, AdamWResumesBitExactlyAndKnowsItsType) {
  expect_resume_is_bit_exact(
      [](Linear& layer) {
        return std::make_unique<AdamW>(layer.named_parameters(),
                                       AdamWOptions{.lr = 0.05, .weight_decay = 0.2});
      },
      "adamw_resume");
  Problem problem;
  AdamW adamw(problem.layer.named_parameters(), {.lr = 0.01, .weight_decay = 0.25});
  problem.train(adamw, 1);
  const SafetensorsFile state = adamw.state_dict();
  EXPECT_EQ(state.metadata.at("optimizer"), "AdamW");
  EXPECT_EQ(state.metadata.at("weight_decay"), "0.25");
  Adam adam(problem.layer.named_parameters());
  EXPECT_THAT(error_of([&] { adam.load_state_dict(state); }),
              HasSubstr("the state is for optimizer \"AdamW\", not \"Adam\""));
}

// ---- LRSchedule ----

TEST(LRSchedule, LinearWarmupThenConstant) {
  LRSchedule schedule({.base_lr = 0.1, .warmup_steps = 4});
  EXPECT_DOUBLE_EQ(schedule.lr_at(0), 0.025);
  EXPECT_DOUBLE_EQ(schedule.lr_at(1), 0.05);
  EXPECT_DOUBLE_EQ(schedule.lr_at(3), 0.1);
  EXPECT_DOUBLE_EQ(schedule.lr_at(4), 0.1);
  EXPECT_DOUBLE_EQ(schedule.lr_at(1000000), 0.1);
  EXPECT_DOUBLE_EQ(LRSchedule({.base_lr = 0.3}).lr_at(0), 0.3);  // no warm-up
}

TEST(LRSchedule, CosineDecaysFromBaseToFinalAfterWarmup) {
  LRSchedule schedule({.base_lr = 1.0,
                       .warmup_steps = 2,
                       .decay = LRSchedule::Decay::Cosine,
                       .total_steps = 12,
                       .final_lr = 0.1});
  EXPECT_DOUBLE_EQ(schedule.lr_at(0), 0.5);
  EXPECT_DOUBLE_EQ(schedule.lr_at(2), 1.0);                // the top of the cosine
  EXPECT_NEAR(schedule.lr_at(7), 0.1 + 0.9 * 0.5, 1e-15);  // half way
  EXPECT_NEAR(schedule.lr_at(4), 0.1 + 0.9 * 0.5 * (1 + std::cos(0.2 * M_PI)), 1e-15);
  EXPECT_DOUBLE_EQ(schedule.lr_at(12), 0.1);
  EXPECT_DOUBLE_EQ(schedule.lr_at(50), 0.1);  // stays at final_lr
  for (int64_t s = 2; s < 12; ++s) EXPECT_GT(schedule.lr_at(s), schedule.lr_at(s + 1)) << s;
}

TEST(LRSchedule, ApplySetsTheRateOfTheOptimizersNextStep) {
  Problem problem;
  AdamW adamw(problem.layer.named_parameters(), {.lr = 123.0});
  LRSchedule schedule({.base_lr = 0.01, .warmup_steps = 3});
  std::vector<double> used;
  for (int i = 0; i < 5; ++i) {
    schedule.apply(adamw);
    used.push_back(adamw.lr());
    problem.train(adamw, 1);
  }
  EXPECT_EQ(used, (std::vector<double>{0.01 / 3, 0.02 / 3, 0.01, 0.01, 0.01}));
  // The schedule follows the optimizer's step count, so it resumes with the optimizer's state.
  AdamW resumed(problem.layer.named_parameters());
  resumed.load_state_dict(adamw.state_dict());
  schedule.apply(resumed);
  EXPECT_EQ(resumed.lr(), 0.01);
  SGD sgd(problem.layer.named_parameters(), {.lr = 1.0});
  schedule.apply(sgd);
  EXPECT_DOUBLE_EQ(sgd.lr(), 0.01 / 3);
}

TEST(LRSchedule, RejectsImpossibleSettings) {
  EXPECT_THAT(error_of([] { LRSchedule({.base_lr = -1.0}); }),
              HasSubstr("LRSchedule: invalid base_lr: -1"));
  EXPECT_THAT(error_of([] { LRSchedule({.warmup_steps = -2}); }),
              HasSubstr("LRSchedule: warmup_steps must be >= 0, got -2"));
  EXPECT_THAT(
      error_of([] {
        LRSchedule({.warmup_steps = 10, .decay = LRSchedule::Decay::Cosine, .total_steps = 10});
      }),
      HasSubstr("a cosine schedule needs total_steps (10) > warmup_steps (10)"));
  EXPECT_THAT(error_of([] { LRSchedule({}).lr_at(-1); }),
              HasSubstr("LRSchedule::lr_at: step must be >= 0, got -1"));
}

// ---- EMA ----

TEST(EMA, AveragesLikeTheGoldenSequence) {
  const json& g = optim_golden().at("ema");
  Linear layer(3, 2, /*bias=*/false);
  auto set_weight = [&](const json& value) {
    layer.load_state_dict({{"weight", golden_tensor(value)}});
  };
  set_weight(g.at("values")[0]);
  EMA ema(layer, g.at("decay").get<double>());
  for (size_t i = 1; i < g.at("values").size(); ++i) {
    set_weight(g.at("values")[i]);
    ema.update(layer);
    EXPECT_TRUE(close_to(ema.shadow()[0].second, g.at("after")[i - 1])) << i;
  }
  EXPECT_EQ(ema.num_updates(), 3);
  EXPECT_EQ(ema.decay(), g.at("decay").get<double>());
}

// Adam and the EMA update all of a model's tensors as one parallel job cut into pieces (many
// small tensors, a few large ones). Each tensor must come out exactly as a one-tensor update
// gives it, at 1 and at 2 threads, including around the piece edges and with a parameter
// without a gradient in the middle of the list.
TEST(AdamW, UpdatesManyTensorsLikeOneAtATimeAtAnyThreadCount) {
  testing_util::ThreadCountGuard restore_threads;
  const std::vector<int64_t> sizes = {3, 8192, 8193, 50000, 1, 70001};
  Generator gen(7);
  std::vector<Tensor> init, grads;
  for (int64_t n : sizes) {
    init.push_back(randn({n}, &gen));
    grads.push_back(randn({n}, &gen));
  }
  const AdamWOptions options{.lr = 0.03, .weight_decay = 0.1};
  // Reference: one optimizer per tensor.
  std::vector<Tensor> expected;
  for (size_t i = 0; i < sizes.size(); ++i) {
    Tensor p = init[i].clone().set_requires_grad(true);
    AdamW one({{"p", p}}, options);
    for (int step = 0; step < 3; ++step) {
      p.set_grad(grads[i]);
      one.step();
    }
    expected.push_back(p);
  }
  for (int threads : {1, 2}) {
    SCOPED_TRACE(threads);
    set_num_threads(threads);
    NamedTensors params;
    for (size_t i = 0; i < sizes.size(); ++i) {
      params.emplace_back("p" + std::to_string(i), init[i].clone().set_requires_grad(true));
    }
    Tensor no_grad = zeros({5}).set_requires_grad(true);
    params.insert(params.begin() + 2, {"no_grad", no_grad});
    AdamW all(params, options);
    for (int step = 0; step < 3; ++step) {
      for (size_t i = 0, k = 0; i < params.size(); ++i) {
        if (params[i].first != "no_grad") params[i].second.set_grad(grads[k++]);
      }
      all.step();
    }
    EXPECT_EQ(no_grad.to_vector(), std::vector<float>(5, 0.0f));
    for (size_t i = 0, k = 0; i < params.size(); ++i) {
      if (params[i].first == "no_grad") continue;
      EXPECT_TRUE(same_bits(params[i].second, expected[k])) << params[i].first;
      EXPECT_FALSE(same_bits(params[i].second, init[k])) << params[i].first;
      ++k;
    }
  }
}

TEST(EMA, UpdatesManyTensorsLikeOneAtATimeAtAnyThreadCount) {
  testing_util::ThreadCountGuard restore_threads;
  const std::vector<int64_t> sizes = {3, 8192, 8193, 50000, 1, 70001};
  Generator gen(11);
  Module model("Many");
  for (size_t i = 0; i < sizes.size(); ++i) {
    model.register_parameter("p" + std::to_string(i), randn({sizes[i]}, &gen));
  }
  const NamedTensors start = model.state_dict();
  std::vector<Tensor> later;
  for (int64_t n : sizes) later.push_back(randn({n}, &gen));
  for (int threads : {1, 2}) {
    SCOPED_TRACE(threads);
    set_num_threads(threads);
    EMA ema(model, 0.9);
    Module target("Many");
    for (size_t i = 0; i < sizes.size(); ++i) {
      target.register_parameter(start[i].first, later[i].clone());
    }
    ema.update(target);
    ASSERT_EQ(ema.shadow().size(), sizes.size());
    for (size_t i = 0; i < sizes.size(); ++i) {
      const float* s = start[i].second.data();
      const float* v = later[i].data();
      const float* got = ema.shadow()[i].second.data();
      int64_t wrong = 0;
      for (int64_t j = 0; j < sizes[i]; ++j) {
        const float want = s[j] * 0.9f + v[j] * static_cast<float>(1.0 - 0.9);
        wrong += got[j] != want;
      }
      EXPECT_EQ(wrong, 0) << start[i].first;
    }
  }
}

// A model with parameters and buffers (BatchNorm's running statistics and its Int64 count).
struct NormNet : Module {
  NormNet() : Module("NormNet") {
    linear = register_module("linear", std::make_shared<Linear>(3, 4));
    norm = register_module("norm", std::make_shared<BatchNorm1d>(4));
  }
  std::shared_ptr<Linear> linear;
  std::shared_ptr<BatchNorm1d> norm;
};

TEST(EMA, AveragesFloatEntriesByNameCopiesCountsAndCopiesToASecondModel) {
  NormNet model;
  EMA ema(model);  // decay 0.999
  EXPECT_EQ(ema.decay(), 0.999);
  const std::vector<float> start = model.linear->weight.to_vector();
  {
    NoGradGuard no_grad;
    for (float& v : std::span(model.linear->weight.data(), 12)) v += 1.0f;
    model.norm->running_mean.data()[0] = 5.0f;
    model.norm->num_batches_tracked.data_i64()[0] = 7;
  }
  ema.update(model);
  const auto& shadow = ema.shadow();
  auto entry = [&](const std::string& name) {
    for (const auto& [n, t] : shadow) {
      if (n == name) return t;
    }
    ADD_FAILURE() << "no " << name;
    return Tensor();
  };
  const std::vector<float> averaged = entry("linear.weight").to_vector();
  for (size_t i = 0; i < start.size(); ++i) {
    EXPECT_NEAR(averaged[i], start[i] + 0.001f, 1e-6) << i;
  }
  EXPECT_NEAR(entry("norm.running_mean").to_vector()[0], 0.005f, 1e-7);
  EXPECT_EQ(entry("norm.num_batches_tracked").item_i64(), 7);

  NormNet other;
  ema.copy_to(other);
  EXPECT_TRUE(same_bits(other.linear->weight, entry("linear.weight")));
  EXPECT_EQ(other.norm->num_batches_tracked.item_i64(), 7);
  // The live model is untouched by copy_to, and the shadow by later changes to the model.
  EXPECT_NE(model.linear->weight.to_vector(), other.linear->weight.to_vector());
}

TEST(EMA, StateFileRoundTripsAndLoadsAsModelWeights) {
  NormNet model;
  EMA ema(model, 0.9);
  for (int i = 0; i < 3; ++i) {
    {
      NoGradGuard no_grad;
      model.linear->bias.data()[0] += 1.0f;
    }
    ema.update(model);
  }
  const std::string path = temp_path("ema.safetensors");
  ema.save(path);
  NormNet fresh;
  EMA loaded(fresh, 0.5);
  loaded.load(path);
  EXPECT_EQ(loaded.decay(), 0.9);
  EXPECT_EQ(loaded.num_updates(), 3);
  for (size_t i = 0; i < ema.shadow().size(); ++i) {
    EXPECT_EQ(loaded.shadow()[i].first, ema.shadow()[i].first);
    EXPECT_EQ(loaded.shadow()[i].second.to_string(), ema.shadow()[i].second.to_string());
  }
  // The file holds the shadow under the model's own names: it is also a checkpoint.
  NormNet sampler;
  load_state_dict_file(sampler, path);
  EXPECT_EQ(sampler.linear->bias.to_vector(), ema.shadow()[1].second.to_vector());
  std::filesystem::remove(path);
}

TEST(EMA, MismatchedModelsAndStateAreRejectedWithTheirNames) {
  NormNet model;
  EMA ema(model);
  Linear other(3, 5);
  EXPECT_THAT(error_of([&] { ema.update(other); }),
              AllOf(HasSubstr("EMA.update"), HasSubstr("the model has no \"linear.weight\"")));
  NormNet same;
  SafetensorsFile state = ema.state_dict();
  state.tensors[0].second = zeros({2, 2});
  state.tensors.emplace_back("extra", zeros({1}));
  state.metadata["ema_decay"] = "2";
  const std::string message = error_of([&] { EMA(same).load_state_dict(state); });
  EXPECT_THAT(message, AllOf(HasSubstr("EMA.load_state_dict: 3 problems"),
                             HasSubstr("\"linear.weight\" expected Float32 [4, 3], file has "
                                       "Float32 [2, 2]"),
                             HasSubstr("unexpected \"extra\""),
                             HasSubstr("metadata \"ema_decay\" is 2, not in [0, 1]")));
  EXPECT_THAT(error_of([] { EMA(Linear(1, 1), 1.5); }),
              HasSubstr("EMA: decay must be in [0, 1], got 1.5"));
}

}  // namespace
}  // namespace ink::nn
