//===- kvq-opt.cpp - the kvq optimizer driver -----------------------------===//
//
// Parses kvq IR, runs kvq passes and pipelines, prints the result. Only the
// dialects kvq parses and produces are registered (see Registration.h).
//
//===----------------------------------------------------------------------===//

#include "kvq/Registration/Registration.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  mlir::kvq::registerKVQDialects(registry);
  mlir::kvq::registerKVQPasses();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "kvq optimizer driver\n", registry));
}
