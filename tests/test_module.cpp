// nn::Module: registration, PyTorch's dotted names and orders, train/eval, zero_grad,
// load_state_dict error reporting, state round trips through safetensors files, print(model).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <thread>

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

// ---- phase 2 additions: ModuleList, several-input forwards, virtual train, copies by name,
// inference without changing a module ----

// A block whose forward takes three inputs, as a cross-attention block's does.
class Mixer : public Module {
 public:
  explicit Mixer(Generator* gen) : Module("Mixer") {
    to_out = register_module("to_out", std::make_shared<Linear>(3, 3, true, gen));
  }
  Tensor forward(const Tensor& x, const Tensor& context, const Tensor& mask) {
    return to_out->forward(add(x, mul(context, mask)));
  }
  std::shared_ptr<Linear> to_out;
};

// A model that keeps one child frozen in eval mode whatever train() asks.
class FrozenEncoder : public Module {
 public:
  explicit FrozenEncoder(Generator* gen) : Module("FrozenEncoder") {
    frozen = register_module("frozen", std::make_shared<BatchNorm1d>(3));
    trained = register_module("trained", std::make_shared<BatchNorm1d>(3));
  }
  void train(bool on = true) override {
    Module::train(on);
    frozen->train(false);
  }
  std::shared_ptr<BatchNorm1d> frozen, trained;
};

TEST(ModuleList, NamesChildrenByPositionAndRunsSeveralInputForwards) {
  Generator gen(3);
  auto blocks = std::make_shared<ModuleList>();
  blocks->push_back(std::make_shared<Mixer>(&gen));
  std::shared_ptr<Mixer> second = blocks->push_back(std::make_shared<Mixer>(&gen));
  blocks->push_back(std::make_shared<ReLU>());
  EXPECT_EQ(blocks->size(), 3u);
  EXPECT_THAT(names_of(blocks->state_dict()),
              ElementsAre("0.to_out.weight", "0.to_out.bias", "1.to_out.weight", "1.to_out.bias"));
  EXPECT_EQ(&blocks->at<Mixer>(1), second.get());
  EXPECT_EQ(blocks->at<ReLU>(2).type_name(), "ReLU");
  EXPECT_THAT(error_of([&] { blocks->at<Linear>(0); }), HasSubstr("module 0 is a Mixer"));
  EXPECT_THAT(error_of([&] { (*blocks)[3]; }), HasSubstr("index 3 is out of range for 3"));
  EXPECT_THAT(blocks->to_string(), HasSubstr("(1): Mixer("));

  Tensor x = randn({2, 3}, &gen), context = randn({2, 3}, &gen);
  Tensor mask = from_vector({1, 0, 1, 1, 1, 0}, {2, 3});
  Tensor y = blocks->at<Mixer>(0).forward(x, context, mask);
  EXPECT_EQ(y.shape(), (Shape{2, 3}));
  sum(y).backward();
  EXPECT_TRUE(blocks->at<Mixer>(0).to_out->weight.grad().defined());
}

TEST(Module, TrainIsVirtualSoADerivedModuleCanExtendIt) {
  Generator gen(4);
  FrozenEncoder model(&gen);
  model.train();
  EXPECT_TRUE(model.training_mode());
  EXPECT_TRUE(model.trained->is_training());
  EXPECT_FALSE(model.frozen->is_training());
  model.eval();  // eval() goes through the override too
  EXPECT_FALSE(model.trained->is_training());
  Module& base = model;
  base.train(true);  // and so does a call through the base
  EXPECT_FALSE(model.frozen->is_training());
  EXPECT_TRUE(model.trained->is_training());
}

TEST(Module, CopyValuesFromCopiesEveryTensorByNameInPlace) {
  Generator a_gen(5), b_gen(6);
  TextEncoder a(&a_gen), b(&b_gen);
  Tensor handle = b.embedding->weight;  // a handle taken before the copy
  const auto before = handle.to_vector();
  const uint64_t version = handle.version();
  b.copy_values_from(a);
  EXPECT_GT(handle.version(), version);  // an in-place write, as a SavedTensor must see
  EXPECT_NE(handle.to_vector(), before);
  EXPECT_EQ(handle.to_vector(), a.embedding->weight.to_vector());
  for (size_t i = 0; i < a.state_dict().size(); ++i) {
    EXPECT_EQ(a.state_dict()[i].second.to_vector(), b.state_dict()[i].second.to_vector());
  }
  // A copy, not shared storage: changing the source later leaves the destination alone.
  a.embedding->weight.data()[0] += 1.0f;
  EXPECT_NE(a.embedding->weight.to_vector(), b.embedding->weight.to_vector());

  // A model with other names or shapes is refused as a whole, and nothing is copied.
  Generator c_gen(7);
  Sequential other(std::make_shared<Linear>(4, 5, true, &c_gen));
  const auto kept = b.embedding->weight.to_vector();
  EXPECT_THAT(error_of([&] { b.copy_values_from(other); }), HasSubstr("unexpected \"0.weight\""));
  EXPECT_EQ(b.embedding->weight.to_vector(), kept);
  EXPECT_THAT(error_of([] {
                copy_values(zeros({2, 3}), zeros({3, 2}));
              }),
              HasSubstr("copy_values: destination Float32 [2, 3] and source Float32 [3, 2]"));
}

TEST(InferenceGuard, RunsInEvalBehaviourWithoutChangingTheModule) {
  Generator gen(8);
  BatchNorm1d norm(3);
  norm.running_mean.data()[0] = 0.5f;
  norm.train();
  Tensor x = randn({4, 3}, &gen);
  x.set_requires_grad(true);
  const auto mean_before = norm.running_mean.to_vector();
  Tensor eval_out;
  {
    InferenceGuard inference;
    EXPECT_TRUE(InferenceGuard::active());
    EXPECT_FALSE(norm.is_training());
    EXPECT_TRUE(norm.training_mode());  // the module itself is untouched
    {
      InferenceGuard nested;
      EXPECT_FALSE(norm.is_training());
    }
    EXPECT_TRUE(InferenceGuard::active());
    // Another thread is not affected.
    bool other_thread_training = false;
    std::thread([&] { other_thread_training = norm.is_training(); }).join();
    EXPECT_TRUE(other_thread_training);
    eval_out = norm.forward(x);
  }
  EXPECT_FALSE(InferenceGuard::active());
  EXPECT_TRUE(norm.is_training());
  EXPECT_FALSE(eval_out.requires_grad());  // no graph was recorded
  EXPECT_EQ(norm.running_mean.to_vector(), mean_before);
  EXPECT_EQ(norm.num_batches_tracked.to_vector_i64(), std::vector<int64_t>{0});
  // The same as an explicit eval-mode forward.
  norm.eval();
  EXPECT_EQ(norm.forward(x).to_vector(), eval_out.to_vector());
}

}  // namespace
}  // namespace ink::nn
