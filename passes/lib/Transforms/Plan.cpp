//===- Plan.cpp - choose each kernel's launch configuration ---------------===//
//
// The plan is data in the IR (a `#kvq.plan` attribute per op), not a decision
// hidden in the lowering: users see it with kvq-opt and can override any
// entry by writing it themselves.
//
//===----------------------------------------------------------------------===//

#include "kvq/Conversion/AttentionTiles.h"
#include "kvq/Dialect/KVQ/IR/KVQLayout.h"
#include "kvq/Dialect/KVQ/IR/KVQOps.h"
#include "kvq/Transforms/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/Verifier.h"

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

/// The widest load (in words, up to 128 bits) that divides a packed row, so
/// that every vector access stays aligned.
int64_t widestVector(SchemeAttr scheme, int64_t headDim) {
  int64_t words = packedRowWords(scheme, headDim);
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

/// `field` keeps the value a user wrote; an unset (0) field gets `fallback`.
int64_t fill(int64_t &field, int64_t fallback) {
  if (field == 0)
    field = fallback;
  return field;
}

/// The op's plan so far (a user's override, or nothing), as plain fields.
::kvq::LaunchPlan existingPlan(Operation *op) {
  if (PlanAttr plan = getLaunchPlan(op))
    return plan.toLaunchPlan();
  return {};
}

/// Attaches `plan` to `op` and checks it: the attribute's own rules (through
/// getChecked) and the op's (its verifier).
bool commit(Operation *op, const ::kvq::LaunchPlan &plan) {
  auto attr = PlanAttr::getChecked(
      [&] { return op->emitOpError(); }, op->getContext(), StringRef(plan.arch),
      plan.threads, plan.halfVector, plan.tileTokens, plan.minTokensPerSplit,
      plan.smCount, plan.keyVectorWords, plan.valueVectorWords,
      plan.scoresPerThread, plan.sharedBytes, plan.attentionPath,
      plan.queryRows);
  if (!attr)
    return false;
  setLaunchPlan(op, attr);
  return succeeded(verify(op, /*verifyRecursively=*/false));
}

struct KVQPlanPass : mlir::kvq::impl::KVQPlanBase<KVQPlanPass> {
  using KVQPlanBase::KVQPlanBase;

  void runOnOperation() override {
    int64_t archNumber = ::kvq::archNumber(arch);
    if (!archNumber) {
      getOperation()->emitError("kvq-plan: ")
          << ::kvq::kArchRule << ", got '" << arch << "'";
      return signalPassFailure();
    }
    WalkResult result = getOperation()->walk([&](Operation *op) {
      bool planned = true;
      if (isa<QuantizeOp, QuantizeStaticOp, DequantizeOp>(op))
        planned = planElementwise(op);
      else if (isa<CacheAppendOp>(op))
        planned = planCacheAppend(op);
      else if (auto attention = dyn_cast<QuantizedAttentionOp>(op))
        planned = planAttention(
            op, attention.getQuery(), attention.getKeyCodes(),
            attention.getKeyScheme(), attention.getValueScheme(), archNumber,
            attention.getPageTokens().value_or(0), attention.getChunked());
      else if (auto attention = dyn_cast<AttentionOp>(op))
        planned = planAttention(op, attention.getQuery(), attention.getKeys(),
                                SchemeAttr(), SchemeAttr(), archNumber,
                                /*pageTokens=*/0, /*chunked=*/false);
      return planned ? WalkResult::advance() : WalkResult::interrupt();
    });
    if (result.wasInterrupted())
      signalPassFailure();
  }

  bool planElementwise(Operation *op) {
    ::kvq::LaunchPlan plan = existingPlan(op);
    plan.arch = arch;
    // Quantize: 4 warps, each a row at a time; dequantize: a word a thread.
    bool quantizes = isa<QuantizeOp, QuantizeStaticOp>(op);
    fill(plan.threads, quantizes ? 128 : 256);
    // Token-axis quantize: each lane reads the halves of whole words, so
    // up to a word's codes (and at most 8, 128 bits) per load.
    auto scheme = op->getAttrOfType<SchemeAttr>("scheme");
    if (quantizes && scheme.getAxis() == Axis::token) {
      int64_t headDim =
          cast<RankedTensorType>(op->getOperand(0).getType()).getShape().back();
      fill(plan.halfVector,
           std::min<int64_t>(widestHalfVector(headDim),
                             std::min<int64_t>(8, scheme.codesPerWord())));
    }
    return commit(op, plan);
  }

  /// The cache step: a block per sequence, 4 warps over its kv heads'
  /// rows (the new token's copy, a flush's quantize and the shift).
  bool planCacheAppend(Operation *op) {
    ::kvq::LaunchPlan plan = existingPlan(op);
    plan.arch = arch;
    fill(plan.threads, 128);
    return commit(op, plan);
  }

  /// Commits an attention plan whose block needs `shared` bytes of shared
  /// memory, or fails naming what needs them (`what`) if a block cannot
  /// have that many.
  static bool commitWithShared(Operation *op, ::kvq::LaunchPlan &plan,
                               int64_t shared, const std::string &what) {
    if (shared > ::kvq::kMaxStaticSharedBytes) {
      op->emitOpError("plan: ")
          << what << " " << shared << " bytes of shared memory, more than the "
          << ::kvq::kMaxStaticSharedBytes << " a block gets";
      return false;
    }
    plan.sharedBytes = shared;
    return commit(op, plan);
  }

  /// What both attention bodies plan alike: splits of at least 4 tiles,
  /// the arch's SM count, the widest aligned loads of packed words and of
  /// fp16 tokens.
  static void fillSplitsAndLoads(::kvq::LaunchPlan &plan, int64_t tile,
                                 int64_t archNumber, int64_t headDim,
                                 SchemeAttr keyScheme, SchemeAttr valueScheme) {
    fill(plan.minTokensPerSplit, 4 * tile);
    fill(plan.smCount, smCountFor(archNumber));
    if (keyScheme) {
      fill(plan.keyVectorWords, widestVector(keyScheme, headDim));
      fill(plan.valueVectorWords, widestVector(valueScheme, headDim));
    }
    fill(plan.halfVector, widestHalfVector(headDim));
  }

  /// Why the tensor-core body cannot run this attention, or nothing when it
  /// can (TensorCoreAttention.cpp: each lane reads values in channel runs of
  /// d/8, which must be whole packed words or lie inside one, and whole
  /// scale groups or lie inside one).
  static std::optional<std::string>
  tensorCoreObstacle(int64_t archNumber, Type half, int64_t headDim,
                     int64_t gqa, SchemeAttr keyScheme,
                     SchemeAttr valueScheme) {
    if (half.isBF16() && archNumber < 80)
      return std::string("bf16 mma needs sm_80");
    // The tensor-core body dequantizes integer codes per group into fp16
    // fragments; static scales and FP8 bytes have no fragments there yet.
    for (SchemeAttr scheme : {keyScheme, valueScheme})
      if (scheme && (scheme.isStatic() || scheme.isFp8()))
        return std::string("static scales and FP8 are read on the CUDA cores "
                           "only, so far");
    if (headDim % 32 != 0)
      return "head_dim " + std::to_string(headDim) + " is not a multiple of 32";
    // Accumulators: head_dim/4 fp32 per column tile of 8 heads.
    int64_t headTiles = (gqa + 7) / 8;
    if (headTiles * headDim > 256)
      return "gqa " + std::to_string(gqa) + " x head_dim " +
             std::to_string(headDim) + " needs too many accumulators";
    auto fits = [&](SchemeAttr scheme, int64_t run,
                    const char *what) -> std::optional<std::string> {
      if (!scheme || scheme.getAxis() == Axis::channel)
        return std::nullopt;
      int64_t perWord = scheme.codesPerWord();
      int64_t group = scheme.groupSize(headDim);
      if (run % perWord != 0 && perWord % run != 0)
        return std::string(what) + " runs of " + std::to_string(run) +
               " channels split packed words of " + std::to_string(perWord);
      if (run % group != 0 && group % run != 0)
        return std::string(what) + " runs of " + std::to_string(run) +
               " channels split groups of " + std::to_string(group);
      return std::nullopt;
    };
    // Keys are read 4 channels at a time (a k-step's), which every packing
    // allows; values in runs of head_dim/8 channels.
    return fits(valueScheme, headDim / 8, "value");
  }

  /// Why the plan keeps an attention the tensor cores could run on the CUDA
  /// cores unless asked (a user may still force it), or nothing.
  static std::optional<std::string>
  tensorCoreDrawback(Type half, int64_t headDim, int64_t gqa) {
    // bf16 fragments keep 8 mantissa bits, so P and V enter P.V with their
    // rounding errors (extra MMAs and registers: spills at head_dim 128 on
    // sm_80, CompileMatrixTest), and no GPU has timed it yet.
    if (half.isBF16())
      return std::string("bf16 needs error fragments for P and V (more "
                         "registers), not yet timed on a GPU");
    // Past 128 channels per column tile of 8 heads the fragments need more
    // registers than the budget without spills (CompileMatrixTest).
    int64_t headTiles = (gqa + 7) / 8;
    if (headTiles * headDim > 128)
      return "gqa " + std::to_string(gqa) + " x head_dim " +
             std::to_string(headDim) +
             " needs more registers than a tensor-core warp keeps";
    return std::nullopt;
  }

  /// Plans quantized attention, or (null schemes) the fp16 baseline, which
  /// has no packed words and so no vector widths.
  bool planAttention(Operation *op, Value query, Value keys,
                     SchemeAttr keyScheme, SchemeAttr valueScheme,
                     int64_t archNumber, int64_t pageTokens, bool chunked) {
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
    ::kvq::LaunchPlan plan = existingPlan(op);
    plan.arch = arch;
    // Tensor cores wherever their body can run: on an H200 they beat the
    // CUDA-core body for every preset, batch 1/8, 1k-128k tokens, GQA 1/4,
    // by 1.2-4.0x (bench/results/gpu-h200-tensor-cores.md). The reason is
    // kept on the op (and in the kernel's header comment).
    Type half = queryType.getElementType();
    std::optional<std::string> obstacle = tensorCoreObstacle(
        archNumber, half, headDim, gqa, keyScheme, valueScheme);
    if (plan.attentionPath == ::kvq::kTensorCores && obstacle) {
      op->emitOpError("plan: attentionPath ")
          << ::kvq::kTensorCores
          << " (tensor cores) cannot run this kernel: " << *obstacle;
      return false;
    }
    bool chosen = plan.attentionPath != 0;
    std::optional<std::string> drawback =
        obstacle ? obstacle : tensorCoreDrawback(half, headDim, gqa);
    int64_t path = fill(plan.attentionPath,
                        drawback ? ::kvq::kCudaCores : ::kvq::kTensorCores);
    std::string reason = chosen ? std::string("as written in the plan")
                         : path == ::kvq::kTensorCores
                             ? std::string("tensor cores run this kernel")
                             : "not tensor cores: " + *drawback;
    op->setAttr(kAttentionPathReasonAttr,
                StringAttr::get(op->getContext(), reason));
    if (path == ::kvq::kTensorCores)
      return planTensorCoreAttention(op, plan, headDim, gqa, archNumber,
                                     keyScheme, valueScheme, chunked);
    if (chunked)
      fill(plan.queryRows, 1);
    fill(plan.threads, gqa * headDim <= 512 ? 128 : 256);
    // The largest tile that fits the budget; at least 16 tokens so a tile
    // holds whole packed words of any channel-axis scheme.
    int64_t defaultTile = 16;
    // A paged body: a tile never crosses a page (pages are multiples of 16).
    for (int64_t tile : {64, 32})
      if (attentionSharedBytes(headDim, gqa, tile) <= kSharedBudgetBytes &&
          (pageTokens == 0 || pageTokens % tile == 0)) {
        defaultTile = tile;
        break;
      }
    int64_t tile = fill(plan.tileTokens, defaultTile);
    fillSplitsAndLoads(plan, tile, archNumber, headDim, keyScheme, valueScheme);
    // Scores for two tokens per thread share each q load; past head_dim 128
    // the unrolled pair needs more registers than ptxas keeps (spills at
    // head_dim 256, GQA 8 on sm_90).
    fill(plan.scoresPerThread, headDim % 4 == 0 && headDim <= 128 ? 2 : 1);
    return commitWithShared(op, plan, attentionSharedBytes(headDim, gqa, tile),
                            "tileTokens " + std::to_string(tile) + " needs");
  }

  /// The tensor-core body: 4 warps (fewer when their merge buffers would
  /// pass the shared-memory budget), each taking 16 tokens a step, so a
  /// split is a multiple of 16 tokens per warp. Chunked rows: as many
  /// consecutive query rows a block as fill the 8 columns of an MMA with
  /// their GQA groups, which the padding columns cost anyway; the block
  /// then reads its sequence's tokens once for them all.
  bool planTensorCoreAttention(Operation *op, ::kvq::LaunchPlan &plan,
                               int64_t headDim, int64_t gqa, int64_t archNumber,
                               SchemeAttr keyScheme, SchemeAttr valueScheme,
                               bool chunked) {
    int64_t rows = 1;
    if (chunked)
      rows = fill(plan.queryRows, std::max<int64_t>(1, 8 / gqa));
    int64_t columns = rows * gqa;
    // Rows fill the columns the GQA group leaves padded; more column tiles
    // would cost MMAs and registers the rows do not pay for.
    if ((columns + 7) / 8 > (gqa + 7) / 8) {
      op->emitOpError("plan: queryRows ")
          << rows << " x gqa " << gqa
          << " needs more MMA column tiles (of 8) than the GQA group's "
          << (gqa + 7) / 8;
      return false;
    }
    int64_t warps = 4;
    while (warps > 1 &&
           tensorCoreSharedBytes(headDim, columns, warps) > kSharedBudgetBytes)
      warps /= 2;
    int64_t threads = fill(plan.threads, 32 * warps);
    int64_t tile = fill(plan.tileTokens, 16 * (threads / 32));
    fillSplitsAndLoads(plan, tile, archNumber, headDim, keyScheme, valueScheme);
    fill(plan.scoresPerThread, 1);
    return commitWithShared(
        op, plan, tensorCoreSharedBytes(headDim, columns, threads / 32),
        "threads " + std::to_string(threads) + " on the tensor cores need");
  }
};

} // namespace
