// The thread pool behind parallel_for. The caller publishes a job of a few slices; the caller and
// the workers claim slices from a shared counter until none is left, so a worker that is slow to
// arrive (descheduled on a busy machine) never holds the caller up: the caller runs its slice.
//
// Hand-off: a training step runs dozens of short parallel regions (tens of microseconds each),
// so waking a sleeping thread through the kernel for every one (~10 us) would cost more than the
// second core gains. Workers therefore spin for a short while after each job, watching an atomic
// job counter, and only then sleep on a condition variable (the idea of OpenMP's KMP_BLOCKTIME).
// The caller, once every slice is claimed, spins briefly for the workers' slices to finish and
// then sleeps too, so no thread spins for long on a machine whose cores are busy elsewhere.
//
// Job protocol. `epoch_` is odd while a job is open and even otherwise. A worker joins a job by
// counting itself in `active_` and then checking that the job it saw is still open; the caller,
// after the last slice is claimed, closes the job and waits for `active_` to reach zero. Both
// sides use sequentially consistent operations, so either the worker sees the job closed (and
// touches nothing) or the caller sees the worker (and waits for it): the job's fields never
// change under a worker.
#include "tensor/parallel.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <string>
#include <system_error>
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

// How long an idle worker keeps watching for the next job before it sleeps. Long enough to span
// the serial gaps between the parallel regions of a training step, short enough not to take a
// core from another process for more than a blink.
constexpr auto kWorkerSpin = std::chrono::microseconds(100);
// How long the caller spins for the workers' slices to finish before it sleeps.
constexpr auto kCallerSpin = std::chrono::microseconds(50);

// More threads than this per core only add hand-off cost (every job waits for every worker).
constexpr int kMaxThreadsPerCore = 4;
constexpr int kMaxThreads = 1024;  // set_num_threads' documented limit

