//===- Generator.cpp - from a kernel spec to CUDA C++ ---------------------===//

#include "kvq/Codegen/Generator.h"

#include "CarriedCopies.h"
#include "SourceNames.h"

#include "kvq/Conversion/KernelABI.h"
#include "kvq/Conversion/Passes.h"
#include "kvq/Dialect/KVQ/IR/KVQLayout.h"
#include "kvq/Dialect/KVQ/IR/KVQOps.h"
#include "kvq/Registration/Registration.h"
#include "kvq/Transforms/Passes.h"

#include "mlir/Dialect/EmitC/IR/EmitC.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Target/Cpp/CppEmitter.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/raw_ostream.h"

#include <cctype>
#include <chrono>

using namespace mlir;
using namespace mlir::kvq;
using ::kvq::GeneratedSource;
using ::kvq::GeneratorOptions;
using ::kvq::KernelSpec;

namespace {

//===----------------------------------------------------------------------===//
// Spec -> kvq IR
//===----------------------------------------------------------------------===//

SchemeAttr toAttr(MLIRContext &context, const ::kvq::QuantScheme &s) {
  Type scale = s.fp32Scales ? Type(Float32Type::get(&context))
                            : Type(Float16Type::get(&context));
  return SchemeAttr::get(
      &context, s.bits, s.group == 0 ? SchemeAttr::kWholeHeadDim : s.group,
      s.axis == ::kvq::QuantScheme::Axis::Token ? Axis::token : Axis::channel,
      s.symmetric ? Mode::symmetric : Mode::asymmetric, scale,
      s.interleaved ? PackOrder::interleaved : PackOrder::linear,
      CodeFormat(int(s.format)), ScaleSource(int(s.scales)));
}
// QuantScheme's enums are in the dialect's order.
static_assert(int(::kvq::QuantScheme::Format::E5M2) == int(CodeFormat::e5m2) &&
                  int(::kvq::QuantScheme::Scales::Head) ==
                      int(ScaleSource::head),
              "QuantScheme::Format/Scales and the dialect's enums differ");

constexpr int64_t kDyn = ShapedType::kDynamic;

RankedTensorType tensorOf(ArrayRef<int64_t> shape, Type element) {
  return RankedTensorType::get(shape, element);
}

/// Types of (codes or words, scales[, zeros]) of a quantized [B,H,T,D]
/// tensor with static heads `heads`.
struct QuantizedTypes {
  RankedTensorType codes, words, scales;
  bool zeroPoints;
  /// `data` (codes or words), the scales and, when the scheme has them, the
  /// zero points: the order of every quantized tensor's values.
  SmallVector<Type> with(Type data) const {
    SmallVector<Type> types = {data, scales};
    if (zeroPoints)
      types.push_back(scales);
    return types;
  }
};

/// The types of a quantized tensor of `tokens` tokens per head row (dynamic
/// by default; a page's tokens for a paged pool).
QuantizedTypes quantizedTypes(SchemeAttr scheme, int64_t heads, int64_t headDim,
                              int64_t tokens = kDyn) {
  SmallVector<int64_t, 4> shape = {kDyn, heads, tokens, headDim};
  Builder b(scheme.getContext());
  Type scaleType = scheme.getScaleType();
  return {tensorOf(shape, b.getI8Type()),
          tensorOf(packedShape(scheme, shape), b.getI32Type()),
          tensorOf(scalesShape(scheme, shape), scaleType),
          scheme.hasZeroPoints()};
}

} // namespace

