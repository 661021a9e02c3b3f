//===- KVQOps.cpp - kvq operation verifiers and folders -------------------===//

#include "kvq/Dialect/KVQ/IR/KVQOps.h"
#include "kvq/Dialect/KVQ/IR/KVQLayout.h"
#include "kvq/Dialect/KVQ/IR/SchemeRules.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>
#include <tuple>

using namespace mlir;
using namespace mlir::kvq;

#define GET_OP_CLASSES
#include "kvq/Dialect/KVQ/IR/KVQOps.cpp.inc"

//===----------------------------------------------------------------------===//
// Shared verification helpers
//===----------------------------------------------------------------------===//

namespace {
ArrayRef<int64_t> shapeOf(Value value) {
  return cast<RankedTensorType>(value.getType()).getShape();
}

Type elementTypeOf(Value value) {
  return cast<RankedTensorType>(value.getType()).getElementType();
}

/// The shape of the codes that `codes` holds: its own shape for i8 codes,
/// the unpacked shape for i32 words.
SmallVector<int64_t, 4> codeShapeOf(SchemeAttr scheme, Value codes) {
  ArrayRef<int64_t> shape = shapeOf(codes);
  if (elementTypeOf(codes).isInteger(32))
    return unpackedShape(scheme, shape);
  return SmallVector<int64_t, 4>(shape);
}

/// Checks codes, scales and zero points of one quantized tensor whose
/// unpacked shape is `codeShape`. `what` prefixes messages ("key ", ...).
LogicalResult verifyQuantizedTensor(Operation *op, StringRef what,
                                    SchemeAttr scheme,
                                    ArrayRef<int64_t> codeShape, Value codes,
                                    Value scales, Value zeros) {
  auto emitError = [&]() { return op->emitOpError() << what; };
  if (failed(verifySchemeFitsShape(scheme, codeShape, emitError)))
    return failure();

  bool packed = elementTypeOf(codes).isInteger(32);
  SmallVector<int64_t, 4> expectedCodes =
      packed ? packedShape(scheme, codeShape)
             : SmallVector<int64_t, 4>(codeShape);
  if (!isCompatibleShape(expectedCodes, shapeOf(codes)))
    return emitError() << (packed ? "packed words" : "codes") << " have shape "
                       << formatShape(shapeOf(codes)) << ", expected "
                       << formatShape(expectedCodes) << " for "
                       << scheme.getBits() << "-bit codes of shape "
                       << formatShape(codeShape);

  SmallVector<int64_t, 4> expectedScales = scalesShape(scheme, codeShape);
  for (auto [name, value] :
       {std::pair<StringRef, Value>{"scales", scales},
        std::pair<StringRef, Value>{"zero points", zeros}}) {
    if (!value)
      continue;
    if (!isCompatibleShape(expectedScales, shapeOf(value)))
      return emitError() << name << " have shape "
                         << formatShape(shapeOf(value)) << ", expected "
                         << formatShape(expectedScales);
    if (elementTypeOf(value) != scheme.getScaleType())
      return emitError() << name << " element type " << elementTypeOf(value)
                         << " does not match the scheme's scale type "
                         << scheme.getScaleType();
  }
  if (scheme.hasZeroPoints() && !zeros)
    return emitError() << "asymmetric scheme needs zero points";
  if (!scheme.hasZeroPoints() && zeros)
    return emitError() << "symmetric scheme takes no zero points";
  return success();
}

/// One K/V segment of an attention op, with the name used in diagnostics.
struct KVSegment {
  StringRef name;
  ArrayRef<int64_t> keyShape;
  ArrayRef<int64_t> valueShape;
  Type elementType; // null when the segment is quantized
  /// Its first dimension is not the query's batch: a paged pool's counts
  /// pages, and a chunked op's sink and residual count sequences (the
  /// query counts query rows).
  bool pooled = false;
};

/// Checks what every decode attention op shares: query/output/segment shapes
/// and element types, the GQA head ratio, lengths and the softmax scale.
LogicalResult verifyAttention(Operation *op, Value query, Value output,
                              ArrayRef<KVSegment> segments, Value lengths,
                              float softmaxScale) {
  ArrayRef<int64_t> q = shapeOf(query);
  Type halfType = elementTypeOf(query);
  if (query.getType() != output.getType())
    return op->emitOpError()
           << "output type " << output.getType()
           << " must match the query type " << query.getType();
  int64_t batch = q[0], queryHeads = q[1], headDim = q[2];
  if (ShapedType::isDynamic(headDim))
    return op->emitOpError()
           << "head_dim (the last query dimension) must be static";

  int64_t kvHeads = segments.front().keyShape[kHeadDim];
  for (const KVSegment &segment : segments) {
    for (ArrayRef<int64_t> shape : {segment.keyShape, segment.valueShape}) {
      SmallVector<int64_t, 4> expected = {segment.pooled ? ShapedType::kDynamic
                                                         : batch,
                                          kvHeads, shape[kTokenDim], headDim};
      if (!isCompatibleShape(expected, shape))
        return op->emitOpError()
               << segment.name << " have shape " << formatShape(shape)
               << ", expected " << formatShape(expected)
               << " (batch and head_dim of the query, kv heads of the keys)";
    }
    if (!isCompatibleShape(segment.keyShape, segment.valueShape))
      return op->emitOpError()
             << segment.name << " keys (" << formatShape(segment.keyShape)
             << ") and values (" << formatShape(segment.valueShape)
             << ") must have the same shape";
    if (segment.elementType && segment.elementType != halfType)
      return op->emitOpError()
             << segment.name << " element type " << segment.elementType
             << " does not match the query element type " << halfType;
  }

  if (!ShapedType::isDynamic(kvHeads) && kvHeads <= 0)
    return op->emitOpError() << "kv heads must be positive, got " << kvHeads;
  if (!ShapedType::isDynamic(queryHeads) && !ShapedType::isDynamic(kvHeads) &&
      queryHeads % kvHeads != 0)
    return op->emitOpError()
           << "query heads (" << queryHeads
           << ") must be a multiple of kv heads (" << kvHeads << ")";

  SmallVector<int64_t, 2> expectedLengths = {batch, 3};
  if (!isCompatibleShape(expectedLengths, shapeOf(lengths)))
    return op->emitOpError()
           << "lengths have shape " << formatShape(shapeOf(lengths))
           << ", expected " << formatShape(expectedLengths)
           << " (sink, body and residual token counts per sequence)";

  if (!(softmaxScale > 0.0f) || !std::isfinite(softmaxScale))
    return op->emitOpError()
           << "softmax scale must be positive and finite, got " << softmaxScale;
  return success();
}

/// Appends the optional fp16 sink and residual segments of an attention op.
/// A segment needs both its keys and its values; only the generic syntax can
/// spell half of one.
template <typename AttentionOp>
LogicalResult appendOptionalSegments(AttentionOp op,
                                     SmallVectorImpl<KVSegment> &out) {
  if (static_cast<bool>(op.getSinkKeys()) !=
          static_cast<bool>(op.getSinkValues()) ||
      static_cast<bool>(op.getResidualKeys()) !=
          static_cast<bool>(op.getResidualValues()))
    return op.emitOpError()
           << "sink and residual segments need both keys and values";
  if (op.getSinkKeys())
    out.push_back({"sink", shapeOf(op.getSinkKeys()),
                   shapeOf(op.getSinkValues()),
                   elementTypeOf(op.getSinkKeys())});
  if (op.getResidualKeys())
    out.push_back({"residual", shapeOf(op.getResidualKeys()),
                   shapeOf(op.getResidualValues()),
                   elementTypeOf(op.getResidualKeys())});
  return success();
}

//===----------------------------------------------------------------------===//
// Launch plans: the rules that depend on the op (PlanAttr::verify has the
// others)
//===----------------------------------------------------------------------===//

/// fp16 loads of `halfVector` halves must tile a head vector.
LogicalResult verifyHalfVector(Operation *op, PlanAttr plan, int64_t headDim) {
  int64_t width = plan.getHalfVector();
  if (width > 1 && !ShapedType::isDynamic(headDim) && headDim % width != 0)
    return op->emitOpError("plan: halfVector ")
           << width << " does not divide head_dim (" << headDim << ")";
  return success();
}

LogicalResult verifyQuantizePlan(Operation *op, SchemeAttr scheme, Value input,
                                 PlanAttr plan) {
  if (failed(verifyHalfVector(op, plan, shapeOf(input).back())))
    return failure();
  // Token axis: a lane loads halves of whole words, so a load never holds
  // more than one word's codes.
  int64_t width = plan.getHalfVector();
  if (width > 1 &&
      (scheme.getAxis() != Axis::token || scheme.codesPerWord() % width != 0))
    return op->emitOpError("plan: halfVector ")
           << width << " needs a token-axis scheme whose words hold a "
           << "multiple of it, but a word holds " << scheme.codesPerWord()
           << " codes along the " << stringifyAxis(scheme.getAxis()) << " axis";
  return success();
}

/// Attention: vector loads tile the rows they read, and paired scores
/// split head_dim into halves of whole half2 pairs.
LogicalResult verifyAttentionPlan(Operation *op, PlanAttr plan, Value query,
                                  SchemeAttr keyScheme,
                                  SchemeAttr valueScheme) {
  int64_t headDim = shapeOf(query)[2];
  if (failed(verifyHalfVector(op, plan, headDim)))
    return failure();
  if (ShapedType::isDynamic(headDim))
    return success();
  for (auto [what, scheme, width] :
       {std::tuple{"keyVectorWords", keyScheme, plan.getKeyVectorWords()},
        std::tuple{"valueVectorWords", valueScheme,
                   plan.getValueVectorWords()}}) {
    if (!scheme || width <= 1)
      continue;
    int64_t words = packedRowWords(scheme, headDim);
    if (words % width != 0)
      return op->emitOpError("plan: ")
             << what << " " << width << " does not divide the " << words
             << " words of a packed row";
  }
  if (plan.getScoresPerThread() == 2 && headDim % 4 != 0)
    return op->emitOpError("plan: scoresPerThread 2 needs head_dim a "
                           "multiple of 4, got ")
           << headDim;
  return success();
}
} // namespace

