//===- Plan.cpp - choose each kernel's launch configuration ---------------===//
//
// The plan is data in the IR (a `plan` dictionary per op), not a decision
// hidden in the lowering: users see it with kvq-opt and can override any
// entry by writing it themselves.
//
//===----------------------------------------------------------------------===//

#include "kvq/Conversion/AttentionTiles.h"
#include "kvq/Dialect/KVQ/IR/KVQOps.h"
#include "kvq/Transforms/Passes.h"

#include "mlir/IR/Builders.h"

#include <tuple>

namespace mlir::kvq {
#define GEN_PASS_DEF_KVQPLAN
#include "kvq/Transforms/Passes.h.inc"
} // namespace mlir::kvq

using namespace mlir;
using namespace mlir::kvq;

namespace {

/// Shared memory a block may use without opting in to more (48 KiB), less
/// headroom so two blocks fit an SM of any supported arch.
constexpr int64_t kSharedBudgetBytes = 40 * 1024;

/// SM counts of the flagship part of each arch; the runtime uses the real
/// device's count when it has one.
int64_t smCountFor(int64_t arch) {
  switch (arch) {
  case 75:
    return 68; // RTX 2080 Ti
  case 80:
    return 108; // A100
  case 86:
    return 84; // RTX 3090 / A40
  case 89:
    return 128; // RTX 4090 / L40
  case 90:
    return 132; // H100 SXM
  case 100:
    return 148; // B200
  default:
    return 80;
  }
}

/// Parses "sm_90", "sm_90a" or "compute_90" into 90.
FailureOr<int64_t> parseArch(StringRef arch) {
  StringRef digits = arch;
  if (!digits.consume_front("sm_") && !digits.consume_front("compute_"))
    return failure();
  digits = digits.rtrim("af");
  int64_t value;
  if (digits.getAsInteger(10, value) || value < 75 || value > 121)
    return failure();
  return value;
}

/// Words a thread can load side by side: a token-axis row holds
/// head_dim·bits/32 words, a channel-axis word row head_dim words.
int64_t rowWords(SchemeAttr scheme, int64_t headDim) {
  return scheme.getAxis() == Axis::token ? headDim * scheme.getBits() / 32
                                         : headDim;
}

/// The widest load (in words, up to 128 bits) that divides a packed row, so
/// that every vector access stays aligned.
int64_t widestVector(SchemeAttr scheme, int64_t headDim) {
  int64_t words = rowWords(scheme, headDim);
  for (int64_t width : {4, 2})
    if (words % width == 0)
      return width;
  return 1;
}

/// The widest fp16/bf16 load (in halves, up to 128 bits) that divides a
/// head vector, for the sink, residual and dense tiles.
int64_t widestHalfVector(int64_t headDim) {
  for (int64_t width : {8, 4})
    if (headDim % width == 0)
      return width;
  return 1;
}

/// Builds a plan from defaults, keeping any entry `op` already has.
class PlanBuilder {
public:
  PlanBuilder(Operation *op) : op(op), builder(op->getContext()) {
    if (auto existing = op->getAttrOfType<DictionaryAttr>("plan"))
      for (NamedAttribute entry : existing)
        entries[entry.getName().strref()] = entry.getValue();
  }

  /// The user's value for `key` if present, else `fallback` (recorded).
  int64_t getOrSet(StringRef key, int64_t fallback) {
    if (auto value = dyn_cast_or_null<IntegerAttr>(entries.lookup(key)))
      return value.getInt();
    entries[key] = builder.getI32IntegerAttr(fallback);
    return fallback;
  }

  void set(StringRef key, Attribute value) { entries[key] = value; }

