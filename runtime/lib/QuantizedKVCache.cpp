//===- QuantizedKVCache.cpp - a quantized KV cache that decodes -----------===//

#include "kvq/QuantizedKVCache.h"
#include "kvq/BufferSizes.h"

#include "kvq/Runtime/Presets.h"

#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/SHA256.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <numeric>
#include <optional>
#include <sstream>
#include <tuple>

using namespace kvq;

bool kvq::applyPreset(const std::string &name, CacheConfig &config,
                      std::string *error) {
  std::optional<CachePreset> preset = findPreset(name);
  if (!preset) {
    if (error)
      *error = "unknown preset '" + name + "' (known: " + knownPresets() + ")";
    return false;
  }
  config.key = preset->key;
  config.value = preset->value;
  // bf16 caches keep fp32 scales (SchemeRules.h: kBf16ScalesRule); set
  // dtype before applying the preset.
  if (config.dtype == HalfType::BF16)
    config.key.fp32Scales = config.value.fp32Scales = true;
  config.residual = preset->residual;
  config.sink = preset->sink;
  return true;
}

std::vector<std::string> kvq::presetNames() {
  std::vector<std::string> names;
  for (const CachePreset &preset : allPresets())
    names.push_back(preset.name);
  return names;
}

namespace {

Status invalid(const std::string &message) {
  return Status(StatusCode::InvalidArgument, message);
}

/// Tokens are quantized in multiples of this: the largest channel group.
int unitOf(const CacheConfig &c) {
  int unit = 1;
  for (const QuantScheme *s : {&c.key, &c.value})
    if (s->axis == QuantScheme::Axis::Channel)
      unit = std::max(unit, s->groupSize(c.headDim));
  return unit;
}

/// The residual is flushed this many tokens at a time (a multiple of the
/// unit, at least 32): a token-axis scheme would otherwise quantize one token
/// and shift the whole residual on every decode step; in blocks of 32 the
/// shift comes once every 32 steps (bench/README.md, kvq-host-bench).
constexpr int kMinFlushTokens = 32;
int flushTokensOf(int unit) { return std::lcm(unit, kMinFlushTokens); }

/// What is wrong with the given static scales of `c`, if anything: each
/// static scheme needs layers x staticScaleCount(kvHeads) positive finite
/// scales (and finite zero points when asymmetric); other schemes none.
std::optional<std::string> checkStaticScales(const CacheConfig &c) {
  struct Given {
    const char *name;
    const QuantScheme &scheme;
    const std::vector<float> &values;
    bool zeros;
  };
  for (const Given &g : {Given{"key scales", c.key, c.keyScales, false},
                         Given{"key zeros", c.key, c.keyZeros, true},
                         Given{"value scales", c.value, c.valueScales, false},
                         Given{"value zeros", c.value, c.valueZeros, true}}) {
    bool wanted = g.scheme.isStatic() && !(g.zeros && g.scheme.symmetric);
    if (!wanted) {
      if (!g.values.empty())
        return std::string(g.name) + ": scheme " + g.scheme.tag() +
               (g.scheme.isStatic() ? " is symmetric (no zero points)"
                                    : " computes its scales per group") +
               ", but " + std::to_string(g.values.size()) +
               " values were given";
      continue;
    }
    size_t count = size_t(c.layers) * g.scheme.staticScaleCount(c.kvHeads);
    if (g.values.size() != count)
      return std::string(g.name) + ": scheme " + g.scheme.tag() + " needs " +
             std::to_string(count) + " (layers x " +
             (g.scheme.scales == QuantScheme::Scales::Head ? "kv heads" : "1") +
             "), got " + std::to_string(g.values.size()) +
             " (kvq-calibrate writes them)";
    for (size_t i = 0; i < g.values.size(); ++i)
      if (!std::isfinite(g.values[i]) || (!g.zeros && !(g.values[i] > 0)))
        return std::string(g.name) + "[" + std::to_string(i) +
               "] = " + std::to_string(g.values[i]) + " is not a " +
               (g.zeros ? "finite zero point" : "positive finite scale");
  }
  return std::nullopt;
}

/// The page pool of one tensor (K or V) of one layer: `[pages, kv heads,
/// pageTokens, ...]` words, scales and zero points.
struct Store {
  void *words = nullptr, *scales = nullptr, *zeros = nullptr;
  size_t wordsPerPage = 0, scalesPerPage = 0; ///< all kv heads
};

struct Layer {
  void *sinkK, *sinkV, *residualK, *residualV;
  Store key, value;
  std::vector<QuantizedKVCache::Parts> parts; // per sequence
  /// [batch, maxPages]: the page of each sequence's quantized tokens
  /// [i*pageTokens, (i+1)*pageTokens), or -1.
  std::vector<int32_t> blockTable;
  std::vector<int32_t> freePages; ///< a stack: the last freed is reused first
  /// Sequences whose block tables hold each page: a full page is shared
  /// by a fork and returns to the free list when its last holder lets go.
  std::vector<int32_t> pageHolders;
  /// This layer's lengths, block table and free-page stack (and its
  /// count) on the device, and the host values last known to be there:
  /// calls copy only what the host changed since (a host-side append
  /// changes the lengths; the block table and the stack only when a page
  /// is taken or given back). appendStep() advances the device's copies
  /// itself, as the host advances its own: nothing to copy.
  int32_t *deviceLengths = nullptr, *deviceBlockTable = nullptr;
  int32_t *deviceFreePages = nullptr; ///< [numPages] then the count
  std::vector<int32_t> uploadedLengths;
  /// The host's page state (block table, free list) changes version with
  /// every change; the device holds `uploadedPageVersion` (-1: unknown).
  /// A counter, not a comparison: the block table is batch x max pages.
  int64_t pageVersion = 0, uploadedPageVersion = -1;
  /// [batch, 3] host lengths for attention calls, reused (no allocation).
  std::vector<int32_t> lengthsScratch;
  /// Pages appendStep()'s kernels took from the device's stack since the
  /// host last read the block table back: which sequence got which is
  /// known only on the device (blocks take them in no fixed order), so the
  /// host's block table is stale while this is non-zero, and anything that
  /// reads or changes pages first reads it back (pullPages).
  int devicePops = 0;
  int freePageCount() const { return int(freePages.size()) - devicePops; }
};

} // namespace

struct QuantizedKVCache::Impl {
  std::unique_ptr<Context> context; ///< shares the creator's runtime
  mutable std::mutex mutex;         ///< serializes calls (see the header)
  CacheConfig config;
  int unit = 1, flushTokens = 1, storeCapacity = 0, residualCapacity = 0;
  int pageTokens = 0, maxPages = 0, numPages = 0;
  std::vector<Layer> layers;
  std::vector<void *> owned;
  void *scratch = nullptr, *workspace = nullptr;
  size_t workspaceBytes = 0;
  KernelSpec attention, quantizeKey, quantizeValue;
  /// What a prefill quantizes with: the same, with the configured zero
  /// point search on asymmetric schemes.
  KernelSpec prefillKey, prefillValue;
  /// appendStep's kernel (a residual of at least one token: see there).
  std::optional<KernelSpec> step;
  /// appendStep's plan of the counts after the step, reused.
  std::vector<Parts> stepParts;
  /// appendAndAttend (maxQueryTokens > 1): the chunked attention kernel,
  /// and per query row its lengths [rows, 3] and sequence [rows], on the
  /// device and (reused) on the host; the workspace fits every row.
  std::optional<KernelSpec> chunkedAttention;
  int32_t *deviceRowLengths = nullptr, *deviceRowSequences = nullptr;
  std::vector<int32_t> rowLengths, rowSequences;
  int maxRows() const {
    return config.batch * std::max(1, config.maxQueryTokens);
  }
  /// Every kernel the cache runs, prepared at creation.
  std::vector<KernelSpec> kernels() const {
    std::vector<KernelSpec> all = {attention, quantizeKey, quantizeValue};
    for (const KernelSpec *prefill : {&prefillKey, &prefillValue})
      if (prefill->zeroPoints != ZeroPointSearch::MinMax)
        all.push_back(*prefill);
    if (step)
      all.push_back(*step);
    if (chunkedAttention)
      all.push_back(*chunkedAttention);
    return all;
  }
  size_t rowBytes() const { return size_t(config.headDim) * 2; }

  void *allocate(size_t bytes, Status &status) {
    if (!status.ok())
      return nullptr;
    void *p = context->allocate(std::max<size_t>(bytes, 256), &status);
    if (p)
      owned.push_back(p);
    return p;
  }