namespace kvq {
ModuleOp buildKernelModule(MLIRContext &context, const KernelSpec &spec) {
  OpBuilder b(&context);
  Location loc = NameLoc::get(b.getStringAttr(spec.canonical()));
  ModuleOp module = ModuleOp::create(loc);
  b.setInsertionPointToEnd(module.getBody());
  Type half = spec.dtype == ::kvq::HalfType::F16 ? Type(b.getF16Type())
                                                 : Type(b.getBF16Type());
  int64_t d = spec.headDim;
  SchemeAttr key = toAttr(context, spec.key);

  auto makeFunc = [&](ArrayRef<Type> inputs, ArrayRef<Type> results) {
    auto func = func::FuncOp::create(b, loc, "kernel",
                                     b.getFunctionType(inputs, results));
    Block *entry = func.addEntryBlock();
    b.setInsertionPointToStart(entry);
    return func;
  };

  // Per-head static scales index the kv heads: those of the spec, fixed.
  int64_t staticHeads =
      spec.key.scales == ::kvq::QuantScheme::Scales::Head ? spec.kvHeads : kDyn;

  switch (spec.kind) {
  case ::kvq::KernelKind::Quantize: {
    if (key.isStatic()) {
      // Given scales in, codes out (packed by the fused kernel).
      QuantizedTypes t = quantizedTypes(key, staticHeads, d);
      auto input = tensorOf({kDyn, staticHeads, kDyn, d}, half);
      SmallVector<Type> inputs = {input, t.scales};
      if (t.zeroPoints)
        inputs.push_back(t.scales);
      auto func = makeFunc(inputs, {t.words});
      Value zeros = t.zeroPoints ? func.getArgument(2) : Value();
      auto quantize = QuantizeStaticOp::create(
          b, loc, t.codes, func.getArgument(0), func.getArgument(1), zeros, key,
          /*plan=*/PlanAttr());
      Value words = PackOp::create(b, loc, t.words, quantize.getCodes(), key);
      func::ReturnOp::create(b, loc, words);
      break;
    }
    QuantizedTypes t = quantizedTypes(key, kDyn, d);
    auto input = tensorOf({kDyn, kDyn, kDyn, d}, half);
    auto func = makeFunc({input}, t.with(t.words));
    SmallVector<NamedAttribute> attrs = {b.getNamedAttr("scheme", key)};
    if (spec.zeroPoints == ::kvq::ZeroPointSearch::Hqq)
      attrs.push_back(b.getNamedAttr(
          "zeroPoints",
          ZeroPointSearchAttr::get(&context, mlir::kvq::ZeroPointSearch::hqq)));
    auto quantize = QuantizeOp::create(b, loc, t.with(t.codes),
                                       ValueRange{func.getArgument(0)}, attrs);
    Value words = PackOp::create(b, loc, t.words, quantize.getCodes(), key);
    SmallVector<Value> returned = {words, quantize.getScales()};
    if (quantize.getZeros())
      returned.push_back(quantize.getZeros());
    func::ReturnOp::create(b, loc, returned);
    break;
  }
  case ::kvq::KernelKind::Dequantize: {
    QuantizedTypes t = quantizedTypes(key, staticHeads, d);
    auto output = tensorOf({kDyn, staticHeads, kDyn, d}, half);
    auto func = makeFunc(t.with(t.words), {output});
    Value zeros = key.hasZeroPoints() ? func.getArgument(2) : Value();
    Value x = DequantizeOp::create(b, loc, output, func.getArgument(0),
                                   func.getArgument(1), zeros, key,
                                   /*plan=*/PlanAttr());
    func::ReturnOp::create(b, loc, x);
    break;
  }
  case ::kvq::KernelKind::Attention:
  case ::kvq::KernelKind::DenseAttention: {
    // Quantized: dequantize(K), dequantize(V) feeding kvq.attention, which
    // kvq-fuse folds into kvq.quantized_attention. Dense: kvq.attention over
    // the fp16/bf16 tensors themselves, which lowers to the dense kernel.
    // Paged: kvq.quantized_attention over the pool itself (kvq.attention
    // has no paged form).
    bool dense = spec.kind == ::kvq::KernelKind::DenseAttention;
    bool paged = spec.pageTokens > 0;
    SchemeAttr value = toAttr(context, spec.value);
    int64_t hq = spec.queryHeads, hkv = spec.kvHeads;
    int64_t bodyTokens = paged ? int64_t(spec.pageTokens) : kDyn;
    QuantizedTypes kt = quantizedTypes(key, hkv, d, bodyTokens);
    QuantizedTypes vt = quantizedTypes(value, hkv, d, bodyTokens);
    auto query = tensorOf({kDyn, hq, d}, half);
    auto segment = tensorOf({kDyn, hkv, kDyn, d}, half);
    auto lengths = tensorOf({kDyn, 3}, b.getI32Type());
    SmallVector<Type> inputs = {query};
    if (dense) {
      inputs.append({segment, segment});
    } else {
      inputs.append(kt.with(kt.words));
      inputs.append(vt.with(vt.words));
    }
    if (spec.sink)
      inputs.append({segment, segment});
    if (spec.residual)
      inputs.append({segment, segment});
    inputs.push_back(lengths);
    if (paged)
      inputs.push_back(tensorOf({kDyn, kDyn}, b.getI32Type())); // block table
    auto func = makeFunc(inputs, {query});
    auto args = func.getArguments();
    unsigned i = 0;
    Value q = args[i++];
    Value k, v, kw, ks, kz, vw, vs, vz;
    if (dense) {
      k = args[i++];
      v = args[i++];
    } else {
      kw = args[i++], ks = args[i++];
      kz = key.hasZeroPoints() ? Value(args[i++]) : Value();
      vw = args[i++], vs = args[i++];
      vz = value.hasZeroPoints() ? Value(args[i++]) : Value();
      if (!paged) {
        k = DequantizeOp::create(b, loc, segment, kw, ks, kz, key, PlanAttr());
        v = DequantizeOp::create(b, loc, segment, vw, vs, vz, value,
                                 PlanAttr());
      }
    }
    Value sk, sv, rk, rv;
    if (spec.sink) {
      sk = args[i++];
      sv = args[i++];
    }
    if (spec.residual) {
      rk = args[i++];
      rv = args[i++];
    }
    Value lens = args[i++];
    float scale = 1.0f / std::sqrt(static_cast<float>(d));
    Value out;
    // kvq-plan fills the plan; a forced path is the one field set here.
    PlanAttr plan;
    if (spec.path != AttentionPath::Auto) {
      ::kvq::LaunchPlan forced;
      forced.attentionPath =
          spec.path == AttentionPath::TensorCores ? kTensorCores : kCudaCores;
      plan = PlanAttr::get(b.getContext(), forced);
    }
    if (paged)
      out = QuantizedAttentionOp::create(
          b, loc, query, q, kw, ks, kz, vw, vs, vz, sk, sv, rk, rv, lens,
          /*block_table=*/args[i++], key, value, b.getF32FloatAttr(scale),
          b.getI64IntegerAttr(spec.pageTokens),
          spec.chunked ? b.getUnitAttr() : UnitAttr(),
          spec.nhdPages ? b.getUnitAttr() : UnitAttr(), plan);
    else
      out = AttentionOp::create(b, loc, query, q, k, v, sk, sv, rk, rv, lens,
                                b.getF32FloatAttr(scale), plan);
    func::ReturnOp::create(b, loc, out);
    break;
  }
  case ::kvq::KernelKind::Append: {
    // The new token of every sequence; the cache's state (lengths, block
    // table, and the buffers KernelABI.h lists) is written in place.
    SchemeAttr value = toAttr(context, spec.value);
    auto token = tensorOf({kDyn, kDyn, 1, d}, half);
    auto lengths = tensorOf({kDyn, 3}, b.getI32Type());
    auto table = tensorOf({kDyn, kDyn}, b.getI32Type());
    auto func = makeFunc({token, token, lengths, table}, {});
    auto args = func.getArguments();
    CacheAppendOp::create(b, loc, args[0], args[1], args[2], args[3], key,
                          value, /*plan=*/PlanAttr());
    func::ReturnOp::create(b, loc);
    break;
  }
  }
  return module;
}
} // namespace kvq

