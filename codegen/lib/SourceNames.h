//===- SourceNames.h - the builder's names in the emitted C++ --*- C++ -*-===//
//
// MLIR's C++ emitter names every value `vN` and every loop variable `iN`,
// `jN`, ...; the kernel builders know better names (`head_row`, `token`,
// `word`). They put them in NameLocs (KernelBuilder::named); these two steps
// carry them through the emitter, which has no notion of names:
//   1. markNamedValues puts a marker comment before each op with a name;
//   2. nameValues renames, in the emitted text, the variable declared on
//      the line after each marker (and the kernel's arguments), then drops
//      the markers.
// A marker whose next line declares nothing (the op was emitted inline) is
// dropped and the value keeps its `vN`.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_CODEGEN_SOURCENAMES_H
#define KVQ_CODEGEN_SOURCENAMES_H

#include "mlir/Dialect/EmitC/IR/EmitC.h"

#include <string>
#include <vector>

namespace kvq {

/// Step 1, on an emitc.func just before translateToCpp.
void markNamedValues(mlir::emitc::FuncOp func);

/// Step 2, on the emitted text of that function: `v1`..`vK` become
/// `argNames`, each marked declaration its name (made unique with `_2`,
/// `_3`, ... when a name repeats or is taken).
std::string nameValues(const std::string &body,
                       const std::vector<std::string> &argNames);

} // namespace kvq

#endif // KVQ_CODEGEN_SOURCENAMES_H
