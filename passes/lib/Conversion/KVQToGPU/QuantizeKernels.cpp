//===- QuantizeKernels.cpp - quantize+pack and dequantize kernels ---------===//
//
// Token axis: a warp quantizes rows (one token of one head). Each lane owns
// `wordsPerLane` consecutive output words; the `lanesPerGroup` lanes of a
// group (an aligned power-of-two block) combine their min/max with xor
// shuffles, so the group reduction never leaves registers.
//
// Channel axis: one thread per (row, token group, channel) walks the group's
// tokens down its channel; consecutive threads own consecutive channels, so
// every load and store of a warp is contiguous.
//
//===----------------------------------------------------------------------===//

#include "KernelBuilder.h"
#include "Kernels.h"

#include "kvq/Conversion/KernelABI.h"
#include "kvq/Dialect/KVQ/IR/KVQLayout.h"
#include "kvq/Dialect/KVQ/IR/ZeroPointSearch.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"

#include <limits>

using namespace mlir;
using namespace mlir::kvq;

//===----------------------------------------------------------------------===//
// Shared helpers
//===----------------------------------------------------------------------===//

std::string mlir::kvq::schemeTag(SchemeAttr scheme) {
  // Static scales per tensor or kv head replace the group: 4tph, e4m3pt.
  const char *granularity =
      scheme.getStaticScales() == ScaleSource::head ? "ph" : "pt";
  if (scheme.isFp8())
    return stringifyCodeFormat(scheme.getFormat()).str() + granularity;
  std::string tag = std::to_string(scheme.getBits());
  tag += scheme.getAxis() == Axis::token ? "t" : "c";
  if (scheme.isStatic())
    tag += granularity;
  else
    tag += scheme.isWholeHeadDim() ? "hd" : std::to_string(scheme.getGroup());
  if (scheme.isSymmetric())
    tag += "s";
  if (scheme.getOrder() == PackOrder::interleaved)
    tag += "i";
  if (scheme.getScaleType().isF32() && !scheme.isStatic())
    tag += "x";
  return tag;
}

std::string mlir::kvq::halfTag(Type type) {
  return type.isBF16() ? "bf16" : "f16";
}

FailureOr<::kvq::LaunchPlan>
mlir::kvq::requirePlan(Operation *op,
                       ArrayRef<int64_t ::kvq::LaunchPlan::*> required) {
  PlanAttr attr = getLaunchPlan(op);
  if (!attr)
    return op->emitOpError("has no launch plan; run --kvq-plan first");
  ::kvq::LaunchPlan plan = attr.toLaunchPlan();
  for (const ::kvq::LaunchPlanField &field : ::kvq::kPlanIntegerFields)
    if (llvm::is_contained(required, field.member) && plan.*field.member == 0)
      return op->emitOpError("launch plan has no ")
             << field.name << "; run --kvq-plan first";
  return plan;
}

gpu::GPUFuncOp
mlir::kvq::createKernel(OpBuilder &builder, gpu::GPUModuleOp module,
                        Location loc, StringRef name, StringRef kind,
                        ArrayRef<Type> argTypes, ArrayRef<StringRef> argNames,
                        ArrayRef<Type> workgroupTypes, int64_t threads,
                        StringRef spec, PlanAttr plan) {
  OpBuilder::InsertionGuard guard(builder);
  builder.setInsertionPointToEnd(module.getBody());
  auto type = builder.getFunctionType(argTypes, {});
  auto func = gpu::GPUFuncOp::create(builder, loc, name, type, workgroupTypes);
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(),
                builder.getUnitAttr());
  func.setKnownBlockSizeAttr(
      builder.getDenseI32ArrayAttr({static_cast<int32_t>(threads), 1, 1}));
  func->setAttr(abi::kKernelKind, builder.getStringAttr(kind));
  func->setAttr(abi::kThreads, builder.getI32IntegerAttr(threads));
  func->setAttr(abi::kSpec, builder.getStringAttr(spec));
  assert(argNames.size() == argTypes.size() && "one name per argument");
  func->setAttr(abi::kArgNames, builder.getStrArrayAttr(argNames));
  if (plan)
    func->setAttr(abi::kPlan, plan);
  builder.setInsertionPointToStart(&func.getBody().front());
  gpu::ReturnOp::create(builder, loc);
  return func;
}