  /// Layer `layer`'s store of scheme `s`: pages of words and (computed
  /// per group) of scales; a static scheme's given scales (`scales`,
  /// `zeros`: every layer's, layer-major) in one small buffer instead.
  Store makeStore(const QuantScheme &s, int layer,
                  const std::vector<float> &scales,
                  const std::vector<float> &zeros, Status &status) {
    Store store;
    size_t heads = config.kvHeads;
    store.wordsPerPage = packedWordCount(s, config.headDim, heads, pageTokens);
    store.scalesPerPage = scaleCount(s, config.headDim, heads, pageTokens);
    store.words = allocate(store.wordsPerPage * 4 * numPages, status);
    if (s.isStatic()) {
      size_t count = s.staticScaleCount(config.kvHeads);
      for (auto [given, buffer] : {std::pair{&scales, &store.scales},
                                   std::pair{&zeros, &store.zeros}}) {
        if (given == &zeros && s.symmetric)
          continue;
        *buffer = allocate(count * 4, status);
        if (status.ok())
          status = context->copyIn(*buffer, given->data() + layer * count,
                                   count * 4, config.stream);
      }
      return store;
    }
    store.scales =
        allocate(store.scalesPerPage * scaleBytes(s) * numPages, status);
    if (!s.symmetric)
      store.zeros =
          allocate(store.scalesPerPage * scaleBytes(s) * numPages, status);
    return store;
  }

  /// The page holding quantized token `token` of sequence `seq`, taken
  /// from the free list on first use; -1 when none is free.
  int32_t pageFor(Layer &layer, int seq, int token) {
    int32_t &page =
        layer.blockTable[size_t(seq) * maxPages + token / pageTokens];
    if (page < 0 && !layer.freePages.empty()) {
      page = layer.freePages.back();
      layer.freePages.pop_back();
      layer.pageHolders[page] = 1;
      ++layer.pageVersion;
    }
    return page;
  }

  /// Gives back the pages holding quantized tokens [from, ...) of `seq`.
  void releasePages(Layer &layer, int seq, int from) {
    for (int slot = (from + pageTokens - 1) / pageTokens; slot < maxPages;
         ++slot) {
      int32_t &page = layer.blockTable[size_t(seq) * maxPages + slot];
      if (page < 0)
        continue;
      if (--layer.pageHolders[page] == 0)
        layer.freePages.push_back(page);
      page = -1;
      ++layer.pageVersion;
    }
  }

  /// Copies `count` token rows per kv head: src [heads, srcStride, D] from
  /// token `srcFirst`, to dst [heads, dstStride, D] at token `dstFirst`.
  Status copyRows(void *dst, int dstStride, int dstFirst, const void *src,
                  int srcStride, int srcFirst, int count) {
    if (count <= 0)
      return Status();
    // One strided copy over the kv heads (one driver call on cuda).
    return context->copyRowsOnDevice(
        static_cast<char *>(dst) + size_t(dstFirst) * rowBytes(),
        size_t(dstStride) * rowBytes(),
        static_cast<const char *>(src) + size_t(srcFirst) * rowBytes(),
        size_t(srcStride) * rowBytes(), size_t(count) * rowBytes(),
        size_t(config.kvHeads), config.stream);
  }

  /// Copies tokens [first, first + count) of every kv head of `input` (laid
  /// out as `layout`, in bytes) to dst [heads, dstStride, D] at token
  /// `dstFirst`: one strided copy over the heads when a head's tokens are
  /// contiguous (or there is one token: a decode step), else one per head
  /// (its tokens `tokenPitch` apart).
  Status copyTokens(void *dst, int dstStride, int dstFirst, const char *input,
                    const TokenLayout &layout, int first, int count) {
    if (count <= 0)
      return Status();
    size_t headPitch = size_t(layout.headStride) * 2;
    size_t tokenPitch = size_t(layout.tokenStride) * 2;
    auto *out = static_cast<char *>(dst) + size_t(dstFirst) * rowBytes();
    const char *in = input + size_t(first) * tokenPitch;
    if (tokenPitch == rowBytes() || count == 1)
      return context->copyRowsOnDevice(out, size_t(dstStride) * rowBytes(), in,
                                       headPitch, size_t(count) * rowBytes(),
                                       size_t(config.kvHeads), config.stream);
    for (int h = 0; h < config.kvHeads; ++h) {
      Status s = context->copyRowsOnDevice(
          out + size_t(h) * dstStride * rowBytes(), rowBytes(),
          in + size_t(h) * headPitch, tokenPitch, rowBytes(), size_t(count),
          config.stream);
      if (!s.ok())
        return s;
    }
    return Status();
  }

  /// Quantizes tokens [first, first + count) of `k`/`v` (laid out as
  /// `layout`) into sequence `seq`'s store at token `offset`: read in place
  /// when each head's tokens are contiguous rows, else staged through the
  /// scratch buffer a chunk of whole units at a time.
  Status quantizeInput(Layer &layer, int seq, const char *k, const char *v,
                       const TokenLayout &layout, int first, int count,
                       int offset) {
    if (layout.tokenStride == config.headDim &&
        layout.headStride % config.headDim == 0)
      return quantize(layer, seq, k, v, int(layout.headStride / config.headDim),
                      first, count, offset, /*prefill=*/true);
    int chunk = residualCapacity / unit * unit; // >= flushTokens >= unit
    size_t half = size_t(config.kvHeads) * residualCapacity * rowBytes();
    char *stagedK = static_cast<char *>(scratch);
    char *stagedV = stagedK + half;
    for (int done = 0; done < count; done += chunk) {
      int n = std::min(chunk, count - done);
      for (auto [staged, input] :
           {std::pair{stagedK, k}, std::pair{stagedV, v}})
        if (Status s = copyTokens(staged, residualCapacity, 0, input, layout,
                                  first + done, n);
            !s.ok())
          return s;
      if (Status s = quantize(layer, seq, stagedK, stagedV, residualCapacity, 0,
                              n, offset + done, /*prefill=*/true);
          !s.ok())
        return s;
    }
    return Status();
  }

  /// The device bytes that hold sequence `seq`'s KV in `layer` when it
  /// holds `p`, in snapshot order: sink K and V rows and residual K and V
  /// rows per kv head, then each quantized page of K then V (words, scales,
  /// zeros). The pages must be in the block table.
  std::vector<std::pair<char *, size_t>> regions(Layer &layer, int seq,
                                                 const Parts &p) {
    std::vector<std::pair<char *, size_t>> out;
    for (auto [buffer, stride, count] :
         {std::tuple{layer.sinkK, std::max(1, config.sink), p.sink},
          std::tuple{layer.sinkV, std::max(1, config.sink), p.sink},
          std::tuple{layer.residualK, residualCapacity, p.residual},
          std::tuple{layer.residualV, residualCapacity, p.residual}})
      for (int h = 0; h < config.kvHeads && count > 0; ++h)
        out.push_back(
            {static_cast<char *>(buffer) +
                 (size_t(seq) * config.kvHeads + h) * stride * rowBytes(),
             size_t(count) * rowBytes()});
    int pages = (p.quantized + pageTokens - 1) / pageTokens;
    for (auto [store, scheme] : {std::pair{&layer.key, &config.key},
                                 std::pair{&layer.value, &config.value}})
      for (int slot = 0; slot < pages; ++slot) {
        size_t page = layer.blockTable[size_t(seq) * maxPages + slot];
        size_t scaleBytesPerPage = store->scalesPerPage * scaleBytes(*scheme);
        out.push_back(
            {static_cast<char *>(store->words) + page * store->wordsPerPage * 4,
             store->wordsPerPage * 4});
        if (scaleBytesPerPage == 0) // static scales: none per page
          continue;
        out.push_back(
            {static_cast<char *>(store->scales) + page * scaleBytesPerPage,
             scaleBytesPerPage});
        if (store->zeros)
          out.push_back(
              {static_cast<char *>(store->zeros) + page * scaleBytesPerPage,
               scaleBytesPerPage});
      }
    return out;
  }

  /// What a snapshot must match: the attention spec (schemes, shapes, page
  /// tokens) and the layout of the fp16 parts.
  std::string identity() const {
    std::string text = attention.canonical() +
                       " layers=" + std::to_string(config.layers) +
                       " sink=" + std::to_string(config.sink) +
                       " residual=" + std::to_string(config.residual);
    // Static codes mean what their given scales say: the same ones, bit
    // for bit (their SHA-256, the error message stays short).
    if (config.key.isStatic() || config.value.isStatic()) {
      llvm::SHA256 hash;
      for (const std::vector<float> *given :
           {&config.keyScales, &config.keyZeros, &config.valueScales,
            &config.valueZeros}) {
        uint64_t count = given->size();
        hash.update(llvm::ArrayRef<uint8_t>(
            reinterpret_cast<const uint8_t *>(&count), sizeof count));
        hash.update(llvm::ArrayRef<uint8_t>(
            reinterpret_cast<const uint8_t *>(given->data()),
            given->size() * sizeof(float)));
      }
      text += " scales=" +
              llvm::toHex(hash.final(), /*LowerCase=*/true).substr(0, 16);
    }
    return text;
  }

  /// Copies page `from` of every store of `layer` to page `to`.
  Status copyPage(Layer &layer, int32_t from, int32_t to) {
    for (auto [store, scheme] : {std::pair{&layer.key, &config.key},
                                 std::pair{&layer.value, &config.value}}) {
      size_t scaleBytesPerPage = store->scalesPerPage * scaleBytes(*scheme);
      for (auto [base, bytes] :
           {std::pair{store->words, store->wordsPerPage * 4},
            std::pair{store->scales, scaleBytesPerPage},
            std::pair{store->zeros, scaleBytesPerPage}}) {
        if (!base || bytes == 0) // static scales: none per page
          continue;
        Status s = context->copyOnDevice(
            static_cast<char *>(base) + to * bytes,
            static_cast<char *>(base) + from * bytes, bytes, config.stream);
        if (!s.ok())
          return s;
      }
    }
    return Status();
  }

