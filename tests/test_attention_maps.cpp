// The cross-attention maps of a generation (GenerateOptions::attention): nn::Attention's
// weights against its own output, the observer's scope, and the maps' shape, normalisation,
// determinism, conditional half and that collecting them leaves the pictures bit-identical.
#include <algorithm>
#include <cmath>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "models/diffusion/model.h"
#include "models/word_tokenizer.h"
#include "nn/norm_attention.h"
#include "tensor/ops.h"
#include "tests/test_util.h"

namespace ink {
namespace {

using diffusion::AttentionMaps;
using diffusion::DiffusionConfig;
using diffusion::GenerateOptions;
using diffusion::TextToImageDiffusion;
using ::testing::HasSubstr;
using testing_util::error_of;

// Counts the weights it is given for the layers it watches (all when `only` is null).
class CountingObserver : public nn::AttentionObserver {
 public:
  explicit CountingObserver(const nn::Attention* only = nullptr) : only_(only) {}
  int64_t rows_wanted(const nn::Attention& layer, int64_t batch) const override {
    return only_ == nullptr || only_ == &layer ? std::min(batch, max_rows) : 0;
  }
  void record(const nn::Attention&, const Tensor& weights) override {
    ++calls;
    last = weights;
  }
  int calls = 0;
  int64_t max_rows = 1 << 30;
  Tensor last;

