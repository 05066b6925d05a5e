// The storage block cache: freed blocks are reused by size (small ones on the same thread
// without a lock, large ones through the shared cache), blocks far above the old 64 MiB cap are
// kept, a steady training step allocates nothing from the system after warm-up, and storage made
// and freed on several threads at once stays consistent.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "nn/functional.h"
#include "nn/layers.h"
#include "nn/optim.h"
#include "tensor/inkgrad.h"

namespace ink {
namespace {

#define SKIP_WITHOUT_CACHE()                                           \
  if (!storage_cache_stats().enabled) {                                \
    GTEST_SKIP() << "the storage cache is off under AddressSanitizer"; \
  }

TEST(StorageCache, ReusesAFreedBlockOfTheSameSize) {
  SKIP_WITHOUT_CACHE();
  { Tensor warm = empty({1000}); }
  const StorageCacheStats before = storage_cache_stats();
  for (int i = 0; i < 10; ++i) {
    Tensor t = empty({1000});
    t.data()[0] = 1.0f;
  }
  const StorageCacheStats after = storage_cache_stats();
  EXPECT_EQ(after.os_allocations, before.os_allocations);
  EXPECT_EQ(after.hits - before.hits, 10);
}

TEST(StorageCache, KeepsUNetSizedActivationsAboveTheOld64MiBCap) {
  // Eight 16 MiB activations (128 MiB) used to overflow the cache, so every step paid a fresh
  // allocation and first write for most of them.
  SKIP_WITHOUT_CACHE();
  const Shape activation{64, 64, 32, 32};  // 16 MiB of floats
  for (int step = 0; step < 2; ++step) {
    std::vector<Tensor> live;
    for (int i = 0; i < 8; ++i) live.push_back(zeros(activation));
  }
  const StorageCacheStats before = storage_cache_stats();
  for (int step = 0; step < 3; ++step) {
    std::vector<Tensor> live;
    for (int i = 0; i < 8; ++i) live.push_back(zeros(activation));
  }
  const StorageCacheStats after = storage_cache_stats();
  EXPECT_EQ(after.os_allocations, before.os_allocations);
  EXPECT_EQ(after.hits - before.hits, 24);
  EXPECT_GE(after.cached_bytes, size_t{128} << 20);
  EXPECT_LE(after.cached_bytes, after.cap_bytes);
}

TEST(StorageCache, SteadyTrainingStepAllocatesNothingFromTheSystem) {
  SKIP_WITHOUT_CACHE();
  Generator gen(5);
  auto model = std::make_shared<nn::Sequential>(std::make_shared<nn::Linear>(96, 256, true, &gen),
                                                std::make_shared<nn::ReLU>(),
                                                std::make_shared<nn::Linear>(256, 784, true, &gen));
  nn::Adam adam(model->named_parameters());
  const Tensor x = randn({64, 96}, &gen);
  const Tensor target = rand({64, 784}, &gen);
  auto step = [&] {
    Tensor loss = nn::functional::mse_loss(model->forward(x), target);
    adam.zero_grad();
    loss.backward();
    adam.step();
  };
  for (int i = 0; i < 3; ++i) step();  // warm-up: the cache fills
  const StorageCacheStats before = storage_cache_stats();
  for (int i = 0; i < 5; ++i) step();
  const StorageCacheStats after = storage_cache_stats();
  EXPECT_EQ(after.os_allocations, before.os_allocations);
  EXPECT_GT(after.hits - before.hits, 5 * 10);  // each step makes dozens of tensors
  EXPECT_EQ(after.misses, before.misses);
}

TEST(StorageCache, SeveralThreadsMakeAndFreeStorageAtOnce) {
  // Small blocks go through per-thread caches, large ones through the shared one; when a thread
  // ends its blocks return to the shared cache, and the accounting stays exact.
  const StorageCacheStats before = storage_cache_stats();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t] {
      for (int i = 0; i < 300; ++i) {
        Tensor small = full({16 + t, 8}, 1.0f);
        Tensor large = empty({(1 << 18) + 16 * t});  // 1 MiB and more: the shared cache
        large.data()[0] = small.data()[0];
      }
    });
  }
  for (auto& th : threads) th.join();
  const StorageCacheStats after = storage_cache_stats();
  EXPECT_EQ(after.live_bytes, before.live_bytes);
  EXPECT_EQ((after.hits + after.misses) - (before.hits + before.misses), 4 * 300 * 2);
  if (after.enabled) {
    release_cached_storage();
    EXPECT_EQ(storage_cache_stats().cached_bytes, 0u);
  }
}

}  // namespace
}  // namespace ink
