//===- ZeroPointSearch.h - HQQ-style optimized zero points ------*- C++ -*-===//
//
// `kvq.quantize ... zeroPoints hqq`: an asymmetric group's zero point
// refined by the half-quadratic solver of HQQ (Badri & Shaji, "Half-Quadratic
// Quantization of Large Machine Learning Models", 2023), the scale kept from
// min-max. The quantize kernel (QuantizeKernels.cpp) and the reference
// (Reference.cpp) both follow these steps, in fp32, operation for operation,
// so the kernel stays bit-exact with the reference:
//
//   m = min (rounded to the storage type), s = min-max scale; best = m
//   beta = kBeta; bestError = +inf
//   repeat kIterations times, stopping at the first step that does not
//   lower the error:
//     q_i = code of x_i under (s, m)                 (the usual rounding)
//     d_i = x_i - (q_i * s + m)
//     error = sum d_i * d_i                          (the summation order
//     below) stop unless error < bestError; bestError = error, best = m e_i =
//     sign(d_i) * max(|d_i| - 1 / (beta * sqrt(|d_i|)), 0) m = storage(sum (x_i
//     - e_i - q_i * s) / n);  beta = beta * kKappa
//   the group's zero point is `best`.
//
// e_i is HQQ's shrinkage of the residual toward sparsity for the l_p norm
// with p = 1/2 (HQQ's default is 0.7; 1/2 needs only a square root and a
// division, which both the GPU and the host round correctly, where a pow()
// would differ between them); the new zero point is the closed-form minimum
// of the quadratic term. Unlike HQQ, the zero point kept is the best one
// seen by the squared error, so the result is never worse than min-max on
// the group. A constant group (scale 0) or one whose error is NaN keeps the
// minimum.
//
// Summation order: a channel-axis group (one thread walks its tokens) sums
// in token order. A token-axis group is spread over `tokenAxisLanesPerGroup`
// lanes of a warp, each holding a contiguous run of the group's channels:
// each lane sums its run in channel order, then the lanes' sums combine by
// xor shuffles (pairwise: ((s0 + s1) + (s2 + s3)) ...).
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_DIALECT_KVQ_IR_ZEROPOINTSEARCH_H
#define KVQ_DIALECT_KVQ_IR_ZEROPOINTSEARCH_H

namespace kvq::zero_point_search {

/// HQQ's defaults for the iteration count, beta and its growth factor.
inline constexpr int kIterations = 20;
inline constexpr float kBeta = 10.0f;
inline constexpr float kKappa = 1.01f;

/// Lanes of a warp sharing one token-axis group in the quantize kernel: the
/// largest power of two dividing the group's 32-bit words, at most 32 (the
/// group's `groupSize * bits / 32` words split evenly, each lane a
/// contiguous run).
inline long tokenAxisLanesPerGroup(long bits, long groupSize) {
  long words = groupSize * bits / 32;
  long lanes = words & -words;
  return lanes < 32 ? lanes : 32;
}

} // namespace kvq::zero_point_search

#endif // KVQ_DIALECT_KVQ_IR_ZEROPOINTSEARCH_H
