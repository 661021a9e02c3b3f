//===- Passes.h - kvq -> kvq rewrites ---------------------------*- C++ -*-===//

#ifndef KVQ_TRANSFORMS_PASSES_H
#define KVQ_TRANSFORMS_PASSES_H

#include "kvq/Dialect/KVQ/IR/KVQDialect.h"

#include "mlir/Pass/Pass.h"

namespace mlir {
class RewritePatternSet;

namespace kvq {

#define GEN_PASS_DECL
#include "kvq/Transforms/Passes.h.inc"

/// Adds the quantize+pack, dequantize+unpack and dequantize+attention fusion
/// patterns of `--kvq-fuse` to `patterns`.
void populateKVQFusePatterns(RewritePatternSet &patterns);

#define GEN_PASS_REGISTRATION
#include "kvq/Transforms/Passes.h.inc"

} // namespace kvq
} // namespace mlir

#endif // KVQ_TRANSFORMS_PASSES_H
