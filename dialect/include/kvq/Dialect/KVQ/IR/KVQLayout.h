//===- KVQLayout.h - shapes of codes, words and scales ----------*- C++ -*-===//
//
// The storage layout of a quantized KV tensor, as free functions so that the
// verifiers, the lowering and the runtime all compute it the same way.
// Shapes are [batch, heads, tokens, head_dim]; dynamic extents are
// mlir::ShapedType::kDynamic and stay dynamic.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_DIALECT_KVQ_IR_KVQLAYOUT_H
#define KVQ_DIALECT_KVQ_IR_KVQLAYOUT_H

#include "kvq/Dialect/KVQ/IR/KVQAttrs.h"

#include "mlir/IR/Diagnostics.h"
#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/SmallVector.h"

namespace mlir::kvq {

/// Dimension indices of the KV layout.
enum KVDim : unsigned {
  kBatchDim = 0,
  kHeadDim = 1,
  kTokenDim = 2,
  kChannelDim = 3
};

/// Shape of the packed words for codes of shape `codeShape`.
llvm::SmallVector<int64_t, 4> packedShape(SchemeAttr scheme,
                                          llvm::ArrayRef<int64_t> codeShape);

/// Shape of the codes held by packed words of shape `wordShape`.
llvm::SmallVector<int64_t, 4> unpackedShape(SchemeAttr scheme,
                                            llvm::ArrayRef<int64_t> wordShape);

/// Shape of the scales (and zero points) for codes of shape `codeShape`.
llvm::SmallVector<int64_t, 4> scalesShape(SchemeAttr scheme,
                                          llvm::ArrayRef<int64_t> codeShape);

/// Packed words of one row that a thread can load side by side: a token-axis
/// row holds head_dim·bits/32 words of one token, a channel-axis word row
/// head_dim words (one per channel).
int64_t packedRowWords(SchemeAttr scheme, int64_t headDim);

/// True if `actual` can hold a tensor of shape `expected` (equal, or one of
/// the two extents dynamic).
bool isCompatibleShape(llvm::ArrayRef<int64_t> expected,
                       llvm::ArrayRef<int64_t> actual);

/// Checks that `scheme` can quantize a tensor of shape `codeShape`: head_dim
/// static and divisible by the group, token-axis words filled exactly, and
/// for `axis = channel` a whole number of token groups. Reports the first
/// problem through `emitError`, naming the bad value.
LogicalResult
verifySchemeFitsShape(SchemeAttr scheme, llvm::ArrayRef<int64_t> codeShape,
                      llvm::function_ref<InFlightDiagnostic()> emitError);

/// Formats a shape as "1x8x?x128" for diagnostics.
std::string formatShape(llvm::ArrayRef<int64_t> shape);

} // namespace mlir::kvq

#endif // KVQ_DIALECT_KVQ_IR_KVQLAYOUT_H
