//===- Reference.h - plain C++ semantics of every kvq kernel ----*- C++ -*-===//
//
// ARCHITECTURE.md section 4 written for clarity: the ground truth of the
// tests and a CPU fallback. Buffers use the same layouts and argument
// meanings as the generated kernels (kvq/Conversion/KernelABI.h), with
// fp16/bf16 values held as floats that are exactly representable in the
// half type, and scales/zero points as floats representable in their
// storage type.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_RUNTIME_REFERENCE_H
#define KVQ_RUNTIME_REFERENCE_H

#include "kvq/Codegen/KernelSpec.h"

#include <cstdint>
#include <vector>

namespace kvq::ref {

/// Rounds to the nearest fp16 or bf16 value (ties to even) and back.
float roundToHalf(float x, HalfType type);
/// fp16/bf16 bit patterns.
uint16_t toHalfBits(float x, HalfType type);
float fromHalfBits(uint16_t bits, HalfType type);
/// Every fp16 bit pattern's value (65536 floats, built once): without F16C
/// a conversion is a library call, and the reference converts every sink,
/// residual and scale value it reads.
const float *halfValues();
/// Rounds a scale or zero point through its storage type.
float roundToStorage(float x, const QuantScheme &scheme);

/// The OCP 8-bit floating-point formats of FP8 KV caches (vLLM, SGLang,
/// TensorRT-LLM, FlashInfer): E4M3 (e4m3fn: bias 7, no infinities, 0x7F
/// and 0xFF NaN, largest 448) and E5M2 (bias 15, IEEE-like, largest
/// 57344).
enum class Fp8Format { E4M3, E5M2 };
/// x rounded to the nearest value of the format (ties to even), saturating
/// as CUDA's __NV_SATFINITE conversion does (what vLLM writes): beyond the
/// largest finite value, infinities included, gives that value; NaN gives
/// NaN (0x7F with x's sign).
uint8_t toFp8Bits(float x, Fp8Format format);
/// The value of an FP8 bit pattern (NaN, and E5M2's infinities, as such).
float fromFp8Bits(uint8_t bits, Fp8Format format);
/// The format's largest finite value: 448 (E4M3), 57344 (E5M2).
float largestFp8(Fp8Format format);

/// Number of 32-bit words of one packed row (token axis) or one word row
/// (channel axis, per head_dim channels).
int wordsPerRow(const QuantScheme &scheme, int headDim);

/// Quantizes tokens [0, tokens) of `rows` rows of `inTokens` tokens into
/// positions [outOffset, outOffset + tokens) of a store of `outTokens`
/// tokens per row (the quantize kernel's contract). For axis = channel,
/// tokens and outOffset are multiples of the group. `zeroPoints` Hqq
/// refines asymmetric zero points (ZeroPointSearch.h; ignored when the
/// scheme is symmetric).
void quantize(const QuantScheme &scheme, int headDim, const float *input,
              int rows, int tokens, int inTokens, int outTokens, int outOffset,
              uint32_t *words, float *scales, float *zeros,
              ZeroPointSearch zeroPoints = ZeroPointSearch::MinMax);

/// The inverse, in fp32 (round the result to the half type to compare with
/// the kernel's output).
void dequantize(const QuantScheme &scheme, int headDim, const uint32_t *words,
                const float *scales, const float *zeros, int rows, int tokens,
                int inTokens, int inOffset, int outTokens, float *output);

/// Static schemes (QuantScheme::isStatic: scales given per tensor or per
/// kv head): codes only, from the fp32 `scales` (and, asymmetric, `zeros`)
/// of staticScaleCount(kvHeads) entries; head row r (of kv head r %
/// kvHeads) uses entry r % kvHeads per kv head, entry 0 per tensor. Token
/// axis: a row of head_dim codes per token. FP8 codes are the bytes of
/// x / scale; they read back as fp8 * scale.
void quantizeStatic(const QuantScheme &scheme, int headDim, int kvHeads,
                    const float *input, int rows, int tokens, int inTokens,
                    int outTokens, int outOffset, uint32_t *words,
                    const float *scales, const float *zeros);
void dequantizeStatic(const QuantScheme &scheme, int headDim, int kvHeads,
                      const uint32_t *words, const float *scales,
                      const float *zeros, int rows, int tokens, int inTokens,
                      int inOffset, int outTokens, float *output);

/// Inputs of decode attention in the kernel's layout. A static scheme's
/// scales (and zeros) are its staticScaleCount(kvHeads) entries. Quantized body
/// tensors hold `bodyCapacity` tokens per (batch, kv head); sink and
/// residual hold `sinkCapacity`/`residualCapacity`. lengths is [batch, 3].
struct AttentionInputs {
  const float *q = nullptr; ///< [batch, queryHeads, headDim]
  const uint32_t *keyWords = nullptr;
  const float *keyScales = nullptr, *keyZeros = nullptr;
  const uint32_t *valueWords = nullptr;
  const float *valueScales = nullptr, *valueZeros = nullptr;
  /// Dense attention: the body itself, [batch, kv heads, bodyCapacity, d].
  const float *keys = nullptr, *values = nullptr;
  const float *sinkKeys = nullptr, *sinkValues = nullptr;
  const float *residualKeys = nullptr, *residualValues = nullptr;
  const int32_t *lengths = nullptr;
  int batch = 1, bodyCapacity = 0, sinkCapacity = 0, residualCapacity = 0;
  float softmaxScale = 1;
};

/// out = softmax(scale · q·k_t) · v over the given token rows (each
/// `headDim` floats), in double precision; no rows gives zeros.
void attendRows(const float *q, const std::vector<const float *> &keys,
                const std::vector<const float *> &values, int headDim,
                float scale, float *out);

/// attendRows for the `heads` query heads of one GQA group (q and out:
/// `heads` rows of headDim) over the same token rows, reading each key and
/// value row once for the group: dot products and the weighted sum in float,
/// the softmax in double. Agrees with attendRows to float rounding (3e-8
/// apart on values of about 3: Reference.GroupAttentionAgreesWithRowAttention);
/// the backend's attention uses it, the tests' truth is attendRows.
void attendGroup(const float *q, int heads,
                 const std::vector<const float *> &keys,
                 const std::vector<const float *> &values, int headDim,
                 float scale, float *out);

/// out[b, h, :] = softmax(scale · q·K) · V over sink ∪ body ∪ residual
/// tokens (attendGroup per GQA group); a sequence with no tokens gives zeros.
/// Multi-threaded over (batch, kv head). `out` is [batch, queryHeads, headDim].
void attention(const KernelSpec &spec, const AttentionInputs &in, float *out);

} // namespace kvq::ref

#endif // KVQ_RUNTIME_REFERENCE_H
