//===- Presets.h - named cache configurations and model shapes --*- C++ -*-===//

#ifndef KVQ_RUNTIME_PRESETS_H
#define KVQ_RUNTIME_PRESETS_H

#include "kvq/Codegen/KernelSpec.h"

#include <optional>
#include <string>
#include <vector>

namespace kvq {

/// A quantized KV cache configuration.
struct CachePreset {
  std::string name;
  std::string source; ///< where the configuration comes from
  QuantScheme key, value;
  int residual = 128; ///< fp16 residual tokens
  int sink = 4;       ///< fp16 attention-sink tokens
};

struct ModelShape {
  std::string name;
  int layers, queryHeads, kvHeads, headDim;
};

/// kivi2, kivi4, hf_quanto_int4, int8, int4, in that order: the presets
/// that need nothing more than a name.
const std::vector<CachePreset> &allPresets();
/// prefixquant, fp8_e4m3, fp8_e5m2: static scales, which a cache is given
/// (CacheConfig::keyScales ..., calibrated by kvq-calibrate).
const std::vector<CachePreset> &staticPresets();
std::optional<CachePreset> findPreset(const std::string &name);
std::string knownPresets();
/// llama-2-7b, llama-3-8b, mistral-7b, qwen2.5-7b.
std::optional<ModelShape> findModel(const std::string &name);
std::string knownModels();

/// Every kernel a model needs with a preset: quantize and dequantize for
/// keys and values, the cache's decode step (append), and the fused paged
/// attention (sink + residual), last.
std::vector<KernelSpec> kernelsFor(const CachePreset &preset,
                                   const ModelShape &model,
                                   HalfType dtype = HalfType::F16);

/// Tokens per page of QuantizedKVCache's paged store for these schemes: 64,
/// or the largest channel-axis group if that is larger (a page holds whole
/// groups, and whole attention tiles).
int cachePageTokens(const QuantScheme &key, const QuantScheme &value,
                    int headDim);

} // namespace kvq

#endif // KVQ_RUNTIME_PRESETS_H
