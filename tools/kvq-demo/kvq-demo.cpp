//===- kvq-demo.cpp - the main job: a quantized KV cache decoding ---------===//
//
// Builds a model-shaped quantized KV cache (Llama-2-7B-like by default),
// prefills it, decodes a stream of steps with KV data that has outlier
// channels and an attention sink, and reports memory against fp16, attention
// error against fp16 per preset, the kernels compiled or found in the cache,
// compile and dispatch times, the backend, and where the kernels are dumped.
//
//   kvq-demo [--backend=auto|cuda|emulator] [--model=llama-2-7b]
//            [--preset=kivi2] [--prefill=192] [--steps=16]
//
//===----------------------------------------------------------------------===//

#include "kvq/QuantizedKVCache.h"
#include "kvq/Runtime/Presets.h"
#include "kvq/Runtime/Reference.h"
#include "kvq/Runtime/Workload.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <cmath>
#include <random>

namespace cl = llvm::cl;
using namespace kvq;

namespace {

cl::OptionCategory toolCategory("kvq-demo options");
cl::opt<std::string> backendText("backend", cl::init("auto"),
                                 cl::desc("auto, cuda or emulator"),
                                 cl::cat(toolCategory));
cl::opt<std::string> modelName("model", cl::init("llama-2-7b"),
                               cl::desc("Model shape"), cl::cat(toolCategory));
cl::opt<std::string> presetName("preset", cl::init("kivi2"),
                                cl::desc("Cache preset"),
                                cl::cat(toolCategory));
cl::opt<int> prefillTokens("prefill", cl::init(512),
                           cl::desc("Prompt tokens per sequence"),
                           cl::cat(toolCategory));
cl::opt<int> decodeSteps("steps", cl::init(5), cl::desc("Decode steps"),
                         cl::cat(toolCategory));
cl::opt<int> serveSteps("serve-steps", cl::init(24),
                        cl::desc("Steps of the continuous-batching run on the "
                                 "paged cache (0: none)"),
                        cl::cat(toolCategory));
cl::opt<int> layersOverride("layers", cl::init(0),
                            cl::desc("Layers (0: the model's)"),
                            cl::cat(toolCategory));

using Clock = std::chrono::steady_clock;
double msSince(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

int fail(const llvm::Twine &message) {
  llvm::errs() << "kvq-demo: " << message << "\n";
  return 1;
}

/// KV-like data of one layer: keys with outlier channels (as real keys
/// have), a first token whose key draws attention (an attention sink),
/// values Gaussian. Host floats (half-rounded) [kv heads, tokens, d].
struct LayerData {
  std::vector<float> k, v;
};

LayerData makeLayer(int kvHeads, int tokens, int d, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  LayerData data;
  for (int h = 0; h < kvHeads; ++h)
    for (int t = 0; t < tokens; ++t)
      for (int c = 0; c < d; ++c) {
        float outlier = (c % 32 == 7 || c % 32 == 19) ? 10.0f : 1.0f;
        float sink = t == 0 ? 4.0f : 1.0f;
        data.k.push_back(
            ref::roundToHalf(normal(rng) * outlier * sink, HalfType::F16));
        data.v.push_back(ref::roundToHalf(normal(rng), HalfType::F16));
      }
  return data;
}

std::vector<uint16_t> halfBits(const float *x, size_t n) {
  std::vector<uint16_t> bits(n);
  for (size_t i = 0; i < n; ++i)
    bits[i] = ref::toHalfBits(x[i], HalfType::F16);
  return bits;
}

/// Tokens [first, first + n) of every head of `data` as [heads, n, d] bits.
std::vector<uint16_t> slice(const std::vector<float> &data, int heads,
                            int tokens, int d, int first, int n) {
  std::vector<uint16_t> out;
  for (int h = 0; h < heads; ++h) {
    auto part =
        halfBits(&data[(size_t(h) * tokens + first) * d], size_t(n) * d);
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

/// fp16 attention of q [query heads, d] over tokens [0, n) of `data`.
std::vector<float> fp16Attention(const LayerData &data,
                                 const std::vector<float> &q, int queryHeads,
                                 int kvHeads, int tokens, int n, int d) {
  std::vector<float> out(size_t(queryHeads) * d);
  for (int h = 0; h < queryHeads; ++h) {
    int kvh = h / (queryHeads / kvHeads);
    std::vector<const float *> ks, vs;
    for (int t = 0; t < n; ++t) {
      ks.push_back(&data.k[(size_t(kvh) * tokens + t) * d]);
      vs.push_back(&data.v[(size_t(kvh) * tokens + t) * d]);
    }
    ref::attendRows(&q[size_t(h) * d], ks, vs, d, 1.0f / std::sqrt(float(d)),
                    &out[size_t(h) * d]);
  }
  return out;
}

/// Runs one cache over `layers` layers: prefill, `steps` decode steps with
/// an attend per layer and step. Returns the last layer-0 output.
struct RunResult {
  std::vector<float> output;
  double prefillMs = 0, appendMs = 0, attendMs = 0;
  int attends = 0;
  MemoryUse memory;
};

Status runCache(Context &context, QuantizedKVCache &cache,
                const std::vector<LayerData> &data, const std::vector<float> &q,
                int total, int prefill, int steps, bool progress,
                RunResult &result) {
  const CacheConfig &c = cache.config();
  int d = c.headDim;
  Status s;
  size_t maxTokens = size_t(c.kvHeads) * std::max(prefill, 1) * d * 2;
  void *k = context.allocate(maxTokens, &s);
  void *v = context.allocate(maxTokens, &s);
  void *qd = context.allocate(q.size() * 2, &s);
  void *out = context.allocate(q.size() * 2, &s);
  if (!s.ok())
    return s;
  auto cleanup = [&]() {
    for (void *p : {k, v, qd, out})
      context.release(p);
  };
  auto append = [&](int layer, int first, int n) {
    std::vector<uint16_t> kb =
        slice(data[layer].k, c.kvHeads, total, d, first, n);
    std::vector<uint16_t> vb =
        slice(data[layer].v, c.kvHeads, total, d, first, n);
    Status st = context.copyIn(k, kb.data(), kb.size() * 2);
    if (st.ok())
      st = context.copyIn(v, vb.data(), vb.size() * 2);
    if (!st.ok())
      return st;
    // A decode token goes in as the batched decode step does it (one
    // launch; the other sequences of the batch hold nothing).
    return n == 1 ? cache.appendStep(layer, k, v)
                  : cache.append(layer, 0, k, v, n);
  };
  std::vector<uint16_t> qbits = halfBits(q.data(), q.size());
  if (!(s = context.copyIn(qd, qbits.data(), qbits.size() * 2)).ok())
    return cleanup(), s;

  auto start = Clock::now();
  for (int layer = 0; layer < c.layers; ++layer)
    if (!(s = append(layer, 0, prefill)).ok())
      return cleanup(), s;
  result.prefillMs = msSince(start);
  for (int step = 0; step < steps; ++step) {
    for (int layer = 0; layer < c.layers; ++layer) {
      auto t = Clock::now();
      if (!(s = append(layer, prefill + step, 1)).ok())
        return cleanup(), s;
      result.appendMs += msSince(t);
      t = Clock::now();
      if (!(s = cache.attend(layer, qd, out)).ok())
        return cleanup(), s;
      result.attendMs += msSince(t);
      ++result.attends;
    }
    if (progress) {
      llvm::outs() << llvm::formatv("\r  decode step {0}/{1}  ({2} tokens per "
                                    "sequence, {3} layers)   ",
                                    step + 1, steps, prefill + step + 1,
                                    c.layers);
      llvm::outs().flush();
    }
  }
  if (progress)
    llvm::outs() << "\n";
  // The last step's output of layer 0, for the accuracy report.
  if (!(s = cache.attend(0, qd, out)).ok())
    return cleanup(), s;
  std::vector<uint16_t> bits(q.size());
  s = context.copyOut(bits.data(), out, bits.size() * 2);
  for (uint16_t b : bits)
    result.output.push_back(ref::fromHalfBits(b, HalfType::F16));
  result.memory = cache.memory();
  cleanup();
  return s;
}

/// Continuous batching on the paged cache: `slots` sequences; a request
/// arrives with a prompt of its own length, decodes its own number of
/// tokens, finishes and gives its pages back for the next request.
Status serve(Context &context, CacheConfig config, int slots, int steps) {
  config.layers = 2;
  config.batch = slots;
  config.capacity = 1024;
  Status s;
  std::unique_ptr<QuantizedKVCache> cache =
      QuantizedKVCache::create(context, config, &s);
  if (!cache)
    return s;
  int d = config.headDim, maxPrompt = 640;
  size_t tokenBytes = size_t(config.kvHeads) * maxPrompt * d * 2;
  size_t queryBytes = size_t(slots) * config.queryHeads * d * 2;
  void *k = context.allocate(tokenBytes, &s);
  void *v = context.allocate(tokenBytes, &s);
  void *q = context.allocate(queryBytes, &s);
  void *out = context.allocate(queryBytes, &s);
  if (!s.ok())
    return s;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  std::vector<uint16_t> noise(tokenBytes / 2);
  for (uint16_t &h : noise)
    h = ref::toHalfBits(normal(rng), config.dtype);
  std::vector<uint16_t> queries(noise.begin(), noise.begin() + queryBytes / 2);
  s = context.copyIn(k, noise.data(), tokenBytes);
  if (s.ok())
    s = context.copyIn(v, noise.data(), tokenBytes);
  if (s.ok())
    s = context.copyIn(q, queries.data(), queryBytes);
  struct Request {
    int id = -1, left = 0;
  };
  std::vector<Request> active(slots);
  int next = 0, finished = 0;
  std::uniform_int_distribution<int> promptLength(32, maxPrompt),
      generate(4, 16);
  int pagesPerLayer = slots * ((config.capacity + cache->pageTokens() - 1) /
                               cache->pageTokens());
  llvm::outs() << llvm::formatv(
      "\ncontinuous batching on the paged cache: {0} sequence slots, 2 "
      "layers, {1}-token pages ({2} per layer in the pool)\n",
      slots, cache->pageTokens(), pagesPerLayer);
  llvm::outs() << "  step  requests (id:tokens)                 pages  "
                  "memory vs fp16  prefill launches  decode launches  "
                  "ms/step\n";
  for (int step = 0; step < steps && s.ok(); ++step) {
    auto start = Clock::now();
    uint64_t launchesBefore = context.statistics().launches;
    for (int slot = 0; slot < slots && s.ok(); ++slot) {
      Request &r = active[slot];
      if (r.id >= 0)
        continue;
      // Admit a request into the free slot: prefill its prompt.
      r.id = next++;
      r.left = generate(rng);
      int prompt = promptLength(rng);
      for (int layer = 0; layer < config.layers && s.ok(); ++layer)
        s = cache->append(layer, slot, k, v, prompt);
    }
    // One decode step: per layer, one launch appends a new token to every
    // sequence ([slots, kv heads, d]; residual flushes and the pages they
    // take happen in that kernel) and one attention serves the whole
    // ragged batch (plus its combine).
    uint64_t decodeBefore = context.statistics().launches;
    for (int layer = 0; layer < config.layers && s.ok(); ++layer) {
      s = cache->appendStep(layer, k, v);
      if (s.ok())
        s = cache->attend(layer, q, out);
    }
    double ms = msSince(start);
    uint64_t decode = context.statistics().launches - decodeBefore;
    uint64_t prefill = decodeBefore - launchesBefore;
    std::string line;
    for (int slot = 0; slot < slots; ++slot)
      line += std::to_string(active[slot].id) + ":" +
              std::to_string(cache->parts(0, slot).total()) + " ";
    bool counted = context.backend() != BackendKind::Reference;
    llvm::outs() << llvm::formatv(
        "  {0,4}  {1,-36} {2,5}  {3,6:f2}x        {4,16}  {5,15}  {6,7:f1}\n",
        step, line, cache->pagesInUse(0), cache->memory().ratio(),
        counted ? std::to_string(prefill) : std::string("-"),
        counted ? std::to_string(decode) : std::string("-"), ms);
    for (int slot = 0; slot < slots && s.ok(); ++slot)
      if (--active[slot].left == 0) { // finished: its pages go back
        s = cache->release(slot);
        active[slot].id = -1;
        ++finished;
      }
  }
  llvm::outs() << llvm::formatv(
      "  {0} requests admitted, {1} finished; the pages of finished requests "
      "served later ones\n  launches: kernel launches of the step (the "
      "reference backend runs none): the prompts of admitted requests, and "
      "the decode step -- per layer one appendStep (every sequence's new "
      "token, flushes and the pages they take) and the attention with its "
      "combine, {2} for {3} layers whatever the batch\n",
      next, finished, 3 * config.layers, config.layers);
  for (void *p : {k, v, q, out})
    context.release(p);
  return s;
}

} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  // --help lists this tool's options, not every LLVM library's.
  cl::HideUnrelatedOptions(toolCategory);
  cl::ParseCommandLineOptions(argc, argv, "kvq demo: a quantized KV cache\n");
  std::optional<ModelShape> model = findModel(modelName);
  if (!model)
    return fail("unknown model '" + modelName + "' (known: " + knownModels() +
                ")");
  if (prefillTokens < 1 || decodeSteps < 0)
    return fail("--prefill must be positive and --steps not negative");
  ContextOptions options;
  if (backendText == "cuda")
    options.backend = BackendKind::Cuda;
  else if (backendText == "emulator")
    options.backend = BackendKind::Emulator;
  else if (backendText != "auto")
    return fail("--backend must be auto, cuda or emulator");
  Status status;
  std::unique_ptr<Context> context = Context::create(options, &status);
  if (!context)
    return fail(status.message());

  CacheConfig config;
  config.layers = layersOverride > 0 ? int(layersOverride) : model->layers;
  config.batch = 1;
  config.kvHeads = model->kvHeads;
  config.queryHeads = model->queryHeads;
  config.headDim = model->headDim;
  int total = prefillTokens + decodeSteps;
  config.capacity = total + 64;
  std::string error;
  if (!applyPreset(presetName, config, &error))
    return fail(error);

  const char *dump = std::getenv("KVQ_DUMP_DIR");
  llvm::outs() << llvm::formatv(
      "kvq demo: {0} ({1} layers, {2} query / {3} kv heads, head_dim {4}), "
      "preset {5}\nbackend: {6}{7}\n\n",
      model->name, config.layers, config.queryHeads, config.kvHeads,
      config.headDim, presetName, context->backendName(),
      context->backend() == BackendKind::Cuda
          ? " " + context->arch()
          : std::string(" (CPU; no GPU found)"));

  // 1. Kernels: compiled now or found in the cache.
  llvm::outs() << "compiling kernels (quantize K, quantize V, fused attention, "
                  "the batched decode step) ...";
  llvm::outs().flush();
  auto compileStart = Clock::now();
  std::unique_ptr<QuantizedKVCache> cache =
      QuantizedKVCache::create(*context, config, &status);
  if (!cache)
    return fail(status.message());
  CacheStatistics afterCreate = context->statistics();
  llvm::outs() << llvm::formatv(" {0:f0} ms: {1} compiled, {2} from the disk "
                                "cache\n",
                                msSince(compileStart), afterCreate.compiled,
                                afterCreate.diskHits);

  // 2. Data, then prefill + decode on the model-sized cache.
  std::vector<LayerData> data;
  for (int l = 0; l < config.layers; ++l)
    data.push_back(makeLayer(config.kvHeads, total, config.headDim, 100 + l));
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> q(size_t(config.queryHeads) * config.headDim);
  for (float &x : q)
    x = ref::roundToHalf(normal(rng), HalfType::F16);
  llvm::outs() << llvm::formatv("prefill {0} tokens into {1} layers, then "
                                "{2} decode steps\n",
                                prefillTokens, config.layers, decodeSteps);
  RunResult run;
  status = runCache(*context, *cache, data, q, total, prefillTokens,
                    decodeSteps, true, run);
  if (!status.ok())
    return fail(status.message());
  QuantizedKVCache::Parts parts = cache->parts(0, 0);
  MemoryUse m = run.memory;
  llvm::outs() << llvm::formatv(
      "\nper sequence: {0} sink + {1} quantized + {2} residual tokens\n"
      "memory (K+V, all layers): {3:f2} MiB vs {4:f2} MiB in fp16 = {5:f2}x "
      "smaller\n  sink {6:f2} MiB, quantized {7:f2} MiB, residual {8:f2} MiB\n",
      parts.sink, parts.quantized, parts.residual, m.usedBytes() / 1048576.0,
      m.fp16Bytes / 1048576.0, m.ratio(), m.sinkBytes / 1048576.0,
      m.quantizedBytes / 1048576.0, m.residualBytes / 1048576.0);
  auto storedBits = [&](const QuantScheme &s) {
    int g = s.groupSize(config.headDim);
    int scaleBits = (s.fp32Scales ? 32 : 16) * (s.symmetric ? 1 : 2);
    return s.bits + double(scaleBits) / g;
  };
  double bits = (storedBits(config.key) + storedBits(config.value)) / 2;
  llvm::outs() << llvm::formatv(
      "  the quantized part stores {0:f2} bits an element: {1:f2}x smaller "
      "than "
      "fp16 (what the whole cache approaches at long context)\n",
      bits, 16 / bits);
  llvm::outs() << llvm::formatv(
      "time: prefill {0:f0} ms; per decode step and layer: append {1:f2} ms, "
      "attention {2:f2} ms ({3})\n",
      run.prefillMs, run.appendMs / std::max(1, run.attends),
      run.attendMs / std::max(1, run.attends), context->backendName());

  // 3. Accuracy per preset on layer 0 (same data, a one-layer cache each).
  std::vector<float> exact =
      fp16Attention(data[0], q, config.queryHeads, config.kvHeads, total, total,
                    config.headDim);
  llvm::outs() << "\nattention error vs fp16 on the same tokens (layer 0, "
                  "max |diff| / max |fp16|):\n";
  llvm::outs() << llvm::formatv("  {0,-15} {1,-7} {2,-7} {3,9} {4,10}\n",
                                "preset", "keys", "values", "vs fp16",
                                "memory");
  for (const char *name :
       {"kivi2", "kivi4", "hf_quanto_int4", "int4", "int8"}) {
    CacheConfig one = config;
    one.layers = 1;
    applyPreset(name, one);
    std::unique_ptr<QuantizedKVCache> small =
        QuantizedKVCache::create(*context, one, &status);
    if (!small)
      return fail(status.message());
    RunResult r;
    std::vector<LayerData> layer0 = {data[0]};
    status = runCache(*context, *small, layer0, q, total, prefillTokens,
                      decodeSteps, false, r);
    if (!status.ok())
      return fail(status.message());
    llvm::outs() << llvm::formatv(
        "  {0,-15} {1,-7} {2,-7} {3,9:e2} {4,9:f2}x\n", name, one.key.tag(),
        one.value.tag(), normwiseError(r.output, exact), r.memory.ratio());
  }

  if (serveSteps > 0) {
    status = serve(*context, config, /*slots=*/4, serveSteps);
    if (!status.ok())
      return fail(status.message());
  }

  CacheStatistics stats = context->statistics();
  llvm::outs() << llvm::formatv(
      "\nkernels: {0} compiled, {1} found in the disk cache, {2} memory-cache "
      "hits\n",
      stats.compiled, stats.diskHits, stats.memoryHits);
  llvm::outs() << (dump ? "dumped kernels (every stage): " + std::string(dump)
                        : std::string("set KVQ_DUMP_DIR=<dir> to dump every "
                                      "stage of each compiled kernel"))
               << "\n";
  return 0;
}
