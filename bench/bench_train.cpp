// Whole-model benchmarks: one training step of the text-to-image model at batch 64 (forward,
// backward, Adam), a full epoch with data generation, and generation throughput.
// Reported as samples/s (items_per_second) at 1 and 2 threads.
#include <benchmark/benchmark.h>

#include "models/shapes.h"
#include "models/trainer.h"
#include "nn/functional.h"
#include "tensor/inkgrad.h"

namespace {

using namespace ink;

// A fixed batch: the nine prompts cycled, their ground-truth images, fresh noise per step.
struct FixedBatch {
  Tensor tokens, targets;
  explicit FixedBatch(int64_t batch) {
    Generator gen(1);
    CharTokenizer tokenizer;
    std::vector<int64_t> ids;
    std::vector<float> images;
    for (int64_t i = 0; i < batch; ++i) {
      const auto prompt = kShapePrompts[i % kNumShapePrompts];
      auto t = tokenizer.encode(prompt);
      ids.insert(ids.end(), t.begin(), t.end());
      auto img = make_shape(prompt, gen);
      images.insert(images.end(), img.begin(), img.end());
    }
    tokens = from_vector_i64(ids, {batch, 32});
    targets = from_vector(images, {batch, 1, 28, 28});
  }
};

void BM_TrainStep(benchmark::State& state) {
  const int64_t batch = state.range(0);
  set_num_threads(static_cast<int>(state.range(1)));
  Generator gen(42);
  TextToImageModel model(TextToImageConfig{}, &gen);
  nn::Adam adam(model.named_parameters(), nn::AdamOptions{.lr = 1e-3});
  FixedBatch data(batch);
  model.train();
  for (auto _ : state) {
    Tensor loss = nn::functional::mse_loss(
        model.forward(data.tokens, model.sample_noise(batch, gen)), data.targets);
    adam.zero_grad();
    loss.backward();
    adam.step();
    benchmark::DoNotOptimize(loss.item());
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["threads"] = static_cast<double>(state.range(1));
}
BENCHMARK(BM_TrainStep)
    ->ArgNames({"batch", "threads"})
    ->Args({64, 1})
    ->Args({64, 2})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// One epoch of the notebook's recipe (4,500 samples, 71 batches), data generation included.
void BM_TrainEpoch(benchmark::State& state) {
  set_num_threads(static_cast<int>(state.range(0)));
  TrainConfig config;
  config.epochs = 1;
  Trainer trainer(config);
  for (auto _ : state) benchmark::DoNotOptimize(trainer.train_epoch());
  state.SetItemsProcessed(state.iterations() * config.samples_per_prompt * kNumShapePrompts);
}
BENCHMARK(BM_TrainEpoch)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_Generate(benchmark::State& state) {
  const int64_t n = state.range(0);
  set_num_threads(static_cast<int>(state.range(1)));
  Generator gen(42);
  TextToImageModel model(TextToImageConfig{}, &gen);
  for (auto _ : state) benchmark::DoNotOptimize(model.generate("circle", n, gen).data());
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_Generate)
    ->ArgNames({"images", "threads"})
    ->Args({8, 1})
    ->Args({64, 1})
    ->Args({64, 2})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
