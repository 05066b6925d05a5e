// The thread pool behind parallel_for: workers wait on a condition variable for a job,
// each takes a fixed slice of it, and the caller runs slice 0 itself.
#include "tensor/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tensor/error.h"

namespace ink {

namespace {

thread_local bool t_in_parallel = false;

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
    stopping_ = false;
    // New workers must not mistake the last finished job for a new one.
    const uint64_t current = generation_;
    for (int i = 1; i < num_threads_; ++i) {
      workers_.emplace_back([this, i, current] { worker_loop(i, current); });
    }
  }

  // Runs job(slice) for slice in [0, num_slices) across the pool; the caller runs slice 0.
  void run(int num_slices, const std::function<void(int)>& job) {
    std::lock_guard<std::mutex> run_lock(run_mutex_);  // one parallel job at a time
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &job;
      num_slices_ = num_slices;
      pending_ = num_slices - 1;
      error_ = nullptr;
      ++generation_;
    }
    cv_job_.notify_all();
    run_slice(job, 0);
    std::unique_lock<std::mutex> lock(mutex_);
    cv_done_.wait(lock, [this] { return pending_ == 0; });
    job_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void run_slice(const std::function<void(int)>& job, int slice) {
    t_in_parallel = true;
    try {
      job(slice);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
    t_in_parallel = false;
  }

  void worker_loop(int index, uint64_t seen) {
    for (;;) {
      const std::function<void(int)>* job = nullptr;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_job_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_) return;
        seen = generation_;
        if (index >= num_slices_) continue;  // this job needs fewer threads
        job = job_;
      }
      run_slice(*job, index);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (--pending_ == 0) cv_done_.notify_one();
      }
    }
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    cv_job_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  int num_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex run_mutex_;
  std::mutex mutex_;
  std::condition_variable cv_job_, cv_done_;
  const std::function<void(int)>* job_ = nullptr;
  int num_slices_ = 0;
  int pending_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
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
