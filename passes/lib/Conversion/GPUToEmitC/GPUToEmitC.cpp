//===- GPUToEmitC.cpp - kvq's GPU kernels to EmitC ------------------------===//
//
// The upstream arith lowering keeps LLVM semantics in C (casts to unsigned
// around every add, guards on every shift, NaN checks on every compare),
// which makes kernels unreadable. kvq's kernels only use arith in ways whose
// C meaning is the LLVM one (32-bit index math that never overflows, shift
// amounts below 32, codes and word fields that are non-negative), so the
// patterns below map each op to the plain C operator or a prelude helper.
//
//===----------------------------------------------------------------------===//

#include "kvq/Conversion/Passes.h"
#include "kvq/Dialect/KVQ/IR/KVQOps.h"

#include "mlir/Conversion/SCFToEmitC/SCFToEmitC.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/EmitC/IR/EmitC.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Matchers.h"
#include "mlir/Transforms/DialectConversion.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace mlir::kvq {
#define GEN_PASS_DEF_GPUTOEMITC
#include "kvq/Conversion/Passes.h.inc"
} // namespace mlir::kvq

using namespace mlir;
using namespace mlir::kvq;

namespace {

constexpr const char *kSiteAttr = "kvq.site";
constexpr const char *kSharedNamesAttr = "kvq.shared_names";

//===----------------------------------------------------------------------===//
// Types
//===----------------------------------------------------------------------===//

/// C spelling of a scalar type in kvq kernels.
std::string cTypeName(Type type) {
  if (type.isF32())
    return "float";
  if (type.isF16())
    return "__half";
  if (type.isBF16())
    return "__nv_bfloat16";
  if (type.isInteger(32))
    return "int32_t";
  if (type.isInteger(1))
    return "bool";
  return "void";
}

/// The 32-bit words of a 1-D vector kernels load with one access: 2 or 4
/// i32, or 4 or 8 f16/bf16; nothing for any other vector.
std::optional<int64_t> vectorWords(VectorType type) {
  if (type.getRank() != 1)
    return std::nullopt;
  Type element = type.getElementType();
  int64_t width = type.getNumElements();
  if (element.isInteger(32) && (width == 2 || width == 4))
    return width;
  if ((element.isF16() || element.isBF16()) && (width == 4 || width == 8))
    return width / 2;
  return std::nullopt;
}

/// vector<4xf32>: CUDA's float4, for 128-bit shared-memory accesses.
bool isFloat4(VectorType type) {
  return type.getRank() == 1 && type.getNumElements() == 4 &&
         type.getElementType().isF32();
}

class KernelTypeConverter : public TypeConverter {
public:
  explicit KernelTypeConverter(MLIRContext *context) {
    addConversion([](Type type) -> std::optional<Type> {
      if (type.isF32() || type.isInteger(32) || type.isInteger(1))
        return type;
      return std::nullopt;
    });
    // 32-bit index math everywhere: kernels never address 2^31 elements of
    // one tensor (the runtime checks).
    addConversion(
        [context](IndexType) -> Type { return IntegerType::get(context, 32); });
    addConversion([context](FloatType type) -> std::optional<Type> {
      if (type.isF16() || type.isBF16())
        return emitc::OpaqueType::get(context, cTypeName(type));
      if (type.isF32())
        return type;
      return std::nullopt;
    });
    // A 64/128-bit vector (2 or 4 words, 4 or 8 halves) is CUDA's
    // int2/int4 (8/16-byte aligned); elements come out with kvq_word and
    // kvq_f16/kvq_bf16.
    addConversion([context](VectorType type) -> std::optional<Type> {
      if (isFloat4(type)) // shared-memory tiles, 16-byte aligned
        return emitc::OpaqueType::get(context, "float4");
      std::optional<int64_t> words = vectorWords(type);
      if (!words)
        return std::nullopt;
      return emitc::OpaqueType::get(context, "int" + std::to_string(*words));
    });
    addConversion([this](MemRefType type) -> std::optional<Type> {
      Type element = convertType(type.getElementType());
      if (!element || type.getRank() != 1)
        return std::nullopt;
      return emitc::PointerType::get(element);
    });
    auto materialize = [](OpBuilder &builder, Type type, ValueRange inputs,
                          Location loc) -> Value {
      return UnrealizedConversionCastOp::create(builder, loc, type, inputs)
          .getResult(0);
    };
    addSourceMaterialization(materialize);
    addTargetMaterialization(materialize);
  }
};

//===----------------------------------------------------------------------===//
// Kernels, ids, barriers, shuffles
//===----------------------------------------------------------------------===//

struct GPUFuncToEmitC : OpConversionPattern<gpu::GPUFuncOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(gpu::GPUFuncOp func, OpAdaptor,
                  ConversionPatternRewriter &rewriter) const override {
    if (!func.isKernel())
      return rewriter.notifyMatchFailure(func, "not a kernel");
    TypeConverter::SignatureConversion signature(
        func.getBody().getNumArguments());
    for (auto [i, type] : llvm::enumerate(func.getArgumentTypes())) {
      Type converted = getTypeConverter()->convertType(type);
      if (!converted)
        return rewriter.notifyMatchFailure(func, "argument type not supported");
      signature.addInputs(i, converted);
    }
    SmallVector<Attribute> specifiers = {
        rewriter.getStringAttr("extern \"C\" __global__")};
    if (auto threads = func->getAttrOfType<IntegerAttr>("kvq.threads"))
      specifiers.push_back(rewriter.getStringAttr(
          "__launch_bounds__(" + std::to_string(threads.getInt()) + ")"));
    auto type = rewriter.getFunctionType(signature.getConvertedTypes(), {});
    auto emitcFunc =
        emitc::FuncOp::create(rewriter, func.getLoc(), func.getName(), type);
    emitcFunc.setSpecifiersAttr(rewriter.getArrayAttr(specifiers));
    for (NamedAttribute attr : func->getDiscardableAttrs())
      if (attr.getName().strref().starts_with("kvq."))
        emitcFunc->setAttr(attr.getName(), attr.getValue());
    rewriter.inlineRegionBefore(func.getBody(), emitcFunc.getBody(),
                                emitcFunc.end());
    if (failed(rewriter.convertRegionTypes(&emitcFunc.getBody(),
                                           *getTypeConverter(), &signature)))
      return failure();
    rewriter.eraseOp(func);
    return success();
  }
};

