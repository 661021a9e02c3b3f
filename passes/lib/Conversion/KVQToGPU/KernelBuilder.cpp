//===- KernelBuilder.cpp - CUDA-flavoured IR building ---------------------===//

#include "KernelBuilder.h"

#include "kvq/Conversion/KernelABI.h"
#include "kvq/Dialect/KVQ/IR/KVQOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/EmitC/IR/EmitC.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <cmath>
#include <limits>

using namespace mlir;
using namespace mlir::kvq;

Value KernelBuilder::i32(int64_t value) {
  return arith::ConstantIntOp::create(b, value, 32);
}

Value KernelBuilder::f32(double value) {
  return arith::ConstantFloatOp::create(b, b.getF32Type(),
                                        APFloat(static_cast<float>(value)));
}

Value KernelBuilder::negInf() {
  return f32(-std::numeric_limits<float>::infinity());
}

Value KernelBuilder::add(Value a, Value c) {
  return arith::AddIOp::create(b, a, c);
}
Value KernelBuilder::sub(Value a, Value c) {
  return arith::SubIOp::create(b, a, c);
}
Value KernelBuilder::mul(Value a, Value c) {
  return arith::MulIOp::create(b, a, c);
}
Value KernelBuilder::div(Value a, Value c) {
  return arith::DivSIOp::create(b, a, c);
}
Value KernelBuilder::rem(Value a, Value c) {
  return arith::RemSIOp::create(b, a, c);
}
Value KernelBuilder::min(Value a, Value c) {
  return arith::MinSIOp::create(b, a, c);
}
Value KernelBuilder::max(Value a, Value c) {
  return arith::MaxSIOp::create(b, a, c);
}
Value KernelBuilder::shl(Value a, Value c) {
  return arith::ShLIOp::create(b, a, c);
}
Value KernelBuilder::shru(Value a, Value c) {
  return arith::ShRUIOp::create(b, a, c);
}
Value KernelBuilder::bitAnd(Value a, Value c) {
  return arith::AndIOp::create(b, a, c);
}
Value KernelBuilder::bitOr(Value a, Value c) {
  return arith::OrIOp::create(b, a, c);
}
Value KernelBuilder::bothTrue(Value a, Value c) {
  return arith::AndIOp::create(b, a, c);
}

Value KernelBuilder::lt(Value a, Value c) {
  return arith::CmpIOp::create(b, arith::CmpIPredicate::slt, a, c);
}
Value KernelBuilder::ge(Value a, Value c) {
  return arith::CmpIOp::create(b, arith::CmpIPredicate::sge, a, c);
}
Value KernelBuilder::eq(Value a, Value c) {
  return arith::CmpIOp::create(b, arith::CmpIPredicate::eq, a, c);
}

Value KernelBuilder::ceilDiv(Value a, Value c) {
  return div(add(a, sub(c, i32(1))), c);
}

Value KernelBuilder::fadd(Value a, Value c) {
  return arith::AddFOp::create(b, a, c);
}
Value KernelBuilder::fsub(Value a, Value c) {
  return arith::SubFOp::create(b, a, c);
}
Value KernelBuilder::fmul(Value a, Value c) {
  return arith::MulFOp::create(b, a, c);
}
Value KernelBuilder::fdiv(Value a, Value c) {
  return arith::DivFOp::create(b, a, c);
}
Value KernelBuilder::fmax(Value a, Value c) {
  return arith::MaxNumFOp::create(b, a, c);
}
Value KernelBuilder::fmin(Value a, Value c) {
  return arith::MinNumFOp::create(b, a, c);
}
Value KernelBuilder::fabs(Value a) { return math::AbsFOp::create(b, a); }
Value KernelBuilder::exp(Value a) { return math::ExpOp::create(b, a); }
Value KernelBuilder::exp2(Value a) { return math::Exp2Op::create(b, a); }
Value KernelBuilder::rint(Value a) { return math::RoundEvenOp::create(b, a); }
Value KernelBuilder::sqrt(Value a) { return math::SqrtOp::create(b, a); }

Value KernelBuilder::flt(Value a, Value c) {
  return arith::CmpFOp::create(b, arith::CmpFPredicate::OLT, a, c);
}
Value KernelBuilder::feq(Value a, Value c) {
  return arith::CmpFOp::create(b, arith::CmpFPredicate::OEQ, a, c);
}
Value KernelBuilder::select(Value cond, Value a, Value c) {
  return arith::SelectOp::create(b, cond, a, c);
}

