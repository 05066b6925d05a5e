// TrainConfig's rules (the one place they live), the training streams, and the table of recipes.
#include "models/recipe.h"

#include <cmath>

#include "models/diffusion/recipe.h"
#include "models/mlp_recipe.h"
#include "models/shapes.h"
#include "tensor/error.h"
#include "tensor/quote.h"

namespace ink {

namespace {

// Independent streams for initialisation, noise and data, all derived from the one seed.
constexpr uint64_t kNoiseStream = 0x9E3779B97F4A7C15ULL;
constexpr uint64_t kDataStream = 0xC2B2AE3D27D4EB4FULL;

struct RecipeEntry {
  const char* name;
  std::unique_ptr<Recipe> (*make)(const TrainConfig&, TrainingStreams&);
  // The model has BatchNorm in training mode, which cannot normalise a batch of one sample.
  bool batch_norm;
};

// Every recipe `inkgrad train --model` accepts. A new recipe adds one line here.
constexpr RecipeEntry kRecipes[] = {
    {"mlp",
     [](const TrainConfig& c, TrainingStreams& s) -> std::unique_ptr<Recipe> {
       return std::make_unique<MlpRecipe>(c, s);
     },
     true},
    {"diffusion",
     [](const TrainConfig& c, TrainingStreams& s) -> std::unique_ptr<Recipe> {
       return std::make_unique<diffusion::DiffusionRecipe>(c, s);
     },
     false},
};

const RecipeEntry* find_recipe(const std::string& name) {
  for (const RecipeEntry& entry : kRecipes) {
    if (name == entry.name) return &entry;
  }
  return nullptr;
}

}  // namespace

TrainingStreams::TrainingStreams(uint64_t seed)
    : init(seed), noise(seed ^ kNoiseStream), data(seed ^ kDataStream) {}

void TrainConfig::validate(const FieldName& field_name) const {
  // The command line names fields its own way and writes ranges in words; the library prefixes
  // "train: " and writes intervals.
  const bool cli = static_cast<bool>(field_name);
  const auto name = [&](const char* field) { return cli ? field_name(field) : std::string(field); };
  const std::string prefix = cli ? "" : "train: ";
  const auto check_range = [&](const char* field, int64_t value, int64_t low, int64_t high,
                               const char* reason) {
    INK_CHECK(
        value >= low && value <= high, "{}{} must be {}{}, got {}", prefix, name(field),
        cli ? fmt::format("between {} and {}", low, high) : fmt::format("in [{}, {}]", low, high),
        reason, value);
  };

  const RecipeEntry* recipe = find_recipe(model);
  INK_CHECK(recipe != nullptr, "{}{} must be one of {}, got {}", prefix, name("model"),
            fmt::join(recipe_names(), ", "), quoted_text(model));
  check_range("epochs", epochs, 1, kMaxEpochs, "");
  check_range("samples_per_prompt", samples_per_prompt, 1, kMaxSamplesPerPrompt, "");
  // The batch-of-one rule, for models with BatchNorm: no batch, the last one included, may hold
  // a single sample.
  constexpr const char* kBatchOfOne = "BatchNorm1d cannot train on batches of 1 sample";
  const std::string batch_reason =
      recipe->batch_norm && batch_size == 1 ? fmt::format(" ({})", kBatchOfOne) : "";
  check_range("batch_size", batch_size, recipe->batch_norm ? kMinBatchSize : 1, kMaxBatchSize,
              batch_reason.c_str());
  INK_CHECK(std::isfinite(lr) && lr > 0.0 && lr <= kMaxLr, "{}{} must be {}(0, {}], got {}", prefix,
            name("lr"), cli ? "a number in " : "in ", kMaxLr, lr);
  INK_CHECK(dataset == "shapes" || dataset == "scenes",
            "{}{} must be \"shapes\" or \"scenes\", got {}", prefix, name("dataset"),
            quoted_text(dataset));
  INK_CHECK(model != "mlp" || dataset == "shapes",
            "{}the mlp model trains only on the shapes dataset, not {}", prefix,
            quoted_text(dataset));
  // Checked here as well as in DiffusionConfig::validate, so that a new run is refused before
  // its folder is prepared (with --force, before the previous run's files are removed).
  INK_CHECK(!phrase_attention || dataset == "scenes",
            "{}{} needs the scenes dataset (its phrases are joined by the word \"and\"), not {}",
            prefix, name("phrase_attention"), quoted_text(dataset));
  INK_CHECK(model_config == "tiny" || model_config == "small" || model_config == "base",
            "{}{} must be tiny, small or base, got {}", prefix, name("model_config"),
            quoted_text(model_config));
  INK_CHECK(std::isfinite(weight_decay) && weight_decay >= 0.0 && weight_decay <= 1.0,
            "{}{} must be in [0, 1], got {}", prefix, name("weight_decay"), weight_decay);
  check_range("warmup_steps", warmup_steps, 0, 1'000'000, "");
  INK_CHECK(std::isfinite(ema_decay) && ema_decay >= 0.0 && ema_decay < 1.0,
            "{}{} must be in [0, 1), got {}", prefix, name("ema_decay"), ema_decay);
  INK_CHECK(std::isfinite(cond_dropout) && cond_dropout >= 0.0 && cond_dropout <= 1.0,
            "{}{} must be in [0, 1], got {}", prefix, name("cond_dropout"), cond_dropout);
  INK_CHECK(std::isfinite(clip_grad_norm) && clip_grad_norm >= 0.0,
            "{}{} must be >= 0 (0 turns clipping off), got {}", prefix, name("clip_grad_norm"),
            clip_grad_norm);
  INK_CHECK(std::isfinite(snr_gamma) && snr_gamma >= 0.0,
            "{}{} must be >= 0 (0 turns the weighting off), got {}", prefix, name("snr_gamma"),
            snr_gamma);
  INK_CHECK(lr_decay == "constant" || lr_decay == "cosine",
            "{}{} must be constant or cosine, got {}", prefix, name("lr_decay"),
            quoted_text(lr_decay));
  INK_CHECK(timesteps == "uniform" || timesteps == "logit-normal",
            "{}{} must be uniform or logit-normal, got {}", prefix, name("timesteps"),
            quoted_text(timesteps));
  INK_CHECK(noise_schedule == "linear" || noise_schedule == "cosine",
            "{}{} must be linear or cosine, got {}", prefix, name("noise_schedule"),
            quoted_text(noise_schedule));
  INK_CHECK(prediction == "eps" || prediction == "v", "{}{} must be eps or v, got {}", prefix,
            name("prediction"), quoted_text(prediction));
  check_range("text_layers", text_layers, 1, 8, "");
  const int64_t total = samples_per_prompt * kNumShapePrompts;
  INK_CHECK(!recipe->batch_norm || total % batch_size != 1,
            "{}{} {} with {} {} leaves a last batch of 1 sample ({} = {} x {} + 1), and {}; "
            "choose a batch size that does not leave a last batch of 1 sample",
            prefix, name("batch_size"), batch_size, name("samples_per_prompt"), samples_per_prompt,
            total, total / batch_size, batch_size, kBatchOfOne);
}

std::map<std::string, std::string> Recipe::resume_settings() {
  std::map<std::string, std::string> settings = optimizer().state_dict().metadata;
  settings.erase("format");
  return settings;
}

void Recipe::load_extra_state(const SafetensorsFile& state) {
  std::vector<std::string> names;
  for (const auto& [name, tensor] : state.tensors) names.push_back(quoted_text(name));
  INK_CHECK(names.empty(), "resume: unexpected {} in the training state of the {} recipe",
            fmt::join(names, ", "), this->name());
}

std::vector<std::string> recipe_names() {
  std::vector<std::string> names;
  for (const RecipeEntry& entry : kRecipes) names.emplace_back(entry.name);
  return names;
}

std::unique_ptr<Recipe> make_recipe(const TrainConfig& config, TrainingStreams& streams) {
  config.validate();
  return find_recipe(config.model)->make(config, streams);
}

}  // namespace ink
