//===- AttentionKernel.cpp - fused decode attention over quantized KV -----===//
//
// Flash-decoding. Grid (body splits + 1, kv heads, batch); a block handles a
// range of tokens for *all* query heads of its GQA group, so every KV byte
// is read from global memory once. Per tile of `tile` tokens:
//   1. stage: threads read consecutive packed words (coalesced), unpack and
//      dequantize them in registers, and write fp32 K and V tiles to shared
//      memory (fp16 sink/residual tiles are converted the same way);
//   2. scores: one thread per (query head, token pair) dots q with K;
//   3. softmax: one warp per query head updates the running max and sum;
//   4. P·V: each thread accumulates a run of (query head, channel) outputs
//      in registers.
// With head_dim a multiple of 4 every tile access moves 4 floats
// (LDS.128/STS.128): the kernels are bound by instruction issue, not
// bandwidth, once the KV cache is 2-4 bits (bench/README.md).
// The last split handles the fp16 sink and residual tokens, so a launch
// covers the whole sequence; a small combine kernel merges the splits by
// log-sum-exp.
//
//===----------------------------------------------------------------------===//

#include "AttentionKernel.h"
#include "Kernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "llvm/Support/FormatVariadic.h"

using namespace mlir;
using namespace mlir::kvq;

namespace {

/// Stores `values` at tile[base + j]: 4 at a time (STS.128) when the tiles
/// are vectorized (base and the count are then multiples of 4).
void storeRun(KernelBuilder &kb, const AttentionShape &s,
              ArrayRef<Value> values, Value tile, Value base) {
  if (s.vectorTiles() && values.size() % 4 == 0) {
    for (size_t j = 0; j < values.size(); j += 4)
      kb.storeShared4(values.slice(j, 4), tile, kb.add(base, kb.i32(j)));
    return;
  }
  for (auto [j, value] : llvm::enumerate(values))
    kb.store(value, tile, kb.add(base, kb.i32(j)));
}

/// Shared-memory buffers (workgroup attributions of the kernel).
struct SharedBuffers {
  Value q, keys, values, probs, runningMax, runningSum, correction;
};

/// Writes the dequantized body tile [t0, t0 + valid) of one quantized
/// tensor into `tile` (row stride `rowStride`). Each thread loads
/// `vectorWords` consecutive packed words with one access (128-bit for 4),
/// and consecutive threads load consecutive words, so a warp reads one
/// contiguous span. A static scheme's scale (and zero) is the block's kv
/// head's (`kvHead`), or the tensor's.
void stageQuantized(KernelBuilder &kb, const AttentionShape &s,
                    SchemeAttr scheme, int64_t vectorWords, Value words,
                    Value scales, Value zeros, Value headRow,
                    Value bodyCapacity, Value t0, Value valid, Value tile,
                    int64_t rowStride, Value kvHead, Value tokenStride) {
  int64_t perWord = scheme.codesPerWord();
  int64_t group = scheme.groupSize(s.headDim);
  Value d = kb.i32(s.headDim);
  Value tid = kb.threadIdx();
  auto scaleAndZero = [&](Value index) {
    return kb.loadScaleAndZero(scales, zeros, index);
  };

  Value staticScale, staticZero;
  if (scheme.isStatic())
    std::tie(staticScale, staticZero) = scaleAndZero(
        scheme.getStaticScales() == ScaleSource::head ? kvHead : kb.i32(0));

  if (scheme.getAxis() == Axis::token) {
    int64_t wordsPerRow = s.headDim / perWord;
    int64_t vectorsPerRow = wordsPerRow / vectorWords;
    Value count = kb.named("vectors", kb.mul(valid, kb.i32(vectorsPerRow)));
    kb.strideLoop(
        tid, count, s.threads,
        [&](Value i) {
          Value t = kb.named("token", kb.div(i, kb.i32(vectorsPerRow)));
          Value w0 =
              kb.named("first_word", kb.mul(kb.rem(i, kb.i32(vectorsPerRow)),
                                            kb.i32(vectorWords)));
          // Token-major pages: the token's row among every kv head's.
          Value row = kb.named(
              "row",
              tokenStride
                  ? kb.add(headRow, kb.mul(kb.add(t0, t), tokenStride))
                  : kb.add(kb.mul(headRow, bodyCapacity), kb.add(t0, t)));
          SmallVector<Value> loaded = kb.loadVector(
              words, kb.add(kb.mul(row, kb.i32(wordsPerRow)), w0), vectorWords);
          // w0 is a multiple of vectorWords and both it and the words of a
          // group are powers of two: a group spans whole vectors or a vector
          // whole groups. Load each group's scale (and zero) once.
          int64_t wordsPerGroup = group / perWord;
          // (Static scales: none per group, loaded once above.)
          Value firstGroup =
              staticScale
                  ? Value()
                  : kb.named("first_group", kb.div(w0, kb.i32(wordsPerGroup)));
          Value scale = staticScale, zero = staticZero;
          for (auto [k, word] : llvm::enumerate(loaded)) {
            Value w = kb.add(w0, kb.i32(k));
            if (!staticScale && int64_t(k) % wordsPerGroup == 0)
              std::tie(scale, zero) = scaleAndZero(kb.add(
                  kb.mul(row, kb.i32(s.headDim / group)),
                  kb.add(firstGroup, kb.i32(int64_t(k) / wordsPerGroup))));
            Value base = kb.add(kb.mul(t, kb.i32(rowStride)),
                                kb.mul(w, kb.i32(perWord)));
            SmallVector<Value> codes;
            for (int64_t j = 0; j < perWord; ++j)
              codes.push_back(kb.dequantizeCode(
                  scheme, kb.extractCode(scheme, word, j), scale, zero));
            storeRun(kb, s, codes, tile, base);
          }
        },
        "vector");
    return;
  }

  // axis = channel: word (token block, channel); valid is a whole number of
  // groups, so of words. A thread takes `vectorWords` adjacent channels.
  int64_t vectorsPerRow = s.headDim / vectorWords;
  Value count = kb.named(
      "vectors", kb.mul(kb.div(valid, kb.i32(perWord)), kb.i32(vectorsPerRow)));
  kb.strideLoop(
      tid, count, s.threads,
      [&](Value i) {
        Value c0 =
            kb.named("first_channel", kb.mul(kb.rem(i, kb.i32(vectorsPerRow)),
                                             kb.i32(vectorWords)));
        Value wordRow = kb.named("word_row", kb.div(i, kb.i32(vectorsPerRow)));
        KernelBuilder::ChannelWordRow at = kb.channelWordRow(
            scheme, s.headDim, headRow, bodyCapacity, t0, wordRow);
        SmallVector<Value> loaded = kb.loadVector(
            words, kb.add(kb.mul(at.storedWordRow, d), c0), vectorWords);
        Value firstToken = at.firstToken, scaleRow = at.scaleRow;
        SmallVector<std::pair<Value, Value>> scaleZero;
        for (int64_t k = 0; k < vectorWords; ++k)
          scaleZero.push_back(
              scaleAndZero(kb.add(kb.mul(scaleRow, d), kb.add(c0, kb.i32(k)))));
        // Token j of the word row: the `vectorWords` adjacent channels side by
        // side, one 128-bit store when there are 4.
        kb.forLoop(
            kb.i32(0), kb.i32(perWord), kb.i32(1),
            [&](Value j) {
              Value t = kb.named("token", kb.add(firstToken, j));
              SmallVector<Value> values;
              for (auto [k, word] : llvm::enumerate(loaded))
                values.push_back(
                    kb.dequantizeCode(scheme, kb.extractCode(scheme, word, j),
                                      scaleZero[k].first, scaleZero[k].second));
              storeRun(kb, s, values, tile,
                       kb.add(kb.mul(t, kb.i32(rowStride)), c0));
            },
            "code");
      },
      "vector");
}

/// Converts fp16 tokens [t0, t0 + valid) of a sink/residual segment into
/// the fp32 K and V tiles.
/// Writes fp16 tokens [t0, t0 + valid) of keys and values (sink, residual
/// or a dense body) into the K and V tiles. Each thread loads `halfVector`
/// consecutive channels of a token with one access (128-bit for 8), and
/// consecutive threads take consecutive channel runs, so a warp reads one
/// contiguous span.
void stageHalf(KernelBuilder &kb, const AttentionShape &s,
               const SharedBuffers &smem, Value keys, Value values,
               Value headRow, Value capacity, Value t0, Value valid) {
  Value d = kb.i32(s.headDim);
  int64_t width = s.halfVector;
  Value runsPerRow = kb.i32(s.headDim / width);
  Value count = kb.named("runs", kb.mul(valid, runsPerRow));
  kb.strideLoop(
      kb.threadIdx(), count, s.threads,
      [&](Value i) {
        Value t = kb.named("token", kb.div(i, runsPerRow));
        Value channel =
            kb.named("channel", kb.mul(kb.rem(i, runsPerRow), kb.i32(width)));
        Value index = kb.named(
            "index",
            kb.add(kb.mul(kb.add(kb.mul(headRow, capacity), kb.add(t0, t)), d),
                   channel));
        SmallVector<Value> k = kb.loadVector(keys, index, width);
        SmallVector<Value> v = kb.loadVector(values, index, width);
        SmallVector<Value> kf, vf;
        for (int64_t j = 0; j < width; ++j) {
          kf.push_back(kb.toF32(k[j]));
          vf.push_back(kb.toF32(v[j]));
        }
        storeRun(kb, s, kf, smem.keys,
                 kb.add(kb.mul(t, kb.i32(s.keyStride())), channel));
        storeRun(kb, s, vf, smem.values, kb.add(kb.mul(t, d), channel));
      },
      "run");
}

} // namespace

