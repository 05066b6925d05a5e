// The training recipe: per epoch, fresh shuffled synthetic data, forward, MSE, backward, Adam.
#include "models/trainer.h"

#include "models/shapes.h"

#include <charconv>
#include <cmath>
#include <filesystem>
#include <utility>

#include "nn/functional.h"
#include "nn/safetensors.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace ink {

namespace {

// Independent streams for initialisation, noise and data, all derived from the one seed.
constexpr uint64_t kNoiseStream = 0x9E3779B97F4A7C15ULL;
constexpr uint64_t kDataStream = 0xC2B2AE3D27D4EB4FULL;

constexpr const char* kModelFile = "model.safetensors";
constexpr const char* kStateFile = "optimizer.safetensors";
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

}  // namespace

void TrainConfig::validate() const {
  INK_CHECK(epochs >= 1 && epochs <= kMaxEpochs, "train: epochs must be in [1, {}], got {}",
            kMaxEpochs, epochs);
  INK_CHECK(samples_per_prompt >= 1 && samples_per_prompt <= kMaxSamplesPerPrompt,
            "train: samples_per_prompt must be in [1, {}], got {}", kMaxSamplesPerPrompt,
            samples_per_prompt);
  INK_CHECK(batch_size >= kMinBatchSize && batch_size <= kMaxBatchSize,
            "train: batch_size must be in [{}, {}] (BatchNorm1d needs more than one sample "
            "per batch in training), got {}",
            kMinBatchSize, kMaxBatchSize, batch_size);
  INK_CHECK(std::isfinite(lr) && lr > 0.0 && lr <= kMaxLr, "train: lr must be in (0, {}], got {}",
            kMaxLr, lr);
  const int64_t total = samples_per_prompt * kNumShapePrompts;
  INK_CHECK(total % batch_size != 1,
            "train: {} samples in batches of {} leave a last batch of 1 sample, which "
            "BatchNorm1d cannot train on; change batch_size or samples_per_prompt",
            total, batch_size);
}

Trainer::Trainer(const TrainConfig& config)
    : config_((config.validate(), config)),
      init_generator_(config.seed),
      noise_generator_(config.seed ^ kNoiseStream),
      model_(std::make_unique<TextToImageModel>(TextToImageConfig{}, &init_generator_)),
      optimizer_(
          std::make_unique<nn::Adam>(model_->named_parameters(), nn::AdamOptions{.lr = config.lr})),
      dataset_(config.samples_per_prompt, config.batch_size, Generator(config.seed ^ kDataStream),
               model_->tokenizer()) {}

float Trainer::train_epoch(const std::function<void(const StepInfo&)>& on_step) {
  model_->train();
  dataset_.start_epoch();
  const int64_t steps = dataset_.num_batches();
  const int64_t L = model_->config().max_length;
  const int64_t S = model_->config().image_size;
  double total = 0.0;
  for (int64_t step = 0; step < steps; ++step) {
    dataset_.fill_batch(step, batch_);
    const int64_t B = batch_.size;
    Tensor tokens = from_vector_i64(batch_.tokens, {B, L});
    Tensor targets = from_vector(batch_.images, {B, 1, S, S});
    Tensor noise = model_->sample_noise(B, noise_generator_);

    Tensor loss = nn::functional::mse_loss(model_->forward(tokens, noise), targets);
    const float value = loss.item();
    // Checked before the update, so the parameters still hold the last good values.
    INK_CHECK(std::isfinite(value),
              "train: the loss became {} at epoch {}, step {} of {}; stopping (lower the "
              "learning rate, or use --detect-anomaly to find the op)",
              value, epoch_ + 1, step + 1, steps);
    optimizer_->zero_grad();
    loss.backward();
    optimizer_->step();

    total += value;
    if (on_step) on_step({epoch_, step, steps, B, value});
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
  write_file_atomic((std::filesystem::path(files.dir) / kStateFile).string(), files.state);
  write_file_atomic((std::filesystem::path(files.dir) / kModelFile).string(), files.model);
}
}  // namespace

Trainer::~Trainer() {
  if (writer_.joinable()) writer_.join();
}

