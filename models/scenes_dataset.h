// ScenesDataset: the scenes world (models/scenes.h) as training data: every epoch a fixed number
// of freshly drawn pictures with their prompts, cut into batches of word tokens and 3 x 32 x 32
// images.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/dataset.h"
#include "models/scenes.h"
#include "models/word_tokenizer.h"

namespace ink {

// What this object represents: an endless supply of epochs of scenes. Sample k of an epoch is
// drawn by SceneSampler::sample_training from its own generator seeded from (epoch seed, k), so
// an epoch depends only on the generator state before start_epoch(), as for ShapeDataset.
class ScenesDataset final : public Dataset {
 public:
  // Throws ink::Error unless images_per_epoch >= 1 and batch_size >= 1.
  ScenesDataset(int64_t images_per_epoch, int64_t batch_size, Generator generator);

  ImageFormat image_format() const override {
    return {scenes::kChannels, scenes::kSide, scenes::kSide};
  }
  const WordTokenizer& tokenizer() const override { return tokenizer_; }
  // Prompts for sample grids: a few seen ones and a few held-out ones (see example()).
  std::vector<std::string> prompts() const override;
  int64_t size() const override { return size_; }
  int64_t batch_size() const override { return batch_size_; }
  void start_epoch() override;
  // prompt_indices are -1: scenes have no fixed prompt list.
  void fill_batch(int64_t batch_index, DataBatch& batch) const override;
  // A ground-truth picture of prompts()[prompt_index] (held-out combinations included, since
  // the prompt names them).
  std::vector<float> example(int64_t prompt_index, Generator& generator) const override;
  Generator::State generator_state() const override { return generator_.get_state(); }
  void set_generator_state(Generator::State state) override { generator_.set_state(state); }

 private:
  int64_t size_;
  int64_t batch_size_;
  Generator generator_;
  WordTokenizer tokenizer_;
  scenes::SceneSampler sampler_;
  uint64_t epoch_seed_ = 0;
  bool started_ = false;
};

}  // namespace ink
