// One small network chaining the phase 2 layers against PyTorch 1.13: conv_in -> GroupNorm ->
// SiLU -> cross-attention of the tokens [B, H*W, C] over a context with a key mask -> conv_out,
// its state_dict names, its output and the gradients of the input, the context and every
// parameter for a fixed upstream gradient. The numbers come from tests/data/layers_golden.json
// (case "chain"), written by scripts/make_layers_golden.py: inputs exact in float32, reference
// values computed in float64; the network runs in Float32. The per-op and per-layer cases of the
// same file are checked in test_conv_ops.cpp and test_norm_attention.cpp.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "nn/conv.h"
#include "nn/module.h"
#include "nn/norm_attention.h"
#include "tensor/inkgrad.h"
#include "tensor/nn_ops.h"
#include "tensor/ops.h"

namespace ink {
namespace {

using json = nlohmann::json;

const json& cases() {
  static const json data = [] {
    std::ifstream file(INK_TEST_DATA_DIR "/layers_golden.json");
    if (!file) throw std::runtime_error("cannot open " INK_TEST_DATA_DIR "/layers_golden.json");
    return json::parse(file).at("cases");
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

// Float32 against the float64 reference: |actual - expected| <= kRelTol |expected| +
// kAbsTol max(1, max |expected|). The absolute part is relative to the tensor's scale, because
// gradients such as a normalisation's are sums that cancel to values far below their terms.
constexpr double kRelTol = 1e-4;
constexpr double kAbsTol = 5e-6;

::testing::AssertionResult close_to(const Tensor& actual, const json& expected_json) {
  if (!actual.defined()) return ::testing::AssertionFailure() << "tensor is undefined";
  const Shape shape = expected_json.at("shape").get<Shape>();
  if (actual.shape() != shape) {
    return ::testing::AssertionFailure()
           << "shape " << shape_str(actual.shape()) << " vs " << shape_str(shape);
  }
  const auto expected = expected_json.at("data").get<std::vector<double>>();
  double scale = 1.0;
  for (double e : expected) scale = std::max(scale, std::abs(e));
  const std::vector<float> a = actual.to_vector();
  for (size_t i = 0; i < a.size(); ++i) {
    const double diff = std::abs(a[i] - expected[i]);
    if (!(diff <= kRelTol * std::abs(expected[i]) + kAbsTol * scale)) {
      return ::testing::AssertionFailure() << "element " << i << ": " << a[i] << " vs "
                                           << expected[i] << " (diff " << diff << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

using Leaves = std::map<std::string, Tensor>;

// Runs one case of a module: its state_dict names must be PyTorch's, the parameters are loaded by
// name, and their gradients are compared by name.
void check_module_case(const std::string& name, nn::Module& module,
                       const std::function<Tensor(Leaves&)>& fn) {
  SCOPED_TRACE(name);
  const json& c = cases().at(name);
  std::vector<std::string> names;
  for (const auto& [key, value] : module.state_dict()) names.push_back(key);
  EXPECT_EQ(names, c.at("state_dict").get<std::vector<std::string>>());
  NamedTensors state;
  for (const auto& [key, value] : c.at("params").items()) state.emplace_back(key, to_tensor(value));
  module.load_state_dict(state, /*strict=*/true);
  Leaves inputs;
  for (const auto& [key, value] : c.at("inputs").items()) {
    Tensor t = to_tensor(value);
    if (t.dtype() == DType::Float32) t.set_requires_grad(true);
    inputs[key] = t;
  }
  const Tensor out = fn(inputs);
  EXPECT_TRUE(close_to(out, c.at("output"))) << "output";
  out.backward(to_tensor(c.at("grad_output")));
  std::map<std::string, Tensor> params;
  for (const auto& [key, p] : module.named_parameters()) params[key] = p;
  for (const auto& [key, expected] : c.at("grads").items()) {
    const Tensor grad = inputs.count(key) ? inputs.at(key).grad() : params.at(key).grad();
    EXPECT_TRUE(close_to(grad, expected)) << "gradient of " << key;
  }
}

// ---- the chained network ----

// What this represents: scripts/make_layers_golden.py's Chain, conv_in (3x3, padding 1) ->
// norm (GroupNorm) -> SiLU -> attn (cross-attention of the tokens [B, H*W, C] over a context
// with a key mask) -> back to [B, C, H, W] -> conv_out (3x3, padding 1).
class Chain : public nn::Module {
 public:
  explicit Chain(const json& a)
      : nn::Module("Chain"),
        conv_in(register_module("conv_in",
                                std::make_shared<nn::Conv2d>(a.at("in_ch").get<int64_t>(),
                                                             a.at("ch").get<int64_t>(), 3, 1, 1))),
        norm(register_module("norm", std::make_shared<nn::GroupNorm>(a.at("groups").get<int64_t>(),
                                                                     a.at("ch").get<int64_t>(),
                                                                     a.at("eps").get<double>()))),
        attn(register_module("attn",
                             std::make_shared<nn::Attention>(a.at("ch").get<int64_t>(),
                                                             a.at("context_dim").get<int64_t>(),
                                                             a.at("heads").get<int64_t>()))),
        conv_out(register_module(
            "conv_out", std::make_shared<nn::Conv2d>(a.at("ch").get<int64_t>(),
                                                     a.at("out_ch").get<int64_t>(), 3, 1, 1))) {}

  Tensor forward(const Tensor& x, const Tensor& context, const Tensor& key_mask) {
    const Tensor h = silu(norm->forward(conv_in->forward(x)));  // [B, C, H, W]
    const int64_t b = h.size(0), c = h.size(1), height = h.size(2), width = h.size(3);
    Tensor tokens = transpose(reshape(h, {b, c, height * width}), 1, 2);  // [B, H*W, C]
    tokens = attn->forward(tokens, context, key_mask);
    return conv_out->forward(reshape(transpose(tokens, 1, 2), {b, c, height, width}));
  }

  std::shared_ptr<nn::Conv2d> conv_in;
  std::shared_ptr<nn::GroupNorm> norm;
  std::shared_ptr<nn::Attention> attn;
  std::shared_ptr<nn::Conv2d> conv_out;
};

TEST(LayersGolden, ChainedNetwork) {
  Chain net(cases().at("chain").at("attrs"));
  check_module_case("chain", net, [&](Leaves& in) {
    return net.forward(in.at("x"), in.at("context"), in.at("key_mask"));
  });
}

}  // namespace
}  // namespace ink
