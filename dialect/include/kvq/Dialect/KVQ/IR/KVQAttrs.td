//===- KVQAttrs.td - kvq enums and attributes --------------*- tablegen -*-===//

#ifndef KVQ_ATTRS_TD
#define KVQ_ATTRS_TD

include "kvq/Dialect/KVQ/IR/KVQDialect.td"
include "mlir/IR/EnumAttr.td"

//===----------------------------------------------------------------------===//
// Enums (printed as keywords, never as integers)
//===----------------------------------------------------------------------===//

def KVQ_AxisToken : I32EnumAttrCase<"token", 0>;
def KVQ_AxisChannel : I32EnumAttrCase<"channel", 1>;
def KVQ_Axis : I32EnumAttr<"Axis",
    "which elements share a scale: consecutive channels of one token, or "
    "consecutive tokens of one channel",
    [KVQ_AxisToken, KVQ_AxisChannel]> {
  let cppNamespace = "::mlir::kvq";
  let genSpecializedAttr = 0;
}

def KVQ_ModeAsymmetric : I32EnumAttrCase<"asymmetric", 0>;
def KVQ_ModeSymmetric : I32EnumAttrCase<"symmetric", 1>;
def KVQ_Mode : I32EnumAttr<"Mode",
    "asymmetric (scale and zero point = group minimum) or symmetric "
    "(scale only, codes centred on 2^(bits-1))",
    [KVQ_ModeAsymmetric, KVQ_ModeSymmetric]> {
  let cppNamespace = "::mlir::kvq";
  let genSpecializedAttr = 0;
}

def KVQ_OrderLinear : I32EnumAttrCase<"linear", 0>;
def KVQ_OrderInterleaved : I32EnumAttrCase<"interleaved", 1>;
def KVQ_PackOrder : I32EnumAttr<"PackOrder",
    "where code j of a 32-bit word lives: `linear` puts it in bits "
    "[j*bits, (j+1)*bits); `interleaved` puts code 2i in slot i and code "
    "2i+1 in slot i + n/2, so one mask yields a pair for a half2",
    [KVQ_OrderLinear, KVQ_OrderInterleaved]> {
  let cppNamespace = "::mlir::kvq";
  let genSpecializedAttr = 0;
}

def KVQ_FormatInteger : I32EnumAttrCase<"integer", 0>;
def KVQ_FormatE4M3 : I32EnumAttrCase<"e4m3", 1>;
def KVQ_FormatE5M2 : I32EnumAttrCase<"e5m2", 2>;
def KVQ_CodeFormat : I32EnumAttr<"CodeFormat",
    "what a code means: an integer (`code * scale + zero`) or an OCP FP8 "
    "value (`fp8(code) * scale`: `e4m3`, `e5m2`)",
    [KVQ_FormatInteger, KVQ_FormatE4M3, KVQ_FormatE5M2]> {
  let cppNamespace = "::mlir::kvq";
  let genSpecializedAttr = 0;
}

/// As an op attribute (kvq.fp8_from_float), printed as its bare keyword.
def KVQ_CodeFormatAttr : EnumAttr<KVQ_Dialect, KVQ_CodeFormat, "code_format">;

def KVQ_ScalesGroup : I32EnumAttrCase<"group", 0>;
def KVQ_ScalesTensor : I32EnumAttrCase<"tensor", 1>;
def KVQ_ScalesHead : I32EnumAttrCase<"head", 2>;
def KVQ_ScaleSource : I32EnumAttr<"ScaleSource",
    "where scales come from: computed per group and stored with the codes, "
    "or given ahead of time (calibrated), one per tensor or per kv head",
    [KVQ_ScalesGroup, KVQ_ScalesTensor, KVQ_ScalesHead]> {
  let cppNamespace = "::mlir::kvq";
  let genSpecializedAttr = 0;
}

def KVQ_ZeroPointsMinMax : I32EnumAttrCase<"minmax", 0>;
def KVQ_ZeroPointsHqq : I32EnumAttrCase<"hqq", 1>;
def KVQ_ZeroPointSearch : I32EnumAttr<"ZeroPointSearch",
    "how a quantize kernel picks an asymmetric group's zero point: `minmax` "
    "(the group minimum) or `hqq` (the minimum refined by HQQ's "
    "half-quadratic solver; ZeroPointSearch.h)",
    [KVQ_ZeroPointsMinMax, KVQ_ZeroPointsHqq]> {
  let cppNamespace = "::mlir::kvq";
  let genSpecializedAttr = 0;
}
/// As an op attribute, printed as its bare keyword (`zeroPoints hqq`).
def KVQ_ZeroPointSearchAttr
    : EnumAttr<KVQ_Dialect, KVQ_ZeroPointSearch, "zero_points">;

//===----------------------------------------------------------------------===//
// #kvq.scheme
//===----------------------------------------------------------------------===//

