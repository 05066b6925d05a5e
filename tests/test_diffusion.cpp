// Tests for the diffusion model (models/diffusion/model.h) and its recipe: the PyTorch twin's
// golden numbers (tests/data/diffusion_golden.safetensors, made by
// `scripts/diffusion_twin.py model-golden`: names, eps, the loss, every gradient, one AdamW step,
// the EMA and a 10-step DDIM sample with CFG), the parameter count of the small config, config
// checks, the query position code (issue 13), and generation that is deterministic and leaves the
// module alone.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <thread>

#include "models/diffusion/model.h"
#include "models/diffusion/samplers.h"
#include "models/registry.h"
#include "models/word_tokenizer.h"
#include "nn/functional.h"
#include "nn/optim.h"
#include "nn/safetensors.h"
#include "tensor/ops.h"
#include "tensor/parallel.h"
#include "test_util.h"

namespace ink::diffusion {
namespace {

using ink::testing_util::expect_error;

const SafetensorsFile& golden() {
  static const SafetensorsFile file =
      load_safetensors(INK_TEST_DATA_DIR "/diffusion_golden.safetensors");
  return file;
}

Tensor golden_tensor(const std::string& name) {
  for (const auto& [n, t] : golden().tensors) {
    if (n == name) return t;
  }
  ADD_FAILURE() << "no golden tensor " << name;
  return Tensor();
}

NamedTensors golden_with_prefix(const std::string& prefix) {
  NamedTensors out;
  for (const auto& [n, t] : golden().tensors) {
    if (n.rfind(prefix, 0) == 0) out.emplace_back(n.substr(prefix.size()), t);
  }
  return out;
}

// max |a - b| / (atol + rtol |b|) <= 1 for every element.
void expect_close(const Tensor& a, const Tensor& b, double rtol, double atol,
                  const std::string& what) {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  const std::vector<float> x = a.to_vector(), y = b.to_vector();
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double r = std::abs(double(x[i]) - y[i]) / (atol + rtol * std::abs(double(y[i])));
    if (r > worst) {
      worst = r;
      at = i;
    }
  }
  EXPECT_LE(worst, 1.0) << what << ": element " << at << " is " << x[at] << ", golden " << y[at];
}

std::unique_ptr<TextToImageDiffusion> golden_model() {
  const auto& meta = golden().metadata;
  auto found = meta.find(kModelConfigKey);
  DiffusionConfig config = found != meta.end() ? DiffusionConfig::from_json(found->second)
                                               : DiffusionConfig::preset("tiny");
  auto model = std::make_unique<TextToImageDiffusion>(config);
  model->load_state_dict(golden_with_prefix("param."), /*strict=*/true);
  return model;
}

TEST(DiffusionModel, SmallConfigHasTheTwinsParameterCount) {
  TextToImageDiffusion model(DiffusionConfig::preset("small"));
  EXPECT_EQ(model.num_parameters(), 952833);
  int64_t text = 0;
  for (const auto& [name, p] : model.text_encoder->named_parameters()) text += p.numel();
  EXPECT_EQ(text, 104064);
  std::set<std::string> names;
  for (const auto& [name, p] : model.named_parameters()) names.insert(name);
  for (const char* expected :
       {"text_encoder.tok_emb.weight", "text_encoder.null_emb", "text_encoder.pos_emb",
        "text_encoder.layers.1.attn.to_q.weight", "text_encoder.layers.0.fc2.bias",
        "text_encoder.norm_out.weight", "unet.time_embed.lin1.weight", "unet.conv_in.weight",
        "unet.down.0.res.conv1.weight", "unet.down.1.attn.cross_attn.to_k.weight",
        "unet.down.1.downsample.weight", "unet.mid_attn.self_attn.to_v.bias",
        "unet.mid_attn.norm_self.weight", "unet.up.2.res.skip.weight", "unet.up.1.upsample.bias",
        "unet.norm_out.weight", "unet.conv_out.bias"}) {
    EXPECT_TRUE(names.count(expected)) << expected;
  }
  EXPECT_FALSE(names.count("unet.down.2.downsample.weight"));
  EXPECT_FALSE(names.count("unet.up.0.upsample.weight"));
  EXPECT_FALSE(names.count("unet.down.0.attn.norm_cross.weight"));
}

TEST(DiffusionModel, ZeroInitialisedBranchesStartAsTheIdentity) {
  TextToImageDiffusion model(DiffusionConfig::preset("tiny"));
  for (const auto& [name, p] : model.named_parameters()) {
    const bool zero = name.find(".conv2.") != std::string::npos ||
                      (name.find("unet.") == 0 && name.find(".to_out.") != std::string::npos);
    if (!zero) continue;
    for (float v : p.to_vector()) ASSERT_EQ(v, 0.0f) << name;
  }
}

TEST(DiffusionGolden, TheTwinsStateDictLoadsStrictly) {
  auto model = golden_model();
  EXPECT_EQ(model->state_dict().size(), golden_with_prefix("param.").size());
}

TEST(DiffusionGolden, EpsLossAndEveryGradientMatchPyTorch) {
  auto model = golden_model();
  const Tensor x0 = golden_tensor("input.x0");
  Tensor tokens = golden_tensor("input.tokens").clone();
  const Tensor t = golden_tensor("input.t");
  const Tensor noise = golden_tensor("input.noise");
  const Tensor drop = golden_tensor("input.drop");
  const int64_t b = x0.size(0), length = tokens.size(1);
  for (int64_t i = 0; i < b; ++i) {
    if (drop.to_vector_i64()[i] != 0) {
      for (int64_t j = 0; j < length; ++j) tokens.data_i64()[i * length + j] = 0;
    }
  }
  const Tensor x_t = model->schedule().add_noise(x0, noise, t);
  Tensor t_float = empty({b});
  for (int64_t i = 0; i < b; ++i) t_float.data()[i] = static_cast<float>(t.to_vector_i64()[i]);
  const Tensor eps = model->forward(x_t, t_float, tokens);
  expect_close(eps, golden_tensor("output.eps_pred"), 1e-3, 2e-5, "eps");
  const Tensor loss = nn::functional::mse_loss(eps, noise);
  EXPECT_NEAR(loss.item(), golden_tensor("output.loss").to_vector()[0], 2e-5);
  model->zero_grad();
  loss.backward();
  const NamedTensors grads = golden_with_prefix("grad.");
  ASSERT_EQ(grads.size(), model->named_parameters().size());
  for (const auto& [name, g] : grads) {
    bool found = false;
    for (const auto& [n, p] : model->named_parameters()) {
      if (n != name) continue;
      found = true;
      ASSERT_TRUE(p.grad().defined()) << name;
      expect_close(p.grad(), g, 2e-3, 2e-6, "grad " + name);
    }
    EXPECT_TRUE(found) << name;
  }

  // One AdamW step (from the golden gradients, so that it checks the optimiser alone: Adam's first
  // step is g / (|g| + eps), which amplifies float32 noise in tiny gradients) and the EMA after it.
  for (const auto& [name, p] : model->named_parameters()) {
    for (const auto& [n, g] : grads) {
      if (n == name) Tensor(p).set_grad(g.clone());
    }
  }
  const auto& meta = golden().metadata;
  nn::AdamWOptions options;
  options.lr = std::stod(meta.at("lr"));
  options.betas = {std::stod(meta.at("beta1")), std::stod(meta.at("beta2"))};
  options.eps = std::stod(meta.at("eps"));
  options.weight_decay = std::stod(meta.at("weight_decay"));
  auto before = std::make_unique<TextToImageDiffusion>(model->config());
  before->load_state_dict(golden_with_prefix("param."));
  nn::EMA ema(*before, std::stod(meta.at("ema_decay")));
  nn::AdamW adamw(model->named_parameters(), options);
  adamw.step();
  const NamedTensors after = golden_with_prefix("adamw.");
  for (const auto& [name, p] : model->named_parameters()) {
    for (const auto& [n, v] : after) {
      if (n == name) expect_close(p, v, 1e-5, 1e-6, "adamw " + name);
    }
  }
  ema.update(*model);
  ema.copy_to(*before);
  const NamedTensors ema_golden = golden_with_prefix("ema.");
  for (const auto& [name, p] : before->named_parameters()) {
    for (const auto& [n, v] : ema_golden) {
      if (n == name) expect_close(p, v, 1e-5, 1e-6, "ema " + name);
    }
  }
}

TEST(DiffusionGolden, TenStepDdimWithGuidanceMatchesPyTorch) {
  auto model = golden_model();
  const double guidance = std::stod(golden().metadata.at("guidance"));
  const auto steps = static_cast<int64_t>(std::stoll(golden().metadata.at("ddim_steps")));
  std::vector<int64_t> ids = golden_tensor("ddim.tokens").to_vector_i64();
  const std::vector<int64_t> negative = golden_tensor("ddim.negative_tokens").to_vector_i64();
  ids.insert(ids.end(), negative.begin(), negative.end());
  const int64_t length = golden_tensor("ddim.tokens").size(1);
  const Tensor tokens = from_vector_i64(ids, {static_cast<int64_t>(ids.size()) / length, length});
  NoGradGuard no_grad;
  const auto text = model->text_encoder->forward(tokens);
  struct Cond {
    Tensor context, mask;
  };
  const Denoiser net = [&](const Tensor& x, const Tensor& t, const std::any& cond) {
    const auto& c = std::any_cast<const Cond&>(cond);
    Tensor tf = empty({t.size(0)});
    for (int64_t i = 0; i < t.size(0); ++i) tf.data()[i] = static_cast<float>(t.to_vector_i64()[i]);
    return model->unet->forward(x, tf, c.context, c.mask);
  };
  const std::any cond = Cond{text.context, text.key_mask};
  Generator gen(0);
  SampleOptions options;
  options.clip_x0 = false;
  const auto timesteps = trailing_timesteps(1000, steps);
  const SampleResult unclipped =
      sample_ddim(classifier_free_guidance(net, guidance), golden_tensor("ddim.x_T"), cond,
                  model->schedule(), timesteps, gen, options);
  expect_close(unclipped.x0, golden_tensor("ddim.x0_unclipped"), 2e-3, 2e-4, "ddim unclipped");
  const SampleResult clipped =
      sample_ddim(classifier_free_guidance(net, guidance), golden_tensor("ddim.x_T"), cond,
                  model->schedule(), timesteps, gen);
  expect_close(clipped.x0, golden_tensor("ddim.x0"), 2e-3, 2e-4, "ddim");
}

TEST(DiffusionModel, ConfigJsonRoundTripsAndBadConfigsAreRefused) {
  DiffusionConfig c = DiffusionConfig::preset("tiny");
  c.in_channels = 3;
  c.image_size = 32;
  const DiffusionConfig back = DiffusionConfig::from_json(c.to_json());
  EXPECT_EQ(back.to_json(), c.to_json());
  expect_error([] { DiffusionConfig::preset("huge"); }, "unknown config \"huge\"");
  expect_error([] { DiffusionConfig::from_json("{\"ch\": 30}"); }, "do not split into 8 groups");
  expect_error([] { DiffusionConfig::from_json("{\"image_size\": 27}"); }, "does not halve");
  expect_error([] { DiffusionConfig::from_json("[1]"); }, "expected a JSON object");
  expect_error([] { DiffusionConfig::from_json("{\"tokenizer\": \"bpe\"}"); },
               "tokenizer must be \"char\" or \"word\"");
  // The prediction: written only for v (the eps configs stay as the twin writes them).
  EXPECT_EQ(c.to_json().find("prediction"), std::string::npos);
  c.prediction = "v";
  EXPECT_EQ(DiffusionConfig::from_json(c.to_json()).prediction, "v");
  expect_error([] { DiffusionConfig::from_json("{\"prediction\": \"x0\"}"); },
               "prediction must be \"eps\" or \"v\", got \"x0\"");
  TextToImageDiffusion model(DiffusionConfig::preset("tiny"));
  expect_error(
      [&] {
        model.unet->forward(zeros({1, 1, 32, 32}), zeros({1}), Tensor(), Tensor());
      },
      "unet: expected x [B, 1, 28, 28], got [1, 1, 32, 32]");
}

// The fixed code query_positions adds to the cross-attention queries, at two tokens of a 2x4
// grid with C = 8 (values from Python's math.sin/cos): channels [sin y, cos y, sin x, cos x],
// each block k = 0, 1 of pi (k+1) (y+0.5)/H or pi (k+1) (x+0.5)/W.
TEST(DiffusionModel, QueryPositionTableHasTheCosineSeriesValues) {
  const Tensor table = query_position_table(2, 4, 8);
  ASSERT_EQ(table.shape(), (Shape{1, 8, 8}));
  const std::vector<float> v = table.to_vector();
  const std::vector<double> first = {0.70710678, 1.0,        0.70710678, 0.0,
                                     0.38268343, 0.70710678, 0.92387953, 0.70710678};
  const std::vector<double> y1_x2 = {0.70710678, -1.0,        -0.70710678, 0.0,
                                     0.92387953, -0.70710678, -0.38268343, -0.70710678};
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_NEAR(v[i], first[i], 1e-6) << "token (0, 0), channel " << i;
    EXPECT_NEAR(v[6 * 8 + i], y1_x2[i], 1e-6) << "token (1, 2), channel " << i;
  }
  expect_error([] { query_position_table(2, 2, 6); },
               "query_position_table: needs H, W >= 1 and C a positive multiple of 4, got 2x2x6");
  expect_error([] { query_position_table(0, 2, 8); }, "got 0x2x8");
}