namespace {

//===----------------------------------------------------------------------===//
// EmitC -> CUDA C++
//===----------------------------------------------------------------------===//

std::string printOp(Operation *op) {
  std::string text;
  llvm::raw_string_ostream os(text);
  op->print(os);
  return text;
}

/// The C++ spelling of a kernel argument type, as the emitter prints it.
std::string cSpelling(Type type) {
  if (auto pointer = dyn_cast<emitc::PointerType>(type))
    return cSpelling(pointer.getPointee()) + "*";
  if (auto opaque = dyn_cast<emitc::OpaqueType>(type))
    return opaque.getValue().str();
  if (type.isF32())
    return "float";
  if (type.isInteger(32))
    return "int32_t";
  if (type.isInteger(1))
    return "bool";
  return "void";
}

llvm::Expected<GeneratedSource> emitCuda(ModuleOp module,
                                         GeneratedSource result) {
  std::string kernels;
  llvm::raw_string_ostream header(result.cuda);
  header << "// Generated by kvq " << ::kvq::kVersion << " -- do not edit.\n"
         << "// Launch contract: kvq/Conversion/KernelABI.h.\n";
  for (auto func : module.getOps<emitc::FuncOp>()) {
    ::kvq::GeneratedKernel kernel;
    kernel.name = func.getName().str();
    if (auto kind = func->getAttrOfType<StringAttr>(abi::kKernelKind))
      kernel.kind = kind.str();
    if (auto spec = func->getAttrOfType<StringAttr>(abi::kSpec))
      kernel.spec = spec.str();
    if (auto threads = func->getAttrOfType<IntegerAttr>(abi::kThreads))
      kernel.threads = threads.getInt();
    if (auto plan = func->getAttrOfType<PlanAttr>(abi::kPlan)) {
      llvm::raw_string_ostream(kernel.planText) << Attribute(plan);
      kernel.plan = plan.toLaunchPlan();
      if (kernel.kind == "attention")
        kernel.sharedBytes = static_cast<int>(kernel.plan.sharedBytes);
    }
    for (Type type : func.getArgumentTypes())
      kernel.argTypes.push_back(cSpelling(type));
    if (auto names = func->getAttrOfType<ArrayAttr>(abi::kArgNames))
      for (Attribute name : names)
        kernel.argNames.push_back(cast<StringAttr>(name).str());

    std::string body;
    llvm::raw_string_ostream os(body);
    ::kvq::markNamedValues(func);
    if (failed(emitc::translateToCpp(func, os)))
      return llvm::createStringError("cannot emit C++ for kernel " +
                                     kernel.name);
    header << "//\n// " << kernel.name << " (" << kernel.kind << ")\n"
           << "//   spec: " << kernel.spec << "\n"
           << "//   plan: " << kernel.planText << "\n"
           << "//   block: " << kernel.threads << " threads\n";
    kernels += "\n" + ::kvq::nameValues(::kvq::dropCarriedCopies(body),
                                        kernel.argNames);
    result.kernels.push_back(std::move(kernel));
  }
  header << "\n#include \"" << ::kvq::kPreludeName << "\"\n";
  result.cuda += kernels;
  return result;
}

/// Collects diagnostics into one message for an llvm::Error.
class DiagnosticCollector {
public:
  explicit DiagnosticCollector(MLIRContext &context)
      : handler(&context, [this](Diagnostic &diag) {
          llvm::raw_string_ostream os(messages);
          os << diag.getLocation() << ": " << diag.str() << "\n";
          for (Diagnostic &note : diag.getNotes())
            os << "  note: " << note.str() << "\n";
          return success();
        }) {}
  llvm::Error error(const llvm::Twine &what) const {
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   what + ":\n" + messages);
  }

private:
  std::string messages;
  ScopedDiagnosticHandler handler;
};

} // namespace

