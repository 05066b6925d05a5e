// ImageModel: what every text-to-image network offers the programs that use a trained one
// (generate, eval, serve): its kind and config, its tokenizer and image format, and generation.
// The model registry (models/registry.h) builds one from a checkpoint file alone.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "models/dataset.h"
#include "models/tokenizer.h"
#include "nn/module.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace ink {

// The safetensors __metadata__ keys that say what a checkpoint holds: the registry's kind
// ("mlp") and the model's config as a JSON object in text.
inline constexpr const char* kModelKindKey = "inkgrad.kind";
inline constexpr const char* kModelConfigKey = "inkgrad.config";

// What this object represents: a trained or trainable text-to-image network. The interface is
// what inference needs; training goes through a Recipe (models/recipe.h), which knows the
// concrete class.
class ImageModel : public nn::Module {
 public:
  using nn::Module::Module;

  // The registry name of this kind of model ("mlp").
  virtual std::string kind() const = 0;
  // The config that rebuilds this model's architecture, as a JSON object
  // (make_model(kind(), config_json()) gives a model with the same state_dict names and shapes).
  virtual std::string config_json() const = 0;
  virtual const Tokenizer& tokenizer() const = 0;
  virtual ImageFormat image_format() const = 0;

  // n pictures of `prompt` as [n, C, H, W] in [0, 1], drawing all randomness from `generator`.
  // Runs under an InferenceGuard: it neither records a graph nor changes the module (not even
  // its train/eval mode), so several threads may generate with one model at once, each with its
  // own generator. Throws ink::Error for n outside [1, 100000] or a prompt the tokenizer cannot
  // encode at all.
  virtual Tensor generate(const std::string& prompt, int64_t n, Generator& generator) = 0;

  // The metadata a checkpoint of this model carries: {"format": "pt"} (so PyTorch's safetensors
  // reads it) plus kModelKindKey and kModelConfigKey.
  std::map<std::string, std::string> checkpoint_metadata() const;
};

}  // namespace ink