// query_positions: in the config JSON only when on (the configs written before it, and the
// twin's, stay as they were), read back, and refused where an attention level's channels do not
// split into the code's four blocks.
TEST(DiffusionModel, QueryPositionsConfigRoundTripsAndNeedsChannelsDivisibleByFour) {
  DiffusionConfig c = DiffusionConfig::preset("tiny");
  EXPECT_EQ(c.to_json().find("query_positions"), std::string::npos);
  EXPECT_FALSE(DiffusionConfig::from_json(c.to_json()).query_positions);
  c.query_positions = true;
  EXPECT_THAT(c.to_json(), ::testing::HasSubstr("\"query_positions\":true"));
  const DiffusionConfig back = DiffusionConfig::from_json(c.to_json());
  EXPECT_TRUE(back.query_positions);
  EXPECT_EQ(back.to_json(), c.to_json());
  expect_error([] { DiffusionConfig::from_json("{\"query_positions\": 1}"); },
               "diffusion config: \"query_positions\" must be true or false, got 1");

  // Levels of 6 and 12 channels: only a level with attention (or the last, which has the
  // middle block) needs a multiple of 4.
  const std::string narrow =
      R"("ch": 6, "groups": 2, "heads": 2, "context_dim": 16, "channel_mult": [1, 2])";
  EXPECT_NO_THROW(DiffusionConfig::from_json(
      "{" + narrow + R"(, "attention_levels": [1], "query_positions": true})"));
  EXPECT_NO_THROW(DiffusionConfig::from_json("{" + narrow + R"(, "attention_levels": [0, 1]})"));
  expect_error(
      [&] {
        DiffusionConfig::from_json("{" + narrow +
                                   R"(, "attention_levels": [0, 1], "query_positions": true})");
      },
      "query_positions needs the channels of every level with attention divisible by 4 (the "
      "code's four sin/cos blocks), level 0 has 6");
}

