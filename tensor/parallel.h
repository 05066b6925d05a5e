// A small thread pool and parallel_for. The number of threads comes from set_num_threads(n),
// or from the INK_NUM_THREADS environment variable, or else from the machine's core count.
//
// Determinism rule: kernels must split work so that the result does not depend on the thread
// count. Split independent outputs (rows, blocks of C) across threads, never one sum.
// A reduction over many elements uses fixed-size chunks (independent of the thread count)
// and combines the chunk results in order.
#pragma once

#include <cstdint>
#include <functional>

namespace ink {

// Sets the number of threads used by kernels (>= 1). Throws ink::Error for n < 1.
void set_num_threads(int n);
int get_num_threads();

// Runs fn(begin_i, end_i) over disjoint sub-ranges that cover [begin, end).
// Ranges smaller than `grain` elements per thread run on the calling thread.
// Calls made from inside a parallel region run serially (no nested parallelism).
// An exception thrown by fn is rethrown on the calling thread.
void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn);

// True while the current thread is running inside parallel_for.
bool in_parallel_region();

}  // namespace ink
