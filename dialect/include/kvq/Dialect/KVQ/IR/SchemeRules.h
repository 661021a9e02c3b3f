//===- SchemeRules.h - what makes a quantization scheme valid ---*- C++ -*-===//
//
// The rules a scheme's parameters obey, in plain C++ (no MLIR), so that the
// `#kvq.scheme` attribute's verifier and KernelSpec::validate (the runtime's
// vocabulary, codegen/KernelSpec.h) check the same thing and say it the
// same way.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_DIALECT_KVQ_IR_SCHEMERULES_H
#define KVQ_DIALECT_KVQ_IR_SCHEMERULES_H

namespace kvq::scheme_rules {

/// Code widths with a fused kernel: 2, 4 or 8 bits.
inline bool validBits(long bits) { return bits == 2 || bits == 4 || bits == 8; }
inline constexpr const char *kBitsRule = "bits must be 2, 4 or 8";

/// An explicit group size: a power of two in [16, 256] (a whole head vector
/// is spelled apart: `head_dim` in IR, 0 in a KernelSpec).
inline bool validGroup(long group) {
  return group >= 16 && group <= 256 && (group & (group - 1)) == 0;
}
inline constexpr const char *kGroupRule =
    "group must be a power of two in [16, 256]";

/// bf16 input is quantized with fp32 scales: bf16 reaches 3.4e38, an fp16
/// scale or zero point only 65504, so a group with a larger value (or
/// range) would be stored as inf and decode as inf/NaN, silently.
inline constexpr const char *kBf16ScalesRule =
    "bf16 input needs fp32 scales: an fp16 scale or zero point overflows to "
    "inf once a group's values pass 65504";

/// Static scales (given per tensor or per kv head) and FP8 codes: what the
/// kernels implement.
inline constexpr const char *kStaticRule =
    "static scales and FP8 need the token axis, one group per head vector "
    "and fp32 scales; FP8 is 8-bit, symmetric and linear";

/// Token-major pages (vLLM's NHD layout): rows of tokens of every kv head,
/// which only schemes without per-row scales can share.
inline constexpr const char *kNhdRule =
    "nhd (token-major) pages need a paged body and static-scale schemes for "
    "keys and values";

/// Optimized zero points (`zeroPoints hqq`) need zero points to optimize.
inline constexpr const char *kHqqRule =
    "zero point search 'hqq' needs an asymmetric scheme: a symmetric one has "
    "no zero points";

} // namespace kvq::scheme_rules

#endif // KVQ_DIALECT_KVQ_IR_SCHEMERULES_H
