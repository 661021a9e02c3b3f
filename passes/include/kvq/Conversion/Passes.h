//===- Passes.h - kvq lowerings ---------------------------------*- C++ -*-===//

#ifndef KVQ_CONVERSION_PASSES_H
#define KVQ_CONVERSION_PASSES_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/EmitC/IR/EmitC.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Pass/Pass.h"

#include <string>

namespace mlir {
class RewritePatternSet;
class TypeConverter;

namespace kvq {

#define GEN_PASS_DECL
#include "kvq/Conversion/Passes.h.inc"

/// Adds kvq's GPU/memref/arith/math -> EmitC patterns (see GPUToEmitC).
void populateGPUToEmitCPatterns(TypeConverter &typeConverter,
                                RewritePatternSet &patterns);

/// Options of the full pipeline.
struct KVQToCUDAPipelineOptions {
  std::string arch = "sm_90";
};

/// The pipeline's stages, in order. kvq-opt runs them as one pipeline; the
/// Generator runs them one at a time to keep the IR after each
/// (KVQ_DUMP_DIR, kvq-translate --to=stage).
enum class KVQToCUDAStage {
  FuseAndPlan, ///< kvq-fuse, canonicalize, kvq-plan: "planned" IR
  ToGPU,       ///< kvq-to-gpu, canonicalize, cse: "gpu" IR
  ToEmitC,     ///< kvq-gpu-to-emitc: "emitc" IR
};
inline constexpr KVQToCUDAStage kKVQToCUDAStages[] = {
    KVQToCUDAStage::FuseAndPlan, KVQToCUDAStage::ToGPU,
    KVQToCUDAStage::ToEmitC};

/// Adds the passes of one stage to `pm`.
void addKVQToCUDAStage(OpPassManager &pm, KVQToCUDAStage stage,
                       const KVQToCUDAPipelineOptions &options);

/// Every stage: from kvq ops to EmitC ready for translation to CUDA C++.
void buildKVQToCUDAPipeline(OpPassManager &pm,
                            const KVQToCUDAPipelineOptions &options);

/// Registers `--kvq-to-cuda{arch=...}`.
void registerKVQToCUDAPipeline();

#define GEN_PASS_REGISTRATION
#include "kvq/Conversion/Passes.h.inc"

} // namespace kvq
} // namespace mlir

#endif // KVQ_CONVERSION_PASSES_H
