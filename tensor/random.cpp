// PCG32 generator and its samplers. Only integer arithmetic plus log/sqrt/cos in double,
// so every platform with IEEE doubles produces the same stream.
#include "tensor/random.h"

#include <atomic>
#include <cmath>
#include <mutex>
#include <numbers>

#include "tensor/error.h"

namespace ink {

namespace {
constexpr uint64_t kMultiplier = 6364136223846793005ULL;
}

void Generator::manual_seed(uint64_t seed) {
  // The standard PCG seeding sequence; the stream id is derived from the seed too.
  state_ = 0;
  inc_ = ((seed ^ 0xda3e39cb94b95bdbULL) << 1u) | 1u;
  next_u32();
  state_ += seed;
  next_u32();
}

void Generator::set_state(State s) {
  INK_CHECK((s.inc & 1u) == 1u, "Generator::set_state: increment {} must be odd", s.inc);
  state_ = s.state;
  inc_ = s.inc;
}

uint32_t Generator::next_u32() {
  const uint64_t old = state_;
  state_ = old * kMultiplier + inc_;
  const auto xorshifted = static_cast<uint32_t>(((old >> 18u) ^ old) >> 27u);
  const auto rot = static_cast<uint32_t>(old >> 59u);
  return (xorshifted >> rot) | (xorshifted << ((32u - rot) & 31u));
}

uint64_t Generator::next_u64() {
  const uint64_t hi = next_u32();
  return (hi << 32u) | next_u32();
}

float Generator::uniform() {
  return static_cast<float>(next_u32() >> 8) * 0x1.0p-24f;
}

float Generator::uniform(float low, float high) {
  return low + (high - low) * uniform();
}

double Generator::uniform_double() {
  return static_cast<double>(next_u64() >> 11) * 0x1.0p-53;
}

float Generator::normal() {
  // Box-Muller. u1 is shifted into (0, 1] so log never sees 0.
  const double u1 = 1.0 - uniform_double();
  const double u2 = uniform_double();
  const double r = std::sqrt(-2.0 * std::log(u1));
  return static_cast<float>(r * std::cos(2.0 * std::numbers::pi * u2));
}

int64_t Generator::randint(int64_t low, int64_t high) {
  INK_CHECK(high > low, "randint: low ({}) must be less than high ({})", low, high);
  const uint64_t range = static_cast<uint64_t>(high) - static_cast<uint64_t>(low);
  // Rejection sampling on the top of the 64-bit range removes modulo bias.
  const uint64_t limit = UINT64_MAX - (UINT64_MAX % range);
  uint64_t x;
  do {
    x = next_u64();
  } while (x >= limit);
  return low + static_cast<int64_t>(x % range);
}

// ---- the default generators: one per thread, all following the process seed ----

namespace {

std::mutex g_seed_mutex;
uint64_t g_seed = 42;                     // guarded by g_seed_mutex
std::atomic<uint64_t> g_seed_version{0};  // bumped by every manual_seed

struct ThreadDefault {
  Generator generator{42};
  uint64_t seed_version = 0;  // the g_seed_version the generator was seeded at
};
thread_local ThreadDefault t_default;

}  // namespace

Generator& default_generator() {
  ThreadDefault& d = t_default;
  if (g_seed_version.load(std::memory_order_acquire) != d.seed_version) {
    std::lock_guard<std::mutex> lock(g_seed_mutex);
    d.generator.manual_seed(g_seed);
    d.seed_version = g_seed_version.load(std::memory_order_relaxed);
  }
  return d.generator;
}

void manual_seed(uint64_t seed) {
  std::lock_guard<std::mutex> lock(g_seed_mutex);
  g_seed = seed;
  g_seed_version.fetch_add(1, std::memory_order_release);
}

}  // namespace ink
