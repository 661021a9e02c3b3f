//===- GeneratedSource.h - generated kernels for the runtime ---*- C++ -*-===//
//
// What code generation hands to the runtime: the CUDA translation unit and,
// per kernel, its name, launch plan and argument list. Kept apart from
// Generator.h (which needs MLIR) so that the runtime-only library, which
// loads prebuilt kernels and never generates any, can use it.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_CODEGEN_GENERATEDSOURCE_H
#define KVQ_CODEGEN_GENERATEDSOURCE_H

#include "kvq/Dialect/KVQ/IR/LaunchPlan.h"
#include "kvq/Version.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace kvq {

/// kvq's version: part of every cache key and generated header.
inline constexpr const char *kVersion = KVQ_VERSION;

/// Name under which nvrtc and the emulator receive the device prelude.
inline constexpr const char *kPreludeName = "kvq_prelude.cuh";

/// One kernel of a generated translation unit, as the runtime launches it.
struct GeneratedKernel {
  std::string name;
  std::string kind;     ///< quantize, dequantize, attention, combine
  std::string spec;     ///< human-readable specialization
  std::string planText; ///< the #kvq.plan attribute, printed
  LaunchPlan plan;
  int threads = 0;     ///< block size of this kernel (combine: its own)
  int sharedBytes = 0; ///< dynamic shared memory of this kernel
  std::vector<std::string> argNames;
  /// C++ spelling of each argument's type ("__half*", "int32_t", ...).
  std::vector<std::string> argTypes;
};

struct GeneratedSource {
  std::string cuda; ///< the whole translation unit
  std::vector<GeneratedKernel> kernels;
  /// (stage name, IR text) in pipeline order, when keepStages is set.
  std::vector<std::pair<std::string, std::string>> stages;
  double mlirMillis = 0; ///< spec to CUDA text, wall time
};

} // namespace kvq

#endif // KVQ_CODEGEN_GENERATEDSOURCE_H
