// DiffusionRecipe: how TextToImageDiffusion trains (seed 002): eps-prediction MSE on images
// scaled to [-1, 1], classifier-free-guidance condition dropout, AdamW with a linear warm-up,
// optional gradient clipping by global norm, and an EMA of the weights that is the model
// pictures are drawn with and the one saved as model.safetensors.
#pragma once

#include <memory>

#include "models/dataset.h"
#include "models/diffusion/model.h"
#include "models/recipe.h"
#include "nn/optim.h"

namespace ink::diffusion {

// What this object represents: one diffusion training run's model, data and optimiser. Per
// step, for a batch of B pictures x0 (scaled to [-1, 1]) and their prompts, from the loop's
// noise stream in this order: t ~ U{0 .. T-1} per row, eps ~ N(0, I), and one uniform per row
// that replaces the prompt by the empty one when below cond_dropout; the loss is
// mse(unet(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t, text), eps).
class DiffusionRecipe final : public Recipe {
 public:
  DiffusionRecipe(const TrainConfig& config, TrainingStreams& streams);

  std::string name() const override { return "diffusion"; }
  TextToImageDiffusion& model() override { return *model_; }
  Dataset& dataset() override { return *dataset_; }
  nn::AdamW& optimizer() override { return *optimizer_; }
  Tensor loss(const DataBatch& batch, Generator& noise) override;
  void before_step(int64_t step) override;
  void after_step(int64_t step) override;
  // The EMA weights, copied into a second model whenever they are asked for.
  TextToImageDiffusion& inference_model() override;
  std::map<std::string, std::string> resume_settings() override;
  void save_extra_state(SafetensorsFile& state) const override;
  void load_extra_state(const SafetensorsFile& state) override;

 private:
  // How the resume check and the state file name the decay: "cosine over 9560 updates".
  std::string lr_decay_text() const;

  TrainConfig config_;
  std::unique_ptr<TextToImageDiffusion> model_;
  std::unique_ptr<TextToImageDiffusion> ema_model_;  // the EMA's values, for sampling and saving
  std::unique_ptr<nn::AdamW> optimizer_;
  std::unique_ptr<nn::LRSchedule> schedule_;
  std::unique_ptr<nn::EMA> ema_;
  std::unique_ptr<Dataset> dataset_;
  int64_t ema_copied_at_ = -1;  // the EMA update count ema_model_ holds
};

}  // namespace ink::diffusion