SplitRange mlir::kvq::loadSplitIndices(KernelBuilder &kb,
                                       const AttentionArgs &a) {
  SplitRange r;
  r.split = kb.blockIdx(gpu::Dimension::x);
  r.kvHead = kb.blockIdx(gpu::Dimension::y);
  r.batch = kb.blockIdx(gpu::Dimension::z);
  r.splits = kb.gridDim(gpu::Dimension::x);
  r.isFp16Split =
      kb.named("is_fp16_split", kb.eq(r.split, kb.sub(r.splits, kb.i32(1))));
  r.bodyBegin = kb.named("body_begin", kb.mul(r.split, a.tokensPerSplit));
  return r;
}

Value mlir::kvq::loadRowSequence(KernelBuilder &kb, const AttentionArgs &a,
                                 Value row) {
  return kb.max(kb.i32(0), kb.min(kb.load(a.rowSequences, row),
                                  kb.sub(a.sequences, kb.i32(1))));
}

Value mlir::kvq::loadRowLength(KernelBuilder &kb, const AttentionShape &s,
                               const AttentionArgs &a, Value row,
                               RowSegment segment) {
  int64_t field = static_cast<int64_t>(segment);
  Value capacity = segment == RowSegment::sink   ? a.sinkCapacity
                   : segment == RowSegment::body ? a.bodyCapacity
                                                 : a.residualCapacity;
  Value length =
      kb.load(a.lengths, kb.add(kb.mul(row, kb.i32(3)), kb.i32(field)));
  length = kb.max(kb.i32(0), kb.min(length, capacity));
  // Only whole channel groups of the body were quantized.
  int64_t unit = 1;
  if (segment == RowSegment::body && !s.dense())
    for (SchemeAttr scheme : {s.keyScheme, s.valueScheme})
      if (scheme.getAxis() == Axis::channel)
        unit = std::max<int64_t>(unit, scheme.groupSize(s.headDim));
  if (unit > 1)
    length = kb.mul(kb.div(length, kb.i32(unit)), kb.i32(unit));
  return length;
}

void mlir::kvq::setBodyEnd(KernelBuilder &kb, const AttentionArgs &a,
                           SplitRange &r) {
  r.bodyEnd = kb.named(
      "body_end", kb.min(kb.add(r.bodyBegin, a.tokensPerSplit), r.bodyLen));
}

