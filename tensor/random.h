// A seedable random generator (PCG32) whose uniform and normal samplers give the same numbers
// on every compiler and standard library. std::normal_distribution does not, so we don't use it.
#pragma once

#include <cstdint>

namespace ink {

// What this object represents: one stream of pseudo-random numbers. Copying a Generator copies
// its position in the stream. PCG-XSH-RR 64/32 (O'Neill, 2014).
class Generator {
 public:
  // The whole state, for saving and resuming a run exactly.
  struct State {
    uint64_t state = 0;
    uint64_t inc = 0;
  };

  explicit Generator(uint64_t seed = 42) { manual_seed(seed); }

  void manual_seed(uint64_t seed);
  State get_state() const { return {state_, inc_}; }
  void set_state(State s);

  uint32_t next_u32();
  uint64_t next_u64();

  // Uniform in [0, 1) with 24 random bits (every float in the grid is reachable).
  float uniform();
  // Uniform in [low, high).
  float uniform(float low, float high);
  // Uniform double in [0, 1) with 53 random bits.
  double uniform_double();
  // Standard normal via Box-Muller in double precision. Each call uses two uniforms.
  float normal();
  // Integer uniform in [low, high), like numpy's randint (high excluded). Unbiased.
  // Throws ink::Error when high <= low.
  int64_t randint(int64_t low, int64_t high);

 private:
  uint64_t state_ = 0;
  uint64_t inc_ = 0;
};

// The default generator used when an op is not given one. Each thread has its own (so threads
// never share a stream, and using it needs no lock), and each starts from the process seed: 42
// until manual_seed changes it. A single-threaded program therefore sees one stream, exactly as
// Generator(seed) would give it. Threads that use their defaults at the same time draw the same
// numbers; give each its own Generator when they should differ.
Generator& default_generator();

// Sets the process seed, like torch.manual_seed: every thread's default generator (the calling
// thread's and all others') restarts from Generator(seed) at its next use. Safe to call from
// any thread.
void manual_seed(uint64_t seed);

}  // namespace ink
