//===- Launch.cpp - validated launches of generated kernels ---------------===//

#include "kvq/Runtime/Launch.h"
#include "kvq/BufferSizes.h"

#include <climits>
#include <cmath>
#include <cstring>
#include <map>
#include <sstream>
#include <tuple>
#include <type_traits>

using namespace kvq;

char LaunchError::ID = 0;

namespace {

/// Builds a LaunchError from streamed pieces.
struct Problem {
  std::ostringstream os;
  template <typename T> Problem &operator<<(const T &value) {
    os << value;
    return *this;
  }
  operator llvm::Error() { return llvm::make_error<LaunchError>(os.str()); }
  template <typename T> operator llvm::Expected<T>() {
    return llvm::make_error<LaunchError>(os.str());
  }
};

const GeneratedKernel *findKernel(const GeneratedSource &source,
                                  const std::string &kind) {
  for (const GeneratedKernel &k : source.kernels)
    if (k.kind == kind)
      return &k;
  return nullptr;
}

llvm::Error checkPointer(const char *name, const void *p, size_t alignment) {
  if (!p)
    return Problem() << name << " is null";
  if (reinterpret_cast<uintptr_t>(p) % alignment != 0)
    return Problem() << name << " must be " << alignment
                     << "-byte aligned, got " << p;
  return llvm::Error::success();
}

/// The words, scales and (asymmetric) zero points of a quantize/dequantize.
llvm::Error checkQuantizedPointers(const KernelSpec &spec, const void *words,
                                   const void *scales, const void *zeros) {
  size_t scale = spec.key.fp32Scales ? 4 : 2;
  if (llvm::Error e = checkPointer("words", words, 4))
    return e;
  if (llvm::Error e = checkPointer("scales", scales, scale))
    return e;
  if (!spec.key.symmetric)
    return checkPointer("zeros", zeros, scale);
  return llvm::Error::success();
}

/// fp16 segments are read `halfVector` halves at a time.
size_t halfAlignment(const GeneratedKernel &k) {
  return 2 * k.plan.halvesPerLoad();
}

llvm::Error checkCount(const char *name, int value) {
  if (value < 0)
    return Problem() << name << " must not be negative, got " << value;
  return llvm::Error::success();
}

/// The largest index into one buffer, in the units the kernel indexes it
/// by (packed words, scales, halves), must fit its 32-bit index math.
llvm::Error checkIndexRange(const char *what, int64_t count,
                            const char *units = "elements") {
  if (count > INT_MAX)
    return Problem() << what << " holds " << count << " " << units
                     << ", more than the 2^31 - 1 a kernel addresses";
  return llvm::Error::success();
}

/// CUDA's grid limits: 2^31 - 1 blocks in x, 65535 in y and z.
llvm::Error checkGridDimension(const char *what, int64_t blocks, char dim) {
  int64_t limit = dim == 'x' ? INT_MAX : 65535;
  if (blocks > limit)
    return Problem() << what << " " << blocks << " exceeds CUDA's limit of "
                     << limit << " blocks in the grid's " << dim
                     << " dimension";
  return llvm::Error::success();
}

/// Token range checks shared by quantize and dequantize.
llvm::Error checkTokenRange(const KernelSpec &spec, int rows, int tokens,
                            int sourceTokens, int storeTokens, int offset,
                            const char *storeName, const char *offsetName) {
  for (auto [name, value] : {std::pair<const char *, int>{"rows", rows},
                             {"tokens", tokens},
                             {"in_tokens", sourceTokens},
                             {storeName, storeTokens},
                             {offsetName, offset}})
    if (llvm::Error e = checkCount(name, value))
      return e;
  if (offset + int64_t(tokens) > storeTokens)
    return Problem() << offsetName << " " << offset << " + tokens " << tokens
                     << " exceeds the store's " << storeTokens << " tokens";
  const QuantScheme &s = spec.key;
  if (s.axis == QuantScheme::Axis::Channel) {
    int group = s.groupSize(spec.headDim);
    for (auto [name, value] : {std::pair<const char *, int>{"tokens", tokens},
                               {offsetName, offset},
                               {storeName, storeTokens}})
      if (value % group != 0)
        return Problem() << "axis = channel quantizes whole " << group
                         << "-token groups: " << name << " " << value
                         << " is not a multiple of " << group;
  }
  if (llvm::Error e = checkIndexRange(
          "the fp16 rows", int64_t(rows) * sourceTokens * spec.headDim))
    return e;
  if (llvm::Error e = checkIndexRange(
          "the packed store",
          int64_t(packedWordCount(s, spec.headDim, rows, storeTokens)),
          "words"))
    return e;
  return checkIndexRange(
      "the store's scales",
      int64_t(scaleCount(s, spec.headDim, rows, storeTokens)), "scales");
}

KernelLaunch makeLaunch(const GeneratedKernel &k, std::array<unsigned, 3> grid,
                        void *stream) {
  KernelLaunch launch;
  launch.kernel = k.name;
  launch.stream = stream;
  launch.grid = grid;
  launch.block = {unsigned(k.threads), 1, 1};
  return launch;
}

/// What a call offers a kernel, by the argument names of KernelABI.h. A
/// launch takes the values in the order the kernel's own metadata lists its
/// arguments (GeneratedKernel::argNames, written by the lowering), so the
/// argument list is spelled once, where the kernel is generated: optional
/// arguments (zero points, sink, residual) are simply not asked for.
class Arguments {
public:
  template <typename T> Arguments &set(const char *name, T value) {
    static_assert(sizeof(T) <= sizeof(uint64_t), "argument wider than 8 "
                                                 "bytes");
    Slot slot;
    std::memcpy(&slot.bits, &value, sizeof(T));
    slot.pointer = std::is_pointer_v<T>;
    slots[name] = slot;
    return *this;
  }