//===----------------------------------------------------------------------===//
// QuantizeOp
//===----------------------------------------------------------------------===//

LogicalResult QuantizeOp::verify() {
  if (failed(verifyQuantizedTensor(*this, "", getScheme(), shapeOf(getInput()),
                                   getCodes(), getScales(), getZeros())))
    return failure();
  if (cast<ShapedType>(getInput().getType()).getElementType().isBF16() &&
      !getScheme().getScaleType().isF32())
    return emitOpError() << ::kvq::scheme_rules::kBf16ScalesRule
                         << " (write the scheme with scale = f32)";
  if (getZeroPoints() == ZeroPointSearch::hqq && getScheme().isSymmetric())
    return emitOpError() << ::kvq::scheme_rules::kHqqRule;
  if (getScheme().isStatic())
    return emitOpError() << "a static scheme's scales are given, not "
                            "computed: use kvq.quantize_static";
  PlanAttr plan = getPlanAttr();
  return plan ? verifyQuantizePlan(*this, getScheme(), getInput(), plan)
              : success();
}

//===----------------------------------------------------------------------===//
// QuantizeStaticOp
//===----------------------------------------------------------------------===//

LogicalResult QuantizeStaticOp::verify() {
  if (!getScheme().isStatic())
    return emitOpError() << "scheme computes its scales per group: use "
                            "kvq.quantize (static schemes say static = "
                            "tensor or head)";
  if (failed(verifyQuantizedTensor(*this, "", getScheme(), shapeOf(getInput()),
                                   getCodes(), getScales(), getZeros())))
    return failure();
  PlanAttr plan = getPlanAttr();
  return plan ? verifyQuantizePlan(*this, getScheme(), getInput(), plan)
              : success();
}

