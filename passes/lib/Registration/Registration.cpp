//===- Registration.cpp - what every kvq tool registers
//--------------------===//

#include "kvq/Registration/Registration.h"

#include "kvq/Dialect/KVQ/IR/KVQDialect.h"
#include "kvq/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Transforms/Passes.h"

void mlir::kvq::registerKVQDialects(DialectRegistry &registry) {
  registry.insert<mlir::kvq::KVQDialect, mlir::arith::ArithDialect,
                  mlir::func::FuncDialect, mlir::tensor::TensorDialect>();
}

void mlir::kvq::registerKVQPasses() {
  registerKVQTransformsPasses();
  // Upstream passes that kvq pipelines and tests use.
  mlir::registerCanonicalizerPass();
  mlir::registerCSEPass();
}
