//===- AttentionKernel.h - what both attention bodies share -----*- C++ -*-===//
//
// The attention kernel has one signature, grid and combine kernel, and two
// bodies: on the CUDA cores over shared-memory tiles (AttentionKernel.cpp)
// and on the tensor cores over register fragments (TensorCoreAttention.cpp);
// the plan's attentionPath picks one. This header holds what both read: the
// kernel arguments, the static shape, the sequence lengths and split range,
// and where a body token is stored.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_CONVERSION_KVQTOGPU_ATTENTIONKERNEL_H
#define KVQ_CONVERSION_KVQTOGPU_ATTENTIONKERNEL_H

#include "KernelBuilder.h"
#include "Kernels.h"

#include "kvq/Conversion/AttentionTiles.h"

namespace mlir::kvq {

/// The kernel arguments, by name.
struct AttentionArgs {
  Value q, partialOut, partialMax, partialSum;
  Value keyWords, keyScales, keyZeros, valueWords, valueScales, valueZeros;
  Value sinkKeys, sinkValues, residualKeys, residualValues;
  Value lengths, kvHeads, bodyCapacity, sinkCapacity, residualCapacity,
      tokensPerSplit, softmaxScale;
  Value blockTable, maxPages, numPages; ///< a paged body only
  Value rowSequences, sequences, rows;  ///< chunked only
};

/// Static facts about the kernel being generated.
struct AttentionShape {
  SchemeAttr keyScheme, valueScheme; ///< null: a dense (fp16/bf16) body
  int64_t headDim, gqa, threads, tile;
  Type half;
  int64_t halfVector;      ///< halves per fp16 load (plan: halfVector)
  int64_t scoresPerThread; ///< tokens a thread scores (plan: 1 or 2)
  int64_t pageTokens = 0;  ///< tokens per page of a paged body (0: none)
  /// Query rows of their own (one token each), mapped to the sequence they
  /// read by `row_sequences`.
  bool chunked = false;
  /// Chunked on the tensor cores: consecutive query rows a block takes
  /// (plan queryRows), each its GQA group's columns of the MMAs.
  int64_t queryRows = 1;
  /// Token-major pages (`[pages, page tokens, kv heads, ...]`, vLLM's NHD).
  bool nhd = false;
  bool dense() const { return !keyScheme; }
  int64_t keyStride() const { return attentionKeyStride(headDim); }
  /// Tiles read and written 4 floats at a time (AttentionTiles.h).
  bool vectorTiles() const { return attentionTilesVectorized(headDim); }
};

/// The block's place in the grid (split, kv head, sequence) and the token
/// ranges it covers.
struct SplitRange {
  Value split, kvHead, batch, splits;
  /// The sequence whose tokens this block reads: `batch`, or for a chunked
  /// kernel the query row's sequence (row_sequences[batch], clamped).
  Value sequence;
  Value headRow;       ///< sequence * kv_heads + kv head: K/V rows
  Value firstQueryRow; ///< (batch, first query head of the GQA group)
  Value sinkLen, bodyLen, residualLen; ///< clamped to the buffers
  Value isFp16Split;                   ///< the last split: sink + residual
  Value bodyBegin, bodyEnd;            ///< this split's body tokens
};

/// Reads the block indices and this sequence's lengths (clamped to what the
/// buffers hold, a quantized body to whole channel groups: lengths in
/// device memory are not checked at launch) and this split's body range.
SplitRange loadSplitRange(KernelBuilder &kb, const AttentionShape &s,
                          const AttentionArgs &a);

/// The parts of loadSplitRange, for a block of several query rows (the
/// tensor-core body's chunked rows): the block indices, the split and where
/// its body tokens begin; ...
SplitRange loadSplitIndices(KernelBuilder &kb, const AttentionArgs &a);
/// ... a chunked query row's sequence (clamped into the sequences the
/// buffers hold); ...
Value loadRowSequence(KernelBuilder &kb, const AttentionArgs &a, Value row);
/// ... a row's token count in one segment (the `lengths` field), clamped;
enum class RowSegment : int64_t { sink = 0, body = 1, residual = 2 };
Value loadRowLength(KernelBuilder &kb, const AttentionShape &s,
                    const AttentionArgs &a, Value row, RowSegment segment);
/// ... and, with r.bodyLen set, the split's body end.
void setBodyEnd(KernelBuilder &kb, const AttentionArgs &a, SplitRange &r);

/// Where body tokens [t0, ...) of this block's sequence are stored: their
/// head row, its capacity and the first token's place in it — this
/// sequence's own rows, or (paged) the page the block table names for t0,
/// which holds every token up to the next multiple of the page size.
struct StoredRows {
  Value row, capacity, first;
  /// Token-major pages: token t's row is row + (first + t) * tokenStride
  /// (null: row * capacity + first + t).
  Value tokenStride;
};
StoredRows storedBodyRows(KernelBuilder &kb, const AttentionShape &s,
                          const AttentionArgs &a, const SplitRange &r,
                          Value t0);

/// The tensor-core body (TensorCoreAttention.cpp): its shared buffers (the
/// warps' partial results, merged once at the end), their names in the
/// source, and the body written into the kernel.
SmallVector<Type> tensorCoreSharedTypes(MLIRContext *context,
                                        const AttentionShape &s);
SmallVector<StringRef> tensorCoreSharedNames();
void writeTensorCoreAttention(KernelBuilder &kb, const AttentionShape &s,
                              const AttentionArgs &a, ValueRange shared,
                              bool hasSink, bool hasResidual);

} // namespace mlir::kvq

#endif // KVQ_CONVERSION_KVQTOGPU_ATTENTIONKERNEL_H