//===----------------------------------------------------------------------===//
// PackOp / UnpackOp
//===----------------------------------------------------------------------===//

namespace {
/// Checks that `words` is the packed form of `codes` under `scheme`.
LogicalResult verifyPacking(Operation *op, SchemeAttr scheme, Value codes,
                            Value words) {
  ArrayRef<int64_t> codeShape = shapeOf(codes);
  if (failed(verifySchemeFitsShape(scheme, codeShape,
                                   [&]() { return op->emitOpError(); })))
    return failure();
  SmallVector<int64_t, 4> expected = packedShape(scheme, codeShape);
  if (!isCompatibleShape(expected, shapeOf(words)))
    return op->emitOpError()
           << "packed words have shape " << formatShape(shapeOf(words))
           << ", expected " << formatShape(expected) << " for "
           << scheme.getBits() << "-bit codes of shape "
           << formatShape(codeShape);
  return success();
}

/// `op(inverse(x))` is `x` when both use the same scheme and `x` has the
/// op's result type: pack and unpack undo each other (packing is lossless
/// for codes in range).
template <typename InverseOp, typename Source>
OpFoldResult foldInverse(Value input, SchemeAttr scheme, Type type,
                         Source source) {
  auto inverse = input.getDefiningOp<InverseOp>();
  if (inverse && inverse.getScheme() == scheme &&
      source(inverse).getType() == type)
    return source(inverse);
  return {};
}
} // namespace