 private:
  const nn::Attention* only_;
};

TEST(AttentionWeights, ReproduceForwardsOutputAndRespectTheMask) {
  Generator gen(5);
  nn::Attention attention(8, 6, 2, &gen);
  const Tensor x = randn({2, 5, 8}, &gen);
  const Tensor context = randn({2, 4, 6}, &gen);
  Tensor mask = ones({2, 4});
  mask.data()[1 * 4 + 3] = 0.0f;  // the last key of row 1 is padding
  mask.data()[1 * 4 + 2] = 0.0f;
  const Tensor weights = attention.attention_weights(x, context, mask);
  ASSERT_EQ(weights.shape(), (Shape{2, 2, 5, 4}));
  const std::vector<float> w = weights.to_vector();
  for (int64_t row = 0; row < 2 * 2 * 5; ++row) {
    double total = 0.0;
    for (int64_t j = 0; j < 4; ++j) {
      EXPECT_GE(w[row * 4 + j], 0.0f);
      total += w[row * 4 + j];
    }
    EXPECT_NEAR(total, 1.0, 1e-6) << "row " << row;
    if (row >= 2 * 5) {  // batch row 1: its masked keys get nothing
      EXPECT_EQ(w[row * 4 + 2], 0.0f);
      EXPECT_EQ(w[row * 4 + 3], 0.0f);
    }
  }
  // to_out(P v) with P the returned weights is forward's output.
  const Tensor v = permute(reshape(attention.to_v->forward(context), {2, 4, 2, 4}), {0, 2, 1, 3});
  const Tensor heads = matmul(weights, v);  // [B, heads, L, d]
  const Tensor expected =
      attention.to_out->forward(reshape(permute(heads, {0, 2, 1, 3}), {2, 5, 8}));
  const std::vector<float> got = attention.forward(x, context, mask).to_vector();
  const std::vector<float> want = expected.to_vector();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << i;

  // Every key masked: zeros, never NaN.
  const Tensor none = attention.attention_weights(x, context, zeros({2, 4}));
  for (float value : none.to_vector()) EXPECT_EQ(value, 0.0f);
  EXPECT_THAT(error_of([&] {
                attention.attention_weights(x, context, ones({2, 3}));
              }),
              HasSubstr("key_mask must be [2, 4] or [2, 5, 4], got [2, 3]"));
}

TEST(AttentionObserver, SeesOnlyTheLayersItWantsOnItsOwnThreadWhileInstalled) {
  Generator gen(6);
  nn::Attention first(8, 8, 2, &gen), second(8, 8, 2, &gen);
  const Tensor x = randn({1, 3, 8}, &gen);
  CountingObserver watch_first(&first);
  first.forward(x);
  EXPECT_EQ(watch_first.calls, 0);  // not installed yet
  {
    const nn::AttentionObserverScope scope(&watch_first);
    EXPECT_EQ(nn::AttentionObserverScope::current(), &watch_first);
    const std::vector<float> observed = first.forward(x).to_vector();
    second.forward(x);
    std::thread other([&] { first.forward(x); });  // another thread has no observer
    other.join();
    EXPECT_EQ(watch_first.calls, 1);
    ASSERT_TRUE(watch_first.last.defined());
    EXPECT_EQ(watch_first.last.shape(), (Shape{1, 2, 3, 3}));
    EXPECT_EQ(watch_first.last.to_vector(), first.attention_weights(x).to_vector());
    {
      CountingObserver everything;
      const nn::AttentionObserverScope inner(&everything);
      second.forward(x);
      EXPECT_EQ(everything.calls, 1);
      // Only the rows asked for: the first of a batch of two.
      everything.max_rows = 1;
      const Tensor pair = randn({2, 3, 8}, &gen);
      second.forward(pair);
      EXPECT_EQ(everything.calls, 2);
      const std::vector<float> all = second.attention_weights(pair).to_vector();
      EXPECT_EQ(everything.last.to_vector(), std::vector<float>(all.begin(), all.begin() + 18));
    }
    EXPECT_EQ(nn::AttentionObserverScope::current(), &watch_first);  // restored
    // Observing leaves the output as it is.
    EXPECT_EQ(observed, first.forward(x).to_vector());
  }
  EXPECT_EQ(nn::AttentionObserverScope::current(), nullptr);
}

// The tiny model, untrained but with fixed weights.
TextToImageDiffusion& tiny_model() {
  static TextToImageDiffusion* model = [] {
    Generator init(2024);
    return new TextToImageDiffusion(DiffusionConfig::preset("tiny"), &init);
  }();
  return *model;
}

GenerateOptions few_steps(const std::string& sampler = "ddim", int64_t steps = 3) {
  GenerateOptions options;
  options.sampler = sampler;
  options.steps = steps;
  options.guidance = 3.0;
  return options;
}

TEST(AttentionMaps, OneMapPerTokenThatSumsToOneAtEveryPixel) {
  TextToImageDiffusion& model = tiny_model();
  AttentionMaps maps;
  GenerateOptions options = few_steps("euler", 4);
  options.attention = &maps;
  options.batch = 2;  // 3 pictures in two chunks
  Generator gen(11);
  model.generate("two vertical lines", 3, gen, options);
  const std::vector<int64_t> ids = model.tokenizer().encode("two vertical lines");
  ASSERT_EQ(maps.tokens.size(), 18u);  // the characters, no padding
  EXPECT_EQ(maps.tokens, std::vector<int64_t>(ids.begin(), ids.begin() + 18));
  ASSERT_EQ(maps.maps.shape(), (Shape{3, 19, 28, 28}));
  EXPECT_EQ(maps.layers, 5);  // levels 1 and 2 down and up, and the middle
  EXPECT_EQ(maps.steps, 4);
  const std::vector<float> m = maps.maps.to_vector();
  const int64_t pixels = 28 * 28;
  double least = 1.0, most = 0.0;
  for (int64_t picture = 0; picture < 3; ++picture) {
    for (int64_t p = 0; p < pixels; ++p) {
      double total = 0.0;
      for (int64_t token = 0; token < 19; ++token) {
        const float value = m[(picture * 19 + token) * pixels + p];
        ASSERT_GE(value, 0.0f);
        total += value;
        least = std::min(least, static_cast<double>(value));
        most = std::max(most, static_cast<double>(value));
      }
      ASSERT_NEAR(total, 1.0, 1e-4) << "picture " << picture << " pixel " << p;
    }
  }
  EXPECT_LT(least, most);  // the maps are not all one value
}

TEST(AttentionMaps, CollectingLeavesThePicturesBitIdenticalAndIsDeterministic) {
  TextToImageDiffusion& model = tiny_model();
  for (const char* sampler : {"ddim", "ddpm", "dpmpp2m"}) {
    GenerateOptions plain = few_steps(sampler, 3);
    Generator g1(21);
    const std::vector<float> without = model.generate("circle", 2, g1, plain).to_vector();
    AttentionMaps first, second;
    GenerateOptions watched = plain;
    watched.attention = &first;
    Generator g2(21);
    EXPECT_EQ(model.generate("circle", 2, g2, watched).to_vector(), without) << sampler;
    watched.attention = &second;
    Generator g3(21);
    EXPECT_EQ(model.generate("circle", 2, g3, watched).to_vector(), without) << sampler;
    EXPECT_EQ(first.maps.to_vector(), second.maps.to_vector()) << sampler;
    EXPECT_EQ(first.tokens, second.tokens);
  }
  // Not vacuous: another seed gives other maps.
  AttentionMaps a, b;
  GenerateOptions options = few_steps();
  options.attention = &a;
  Generator ga(1);
  model.generate("circle", 1, ga, options);
  options.attention = &b;
  Generator gb(2);
  model.generate("circle", 1, gb, options);
  EXPECT_NE(a.maps.to_vector(), b.maps.to_vector());
}

TEST(AttentionMaps, OnlyTheConditionalHalfCounts) {
  // At one step the sampler sees only x_T, so the conditional rows do not depend on the
  // negative prompt: neither may the maps. The unconditional rows (another context, another key
  // mask) do, so a mix-up of the halves shows.
  TextToImageDiffusion& model = tiny_model();
  AttentionMaps with_empty, with_negative, other_prompt;
  GenerateOptions options = few_steps("ddim", 1);
  options.attention = &with_empty;
  Generator g1(3);
  model.generate("square", 2, g1, options);
  options.negative_prompt = "two horizontal lines";
  options.attention = &with_negative;
  Generator g2(3);
  model.generate("square", 2, g2, options);
  ASSERT_EQ(with_empty.maps.shape(), with_negative.maps.shape());
  const std::vector<float> a = with_empty.maps.to_vector(), b = with_negative.maps.to_vector();
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-6) << i;
  // ... while the prompt itself does change them.
  options.negative_prompt = "";
  options.attention = &other_prompt;
  Generator g3(3);
  model.generate("circle", 2, g3, options);
  ASSERT_EQ(other_prompt.maps.shape(), with_empty.maps.shape());  // six characters each
  EXPECT_NE(other_prompt.maps.to_vector(), a);
}

TEST(AttentionMaps, WordTokensAndColourPicturesToo) {
  DiffusionConfig config = DiffusionConfig::preset("tiny");
  config.tokenizer = "word";
  config.vocab_size = static_cast<int64_t>(WordTokenizer::vocabulary().size());
  config.max_length = 20;
  config.in_channels = 3;
  config.image_size = 32;
  Generator init(8);
  TextToImageDiffusion model(config, &init);
  AttentionMaps maps;
  GenerateOptions options = few_steps("ddim", 2);
  options.attention = &maps;
  Generator gen(4);
  model.generate("a red zebra at the top", 1, gen, options);
  // "zebra" is not a scenes word: it stays as <unk> (a token the model saw), padding does not.
  ASSERT_EQ(maps.tokens.size(), 6u);
  EXPECT_EQ(maps.tokens[2], WordTokenizer::kUnk);
  ASSERT_EQ(maps.maps.shape(), (Shape{1, 7, 32, 32}));
  const std::vector<float> m = maps.maps.to_vector();
  for (int64_t p = 0; p < 32 * 32; ++p) {
    double total = 0.0;
    for (int64_t token = 0; token < 7; ++token) total += m[token * 32 * 32 + p];
    ASSERT_NEAR(total, 1.0, 1e-4) << p;
  }
}

}  // namespace
}  // namespace ink
