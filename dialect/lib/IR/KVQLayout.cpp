//===- KVQLayout.cpp - shapes of codes, words and scales ------------------===//

#include "kvq/Dialect/KVQ/IR/KVQLayout.h"

#include "mlir/IR/BuiltinTypes.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;
using namespace mlir::kvq;

namespace {
/// `extent * num / den`, keeping dynamic extents dynamic. A zero `den` (a
/// whole-head_dim group of an empty head, which the verifier rejects) gives a
/// dynamic extent rather than a division by zero.
int64_t scaleExtent(int64_t extent, int64_t num, int64_t den) {
  if (ShapedType::isDynamic(extent) || den == 0)
    return extent;
  return extent * num / den;
}

/// The dimension that packing runs along: channels for per-token groups,
/// tokens for per-channel groups.
unsigned packedDim(SchemeAttr scheme) {
  return scheme.getAxis() == Axis::token ? kChannelDim : kTokenDim;
}
} // namespace

SmallVector<int64_t, 4> mlir::kvq::packedShape(SchemeAttr scheme,
                                               ArrayRef<int64_t> codeShape) {
  SmallVector<int64_t, 4> shape(codeShape);
  unsigned dim = packedDim(scheme);
  shape[dim] = scaleExtent(shape[dim], 1, scheme.codesPerWord());
  return shape;
}

SmallVector<int64_t, 4> mlir::kvq::unpackedShape(SchemeAttr scheme,
                                                 ArrayRef<int64_t> wordShape) {
  SmallVector<int64_t, 4> shape(wordShape);
  unsigned dim = packedDim(scheme);
  shape[dim] = scaleExtent(shape[dim], scheme.codesPerWord(), 1);
  return shape;
}

SmallVector<int64_t, 4> mlir::kvq::scalesShape(SchemeAttr scheme,
                                               ArrayRef<int64_t> codeShape) {
  // Static scales: one per tensor, or per kv head, broadcast over the rest.
  if (scheme.getStaticScales() == ScaleSource::tensor)
    return {1, 1, 1, 1};
  if (scheme.getStaticScales() == ScaleSource::head)
    return {1, codeShape[kHeadDim], 1, 1};
  SmallVector<int64_t, 4> shape(codeShape);
  int64_t headDim = codeShape[kChannelDim];
  // A whole-head_dim group needs a static head_dim; verifySchemeFitsShape
  // reports it, and a dynamic extent keeps this total meanwhile.
  if (scheme.isWholeHeadDim() && ShapedType::isDynamic(headDim)) {
    shape[scheme.getAxis() == Axis::token ? kChannelDim : kTokenDim] =
        ShapedType::kDynamic;
    return shape;
  }
  unsigned dim = scheme.getAxis() == Axis::token ? kChannelDim : kTokenDim;
  shape[dim] = scaleExtent(shape[dim], 1, scheme.groupSize(headDim));
  return shape;
}

int64_t mlir::kvq::packedRowWords(SchemeAttr scheme, int64_t headDim) {
  return scheme.getAxis() == Axis::token ? headDim * scheme.getBits() / 32
                                         : headDim;
}

bool mlir::kvq::isCompatibleShape(ArrayRef<int64_t> expected,
                                  ArrayRef<int64_t> actual) {
  if (expected.size() != actual.size())
    return false;
  for (auto [e, a] : llvm::zip_equal(expected, actual))
    if (!ShapedType::isDynamic(e) && !ShapedType::isDynamic(a) && e != a)
      return false;
  return true;
}

std::string mlir::kvq::formatShape(ArrayRef<int64_t> shape) {
  std::string text;
  llvm::raw_string_ostream os(text);
  llvm::interleave(
      shape, os,
      [&](int64_t extent) {
        if (ShapedType::isDynamic(extent))
          os << '?';
        else
          os << extent;
      },
      "x");
  return text;
}

LogicalResult
mlir::kvq::verifySchemeFitsShape(SchemeAttr scheme, ArrayRef<int64_t> codeShape,
                                 function_ref<InFlightDiagnostic()> emitError) {
  int64_t headDim = codeShape[kChannelDim];
  if (ShapedType::isDynamic(headDim))
    return emitError() << "head_dim (the last dimension) must be static";
  if (headDim <= 0)
    return emitError() << "head_dim must be positive, got " << headDim;
  unsigned bits = scheme.getBits();
  int64_t group = scheme.groupSize(headDim);

  if (scheme.getAxis() == Axis::token) {
    if (headDim % group != 0)
      return emitError() << "group " << group << " does not divide head_dim "
                         << headDim;
    if ((headDim * bits) % 32 != 0)
      return emitError() << "head_dim " << headDim << " with " << bits
                         << "-bit codes does not fill whole 32-bit words";
    return success();
  }

  // axis = channel: groups (and packed words) run along tokens.
  if ((group * bits) % 32 != 0)
    return emitError() << "a channel group of " << group << " tokens with "
                       << bits << "-bit codes does not fill whole 32-bit words";
  int64_t tokens = codeShape[kTokenDim];
  if (!ShapedType::isDynamic(tokens) && tokens % group != 0)
    return emitError() << "axis = channel needs a whole number of " << group
                       << "-token groups, got " << tokens << " tokens";
  return success();
}
