//===- Fuse.cpp - fuse quantize+pack and dequantize+attention -------------===//
//
// Each pattern removes an intermediate tensor that a kernel would otherwise
// write to global memory and read back. Decode attention is memory-bound, so
// a dequantized cache that is never materialized is the whole point of kvq.
//
//===----------------------------------------------------------------------===//

#include "kvq/Dialect/KVQ/IR/KVQOps.h"
#include "kvq/Transforms/Passes.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace mlir::kvq {
#define GEN_PASS_DEF_KVQFUSE
#include "kvq/Transforms/Passes.h.inc"
} // namespace mlir::kvq

using namespace mlir;
using namespace mlir::kvq;

namespace {

//===----------------------------------------------------------------------===//
// quantize + pack -> quantize producing words
//===----------------------------------------------------------------------===//

/// `pack(quantize(x).codes)` becomes a quantize that packs in registers. Only
/// when the pack is the codes' sole user: otherwise the unpacked codes would
/// still be needed and the quantization would run twice.
struct FuseQuantizeIntoPack : OpRewritePattern<PackOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(PackOp pack,
                                PatternRewriter &rewriter) const override {
    if (auto quantize = pack.getCodes().getDefiningOp<QuantizeStaticOp>())
      return fuseStatic(pack, quantize, rewriter);
    auto quantize = pack.getCodes().getDefiningOp<QuantizeOp>();
    if (!quantize)
      return rewriter.notifyMatchFailure(pack,
                                         "codes do not come from kvq.quantize");
    if (quantize.getScheme() != pack.getScheme())
      return rewriter.notifyMatchFailure(pack, "schemes differ");
    if (!quantize.getCodes().hasOneUse())
      return rewriter.notifyMatchFailure(pack,
                                         "unpacked codes have other users");

    SmallVector<Type, 3> resultTypes = {pack.getType(),
                                        quantize.getScales().getType()};
    if (quantize.getZeros())
      resultTypes.push_back(quantize.getZeros().getType());
    auto fused =
        QuantizeOp::create(rewriter, quantize.getLoc(), resultTypes,
                           quantize->getOperands(), quantize->getAttrs());
    rewriter.replaceAllUsesWith(quantize.getScales(), fused.getScales());
    if (quantize.getZeros())
      rewriter.replaceAllUsesWith(quantize.getZeros(), fused.getZeros());
    rewriter.replaceOp(pack, fused.getCodes());
    rewriter.eraseOp(quantize);
    return success();
  }

  /// The same for kvq.quantize_static (codes only: its scales are given).
  static LogicalResult fuseStatic(PackOp pack, QuantizeStaticOp quantize,
                                  PatternRewriter &rewriter) {
    if (quantize.getScheme() != pack.getScheme())
      return rewriter.notifyMatchFailure(pack, "schemes differ");
    if (!quantize.getCodes().hasOneUse())
      return rewriter.notifyMatchFailure(pack,
                                         "unpacked codes have other users");
    auto fused = QuantizeStaticOp::create(
        rewriter, quantize.getLoc(), TypeRange{pack.getType()},
        quantize->getOperands(), quantize->getAttrs());
    rewriter.replaceOp(pack, fused.getCodes());
    rewriter.eraseOp(quantize);
    return success();
  }
};

//===----------------------------------------------------------------------===//
// dequantize(unpack(words)) -> dequantize(words)
//===----------------------------------------------------------------------===//

struct FuseUnpackIntoDequantize : OpRewritePattern<DequantizeOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(DequantizeOp dequantize,
                                PatternRewriter &rewriter) const override {
    auto unpack = dequantize.getCodes().getDefiningOp<UnpackOp>();
    if (!unpack)
      return rewriter.notifyMatchFailure(dequantize,
                                         "codes are not unpacked words");
    if (unpack.getScheme() != dequantize.getScheme())
      return rewriter.notifyMatchFailure(dequantize, "schemes differ");
    rewriter.modifyOpInPlace(dequantize, [&] {
      dequantize.getCodesMutable().assign(unpack.getWords());
    });
    return success();
  }
};

//===----------------------------------------------------------------------===//
// attention(dequantize(K), dequantize(V)) -> quantized_attention
//===----------------------------------------------------------------------===//

/// Returns the dequantize that produces `value` from packed words, if any.
DequantizeOp getPackedDequantize(Value value) {
  auto dequantize = value.getDefiningOp<DequantizeOp>();
  if (!dequantize || !cast<RankedTensorType>(dequantize.getCodes().getType())
                          .getElementType()
                          .isInteger(32))
    return nullptr;
  return dequantize;
}

struct FuseDequantizeIntoAttention : OpRewritePattern<AttentionOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(AttentionOp attention,
                                PatternRewriter &rewriter) const override {
    DequantizeOp keys = getPackedDequantize(attention.getKeys());
    DequantizeOp values = getPackedDequantize(attention.getValues());
    // The fused kernel reads both operands quantized; a mixed pair stays as
    // it is rather than silently materializing one side.
    if (!keys || !values)
      return rewriter.notifyMatchFailure(
          attention, "keys and values are not both dequantized packed words");

    rewriter.replaceOpWithNewOp<QuantizedAttentionOp>(
        attention, attention.getType(), attention.getQuery(), keys.getCodes(),
        keys.getScales(), keys.getZeros(), values.getCodes(),
        values.getScales(), values.getZeros(), attention.getSinkKeys(),
        attention.getSinkValues(), attention.getResidualKeys(),
        attention.getResidualValues(), attention.getLengths(),
        /*block_table=*/Value(), keys.getScheme(), values.getScheme(),
        attention.getSoftmaxScaleAttr(), /*page_tokens=*/IntegerAttr(),
        /*chunked=*/UnitAttr(), /*nhd=*/UnitAttr(),
        attention.getPlanAttr()); // a plan written by hand survives fusion
    return success();
  }
};

//===----------------------------------------------------------------------===//
// Pass
//===----------------------------------------------------------------------===//

struct KVQFusePass : mlir::kvq::impl::KVQFuseBase<KVQFusePass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    populateKVQFusePatterns(patterns);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns)))) {
      getOperation()->emitError("kvq-fuse did not converge");
      signalPassFailure();
    }
  }
};

} // namespace

void mlir::kvq::populateKVQFusePatterns(RewritePatternSet &patterns) {
  patterns.add<FuseQuantizeIntoPack, FuseUnpackIntoDequantize,
               FuseDequantizeIntoAttention>(patterns.getContext());
}
