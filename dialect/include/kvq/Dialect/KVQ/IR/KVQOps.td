//===- KVQOps.td - kvq operations --------------------------*- tablegen -*-===//
//
// Tensors use the KV-cache layout [batch, heads, tokens, head_dim]. Codes are
// i8 tensors of unsigned codes (unpacked) or i32 tensors of packed words.
// Shapes of packed words and scales follow from the scheme; the verifiers
// check them with the helpers in KVQLayout.h, which the lowering reuses.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_OPS_TD
#define KVQ_OPS_TD

include "kvq/Dialect/KVQ/IR/KVQAttrs.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

//===----------------------------------------------------------------------===//
// Type constraints
//===----------------------------------------------------------------------===//

def KVQ_HalfTensor4D : 4DTensorOf<[F16, BF16]>;
def KVQ_HalfTensor3D : 3DTensorOf<[F16, BF16]>;
def KVQ_CodeTensor : 4DTensorOf<[I8]>;
def KVQ_WordTensor : 4DTensorOf<[I32]>;
def KVQ_CodeOrWordTensor : 4DTensorOf<[I8, I32]>;
def KVQ_ScaleTensor : 4DTensorOf<[F16, F32]>;
def KVQ_LengthsTensor : 2DTensorOf<[I32]>;

//===----------------------------------------------------------------------===//
// Quantization
//===----------------------------------------------------------------------===//

def KVQ_QuantizeOp : KVQ_Op<"quantize", [Pure]> {
  let summary = "Quantize fp16/bf16 KV tensors to codes, scales and zero points";
  let description = [{
    Splits `input` into groups as the scheme says and quantizes each group:
    asymmetric `scale = (max - min) / (2^bits - 1)`, zero point `min`;
    symmetric `scale = amax / (2^(bits-1) - 1)` and no zero points. Scale and
    zero are rounded to their storage type before the codes are computed;
    codes round half to even and are clamped.

    `zeroPoints hqq` (asymmetric schemes only) refines each group's zero
    point after min-max with HQQ's half-quadratic solver, the scale kept:
    lower error for the same bits, at the cost of a few passes over the
    group (bulk prefill quantization; ZeroPointSearch.h has the algorithm).

    `codes` is an i8 tensor with the input's shape (one unsigned code per
    element), or, after `--kvq-fuse`, an i32 tensor of packed words (the
    layout `kvq.pack` produces). Scales are `[B, H, T, D/group]` for
    `axis = token` and `[B, H, T/group, D]` for `axis = channel`.

    ```mlir
    %codes, %scales, %zeros = kvq.quantize %v scheme <bits = 2, group = 32, axis = token>
        : tensor<1x8x64x128xf16>
        -> tensor<1x8x64x128xi8>, tensor<1x8x64x4xf16>, tensor<1x8x64x4xf16>
    ```
  }];
  let arguments = (ins KVQ_HalfTensor4D:$input, KVQ_SchemeAttr:$scheme,
                       DefaultValuedAttr<KVQ_ZeroPointSearchAttr,
                           "::mlir::kvq::ZeroPointSearch::minmax">:$zeroPoints,
                       OptionalAttr<KVQ_PlanAttr>:$plan);
  let results = (outs KVQ_CodeOrWordTensor:$codes, KVQ_ScaleTensor:$scales,
                      Optional<KVQ_ScaleTensor>:$zeros);
  let assemblyFormat = [{
    $input `scheme` $scheme (`zeroPoints` `` $zeroPoints^)? attr-dict `:` type($input) `->`
    type($codes) `,` type($scales) (`,` type($zeros)^)?
  }];
  let hasVerifier = 1;
}

