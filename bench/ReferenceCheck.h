//===- ReferenceCheck.h - device attention vs the reference -----*- C++ -*-===//
//
// kvq-gpu-bench checks every attention result in the same run: the inputs
// of a few sequences are copied back from the device (packed codes, scales,
// zeros or fp16 K/V, sink, residual, q, lengths) and attended on the
// reference backend; the device's output must match within tolerance.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_BENCH_REFERENCECHECK_H
#define KVQ_BENCH_REFERENCECHECK_H

#include "kvq/Runtime/Runtime.h"

#include <cstdint>
#include <vector>

namespace kvq {

/// Runs `spec` over the sequences `check` of `call` (device memory of
/// `device`) on `reference` (a reference-backend runtime) and returns the
/// largest normwise error of `out`, the device's [batch, query heads,
/// head_dim] result, against it.
llvm::Expected<double> checkAgainstReference(Runtime &device,
                                             Runtime &reference,
                                             const KernelSpec &spec,
                                             const AttentionCall &call,
                                             const std::vector<int> &check,
                                             const std::vector<uint16_t> &out);

} // namespace kvq

#endif // KVQ_BENCH_REFERENCECHECK_H
