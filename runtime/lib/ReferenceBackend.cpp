//===- ReferenceBackend.cpp - the kernels' semantics in plain C++ ---------===//
//
// Runs no kernels: each call reads its buffers (host memory) as floats and
// computes what the kernels must compute (Reference.h). Calls are still
// validated against the launch plan of the cuda kernels for its arch, so a
// call the GPU would refuse is refused here too.
//
//===----------------------------------------------------------------------===//

#include "HostMemoryBackend.h"
#include "kvq/BufferSizes.h"
#include "kvq/Runtime/Reference.h"
#include "kvq/Runtime/Runtime.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>

using namespace kvq;

namespace {

std::vector<float> readHalf(const void *p, size_t n, HalfType t) {
  std::vector<float> out(n);
  auto *bits = static_cast<const uint16_t *>(p);
  if (t == HalfType::F16) {
    const float *table = ref::halfValues();
    for (size_t i = 0; i < n; ++i)
      out[i] = table[bits[i]];
    return out;
  }
  for (size_t i = 0; i < n; ++i)
    out[i] = ref::fromHalfBits(bits[i], t);
  return out;
}

void writeHalf(void *p, const std::vector<float> &x, HalfType t) {
  auto *bits = static_cast<uint16_t *>(p);
  for (size_t i = 0; i < x.size(); ++i)
    bits[i] = ref::toHalfBits(x[i], t);
}

std::vector<float> readStorage(const void *p, size_t n, const QuantScheme &s) {
  if (!p)
    return {};
  if (s.fp32Scales) {
    auto *f = static_cast<const float *>(p);
    return std::vector<float>(f, f + n);
  }
  return readHalf(p, n, HalfType::F16);
}

/// The `n` scales and (asymmetric schemes) zero points of a quantized
/// tensor, as host floats; `zeros` is empty for a symmetric scheme.
struct HostScales {
  std::vector<float> scales, zeros;
  float *zeroData() { return zeros.empty() ? nullptr : zeros.data(); }
};

HostScales readScales(const void *scales, const void *zeros, size_t n,
                      const QuantScheme &s) {
  return {readStorage(scales, n, s),
          s.symmetric ? std::vector<float>() : readStorage(zeros, n, s)};
}

/// The sequence query row `row` reads: itself, or for a chunked call the
/// one `rowSequences` names (clamped, as the kernels do).
int sequenceOf(const AttentionCall &c, int row) {
  return c.rowSequences ? std::clamp(c.rowSequences[row], 0, c.sequences - 1)
                        : row;
}

/// A paged body's tensor in the contiguous layout the reference reads,
/// `[batch, kv_heads, slots * N, ...]` (its first `slots` page slots): each
/// (row, kv head, page slot) block of `blockBytes` comes from the page the
/// block table row of the row's sequence names (clamped into the pool, as
/// the kernels do).
/// A paged pool read as the contiguous body it stands for, `[batch, kv
/// heads, slots x page tokens, ...]`: blocks of `blockBytes` (a head's
/// page); `nhd` pools hold each page token-major (`tokenBytes` a row).
std::vector<char> gatherPages(const void *pool, size_t blockBytes,
                              const AttentionCall &c, int kvHeads, int slots,
                              bool nhd = false, int pageTokens = 0) {
  std::vector<char> out;
  if (!pool)
    return out;
  out.resize(size_t(c.batch) * kvHeads * slots * blockBytes);
  const char *bytes = static_cast<const char *>(pool);
  for (int b = 0; b < c.batch; ++b)
    for (int slot = 0; slot < slots; ++slot) {
      size_t entry = size_t(sequenceOf(c, b)) * c.maxPages + slot;
      int page = std::clamp(c.blockTable[entry], 0, c.numPages - 1);
      for (int h = 0; h < kvHeads; ++h) {
        char *to = out.data() +
                   ((size_t(b) * kvHeads + h) * slots + slot) * blockBytes;
        if (!nhd) {
          std::memcpy(to, bytes + (size_t(page) * kvHeads + h) * blockBytes,
                      blockBytes);
          continue;
        }
        size_t row = blockBytes / pageTokens; // one token's bytes
        for (int t = 0; t < pageTokens; ++t)
          std::memcpy(to + t * row,
                      bytes +
                          ((size_t(page) * pageTokens + t) * kvHeads + h) * row,
                      row);
      }
    }
  return out;
}

void writeStorage(void *p, const std::vector<float> &x, size_t offset, size_t n,
                  const QuantScheme &s) {
  if (!p)
    return;
  for (size_t i = offset; i < offset + n; ++i) {
    if (s.fp32Scales)
      static_cast<float *>(p)[i] = x[i];
    else
      static_cast<uint16_t *>(p)[i] = ref::toHalfBits(x[i], HalfType::F16);
  }
}

class ReferenceBackend final : public HostMemoryBackend {
public:
  ReferenceBackend() : HostMemoryBackend(/*checkRanges=*/false) {}
  Backend kind() const override { return Backend::Reference; }

