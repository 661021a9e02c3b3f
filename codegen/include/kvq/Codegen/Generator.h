//===- Generator.h - from a kernel spec to CUDA C++ -------------*- C++ -*-===//
//
// The compiler front half: KernelSpec -> kvq IR -> (kvq-to-cuda pipeline)
// -> EmitC -> CUDA C++ with the device prelude. nvrtc (runtime/) takes it
// from there. Every stage's IR can be kept for KVQ_DUMP_DIR and kvq-translate.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_CODEGEN_GENERATOR_H
#define KVQ_CODEGEN_GENERATOR_H

#include "kvq/Codegen/GeneratedSource.h"
#include "kvq/Codegen/KernelSpec.h"

#include "llvm/Support/Error.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace mlir {
class MLIRContext;
class ModuleOp;
} // namespace mlir

namespace kvq {

/// The device prelude: types, access macros and small helpers every
/// generated kernel includes.
const char *devicePrelude();

struct GeneratorOptions {
  std::string arch = "sm_90";
  /// Keep the IR after every stage (kvq, planned, gpu, emitc).
  bool keepStages = false;
};

/// Owns an MLIRContext with kvq's dialects; not thread-safe (use one per
/// thread).
class Generator {
public:
  Generator();
  ~Generator();

  /// Builds the kvq IR for `spec` and lowers it to CUDA.
  llvm::Expected<GeneratedSource> generate(const KernelSpec &spec,
                                           const GeneratorOptions &options);
  /// Lowers an already parsed kvq module (kvq-translate).
  llvm::Expected<GeneratedSource> generate(mlir::ModuleOp module,
                                           const GeneratorOptions &options);

  mlir::MLIRContext &context();

private:
  std::unique_ptr<mlir::MLIRContext> ctx;
};

/// Builds the kvq IR of `spec`: a function holding the unfused ops a user
/// would write (quantize + pack; dequantize + attention), so the pipeline's
/// fusion is visible in the dumped stages.
mlir::ModuleOp buildKernelModule(mlir::MLIRContext &context,
                                 const KernelSpec &spec);

} // namespace kvq

#endif // KVQ_CODEGEN_GENERATOR_H