struct GPUReturnToEmitC : OpConversionPattern<gpu::ReturnOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(gpu::ReturnOp op, OpAdaptor,
                  ConversionPatternRewriter &rewriter) const override {
    rewriter.replaceOpWithNewOp<emitc::ReturnOp>(op, Value());
    return success();
  }
};

/// threadIdx.x, blockIdx.y, ... as int literals.
template <typename IdOp> struct GPUIdToEmitC : OpConversionPattern<IdOp> {
  GPUIdToEmitC(const TypeConverter &converter, MLIRContext *context,
               StringRef builtin)
      : OpConversionPattern<IdOp>(converter, context), builtin(builtin) {}

  LogicalResult
  matchAndRewrite(IdOp op, typename IdOp::Adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    std::string text =
        "(int)" + builtin + "." + stringifyDimension(op.getDimension()).str();
    rewriter.replaceOpWithNewOp<emitc::LiteralOp>(op, rewriter.getI32Type(),
                                                  rewriter.getStringAttr(text));
    return success();
  }

  std::string builtin;
};

struct GPUBarrierToEmitC : OpConversionPattern<gpu::BarrierOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(gpu::BarrierOp op, OpAdaptor,
                  ConversionPatternRewriter &rewriter) const override {
    rewriter.replaceOpWithNewOp<emitc::CallOpaqueOp>(
        op, TypeRange(), "__syncthreads", ValueRange());
    return success();
  }
};

struct GPUShuffleToEmitC : OpConversionPattern<gpu::ShuffleOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(gpu::ShuffleOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    if (op.getMode() != gpu::ShuffleMode::XOR)
      return rewriter.notifyMatchFailure(op, "only xor shuffles are generated");
    if (!op.getValid().use_empty())
      return rewriter.notifyMatchFailure(op, "the valid flag is never used");
    Type type =
        getTypeConverter()->convertType(op.getShuffleResult().getType());
    ArrayAttr args = rewriter.getArrayAttr(
        {emitc::OpaqueAttr::get(getContext(), "0xffffffffu"),
         rewriter.getIndexAttr(0), rewriter.getIndexAttr(1)});
    Value result =
        emitc::CallOpaqueOp::create(
            rewriter, op.getLoc(), TypeRange{type}, "__shfl_xor_sync",
            ValueRange{adaptor.getValue(), adaptor.getOffset()}, args)
            .getResult(0);
    // Never used (checked above); a literal is not declared in the output.
    Value valid = emitc::LiteralOp::create(rewriter, op.getLoc(),
                                           rewriter.getI1Type(), "true");
    rewriter.replaceOp(op, {result, valid});
    return success();
  }
};

//===----------------------------------------------------------------------===//
// Memory: every access through a macro with a site id
//===----------------------------------------------------------------------===//

bool isShared(MemRefType type) {
  auto space = dyn_cast_or_null<gpu::AddressSpaceAttr>(type.getMemorySpace());
  return space && space.getValue() == gpu::AddressSpace::Workgroup;
}

struct LoadToEmitC : OpConversionPattern<memref::LoadOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(memref::LoadOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    auto site = op->getAttrOfType<IntegerAttr>(kSiteAttr);
    if (!site)
      return rewriter.notifyMatchFailure(op, "no site id");
    Type type = getTypeConverter()->convertType(op.getType());
    StringRef macro = isShared(op.getMemRefType()) ? "KVQ_LDS" : "KVQ_LDG";
    ArrayAttr args = rewriter.getArrayAttr(
        {site, rewriter.getIndexAttr(0), rewriter.getIndexAttr(1)});
    rewriter.replaceOpWithNewOp<emitc::CallOpaqueOp>(
        op, TypeRange{type}, macro,
        ValueRange{adaptor.getMemref(), adaptor.getIndices()[0]}, args);
    return success();
  }
};

struct StoreToEmitC : OpConversionPattern<memref::StoreOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(memref::StoreOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    auto site = op->getAttrOfType<IntegerAttr>(kSiteAttr);
    if (!site)
      return rewriter.notifyMatchFailure(op, "no site id");
    StringRef macro = isShared(op.getMemRefType()) ? "KVQ_STS" : "KVQ_STG";
    ArrayAttr args = rewriter.getArrayAttr({site, rewriter.getIndexAttr(0),
                                            rewriter.getIndexAttr(1),
                                            rewriter.getIndexAttr(2)});
    rewriter.replaceOpWithNewOp<emitc::CallOpaqueOp>(
        op, TypeRange(), macro,
        ValueRange{adaptor.getMemref(), adaptor.getIndices()[0],
                   adaptor.getValue()},
        args);
    return success();
  }
};