  void commit() {
    SmallVector<NamedAttribute> list;
    for (auto &entry : entries)
      list.push_back(builder.getNamedAttr(entry.getKey(), entry.getValue()));
    op->setAttr("plan", builder.getDictionaryAttr(list));
  }

private:
  Operation *op;
  Builder builder;
  llvm::StringMap<Attribute> entries;
};

LogicalResult checkThreads(Operation *op, int64_t threads) {
  if (threads < 32 || threads > 1024 || threads % 32 != 0)
    return op->emitOpError("plan: threads must be a multiple of 32 in "
                           "[32, 1024], got ")
           << threads;
  return success();
}

struct KVQPlanPass : kvq::impl::KVQPlanBase<KVQPlanPass> {
  using KVQPlanBase::KVQPlanBase;

  void runOnOperation() override {
    FailureOr<int64_t> archNumber = parseArch(arch);
    if (failed(archNumber)) {
      getOperation()->emitError("kvq-plan: arch must be sm_75 .. sm_121, got '")
          << arch << "'";
      return signalPassFailure();
    }
    Builder builder(&getContext());
    WalkResult result = getOperation()->walk([&](Operation *op) {
      if (isa<QuantizeOp, DequantizeOp>(op))
        return planElementwise(op, builder) ? WalkResult::advance()
                                            : WalkResult::interrupt();
      if (auto attention = dyn_cast<QuantizedAttentionOp>(op))
        return planAttention(op, attention.getQuery(), attention.getKeyCodes(),
                             attention.getKeyScheme(),
                             attention.getValueScheme(), builder, *archNumber)
                   ? WalkResult::advance()
                   : WalkResult::interrupt();
      if (auto attention = dyn_cast<AttentionOp>(op))
        return planAttention(op, attention.getQuery(), attention.getKeys(),
                             SchemeAttr(), SchemeAttr(), builder, *archNumber)
                   ? WalkResult::advance()
                   : WalkResult::interrupt();
      return WalkResult::advance();
    });
    if (result.wasInterrupted())
      signalPassFailure();
  }

  bool planElementwise(Operation *op, Builder &builder) {
    PlanBuilder plan(op);
    plan.set("arch", builder.getStringAttr(arch));
    // Quantize: 4 warps, each a row at a time; dequantize: a word a thread.
    int64_t threads = plan.getOrSet("threads", isa<QuantizeOp>(op) ? 128 : 256);
    // Token-axis quantize: each lane reads the halves of whole words, so
    // up to a word's codes (and at most 8, 128 bits) per load.
    auto quantize = dyn_cast<QuantizeOp>(op);
    int64_t halfVector = 1, codesPerWord = 1, headDim = 0;
    if (quantize && quantize.getScheme().getAxis() == Axis::token) {
      codesPerWord = quantize.getScheme().codesPerWord();
      headDim = cast<RankedTensorType>(quantize.getInput().getType())
                    .getShape()
                    .back();
      halfVector = plan.getOrSet("half_vector",
                                 std::min(widestHalfVector(headDim),
                                          std::min<int64_t>(8, codesPerWord)));
    }
    plan.commit();
    if (halfVector != 1 &&
        ((halfVector != 4 && halfVector != 8) || headDim % halfVector ||
         codesPerWord % halfVector)) {
      op->emitOpError(
          "plan: half_vector must be 1, 4 or 8 and divide head_dim (")
          << headDim << ") and the codes of a word (" << codesPerWord
          << "), got " << halfVector;
      return false;
    }
    return succeeded(checkThreads(op, threads));
  }

