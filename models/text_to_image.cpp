// The text-to-image network: TextEncoder, ImageGenerator and the model that joins them.
#include "models/text_to_image.h"

#include <nlohmann/json.hpp>

#include "nn/layers.h"
#include "tensor/autograd.h"
#include "tensor/error.h"
#include "tensor/ops.h"
#include "tensor/quote.h"

namespace ink {

// ---- TextToImageConfig ----

namespace {

// Each field with the largest value accepted from a file (far above any sensible model, far
// below sizes whose allocation would be the failure).
struct ConfigField {
  const char* name;
  int64_t TextToImageConfig::*member;
  int64_t max;
};
constexpr ConfigField kConfigFields[] = {
    {"vocab_size", &TextToImageConfig::vocab_size, 1 << 20},
    {"embed_dim", &TextToImageConfig::embed_dim, 1 << 14},
    {"hidden_dim", &TextToImageConfig::hidden_dim, 1 << 14},
    {"latent_dim", &TextToImageConfig::latent_dim, 1 << 14},
    {"noise_dim", &TextToImageConfig::noise_dim, 1 << 14},
    {"max_length", &TextToImageConfig::max_length, CharTokenizer::kMaxMaxLength},
    {"image_size", &TextToImageConfig::image_size, 256},
};

}  // namespace

std::string TextToImageConfig::to_json() const {
  nlohmann::ordered_json j;
  for (const ConfigField& field : kConfigFields) j[field.name] = this->*field.member;
  return j.dump();
}

TextToImageConfig TextToImageConfig::from_json(const std::string& text) {
  TextToImageConfig config;
  if (text.empty()) return config;
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  INK_CHECK(j.is_object(), "mlp config: expected a JSON object, got {}", quoted_text(text));
  for (const auto& [key, value] : j.items()) {
    const ConfigField* field = nullptr;
    for (const ConfigField& f : kConfigFields) field = key == f.name ? &f : field;
    INK_CHECK(field != nullptr, "mlp config: unknown field {}", quoted_text(key));
    INK_CHECK(value.is_number_integer() && value.get<int64_t>() >= 1 &&
                  value.get<int64_t>() <= field->max,
              "mlp config: \"{}\" must be an integer in [1, {}], got {}", key, field->max,
              quoted_text(value.dump()));
    config.*field->member = value.get<int64_t>();
  }
  INK_CHECK(config.vocab_size == CharTokenizer::kVocabSize,
            "mlp config: \"vocab_size\" must be {} (the character vocabulary), got {}",
            CharTokenizer::kVocabSize, config.vocab_size);
  return config;
}

// ---- TextEncoder ----
TextEncoder::TextEncoder(const TextToImageConfig& config, Generator* generator)
    : nn::Module("TextEncoder") {
  embedding = register_module("embedding",
                              std::make_shared<nn::Embedding>(config.vocab_size, config.embed_dim,
                                                              CharTokenizer::kPad, generator));
  projection = register_module(
      "projection",
      std::make_shared<nn::Sequential>(
          std::make_shared<nn::Linear>(config.embed_dim, config.hidden_dim, true, generator),
          std::make_shared<nn::ReLU>(),
          std::make_shared<nn::Linear>(config.hidden_dim, config.latent_dim, true, generator)));
}

Tensor TextEncoder::forward(const Tensor& token_ids) {
  INK_CHECK(token_ids.defined() && token_ids.dtype() == DType::Int64 && token_ids.dim() == 2,
            "TextEncoder: expected Int64 token ids of shape [B, L], got {}",
            token_ids.defined() ? shape_str(token_ids.shape()) : "an undefined tensor");
  const int64_t B = token_ids.size(0), L = token_ids.size(1);
  // mask [B, L, 1]: 1 for a real character, 0 for padding
  Tensor mask = empty({B, L, 1});
  const int64_t* ids = token_ids.data_i64();
  float* m = mask.data();
  for (int64_t i = 0; i < B * L; ++i) m[i] = ids[i] != CharTokenizer::kPad ? 1.0f : 0.0f;

  Tensor embeds = embedding->forward(token_ids);              // [B, L, E]
  Tensor summed = sum(mul(embeds, mask), {1});                // [B, E]
  Tensor counts = clamp(sum(mask, {1}), 1.0f, std::nullopt);  // [B, 1], never 0
  Tensor pooled = div(summed, counts);                        // [B, E]
  return projection->forward(pooled);                         // [B, Z]
}

// ---- ImageGenerator ----
ImageGenerator::ImageGenerator(const TextToImageConfig& config, Generator* generator)
    : nn::Module("ImageGenerator"), noise_dim(config.noise_dim), image_size(config.image_size) {
  const int64_t in = config.latent_dim + config.noise_dim;
  const int64_t pixels = config.image_size * config.image_size;
  decoder = register_module(
      "decoder", std::make_shared<nn::Sequential>(
                     std::make_shared<nn::Linear>(in, 256, true, generator),
                     std::make_shared<nn::BatchNorm1d>(256), std::make_shared<nn::ReLU>(),
                     std::make_shared<nn::Linear>(256, 512, true, generator),
                     std::make_shared<nn::BatchNorm1d>(512), std::make_shared<nn::ReLU>(),
                     std::make_shared<nn::Linear>(512, pixels, true, generator),
                     std::make_shared<nn::Sigmoid>()));
}

Tensor ImageGenerator::forward(const Tensor& latent, const Tensor& noise) {
  INK_CHECK(latent.defined() && noise.defined() && latent.dim() == 2 && noise.dim() == 2 &&
                latent.size(0) == noise.size(0) && noise.size(1) == noise_dim,
            "ImageGenerator: expected latent [B, Z] and noise [B, {}], got {} and {}", noise_dim,
            latent.defined() ? shape_str(latent.shape()) : "undefined",
            noise.defined() ? shape_str(noise.shape()) : "undefined");
  const int64_t B = latent.size(0);
  Tensor flat = decoder->forward(cat({latent, noise}, 1));  // [B, 784]
  return reshape(flat, {B, 1, image_size, image_size});
}

// ---- TextToImageModel ----
TextToImageModel::TextToImageModel(const TextToImageConfig& config, Generator* generator)
    : ImageModel("TextToImageModel"), config_(config), tokenizer_(config.max_length) {
  text_encoder = register_module("text_encoder", std::make_shared<TextEncoder>(config, generator));
  image_generator =
      register_module("image_generator", std::make_shared<ImageGenerator>(config, generator));
}

Tensor TextToImageModel::forward(const Tensor& token_ids, const Tensor& noise) {
  return image_generator->forward(text_encoder->forward(token_ids), noise);
}

Tensor TextToImageModel::sample_noise(int64_t batch, Generator& generator) const {
  return randn({batch, config_.noise_dim}, &generator);
}

Tensor TextToImageModel::generate(const std::string& prompt, int64_t n, Generator& generator) {
  INK_CHECK(n >= 1 && n <= 100000, "generate: n must be in [1, 100000], got {}", n);
  const Encoding encoding = tokenizer_.encode_with_report(prompt);
  INK_CHECK(encoding.length > 0,
            "generate: the prompt \"{}\" has no known characters (the vocabulary is a-z and "
            "space)",
            prompt.size() > 60 ? prompt.substr(0, 60) + "..." : prompt);
  const int64_t L = tokenizer_.max_length();
  std::vector<int64_t> ids(static_cast<size_t>(n * L));
  for (int64_t i = 0; i < n; ++i) {
    std::copy(encoding.tokens.begin(), encoding.tokens.end(), ids.begin() + i * L);
  }
  nn::InferenceGuard inference;  // running statistics, no graph, and the module left alone
  Tensor images = forward(from_vector_i64(ids, {n, L}), sample_noise(n, generator));
  return images;
}

}  // namespace ink
