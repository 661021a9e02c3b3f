//===- AttentionTiles.h - shared-memory layout of attention -----*- C++ -*-===//
//
// The fp32 tiles the attention kernel keeps in shared memory, shared by the
// plan (kvq-plan sizes the tile to a budget) and the kernel builder.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_CONVERSION_ATTENTIONTILES_H
#define KVQ_CONVERSION_ATTENTIONTILES_H

#include <cstdint>
#include <initializer_list>

namespace mlir::kvq {

/// With a head_dim that is a multiple of 4, the tiles are read and written
/// 4 floats at a time (LDS.128/STS.128).
inline bool attentionTilesVectorized(int64_t headDim) {
  return headDim % 4 == 0;
}

/// Row stride, in floats, of the K tile. Scores read one token's row per
/// thread, consecutive threads consecutive tokens: padding puts their rows
/// on different banks. Read 4 floats at a time, a stride of head_dim + 4
/// keeps rows 16-byte aligned and puts the 8 threads of each quarter-warp
/// phase on 8 distinct groups of 4 banks; read 1 at a time, head_dim + 1.
inline int64_t attentionKeyStride(int64_t headDim) {
  return attentionTilesVectorized(headDim) ? headDim + 4 : headDim + 1;
}

/// Bytes of shared memory: fp32 queries, K tile, V tile, scores, and 3
/// per-head statistics, laid out in that order, each array starting
/// 16-byte aligned (as ptxas reports it).
inline int64_t attentionSharedBytes(int64_t headDim, int64_t gqa,
                                    int64_t tile) {
  int64_t end = 0;
  for (int64_t floats : {gqa * headDim, tile * attentionKeyStride(headDim),
                         tile * headDim, gqa * tile, gqa, gqa, gqa})
    end = (end + 15) / 16 * 16 + 4 * floats;
  return end;
}

/// Bytes of shared memory of the tensor-core body: each warp's fp32 output,
/// max and sum per column (a query head of one of the block's query rows),
/// merged once at the end.
inline int64_t tensorCoreSharedBytes(int64_t headDim, int64_t columns,
                                     int64_t warps) {
  int64_t end = 0;
  for (int64_t floats :
       {warps * columns * headDim, warps * columns, warps * columns})
    end = (end + 15) / 16 * 16 + 4 * floats;
  return end;
}

} // namespace mlir::kvq

#endif // KVQ_CONVERSION_ATTENTIONTILES_H