def KVQ_QuantizeStaticOp : KVQ_Op<"quantize_static", [Pure]> {
  let summary = "Quantize KV tensors with scales given ahead of time";
  let description = [{
    Quantizes `input` with a static scheme (`static = tensor` or `head`):
    the fp32 `scales` (and, asymmetric, `zeros`) are given - calibrated
    ahead of time, `[1, 1, 1, 1]` per tensor or `[1, H, 1, 1]` per kv head
    - and only codes come out, exactly `bits` per element. Integer codes as
    `kvq.quantize` computes them from a group's scale and zero point; FP8
    codes (`format = e4m3 | e5m2`) are the bytes of `x / scale` (nearest
    even, saturating), vLLM's FP8 KV cache.

    `codes` is an i8 tensor with the input's shape, or, after `--kvq-fuse`,
    packed i32 words.

    ```mlir
    %codes = kvq.quantize_static %k, %scales scheme <bits = 8,
        group = head_dim, axis = token, mode = symmetric, scale = f32,
        format = e4m3, static = head>
        : tensor<1x8x64x128xf16>, tensor<1x8x1x1xf32> -> tensor<1x8x64x128xi8>
    ```
  }];
  let arguments = (ins KVQ_HalfTensor4D:$input, KVQ_ScaleTensor:$scales,
                       Optional<KVQ_ScaleTensor>:$zeros, KVQ_SchemeAttr:$scheme,
                       OptionalAttr<KVQ_PlanAttr>:$plan);
  let results = (outs KVQ_CodeOrWordTensor:$codes);
  let assemblyFormat = [{
    $input `,` $scales (`,` $zeros^)? `scheme` $scheme attr-dict `:`
    type($input) `,` type($scales) (`,` type($zeros)^)? `->` type($codes)
  }];
  let hasVerifier = 1;
}

def KVQ_PackOp : KVQ_Op<"pack", [Pure]> {
  let summary = "Pack unsigned codes little-endian into 32-bit words";
  let description = [{
    Packs `32 / bits` codes into each i32 word: along channels for
    `axis = token` (`[B, H, T, D] -> [B, H, T, D*bits/32]`) and along tokens
    for `axis = channel` (`[B, H, T, D] -> [B, H, T*bits/32, D]`, so one word
    holds consecutive tokens of one channel and a warp reading consecutive
    words reads consecutive channels). The scheme's `order` says where each
    code lives inside its word.

    ```mlir
    %words = kvq.pack %codes scheme <bits = 4, group = 64, axis = token>
        : tensor<1x8x64x128xi8> -> tensor<1x8x64x16xi32>
    ```
  }];
  let arguments = (ins KVQ_CodeTensor:$codes, KVQ_SchemeAttr:$scheme);
  let results = (outs KVQ_WordTensor:$words);
  let assemblyFormat = [{
    $codes `scheme` $scheme attr-dict `:` type($codes) `->` type($words)
  }];
  let hasVerifier = 1;
  let hasFolder = 1;
}

def KVQ_UnpackOp : KVQ_Op<"unpack", [Pure]> {
  let summary = "Unpack 32-bit words into unsigned codes";
  let description = [{
    The inverse of `kvq.pack` for the same scheme.

    ```mlir
    %codes = kvq.unpack %words scheme <bits = 2, group = 32, axis = channel>
        : tensor<1x8x4x128xi32> -> tensor<1x8x64x128xi8>
    ```
  }];
  let arguments = (ins KVQ_WordTensor:$words, KVQ_SchemeAttr:$scheme);
  let results = (outs KVQ_CodeTensor:$codes);
  let assemblyFormat = [{
    $words `scheme` $scheme attr-dict `:` type($words) `->` type($codes)
  }];
  let hasVerifier = 1;
  let hasFolder = 1;
}