Value KernelBuilder::toF32(Value value) {
  Type type = value.getType();
  if (type.isF32())
    return value;
  if (type.isInteger(32))
    return arith::UIToFPOp::create(b, b.getF32Type(), value);
  return arith::ExtFOp::create(b, b.getF32Type(), value);
}

Value KernelBuilder::bitcastToF32(Value bits) {
  return arith::BitcastOp::create(b, b.getF32Type(), bits);
}

Value KernelBuilder::fromF32(Value value, Type type) {
  if (type.isF32())
    return value;
  return arith::TruncFOp::create(b, type, value);
}

Value KernelBuilder::roundThrough(Value value, Type storage) {
  if (storage.isF32())
    return value;
  return toF32(fromF32(value, storage));
}

Value KernelBuilder::toCode(Value value) {
  return arith::FPToUIOp::create(b, b.getI32Type(), value);
}

Value KernelBuilder::threadIdx() {
  Value id = gpu::ThreadIdOp::create(b, gpu::Dimension::x);
  return arith::IndexCastOp::create(b, b.getI32Type(), id);
}

Value KernelBuilder::blockIdx(gpu::Dimension dim) {
  Value id = gpu::BlockIdOp::create(b, dim);
  return arith::IndexCastOp::create(b, b.getI32Type(), id);
}

Value KernelBuilder::gridDim(gpu::Dimension dim) {
  Value id = gpu::GridDimOp::create(b, dim);
  return arith::IndexCastOp::create(b, b.getI32Type(), id);
}

void KernelBuilder::barrier() { gpu::BarrierOp::create(b); }

Value KernelBuilder::shuffleXor(Value value, int offset) {
  auto shuffle = gpu::ShuffleOp::create(b, value, offset, /*width=*/32,
                                        gpu::ShuffleMode::XOR);
  return shuffle.getShuffleResult();
}

void KernelBuilder::comment(const Twine &text) {
  emitc::VerbatimOp::create(b, b.getStringAttr("// " + text));
}

Value KernelBuilder::load(Value memref, Value index) {
  Value idx = arith::IndexCastOp::create(b, b.getIndexType(), index);
  return memref::LoadOp::create(b, memref, ValueRange{idx});
}

void KernelBuilder::store(Value value, Value memref, Value index) {
  Value idx = arith::IndexCastOp::create(b, b.getIndexType(), index);
  memref::StoreOp::create(b, value, memref, ValueRange{idx});
}

Value KernelBuilder::atomicAdd(Value memref, Value index, Value value) {
  Value idx = arith::IndexCastOp::create(b, b.getIndexType(), index);
  return memref::AtomicRMWOp::create(b, arith::AtomicRMWKind::addi, value,
                                     memref, ValueRange{idx});
}

SmallVector<Value> KernelBuilder::loadVector(Value memref, Value index,
                                             int64_t width) {
  if (width == 1)
    return {load(memref, index)};
  Value idx = arith::IndexCastOp::create(b, b.getIndexType(), index);
  auto element = cast<MemRefType>(memref.getType()).getElementType();
  auto type = VectorType::get({width}, element);
  Value vector = vector::LoadOp::create(b, type, memref, ValueRange{idx});
  SmallVector<Value> elements;
  for (int64_t k = 0; k < width; ++k)
    elements.push_back(vector::ExtractOp::create(b, vector, k));
  return elements;
}

SmallVector<Value> KernelBuilder::mma(ArrayRef<Value> a, ArrayRef<Value> b,
                                      ArrayRef<Value> acc, Type inputType) {
  assert(a.size() == 4 && b.size() == 2 && acc.size() == 4);
  auto float4 = VectorType::get({4}, this->b.getF32Type());
  Value c = vector::FromElementsOp::create(this->b, float4, acc);
  Value d = MmaOp::create(this->b, float4, a[0], a[1], a[2], a[3], b[0], b[1],
                          c, TypeAttr::get(inputType));
  SmallVector<Value> out;
  for (int64_t k = 0; k < 4; ++k)
    out.push_back(vector::ExtractOp::create(this->b, d, k));
  return out;
}

