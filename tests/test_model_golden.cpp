// One full training step of the text-to-image model against PyTorch: the notebook's model
// (scripts/notebook_model.py) initialised by torch, the same batch and noise, then the loss,
// every parameter's gradient, and the weights and BatchNorm statistics after one Adam step.
// The numbers come from scripts/make_model_golden.py (tests/data/model_golden.safetensors).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "models/text_to_image.h"
#include "nn/functional.h"
#include "nn/optim.h"
#include "nn/safetensors.h"
#include "tensor/inkgrad.h"

namespace ink {
namespace {

// Every element within atol + rtol * |expected|; reports the worst element.
void expect_close(const Tensor& actual, const Tensor& expected, const std::string& what,
                  double rtol, double atol) {
  ASSERT_EQ(actual.shape(), expected.shape()) << what;
  const float* a = actual.data();
  const float* e = expected.data();
  double worst = 0.0;
  int64_t worst_at = -1;
  for (int64_t i = 0; i < actual.numel(); ++i) {
    const double excess = std::fabs(a[i] - e[i]) - (atol + rtol * std::fabs(e[i]));
    if (excess > worst || !std::isfinite(a[i])) {
      worst = std::isfinite(a[i]) ? excess : INFINITY;
      worst_at = i;
    }
  }
  EXPECT_LT(worst_at, 0) << what << ": element " << worst_at << " is " << a[worst_at]
                         << ", PyTorch has " << e[worst_at];
}

class ModelGolden : public ::testing::Test {
 protected:
  void SetUp() override {
    SafetensorsFile file = load_safetensors(INK_TEST_DATA_DIR "/model_golden.safetensors");
    for (auto& [name, tensor] : file.tensors) golden_[name] = tensor;
    NamedTensors init;
    for (auto& [name, tensor] : file.tensors) {
      if (name.rfind("init.", 0) == 0) init.emplace_back(name.substr(5), tensor);
    }
    model_.load_state_dict(init, /*strict=*/true);
  }

  Tensor golden(const std::string& name) {
    auto it = golden_.find(name);
    if (it == golden_.end()) throw Error("missing golden tensor " + name);
    return it->second;
  }

  TextToImageModel model_;
  std::map<std::string, Tensor> golden_;
};

TEST_F(ModelGolden, OneTrainingStepMatchesPyTorch) {
  model_.train();
  nn::Adam adam(model_.named_parameters(), nn::AdamOptions{.lr = 1e-3});
  Tensor loss = nn::functional::mse_loss(
      model_.forward(golden("input.tokens"), golden("input.noise")), golden("input.images"));
  EXPECT_NEAR(loss.item(), golden("expected.loss").item(), 1e-6);
  adam.zero_grad();
  loss.backward();
  int checked = 0;
  for (const auto& [name, param] : model_.named_parameters()) {
    // Gradients are sums over the batch; atol covers elements whose true value is ~0.
    expect_close(param.grad(), golden("expected.grad." + name), "grad of " + name, 1e-4, 1e-7);
    ++checked;
  }
  EXPECT_EQ(checked, 15);
  adam.step();
  // Adam's first step is -lr * g / (|g| + eps): about lr wherever the gradient is not tiny. Where
  // the true gradient is 0 (e.g. a bias feeding straight into BatchNorm, which removes any
  // constant shift), both frameworks hold rounding noise of ~1e-9, and the step amplifies it to
  // anything in [-lr, lr]. Those elements may differ by up to 2 lr; all others must agree.
  std::map<std::string, Tensor> params;
  for (const auto& [name, param] : model_.named_parameters()) params[name] = param;
  checked = 0;
  for (const auto& [name, tensor] : model_.state_dict()) {
    auto it = golden_.find("expected.step." + name);
    if (it == golden_.end()) continue;
    ++checked;
    if (tensor.dtype() == DType::Int64) {
      EXPECT_EQ(tensor.to_vector_i64(), it->second.to_vector_i64()) << name;
      continue;
    }
    if (!params.count(name)) {  // a buffer: running statistics
      expect_close(tensor, it->second, name + " after one step", 1e-5, 1e-7);
      continue;
    }
    const Tensor grad = golden("expected.grad." + name);
    const float* a = tensor.data();
    const float* e = it->second.data();
    const float* g = grad.data();
    int64_t bad = 0, tiny = 0;
    for (int64_t i = 0; i < tensor.numel(); ++i) {
      const bool noise = std::fabs(g[i]) < 1e-6f;
      tiny += noise;
      bad += std::fabs(a[i] - e[i]) > (noise ? 2.0e-3 : 1e-6 + 1e-5 * std::fabs(e[i]));
    }
    EXPECT_EQ(bad, 0) << name << " after one Adam step (" << tiny << " near-zero gradients)";
  }
  EXPECT_EQ(checked, 19);
}

TEST_F(ModelGolden, EvalModeUsesTheRunningStatistics) {
  // After loading PyTorch's initial state (running_mean 0, running_var 1), eval mode must give
  // the same images for a batch of one as for that sample inside a batch.
  model_.eval();
  NoGradGuard no_grad;
  Tensor tokens = golden("input.tokens");
  Tensor noise = golden("input.noise");
  Tensor all = model_.forward(tokens, noise);
  Tensor first = model_.forward(
      reshape(
          from_vector_i64(std::vector<int64_t>(tokens.data_i64(), tokens.data_i64() + 32), {1, 32}),
          {1, 32}),
      from_vector(std::vector<float>(noise.data(), noise.data() + 32), {1, 32}));
  const auto a = all.to_vector();
  const auto f = first.to_vector();
  for (int i = 0; i < 784; ++i) ASSERT_NEAR(f[i], a[i], 1e-6);
}

}  // namespace
}  // namespace ink