LogicalResult PackOp::verify() {
  return verifyPacking(*this, getScheme(), getCodes(), getWords());
}

OpFoldResult PackOp::fold(FoldAdaptor) {
  return foldInverse<UnpackOp>(
      getCodes(), getScheme(), getType(),
      [](UnpackOp unpack) { return unpack.getWords(); });
}

LogicalResult UnpackOp::verify() {
  return verifyPacking(*this, getScheme(), getCodes(), getWords());
}

OpFoldResult UnpackOp::fold(FoldAdaptor) {
  return foldInverse<PackOp>(getWords(), getScheme(), getType(),
                             [](PackOp pack) { return pack.getCodes(); });
}

//===----------------------------------------------------------------------===//
// DequantizeOp
//===----------------------------------------------------------------------===//

LogicalResult DequantizeOp::verify() {
  SmallVector<int64_t, 4> codeShape = codeShapeOf(getScheme(), getCodes());
  if (!isCompatibleShape(codeShape, shapeOf(getOutput())))
    return emitOpError() << "output has shape "
                         << formatShape(shapeOf(getOutput()))
                         << ", but the codes hold " << formatShape(codeShape);
  return verifyQuantizedTensor(*this, "", getScheme(), shapeOf(getOutput()),
                               getCodes(), getScales(), getZeros());
}

//===----------------------------------------------------------------------===//
// AttentionOp / QuantizedAttentionOp
//===----------------------------------------------------------------------===//

namespace {
/// What both attention ops check once their body segment is known: the
/// optional sink and residual segments, the shapes, and the plan.
template <typename AttentionOpT>
LogicalResult verifyAttentionOp(AttentionOpT op, KVSegment body,
                                SchemeAttr keyScheme, SchemeAttr valueScheme,
                                bool chunked = false) {
  SmallVector<KVSegment, 3> segments = {body};
  if (failed(appendOptionalSegments(op, segments)))
    return failure();
  if (chunked)
    for (KVSegment &segment : segments)
      segment.pooled = true;
  if (failed(verifyAttention(op, op.getQuery(), op.getOutput(), segments,
                             op.getLengths(),
                             op.getSoftmaxScale().convertToFloat())))
    return failure();
  PlanAttr plan = op.getPlanAttr();
  if (!plan)
    return success();
  // Several query rows a block: more columns of the tensor cores' MMAs,
  // which only chunked rows (a sequence's consecutive query tokens) have.
  if (plan.getQueryRows() > 1 &&
      (!chunked || plan.getAttentionPath() == ::kvq::kCudaCores))
    return op->emitOpError("plan: queryRows ")
           << plan.getQueryRows()
           << " needs chunked query rows on the tensor cores (attentionPath "
           << ::kvq::kTensorCores << ")";
  return verifyAttentionPlan(op, plan, op.getQuery(), keyScheme, valueScheme);
}
} // namespace