gpu::GPUFuncOp mlir::kvq::createKernel(OpBuilder &builder,
                                       gpu::GPUModuleOp module, Location loc,
                                       StringRef name, StringRef kind,
                                       ArrayRef<KernelParameter> parameters,
                                       ArrayRef<Type> workgroupTypes,
                                       int64_t threads, StringRef spec,
                                       PlanAttr plan) {
  SmallVector<Type> types;
  SmallVector<StringRef> names;
  for (const KernelParameter &p : parameters) {
    types.push_back(p.type);
    names.push_back(p.name);
  }
  gpu::GPUFuncOp func =
      createKernel(builder, module, loc, name, kind, types, names,
                   workgroupTypes, threads, spec, plan);
  for (auto [p, value] : llvm::zip(parameters, func.getArguments()))
    *p.into = value;
  return func;
}

namespace {

std::string describeScheme(SchemeAttr scheme) {
  std::string text;
  llvm::raw_string_ostream os(text);
  os << Attribute(scheme);
  return text;
}

/// Min/max (asymmetric) or absolute max (symmetric) of `values`.
std::pair<Value, Value> localRange(KernelBuilder &kb, SchemeAttr scheme,
                                   ArrayRef<Value> values) {
  if (scheme.isSymmetric()) {
    Value amax = kb.f32(0.0);
    for (Value v : values)
      amax = kb.fmax(amax, kb.fabs(v));
    return {amax, amax};
  }
  Value lo = values.front(), hi = values.front();
  for (Value v : values.drop_front()) {
    lo = kb.fmin(lo, v);
    hi = kb.fmax(hi, v);
  }
  return {lo, hi};
}

/// Scale and zero point (fp32, already rounded through their storage type)
/// from a group's range, as ARCHITECTURE.md section 4 defines them.
std::pair<Value, Value> scaleAndZero(KernelBuilder &kb, SchemeAttr scheme,
                                     Value lo, Value hi) {
  Type storage = scheme.getScaleType();
  if (scheme.isSymmetric()) {
    double qmax = (1 << (scheme.getBits() - 1)) - 1;
    Value scale = kb.roundThrough(kb.fdiv(hi, kb.f32(qmax)), storage);
    return {scale, Value()};
  }
  Value scale = kb.roundThrough(
      kb.fdiv(kb.fsub(hi, lo), kb.f32(scheme.maxCode())), storage);
  Value zero = kb.roundThrough(lo, storage);
  return {scale, zero};
}

/// The code of `x` as a float: signed for symmetric schemes, unsigned for
/// asymmetric ones. A zero scale (constant group) gives the code of the
/// group's value; NaN inputs clamp to the lowest code (fmaxf drops NaN).
Value codeAsFloat(KernelBuilder &kb, SchemeAttr scheme, Value x, Value scale,
                  Value zero) {
  Value isConstant = kb.feq(scale, kb.f32(0.0));
  Value safeScale = kb.select(isConstant, kb.f32(1.0), scale);
  if (scheme.isSymmetric()) {
    double qmax = (1 << (scheme.getBits() - 1)) - 1;
    Value q = kb.rint(kb.fdiv(x, safeScale));
    q = kb.fmin(kb.fmax(q, kb.f32(-qmax)), kb.f32(qmax));
    return kb.select(isConstant, kb.f32(0.0), q);
  }
  Value q = kb.rint(kb.fdiv(kb.fsub(x, zero), safeScale));
  q = kb.fmin(kb.fmax(q, kb.f32(0.0)), kb.f32(scheme.maxCode()));
  return kb.select(isConstant, kb.f32(0.0), q);
}

/// The unsigned (stored) code of `x`; FP8: the byte of x / scale.
Value quantizeValue(KernelBuilder &kb, SchemeAttr scheme, Value x, Value scale,
                    Value zero) {
  if (scheme.isFp8())
    return kb.fp8FromFloat(scheme, kb.fdiv(x, scale));
  Value q = codeAsFloat(kb, scheme, x, scale, zero);
  if (scheme.isSymmetric())
    q = kb.fadd(q, kb.f32((1 << (scheme.getBits() - 1))));
  return kb.toCode(q);
}

/// Runs `step(x, sums)` over the values of a group this thread holds, from
/// `init`, and returns the thread's sums.
using GroupFold = std::function<SmallVector<Value>(
    ValueRange init,
    const std::function<SmallVector<Value>(Value x, ValueRange sums)> &step)>;

/// An asymmetric group's zero point refined from `minimum` by HQQ's
/// half-quadratic solver, the scale kept: ZeroPointSearch.h says how, and
/// the reference does the same operations in the same order. `fold` walks
/// this thread's values of the group (`count` in all); `combine` adds the
/// partial sums of the threads sharing the group.
Value searchZeroPoint(KernelBuilder &kb, SchemeAttr scheme, Value scale,
                      Value minimum, int64_t count, const GroupFold &fold,
                      const std::function<Value(Value)> &combine) {
  namespace zps = ::kvq::zero_point_search;
  kb.comment(llvm::formatv("HQQ zero point: up to {0} half-quadratic steps, "
                           "keeping the zero point of least squared error "
                           "(ZeroPointSearch.h)",
                           zps::kIterations)
                 .str());
  kb.comment("carried through the steps: zero point, best zero point, its "
             "squared error, beta, still improving");
  Value inf = kb.f32(std::numeric_limits<double>::infinity());
  // A constant group keeps its minimum.
  Value searching = kb.flt(kb.f32(0.0), scale);
  SmallVector<Value> init = {minimum, minimum, inf, kb.f32(zps::kBeta),
                             searching};
  SmallVector<Value> state = kb.forLoop(
      kb.i32(0), kb.i32(zps::kIterations), kb.i32(1), init,
      [&](Value, ValueRange carried) -> SmallVector<Value> {
        Value zero = carried[0], best = carried[1], bestError = carried[2],
              beta = carried[3], searching = carried[4];
        SmallVector<Value> sums = fold(
            {kb.f32(0.0), kb.f32(0.0)},
            [&](Value x, ValueRange partial) -> SmallVector<Value> {
              Value q = codeAsFloat(kb, scheme, x, scale, zero);
              Value qs = kb.fmul(q, scale);
              Value d = kb.named("residual", kb.fsub(x, kb.fadd(qs, zero)));
              Value a = kb.fabs(d);
              // The l_1/2 shrinkage of the residual (0 where d is 0).
              Value shrunk = kb.named(
                  "shrunk",
                  kb.fmax(kb.fsub(a, kb.fdiv(kb.f32(1.0),
                                             kb.fmul(beta, kb.sqrt(a)))),
                          kb.f32(0.0)));
              Value e = kb.select(kb.flt(d, kb.f32(0.0)),
                                  kb.fsub(kb.f32(0.0), shrunk), shrunk);
              return {
                  kb.named("error_sum", kb.fadd(partial[0], kb.fmul(d, d))),
                  kb.named("target_sum",
                           kb.fadd(partial[1], kb.fsub(kb.fsub(x, e), qs)))};
            });
        Value error = kb.named("group_error", combine(sums[0]));
        Value target = combine(sums[1]);
        Value improved = kb.named(
            "improved", kb.bothTrue(searching, kb.flt(error, bestError)));
        Value next = kb.named(
            "next_zero", kb.roundThrough(kb.fdiv(target, kb.f32(double(count))),
                                         scheme.getScaleType()));
        return {kb.select(improved, next, zero),
                kb.select(improved, zero, best),
                kb.select(improved, error, bestError),
                kb.select(improved, kb.fmul(beta, kb.f32(zps::kKappa)), beta),
                improved};
      });
  return state[1];
}

/// ORs `codes` (logical order) into one word.
Value packWord(KernelBuilder &kb, SchemeAttr scheme, ArrayRef<Value> codes) {
  Value word;
  for (auto [j, code] : llvm::enumerate(codes)) {
    unsigned shift = KernelBuilder::slotShift(scheme, j);
    Value placed = shift == 0 ? code : kb.shl(code, kb.i32(shift));
    word = word ? kb.bitOr(word, placed) : placed;
  }
  return word;
}

/// How a token-axis row is split over the lanes of a warp.
struct TokenAxisMapping {
  int64_t wordsPerRow;   // head_dim * bits / 32
  int64_t wordsPerGroup; // group * bits / 32
  int64_t lanesPerGroup; // power of two, <= 32
  int64_t wordsPerLane;  // wordsPerGroup / lanesPerGroup
  int64_t chunks;        // passes of 32 lanes over a row
};

TokenAxisMapping mapTokenAxis(SchemeAttr scheme, int64_t headDim) {
  TokenAxisMapping m;
  m.wordsPerRow = headDim * scheme.getBits() / 32;
  m.wordsPerGroup = scheme.groupSize(headDim) * scheme.getBits() / 32;
  m.lanesPerGroup = ::kvq::zero_point_search::tokenAxisLanesPerGroup(
      scheme.getBits(), scheme.groupSize(headDim));
  m.wordsPerLane = m.wordsPerGroup / m.lanesPerGroup;
  int64_t wordsPerPass = 32 * m.wordsPerLane;
  m.chunks = (m.wordsPerRow + wordsPerPass - 1) / wordsPerPass;
  return m;
}

/// A dequantize kernel's arguments (KernelABI.h).
struct DequantizeArgs {
  Value words, scales, zeros, output, rows, tokens, inTokens, inOffset,
      outTokens;
};

} // namespace

