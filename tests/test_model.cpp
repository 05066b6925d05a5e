// Tests for the text-to-image model and its trainer: sizes and names (PyTorch's), forward and
// generate behaviour, a short training run, and bit-exact resume and thread independence.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "models/trainer.h"
#include "nn/safetensors.h"
#include "tensor/inkgrad.h"

namespace ink {
namespace {

using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

std::filesystem::path temp_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("inkgrad_test_model_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(TextToImageModel, HasTheNotebooksParameterCount) {
  TextToImageModel model;
  EXPECT_EQ(model.num_parameters(), 573520);
}

TEST(TextToImageModel, StateDictNamesMatchPyTorch) {
  TextToImageModel model;
  std::vector<std::string> names;
  for (const auto& [name, tensor] : model.state_dict()) names.push_back(name);
  const std::vector<std::string> expected = {
      "text_encoder.embedding.weight",
      "text_encoder.projection.0.weight",
      "text_encoder.projection.0.bias",
      "text_encoder.projection.2.weight",
      "text_encoder.projection.2.bias",
      "image_generator.decoder.0.weight",
      "image_generator.decoder.0.bias",
      "image_generator.decoder.1.weight",
      "image_generator.decoder.1.bias",
      "image_generator.decoder.1.running_mean",
      "image_generator.decoder.1.running_var",
      "image_generator.decoder.1.num_batches_tracked",
      "image_generator.decoder.3.weight",
      "image_generator.decoder.3.bias",
      "image_generator.decoder.4.weight",
      "image_generator.decoder.4.bias",
      "image_generator.decoder.4.running_mean",
      "image_generator.decoder.4.running_var",
      "image_generator.decoder.4.num_batches_tracked",
      "image_generator.decoder.6.weight",
      "image_generator.decoder.6.bias",
  };
  EXPECT_THAT(names, ElementsAreArray(expected));
}

TEST(TextToImageModel, ForwardGivesImagesInTheUnitInterval) {
  Generator gen(1);
  TextToImageModel model(TextToImageConfig{}, &gen);
  CharTokenizer tok;
  std::vector<int64_t> ids;
  for (const char* p : {"circle", "square", "", "cross"}) {
    auto t = tok.encode(p);
    ids.insert(ids.end(), t.begin(), t.end());
  }
  Tensor images = model.forward(from_vector_i64(ids, {4, 32}), model.sample_noise(4, gen));
  EXPECT_EQ(images.shape(), (Shape{4, 1, 28, 28}));
  for (float v : images.to_vector()) {
    ASSERT_TRUE(std::isfinite(v));  // the empty prompt must not divide by zero
    ASSERT_GE(v, 0.0f);
    ASSERT_LE(v, 1.0f);
  }
}

TEST(TextToImageModel, GenerateUsesEvalModeAndFreshNoise) {
  Generator gen(2);
  TextToImageModel model(TextToImageConfig{}, &gen);
  model.train();
  Tensor images = model.generate("circle", 3, gen);
  EXPECT_TRUE(model.is_training());  // the previous mode is restored
  EXPECT_FALSE(images.requires_grad());
  ASSERT_EQ(images.shape(), (Shape{3, 1, 28, 28}));
  const auto v = images.to_vector();
  EXPECT_NE(std::vector<float>(v.begin(), v.begin() + 784),
            std::vector<float>(v.begin() + 784, v.begin() + 2 * 784));
  Generator a(5), b(5);
  EXPECT_EQ(model.generate("cross", 2, a).to_vector(), model.generate("cross", 2, b).to_vector());
  // One sample works in eval mode (BatchNorm uses running statistics).
  EXPECT_EQ(model.generate("square", 1, gen).shape(), (Shape{1, 1, 28, 28}));
}

TEST(TextToImageModel, GenerateRejectsPromptsWithNoKnownCharacters) {
  Generator gen(3);
  TextToImageModel model(TextToImageConfig{}, &gen);
  for (const char* bad : {"", "1234!?", "\xc3\xa9\xc3\xa9"}) {
    try {
      model.generate(bad, 2, gen);
      FAIL() << "expected an error for \"" << bad << "\"";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("has no known characters"));
    }
  }
  EXPECT_THROW(model.generate("circle", 0, gen), Error);
}

TEST(TrainConfig, RejectsBadSettings) {
  auto expect_invalid = [](TrainConfig c, const std::string& text) {
    try {
      c.validate();
      FAIL() << "expected: " << text;
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr(text));
    }
  };
  TrainConfig c;
  c.epochs = 0;
  expect_invalid(c, "epochs must be in [1, 1000000], got 0");
  c = {};
  c.batch_size = 1;
  expect_invalid(c, "batch_size must be in [2, 100000]");
  c = {};
  c.samples_per_prompt = -5;
  expect_invalid(c, "samples_per_prompt must be in [1, 1000000], got -5");
  c = {};
  c.lr = std::nan("");
  expect_invalid(c, "lr must be in (0, 10]");
  c = {};
  c.samples_per_prompt = 7;  // 63 samples in batches of 62 leave 1
  c.batch_size = 62;
  expect_invalid(c, "leave a last batch of 1 sample");
}

TrainConfig tiny_config() {
  TrainConfig c;
  c.epochs = 3;
  c.samples_per_prompt = 24;  // 216 samples: 6 batches of 32 + one of 24
  c.batch_size = 32;
  c.seed = 7;
  return c;
}

