// What a training recipe is: the settings of a run (TrainConfig, checked in one place) and the
// small interface a recipe implements for the reusable training loop of models/trainer.h (the
// model, its data, the loss of a batch, the optimizer and its parameter groups, per-step hooks,
// extra state, and the model to draw pictures with). The recipes are listed in recipe.cpp.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/dataset.h"
#include "models/image_model.h"
#include "nn/optim.h"
#include "nn/safetensors.h"
#include "tensor/random.h"

namespace ink {

// The settings of one training run, as given on the command line and kept in config.json.
struct TrainConfig {
  // The accepted ranges, checked by validate().
  static constexpr int64_t kMaxEpochs = 1'000'000;
  static constexpr int64_t kMaxSamplesPerPrompt = 1'000'000;
  static constexpr int64_t kMinBatchSize = 2;  // BatchNorm1d cannot train on one sample
  // Memory grows by about 46 KB per sample of a batch (activations and their gradients), so the
  // largest batch needs about 4.6 GB.
  static constexpr int64_t kMaxBatchSize = 100'000;
  static constexpr double kMaxLr = 10.0;

  std::string model = "mlp";  // the recipe (see recipe_names())
  int64_t epochs = 100;
  int64_t samples_per_prompt = 500;
  int64_t batch_size = 64;
  double lr = 1e-3;
  uint64_t seed = 42;

  // The diffusion recipe's settings (the MLP ignores them; config.json records them all).
  std::string dataset = "shapes";      // "shapes" (the nine prompts) or "scenes"
  std::string model_config = "small";  // the architecture preset: tiny, small, base
  double weight_decay = 0.0;           // AdamW's decoupled decay
  int64_t warmup_steps = 200;          // linear learning-rate warm-up
  double ema_decay = 0.999;            // the EMA of the weights that draws the pictures
  double cond_dropout = 0.1;           // share of prompts replaced by the empty one (for CFG)
  double clip_grad_norm = 0.0;         // clip the gradients' global norm to this (0: off)
  // Min-SNR-gamma loss weighting (Hang et al. 2023): sample b's squared error is weighted by
  // min(SNR_t, gamma) / SNR_t, SNR_t = abar_t / (1 - abar_t), so the nearly clean timesteps,
  // whose noise is easy to predict and says little about the shape, pull less (0: off, plain
  // eps-MSE). The default 5 is the paper's; on the default recipe it lowered FD to 0.4-0.76x of
  // plain eps-MSE's at w = 1-3 with the same fidelity (README).
  double snr_gamma = 5.0;
  // The learning rate after the warm-up: "constant", or "cosine", which falls from lr to 0 along
  // half a cosine over the rest of the run (so it needs a length in epochs or images, not a
  // budget in minutes; nn::LRSchedule has the formula).
  std::string lr_decay = "constant";
  // How a training sample's timestep is drawn: "uniform" over [0, T), or "logit-normal" (90%
  // T sigmoid(z) with z ~ N(0, 1), 10% uniform: models/diffusion/recipe.cpp).
  std::string timesteps = "uniform";
  // The noise schedule the model is trained and sampled with (DiffusionConfig::schedule, so the
  // checkpoint records it): "linear" (betas 1e-4 to 0.02) or "cosine" (Nichol & Dhariwal 2021).
  std::string noise_schedule = "linear";
  // What the U-Net predicts (DiffusionConfig::prediction, recorded in the checkpoint): "eps" or
  // "v" = sqrt(abar) eps - sqrt(1 - abar) x0.
  std::string prediction = "eps";
  // The text encoder's transformer layers (DiffusionConfig::text_layers; the presets have 2).
  int64_t text_layers = 2;
  // A fixed position code on the cross-attention queries (DiffusionConfig::query_positions).
  bool query_positions = false;
  // The text encoder attends within each "and"-joined phrase (DiffusionConfig::phrase_attention).
  bool phrase_attention = false;