void mlir::kvq::buildTokenAxisQuantize(KernelBuilder &kb, SchemeAttr scheme,
                                       int64_t headDim, int64_t threads,
                                       int64_t halfVector,
                                       const QuantizeArgs &a) {
  Value input = a.input, words = a.words, scales = a.scales, zeros = a.zeros;
  Value rows = a.rows, tokens = a.tokens, inTokens = a.inTokens,
        outTokens = a.outTokens, outOffset = a.outOffset;
  TokenAxisMapping m = mapTokenAxis(scheme, headDim);
  int64_t perWord = scheme.codesPerWord();
  int64_t groups = headDim / scheme.groupSize(headDim);
  int64_t warps = threads / 32;

  kb.comment(llvm::formatv("one warp per row (token of a head); {0} lane(s) "
                           "per group, {1} word(s) per lane",
                           m.lanesPerGroup, m.wordsPerLane)
                 .str());
  Value tid = kb.threadIdx();
  Value lane = kb.rem(tid, kb.i32(32));
  Value warp = kb.div(tid, kb.i32(32));
  Value warpStride = kb.i32(warps);
  if (!a.blockLocal) {
    warp = kb.add(kb.mul(kb.blockIdx(gpu::Dimension::x), kb.i32(warps)), warp);
    warpStride = kb.mul(kb.gridDim(gpu::Dimension::x), warpStride);
  }
  Value totalRows = kb.mul(rows, tokens);

  kb.forLoop(warp, totalRows, warpStride, [&](Value row) {
    Value headRow = kb.div(row, tokens);
    Value token = kb.rem(row, tokens);
    Value inBase = kb.mul(kb.add(kb.mul(a.inRow(kb, headRow), inTokens), token),
                          kb.i32(headDim));
    Value outRow = kb.add(kb.mul(a.outRow(kb, headRow), outTokens),
                          kb.add(outOffset, token));

    for (int64_t chunk = 0; chunk < m.chunks; ++chunk) {
      Value firstWord = kb.add(kb.i32(chunk * 32 * m.wordsPerLane),
                               kb.mul(lane, kb.i32(m.wordsPerLane)));
      // Lanes past the row's end form whole groups of their own: they load
      // a clamped (in-bounds) element and never store.
      Value active = kb.lt(firstWord, kb.i32(m.wordsPerRow));
      // `halfVector` halves per load (128-bit for 8); inactive lanes read
      // the row's start instead (in bounds, aligned, never stored).
      Value start =
          kb.select(active, kb.mul(firstWord, kb.i32(perWord)), kb.i32(0));
      SmallVector<Value> values;
      for (int64_t e = 0; e < m.wordsPerLane * perWord; e += halfVector)
        for (Value x : kb.loadVector(
                 input, kb.add(inBase, kb.add(start, kb.i32(e))), halfVector))
          values.push_back(kb.toF32(x));
      Value scale, zero;
      if (scheme.isStatic()) {
        // Given scales: this head row's kv head's, or the tensor's.
        Value index = scheme.getStaticScales() == ScaleSource::head
                          ? kb.rem(headRow, a.staticHeads)
                          : kb.i32(0);
        std::tie(scale, zero) = kb.loadScaleAndZero(scales, zeros, index);
      } else {
        auto [lo, hi] = localRange(kb, scheme, values);
        for (int64_t offset = 1; offset < m.lanesPerGroup; offset *= 2) {
          hi = kb.fmax(hi, kb.shuffleXor(hi, offset));
          if (!scheme.isSymmetric())
            lo = kb.fmin(lo, kb.shuffleXor(lo, offset));
        }
        std::tie(scale, zero) = scaleAndZero(kb, scheme, lo, hi);
      }
      if (a.zeroPoints == ZeroPointSearch::hqq) {
        // Every lane takes part (inactive ones in groups of their own): the
        // sums cross lanes by shuffles.
        GroupFold fold = [&](ValueRange init, const auto &step) {
          SmallVector<Value> sums(init);
          for (Value x : values)
            sums = step(x, sums);
          return sums;
        };
        auto combine = [&](Value sum) {
          for (int64_t offset = 1; offset < m.lanesPerGroup; offset *= 2)
            sum = kb.fadd(sum, kb.shuffleXor(sum, offset));
          return sum;
        };
        zero = searchZeroPoint(kb, scheme, scale, zero,
                               scheme.groupSize(headDim), fold, combine);
      }
      kb.ifThen(active, [&] {
        for (int64_t w = 0; w < m.wordsPerLane; ++w) {
          SmallVector<Value> codes;
          for (int64_t j = 0; j < perWord; ++j)
            codes.push_back(quantizeValue(kb, scheme, values[w * perWord + j],
                                          scale, zero));
          Value wordIndex = kb.add(kb.mul(outRow, kb.i32(m.wordsPerRow)),
                                   kb.add(firstWord, kb.i32(w)));
          kb.store(packWord(kb, scheme, codes), words, wordIndex);
        }
        if (scheme.isStatic()) // nothing to store: the scales were given
          return;
        Value leader = kb.eq(kb.rem(lane, kb.i32(m.lanesPerGroup)), kb.i32(0));
        kb.ifThen(leader, [&] {
          Value group = kb.div(firstWord, kb.i32(m.wordsPerGroup));
          Value scaleIndex = kb.add(kb.mul(outRow, kb.i32(groups)), group);
          Type storage = scheme.getScaleType();
          kb.store(kb.fromF32(scale, storage), scales, scaleIndex);
          if (zeros)
            kb.store(kb.fromF32(zero, storage), zeros, scaleIndex);
        });
      });
    }
  });
}

