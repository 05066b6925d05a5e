// The training loop: epochs of recipe steps with the NaN guard, checkpoint snapshots written in
// the foreground or background, and a resume that checks the saved run against this one before
// loading it in place.
#include "models/trainer.h"

#include <charconv>
#include <cmath>
#include <filesystem>
#include <utility>

#include "models/registry.h"
#include "nn/safetensors.h"
#include "tensor/error.h"
#include "tensor/ops.h"
#include "tensor/quote.h"

namespace ink {

namespace {

// Training-state entries: the model's tensors under this prefix, the optimizer's under "state.".
constexpr const char* kModelPrefix = "model.";

std::string state_str(Generator::State s) {
  return fmt::format("{} {}", s.state, s.inc);
}

Generator::State parse_state(const std::string& text, const std::string& what) {
  Generator::State s;
  const char* begin = text.data();
  const char* end = begin + text.size();
  auto r1 = std::from_chars(begin, end, s.state);
  bool ok = r1.ec == std::errc() && r1.ptr < end && *r1.ptr == ' ';
  if (ok) {
    auto r2 = std::from_chars(r1.ptr + 1, end, s.inc);
    ok = r2.ec == std::errc() && r2.ptr == end && (s.inc & 1u) == 1u;
  }
  INK_CHECK(ok, "resume: metadata \"{}\" is malformed: {}", what, quoted_text(text));
  return s;
}

const std::string& require(const std::map<std::string, std::string>& metadata,
                           const std::string& key, const std::string& path) {
  auto it = metadata.find(key);
  INK_CHECK(it != metadata.end(),
            "resume: {} has no \"{}\" entry in its metadata (not an inkgrad training state?)", path,
            key);
  return it->second;
}

std::string in_dir(const std::string& dir, std::string_view file) {
  return (std::filesystem::path(dir) / file).string();
}

NamedTensors cloned(const NamedTensors& tensors) {
  NamedTensors out;
  for (const auto& [name, tensor] : tensors) out.emplace_back(name, tensor.clone());
  return out;
}

}  // namespace

Trainer::Trainer(const TrainConfig& config)
    : config_((config.validate(), config)),
      streams_(config.seed),
      recipe_(make_recipe(config_, streams_)) {}

float Trainer::train_epoch(const std::function<void(const StepInfo&)>& on_step) {
  ImageModel& model = recipe_->model();
  nn::Optimizer& optimizer = recipe_->optimizer();
  Dataset& dataset = recipe_->dataset();
  model.train();
  dataset.start_epoch();
  const int64_t steps = dataset.num_batches();
  double total = 0.0;
  for (int64_t step = 0; step < steps; ++step) {
    dataset.fill_batch(step, batch_);
    Tensor loss = recipe_->loss(batch_, streams_.noise);
    const float value = loss.item();
    // Checked before the update, so the parameters still hold the last good values.
    INK_CHECK(std::isfinite(value),
              "train: the loss became {} at epoch {}, step {} of {}; stopping (lower the "
              "learning rate, or use --detect-anomaly to find the op)",
              value, epoch_ + 1, step + 1, steps);
    optimizer.zero_grad();
    loss.backward();
    recipe_->before_step(step_);
    optimizer.step();
    recipe_->after_step(step_);
    ++step_;

    total += value;
    if (on_step) on_step({epoch_, step, steps, batch_.size, value});
  }
  const float mean_loss = static_cast<float>(total / static_cast<double>(steps));
  ++epoch_;
  losses_.push_back(mean_loss);
  return mean_loss;
}

namespace {
// Both files of a checkpoint, serialised in memory.
struct CheckpointFiles {
  std::string dir;
  std::vector<uint8_t> state;  // optimizer.safetensors
  std::vector<uint8_t> model;  // model.safetensors
};

void write_checkpoint_files(const CheckpointFiles& files) {
  std::error_code ec;
  std::filesystem::create_directories(files.dir, ec);
  INK_CHECK(!ec, "save_checkpoint: cannot create directory {}: {}", files.dir, ec.message());
  // The model first: a kill between the two writes then leaves a model.safetensors at least as
  // new as the training state, so a folder that can be resumed always has a model to load.
  // (The other order left a resumable state without a model when a fresh run was killed between
  // them; found by MODEL=diffusion scripts/kill_loop.sh, whose larger files widen that window.)
  // The price: a kill between the writes of the first checkpoint leaves the epoch-1 model with
  // no training state; is_unfinished_first_checkpoint() recognises that folder.
  write_file_atomic(in_dir(files.dir, kModelFileName), files.model);
  write_file_atomic(in_dir(files.dir, kTrainingStateFileName), files.state);
}

// The training state is one self-contained file (the optimizer's state, the exact weights it
// applies to, the epoch, the losses, the random streams and the model's identity), so a crash
// between the two writes can never pair a model with an optimizer from another epoch.
// model.safetensors is the recipe's inference model, loadable by PyTorch with strict=True.
CheckpointFiles snapshot(const std::string& dir, Recipe& recipe, int64_t epoch,
                         const std::vector<float>& losses, Generator::State noise,
                         const TrainConfig& config) {
  SafetensorsFile state = recipe.optimizer().state_dict();
  for (auto& [name, tensor] : recipe.model().state_dict()) {
    state.tensors.emplace_back(kModelPrefix + name, tensor);
  }
  recipe.save_extra_state(state);
  state.metadata["trainer.epoch"] = std::to_string(epoch);
  std::string loss_text;
  for (float l : losses) loss_text += fmt::format("{}{:.9g}", loss_text.empty() ? "" : ",", l);
  state.metadata["trainer.losses"] = loss_text;
  state.metadata["trainer.noise_rng"] = state_str(noise);
  state.metadata["trainer.data_rng"] = state_str(recipe.dataset().generator_state());
  state.metadata["trainer.samples_per_prompt"] = std::to_string(config.samples_per_prompt);
  state.metadata["trainer.batch_size"] = std::to_string(config.batch_size);
  state.metadata["trainer.seed"] = std::to_string(config.seed);
  state.metadata[kModelKindKey] = recipe.model().kind();
  state.metadata[kModelConfigKey] = recipe.model().config_json();
  const ImageModel& inference = recipe.inference_model();
  std::map<std::string, std::string> model_metadata = inference.checkpoint_metadata();
  model_metadata[std::string(kModelEpochKey)] = std::to_string(epoch);
  return {dir, serialize_safetensors(state.tensors, state.metadata),
          serialize_safetensors(inference.state_dict(), model_metadata)};
}
}  // namespace

bool is_unfinished_first_checkpoint(const std::string& dir) {
  std::error_code ec;
  const std::string model = in_dir(dir, kModelFileName);
  if (std::filesystem::exists(in_dir(dir, kTrainingStateFileName), ec) ||
      !std::filesystem::is_regular_file(model, ec)) {
    return false;
  }
  try {
    const SafetensorsReader reader(model);  // the header only
    const auto epoch = reader.metadata().find(std::string(kModelEpochKey));
    return epoch != reader.metadata().end() && epoch->second == "1";
  } catch (const Error&) {
    return false;  // not a checkpoint this trainer wrote
  }
}

Trainer::~Trainer() {
  if (writer_.joinable()) writer_.join();
}

void Trainer::save_checkpoint(const std::string& dir) {
  wait_for_checkpoint();
  write_checkpoint_files(
      snapshot(dir, *recipe_, epoch_, losses_, streams_.noise.get_state(), config_));
  saved_epoch_ = epoch_;
}

void Trainer::save_checkpoint_async(const std::string& dir) {
  wait_for_checkpoint();
  writing_epoch_ = epoch_;
  writer_ = std::thread([this, files = snapshot(dir, *recipe_, epoch_, losses_,
                                                streams_.noise.get_state(), config_)] {
    try {
      write_checkpoint_files(files);
    } catch (...) {
      writer_error_ = std::current_exception();
    }
  });
}

void Trainer::wait_for_checkpoint() {
  if (!writer_.joinable()) return;
  writer_.join();
  if (writer_error_) std::rethrow_exception(std::exchange(writer_error_, nullptr));
  saved_epoch_ = writing_epoch_;
}

void Trainer::resume(const std::string& dir) {
  const std::string path = in_dir(dir, kTrainingStateFileName);
  SafetensorsFile state = load_safetensors(path);
  const auto& meta = state.metadata;
  ImageModel& model = recipe_->model();
  nn::Optimizer& optimizer = recipe_->optimizer();

  // The run's identity must match this trainer's configuration. A phase 1 state records no
  // model identity: it is the MLP with its default config.
  const ModelIdentity identity = model_identity(meta);
  INK_CHECK(identity.kind == model.kind(),
            "resume: {} is a training state of the {} model, but this run trains \"{}\"", path,
            quoted_text(identity.kind), model.kind());
  INK_CHECK(!identity.recorded || identity.config_json == model.config_json(),
            "resume: {} was trained with the model config {}, but this run uses {}", path,
            quoted_text(identity.config_json, 200), model.config_json());
  const auto check_same = [&](const std::string& key, const std::string& name,
                              const std::string& ours) {
    const std::string& theirs = require(meta, key, path);
    INK_CHECK(theirs == ours, "resume: {} was trained with {} = {}, but this run uses {}", path,
              name, shown_text(theirs), ours);
  };
  check_same("trainer.samples_per_prompt", "samples_per_prompt",
             std::to_string(config_.samples_per_prompt));
  check_same("trainer.batch_size", "batch_size", std::to_string(config_.batch_size));
  check_same("trainer.seed", "seed", std::to_string(config_.seed));
  // Every setting the loaded state would bring along (the optimizer's lr, betas, ...) must be
  // the one this run reports and was configured with.
  for (const auto& [key, ours] : recipe_->resume_settings()) check_same(key, key, ours);

  int64_t epoch = 0;
  const std::string& epoch_text = require(meta, "trainer.epoch", path);
  auto r = std::from_chars(epoch_text.data(), epoch_text.data() + epoch_text.size(), epoch);
  INK_CHECK(r.ec == std::errc() && r.ptr == epoch_text.data() + epoch_text.size() && epoch >= 0,
            "resume: metadata \"trainer.epoch\" is malformed: {}", quoted_text(epoch_text));
  std::vector<float> losses;
  const std::string& loss_text = require(meta, "trainer.losses", path);
  for (size_t pos = 0; pos < loss_text.size();) {
    size_t comma = loss_text.find(',', pos);
    if (comma == std::string::npos) comma = loss_text.size();
    const std::string item = loss_text.substr(pos, comma - pos);
    char* end = nullptr;
    const float v = std::strtof(item.c_str(), &end);
    INK_CHECK(!item.empty() && end == item.c_str() + item.size(),
              "resume: metadata \"trainer.losses\" has a malformed entry {}", quoted_text(item));
    losses.push_back(v);
    pos = comma + 1;
  }
  INK_CHECK(static_cast<int64_t>(losses.size()) == epoch,
            "resume: {} records {} epochs but {} losses", path, epoch, losses.size());
  const auto noise_state =
      parse_state(require(meta, "trainer.noise_rng", path), "trainer.noise_rng");
  const auto data_state = parse_state(require(meta, "trainer.data_rng", path), "trainer.data_rng");

  // Split the file into the model's and the optimizer's tensors; the recipe's extra state
  // (tensors of its own prefixes) goes to the recipe.
  NamedTensors model_tensors;
  SafetensorsFile optimizer_state;
  SafetensorsFile extra_state;
  optimizer_state.metadata = meta;
  extra_state.metadata = meta;
  for (auto& [name, tensor] : state.tensors) {
    if (name.starts_with(kModelPrefix)) {
      model_tensors.emplace_back(name.substr(std::string_view(kModelPrefix).size()), tensor);
    } else if (name.starts_with("state.")) {
      optimizer_state.tensors.emplace_back(name, tensor);
    } else {
      extra_state.tensors.emplace_back(name, tensor);
    }
  }

  // Load in place, so that references to the model and optimizer stay valid. Each load checks
  // everything before it writes; if a later one refuses, the earlier ones are rolled back.
  const NamedTensors model_backup = cloned(model.state_dict());
  SafetensorsFile optimizer_backup = optimizer.state_dict();
  optimizer_backup.tensors = cloned(optimizer_backup.tensors);
  try {
    model.load_state_dict(model_tensors, /*strict=*/true);
    optimizer.load_state_dict(optimizer_state);
    recipe_->load_extra_state(extra_state);
  } catch (...) {
    model.load_state_dict(model_backup, /*strict=*/true);
    optimizer.load_state_dict(optimizer_backup);
    throw;
  }
  epoch_ = epoch;
  saved_epoch_ = epoch;
  step_ = optimizer.step_count();
  losses_ = std::move(losses);
  streams_.noise.set_state(noise_state);
  recipe_->dataset().set_generator_state(data_state);
}

}  // namespace ink