LogicalResult AttentionOp::verify() {
  return verifyAttentionOp(*this,
                           {"keys/values", shapeOf(getKeys()),
                            shapeOf(getValues()), elementTypeOf(getKeys())},
                           SchemeAttr(), SchemeAttr());
}

LogicalResult QuantizedAttentionOp::verify() {
  SmallVector<int64_t, 4> keyShape = codeShapeOf(getKeyScheme(), getKeyCodes());
  SmallVector<int64_t, 4> valueShape =
      codeShapeOf(getValueScheme(), getValueCodes());
  if (failed(verifyQuantizedTensor(*this, "key ", getKeyScheme(), keyShape,
                                   getKeyCodes(), getKeyScales(),
                                   getKeyZeros())) ||
      failed(verifyQuantizedTensor(*this, "value ", getValueScheme(),
                                   valueShape, getValueCodes(),
                                   getValueScales(), getValueZeros())))
    return failure();
  bool paged = static_cast<bool>(getBlockTable());
  if (paged != getPageTokens().has_value())
    return emitOpError("a paged body needs both a block table and its page "
                       "tokens");
  if (paged) {
    int64_t pageTokens = *getPageTokens();
    if (pageTokens < 16 || pageTokens % 16 != 0)
      return emitOpError("page tokens must be a positive multiple of 16, got ")
             << pageTokens;
    for (auto [what, scheme, shape] :
         {std::tuple{"key", getKeyScheme(), ArrayRef<int64_t>(keyShape)},
          std::tuple{"value", getValueScheme(),
                     ArrayRef<int64_t>(valueShape)}}) {
      int64_t headDim = shape[kChannelDim];
      if (scheme.getAxis() == Axis::channel &&
          !ShapedType::isDynamic(headDim) &&
          pageTokens % scheme.groupSize(headDim) != 0)
        return emitOpError()
               << "page tokens (" << pageTokens
               << ") must be a multiple of the " << what << " channel group ("
               << scheme.groupSize(headDim) << ")";
      if (!ShapedType::isDynamic(shape[kTokenDim]) &&
          shape[kTokenDim] != pageTokens)
        return emitOpError() << what << " pool pages hold " << shape[kTokenDim]
                             << " tokens, expected " << pageTokens;
    }
    // Chunked: a block table row per sequence, not per query row.
    int64_t batch =
        getChunked() ? ShapedType::kDynamic : shapeOf(getQuery())[0];
    SmallVector<int64_t, 2> expected = {batch, ShapedType::kDynamic};
    if (!isCompatibleShape(expected, shapeOf(getBlockTable())))
      return emitOpError() << "block table has shape "
                           << formatShape(shapeOf(getBlockTable()))
                           << ", expected " << formatShape(expected)
                           << " (pages of each sequence)";
  }
  if (PlanAttr plan = getPlanAttr(); plan && paged && plan.getTileTokens() &&
                                     *getPageTokens() % plan.getTileTokens())
    return emitOpError("plan: tileTokens ")
           << plan.getTileTokens() << " does not divide the page tokens ("
           << *getPageTokens() << "): a tile must not cross a page";
  if (getChunked() && !paged)
    return emitOpError("chunked query rows read a paged body: add "
                       "pages(%block_table, N)");
  if (getNhd() &&
      (!paged || !getKeyScheme().isStatic() || !getValueScheme().isStatic()))
    return emitOpError(::kvq::scheme_rules::kNhdRule);
  KVSegment body = {"quantized keys/values", keyShape, valueShape, Type()};
  body.pooled = paged;
  return verifyAttentionOp(*this, body, getKeyScheme(), getValueScheme(),
                           getChunked());
}