  // How a message names a field: "epochs" -> "--epochs" on the command line, or "\"epochs\" in
  // config.json". Without one, fields are named as they are ("epochs").
  using FieldName = std::function<std::string(const char* field)>;
  // Throws ink::Error naming the first invalid setting and its value. This is the only place
  // the rules live; the command line calls it with its own names (and then writes ranges as
  // "between 1 and 100" rather than "in [1, 100]").
  void validate(const FieldName& name = nullptr) const;
};

// Called after every optimisation step (for progress displays).
struct StepInfo {
  int64_t epoch = 0;    // 0-based epoch being trained
  int64_t step = 0;     // 0-based step within the epoch
  int64_t steps = 0;    // steps per epoch
  int64_t samples = 0;  // samples in this step's batch
  float loss = 0.0f;    // this step's loss
};

// The training loop's random streams, all derived from the run's seed. A recipe draws its
// initial weights from `init`, and its dataset owns a copy of `data`; the loop keeps `noise`.
struct TrainingStreams {
  Generator init;
  Generator noise;
  Generator data;
  explicit TrainingStreams(uint64_t seed);
};

// What this object represents: one way to train one kind of model. The loop (Trainer) owns the
// run: its random streams, the epochs, the NaN guard, checkpoints and resume. The recipe owns
// what is particular: the model, the data, the loss, the optimizer (with its parameter groups)
// and anything else its state needs (an EMA of the weights, say).
//
// One optimisation step of the loop, for batch b of an epoch:
//   loss = recipe.loss(batch, noise)      (the NaN guard checks loss.item())
//   optimizer.zero_grad(); loss.backward();
//   recipe.before_step(step)              (e.g. the learning rate of a warm-up schedule)
//   optimizer.step();
//   recipe.after_step(step)               (e.g. the EMA update)
// where `step` counts optimisation steps over the whole run (it is restored by resume).
//
// How the diffusion recipe fits without changing the loop: AdamW with warm-up is its
// optimizer() plus before_step(); the EMA is a second model updated in after_step(), saved by
// save_extra_state() and returned by inference_model(); a budget in images makes its dataset's
// epoch a fixed number of images (a checkpoint interval), and a budget in minutes is a stop
// request from the step callback, as Ctrl-C is; preview grids are drawn between epochs from
// inference_model().
class Recipe {
 public:
  virtual ~Recipe() = default;

  // The recipe's name on the command line ("mlp"); also the kind of its model.
  virtual std::string name() const = 0;
  virtual ImageModel& model() = 0;
  virtual Dataset& dataset() = 0;
  virtual nn::Optimizer& optimizer() = 0;

  // The loss of one batch: a scalar on the graph, not yet backpropagated. Draws its randomness
  // from `noise` only.
  virtual Tensor loss(const DataBatch& batch, Generator& noise) = 0;
  virtual void before_step(int64_t step) {}
  virtual void after_step(int64_t step) {}

  // The model that draws pictures and is saved as model.safetensors.
  virtual ImageModel& inference_model() { return model(); }

  // The settings a saved training state must agree with to be resumed by this recipe, as
  // metadata key -> expected text. The loop compares each with the file's entry and names the
  // setting when they differ. The default lists the optimizer's hyper-parameters (the "lr",
  // "beta1", ... entries of its state_dict metadata), so an edited config.json cannot be reported
  // with one learning rate and trained with another.
  virtual std::map<std::string, std::string> resume_settings();

  // More state for the training-state file: tensors (their names must not start with "model."
  // or "state.") and metadata. load_extra_state() must check everything before changing
  // anything, and throw ink::Error when `state` does not fit. It receives every tensor of the
  // file that is neither the model's nor the optimizer's, and all the metadata; the default
  // refuses any such tensor.
  virtual void save_extra_state(SafetensorsFile& state) const {}
  virtual void load_extra_state(const SafetensorsFile& state);
};

// The recipes, in a fixed order ("mlp", ...).
std::vector<std::string> recipe_names();
// A new recipe for `config.model`, drawing from `streams` (see TrainingStreams). Throws
// ink::Error for an unknown name or settings the recipe cannot train with.
std::unique_ptr<Recipe> make_recipe(const TrainConfig& config, TrainingStreams& streams);

}  // namespace ink
