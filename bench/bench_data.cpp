// How fast the synthetic training data is made: images/s for each prompt's generator, one
// notebook epoch (4,500 samples in 71 batches of 64), and the tokenizer.
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "models/dataset.h"
#include "models/shapes.h"
#include "models/tokenizer.h"

namespace ink {
namespace {

// One generator, drawing into the same buffer again and again. Arg: prompt index.
void BM_draw_shape(benchmark::State& state) {
  const int64_t prompt = state.range(0);
  Generator gen(42);
  std::vector<float> image(kImagePixels);
  for (auto _ : state) {
    draw_shape(prompt, gen, image.data());
    benchmark::DoNotOptimize(image.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(std::string(kShapePrompts[static_cast<size_t>(prompt)]));
}
BENCHMARK(BM_draw_shape)->DenseRange(0, kNumShapePrompts - 1);

// A full epoch as training reads it: start_epoch, then every batch. Items are images.
void BM_epoch(benchmark::State& state) {
  const int64_t samples_per_prompt = state.range(0);
  const int64_t batch_size = state.range(1);
  ShapeDataset data(samples_per_prompt, batch_size, Generator(42));
  ShapeBatch batch;
  for (auto _ : state) {
    data.start_epoch();
    for (int64_t b = 0; b < data.num_batches(); ++b) {
      data.fill_batch(b, batch);
      benchmark::DoNotOptimize(batch.images.data());
      benchmark::ClobberMemory();
    }
  }
  state.SetItemsProcessed(state.iterations() * data.size());
}
BENCHMARK(BM_epoch)->Args({500, 64})->Unit(benchmark::kMillisecond);

void BM_tokenize(benchmark::State& state) {
  const CharTokenizer tokenizer;
  const std::string prompt = "Two Vertical Lines!";
  std::vector<int64_t> tokens(static_cast<size_t>(tokenizer.max_length()));
  for (auto _ : state) {
    tokenizer.encode_into(prompt, tokens.data());
    benchmark::DoNotOptimize(tokens.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_tokenize);

}  // namespace
}  // namespace ink
