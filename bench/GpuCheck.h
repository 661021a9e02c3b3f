//===- GpuCheck.h - the GPU correctness suite -------------------*- C++ -*-===//
//
// What must hold before any GPU timing means anything: for every preset,
// head_dim and GQA ratio of the grid, on fresh KV-like data with a ragged
// batch (every other sequence one channel group shorter),
//   - the device's quantize kernels write codes, scales and zeros bit for
//     bit as the reference backend does,
//   - attention over sink + quantized body + residual is within the
//     tolerance of the reference backend (normwise).
// and for every scheme of the matrix (bits 2/4/8 x token/channel axis x
// asymmetric/symmetric x fp16/fp32 scales, each head_dim), quantize then
// dequantize bit-exact against the reference; and each preset's paged
// QuantizedKVCache (prefill, decode steps that flush into pages) attending
// within the tolerance of the same cache on the reference backend.
// Every output buffer starts poisoned (Workload.h), so an element a kernel
// fails to write is a mismatch, not a lucky zero. Each failure is one
// `MISMATCH:` line.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_BENCH_GPUCHECK_H
#define KVQ_BENCH_GPUCHECK_H

#include "kvq/Runtime/Runtime.h"

#include "llvm/Support/raw_ostream.h"

#include <string>
#include <vector>

namespace kvq {

struct CheckGrid {
  std::vector<std::string> presets; ///< cache presets (Presets.h)
  std::vector<int> headDims, gqas;
  int kvHeads = 2, batch = 3, tokens = 1000;
  double tolerance = 2e-3; ///< attention, normwise
};

/// The attention specs of the grid (each preset x head_dim x gqa), and per
/// preset the paged attention and the append step the cache check runs;
/// their quantize kernels are forScheme(Quantize, key/value).
std::vector<KernelSpec> checkSpecs(const CheckGrid &grid);

/// The quantize and dequantize specs of the scheme matrix, for each head_dim
/// of the grid.
std::vector<KernelSpec> schemeMatrixSpecs(const CheckGrid &grid);

/// Runs the grid on `device` and `reference`, writes a markdown table and
/// one `MISMATCH:` line per failure to `os`; returns the number of failures.
/// `corrupt` flips one attention output first (tests that the check fails).
llvm::Expected<int> runCorrectness(Runtime &device, Runtime &reference,
                                   const CheckGrid &grid, llvm::raw_ostream &os,
                                   bool corrupt = false);

} // namespace kvq

#endif // KVQ_BENCH_GPUCHECK_H
