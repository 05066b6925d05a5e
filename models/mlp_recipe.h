// The seed notebook's recipe as the first Recipe: the text-to-image MLP, the nine synthetic
// shapes, Adam and the MSE between generated and true pictures.
#pragma once

#include <memory>

#include "models/dataset.h"
#include "models/recipe.h"
#include "models/text_to_image.h"
#include "nn/optim.h"

namespace ink {

// What this object represents: the notebook's training of TextToImageModel. Per step: the
// batch's prompts and fresh noise [B, N] from the loop's noise stream go through the model, and
// the loss is mse(images, true pictures). Adam over every parameter with the run's lr.
class MlpRecipe final : public Recipe {
 public:
  MlpRecipe(const TrainConfig& config, TrainingStreams& streams);

  std::string name() const override { return "mlp"; }
  TextToImageModel& model() override { return *model_; }
  ShapeDataset& dataset() override { return *dataset_; }
  nn::Adam& optimizer() override { return *optimizer_; }
  Tensor loss(const DataBatch& batch, Generator& noise) override;

 private:
  std::unique_ptr<TextToImageModel> model_;
  std::unique_ptr<nn::Adam> optimizer_;
  std::unique_ptr<ShapeDataset> dataset_;
};

}  // namespace ink