int hardware_cores() {
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

void warn(const std::string& message) {
  std::fprintf(stderr, "inkgrad: warning: %s\n", message.c_str());
  std::fflush(stderr);
}

// Environment text quoted for a message: bounded, control characters shown as '?'.
std::string quoted_env(const char* text) {
  std::string out = "\"";
  size_t i = 0;
  for (; text[i] != '\0' && i < 32; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  }
  out += text[i] == '\0' ? "\"" : "...\"";
  return out;
}

// `requested` limited to kMaxThreadsPerCore per core, with a warning naming `what` asked for it.
int capped_thread_count(int requested, const std::string& what) {
  const int cores = hardware_cores();
  const int cap = std::min(kMaxThreads, kMaxThreadsPerCore * cores);
  if (requested <= cap) return requested;
  warn(
      fmt::format("{} asks for {} threads, more than {} per core on this {}-core machine; "
                  "using {}",
                  what, requested, kMaxThreadsPerCore, cores, cap));
  return cap;
}

// INK_NUM_THREADS when it holds a whole number in [1, 1024], else the core count (with a
// warning, so a typo does not go unnoticed).
int default_num_threads() {
  const int cores = hardware_cores();
  const char* env = std::getenv("INK_NUM_THREADS");
  if (env == nullptr) return cores;
  char* end = nullptr;
  errno = 0;
  const long n = std::strtol(env, &end, 10);
  if (end == env || *end != '\0' || errno != 0 || n < 1 || n > kMaxThreads) {
    warn(
        fmt::format("ignoring INK_NUM_THREADS={} (not a whole number from 1 to {}); using {} "
                    "thread{} (one per core)",
                    quoted_env(env), kMaxThreads, cores, cores == 1 ? "" : "s"));
    return cores;
  }
  return capped_thread_count(static_cast<int>(n), "INK_NUM_THREADS=" + std::to_string(n));
}

class ThreadPool {
 public:
  // Starts no thread and cannot throw: the first configure() starts the workers, outside any
  // static initialisation, and survives threads that cannot be created.
  ThreadPool() = default;

  int num_threads() {
    if (!configured_.load(std::memory_order_acquire)) {
      std::lock_guard<std::mutex> lock(run_mutex_);
      configure_locked();
    }
    return num_threads_.load(std::memory_order_relaxed);
  }

  // Makes the pool `requested` threads (the caller plus workers), or as many as the system can
  // start.
  void set_num_threads(int requested) {
    std::lock_guard<std::mutex> lock(run_mutex_);
    configured_.store(true, std::memory_order_release);
    if (requested != requested_) resize_locked(requested);
  }

  // Runs fn over [begin, end) in at most one slice per thread, each at least `grain` long.
  void run(int64_t begin, int64_t end, int64_t grain,
           const std::function<void(int64_t, int64_t)>& fn) {
    std::unique_lock<std::mutex> run_lock(run_mutex_);  // one parallel job at a time
    configure_locked();
    // The slice count is read once, under the lock, from the pool that will run it.
    const int64_t n = end - begin;
    const int64_t slices =
        std::min<int64_t>(static_cast<int64_t>(workers_.size()) + 1, (n + grain - 1) / grain);
    if (slices <= 1) {
      run_lock.unlock();
      fn(begin, end);
      return;
    }
    fn_ = &fn;
    begin_ = begin;
    end_ = end;
    chunk_ = (n + slices - 1) / slices;
    num_slices_ = static_cast<int>(slices);
    error_ = nullptr;
    next_slice_.store(0, std::memory_order_relaxed);
    const uint64_t open = epoch_.load(std::memory_order_relaxed) + 1;
    epoch_.store(open);  // publishes the fields above
    if (sleepers_.load() > 0) {
      std::lock_guard<std::mutex> lock(sleep_mutex_);
      cv_job_.notify_all();
    }
    run_claimed_slices();
    epoch_.store(open + 1);  // closed: no worker may join any more
    wait_for_active_workers();
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void configure_locked() {
    if (configured_.load(std::memory_order_relaxed)) return;
    configured_.store(true, std::memory_order_release);
    resize_locked(default_num_threads());
  }

  void resize_locked(int requested) {
    requested_ = requested;
    stop_workers();
    stopping_.store(false);
    // New workers start from the current epoch (no job is open: we hold the run lock).
    const uint64_t current = epoch_.load();
    workers_.reserve(static_cast<size_t>(requested - 1));
    for (int i = 1; i < requested; ++i) {
      try {
        workers_.emplace_back([this, current] { worker_loop(current); });
      } catch (const std::system_error& e) {
        // A process limit or an address-space limit: carry on with the threads we have.
        warn(fmt::format("could not start thread {} of {} ({}); using {} thread{}", i + 1,
                         requested, e.what(), i, i == 1 ? "" : "s"));
        break;
      }
    }
    num_threads_.store(static_cast<int>(workers_.size()) + 1, std::memory_order_relaxed);
  }

  void run_slice(int slice) {
    const int64_t lo = begin_ + slice * chunk_;
    const int64_t hi = std::min(end_, lo + chunk_);
    if (lo >= hi) return;
    t_in_parallel = true;
    try {
      (*fn_)(lo, hi);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex_);
      if (!error_) error_ = std::current_exception();
    }
    t_in_parallel = false;
  }

  void run_claimed_slices() {
    for (int s; (s = next_slice_.fetch_add(1, std::memory_order_relaxed)) < num_slices_;) {
      run_slice(s);
    }
  }

  // The caller, after closing a job: spins briefly, then sleeps until no worker is inside it.
  void wait_for_active_workers() {
    const auto spin_until = std::chrono::steady_clock::now() + kCallerSpin;
    for (int spins = 0; active_.load(std::memory_order_acquire) != 0; ++spins) {
      INK_CPU_RELAX();
      if ((spins & 63) != 63 || std::chrono::steady_clock::now() < spin_until) continue;
      std::unique_lock<std::mutex> lock(done_mutex_);
      caller_sleeping_.store(true);
      cv_done_.wait(lock, [&] { return active_.load() == 0; });
      caller_sleeping_.store(false);
      return;
    }
  }

  // A worker's turn at the job of epoch `open`.
  void join(uint64_t open) {
    active_.fetch_add(1);
    if (epoch_.load() == open) run_claimed_slices();  // still open: the fields are stable
    if (active_.fetch_sub(1) == 1 && caller_sleeping_.load()) {
      std::lock_guard<std::mutex> lock(done_mutex_);
      cv_done_.notify_one();
    }
  }

  // Waits for an open job other than `seen` (spinning, then sleeping); returns its epoch, or
  // 0 when the pool stops.
  uint64_t wait_for_job(uint64_t seen) {
    const auto is_new = [seen](uint64_t e) { return (e & 1) != 0 && e != seen; };
    const auto spin_until = std::chrono::steady_clock::now() + kWorkerSpin;
    for (int spins = 0;; ++spins) {
      if (stopping_.load(std::memory_order_acquire)) return 0;
      const uint64_t e = epoch_.load(std::memory_order_acquire);
      if (is_new(e)) return e;
      INK_CPU_RELAX();
      if ((spins & 63) == 63 && std::chrono::steady_clock::now() > spin_until) break;
    }
    std::unique_lock<std::mutex> lock(sleep_mutex_);
    sleepers_.fetch_add(1);
    uint64_t e = 0;
    cv_job_.wait(lock, [&] { return stopping_.load() || is_new(e = epoch_.load()); });
    sleepers_.fetch_sub(1);
    return stopping_.load() ? 0 : e;
  }

  void worker_loop(uint64_t seen) {
    while (const uint64_t open = wait_for_job(seen)) {
      join(open);
      seen = open;
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

  std::mutex run_mutex_;  // serialises run() and resizing
  std::atomic<bool> configured_{false};
  int requested_ = 0;                // the count last asked for (guarded by run_mutex_)
  std::atomic<int> num_threads_{1};  // workers_.size() + 1, written under run_mutex_
  std::vector<std::thread> workers_;

  // The current job, written by run() before the epoch opens it and stable until every worker
  // that joined it has left.
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t begin_ = 0, end_ = 0, chunk_ = 0;
  int num_slices_ = 0;
  std::atomic<int> next_slice_{0};  // the next unclaimed slice
  std::atomic<uint64_t> epoch_{0};  // odd while a job is open
  std::atomic<int> active_{0};      // workers inside the current job
  std::atomic<bool> stopping_{false};

  std::mutex sleep_mutex_;  // workers sleeping for a job
  std::condition_variable cv_job_;
  std::atomic<int> sleepers_{0};

  std::mutex done_mutex_;  // the caller sleeping for the workers to leave
  std::condition_variable cv_done_;
  std::atomic<bool> caller_sleeping_{false};

  std::mutex error_mutex_;
  std::exception_ptr error_;
};

ThreadPool& pool() {
  // Never destroyed: a tensor freed during static destruction may still reach the pool, and
  // the process exit ends the workers.
  static ThreadPool* instance = new ThreadPool();
  return *instance;
}

}  // namespace

void set_num_threads(int n) {
  INK_CHECK(n >= 1 && n <= kMaxThreads, "set_num_threads: n must be in [1, {}], got {}",
            kMaxThreads, n);
  INK_CHECK(!t_in_parallel, "set_num_threads: cannot be called inside a parallel region");
  pool().set_num_threads(capped_thread_count(n, fmt::format("set_num_threads({})", n)));
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
  // Running on the calling thread is always correct, so these checks need no lock.
  if (t_in_parallel || n <= grain || pool().num_threads() == 1) {
    fn(begin, end);
    return;
  }
  pool().run(begin, end, grain, fn);
}

}  // namespace ink
