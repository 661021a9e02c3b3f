//===- host_bench.cpp - the host's cost of a decode step ------------------===//
//
// What one decode step costs the CPU per layer, with kernel execution taken
// out: the cuda backend runs against the fake driver of the tests
// (test/unit/fake-driver: memory is host memory, launches and copies are
// counted and return at once, moving no data), so the time is kvq's own work
// (validation, planning, argument packing, the cache's bookkeeping) plus the
// driver calls' entry. Two paths, at batch 1/64/256 of Llama-3-8B's attention
// shape:
//   - `attention call`: one Context::attention over the whole batch, its
//     device lengths and workspace prepared by the caller;
//   - `cache step`: one QuantizedKVCache layer step, one token appended to
//     every sequence, then attend: by one append() per sequence, and by
//     one appendStep() for the whole batch (one launch).
//
//   build/bin/kvq-host-bench [--batches=1,64,256] [--preset=kivi2]
//
//===----------------------------------------------------------------------===//

#include "kvq/QuantizedKVCache.h"
#include "kvq/Runtime/Presets.h"
#include "kvq/kvq.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <vector>

using namespace kvq;
namespace cl = llvm::cl;

namespace {

cl::OptionCategory category("kvq-host-bench options");
cl::opt<std::string> batchList("batches", cl::init("1,64,256"),
                               cl::desc("Batch sizes"), cl::cat(category));
cl::opt<std::string> presetName("preset", cl::init("kivi2"),
                                cl::desc("Cache preset"), cl::cat(category));
cl::opt<int> context("context", cl::init(512),
                     cl::desc("Tokens each sequence holds before the steps"),
                     cl::cat(category));
cl::opt<int> steps("steps", cl::init(1000),
                   cl::desc("Timed steps (fewer vary run to run)"),
                   cl::cat(category));
cl::opt<std::string> driverPath("driver", cl::init(KVQ_FAKE_CUDA_DRIVER),
                                cl::desc("The fake CUDA driver library"),
                                cl::cat(category));

using Clock = std::chrono::steady_clock;
double microsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::micro>(Clock::now() - start)
      .count();
}

[[noreturn]] void fail(const std::string &what, const Status &status) {
  llvm::errs() << "kvq-host-bench: " << what << ": " << status.message()
               << "\n";
  std::exit(1);
}

struct Row {
  int batch;
  double attentionUs, appendUs, attendUs;
  double stepUs, stepAttendUs; ///< appendStep, and the attend after it
};

/// A cache of `config` whose `batch` sequences hold `context` tokens each.
std::unique_ptr<QuantizedKVCache>
prefilledCache(Context &ctx, const CacheConfig &config, void *prompt) {
  Status status;
  std::unique_ptr<QuantizedKVCache> cache =
      QuantizedKVCache::create(ctx, config, &status);
  if (!cache)
    fail("cache", status);
  for (int b = 0; b < config.batch; ++b)
    if (Status s = cache->append(0, b, prompt, prompt, context); !s.ok())
      fail("prefill", s);
  return cache;
}