// The code has no parameters: a U-Net with query_positions has the same named parameters as one
// without (so checkpoints keep their names), and with the same weights it gives other eps.
TEST(DiffusionModel, QueryPositionsChangeEpsButNotTheParameters) {
  DiffusionConfig config = DiffusionConfig::preset("tiny");
  Generator init(3);
  TextToImageDiffusion plain(config, &init);
  // The zero-initialised to_out layers would hide the cross-attention (and so the code).
  Generator perturb(11);
  for (auto& [name, p] : plain.named_parameters()) {
    const Tensor noise = randn(p.shape(), &perturb);
    for (int64_t i = 0; i < p.numel(); ++i) p.data()[i] += 0.05f * noise.data()[i];
  }
  config.query_positions = true;
  Generator init_positions(5);
  TextToImageDiffusion positions(config, &init_positions);
  const NamedTensors a = plain.named_parameters(), b = positions.named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_EQ(a[i].second.shape(), b[i].second.shape()) << a[i].first;
  }
  positions.load_state_dict(plain.state_dict(), /*strict=*/true);

  Generator gen(7);
  const Tensor x = randn({2, 1, 28, 28}, &gen);
  const Tensor t = from_vector({10.0f, 900.0f}, {2});
  std::vector<int64_t> ids = plain.tokenizer().encode("circle");
  const std::vector<int64_t> empty_ids = plain.tokenizer().encode("");
  ids.insert(ids.end(), empty_ids.begin(), empty_ids.end());
  const Tensor tokens = from_vector_i64(ids, {2, static_cast<int64_t>(empty_ids.size())});
  NoGradGuard no_grad;
  const std::vector<float> off = plain.forward(x, t, tokens).to_vector();
  const std::vector<float> on = positions.forward(x, t, tokens).to_vector();
  ASSERT_EQ(off.size(), on.size());
  double largest = 0.0;
  for (size_t i = 0; i < off.size(); ++i) {
    largest = std::max(largest, static_cast<double>(std::fabs(off[i] - on[i])));
  }
  EXPECT_GT(largest, 1e-3);
}