SplitRange mlir::kvq::loadSplitRange(KernelBuilder &kb, const AttentionShape &s,
                                     const AttentionArgs &a) {
  SplitRange r = loadSplitIndices(kb, a);
  r.sequence = r.batch;
  if (s.chunked) {
    kb.comment("this query row reads its sequence's tokens (device data, "
               "clamped into the sequences the buffers hold)");
    r.sequence = kb.named("sequence", loadRowSequence(kb, a, r.batch));
  }
  r.headRow =
      kb.named("head_row", kb.add(kb.mul(r.sequence, a.kvHeads), r.kvHead));
  // (batch, first q head)
  r.firstQueryRow =
      kb.named("first_query_row",
               kb.mul(s.chunked ? kb.add(kb.mul(r.batch, a.kvHeads), r.kvHead)
                                : r.headRow,
                      kb.i32(s.gqa)));

  kb.comment("this sequence's sink, quantized and residual token counts, "
             "clamped to what the buffers hold (lengths in device memory are "
             "not checked at launch)");
  r.sinkLen =
      kb.named("sink_len", loadRowLength(kb, s, a, r.batch, RowSegment::sink));
  r.bodyLen =
      kb.named("body_len", loadRowLength(kb, s, a, r.batch, RowSegment::body));
  r.residualLen = kb.named(
      "residual_len", loadRowLength(kb, s, a, r.batch, RowSegment::residual));
  setBodyEnd(kb, a, r);
  return r;
}

StoredRows mlir::kvq::storedBodyRows(KernelBuilder &kb, const AttentionShape &s,
                                     const AttentionArgs &a,
                                     const SplitRange &r, Value t0) {
  if (!s.pageTokens)
    return {r.headRow, a.bodyCapacity, t0};
  Value pageTokens = kb.i32(s.pageTokens);
  Value slot = kb.div(t0, pageTokens);
  Value page =
      kb.load(a.blockTable, kb.add(kb.mul(r.sequence, a.maxPages), slot));
  // Device data never leads outside the pool.
  page = kb.named(
      "page", kb.max(kb.i32(0), kb.min(page, kb.sub(a.numPages, kb.i32(1)))));
  Value inPage = kb.named("token_in_page", kb.rem(t0, pageTokens));
  if (s.nhd) // a page's rows: token by token, each token's kv heads
    return {
        kb.named("page_row",
                 kb.add(kb.mul(kb.mul(page, pageTokens), a.kvHeads), r.kvHead)),
        pageTokens, inPage, a.kvHeads};
  return {kb.named("pool_row", kb.add(kb.mul(page, a.kvHeads), r.kvHead)),
          pageTokens, inPage};
}

namespace {

/// What the builder needs from either attention op. Null schemes mean the
/// body keys and values are fp16/bf16 (kvq.attention, the baseline kernel).
struct AttentionOpView {
  Operation *op;
  Value query, keys;
  SchemeAttr keyScheme, valueScheme;
  bool hasSink, hasResidual;
  int64_t pageTokens = 0; ///< a paged body's page tokens (0: contiguous)
  bool chunked = false;   ///< query rows mapped to sequences
  bool nhd = false;       ///< token-major pages
};

LogicalResult buildAttention(const AttentionOpView &view,
                             gpu::GPUModuleOp module);

} // namespace

LogicalResult mlir::kvq::buildAttentionKernels(QuantizedAttentionOp op,
                                               gpu::GPUModuleOp module) {
  return buildAttention(
      {op, op.getQuery(), op.getKeyCodes(), op.getKeyScheme(),
       op.getValueScheme(), static_cast<bool>(op.getSinkKeys()),
       static_cast<bool>(op.getResidualKeys()), op.getPageTokens().value_or(0),
       op.getChunked(), op.getNhd()},
      module);
}

LogicalResult mlir::kvq::buildDenseAttentionKernels(AttentionOp op,
                                                    gpu::GPUModuleOp module) {
  return buildAttention({op, op.getQuery(), op.getKeys(), SchemeAttr(),
                         SchemeAttr(), static_cast<bool>(op.getSinkKeys()),
                         static_cast<bool>(op.getResidualKeys())},
                        module);
}

namespace {

/// Writes the body of the attention kernel, stage by stage: each stage of
/// the tile loop is one method, called in the order the loop runs them.
class AttentionBodyWriter {
public:
  AttentionBodyWriter(KernelBuilder &kb, const AttentionShape &s,
                      const AttentionArgs &a, const SharedBuffers &smem,
                      bool dense, bool hasSink, bool hasResidual,
                      int64_t keyVector, int64_t valueVector)
      : kb(kb), s(s), a(a), smem(smem), dense(dense), hasSink(hasSink),
        hasResidual(hasResidual), keyVector(keyVector),
        valueVector(valueVector) {}