  /// `target` (empty) becomes a copy of `source` in `layer`: whole pages
  /// shared, the partial page, the sink and the residual copied.
  Status fork(Layer &layer, int source, int target) {
    const Parts &p = layer.parts[source];
    int full = p.quantized / pageTokens;
    size_t from = size_t(source) * maxPages, to = size_t(target) * maxPages;
    for (int slot = 0; slot < full; ++slot) {
      int32_t page = layer.blockTable[from + slot];
      layer.blockTable[to + slot] = page;
      ++layer.pageHolders[page];
      ++layer.pageVersion;
    }
    if (p.quantized % pageTokens) { // the partial page is written again
      int32_t page = pageFor(layer, target, full * pageTokens);
      if (page < 0)
        return Status(StatusCode::ResourceExhausted,
                      "no free page left in the pool of " +
                          std::to_string(numPages) +
                          " pages for the forked sequence's partial page");
      Status s = copyPage(layer, layer.blockTable[from + full], page);
      if (!s.ok())
        return s;
    }
    size_t rows = size_t(config.kvHeads);
    for (auto [buffer, stride, count] :
         {std::tuple{layer.sinkK, std::max(1, config.sink), p.sink},
          std::tuple{layer.sinkV, std::max(1, config.sink), p.sink},
          std::tuple{layer.residualK, residualCapacity, p.residual},
          std::tuple{layer.residualV, residualCapacity, p.residual}}) {
      char *base = static_cast<char *>(buffer);
      Status s = copyRows(base + target * rows * stride * rowBytes(), stride, 0,
                          base + source * rows * stride * rowBytes(), stride, 0,
                          count);
      if (!s.ok())
        return s;
    }
    layer.parts[target] = p;
    return Status();
  }

  /// Quantizes `count` tokens of `input` (rows of `inputTokens`, from token
  /// `first`) into sequence `seq`'s store at token `offset`: page by page
  /// (`offset` and `count` are whole units, which divide a page). A
  /// `prefill` uses the prefill kernels (the configured zero points).
  Status quantize(Layer &layer, int seq, const void *k, const void *v,
                  int inputTokens, int first, int count, int offset,
                  bool prefill) {
    while (count > 0) {
      int32_t page = pageFor(layer, seq, offset);
      if (page < 0)
        return Status(StatusCode::ResourceExhausted,
                      "no free page left in the pool of " +
                          std::to_string(numPages) + " pages (" +
                          std::to_string(pageTokens) +
                          " tokens each); release a sequence or create the "
                          "cache with more pages");
      int inPage = offset % pageTokens;
      int take = std::min(count, pageTokens - inPage);
      Status status = quantizeIntoPage(k, v, inputTokens, first, take, page,
                                       inPage, layer, prefill);
      if (!status.ok())
        return status;
      first += take;
      offset += take;
      count -= take;
    }
    return Status();
  }

  /// Quantizes `count` tokens into page `page` at token `inPage`.
  Status quantizeIntoPage(const void *k, const void *v, int inputTokens,
                          int first, int count, int32_t page, int inPage,
                          Layer &layer, bool prefill) {
    for (int which = 0; which < 2; ++which) {
      const QuantScheme &s = which == 0 ? config.key : config.value;
      const KernelSpec &spec = which == 0
                                   ? (prefill ? prefillKey : quantizeKey)
                                   : (prefill ? prefillValue : quantizeValue);
      Store &store = which == 0 ? layer.key : layer.value;
      const void *input = which == 0 ? k : v;
      QuantizeCall call;
      call.input =
          static_cast<const char *>(input) + size_t(first) * rowBytes();
      call.words = static_cast<char *>(store.words) +
                   size_t(page) * store.wordsPerPage * 4;
      call.scales = static_cast<char *>(store.scales) +
                    size_t(page) * store.scalesPerPage * scaleBytes(s);
      call.zeros = store.zeros
                       ? static_cast<char *>(store.zeros) +
                             size_t(page) * store.scalesPerPage * scaleBytes(s)
                       : nullptr;
      call.rows = config.kvHeads;
      call.tokens = count;
      call.inTokens = inputTokens;
      call.outTokens = pageTokens;
      call.outOffset = inPage;
      call.stream = config.stream;
      Status status = context->quantize(spec, call);
      if (!status.ok())
        return status;
    }
    return Status();
  }

  /// Quantizes the residual's oldest `count` tokens (route() says how
  /// many); moves the rest to the front.
  Status flush(Layer &layer, int seq, int count) {
    Parts &p = layer.parts[seq];
    if (count == 0)
      return Status();
    size_t seqOffset =
        size_t(seq) * config.kvHeads * residualCapacity * rowBytes();
    void *rk = static_cast<char *>(layer.residualK) + seqOffset;
    void *rv = static_cast<char *>(layer.residualV) + seqOffset;
    Status status = quantize(layer, seq, rk, rv, residualCapacity, 0, count,
                             p.quantized, /*prefill=*/false);
    if (!status.ok())
      return status;
    // Shift the remaining tokens to the front through a scratch buffer (the
    // ranges overlap).
    int keep = p.residual - count;
    for (void *buffer : {rk, rv}) {
      status = copyRows(scratch, residualCapacity, 0, buffer, residualCapacity,
                        count, keep);
      if (status.ok())
        status = copyRows(buffer, residualCapacity, 0, scratch,
                          residualCapacity, 0, keep);
      if (!status.ok())
        return status;
    }
    p.quantized += count;
    p.residual = keep;
    return Status();
  }

  /// One step of an append, in the order append() runs them.
  struct AppendStep {
    enum Kind { Sink, Bulk, Residual } kind;
    int first, count; ///< the input tokens it takes
    int flush = 0;    ///< Residual: tokens quantized once they are copied
  };

  /// How `tokens` new tokens are routed from parts `p`, which become the
  /// parts after the append: the first tokens of a sequence fill the sink;
  /// a long prefill (empty residual) goes to the store in bulk, all but the
  /// residual tail, in whole flushes; the rest enter the residual, whose
  /// oldest flushTokens are quantized each time it holds `residual` +
  /// flushTokens. The one description of the routing: append() runs it and
  /// checks the pool against it before changing anything.
  /// A few steps at most (a decode token: one), kept off the heap.
  using AppendSteps = llvm::SmallVector<AppendStep, 4>;

  AppendSteps route(Parts &p, int tokens, bool flushing = true) const {
    AppendSteps steps;
    if (!flushing) { // appendAndAttend: sink, then the residual, as they are
      int toSink = std::min(config.sink - p.sink, tokens);
      if (toSink > 0)
        steps.push_back({AppendStep::Sink, 0, toSink});
      toSink = std::max(toSink, 0);
      if (tokens > toSink)
        steps.push_back({AppendStep::Residual, toSink, tokens - toSink});
      p.sink += toSink;
      p.residual += tokens - toSink;
      return steps;
    }
    int pos = 0;
    if (int toSink = std::min(config.sink - p.sink, tokens); toSink > 0) {
      steps.push_back({AppendStep::Sink, pos, toSink});
      p.sink += toSink;
      pos += toSink;
    }
    int rest = tokens - pos;
    if (p.residual == 0 && rest > config.residual) {
      // Whole flushes, so that the store always grows by whole flushes and
      // a flush never straddles a page (appendStep's kernel relies on it).
      if (int bulk = (rest - config.residual) / flushTokens * flushTokens;
          bulk > 0) {
        steps.push_back({AppendStep::Bulk, pos, bulk});
        p.quantized += bulk;
        pos += bulk;
      }
    }
    while (pos < tokens) {
      int take = std::min(residualCapacity - p.residual, tokens - pos);
      p.residual += take;
      int excess = p.residual - config.residual;
      int flush =
          excess >= flushTokens ? excess / flushTokens * flushTokens : 0;
      steps.push_back({AppendStep::Residual, pos, take, flush});
      p.quantized += flush;
      p.residual -= flush;
      pos += take;
    }
    return steps;
  }

  AppendSteps planAppend(const Layer &layer, int seq, int tokens,
                         int &pages) const;
  Status poolTooSmall(const Layer &layer, int needed,
                      const std::string &what) const;
  Status runAppend(Layer &layer, int seq, const char *keys, const char *values,
                   const TokenLayout &layout, const AppendSteps &steps);

