//===- BufferSizes.h - how big the buffers of a quantized -------*- C++ -*-===//
//
// The element counts of the packed words and the scales (and zeros, the
// same count) that `rows` rows of `tokens` tokens take in a scheme, in the
// layout of ARCHITECTURE.md section 4 / KVQLayout.h. Part of the public API.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_BUFFERSIZES_H
#define KVQ_BUFFERSIZES_H

#include "kvq/Codegen/KernelSpec.h"

#include <cstddef>

namespace kvq {

/// 32-bit words of packed codes (either axis: codes are dense).
inline size_t packedWordCount(const QuantScheme &s, int headDim, size_t rows,
                              int tokens) {
  return rows * size_t(tokens) * size_t(headDim) * size_t(s.bits) / 32;
}

/// Scales (and zeros): one per group of channels of a token (token axis) or
/// per group of tokens of a channel (channel axis; `tokens` whole groups).
/// None for a static scheme: its scales are given, staticScaleCount of them.
inline size_t scaleCount(const QuantScheme &s, int headDim, size_t rows,
                         int tokens) {
  if (s.isStatic())
    return 0;
  size_t group = size_t(s.groupSize(headDim));
  return s.axis == QuantScheme::Axis::Token
             ? rows * size_t(tokens) * (size_t(headDim) / group)
             : rows * (size_t(tokens) / group) * size_t(headDim);
}

/// Bytes of one stored scale or zero: fp16, or fp32 with the x flag.
inline size_t scaleBytes(const QuantScheme &s) { return s.fp32Scales ? 4 : 2; }

} // namespace kvq

#endif // KVQ_BUFFERSIZES_H