  void write() {
    d = kb.i32(s.headDim);
    gqa = kb.i32(s.gqa);
    tileTokens = kb.i32(s.tile);
    step = kb.i32(s.threads);
    zero = kb.i32(0);
    tid = kb.threadIdx();
    lane = kb.named("lane", kb.rem(tid, kb.i32(32)));
    warp = kb.named("warp", kb.div(tid, kb.i32(32)));
    range = loadSplitRange(kb, s, a);
    batch = range.batch;
    headRow = range.headRow;
    firstQueryRow = range.firstQueryRow;
    split = range.split;
    splits = range.splits;

    setUp();
    SmallVector<Value> initAcc(runsPerThread * run, kb.f32(0.0));
    kb.barrier();
    SmallVector<Value> acc = kb.forLoop(
        zero, tiles, kb.i32(1), initAcc,
        [&](Value tileIndex, ValueRange carried) -> SmallVector<Value> {
          Value valid = stageTile(tileIndex);
          zeroUnstagedKeyRows(valid);
          kb.barrier();
          computeScores(valid);
          kb.barrier();
          onlineSoftmax();
          kb.barrier();
          SmallVector<Value> next = accumulatePV(valid, carried);
          kb.barrier();
          return next;
        },
        "tile");
    writePartials(acc);
  }

private:
  /// The queries staged, the tiles of this split.
  void setUp() {
    sinkLen = range.sinkLen;
    bodyLen = range.bodyLen;
    residualLen = range.residualLen;
    bodyBegin = range.bodyBegin;
    bodyEnd = range.bodyEnd;
    Value isFp16Split = range.isFp16Split;

    kb.comment("stage the GQA group's queries, pre-multiplied by the softmax "
               "scale");
    kb.strideLoop(
        tid, kb.i32(s.gqa * s.headDim), s.threads,
        [&](Value i) {
          Value x = kb.toF32(kb.load(a.q, kb.add(kb.mul(firstQueryRow, d), i)));
          kb.store(kb.fmul(x, a.softmaxScale), smem.q, i);
        },
        "i");
    kb.ifThen(kb.lt(tid, gqa), [&] {
      kb.store(kb.negInf(), smem.runningMax, tid);
      kb.store(kb.f32(0.0), smem.runningSum, tid);
    });

    kb.comment(
        "tiles of this split: quantized tokens, or (last split) the fp16 "
        "sink and residual tokens");
    bodyTiles =
        kb.named("body_tiles",
                 kb.select(isFp16Split, zero,
                           kb.max(zero, kb.ceilDiv(kb.sub(bodyEnd, bodyBegin),
                                                   tileTokens))));
    sinkTiles = hasSink
                    ? kb.named("sink_tiles",
                               kb.select(isFp16Split,
                                         kb.ceilDiv(sinkLen, tileTokens), zero))
                    : zero;
    residualTiles =
        hasResidual
            ? kb.named("residual_tiles",
                       kb.select(isFp16Split,
                                 kb.ceilDiv(residualLen, tileTokens), zero))
            : zero;
    tiles =
        kb.named("tiles", kb.add(bodyTiles, kb.add(sinkTiles, residualTiles)));

    // P·V outputs are owned in runs of 4 adjacent channels (one LDS.128 of V
    // per token) when the tiles are vectorized, else one by one.
    run = s.vectorTiles() ? 4 : 1;
    runs = s.gqa * s.headDim / run;
    runsPerThread = (runs + s.threads - 1) / s.threads;
  }

  /// Stage 1: the K and V tile as fp32 in shared memory; the tokens staged.
  Value stageTile(Value tileIndex) {
    kb.comment("1. stage the K and V tile as fp32 in shared memory");
    return kb.ifElse(
        kb.lt(tileIndex, bodyTiles), {kb.i32Type()},
        [&]() -> SmallVector<Value> {
          Value t0 = kb.named("tile_start",
                              kb.add(bodyBegin, kb.mul(tileIndex, tileTokens)));
          Value n =
              kb.named("tile_len", kb.min(tileTokens, kb.sub(bodyEnd, t0)));
          if (dense) {
            stageHalf(kb, s, smem, a.keyWords, a.valueWords, headRow,
                      a.bodyCapacity, t0, n);
            return {n};
          }
          // A tile never crosses a page.
          StoredRows at = storedBodyRows(kb, s, a, range, t0);
          Value storedRow = at.row, capacity = at.capacity, first = at.first;
          stageQuantized(kb, s, s.keyScheme, keyVector, a.keyWords, a.keyScales,
                         a.keyZeros, storedRow, capacity, first, n, smem.keys,
                         s.keyStride(), range.kvHead, at.tokenStride);
          stageQuantized(kb, s, s.valueScheme, valueVector, a.valueWords,
                         a.valueScales, a.valueZeros, storedRow, capacity,
                         first, n, smem.values, s.headDim, range.kvHead,
                         at.tokenStride);
          return {n};
        },
        [&]() -> SmallVector<Value> {
          Value fp16Tile = kb.named("fp16_tile", kb.sub(tileIndex, bodyTiles));
          auto residualTile = [&]() -> SmallVector<Value> {
            if (!hasResidual)
              return {zero};
            Value t0 = kb.named(
                "tile_start", kb.mul(kb.sub(fp16Tile, sinkTiles), tileTokens));
            Value n = kb.named("tile_len",
                               kb.min(tileTokens, kb.sub(residualLen, t0)));
            stageHalf(kb, s, smem, a.residualKeys, a.residualValues, headRow,
                      a.residualCapacity, t0, n);
            return {n};
          };
          if (!hasSink)
            return residualTile();
          return kb.ifElse(
              kb.lt(fp16Tile, sinkTiles), {kb.i32Type()},
              [&]() -> SmallVector<Value> {
                Value t0 = kb.named("tile_start", kb.mul(fp16Tile, tileTokens));
                Value n = kb.named("tile_len",
                                   kb.min(tileTokens, kb.sub(sinkLen, t0)));
                stageHalf(kb, s, smem, a.sinkKeys, a.sinkValues, headRow,
                          a.sinkCapacity, t0, n);
                return {n};
              },
              residualTile);
        })[0];
  }

  /// The paired score loop reads every K row of the tile.
  void zeroUnstagedKeyRows(Value valid) {
    if (s.scoresPerThread == 2) {
      // The paired score loop reads every K row of the tile and drops
      // the scores past `valid`; rows a partial tile did not stage
      // would hold whatever shared memory held (NaN, on a GPU), so
      // they are zeroed.
      kb.comment("K rows past the staged tokens: zeroed, as the paired "
                 "score loop reads them");
      int64_t vectors = s.keyStride() / 4;
      Value missing = kb.named(
          "missing", kb.mul(kb.sub(tileTokens, valid), kb.i32(vectors)));
      kb.strideLoop(
          tid, missing, s.threads,
          [&](Value i) {
            Value row =
                kb.named("row", kb.add(valid, kb.div(i, kb.i32(vectors))));
            Value column = kb.named(
                "column", kb.mul(kb.rem(i, kb.i32(vectors)), kb.i32(4)));
            kb.storeShared4(SmallVector<Value>(4, kb.f32(0.0)), smem.keys,
                            kb.add(kb.mul(row, kb.i32(s.keyStride())), column));
          },
          "i");
    }
  }

