//===- Workload.cpp - a generated decode step on any backend --------------===//

#include "kvq/Runtime/Workload.h"

#include "kvq/BufferSizes.h"
#include "kvq/Calibrate.h"
#include "kvq/Runtime/Reference.h"

#include <chrono>
#include <cmath>
#include <random>
#include <thread>

using namespace kvq;

namespace {

double millisSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now() - start)
      .count();
}

/// kvLikeHalves, with the values as floats appended to `values`.
std::vector<uint16_t> kvData(size_t rows, int headDim, HalfType t,
                             uint64_t seed, bool outliers,
                             std::vector<float> *values) {
  std::vector<uint16_t> bits =
      kvLikeHalves(rows * headDim, headDim, t, seed, outliers);
  for (uint16_t b : bits)
    values->push_back(ref::fromHalfBits(b, t));
  return bits;
}

} // namespace

std::vector<uint16_t> kvq::kvLikeHalves(size_t count, int headDim,
                                        HalfType type, uint64_t seed,
                                        bool outliers) {
  std::vector<uint16_t> bits(count);
  unsigned workers = count < (1u << 16)
                         ? 1u
                         : std::max(1u, std::thread::hardware_concurrency());
  size_t chunk = (count + workers - 1) / workers;
  auto fill = [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      uint64_t x =
          (i + 1) * 0x9E3779B97F4A7C15ull ^ seed * 0xD1B54A32D192ED03ull;
      x ^= x >> 31;
      x *= 0xBF58476D1CE4E5B9ull;
      x ^= x >> 29;
      float sum = 0;
      for (int k = 0; k < 4; ++k)
        sum += float((x >> (16 * k)) & 0xffff) / 65535.0f;
      float value = (sum - 2.0f) * 1.73f; // mean 0, variance ~1
      if (outliers && (i % headDim) % 29 == 0)
        value *= 12.0f;
      bits[i] = ref::toHalfBits(value, type);
    }
  };
  std::vector<std::thread> threads;
  for (unsigned w = 1; w < workers; ++w)
    threads.emplace_back(fill, std::min(count, w * chunk),
                         std::min(count, (w + 1) * chunk));
  fill(0, std::min(count, chunk));
  for (std::thread &t : threads)
    t.join();
  return bits;
}

kvq::DeviceBuffers::~DeviceBuffers() {
  for (void *p : owned)
    runtime.release(p);
}

llvm::Expected<void *> kvq::DeviceBuffers::make(const void *host,
                                                size_t bytes) {
  llvm::Expected<void *> p = runtime.allocate(std::max<size_t>(bytes, 4));
  if (!p)
    return p;
  owned.push_back(*p);
  if (host)
    if (llvm::Error e = runtime.copyIn(*p, host, bytes))
      return std::move(e);
  return p;
}