Value KernelBuilder::packPair(Value low, Value high, Type type) {
  return PackPairOp::create(b, b.getI32Type(), low, high, TypeAttr::get(type));
}

Value KernelBuilder::packPairError(Value low, Value high, Value pair,
                                   Type type) {
  return PackPairErrorOp::create(b, b.getI32Type(), low, high, pair,
                                 TypeAttr::get(type));
}

Value KernelBuilder::selectHalves(Value a, Value c, bool high) {
  return SelectHalvesOp::create(b, b.getI32Type(), a, c, high);
}

Value KernelBuilder::permuteBytes(Value a, Value c, Value selector) {
  return PermuteBytesOp::create(b, b.getI32Type(), a, c, selector);
}

Value KernelBuilder::halfPair(Value low, Value high) {
  return HalfPairOp::create(b, b.getI32Type(), low, high);
}

Value KernelBuilder::multiplyPair(Value a, Value c, Value product) {
  return MultiplyPairOp::create(b, b.getI32Type(), a, c, product);
}

Value KernelBuilder::dequantizePair(Value codes, Value scales, Value zeros,
                                    int64_t centre) {
  return DequantizePairOp::create(b, b.getI32Type(), codes, scales, zeros,
                                  b.getI64IntegerAttr(centre));
}

Value KernelBuilder::transposePairs(Value pair) {
  return TransposePairsOp::create(b, b.getI32Type(), pair);
}

SmallVector<Value> KernelBuilder::loadShared4(Value memref, Value index) {
  return loadVector(memref, index, 4);
}

void KernelBuilder::storeShared4(ArrayRef<Value> values, Value memref,
                                 Value index) {
  auto type = VectorType::get({4}, b.getF32Type());
  Value vector = vector::FromElementsOp::create(b, type, values);
  Value idx = arith::IndexCastOp::create(b, b.getIndexType(), index);
  vector::StoreOp::create(b, vector, memref, ValueRange{idx});
}

namespace {
/// `loc` carrying `name` for the generated source ("" leaves it as it is).
Location withName(Location loc, StringRef name) {
  if (name.empty())
    return loc;
  return NameLoc::get(
      StringAttr::get(loc.getContext(), abi::kSourceNamePrefix + name), loc);
}

/// The value of `v` if it is an integer constant.
std::optional<int64_t> constantOf(Value v) {
  if (auto constant = v.getDefiningOp<arith::ConstantIntOp>())
    return constant.value();
  return std::nullopt;
}
} // namespace

Value KernelBuilder::named(StringRef name, Value value) {
  if (Operation *op = value.getDefiningOp())
    if (!isa<arith::ConstantOp, scf::ForOp, scf::IfOp>(op) &&
        op->getNumResults() == 1)
      op->setLoc(withName(op->getLoc(), name));
  return value;
}

void KernelBuilder::forLoop(Value lb, Value ub, Value step,
                            const LoopBody &body, StringRef ivName) {
  auto loop = scf::ForOp::create(b, withName(b.getLoc(), ivName), lb, ub, step);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPoint(loop.getBody()->getTerminator());
  body(loop.getInductionVar());
}

SmallVector<Value> KernelBuilder::forLoop(Value lb, Value ub, Value step,
                                          ValueRange init,
                                          const CarriedLoopBody &body,
                                          StringRef ivName) {
  auto loop = scf::ForOp::create(
      b, withName(b.getLoc(), ivName), lb, ub, step, init,
      [&](OpBuilder &nested, Location loc, Value iv, ValueRange carried) {
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToEnd(nested.getInsertionBlock());
        SmallVector<Value> next = body(iv, carried);
        scf::YieldOp::create(b, next);
      });
  return SmallVector<Value>(loop.getResults());
}

void KernelBuilder::strideLoop(Value first, Value count, int64_t stride,
                               const LoopBody &body, StringRef ivName) {
  if (constantOf(count) != stride)
    return forLoop(first, count, i32(stride), body, ivName);
  body(first);
}

void KernelBuilder::ifThen(Value cond, const std::function<void()> &body) {
  auto ifOp = scf::IfOp::create(b, cond, /*withElseRegion=*/false);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPoint(ifOp.thenBlock()->getTerminator());
  body();
}

