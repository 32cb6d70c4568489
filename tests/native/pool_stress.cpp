// Stress of the kernels' own thread pool (csrc/cpu/parallel.cpp), built with
// ThreadSanitizer by .ci/steps/45-pool-tsan.sh: thousands of run_items calls whose item
// counts and thread counts change from call to call, each item counting its runs in its
// own slot. Every item must run exactly once per call (an item that ran twice once hung CI),
// with and without set_pool_fuzz (random sleeps where one call hands over to the next);
// TSAN reports any data race in the pool itself.
// Usage: pool_stress ITERATIONS [fuzz]
#include "parallel.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

using namespace sparsekern::cpu;

namespace {
int count_run(void* ctx, int64_t item) {
  (*static_cast<std::vector<int>*>(ctx))[item] += 1;
  return kOk;
}
}  // namespace

int main(int argc, char** argv) {
  const int iterations = argc > 1 ? std::atoi(argv[1]) : 2000;
  const bool fuzz = argc > 2 && std::strcmp(argv[2], "fuzz") == 0;
  set_pool_fuzz(fuzz);
  for (int it = 0; it < iterations; ++it) {
    const int64_t items = 1 + (it * 7919) % 37;
    const int threads = 2 + it % 3;
    std::vector<int> runs(items, 0);
    if (run_items(items, threads, &count_run, &runs) != kOk) {
      std::printf("call %d: a non-ok status\n", it);
      return 1;
    }
    for (int64_t i = 0; i < items; ++i) {
      if (runs[i] != 1) {
        std::printf("call %d (%lld items, %d threads): item %lld ran %d times\n", it,
                    static_cast<long long>(items), threads, static_cast<long long>(i), runs[i]);
        return 1;
      }
    }
  }
  std::printf("pool_stress: %d calls%s, every item ran once\n", iterations,
              fuzz ? " (fuzz)" : "");
  return 0;
}
