// nn::Module: registration, PyTorch's dotted names and orders, train/eval, zero_grad,
// load_state_dict error reporting, state round trips through safetensors files, print(model).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>

#include "nn/layers.h"
#include "nn/module.h"
#include "tensor/inkgrad.h"
#include "tests/test_util.h"

namespace ink::nn {
namespace {

using testing_util::error_of;

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

std::vector<std::string> names_of(const NamedTensors& tensors) {
  std::vector<std::string> out;
  for (const auto& [name, t] : tensors) out.push_back(name);
  return out;
}

// A scaled-down version of the notebook's model, with the same nesting and names.
class TextEncoder : public Module {
 public:
  explicit TextEncoder(Generator* gen) : Module("TextEncoder") {
    embedding = register_module("embedding", std::make_shared<Embedding>(6, 4, 0, gen));
    projection = register_module(
        "projection", std::make_shared<Sequential>(std::make_shared<Linear>(4, 5, true, gen),
                                                   std::make_shared<ReLU>(),
                                                   std::make_shared<Linear>(5, 3, true, gen)));
  }
  std::shared_ptr<Embedding> embedding;
  std::shared_ptr<Sequential> projection;
};

class ImageGenerator : public Module {
 public:
  explicit ImageGenerator(Generator* gen) : Module("ImageGenerator") {
    decoder = register_module(
        "decoder", std::make_shared<Sequential>(
                       std::make_shared<Linear>(3, 4, true, gen), std::make_shared<BatchNorm1d>(4),
                       std::make_shared<ReLU>(), std::make_shared<Linear>(4, 2, true, gen),
                       std::make_shared<Sigmoid>()));
  }
  std::shared_ptr<Sequential> decoder;
};

class TextToImage : public Module {
 public:
  explicit TextToImage(uint64_t seed = 1) : Module("TextToImageModel"), gen_(seed) {
    text_encoder = register_module("text_encoder", std::make_shared<TextEncoder>(&gen_));
    image_generator = register_module("image_generator", std::make_shared<ImageGenerator>(&gen_));
  }
  Tensor forward(const Tensor& tokens) {
    Tensor pooled = mean((*text_encoder->embedding)(tokens), {1});
    return (*image_generator->decoder)((*text_encoder->projection)(pooled));
  }