SmallVector<Value>
KernelBuilder::ifElse(Value cond, TypeRange types,
                      const std::function<SmallVector<Value>()> &thenBody,
                      const std::function<SmallVector<Value>()> &elseBody) {
  auto ifOp = scf::IfOp::create(b, types, cond, /*withElseRegion=*/true);
  {
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(ifOp.thenBlock());
    scf::YieldOp::create(b, thenBody());
    b.setInsertionPointToStart(ifOp.elseBlock());
    scf::YieldOp::create(b, elseBody());
  }
  return SmallVector<Value>(ifOp.getResults());
}

unsigned KernelBuilder::slotShift(SchemeAttr scheme, unsigned j) {
  unsigned bits = scheme.getBits();
  unsigned perWord = scheme.codesPerWord();
  if (scheme.getOrder() == PackOrder::linear)
    return j * bits;
  // Interleaved: code 2i in slot i, code 2i+1 in slot i + n/2, so masking a
  // word with one pattern yields the pair (2i, 2i+1) in the two 16-bit halves.
  unsigned slot = (j % 2 == 0) ? j / 2 : j / 2 + perWord / 2;
  return slot * bits;
}

Value KernelBuilder::extractCode(SchemeAttr scheme, Value word, unsigned j) {
  unsigned shift = slotShift(scheme, j);
  Value shifted = shift == 0 ? word : shru(word, i32(shift));
  if (shift + scheme.getBits() == 32)
    return shifted;
  return bitAnd(shifted, i32(scheme.maxCode()));
}

Value KernelBuilder::extractCode(SchemeAttr scheme, Value word, Value j) {
  Value slot = j;
  if (scheme.getOrder() == PackOrder::interleaved) {
    // Even codes in the low half of the slots, odd codes in the high half.
    Value half = shru(j, i32(1));
    Value odd = bitAnd(j, i32(1));
    slot = named("slot", add(half, mul(odd, i32(scheme.codesPerWord() / 2))));
  }
  Value shift = named("shift", mul(slot, i32(scheme.getBits())));
  return bitAnd(shru(word, shift), i32(scheme.maxCode()));
}

KernelBuilder::ChannelWordRow
KernelBuilder::channelWordRow(SchemeAttr scheme, int64_t headDim, Value headRow,
                              Value capacity, Value firstStored,
                              Value wordRow) {
  Value perWord = i32(scheme.codesPerWord());
  Value group = i32(scheme.groupSize(headDim));
  ChannelWordRow row;
  row.storedWordRow =
      named("stored_word_row", add(mul(headRow, div(capacity, perWord)),
                                   add(div(firstStored, perWord), wordRow)));
  row.firstToken = named("first_token", mul(wordRow, perWord));
  row.scaleRow =
      named("scale_row", add(mul(headRow, div(capacity, group)),
                             div(add(firstStored, row.firstToken), group)));
  return row;
}

std::pair<Value, Value>
KernelBuilder::loadScaleAndZero(Value scales, Value zeros, Value index) {
  Value scale = named("scale", toF32(load(scales, index)));
  Value zero = zeros ? named("zero", toF32(load(zeros, index))) : Value();
  return {scale, zero};
}

Value KernelBuilder::fp8FromFloat(SchemeAttr scheme, Value x) {
  return Fp8FromFloatOp::create(
      b, b.getI32Type(), x,
      CodeFormatAttr::get(b.getContext(), scheme.getFormat()));
}

Value KernelBuilder::dequantizeCode(SchemeAttr scheme, Value code, Value scale,
                                    Value zero) {
  if (scheme.isFp8()) // the byte's exact value (the prelude), times scale
    return fmul(named("fp8", Fp8ToFloatOp::create(
                                 b, b.getF32Type(), code,
                                 CodeFormatAttr::get(b.getContext(),
                                                     scheme.getFormat()))),
                scale);
  // The code (< 2^8) as the low mantissa bits of 2^23: the float
  // 2^23 + code, exactly, by one OR instead of an int-to-float conversion
  // (a quarter-rate instruction that would bound the unpacking). One
  // subtraction then gives the code, or the centred code, exactly.
  Value magic = bitcastToF32(bitOr(code, i32(0x4B000000)));
  if (scheme.isSymmetric()) // stored code = q + 2^(bits-1)
    return fmul(named("code", fsub(magic, f32(8388608.0 +
                                              (1 << (scheme.getBits() - 1))))),
                scale);
  return fadd(fmul(named("code", fsub(magic, f32(8388608.0))), scale), zero);
}
