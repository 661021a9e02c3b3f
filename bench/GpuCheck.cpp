//===- GpuCheck.cpp - the GPU correctness suite ---------------------------===//

#include "GpuCheck.h"

#include "kvq/BufferSizes.h"
#include "kvq/QuantizedKVCache.h"
#include "kvq/Runtime/Presets.h"
#include "kvq/Runtime/Reference.h"
#include "kvq/Runtime/Workload.h"
#include "kvq/kvq.h"

#include "llvm/Support/FormatVariadic.h"

using namespace kvq;

std::vector<KernelSpec> kvq::checkSpecs(const CheckGrid &grid) {
  std::vector<KernelSpec> specs;
  for (const std::string &name : grid.presets) {
    std::optional<CachePreset> preset = findPreset(name);
    if (!preset)
      continue; // main() checks the names first
    for (int d : grid.headDims)
      for (int gqa : grid.gqas)
        specs.push_back(KernelSpec::forAttention(
            preset->key, preset->value, d, grid.kvHeads * gqa, grid.kvHeads,
            HalfType::F16, /*sink=*/true, /*residual=*/true));
    // The paged form QuantizedKVCache runs, once per preset: its pool in
    // reverse page order through a block table (runAttentionWorkload).
    if (grid.headDims.empty() || grid.gqas.empty())
      continue;
    int d = grid.headDims.front();
    KernelSpec paged = KernelSpec::forAttention(
        preset->key, preset->value, d, grid.kvHeads * grid.gqas.front(),
        grid.kvHeads, HalfType::F16, /*sink=*/true, /*residual=*/true);
    paged.pageTokens = cachePageTokens(preset->key, preset->value, d);
    specs.push_back(paged);
    paged.chunked = true; // the cache's appendAndAttend
    specs.push_back(paged);
    // And its decode step (checkCaches).
    specs.push_back(
        KernelSpec::forAppend(preset->key, preset->value, d, HalfType::F16));
  }
  return specs;
}

std::vector<KernelSpec> kvq::schemeMatrixSpecs(const CheckGrid &grid) {
  std::vector<KernelSpec> specs;
  for (int d : grid.headDims)
    for (const QuantScheme &s : schemeMatrix(d))
      for (KernelKind kind : {KernelKind::Quantize, KernelKind::Dequantize})
        specs.push_back(KernelSpec::forScheme(kind, s, d, HalfType::F16));
  return specs;
}

namespace {

/// Quantizes KV-like rows with `scheme` on `runtime`, then dequantizes them
/// back; every output starts poisoned. The bytes of codes, scales, zeros
/// and the dequantized halves, in that order.
llvm::Expected<std::vector<std::vector<uint8_t>>>
roundTrip(Runtime &runtime, const QuantScheme &scheme, int d, int rows,
          int tokens, const std::vector<uint16_t> &input) {
  KernelSpec quantize =
      KernelSpec::forScheme(KernelKind::Quantize, scheme, d, HalfType::F16);
  KernelSpec dequantize =
      KernelSpec::forScheme(KernelKind::Dequantize, scheme, d, HalfType::F16);
  size_t words = packedWordCount(scheme, d, rows, tokens) * 4;
  size_t scales = scaleCount(scheme, d, rows, tokens) * scaleBytes(scheme);
  size_t halves = size_t(rows) * tokens * d * 2;
  DeviceBuffers mem(runtime);
  auto poisoned = [&](size_t bytes) {
    std::vector<uint8_t> poison(bytes, 0xFF);
    return mem.make(poison.data(), bytes);
  };
  llvm::Expected<void *> in = mem.make(input.data(), halves);
  llvm::Expected<void *> w = poisoned(words), sc = poisoned(scales),
                         z = poisoned(scales), out = poisoned(halves);
  for (llvm::Expected<void *> *p : {&in, &w, &sc, &z, &out})
    if (!*p)
      return p->takeError();
  QuantizeCall q{*in, *w, *sc, *z, rows, tokens, tokens, tokens, 0};
  if (llvm::Error e = runtime.quantize(quantize, q))
    return std::move(e);
  DequantizeCall back{*w, *sc, *z, *out, rows, tokens, tokens, 0, tokens};
  if (llvm::Error e = runtime.dequantize(dequantize, back))
    return std::move(e);
  std::vector<std::vector<uint8_t>> result;
  for (auto [p, bytes] : {std::pair<void *, size_t>{*w, words},
                          {*sc, scales},
                          {*z, scales},
                          {*out, halves}}) {
    result.emplace_back(bytes);
    if (llvm::Error e = runtime.copyOut(result.back().data(), p, bytes))
      return std::move(e);
  }
  return result;
}

/// The first index where two byte images differ, or -1.
template <typename T>
int64_t firstDifference(const std::vector<T> &a, const std::vector<T> &b) {
  if (a.size() != b.size())
    return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i])
      return int64_t(i);
  return -1;
}

} // namespace