def KVQ_DequantizeOp : KVQ_Op<"dequantize", [Pure]> {
  let summary = "Reconstruct fp16/bf16 values from codes, scales and zero points";
  let description = [{
    Computes `code * scale + zero` (asymmetric) or
    `(code - 2^(bits-1)) * scale` (symmetric) in fp32 and rounds to the
    result type. `codes` may be unpacked i8 codes or packed i32 words.
    `kvq.dequantize` of a `kvq.quantize` is *not* folded away: quantization
    loses information, so the round trip is not the identity.

    ```mlir
    %k = kvq.dequantize %words, %scales, %zeros scheme <bits = 2, group = 32, axis = channel>
        : tensor<1x8x4x128xi32>, tensor<1x8x2x128xf16>, tensor<1x8x2x128xf16>
        -> tensor<1x8x64x128xf16>
    ```
  }];
  let arguments = (ins KVQ_CodeOrWordTensor:$codes, KVQ_ScaleTensor:$scales,
                       Optional<KVQ_ScaleTensor>:$zeros,
                       KVQ_SchemeAttr:$scheme,
                       OptionalAttr<KVQ_PlanAttr>:$plan);
  let results = (outs KVQ_HalfTensor4D:$output);
  let assemblyFormat = [{
    $codes `,` $scales (`,` $zeros^)? `scheme` $scheme attr-dict `:`
    type($codes) `,` type($scales) (`,` type($zeros)^)? `->` type($output)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Decode attention
//===----------------------------------------------------------------------===//

class KVQ_AttentionOp<string mnemonic> : KVQ_Op<mnemonic,
    [Pure, AttrSizedOperandSegments]> {
  let results = (outs KVQ_HalfTensor3D:$output);
  let hasVerifier = 1;
  code commonDescription = [{
    For each batch `b` and query head `h`, with kv head
    `kvh = h / (Hq / Hkv)` (GQA/MQA):
    `out[b, h] = sum_t softmax_t(scale * <q[b, h], K[b, kvh, t]>) * V[b, kvh, t]`
    over the fp16 sink tokens, the body tokens and the fp16 residual tokens,
    in that order. `lengths` is `[B, 3]` i32: the number of valid sink, body
    and residual tokens of each sequence (rows may differ, so a batch may
    hold sequences of different lengths). Softmax runs in fp32 with max
    subtraction; a sequence with no tokens yields zeros.
  }];
}

def KVQ_AttentionOp : KVQ_AttentionOp<"attention"> {
  let summary = "Decode attention over fp16/bf16 keys and values";
  let description = commonDescription # [{

    ```mlir
    %out = kvq.attention %q, keys(%k), values(%v) sink(%sk, %sv)
        residual(%rk, %rv) lengths(%lens) scale 0.0883883461
        : (tensor<2x32x128xf16>, tensor<2x8x256x128xf16>,
           tensor<2x8x256x128xf16>, tensor<2x8x4x128xf16>,
           tensor<2x8x4x128xf16>, tensor<2x8x128x128xf16>,
           tensor<2x8x128x128xf16>, tensor<2x3xi32>) -> tensor<2x32x128xf16>
    ```
  }];
  let arguments = (ins KVQ_HalfTensor3D:$query,
                       KVQ_HalfTensor4D:$keys, KVQ_HalfTensor4D:$values,
                       Optional<KVQ_HalfTensor4D>:$sink_keys,
                       Optional<KVQ_HalfTensor4D>:$sink_values,
                       Optional<KVQ_HalfTensor4D>:$residual_keys,
                       Optional<KVQ_HalfTensor4D>:$residual_values,
                       KVQ_LengthsTensor:$lengths,
                       F32Attr:$softmax_scale,
                       OptionalAttr<KVQ_PlanAttr>:$plan);
  let assemblyFormat = [{
    $query `,` `keys` `(` $keys `)` `,` `values` `(` $values `)`
    (`sink` `(` $sink_keys^ `,` $sink_values `)`)?
    (`residual` `(` $residual_keys^ `,` $residual_values `)`)?
    `lengths` `(` $lengths `)` `scale` $softmax_scale attr-dict `:`
    functional-type(operands, results)
  }];
}

def KVQ_QuantizedAttentionOp : KVQ_AttentionOp<"quantized_attention"> {
  let summary = "Decode attention reading quantized keys and values directly";
  let description = commonDescription # [{

    The body keys and values are packed words with their scales (and zero
    points for asymmetric schemes); they are unpacked in registers and never
    materialized. `--kvq-fuse` forms this op from `kvq.attention` over
    `kvq.dequantize` results. Key and value schemes are independent.

    Paged: with `pages(%block_table, N)` the body codes, scales and zero
    points are a pool of pages, `[pages, kv_heads, N tokens (packed), ...]`,
    and `block_table` (`[batch, max_pages]` i32) gives the page of each
    sequence's tokens `[i*N, (i+1)*N)`. N is a multiple of 16 and of every
    channel-axis group, so a tile never crosses a page. `nhd`: each page
    is stored token-major instead, `[pages, N tokens, kv_heads, ...]` in
    memory (vLLM's FlashAttention layout; the types keep the kv-head-major
    shape), for static-scale token-axis schemes (no scales in the pages).

    Chunked (`chunked`): several query rows per sequence (chunked prefill,
    speculative verification). Row `b` of `query`, `lengths` and the output
    is one query token; a runtime table (KernelABI.h: `row_sequences`)
    names the sequence whose sink, body, residual and block table row it
    reads, and its own `lengths` row says how much of that sequence it
    sees: a causal chunk gives each of its tokens the prefix up to itself.

    ```mlir
    %out = kvq.quantized_attention %q,
        keys(%kw, %ks, %kz) scheme <bits = 2, group = 32, axis = channel>,
        values(%vw, %vs, %vz) scheme <bits = 2, group = 32, axis = token>
        lengths(%lens) scale 0.125
        : (tensor<1x4x64xf16>, tensor<1x4x4x64xi32>, tensor<1x4x2x64xf16>,
           tensor<1x4x2x64xf16>, tensor<1x4x64x4xi32>, tensor<1x4x64x2xf16>,
           tensor<1x4x64x2xf16>, tensor<1x3xi32>) -> tensor<1x4x64xf16>
    ```
  }];
  let arguments = (ins KVQ_HalfTensor3D:$query,
                       KVQ_WordTensor:$key_codes, KVQ_ScaleTensor:$key_scales,
                       Optional<KVQ_ScaleTensor>:$key_zeros,
                       KVQ_WordTensor:$value_codes,
                       KVQ_ScaleTensor:$value_scales,
                       Optional<KVQ_ScaleTensor>:$value_zeros,
                       Optional<KVQ_HalfTensor4D>:$sink_keys,
                       Optional<KVQ_HalfTensor4D>:$sink_values,
                       Optional<KVQ_HalfTensor4D>:$residual_keys,
                       Optional<KVQ_HalfTensor4D>:$residual_values,
                       KVQ_LengthsTensor:$lengths,
                       Optional<KVQ_LengthsTensor>:$block_table,
                       KVQ_SchemeAttr:$key_scheme,
                       KVQ_SchemeAttr:$value_scheme,
                       F32Attr:$softmax_scale,
                       OptionalAttr<I64Attr>:$page_tokens,
                       UnitAttr:$chunked,
                       UnitAttr:$nhd,
                       OptionalAttr<KVQ_PlanAttr>:$plan);
  let assemblyFormat = [{
    $query `,`
    `keys` `(` $key_codes `,` $key_scales (`,` $key_zeros^)? `)`
        `scheme` $key_scheme `,`
    `values` `(` $value_codes `,` $value_scales (`,` $value_zeros^)? `)`
        `scheme` $value_scheme
    (`sink` `(` $sink_keys^ `,` $sink_values `)`)?
    (`residual` `(` $residual_keys^ `,` $residual_values `)`)?
    `lengths` `(` $lengths `)`
    (`pages` `(` $block_table^ `,` $page_tokens `)`)?
    (`nhd` $nhd^)?
    (`chunked` $chunked^)?
    `scale` $softmax_scale attr-dict `:`
    functional-type(operands, results)
  }];
}