// phrase_attention: in the config JSON only when on, read back, refused with the character
// tokenizer (its phrases are joined by the word "and").
TEST(DiffusionModel, PhraseAttentionConfigRoundTripsAndNeedsTheWordTokenizer) {
  DiffusionConfig c = DiffusionConfig::preset("tiny");
  EXPECT_EQ(c.to_json().find("phrase_attention"), std::string::npos);
  c.phrase_attention = true;
  expect_error([&] { c.validate(); },
               "diffusion config: phrase_attention needs the word tokenizer (its phrases are "
               "joined by the word \"and\"), got the \"char\" tokenizer");
  c.tokenizer = "word";
  c.vocab_size = static_cast<int64_t>(WordTokenizer::vocabulary().size());
  c.max_length = WordTokenizer::kDefaultMaxLength;
  EXPECT_THAT(c.to_json(), ::testing::HasSubstr("\"phrase_attention\":true"));
  const DiffusionConfig back = DiffusionConfig::from_json(c.to_json());
  EXPECT_TRUE(back.phrase_attention);
  EXPECT_EQ(back.to_json(), c.to_json());
  expect_error([] { DiffusionConfig::from_json("{\"phrase_attention\": \"yes\"}"); },
               "diffusion config: \"phrase_attention\" must be true or false, got \"yes\"");
}

