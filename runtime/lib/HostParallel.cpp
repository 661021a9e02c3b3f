//===- HostParallel.cpp - the CPU backends' parallel loops ----------------===//

#include "HostParallel.h"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

using namespace kvq;

namespace {

/// libgomp's entry point for `#pragma omp parallel` (GCC's OpenMP ABI, also
/// provided by LLVM's and Intel's runtimes): runs fn(data) on a team of
/// `threads` threads (0: the caller's default), the caller included.
struct OpenMP {
  void (*parallel)(void (*fn)(void *), void *data, unsigned threads,
                   unsigned flags) = nullptr;
  int (*maxThreads)() = nullptr; ///< omp_get_max_threads: the pool's size
};

/// The OpenMP runtime the process has loaded, if any (never loads one).
/// Looked up again while there is none: a runtime loaded later (Python
/// importing torch after a first call) is still found; a dlopen with
/// RTLD_NOLOAD costs about a microsecond.
OpenMP loadedOpenMP() {
  static std::atomic<bool> found{false};
  static OpenMP runtime;
  if (found.load(std::memory_order_acquire))
    return runtime;
  for (const char *name : {"libgomp.so.1", "libomp.so", "libiomp5.so"}) {
    void *library = dlopen(name, RTLD_LAZY | RTLD_NOLOAD);
    if (!library)
      continue;
    void *parallel = dlsym(library, "GOMP_parallel");
    void *maxThreads = dlsym(library, "omp_get_max_threads");
    if (!parallel || !maxThreads)
      continue;
    static std::once_flag once;
    std::call_once(once, [&] {
      runtime.parallel = reinterpret_cast<decltype(runtime.parallel)>(parallel);
      runtime.maxThreads =
          reinterpret_cast<decltype(runtime.maxThreads)>(maxThreads);
      found.store(true, std::memory_order_release);
    });
    return runtime;
  }
  return OpenMP();
}

void callBody(void *body) {
  (*static_cast<const std::function<void()> *>(body))();
}

} // namespace

void kvq::runOnHostThreads(unsigned maxThreads,
                           const std::function<void()> &body) {
  if (maxThreads <= 1) {
    body();
    return;
  }
  OpenMP openMP = loadedOpenMP();
  if (openMP.parallel) {
    // The pool's own size (PyTorch sets it), capped by the work.
    unsigned threads =
        std::min<unsigned>(std::max(openMP.maxThreads(), 1), maxThreads);
    openMP.parallel(&callBody, const_cast<std::function<void()> *>(&body),
                    threads, 0);
    return;
  }
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < maxThreads; ++i)
    pool.emplace_back(body);
  body();
  for (std::thread &t : pool)
    t.join();
}
