// Checkpoints written by PyTorch drive inkgrad: tests/data/diffusion_torch_micro.safetensors is a
// state_dict saved by the PyTorch twin (`scripts/diffusion_twin.py write-torch ... --config micro
// --seed 3 --perturb --probe tests/data/diffusion_torch_micro_eps.json`), with the model kind and
// config in its metadata as inkgrad reads them. The registry rebuilds the model from that
// metadata alone, loads it strictly, and gives the twin's eps; `inkgrad generate` samples from it.
// tests/data/diffusion_torch_micro_qpos_eps.json is the twin's eps for the same weights with
// query_positions on (`write-torch DIR/diffusion_torch_micro.safetensors --config micro --seed 3
// --perturb --query-positions --probe ...`: the code has no parameters, so the state_dict is the
// committed one). tests/data/diffusion_torch_micro_phrase_context.json is the twin's text encoder
// context for the same weights with phrase_attention on, for rows of word token ids
// (`diffusion_twin.py text-probe tests/data/diffusion_torch_micro.safetensors --out ...`).
// (The other direction, an inkgrad checkpoint loading strictly into the twin, is
// `diffusion_twin.py check FILE [--probe JSON]`.)
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "models/diffusion/model.h"
#include "models/registry.h"
#include "nn/safetensors.h"
#include "tensor/ops.h"

namespace ink::diffusion {
namespace {

constexpr const char* kCheckpoint = INK_TEST_DATA_DIR "/diffusion_torch_micro.safetensors";

nlohmann::json probe_golden(const std::string& name) {
  std::ifstream in(INK_TEST_DATA_DIR "/" + name);
  return nlohmann::json::parse(in);
}

// The model's eps for the twin's probe_inputs() against the twin's, recorded in `golden_name`:
// x[i] = sin(0.37 i), t = [10, 900], prompts ["horizontal line", ""].
void expect_the_twins_probe_eps(TextToImageDiffusion& model, const std::string& golden_name) {
  const nlohmann::json golden = probe_golden(golden_name);
  const std::vector<int64_t> shape = golden["eps_shape"].get<std::vector<int64_t>>();
  ASSERT_EQ(shape.size(), 4u);
  Tensor x = empty(shape);
  for (int64_t i = 0; i < x.numel(); ++i) {
    x.data()[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)));
  }
  Tensor t = empty({2});
  t.data()[0] = 10.0f;
  t.data()[1] = 900.0f;
  const Tokenizer& tokenizer = model.tokenizer();
  std::vector<int64_t> ids = tokenizer.encode("horizontal line");
  const std::vector<int64_t> empty_ids = tokenizer.encode("");
  ids.insert(ids.end(), empty_ids.begin(), empty_ids.end());
  const Tensor tokens = from_vector_i64(ids, {2, static_cast<int64_t>(empty_ids.size())});
  const Tensor eps = model.forward(x, t, tokens);
  const std::vector<float> got = eps.to_vector();
  const std::vector<float> want = golden["eps"].get<std::vector<float>>();
  ASSERT_EQ(got.size(), want.size());
  double worst = 0.0, spread = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    worst = std::max(worst, static_cast<double>(std::fabs(got[i] - want[i])));
    spread = std::max(spread, static_cast<double>(std::fabs(want[i])));
  }
  EXPECT_GT(spread, 0.1) << "the probe should exercise the network, not a zero branch";
  EXPECT_LT(worst, 2e-5) << "largest |eps - twin's eps| for " << golden_name;
}