/// An atomic add on a global i32 (the cache step's free-page stack):
/// KVQ_ATOMIC_ADD returns the value before the add, as atomicAdd does.
struct AtomicAddToEmitC : OpConversionPattern<memref::AtomicRMWOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(memref::AtomicRMWOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    auto site = op->getAttrOfType<IntegerAttr>(kSiteAttr);
    if (!site || op.getKind() != arith::AtomicRMWKind::addi ||
        isShared(op.getMemRefType()))
      return rewriter.notifyMatchFailure(op, "not a global integer add");
    ArrayAttr args = rewriter.getArrayAttr({site, rewriter.getIndexAttr(0),
                                            rewriter.getIndexAttr(1),
                                            rewriter.getIndexAttr(2)});
    rewriter.replaceOpWithNewOp<emitc::CallOpaqueOp>(
        op, TypeRange{op.getType()}, "KVQ_ATOMIC_ADD",
        ValueRange{adaptor.getMemref(), adaptor.getIndices()[0],
                   adaptor.getValue()},
        args);
    return success();
  }
};

/// A 64/128-bit load of packed words or halves: KVQ_LDG2/KVQ_LDG4.
struct VectorLoadToEmitC : OpConversionPattern<vector::LoadOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(vector::LoadOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    auto site = op->getAttrOfType<IntegerAttr>(kSiteAttr);
    Type type = getTypeConverter()->convertType(op.getVectorType());
    if (!site || !type)
      return rewriter.notifyMatchFailure(op, "no site or unsupported vector");
    bool shared = isShared(op.getMemRefType());
    if (shared != isFloat4(op.getVectorType()))
      return rewriter.notifyMatchFailure(
          op, "float4 from shared memory, words or halves from global");
    std::string macro =
        shared ? "KVQ_LDS4"
               : "KVQ_LDG" + std::to_string(*vectorWords(op.getVectorType()));
    ArrayAttr args = rewriter.getArrayAttr(
        {site, rewriter.getIndexAttr(0), rewriter.getIndexAttr(1)});
    rewriter.replaceOpWithNewOp<emitc::CallOpaqueOp>(
        op, TypeRange{type}, macro,
        ValueRange{adaptor.getBase(), adaptor.getIndices()[0]}, args);
    return success();
  }
};

/// A 128-bit store of a float4 into shared memory: KVQ_STS4.
struct VectorStoreToEmitC : OpConversionPattern<vector::StoreOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(vector::StoreOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    auto site = op->getAttrOfType<IntegerAttr>(kSiteAttr);
    if (!site || !isShared(op.getMemRefType()) || !isFloat4(op.getVectorType()))
      return rewriter.notifyMatchFailure(op, "only float4 to shared memory");
    ArrayAttr args = rewriter.getArrayAttr({site, rewriter.getIndexAttr(0),
                                            rewriter.getIndexAttr(1),
                                            rewriter.getIndexAttr(2)});
    rewriter.replaceOpWithNewOp<emitc::CallOpaqueOp>(
        op, TypeRange(), "KVQ_STS4",
        ValueRange{adaptor.getBase(), adaptor.getIndices()[0],
                   adaptor.getValueToStore()},
        args);
    return success();
  }
};

/// Four floats into a float4: kvq_float4(a, b, c, d).
struct FromElementsToEmitC : OpConversionPattern<vector::FromElementsOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(vector::FromElementsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    if (!isFloat4(op.getType()))
      return rewriter.notifyMatchFailure(op, "only float4");
    rewriter.replaceOpWithNewOp<emitc::CallOpaqueOp>(
        op, TypeRange{getTypeConverter()->convertType(op.getType())},
        "kvq_float4", adaptor.getElements());
    return success();
  }
};

/// Element k of an int2/int4: kvq_word(v, k) (the prelude maps k to .x...),
/// for halves kvq_f16(v, k) / kvq_bf16(v, k), of a float4 kvq_lane(v, k).
struct VectorExtractToEmitC : OpConversionPattern<vector::ExtractOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(vector::ExtractOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    ArrayRef<int64_t> position = op.getStaticPosition();
    if (position.size() != 1 || !op.getDynamicPosition().empty())
      return rewriter.notifyMatchFailure(op, "only static 1-D extracts");
    ArrayAttr args = rewriter.getArrayAttr(
        {rewriter.getIndexAttr(0), rewriter.getI32IntegerAttr(position[0])});
    Type element = op.getSourceVectorType().getElementType();
    Type result = getTypeConverter()->convertType(element);
    const char *callee = element.isF16()    ? "kvq_f16"
                         : element.isBF16() ? "kvq_bf16"
                         : element.isF32()  ? "kvq_lane"
                                            : "kvq_word";
    if (!result)
      return rewriter.notifyMatchFailure(op, "unsupported element type");
    rewriter.replaceOpWithNewOp<emitc::CallOpaqueOp>(
        op, TypeRange{result}, callee, ValueRange{adaptor.getSource()}, args);
    return success();
  }
};

//===----------------------------------------------------------------------===//
// Arithmetic with C semantics
//===----------------------------------------------------------------------===//