def KVQ_SchemeAttr : KVQ_Attr<"Scheme", "scheme"> {
  let summary = "How a KV tensor is quantized";
  let description = [{
    A quantization scheme. Parameters:
    - `bits`: 2, 4 or 8 bits per code;
    - `group`: how many elements share one scale, a power of two in
      [16, 256] or the keyword `head_dim` (one group per head vector);
    - `axis`: `token` groups consecutive channels of one token (KIVI values,
      Hugging Face QuantizedCache); `channel` groups consecutive tokens of
      one channel (KIVI keys);
    - `mode`: `asymmetric` (default) or `symmetric`;
    - `scale`: storage type of scales and zero points, `f16` (default) or
      `f32`;
    - `order`: packing order inside a 32-bit word, `linear` (default) or
      `interleaved`;
    - `format`: `integer` (default) or an FP8 format, `e4m3` or `e5m2`
      (codes are the bytes of `x / scale`, read as `fp8 * scale`);
    - `static`: scales given ahead of time, one per `tensor` or per kv
      `head` (fp32, `[1, 1, 1, 1]` or `[1, H, 1, 1]`), instead of computed
      per group and stored (the default, `group`). Static schemes and FP8
      use the token axis, `group = head_dim` and `scale = f32`; FP8 is
      8-bit, symmetric and linear.

    Parameters with their default value may be omitted and are not printed.

    ```mlir
    #kvq.scheme<bits = 2, group = 32, axis = channel>
    #kvq.scheme<bits = 4, group = head_dim, axis = token, mode = symmetric,
                scale = f32, order = interleaved>
    #kvq.scheme<bits = 8, group = head_dim, axis = token, mode = symmetric,
                scale = f32, format = e4m3, static = head>
    ```
  }];
  let parameters = (ins
    "unsigned":$bits,
    "unsigned":$group,
    "::mlir::kvq::Axis":$axis,
    "::mlir::kvq::Mode":$mode,
    "::mlir::Type":$scaleType,
    "::mlir::kvq::PackOrder":$order,
    "::mlir::kvq::CodeFormat":$format,
    "::mlir::kvq::ScaleSource":$staticScales
  );
  let hasCustomAssemblyFormat = 1;
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Group value that means "one group per head vector".
    static constexpr unsigned kWholeHeadDim = 0;

    bool isWholeHeadDim() const { return getGroup() == kWholeHeadDim; }
    bool isSymmetric() const { return getMode() == ::mlir::kvq::Mode::symmetric; }
    bool hasZeroPoints() const { return !isSymmetric(); }
    /// Number of elements sharing one scale for a head of `headDim` channels.
    unsigned groupSize(int64_t headDim) const {
      return isWholeHeadDim() ? static_cast<unsigned>(headDim) : getGroup();
    }
    /// Number of codes in one 32-bit word.
    unsigned codesPerWord() const { return 32 / getBits(); }
    /// Largest unsigned code, 2^bits - 1.
    unsigned maxCode() const { return (1u << getBits()) - 1; }
    /// Scales given ahead of time (per tensor or kv head), none stored.
    bool isStatic() const {
      return getStaticScales() != ::mlir::kvq::ScaleSource::group;
    }
    bool isFp8() const {
      return getFormat() != ::mlir::kvq::CodeFormat::integer;
    }
  }];
}

//===----------------------------------------------------------------------===//
// #kvq.plan
//===----------------------------------------------------------------------===//

def KVQ_PlanAttr : KVQ_Attr<"Plan", "plan"> {
  let summary = "How a kernel is launched: block size, tiles, vector widths";
  let description = [{
    The launch plan of one kvq op, chosen by `--kvq-plan` and read by the
    lowering (block size, tiles, vector widths) and the runtime (split-K
    count, shared memory). Every parameter is optional: an unset one (0, or
    no arch) is filled by `--kvq-plan`, and one a user writes is kept, so a
    plan can be overridden in the IR. The verifier checks what holds for
    any op; the op verifiers check what depends on the op's shapes.
    The same fields, without MLIR, are `kvq::LaunchPlan` (LaunchPlan.h).

    - `arch`: target, `"sm_75"` .. `"sm_121"`;
    - `threads`: threads per block, a multiple of 32 in [32, 1024];
    - `halfVector`: fp16/bf16 elements per load, 1, 4 or 8;
    - attention only: `tileTokens` (tokens per shared-memory tile, a
      multiple of 16), `minTokensPerSplit` (shortest split-K part, a multiple
      of `tileTokens`), `smCount` (SMs the split count assumes when the
      device's are unknown), `keyVectorWords` and `valueVectorWords` (packed
      words per load, 1, 2 or 4), `scoresPerThread` (1 or 2) and
      `sharedBytes` (derived from the tile; at most 49152) and
      `attentionPath` (1: CUDA cores over shared-memory tiles, 2: tensor
      cores, `mma.sync` on fragments dequantized in registers) and
      `queryRows` (chunked attention on the tensor cores: consecutive query
      rows a block takes as more columns of its MMAs, 1 .. 16).

    ```mlir
    #kvq.plan<arch = "sm_90", threads = 128, halfVector = 8>
    #kvq.plan<tileTokens = 16>
    ```
  }];
  let parameters = (ins
    StringRefParameter<"target arch", "\"\"">:$arch,
    OptionalParameter<"int64_t">:$threads,
    OptionalParameter<"int64_t">:$halfVector,
    OptionalParameter<"int64_t">:$tileTokens,
    OptionalParameter<"int64_t">:$minTokensPerSplit,
    OptionalParameter<"int64_t">:$smCount,
    OptionalParameter<"int64_t">:$keyVectorWords,
    OptionalParameter<"int64_t">:$valueVectorWords,
    OptionalParameter<"int64_t">:$scoresPerThread,
    OptionalParameter<"int64_t">:$sharedBytes,
    OptionalParameter<"int64_t">:$attentionPath,
    OptionalParameter<"int64_t">:$queryRows
  );
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
  let extraClassDeclaration = [{
    /// Field by field from / to the MLIR-free twin (LaunchPlan.h).
    static PlanAttr get(::mlir::MLIRContext *context,
                        const ::kvq::LaunchPlan &plan);
    ::kvq::LaunchPlan toLaunchPlan() const;
  }];
}

#endif // KVQ_ATTRS_TD
