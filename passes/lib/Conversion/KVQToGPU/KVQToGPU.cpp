//===- KVQToGPU.cpp - generate GPU kernels for kvq ops --------------------===//

#include "Kernels.h"

#include "kvq/Conversion/Passes.h"
#include "kvq/Dialect/KVQ/IR/KVQOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/StringSet.h"

namespace mlir::kvq {
#define GEN_PASS_DEF_KVQTOGPU
#include "kvq/Conversion/Passes.h.inc"
} // namespace mlir::kvq

using namespace mlir;
using namespace mlir::kvq;

namespace {

struct KVQToGPUPass : mlir::kvq::impl::KVQToGPUBase<KVQToGPUPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    OpBuilder builder(module.getBodyRegion());
    builder.setInsertionPointToEnd(module.getBody());
    auto gpuModule =
        gpu::GPUModuleOp::create(builder, module.getLoc(), "kvq_kernels");
    module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                    builder.getUnitAttr());

    SetVector<Operation *> hostFunctions;
    WalkResult result = module.walk([&](Operation *op) -> WalkResult {
      if (op->getParentOfType<gpu::GPUModuleOp>())
        return WalkResult::skip();
      LogicalResult built = success();
      if (auto quantize = dyn_cast<QuantizeOp>(op))
        built = buildQuantizeKernel(quantize, gpuModule);
      else if (auto quantize = dyn_cast<QuantizeStaticOp>(op))
        built = buildQuantizeStaticKernel(quantize, gpuModule);
      else if (auto dequantize = dyn_cast<DequantizeOp>(op))
        built = buildDequantizeKernel(dequantize, gpuModule);
      else if (auto attention = dyn_cast<QuantizedAttentionOp>(op))
        built = buildAttentionKernels(attention, gpuModule);
      else if (isa<PackOp, UnpackOp>(op))
        built = op->emitOpError("has no kernel of its own; run --kvq-fuse to "
                                "fold it into quantize/dequantize");
      else if (auto dense = dyn_cast<AttentionOp>(op))
        built = buildDenseAttentionKernels(dense, gpuModule);
      else if (auto append = dyn_cast<CacheAppendOp>(op))
        built = buildCacheAppendKernel(append, gpuModule);
      else
        return WalkResult::advance();
      if (failed(built))
        return WalkResult::interrupt();
      if (auto func = op->getParentOfType<func::FuncOp>())
        hostFunctions.insert(func);
      return WalkResult::advance();
    });
    if (result.wasInterrupted())
      return signalPassFailure();

    // Two identical ops yield one kernel: drop later duplicates by name.
    llvm::StringSet<> seen;
    for (auto func : llvm::make_early_inc_range(
             gpuModule.getBody()->getOps<gpu::GPUFuncOp>()))
      if (!seen.insert(func.getName()).second)
        func.erase();
    // The functions only described the computation; launching is the
    // runtime's job.
    for (Operation *func : hostFunctions)
      func->erase();
  }
};

} // namespace
