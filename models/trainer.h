// The reusable training loop: a Recipe (models/recipe.h) says what to train; Trainer runs it
// with the guarantees every model needs: independent random streams from one seed, a NaN guard,
// progress callbacks, atomic (optionally background) checkpoints, and a resume that continues
// bit for bit. The inkgrad app, the tests and bench_train all train through this class.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "models/dataset.h"
#include "models/recipe.h"
#include "models/text_to_image.h"
#include "nn/optim.h"

namespace ink {

// The two files of a checkpoint in a run folder: the plain model (loadable by generate, and by
// PyTorch with strict=True) and the training state (optimizer, weights, progress, streams).
inline constexpr std::string_view kModelFileName = "model.safetensors";
inline constexpr std::string_view kTrainingStateFileName = "optimizer.safetensors";
// The metadata key of model.safetensors that names the epoch the weights are from.
inline constexpr std::string_view kModelEpochKey = "trainer.epoch";

// True when `dir` holds the model of epoch 1 and no training state: a run stopped between the
// two writes of its first checkpoint. No epoch's training state exists, so such a run continues
// exactly by starting over from epoch 1 (which writes the same model again). A model of a later
// epoch without its training state (a deleted file, say) is not this case.
bool is_unfinished_first_checkpoint(const std::string& dir);

// What this object represents: one training run of a recipe, epoch by epoch. Per step it reads
// a batch from the recipe's dataset, takes the recipe's loss, stops on a non-finite loss before
// any update, backpropagates and steps the recipe's optimizer (the full order is in recipe.h).
class Trainer {
 public:
  // Builds the recipe config.model names (make_recipe), after config.validate().
  explicit Trainer(const TrainConfig& config);
  ~Trainer();  // waits for a checkpoint still being written (its error, if any, is dropped)
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Trains one epoch and returns its mean batch loss (the notebook's epoch loss).
  // Throws ink::Error if the loss becomes NaN or infinite, naming the epoch and step; the
  // model and optimizer are then in an undefined state, so reload the last checkpoint.
  float train_epoch(const std::function<void(const StepInfo&)>& on_step = {});

  int64_t epoch() const { return epoch_; }  // epochs completed
  // The epoch of the newest checkpoint known to be complete on disk (written by this trainer or
  // loaded by resume); 0 when there is none. A background save counts once it has finished
  // without error (at wait_for_checkpoint or the next save).
  int64_t saved_epoch() const { return saved_epoch_; }
  int64_t step() const { return step_; }                        // optimisation steps so far
  const std::vector<float>& losses() const { return losses_; }  // one per completed epoch
  const TrainConfig& config() const { return config_; }
  Recipe& recipe() { return *recipe_; }
  // The recipe's objects. They live as long as the trainer: resume() loads into them in place,
  // so references taken earlier stay valid.
  ImageModel& model() { return recipe_->model(); }
  nn::Optimizer& optimizer() { return recipe_->optimizer(); }
  Dataset& dataset() { return recipe_->dataset(); }

  // Writes <dir>/model.safetensors and <dir>/optimizer.safetensors atomically. The model file
  // records the model's kind and config (ImageModel::checkpoint_metadata); the optimizer file's
  // metadata also holds the epoch, the losses and the generators' states, so that resume()
  // continues exactly where the run stopped.
  void save_checkpoint(const std::string& dir);
  // The same, but only the snapshot (a copy of the state in memory) is taken now: the files are
  // written by a background thread while training goes on. Each file is still replaced
  // atomically, so a crash leaves the previous checkpoint or the new one. A later save waits
  // for this one first.
  void save_checkpoint_async(const std::string& dir);
  // Waits until a background save has finished; rethrows its error (a full disk, say).
  void wait_for_checkpoint();
  // Loads the state written by save_checkpoint (also one written by phase 1) into this
  // trainer's model, optimizer and recipe in place. Throws ink::Error, leaving this trainer
  // unchanged, if the files are missing, corrupt, or do not match this configuration (another
  // model kind, seed, batch size, samples per prompt, or optimizer hyper-parameter).
  void resume(const std::string& dir);

 private:
  TrainConfig config_;
  TrainingStreams streams_;
  std::unique_ptr<Recipe> recipe_;
  DataBatch batch_;  // reused every step
  int64_t epoch_ = 0;
  int64_t step_ = 0;
  int64_t saved_epoch_ = 0;
  int64_t writing_epoch_ = 0;  // the epoch the background save is writing
  std::vector<float> losses_;
  std::thread writer_;  // the background save, if one is running
  std::exception_ptr writer_error_;
};

}  // namespace ink