namespace {
/// QuantizedKVCache (the public API, paged) on the device against the same
/// cache on the reference backend, for every preset: a ragged prefill,
/// then decode steps that flush the residual into pages (one appendStep
/// per layer on the device, its generated append kernel taking the pages;
/// one append per sequence on the reference); every attend of every layer
/// compared. One row per preset, a failure appended to `failures`.
llvm::Error checkCaches(Runtime &device, const CheckGrid &grid,
                        llvm::raw_ostream &os,
                        std::vector<std::string> &failures) {
  if (grid.headDims.empty() || grid.gqas.empty())
    return llvm::Error::success();
  ContextOptions deviceOptions, referenceOptions;
  deviceOptions.backend = device.backend() == Backend::Cuda
                              ? BackendKind::Cuda
                              : BackendKind::Emulator;
  deviceOptions.device = device.device() ? device.device()->ordinal : 0;
  referenceOptions.backend = BackendKind::Reference;
  Status status;
  std::unique_ptr<Context> onDevice = Context::create(deviceOptions, &status);
  if (!onDevice)
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "cache check: " + status.message());
  std::unique_ptr<Context> onReference =
      Context::create(referenceOptions, &status);
  if (!onReference)
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "cache check: " + status.message());
  constexpr int kSteps = 40;
  const int prompts[] = {300, 173, 64};
  os << "\n### QuantizedKVCache, device vs reference backend\n\n"
     << "Each preset's paged cache (2 layers, 3 sequences, prompts of 300, "
        "173 and 64 tokens, then "
     << kSteps
     << " decode steps flushing the residual into pages: `appendStep`, one "
        "launch per layer, on the device; one `append` per sequence on the "
        "reference backend; then a chunk of 3, 8 and 1 query tokens per "
        "layer by `appendAndAttend`, causal), the same tokens; every attend of "
        "every layer compared (normwise, pass <= "
     << llvm::formatv("{0:e}", grid.tolerance) << ").\n\n"
     << "| preset | attends | max error | result |\n|---|---|---|---|\n";
  for (const std::string &name : grid.presets) {
    CacheConfig config;
    config.layers = 2;
    config.batch = 3;
    config.kvHeads = grid.kvHeads;
    config.queryHeads = grid.kvHeads * grid.gqas.front();
    config.headDim = grid.headDims.front();
    config.capacity = 512;
    config.maxQueryTokens = 8;
    if (!applyPreset(name, config))
      continue; // main() checks the names first
    std::unique_ptr<QuantizedKVCache> caches[2];
    Context *contexts[2] = {onDevice.get(), onReference.get()};
    for (int i = 0; i < 2; ++i)
      if (!(caches[i] =
                QuantizedKVCache::create(*contexts[i], config, &status)))
        return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                       "cache check, " + name + ": " +
                                           status.message());
    int d = config.headDim;
    size_t tokenRow = size_t(config.kvHeads) * d; // halves of one token
    size_t queryHalves = size_t(config.batch) * config.queryHeads * d;
    // Device copies of the same host data in both contexts.
    std::vector<void *> owned[2];
    auto put = [&](int i, const std::vector<uint16_t> &host) -> void * {
      void *p = contexts[i]->allocate(host.size() * 2, &status);
      if (p && !contexts[i]->copyIn(p, host.data(), host.size() * 2).ok())
        p = nullptr;
      if (p)
        owned[i].push_back(p);
      return p;
    };
    double worst = 0;
    int attends = 0;
    std::string problem;
    uint64_t seed = 1000;
    auto appendAll = [&](int seq, int layer, int tokens) {
      // [kv heads, tokens, head_dim] keys and values.
      std::vector<uint16_t> k =
          kvLikeHalves(tokenRow * tokens, d, HalfType::F16, ++seed, true);
      std::vector<uint16_t> v =
          kvLikeHalves(tokenRow * tokens, d, HalfType::F16, ++seed, false);
      for (int i = 0; i < 2 && problem.empty(); ++i) {
        void *dk = put(i, k), *dv = put(i, v);
        if (!dk || !dv) {
          problem = "device memory: " + status.message();
          return;
        }
        Status s = caches[i]->append(layer, seq, dk, dv, tokens);
        if (!s.ok())
          problem = "append: " + s.message();
      }
    };
    auto attendAll = [&] {
      std::vector<uint16_t> q =
          kvLikeHalves(queryHalves, d, HalfType::F16, ++seed, false);
      for (int layer = 0; layer < config.layers && problem.empty(); ++layer) {
        std::vector<uint16_t> out[2];
        for (int i = 0; i < 2 && problem.empty(); ++i) {
          void *dq = put(i, q);
          std::vector<uint16_t> poison(queryHalves, 0xFFFF);
          void *dout = put(i, poison);
          if (!dq || !dout) {
            problem = "device memory: " + status.message();
            return;
          }
          Status s = caches[i]->attend(layer, dq, dout);
          if (s.ok()) {
            out[i].resize(queryHalves);
            s = contexts[i]->copyOut(out[i].data(), dout, queryHalves * 2);
          }
          if (!s.ok())
            problem = "attend: " + s.message();
        }
        if (!problem.empty())
          return;
        std::vector<float> got, want;
        for (size_t j = 0; j < queryHalves; ++j) {
          got.push_back(ref::fromHalfBits(out[0][j], HalfType::F16));
          want.push_back(ref::fromHalfBits(out[1][j], HalfType::F16));
        }
        worst = std::max(worst, normwiseError(got, want));
        ++attends;
      }
    };
    for (int seq = 0; seq < 3; ++seq)
      for (int layer = 0; layer < config.layers; ++layer)
        appendAll(seq, layer, prompts[seq]);
    attendAll();
    // A decode step's tokens, [sequences, kv heads, head_dim]: the device
    // takes them in one appendStep, the reference one sequence at a time.
    auto stepAll = [&](int layer) {
      std::vector<uint16_t> k =
          kvLikeHalves(tokenRow * 3, d, HalfType::F16, ++seed, true);
      std::vector<uint16_t> v =
          kvLikeHalves(tokenRow * 3, d, HalfType::F16, ++seed, false);
      void *dk[2], *dv[2];
      for (int i = 0; i < 2; ++i)
        if (!(dk[i] = put(i, k)) || !(dv[i] = put(i, v))) {
          problem = "device memory: " + status.message();
          return;
        }
      Status s = caches[0]->appendStep(layer, dk[0], dv[0]);
      for (int seq = 0; seq < 3 && s.ok(); ++seq) {
        size_t at = seq * tokenRow * 2;
        s = caches[1]->append(layer, seq, static_cast<char *>(dk[1]) + at,
                              static_cast<char *>(dv[1]) + at, 1);
      }
      if (!s.ok())
        problem = "decode step: " + s.message();
    };
    for (int step = 0; step < kSteps && problem.empty(); ++step) {
      for (int layer = 0; layer < config.layers && problem.empty(); ++layer)
        stepAll(layer);
      attendAll();
    }
    // Then chunks of query tokens (appendAndAttend: 3, 8 and 1 new tokens,
    // each attending causally), outputs compared row by row.
    const int32_t offsets[] = {0, 3, 11, 12};
    int rows = offsets[3];
    for (int layer = 0; layer < config.layers && problem.empty(); ++layer) {
      std::vector<uint16_t> k =
          kvLikeHalves(tokenRow * rows, d, HalfType::F16, ++seed, true);
      std::vector<uint16_t> v =
          kvLikeHalves(tokenRow * rows, d, HalfType::F16, ++seed, false);
      std::vector<uint16_t> q =
          kvLikeHalves(size_t(rows) * config.queryHeads * d, d, HalfType::F16,
                       ++seed, false);
      std::vector<uint16_t> out[2];
      for (int i = 0; i < 2 && problem.empty(); ++i) {
        std::vector<uint16_t> poison(q.size(), 0xFFFF);
        void *dk = put(i, k), *dv = put(i, v), *dq = put(i, q),
             *dout = put(i, poison);
        if (!dk || !dv || !dq || !dout) {
          problem = "device memory: " + status.message();
          break;
        }
        Status s = caches[i]->appendAndAttend(
            layer, dk, dv, dq, dout, offsets,
            TokenLayout{d, int64_t(config.kvHeads) * d});
        if (s.ok()) {
          out[i].resize(q.size());
          s = contexts[i]->copyOut(out[i].data(), dout, q.size() * 2);
        }
        if (!s.ok())
          problem = "appendAndAttend: " + s.message();
      }
      if (!problem.empty())
        break;
      std::vector<float> got, want;
      for (size_t j = 0; j < q.size(); ++j) {
        got.push_back(ref::fromHalfBits(out[0][j], HalfType::F16));
        want.push_back(ref::fromHalfBits(out[1][j], HalfType::F16));
      }
      worst = std::max(worst, normwiseError(got, want));
      ++attends;
    }
    for (int i = 0; i < 2; ++i)
      for (void *p : owned[i])
        contexts[i]->release(p);
    bool ok = problem.empty() && worst <= grid.tolerance;
    os << llvm::formatv("| {0} | {1} | {2:e} | {3} |\n", name, attends, worst,
                        ok ? "ok" : "FAIL");
    if (!ok)
      failures.push_back("QuantizedKVCache " + name + ": " +
                         (problem.empty() ? std::string(llvm::formatv(
                                                "attention error {0:e}", worst))
                                          : problem));
  }
  return llvm::Error::success();
}
} // namespace

