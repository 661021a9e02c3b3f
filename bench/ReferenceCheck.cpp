//===- ReferenceCheck.cpp - a device attention result vs the reference ----===//

#include "ReferenceCheck.h"

#include "kvq/BufferSizes.h"
#include "kvq/Runtime/Reference.h"
#include "kvq/Runtime/Workload.h"

using namespace kvq;

llvm::Expected<double>
kvq::checkAgainstReference(Runtime &device, Runtime &reference,
                           const KernelSpec &spec, const AttentionCall &call,
                           const std::vector<int> &check,
                           const std::vector<uint16_t> &out) {
  int d = spec.headDim, hq = spec.queryHeads, hkv = spec.kvHeads;
  bool dense = spec.kind == KernelKind::DenseAttention;
  double worst = 0;
  for (int b : check) {
    DeviceBuffers host(reference);
    // Copies `count` elements of `size` bytes starting at element
    // `first` of a device array into reference-backend memory.
    auto slice = [&](const void *base, size_t first, size_t count,
                     size_t size) -> llvm::Expected<void *> {
      llvm::Expected<void *> p = host.make(nullptr, count * size);
      if (!p || !base)
        return p;
      if (llvm::Error e = device.copyOut(
              *p, static_cast<const char *>(base) + first * size, count * size))
        return std::move(e);
      return p;
    };
    size_t row0 = size_t(b) * hkv;
    AttentionCall r;
    r.batch = 1;
    r.bodyCapacity = call.bodyCapacity;
    r.sinkCapacity = call.sinkCapacity;
    r.residualCapacity = call.residualCapacity;
    std::vector<llvm::Expected<void *>> parts;
    auto take = [&](const void *base, size_t first, size_t count, size_t size,
                    const void **into) -> llvm::Error {
      llvm::Expected<void *> p = slice(base, first, count, size);
      if (!p)
        return p.takeError();
      *into = *p;
      return llvm::Error::success();
    };
    size_t halfRow = size_t(call.bodyCapacity) * d;
    llvm::Error e = take(call.q, size_t(b) * hq * d, size_t(hq) * d, 2, &r.q);
    if (!e && dense) {
      e = take(call.keys, row0 * halfRow, hkv * halfRow, 2, &r.keys);
      if (!e)
        e = take(call.values, row0 * halfRow, hkv * halfRow, 2, &r.values);
    }
    for (int i = 0; !e && !dense && i < 2; ++i) {
      const QuantScheme &s = i == 0 ? spec.key : spec.value;
      size_t words = packedWordCount(s, d, hkv, call.bodyCapacity);
      size_t scales = scaleCount(s, d, hkv, call.bodyCapacity);
      e = take(i == 0 ? call.keyWords : call.valueWords, b * words, words, 4,
               i == 0 ? &r.keyWords : &r.valueWords);
      if (!e)
        e = take(i == 0 ? call.keyScales : call.valueScales, b * scales, scales,
                 scaleBytes(s), i == 0 ? &r.keyScales : &r.valueScales);
      if (!e && !s.symmetric)
        e = take(i == 0 ? call.keyZeros : call.valueZeros, b * scales, scales,
                 scaleBytes(s), i == 0 ? &r.keyZeros : &r.valueZeros);
    }
    size_t sinkRow = size_t(call.sinkCapacity) * d,
           residualRow = size_t(call.residualCapacity) * d;
    if (!e)
      e = take(call.sinkKeys, row0 * sinkRow, hkv * sinkRow, 2, &r.sinkKeys);
    if (!e)
      e = take(call.sinkValues, row0 * sinkRow, hkv * sinkRow, 2,
               &r.sinkValues);
    if (!e)
      e = take(call.residualKeys, row0 * residualRow, hkv * residualRow, 2,
               &r.residualKeys);
    if (!e)
      e = take(call.residualValues, row0 * residualRow, hkv * residualRow, 2,
               &r.residualValues);
    const void *lengths = nullptr;
    if (!e)
      e = take(call.lengths, size_t(b) * 3, 3, 4, &lengths);
    if (e)
      return std::move(e);
    r.lengths = static_cast<const int32_t *>(lengths);
    llvm::Expected<void *> result = host.make(nullptr, size_t(hq) * d * 2);
    if (!result)
      return result.takeError();
    r.out = *result;
    if (llvm::Error e = reference.attention(spec, r))
      return std::move(e);
    std::vector<float> got, expected;
    const uint16_t *want = static_cast<const uint16_t *>(r.out);
    for (size_t i = 0; i < size_t(hq) * d; ++i) {
      got.push_back(ref::fromHalfBits(out[size_t(b) * hq * d + i], spec.dtype));
      expected.push_back(ref::fromHalfBits(want[i], spec.dtype));
    }
    worst = std::max(worst, normwiseError(got, expected));
  }
  return worst;
}
