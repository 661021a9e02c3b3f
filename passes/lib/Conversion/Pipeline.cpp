//===- Pipeline.cpp - the kvq-to-cuda pipeline ----------------------------===//

#include "kvq/Conversion/Passes.h"
#include "kvq/Transforms/Passes.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassOptions.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;
using namespace mlir::kvq;

void mlir::kvq::addKVQToCUDAStage(OpPassManager &pm, KVQToCUDAStage stage,
                                  const KVQToCUDAPipelineOptions &options) {
  switch (stage) {
  case KVQToCUDAStage::FuseAndPlan: {
    pm.addPass(createKVQFuse());
    pm.addPass(createCanonicalizerPass());
    KVQPlanOptions planOptions;
    planOptions.arch = options.arch;
    pm.addPass(createKVQPlan(planOptions));
    return;
  }
  case KVQToCUDAStage::ToGPU:
    pm.addPass(createKVQToGPU());
    pm.addPass(createCanonicalizerPass());
    pm.addPass(createCSEPass());
    return;
  case KVQToCUDAStage::ToEmitC:
    pm.addPass(createGPUToEmitC());
    return;
  }
}

void mlir::kvq::buildKVQToCUDAPipeline(
    OpPassManager &pm, const KVQToCUDAPipelineOptions &options) {
  for (KVQToCUDAStage stage : kKVQToCUDAStages)
    addKVQToCUDAStage(pm, stage, options);
}

namespace {
struct PipelineOptions : PassPipelineOptions<PipelineOptions> {
  Option<std::string> arch{*this, "arch",
                           llvm::cl::desc("Target architecture (sm_90, ...)"),
                           llvm::cl::init("sm_90")};
};
} // namespace

void mlir::kvq::registerKVQToCUDAPipeline() {
  PassPipelineRegistration<PipelineOptions>(
      "kvq-to-cuda",
      "Fuse, plan and lower kvq ops to EmitC, ready for CUDA C++ emission",
      [](OpPassManager &pm, const PipelineOptions &options) {
        KVQToCUDAPipelineOptions pipelineOptions;
        pipelineOptions.arch = options.arch;
        buildKVQToCUDAPipeline(pm, pipelineOptions);
      });
}