  llvm::Expected<std::shared_ptr<LoadedKernels>>
  load(const CompiledKernels &, const std::string &) override {
    return nullptr; // no kernels to load
  }

  /// Lengths are host memory here, so the launch checks them; there is no
  /// workspace to size.
  AttentionCall complete(const AttentionCall &call) const override {
    AttentionCall c = call;
    if (!c.hostLengths)
      c.hostLengths = c.lengths;
    if (!c.workspace)
      c.workspace = reinterpret_cast<void *>(uintptr_t(256));
    c.workspaceBytes = 0;
    return c;
  }

  llvm::Error quantize(const KernelSpec &spec, const CompiledKernels &k,
                       const QuantizeCall &c) override {
    llvm::Expected<KernelLaunch> launch = planQuantize(spec, k.source, c);
    if (!launch)
      return launch.takeError();
    int d = spec.headDim;
    size_t scales = scaleCount(spec.key, d, 1, c.outTokens) * c.rows;
    // What the call covers and no more: tokens [0, tokens) of each row;
    // `input` may point into the middle of a buffer (a slice of a prompt),
    // so the last row ends where the call's tokens end.
    size_t covered =
        c.rows > 0 ? (size_t(c.rows - 1) * c.inTokens + c.tokens) * d : 0;
    std::vector<float> input = readHalf(c.input, covered, spec.dtype);
    if (spec.key.isStatic()) { // the scales are given: read, never written
      HostScales given = readScales(
          c.scales, c.zeros, spec.key.staticScaleCount(spec.kvHeads), spec.key);
      ref::quantizeStatic(spec.key, d, spec.kvHeads, input.data(), c.rows,
                          c.tokens, c.inTokens, c.outTokens, c.outOffset,
                          static_cast<uint32_t *>(c.words), given.scales.data(),
                          given.zeroData());
      return llvm::Error::success();
    }
    HostScales h = readScales(c.scales, c.zeros, scales, spec.key);
    ref::quantize(spec.key, d, input.data(), c.rows, c.tokens, c.inTokens,
                  c.outTokens, c.outOffset, static_cast<uint32_t *>(c.words),
                  h.scales.data(), h.zeroData(), spec.zeroPoints);
    writeStorage(c.scales, h.scales, 0, scales, spec.key);
    if (!spec.key.symmetric)
      writeStorage(c.zeros, h.zeros, 0, scales, spec.key);
    return llvm::Error::success();
  }

