// The thread pool behind parallel_for. The caller publishes a job, runs slice 0 itself, and
// each worker runs one other slice.
//
// Hand-off: a training step runs dozens of short parallel regions (tens of microseconds each),
// so waking a sleeping thread through the kernel for every one (~10 us) would cost more than the
// second core gains. Workers therefore spin for a short while after each job, watching an
// atomic generation counter, and only then sleep on a condition variable (the same idea as
// OpenMP's KMP_BLOCKTIME). The caller spins while it waits for the workers to finish.
#include "tensor/parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tensor/error.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define INK_CPU_RELAX() _mm_pause()
#else
#define INK_CPU_RELAX() std::this_thread::yield()
#endif

namespace ink {

namespace {

thread_local bool t_in_parallel = false;

// How long an idle worker keeps watching for the next job before it sleeps.
constexpr auto kSpinBeforeSleep = std::chrono::microseconds(200);

int default_num_threads() {
  if (const char* env = std::getenv("INK_NUM_THREADS")) {
    char* end = nullptr;
    const long n = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && n >= 1 && n <= 1024) return static_cast<int>(n);
    // A bad value falls back to the default rather than failing a program at start-up.
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads) { resize(num_threads); }
  ~ThreadPool() { stop_workers(); }

  int num_threads() const { return num_threads_; }

  void resize(int num_threads) {
    std::lock_guard<std::mutex> run_lock(run_mutex_);
    stop_workers();
    num_threads_ = num_threads;
    stopping_.store(false);
    // New workers start from the current generation, so they never mistake the last finished
    // job for a new one.
    const uint64_t current = generation_.load();
    for (int i = 1; i < num_threads_; ++i) {
      workers_.emplace_back([this, i, current] { worker_loop(i, current); });
    }
  }

  // Runs job(slice) for slice in [0, num_slices) across the pool; the caller runs slice 0.
  void run(int num_slices, const std::function<void(int)>& job) {
    std::lock_guard<std::mutex> run_lock(run_mutex_);  // one parallel job at a time
    job_ = &job;
    num_slices_ = num_slices;
    error_ = nullptr;
    // Every worker acknowledges every job, even one it has no slice in, so no worker can still be
    // reading job_ or num_slices_ when the next run() overwrites them.
    pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);  // publishes the fields above
    {
      // Wake workers that went to sleep; spinning ones have already seen the new generation.
      std::lock_guard<std::mutex> lock(sleep_mutex_);
      if (sleepers_ > 0) cv_job_.notify_all();
    }
    run_slice(job, 0);
    for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
      if (spins < 4096) {
        INK_CPU_RELAX();
      } else {
        std::this_thread::yield();  // a worker was descheduled: let it run
      }
    }
    job_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void run_slice(const std::function<void(int)>& job, int slice) {
    t_in_parallel = true;
    try {
      job(slice);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex_);
      if (!error_) error_ = std::current_exception();
    }
    t_in_parallel = false;
  }

  // Waits until the generation moves past `seen` (or the pool stops); returns false to stop.
  bool wait_for_job(uint64_t seen) {
    const auto spin_until = std::chrono::steady_clock::now() + kSpinBeforeSleep;
    for (int spins = 0;; ++spins) {
      if (stopping_.load(std::memory_order_acquire)) return false;
      if (generation_.load(std::memory_order_acquire) != seen) return true;
      INK_CPU_RELAX();
      if ((spins & 63) == 63 && std::chrono::steady_clock::now() > spin_until) break;
    }
    std::unique_lock<std::mutex> lock(sleep_mutex_);
    ++sleepers_;
    cv_job_.wait(lock, [&] {
      return stopping_.load() || generation_.load(std::memory_order_acquire) != seen;
    });
    --sleepers_;
    return !stopping_.load();
  }

  void worker_loop(int index, uint64_t seen) {
    while (wait_for_job(seen)) {
      seen = generation_.load(std::memory_order_acquire);
      if (index < num_slices_) run_slice(*job_, index);  // a job may need fewer threads
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(sleep_mutex_);
      stopping_.store(true);
      cv_job_.notify_all();
    }
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  int num_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex run_mutex_;  // serialises run() and resize()

  // The current job. Written by run() before the generation is bumped (release), read by
  // workers after they observe the new generation (acquire).
  const std::function<void(int)>* job_ = nullptr;
  int num_slices_ = 0;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};  // workers that have not yet finished the current job
  std::atomic<bool> stopping_{false};

  std::mutex sleep_mutex_;
  std::condition_variable cv_job_;
  int sleepers_ = 0;  // guarded by sleep_mutex_

  std::mutex error_mutex_;
  std::exception_ptr error_;
};

ThreadPool& pool() {
  static ThreadPool instance(default_num_threads());
  return instance;
}

}  // namespace

void set_num_threads(int n) {
  INK_CHECK(n >= 1 && n <= 1024, "set_num_threads: n must be in [1, 1024], got {}", n);
  INK_CHECK(!t_in_parallel, "set_num_threads: cannot be called inside a parallel region");
  if (pool().num_threads() != n) pool().resize(n);
}

int get_num_threads() {
  return pool().num_threads();
}

bool in_parallel_region() {
  return t_in_parallel;
}

void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn) {
  const int64_t n = end - begin;
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int threads = t_in_parallel ? 1 : pool().num_threads();
  const int64_t slices = std::min<int64_t>(threads, (n + grain - 1) / grain);
  if (slices <= 1) {
    fn(begin, end);
    return;
  }
  const int64_t chunk = (n + slices - 1) / slices;
  pool().run(static_cast<int>(slices), [&](int s) {
    const int64_t lo = begin + s * chunk;
    const int64_t hi = std::min(end, lo + chunk);
    if (lo < hi) fn(lo, hi);
  });
}

}  // namespace ink