void mlir::kvq::buildChannelAxisQuantize(KernelBuilder &kb, SchemeAttr scheme,
                                         int64_t headDim, int64_t threads,
                                         const QuantizeArgs &a) {
  Value input = a.input, words = a.words, scales = a.scales, zeros = a.zeros;
  Value rows = a.rows, tokens = a.tokens, inTokens = a.inTokens,
        outTokens = a.outTokens, outOffset = a.outOffset;
  int64_t group = scheme.groupSize(headDim);
  int64_t perWord = scheme.codesPerWord();
  Value d = kb.i32(headDim);

  kb.comment("one thread per (row, token group, channel); a warp covers "
             "consecutive channels, so loads and stores are contiguous");
  Value groupsPerRow = kb.div(tokens, kb.i32(group));
  Value total = kb.mul(kb.mul(rows, groupsPerRow), d);
  Value first = kb.threadIdx();
  Value stride = kb.i32(threads);
  if (!a.blockLocal) {
    first =
        kb.add(kb.mul(kb.blockIdx(gpu::Dimension::x), kb.i32(threads)), first);
    stride = kb.mul(kb.gridDim(gpu::Dimension::x), stride);
  }

  kb.forLoop(first, total, stride, [&](Value item) {
    Value channel = kb.rem(item, d);
    Value rest = kb.div(item, d);
    Value tokenGroup = kb.rem(rest, groupsPerRow);
    Value headRow = kb.div(rest, groupsPerRow);
    Value outHeadRow = a.outRow(kb, headRow);
    Value inBase = kb.add(kb.mul(kb.add(kb.mul(a.inRow(kb, headRow), inTokens),
                                        kb.mul(tokenGroup, kb.i32(group))),
                                 d),
                          channel);

    kb.comment("pass 1: the group's range down this channel");
    Value firstValue = kb.toF32(kb.load(input, inBase));
    auto init = localRange(kb, scheme, {firstValue});
    SmallVector<Value> range = kb.forLoop(
        kb.i32(1), kb.i32(group), kb.i32(1), {init.first, init.second},
        [&](Value t, ValueRange carried) -> SmallVector<Value> {
          Value x = kb.toF32(kb.load(input, kb.add(inBase, kb.mul(t, d))));
          if (scheme.isSymmetric()) {
            Value amax = kb.fmax(carried[1], kb.fabs(x));
            return {amax, amax};
          }
          return {kb.fmin(carried[0], x), kb.fmax(carried[1], x)};
        });
    auto [scale, zero] = scaleAndZero(kb, scheme, range[0], range[1]);
    if (a.zeroPoints == ZeroPointSearch::hqq) {
      GroupFold fold = [&](ValueRange init, const auto &step) {
        return kb.forLoop(
            kb.i32(0), kb.i32(group), kb.i32(1), init,
            [&](Value t, ValueRange sums) {
              return step(
                  kb.toF32(kb.load(input, kb.add(inBase, kb.mul(t, d)))), sums);
            });
      };
      zero = searchZeroPoint(kb, scheme, scale, zero, group, fold,
                             [](Value sum) { return sum; });
    }
    Value storeGroup =
        kb.add(kb.div(kb.add(outOffset, kb.mul(tokenGroup, kb.i32(group))),
                      kb.i32(group)),
               kb.mul(outHeadRow, kb.div(outTokens, kb.i32(group))));
    Value scaleIndex = kb.add(kb.mul(storeGroup, d), channel);
    Type storage = scheme.getScaleType();
    kb.store(kb.fromF32(scale, storage), scales, scaleIndex);
    if (zeros)
      kb.store(kb.fromF32(zero, storage), zeros, scaleIndex);

    kb.comment(llvm::formatv("pass 2: {0} tokens per word, packed down the "
                             "channel",
                             perWord)
                   .str());
    Value firstWordRow =
        kb.add(kb.mul(outHeadRow, kb.div(outTokens, kb.i32(perWord))),
               kb.div(kb.add(outOffset, kb.mul(tokenGroup, kb.i32(group))),
                      kb.i32(perWord)));
    kb.forLoop(kb.i32(0), kb.i32(group / perWord), kb.i32(1), [&](Value w) {
      SmallVector<Value> codes;
      for (int64_t j = 0; j < perWord; ++j) {
        Value t = kb.add(kb.mul(w, kb.i32(perWord)), kb.i32(j));
        Value x = kb.toF32(kb.load(input, kb.add(inBase, kb.mul(t, d))));
        codes.push_back(quantizeValue(kb, scheme, x, scale, zero));
      }
      Value wordIndex = kb.add(kb.mul(kb.add(firstWordRow, w), d), channel);
      kb.store(packWord(kb, scheme, codes), words, wordIndex);
    });
  });
}

