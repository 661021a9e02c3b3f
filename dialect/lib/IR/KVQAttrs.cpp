//===- KVQAttrs.cpp - #kvq.scheme parsing, printing, verification ---------===//

#include "kvq/Dialect/KVQ/IR/KVQAttrs.h"
#include "kvq/Dialect/KVQ/IR/KVQDialect.h"
#include "kvq/Dialect/KVQ/IR/SchemeRules.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/MathExtras.h"

using namespace mlir;
using namespace mlir::kvq;

#include "kvq/Dialect/KVQ/IR/KVQEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "kvq/Dialect/KVQ/IR/KVQAttrs.cpp.inc"

void KVQDialect::registerAttributes() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "kvq/Dialect/KVQ/IR/KVQAttrs.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// Verification
//===----------------------------------------------------------------------===//

LogicalResult SchemeAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                 unsigned bits, unsigned group, Axis axis,
                                 Mode mode, Type scaleType, PackOrder order,
                                 CodeFormat format, ScaleSource staticScales) {
  if (!::kvq::scheme_rules::validBits(bits))
    return emitError() << ::kvq::scheme_rules::kBitsRule << ", got " << bits;
  if (group != kWholeHeadDim && !::kvq::scheme_rules::validGroup(group))
    return emitError() << ::kvq::scheme_rules::kGroupRule
                       << " or 'head_dim', got " << group;
  if (!scaleType || !(scaleType.isF16() || scaleType.isF32()))
    return emitError() << "scale type must be f16 or f32, got " << scaleType;
  bool fp8 = format != CodeFormat::integer;
  bool isStatic = staticScales != ScaleSource::group;
  if ((fp8 || isStatic) &&
      (axis != Axis::token || group != kWholeHeadDim || !scaleType.isF32() ||
       (fp8 && (bits != 8 || mode != Mode::symmetric ||
                order != PackOrder::linear || !isStatic))))
    return emitError() << ::kvq::scheme_rules::kStaticRule;
  return success();
}

/// The rules of a plan that hold whatever op it is attached to; those that
/// depend on the op's shapes are in KVQOps.cpp (verifyPlanFits).
LogicalResult PlanAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                               StringRef arch, int64_t threads,
                               int64_t halfVector, int64_t tileTokens,
                               int64_t minTokensPerSplit, int64_t smCount,
                               int64_t keyVectorWords, int64_t valueVectorWords,
                               int64_t scoresPerThread, int64_t sharedBytes,
                               int64_t attentionPath, int64_t queryRows) {
  if (!arch.empty() && !::kvq::archNumber(arch))
    return emitError() << "plan: " << ::kvq::kArchRule << ", got '" << arch
                       << "'";
  if (threads && (threads < 32 || threads > 1024 || threads % 32 != 0))
    return emitError() << "plan: threads must be a multiple of 32 in "
                          "[32, 1024], got "
                       << threads;
  if (halfVector && halfVector != 1 && halfVector != 4 && halfVector != 8)
    return emitError() << "plan: halfVector must be 1, 4 or 8, got "
                       << halfVector;
  if (tileTokens && (tileTokens < 16 || tileTokens % 16 != 0))
    return emitError() << "plan: tileTokens must be a positive multiple of "
                          "16, got "
                       << tileTokens;
  if (minTokensPerSplit && tileTokens &&
      (minTokensPerSplit < tileTokens || minTokensPerSplit % tileTokens))
    return emitError() << "plan: minTokensPerSplit must be a multiple of "
                          "tileTokens ("
                       << tileTokens << "), got " << minTokensPerSplit;
  for (auto [name, words] : {std::pair{"keyVectorWords", keyVectorWords},
                             std::pair{"valueVectorWords", valueVectorWords}})
    if (words && words != 1 && words != 2 && words != 4)
      return emitError() << "plan: " << name << " must be 1, 2 or 4, got "
                         << words;
  if (scoresPerThread && scoresPerThread != 1 && scoresPerThread != 2)
    return emitError() << "plan: scoresPerThread must be 1 or 2, got "
                       << scoresPerThread;
  if (smCount < 0)
    return emitError() << "plan: smCount must not be negative, got " << smCount;
  if (sharedBytes < 0 || sharedBytes > ::kvq::kMaxStaticSharedBytes)
    return emitError() << "plan: sharedBytes must be in [0, "
                       << ::kvq::kMaxStaticSharedBytes << "], got "
                       << sharedBytes;
  if (attentionPath && attentionPath != ::kvq::kCudaCores &&
      attentionPath != ::kvq::kTensorCores)
    return emitError() << "plan: attentionPath must be " << ::kvq::kCudaCores
                       << " (CUDA cores) or " << ::kvq::kTensorCores
                       << " (tensor cores), got " << attentionPath;
  if (queryRows && (queryRows < 1 || queryRows > ::kvq::kMaxQueryRows))
    return emitError() << "plan: queryRows must be in [1, "
                       << ::kvq::kMaxQueryRows << "], got " << queryRows;
  return success();
}

PlanAttr PlanAttr::get(MLIRContext *context, const ::kvq::LaunchPlan &plan) {
  return get(context, StringRef(plan.arch), plan.threads, plan.halfVector,
             plan.tileTokens, plan.minTokensPerSplit, plan.smCount,
             plan.keyVectorWords, plan.valueVectorWords, plan.scoresPerThread,
             plan.sharedBytes, plan.attentionPath, plan.queryRows);
}