// The training state is one self-contained file (the optimizer's state, the exact weights it
// applies to, the epoch, the losses and the random streams), so a crash between the two writes
// can never pair a model with an optimizer from another epoch. model.safetensors is the plain
// model, loadable by PyTorch with strict=True.
static CheckpointFiles snapshot(const std::string& dir, const TextToImageModel& model,
                                const nn::Adam& optimizer, int64_t epoch,
                                const std::vector<float>& losses, Generator::State noise,
                                Generator::State data, const TrainConfig& config) {
  SafetensorsFile state = optimizer.state_dict();
  for (auto& [name, tensor] : model.state_dict()) {
    state.tensors.emplace_back(kModelPrefix + name, tensor);
  }
  state.metadata["trainer.epoch"] = std::to_string(epoch);
  std::string loss_text;
  for (float l : losses) loss_text += fmt::format("{}{:.9g}", loss_text.empty() ? "" : ",", l);
  state.metadata["trainer.losses"] = loss_text;
  state.metadata["trainer.noise_rng"] = state_str(noise);
  state.metadata["trainer.data_rng"] = state_str(data);
  state.metadata["trainer.samples_per_prompt"] = std::to_string(config.samples_per_prompt);
  state.metadata["trainer.batch_size"] = std::to_string(config.batch_size);
  state.metadata["trainer.seed"] = std::to_string(config.seed);
  return {dir, serialize_safetensors(state.tensors, state.metadata),
          serialize_safetensors(model.state_dict(), {{"format", "pt"}})};
}

void Trainer::save_checkpoint(const std::string& dir) {
  wait_for_checkpoint();
  write_checkpoint_files(snapshot(dir, *model_, *optimizer_, epoch_, losses_,
                                  noise_generator_.get_state(), dataset_.generator_state(),
                                  config_));
}

void Trainer::save_checkpoint_async(const std::string& dir) {
  wait_for_checkpoint();
  writer_ = std::thread(
      [this, files = snapshot(dir, *model_, *optimizer_, epoch_, losses_,
                              noise_generator_.get_state(), dataset_.generator_state(), config_)] {
        try {
          write_checkpoint_files(files);
        } catch (...) {
          writer_error_ = std::current_exception();
        }
      });
}

void Trainer::wait_for_checkpoint() {
  if (writer_.joinable()) writer_.join();
  if (writer_error_) std::rethrow_exception(std::exchange(writer_error_, nullptr));
}

void Trainer::resume(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / kStateFile).string();
  SafetensorsFile state = load_safetensors(path);
  const auto& meta = state.metadata;

  // The run's identity must match this trainer's configuration.
  const auto check_same = [&](const char* key, const std::string& ours) {
    const std::string& theirs = require(meta, key, path);
    INK_CHECK(theirs == ours, "resume: {} was trained with {} = {}, but this run uses {}", path,
              std::string(key).substr(8), shown_text(theirs), ours);
  };
  check_same("trainer.samples_per_prompt", std::to_string(config_.samples_per_prompt));
  check_same("trainer.batch_size", std::to_string(config_.batch_size));
  check_same("trainer.seed", std::to_string(config_.seed));

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

  // Split the file into the model's and the optimizer's tensors.
  NamedTensors model_tensors;
  SafetensorsFile optimizer_state;
  optimizer_state.metadata = meta;
  for (auto& [name, tensor] : state.tensors) {
    if (name.rfind(kModelPrefix, 0) == 0) {
      model_tensors.emplace_back(name.substr(std::string(kModelPrefix).size()), tensor);
    } else {
      optimizer_state.tensors.emplace_back(name, tensor);
    }
  }

  // Load into fresh objects first, so a bad file leaves this trainer untouched.
  Generator scratch(0);
  auto model = std::make_unique<TextToImageModel>(model_->config(), &scratch);
  model->load_state_dict(model_tensors, /*strict=*/true);
  auto optimizer = std::make_unique<nn::Adam>(model->named_parameters(), optimizer_->options());
  optimizer->load_state_dict(optimizer_state);

  model_ = std::move(model);
  optimizer_ = std::move(optimizer);
  epoch_ = epoch;
  losses_ = std::move(losses);
  noise_generator_.set_state(noise_state);
  dataset_.set_generator_state(data_state);
}

}  // namespace ink