  /// Brings the host's page state up to date after appendStep()s took
  /// pages on the device: reads the block table back (synchronizing) and
  /// drops the taken pages from the host's free list, the top `devicePops`
  /// entries, as the device's stack did.
  Status pullPages(Layer &layer) {
    if (layer.devicePops == 0)
      return Status();
    std::vector<int32_t> pulled(layer.blockTable.size());
    Status s = context->copyOut(pulled.data(), layer.deviceBlockTable,
                                pulled.size() * 4);
    if (!s.ok())
      return s;
    // Checked before use (the host indexes its page lists by these): the
    // steps may only have filled empty slots, each with one of the pages
    // they popped, the top `devicePops` of the free list.
    std::vector<char> popped(size_t(numPages), 0);
    for (size_t i = layer.freePages.size() - layer.devicePops;
         i < layer.freePages.size(); ++i)
      popped[layer.freePages[i]] = 1;
    int placed = 0;
    for (size_t i = 0; i < pulled.size(); ++i) {
      if (pulled[i] == layer.blockTable[i])
        continue;
      int32_t page = pulled[i];
      if (layer.blockTable[i] >= 0 || page < 0 || page >= numPages ||
          !popped[page])
        return Status(StatusCode::RuntimeFailed,
                      "the device's block table disagrees with the pages its "
                      "decode steps took (entry " +
                          std::to_string(i) + " holds " + std::to_string(page) +
                          "): the cache's device memory was changed behind it");
      popped[page] = 0;
      ++placed;
    }
    if (placed != layer.devicePops)
      return Status(StatusCode::RuntimeFailed,
                    "the device's block table disagrees with the pages its "
                    "decode steps took (it holds " +
                        std::to_string(placed) + " of " +
                        std::to_string(layer.devicePops) + ")");
    layer.blockTable.swap(pulled);
    for (int i = 0; i < layer.devicePops; ++i) {
      layer.pageHolders[layer.freePages.back()] = 1;
      layer.freePages.pop_back();
    }
    layer.devicePops = 0;
    layer.uploadedPageVersion = ++layer.pageVersion; // now alike
    return Status();
  }
  Status pullAllPages() {
    for (Layer &layer : layers)
      if (Status s = pullPages(layer); !s.ok())
        return s;
    return Status();
  }

  /// Copies to the device what the host changed since the device last
  /// saw it: the lengths, and (unless the device is ahead, devicePops) the
  /// block table and the free-page stack with its count. Allocates nothing
  /// and copies nothing when nothing changed (a decode step).
  Status pushChanges(Layer &layer) {
    const std::vector<int32_t> &lengths = hostLengths(layer);
    if (lengths != layer.uploadedLengths) {
      Status s = context->copyIn(layer.deviceLengths, lengths.data(),
                                 lengths.size() * 4, config.stream);
      if (!s.ok()) {
        layer.uploadedLengths.clear(); // unknown: copy again next time
        return s;
      }
      layer.uploadedLengths = lengths;
    }
    if (layer.devicePops > 0 || layer.pageVersion == layer.uploadedPageVersion)
      return Status();
    int32_t count = int32_t(layer.freePages.size());
    Status s = context->copyIn(layer.deviceBlockTable, layer.blockTable.data(),
                               layer.blockTable.size() * 4, config.stream);
    if (s.ok() && count > 0)
      s = context->copyIn(layer.deviceFreePages, layer.freePages.data(),
                          size_t(count) * 4, config.stream);
    if (s.ok())
      s = context->copyIn(layer.deviceFreePages + numPages, &count, 4,
                          config.stream);
    layer.uploadedPageVersion = s.ok() ? layer.pageVersion : -1;
    return s;
  }

  /// The buffers of `layer` that every kernel call over the cache names
  /// alike (an AttentionCall or an AppendCall).
  template <typename Call>
  static void setLayerBuffers(Call &call, Layer &layer) {
    call.keyWords = layer.key.words;
    call.keyScales = layer.key.scales;
    call.keyZeros = layer.key.zeros;
    call.valueWords = layer.value.words;
    call.valueScales = layer.value.scales;
    call.valueZeros = layer.value.zeros;
    call.sinkKeys = layer.sinkK;
    call.sinkValues = layer.sinkV;
    call.residualKeys = layer.residualK;
    call.residualValues = layer.residualV;
  }

  /// The attention call over `layer`'s buffers (lengths, batch and host
  /// lengths for the caller to fill in).
  AttentionCall attentionCall(Layer &layer, const void *q, void *out) {
    const CacheConfig &c = config;
    AttentionCall call;
    setLayerBuffers(call, layer);
    call.q = q;
    call.out = out;
    call.workspace = workspace;
    call.workspaceBytes = workspaceBytes;
    call.blockTable = layer.deviceBlockTable;
    call.maxPages = maxPages;
    call.numPages = numPages;
    call.sinkCapacity = std::max(1, c.sink);
    call.residualCapacity = residualCapacity;
    call.stream = c.stream;
    return call;
  }

  /// [batch, 3]: each sequence's sink, quantized and residual counts (in
  /// the layer's reused buffer).
  const std::vector<int32_t> &hostLengths(Layer &layer) const {
    std::vector<int32_t> &lengths = layer.lengthsScratch;
    lengths.resize(layer.parts.size() * 3);
    for (size_t i = 0; i < layer.parts.size(); ++i) {
      const Parts &p = layer.parts[i];
      lengths[3 * i] = p.sink;
      lengths[3 * i + 1] = p.quantized;
      lengths[3 * i + 2] = p.residual;
    }
    return lengths;
  }

  /// A decode step of layer `index` on the host's counts, as the append
  /// kernel will run it on the device's: which sequences take a token
  /// (`stepping`), which flush, and the pages the flushes take (`needed`; a
  /// flush into an empty page takes one). The counts after it go to
  /// stepParts (reused: no allocation); an error, changing nothing, if a
  /// sequence is at capacity or the pool is short.
  Status planStep(int index, int &needed, int &stepping) {
    const Layer &layer = layers[index];
    std::vector<Parts> &after = stepParts;
    after = layer.parts;
    needed = stepping = 0;
    for (int seq = 0; seq < config.batch; ++seq) {
      Parts &p = after[seq];
      if (p.total() == 0)
        continue;
      if (p.total() + 1 > config.capacity)
        return Status(StatusCode::InvalidArgument,
                      "sequence " + std::to_string(seq) + " of layer " +
                          std::to_string(index) + " holds " +
                          std::to_string(p.total()) +
                          " tokens, the capacity: release it before the step");
      int quantized = p.quantized;
      ++stepping;
      if (route(p, 1).back().flush > 0 && quantized % pageTokens == 0)
        ++needed;
    }
    if (needed > layer.freePageCount())
      return poolTooSmall(layer, needed,
                          "a decode step of " + std::to_string(stepping) +
                              " sequences");
    return Status();
  }

  /// The host's counts after a step planStep planned and the device ran
  /// (or, replayed, will run): the device's lengths are the same again,
  /// and it took `needed` pages from its stack.
  void commitStep(Layer &layer, int needed) {
    layer.parts.swap(stepParts);
    layer.uploadedLengths = hostLengths(layer);
    layer.devicePops += needed;
  }

  /// Pages sequence `seq` must take from the free list for its store to
  /// grow from `from` to `to` quantized tokens.
  int pagesNeeded(const Layer &layer, int seq, int from, int to) const {
    int needed = 0;
    for (int slot = from / pageTokens; slot * pageTokens < to; ++slot)
      needed += layer.blockTable[size_t(seq) * maxPages + slot] < 0;
    return needed;
  }
};