  /// Fills `launch` for kernel `k`, checking each argument's kind against
  /// the C++ type the kernel declares.
  llvm::Error packInto(KernelLaunch &launch, const GeneratedKernel &k) const {
    launch.values.clear();
    for (size_t i = 0; i < k.argNames.size(); ++i) {
      auto it = slots.find(k.argNames[i]);
      if (it == slots.end())
        return Problem() << "kernel " << k.name << " takes an argument '"
                         << k.argNames[i]
                         << "' that this runtime does not provide (kernel "
                            "and runtime from different kvq builds?)";
      bool wantsPointer = i < k.argTypes.size() && !k.argTypes[i].empty() &&
                          k.argTypes[i].back() == '*';
      if (wantsPointer != it->second.pointer)
        return Problem() << "kernel " << k.name << " argument '"
                         << k.argNames[i] << "' is a " << k.argTypes[i]
                         << ", which this runtime does not pass";
      launch.values.push_back(it->second.bits);
    }
    launch.args.clear();
    for (uint64_t &slot : launch.values)
      launch.args.push_back(&slot);
    return llvm::Error::success();
  }

private:
  struct Slot {
    uint64_t bits = 0;
    bool pointer = false;
  };
  std::map<std::string, Slot> slots;
};

/// The buffers an attention call and a cache step name alike: the packed
/// body's words, scales and zero points, and the fp16 sink and residual.
template <typename Call>
Arguments &setCacheBuffers(Arguments &args, const Call &c) {
  return args.set("key_words", c.keyWords)
      .set("key_scales", c.keyScales)
      .set("key_zeros", c.keyZeros)
      .set("value_words", c.valueWords)
      .set("value_scales", c.valueScales)
      .set("value_zeros", c.valueZeros)
      .set("sink_keys", c.sinkKeys)
      .set("sink_values", c.sinkValues)
      .set("residual_keys", c.residualKeys)
      .set("residual_values", c.residualValues);
}

unsigned blocksFor(int64_t work, int64_t perBlock) {
  int64_t blocks = (work + perBlock - 1) / perBlock;
  // Kernels stride over the work, so a capped grid still covers it.
  return unsigned(std::max<int64_t>(1, std::min<int64_t>(blocks, 1 << 20)));
}

} // namespace

