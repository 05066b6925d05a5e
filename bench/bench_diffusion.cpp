// The diffusion model as a whole: one training step at batch 64 (text encoder, U-Net forward and
// backward, AdamW, EMA) through the real recipe, and sampling (DDIM with CFG) throughput.
// Reported as images/s (items_per_second) at 1 and 2 threads; compare with
// scripts/time_torch_diffusion.py (the PyTorch twin, same config, batch and threads).
//   build/bench/bench_diffusion --benchmark_filter=Train --benchmark_min_time=5
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <limits>

#include "models/diffusion/model.h"
#include "models/diffusion/recipe.h"
#include "models/trainer.h"
#include "tensor/inkgrad.h"

namespace {

using namespace ink;

// Memory counters: the most tensor storage alive at once, and the process's peak RSS so far
// (ru_maxrss covers everything this process ran before, so filter to one row for a clean figure,
// as scripts/time_torch_diffusion.py does with one process per row).
void report_memory(benchmark::State& state) {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  state.counters["peak_rss_MB"] = static_cast<double>(usage.ru_maxrss) / 1024.0;
  state.counters["peak_live_MB"] =
      static_cast<double>(storage_cache_stats().peak_live_bytes) / (1024.0 * 1024.0);
}

// One optimisation step of the real recipe: batch.size images through the loss, backward, AdamW,
// EMA. Args: config (0 tiny, 1 small), batch, threads.
void BM_DiffusionTrainStep(benchmark::State& state) {
  set_num_threads(static_cast<int>(state.range(2)));
  TrainConfig config;
  config.model = "diffusion";
  config.model_config = state.range(0) == 0 ? "tiny" : "small";
  config.batch_size = state.range(1);
  config.samples_per_prompt = 64;
  TrainingStreams streams(42);
  diffusion::DiffusionRecipe recipe(config, streams);
  DataBatch batch;
  recipe.dataset().start_epoch();
  recipe.dataset().fill_batch(0, batch);
  Generator noise(1);
  int64_t step = 0;
  // Allocations from the system per step once the storage cache is warm (after two steps).
  const auto run_step = [&] {
    Tensor loss = recipe.loss(batch, noise);
    recipe.optimizer().zero_grad();
    loss.backward();
    recipe.before_step(step);
    recipe.optimizer().step();
    recipe.after_step(step);
    ++step;
    return loss.item();
  };
  run_step();
  run_step();
  const int64_t os_before = storage_cache_stats().os_allocations;
  const int64_t steps_before = step;
  for (auto _ : state) benchmark::DoNotOptimize(run_step());
  state.SetItemsProcessed(state.iterations() * batch.size);
  state.counters["os_allocs_per_step"] =
      static_cast<double>(storage_cache_stats().os_allocations - os_before) /
      static_cast<double>(step - steps_before);
  report_memory(state);
}
BENCHMARK(BM_DiffusionTrainStep)
    ->ArgNames({"small", "batch", "threads"})
    ->Args({1, 64, 1})
    ->Args({1, 64, 2})
    ->Args({0, 64, 1})
    ->Args({0, 64, 2})
    // Batch 16, the recipe that learns fastest per picture (more, smaller steps): per-image
    // GEMMs, so the rate should stay close to batch 64's.
    ->Args({1, 16, 2})
    ->Args({0, 16, 1})
    ->Args({0, 16, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// 64 pictures, DDIM with CFG. Args: steps, threads, guided: 1 = every step guided (one U-Net
// forward at batch 128 per step, as scripts/time_torch_diffusion.py samples), 0 = the default
// guidance interval (24 of 50 steps guided, the others the conditional half alone at batch 64).
void BM_DiffusionSample(benchmark::State& state) {
  set_num_threads(static_cast<int>(state.range(1)));
  Generator init(1);
  diffusion::TextToImageDiffusion model(diffusion::DiffusionConfig::preset("small"), &init);
  diffusion::GenerateOptions options;
  options.steps = state.range(0);
  if (state.range(2) == 1) {
    options.guidance_interval = {0.0, std::numeric_limits<double>::infinity()};
  }
  for (auto _ : state) {
    Generator gen(2);
    benchmark::DoNotOptimize(model.generate("circle", 64, gen, options));
  }
  state.SetItemsProcessed(state.iterations() * 64);
  report_memory(state);
}
BENCHMARK(BM_DiffusionSample)
    ->ArgNames({"steps", "threads", "guided"})
    ->Args({50, 1, 1})
    ->Args({50, 2, 1})
    ->Args({50, 1, 0})
    ->Args({50, 2, 0})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
