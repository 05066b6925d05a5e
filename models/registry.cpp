// The model registry: the table of kinds, the checkpoint metadata that names one, and loading
// a checkpoint into the model it describes.
#include "models/registry.h"

#include <functional>

#include <nlohmann/json.hpp>

#include "models/diffusion/model.h"
#include "models/text_to_image.h"
#include "tensor/error.h"
#include "tensor/quote.h"

namespace ink {

namespace {

using Factory = std::function<std::unique_ptr<ImageModel>(const std::string&, Generator*)>;

struct Kind {
  const char* name;
  Factory make;
};

// Every model inkgrad can build. A new model adds one line here.
const std::vector<Kind>& kinds() {
  static const std::vector<Kind> table = {
      {"mlp",
       [](const std::string& config, Generator* generator) -> std::unique_ptr<ImageModel> {
         return std::make_unique<TextToImageModel>(TextToImageConfig::from_json(config), generator);
       }},
      {"diffusion",
       [](const std::string& config, Generator* generator) -> std::unique_ptr<ImageModel> {
         return std::make_unique<diffusion::TextToImageDiffusion>(
             config.empty() ? diffusion::DiffusionConfig{}
                            : diffusion::DiffusionConfig::from_json(config),
             generator);
       }},
  };
  return table;
}

}  // namespace

std::map<std::string, std::string> ImageModel::checkpoint_metadata() const {
  return {{"format", "pt"}, {kModelKindKey, kind()}, {kModelConfigKey, config_json()}};
}

std::vector<std::string> model_kinds() {
  std::vector<std::string> names;
  for (const Kind& kind : kinds()) names.emplace_back(kind.name);
  return names;
}

std::unique_ptr<ImageModel> make_model(const std::string& kind, const std::string& config_json,
                                       Generator* generator) {
  for (const Kind& entry : kinds()) {
    if (kind == entry.name) return entry.make(config_json == "{}" ? "" : config_json, generator);
  }
  INK_FAIL("unknown model kind {} (known: {})", quoted_text(kind), fmt::join(model_kinds(), ", "));
}

ModelIdentity model_identity(const std::map<std::string, std::string>& metadata) {
  const auto kind = metadata.find(kModelKindKey);
  if (kind == metadata.end()) return {kDefaultModelKind, "", false};
  const auto config = metadata.find(kModelConfigKey);
  return {kind->second, config == metadata.end() ? "" : config->second, true};
}

std::unique_ptr<ImageModel> load_model(const SafetensorsFile& file, const std::string& path) {
  const ModelIdentity identity = model_identity(file.metadata);
  std::unique_ptr<ImageModel> model;
  try {
    Generator scratch(0);  // every value is overwritten by the file
    model = make_model(identity.kind, identity.config_json, &scratch);
  } catch (const Error& error) {
    INK_FAIL("{}: {}", path, error.what());
  }
  try {
    model->load_state_dict(file.tensors, /*strict=*/true);
  } catch (const Error& error) {
    throw Error(fmt::format("{}\n  (while loading {})", error.what(), path));
  }
  return model;
}

std::unique_ptr<ImageModel> load_model(const std::string& path) {
  return load_model(load_safetensors(path), path);
}

void save_model(const ImageModel& model, const std::string& path) {
  save_safetensors(path, model.state_dict(), model.checkpoint_metadata());
}

}  // namespace ink
