//===- HostParallelTest.cpp - the CPU backends' parallel loops ------------===//
//
// runOnHostThreads shares work out on kvq's own threads, or on the OpenMP
// pool the process already runs (PyTorch's); either way every item is done
// once.

#include "HostParallel.h"

#include <gtest/gtest.h>

#include <atomic>
#include <dlfcn.h>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

using namespace kvq;

namespace {

/// Runs `items` items through runOnHostThreads; returns how often each ran
/// and how many distinct threads ran them.
std::pair<std::vector<int>, size_t> share(int items, unsigned maxThreads,
                                          bool *inParallel = nullptr,
                                          int (*inParallelFn)() = nullptr) {
  std::vector<std::atomic<int>> done(items);
  std::atomic<int> next{0};
  std::mutex mutex;
  std::set<std::thread::id> threads;
  runOnHostThreads(maxThreads, [&] {
    {
      std::lock_guard<std::mutex> lock(mutex);
      threads.insert(std::this_thread::get_id());
      if (inParallel && inParallelFn)
        *inParallel = inParallelFn() != 0;
    }
    for (int i = next++; i < items; i = next++) {
      ++done[i];
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  });
  std::vector<int> counts;
  for (auto &d : done)
    counts.push_back(d.load());
  return {counts, threads.size()};
}

TEST(HostParallel, EveryItemOnceOnOneOrSeveralThreads) {
  auto [once, oneThread] = share(200, 1);
  EXPECT_EQ(oneThread, 1u);
  EXPECT_EQ(once, std::vector<int>(200, 1));
  auto [counts, threads] = share(200, 8);
  EXPECT_EQ(counts, std::vector<int>(200, 1));
  // Without an OpenMP runtime in the process, kvq's own threads, as many as
  // asked (callers cap them: the emulator at its hostThreads option); with
  // one (another test of this binary may have loaded it), its pool.
  if (!dlopen("libgomp.so.1", RTLD_LAZY | RTLD_NOLOAD)) {
    EXPECT_EQ(threads, 8u);
  }
}

TEST(HostParallel, RunsOnTheOpenMPPoolTheProcessHasLoaded) {
  // What `import torch` does to a Python process: an OpenMP runtime loaded.
  void *gomp = dlopen("libgomp.so.1", RTLD_NOW | RTLD_GLOBAL);
  if (!gomp)
    GTEST_SKIP() << "no libgomp.so.1 on this machine";
  auto inParallel = reinterpret_cast<int (*)()>(dlsym(gomp, "omp_in_parallel"));
  ASSERT_NE(inParallel, nullptr);
  bool inTeam = false;
  auto [counts, threads] = share(200, 8, &inTeam, inParallel);
  EXPECT_EQ(counts, std::vector<int>(200, 1));
  if (std::thread::hardware_concurrency() > 1) {
    EXPECT_TRUE(inTeam) << "the body ran outside an OpenMP team";
  }
}

} // namespace
