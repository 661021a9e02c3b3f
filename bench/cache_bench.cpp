//===- cache_bench.cpp - what a cached kernel costs -----------------------===//
//
// Google Benchmark, medians over repetitions:
//   MemoryHit          spec -> launchable kernels, already in this process;
//   DiskHitNewRuntime  a fresh runtime (a new process, in effect) reading
//                      and verifying the entry from disk, without loading
//                      the CUDA driver (compile-only runtime);
//   ColdCompile        KVQ_ALWAYS_COMPILE: generate + nvrtc + disk write,
//                      with the MLIR / nvrtc / disk-write split as counters.
// Run: build/bin/kvq-cache-bench --benchmark_repetitions=5
//      --benchmark_report_aggregates_only=true
//
//===----------------------------------------------------------------------===//

#include "kvq/Runtime/Jit.h"
#include "kvq/Runtime/Runtime.h"

#include "llvm/Support/FileSystem.h"

#include <benchmark/benchmark.h>

#include <cstdlib>

using namespace kvq;

namespace {

const char *kSpec = "attention k=2c32 v=2t32 d=128 hq=32 hkv=8";

std::string cacheDir() {
  static std::string dir = [] {
    llvm::SmallString<128> path;
    (void)llvm::sys::fs::createUniqueDirectory("kvq-cache-bench", path);
    return path.str().str() + "/cache";
  }();
  return dir;
}

std::unique_ptr<Runtime> makeRuntime() {
  RuntimeOptions options = jit::options();
  options.backend = Backend::Cuda;
  options.compileOnly = true; // no driver here; measures the cache itself
  options.cacheDir = cacheDir();
  return llvm::cantFail(Runtime::create(options));
}

KernelSpec spec() {
  KernelSpec s;
  parseKernelSpec(kSpec, s);
  return s;
}

void MemoryHit(benchmark::State &state) {
  std::unique_ptr<Runtime> runtime = makeRuntime();
  KernelSpec s = spec();
  llvm::cantFail(runtime->prepare(s).takeError());
  for (auto _ : state) {
    auto kernels = runtime->prepare(s);
    benchmark::DoNotOptimize(kernels->get());
  }
}
BENCHMARK(MemoryHit);

void DiskHitNewRuntime(benchmark::State &state) {
  KernelSpec s = spec();
  llvm::cantFail(makeRuntime()->prepare(s).takeError()); // on disk now
  for (auto _ : state) {
    std::unique_ptr<Runtime> runtime = makeRuntime();
    auto kernels = runtime->prepare(s);
    if (!kernels || (*kernels)->origin != "disk")
      state.SkipWithError("not a disk hit");
    benchmark::DoNotOptimize(kernels->get());
  }
}
BENCHMARK(DiskHitNewRuntime)->Unit(benchmark::kMicrosecond);

void ColdCompile(benchmark::State &state) {
  setenv("KVQ_ALWAYS_COMPILE", "1", 1); // read when the runtime is created
  std::unique_ptr<Runtime> runtime = makeRuntime();
  KernelSpec s = spec();
  double mlir = 0, nvrtc = 0, write = 0;
  for (auto _ : state) {
    auto kernels = runtime->prepare(s);
    mlir += (*kernels)->mlirMillis;
    nvrtc += (*kernels)->compileMillis;
    write += (*kernels)->diskWriteMillis;
  }
  unsetenv("KVQ_ALWAYS_COMPILE");
  state.counters["mlir_ms"] = benchmark::Counter(mlir / state.iterations());
  state.counters["nvrtc_ms"] = benchmark::Counter(nvrtc / state.iterations());
  state.counters["disk_write_ms"] =
      benchmark::Counter(write / state.iterations());
}
BENCHMARK(ColdCompile)->Unit(benchmark::kMillisecond)->Iterations(3);

} // namespace

BENCHMARK_MAIN();
