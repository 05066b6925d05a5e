// nn/ against PyTorch: layer values and gradients, BatchNorm running statistics, Adam and SGD
// steps, one training step of a small network, and module names and print(model) text. The
// numbers come from tests/data/nn_golden.json, written by scripts/make_nn_golden.py.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "nn/functional.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "nn/optim.h"
#include "tensor/inkgrad.h"

namespace ink::nn {
namespace {

using json = nlohmann::json;

// |actual - expected| <= kAbsTol + kRelTol * |expected| for every element.
constexpr double kRelTol = 1e-5;
constexpr double kAbsTol = 1e-7;

const json& golden() {
  static const json data = [] {
    std::ifstream file(INK_TEST_DATA_DIR "/nn_golden.json");
    if (!file) throw std::runtime_error("cannot open " INK_TEST_DATA_DIR "/nn_golden.json");
    return json::parse(file);
  }();
  return data;
}

Tensor to_tensor(const json& j) {
  const Shape shape = j.at("shape").get<Shape>();
  if (j.value("dtype", "") == "int64") {
    return from_vector_i64(j.at("data").get<std::vector<int64_t>>(), shape);
  }
  const auto values = j.at("data").get<std::vector<double>>();
  return from_vector(std::vector<float>(values.begin(), values.end()), shape);
}

NamedTensors to_named(const json& j) {
  NamedTensors out;
  for (const auto& [name, value] : j.items()) out.emplace_back(name, to_tensor(value));
  return out;
}

// Compares with the tolerance above and reports the first element that differs.
::testing::AssertionResult close_to(const Tensor& actual, const json& expected_json) {
  const Tensor expected = to_tensor(expected_json);
  if (!actual.defined()) return ::testing::AssertionFailure() << "tensor is undefined";
  if (actual.shape() != expected.shape()) {
    return ::testing::AssertionFailure()
           << "shape " << shape_str(actual.shape()) << " vs " << shape_str(expected.shape());
  }
  if (expected.dtype() == DType::Int64) {
    if (actual.to_vector_i64() == expected.to_vector_i64()) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "int64 values differ";
  }
  const std::vector<float> a = actual.to_vector(), e = expected.to_vector();
  for (size_t i = 0; i < a.size(); ++i) {
    const double diff = std::abs(static_cast<double>(a[i]) - e[i]);
    if (!(diff <= kAbsTol + kRelTol * std::abs(static_cast<double>(e[i])))) {
      return ::testing::AssertionFailure()
             << "element " << i << ": " << a[i] << " vs " << e[i] << " (diff " << diff << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult close_to(float actual, double expected) {
  if (std::abs(actual - expected) <= kAbsTol + kRelTol * std::abs(expected)) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << actual << " vs " << expected;
}

void copy_into(Tensor target, const json& source) {
  target.set_grad(Tensor());
  NoGradGuard no_grad;
  const Tensor values = to_tensor(source);
  ASSERT_EQ(values.shape(), target.shape());
  std::copy_n(values.data(), values.numel(), target.data());
}

TEST(NnGolden, LinearForwardBackward) {
  const json& g = golden().at("linear");
  Linear layer(g.at("in_features"), g.at("out_features"));
  copy_into(layer.weight, g.at("weight"));
  copy_into(layer.bias, g.at("bias"));
  Tensor x = to_tensor(g.at("x")).set_requires_grad(true);
  Tensor y = layer(x);
  EXPECT_TRUE(close_to(y, g.at("output")));
  y.backward(to_tensor(g.at("grad_output")));
  EXPECT_TRUE(close_to(x.grad(), g.at("grad_x")));
  EXPECT_TRUE(close_to(layer.weight.grad(), g.at("grad_weight")));
  EXPECT_TRUE(close_to(layer.bias.grad(), g.at("grad_bias")));
}

TEST(NnGolden, BatchNormThreeTrainingStepsThenEval) {
  const json& g = golden().at("batchnorm");
  BatchNorm1d bn(g.at("num_features"), g.at("eps"), g.at("momentum"));
  copy_into(bn.weight, g.at("weight"));
  copy_into(bn.bias, g.at("bias"));
  auto run = [&](const json& step) {
    bn.zero_grad();
    Tensor x = to_tensor(step.at("x")).set_requires_grad(true);
    Tensor y = bn(x);
    EXPECT_TRUE(close_to(y, step.at("output")));
    y.backward(to_tensor(step.at("grad_output")));
    EXPECT_TRUE(close_to(x.grad(), step.at("grad_x")));
    EXPECT_TRUE(close_to(bn.weight.grad(), step.at("grad_weight")));
    EXPECT_TRUE(close_to(bn.bias.grad(), step.at("grad_bias")));
    EXPECT_TRUE(close_to(bn.running_mean, step.at("running_mean")));
    EXPECT_TRUE(close_to(bn.running_var, step.at("running_var")));
    EXPECT_EQ(bn.num_batches_tracked.item_i64(), step.at("num_batches_tracked").get<int64_t>());
  };
  bn.train();
  for (const json& step : g.at("steps")) {
    SCOPED_TRACE("training step");
    run(step);
  }
  bn.eval();
  SCOPED_TRACE("eval");
  run(g.at("eval"));
}

// num_batches_tracked against PyTorch 1.13 (tests/data/batchnorm_golden.json, written by
// scripts/make_batchnorm_golden.py): training forwards count, with or without grad mode, eval
// forwards do not, and momentum=None weights batch n by 1 / n.
TEST(NnGolden, BatchNormCountsBatchesAndAveragesCumulativelyLikePyTorch) {
  static const json data = [] {
    std::ifstream file(INK_TEST_DATA_DIR "/batchnorm_golden.json");
    if (!file) throw std::runtime_error("cannot open " INK_TEST_DATA_DIR "/batchnorm_golden.json");
    return json::parse(file);
  }();
  for (const char* kind : {"exponential", "cumulative"}) {
    SCOPED_TRACE(kind);
    const json& g = data.at(kind);
    BatchNorm1d bn = g.at("momentum").is_null()
                         ? BatchNorm1d(3, 1e-5, std::nullopt)
                         : BatchNorm1d(3, 1e-5, g.at("momentum").get<double>());
    copy_into(bn.weight, g.at("weight"));
    copy_into(bn.bias, g.at("bias"));
    EXPECT_EQ(bn.to_string(), g.at("repr").get<std::string>());
    std::vector<std::string> keys;
    for (const auto& [name, value] : bn.state_dict()) keys.push_back(name);
    EXPECT_EQ(keys, g.at("state_dict_keys").get<std::vector<std::string>>());
    EXPECT_EQ(bn.num_batches_tracked.dtype(), DType::Int64);
    EXPECT_EQ(bn.num_batches_tracked.shape(), g.at("num_batches_tracked_shape").get<Shape>());
    for (const json& step : g.at("steps")) {
      const std::string call = step.at("call");
      SCOPED_TRACE(call);
      if (call == "eval") {
        bn.eval();
      } else {
        bn.train();
      }
      Tensor y;
      if (call == "no_grad") {
        NoGradGuard no_grad;
        y = bn(to_tensor(step.at("x")));
      } else {
        y = bn(to_tensor(step.at("x")));
      }
      EXPECT_TRUE(close_to(y, step.at("output")));
      EXPECT_TRUE(close_to(bn.running_mean, step.at("running_mean")));
      EXPECT_TRUE(close_to(bn.running_var, step.at("running_var")));
      EXPECT_EQ(bn.num_batches_tracked.item_i64(), step.at("num_batches_tracked").get<int64_t>());
    }
  }
}

TEST(NnGolden, MseLoss) {
  const json& g = golden().at("mse");
  Tensor input = to_tensor(g.at("input")).set_requires_grad(true);
  Tensor target = to_tensor(g.at("target")).set_requires_grad(true);
  Tensor loss = F::mse_loss(input, target);
  EXPECT_TRUE(close_to(loss.item(), g.at("loss").get<double>()));
  loss.backward();
  EXPECT_TRUE(close_to(input.grad(), g.at("grad_input")));
  EXPECT_TRUE(close_to(target.grad(), g.at("grad_target")));
}

// Replays a fixed gradient sequence through `optimizer` and compares every step with PyTorch.
void replay(Optimizer& optimizer, const json& g) {
  const NamedTensors& params = optimizer.named_parameters();
  for (size_t step = 0; step < g.at("grads").size(); ++step) {
    SCOPED_TRACE("step " + std::to_string(step + 1));
    for (const auto& [name, param] : params) {
      Tensor p = param;
      p.set_grad(to_tensor(g.at("grads")[step].at(name)));
    }
    optimizer.step();
    for (const auto& [name, param] : params) {
      EXPECT_TRUE(close_to(param, g.at("after")[step].at(name))) << name;
    }
  }
}

NamedTensors fresh_params(const json& g) {
  NamedTensors params = to_named(g.at("params"));
  for (auto& [name, p] : params) p.set_requires_grad(true);
  return params;
}

TEST(NnGolden, AdamOnFixedGradients) {
  for (const json& g : golden().at("adam")) {
    const json& o = g.at("options");
    SCOPED_TRACE(o.dump());
    Adam adam(fresh_params(g), {.lr = o.at("lr"),
                                .betas = {o.at("betas")[0], o.at("betas")[1]},
                                .eps = o.at("eps"),
                                .weight_decay = o.at("weight_decay")});
    replay(adam, g);
  }
}

TEST(NnGolden, SgdOnFixedGradients) {
  for (const json& g : golden().at("sgd")) {
    const json& o = g.at("options");
    SCOPED_TRACE(o.dump());
    SGD sgd(fresh_params(g), {.lr = o.at("lr"),
                              .momentum = o.at("momentum"),
                              .dampening = o.at("dampening"),
                              .weight_decay = o.at("weight_decay"),
                              .nesterov = o.at("nesterov")});
    replay(sgd, g);
  }
}

TEST(NnGolden, AdamTenStepsOnLinearRegression) {
  const json& g = golden().at("adam_regression");
  Linear layer(3, 2);
  layer.load_state_dict(to_named(g.at("initial")));
  Adam adam(layer.named_parameters(), {.lr = 0.01});
  const Tensor x = to_tensor(g.at("x")), y = to_tensor(g.at("y"));
  for (const json& expected_loss : g.at("losses")) {
    adam.zero_grad();
    Tensor loss = F::mse_loss(layer(x), y);
    EXPECT_TRUE(close_to(loss.item(), expected_loss.get<double>()));
    loss.backward();
    adam.step();
  }
  for (const auto& [name, tensor] : layer.state_dict()) {
    EXPECT_TRUE(close_to(tensor, g.at("final").at(name))) << name;
  }
}

// The golden script's TinyNet: embedding -> mean over the sequence -> decoder. (Its first Linear
// has no bias; the script says why.)
class TinyNet : public Module {
 public:
  TinyNet() : Module("TinyNet") {
    embedding = register_module("embedding", std::make_shared<Embedding>(28, 8, 0));
    decoder = register_module(
        "decoder", std::make_shared<Sequential>(
                       std::make_shared<Linear>(8, 16, false), std::make_shared<BatchNorm1d>(16),
                       std::make_shared<ReLU>(), std::make_shared<Linear>(16, 10),
                       std::make_shared<Sigmoid>()));
  }
  Tensor forward(const Tensor& tokens) { return (*decoder)(mean((*embedding)(tokens), {1})); }

  std::shared_ptr<Embedding> embedding;
  std::shared_ptr<Sequential> decoder;
};

TEST(NnGolden, NetworkTrainingStepsWithAdam) {
  const json& g = golden().at("network");
  TinyNet model;
  model.load_state_dict(to_named(g.at("initial")));
  Adam adam(model.named_parameters(), {.lr = 1e-2});
  model.train();
  for (const json& step : g.at("steps")) {
    const Tensor tokens = to_tensor(step.at("tokens"));
    adam.zero_grad();
    Tensor output = model.forward(tokens);
    EXPECT_TRUE(close_to(output, step.at("output")));
    Tensor loss = F::mse_loss(output, to_tensor(step.at("target")));
    EXPECT_TRUE(close_to(loss.item(), step.at("loss").get<double>()));
    loss.backward();
    for (const auto& [name, param] : model.named_parameters()) {
      EXPECT_TRUE(close_to(param.grad(), step.at("grads").at(name))) << name;
    }
    adam.step();
    for (const auto& [name, tensor] : model.state_dict()) {
      EXPECT_TRUE(close_to(tensor, step.at("state_after").at(name))) << name;
    }
  }
  model.eval();
  EXPECT_TRUE(close_to(model.forward(to_tensor(g.at("eval_tokens"))), g.at("eval_output")));
}

// The notebook's model, structure only (names, shapes and print(model) text).
class TextEncoder : public Module {
 public:
  TextEncoder(int64_t vocab_size, int64_t embed_dim = 32, int64_t latent_dim = 64)
      : Module("TextEncoder") {
    embedding = register_module("embedding", std::make_shared<Embedding>(vocab_size, embed_dim, 0));
    projection = register_module(
        "projection", std::make_shared<Sequential>(std::make_shared<Linear>(embed_dim, 128),
                                                   std::make_shared<ReLU>(),
                                                   std::make_shared<Linear>(128, latent_dim)));
  }
  std::shared_ptr<Embedding> embedding;
  std::shared_ptr<Sequential> projection;
};

class ImageGenerator : public Module {
 public:
  ImageGenerator(int64_t latent_dim = 64, int64_t noise_dim = 32) : Module("ImageGenerator") {
    decoder = register_module(
        "decoder", std::make_shared<Sequential>(
                       std::make_shared<Linear>(latent_dim + noise_dim, 256),
                       std::make_shared<BatchNorm1d>(256), std::make_shared<ReLU>(),
                       std::make_shared<Linear>(256, 512), std::make_shared<BatchNorm1d>(512),
                       std::make_shared<ReLU>(), std::make_shared<Linear>(512, 784),
                       std::make_shared<Sigmoid>()));
  }
  std::shared_ptr<Sequential> decoder;
};

class TextToImageModel : public Module {
 public:
  TextToImageModel() : Module("TextToImageModel") {
    register_module("text_encoder", std::make_shared<TextEncoder>(28));
    register_module("image_generator", std::make_shared<ImageGenerator>());
  }
};

TEST(NnGolden, NotebookModelNamesAndPrintMatchPyTorch) {
  const json& g = golden().at("names");
  TextToImageModel model;
  auto names_and_shapes = [](const NamedTensors& tensors) {
    std::vector<std::pair<std::string, Shape>> out;
    for (const auto& [name, t] : tensors) out.emplace_back(name, t.shape());
    return out;
  };
  EXPECT_EQ(names_and_shapes(model.named_parameters()),
            (g.at("named_parameters").get<std::vector<std::pair<std::string, Shape>>>()));
  EXPECT_EQ(names_and_shapes(model.named_buffers()),
            (g.at("named_buffers").get<std::vector<std::pair<std::string, Shape>>>()));
  std::vector<std::string> modules, state;
  for (const auto& [name, m] : model.named_modules()) modules.push_back(name);
  for (const auto& [name, t] : model.state_dict()) state.push_back(name);
  EXPECT_EQ(modules, g.at("named_modules").get<std::vector<std::string>>());
  EXPECT_EQ(state, g.at("state_dict").get<std::vector<std::string>>());
  EXPECT_EQ(model.num_parameters(), g.at("num_parameters").get<int64_t>());
  EXPECT_EQ(model.to_string(), g.at("repr").get<std::string>());
}

}  // namespace
}  // namespace ink::nn