TEST(DiffusionInterop, APyTorchWrittenCheckpointRebuildsItsModelFromTheMetadata) {
  const std::unique_ptr<ImageModel> model = load_model(kCheckpoint);
  EXPECT_EQ(model->kind(), "diffusion");
  const auto* diffusion = dynamic_cast<const TextToImageDiffusion*>(model.get());
  ASSERT_NE(diffusion, nullptr);
  EXPECT_EQ(diffusion->config().ch, 8);
  EXPECT_EQ(diffusion->config().channel_mult, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(diffusion->config().context_dim, 16);
}

TEST(DiffusionInterop, APyTorchWrittenCheckpointGivesTheTwinsEps) {
  std::unique_ptr<ImageModel> model = load_model(kCheckpoint);
  auto* diffusion = dynamic_cast<TextToImageDiffusion*>(model.get());
  ASSERT_NE(diffusion, nullptr);
  expect_the_twins_probe_eps(*diffusion, "diffusion_torch_micro_eps.json");
}

// The twin adds the same query position code as inkgrad (issue 13).
TEST(DiffusionInterop, QueryPositionsGiveTheTwinsEps) {
  const SafetensorsFile file = load_safetensors(kCheckpoint);
  DiffusionConfig config = DiffusionConfig::from_json(file.metadata.at(kModelConfigKey));
  ASSERT_FALSE(config.query_positions);
  config.query_positions = true;
  TextToImageDiffusion model(config);
  model.load_state_dict(file.tensors, /*strict=*/true);
  expect_the_twins_probe_eps(model, "diffusion_torch_micro_qpos_eps.json");
}

// The twin masks the text encoder's attention by phrase as inkgrad does (issue 13). The micro
// checkpoint has a character vocabulary of 28 ids, which covers the word ids the probe uses; the
// encoder is built with the word tokenizer that phrase_attention needs.
TEST(DiffusionInterop, PhraseAttentionGivesTheTwinsTextContext) {
  const SafetensorsFile file = load_safetensors(kCheckpoint);
  DiffusionConfig config = DiffusionConfig::from_json(file.metadata.at(kModelConfigKey));
  config.tokenizer = "word";
  const nlohmann::json golden = probe_golden("diffusion_torch_micro_phrase_context.json");
  const auto rows = golden["tokens"].get<std::vector<std::vector<int64_t>>>();
  std::vector<int64_t> ids;
  for (const auto& row : rows) ids.insert(ids.end(), row.begin(), row.end());
  const Tensor tokens =
      from_vector_i64(ids, {static_cast<int64_t>(rows.size()), config.max_length});
  const std::vector<float> want = golden["context"].get<std::vector<float>>();
  const std::string prefix = "text_encoder.";
  NamedTensors weights;
  for (const auto& [name, tensor] : file.tensors) {
    if (name.rfind(prefix, 0) == 0) weights.emplace_back(name.substr(prefix.size()), tensor);
  }
  for (bool phrases : {true, false}) {
    config.phrase_attention = phrases;
    DiffusionTextEncoder encoder(config, nullptr);
    encoder.load_state_dict(weights, /*strict=*/true);
    NoGradGuard no_grad;
    const std::vector<float> got = encoder.forward(tokens).context.to_vector();
    ASSERT_EQ(got.size(), want.size());
    double worst = 0.0;
    for (size_t i = 0; i < got.size(); ++i) {
      worst = std::max(worst, static_cast<double>(std::fabs(got[i] - want[i])));
    }
    if (phrases) {
      EXPECT_LT(worst, 2e-5) << "largest |context - twin's context|";
    } else {
      EXPECT_GT(worst, 1e-3) << "without the mask the context should differ from the twin's";
    }
  }
}

TEST(DiffusionInterop, InkgradGenerateSamplesFromAPyTorchWrittenCheckpoint) {
  namespace fs = std::filesystem;
  const fs::path out = fs::temp_directory_path() / "inkgrad_test_interop_generate.png";
  fs::remove(out);
  const std::string command = std::string("'") + INKGRAD_BINARY + "' generate --checkpoint '" +
                              kCheckpoint + "' --prompt circle -n 2 --steps 4 --seed 5 --out '" +
                              out.string() + "' >/dev/null 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  ASSERT_TRUE(fs::exists(out));
  EXPECT_GT(fs::file_size(out), 100u);
  fs::remove(out);
}

}  // namespace
}  // namespace ink::diffusion
