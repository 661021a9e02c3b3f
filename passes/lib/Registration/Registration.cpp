//===- Registration.cpp - what every kvq tool registers -------------------===//

#include "kvq/Registration/Registration.h"

#include "kvq/Conversion/Passes.h"
#include "kvq/Dialect/KVQ/IR/KVQDialect.h"
#include "kvq/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Transforms/Passes.h"

using namespace mlir;

void mlir::kvq::registerKVQDialects(DialectRegistry &registry) {
  // What kvq IR parses (kvq, func, arith, tensor) and what its lowerings
  // produce (gpu, scf, memref, vector, math, emitc).
  registry.insert<KVQDialect, arith::ArithDialect, emitc::EmitCDialect,
                  func::FuncDialect, gpu::GPUDialect, math::MathDialect,
                  memref::MemRefDialect, scf::SCFDialect, tensor::TensorDialect,
                  vector::VectorDialect>();
}

void mlir::kvq::registerKVQPasses() {
  registerKVQTransformsPasses();
  registerKVQConversionPasses();
  registerKVQToCUDAPipeline();
  // Upstream passes that kvq pipelines and tests use.
  mlir::registerCanonicalizerPass();
  mlir::registerCSEPass();
}