/// Per-kv-head static scales: head row r reads scale r % kvHeads, so the
/// rows must be whole sequences of the spec's kv heads.
static llvm::Error checkStaticRows(const KernelSpec &spec, int rows) {
  if (spec.key.scales == QuantScheme::Scales::Head && rows % spec.kvHeads != 0)
    return Problem() << "rows " << rows << " are not whole sequences of "
                     << spec.kvHeads
                     << " kv heads (per-head static scales index them)";
  return llvm::Error::success();
}

llvm::Expected<KernelLaunch> kvq::planQuantize(const KernelSpec &spec,
                                               const GeneratedSource &source,
                                               const QuantizeCall &c) {
  const GeneratedKernel *k = findKernel(source, "quantize");
  if (spec.kind != KernelKind::Quantize || !k)
    return Problem() << "'" << spec.canonical() << "' is not a quantize spec";
  if (llvm::Error e = checkPointer("input", c.input, halfAlignment(*k)))
    return std::move(e);
  if (llvm::Error e = checkQuantizedPointers(spec, c.words, c.scales, c.zeros))
    return std::move(e);
  if (c.tokens > c.inTokens)
    return Problem() << "tokens " << c.tokens << " exceeds in_tokens "
                     << c.inTokens;
  if (llvm::Error e =
          checkTokenRange(spec, c.rows, c.tokens, c.inTokens, c.outTokens,
                          c.outOffset, "out_tokens", "out_offset"))
    return std::move(e);
  if (llvm::Error e = checkStaticRows(spec, c.rows))
    return std::move(e);

  bool token = spec.key.axis == QuantScheme::Axis::Token;
  int64_t work = token ? int64_t(c.rows) * c.tokens * 32 // a warp per row
                       : int64_t(c.rows) *
                             (c.tokens / spec.key.groupSize(spec.headDim)) *
                             spec.headDim;
  KernelLaunch launch =
      makeLaunch(*k, {blocksFor(work, k->threads), 1, 1}, c.stream);
  Arguments args;
  args.set("input", c.input)
      .set("words", c.words)
      .set("scales", c.scales)
      .set("zeros", c.zeros)
      .set("rows", int32_t(c.rows))
      .set("tokens", int32_t(c.tokens))
      .set("in_tokens", int32_t(c.inTokens))
      .set("out_tokens", int32_t(c.outTokens))
      .set("out_offset", int32_t(c.outOffset));
  if (llvm::Error e = args.packInto(launch, *k))
    return std::move(e);
  return launch;
}

llvm::Expected<KernelLaunch> kvq::planDequantize(const KernelSpec &spec,
                                                 const GeneratedSource &source,
                                                 const DequantizeCall &c) {
  const GeneratedKernel *k = findKernel(source, "dequantize");
  if (spec.kind != KernelKind::Dequantize || !k)
    return Problem() << "'" << spec.canonical() << "' is not a dequantize spec";
  if (llvm::Error e = checkQuantizedPointers(spec, c.words, c.scales, c.zeros))
    return std::move(e);
  if (llvm::Error e = checkPointer("output", c.output, 2))
    return std::move(e);
  if (c.tokens > c.outTokens)
    return Problem() << "tokens " << c.tokens << " exceeds out_tokens "
                     << c.outTokens;
  if (llvm::Error e =
          checkTokenRange(spec, c.rows, c.tokens, c.outTokens, c.inTokens,
                          c.inOffset, "in_tokens", "in_offset"))
    return std::move(e);
  if (llvm::Error e = checkStaticRows(spec, c.rows))
    return std::move(e);
  int64_t work = int64_t(c.rows) * c.tokens * spec.headDim * spec.key.bits / 32;
  KernelLaunch launch =
      makeLaunch(*k, {blocksFor(work, k->threads), 1, 1}, c.stream);
  Arguments args;
  args.set("words", c.words)
      .set("scales", c.scales)
      .set("zeros", c.zeros)
      .set("output", c.output)
      .set("rows", int32_t(c.rows))
      .set("tokens", int32_t(c.tokens))
      .set("in_tokens", int32_t(c.inTokens))
      .set("in_offset", int32_t(c.inOffset))
      .set("out_tokens", int32_t(c.outTokens));
  if (llvm::Error e = args.packInto(launch, *k))
    return std::move(e);
  return launch;
}