// The mask for "a red circle and blue square" (ids of the word tokenizer, then padding): the null
// token sees itself alone; each word sees the null token and its own phrase ("and" opens the
// second); padding is never seen as a key.
TEST(DiffusionModel, PhraseMaskSplitsThePromptAtAnd) {
  const WordTokenizer tok(8);
  const std::vector<int64_t> ids = tok.encode("a red circle and blue square");
  const Tensor tokens = from_vector_i64(ids, {1, 8});
  Tensor key_mask = zeros({1, 9});
  for (int64_t j = 0; j < 7; ++j) key_mask.data()[j] = 1.0f;  // null + 6 words
  const int64_t and_id = WordTokenizer::token_of("and");
  const Tensor mask = DiffusionTextEncoder::phrase_mask(tokens, key_mask, and_id);
  ASSERT_EQ(mask.shape(), (Shape{1, 9, 9}));
  // Padding continues the last phrase (its queries' rows are never read).
  const std::vector<int> phrase = {-1, 0, 0, 0, 1, 1, 1, 1, 1};
  const std::vector<float> m = mask.to_vector();
  for (int64_t i = 0; i < 9; ++i) {
    for (int64_t j = 0; j < 9; ++j) {
      const bool want =
          j < 7 && (j == 0 || phrase[static_cast<size_t>(i)] == phrase[static_cast<size_t>(j)]);
      EXPECT_EQ(m[static_cast<size_t>(i * 9 + j)], want ? 1.0f : 0.0f) << i << ", " << j;
    }
  }
  expect_error(
      [&] {
        DiffusionTextEncoder::phrase_mask(tokens, zeros({1, 8}), and_id);
      },
      "phrase_mask: expected Int64 tokens [B, T] and a Float32 key mask [B, T+1], got "
      "[1, 8] and [1, 8]");
}

// With phrase_attention a word of the second object is encoded without the first object's words:
// changing "red" leaves every output of the second phrase (and the null token) bit-identical,
// and it changes them without the mask. The parameters are the same either way.
TEST(DiffusionModel, PhraseAttentionKeepsTheObjectsApartInTheTextEncoder) {
  DiffusionConfig config = DiffusionConfig::preset("tiny");
  config.tokenizer = "word";
  config.vocab_size = static_cast<int64_t>(WordTokenizer::vocabulary().size());
  config.max_length = WordTokenizer::kDefaultMaxLength;
  Generator init(3);
  DiffusionTextEncoder plain(config, &init);
  config.phrase_attention = true;
  Generator init2(4);
  DiffusionTextEncoder phrases(config, &init2);
  phrases.load_state_dict(plain.state_dict(), /*strict=*/true);
  const WordTokenizer tok;
  const auto encode = [&](DiffusionTextEncoder& encoder, const std::string& prompt) {
    const std::vector<int64_t> ids = tok.encode(prompt);
    NoGradGuard no_grad;
    return encoder.forward(from_vector_i64(ids, {1, static_cast<int64_t>(ids.size())}))
        .context.to_vector();
  };
  const std::string red = "a red circle on the left and a blue square on the right";
  const std::string green = "a green circle on the left and a blue square on the right";
  const int64_t d = config.context_dim;
  const int64_t second = 7;  // "and" is word 7, position 7 after the null token
  for (bool masked : {true, false}) {
    DiffusionTextEncoder& encoder = masked ? phrases : plain;
    const std::vector<float> a = encode(encoder, red), b = encode(encoder, green);
    bool first_differs = false, second_same = true;
    for (int64_t i = 0; i < d; ++i) first_differs |= a[d + i] != b[d + i];  // "a" of phrase 0
    for (int64_t p = second; p <= 13; ++p) {
      for (int64_t i = 0; i < d; ++i) second_same &= a[p * d + i] == b[p * d + i];
    }
    for (int64_t i = 0; i < d; ++i) second_same &= !masked || a[i] == b[i];  // null token
    EXPECT_TRUE(first_differs) << (masked ? "masked" : "plain");
    EXPECT_EQ(second_same, masked);
  }
}

