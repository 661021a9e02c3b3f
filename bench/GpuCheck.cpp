//===- GpuCheck.cpp - the GPU correctness suite ---------------------------===//

#include "GpuCheck.h"

#include "kvq/BufferSizes.h"
#include "kvq/Runtime/Presets.h"
#include "kvq/Runtime/Reference.h"
#include "kvq/Runtime/Workload.h"

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
  os << "\n";
  for (const std::string &f : failures)
    os << "MISMATCH: " << f << "\n";
  if (failures.empty())
    os << "Every case matched the reference.\n";
  return int(failures.size());
}