TEST(Trainer, AShortRunReducesTheLoss) {
  Trainer trainer(tiny_config());
  std::vector<float> step_losses;
  for (int e = 0; e < 6; ++e) {
    trainer.train_epoch([&](const StepInfo& s) { step_losses.push_back(s.loss); });
  }
  ASSERT_EQ(trainer.losses().size(), 6u);
  EXPECT_EQ(step_losses.size(), 6u * 7u);
  // Sigmoid outputs start near 0.5 against mostly-black targets: MSE ~0.25.
  EXPECT_GT(step_losses.front(), 0.15f);
  EXPECT_LT(trainer.losses().back(), 0.12f);
  EXPECT_LT(trainer.losses().back(), trainer.losses().front());
}

TEST(Trainer, ResumeGivesBitIdenticalLossesAndWeights) {
  const auto dir = temp_dir("resume");
  Trainer straight(tiny_config());
  for (int e = 0; e < 3; ++e) straight.train_epoch();

  {
    Trainer first(tiny_config());
    first.train_epoch();
    first.train_epoch();
    first.save_checkpoint(dir.string());
  }
  Trainer resumed(tiny_config());
  resumed.resume(dir.string());
  EXPECT_EQ(resumed.epoch(), 2);
  resumed.train_epoch();
  EXPECT_EQ(resumed.losses(), straight.losses());
  const auto a = straight.model().state_dict();
  const auto b = resumed.model().state_dict();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].second.dtype() == DType::Int64) {
      EXPECT_EQ(a[i].second.to_vector_i64(), b[i].second.to_vector_i64()) << a[i].first;
    } else {
      EXPECT_EQ(a[i].second.to_vector(), b[i].second.to_vector()) << a[i].first;
    }
  }
  std::filesystem::remove_all(dir);
}

TEST(Trainer, BackgroundSaveWritesTheSameCheckpoint) {
  const auto sync_dir = temp_dir("sync");
  const auto async_dir = temp_dir("async");
  Trainer trainer(tiny_config());
  trainer.train_epoch();
  trainer.save_checkpoint(sync_dir.string());
  trainer.save_checkpoint_async(async_dir.string());
  trainer.train_epoch();  // trains while the files are written from the snapshot
  trainer.wait_for_checkpoint();
  for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
    const auto a = load_safetensors((sync_dir / file).string());
    const auto b = load_safetensors((async_dir / file).string());
    ASSERT_EQ(a.tensors.size(), b.tensors.size()) << file;
    EXPECT_EQ(a.metadata, b.metadata) << file;
    for (size_t i = 0; i < a.tensors.size(); ++i) {
      if (a.tensors[i].second.dtype() == DType::Float32) {
        EXPECT_EQ(a.tensors[i].second.to_vector(), b.tensors[i].second.to_vector());
      }
    }
  }
  // A failed background write surfaces at the next wait.
  trainer.save_checkpoint_async("/proc/inkgrad-cannot-write-here");
  EXPECT_THROW(trainer.wait_for_checkpoint(), Error);
  std::filesystem::remove_all(sync_dir);
  std::filesystem::remove_all(async_dir);
}

TEST(Trainer, ResumeRejectsAnotherRunsSettingsAndLeavesTheTrainerAlone) {
  const auto dir = temp_dir("mismatch");
  {
    Trainer first(tiny_config());
    first.train_epoch();
    first.save_checkpoint(dir.string());
  }
  TrainConfig other = tiny_config();
  other.batch_size = 16;
  Trainer trainer(other);
  const auto before = trainer.model().state_dict()[0].second.to_vector();
  try {
    trainer.resume(dir.string());
    FAIL() << "expected a mismatch error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("batch_size = 32, but this run uses 16"));
  }
  EXPECT_EQ(trainer.epoch(), 0);
  EXPECT_EQ(trainer.model().state_dict()[0].second.to_vector(), before);
  EXPECT_THROW(trainer.resume((dir / "missing").string()), Error);
  std::filesystem::remove_all(dir);
}

TEST(Trainer, ANonFiniteLossStopsBeforeTheUpdateAndNamesTheStep) {
  Trainer trainer(tiny_config());
  trainer.train_epoch();
  // Poison one weight: the next forward gives NaN everywhere.
  auto params = trainer.model().named_parameters();
  Tensor weight = params.back().second;  // image_generator.decoder.6.bias
  weight.data()[0] = std::nanf("");
  const auto before = params.front().second.to_vector();
  try {
    trainer.train_epoch();
    FAIL() << "expected the NaN guard to stop training";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("the loss became nan at epoch 2, step 1 of 7"));
  }
  EXPECT_EQ(trainer.epoch(), 1);                         // the failed epoch is not counted
  EXPECT_EQ(params.front().second.to_vector(), before);  // no update was applied
}

TEST(Trainer, ResultsDoNotDependOnTheThreadCount) {
  set_num_threads(1);
  Trainer one(tiny_config());
  one.train_epoch();
  set_num_threads(2);
  Trainer two(tiny_config());
  two.train_epoch();
  set_num_threads(1);
  EXPECT_EQ(one.losses(), two.losses());
  EXPECT_EQ(one.model().state_dict()[5].second.to_vector(),
            two.model().state_dict()[5].second.to_vector());
}

}  // namespace
}  // namespace ink