std::unique_ptr<QuantizedKVCache>
QuantizedKVCache::create(Context &context, const CacheConfig &config,
                         Status *status) {
  auto fail = [&](const std::string &message) {
    if (status)
      *status = invalid(message);
    return nullptr;
  };
  for (auto [name, value] :
       {std::pair<const char *, int>{"layers", config.layers},
        {"batch", config.batch},
        {"kv heads", config.kvHeads},
        {"query heads", config.queryHeads},
        {"head_dim", config.headDim},
        {"capacity", config.capacity}})
    if (value < 1)
      return fail(std::string(name) + " must be at least 1, got " +
                  std::to_string(value));
  if (config.sink < 0 || config.residual < 0)
    return fail("sink and residual must not be negative");
  if (config.maxQueryTokens < 1)
    return fail("max query tokens must be at least 1, got " +
                std::to_string(config.maxQueryTokens));
  if (std::optional<std::string> problem = checkStaticScales(config))
    return fail(*problem);
  // Bounds that keep every size below from overflowing and every launch
  // within CUDA's grid: far above any model.
  for (auto [name, value, limit] :
       {std::tuple<const char *, int, int>{"layers", config.layers, 1 << 16},
        {"batch", config.batch, 65535},
        {"kv heads", config.kvHeads, 65535},
        {"query heads", config.queryHeads, 1 << 20},
        {"capacity", config.capacity, 1 << 30},
        {"sink", config.sink, 1 << 20},
        {"residual", config.residual, 1 << 20},
        {"max query tokens", config.maxQueryTokens, 64}})
    if (value > limit)
      return fail(std::string(name) + " " + std::to_string(value) +
                  " is above the supported " + std::to_string(limit));
  auto impl = std::make_unique<Impl>();
  impl->context = context.share();
  impl->config = config;
  impl->unit = unitOf(config);
  impl->flushTokens = flushTokensOf(impl->unit);
  // The quantized tokens live in pages (a multiple of the unit) drawn from
  // one pool per layer; a sequence can fill its whole capacity.
  impl->pageTokens = cachePageTokens(config.key, config.value, config.headDim);
  impl->maxPages = (config.capacity + impl->pageTokens - 1) / impl->pageTokens;
  impl->storeCapacity = impl->maxPages * impl->pageTokens;
  int64_t fullPool = int64_t(config.batch) * impl->maxPages;
  if (config.pages < 0 || config.pages > fullPool)
    return fail("pages must be in [0, " + std::to_string(fullPool) +
                "] (batch x capacity in pages), got " +
                std::to_string(config.pages));
  impl->numPages = config.pages ? config.pages : int(fullPool);
  // New tokens of an appendAndAttend wait in the residual, unflushed,
  // until they have attended.
  impl->residualCapacity = config.residual + impl->flushTokens +
                           std::max(0, config.maxQueryTokens - 1);

  impl->attention = KernelSpec::forAttention(
      config.key, config.value, config.headDim, config.queryHeads,
      config.kvHeads, config.dtype, config.sink > 0, /*residual=*/true);
  impl->attention.pageTokens = impl->pageTokens;
  const KernelSpec &a = impl->attention;
  if (std::optional<std::string> problem = a.validate())
    return fail("invalid cache configuration: " + *problem);
  impl->quantizeKey = KernelSpec::forScheme(KernelKind::Quantize, config.key,
                                            config.headDim, config.dtype);
  impl->quantizeValue = KernelSpec::forScheme(
      KernelKind::Quantize, config.value, config.headDim, config.dtype);
  // Per-head static scales: the kernels index the kv heads.
  impl->quantizeKey.kvHeads = impl->quantizeValue.kvHeads = config.kvHeads;
  if (config.prefillZeroPoints != ZeroPointSearch::MinMax &&
      config.prefillZeroPoints != ZeroPointSearch::Hqq)
    return fail("prefill zero points has no such value (" +
                std::to_string(int(config.prefillZeroPoints)) + ")");
  if (config.prefillZeroPoints == ZeroPointSearch::Hqq &&
      config.key.symmetric && config.value.symmetric)
    return fail("prefill zero points hqq: both schemes are symmetric (" +
                config.key.tag() + ", " + config.value.tag() +
                ") and have no zero points to search");
  impl->prefillKey = impl->quantizeKey;
  impl->prefillValue = impl->quantizeValue;
  // A symmetric scheme has no zero points: it quantizes as usual.
  for (KernelSpec *prefill : {&impl->prefillKey, &impl->prefillValue})
    if (!prefill->key.symmetric && !prefill->key.isStatic())
      prefill->zeroPoints = config.prefillZeroPoints;
  for (const KernelSpec *spec : {&impl->quantizeKey, &impl->quantizeValue})
    if (std::optional<std::string> problem = spec->validate())
      return fail("invalid cache configuration: " +
                  std::string(spec == &impl->quantizeKey ? "key" : "value") +
                  " " + *problem);
  if (config.residual >= 1)
    impl->step = KernelSpec::forAppend(config.key, config.value, config.headDim,
                                       config.dtype);
  if (config.maxQueryTokens > 1) {
    impl->chunkedAttention = impl->attention;
    impl->chunkedAttention->chunked = true;
  }
  // Compile (or find) every kernel now: errors surface at creation, and
  // decoding never waits for a compiler.
  for (const KernelSpec &spec : impl->kernels()) {
    Status prepared = context.prepare(spec);
    if (!prepared.ok()) {
      if (status)
        *status = prepared;
      return nullptr;
    }
  }

  Status s;
  size_t heads = config.kvHeads, rowBytes = size_t(config.headDim) * 2;
  for (int l = 0; l < config.layers; ++l) {
    Layer layer;
    size_t sinkBytes =
        config.batch * heads * std::max(1, config.sink) * rowBytes;
    size_t residualBytes =
        config.batch * heads * impl->residualCapacity * rowBytes;
    layer.sinkK = impl->allocate(sinkBytes, s);
    layer.sinkV = impl->allocate(sinkBytes, s);
    layer.residualK = impl->allocate(residualBytes, s);
    layer.residualV = impl->allocate(residualBytes, s);
    layer.key =
        impl->makeStore(config.key, l, config.keyScales, config.keyZeros, s);
    layer.value = impl->makeStore(config.value, l, config.valueScales,
                                  config.valueZeros, s);
    layer.parts.assign(config.batch, Parts());
    layer.blockTable.assign(size_t(config.batch) * impl->maxPages, -1);
    for (int page = impl->numPages - 1; page >= 0; --page)
      layer.freePages.push_back(page);
    layer.pageHolders.assign(impl->numPages, 0);
    impl->layers.push_back(layer);
  }
  // Room for K and V: a residual's shift uses one half, staged token-major
  // input (append with a TokenLayout) both.
  impl->scratch =
      impl->allocate(2 * heads * impl->residualCapacity * rowBytes, s);
  for (Layer &layer : impl->layers) {
    layer.deviceLengths =
        static_cast<int32_t *>(impl->allocate(size_t(config.batch) * 3 * 4, s));
    layer.deviceBlockTable = static_cast<int32_t *>(
        impl->allocate(size_t(config.batch) * impl->maxPages * 4, s));
    layer.deviceFreePages = static_cast<int32_t *>(
        impl->allocate((size_t(impl->numPages) + 1) * 4, s));
  }
  if (impl->chunkedAttention) {
    impl->deviceRowLengths = static_cast<int32_t *>(
        impl->allocate(size_t(impl->maxRows()) * 3 * 4, s));
    impl->deviceRowSequences =
        static_cast<int32_t *>(impl->allocate(size_t(impl->maxRows()) * 4, s));
  }
  AttentionCall probe;
  probe.batch = impl->maxRows(); // the chunked kernel's rows, if any
  probe.maxPages = impl->maxPages;
  probe.numPages = impl->numPages;
  impl->workspaceBytes = context.attentionWorkspaceBytes(a, probe);
  if (impl->chunkedAttention)
    impl->workspaceBytes = std::max(
        impl->workspaceBytes,
        context.attentionWorkspaceBytes(*impl->chunkedAttention, probe));
  impl->workspace = impl->allocate(impl->workspaceBytes, s);
  if (!s.ok()) {
    if (status)
      *status = s;
    for (void *p : impl->owned)
      context.release(p);
    return nullptr;
  }
  auto cache = std::unique_ptr<QuantizedKVCache>(new QuantizedKVCache());
  cache->impl = std::move(impl);
  if (status)
    *status = Status();
  return cache;
}

QuantizedKVCache::~QuantizedKVCache() {
  std::lock_guard<std::mutex> lock(impl->mutex);
  for (void *p : impl->owned)
    impl->context->release(p);
}

Status QuantizedKVCache::append(int layerIndex, int seq, const void *k,
                                const void *v, int tokens) {
  int64_t d = impl->config.headDim;
  return append(layerIndex, seq, k, v, tokens,
                TokenLayout{std::max<int64_t>(tokens, 0) * d, d});
}

namespace {

/// `what` (a layer or a sequence) `index` outside [0, count).
Status outside(const char *what, int index, int count) {
  return invalid(std::string(what) + " " + std::to_string(index) +
                 " is outside [0, " + std::to_string(count) + ")");
}

/// What makes input tokens `k` and `v` laid out as `layout` unusable.
Status checkInput(const CacheConfig &c, const void *k, const void *v,
                  const TokenLayout &layout) {
  if (!k || !v)
    return invalid(std::string(k ? "v" : "k") + " is null");
  if (reinterpret_cast<uintptr_t>(k) % 2 || reinterpret_cast<uintptr_t>(v) % 2)
    return invalid("k and v must be 2-byte aligned");
  // A head's row of head_dim channels is contiguous: strides below it would
  // make rows overlap; the kernels index in 32 bits.
  for (auto [name, stride] : {std::pair{"head", layout.headStride},
                              std::pair{"token", layout.tokenStride}}) {
    if (stride < c.headDim)
      return invalid(std::string("the input's ") + name + " stride " +
                     std::to_string(stride) + " is below head_dim " +
                     std::to_string(c.headDim) +
                     " (strides are in elements; a row of head_dim channels "
                     "is contiguous)");
    if (stride > INT32_MAX)
      return invalid(std::string("the input's ") + name + " stride " +
                     std::to_string(stride) + " is above 2^31 - 1");
  }
  return Status();
}

/// What makes an append of `tokens` tokens to sequence `seq` of layer
/// `layerIndex` invalid, before anything happens (the pool is checked
/// apart: pagesForAppend).
Status checkAppend(const CacheConfig &c, const std::vector<Layer> &layers,
                   int layerIndex, int seq, const void *k, const void *v,
                   int tokens, const TokenLayout &layout) {
  if (layerIndex < 0 || layerIndex >= c.layers)
    return outside("layer", layerIndex, c.layers);
  if (seq < 0 || seq >= c.batch)
    return outside("sequence", seq, c.batch);
  if (tokens < 0)
    return invalid("tokens must not be negative, got " +
                   std::to_string(tokens));
  if (tokens == 0)
    return Status();
  if (Status s = checkInput(c, k, v, layout); !s.ok())
    return s;
  int64_t total = layers[layerIndex].parts[seq].total() + int64_t(tokens);
  if (total > c.capacity)
    return invalid("appending " + std::to_string(tokens) +
                   " tokens to sequence " + std::to_string(seq) + " of layer " +
                   std::to_string(layerIndex) + " would hold " +
                   std::to_string(total) + " tokens, more than the capacity " +
                   std::to_string(c.capacity));
  return Status();
}

/// checkAppend for a sequence whose `tokens` tokens start at token `first`
/// of a packed input (several sequences' tokens one after another).
Status checkPackedAppend(const CacheConfig &c, const std::vector<Layer> &layers,
                         int layerIndex, int seq, const void *k, const void *v,
                         int first, int tokens, const TokenLayout &layout) {
  size_t at =
      size_t(first) * size_t(std::max<int64_t>(0, layout.tokenStride)) * 2;
  return checkAppend(c, layers, layerIndex, seq,
                     k ? static_cast<const char *>(k) + at : nullptr,
                     v ? static_cast<const char *>(v) + at : nullptr, tokens,
                     layout);
}

} // namespace

