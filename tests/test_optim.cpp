// Adam and SGD: hand-checked steps, option checks, no allocation per step, and state files that
// resume training bit for bit and reject state that does not fit the parameters.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

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

}  // namespace
}  // namespace ink::nn