/// The C spelling of a constant: `42`, `0.5f`, `(-3.0f)`, `KVQ_INF`, and a
/// splat float4 (folded from four equal elements) as `kvq_float4(x, x, x, x)`.
std::optional<std::string> constantText(Attribute value) {
  if (auto splat = dyn_cast<SplatElementsAttr>(value)) {
    auto type = dyn_cast<VectorType>(splat.getType());
    if (!type || type.getNumElements() != 4 || !type.getElementType().isF32())
      return std::nullopt;
    std::optional<std::string> element =
        constantText(splat.getSplatValue<Attribute>());
    if (!element)
      return std::nullopt;
    return "kvq_float4(" + *element + ", " + *element + ", " + *element + ", " +
           *element + ")";
  }
  if (auto integer = dyn_cast<IntegerAttr>(value)) {
    if (integer.getType().isInteger(1))
      return std::string(integer.getValue().isZero() ? "false" : "true");
    int64_t v = integer.getValue().getSExtValue();
    // Bit patterns (masks, the 0x4B000000 of the code-to-float trick) read
    // as hex; counts and offsets stay decimal.
    if (v >= (int64_t(1) << 20) && v <= INT32_MAX) {
      char hex[32];
      std::snprintf(hex, sizeof hex, "0x%llX", (unsigned long long)v);
      return std::string(hex);
    }
    return v < 0 ? "(" + std::to_string(v) + ")" : std::to_string(v);
  }
  auto real = dyn_cast<FloatAttr>(value);
  if (!real || !real.getType().isF32())
    return std::nullopt;
  const APFloat &apf = real.getValue();
  if (apf.isNaN()) // a quiet NaN (an FP8 NaN code reads as one)
    return std::string("KVQ_NAN");
  if (apf.isInfinity()) // nvrtc has no INFINITY; the prelude defines KVQ_INF.
    return std::string(apf.isNegative() ? "(-KVQ_INF)" : "KVQ_INF");
  // Shortest text that reads back as the same float.
  float v = apf.convertToFloat();
  std::string text;
  for (int precision = 1; precision <= 9; ++precision) {
    char buffer[64];
    std::snprintf(buffer, sizeof(buffer), "%.*g", precision, std::fabs(v));
    text = buffer;
    if (std::strtof(buffer, nullptr) == std::fabs(v))
      break;
  }
  if (text.find_first_of(".eE") == std::string::npos)
    text += ".0";
  text += "f";
  return apf.isNegative() ? "(-" + text + ")" : text;
}

/// Constants become literals, so the C++ emitter prints them where they are
/// used instead of declaring a variable per constant.
struct ConstantToEmitC : OpConversionPattern<arith::ConstantOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(arith::ConstantOp op, OpAdaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Type type = getTypeConverter()->convertType(op.getType());
    std::optional<std::string> text = constantText(op.getValue());
    if (!type || !text)
      return rewriter.notifyMatchFailure(op, "constant not supported");
    rewriter.replaceOpWithNewOp<emitc::LiteralOp>(op, type, *text);
    return success();
  }
};

/// An op that maps to one EmitC op of the same operands.
template <typename SourceOp, typename TargetOp>
struct DirectToEmitC : OpConversionPattern<SourceOp> {
  using OpConversionPattern<SourceOp>::OpConversionPattern;
  LogicalResult
  matchAndRewrite(SourceOp op, typename SourceOp::Adaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Type type = this->getTypeConverter()->convertType(op.getType());
    rewriter.replaceOpWithNewOp<TargetOp>(op, type, adaptor.getOperands());
    return success();
  }
};

/// An op that becomes a call of a CUDA builtin or a prelude helper.
template <typename SourceOp>
struct CallToEmitC : OpConversionPattern<SourceOp> {
  CallToEmitC(const TypeConverter &converter, MLIRContext *context,
              StringRef callee)
      : OpConversionPattern<SourceOp>(converter, context), callee(callee) {}
  LogicalResult
  matchAndRewrite(SourceOp op, typename SourceOp::Adaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Type type = this->getTypeConverter()->convertType(op.getType());
    rewriter.replaceOpWithNewOp<emitc::CallOpaqueOp>(
        op, TypeRange{type}, callee, adaptor.getOperands());
    return success();
  }
  std::string callee;
};

/// kvq.fp8_from_float and kvq.fp8_to_float become the prelude's
/// kvq_e4m3_from_float / kvq_e5m2_from_float and kvq_e4m3_to_float /
/// kvq_e5m2_to_float.
template <typename SourceOp> struct Fp8ToEmitC : OpConversionPattern<SourceOp> {
  using OpConversionPattern<SourceOp>::OpConversionPattern;
  LogicalResult
  matchAndRewrite(SourceOp op, typename SourceOp::Adaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    bool encode = std::is_same_v<SourceOp, Fp8FromFloatOp>;
    std::string callee =
        std::string(op.getFormat() == CodeFormat::e4m3 ? "kvq_e4m3"
                                                       : "kvq_e5m2") +
        (encode ? "_from_float" : "_to_float");
    rewriter.replaceOpWithNewOp<emitc::CallOpaqueOp>(
        op, TypeRange{this->getTypeConverter()->convertType(op.getType())},
        callee, adaptor.getOperands());
    return success();
  }
};