//===----------------------------------------------------------------------===//
// The paged cache's decode step
//===----------------------------------------------------------------------===//

def KVQ_CacheAppendOp : KVQ_Op<"cache_append",
    [MemoryEffects<[MemRead, MemWrite]>]> {
  let summary = "One decode step of a paged quantized KV cache";
  let description = [{
    Every sequence of the batch that holds tokens takes one new token: row b
    of `keys` and `values` (`[batch, kv_heads, 1, head_dim]`). `lengths`
    (`[batch, 3]`: sink, quantized, residual tokens) says where it goes: into
    the fp16 sink while the sink is not full, else at the end of the fp16
    residual; when the residual then holds `residual + flush` tokens, its
    oldest `flush` are quantized with `key_scheme` / `value_scheme` into the
    sequence's page of the pool (`block_table`, `[batch, max_pages]`; a
    page the table lacks is taken from the pool's free-page stack) and the
    rest move to the front. The step updates `lengths`, so a decode step
    needs no copy from the host.

    The op writes the cache in place (it has no results); the sink, residual,
    pool and free-page stack it also writes are runtime buffers
    (kvq/Conversion/KernelABI.h, `append`), as are the counts `residual` and
    `flush`, which are launch arguments.

    ```mlir
    kvq.cache_append %k, %v lengths(%lens) pages(%table)
        keys scheme <bits = 2, group = 32, axis = channel>
        values scheme <bits = 2, group = 32, axis = token>
        : tensor<?x8x1x128xf16>, tensor<?x8x1x128xf16>, tensor<?x3xi32>,
          tensor<?x?xi32>
    ```
  }];
  let arguments = (ins KVQ_HalfTensor4D:$keys, KVQ_HalfTensor4D:$values,
                       KVQ_LengthsTensor:$lengths,
                       KVQ_LengthsTensor:$block_table,
                       KVQ_SchemeAttr:$key_scheme,
                       KVQ_SchemeAttr:$value_scheme,
                       OptionalAttr<KVQ_PlanAttr>:$plan);
  let assemblyFormat = [{
    $keys `,` $values `lengths` `(` $lengths `)` `pages` `(` $block_table `)`
    `keys` `scheme` $key_scheme `values` `scheme` $value_scheme attr-dict `:`
    type($keys) `,` type($values) `,` type($lengths) `,` type($block_table)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Warp-level tensor-core ops
//
// Made by --kvq-to-gpu inside the tensor-core attention kernel and lowered by
// --kvq-gpu-to-emitc to prelude helpers (kvq_prelude.cuh), which are
// mma.sync / movmatrix on a GPU and warp collectives in the emulator. Every
// lane of the warp must execute them together: they have no memory effects
// but are not Pure, so no pass moves one into a branch or out of a loop.
//===----------------------------------------------------------------------===//

def KVQ_HalfPairType : AnyTypeOf<[F16, BF16]>;

def KVQ_MmaOp : KVQ_Op<"mma", [AllTypesMatch<["acc", "result"]>]> {
  let summary = "D = A.B + C for one 16x8x16 tile on the tensor cores";
  let description = [{
    `mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}` for the calling
    warp: `a0`..`a3` are this lane's A fragment (16x16, row-major) and
    `b0`, `b1` its B fragment (16x8, column-major), each i32 two
    `input_type` values (low half first), in the register layout of the PTX
    ISA ("Matrix Fragments for mma.m16n8k16"); `acc` and the result are its
    four fp32 accumulators of C/D (16x8).

    ```mlir
    %d = kvq.mma %a0, %a1, %a2, %a3, %b0, %b1, %c f16 : vector<4xf32>
    ```
  }];
  let arguments = (ins I32:$a0, I32:$a1, I32:$a2, I32:$a3, I32:$b0, I32:$b1,
                       VectorOfLengthAndType<[4], [F32]>:$acc,
                       TypeAttrOf<KVQ_HalfPairType>:$input_type);
  let results = (outs VectorOfLengthAndType<[4], [F32]>:$result);
  let assemblyFormat = [{
    $a0 `,` $a1 `,` $a2 `,` $a3 `,` $b0 `,` $b1 `,` $acc $input_type attr-dict
    `:` type($result)
  }];
}

def KVQ_PackPairOp : KVQ_Op<"pack_pair", [Pure]> {
  let summary = "Two fp32 values rounded to f16/bf16 in one 32-bit register";
  let description = [{
    `low` and `high` rounded to nearest even in `element_type`, `low` in
    bits 0-15: one operand register of a tensor-core fragment
    (`cvt.rn.f16x2.f32`).

    ```mlir
    %pair = kvq.pack_pair %lo, %hi f16
    ```
  }];
  let arguments = (ins F32:$low, F32:$high,
                       TypeAttrOf<KVQ_HalfPairType>:$element_type);
  let results = (outs I32:$pair);
  let assemblyFormat = "$low `,` $high $element_type attr-dict";
}

def KVQ_PackPairErrorOp : KVQ_Op<"pack_pair_error", [Pure]> {
  let summary = "What kvq.pack_pair of two fp32 values rounded away, packed";
  let description = [{
    `low - float(pair.low)` and `high - float(pair.high)`, rounded into one
    register of `element_type` like `kvq.pack_pair`, where `pair` is
    `kvq.pack_pair %low, %high`: the two registers together carry about
    twice the mantissa bits (22 for f16, 16 for bf16), so an MMA over both
    is as accurate as fp32 operands for a product whose other side is
    exact (fp16/bf16 queries against dequantized keys).

    ```mlir
    %error = kvq.pack_pair_error %lo, %hi, %pair f16
    ```
  }];
  let arguments = (ins F32:$low, F32:$high, I32:$pair,
                       TypeAttrOf<KVQ_HalfPairType>:$element_type);
  let results = (outs I32:$error);
  let assemblyFormat = "$low `,` $high `,` $pair $element_type attr-dict";
}

def KVQ_SelectHalvesOp : KVQ_Op<"select_halves", [Pure]> {
  let summary = "The low (or high) 16 bits of two registers, side by side";
  let description = [{
    `low`: `a[0:16] | b[0:16] << 16`; `high`: `a[16:32] | b[16:32] << 16`
    (one `prmt`): two fp16 pairs of two tokens regrouped into the pairs of
    one channel that an MMA fragment holds.

    ```mlir
    %pair = kvq.select_halves %a, %b high
    ```
  }];
  let arguments = (ins I32:$a, I32:$b, UnitAttr:$high);
  let results = (outs I32:$pair);
  let assemblyFormat = "$a `,` $b (`high` $high^)? attr-dict";
}

def KVQ_PermuteBytesOp : KVQ_Op<"permute_bytes", [Pure]> {
  let summary = "Four bytes picked from two registers by a run-time selector";
  let description = [{
    `prmt.b32` / `__byte_perm(a, b, selector)`: byte `i` of the result is
    byte `selector[4i:4i+3] & 7` of the 8 bytes `b:a` (`a`'s first). A
    selector held in a register lets each lane pick the halves its own
    tokens lie in: 0x5410 the low halves of `a` and `b`, 0x7632 the high.

    ```mlir
    %pair = kvq.permute_bytes %a, %b, %selector
    ```
  }];
  let arguments = (ins I32:$a, I32:$b, I32:$selector);
  let results = (outs I32:$permuted);
  let assemblyFormat = "$a `,` $b `,` $selector attr-dict";
}

def KVQ_Fp8FromFloatOp : KVQ_Op<"fp8_from_float", [Pure]> {
  let summary = "The OCP FP8 byte of an fp32 value";
  let description = [{
    `x` rounded to the nearest `e4m3` or `e5m2` value (ties to even),
    saturating at the largest finite one (CUDA's `__NV_SATFINITE`, what
    vLLM writes), as an i32 in [0, 255]; NaN gives 0x7F with x's sign.

    ```mlir
    %byte = kvq.fp8_from_float %x e4m3
    ```
  }];
  let arguments = (ins F32:$x, KVQ_CodeFormatAttr:$format);
  let results = (outs I32:$byte);
  let assemblyFormat = "$x $format attr-dict";
  let hasVerifier = 1;
}

def KVQ_Fp8ToFloatOp : KVQ_Op<"fp8_to_float", [Pure]> {
  let summary = "The value of an OCP FP8 byte, exactly";
  let description = [{
    `byte` (an i32 in [0, 255]) read as an `e4m3` or `e5m2` value, as fp32
    (exact: both formats are subsets of fp32), NaN and infinity codes as
    such.

    ```mlir
    %x = kvq.fp8_to_float %byte e5m2
    ```
  }];
  let arguments = (ins I32:$byte, KVQ_CodeFormatAttr:$format);
  let results = (outs F32:$x);
  let assemblyFormat = "$byte $format attr-dict";
  let hasVerifier = 1;
}

def KVQ_HalfPairOp : KVQ_Op<"half_pair", [Pure, AllTypesMatch<["low", "high"]>]> {
  let summary = "Two fp16/bf16 values side by side in one register, unchanged";
  let description = [{
    The bits of `low` in bits 0-15 and of `high` in bits 16-31: two
    neighbouring 16-bit values of a vector load, as the one register they
    came from (no conversion, no rounding).

    ```mlir
    %pair = kvq.half_pair %lo, %hi : f16
    ```
  }];
  let arguments = (ins KVQ_HalfPairType:$low, KVQ_HalfPairType:$high);
  let results = (outs I32:$pair);
  let assemblyFormat = "$low `,` $high attr-dict `:` type($low)";
}

def KVQ_MultiplyPairOp : KVQ_Op<"multiply_pair", [Pure]> {
  let summary = "Two fp16 pairs multiplied, or what that product rounded away";
  let description = [{
    `a * b` element by element, each rounded once to fp16 (`hmul2`); with
    `error %product`, `a * b - product` rounded once to fp16 (`hfma2`, the
    product exact inside it), where `product` is the `kvq.multiply_pair` of
    `a` and `b`: the two registers together carry the exact product (22
    bits) to about 2^-22, so MMAs over both are as accurate as fp32 operands
    for an exact other side (integer codes).

    ```mlir
    %p = kvq.multiply_pair %q, %scales
    %e = kvq.multiply_pair %q, %scales error %p
    ```
  }];
  let arguments = (ins I32:$a, I32:$b, Optional<I32>:$product);
  let results = (outs I32:$result);
  let assemblyFormat = "$a `,` $b (`error` $product^)? attr-dict";
}

def KVQ_DequantizePairOp : KVQ_Op<"dequantize_pair", [Pure, AttrSizedOperandSegments]> {
  let summary = "Two codes held as fp16 1024 + code, dequantized in fp16";
  let description = [{
    `codes` holds two fp16 values `1024 + code` (the code's bits under the
    exponent of 1024, 0x6400: one LOP3 from a packed word); the result is
    `(code - centre) * scale + zero` for each, rounded once to fp16
    (`hsub2`, then `hfma2`), with `scales` and `zeros` fp16 pairs; without
    scales, the exact integers `code - centre` (`hsub2` alone). `centre` is
    0, or 2^(bits-1) for symmetric schemes.

    ```mlir
    %v = kvq.dequantize_pair %codes scales(%scales, %zeros) centre 0
    %c = kvq.dequantize_pair %codes centre 8
    ```
  }];
  let arguments = (ins I32:$codes, Optional<I32>:$scales,
                       Optional<I32>:$zeros, I64Attr:$centre);
  let results = (outs I32:$values);
  let assemblyFormat = [{
    $codes (`scales` `(` $scales^ (`,` $zeros^)? `)`)? `centre` $centre
    attr-dict
  }];
  let hasVerifier = 1;
}

def KVQ_TransposePairsOp : KVQ_Op<"transpose_pairs"> {
  let summary = "Transpose an 8x8 matrix of 16-bit values across the warp";
  let description = [{
    `movmatrix.sync.aligned.m8n8.trans.b16`: lane `4 g + t` holds elements
    `(g, 2t)` and `(g, 2t + 1)` of an 8x8 matrix (low half first) and gets
    back elements `(2t, g)` and `(2t + 1, g)`: an accumulator fragment's
    rows become an operand fragment's columns.

    ```mlir
    %t = kvq.transpose_pairs %pair
    ```
  }];
  let arguments = (ins I32:$pair);
  let results = (outs I32:$transposed);
  let assemblyFormat = "$pair attr-dict";
}

#endif // KVQ_OPS_TD
