// MlpRecipe: the notebook's model, data, loss and optimizer.
#include "models/mlp_recipe.h"

#include "nn/functional.h"

namespace ink {

MlpRecipe::MlpRecipe(const TrainConfig& config, TrainingStreams& streams)
    : model_(std::make_unique<TextToImageModel>(TextToImageConfig{}, &streams.init)),
      optimizer_(
          std::make_unique<nn::Adam>(model_->named_parameters(), nn::AdamOptions{.lr = config.lr})),
      dataset_(std::make_unique<ShapeDataset>(config.samples_per_prompt, config.batch_size,
                                              streams.data, model_->tokenizer())) {}

Tensor MlpRecipe::loss(const DataBatch& batch, Generator& noise) {
  Tensor tokens = batch.tokens_tensor();   // [B, L]
  Tensor targets = batch.images_tensor();  // [B, 1, 28, 28]
  Tensor images = model_->forward(tokens, model_->sample_noise(batch.size, noise));
  return nn::functional::mse_loss(images, targets);
}

}  // namespace ink