double kvq::normwiseError(const std::vector<float> &a,
                          const std::vector<float> &b) {
  // A NaN or size mismatch is an infinite error: an unwritten (poisoned)
  // output must never compare as close.
  if (a.size() != b.size())
    return INFINITY;
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) != std::isnan(b[i]))
      return INFINITY;
    diff = std::max(diff, std::fabs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::fabs(double(b[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

namespace {
/// Given static scales (and zeros) for `scheme` as kvq::calibrateScales'
/// min-max gives them on `x` (rows of `rowElements` values, row r of kv
/// head r % kvHeads, tokens of headDim values).
llvm::Error staticScalesOf(const QuantScheme &scheme,
                           const std::vector<float> &x, int kvHeads,
                           int headDim, size_t rowElements,
                           std::vector<float> &scales,
                           std::vector<float> &zeros) {
  // calibrateScales reads [tokens, kv heads, head_dim]: the rows' tokens,
  // sequences one after another, each token's heads side by side.
  size_t rows = x.size() / rowElements, sequences = rows / size_t(kvHeads);
  size_t tokens = rowElements / size_t(headDim);
  std::vector<float> samples;
  samples.reserve(x.size());
  for (size_t b = 0; b < sequences; ++b)
    for (size_t t = 0; t < tokens; ++t)
      for (int h = 0; h < kvHeads; ++h) {
        const float *token =
            x.data() + (b * kvHeads + h) * rowElements + t * headDim;
        samples.insert(samples.end(), token, token + headDim);
      }
  std::vector<StaticScale> calibrated;
  Status status = calibrateScales(samples.data(), sequences * tokens, kvHeads,
                                  headDim, calibrationFor(scheme), &calibrated);
  if (!status.ok())
    return llvm::make_error<LaunchError>(status.message());
  scales.clear();
  zeros.clear();
  for (const StaticScale &c : calibrated) {
    scales.push_back(c.scale);
    zeros.push_back(c.zero);
  }
  return llvm::Error::success();
}
} // namespace

llvm::Expected<WorkloadResult>
kvq::runAttentionWorkload(Runtime &runtime, const AttentionWorkload &w) {
  const KernelSpec &s = w.spec;
  if (s.kind != KernelKind::Attention)
    return llvm::make_error<LaunchError>("a workload needs an attention spec, "
                                         "got '" +
                                         s.canonical() + "'");
  int d = s.headDim;
  int unit = 1;
  for (const QuantScheme *q : {&s.key, &s.value})
    if (q->axis == QuantScheme::Axis::Channel)
      unit = std::max(unit, q->groupSize(d));
  int capacity = std::max(unit, (w.tokens + unit - 1) / unit * unit);
  if (s.pageTokens) // whole pages (a page is a multiple of the unit)
    capacity = (capacity + s.pageTokens - 1) / s.pageTokens * s.pageTokens;
  size_t rows = size_t(w.batch) * s.kvHeads;
  int sinkCap = std::max(1, w.sinkTokens),
      residualCap = std::max(1, w.residualTokens);

  std::vector<float> qv, kv, vv, skv, svv, rkv, rvv;
  // Tensor `which` of this workload (its own seed), `keyLike` for keys.
  auto data = [&](size_t vectors, int which, bool keyLike,
                  std::vector<float> *values) {
    return kvData(vectors, d, s.dtype, w.seed * 8 + which, keyLike, values);
  };
  // Query rows: one per sequence, or (chunked) queryTokens per sequence.
  int queryTokens = s.chunked ? std::max(1, w.queryTokens) : 1;
  int queryRows = w.batch * queryTokens;
  std::vector<uint16_t> q =
      data(size_t(queryRows) * s.queryHeads, 1, false, &qv);
  std::vector<uint16_t> keys = data(rows * capacity, 2, true, &kv);
  std::vector<uint16_t> values = data(rows * capacity, 3, false, &vv);
  std::vector<uint16_t> sinkK = data(rows * sinkCap, 4, true, &skv);
  std::vector<uint16_t> sinkV = data(rows * sinkCap, 5, false, &svv);
  std::vector<uint16_t> residK = data(rows * residualCap, 6, true, &rkv);
  std::vector<uint16_t> residV = data(rows * residualCap, 7, false, &rvv);
  // Row r's tokens: sequences alternate a full and a one-unit shorter body;
  // a chunk's row i of n sees n - 1 - i fewer tokens than its last (of the
  // residual, or without one of the body, a unit each), as a causal chunk.
  std::vector<int32_t> lengths;
  for (int r = 0; r < queryRows; ++r) {
    int group = r / queryTokens, hidden = queryTokens - 1 - r % queryTokens;
    int body = capacity - unit * (group % 2);
    int residual = s.residual ? w.residualTokens : 0;
    if (s.residual)
      residual = std::max(0, residual - hidden);
    else
      body = std::max(0, body - unit * hidden);
    lengths.insert(lengths.end(), {s.sink ? w.sinkTokens : 0, body, residual});
  }

  WorkloadResult result;
  DeviceBuffers buffers(runtime);
  auto make = [&](const void *host, size_t bytes) {
    return buffers.make(host, bytes);
  };
  // Outputs start poisoned (NaN as fp16/fp32, all-ones codes) on every
  // backend: device memory is not zeroed, and an element a kernel skips must
  // not pass by matching a zero.
  auto poisoned = [&](size_t bytes) {
    std::vector<uint8_t> poison(bytes, 0xFF);
    return buffers.make(poison.data(), bytes);
  };
  auto copyBack = [&](std::vector<uint8_t> &host, const void *device,
                      size_t bytes) {
    host.resize(bytes);
    return runtime.copyOut(host.data(), device, bytes);
  };

  // Quantize keys and values with the runtime's own kernels.
  void *words[2], *scales[2], *zeros[2];
  const QuantScheme *schemes[2] = {&s.key, &s.value};
  const std::vector<uint16_t> *inputs[2] = {&keys, &values};
  const std::vector<float> *inputValues[2] = {&kv, &vv};
  for (int i = 0; i < 2; ++i) {
    const QuantScheme &scheme = *schemes[i];
    KernelSpec qs =
        KernelSpec::forScheme(KernelKind::Quantize, scheme, d, s.dtype);
    qs.kvHeads = s.kvHeads; // per-head static scales
    size_t nWords = packedWordCount(scheme, d, rows, capacity);
    size_t nScales = scaleCount(scheme, d, rows, capacity);
    llvm::Expected<void *> in = make(inputs[i]->data(), inputs[i]->size() * 2);
    size_t storageBytes = nScales * scaleBytes(scheme);
    llvm::Expected<void *> wd = poisoned(nWords * 4);
    llvm::Expected<void *> sc = poisoned(storageBytes);
    llvm::Expected<void *> zr = poisoned(storageBytes);
    if (scheme.isStatic()) { // given scales, as calibrated on the data
      std::vector<float> given, givenZeros;
      if (llvm::Error e =
              staticScalesOf(scheme, *inputValues[i], s.kvHeads, d,
                             size_t(capacity) * d, given, givenZeros))
        return std::move(e);
      storageBytes = given.size() * 4;
      sc = make(given.data(), storageBytes);
      zr = make(givenZeros.data(), storageBytes);
    }
    for (llvm::Expected<void *> *p : {&in, &wd, &sc, &zr})
      if (!*p)
        return p->takeError();
    words[i] = *wd;
    scales[i] = *sc;
    zeros[i] = *zr;
    auto start = std::chrono::steady_clock::now();
    auto prepared = runtime.prepare(qs);
    if (!prepared)
      return prepared.takeError();
    result.prepareMillis += millisSince(start);
    start = std::chrono::steady_clock::now();
    QuantizeCall call{*in,      *wd,      *sc,      *zr, int(rows),
                      capacity, capacity, capacity, 0};
    if (llvm::Error e = runtime.quantize(qs, call))
      return std::move(e);
    result.quantizeMillis += millisSince(start);
    std::vector<uint32_t> &hostWords =
        i == 0 ? result.keyWords : result.valueWords;
    hostWords.resize(nWords);
    if (llvm::Error e = runtime.copyOut(hostWords.data(), *wd, nWords * 4))
      return std::move(e);
    if (llvm::Error e = copyBack(i == 0 ? result.keyScales : result.valueScales,
                                 *sc, storageBytes))
      return std::move(e);
    if (llvm::Error e = copyBack(i == 0 ? result.keyZeros : result.valueZeros,
                                 *zr, storageBytes))
      return std::move(e);
  }

  // A paged spec reads the stores as a pool of pages in reverse order,
  // through a block table (as an engine's page allocator might hand them
  // out).
  std::vector<int32_t> blockTable;
  int maxPages = 0, numPages = 0;
  if (s.pageTokens) {
    maxPages = capacity / s.pageTokens;
    numPages = w.batch * maxPages;
    for (int i = 0; i < numPages; ++i)
      blockTable.push_back(numPages - 1 - i);
    void **tensors[6] = {&words[0], &scales[0], &zeros[0],
                         &words[1], &scales[1], &zeros[1]};
    for (int i = 0; i < 6; ++i) {
      const QuantScheme &q = *schemes[i / 3];
      if (i % 3 != 0 && q.isStatic()) // given scales: not in the pages
        continue;
      size_t block = i % 3 == 0
                         ? packedWordCount(q, d, 1, s.pageTokens) * 4
                         : scaleCount(q, d, 1, s.pageTokens) * scaleBytes(q);
      // Token-major pages (nhd): a page's rows token by token, each
      // token's kv heads side by side.
      size_t row = block / s.pageTokens;
      llvm::Expected<void *> pool = poisoned(block * numPages * s.kvHeads);
      if (!pool)
        return pool.takeError();
      char *to = static_cast<char *>(*pool);
      const char *from = static_cast<const char *>(*tensors[i]);
      for (int b = 0; b < w.batch; ++b)
        for (int h = 0; h < s.kvHeads; ++h)
          for (int slot = 0; slot < maxPages; ++slot) {
            size_t page = blockTable[size_t(b) * maxPages + slot];
            const char *source =
                from + ((size_t(b) * s.kvHeads + h) * maxPages + slot) * block;
            if (!s.nhdPages) {
              if (llvm::Error e = runtime.copyOnDevice(
                      to + (page * s.kvHeads + h) * block, source, block))
                return std::move(e);
              continue;
            }
            for (int t = 0; t < s.pageTokens; ++t)
              if (llvm::Error e = runtime.copyOnDevice(
                      to + ((page * s.pageTokens + t) * s.kvHeads + h) * row,
                      source + t * row, row))
                return std::move(e);
          }
      *tensors[i] = *pool;
    }
  }

  AttentionCall call;
  llvm::Expected<void *> qp = make(q.data(), q.size() * 2);
  llvm::Expected<void *> sk = make(sinkK.data(), sinkK.size() * 2);
  llvm::Expected<void *> sv = make(sinkV.data(), sinkV.size() * 2);
  llvm::Expected<void *> rk = make(residK.data(), residK.size() * 2);
  llvm::Expected<void *> rv = make(residV.data(), residV.size() * 2);
  llvm::Expected<void *> lp = make(lengths.data(), lengths.size() * 4);
  llvm::Expected<void *> out = poisoned(q.size() * 2);
  for (llvm::Expected<void *> *p : {&qp, &sk, &sv, &rk, &rv, &lp, &out})
    if (!*p)
      return p->takeError();
  call.q = *qp;
  call.keyWords = words[0];
  call.keyScales = scales[0];
  call.keyZeros = zeros[0];
  call.valueWords = words[1];
  call.valueScales = scales[1];
  call.valueZeros = zeros[1];
  call.sinkKeys = *sk;
  call.sinkValues = *sv;
  call.residualKeys = *rk;
  call.residualValues = *rv;
  call.lengths = static_cast<const int32_t *>(*lp);
  call.hostLengths = lengths.data();
  call.out = *out;
  call.batch = queryRows;
  call.bodyCapacity = s.pageTokens ? 0 : capacity;
  if (s.pageTokens) {
    llvm::Expected<void *> table =
        make(blockTable.data(), blockTable.size() * 4);
    if (!table)
      return table.takeError();
    call.blockTable = static_cast<const int32_t *>(*table);
    call.maxPages = maxPages;
    call.numPages = numPages;
  }
  // Chunked: queryTokens rows per sequence, the sequences in reverse order
  // (rows of sequence batch - 1 first), so that the row table is exercised.
  std::vector<int32_t> rowSequences;
  if (s.chunked) {
    for (int r = 0; r < queryRows; ++r)
      rowSequences.push_back(w.batch - 1 - r / queryTokens);
    llvm::Expected<void *> rows =
        make(rowSequences.data(), rowSequences.size() * 4);
    if (!rows)
      return rows.takeError();
    call.rowSequences = static_cast<const int32_t *>(*rows);
    call.sequences = w.batch;
  }
  call.sinkCapacity = sinkCap;
  call.residualCapacity = residualCap;
  auto start = std::chrono::steady_clock::now();
  auto prepared = runtime.prepare(s);
  if (!prepared)
    return prepared.takeError();
  result.prepareMillis += millisSince(start);
  result.origin = (*prepared)->origin;
  llvm::Expected<size_t> workspaceBytes =
      runtime.attentionWorkspaceBytes(s, call);
  if (!workspaceBytes)
    return workspaceBytes.takeError();
  llvm::Expected<void *> workspace = make(nullptr, *workspaceBytes);
  if (!workspace)
    return workspace.takeError();
  call.workspace = *workspace;
  call.workspaceBytes = *workspaceBytes;
  start = std::chrono::steady_clock::now();
  if (llvm::Error e = runtime.attention(s, call))
    return std::move(e);
  std::vector<uint16_t> bits(q.size());
  if (llvm::Error e = runtime.copyOut(bits.data(), *out, bits.size() * 2))
    return std::move(e);
  result.attentionMillis = millisSince(start);
  for (uint16_t b : bits)
    result.output.push_back(ref::fromHalfBits(b, s.dtype));

  // The same tokens unquantized, for the accuracy report.
  int gqa = s.queryHeads / s.kvHeads;
  result.fp16Output.resize(q.size());
  float softmaxScale = 1.0f / std::sqrt(float(d));
  for (int b = 0; b < queryRows; ++b)
    for (int h = 0; h < s.queryHeads; ++h) {
      int seq = rowSequences.empty() ? b : rowSequences[b];
      size_t row = size_t(seq) * s.kvHeads + h / gqa;
      std::vector<const float *> ks, vs;
      for (int t = 0; t < lengths[b * 3]; ++t) {
        ks.push_back(&skv[(row * sinkCap + t) * d]);
        vs.push_back(&svv[(row * sinkCap + t) * d]);
      }
      for (int t = 0; t < lengths[b * 3 + 1]; ++t) {
        ks.push_back(&kv[(row * capacity + t) * d]);
        vs.push_back(&vv[(row * capacity + t) * d]);
      }
      for (int t = 0; t < lengths[b * 3 + 2]; ++t) {
        ks.push_back(&rkv[(row * residualCap + t) * d]);
        vs.push_back(&rvv[(row * residualCap + t) * d]);
      }
      ref::attendRows(&qv[(size_t(b) * s.queryHeads + h) * d], ks, vs, d,
                      softmaxScale,
                      &result.fp16Output[(size_t(b) * s.queryHeads + h) * d]);
    }
  return result;
}