namespace {

/// How many scales a static scheme's `scales` tensor gives: 1 per tensor,
/// its (static) kv heads per head.
FailureOr<int64_t> staticScaleCount(Operation *op, SchemeAttr scheme,
                                    Value scales) {
  if (scheme.getStaticScales() != ScaleSource::head)
    return int64_t(1);
  int64_t heads = cast<RankedTensorType>(scales.getType()).getShape()[kHeadDim];
  if (ShapedType::isDynamic(heads))
    return op->emitOpError("per-head static scales need a static head count");
  return heads;
}

/// What quantize and dequantize kernels share: they need packed words (the
/// fused form) and a plan.
struct PackedKernel {
  int64_t threads, halfVector, headDim;
  Type half;
};

/// The packed tensor's arguments: words, scales and (asymmetric) zeros.
SmallVector<KernelParameter> packedParameters(MLIRContext *context,
                                              SchemeAttr scheme, Value *words,
                                              Value *scales, Value *zeros) {
  Type i32 = IntegerType::get(context, 32), storage = scheme.getScaleType();
  SmallVector<KernelParameter> parameters = {
      {"words", globalBuffer(i32), words},
      {"scales", globalBuffer(storage), scales}};
  if (scheme.hasZeroPoints())
    parameters.push_back({"zeros", globalBuffer(storage), zeros});
  return parameters;
}

/// The launch facts of a quantize/dequantize op whose packed side is
/// `codes` and fp16/bf16 side `dense`, or an error if it is not ready to be
/// lowered (`requirement` says what it lacks).
FailureOr<PackedKernel> preparePackedKernel(Operation *op, Value codes,
                                            Value dense,
                                            StringRef requirement) {
  if (!cast<RankedTensorType>(codes.getType()).getElementType().isInteger(32))
    return op->emitOpError(requirement) << " to be lowered; run --kvq-fuse "
                                           "first";
  FailureOr<::kvq::LaunchPlan> plan =
      requirePlan(op, {&::kvq::LaunchPlan::threads});
  if (failed(plan))
    return failure();
  auto type = cast<RankedTensorType>(dense.getType());
  return PackedKernel{plan->threads, plan->halfVector, type.getShape()[3],
                      type.getElementType()};
}

/// A quantize kernel's arguments (KernelABI.h), in order, bound to `a`.
SmallVector<KernelParameter> quantizeParameters(MLIRContext *context,
                                                const PackedKernel &k,
                                                SchemeAttr scheme,
                                                QuantizeArgs &a) {
  Type i32 = IntegerType::get(context, 32);
  SmallVector<KernelParameter> parameters = {
      {"input", globalBuffer(k.half), &a.input}};
  parameters.append(
      packedParameters(context, scheme, &a.words, &a.scales, &a.zeros));
  parameters.append({{"rows", i32, &a.rows},
                     {"tokens", i32, &a.tokens},
                     {"in_tokens", i32, &a.inTokens},
                     {"out_tokens", i32, &a.outTokens},
                     {"out_offset", i32, &a.outOffset}});
  return parameters;
}

/// The kernel of a quantize or dequantize op (`kind`), named after the kind
/// (`tag`), scheme, head_dim and dtype: "kvq_quant_4t64_d128_f16".
gpu::GPUFuncOp createPackedKernel(OpBuilder &builder, gpu::GPUModuleOp module,
                                  Operation *op, StringRef kind, StringRef tag,
                                  SchemeAttr scheme, const PackedKernel &k,
                                  ArrayRef<KernelParameter> parameters) {
  std::string name =
      llvm::formatv("kvq_{0}_{1}_d{2}_{3}", tag, schemeTag(scheme), k.headDim,
                    halfTag(k.half));
  std::string spec =
      llvm::formatv("{0} {1} head_dim={2} dtype={3}", kind,
                    describeScheme(scheme), k.headDim, halfTag(k.half));
  return createKernel(builder, module, op->getLoc(), name, kind, parameters, {},
                      k.threads, spec, getLaunchPlan(op));
}

} // namespace

