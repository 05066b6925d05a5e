// The thread pool on a shared machine: a short parallel region and one training step of the
// MLP (batch 64, forward, backward, Adam), each at 1 and 2 threads, alone and beside a competing
// process that keeps one core busy (a forked child spinning for the duration). Prints the times
// and the ratio 2 threads / 1 thread for each condition (below 1 means the second thread helps).
// Then the storage cache: what the timed training steps asked of it (hits, misses, blocks from
// the system), and a U-Net-sized activation (16 MiB) made and first written with the cache warm
// versus emptied before each one (the cost of a miss).
//
//   build/bench/bench_parallel [--quick]
//
// bench_parallel_before is the same program linked with the pool as it was before it learned to
// sleep (bench/parallel_before.cpp); scripts/bench_parallel.sh runs both, alternately, in one go.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "models/shapes.h"
#include "models/trainer.h"
#include "nn/functional.h"
#include "tensor/inkgrad.h"

#ifdef INK_POOL_BEFORE
constexpr const char* kPoolName = "before (the spinning pool, bench/parallel_before.cpp)";
#else
constexpr const char* kPoolName = "current (tensor/parallel.cpp)";
#endif

namespace {

using namespace ink;
using Clock = std::chrono::steady_clock;

// A child process that keeps one core busy until it is killed.
class BusyProcess {
 public:
  BusyProcess() {
    pid_ = fork();
    if (pid_ == 0) {
      volatile uint64_t x = 0;
      for (;;) x = x + 1;  // no library calls: the child of a threaded parent may only spin
    }
  }
  ~BusyProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  BusyProcess(const BusyProcess&) = delete;
  BusyProcess& operator=(const BusyProcess&) = delete;

 private:
  pid_t pid_ = -1;
};

// The median over `repeats` of the mean time per call of `calls` calls to fn, in microseconds.
template <typename Fn>
double median_us(int repeats, int calls, Fn&& fn) {
  std::vector<double> times;
  for (int r = 0; r < repeats; ++r) {
    const auto start = Clock::now();
    for (int i = 0; i < calls; ++i) fn();
    times.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count() /
                    calls);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// A short region: an elementwise pass over 32K floats (about 10 us on one core), as the many
// small ops of a training step are.
struct ShortRegion {
  std::vector<float> x = std::vector<float>(32768, 1.5f);
  std::vector<float> y = std::vector<float>(32768);
  void operator()() {
    parallel_for(0, static_cast<int64_t>(x.size()), 4096, [this](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) y[i] = x[i] * x[i] + 0.5f * x[i];
    });
  }
};

// The MLP's training step at batch 64, as bench_train's BM_TrainStep.
struct TrainStep {
  Generator gen{42};
  TextToImageModel model{TextToImageConfig{}, &gen};
  nn::Adam adam{model.named_parameters(), nn::AdamOptions{.lr = 1e-3}};
  Tensor tokens, targets;
  TrainStep() {
    Generator data_gen(1);
    CharTokenizer tokenizer;
    std::vector<int64_t> ids;
    std::vector<float> images;
    for (int64_t i = 0; i < 64; ++i) {
      const auto prompt = kShapePrompts[i % kNumShapePrompts];
      auto t = tokenizer.encode(prompt);
      ids.insert(ids.end(), t.begin(), t.end());
      auto img = make_shape(prompt, data_gen);
      images.insert(images.end(), img.begin(), img.end());
    }
    tokens = from_vector_i64(ids, {64, 32});
    targets = from_vector(images, {64, 1, 28, 28});
    model.train();
  }
  void operator()() {
    Tensor loss =
        nn::functional::mse_loss(model.forward(tokens, model.sample_noise(64, gen)), targets);
    adam.zero_grad();
    loss.backward();
    adam.step();
  }
};

struct Row {
  const char* what;
  double alone[2];  // 1 and 2 threads
  double busy[2];
};

template <typename Fn>
Row measure(const char* what, int repeats, int calls, Fn& fn) {
  Row row{what, {}, {}};
  for (int busy = 0; busy < 2; ++busy) {
    BusyProcess* competitor = busy ? new BusyProcess() : nullptr;
    for (int t = 0; t < 2; ++t) {
      set_num_threads(t + 1);
      for (int i = 0; i < calls / 4 + 1; ++i) fn();  // warm up
      (busy ? row.busy : row.alone)[t] = median_us(repeats, calls, fn);
    }
    delete competitor;
  }
  return row;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int repeats = quick ? 3 : 7;
  ShortRegion region;
  TrainStep step;
  const Row rows[] = {measure("short region (32K floats)", repeats, quick ? 500 : 2000, region),
                      measure("MLP train step (batch 64)", repeats, quick ? 10 : 30, step)};
  std::printf("pool: %s (%u cores)\n", kPoolName, std::thread::hardware_concurrency());
  std::printf("%-28s %10s %10s %8s   %10s %10s %8s\n", "", "alone 1t", "alone 2t", "2t/1t",
              "busy 1t", "busy 2t", "2t/1t");
  for (const Row& r : rows) {
    std::printf("%-28s %8.1fus %8.1fus %8.2f   %8.1fus %8.1fus %8.2f\n", r.what, r.alone[0],
                r.alone[1], r.alone[1] / r.alone[0], r.busy[0], r.busy[1], r.busy[1] / r.busy[0]);
  }

  const StorageCacheStats before = storage_cache_stats();
  for (int i = 0; i < 20; ++i) step();
  const StorageCacheStats after = storage_cache_stats();
  std::printf(
      "\nstorage cache (%s): 20 training steps: %lld hits, %lld misses, %lld blocks from "
      "the system; %.1f MiB cached, peak live %.1f MiB, cap %.0f MiB\n",
      after.enabled ? "on" : "off (AddressSanitizer)",
      static_cast<long long>(after.hits - before.hits),
      static_cast<long long>(after.misses - before.misses),
      static_cast<long long>(after.os_allocations - before.os_allocations),
      after.cached_bytes / 1048576.0, after.peak_live_bytes / 1048576.0,
      after.cap_bytes / 1048576.0);

  set_num_threads(1);
  const Shape activation{64, 64, 32, 32};  // 16 MiB, a U-Net activation at batch 64
  auto make_and_write = [&] {
    Tensor t = empty(activation);
    std::memset(t.data(), 0, static_cast<size_t>(t.numel()) * sizeof(float));
  };
  const double hit_us = median_us(repeats, 20, make_and_write);
  const double miss_us = median_us(repeats, 20, [&] {
    release_cached_storage();
    make_and_write();
  });
  std::printf(
      "16 MiB activation, make + first write: %.0f us from the cache, %.0f us after a "
      "miss (%.1fx)\n",
      hit_us, miss_us, miss_us / hit_us);
  return 0;
}
