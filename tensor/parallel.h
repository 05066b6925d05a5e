// A small thread pool and parallel_for. The number of threads comes from set_num_threads(n),
// or from the INK_NUM_THREADS environment variable, or else from the machine's core count.
// Counts above 4 threads per core are capped (with a one-line warning on stderr), as is an
// INK_NUM_THREADS that is not a whole number from 1 to 1024 (it warns and uses the core count).
// When the system cannot start all the threads asked for (a process or address-space limit),
// the pool warns and runs with the threads it could start.
//
// Thread safety: every function here may be called from any thread. Parallel jobs from
// different threads run one at a time; set_num_threads waits for the running job.
//
// Determinism rule: kernels must split work so that the result does not depend on the thread
// count. Split independent outputs (rows, blocks of C) across threads, never one sum.
// A reduction over many elements uses fixed-size chunks (independent of the thread count)
// and combines the chunk results in order.
#pragma once

#include <cstdint>
#include <functional>

namespace ink {

// Sets the number of threads used by kernels. Throws ink::Error for n outside [1, 1024] or when
// called inside a parallel region.
void set_num_threads(int n);
// The number of threads parallel_for uses now (after any cap or start-up failure).
int get_num_threads();

// Runs fn(begin_i, end_i) over disjoint sub-ranges that cover [begin, end): n = end - begin is
// cut into min(threads, ceil(n / grain)) near-equal parts, so a range of at most `grain` runs on
// the calling thread. The parts depend only on the range, the grain and the thread count; which
// thread runs which part does not (a thread late to a job leaves its part to the others).
// Calls made from inside a parallel region run serially (no nested parallelism).
// An exception thrown by fn is rethrown on the calling thread.
void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn);

// True while the current thread is running inside parallel_for.
bool in_parallel_region();

}  // namespace ink