  llvm::Error dequantize(const KernelSpec &spec, const CompiledKernels &k,
                         const DequantizeCall &c) override {
    llvm::Expected<KernelLaunch> launch = planDequantize(spec, k.source, c);
    if (!launch)
      return launch.takeError();
    int d = spec.headDim;
    size_t scales = spec.key.isStatic()
                        ? size_t(spec.key.staticScaleCount(spec.kvHeads))
                        : scaleCount(spec.key, d, 1, c.inTokens) * c.rows;
    HostScales h = readScales(c.scales, c.zeros, scales, spec.key);
    std::vector<float> out(size_t(c.rows) * c.outTokens * d);
    std::vector<float> existing = readHalf(c.output, out.size(), spec.dtype);
    if (spec.key.isStatic())
      ref::dequantizeStatic(spec.key, d, spec.kvHeads,
                            static_cast<const uint32_t *>(c.words),
                            h.scales.data(), h.zeroData(), c.rows, c.tokens,
                            c.inTokens, c.inOffset, c.outTokens, out.data());
    else
      ref::dequantize(spec.key, d, static_cast<const uint32_t *>(c.words),
                      h.scales.data(), h.zeroData(), c.rows, c.tokens,
                      c.inTokens, c.inOffset, c.outTokens, out.data());
    // Only tokens [0, tokens) of each output row are written.
    for (int r = 0; r < c.rows; ++r)
      for (int t = c.tokens; t < c.outTokens; ++t)
        for (int i = 0; i < d; ++i) {
          size_t at = (size_t(r) * c.outTokens + t) * d + i;
          out[at] = existing[at];
        }
    writeHalf(c.output, out, spec.dtype);
    return llvm::Error::success();
  }

  /// The cache step, sequence by sequence, as CacheAppendKernel.cpp
  /// describes it (the same checks on the device lengths).
  llvm::Error append(const KernelSpec &spec, const CompiledKernels &k,
                     const AppendCall &c) override {
    llvm::Expected<KernelLaunch> launch = planAppend(spec, k.source, c);
    if (!launch)
      return launch.takeError();
    size_t d = spec.headDim, heads = c.kvHeads, row = d * 2;
    int full = c.residualTokens + c.flushTokens;
    auto rowOf = [&](void *buffer, int capacity, int seq, int head, int token) {
      return static_cast<char *>(buffer) +
             ((size_t(seq) * heads + head) * capacity + token) * row;
    };
    auto copyNewToken = [&](int seq, void *keys, void *values, int capacity,
                            int slot) {
      for (size_t h = 0; h < heads; ++h) {
        size_t from = (size_t(seq) * c.tokenStride + h * c.headStride) * 2;
        std::memcpy(rowOf(keys, capacity, seq, int(h), slot),
                    static_cast<const char *>(c.keys) + from, row);
        std::memcpy(rowOf(values, capacity, seq, int(h), slot),
                    static_cast<const char *>(c.values) + from, row);
      }
    };
    for (int b = 0; b < c.batch; ++b) {
      int32_t *lengths = c.lengths + size_t(b) * 3;
      int sink = lengths[0], quantized = lengths[1], residual = lengths[2];
      bool valid = sink + quantized + residual > 0 && sink >= 0 &&
                   quantized >= 0 && residual >= 0 && sink <= c.sinkTokens &&
                   residual < full &&
                   int64_t(c.maxPages) * c.pageTokens >=
                       int64_t(quantized) + c.flushTokens &&
                   quantized % c.flushTokens == 0;
      if (!valid)
        continue;
      if (sink < c.sinkTokens) {
        copyNewToken(b, c.sinkKeys, c.sinkValues, c.sinkCapacity, sink);
        lengths[0] = sink + 1;
        continue;
      }
      if (residual + 1 < full) {
        copyNewToken(b, c.residualKeys, c.residualValues, c.residualCapacity,
                     residual);
        lengths[2] = residual + 1;
        continue;
      }
      int32_t &entry =
          c.blockTable[size_t(b) * c.maxPages + quantized / c.pageTokens];
      int32_t page = entry;
      if (page < 0) {
        int top = std::max(--*c.freeCount, 0);
        page = entry = c.freePages[top];
      }
      page = std::clamp(page, 0, c.numPages - 1);
      for (auto [s, rows, words, scales, zeros] :
           {std::tuple{&spec.key, c.residualKeys, c.keyWords, c.keyScales,
                       c.keyZeros},
            std::tuple{&spec.value, c.residualValues, c.valueWords,
                       c.valueScales, c.valueZeros}}) {
        size_t wordsPerPage = packedWordCount(*s, int(d), heads, c.pageTokens);
        size_t scalesPerPage = scaleCount(*s, int(d), heads, c.pageTokens);
        size_t scaleBytes = s->fp32Scales ? 4 : 2;
        std::vector<float> input = readHalf(
            rowOf(rows, c.residualCapacity, b, 0, 0),
            ((heads - 1) * c.residualCapacity + c.flushTokens) * d, spec.dtype);
        if (s->isStatic()) { // the given scales, read and kept
          HostScales given =
              readScales(scales, zeros, s->staticScaleCount(int(heads)), *s);
          ref::quantizeStatic(
              *s, int(d), int(heads), input.data(), int(heads), c.flushTokens,
              c.residualCapacity, c.pageTokens, quantized % c.pageTokens,
              static_cast<uint32_t *>(words) + page * wordsPerPage,
              given.scales.data(), given.zeroData());
          continue;
        }
        char *pageScales =
            static_cast<char *>(scales) + page * scalesPerPage * scaleBytes;
        char *pageZeros = zeros ? static_cast<char *>(zeros) +
                                      page * scalesPerPage * scaleBytes
                                : nullptr;
        HostScales h = readScales(pageScales, pageZeros, scalesPerPage, *s);
        ref::quantize(*s, int(d), input.data(), int(heads), c.flushTokens,
                      c.residualCapacity, c.pageTokens,
                      quantized % c.pageTokens,
                      static_cast<uint32_t *>(words) + page * wordsPerPage,
                      h.scales.data(), h.zeroData());
        writeStorage(pageScales, h.scales, 0, scalesPerPage, *s);
        if (!s->symmetric)
          writeStorage(pageZeros, h.zeros, 0, scalesPerPage, *s);
      }
      for (void *rows : {c.residualKeys, c.residualValues})
        for (size_t h = 0; h < heads; ++h)
          std::memmove(
              rowOf(rows, c.residualCapacity, b, int(h), 0),
              rowOf(rows, c.residualCapacity, b, int(h), c.flushTokens),
              size_t(residual - c.flushTokens) * row);
      copyNewToken(b, c.residualKeys, c.residualValues, c.residualCapacity,
                   residual - c.flushTokens);
      lengths[1] = quantized + c.flushTokens;
      lengths[2] = residual + 1 - c.flushTokens;
    }
    return llvm::Error::success();
  }

