//===- QuantizedKVCache.h - a quantized KV cache that decodes ---*- C++ -*-===//
//
// Per layer and sequence, three parts (ARCHITECTURE.md section 7):
//   sink      the first `sink` tokens, fp16 forever (attention sinks are
//             where naive quantization loses most);
//   quantized an append-only store of packed codes + scales, written by the
//             generated quantize kernel and never re-quantized;
//   residual  the most recent tokens in fp16, between `residual` and
//             `residual + flush - 1` of them; `flush` is the largest
//             channel-axis group (keys are quantized in whole groups of
//             tokens; values move with their keys so both stay aligned),
//             and at least 32 tokens.
// append() routes new tokens; when the residual reaches `residual + flush`,
// its oldest `flush` tokens are quantized into the store (with token-axis
// schemes too: one quantize and one residual shift every 32 decode steps,
// not every step). A long prefill goes straight to the
// store in bulk (all but the sink and the residual tail). attend() runs one
// fused attention over the three parts for the whole batch.
//
// The quantized store is paged: one pool of pages per layer (pageTokens()
// tokens of every kv head each), a page taken from a free list when a
// sequence's store reaches it and given back by release(); attention reads
// it through a block table (the paged attention kernel, spec paged=N).
//
// Uses only the public API (kvq/kvq.h): it runs on every backend.
//
// Thread safety: a cache may be used from several threads; its calls
// serialize on an internal lock (each cache has one device lengths buffer
// and one attention workspace). Threads that decode in parallel use one
// cache each. A cache keeps its Context's runtime alive: it may outlive the
// Context object it was created from.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_QUANTIZEDKVCACHE_H
#define KVQ_QUANTIZEDKVCACHE_H

#include "kvq/kvq.h"

#include <memory>
#include <string>
#include <vector>

namespace kvq {

struct CacheConfig {
  int layers = 1;
  int batch = 1; ///< sequences
  int kvHeads = 8;
  int queryHeads = 32;
  int headDim = 128;
  HalfType dtype = HalfType::F16;
  int capacity = 4096; ///< tokens per sequence, all parts together
  QuantScheme key, value;
  int residual = 128; ///< fp16 residual tokens kept at rest
  int sink = 4;       ///< fp16 sink tokens
  /// Pages of each layer's pool (pageTokens() tokens of every kv head
  /// each). 0: enough for every sequence at full capacity. Fewer share the
  /// memory between sequences: an append that finds no free page fails
  /// with ResourceExhausted and changes nothing.
  int pages = 0;
  /// New tokens one sequence may take in one appendAndAttend (chunked
  /// prefill, speculative verification), up to 64. Above 1 the cache also
  /// compiles the chunked attention kernel and keeps room for that many
  /// more fp16 residual tokens per sequence (they wait there, unflushed,
  /// while they attend).
  int maxQueryTokens = 1;
  /// How a prefill (tokens that go straight to the quantized store) picks
  /// the zero points of the asymmetric schemes: MinMax, or Hqq (HQQ's
  /// half-quadratic search, ZeroPointSearch.h: a lower error at the same
  /// bits, docs/accuracy.md, for a few passes over each group). Tokens
  /// quantized while decoding (residual flushes) keep min-max. A symmetric
  /// scheme has no zero points; Hqq with both schemes symmetric is an
  /// error.
  ZeroPointSearch prefillZeroPoints = ZeroPointSearch::MinMax;
  /// Static schemes (QuantScheme::isStatic: "4tphs", "e4m3pt", ...): the
  /// calibrated fp32 scales - and, asymmetric, zero points - of every
  /// layer, layer-major, layers x staticScaleCount(kvHeads) values
  /// (kvq-calibrate and kvq::calibrateScales compute them; vLLM's
  /// k_scale/v_scale are FP8 scales). Positive and finite; empty for a
  /// scheme that computes its own scales per group.
  std::vector<float> keyScales, keyZeros, valueScales, valueZeros;
  /// The stream (a CUstream/cudaStream_t; null: the default stream) every
  /// launch and copy of the cache is queued on, in order: an engine passes
  /// its own (PyTorch's current stream, say). The CPU backends ignore it.
  void *stream = nullptr;
};

/// The named presets (kivi2, kivi4, hf_quanto_int4, int8, int4): fills the
/// schemes, residual and sink of `config`. False (and `error`) if unknown.
/// With `config.dtype` bf16 the schemes get fp32 scales (an fp16 scale
/// overflows past 65504), so set the dtype first; a bf16 config with fp16
/// scales is refused by create().
bool applyPreset(const std::string &name, CacheConfig &config,
                 std::string *error = nullptr);
/// The names applyPreset() knows, in a fixed order.
std::vector<std::string> presetNames();

/// Bytes the cache's tokens occupy, against the same tokens in fp16.
struct MemoryUse {
  uint64_t sinkBytes = 0, quantizedBytes = 0, residualBytes = 0;
  uint64_t fp16Bytes = 0; ///< K and V of every held token in fp16
  uint64_t usedBytes() const {
    return sinkBytes + quantizedBytes + residualBytes;
  }
  double ratio() const {
    return usedBytes() ? double(fp16Bytes) / double(usedBytes()) : 0;
  }
};

/// Where token t of kv head h starts in an input array, in elements of the
/// half type: at h * headStride + t * tokenStride (a row of head_dim
/// channels is contiguous). The contiguous [kv heads, tokens, head_dim] of
/// append() is {tokens * head_dim, head_dim}; an engine's [tokens, kv heads,
/// head_dim] is {head_dim, kv heads * head_dim}; one sequence of PyTorch's
/// [batch, kv heads, seq, head_dim] is {seq * head_dim, head_dim}.
struct TokenLayout {
  int64_t headStride = 0, tokenStride = 0;
};

class QuantizedKVCache {
public:
  static std::unique_ptr<QuantizedKVCache>
  create(Context &context, const CacheConfig &config, Status *status);
  ~QuantizedKVCache();