::kvq::Generator::Generator() : ctx(std::make_unique<MLIRContext>()) {
  DialectRegistry registry;
  registerKVQDialects(registry);
  ctx->appendDialectRegistry(registry);
  ctx->loadAllAvailableDialects();
  // Kernels are generated from one thread per Generator.
  ctx->disableMultithreading();
  // Diagnostics reach users as error messages; the op dump adds only noise.
  ctx->printOpOnDiagnostic(false);
}

::kvq::Generator::~Generator() = default;

MLIRContext & ::kvq::Generator::context() { return *ctx; }

namespace kvq {
llvm::Expected<GeneratedSource>
Generator::generate(const KernelSpec &spec, const GeneratorOptions &options) {
  if (std::optional<std::string> error = spec.validate())
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "invalid kernel spec '" + spec.canonical() +
                                       "': " + *error);
  DiagnosticCollector diagnostics(*ctx);
  OwningOpRef<ModuleOp> module = buildKernelModule(*ctx, spec);
  if (failed(mlir::verify(*module)))
    return diagnostics.error("kvq IR built for '" + spec.canonical() +
                             "' does not verify");
  return generate(*module, options);
}

llvm::Expected<GeneratedSource>
Generator::generate(ModuleOp module, const GeneratorOptions &options) {
  auto start = std::chrono::steady_clock::now();
  DiagnosticCollector diagnostics(*ctx);
  GeneratedSource result;
  auto keep = [&](const char *stage) {
    if (options.keepStages)
      result.stages.emplace_back(stage, printOp(module));
  };
  keep("kvq");

  // The kvq-to-cuda pipeline (Conversion/Passes.h), run stage by stage so
  // each stage's IR can be kept.
  KVQToCUDAPipelineOptions pipeline;
  pipeline.arch = options.arch;
  for (KVQToCUDAStage stage : kKVQToCUDAStages) {
    static const std::pair<const char *, const char *> names[] = {
        {"planned", "kvq-fuse/kvq-plan failed"},
        {"gpu", "kvq-to-gpu failed"},
        {"emitc", "kvq-gpu-to-emitc failed"}};
    const auto &[kept, failure] = names[int(stage)];
    PassManager pm(ctx.get());
    addKVQToCUDAStage(pm, stage, pipeline);
    if (failed(pm.run(module)))
      return diagnostics.error(failure);
    keep(kept);
  }

  llvm::Expected<GeneratedSource> emitted = emitCuda(module, std::move(result));
  if (!emitted)
    return emitted.takeError();
  emitted->mlirMillis = std::chrono::duration<double, std::milli>(
                            std::chrono::steady_clock::now() - start)
                            .count();
  if (options.keepStages)
    emitted->stages.emplace_back("cuda", emitted->cuda);
  return emitted;
}
} // namespace kvq