  /// Plans quantized attention, or (null schemes) the fp16 baseline, which
  /// has no packed words and so no vector widths.
  bool planAttention(Operation *op, Value query, Value keys,
                     SchemeAttr keyScheme, SchemeAttr valueScheme,
                     Builder &builder, int64_t archNumber) {
    auto queryType = cast<RankedTensorType>(query.getType());
    auto keyType = cast<RankedTensorType>(keys.getType());
    int64_t headDim = queryType.getShape()[2];
    int64_t queryHeads = queryType.getShape()[1];
    int64_t kvHeads = keyType.getShape()[1];
    if (ShapedType::isDynamic(queryHeads) || ShapedType::isDynamic(kvHeads)) {
      op->emitOpError("needs static query and kv head counts to plan");
      return false;
    }
    int64_t gqa = queryHeads / kvHeads;
    bool dense = !keyScheme;
    PlanBuilder plan(op);
    plan.set("arch", builder.getStringAttr(arch));
    int64_t threads =
        plan.getOrSet("threads", gqa * headDim <= 512 ? 128 : 256);
    // The largest tile that fits the budget; at least 16 tokens so a tile
    // holds whole packed words of any channel-axis scheme.
    int64_t defaultTile = 16;
    for (int64_t tile : {64, 32})
      if (attentionSharedBytes(headDim, gqa, tile) <= kSharedBudgetBytes) {
        defaultTile = tile;
        break;
      }
    int64_t tile = plan.getOrSet("tile_tokens", defaultTile);
    int64_t minSplit = plan.getOrSet("min_tokens_per_split", 4 * tile);
    plan.getOrSet("sm_count", smCountFor(archNumber));
    int64_t keyVector = dense ? 1
                              : plan.getOrSet("key_vector_words",
                                              widestVector(keyScheme, headDim));
    int64_t valueVector =
        dense ? 1
              : plan.getOrSet("value_vector_words",
                              widestVector(valueScheme, headDim));
    int64_t halfVector =
        plan.getOrSet("half_vector", widestHalfVector(headDim));
    // Scores for two tokens per thread share each q load; past head_dim 128
    // the unrolled pair needs more registers than ptxas keeps (spills at
    // head_dim 256, GQA 8 on sm_90).
    int64_t scoresPerThread = plan.getOrSet(
        "scores_per_thread", headDim % 4 == 0 && headDim <= 128 ? 2 : 1);
    int64_t shared = attentionSharedBytes(headDim, gqa, tile);
    plan.set("shared_bytes", builder.getI32IntegerAttr(shared));
    plan.commit();

    if (failed(checkThreads(op, threads)))
      return false;
    for (auto [what, scheme, width] :
         {std::tuple{"key", keyScheme, keyVector},
          std::tuple{"value", valueScheme, valueVector}}) {
      if (!scheme)
        continue;
      if (width != 1 && width != 2 && width != 4) {
        op->emitOpError("plan: ")
            << what << "_vector_words must be 1, 2 or 4, got " << width;
        return false;
      }
      if (rowWords(scheme, headDim) % width != 0) {
        op->emitOpError("plan: ")
            << what << "_vector_words " << width << " does not divide the "
            << rowWords(scheme, headDim) << " words of a packed row";
        return false;
      }
    }
    if ((halfVector != 1 && halfVector != 4 && halfVector != 8) ||
        headDim % halfVector != 0) {
      op->emitOpError("plan: half_vector must be 1, 4 or 8 and divide "
                      "head_dim (")
          << headDim << "), got " << halfVector;
      return false;
    }
    if (scoresPerThread != 1 && (scoresPerThread != 2 || headDim % 4 != 0)) {
      op->emitOpError("plan: scores_per_thread must be 1, or 2 when head_dim "
                      "is a multiple of 4, got ")
          << scoresPerThread;
      return false;
    }
    if (tile < 16 || tile % 16 != 0) {
      op->emitOpError(
          "plan: tile_tokens must be a positive multiple of 16, got ")
          << tile;
      return false;
    }
    if (minSplit < tile || minSplit % tile != 0) {
      op->emitOpError("plan: min_tokens_per_split must be a multiple of "
                      "tile_tokens (")
          << tile << "), got " << minSplit;
      return false;
    }
    if (shared > 48 * 1024) {
      op->emitOpError("plan: tile_tokens ")
          << tile << " needs " << shared
          << " bytes of shared memory, more than the 49152 a block gets";
      return false;
    }
    return true;
  }
};

} // namespace