/// The warp-level tensor-core ops become the prelude's helpers, named for
/// the 16-bit type of their fragments: kvq_mma_f16/kvq_mma_bf16 (float4
/// accumulators), kvq_pack_f16x2/kvq_pack_bf16x2, kvq_transpose_pairs.
template <typename SourceOp>
struct FragmentOpToEmitC : OpConversionPattern<SourceOp> {
  FragmentOpToEmitC(const TypeConverter &converter, MLIRContext *context,
                    StringRef prefix, StringRef f16Suffix, StringRef bf16Suffix)
      : OpConversionPattern<SourceOp>(converter, context), prefix(prefix),
        f16Suffix(f16Suffix), bf16Suffix(bf16Suffix) {}
  LogicalResult
  matchAndRewrite(SourceOp op, typename SourceOp::Adaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    std::string callee = prefix;
    if constexpr (std::is_same_v<SourceOp, MmaOp>)
      callee += op.getInputType().isBF16() ? bf16Suffix : f16Suffix;
    else if constexpr (std::is_same_v<SourceOp, PackPairOp> ||
                       std::is_same_v<SourceOp, PackPairErrorOp>)
      callee += op.getElementType().isBF16() ? bf16Suffix : f16Suffix;
    Type type = this->getTypeConverter()->convertType(op.getType());
    rewriter.replaceOpWithNewOp<emitc::CallOpaqueOp>(
        op, TypeRange{type}, callee, adaptor.getOperands());
    return success();
  }
  std::string prefix, f16Suffix, bf16Suffix;
};

/// kvq.select_halves: kvq_low_halves / kvq_high_halves (one PRMT).
struct SelectHalvesToEmitC : OpConversionPattern<SelectHalvesOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(SelectHalvesOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    rewriter.replaceOpWithNewOp<emitc::CallOpaqueOp>(
        op, TypeRange{rewriter.getI32Type()},
        op.getHigh() ? "kvq_high_halves" : "kvq_low_halves",
        adaptor.getOperands());
    return success();
  }
};

/// kvq.multiply_pair: kvq_mul_f16x2(a, b), or with `error`
/// kvq_mul_f16x2_error(a, b, product).
struct MultiplyPairToEmitC : OpConversionPattern<MultiplyPairOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(MultiplyPairOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    rewriter.replaceOpWithNewOp<emitc::CallOpaqueOp>(
        op, TypeRange{rewriter.getI32Type()},
        adaptor.getProduct() ? "kvq_mul_f16x2_error" : "kvq_mul_f16x2",
        adaptor.getOperands());
    return success();
  }
};

/// kvq.dequantize_pair: kvq_dequantize_pair(codes, scales, zeros or 0,
/// centre), or without scales kvq_pair_codes(codes, centre).
struct DequantizePairToEmitC : OpConversionPattern<DequantizePairOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(DequantizePairOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Value centre =
        emitc::LiteralOp::create(rewriter, op.getLoc(), rewriter.getF32Type(),
                                 std::to_string(op.getCentre()) + ".0f");
    if (!adaptor.getScales()) {
      rewriter.replaceOpWithNewOp<emitc::CallOpaqueOp>(
          op, TypeRange{rewriter.getI32Type()}, "kvq_pair_codes",
          ValueRange{adaptor.getCodes(), centre});
      return success();
    }
    Value zeros = adaptor.getZeros();
    if (!zeros)
      zeros = emitc::LiteralOp::create(rewriter, op.getLoc(),
                                       rewriter.getI32Type(), "0");
    rewriter.replaceOpWithNewOp<emitc::CallOpaqueOp>(
        op, TypeRange{rewriter.getI32Type()}, "kvq_dequantize_pair",
        ValueRange{adaptor.getCodes(), adaptor.getScales(), zeros, centre});
    return success();
  }
};

/// Conversions between numeric types are C casts. uitofp/fptoui only see
/// non-negative values below 2^31 (codes) in kvq kernels, where the signed
/// cast is the same; extui only a flag (i1, a C++ bool: 0 or 1), which the
/// canonicalizer makes of `select(flag, 1, 0)`.
template <typename SourceOp>
struct CastToEmitC : OpConversionPattern<SourceOp> {
  using OpConversionPattern<SourceOp>::OpConversionPattern;
  LogicalResult
  matchAndRewrite(SourceOp op, typename SourceOp::Adaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Type type = this->getTypeConverter()->convertType(op.getType());
    rewriter.replaceOpWithNewOp<emitc::CastOp>(op, type, adaptor.getIn());
    return success();
  }
};

/// index_cast between i32 and index is the identity once index is i32.
struct IndexCastToEmitC : OpConversionPattern<arith::IndexCastOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(arith::IndexCastOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    if (!adaptor.getIn().getType().isInteger(32))
      return rewriter.notifyMatchFailure(op, "only 32-bit index casts");
    rewriter.replaceOp(op, adaptor.getIn());
    return success();
  }
};

struct CmpIToEmitC : OpConversionPattern<arith::CmpIOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(arith::CmpIOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    std::optional<emitc::CmpPredicate> predicate;
    switch (op.getPredicate()) {
    case arith::CmpIPredicate::eq:
      predicate = emitc::CmpPredicate::eq;
      break;
    case arith::CmpIPredicate::ne:
      predicate = emitc::CmpPredicate::ne;
      break;
    case arith::CmpIPredicate::slt:
      predicate = emitc::CmpPredicate::lt;
      break;
    case arith::CmpIPredicate::sle:
      predicate = emitc::CmpPredicate::le;
      break;
    case arith::CmpIPredicate::sgt:
      predicate = emitc::CmpPredicate::gt;
      break;
    case arith::CmpIPredicate::sge:
      predicate = emitc::CmpPredicate::ge;
      break;
    default:
      return rewriter.notifyMatchFailure(op, "unsigned compare not generated");
    }
    rewriter.replaceOpWithNewOp<emitc::CmpOp>(op, rewriter.getI1Type(),
                                              *predicate, adaptor.getLhs(),
                                              adaptor.getRhs());
    return success();
  }
};