  /// Appends `tokens` tokens of sequence `sequence` to layer `layer`. `k` and
  /// `v` are device arrays [kv heads, tokens, head_dim] of the half type.
  /// On any error nothing in the cache changes.
  Status append(int layer, int sequence, const void *k, const void *v,
                int tokens);
  /// The same, with `k` and `v` laid out as `layout` says: an engine's
  /// [tokens, kv heads, head_dim] or a slice of PyTorch's [batch, kv heads,
  /// seq, head_dim] are read where they are. Token-major input (a token
  /// stride other than head_dim) is staged through the cache's scratch
  /// buffer on its way to the quantized store; everything else is read in
  /// place.
  Status append(int layer, int sequence, const void *k, const void *v,
                int tokens, const TokenLayout &layout);
  /// Appends several sequences' tokens packed one after another in `k` and
  /// `v`, as FlashAttention's varlen API packs them: `sequences[i]` takes
  /// input tokens [offsets[i], offsets[i + 1]) (host arrays, `count` and
  /// `count` + 1 entries; token t of kv head h at h * headStride +
  /// t * tokenStride, so an engine's [tokens, kv heads, head_dim] is
  /// {head_dim, kv heads * head_dim}). Every sequence and the pool are
  /// checked first: a bad entry or too few free pages changes nothing. A
  /// device error midway leaves the sequences before it appended (the
  /// Status names where it stopped).
  Status appendPacked(int layer, const void *k, const void *v,
                      const int32_t *sequences, const int32_t *offsets,
                      int count, const TokenLayout &layout);

  /// One decode step of `layer` for the whole batch, in one launch: every
  /// sequence that holds tokens takes one new token, kv head h of sequence
  /// b's at b * tokenStride + h * headStride in `k` and `v` (elements; the
  /// rows of sequences that hold nothing are not read). The kernel quantizes
  /// a residual's oldest tokens into the sequence's page when it fills and
  /// takes that page from the pool itself, so the step copies nothing
  /// between host and device, allocates nothing and does not synchronize
  /// (attend() after it neither). The same tokens through append() give the
  /// same cache bit for bit. Needs residual >= 1. A sequence at capacity or
  /// too few free pages: an error naming it, and nothing changes.
  Status appendStep(int layer, const void *k, const void *v,
                    const TokenLayout &layout);
  /// The same for `k` and `v` laid out [batch, kv heads, head_dim].
  Status appendStep(int layer, const void *k, const void *v);