  Generator gen_;
  std::shared_ptr<TextEncoder> text_encoder;
  std::shared_ptr<ImageGenerator> image_generator;
};

// Bytes of every state tensor, to check that nothing changed or that two states are equal.
std::vector<std::vector<uint8_t>> state_bytes(const Module& m) {
  std::vector<std::vector<uint8_t>> out;
  for (const auto& [name, t] : m.state_dict()) {
    const auto* p = static_cast<const uint8_t*>(t.impl()->storage->data()) +
                    t.impl()->offset * dtype_size(t.dtype());
    out.emplace_back(p, p + t.numel() * dtype_size(t.dtype()));
  }
  return out;
}

TEST(Module, NamedParametersMatchPyTorchDottedNames) {
  TextToImage model;
  EXPECT_THAT(names_of(model.named_parameters()),
              ElementsAre("text_encoder.embedding.weight", "text_encoder.projection.0.weight",
                          "text_encoder.projection.0.bias", "text_encoder.projection.2.weight",
                          "text_encoder.projection.2.bias", "image_generator.decoder.0.weight",
                          "image_generator.decoder.0.bias", "image_generator.decoder.1.weight",
                          "image_generator.decoder.1.bias", "image_generator.decoder.3.weight",
                          "image_generator.decoder.3.bias"));
  EXPECT_THAT(
      names_of(model.named_buffers()),
      ElementsAre("image_generator.decoder.1.running_mean", "image_generator.decoder.1.running_var",
                  "image_generator.decoder.1.num_batches_tracked"));
  EXPECT_THAT(names_of(model.image_generator->named_parameters(false)), ElementsAre());
  EXPECT_EQ(model.parameters().size(), 11u);
  EXPECT_EQ(model.num_parameters(), 6 * 4 + 4 * 5 + 5 + 5 * 3 + 3 + 3 * 4 + 4 + 4 + 4 + 4 * 2 + 2);
}

TEST(Module, StateDictPutsEachModulesBuffersAfterItsParameters) {
  TextToImage model;
  const std::vector<std::string> names = names_of(model.state_dict());
  ASSERT_EQ(names.size(), 14u);
  EXPECT_THAT(
      std::vector<std::string>(names.begin() + 7, names.begin() + 12),
      ElementsAre("image_generator.decoder.1.weight", "image_generator.decoder.1.bias",
                  "image_generator.decoder.1.running_mean", "image_generator.decoder.1.running_var",
                  "image_generator.decoder.1.num_batches_tracked"));
  EXPECT_EQ(names.back(), "image_generator.decoder.3.bias");
}

TEST(Module, NamedModulesArePreOrderFromTheRoot) {
  TextToImage model;
  std::vector<std::string> names;
  for (const auto& [name, m] : model.named_modules()) names.push_back(name);
  EXPECT_THAT(names,
              ElementsAre("", "text_encoder", "text_encoder.embedding", "text_encoder.projection",
                          "text_encoder.projection.0", "text_encoder.projection.1",
                          "text_encoder.projection.2", "image_generator", "image_generator.decoder",
                          "image_generator.decoder.0", "image_generator.decoder.1",
                          "image_generator.decoder.2", "image_generator.decoder.3",
                          "image_generator.decoder.4"));
  EXPECT_EQ(model.named_modules()[0].second, &model);
}

TEST(Module, RegistrationRejectsBadAndDuplicateNames) {
  Module m("Custom");
  m.register_parameter("w", zeros({2}));
  EXPECT_THAT(error_of([&] { m.register_buffer("w", zeros({2})); }),
              HasSubstr("\"w\" is already registered in Custom"));
  EXPECT_THAT(error_of([&] { m.register_parameter("a.b", zeros({2})); }),
              HasSubstr("must not contain '.'"));
  EXPECT_THAT(error_of([&] { m.register_module("", std::make_shared<ReLU>()); }),
              HasSubstr("must not be empty"));
  EXPECT_TRUE(m.named_parameters()[0].second.requires_grad());
}

TEST(Module, SharedParameterIsListedOnceButSavedUnderEachName) {
  Module root("Root");
  auto a = root.register_module("a", std::make_shared<Linear>(2, 2));
  auto b = root.register_module("b", std::make_shared<Module>("Holder"));
  b->register_parameter("tied", a->weight);
  EXPECT_THAT(names_of(root.named_parameters()), ElementsAre("a.weight", "a.bias"));
  EXPECT_THAT(names_of(root.state_dict()), ElementsAre("a.weight", "a.bias", "b.tied"));
}

TEST(Module, TrainAndEvalAreRecursive) {
  TextToImage model;
  EXPECT_TRUE(model.is_training());
  model.eval();
  for (const auto& [name, m] : model.named_modules()) EXPECT_FALSE(m->is_training()) << name;
  model.image_generator->train();
  EXPECT_FALSE(model.is_training());
  EXPECT_TRUE(model.image_generator->decoder->at<BatchNorm1d>(1)->is_training());
}

TEST(Module, ZeroGradZeroesInPlace) {
  TextToImage model;
  Tensor tokens = from_vector_i64({1, 2, 0, 3, 3, 5}, {2, 3});
  sum(model.forward(tokens)).backward();
  Tensor grad = model.text_encoder->projection->at<Linear>(0)->weight.grad();
  ASSERT_TRUE(grad.defined());
  const float* before = grad.data();
  model.zero_grad();
  for (const auto& [name, p] : model.named_parameters()) {
    for (float v : p.grad().to_vector()) EXPECT_EQ(v, 0.0f) << name;
  }
  EXPECT_EQ(model.text_encoder->projection->at<Linear>(0)->weight.grad().data(), before);
}

TEST(Module, LoadStateDictCopiesIntoTheExistingTensors) {
  TextToImage source(1), target(2);
  {
    NoGradGuard no_grad;
    source.train();
    source.forward(from_vector_i64({1, 2, 3, 4}, {2, 2}));  // non-default BatchNorm buffers
  }
  ASSERT_NE(state_bytes(source), state_bytes(target));
  const float* weight_storage = target.image_generator->decoder->at<Linear>(0)->weight.data();
  target.load_state_dict(source.state_dict());
  EXPECT_EQ(state_bytes(source), state_bytes(target));
  EXPECT_EQ(target.image_generator->decoder->at<Linear>(0)->weight.data(), weight_storage);
  // The copies are independent: changing the source afterwards leaves the target alone.
  source.image_generator->decoder->at<Linear>(0)->weight.data()[0] += 1.0f;
  EXPECT_NE(state_bytes(source), state_bytes(target));
}

TEST(Module, LoadStateDictReportsEveryProblemAtOnceAndChangesNothing) {
  TextToImage model(1);
  NamedTensors state = TextToImage(2).state_dict();
  const auto before = state_bytes(model);
  for (auto& [name, t] : state) {
    if (name == "image_generator.decoder.0.weight") t = zeros({4, 2});
    if (name == "image_generator.decoder.1.num_batches_tracked") t = zeros({});  // F32, not I64
  }
  std::erase_if(state, [](const auto& e) { return e.first == "text_encoder.embedding.weight"; });
  state.emplace_back("image_generator.decoder.9.weight", zeros({1}));

  const std::string message = error_of([&] { model.load_state_dict(state); });
  EXPECT_THAT(message, HasSubstr("load_state_dict: 4 problems loading into TextToImageModel"));
  EXPECT_THAT(message,
              HasSubstr("\"image_generator.decoder.0.weight\" expected [4, 3], file has [4, 2]"));
  EXPECT_THAT(message, HasSubstr("\"image_generator.decoder.1.num_batches_tracked\" expected "
                                 "Int64 [], file has Float32 []"));
  EXPECT_THAT(message, HasSubstr("missing \"text_encoder.embedding.weight\""));
  EXPECT_THAT(message, HasSubstr("unexpected \"image_generator.decoder.9.weight\""));
  EXPECT_EQ(state_bytes(model), before);

  // Not strict: missing and unexpected names are allowed, mismatches are still errors.
  EXPECT_THAT(error_of([&] { model.load_state_dict(state, false); }), HasSubstr("2 problems"));
  EXPECT_EQ(state_bytes(model), before);
}

TEST(Module, SingleProblemMessageNamesBothShapes) {
  Module root("Root");
  auto generator = root.register_module("image_generator", std::make_shared<Module>("G"));
  auto decoder = generator->register_module("decoder", std::make_shared<Sequential>());
  decoder->push_back(std::make_shared<Linear>(96, 256));
  NamedTensors state = root.state_dict();
  state[0].second = zeros({256, 64});
  EXPECT_EQ(error_of([&] { root.load_state_dict(state); }),
            "load_state_dict: \"image_generator.decoder.0.weight\" expected [256, 96], file has "
            "[256, 64]");
}

TEST(Module, NonStrictLoadIgnoresMissingAndUnexpected) {
  Linear layer(2, 2);
  Tensor new_bias = from_vector({5, 6}, {2});
  layer.load_state_dict({{"bias", new_bias}, {"extra", zeros({3})}}, false);
  EXPECT_EQ(layer.bias.to_vector(), (std::vector<float>{5, 6}));
}

TEST(Module, StateRoundTripThroughAFileKeepsEveryBit) {
  const std::string path = (std::filesystem::path(::testing::TempDir()) / "nn_module_state.st");
  TextToImage source(3), target(4);
  {
    NoGradGuard no_grad;
    source.forward(from_vector_i64({1, 2, 3, 4, 5, 0}, {3, 2}));
  }
  save_state_dict(source, path);
  load_state_dict_file(target, path);
  EXPECT_EQ(state_bytes(source), state_bytes(target));
  EXPECT_EQ(target.image_generator->decoder->at<BatchNorm1d>(1)->num_batches_tracked.item_i64(), 1);

  Linear wrong(3, 3);
  EXPECT_THAT(error_of([&] { load_state_dict_file(wrong, path); }),
              AllOf(HasSubstr("unexpected \"text_encoder.embedding.weight\""),
                    HasSubstr("while loading " + path)));
  std::filesystem::remove(path);
}

TEST(Module, PrintsTheTreeLikePyTorch) {
  TextToImage model;
  EXPECT_EQ(model.to_string(),
            "TextToImageModel(\n"
            "  (text_encoder): TextEncoder(\n"
            "    (embedding): Embedding(6, 4, padding_idx=0)\n"
            "    (projection): Sequential(\n"
            "      (0): Linear(in_features=4, out_features=5, bias=True)\n"
            "      (1): ReLU()\n"
            "      (2): Linear(in_features=5, out_features=3, bias=True)\n"
            "    )\n"
            "  )\n"
            "  (image_generator): ImageGenerator(\n"
            "    (decoder): Sequential(\n"
            "      (0): Linear(in_features=3, out_features=4, bias=True)\n"
            "      (1): BatchNorm1d(4, eps=1e-05, momentum=0.1, affine=True, "
            "track_running_stats=True)\n"
            "      (2): ReLU()\n"
            "      (3): Linear(in_features=4, out_features=2, bias=True)\n"
            "      (4): Sigmoid()\n"
            "    )\n"
            "  )\n"
            ")");
  EXPECT_EQ(Sequential().to_string(), "Sequential()");
  std::ostringstream os;
  os << ReLU();
  EXPECT_EQ(os.str(), "ReLU()");
}

TEST(Module, PythonFloatRepr) {
  EXPECT_EQ(python_float_repr(1e-5), "1e-05");
  EXPECT_EQ(python_float_repr(0.1), "0.1");
  EXPECT_EQ(python_float_repr(1.0), "1.0");
  EXPECT_EQ(python_float_repr(0.0), "0.0");
  EXPECT_EQ(python_float_repr(0.0001), "0.0001");
  EXPECT_EQ(python_float_repr(123.25), "123.25");
  EXPECT_EQ(python_float_repr(-2.5e-7), "-2.5e-07");
  EXPECT_EQ(python_float_repr(1e16), "1e+16");
  EXPECT_EQ(python_float_repr(1234567890123456.0), "1234567890123456.0");
  EXPECT_THAT(python_float_repr(0.3), Not(HasSubstr("000")));
}

}  // namespace
}  // namespace ink::nn