  /// Stage 2: q.K for each (query head, token) of the tile.
  void computeScores(Value valid) {

    if (s.scoresPerThread == 2) {
      kb.comment("2. scores: one thread per (query head, tokens t and "
                 "t + tile/2), q read once for both");
      // Rows t and t + tile/2 keep a quarter-warp's K rows on distinct
      // banks (AttentionTiles.h); tokens past `valid` score -inf.
      Value half = kb.i32(s.tile / 2);
      Value stride = kb.i32(s.keyStride());
      kb.strideLoop(
          tid, kb.i32(s.gqa * (s.tile / 2)), s.threads,
          [&](Value i) {
            Value head = kb.named("head", kb.div(i, half));
            Value t0 = kb.named("token", kb.rem(i, half));
            Value t1 = kb.named("token_b", kb.add(t0, half));
            Value qBase = kb.named("q_base", kb.mul(head, d));
            Value k0 = kb.named("k_base", kb.mul(t0, stride));
            // Row t1 as a constant offset from row t0's element, so both
            // loads share one address register.
            Value rowGap = kb.i32(s.tile / 2 * s.keyStride());
            SmallVector<Value> dots = kb.forLoop(
                zero, d, kb.i32(4), {kb.f32(0.0), kb.f32(0.0)},
                [&](Value c, ValueRange sum) -> SmallVector<Value> {
                  SmallVector<Value> qv =
                      kb.loadShared4(smem.q, kb.add(qBase, c));
                  SmallVector<Value> a =
                      kb.loadShared4(smem.keys, kb.add(k0, c));
                  SmallVector<Value> b =
                      kb.loadShared4(smem.keys, kb.add(kb.add(k0, c), rowGap));
                  Value s0 = sum[0], s1 = sum[1];
                  for (int j = 0; j < 4; ++j) {
                    s0 = kb.fadd(s0, kb.fmul(qv[j], a[j]));
                    s1 = kb.fadd(s1, kb.fmul(qv[j], b[j]));
                  }
                  return {s0, s1};
                },
                "channel");
            Value row = kb.named("probs_row", kb.mul(head, tileTokens));
            kb.store(kb.select(kb.lt(t0, valid), dots[0], kb.negInf()),
                     smem.probs, kb.add(row, t0));
            kb.store(kb.select(kb.lt(t1, valid), dots[1], kb.negInf()),
                     smem.probs, kb.add(row, t1));
          },
          "i");
    } else {
      kb.comment("2. scores: one thread per (query head, token)");
      kb.strideLoop(
          tid, kb.i32(s.gqa * s.tile), s.threads,
          [&](Value i) {
            Value head = kb.named("head", kb.div(i, tileTokens));
            Value t = kb.named("token", kb.rem(i, tileTokens));
            Value score = kb.ifElse(
                kb.lt(t, valid), {kb.f32Type()},
                [&]() -> SmallVector<Value> {
                  Value qBase = kb.named("q_base", kb.mul(head, d));
                  Value kBase =
                      kb.named("k_base", kb.mul(t, kb.i32(s.keyStride())));
                  if (s.vectorTiles()) // 4 channels per LDS.128, in order
                    return kb.forLoop(
                        zero, d, kb.i32(4), {kb.f32(0.0)},
                        [&](Value c, ValueRange sum) -> SmallVector<Value> {
                          SmallVector<Value> qv =
                              kb.loadShared4(smem.q, kb.add(qBase, c));
                          SmallVector<Value> kv =
                              kb.loadShared4(smem.keys, kb.add(kBase, c));
                          Value total = sum[0];
                          for (int j = 0; j < 4; ++j)
                            total = kb.fadd(total, kb.fmul(qv[j], kv[j]));
                          return {total};
                        },
                        "channel");
                  return kb.forLoop(
                      zero, d, kb.i32(1), {kb.f32(0.0)},
                      [&](Value c, ValueRange sum) -> SmallVector<Value> {
                        Value qv = kb.load(smem.q, kb.add(qBase, c));
                        Value kv = kb.load(smem.keys, kb.add(kBase, c));
                        return {kb.fadd(sum[0], kb.fmul(qv, kv))};
                      },
                      "channel");
                },
                [&]() -> SmallVector<Value> { return {kb.negInf()}; })[0];
            kb.store(score, smem.probs, i);
          },
          "i");
    }
  }

  /// Stage 3: online softmax, one warp per query head.
  void onlineSoftmax() {
    kb.comment("3. online softmax: one warp per query head");
    // Loops, even where a warp or lane makes exactly one trip (GQA = warps,
    // 32-token tiles): written straight, ptxas gives kivi4 two more registers
    // on sm_80 and its unpack loop four more instructions on sm_90
    // (kvq-perf-report), though the kernel as a whole shrinks.
    kb.forLoop(
        warp, gqa, kb.i32(s.threads / 32),
        [&](Value head) {
          Value base = kb.named("probs_row", kb.mul(head, tileTokens));
          Value tileMax = kb.forLoop(
              lane, tileTokens, kb.i32(32), {kb.negInf()},
              [&](Value t, ValueRange m) -> SmallVector<Value> {
                return {kb.fmax(m[0], kb.load(smem.probs, kb.add(base, t)))};
              },
              "token")[0];
          for (int offset = 16; offset >= 1; offset /= 2)
            tileMax = kb.fmax(tileMax, kb.shuffleXor(tileMax, offset));
          kb.named("tile_max", tileMax);
          Value oldMax = kb.named("old_max", kb.load(smem.runningMax, head));
          Value newMax = kb.named("new_max", kb.fmax(oldMax, tileMax));
          // Nothing seen yet: keep exp() away from (-inf) - (-inf).
          Value safeMax =
              kb.named("safe_max", kb.select(kb.feq(newMax, kb.negInf()),
                                             kb.f32(0.0), newMax));
          Value tileSum = kb.forLoop(
              lane, tileTokens, kb.i32(32), {kb.f32(0.0)},
              [&](Value t, ValueRange sum) -> SmallVector<Value> {
                Value index = kb.add(base, t);
                Value p = kb.named(
                    "p", kb.exp(kb.fsub(kb.load(smem.probs, index), safeMax)));
                kb.store(p, smem.probs, index);
                return {kb.fadd(sum[0], p)};
              },
              "token")[0];
          for (int offset = 16; offset >= 1; offset /= 2)
            tileSum = kb.fadd(tileSum, kb.shuffleXor(tileSum, offset));
          kb.named("tile_sum", tileSum);
          kb.ifThen(kb.eq(lane, zero), [&] {
            Value correction =
                kb.named("correction", kb.exp(kb.fsub(oldMax, safeMax)));
            Value oldSum = kb.named("old_sum", kb.load(smem.runningSum, head));
            kb.store(kb.fadd(kb.fmul(oldSum, correction), tileSum),
                     smem.runningSum, head);
            kb.store(newMax, smem.runningMax, head);
            kb.store(correction, smem.correction, head);
          });
        },
        "head");
  }