Row measure(Context &ctx, int batch) {
  ModelShape model = *findModel("llama-3-8b");
  CacheConfig config;
  config.layers = 1;
  config.batch = batch;
  config.kvHeads = model.kvHeads;
  config.queryHeads = model.queryHeads;
  config.headDim = model.headDim;
  config.capacity = context + steps + 256;
  applyPreset(presetName, config);
  Status status;
  size_t tokenBytes = size_t(config.kvHeads) * config.headDim * 2;
  size_t queryBytes = size_t(batch) * config.queryHeads * config.headDim * 2;
  void *prompt = ctx.allocate(tokenBytes * context, &status);
  void *token = ctx.allocate(tokenBytes * batch, &status); // [batch, kv, d]
  void *q = ctx.allocate(queryBytes, &status);
  void *out = ctx.allocate(queryBytes, &status);
  if (!prompt || !token || !q || !out)
    fail("allocate", status);
  std::unique_ptr<QuantizedKVCache> cache = prefilledCache(ctx, config, prompt);

  Row row{batch, 0, 0, 0, 0, 0};
  // Mean microseconds of `append` and of the attend after it over `steps`
  // steps, the first `kWarmup` untimed (first-use paths: kernel lookup,
  // page lists).
  constexpr int kWarmup = 4;
  auto timeSteps = [&](const std::function<Status()> &append, double &appendUs,
                       double &attendUs) {
    for (int i = -kWarmup; i < steps; ++i) {
      Clock::time_point start = Clock::now();
      if (Status s = append(); !s.ok())
        fail("append", s);
      Clock::time_point appended = Clock::now();
      if (Status s = cache->attend(0, q, out); !s.ok())
        fail("attend", s);
      if (i < 0)
        continue;
      appendUs +=
          std::chrono::duration<double, std::micro>(appended - start).count();
      attendUs += microsSince(appended);
    }
    appendUs /= steps;
    attendUs /= steps;
  };
  // One append per sequence; then, on a fresh cache, one appendStep.
  timeSteps(
      [&] {
        for (int b = 0; b < batch; ++b)
          if (Status s = cache->append(0, b, token, token, 1); !s.ok())
            return s;
        return Status();
      },
      row.appendUs, row.attendUs);
  cache = prefilledCache(ctx, config, prompt);
  timeSteps([&] { return cache->appendStep(0, token, token); }, row.stepUs,
            row.stepAttendUs);
  cache.reset();

  // The bare attention call over the same shapes (contiguous body).
  KernelSpec spec = KernelSpec::forAttention(
      config.key, config.value, config.headDim, config.queryHeads,
      config.kvHeads, config.dtype, config.sink > 0, true);
  if (Status s = ctx.prepare(spec); !s.ok())
    fail("prepare", s);
  std::vector<int32_t> lengths;
  for (int b = 0; b < batch; ++b)
    lengths.insert(lengths.end(), {config.sink, context, 0});
  AttentionCall call;
  void *any = prompt; // the fake driver never reads them
  call.q = q;
  call.out = out;
  call.keyWords = call.valueWords = any;
  call.keyScales = call.valueScales = call.keyZeros = call.valueZeros = any;
  call.sinkKeys = call.sinkValues = any;
  call.residualKeys = call.residualValues = any;
  call.lengths =
      static_cast<const int32_t *>(ctx.allocate(lengths.size() * 4, &status));
  call.batch = batch;
  call.bodyCapacity = context;
  call.sinkCapacity = config.sink;
  call.residualCapacity = 128;
  size_t workspaceBytes = ctx.attentionWorkspaceBytes(spec, call);
  call.workspace = ctx.allocate(workspaceBytes, &status);
  call.workspaceBytes = workspaceBytes;
  if (!call.lengths || !call.workspace)
    fail("allocate", status);
  Clock::time_point start;
  for (int i = -kWarmup; i < steps; ++i) {
    if (i == 0)
      start = Clock::now();
    if (Status s = ctx.attention(spec, call); !s.ok())
      fail("attention", s);
  }
  row.attentionUs = microsSince(start) / steps;
  for (void *p : {prompt, token, q, out,
                  const_cast<void *>(static_cast<const void *>(call.lengths)),
                  call.workspace})
    ctx.release(p);
  return row;
}

} // namespace

int main(int argc, char **argv) {
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(
      argc, argv,
      "kvq host cost of a decode step per layer, kernels not executed\n");
  // The cuda backend over the fake driver: kvq's host path, no GPU work.
  setenv("KVQ_CUDA_DRIVER", driverPath.c_str(), 1);
  setenv("KVQ_FAKE_NO_DATA", "1", 1); // copies counted, no bytes moved
  ContextOptions options;
  options.backend = BackendKind::Cuda;
  Status status;
  std::unique_ptr<Context> ctx = Context::create(options, &status);
  if (!ctx)
    fail("context", status);
  llvm::SmallVector<llvm::StringRef> parts;
  llvm::StringRef(batchList).split(parts, ',', -1, false);
  std::vector<Row> rows;
  for (llvm::StringRef part : parts) {
    int batch = 0;
    if (part.trim().getAsInteger(10, batch) || batch <= 0) {
      llvm::errs() << "kvq-host-bench: bad batch '" << part << "'\n";
      return 2;
    }
    rows.push_back(measure(*ctx, batch));
  }
  llvm::outs() << "Host cost per layer of one decode step (preset "
               << presetName << ", Llama-3-8B attention shape, " << context
               << " tokens held, mean of " << steps
               << " steps; kernels not executed: the fake driver)\n\n"
               << "| batch | attention call us | cache step, batched us | "
                  "appendStep us | its attend us | cache step, per sequence "
                  "us | appends us (all sequences) | their attend us |\n"
                  "|---|---|---|---|---|---|---|---|\n";
  for (const Row &r : rows)
    llvm::outs() << llvm::formatv(
        "| {0} | {1:F1} | {2:F1} | {3:F1} | {4:F1} "
        "| {5:F1} | {6:F1} | {7:F1} |\n",
        r.batch, r.attentionUs, r.stepUs + r.stepAttendUs, r.stepUs,
        r.stepAttendUs, r.appendUs + r.attendUs, r.appendUs, r.attendUs);
  return 0;
}