  llvm::Error attention(const KernelSpec &spec, const CompiledKernels &k,
                        const AttentionCall &call) override {
    AttentionCall c = complete(call);
    llvm::Expected<std::vector<KernelLaunch>> launches =
        planAttention(spec, k.source, c);
    if (!launches)
      return launches.takeError();
    int d = spec.headDim;
    // A paged body: read as the contiguous body it stands for.
    std::vector<char> pagedBody[6];
    if (spec.pageTokens) {
      int n = spec.pageTokens;
      // Only the page slots some row reads: a cache sized for long
      // sequences converts no scales for pages nobody holds yet.
      int slots = 0;
      for (int b = 0; b < c.batch; ++b)
        slots = std::max(slots, (c.lengths[b * 3 + 1] + n - 1) / n);
      slots = std::clamp(slots, 1, c.maxPages);
      const void **tensors[6] = {&c.keyWords,   &c.keyScales,   &c.keyZeros,
                                 &c.valueWords, &c.valueScales, &c.valueZeros};
      const QuantScheme *schemes[6] = {&spec.key,   &spec.key,   &spec.key,
                                       &spec.value, &spec.value, &spec.value};
      for (int i = 0; i < 6; ++i) {
        const QuantScheme &s = *schemes[i];
        if (i % 3 != 0 && s.isStatic()) // given scales: not in the pages
          continue;
        size_t block = i % 3 == 0
                           ? packedWordCount(s, d, 1, n) * 4
                           : scaleCount(s, d, 1, n) * (s.fp32Scales ? 4 : 2);
        pagedBody[i] = gatherPages(*tensors[i], block, c, spec.kvHeads, slots,
                                   spec.nhdPages, n);
        *tensors[i] = pagedBody[i].empty() ? nullptr : pagedBody[i].data();
      }
      c.bodyCapacity = slots * n;
    }
    size_t kvRows = size_t(c.batch) * spec.kvHeads;
    bool dense = spec.kind == KernelKind::DenseAttention;
    std::vector<float> q =
        readHalf(c.q, size_t(c.batch) * spec.queryHeads * d, spec.dtype);
    // A segment per row: its sequence's rows (chunked calls read
    // `sequences` sequences' buffers through the rows).
    auto segment = [&](const void *p, int capacity) {
      if (!p)
        return std::vector<float>();
      if (!spec.chunked)
        return readHalf(p, kvRows * capacity * d, spec.dtype);
      size_t perSequence = size_t(spec.kvHeads) * capacity * d;
      std::vector<float> all =
          readHalf(p, size_t(c.sequences) * perSequence, spec.dtype);
      std::vector<float> rows(kvRows * capacity * d);
      for (int b = 0; b < c.batch; ++b)
        std::copy_n(all.begin() + sequenceOf(c, b) * perSequence, perSequence,
                    rows.begin() + b * perSequence);
      return rows;
    };
    std::vector<float> keys, values;
    HostScales keyScales, valueScales;
    if (dense) {
      keys = segment(c.keys, c.bodyCapacity);
      values = segment(c.values, c.bodyCapacity);
    } else {
      // Per group: every row's; static: the given ones.
      auto scalesOf = [&](const QuantScheme &s) {
        return s.isStatic() ? size_t(s.staticScaleCount(spec.kvHeads))
                            : kvRows * scaleCount(s, d, 1, c.bodyCapacity);
      };
      keyScales =
          readScales(c.keyScales, c.keyZeros, scalesOf(spec.key), spec.key);
      valueScales = readScales(c.valueScales, c.valueZeros,
                               scalesOf(spec.value), spec.value);
    }
    std::vector<float> sk = segment(spec.sink ? c.sinkKeys : nullptr,
                                    c.sinkCapacity),
                       sv = segment(spec.sink ? c.sinkValues : nullptr,
                                    c.sinkCapacity),
                       rk = segment(spec.residual ? c.residualKeys : nullptr,
                                    c.residualCapacity),
                       rv = segment(spec.residual ? c.residualValues : nullptr,
                                    c.residualCapacity);
    ref::AttentionInputs in;
    in.q = q.data();
    in.keyWords = static_cast<const uint32_t *>(c.keyWords);
    in.keyScales = keyScales.scales.data();
    in.keyZeros = keyScales.zeroData();
    in.valueWords = static_cast<const uint32_t *>(c.valueWords);
    in.valueScales = valueScales.scales.data();
    in.valueZeros = valueScales.zeroData();
    in.keys = keys.data();
    in.values = values.data();
    in.sinkKeys = sk.data();
    in.sinkValues = sv.data();
    in.residualKeys = rk.data();
    in.residualValues = rv.data();
    in.lengths = c.lengths;
    in.batch = c.batch;
    in.bodyCapacity = c.bodyCapacity;
    in.sinkCapacity = c.sinkCapacity;
    in.residualCapacity = c.residualCapacity;
    in.softmaxScale =
        c.softmaxScale > 0 ? c.softmaxScale : 1.0f / std::sqrt(float(d));
    std::vector<float> out(size_t(c.batch) * spec.queryHeads * d);
    ref::attention(spec, in, out.data());
    writeHalf(c.out, out, spec.dtype);
    return llvm::Error::success();
  }
};

} // namespace

std::unique_ptr<ExecutionBackend> kvq::makeReferenceBackend() {
  return std::make_unique<ReferenceBackend>();
}