  /// Stage 4: P.V into the accumulators `carried`; the updated ones.
  SmallVector<Value> accumulatePV(Value valid, ValueRange carried) {
    kb.comment("4. P·V: each thread owns runs of " + std::to_string(run) +
               " (query head, channel) outputs");
    SmallVector<Value> next;
    for (int64_t k = 0; k < runsPerThread; ++k) {
      Value i = kb.named("run_index", kb.add(tid, kb.i32(k * s.threads)));
      Value inRange =
          kb.named("in_range", kb.lt(i, kb.i32(s.gqa * s.headDim / run)));
      Value first = kb.named("first_output",
                             kb.mul(kb.select(inRange, i, zero), kb.i32(run)));
      Value head = kb.named("head", kb.div(first, d));
      Value channel = kb.named("channel", kb.rem(first, d));
      Value correction = kb.named("correction", kb.load(smem.correction, head));
      SmallVector<Value> scaled;
      for (int64_t j = 0; j < run; ++j)
        scaled.push_back(kb.fmul(carried[k * run + j], correction));
      // acc += p[t] * V[t] for one token, tokens in order.
      auto accumulate = [&](ValueRange sum, Value p, Value t) {
        Value at = kb.add(kb.mul(t, d), channel);
        SmallVector<Value> v =
            run == 4 ? kb.loadShared4(smem.values, at)
                     : SmallVector<Value>{kb.load(smem.values, at)};
        SmallVector<Value> out;
        for (int64_t j = 0; j < run; ++j)
          out.push_back(kb.fadd(sum[j], kb.fmul(p, v[j])));
        return out;
      };
      Value probs = kb.named("probs_row", kb.mul(head, tileTokens));
      SmallVector<Value> updated = scaled;
      Value scalarFrom = zero;
      if (s.vectorTiles()) {
        // Whole groups of 4 tokens take their probabilities with one
        // LDS.128 (the row of a head starts 16-byte aligned).
        scalarFrom = kb.named("whole_fours",
                              kb.mul(kb.div(valid, kb.i32(4)), kb.i32(4)));
        updated = kb.forLoop(
            zero, scalarFrom, kb.i32(4), updated,
            [&](Value t, ValueRange sum) -> SmallVector<Value> {
              SmallVector<Value> p =
                  kb.loadShared4(smem.probs, kb.add(probs, t));
              SmallVector<Value> acc(sum.begin(), sum.end());
              for (int64_t j = 0; j < 4; ++j)
                acc = accumulate(acc, p[j], kb.add(t, kb.i32(j)));
              return acc;
            },
            "token");
      }
      updated = kb.forLoop(
          scalarFrom, valid, kb.i32(1), updated,
          [&](Value t, ValueRange sum) -> SmallVector<Value> {
            return accumulate(sum, kb.load(smem.probs, kb.add(probs, t)), t);
          },
          "token");
      for (int64_t j = 0; j < run; ++j)
        next.push_back(kb.select(inRange, updated[j], carried[k * run + j]));
    }
    return next;
  }

  /// This split's unnormalized output, running max and sum.
  void writePartials(ArrayRef<Value> acc) {
    kb.comment("write this split's unnormalized output, running max and sum");
    for (int64_t k = 0; k < runsPerThread; ++k) {
      Value i = kb.add(tid, kb.i32(k * s.threads));
      kb.ifThen(kb.lt(i, kb.i32(runs)), [&] {
        Value first = kb.mul(i, kb.i32(run));
        Value head = kb.div(first, d);
        Value channel = kb.rem(first, d);
        Value row = kb.named(
            "partial_row",
            kb.add(kb.mul(kb.add(firstQueryRow, head), splits), split));
        for (int64_t j = 0; j < run; ++j)
          kb.store(acc[k * run + j], a.partialOut,
                   kb.add(kb.mul(row, d), kb.add(channel, kb.i32(j))));
      });
    }
    kb.ifThen(kb.lt(tid, gqa), [&] {
      Value row = kb.add(kb.mul(kb.add(firstQueryRow, tid), splits), split);
      kb.store(kb.load(smem.runningMax, tid), a.partialMax, row);
      kb.store(kb.load(smem.runningSum, tid), a.partialSum, row);
    });
  }

