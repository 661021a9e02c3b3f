//===- Calls.h - the arguments of quantize, dequantize ----------*- C++ -*-===//
//
// Plain structs of device pointers and sizes, in the layouts of
// kvq/Conversion/KernelABI.h: [batch, heads, tokens, head_dim] row-major,
// packed words and scales as KVQLayout.h describes. Part of the public API
// (no LLVM, MLIR or CUDA types).
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_CALLS_H
#define KVQ_CALLS_H

#include <cstddef>
#include <cstdint>

namespace kvq {

// Every call takes `stream`: the CUstream (cudaStream_t) its launches are
// queued on, asynchronously, on the cuda backend (null: the default
// stream); the CPU backends run calls in order and ignore it.

/// quantize: tokens [0, tokens) of each of `rows` rows of `inTokens` into
/// positions [outOffset, outOffset + tokens) of a store of `outTokens`.
struct QuantizeCall {
  const void *input = nullptr;
  void *words = nullptr, *scales = nullptr, *zeros = nullptr;
  int rows = 0, tokens = 0, inTokens = 0, outTokens = 0, outOffset = 0;
  void *stream = nullptr;
};

/// dequantize: store positions [inOffset, inOffset + tokens) into tokens
/// [0, tokens) of an output of `outTokens` per row.
struct DequantizeCall {
  const void *words = nullptr, *scales = nullptr, *zeros = nullptr;
  void *output = nullptr;
  int rows = 0, tokens = 0, inTokens = 0, inOffset = 0, outTokens = 0;
  void *stream = nullptr;
};

/// Quantized attention reads the body from the packed words, scales and
/// zeros; dense attention (KernelKind::DenseAttention) from `keys` and
/// `values`, fp16/bf16 [batch, kv heads, bodyCapacity, head_dim].
struct AttentionCall {
  const void *q = nullptr;
  const void *keyWords = nullptr, *keyScales = nullptr, *keyZeros = nullptr;
  const void *valueWords = nullptr, *valueScales = nullptr,
             *valueZeros = nullptr;
  const void *keys = nullptr, *values = nullptr; ///< dense attention
  const void *sinkKeys = nullptr, *sinkValues = nullptr;
  const void *residualKeys = nullptr, *residualValues = nullptr;
  const int32_t *lengths = nullptr; ///< device [batch, 3]
  /// A host copy of `lengths`, if the caller has one: checked against the
  /// capacities before launch.
  const int32_t *hostLengths = nullptr;
  void *out = nullptr;
  /// Workspace of attentionWorkspaceBytes() bytes (partial results).
  void *workspace = nullptr;
  /// Its size, if known: a smaller workspace is then refused at launch.
  size_t workspaceBytes = 0;
  int batch = 0, bodyCapacity = 0, sinkCapacity = 0, residualCapacity = 0;
  /// 0: chosen from the body capacity and `smCount`.
  int tokensPerSplit = 0;
  /// SMs the split count is chosen for. 0: the device's on the cuda backend
  /// (the runtime fills it in, for the workspace size and the launch alike),
  /// else the SM count the plan assumed for its arch.
  int smCount = 0;
  float softmaxScale = 0; ///< 0: 1/sqrt(head_dim)
  /// A paged body (a spec with `paged=N`): the body buffers hold `numPages`
  /// pages of N tokens for every kv head (`[pages, kv_heads, N, ...]`),
  /// and `blockTable` (device, `[batch, maxPages]` i32) names the page of
  /// each sequence's tokens [i*N, (i+1)*N). bodyCapacity is then
  /// maxPages*N (0 means that). A page number outside [0, numPages) is
  /// clamped into it on the device.
  const int32_t *blockTable = nullptr;
  int maxPages = 0, numPages = 0;
  /// Chunked (a spec with `chunked`): `batch` counts query rows, one query
  /// token each (q, out and lengths have a row per query row), and
  /// `rowSequences` (device, [batch] i32) names the sequence of
  /// [0, sequences) whose sink, residual and block table row each row
  /// reads (clamped into that range on the device). Each row's lengths say
  /// how much of its sequence it sees: causal attention over a chunk gives
  /// its i-th token the prefix up to that token.
  const int32_t *rowSequences = nullptr;
  int sequences = 0;
  void *stream = nullptr;
};

/// append (KernelKind::Append): one decode step of a paged quantized
/// cache, in one launch. Every sequence b < batch that holds tokens
/// (lengths[b] = {sink, quantized, residual} on the device, read and
/// advanced by the kernel) takes one new token: kv head h's row at
/// keys/values + b * tokenStride + h * headStride (elements). It joins the
/// sink while the sink holds fewer than `sinkTokens`, else the residual;
/// when the residual then holds residualTokens + flushTokens, its oldest
/// flushTokens are quantized into the sequence's page for quantized token
/// `quantized` (pages of `pageTokens` tokens of every kv head, the layout of
/// a paged attention spec), which the block table names or the kernel takes
/// from the top of the free-page stack (freePages[0, *freeCount)). Sink and
/// residual rows are [batch, kv heads, capacity, head_dim]. The caller
/// guarantees enough free pages; quantized counts are multiples of
/// flushTokens, which divides pageTokens; residualTokens >= 1.
struct AppendCall {
  const void *keys = nullptr, *values = nullptr;
  int64_t headStride = 0, tokenStride = 0;
  int32_t *lengths = nullptr, *blockTable = nullptr;
  int32_t *freePages = nullptr, *freeCount = nullptr;
  void *sinkKeys = nullptr, *sinkValues = nullptr;
  void *residualKeys = nullptr, *residualValues = nullptr;
  void *keyWords = nullptr, *keyScales = nullptr, *keyZeros = nullptr;
  void *valueWords = nullptr, *valueScales = nullptr, *valueZeros = nullptr;
  int batch = 0, kvHeads = 0, maxPages = 0, numPages = 0, pageTokens = 0;
  int sinkCapacity = 0, sinkTokens = 0;
  int residualCapacity = 0, residualTokens = 0, flushTokens = 0;
  void *stream = nullptr;
};

} // namespace kvq

#endif // KVQ_CALLS_H
