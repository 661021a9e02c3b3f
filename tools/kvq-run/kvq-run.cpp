//===- kvq-run.cpp - try a configuration: compile, run, check, time -------===//
//
//   kvq-run --spec="attention k=2c32 v=2t32 d=128 hq=32 hkv=8" \
//           [--backend=auto|cuda|emulator] [--batch=1] [--tokens=512]
//           [--query-tokens=1]
//
// JIT-compiles (or finds in the cache) the kernels of an attention spec,
// quantizes generated KV-like data with them, runs the fused attention, and
// checks the codes and the output against the reference backend.
//
//===----------------------------------------------------------------------===//

#include "kvq/Runtime/Jit.h"
#include "kvq/Runtime/Workload.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/raw_ostream.h"

namespace cl = llvm::cl;
using namespace kvq;

namespace {
cl::OptionCategory toolCategory("kvq-run options");
cl::opt<std::string> specText("spec", cl::Required,
                              cl::desc("Attention spec, e.g. \"attention "
                                       "k=2c32 v=2t32 d=128 hq=32 hkv=8\""),
                              cl::cat(toolCategory));
cl::opt<std::string> backendText("backend", cl::init("auto"),
                                 cl::desc("auto, cuda or emulator"),
                                 cl::cat(toolCategory));
cl::opt<int> batch("batch", cl::init(1), cl::desc("Sequences"),
                   cl::cat(toolCategory));
cl::opt<int> tokens("tokens", cl::init(512),
                    cl::desc("Quantized tokens per sequence"),
                    cl::cat(toolCategory));
cl::opt<int> queryTokens(
    "query-tokens", cl::init(1),
    cl::desc("A chunked spec's query rows per sequence (consecutive tokens "
             "of a chunk, each seeing one more)"),
    cl::cat(toolCategory));
cl::opt<unsigned> seed("seed", cl::init(1), cl::desc("Data seed"),
                       cl::cat(toolCategory));

int fail(const llvm::Twine &message) {
  llvm::errs() << "kvq-run: " << message << "\n";
  return 1;
}
} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  // --help lists this tool's options, not every LLVM library's.
  cl::HideUnrelatedOptions(toolCategory);
  cl::ParseCommandLineOptions(argc, argv, "kvq: run one configuration\n");
  AttentionWorkload w;
  if (auto error = parseKernelSpec(specText, w.spec))
    return fail(*error);
  if (w.spec.kind != KernelKind::Attention)
    return fail(w.spec.kind == KernelKind::Append
                    ? "kvq-run runs attention specs; an append spec is the "
                      "cache's decode step (QuantizedKVCache::appendStep, "
                      "tested in test/unit/CacheStepTest.cpp)"
                    : "kvq-run runs attention specs");
  if (batch < 1 || tokens < 1 || queryTokens < 1)
    return fail("--batch, --tokens and --query-tokens must be positive");
  if (queryTokens > 1 && !w.spec.chunked)
    return fail("--query-tokens " + llvm::Twine(int(queryTokens)) +
                " needs a chunked spec (add 'paged=N chunked')");
  w.batch = batch;
  w.queryTokens = queryTokens;
  w.tokens = tokens;
  w.seed = seed;
  std::optional<Backend> backend = parseBackend(backendText);
  if (!backend || *backend == Backend::Reference)
    return fail("--backend must be auto, cuda or emulator");

  RuntimeOptions options = jit::options();
  options.backend = *backend;
  llvm::Expected<std::unique_ptr<Runtime>> runtime = Runtime::create(options);
  if (!runtime)
    return fail(llvm::toString(runtime.takeError()));
  RuntimeOptions refOptions = jit::options();
  refOptions.backend = Backend::Reference;
  std::unique_ptr<Runtime> reference =
      llvm::cantFail(Runtime::create(refOptions));

  llvm::Expected<WorkloadResult> run = runAttentionWorkload(**runtime, w);
  if (!run)
    return fail(llvm::toString(run.takeError()));
  llvm::Expected<WorkloadResult> expected = runAttentionWorkload(*reference, w);
  if (!expected)
    return fail(llvm::toString(expected.takeError()));

  bool codesMatch = run->keyWords == expected->keyWords &&
                    run->valueWords == expected->valueWords;
  double error = normwiseError(run->output, expected->output);
  double vsFp16 = normwiseError(run->output, run->fp16Output);
  llvm::outs() << llvm::formatv(
      "spec      {0}\nbackend   {1} ({2})\nkernels   {3} ({4:f1} ms to "
      "prepare)\nquantize  {5:f2} ms   attention {6:f2} ms   ({7} x {8} "
      "tokens)\ncodes     {9} the reference\nattention error vs reference "
      "{10:e2} (limit 1e-3), vs fp16 attention on the unquantized data "
      "{11:e2}\n",
      w.spec.canonical(), backendName((*runtime)->backend()),
      (*runtime)->backend() == Backend::Cuda ? (*runtime)->arch() : "host",
      run->origin, run->prepareMillis, run->quantizeMillis,
      run->attentionMillis, batch, tokens,
      codesMatch ? "bit-identical to" : "DIFFER from", error, vsFp16);
  RuntimeStatistics stats = (*runtime)->statistics();
  llvm::outs() << llvm::formatv("kernels   {0} compiled, {1} from disk, {2} "
                                "from the bundle, {3} from memory, {4} from "
                                "the remote cache\n",
                                stats.compiled, stats.diskHits,
                                stats.bundleHits, stats.memoryHits,
                                stats.remoteHits);
  if (!(*runtime)->cacheWarning().empty())
    llvm::outs() << (*runtime)->cacheWarning() << "\n";
  return codesMatch && error <= 1e-3 ? 0 : 2;
}