/// Ordered float compares are C's operators (false on NaN); une is `!=`.
struct CmpFToEmitC : OpConversionPattern<arith::CmpFOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(arith::CmpFOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    std::optional<emitc::CmpPredicate> predicate;
    switch (op.getPredicate()) {
    case arith::CmpFPredicate::OEQ:
      predicate = emitc::CmpPredicate::eq;
      break;
    case arith::CmpFPredicate::UNE:
      predicate = emitc::CmpPredicate::ne;
      break;
    case arith::CmpFPredicate::OLT:
      predicate = emitc::CmpPredicate::lt;
      break;
    case arith::CmpFPredicate::OLE:
      predicate = emitc::CmpPredicate::le;
      break;
    case arith::CmpFPredicate::OGT:
      predicate = emitc::CmpPredicate::gt;
      break;
    case arith::CmpFPredicate::OGE:
      predicate = emitc::CmpPredicate::ge;
      break;
    default:
      return rewriter.notifyMatchFailure(op, "predicate not generated");
    }
    rewriter.replaceOpWithNewOp<emitc::CmpOp>(op, rewriter.getI1Type(),
                                              *predicate, adaptor.getLhs(),
                                              adaptor.getRhs());
    return success();
  }
};

struct SelectToEmitC : OpConversionPattern<arith::SelectOp> {
  using OpConversionPattern::OpConversionPattern;
  LogicalResult
  matchAndRewrite(arith::SelectOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Type type = getTypeConverter()->convertType(op.getType());
    rewriter.replaceOpWithNewOp<emitc::ConditionalOp>(
        op, type, adaptor.getCondition(), adaptor.getTrueValue(),
        adaptor.getFalseValue());
    return success();
  }
};

/// and/or: logical on i1, bitwise on i32.
template <typename SourceOp, typename LogicalOp, typename BitwiseOp>
struct AndOrToEmitC : OpConversionPattern<SourceOp> {
  using OpConversionPattern<SourceOp>::OpConversionPattern;
  LogicalResult
  matchAndRewrite(SourceOp op, typename SourceOp::Adaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Type type = this->getTypeConverter()->convertType(op.getType());
    if (type.isInteger(1))
      rewriter.replaceOpWithNewOp<LogicalOp>(op, type, adaptor.getLhs(),
                                             adaptor.getRhs());
    else
      rewriter.replaceOpWithNewOp<BitwiseOp>(op, type, adaptor.getLhs(),
                                             adaptor.getRhs());
    return success();
  }
};

//===----------------------------------------------------------------------===//
// Pass
//===----------------------------------------------------------------------===//

/// `(a & b) | c` on i32 becomes kvq_and_or(a, b, c), one LOP3: ptxas does
/// not fuse the two when it unpacks codes (int4 staging loop of the
/// Llama-3-8B kernel: 178 -> 151 SASS instructions). Runs before the
/// conversion, so the emitted C has one statement, not a dead AND.
void fuseAndOr(gpu::GPUFuncOp func) {
  SmallVector<arith::OrIOp> ors;
  func.walk([&](arith::OrIOp op) { ors.push_back(op); });
  for (arith::OrIOp op : ors) {
    auto mask = op.getLhs().getDefiningOp<arith::AndIOp>();
    if (!op.getType().isInteger(32) || !mask || !mask->hasOneUse())
      continue;
    OpBuilder builder(op);
    // A constant mask reads as one: 15 -> 0xF.
    Value bits = mask.getRhs();
    IntegerAttr constant;
    if (matchPattern(bits, m_Constant(&constant)) &&
        constant.getValue().isNonNegative())
      bits = emitc::LiteralOp::create(
          builder, op.getLoc(), bits.getType(),
          llvm::formatv("{0:X}", constant.getValue().getZExtValue()).str());
    auto call = emitc::CallOpaqueOp::create(
        builder, op.getLoc(), TypeRange{op.getType()}, "kvq_and_or",
        ValueRange{mask.getLhs(), bits, op.getRhs()});
    op.replaceAllUsesWith(call.getResult(0));
    op.erase();
    mask.erase();
  }
}

/// `bitcast<f32>(bits) - (2^23 + c)`, the second half of the code-to-float
/// trick (KernelBuilder::dequantizeCode), becomes kvq_code_from_bits(bits,
/// c): a prelude helper whose name and comment say what the bit pattern
/// means. The same FADD after inlining (2^23 + c is folded).
void fuseCodeFromBits(gpu::GPUFuncOp func) {
  constexpr double kTwoPow23 = 8388608.0;
  SmallVector<arith::SubFOp> subs;
  func.walk([&](arith::SubFOp op) { subs.push_back(op); });
  for (arith::SubFOp op : subs) {
    auto cast = op.getLhs().getDefiningOp<arith::BitcastOp>();
    FloatAttr offset;
    if (!cast || !cast.getIn().getType().isInteger(32) ||
        !op.getType().isF32() ||
        !matchPattern(op.getRhs(), m_Constant(&offset)) ||
        offset.getValueAsDouble() < kTwoPow23 ||
        offset.getValueAsDouble() >= kTwoPow23 + 256)
      continue;
    OpBuilder builder(op);
    Value centre = arith::ConstantOp::create(
        builder, op.getLoc(),
        builder.getF32FloatAttr(offset.getValueAsDouble() - kTwoPow23));
    auto call = emitc::CallOpaqueOp::create(
        builder, op.getLoc(), TypeRange{op.getType()}, "kvq_code_from_bits",
        ValueRange{cast.getIn(), centre});
    op.replaceAllUsesWith(call.getResult(0));
    op.erase();
    if (cast->use_empty())
      cast.erase();
  }
}