/// The steps of appending `tokens` tokens to sequence `seq` (route()), and
/// in `pages` the pages it must take from `layer`'s free list.
QuantizedKVCache::Impl::AppendSteps
QuantizedKVCache::Impl::planAppend(const Layer &layer, int seq, int tokens,
                                   int &pages) const {
  Parts after = layer.parts[seq];
  AppendSteps steps = route(after, tokens);
  pages = pagesNeeded(layer, seq, layer.parts[seq].quantized, after.quantized);
  return steps;
}

/// ResourceExhausted: `needed` pages for `what`, fewer free.
Status QuantizedKVCache::Impl::poolTooSmall(const Layer &layer, int needed,
                                            const std::string &what) const {
  return Status(StatusCode::ResourceExhausted,
                "no free page left in the pool of " + std::to_string(numPages) +
                    " pages (" + std::to_string(pageTokens) +
                    " tokens each): " + what + " needs " +
                    std::to_string(needed) + ", " +
                    std::to_string(layer.freePageCount()) +
                    " are free; release a sequence or create the cache with "
                    "more pages");
}

/// Runs an append that checkAppend and the pool already accepted, step by
/// step as planAppend routed it. A failure (a device error) puts the
/// counts and pages back.
Status QuantizedKVCache::Impl::runAppend(Layer &layer, int seq,
                                         const char *keys, const char *values,
                                         const TokenLayout &layout,
                                         const AppendSteps &steps) {
  Parts &p = layer.parts[seq];
  const Parts before = p;
  auto sequenceBase = [&](void *buffer, int stride) {
    return static_cast<char *>(buffer) +
           size_t(seq) * config.kvHeads * stride * rowBytes();
  };
  auto failed = [&](Status status) {
    p = before; // the counts say what the cache holds: nothing changed
    releasePages(layer, seq, before.quantized); // nor the pages
    return status;
  };
  for (const AppendStep &step : steps) {
    Status s;
    switch (step.kind) {
    case AppendStep::Sink:
      for (auto [dst, src] :
           {std::pair{layer.sinkK, keys}, std::pair{layer.sinkV, values}})
        if (s.ok())
          s = copyTokens(sequenceBase(dst, config.sink), config.sink, p.sink,
                         src, layout, step.first, step.count);
      p.sink += step.count;
      break;
    case AppendStep::Bulk:
      s = quantizeInput(layer, seq, keys, values, layout, step.first,
                        step.count, p.quantized);
      p.quantized += step.count;
      break;
    case AppendStep::Residual:
      for (auto [dst, src] : {std::pair{layer.residualK, keys},
                              std::pair{layer.residualV, values}})
        if (s.ok())
          s = copyTokens(sequenceBase(dst, residualCapacity), residualCapacity,
                         p.residual, src, layout, step.first, step.count);
      p.residual += step.count;
      if (s.ok())
        s = flush(layer, seq, step.flush);
      break;
    }
    if (!s.ok())
      return failed(s);
  }
  return Status();
}

Status QuantizedKVCache::append(int layerIndex, int seq, const void *k,
                                const void *v, int tokens,
                                const TokenLayout &layout) {
  std::lock_guard<std::mutex> lock(impl->mutex);
  Status s = checkAppend(impl->config, impl->layers, layerIndex, seq, k, v,
                         tokens, layout);
  if (!s.ok() || tokens == 0)
    return s;
  Layer &layer = impl->layers[layerIndex];
  if (Status pulled = impl->pullPages(layer); !pulled.ok())
    return pulled;
  // Every page the append needs, checked before anything changes: running
  // out midway would leave a residual already shifted by earlier flushes.
  int needed = 0;
  Impl::AppendSteps steps = impl->planAppend(layer, seq, tokens, needed);
  if (needed > layer.freePageCount())
    return impl->poolTooSmall(layer, needed,
                              "appending " + std::to_string(tokens) +
                                  " tokens to sequence " + std::to_string(seq));
  return impl->runAppend(layer, seq, static_cast<const char *>(k),
                         static_cast<const char *>(v), layout, steps);
}

Status QuantizedKVCache::appendPacked(int layerIndex, const void *k,
                                      const void *v, const int32_t *sequences,
                                      const int32_t *offsets, int count,
                                      const TokenLayout &layout) {
  std::lock_guard<std::mutex> lock(impl->mutex);
  const CacheConfig &c = impl->config;
  if (count < 0)
    return invalid("count must not be negative, got " + std::to_string(count));
  if (count == 0)
    return Status();
  if (!sequences || !offsets)
    return invalid(std::string(sequences ? "offsets" : "sequences") +
                   " is null");
  if (offsets[0] < 0)
    return invalid("offsets[0] must not be negative, got " +
                   std::to_string(offsets[0]));
  std::vector<bool> seen(std::max(0, c.batch));
  std::vector<Impl::AppendSteps> plans;
  int needed = 0;
  for (int i = 0; i < count; ++i) {
    int tokens = offsets[i + 1] - offsets[i];
    if (tokens < 0)
      return invalid("offsets must not decrease: offsets[" +
                     std::to_string(i + 1) +
                     "] = " + std::to_string(offsets[i + 1]) + " < offsets[" +
                     std::to_string(i) + "] = " + std::to_string(offsets[i]));
    int seq = sequences[i];
    Status s = checkPackedAppend(c, impl->layers, layerIndex, seq, k, v,
                                 offsets[i], tokens, layout);
    if (!s.ok())
      return Status(s.code(), "packed sequence " + std::to_string(i) + ": " +
                                  s.message());
    if (seen[seq])
      return invalid("sequence " + std::to_string(seq) +
                     " appears twice (packed sequences " + std::to_string(i) +
                     " and an earlier one)");
    seen[seq] = true;
    int pages = 0;
    plans.push_back(
        impl->planAppend(impl->layers[layerIndex], seq, tokens, pages));
    needed += pages;
  }
  Layer &layer = impl->layers[layerIndex];
  if (Status pulled = impl->pullPages(layer); !pulled.ok())
    return pulled;
  if (needed > layer.freePageCount())
    return impl->poolTooSmall(layer, needed,
                              "appending " + std::to_string(count) +
                                  " packed sequences");
  for (int i = 0; i < count; ++i) {
    size_t at = size_t(offsets[i]) * size_t(layout.tokenStride) * 2;
    Status s =
        impl->runAppend(layer, sequences[i], static_cast<const char *>(k) + at,
                        static_cast<const char *>(v) + at, layout, plans[i]);
    if (!s.ok()) // a device error: the sequences before it are appended
      return Status(s.code(),
                    "packed sequence " + std::to_string(i) + " (sequence " +
                        std::to_string(sequences[i]) +
                        "; the ones before it were appended): " + s.message());
  }
  return Status();
}

Status QuantizedKVCache::appendStep(int layerIndex, const void *k,
                                    const void *v) {
  int64_t d = impl->config.headDim;
  return appendStep(layerIndex, k, v,
                    TokenLayout{d, int64_t(impl->config.kvHeads) * d});
}

