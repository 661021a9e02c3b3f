//===- kvq-calibrate.cpp - static KV scales from sample keys and values ---===//
//
//   kvq-calibrate --keys=K.bin --values=V.bin --kv-heads=8 --head-dim=128
//                 [--layers=1] [--dtype=f16|bf16|f32]
//                 [--format=e4m3|e5m2|int8|int4|intN] [--asymmetric]
//                 [--granularity=tensor|head] [--method=minmax|mse]
//                 [--grid=100] [--min-clip=0.5] [-o scales.json]
//
// Reads sample keys and values (raw little-endian, [layers, tokens,
// kv_heads, head_dim], the tokens counted from the file size) and writes
// each layer's static scales as JSON: `k_scale` and `v_scale` (one, or one
// per kv head; vLLM's convention: stored = fp8(x / scale)), `k_zero` and
// `v_zero` for asymmetric integers, and each scale's relative round-trip
// error on the samples (kvq/Calibrate.h).
//
//===----------------------------------------------------------------------===//

#include "kvq/Calibrate.h"
#include "kvq/Runtime/Reference.h"

#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

#include <cstring>

namespace cl = llvm::cl;
using namespace kvq;

namespace {
cl::OptionCategory toolCategory("kvq-calibrate options");
cl::opt<std::string> keysPath("keys", cl::Required,
                              cl::desc("Sample keys: raw [layers, tokens, "
                                       "kv_heads, head_dim]"),
                              cl::cat(toolCategory));
cl::opt<std::string> valuesPath("values", cl::Required,
                                cl::desc("Sample values, as the keys"),
                                cl::cat(toolCategory));
cl::opt<int> kvHeads("kv-heads", cl::Required, cl::desc("KV heads"),
                     cl::cat(toolCategory));
cl::opt<int> headDim("head-dim", cl::Required, cl::desc("Head dimension"),
                     cl::cat(toolCategory));
cl::opt<int> layers("layers", cl::init(1), cl::desc("Layers in each file"),
                    cl::cat(toolCategory));
cl::opt<std::string> dtype("dtype", cl::init("f16"),
                           cl::desc("Sample type: f16, bf16 or f32"),
                           cl::cat(toolCategory));
cl::opt<std::string> formatText("format", cl::init("e4m3"),
                                cl::desc("e4m3, e5m2 or intN (N = 2..8)"),
                                cl::cat(toolCategory));
cl::opt<bool> asymmetric("asymmetric",
                         cl::desc("Integer codes with a zero point"),
                         cl::cat(toolCategory));
cl::opt<std::string> granularityText("granularity", cl::init("tensor"),
                                     cl::desc("tensor or head"),
                                     cl::cat(toolCategory));
cl::opt<std::string> methodText("method", cl::init("minmax"),
                                cl::desc("minmax or mse (grid search over "
                                         "clipping ratios)"),
                                cl::cat(toolCategory));
cl::opt<int> gridPoints("grid", cl::init(100),
                        cl::desc("mse: clipping ratios tried"),
                        cl::cat(toolCategory));
cl::opt<float> minClip("min-clip", cl::init(0.5f),
                       cl::desc("mse: the smallest clipping ratio"),
                       cl::cat(toolCategory));
cl::opt<std::string> outPath("o", cl::init("-"),
                             cl::desc("Output JSON (- for stdout)"),
                             cl::cat(toolCategory));

int fail(const llvm::Twine &message) {
  llvm::errs() << "kvq-calibrate: " << message << "\n";
  return 1;
}

llvm::Error fileError(const std::string &message) {
  return llvm::make_error<llvm::StringError>(message,
                                             llvm::inconvertibleErrorCode());
}

/// The samples of a file as floats, or an error naming the file.
llvm::Expected<std::vector<float>> readSamples(const std::string &path,
                                               size_t bytesPerValue,
                                               size_t valuesPerToken) {
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/false);
  if (!buffer)
    return fileError("cannot read '" + path +
                     "': " + buffer.getError().message());
  llvm::StringRef bytes = (*buffer)->getBuffer();
  size_t unit = bytesPerValue * valuesPerToken * size_t(layers);
  if (bytes.empty() || bytes.size() % unit != 0)
    return fileError("'" + path + "' holds " + std::to_string(bytes.size()) +
                     " bytes, not a positive multiple of " +
                     std::to_string(unit) +
                     " (layers x kv_heads x head_dim x " +
                     std::to_string(bytesPerValue) + " bytes a token)");
  std::vector<float> out(bytes.size() / bytesPerValue);
  for (size_t i = 0; i < out.size(); ++i) {
    const char *p = bytes.data() + i * bytesPerValue;
    if (bytesPerValue == 4) {
      std::memcpy(&out[i], p, 4);
    } else {
      uint16_t bits;
      std::memcpy(&bits, p, 2);
      out[i] = ref::fromHalfBits(bits, dtype == "bf16" ? HalfType::BF16
                                                       : HalfType::F16);
    }
  }
  return out;
}

} // namespace

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::HideUnrelatedOptions(toolCategory);
  cl::ParseCommandLineOptions(argc, argv,
                              "kvq: static KV-cache scales from samples\n");
  if (kvHeads < 1 || headDim < 1 || layers < 1)
    return fail("--kv-heads, --head-dim and --layers must be positive, got " +
                llvm::Twine(int(kvHeads)) + ", " + llvm::Twine(int(headDim)) +
                " and " + llvm::Twine(int(layers)));
  if (dtype != "f16" && dtype != "bf16" && dtype != "f32")
    return fail("--dtype must be f16, bf16 or f32, got '" + dtype + "'");
  CalibrationOptions options;
  std::optional<StaticFormat> format = StaticFormat::parse(formatText);
  if (!format)
    return fail("--format must be e4m3, e5m2 or intN, got '" + formatText +
                "'");
  options.format = *format;
  options.format.symmetric = !asymmetric;
  if (granularityText != "tensor" && granularityText != "head")
    return fail("--granularity must be tensor or head, got '" +
                granularityText + "'");
  options.granularity = granularityText == "head" ? ScaleGranularity::Head
                                                  : ScaleGranularity::Tensor;
  if (methodText != "minmax" && methodText != "mse")
    return fail("--method must be minmax or mse, got '" + methodText + "'");
  options.method = methodText == "mse" ? CalibrationMethod::MseGrid
                                       : CalibrationMethod::MinMax;
  options.gridPoints = gridPoints;
  options.minClip = minClip;

  size_t bytesPerValue = dtype == "f32" ? 4 : 2;
  size_t perToken = size_t(kvHeads) * size_t(headDim);
  llvm::json::Array layerScales;
  std::vector<float> tensors[2];
  for (int which = 0; which < 2; ++which) {
    llvm::Expected<std::vector<float>> samples =
        readSamples(which ? valuesPath : keysPath, bytesPerValue, perToken);
    if (!samples)
      return fail(llvm::toString(samples.takeError()));
    tensors[which] = std::move(*samples);
  }
  if (tensors[0].size() != tensors[1].size())
    return fail("the keys hold " + llvm::Twine(tensors[0].size()) +
                " values and the values " + llvm::Twine(tensors[1].size()) +
                ": the same tokens are expected");
  size_t tokens = tensors[0].size() / perToken / size_t(layers);
  for (int layer = 0; layer < layers; ++layer) {
    llvm::json::Object entry;
    for (int which = 0; which < 2; ++which) {
      const float *first =
          tensors[which].data() + size_t(layer) * tokens * perToken;
      std::vector<StaticScale> scales;
      Status status =
          calibrateScales(first, tokens, kvHeads, headDim, options, &scales);
      if (!status.ok())
        return fail((which ? "values" : "keys") + llvm::Twine(", layer ") +
                    llvm::Twine(layer) + ": " + status.message());
      llvm::json::Array scale, zero, error;
      for (const StaticScale &s : scales) {
        scale.push_back(s.scale);
        zero.push_back(s.zero);
        error.push_back(s.relativeError);
      }
      std::string prefix = which ? "v_" : "k_";
      entry[prefix + "scale"] = std::move(scale);
      if (!options.format.symmetric)
        entry[prefix + "zero"] = std::move(zero);
      entry[prefix + "relative_error"] = std::move(error);
    }
    layerScales.push_back(std::move(entry));
  }
  llvm::json::Object out{{"format", options.format.name()},
                         {"granularity", std::string(granularityText)},
                         {"method", std::string(methodText)},
                         {"tokens", int64_t(tokens)},
                         {"layers", std::move(layerScales)}};
  std::error_code ec;
  llvm::raw_fd_ostream os(outPath, ec);
  if (ec)
    return fail("cannot write '" + outPath + "': " + ec.message());
  os << llvm::formatv("{0:2}", llvm::json::Value(std::move(out))) << "\n";
  return 0;
}
