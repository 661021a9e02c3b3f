//===- KernelBuilder.h - CUDA-flavoured IR building -------------*- C++ -*-===//
//
// A thin facade over ImplicitLocOpBuilder so that the kernel bodies in
// QuantizeKernels.cpp and AttentionKernel.cpp read like the CUDA they become:
// 32-bit integer index math (GPUs prefer it to 64-bit), fp32 arithmetic,
// 1-D memrefs for global and shared buffers, structured loops and branches.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_CONVERSION_KVQTOGPU_KERNELBUILDER_H
#define KVQ_CONVERSION_KVQTOGPU_KERNELBUILDER_H

#include "kvq/Dialect/KVQ/IR/KVQAttrs.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/ImplicitLocOpBuilder.h"

#include <functional>

namespace mlir::kvq {

class KernelBuilder {
public:
  explicit KernelBuilder(ImplicitLocOpBuilder &b) : b(b) {}

  ImplicitLocOpBuilder &builder() { return b; }

  //===--- constants and types ---------------------------------------===//
  Value i32(int64_t value);
  Value f32(double value);
  Value negInf();
  Type i32Type() { return b.getI32Type(); }
  Type f32Type() { return b.getF32Type(); }

  //===--- 32-bit integer arithmetic ---------------------------------===//
  Value add(Value a, Value c);
  Value sub(Value a, Value c);
  Value mul(Value a, Value c);
  Value div(Value a, Value c); // signed, operands known non-negative
  Value rem(Value a, Value c);
  Value min(Value a, Value c);
  Value max(Value a, Value c);
  Value shl(Value a, Value c);
  Value shru(Value a, Value c); // logical shift right
  Value bitAnd(Value a, Value c);
  Value bitOr(Value a, Value c);
  Value lt(Value a, Value c);
  Value ge(Value a, Value c);
  Value eq(Value a, Value c);
  Value bothTrue(Value a, Value c);
  /// ceil(a / c) for non-negative a and positive c.
  Value ceilDiv(Value a, Value c);

  //===--- fp32 arithmetic ------------------------------------------===//
  Value fadd(Value a, Value c);
  Value fsub(Value a, Value c);
  Value fmul(Value a, Value c);
  Value fdiv(Value a, Value c);
  Value fmax(Value a, Value c); // NaN-ignoring, like fmaxf
  Value fmin(Value a, Value c);
  Value fabs(Value a);
  Value exp(Value a);
  /// 2^a, approximate (MUFU.EX2), results below 2^-126 flushed to zero.
  Value exp2(Value a);
  Value rint(Value a); // round half to even
  Value sqrt(Value a); // correctly rounded (sqrtf)
  /// x's FP8 byte (kvq.fp8_from_float) in the scheme's format.
  Value fp8FromFloat(SchemeAttr scheme, Value x);
  Value flt(Value a, Value c);
  Value feq(Value a, Value c);
  Value select(Value cond, Value a, Value c);

  //===--- conversions ----------------------------------------------===//
  /// fp16/bf16/f32 or i32 code (unsigned) to fp32.
  Value toF32(Value value);
  /// The fp32 whose bits an i32 holds (__int_as_float).
  Value bitcastToF32(Value bits);
  /// fp32 to `type` (f16, bf16 or f32), rounding to nearest even.
  Value fromF32(Value value, Type type);
  /// Round fp32 through `storage` and back: what a stored scale reads as.
  Value roundThrough(Value value, Type storage);
  /// Non-negative fp32 (already rounded and clamped) to an i32 code.
  Value toCode(Value value);

  //===--- GPU ------------------------------------------------------===//
  Value threadIdx();
  Value blockIdx(gpu::Dimension dim);
  Value gridDim(gpu::Dimension dim);
  void barrier();
  Value shuffleXor(Value value, int offset);
  /// D = A.B + C on the tensor cores for the warp (kvq.mma): `a` the four
  /// A-fragment registers, `b` the two B-fragment registers (pairs of
  /// `inputType`, f16 or bf16), `acc` the four fp32 accumulators; returns D.
  SmallVector<Value> mma(ArrayRef<Value> a, ArrayRef<Value> b,
                         ArrayRef<Value> acc, Type inputType);
  /// `low` and `high` rounded into one fragment register of `type`.
  Value packPair(Value low, Value high, Type type);
  /// What packPair(low, high, type) = `pair` rounded away, packed alike.
  Value packPairError(Value low, Value high, Value pair, Type type);
  /// The low (or high) 16 bits of `a` and of `b`, `a`'s first (PRMT).
  Value selectHalves(Value a, Value b, bool high);
  /// The bytes of `b`:`a` that `selector` (a register) picks (PRMT).
  Value permuteBytes(Value a, Value b, Value selector);
  /// Two f16/bf16 values as the one 32-bit register they were loaded in.
  Value halfPair(Value low, Value high);
  /// fp16 pairs a * b, rounded (HMUL2); with `product` (that result), what
  /// the rounding left, rounded (HFMA2).
  Value multiplyPair(Value a, Value c, Value product = Value());
  /// Two codes held as fp16 1024 + code in `codes`, dequantized in fp16
  /// with the fp16 pairs `scales` and (asymmetric) `zeros`; with null
  /// scales, the exact integers code - centre.
  Value dequantizePair(Value codes, Value scales, Value zeros, int64_t centre);
  /// The 8x8 transpose of 16-bit pairs across the warp (movmatrix).
  Value transposePairs(Value pair);
  /// A C++ comment in the generated source, saying what the next lines do.
  void comment(const Twine &text);
  /// Gives `value` the name the generated C++ declares it with (a NameLoc
  /// on its defining op, which the emitter's output is renamed by:
  /// codegen/lib/SourceNames.cpp). A lower_snake_case word; repeats get a
  /// suffix. Returns `value`; block arguments keep their names.
  Value named(StringRef name, Value value);