/// Gives every memory access a site id (per kernel, in program order) and
/// turns shared-memory buffers into named KVQ_SHARED arrays.
void prepareKernel(gpu::GPUFuncOp func) {
  fuseAndOr(func);
  fuseCodeFromBits(func);
  int64_t site = 0;
  Builder attrBuilder(func.getContext());
  func.walk([&](Operation *op) {
    if (isa<memref::LoadOp, memref::StoreOp, memref::AtomicRMWOp,
            vector::LoadOp, vector::StoreOp>(op))
      op->setAttr(kSiteAttr, attrBuilder.getI32IntegerAttr(site++));
  });

  auto names = func->getAttrOfType<ArrayAttr>(kSharedNamesAttr);
  OpBuilder builder = OpBuilder::atBlockBegin(&func.getBody().front());
  for (auto [i, attribution] :
       llvm::enumerate(func.getWorkgroupAttributions())) {
    Value buffer = attribution;
    auto type = cast<MemRefType>(buffer.getType());
    std::string name = "smem_";
    if (names && i < names.size())
      name += cast<StringAttr>(names[i]).str();
    else
      name += std::to_string(i);
    emitc::VerbatimOp::create(
        builder, func.getLoc(),
        builder.getStringAttr("KVQ_SHARED(" + cTypeName(type.getElementType()) +
                              ", " + name + ", " +
                              std::to_string(type.getNumElements()) + ");"));
    Type pointer = emitc::PointerType::get(type.getElementType());
    Value literal = emitc::LiteralOp::create(builder, func.getLoc(), pointer,
                                             builder.getStringAttr(name));
    Value asMemRef = UnrealizedConversionCastOp::create(builder, func.getLoc(),
                                                        type, literal)
                         .getResult(0);
    buffer.replaceAllUsesWith(asMemRef);
  }
}

struct GPUToEmitCPass : mlir::kvq::impl::GPUToEmitCBase<GPUToEmitCPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    MLIRContext *context = &getContext();
    module.walk([](gpu::GPUFuncOp func) { prepareKernel(func); });

    KernelTypeConverter typeConverter(context);
    RewritePatternSet patterns(context);
    populateGPUToEmitCPatterns(typeConverter, patterns);

    ConversionTarget target(*context);
    // Everything inside kernels must end up as EmitC ...
    target.addLegalDialect<emitc::EmitCDialect>();
    target.addIllegalDialect<arith::ArithDialect, math::MathDialect,
                             memref::MemRefDialect, scf::SCFDialect,
                             vector::VectorDialect>();
    target.addIllegalOp<gpu::GPUFuncOp, gpu::ReturnOp, gpu::ThreadIdOp,
                        gpu::BlockIdOp, gpu::GridDimOp, gpu::BlockDimOp,
                        gpu::BarrierOp, gpu::ShuffleOp, MmaOp, PackPairOp,
                        PackPairErrorOp, TransposePairsOp, SelectHalvesOp,
                        DequantizePairOp, PermuteBytesOp, HalfPairOp,
                        MultiplyPairOp, Fp8FromFloatOp, Fp8ToFloatOp>();
    // ... the container stays until the kernels are hoisted out below, and
    // casts between converted and original types are reconciled after.
    target.addLegalOp<gpu::GPUModuleOp, UnrealizedConversionCastOp>();
    if (failed(applyPartialConversion(module, target, std::move(patterns))))
      return signalPassFailure();

    // Hoist the kernels to the top level, where the C++ emitter expects them.
    for (auto gpuModule :
         llvm::make_early_inc_range(module.getOps<gpu::GPUModuleOp>())) {
      for (Operation &op : llvm::make_early_inc_range(*gpuModule.getBody()))
        op.moveBefore(gpuModule);
      gpuModule.erase();
    }
    module->removeAttr(gpu::GPUDialect::getContainerModuleAttrName());

    // Reconcile the casts the conversion left between pointer types.
    SmallVector<UnrealizedConversionCastOp> casts;
    module.walk(
        [&](UnrealizedConversionCastOp cast) { casts.push_back(cast); });
    for (UnrealizedConversionCastOp cast : casts) {
      if (cast.getNumOperands() == 1 && cast.getNumResults() == 1) {
        Value input = cast.getOperand(0);
        if (input.getType() == cast.getResult(0).getType()) {
          cast.getResult(0).replaceAllUsesWith(input);
          cast.erase();
        }
      }
    }
    bool leftovers = false;
    module.walk([&](Operation *op) {
      if (isa<UnrealizedConversionCastOp>(op)) {
        // A memref view of a pointer whose users all became EmitC.
        if (op->use_empty()) {
          op->erase();
          return;
        }
      }
      if (op->getDialect() && !isa<emitc::EmitCDialect>(op->getDialect()) &&
          !isa<ModuleOp>(op)) {
        op->emitError("kvq-gpu-to-emitc left this op unconverted");
        leftovers = true;
      }
    });
    if (leftovers)
      signalPassFailure();
  }
};

} // namespace