  /// CUDA graphs. A decode step — appendStep then attend for every layer —
  /// captured on the cache's stream (cudaStreamBeginCapture; with nothing
  /// left to copy, as after an eager step, it records launches only) reads
  /// and advances only device state, so each replay is one more step with
  /// the new tokens the graph's k and v buffers hold. The capture itself
  /// counted one step on the host, which the graph's first launch runs.
  /// Before every later launch, call this: it checks that one more step
  /// fits (capacity, free pages; a refusal changes nothing, and the graph
  /// must not be launched), copies to the device what the host changed
  /// since (a release, a prompt), and counts the step on the host.
  Status prepareReplayedStep();

  /// Several new tokens per sequence, each with its own query, attending
  /// causally (chunked prefill, speculative-decoding verification):
  /// sequence b takes tokens [offsets[b], offsets[b + 1]) of `k` and `v`
  /// (token t of kv head h at h * headStride + t * tokenStride), and token
  /// i of them, with query row offsets[b] + i of `q` ([offsets[batch],
  /// query heads, head_dim]), attends over everything the sequence then
  /// holds up to and including itself, into the same row of `out`. One
  /// attention launch (and its combine) serves every row of the batch,
  /// single tokens and chunks alike. The new tokens attend in fp16: the
  /// residual is flushed after the attention. `offsets` (host, batch + 1
  /// entries, offsets[0] = 0) gives each sequence at most maxQueryTokens
  /// tokens (0: none, and no rows). A bad entry or too few free pages for
  /// the flushes: an error, and nothing changes.
  Status appendAndAttend(int layer, const void *k, const void *v, const void *q,
                         void *out, const int32_t *offsets,
                         const TokenLayout &layout);

  /// out[b, h, :] = attention of q[b, h, :] over everything sequence b holds
  /// in `layer`. q and out are device arrays [batch, query heads, head_dim].
  Status attend(int layer, const void *q, void *out);
  /// Empties sequence `sequence` in every layer: its pages go back to the
  /// pool, for the next sequence to reuse.
  Status release(int sequence);
  /// Removes the last `tokens` tokens of `sequence` in every layer: a
  /// draft's rejected tokens after speculative verification. Only tokens
  /// still in fp16 can go — the residual's, and the sink's while nothing is
  /// quantized; a flush moves only the oldest residual tokens, so at least
  /// the `residual` most recent tokens always can. Asking for more is an
  /// error naming how many can go, and nothing changes. A flush that
  /// happened while the removed tokens were appended stays: its (older)
  /// tokens remain quantized.
  Status truncate(int sequence, int tokens);
  /// How many of `sequence`'s newest tokens truncate() can remove now (the
  /// fewest over the layers); 0 for a sequence outside the batch.
  int truncatableTokens(int sequence) const;
  /// Makes empty sequence `target` a copy of `source` in every layer (for
  /// parallel sampling or a shared prefix): their whole pages are shared
  /// (and freed when the last holder releases them); the partial page, the
  /// sink and the residual are copied, so the two then grow apart. Fails
  /// with ResourceExhausted, changing nothing, if no page is left for the
  /// copy of the partial page.
  Status fork(int source, int target);
  /// Sequence `sequence`'s KV in every layer as bytes (its quantized pages
  /// and fp16 sink and residual, checksummed): what a prefill/decode-
  /// disaggregated system or a shared prefix cache ships between machines.
  Status snapshot(int sequence, std::string &bytes) const;
  /// Empty sequence `sequence` takes the KV of a snapshot of a cache with
  /// the same configuration. Every byte is checked before use (format,
  /// configuration, checksum, token counts); on any error nothing changes.
  Status restore(int sequence, const std::string &bytes);
  /// Pages of `layer`'s pool holding quantized tokens.
  int pagesInUse(int layer) const;
  /// Tokens per page (a multiple of every channel group and of 16).
  int pageTokens() const;

  struct Parts {
    int sink = 0, quantized = 0, residual = 0;
    int total() const { return sink + quantized + residual; }
  };
  Parts parts(int layer, int sequence) const;
  MemoryUse memory() const;
  const CacheConfig &config() const;
  /// The attention spec the cache runs (for kvq-cache warm, logs).
  KernelSpec attentionSpec() const;
  /// Every kernel the cache runs (prepared at creation): what a kernel
  /// bundle must hold for a runtime-only library to create it.
  std::vector<KernelSpec> kernelSpecs() const;

private:
  QuantizedKVCache() = default;
  struct Impl;
  std::unique_ptr<Impl> impl;
};

} // namespace kvq

#endif // KVQ_QUANTIZEDKVCACHE_H