llvm::Expected<int> kvq::runCorrectness(Runtime &device, Runtime &reference,
                                        const CheckGrid &grid,
                                        llvm::raw_ostream &os, bool corrupt) {
  os << "\n## Correctness (device vs reference backend)\n\n"
     << "Fresh KV-like data per case (seeded), batch " << grid.batch
     << " ragged (odd sequences one channel group shorter), " << grid.tokens
     << " quantized tokens, 4 fp16 sink and 32 residual tokens, "
     << grid.kvHeads
     << " kv heads. Outputs poisoned before each run. `quantize`: codes, "
        "scales and zeros of K and V bit-identical to the reference; "
        "`attention`: normwise error, pass <= "
     << grid.tolerance << ".\n\n"
     << "| spec | quantize | attention error | result |\n|---|---|---|---|\n";
  std::vector<std::string> failures;
  uint32_t seed = 1;
  for (const KernelSpec &spec : checkSpecs(grid)) {
    if (!spec.isAttention() || spec.chunked)
      continue; // the cache's own kernels: checkCaches runs them
    AttentionWorkload w;
    w.spec = spec;
    w.batch = grid.batch;
    w.tokens = grid.tokens;
    w.seed = seed++;
    llvm::Expected<WorkloadResult> got = runAttentionWorkload(device, w);
    if (!got)
      return got.takeError();
    llvm::Expected<WorkloadResult> want = runAttentionWorkload(reference, w);
    if (!want)
      return want.takeError();
    if (corrupt && failures.empty() && !got->output.empty())
      got->output[got->output.size() / 2] += 1.0f;

    std::vector<std::string> bad;
    auto compare = [&](const char *what, auto &a, auto &b) {
      int64_t at = firstDifference(a, b);
      if (at >= 0)
        bad.push_back(llvm::formatv("{0} differ from element {1} of {2}", what,
                                    at, b.size()));
    };
    compare("key codes", got->keyWords, want->keyWords);
    compare("value codes", got->valueWords, want->valueWords);
    compare("key scales", got->keyScales, want->keyScales);
    compare("key zeros", got->keyZeros, want->keyZeros);
    compare("value scales", got->valueScales, want->valueScales);
    compare("value zeros", got->valueZeros, want->valueZeros);
    bool quantizeOk = bad.empty();
    double error = normwiseError(got->output, want->output);
    // A NaN (an unwritten, poisoned output) fails: the comparison is false.
    bool attentionOk = error <= grid.tolerance;
    if (!attentionOk)
      bad.push_back(llvm::formatv("attention error {0:e} above {1:e}", error,
                                  grid.tolerance));
    os << llvm::formatv("| {0} | {1} | {2:e} | {3} |\n", spec.canonical(),
                        quantizeOk ? "bit-exact" : "DIFFERS", error,
                        bad.empty() ? "ok" : "FAIL");
    for (const std::string &why : bad)
      failures.push_back(spec.canonical() + ": " + why);
  }
  os << "\n### Quantize and dequantize, every scheme\n\n"
     << "Bits 2/4/8 x token/channel axis x asymmetric/symmetric x fp16/fp32 "
        "scales, each head_dim; "
     << grid.kvHeads * grid.batch
     << " rows of 128 KV-like tokens (outlier channels), quantized then "
        "dequantized; codes, scales, zeros and values bit-identical to the "
        "reference.\n\n| scheme | d | result |\n|---|---|---|\n";
  const std::vector<KernelSpec> matrix = schemeMatrixSpecs(grid);
  for (const KernelSpec &spec : matrix) {
    if (spec.kind != KernelKind::Quantize)
      continue;
    int d = spec.headDim, rows = grid.kvHeads * grid.batch, tokens = 128;
    std::vector<uint16_t> input =
        kvLikeHalves(size_t(rows) * tokens * d, d, HalfType::F16, seed++, true);
    auto got = roundTrip(device, spec.key, d, rows, tokens, input);
    if (!got)
      return got.takeError();
    auto want = roundTrip(reference, spec.key, d, rows, tokens, input);
    if (!want)
      return want.takeError();
    static const char *parts[] = {"codes", "scales", "zeros",
                                  "dequantized values"};
    std::string bad;
    for (int i = 0; i < 4 && bad.empty(); ++i) {
      int64_t at = firstDifference((*got)[i], (*want)[i]);
      if (at >= 0)
        bad = llvm::formatv("{0} differ from byte {1} of {2}", parts[i], at,
                            (*want)[i].size());
    }
    os << llvm::formatv("| {0} | {1} | {2} |\n", spec.key.tag(), d,
                        bad.empty() ? "bit-exact" : "FAIL");
    if (!bad.empty())
      failures.push_back("quantize/dequantize " + spec.key.tag() +
                         " d=" + std::to_string(d) + ": " + bad);
  }
  if (llvm::Error e = checkCaches(device, grid, os, failures))
    return std::move(e);
  os << "\n";
  for (const std::string &f : failures)
    os << "MISMATCH: " << f << "\n";
  if (failures.empty())
    os << "Every case matched the reference.\n";
  return int(failures.size());
}
