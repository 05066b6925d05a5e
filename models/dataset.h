// Dataset: what a training loop reads (epochs of batches of prompt tokens [B, L] and images
// [B, C, H, W]), and ShapeDataset, the notebook's data: samples_per_prompt fresh pictures of
// each of the nine prompts every epoch, shuffled and cut into batches.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/tokenizer.h"
#include "tensor/random.h"
#include "tensor/tensor.h"

namespace ink {

// SplitMix64's finalizer: turns (epoch seed, sample index) into well-spread, independent seeds;
// every dataset seeds sample i of an epoch with mix_seed(epoch_seed ^ mix_seed(i)).
uint64_t mix_seed(uint64_t value);

// The size of every picture of a dataset or model: C x H x W (1 x 28 x 28 for the shapes,
// 3 x 32 x 32 for small RGB data).
struct ImageFormat {
  int64_t channels = 1;  // C
  int64_t height = 28;   // H
  int64_t width = 28;    // W
  int64_t pixels() const { return channels * height * width; }
  bool operator==(const ImageFormat&) const = default;
};

// One batch, in plain buffers that are reused from batch to batch (B = batch size, L = the
// tokenizer's max_length, C x H x W = the image format). The last batch of an epoch may be
// smaller.
struct DataBatch {
  int64_t size = 0;                     // B
  int64_t length = 0;                   // L
  ImageFormat format;                   // C, H, W
  std::vector<int64_t> tokens;          // (B, L) token ids of each sample's prompt
  std::vector<float> images;            // (B, C, H, W) pixels in [0, 1]
  std::vector<int64_t> prompt_indices;  // (B) index into the dataset's prompts()

  Tensor tokens_tensor() const;  // [B, L] Int64 (a copy)
  Tensor images_tensor() const;  // [B, C, H, W] Float32 (a copy)
};
using ShapeBatch = DataBatch;

// What this object represents: an endless supply of epochs of (prompt, image) pairs for a
// training loop. An epoch is whatever the data defines (the whole synthetic set once; a fixed
// number of images for a budget counted in images); the loop checkpoints between epochs.
//
// Determinism contract: start_epoch() is the only call that uses the dataset's generator, and
// fill_batch() depends only on the generator state before start_epoch() and the batch index.
// So saving generator_state() between epochs and restoring it with set_generator_state()
// continues a run bit for bit.
class Dataset {
 public:
  virtual ~Dataset() = default;

  virtual ImageFormat image_format() const = 0;
  virtual const Tokenizer& tokenizer() const = 0;
  // The distinct prompts of the data, for labels and sample grids (may be empty).
  virtual std::vector<std::string> prompts() const = 0;
  // Samples per epoch, and per batch (the last batch may be smaller).
  virtual int64_t size() const = 0;
  virtual int64_t batch_size() const = 0;
  // ceil(size / batch_size): the last, partial batch is kept.
  int64_t num_batches() const { return (size() + batch_size() - 1) / batch_size(); }

  // Begins a new epoch: draws its seed and its order from the generator.
  virtual void start_epoch() = 0;
  // Fills `batch` with batch `batch_index` of the current epoch, reusing its buffers.
  virtual void fill_batch(int64_t batch_index, DataBatch& batch) const = 0;
  // One real picture of prompts()[prompt_index] (C x H x W values in [0, 1]), for "ground truth
  // versus generated" figures. Uses `generator` only, never the dataset's own stream.
  virtual std::vector<float> example(int64_t prompt_index, Generator& generator) const = 0;

  // The state the next start_epoch() draws from.
  virtual Generator::State generator_state() const = 0;
  virtual void set_generator_state(Generator::State state) = 0;
};

// What this object represents: an endless supply of epochs. Each epoch holds every prompt
// samples_per_prompt times, in an order shuffled afresh, with newly drawn pictures.
//
// Determinism: start_epoch() is the only call that uses the dataset's generator. It draws one
// 64-bit epoch seed and then shuffles (Fisher-Yates). Sample k of the epoch is drawn from its own
// generator seeded from (epoch seed, k), so an epoch's data depends only on the generator state
// before start_epoch(), not on the batch size, on the order in which batches are read, or on how
// many were read. To resume a run, save generator_state() at any point of an epoch (it is the
// state the next epoch starts from) and call set_generator_state() on a new dataset.
//
//   ShapeDataset data(500, 64, Generator(42));
//   ShapeBatch batch;
//   for (int epoch = 0; epoch < 100; ++epoch) {
//     data.start_epoch();
//     for (int64_t b = 0; b < data.num_batches(); ++b) {
//       data.fill_batch(b, batch);
//       ...
//     }
//   }
class ShapeDataset final : public Dataset {
 public:
  // Throws ink::Error unless samples_per_prompt >= 1 and batch_size >= 1.
  ShapeDataset(int64_t samples_per_prompt, int64_t batch_size, Generator generator,
               CharTokenizer tokenizer = CharTokenizer());

  int64_t samples_per_prompt() const { return samples_per_prompt_; }
  int64_t batch_size() const override { return batch_size_; }
  // Samples per epoch: kNumShapePrompts * samples_per_prompt.
  int64_t size() const override { return size_; }
  // Number of samples in batch `batch_index` (batch_size, or fewer for the last one).
  int64_t batch_length(int64_t batch_index) const;
  const CharTokenizer& tokenizer() const override { return tokenizer_; }
  ImageFormat image_format() const override;          // 1 x 28 x 28
  std::vector<std::string> prompts() const override;  // kShapePrompts

  // Begins a new epoch: draws its seed and its order from the generator.
  void start_epoch() override;
  // Epochs started so far.
  int64_t epoch() const { return epoch_; }

  // Fills `batch` with batch `batch_index` of the current epoch, resizing its buffers only when
  // they are too small. Throws ink::Error before the first start_epoch() or when the index is
  // outside [0, num_batches()).
  void fill_batch(int64_t batch_index, DataBatch& batch) const override;
  std::vector<float> example(int64_t prompt_index, Generator& generator) const override;

  // The prompt index of each sample of the current epoch, in order: (size).
  const std::vector<int64_t>& order() const { return order_; }

  // The state the next start_epoch() draws from.
  Generator::State generator_state() const override { return generator_.get_state(); }
  void set_generator_state(Generator::State state) override { generator_.set_state(state); }

 private:
  int64_t samples_per_prompt_;
  int64_t batch_size_;
  int64_t size_;
  Generator generator_;
  CharTokenizer tokenizer_;
  std::vector<int64_t> prompt_tokens_;  // (kNumShapePrompts, L) the nine prompts, encoded once
  std::vector<int64_t> order_;          // (size) prompt index of each sample this epoch
  uint64_t epoch_seed_ = 0;
  int64_t epoch_ = 0;
};

}  // namespace ink
