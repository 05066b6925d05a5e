// The notebook's training recipe as a reusable object: synthetic data, the model, Adam and MSE,
// with checkpoints that let a run stop and resume with bit-identical results.
// The inkgrad app, the tests and bench_train all drive training through this class.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "models/dataset.h"
#include "models/text_to_image.h"
#include "nn/optim.h"

namespace ink {

struct TrainConfig {
  // The accepted ranges, shared by validate() and the command line's own checks.
  static constexpr int64_t kMaxEpochs = 1'000'000;
  static constexpr int64_t kMaxSamplesPerPrompt = 1'000'000;
  static constexpr int64_t kMinBatchSize = 2;  // BatchNorm1d cannot train on one sample
  static constexpr int64_t kMaxBatchSize = 100'000;
  static constexpr double kMaxLr = 10.0;

  int64_t epochs = 100;
  int64_t samples_per_prompt = 500;
  int64_t batch_size = 64;
  double lr = 1e-3;
  uint64_t seed = 42;

  // Throws ink::Error naming the first invalid field and its value.
  void validate() const;
};

// Called after every optimisation step (for progress displays).
struct StepInfo {
  int64_t epoch = 0;    // 0-based epoch being trained
  int64_t step = 0;     // 0-based step within the epoch
  int64_t steps = 0;    // steps per epoch
  int64_t samples = 0;  // samples in this step's batch
  float loss = 0.0f;    // this step's MSE
};

class Trainer {
 public:
  explicit Trainer(const TrainConfig& config);
  ~Trainer();  // waits for a checkpoint still being written (its error, if any, is dropped)
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Trains one epoch and returns its mean batch loss (the notebook's epoch loss).
  // Throws ink::Error if the loss becomes NaN or infinite, naming the epoch and step; the
  // model and optimizer are then in an undefined state, so reload the last checkpoint.
  float train_epoch(const std::function<void(const StepInfo&)>& on_step = {});

  int64_t epoch() const { return epoch_; }                      // epochs completed
  const std::vector<float>& losses() const { return losses_; }  // one per completed epoch
  const TrainConfig& config() const { return config_; }
  TextToImageModel& model() { return *model_; }
  nn::Adam& optimizer() { return *optimizer_; }
  ShapeDataset& dataset() { return dataset_; }

  // Writes <dir>/model.safetensors and <dir>/optimizer.safetensors atomically. The optimizer
  // file's metadata also holds the epoch, the losses and the generators' states, so that
  // resume() continues exactly where the run stopped.
  void save_checkpoint(const std::string& dir);
  // The same, but only the snapshot (a copy of the state in memory) is taken now: the files are
  // written by a background thread while training goes on. Each file is still replaced
  // atomically, so a crash leaves the previous checkpoint or the new one. A later save waits
  // for this one first.
  void save_checkpoint_async(const std::string& dir);
  // Waits until a background save has finished; rethrows its error (a full disk, say).
  void wait_for_checkpoint();
  // Loads both files written by save_checkpoint; throws ink::Error (leaving this trainer
  // unchanged) if they are missing, corrupt, or do not match this configuration.
  void resume(const std::string& dir);

 private:
  TrainConfig config_;
  Generator init_generator_;   // parameter initialisation
  Generator noise_generator_;  // training noise
  std::unique_ptr<TextToImageModel> model_;
  std::unique_ptr<nn::Adam> optimizer_;
  ShapeDataset dataset_;
  ShapeBatch batch_;  // reused every step
  int64_t epoch_ = 0;
  std::vector<float> losses_;
  std::thread writer_;  // the background save, if one is running
  std::exception_ptr writer_error_;
};

}  // namespace ink
