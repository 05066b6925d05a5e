// ScenesDataset: per-sample generators, rendering and word tokens.
#include "models/scenes_dataset.h"

#include <algorithm>

#include "tensor/error.h"

namespace ink {

ScenesDataset::ScenesDataset(int64_t images_per_epoch, int64_t batch_size, Generator generator)
    : size_(images_per_epoch), batch_size_(batch_size), generator_(generator) {
  INK_CHECK(images_per_epoch >= 1, "ScenesDataset: images_per_epoch must be >= 1, got {}",
            images_per_epoch);
  INK_CHECK(batch_size >= 1, "ScenesDataset: batch_size must be >= 1, got {}", batch_size);
}

std::vector<std::string> ScenesDataset::prompts() const {
  return {"a red circle",
          "a large blue square on the left",
          "a small white triangle at the top right",
          "a yellow cross in the center",
          "a purple circle at the top and a green triangle at the bottom",
          "a red triangle",
          "a green circle",
          "a square at the top right",
          "a red circle on the left and a blue square on the right"};
}

void ScenesDataset::start_epoch() {
  epoch_seed_ = generator_.next_u64();
  started_ = true;
}

void ScenesDataset::fill_batch(int64_t batch_index, DataBatch& batch) const {
  INK_CHECK(started_, "ScenesDataset: fill_batch before the first start_epoch()");
  INK_CHECK(batch_index >= 0 && batch_index < num_batches(),
            "ScenesDataset: batch {} is outside [0, {})", batch_index, num_batches());
  const int64_t first = batch_index * batch_size_;
  const int64_t b = std::min(batch_size_, size_ - first);
  const int64_t length = tokenizer_.max_length();
  batch.size = b;
  batch.length = length;
  batch.format = image_format();
  batch.tokens.resize(static_cast<size_t>(b * length));
  batch.images.resize(static_cast<size_t>(b * scenes::kImageFloats));
  batch.prompt_indices.assign(static_cast<size_t>(b), -1);
  for (int64_t i = 0; i < b; ++i) {
    Generator gen(mix_seed(epoch_seed_ ^ mix_seed(static_cast<uint64_t>(first + i))));
    const auto sample = sampler_.sample_training(gen);
    scenes::render(sample.objects, batch.images.data() + i * scenes::kImageFloats);
    tokenizer_.encode_into(sample.prompt, batch.tokens.data() + i * length);
  }
}

std::vector<float> ScenesDataset::example(int64_t prompt_index, Generator& generator) const {
  const auto list = prompts();
  INK_CHECK(prompt_index >= 0 && prompt_index < static_cast<int64_t>(list.size()),
            "ScenesDataset: prompt index {} is outside [0, {})", prompt_index, list.size());
  std::vector<float> image(static_cast<size_t>(scenes::kImageFloats));
  scenes::render(sampler_.sample_for_prompt(scenes::parse_prompt(list[prompt_index]), generator),
                 image.data());
  return image;
}

}  // namespace ink