LogicalResult mlir::kvq::buildQuantizeKernel(QuantizeOp op,
                                             gpu::GPUModuleOp module) {
  FailureOr<PackedKernel> k = preparePackedKernel(
      op, op.getCodes(), op.getInput(), "must produce packed words");
  if (failed(k))
    return failure();
  SchemeAttr scheme = op.getScheme();
  int64_t headDim = k->headDim;
  OpBuilder builder(op);
  QuantizeArgs a;
  a.zeroPoints = op.getZeroPoints();
  SmallVector<KernelParameter> parameters =
      quantizeParameters(op->getContext(), *k, scheme, a);
  // The kernel's name says how it picks zero points: kvq_quant_hqq_...
  bool hqq = a.zeroPoints == ZeroPointSearch::hqq;
  gpu::GPUFuncOp func =
      createPackedKernel(builder, module, op, "quantize",
                         hqq ? "quant_hqq" : "quant", scheme, *k, parameters);
  KernelBody body(builder, op.getLoc(), func);
  KernelBuilder &kb = body.kb;
  if (scheme.getAxis() == Axis::token) {
    // Token-axis lanes load halfVector halves at a time.
    if (failed(requirePlan(op, {&::kvq::LaunchPlan::halfVector})))
      return failure();
    buildTokenAxisQuantize(kb, scheme, headDim, k->threads, k->halfVector, a);
  } else {
    buildChannelAxisQuantize(kb, scheme, headDim, k->threads, a);
  }
  return success();
}