void mlir::kvq::populateGPUToEmitCPatterns(TypeConverter &typeConverter,
                                           RewritePatternSet &patterns) {
  MLIRContext *context = patterns.getContext();
  patterns.add<
      GPUFuncToEmitC, GPUReturnToEmitC, GPUBarrierToEmitC, GPUShuffleToEmitC,
      LoadToEmitC, StoreToEmitC, AtomicAddToEmitC, VectorLoadToEmitC,
      VectorStoreToEmitC, FromElementsToEmitC, VectorExtractToEmitC,
      ConstantToEmitC, IndexCastToEmitC, CmpIToEmitC, CmpFToEmitC,
      SelectToEmitC, DirectToEmitC<arith::AddIOp, emitc::AddOp>,
      DirectToEmitC<arith::SubIOp, emitc::SubOp>,
      DirectToEmitC<arith::MulIOp, emitc::MulOp>,
      DirectToEmitC<arith::DivSIOp, emitc::DivOp>,
      DirectToEmitC<arith::RemSIOp, emitc::RemOp>,
      DirectToEmitC<arith::AddFOp, emitc::AddOp>,
      DirectToEmitC<arith::SubFOp, emitc::SubOp>,
      DirectToEmitC<arith::MulFOp, emitc::MulOp>,
      DirectToEmitC<arith::DivFOp, emitc::DivOp>,
      AndOrToEmitC<arith::AndIOp, emitc::LogicalAndOp, emitc::BitwiseAndOp>,
      AndOrToEmitC<arith::OrIOp, emitc::LogicalOrOp, emitc::BitwiseOrOp>,
      CastToEmitC<arith::ExtFOp>, CastToEmitC<arith::TruncFOp>,
      CastToEmitC<arith::SIToFPOp>, CastToEmitC<arith::UIToFPOp>,
      CastToEmitC<arith::FPToUIOp>, CastToEmitC<arith::FPToSIOp>,
      CastToEmitC<arith::ExtUIOp>>(typeConverter, context);
  patterns.add<GPUIdToEmitC<gpu::ThreadIdOp>>(typeConverter, context,
                                              "threadIdx");
  patterns.add<GPUIdToEmitC<gpu::BlockIdOp>>(typeConverter, context,
                                             "blockIdx");
  patterns.add<GPUIdToEmitC<gpu::GridDimOp>>(typeConverter, context, "gridDim");
  patterns.add<GPUIdToEmitC<gpu::BlockDimOp>>(typeConverter, context,
                                              "blockDim");
  // Only i32 -> f32 (the exponent trick that turns a code into a float).
  patterns.add<CallToEmitC<arith::BitcastOp>>(typeConverter, context,
                                              "__int_as_float");
  patterns.add<CallToEmitC<arith::MaxNumFOp>>(typeConverter, context, "fmaxf");
  patterns.add<CallToEmitC<arith::MinNumFOp>>(typeConverter, context, "fminf");
  patterns.add<CallToEmitC<math::AbsFOp>>(typeConverter, context, "fabsf");
  patterns.add<CallToEmitC<math::ExpOp>>(typeConverter, context, "__expf");
  patterns.add<CallToEmitC<math::Exp2Op>>(typeConverter, context, "kvq_exp2");
  patterns.add<CallToEmitC<math::RoundEvenOp>>(typeConverter, context, "rintf");
  // sqrtf is correctly rounded in device code unless -prec-sqrt=false,
  // which kvq never passes; the host library's is too (the emulator).
  patterns.add<CallToEmitC<math::SqrtOp>>(typeConverter, context, "sqrtf");
  patterns.add<CallToEmitC<arith::MinSIOp>>(typeConverter, context, "kvq_min");
  patterns.add<CallToEmitC<arith::MaxSIOp>>(typeConverter, context, "kvq_max");
  patterns.add<CallToEmitC<arith::ShRUIOp>>(typeConverter, context, "kvq_shr");
  patterns.add<CallToEmitC<arith::ShLIOp>>(typeConverter, context, "kvq_shl");
  patterns.add<FragmentOpToEmitC<MmaOp>>(typeConverter, context, "kvq_mma_",
                                         "f16", "bf16");
  patterns.add<FragmentOpToEmitC<PackPairOp>>(typeConverter, context,
                                              "kvq_pack_", "f16x2", "bf16x2");
  patterns.add<SelectHalvesToEmitC, DequantizePairToEmitC>(typeConverter,
                                                           context);
  patterns.add<FragmentOpToEmitC<PackPairErrorOp>>(
      typeConverter, context, "kvq_pack_", "f16x2_error", "bf16x2_error");
  patterns.add<FragmentOpToEmitC<TransposePairsOp>>(
      typeConverter, context, "kvq_transpose_pairs", "", "");
  patterns.add<CallToEmitC<PermuteBytesOp>>(typeConverter, context,
                                            "kvq_byte_perm");
  patterns.add<CallToEmitC<HalfPairOp>>(typeConverter, context,
                                        "kvq_half_pair");
  patterns.add<MultiplyPairToEmitC, Fp8ToEmitC<Fp8FromFloatOp>,
               Fp8ToEmitC<Fp8ToFloatOp>>(typeConverter, context);
  populateSCFToEmitCConversionPatterns(patterns, typeConverter);
}
