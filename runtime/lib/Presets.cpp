//===- Presets.cpp - named cache configurations and model shapes ----------===//

#include "kvq/Runtime/Presets.h"

#include <numeric>

using namespace kvq;

namespace {

QuantScheme scheme(int bits, int group, QuantScheme::Axis axis) {
  QuantScheme s;
  s.bits = bits;
  s.group = group;
  s.axis = axis;
  // Token-axis codes interleaved (code 2j and 2j + 1 sixteen bits apart):
  // the tensor-core attention unpacks a channel pair of a token with one
  // shift and one LOP3, against two extractions and a merge in the plain
  // order (kivi2's step loop at 3424fa0: 619 SASS instructions plain, 496
  // interleaved, sm_90). The channel axis gains nothing from it and stays
  // plain.
  s.interleaved = axis == QuantScheme::Axis::Token;
  return s;
}

constexpr auto Token = QuantScheme::Axis::Token;
constexpr auto Channel = QuantScheme::Axis::Channel;

const std::vector<CachePreset> &presetTable() {
  static const std::vector<CachePreset> all = {
      {"kivi2",
       "KIVI (Liu et al. 2024): 2-bit keys per channel, values per "
       "token, group 32, fp16 residual 128",
       scheme(2, 32, Channel), scheme(2, 32, Token), 128, 4},
      {"kivi4", "KIVI's 4-bit variant", scheme(4, 32, Channel),
       scheme(4, 32, Token), 128, 4},
      {"hf_quanto_int4",
       "Hugging Face QuantizedCache (quanto, nbits=4): "
       "4-bit, groups of 64 channels per token, residual "
       "128",
       scheme(4, 64, Token), scheme(4, 64, Token), 128, 4},
      {"int8", "8-bit per token, groups of 64", scheme(8, 64, Token),
       scheme(8, 64, Token), 128, 4},
      {"int4", "4-bit per token, groups of 32", scheme(4, 32, Token),
       scheme(4, 32, Token), 128, 4}};
  return all;
}

const std::vector<CachePreset> &staticPresetTable() {
  using S = QuantScheme;
  // A residual of 32 fp16 tokens (the smallest flush) keeps the batched
  // decode step, which quantizes whole flushes; its tokens are quantized
  // 32 steps later with the same static scales.
  static const std::vector<CachePreset> all = {
      {"prefixquant",
       "PrefixQuant (Chen et al. 2024): outlier prefix tokens kept in fp16 "
       "(the sink), keys and values 4-bit symmetric with static per-head "
       "scales",
       S::staticScheme(4, S::Scales::Head, true),
       S::staticScheme(4, S::Scales::Head, true), 32, 4},
      {"fp8_e4m3",
       "vLLM, SGLang, TensorRT-LLM: FP8 E4M3 keys and values with a "
       "per-tensor scale (k_scale, v_scale)",
       S::staticScheme(8, S::Scales::Tensor, true, S::Format::E4M3),
       S::staticScheme(8, S::Scales::Tensor, true, S::Format::E4M3), 32, 0},
      {"fp8_e5m2", "vLLM's FP8 E5M2 cache, per-tensor scales",
       S::staticScheme(8, S::Scales::Tensor, true, S::Format::E5M2),
       S::staticScheme(8, S::Scales::Tensor, true, S::Format::E5M2), 32, 0}};
  return all;
}

const std::vector<ModelShape> &models() {
  static const std::vector<ModelShape> all = {{"llama-2-7b", 32, 32, 32, 128},
                                              {"llama-3-8b", 32, 32, 8, 128},
                                              {"mistral-7b", 32, 32, 8, 128},
                                              {"qwen2.5-7b", 28, 28, 4, 128}};
  return all;
}

template <typename T> std::string names(const std::vector<T> &items) {
  std::string text;
  for (const T &item : items)
    text += (text.empty() ? "" : ", ") + item.name;
  return text;
}

} // namespace

std::optional<CachePreset> kvq::findPreset(const std::string &name) {
  for (const auto *table : {&presetTable(), &staticPresetTable()})
    for (const CachePreset &p : *table)
      if (p.name == name)
        return p;
  return std::nullopt;
}

const std::vector<CachePreset> &kvq::allPresets() { return presetTable(); }

const std::vector<CachePreset> &kvq::staticPresets() {
  return staticPresetTable();
}

std::string kvq::knownPresets() {
  return names(presetTable()) + ", " + names(staticPresetTable());
}

std::optional<ModelShape> kvq::findModel(const std::string &name) {
  for (const ModelShape &m : models())
    if (m.name == name)
      return m;
  return std::nullopt;
}

std::string kvq::knownModels() { return names(models()); }

std::vector<KernelSpec> kvq::kernelsFor(const CachePreset &preset,
                                        const ModelShape &model,
                                        HalfType dtype) {
  std::vector<KernelSpec> specs;
  for (const QuantScheme &s : {preset.key, preset.value})
    for (KernelKind kind : {KernelKind::Quantize, KernelKind::Dequantize}) {
      specs.push_back(KernelSpec::forScheme(kind, s, model.headDim, dtype));
      specs.back().kvHeads = model.kvHeads; // per-head static scales
    }
  // The cache's batched decode step (QuantizedKVCache::appendStep).
  specs.push_back(
      KernelSpec::forAppend(preset.key, preset.value, model.headDim, dtype));
  // Paged, as QuantizedKVCache stores it; last (callers take back()).
  KernelSpec attention = KernelSpec::forAttention(
      preset.key, preset.value, model.headDim, model.queryHeads, model.kvHeads,
      dtype, preset.sink > 0, /*residual=*/true);
  attention.pageTokens =
      cachePageTokens(preset.key, preset.value, model.headDim);
  specs.push_back(attention);
  // Identical schemes for K and V share their quantize/dequantize kernels.
  std::vector<KernelSpec> unique;
  for (const KernelSpec &s : specs) {
    bool seen = false;
    for (const KernelSpec &u : unique)
      seen |= u.canonical() == s.canonical();
    if (!seen)
      unique.push_back(s);
  }
  return unique;
}

int kvq::cachePageTokens(const QuantScheme &key, const QuantScheme &value,
                         int headDim) {
  int tokens = 64; // a multiple of 16: whole attention tiles
  for (const QuantScheme *s : {&key, &value})
    if (s->axis == QuantScheme::Axis::Channel)
      tokens = std::lcm(tokens, s->groupSize(headDim));
  return tokens;
}