LogicalResult mlir::kvq::buildQuantizeStaticKernel(QuantizeStaticOp op,
                                                   gpu::GPUModuleOp module) {
  FailureOr<PackedKernel> k = preparePackedKernel(
      op, op.getCodes(), op.getInput(), "must produce packed words");
  if (failed(k))
    return failure();
  FailureOr<::kvq::LaunchPlan> plan =
      requirePlan(op, {&::kvq::LaunchPlan::halfVector});
  if (failed(plan))
    return failure();
  SchemeAttr scheme = op.getScheme();
  OpBuilder builder(op);
  QuantizeArgs a;
  FailureOr<int64_t> count = staticScaleCount(op, scheme, op.getScales());
  if (failed(count))
    return failure();
  SmallVector<KernelParameter> parameters =
      quantizeParameters(op->getContext(), *k, scheme, a);
  gpu::GPUFuncOp func = createPackedKernel(builder, module, op, "quantize",
                                           "quant", scheme, *k, parameters);
  KernelBody body(builder, op.getLoc(), func);
  a.staticHeads = body.kb.i32(*count);
  buildTokenAxisQuantize(body.kb, scheme, k->headDim, k->threads, k->halfVector,
                         a);
  return success();
}

LogicalResult mlir::kvq::buildDequantizeKernel(DequantizeOp op,
                                               gpu::GPUModuleOp module) {
  FailureOr<PackedKernel> k = preparePackedKernel(
      op, op.getCodes(), op.getOutput(), "must read packed words");
  if (failed(k))
    return failure();
  SchemeAttr scheme = op.getScheme();
  int64_t headDim = k->headDim, perWord = scheme.codesPerWord();
  Type half = k->half;
  int64_t group = scheme.groupSize(headDim);
  OpBuilder builder(op);
  Type i32 = builder.getI32Type();
  DequantizeArgs a;
  SmallVector<KernelParameter> parameters =
      packedParameters(op->getContext(), scheme, &a.words, &a.scales, &a.zeros);
  parameters.append({{"output", globalBuffer(half), &a.output},
                     {"rows", i32, &a.rows},
                     {"tokens", i32, &a.tokens},
                     {"in_tokens", i32, &a.inTokens},
                     {"in_offset", i32, &a.inOffset},
                     {"out_tokens", i32, &a.outTokens}});
  gpu::GPUFuncOp func = createPackedKernel(builder, module, op, "dequantize",
                                           "dequant", scheme, *k, parameters);
  KernelBody body(builder, op.getLoc(), func);
  KernelBuilder &kb = body.kb;

  Value words = a.words, scales = a.scales, zeros = a.zeros, output = a.output;
  Value rows = a.rows, tokens = a.tokens, inTokens = a.inTokens,
        inOffset = a.inOffset, outTokens = a.outTokens;
  Value d = kb.i32(headDim);

  kb.comment("one thread per packed word; consecutive threads read "
             "consecutive words");
  Value first = kb.named("thread", kb.add(kb.mul(kb.blockIdx(gpu::Dimension::x),
                                                 kb.i32(k->threads)),
                                          kb.threadIdx()));
  Value stride = kb.named("thread_count", kb.mul(kb.gridDim(gpu::Dimension::x),
                                                 kb.i32(k->threads)));
  int64_t staticScales = 0;
  if (scheme.isStatic()) {
    FailureOr<int64_t> count = staticScaleCount(op, scheme, op.getScales());
    if (failed(count))
      return failure();
    staticScales = *count;
  }
  auto loadScale = [&](Value index) {
    return kb.loadScaleAndZero(scales, zeros, index);
  };
  // Each code of `word` dequantized, in a loop over the word's codes (ptxas
  // unrolls it; the shift is computed from the code's index): `store(j,
  // value)` writes code j.
  auto forEachValue = [&](Value word, Value scale, Value zero,
                          llvm::function_ref<void(Value, Value)> store) {
    kb.forLoop(
        kb.i32(0), kb.i32(perWord), kb.i32(1),
        [&](Value j) {
          store(j, kb.named("value",
                            kb.dequantizeCode(scheme,
                                              kb.extractCode(scheme, word, j),
                                              scale, zero)));
        },
        "code_index");
  };

  if (scheme.getAxis() == Axis::token) {
    int64_t wordsPerRow = headDim / perWord;
    Value total = kb.named("word_count",
                           kb.mul(kb.mul(rows, tokens), kb.i32(wordsPerRow)));
    kb.forLoop(
        first, total, stride,
        [&](Value item) {
          Value w = kb.named("word_in_row", kb.rem(item, kb.i32(wordsPerRow)));
          Value row = kb.named("token_row", kb.div(item, kb.i32(wordsPerRow)));
          Value headRow = kb.named("head_row", kb.div(row, tokens));
          Value token = kb.named("token", kb.rem(row, tokens));
          Value srcRow =
              kb.named("stored_row", kb.add(kb.mul(headRow, inTokens),
                                            kb.add(inOffset, token)));
          Value word = kb.named(
              "word",
              kb.load(words, kb.add(kb.mul(srcRow, kb.i32(wordsPerRow)), w)));
          Value groupIndex =
              kb.named("group", kb.div(w, kb.i32(group / perWord)));
          // Static scales: this head row's kv head's (or the tensor's).
          Value scaleIndex =
              staticScales
                  ? kb.rem(headRow, kb.i32(staticScales))
                  : kb.add(kb.mul(srcRow, kb.i32(headDim / group)), groupIndex);
          auto [scale, zero] = loadScale(scaleIndex);
          Value outBase = kb.named(
              "out_index",
              kb.add(kb.mul(kb.add(kb.mul(headRow, outTokens), token), d),
                     kb.mul(w, kb.i32(perWord))));
          forEachValue(word, scale, zero, [&](Value j, Value x) {
            kb.store(kb.fromF32(x, half), output, kb.add(outBase, j));
          });
        },
        "item");
    return success();
  }

  Value wordRows = kb.named("word_rows", kb.div(tokens, kb.i32(perWord)));
  Value total = kb.named("word_count", kb.mul(kb.mul(rows, wordRows), d));
  kb.forLoop(
      first, total, stride,
      [&](Value item) {
        Value channel = kb.named("channel", kb.rem(item, d));
        Value rest = kb.div(item, d);
        Value wordRow = kb.named("word_row", kb.rem(rest, wordRows));
        Value headRow = kb.named("head_row", kb.div(rest, wordRows));
        KernelBuilder::ChannelWordRow at = kb.channelWordRow(
            scheme, headDim, headRow, inTokens, inOffset, wordRow);
        Value word = kb.named(
            "word",
            kb.load(words, kb.add(kb.mul(at.storedWordRow, d), channel)));
        Value firstToken = at.firstToken, scaleRow = at.scaleRow;
        auto [scale, zero] = loadScale(kb.add(kb.mul(scaleRow, d), channel));
        forEachValue(word, scale, zero, [&](Value j, Value x) {
          Value token = kb.named("token", kb.add(firstToken, j));
          Value index = kb.add(
              kb.mul(kb.add(kb.mul(headRow, outTokens), token), d), channel);
          kb.store(kb.fromF32(x, half), output, index);
        });
      },
      "item");
  return success();
}