llvm::Expected<KernelLaunch> kvq::planAppend(const KernelSpec &spec,
                                             const GeneratedSource &source,
                                             const AppendCall &c) {
  const GeneratedKernel *k = findKernel(source, "append");
  if (spec.kind != KernelKind::Append || !k)
    return Problem() << "'" << spec.canonical() << "' is not an append spec";
  for (auto [name, p, alignment] :
       {std::tuple<const char *, const void *, size_t>{"keys", c.keys, 2},
        {"values", c.values, 2},
        {"lengths", c.lengths, 4},
        {"block_table", c.blockTable, 4},
        {"free_pages", c.freePages, 4},
        {"free_count", c.freeCount, 4},
        {"sink_keys", c.sinkKeys, 2},
        {"sink_values", c.sinkValues, 2},
        {"residual_keys", c.residualKeys, 2},
        {"residual_values", c.residualValues, 2}})
    if (llvm::Error e = checkPointer(name, p, alignment))
      return std::move(e);
  for (auto [which, s, words, scales, zeros] :
       {std::tuple{"key", &spec.key, c.keyWords, c.keyScales, c.keyZeros},
        std::tuple{"value", &spec.value, c.valueWords, c.valueScales,
                   c.valueZeros}}) {
    size_t scale = s->fp32Scales ? 4 : 2;
    std::string prefix = std::string(which) + "_";
    if (llvm::Error e = checkPointer((prefix + "words").c_str(), words, 4))
      return std::move(e);
    if (llvm::Error e =
            checkPointer((prefix + "scales").c_str(), scales, scale))
      return std::move(e);
    if (!s->symmetric)
      if (llvm::Error e =
              checkPointer((prefix + "zeros").c_str(), zeros, scale))
        return std::move(e);
  }
  for (auto [name, value] : {std::pair<const char *, int>{"batch", c.batch},
                             {"kv_heads", c.kvHeads},
                             {"max_pages", c.maxPages},
                             {"num_pages", c.numPages},
                             {"page_tokens", c.pageTokens},
                             {"sink_capacity", c.sinkCapacity},
                             {"residual_capacity", c.residualCapacity},
                             {"residual_tokens", c.residualTokens},
                             {"flush_tokens", c.flushTokens}})
    if (value < 1)
      return Problem() << name << " must be at least 1, got " << value;
  if (c.sinkTokens < 0 || c.sinkTokens > c.sinkCapacity)
    return Problem() << "sink_tokens " << c.sinkTokens << " is outside [0, "
                     << c.sinkCapacity << "] (sink_capacity)";
  if (int64_t(c.residualTokens) + c.flushTokens > c.residualCapacity)
    return Problem() << "residual_tokens " << c.residualTokens
                     << " + flush_tokens " << c.flushTokens
                     << " exceeds residual_capacity " << c.residualCapacity;
  if (c.pageTokens % c.flushTokens != 0)
    return Problem() << "flush_tokens " << c.flushTokens
                     << " must divide page_tokens " << c.pageTokens
                     << " (a flush never straddles a page)";
  for (const QuantScheme *s : {&spec.key, &spec.value})
    if (s->axis == QuantScheme::Axis::Channel &&
        c.flushTokens % s->groupSize(spec.headDim) != 0)
      return Problem() << "axis = channel quantizes whole "
                       << s->groupSize(spec.headDim)
                       << "-token groups: flush_tokens " << c.flushTokens
                       << " is not a multiple of it";
  int d = spec.headDim;
  for (auto [name, stride] : {std::pair{"head_stride", c.headStride},
                              std::pair{"token_stride", c.tokenStride}})
    if (stride < d)
      return Problem() << name << " " << stride << " is below head_dim " << d
                       << " (a row of head_dim channels is contiguous)";
  int64_t rows = int64_t(c.batch) * c.kvHeads;
  int64_t poolRows = int64_t(c.numPages) * c.kvHeads;
  for (auto [what, count, units] :
       {std::tuple<const char *, int64_t, const char *>{
            "the new tokens",
            int64_t(c.batch - 1) * c.tokenStride +
                int64_t(c.kvHeads - 1) * c.headStride + d,
            "elements"},
        {"the residual", rows * c.residualCapacity * d, "elements"},
        {"the sink", rows * c.sinkCapacity * d, "elements"},
        {"the block table", int64_t(c.batch) * c.maxPages, "entries"},
        {"the key pool",
         int64_t(packedWordCount(spec.key, d, poolRows, c.pageTokens)),
         "words"},
        {"the value pool",
         int64_t(packedWordCount(spec.value, d, poolRows, c.pageTokens)),
         "words"},
        {"the key scales",
         int64_t(scaleCount(spec.key, d, poolRows, c.pageTokens)), "scales"},
        {"the value scales",
         int64_t(scaleCount(spec.value, d, poolRows, c.pageTokens)), "scales"}})
    if (llvm::Error e = checkIndexRange(what, count, units))
      return std::move(e);
  if (llvm::Error e = checkIndexRange(
          "a sequence's store", int64_t(c.maxPages) * c.pageTokens, "tokens"))
    return std::move(e);

  KernelLaunch launch = makeLaunch(*k, {blocksFor(c.batch, 1), 1, 1}, c.stream);
  Arguments args;
  args.set("keys", c.keys)
      .set("values", c.values)
      .set("head_stride", int32_t(c.headStride))
      .set("token_stride", int32_t(c.tokenStride))
      .set("lengths", c.lengths)
      .set("block_table", c.blockTable)
      .set("free_pages", c.freePages)
      .set("free_count", c.freeCount);
  setCacheBuffers(args, c)
      .set("batch", int32_t(c.batch))
      .set("kv_heads", int32_t(c.kvHeads))
      .set("max_pages", int32_t(c.maxPages))
      .set("num_pages", int32_t(c.numPages))
      .set("page_tokens", int32_t(c.pageTokens))
      .set("sink_capacity", int32_t(c.sinkCapacity))
      .set("sink_tokens", int32_t(c.sinkTokens))
      .set("residual_capacity", int32_t(c.residualCapacity))
      .set("residual_tokens", int32_t(c.residualTokens))
      .set("flush_tokens", int32_t(c.flushTokens));
  if (llvm::Error e = args.packInto(launch, *k))
    return std::move(e);
  return launch;
}