// The same weights read as a v-prediction sample through eps_from_v: other pixels, still in [0, 1].
TEST(DiffusionModel, AVPredictionIsConvertedToEpsForTheSampler) {
  DiffusionConfig config = DiffusionConfig::preset("tiny");
  Generator init_eps(3), init_v(3);
  TextToImageDiffusion eps_model(config, &init_eps);
  config.prediction = "v";
  TextToImageDiffusion v_model(config, &init_v);
  for (auto* model : {&eps_model, &v_model}) {
    // The zero-initialised output branches would make every prediction 0 (and so the same).
    for (auto& [name, p] : model->named_parameters()) {
      Generator gen(11);
      const Tensor noise = randn(p.shape(), &gen);
      for (int64_t i = 0; i < p.numel(); ++i) p.data()[i] += 0.05f * noise.data()[i];
    }
  }
  GenerateOptions options;
  options.steps = 3;
  Generator g1(5), g2(5);
  const std::vector<float> a = eps_model.generate("circle", 2, g1, options).to_vector();
  const std::vector<float> b = v_model.generate("circle", 2, g2, options).to_vector();
  EXPECT_NE(a, b);
  for (const float x : b) EXPECT_TRUE(x >= 0.0f && x <= 1.0f) << x;
}

TEST(DiffusionModel, GenerateIsDeterministicAtAnyThreadCountAndFromSeveralThreads) {
  Generator init(3);
  TextToImageDiffusion model(DiffusionConfig::preset("tiny"), &init);
  GenerateOptions options;
  options.steps = 3;
  const auto run = [&](uint64_t seed) {
    Generator gen(seed);
    return model.generate("circle", 2, gen, options);
  };
  const int threads = get_num_threads();
  set_num_threads(1);
  const Tensor one = run(5);
  set_num_threads(2);
  const Tensor two = run(5);
  set_num_threads(threads);
  EXPECT_EQ(one.shape(), (Shape{2, 1, 28, 28}));
  EXPECT_EQ(one.to_vector(), two.to_vector());
  EXPECT_NE(run(6).to_vector(), one.to_vector());
  for (float v : one.to_vector()) ASSERT_TRUE(v >= 0.0f && v <= 1.0f);
  // Two threads sampling from one model at once get what one thread gets.
  Tensor a, b;
  std::thread ta([&] { a = run(5); });
  std::thread tb([&] { b = run(5); });
  ta.join();
  tb.join();
  EXPECT_EQ(a.to_vector(), one.to_vector());
  EXPECT_EQ(b.to_vector(), one.to_vector());
  EXPECT_TRUE(model.is_training());  // generation never flips the module's mode
}

TEST(DiffusionModel, ACheckpointRebuildsTheModelFromItsMetadata) {
  Generator init(4);
  TextToImageDiffusion model(DiffusionConfig::preset("tiny"), &init);
  const std::string path = ::testing::TempDir() + "/diffusion_model.safetensors";
  save_model(model, path);
  const auto loaded = load_model(path);
  EXPECT_EQ(loaded->kind(), "diffusion");
  EXPECT_EQ(loaded->config_json(), model.config_json());
  GenerateOptions options;
  options.steps = 2;
  Generator g1(1), g2(1);
  auto* d = dynamic_cast<TextToImageDiffusion*>(loaded.get());
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->generate("square", 1, g1, options).to_vector(),
            model.generate("square", 1, g2, options).to_vector());
}

}  // namespace
}  // namespace ink::diffusion
