// ShapeDataset: the training data of the notebook, samples_per_prompt fresh pictures of each
// of the nine prompts every epoch, shuffled and cut into batches of token ids and images.
#pragma once

#include <cstdint>
#include <vector>

#include "models/tokenizer.h"
#include "tensor/random.h"

namespace ink {

// One batch, in plain buffers that are reused from batch to batch (B = batch size, 1 channel,
// 28 x 28 pixels, L = the tokenizer's max_length). The last batch of an epoch may be smaller.
struct ShapeBatch {
  int64_t size = 0;                     // B
  std::vector<int64_t> tokens;          // (B, L) token ids of each sample's prompt
  std::vector<float> images;            // (B, 1, 28, 28) pixels in [0, 1]
  std::vector<int64_t> prompt_indices;  // (B) index into kShapePrompts
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
class ShapeDataset {
 public:
  // Throws ink::Error unless samples_per_prompt >= 1 and batch_size >= 1.
  ShapeDataset(int64_t samples_per_prompt, int64_t batch_size, Generator generator,
               CharTokenizer tokenizer = CharTokenizer());

  int64_t samples_per_prompt() const { return samples_per_prompt_; }
  int64_t batch_size() const { return batch_size_; }
  // Samples per epoch: kNumShapePrompts * samples_per_prompt.
  int64_t size() const { return size_; }
  // ceil(size / batch_size): the last, partial batch is kept.
  int64_t num_batches() const { return (size_ + batch_size_ - 1) / batch_size_; }
  // Number of samples in batch `batch_index` (batch_size, or fewer for the last one).
  int64_t batch_length(int64_t batch_index) const;
  const CharTokenizer& tokenizer() const { return tokenizer_; }

  // Begins a new epoch: draws its seed and its order from the generator.
  void start_epoch();
  // Epochs started so far.
  int64_t epoch() const { return epoch_; }

  // Fills `batch` with batch `batch_index` of the current epoch, resizing its buffers only when
  // they are too small. Throws ink::Error before the first start_epoch() or when the index is
  // outside [0, num_batches()).
  void fill_batch(int64_t batch_index, ShapeBatch& batch) const;

  // The prompt index of each sample of the current epoch, in order: (size).
  const std::vector<int64_t>& order() const { return order_; }

  // The state the next start_epoch() draws from.
  Generator::State generator_state() const { return generator_.get_state(); }
  void set_generator_state(Generator::State state) { generator_.set_state(state); }

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
