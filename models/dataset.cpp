// DataBatch's tensors, and ShapeDataset: epoch seeding, the Fisher-Yates shuffle, and filling
// the reusable batch buffers.
#include "models/dataset.h"

#include <algorithm>
#include <limits>

#include "models/shapes.h"
#include "tensor/error.h"

namespace ink {

uint64_t mix_seed(uint64_t value) {
  value += 0x9E3779B97F4A7C15ULL;
  value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9ULL;
  value = (value ^ (value >> 27)) * 0x94D049BB133111EBULL;
  return value ^ (value >> 31);
}

Tensor DataBatch::tokens_tensor() const {
  return from_vector_i64(tokens, {size, length});
}

Tensor DataBatch::images_tensor() const {
  return from_vector(images, {size, format.channels, format.height, format.width});
}

ShapeDataset::ShapeDataset(int64_t samples_per_prompt, int64_t batch_size, Generator generator,
                           CharTokenizer tokenizer)
    : samples_per_prompt_(samples_per_prompt),
      batch_size_(batch_size),
      size_(0),
      generator_(generator),
      tokenizer_(tokenizer) {
  INK_CHECK(samples_per_prompt >= 1 && batch_size >= 1,
            "ShapeDataset: samples_per_prompt ({}) and batch_size ({}) must both be >= 1",
            samples_per_prompt, batch_size);
  INK_CHECK(samples_per_prompt <= std::numeric_limits<int64_t>::max() / kNumShapePrompts,
            "ShapeDataset: samples_per_prompt ({}) is too large", samples_per_prompt);
  size_ = kNumShapePrompts * samples_per_prompt;

  const auto length = static_cast<size_t>(tokenizer_.max_length());
  prompt_tokens_.resize(static_cast<size_t>(kNumShapePrompts) * length);
  for (int64_t p = 0; p < kNumShapePrompts; ++p) {
    tokenizer_.encode_into(kShapePrompts[static_cast<size_t>(p)],
                           prompt_tokens_.data() + static_cast<size_t>(p) * length);
  }
}

ImageFormat ShapeDataset::image_format() const {
  return {1, kImageSide, kImageSide};
}

std::vector<std::string> ShapeDataset::prompts() const {
  return {std::begin(kShapePrompts), std::end(kShapePrompts)};
}

std::vector<float> ShapeDataset::example(int64_t prompt_index, Generator& generator) const {
  INK_CHECK(0 <= prompt_index && prompt_index < kNumShapePrompts,
            "ShapeDataset::example: prompt index {} is out of range [0, {})", prompt_index,
            kNumShapePrompts);
  return make_shape(kShapePrompts[static_cast<size_t>(prompt_index)], generator);
}

int64_t ShapeDataset::batch_length(int64_t batch_index) const {
  INK_CHECK(0 <= batch_index && batch_index < num_batches(),
            "ShapeDataset::batch_length: batch index {} is out of range [0, {})", batch_index,
            num_batches());
  return std::min(batch_size_, size_ - batch_index * batch_size_);
}

void ShapeDataset::start_epoch() {
  epoch_seed_ = generator_.next_u64();
  // The order starts from the same sorted list every epoch, so it depends only on the generator
  // state and not on the previous epoch's order (which a resumed run does not have).
  order_.resize(static_cast<size_t>(size_));
  for (int64_t i = 0; i < size_; ++i) order_[static_cast<size_t>(i)] = i / samples_per_prompt_;
  for (int64_t i = size_ - 1; i > 0; --i) {
    const int64_t j = generator_.randint(0, i + 1);
    std::swap(order_[static_cast<size_t>(i)], order_[static_cast<size_t>(j)]);
  }
  ++epoch_;
}

void ShapeDataset::fill_batch(int64_t batch_index, DataBatch& batch) const {
  INK_CHECK(epoch_ > 0, "ShapeDataset::fill_batch: call start_epoch() before reading batch {}",
            batch_index);
  INK_CHECK(0 <= batch_index && batch_index < num_batches(),
            "ShapeDataset::fill_batch: batch index {} is out of range [0, {})", batch_index,
            num_batches());
  const int64_t begin = batch_index * batch_size_;
  const int64_t count = std::min(batch_size_, size_ - begin);
  const auto length = static_cast<size_t>(tokenizer_.max_length());

  batch.size = count;
  batch.length = static_cast<int64_t>(length);
  batch.format = image_format();
  batch.tokens.resize(static_cast<size_t>(count) * length);
  batch.images.resize(static_cast<size_t>(count * kImagePixels));
  batch.prompt_indices.resize(static_cast<size_t>(count));
  for (int64_t b = 0; b < count; ++b) {
    const int64_t sample = begin + b;
    const int64_t prompt = order_[static_cast<size_t>(sample)];
    batch.prompt_indices[static_cast<size_t>(b)] = prompt;
    std::copy_n(prompt_tokens_.data() + static_cast<size_t>(prompt) * length, length,
                batch.tokens.data() + static_cast<size_t>(b) * length);
    Generator sample_generator(mix_seed(epoch_seed_ ^ mix_seed(static_cast<uint64_t>(sample))));
    draw_shape(prompt, sample_generator, batch.images.data() + b * kImagePixels);
  }
}

}  // namespace ink
