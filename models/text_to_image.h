// The text-to-image network of the seed notebook: a character-level text encoder (embedding,
// masked mean, MLP) and an MLP image generator fed with the text latent plus Gaussian noise.
// Parameter and buffer names match the notebook's PyTorch model exactly, so checkpoints load
// in both directions with strict=True.
#pragma once

#include <memory>
#include <string>

#include "models/image_model.h"
#include "models/tokenizer.h"
#include "nn/layers.h"
#include "nn/module.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace ink {

// The notebook's sizes. Legend used below: B = batch, L = max_length (tokens per prompt),
// E = embed_dim, Z = latent_dim, N = noise_dim.
struct TextToImageConfig {
  int64_t vocab_size = CharTokenizer::kVocabSize;         // 28
  int64_t embed_dim = 32;                                 // E
  int64_t hidden_dim = 128;                               // text MLP width
  int64_t latent_dim = 64;                                // Z
  int64_t noise_dim = 32;                                 // N
  int64_t max_length = CharTokenizer::kDefaultMaxLength;  // L
  int64_t image_size = 28;                                // images are [1, 28, 28]

  // As a JSON object with these field names (what a checkpoint records).
  std::string to_json() const;
  // Reads to_json()'s text; absent fields keep their defaults. Throws ink::Error for text that is
  // not a JSON object, an unknown field, or a value that is not an integer in the field's range.
  static TextToImageConfig from_json(const std::string& text);
  bool operator==(const TextToImageConfig&) const = default;
};

// What this represents: prompt tokens [B, L] -> text latent [B, Z]. Embedding (padding row 0),
// a mean over the non-pad positions (a prompt with no known characters gives a zero vector,
// never a division by zero), then Linear(E, 128), ReLU, Linear(128, Z).
class TextEncoder : public nn::Module {
 public:
  explicit TextEncoder(const TextToImageConfig& config = {}, Generator* generator = nullptr);
  Tensor forward(const Tensor& token_ids);  // [B, L] Int64 -> [B, Z]

  std::shared_ptr<nn::Embedding> embedding;
  std::shared_ptr<nn::Sequential> projection;
};

// What this represents: [latent | noise] -> image. Linear(Z+N, 256), BatchNorm1d, ReLU,
// Linear(256, 512), BatchNorm1d, ReLU, Linear(512, 784), Sigmoid, reshaped to [B, 1, 28, 28].
class ImageGenerator : public nn::Module {
 public:
  explicit ImageGenerator(const TextToImageConfig& config = {}, Generator* generator = nullptr);
  Tensor forward(const Tensor& latent, const Tensor& noise);  // [B, Z], [B, N] -> [B, 1, 28, 28]

  std::shared_ptr<nn::Sequential> decoder;
  int64_t noise_dim;
  int64_t image_size;
};

// What this represents: the whole model, 573,520 parameters with the default config. Its
// registry kind is "mlp".
class TextToImageModel : public ImageModel {
 public:
  explicit TextToImageModel(const TextToImageConfig& config = {}, Generator* generator = nullptr);

  // token_ids [B, L] Int64, noise [B, N] -> images [B, 1, 28, 28] in [0, 1].
  Tensor forward(const Tensor& token_ids, const Tensor& noise);
  // Draws noise [B, N] from `generator`.
  Tensor sample_noise(int64_t batch, Generator& generator) const;

  // n images for one prompt with fresh noise per sample, using BatchNorm's running statistics
  // (under an InferenceGuard: the module's own mode is left as it is). Throws ink::Error for n
  // outside [1, 100000] or a prompt with no known characters.
  Tensor generate(const std::string& prompt, int64_t n, Generator& generator) override;

  std::string kind() const override { return "mlp"; }
  std::string config_json() const override { return config_.to_json(); }
  ImageFormat image_format() const override { return {1, config_.image_size, config_.image_size}; }
  const TextToImageConfig& config() const { return config_; }
  const CharTokenizer& tokenizer() const override { return tokenizer_; }

  std::shared_ptr<TextEncoder> text_encoder;
  std::shared_ptr<ImageGenerator> image_generator;

 private:
  TextToImageConfig config_;
  CharTokenizer tokenizer_;
};

}  // namespace ink