Status QuantizedKVCache::appendStep(int layerIndex, const void *k,
                                    const void *v, const TokenLayout &layout) {
  std::lock_guard<std::mutex> lock(impl->mutex);
  const CacheConfig &c = impl->config;
  if (layerIndex < 0 || layerIndex >= c.layers)
    return outside("layer", layerIndex, c.layers);
  if (!impl->step)
    return invalid("appendStep needs a residual of at least one token (the "
                   "newest token waits there while its group is quantized); "
                   "this cache has residual 0: use append()");
  if (Status s = checkInput(c, k, v, layout); !s.ok())
    return s;
  Layer &layer = impl->layers[layerIndex];
  int needed = 0, stepping = 0;
  if (Status s = impl->planStep(layerIndex, needed, stepping);
      !s.ok() || stepping == 0)
    return s;
  // What the host changed since (a host-side append, a release) goes first.
  if (Status s = impl->pushChanges(layer); !s.ok())
    return s;
  AppendCall call;
  call.keys = k;
  call.values = v;
  call.headStride = layout.headStride;
  call.tokenStride = layout.tokenStride;
  call.lengths = layer.deviceLengths;
  call.blockTable = layer.deviceBlockTable;
  call.freePages = layer.deviceFreePages;
  call.freeCount = layer.deviceFreePages + impl->numPages;
  Impl::setLayerBuffers(call, layer);
  call.batch = c.batch;
  call.kvHeads = c.kvHeads;
  call.maxPages = impl->maxPages;
  call.numPages = impl->numPages;
  call.pageTokens = impl->pageTokens;
  call.sinkCapacity = std::max(1, c.sink);
  call.sinkTokens = c.sink;
  call.residualCapacity = impl->residualCapacity;
  call.residualTokens = c.residual;
  call.flushTokens = impl->flushTokens;
  call.stream = c.stream;
  if (Status s = impl->context->append(*impl->step, call); !s.ok())
    return s; // not launched: nothing changed
  impl->commitStep(layer, needed);
  return Status();
}

Status QuantizedKVCache::prepareReplayedStep() {
  std::lock_guard<std::mutex> lock(impl->mutex);
  if (!impl->step)
    return invalid("a replayed step is appendStep's: this cache has residual "
                   "0 and no appendStep");
  // Every layer's step must fit before any is counted.
  for (int l = 0; l < impl->config.layers; ++l) {
    int needed = 0, stepping = 0;
    if (Status s = impl->planStep(l, needed, stepping); !s.ok())
      return s;
  }
  for (int l = 0; l < impl->config.layers; ++l) {
    Layer &layer = impl->layers[l];
    // The device must hold what the host holds before the step runs there.
    if (Status s = impl->pushChanges(layer); !s.ok())
      return s;
    int needed = 0, stepping = 0;
    if (Status s = impl->planStep(l, needed, stepping); !s.ok())
      return s;
    impl->commitStep(layer, needed);
  }
  return Status();
}

Status QuantizedKVCache::appendAndAttend(int layerIndex, const void *k,
                                         const void *v, const void *q,
                                         void *out, const int32_t *offsets,
                                         const TokenLayout &layout) {
  std::lock_guard<std::mutex> lock(impl->mutex);
  const CacheConfig &c = impl->config;
  if (!impl->chunkedAttention)
    return invalid("appendAndAttend needs a cache created with "
                   "maxQueryTokens above 1 (this one has " +
                   std::to_string(c.maxQueryTokens) + ")");
  if (layerIndex < 0 || layerIndex >= c.layers)
    return outside("layer", layerIndex, c.layers);
  if (!offsets || !q || !out)
    return invalid(std::string(!offsets ? "offsets"
                               : !q     ? "q"
                                        : "out") +
                   " is null");
  if (offsets[0] != 0)
    return invalid("offsets[0] must be 0, got " + std::to_string(offsets[0]));
  Layer &layer = impl->layers[layerIndex];
  for (int seq = 0; seq < c.batch; ++seq) {
    int tokens = offsets[seq + 1] - offsets[seq];
    if (tokens < 0 || tokens > c.maxQueryTokens)
      return invalid("sequence " + std::to_string(seq) + " takes " +
                     std::to_string(tokens) + " tokens (offsets " +
                     std::to_string(offsets[seq]) + " to " +
                     std::to_string(offsets[seq + 1]) +
                     "), outside [0, maxQueryTokens " +
                     std::to_string(c.maxQueryTokens) + "]");
    if (Status s = checkPackedAppend(c, impl->layers, layerIndex, seq, k, v,
                                     offsets[seq], tokens, layout);
        !s.ok())
      return s;
  }
  int rows = offsets[c.batch];
  if (rows == 0)
    return Status();
  if (Status pulled = impl->pullPages(layer); !pulled.ok())
    return pulled;
  // The flushes after the attention, and the pages they take, counted
  // before anything changes.
  std::vector<Parts> &after = impl->stepParts;
  after = layer.parts;
  std::vector<int> flushes(c.batch, 0);
  int needed = 0;
  for (int seq = 0; seq < c.batch; ++seq) {
    Parts &p = after[seq];
    impl->route(p, offsets[seq + 1] - offsets[seq], /*flushing=*/false);
    int excess = p.residual - c.residual;
    if (excess >= impl->flushTokens)
      flushes[seq] = excess / impl->flushTokens * impl->flushTokens;
    needed +=
        impl->pagesNeeded(layer, seq, p.quantized, p.quantized + flushes[seq]);
  }
  if (needed > layer.freePageCount())
    return impl->poolTooSmall(layer, needed,
                              "flushing after " + std::to_string(rows) +
                                  " new tokens");
  // The new tokens go to the sink and the residual, unflushed.
  for (int seq = 0; seq < c.batch; ++seq) {
    int tokens = offsets[seq + 1] - offsets[seq];
    if (tokens == 0)
      continue;
    Parts p = layer.parts[seq];
    Impl::AppendSteps steps = impl->route(p, tokens, /*flushing=*/false);
    size_t at = size_t(offsets[seq]) * size_t(layout.tokenStride) * 2;
    if (Status s =
            impl->runAppend(layer, seq, static_cast<const char *>(k) + at,
                            static_cast<const char *>(v) + at, layout, steps);
        !s.ok())
      return s;
  }
  // A query row per new token: its sequence, and the prefix it sees.
  impl->rowLengths.resize(size_t(rows) * 3);
  impl->rowSequences.resize(size_t(rows));
  for (int seq = 0; seq < c.batch; ++seq) {
    const Parts &p = layer.parts[seq];
    int first = p.total() - (offsets[seq + 1] - offsets[seq]);
    for (int row = offsets[seq]; row < offsets[seq + 1]; ++row) {
      int horizon = first + (row - offsets[seq]) + 1;
      int32_t *l = &impl->rowLengths[size_t(row) * 3];
      l[0] = std::min(p.sink, horizon);
      l[1] = std::min(p.quantized, std::max(0, horizon - p.sink));
      l[2] = std::max(0, horizon - p.sink - p.quantized);
      impl->rowSequences[row] = seq;
    }
  }
  Status s = impl->pushChanges(layer);
  for (auto [device, host] :
       {std::pair{impl->deviceRowLengths, &impl->rowLengths},
        std::pair{impl->deviceRowSequences, &impl->rowSequences}})
    if (s.ok())
      s = impl->context->copyIn(device, host->data(), host->size() * 4,
                                c.stream);
  if (!s.ok())
    return s;
  AttentionCall call = impl->attentionCall(layer, q, out);
  call.batch = rows;
  call.lengths = impl->deviceRowLengths;
  call.hostLengths = impl->rowLengths.data();
  call.rowSequences = impl->deviceRowSequences;
  call.sequences = c.batch;
  if (Status a = impl->context->attention(*impl->chunkedAttention, call);
      !a.ok())
    return a;
  // Now the residuals flush what the new tokens filled.
  for (int seq = 0; seq < c.batch; ++seq)
    if (Status f = impl->flush(layer, seq, flushes[seq]); !f.ok())
      return f;
  return Status();
}

Status QuantizedKVCache::attend(int layerIndex, const void *q, void *out) {
  std::lock_guard<std::mutex> lock(impl->mutex);
  const CacheConfig &c = impl->config;
  if (layerIndex < 0 || layerIndex >= c.layers)
    return outside("layer", layerIndex, c.layers);
  if (!q || !out)
    return invalid(std::string(q ? "out" : "q") + " is null");
  Layer &layer = impl->layers[layerIndex];
  // Copy what the host changed since the device last saw it, and only that
  // (nothing after appendStep, which advances the device's state itself).
  if (Status s = impl->pushChanges(layer); !s.ok())
    return s;
  const std::vector<int32_t> &lengths = layer.lengthsScratch;
  AttentionCall call = impl->attentionCall(layer, q, out);
  call.lengths = layer.deviceLengths;
  call.hostLengths = lengths.data();
  call.batch = c.batch;
  return impl->context->attention(impl->attention, call);
}

Status QuantizedKVCache::release(int seq) {
  std::lock_guard<std::mutex> lock(impl->mutex);
  if (seq < 0 || seq >= impl->config.batch)
    return outside("sequence", seq, impl->config.batch);
  if (Status pulled = impl->pullAllPages(); !pulled.ok())
    return pulled;
  for (Layer &layer : impl->layers) {
    impl->releasePages(layer, seq, 0);
    layer.parts[seq] = Parts();
  }
  return Status();
}

/// Tokens at the end of `p` still in fp16: the residual's, and the sink's
/// while nothing is quantized.
static int fp16Tail(const QuantizedKVCache::Parts &p) {
  return p.residual + (p.quantized == 0 ? p.sink : 0);
}

int QuantizedKVCache::truncatableTokens(int seq) const {
  std::lock_guard<std::mutex> lock(impl->mutex);
  if (seq < 0 || seq >= impl->config.batch)
    return 0;
  int fewest = std::numeric_limits<int>::max();
  for (const Layer &layer : impl->layers)
    fewest = std::min(fewest, fp16Tail(layer.parts[seq]));
  return fewest;
}