  //===--- memory (1-D memrefs, global or shared) ------------------===//
  Value load(Value memref, Value index);
  void store(Value value, Value memref, Value index);
  /// Adds `value` to an i32 of global memory atomically; returns the value
  /// it had (atomicAdd).
  Value atomicAdd(Value memref, Value index, Value value);
  /// Loads `width` consecutive elements starting at `index` with one
  /// access (`index` a multiple of `width`): i32 words 1, 2 or 4 (up to 128
  /// bits), f16/bf16 1, 4 or 8 (up to 128 bits), shared f32 4 (LDS.128).
  SmallVector<Value> loadVector(Value memref, Value index, int64_t width);
  /// Four consecutive f32 of a shared-memory buffer with one 128-bit
  /// access (LDS.128); `index` must be a multiple of 4.
  SmallVector<Value> loadShared4(Value memref, Value index);
  /// Stores four f32 values at `index` (a multiple of 4) with one 128-bit
  /// access (STS.128).
  void storeShared4(ArrayRef<Value> values, Value memref, Value index);

  //===--- control flow ---------------------------------------------===//
  using LoopBody = std::function<void(Value iv)>;
  using CarriedLoopBody =
      std::function<SmallVector<Value>(Value iv, ValueRange carried)>;
  /// `for (iv = lb; iv < ub; iv += step)`; `ivName` names the variable in
  /// the generated C++.
  void forLoop(Value lb, Value ub, Value step, const LoopBody &body,
               StringRef ivName = {});
  SmallVector<Value> forLoop(Value lb, Value ub, Value step, ValueRange init,
                             const CarriedLoopBody &body,
                             StringRef ivName = {});
  /// `for (iv = first; iv < count; iv += stride)` where 0 <= first < stride
  /// (a thread's, lane's or warp's own index). When `count` is the constant
  /// `stride`, every thread makes exactly one trip: the body is written once,
  /// with iv = first, and no loop. (A loop of at most one trip, count <
  /// stride, stays a loop: written as an `if` it made ptxas spill on
  /// d=256, GQA 8, sm_90 — CompileMatrixTest.)
  void strideLoop(Value first, Value count, int64_t stride,
                  const LoopBody &body, StringRef ivName = {});
  void ifThen(Value cond, const std::function<void()> &body);
  /// scf.if yielding values of `types`.
  SmallVector<Value>
  ifElse(Value cond, TypeRange types,
         const std::function<SmallVector<Value>()> &thenBody,
         const std::function<SmallVector<Value>()> &elseBody);

  //===--- quantization bit tricks ----------------------------------===//
  /// The bit offset of logical code `j` inside a word for `scheme`'s order.
  static unsigned slotShift(SchemeAttr scheme, unsigned j);
  /// Extracts logical code `j` of `word` as an i32.
  Value extractCode(SchemeAttr scheme, Value word, unsigned j);
  /// The same with a run-time code index (a loop variable): the shift is
  /// computed, so a loop over a word's codes stays a loop in the source.
  Value extractCode(SchemeAttr scheme, Value word, Value j);
  /// Where word row `wordRow` (counted from stored token `firstStored`) of a
  /// channel-axis tensor lives, for a head row whose store holds `capacity`
  /// tokens: its row of packed words, its first token (from `firstStored`)
  /// and its row of scales.
  struct ChannelWordRow {
    Value storedWordRow, firstToken, scaleRow;
  };
  ChannelWordRow channelWordRow(SchemeAttr scheme, int64_t headDim,
                                Value headRow, Value capacity,
                                Value firstStored, Value wordRow);
  /// The fp32 scale of group `index` and, when `zeros` is non-null, its
  /// zero point (null otherwise), named `scale` and `zero`.
  std::pair<Value, Value> loadScaleAndZero(Value scales, Value zeros,
                                           Value index);
  /// Dequantizes an i32 code with fp32 scale (and zero point): the §4 math.
  Value dequantizeCode(SchemeAttr scheme, Value code, Value scale, Value zero);

private:
  ImplicitLocOpBuilder &b;
};

} // namespace mlir::kvq

#endif // KVQ_CONVERSION_KVQTOGPU_KERNELBUILDER_H