namespace {

/// Blocks along the grid's z: a block per query row, or per `queryRows`
/// consecutive rows (chunked rows on the tensor cores).
int queryRowBlocks(const GeneratedKernel &k, int batch) {
  int64_t rows = k.plan.queryRowsPerBlock();
  return int((int64_t(batch) + rows - 1) / rows);
}

int tokensPerSplit(const KernelSpec &spec, const GeneratedKernel &k,
                   const AttentionCall &c) {
  if (c.tokensPerSplit > 0)
    return c.tokensPerSplit;
  int64_t tile = k.plan.tileTokens;
  int64_t minimum = k.plan.minTokensPerSplit;
  // The device's SMs when the runtime knows them (AttentionCall::smCount),
  // else the count the plan assumed for its arch.
  int64_t sms = c.smCount > 0 ? c.smCount : k.plan.smCount;
  // Enough blocks for kAttentionBlocksPerSm waves over the SMs, each split a
  // whole number of tiles and never shorter than the plan's minimum.
  int64_t blocksPerSplit =
      std::max<int64_t>(1, int64_t(queryRowBlocks(k, c.batch)) * spec.kvHeads);
  int64_t wanted = std::max<int64_t>(
      1, (kAttentionBlocksPerSm * sms + blocksPerSplit - 1) / blocksPerSplit);
  int64_t perSplit = (c.bodyCapacity + wanted - 1) / wanted;
  perSplit = (perSplit + tile - 1) / tile * tile;
  return int(std::max(minimum, perSplit));
}
} // namespace