  KernelBuilder &kb;
  const AttentionShape &s;
  const AttentionArgs &a;
  const SharedBuffers &smem;
  bool dense, hasSink, hasResidual;
  int64_t keyVector, valueVector; ///< packed words per load (plan)
  // Made once at the top of the kernel, used by every stage.
  SplitRange range;
  Value d, gqa, tileTokens, step, zero, tid, lane, warp, split, batch, splits,
      headRow, firstQueryRow;
  // setUp(): lengths (clamped) and this split's tiles.
  Value sinkLen, bodyLen, residualLen, bodyBegin, bodyEnd, bodyTiles, sinkTiles,
      residualTiles, tiles;
  // P.V outputs are owned in runs of `run` adjacent channels.
  int64_t run = 1, runs = 0, runsPerThread = 0;
};

/// The combine kernel: merges the splits of each (batch, query head).
void buildCombineKernel(OpBuilder &builder, ImplicitLocOpBuilder &b,
                        KernelBuilder &kb, gpu::GPUModuleOp module,
                        Operation *op, const AttentionShape &s,
                        const std::string &name, const std::string &spec,
                        PlanAttr plan) {
  Type i32 = builder.getI32Type(), f32 = builder.getF32Type();
  int64_t combineThreads = std::min<int64_t>(s.headDim, 128);
  SmallVector<Type> combineArgs = {globalBuffer(f32), globalBuffer(f32),
                                   globalBuffer(f32), globalBuffer(s.half),
                                   i32};
  gpu::GPUFuncOp combine = createKernel(
      builder, module, op->getLoc(), name + "_combine", "combine", combineArgs,
      {"partial_out", "partial_max", "partial_sum", "out", "splits"}, {},
      combineThreads, spec, plan);
  b.setInsertionPoint(combine.getBody().front().getTerminator());
  {
    Value partialOut = combine.getArgument(0);
    Value partialMax = combine.getArgument(1);
    Value partialSum = combine.getArgument(2);
    Value out = combine.getArgument(3);
    Value numSplits = combine.getArgument(4);
    Value d = kb.i32(s.headDim); // this kernel's own constant
    kb.comment("merge the splits of one (batch, query head) by log-sum-exp");
    Value qRow =
        kb.named("query_row", kb.add(kb.mul(kb.blockIdx(gpu::Dimension::y),
                                            kb.gridDim(gpu::Dimension::x)),
                                     kb.blockIdx(gpu::Dimension::x)));
    Value base = kb.named("first_partial", kb.mul(qRow, numSplits));
    Value globalMax = kb.forLoop(
        kb.i32(0), numSplits, kb.i32(1), {kb.negInf()},
        [&](Value sp, ValueRange m) -> SmallVector<Value> {
          return {kb.fmax(m[0], kb.load(partialMax, kb.add(base, sp)))};
        },
        "split")[0];
    Value safeMax =
        kb.named("safe_max", kb.select(kb.feq(globalMax, kb.negInf()),
                                       kb.f32(0.0), globalMax));
    Value total = kb.forLoop(
        kb.i32(0), numSplits, kb.i32(1), {kb.f32(0.0)},
        [&](Value sp, ValueRange sum) -> SmallVector<Value> {
          Value weight =
              kb.exp(kb.fsub(kb.load(partialMax, kb.add(base, sp)), safeMax));
          return {kb.fadd(
              sum[0], kb.fmul(kb.load(partialSum, kb.add(base, sp)), weight))};
        },
        "split")[0];
    kb.comment("a sequence with no tokens at all produces zeros");
    Value inverse = kb.named("inverse", kb.select(kb.flt(kb.f32(0.0), total),
                                                  kb.fdiv(kb.f32(1.0), total),
                                                  kb.f32(0.0)));
    kb.strideLoop(kb.threadIdx(), d, combineThreads, [&](Value c) {
      Value o = kb.forLoop(
          kb.i32(0), numSplits, kb.i32(1), {kb.f32(0.0)},
          [&](Value sp, ValueRange sum) -> SmallVector<Value> {
            Value weight =
                kb.exp(kb.fsub(kb.load(partialMax, kb.add(base, sp)), safeMax));
            Value part =
                kb.load(partialOut, kb.add(kb.mul(kb.add(base, sp), d), c));
            return {kb.fadd(sum[0], kb.fmul(part, weight))};
          },
          "split")[0];
      kb.store(kb.fromF32(kb.fmul(o, inverse), s.half), out,
               kb.add(kb.mul(qRow, d), c));
    });
  }
}

/// " (why)" when kvq-plan said why it chose the attention path.
std::string pathReason(Operation *op) {
  if (auto reason = op->getAttrOfType<StringAttr>(kAttentionPathReasonAttr))
    return " (" + reason.str() + ")";
  return "";
}

LogicalResult buildAttention(const AttentionOpView &view,
                             gpu::GPUModuleOp module) {
  Operation *op = view.op;
  bool dense = !view.keyScheme;
  auto queryType = cast<RankedTensorType>(view.query.getType());
  auto keyType = cast<RankedTensorType>(view.keys.getType());
  int64_t queryHeads = queryType.getShape()[1];
  int64_t kvHeads = keyType.getShape()[1];
  if (ShapedType::isDynamic(queryHeads) || ShapedType::isDynamic(kvHeads))
    return op->emitOpError("needs static query and kv head counts to fix the "
                           "GQA ratio of the kernel");
  using ::kvq::LaunchPlan;
  SmallVector<int64_t LaunchPlan::*> required = {
      &LaunchPlan::threads, &LaunchPlan::tileTokens, &LaunchPlan::halfVector,
      &LaunchPlan::scoresPerThread};
  if (!dense)
    required.append(
        {&LaunchPlan::keyVectorWords, &LaunchPlan::valueVectorWords});
  FailureOr<LaunchPlan> plan = requirePlan(op, required);
  if (failed(plan))
    return failure();

  AttentionShape s{view.keyScheme,
                   view.valueScheme,
                   queryType.getShape()[2],
                   queryHeads / kvHeads,
                   plan->threads,
                   plan->tileTokens,
                   queryType.getElementType(),
                   plan->halfVector,
                   plan->scoresPerThread,
                   view.pageTokens,
                   view.chunked,
                   plan->queryRowsPerBlock(),
                   view.nhd};
  bool hasSink = view.hasSink;
  bool hasResidual = view.hasResidual;
  MLIRContext *ctx = op->getContext();
  OpBuilder builder(op);
  Type i32 = builder.getI32Type(), f32 = builder.getF32Type();

  //===--- signature (KernelABI.h) -----------------------------------===//
  // Each argument once: its name, its type and where the body finds it.
  // The runtime packs launches by these names (GeneratedKernel::argNames).
  AttentionArgs a; // dense: keyWords/valueWords hold the fp16 keys/values
  SmallVector<KernelParameter> parameters = {
      {"q", globalBuffer(s.half), &a.q},
      {"partial_out", globalBuffer(f32), &a.partialOut},
      {"partial_max", globalBuffer(f32), &a.partialMax},
      {"partial_sum", globalBuffer(f32), &a.partialSum}};
  if (dense) {
    parameters.append({{"keys", globalBuffer(s.half), &a.keyWords},
                       {"values", globalBuffer(s.half), &a.valueWords}});
  } else {
    Type keyStorage = s.keyScheme.getScaleType();
    Type valueStorage = s.valueScheme.getScaleType();
    parameters.append({{"key_words", globalBuffer(i32), &a.keyWords},
                       {"key_scales", globalBuffer(keyStorage), &a.keyScales}});
    if (s.keyScheme.hasZeroPoints())
      parameters.push_back(
          {"key_zeros", globalBuffer(keyStorage), &a.keyZeros});
    parameters.append(
        {{"value_words", globalBuffer(i32), &a.valueWords},
         {"value_scales", globalBuffer(valueStorage), &a.valueScales}});
    if (s.valueScheme.hasZeroPoints())
      parameters.push_back(
          {"value_zeros", globalBuffer(valueStorage), &a.valueZeros});
  }
  if (hasSink)
    parameters.append({{"sink_keys", globalBuffer(s.half), &a.sinkKeys},
                       {"sink_values", globalBuffer(s.half), &a.sinkValues}});
  if (hasResidual)
    parameters.append(
        {{"residual_keys", globalBuffer(s.half), &a.residualKeys},
         {"residual_values", globalBuffer(s.half), &a.residualValues}});
  parameters.append({{"lengths", globalBuffer(i32), &a.lengths},
                     {"kv_heads", i32, &a.kvHeads},
                     {"body_capacity", i32, &a.bodyCapacity},
                     {"sink_capacity", i32, &a.sinkCapacity},
                     {"residual_capacity", i32, &a.residualCapacity},
                     {"tokens_per_split", i32, &a.tokensPerSplit},
                     {"softmax_scale", f32, &a.softmaxScale}});
  if (s.pageTokens)
    parameters.append({{"block_table", globalBuffer(i32), &a.blockTable},
                       {"max_pages", i32, &a.maxPages},
                       {"num_pages", i32, &a.numPages}});
  if (s.chunked)
    parameters.append({{"row_sequences", globalBuffer(i32), &a.rowSequences},
                       {"sequences", i32, &a.sequences},
                       {"rows", i32, &a.rows}});
  bool tensorCores = plan->attentionPath == ::kvq::kTensorCores;
  SmallVector<Type> shared =
      tensorCores ? tensorCoreSharedTypes(ctx, s)
                  : SmallVector<Type>{
                        sharedBuffer(ctx, s.gqa * s.headDim, f32), // q, scaled
                        sharedBuffer(ctx, s.tile * s.keyStride(), f32), // K
                        sharedBuffer(ctx, s.tile * s.headDim, f32),     // V
                        sharedBuffer(ctx, s.gqa * s.tile, f32),         // probs
                        sharedBuffer(ctx, s.gqa, f32),  // running max
                        sharedBuffer(ctx, s.gqa, f32),  // running sum
                        sharedBuffer(ctx, s.gqa, f32)}; // rescale factor

  std::string segments =
      std::string(hasSink ? "s" : "") + (hasResidual ? "r" : "");
  std::string kv =
      dense ? "dense"
            : "k" + schemeTag(s.keyScheme) + "_v" + schemeTag(s.valueScheme);
  std::string paged =
      (s.pageTokens ? "_p" + std::to_string(s.pageTokens) : std::string()) +
      (s.nhd ? "n" : "") + (s.chunked ? "c" : "");
  std::string name =
      llvm::formatv("kvq_attn_{0}_d{1}_g{2}{3}_{4}{5}{6}{7}", kv, s.headDim,
                    s.gqa, paged, halfTag(s.half), segments.empty() ? "" : "_",
                    segments, tensorCores ? "_mma" : "");
  std::string keyText = "dense", valueText = "dense";
  if (!dense) {
    keyText.clear();
    valueText.clear();
    llvm::raw_string_ostream(keyText) << Attribute(s.keyScheme);
    llvm::raw_string_ostream(valueText) << Attribute(s.valueScheme);
  }
  std::string spec = llvm::formatv(
      "attention keys {0} values {1} head_dim={2} gqa={3} dtype={4} "
      "sink={5} residual={6}{7}",
      keyText, valueText, s.headDim, s.gqa, halfTag(s.half),
      hasSink ? "yes" : "no", hasResidual ? "yes" : "no",
      (s.pageTokens ? " page_tokens=" + std::to_string(s.pageTokens) : "") +
          (s.nhd ? " nhd" : "") + (s.chunked ? " chunked" : "") +
          (s.queryRows > 1 ? " query_rows=" + std::to_string(s.queryRows)
                           : std::string()) +
          (tensorCores ? " path=tensor-cores" : " path=cuda-cores") +
          pathReason(op));
  gpu::GPUFuncOp func =
      createKernel(builder, module, op->getLoc(), name, "attention", parameters,
                   shared, s.threads, spec, getLaunchPlan(op));
  SmallVector<StringRef> sharedNames =
      tensorCores
          ? tensorCoreSharedNames()
          : SmallVector<StringRef>{"q",      "keys",        "values",
                                   "probs",  "running_max", "running_sum",
                                   "rescale"};
  func->setAttr("kvq.shared_names", builder.getStrArrayAttr(sharedNames));

  //===--- body -------------------------------------------------------===//
  KernelBody body(builder, op->getLoc(), func);
  KernelBuilder &kb = body.kb;
  auto attrs = func.getWorkgroupAttributions();
  if (tensorCores) {
    writeTensorCoreAttention(kb, s, a, SmallVector<Value>(attrs), hasSink,
                             hasResidual);
  } else {
    SharedBuffers smem = {attrs[0], attrs[1], attrs[2], attrs[3],
                          attrs[4], attrs[5], attrs[6]};
    AttentionBodyWriter(kb, s, a, smem, dense, hasSink, hasResidual,
                        plan->keyWordsPerLoad(), plan->valueWordsPerLoad())
        .write();
  }
  buildCombineKernel(builder, body.b, kb, module, op, s, name, spec,
                     getLaunchPlan(op));
  return success();
}
} // namespace