::kvq::LaunchPlan PlanAttr::toLaunchPlan() const {
  ::kvq::LaunchPlan plan;
  plan.arch = getArch().str();
  plan.threads = getThreads();
  plan.halfVector = getHalfVector();
  plan.tileTokens = getTileTokens();
  plan.minTokensPerSplit = getMinTokensPerSplit();
  plan.smCount = getSmCount();
  plan.keyVectorWords = getKeyVectorWords();
  plan.valueVectorWords = getValueVectorWords();
  plan.scoresPerThread = getScoresPerThread();
  plan.sharedBytes = getSharedBytes();
  plan.attentionPath = getAttentionPath();
  plan.queryRows = getQueryRows();
  return plan;
}

//===----------------------------------------------------------------------===//
// Assembly: #kvq.scheme<bits = 4, group = 64, axis = token, ...>
//===----------------------------------------------------------------------===//

namespace {
/// Parses `keyword` as one of the cases of an enum, naming the valid ones
/// if it is not.
template <typename EnumT>
ParseResult parseEnumKeyword(AsmParser &parser, StringRef paramName,
                             std::optional<EnumT> (*symbolize)(StringRef),
                             StringRef validCases, EnumT &result) {
  SMLoc loc = parser.getCurrentLocation();
  StringRef keyword;
  if (parser.parseKeyword(&keyword))
    return failure();
  std::optional<EnumT> value = symbolize(keyword);
  if (!value)
    return parser.emitError(loc) << "'" << paramName << "' must be one of "
                                 << validCases << ", got '" << keyword << "'";
  result = *value;
  return success();
}
} // namespace

Attribute SchemeAttr::parse(AsmParser &parser, Type) {
  unsigned bits = 0;
  unsigned group = 0;
  Axis axis = Axis::token;
  Mode mode = Mode::asymmetric;
  PackOrder order = PackOrder::linear;
  CodeFormat format = CodeFormat::integer;
  ScaleSource staticScales = ScaleSource::group;
  Type scaleType = Float16Type::get(parser.getContext());
  llvm::StringSet<> seen;
  SMLoc start = parser.getCurrentLocation();

  auto parseParam = [&]() -> ParseResult {
    SMLoc loc = parser.getCurrentLocation();
    StringRef key;
    if (parser.parseKeyword(&key) || parser.parseEqual())
      return failure();
    if (!seen.insert(key).second)
      return parser.emitError(loc)
             << "scheme parameter '" << key << "' given twice";
    if (key == "bits")
      return parser.parseInteger(bits);
    if (key == "group") {
      if (succeeded(parser.parseOptionalKeyword("head_dim"))) {
        group = kWholeHeadDim;
        return success();
      }
      SMLoc groupLoc = parser.getCurrentLocation();
      if (parser.parseInteger(group))
        return failure();
      if (group == kWholeHeadDim)
        return parser.emitError(groupLoc)
               << "group must be a power of two in [16, 256] or 'head_dim', "
                  "got 0";
      return success();
    }
    if (key == "axis")
      return parseEnumKeyword<Axis>(parser, key, symbolizeAxis,
                                    "'token', 'channel'", axis);
    if (key == "mode")
      return parseEnumKeyword<Mode>(parser, key, symbolizeMode,
                                    "'asymmetric', 'symmetric'", mode);
    if (key == "order")
      return parseEnumKeyword<PackOrder>(parser, key, symbolizePackOrder,
                                         "'linear', 'interleaved'", order);
    if (key == "scale")
      return parser.parseType(scaleType);
    if (key == "format")
      return parseEnumKeyword<CodeFormat>(parser, key, symbolizeCodeFormat,
                                          "'integer', 'e4m3', 'e5m2'", format);
    if (key == "static")
      return parseEnumKeyword<ScaleSource>(parser, key, symbolizeScaleSource,
                                           "'group', 'tensor', 'head'",
                                           staticScales);
    return parser.emitError(loc)
           << "unknown scheme parameter '" << key
           << "' (expected bits, group, axis, mode, scale, order, format, "
              "static)";
  };

  if (parser.parseLess() ||
      parser.parseCommaSeparatedList(AsmParser::Delimiter::None, parseParam) ||
      parser.parseGreater())
    return {};
  for (StringRef required : {"bits", "group", "axis"}) {
    if (!seen.contains(required)) {
      parser.emitError(start)
          << "scheme is missing required parameter '" << required << "'";
      return {};
    }
  }
  return parser.getChecked<SchemeAttr>(parser.getContext(), bits, group, axis,
                                       mode, scaleType, order, format,
                                       staticScales);
}

void SchemeAttr::print(AsmPrinter &printer) const {
  printer << "<bits = " << getBits() << ", group = ";
  if (isWholeHeadDim())
    printer << "head_dim";
  else
    printer << getGroup();
  printer << ", axis = " << stringifyAxis(getAxis());
  if (getMode() != Mode::asymmetric)
    printer << ", mode = " << stringifyMode(getMode());
  if (!getScaleType().isF16())
    printer << ", scale = " << getScaleType();
  if (getOrder() != PackOrder::linear)
    printer << ", order = " << stringifyPackOrder(getOrder());
  if (isFp8())
    printer << ", format = " << stringifyCodeFormat(getFormat());
  if (isStatic())
    printer << ", static = " << stringifyScaleSource(getStaticScales());
  printer << ">";
}