//===----------------------------------------------------------------------===//
// Launch plans of the ops that have one
//===----------------------------------------------------------------------===//

//===----------------------------------------------------------------------===//
// CacheAppendOp
//===----------------------------------------------------------------------===//

LogicalResult CacheAppendOp::verify() {
  if (getKeys().getType() != getValues().getType())
    return emitOpError("keys and values must have one type, got ")
           << getKeys().getType() << " and " << getValues().getType();
  ArrayRef<int64_t> shape = shapeOf(getKeys());
  if (!ShapedType::isDynamic(shape[2]) && shape[2] != 1)
    return emitOpError("appends one token per sequence, but the new tokens "
                       "have ")
           << shape[2] << " per sequence";
  if (ShapedType::isDynamic(shape[3]))
    return emitOpError("head_dim must be static");
  ArrayRef<int64_t> lengths = shapeOf(getLengths());
  if (!ShapedType::isDynamic(lengths[1]) && lengths[1] != 3)
    return emitOpError("lengths must be [batch, 3] (sink, quantized, "
                       "residual), got ")
           << formatShape(lengths);
  if (!isCompatibleShape({shape[0]}, {lengths[0]}) ||
      !isCompatibleShape({shape[0]}, {shapeOf(getBlockTable())[0]}))
    return emitOpError("keys, lengths and block_table must have one batch "
                       "size, got ")
           << formatShape(shape) << ", " << formatShape(lengths) << " and "
           << formatShape(shapeOf(getBlockTable()));
  // The schemes quantize whole groups of the residual's tokens.
  SmallVector<int64_t, 4> stored = {ShapedType::kDynamic, shape[1],
                                    ShapedType::kDynamic, shape[3]};
  for (auto [what, scheme] : {std::pair{"key ", getKeyScheme()},
                              std::pair{"value ", getValueScheme()}}) {
    auto emitError = [&, what = what]() { return emitOpError() << what; };
    if (failed(verifySchemeFitsShape(scheme, stored, emitError)))
      return failure();
    if (elementTypeOf(getKeys()).isBF16() && !scheme.getScaleType().isF32())
      return emitOpError() << what << ::kvq::scheme_rules::kBf16ScalesRule
                           << " (write the scheme with scale = f32)";
  }
  return success();
}

PlanAttr mlir::kvq::getLaunchPlan(Operation *op) {
  return llvm::TypeSwitch<Operation *, PlanAttr>(op)
      .Case<QuantizeOp, QuantizeStaticOp, DequantizeOp, AttentionOp,
            QuantizedAttentionOp, CacheAppendOp>(
          [](auto planned) { return planned.getPlanAttr(); })
      .Default([](Operation *) { return PlanAttr(); });
}

void mlir::kvq::setLaunchPlan(Operation *op, PlanAttr plan) {
  llvm::TypeSwitch<Operation *>(op)
      .Case<QuantizeOp, QuantizeStaticOp, DequantizeOp, AttentionOp,
            QuantizedAttentionOp, CacheAppendOp>(
          [&](auto planned) { planned.setPlanAttr(plan); })
      .Default([](Operation *) {
        llvm_unreachable("setLaunchPlan on an op without a plan");
      });
}

LogicalResult DequantizePairOp::verify() {
  if (getZeros() && !getScales())
    return emitOpError("zero points need scales");
  return success();
}

//===----------------------------------------------------------------------===//
// Fp8FromFloatOp
//===----------------------------------------------------------------------===//

LogicalResult Fp8FromFloatOp::verify() {
  if (getFormat() == CodeFormat::integer)
    return emitOpError() << "format must be e4m3 or e5m2, got 'integer'";
  return success();
}

LogicalResult Fp8ToFloatOp::verify() {
  if (getFormat() == CodeFormat::integer)
    return emitOpError() << "format must be e4m3 or e5m2, got 'integer'";
  return success();
}
