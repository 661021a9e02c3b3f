//===- LaunchPlan.h - a kernel's launch plan, without MLIR ------*- C++ -*-===//
//
// The fields of `#kvq.plan` (KVQAttrs.td) in plain C++, for the runtime,
// which launches kernels by their plan but links no MLIR. The attribute and
// this struct are one definition in two languages: `PlanAttr::get(context,
// LaunchPlan)` and `PlanAttr::toLaunchPlan()` convert field by field, and
// kPlanIntegerFields is the only place a field's name is spelled as text
// (the cache manifest's keys). PlanTest checks that the names printed by
// the attribute are these.
//
// A field that is 0 (or an empty arch) is unset: the kvq-plan pass fills
// it, and a user may set any field by hand in the IR to override it.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_DIALECT_KVQ_IR_LAUNCHPLAN_H
#define KVQ_DIALECT_KVQ_IR_LAUNCHPLAN_H

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvq {

struct LaunchPlan {
  std::string arch;              ///< target, "sm_90"
  int64_t threads = 0;           ///< threads per block
  int64_t halfVector = 0;        ///< fp16/bf16 elements per load: 1, 4 or 8
  int64_t tileTokens = 0;        ///< attention: tokens per shared-memory tile
  int64_t minTokensPerSplit = 0; ///< attention: shortest split-K part
  int64_t smCount = 0;           ///< attention: SMs the split count assumes
  int64_t keyVectorWords = 0;    ///< attention: packed key words per load
  int64_t valueVectorWords = 0;  ///< attention: packed value words per load
  int64_t scoresPerThread = 0;   ///< attention: tokens a thread scores, 1 or 2
  int64_t sharedBytes = 0;       ///< attention: dynamic shared memory per block
  int64_t attentionPath = 0;     ///< attention: kCudaCores or kTensorCores
  int64_t queryRows = 0; ///< chunked attention: query rows a block takes

  /// Packed words per load of an operand; 1 where the plan has none (the
  /// dense baseline reads no packed words).
  int64_t keyWordsPerLoad() const {
    return keyVectorWords ? keyVectorWords : 1;
  }
  int64_t valueWordsPerLoad() const {
    return valueVectorWords ? valueVectorWords : 1;
  }
  /// Halves per fp16 load; 1 where the kernel has no vector loads.
  int64_t halvesPerLoad() const { return halfVector ? halfVector : 1; }
  /// Query rows per block; 1 where the plan has none.
  int64_t queryRowsPerBlock() const { return queryRows ? queryRows : 1; }
};

/// One integer field: its name (as the IR prints it and the manifest stores
/// it) and where it lives.
struct LaunchPlanField {
  const char *name;
  int64_t LaunchPlan::*member;
};

inline constexpr std::array<LaunchPlanField, 11> kPlanIntegerFields = {{
    {"threads", &LaunchPlan::threads},
    {"halfVector", &LaunchPlan::halfVector},
    {"tileTokens", &LaunchPlan::tileTokens},
    {"minTokensPerSplit", &LaunchPlan::minTokensPerSplit},
    {"smCount", &LaunchPlan::smCount},
    {"keyVectorWords", &LaunchPlan::keyVectorWords},
    {"valueVectorWords", &LaunchPlan::valueVectorWords},
    {"scoresPerThread", &LaunchPlan::scoresPerThread},
    {"sharedBytes", &LaunchPlan::sharedBytes},
    {"attentionPath", &LaunchPlan::attentionPath},
    {"queryRows", &LaunchPlan::queryRows},
}};

/// Where an attention kernel does its arithmetic (LaunchPlan::attentionPath):
/// scores and P.V as FMAs on the CUDA cores over shared-memory tiles, or as
/// mma.sync on the tensor cores with the KV fragments dequantized in
/// registers (passes/lib/Conversion/KVQToGPU/TensorCoreAttention.cpp).
inline constexpr int64_t kCudaCores = 1;
inline constexpr int64_t kTensorCores = 2;

/// The most query rows one block of a chunked attention kernel takes
/// (LaunchPlan::queryRows): two MMA column tiles of one head each.
inline constexpr int64_t kMaxQueryRows = 16;

/// Name of the string field.
inline constexpr const char *kPlanArchField = "arch";

/// The number of an arch name: "sm_90", "sm_90a" or "compute_90" -> 90;
/// 0 unless it names sm_75 .. sm_121.
inline int64_t archNumber(std::string_view arch) {
  for (std::string_view prefix : {"sm_", "compute_"})
    if (arch.substr(0, prefix.size()) == prefix) {
      arch.remove_prefix(prefix.size());
      while (!arch.empty() && (arch.back() == 'a' || arch.back() == 'f'))
        arch.remove_suffix(1);
      if (arch.empty() || arch.size() > 3)
        return 0;
      int64_t value = 0;
      for (char c : arch) {
        if (c < '0' || c > '9')
          return 0;
        value = value * 10 + (c - '0');
      }
      return value >= 75 && value <= 121 ? value : 0;
    }
  return 0;
}
inline constexpr const char *kArchRule = "arch must be sm_75 .. sm_121";

/// Shared memory a block gets without opting in to more.
inline constexpr int64_t kMaxStaticSharedBytes = 48 * 1024;

} // namespace kvq

#endif // KVQ_DIALECT_KVQ_IR_LAUNCHPLAN_H
