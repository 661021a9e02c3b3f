//===- GpuCheck.cpp - the GPU correctness suite ---------------------------===//

#include "GpuCheck.h"

#include "kvq/Runtime/Presets.h"
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
  }
  return specs;
}

namespace {

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
  os << "\n";
  for (const std::string &f : failures)
    os << "MISMATCH: " << f << "\n";
  if (failures.empty())
    os << "Every case matched the reference.\n";
  return int(failures.size());
}
