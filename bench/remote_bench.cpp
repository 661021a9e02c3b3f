//===- remote_bench.cpp - a fleet's start-up: remote cache vs cold --------===//
//
// The kernels one model configuration needs (Llama-3-8B, kivi2: quantize
// and dequantize of each scheme, and attention), prepared by a fresh
// runtime with an empty disk cache (a new machine of the fleet, in effect):
//   cold    nothing cached anywhere: generate + nvrtc for each kernel;
//   remote  the fleet's Redis holds them (a private redis-server on
//           127.0.0.1, started here): fetch, verify the signature and every
//           checksum, keep on disk.
// Compile-only cuda runtimes (no driver here), so no module load is timed.
// Run: build/bin/kvq-remote-bench [--repeat=N] [--model=...] [--preset=...]
//
//===----------------------------------------------------------------------===//

#include "kvq/Runtime/Jit.h"
#include "kvq/Runtime/Presets.h"
#include "kvq/Runtime/Runtime.h"
#include "kvq/Testing/RedisServer.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>

using namespace kvq;

namespace {

llvm::cl::opt<int> repeat("repeat", llvm::cl::desc("Runs per mode (median)"),
                          llvm::cl::init(3));
llvm::cl::opt<std::string> modelName("model", llvm::cl::init("llama-3-8b"),
                                     llvm::cl::desc("Model shape"));
llvm::cl::opt<std::string> presetName("preset", llvm::cl::init("kivi2"),
                                      llvm::cl::desc("Cache preset"));

std::string freshDirectory() {
  llvm::SmallString<128> path;
  (void)llvm::sys::fs::createUniqueDirectory("kvq-remote-bench", path);
  return path.str().str();
}

/// Milliseconds for a fresh runtime (empty disk cache) to prepare `specs`;
/// `remoteHits` and `compiled` say where the kernels came from.
double prepareAll(const std::vector<KernelSpec> &specs, uint64_t &remoteHits,
                  uint64_t &compiled) {
  std::string dir = freshDirectory();
  RuntimeOptions options = jit::options();
  options.backend = Backend::Cuda;
  options.compileOnly = true;
  options.cacheDir = dir + "/cache";
  auto start = std::chrono::steady_clock::now();
  std::unique_ptr<Runtime> runtime = llvm::cantFail(Runtime::create(options));
  for (const KernelSpec &spec : specs)
    llvm::cantFail(runtime->prepare(spec).takeError());
  double ms = std::chrono::duration<double, std::milli>(
                  std::chrono::steady_clock::now() - start)
                  .count();
  remoteHits = runtime->statistics().remoteHits;
  compiled = runtime->statistics().compiled;
  (void)llvm::sys::fs::remove_directories(dir);
  return ms;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

} // namespace

int main(int argc, char **argv) {
  llvm::cl::ParseCommandLineOptions(argc, argv, "kvq remote cache bench\n");
  std::optional<ModelShape> model = findModel(modelName);
  std::optional<CachePreset> preset = findPreset(presetName);
  if (!model || !preset) {
    llvm::errs() << "unknown --model or --preset (models: " << knownModels()
                 << "; presets: " << knownPresets() << ")\n";
    return 1;
  }
  std::vector<KernelSpec> specs = kernelsFor(*preset, *model);

  kvq::testing::RedisServer server;
  if (!server.running()) {
    llvm::errs() << "kvq-remote-bench: cannot start redis-server (Debian's "
                    "redis-server package; scripts/setup.sh installs it)\n";
    return 1;
  }
  std::string keyFile = freshDirectory() + "/key";
  std::ofstream(keyFile) << "a-fleet-signing-key-for-the-bench";

  std::vector<double> cold, remote;
  uint64_t hits = 0, compiled = 0;
  unsetenv("KVQ_REMOTE_CACHE");
  for (int i = 0; i < repeat; ++i)
    cold.push_back(prepareAll(specs, hits, compiled));
  uint64_t coldCompiled = compiled;

  setenv("KVQ_REMOTE_CACHE", server.url().c_str(), 1);
  setenv("KVQ_CACHE_KEY_FILE", keyFile.c_str(), 1);
  prepareAll(specs, hits, compiled); // the first machine publishes
  for (int i = 0; i < repeat; ++i)
    remote.push_back(prepareAll(specs, hits, compiled));

  llvm::outs() << llvm::formatv(
      "{0} {1}: {2} kernel specs, fresh runtime with an empty disk cache, "
      "median of {3}\n",
      modelName.getValue(), presetName.getValue(), specs.size(),
      repeat.getValue());
  llvm::outs() << llvm::formatv("  cold compile      {0,8:f1} ms  ({1} "
                                "compiled)\n",
                                median(cold), coldCompiled);
  llvm::outs() << llvm::formatv("  from the remote   {0,8:f1} ms  ({1} from "
                                "the remote cache, {2} compiled)\n",
                                median(remote), hits, compiled);
  llvm::outs() << llvm::formatv("  speed-up          {0,8:f1}x\n",
                                median(cold) / median(remote));
  return hits == specs.size() && compiled == 0 ? 0 : 1;
}