Status QuantizedKVCache::truncate(int seq, int tokens) {
  std::lock_guard<std::mutex> lock(impl->mutex);
  if (seq < 0 || seq >= impl->config.batch)
    return outside("sequence", seq, impl->config.batch);
  if (tokens < 0)
    return invalid("cannot truncate " + std::to_string(tokens) + " tokens");
  // Every layer is checked before any changes. The device lengths follow
  // at the next call (pushChanges); the residual rows past the new count
  // are simply overwritten later.
  for (size_t l = 0; l < impl->layers.size(); ++l) {
    int removable = fp16Tail(impl->layers[l].parts[seq]);
    if (tokens > removable)
      return invalid("sequence " + std::to_string(seq) + " layer " +
                     std::to_string(l) + ": cannot remove " +
                     std::to_string(tokens) + " tokens, only the last " +
                     std::to_string(removable) +
                     " are still fp16 (the rest are quantized)");
  }
  for (Layer &layer : impl->layers) {
    Parts &p = layer.parts[seq];
    int fromResidual = std::min(tokens, p.residual);
    p.residual -= fromResidual;
    p.sink -= tokens - fromResidual;
  }
  return Status();
}

Status QuantizedKVCache::fork(int source, int target) {
  std::lock_guard<std::mutex> lock(impl->mutex);
  int batch = impl->config.batch;
  for (auto [name, seq] : {std::pair{"source", source}, {"target", target}})
    if (seq < 0 || seq >= batch)
      return invalid(std::string(name) + " sequence " + std::to_string(seq) +
                     " is outside [0, " + std::to_string(batch) + ")");
  if (source == target)
    return invalid("a sequence cannot be forked into itself (" +
                   std::to_string(source) + ")");
  for (const Layer &layer : impl->layers)
    if (layer.parts[target].total() != 0)
      return invalid("target sequence " + std::to_string(target) +
                     " is not empty: release it first");
  if (Status pulled = impl->pullAllPages(); !pulled.ok())
    return pulled;
  for (Layer &layer : impl->layers) {
    Status s = impl->fork(layer, source, target);
    if (!s.ok()) { // undo: the target is empty again in every layer
      for (Layer &undo : impl->layers) {
        impl->releasePages(undo, target, 0);
        undo.parts[target] = Parts();
      }
      return s;
    }
  }
  return Status();
}

namespace {
constexpr const char *kSnapshotMagic = "kvq-sequence 1\n";

void putInt(std::string &out, int32_t value) {
  out.append(reinterpret_cast<const char *>(&value), 4);
}
} // namespace

Status QuantizedKVCache::snapshot(int seq, std::string &bytes) const {
  std::lock_guard<std::mutex> lock(impl->mutex);
  if (seq < 0 || seq >= impl->config.batch)
    return outside("sequence", seq, impl->config.batch);
  if (Status pulled = impl->pullAllPages(); !pulled.ok())
    return pulled;
  std::string payload;
  for (Layer &layer : impl->layers) {
    const Parts &p = layer.parts[seq];
    for (int count : {p.sink, p.quantized, p.residual})
      putInt(payload, count);
    for (auto [device, size] : impl->regions(layer, seq, p)) {
      size_t at = payload.size();
      payload.resize(at + size);
      Status s = impl->context->copyOut(&payload[at], device, size);
      if (!s.ok())
        return s;
    }
  }
  std::array<uint8_t, 32> digest =
      llvm::SHA256::hash(llvm::arrayRefFromStringRef(payload));
  bytes = std::string(kSnapshotMagic) + impl->identity() + "\n" +
          llvm::toHex(digest, /*LowerCase=*/true) + "\n" + payload;
  return Status();
}

Status QuantizedKVCache::restore(int seq, const std::string &bytes) {
  std::lock_guard<std::mutex> lock(impl->mutex);
  const CacheConfig &c = impl->config;
  if (seq < 0 || seq >= c.batch)
    return outside("sequence", seq, c.batch);
  for (const Layer &layer : impl->layers)
    if (layer.parts[seq].total() != 0)
      return invalid("sequence " + std::to_string(seq) +
                     " is not empty: release it first");
  // Every byte is checked before any is used: the format, the cache it
  // was taken from, the checksum, then each count against this cache.
  llvm::StringRef text(bytes);
  if (!text.consume_front(kSnapshotMagic))
    return invalid("not a kvq sequence snapshot");
  auto [identity, rest] = text.split('\n');
  if (identity != impl->identity())
    return invalid("the snapshot is of another cache configuration ('" +
                   identity.str() + "', this cache is '" + impl->identity() +
                   "')");
  auto [checksum, payload] = rest.split('\n');
  if (checksum !=
      llvm::toHex(llvm::SHA256::hash(llvm::arrayRefFromStringRef(payload)),
                  /*LowerCase=*/true))
    return invalid("the snapshot's checksum does not match its contents");
  if (Status pulled = impl->pullAllPages(); !pulled.ok())
    return pulled;
  std::vector<Parts> parts;
  size_t at = 0;
  auto getInt = [&](int32_t &value) {
    if (payload.size() - at < 4)
      return false;
    std::memcpy(&value, payload.data() + at, 4);
    at += 4;
    return true;
  };
  auto failed = [&](Status status) {
    for (Layer &layer : impl->layers) {
      impl->releasePages(layer, seq, 0);
      layer.parts[seq] = Parts();
    }
    return status;
  };
  for (Layer &layer : impl->layers) {
    Parts p;
    if (!getInt(p.sink) || !getInt(p.quantized) || !getInt(p.residual))
      return failed(invalid("the snapshot is truncated"));
    if (p.sink < 0 || p.sink > c.sink || p.quantized < 0 ||
        p.quantized > impl->storeCapacity || p.quantized % impl->flushTokens ||
        p.residual < 0 || p.residual > impl->residualCapacity ||
        p.total() > c.capacity)
      return failed(
          invalid("the snapshot's token counts (" + std::to_string(p.sink) +
                  ", " + std::to_string(p.quantized) + ", " +
                  std::to_string(p.residual) + ") do not fit this cache"));
    for (int token = 0; token < p.quantized; token += impl->pageTokens)
      if (impl->pageFor(layer, seq, token) < 0)
        return failed(Status(StatusCode::ResourceExhausted,
                             "no free page left in the pool of " +
                                 std::to_string(impl->numPages) +
                                 " pages for the restored sequence"));
    for (auto [device, size] : impl->regions(layer, seq, p)) {
      if (payload.size() - at < size)
        return failed(invalid("the snapshot is truncated"));
      Status s = impl->context->copyIn(device, payload.data() + at, size,
                                       impl->config.stream);
      if (!s.ok())
        return failed(s);
      at += size;
    }
    layer.parts[seq] = p;
  }
  if (at != payload.size())
    return failed(invalid("the snapshot has " +
                          std::to_string(payload.size() - at) +
                          " bytes past its last layer"));
  return Status();
}

int QuantizedKVCache::pagesInUse(int layer) const {
  std::lock_guard<std::mutex> lock(impl->mutex);
  if (layer < 0 || layer >= impl->config.layers)
    return 0;
  return impl->numPages - impl->layers[layer].freePageCount();
}

int QuantizedKVCache::pageTokens() const { return impl->pageTokens; }

QuantizedKVCache::Parts QuantizedKVCache::parts(int layer, int seq) const {
  std::lock_guard<std::mutex> lock(impl->mutex);
  if (layer < 0 || layer >= impl->config.layers || seq < 0 ||
      seq >= impl->config.batch)
    return Parts();
  return impl->layers[layer].parts[seq];
}

MemoryUse QuantizedKVCache::memory() const {
  std::lock_guard<std::mutex> lock(impl->mutex);
  const CacheConfig &c = impl->config;
  MemoryUse m;
  uint64_t row = uint64_t(c.kvHeads) * c.headDim * 2; // one token, one of K/V
  auto quantizedPerToken = [&](const QuantScheme &s) {
    uint64_t perToken = uint64_t(c.kvHeads) * c.headDim * s.bits / 8;
    uint64_t scales =
        uint64_t(c.kvHeads) * (c.headDim / s.groupSize(c.headDim));
    return perToken + scales * scaleBytes(s) * (s.symmetric ? 1 : 2);
  };
  for (const Layer &layer : impl->layers)
    for (const Parts &p : layer.parts) {
      m.sinkBytes += 2 * row * p.sink;
      m.residualBytes += 2 * row * p.residual;
      m.quantizedBytes +=
          p.quantized * (quantizedPerToken(c.key) + quantizedPerToken(c.value));
      m.fp16Bytes += 2 * row * p.total();
    }
  return m;
}

const CacheConfig &QuantizedKVCache::config() const { return impl->config; }
KernelSpec QuantizedKVCache::attentionSpec() const { return impl->attention; }

std::vector<KernelSpec> QuantizedKVCache::kernelSpecs() const {
  return impl->kernels();
}
