// The model registry: kind name -> a factory that builds the model from its config JSON, so that
// a checkpoint (which records both in its metadata) is enough to rebuild its model.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/image_model.h"
#include "nn/safetensors.h"

namespace ink {

// The kind assumed for a checkpoint without kModelKindKey: phase 1 wrote only MLP checkpoints.
inline constexpr const char* kDefaultModelKind = "mlp";

// The kinds the registry can build, in a fixed order ("mlp", ...).
std::vector<std::string> model_kinds();

// A new model of `kind` with the architecture `config_json` describes (a JSON object; an empty
// string or "{}" gives the kind's default config), initialised from `generator`
// (default_generator() when null). Throws ink::Error for an unknown kind (listing the known
// ones) or a config the kind refuses (naming the field and its value).
std::unique_ptr<ImageModel> make_model(const std::string& kind, const std::string& config_json,
                                       Generator* generator = nullptr);

// What a checkpoint's metadata says about its model: the kind and config recorded by
// ImageModel::checkpoint_metadata(), or the MLP's defaults for a file without them.
struct ModelIdentity {
  std::string kind;
  std::string config_json;
  bool recorded = false;  // false: taken from the defaults (a phase 1 file)
};
ModelIdentity model_identity(const std::map<std::string, std::string>& metadata);

// Builds the model a checkpoint file describes and loads its weights strictly. Throws ink::Error
// naming `path` when the file is unreadable, records an unknown kind, or its tensors do not fit
// the model.
std::unique_ptr<ImageModel> load_model(const std::string& path);
// The same from a file already read.
std::unique_ptr<ImageModel> load_model(const SafetensorsFile& file, const std::string& path);

// Writes `model`'s state_dict with its checkpoint_metadata() to `path`, atomically.
void save_model(const ImageModel& model, const std::string& path);

}  // namespace ink