namespace {
/// The call with a paged body's capacity filled in: maxPages pages of the
/// spec's page tokens.
AttentionCall withBodyCapacity(const KernelSpec &spec,
                               const AttentionCall &call) {
  AttentionCall c = call;
  if (spec.pageTokens && c.bodyCapacity == 0)
    c.bodyCapacity = int(std::min<int64_t>(
        INT32_MAX, int64_t(std::max(0, c.maxPages)) * spec.pageTokens));
  return c;
}
} // namespace

int kvq::attentionBodySplits(const KernelSpec &spec,
                             const GeneratedSource &source,
                             const AttentionCall &call) {
  AttentionCall c = withBodyCapacity(spec, call);
  const GeneratedKernel *k = findKernel(source, "attention");
  if (!k)
    return 1;
  int split = tokensPerSplit(spec, *k, c);
  return std::max(1, (c.bodyCapacity + split - 1) / split);
}

size_t kvq::attentionWorkspaceBytes(const KernelSpec &spec,
                                    const GeneratedSource &source,
                                    const AttentionCall &call) {
  AttentionCall c = withBodyCapacity(spec, call);
  size_t rows = size_t(std::max(0, c.batch)) * spec.queryHeads *
                (attentionBodySplits(spec, source, c) + 1);
  auto aligned = [](size_t bytes) { return (bytes + 255) / 256 * 256; };
  return aligned(rows * spec.headDim * 4) + 2 * aligned(rows * 4);
}

