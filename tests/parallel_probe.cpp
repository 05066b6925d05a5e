// A helper program for test_parallel: starts the thread pool in a fresh process (so the
// INK_NUM_THREADS it was given and any resource limit apply at start-up), runs a few parallel
// jobs, and prints "threads=<n> covered=<0|1>". test_parallel runs it under `timeout`, so a
// pool that hangs instead of failing cleanly fails the test.
//
//   parallel_probe [--address-space-headroom-mib N] [--threads N]
//
// --address-space-headroom-mib limits the process's address space (RLIMIT_AS) to what it uses
// now plus N MiB, so that only a few thread stacks fit (works as root, unlike RLIMIT_NPROC).
#include <sys/resource.h>

#include <unistd.h>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "tensor/error.h"
#include "tensor/parallel.h"

namespace {

long current_address_space_bytes() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0;
  statm >> pages;
  return pages * sysconf(_SC_PAGESIZE);
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--address-space-headroom-mib") == 0) {
      const long limit = current_address_space_bytes() + std::atol(argv[i + 1]) * (1L << 20);
      const rlimit rl{static_cast<rlim_t>(limit), static_cast<rlim_t>(limit)};
      if (setrlimit(RLIMIT_AS, &rl) != 0) {
        std::perror("setrlimit");
        return 2;
      }
    } else if (std::strcmp(argv[i], "--threads") == 0) {
      threads = std::atoi(argv[i + 1]);
    }
  }
  try {
    if (threads > 0) ink::set_num_threads(threads);
    bool covered = true;
    for (int round = 0; round < 100; ++round) {
      std::vector<std::atomic<int>> hits(1000);
      ink::parallel_for(0, 1000, 1, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) hits[i].fetch_add(1);
      });
      for (auto& h : hits) covered = covered && h.load() == 1;
    }
    std::printf("threads=%d covered=%d\n", ink::get_num_threads(), covered ? 1 : 0);
    return covered ? 0 : 1;
  } catch (const ink::Error& e) {
    std::printf("error: %s\n", e.what());
    return 3;
  }
}