llvm::Expected<std::vector<KernelLaunch>>
kvq::planAttention(const KernelSpec &spec, const GeneratedSource &source,
                   const AttentionCall &call) {
  AttentionCall c = withBodyCapacity(spec, call);
  const GeneratedKernel *k = findKernel(source, "attention");
  const GeneratedKernel *combine = findKernel(source, "combine");
  if (!spec.isAttention() || !k || !combine)
    return Problem() << "'" << spec.canonical() << "' is not an attention spec";
  bool dense = spec.kind == KernelKind::DenseAttention;
  size_t half = 2, segment = halfAlignment(*k);
  struct Pointer {
    const char *name;
    const void *p;
    size_t alignment;
    bool needed;
  };
  std::vector<Pointer> pointers = {
      {"q", c.q, half, true},
      // Packed words are read as wide as the plan chose.
      {"key_words", c.keyWords, size_t(4 * k->plan.keyWordsPerLoad()), !dense},
      {"key_scales", c.keyScales, scaleBytes(spec.key), !dense},
      {"key_zeros", c.keyZeros, scaleBytes(spec.key),
       !dense && !spec.key.symmetric},
      {"value_words", c.valueWords, size_t(4 * k->plan.valueWordsPerLoad()),
       !dense},
      {"value_scales", c.valueScales, scaleBytes(spec.value), !dense},
      {"value_zeros", c.valueZeros, scaleBytes(spec.value),
       !dense && !spec.value.symmetric},
      {"keys", c.keys, segment, dense},
      {"values", c.values, segment, dense},
      {"sink_keys", c.sinkKeys, segment, spec.sink},
      {"sink_values", c.sinkValues, segment, spec.sink},
      {"residual_keys", c.residualKeys, segment, spec.residual},
      {"residual_values", c.residualValues, segment, spec.residual},
      {"lengths", c.lengths, 4, true},
      {"out", c.out, half, true},
      {"workspace", c.workspace, 256, true}};
  for (const Pointer &p : pointers)
    if (p.needed)
      if (llvm::Error e = checkPointer(p.name, p.p, p.alignment))
        return std::move(e);
  if (c.batch < 1)
    return Problem() << "batch must be at least 1, got " << c.batch;
  bool paged = spec.pageTokens > 0;
  if (!paged && c.blockTable)
    return Problem() << "a block table was given for '" << spec.canonical()
                     << "', which is not paged (paged=N)";
  // Chunked: `batch` query rows read `sequences` sequences' buffers.
  int sequences = c.batch;
  if (!spec.chunked && c.rowSequences)
    return Problem() << "row sequences were given for '" << spec.canonical()
                     << "', which is not chunked";
  if (spec.chunked) {
    if (llvm::Error e = checkPointer("row_sequences", c.rowSequences, 4))
      return std::move(e);
    if (c.sequences < 1)
      return Problem() << "a chunked call needs sequences of at least 1, got "
                       << c.sequences;
    sequences = c.sequences;
  }
  if (paged) {
    if (llvm::Error e = checkPointer("block_table", c.blockTable, 4))
      return std::move(e);
    if (c.maxPages < 1 || c.numPages < 1)
      return Problem() << "a paged body needs max_pages and num_pages of at "
                          "least 1, got "
                       << c.maxPages << " and " << c.numPages;
    if (int64_t(c.bodyCapacity) != int64_t(c.maxPages) * spec.pageTokens)
      return Problem() << "body_capacity " << c.bodyCapacity
                       << " must be 0 or max_pages x page tokens ("
                       << int64_t(c.maxPages) * spec.pageTokens
                       << ") for a paged body";
  }
  for (auto [name, value] :
       {std::pair<const char *, int>{"body_capacity", c.bodyCapacity},
        {"sink_capacity", c.sinkCapacity},
        {"residual_capacity", c.residualCapacity}})
    if (llvm::Error e = checkCount(name, value))
      return std::move(e);
  int unit = 1; // a quantized body holds whole channel groups
  for (const QuantScheme *s : {&spec.key, &spec.value})
    if (!dense && s->axis == QuantScheme::Axis::Channel)
      unit = std::max(unit, s->groupSize(spec.headDim));
  if (c.bodyCapacity % unit != 0)
    return Problem() << "body_capacity " << c.bodyCapacity
                     << " is not a multiple of the channel group " << unit;
  int64_t tile = k->plan.tileTokens;
  if (c.tokensPerSplit < 0 || c.tokensPerSplit % tile != 0)
    return Problem() << "tokens_per_split must be a positive multiple of the "
                        "tile ("
                     << tile << " tokens), got " << c.tokensPerSplit;
  if (c.softmaxScale < 0 || !std::isfinite(c.softmaxScale))
    return Problem() << "softmax scale must be positive and finite, got "
                     << c.softmaxScale;
  if (c.smCount < 0)
    return Problem() << "sm_count must not be negative, got " << c.smCount;
  if (llvm::Error e = checkGridDimension("batch", c.batch, 'z'))
    return std::move(e);
  if (llvm::Error e = checkGridDimension("kv heads", spec.kvHeads, 'y'))
    return std::move(e);
  // Each buffer in the units the kernels index it by: a KIVI-2 body of
  // 128k tokens x 8 heads x batch 32 is 2^32 halves but 2^28 packed words.
  int64_t kvRows = int64_t(sequences) * spec.kvHeads, d = spec.headDim;
  // The quantized body: a sequence's rows, or the pool's pages.
  int64_t bodyRows = paged ? int64_t(c.numPages) * spec.kvHeads : kvRows;
  int bodyTokens = paged ? spec.pageTokens : c.bodyCapacity;
  struct Extent {
    const char *what;
    int64_t count;
    const char *units;
    bool present;
  } extents[] = {
      {"the key codes",
       int64_t(packedWordCount(spec.key, d, bodyRows, bodyTokens)), "words",
       !dense},
      {"the key scales", int64_t(scaleCount(spec.key, d, bodyRows, bodyTokens)),
       "scales", !dense},
      {"the value codes",
       int64_t(packedWordCount(spec.value, d, bodyRows, bodyTokens)), "words",
       !dense},
      {"the value scales",
       int64_t(scaleCount(spec.value, d, bodyRows, bodyTokens)), "scales",
       !dense},
      {"the block table", int64_t(sequences) * c.maxPages, "pages", paged},
      {"the fp16 body", kvRows * c.bodyCapacity * d, "halves", dense},
      {"the sink", kvRows * c.sinkCapacity * d, "halves", spec.sink},
      {"the residual", kvRows * c.residualCapacity * d, "halves",
       spec.residual},
      {"the queries", int64_t(c.batch) * spec.queryHeads * d, "halves", true}};
  for (const Extent &e : extents)
    if (e.present)
      if (llvm::Error error = checkIndexRange(e.what, e.count, e.units))
        return std::move(error);
  if (c.hostLengths)
    for (int b = 0; b < c.batch; ++b) {
      const int32_t *l = c.hostLengths + 3 * b;
      struct Segment {
        const char *name;
        int32_t length, capacity;
        bool present;
      } segments[] = {{"sink", l[0], c.sinkCapacity, spec.sink},
                      {"body", l[1], c.bodyCapacity, true},
                      {"residual", l[2], c.residualCapacity, spec.residual}};
      for (const Segment &s : segments) {
        if (s.length < 0 || s.length > (s.present ? s.capacity : 0))
          return Problem() << "sequence " << b << ": " << s.name << " length "
                           << s.length << " is outside [0, "
                           << (s.present ? s.capacity : 0) << "]";
      }
      if (l[1] % unit != 0)
        return Problem() << "sequence " << b << ": body length " << l[1]
                         << " is not a whole number of " << unit
                         << "-token channel groups";
    }

  int split = tokensPerSplit(spec, *k, c);
  int bodySplits = std::max(1, (c.bodyCapacity + split - 1) / split);
  int splits = bodySplits + 1;
  size_t rows = size_t(c.batch) * spec.queryHeads * splits;
  if (llvm::Error e = checkIndexRange("the workspace's partial outputs",
                                      int64_t(rows) * d, "floats"))
    return std::move(e);
  size_t needed = attentionWorkspaceBytes(spec, source, c);
  if (c.workspaceBytes && c.workspaceBytes < needed)
    return Problem() << "the workspace of " << c.workspaceBytes
                     << " bytes is smaller than the " << needed
                     << " this call needs (attentionWorkspaceBytes, with the "
                        "same sm_count)";
  auto aligned = [](size_t bytes) { return (bytes + 255) / 256 * 256; };
  char *workspace = static_cast<char *>(c.workspace);
  void *partialOut = workspace;
  void *partialMax = workspace + aligned(rows * spec.headDim * 4);
  void *partialSum = static_cast<char *>(partialMax) + aligned(rows * 4);
  float scale = c.softmaxScale > 0 ? c.softmaxScale
                                   : 1.0f / std::sqrt(float(spec.headDim));

  KernelLaunch attention = makeLaunch(*k,
                                      {unsigned(splits), unsigned(spec.kvHeads),
                                       unsigned(queryRowBlocks(*k, c.batch))},
                                      c.stream);
  // Every argument an attention or combine kernel may take; each asks for
  // its own (dense kernels `keys`/`values`, quantized ones the words,
  // scales and zero points they have).
  Arguments args;
  args.set("q", c.q)
      .set("partial_out", partialOut)
      .set("partial_max", partialMax)
      .set("partial_sum", partialSum)
      .set("keys", c.keys)
      .set("values", c.values)
      .set("row_sequences", c.rowSequences)
      .set("sequences", int32_t(sequences))
      .set("rows", int32_t(c.batch));
  setCacheBuffers(args, c)
      .set("lengths", c.lengths)
      .set("kv_heads", int32_t(spec.kvHeads))
      .set("body_capacity", int32_t(c.bodyCapacity))
      .set("sink_capacity", int32_t(c.sinkCapacity))
      .set("residual_capacity", int32_t(c.residualCapacity))
      .set("tokens_per_split", int32_t(split))
      .set("softmax_scale", scale)
      .set("out", c.out)
      .set("splits", int32_t(splits))
      .set("block_table", c.blockTable)
      .set("max_pages", int32_t(c.maxPages))
      .set("num_pages", int32_t(c.numPages));
  if (llvm::Error e = args.packInto(attention, *k))
    return std::move(e);

  KernelLaunch merge =
      makeLaunch(*combine, {unsigned(spec.queryHeads), unsigned(c.batch), 1},
                 c.stream); // after the attention kernel, on its stream
  if (llvm::Error e = args.packInto(merge, *combine))
    return std::move(e);
  std::vector<KernelLaunch> launches;
  launches.push_back(std::move(attention));
  launches.push_back(std::move(merge));
  return launches;
}
