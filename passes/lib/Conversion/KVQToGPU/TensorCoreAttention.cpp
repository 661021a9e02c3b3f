//===- TensorCoreAttention.cpp - decode attention on the tensor cores -----===//
//
// The tensor-core body of the attention kernel (plan attentionPath = 2):
// the same grid, arguments, partial outputs and combine kernel as the
// CUDA-core body (AttentionKernel.cpp), but no shared-memory tile and no
// barrier in the token loop. Each warp walks its own steps of 16 tokens;
// with lane = 4 g + t, a step is
//   scores   S^T[16 tokens x 8 heads] = K[16 x d] . Q^T[d x 8]: d/16
//            mma.m16n8k16 with K as the A operand, unpacked in registers
//            straight into its fragments, and Q^T as the B operand, loaded
//            once per kernel. Quantized keys enter as their exact integer
//            codes: token-axis scales multiply each group's partial scores
//            after its MMAs; channel-axis scales (one row for a step's 16
//            tokens) multiply q before them (KeyForm);
//   softmax  online, on the accumulators: a lane holds tokens g and g + 8
//            of heads 2t and 2t + 1, so a head's maximum is a reduction over
//            the 8 lanes of equal t (3 shuffles);
//   P.V      O^T[d x 8] += V^T[d x 16] . P^T[16 x 8]: V^T is the A operand,
//            dequantized in registers; P's accumulators become B fragments
//            by one movmatrix transpose per 8 tokens.
// The GQA group's query heads are the N dimension (8 columns, padded; two
// column tiles for GQA up to 16): for GQA <= 8 that is half the MMAs and
// accumulator registers of putting the heads in M (16 rows, padded).
// Chunked query rows fill the padding: a block takes queryRows consecutive
// rows (plan: 8 / GQA), column c being head c % gqa of row c / gqa, and
// reads each sequence among its rows once, in a pass of its own, each
// column masked to its own row's token counts.
//
// Channel order. The sum over channels in Q.K^T, and the output channels of
// P.V, may be taken in any order, so each lane's fragments cover contiguous
// channels: for the scores lane t reads channels [t d/4, (t+1) d/4) of its
// two tokens (k-step s takes 4s .. 4s+3 of them), for P.V lane g owns
// channels [g d/8, (g+1) d/8) (m-tile m rows 2m and 2m+1). Packed words are
// then read whole, up to 128 bits at a time.
//
// At the end the warps' partial (max, sum, output) merge through shared
// memory, once, into this split's partial result.
//
//===----------------------------------------------------------------------===//

#include "AttentionKernel.h"
#include "Kernels.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "llvm/Support/FormatVariadic.h"

#include <array>
#include <cmath>

using namespace mlir;
using namespace mlir::kvq;

namespace {

/// Tokens a warp takes per step: the M of the score MMA.
constexpr int64_t kStepTokens = 16;
/// Query heads per MMA column tile: its N.
constexpr int64_t kHeadsPerTile = 8;

/// One quantized or fp16 tensor a step reads K or V from.
struct Operand {
  SchemeAttr scheme; ///< null: fp16/bf16 values
  Value data, scales, zeros;
};

class TensorCoreBodyWriter {
public:
  TensorCoreBodyWriter(KernelBuilder &kb, const AttentionShape &s,
                       const AttentionArgs &a, ValueRange shared, bool hasSink,
                       bool hasResidual)
      : kb(kb), s(s), a(a), mergeOut(shared[0]), mergeMax(shared[1]),
        mergeSum(shared[2]), hasSink(hasSink), hasResidual(hasResidual) {}

  void write() {
    warps = s.threads / 32;
    rows = s.queryRows;
    columns = rows * s.gqa;
    headTiles = (columns + kHeadsPerTile - 1) / kHeadsPerTile;
    kSteps = s.headDim / 16;
    keyRun = s.headDim / 4;
    valueRun = s.headDim / 8;
    zero = kb.i32(0);
    d = kb.i32(s.headDim);
    Value tid = kb.threadIdx();
    Value lane = kb.named("lane", kb.rem(tid, kb.i32(32)));
    warp = kb.named("warp", kb.div(tid, kb.i32(32)));
    g = kb.named("group", kb.div(lane, kb.i32(4)));
    t = kb.named("thread_in_group", kb.rem(lane, kb.i32(4)));
    if (rows == 1) {
      range = loadSplitRange(kb, s, a);
    } else {
      range = loadSplitIndices(kb, a);
      kb.comment(llvm::formatv("query rows [first_row, first_row + {0}): "
                               "each its GQA group's {1} columns",
                               rows, s.gqa)
                     .str());
      firstRow = kb.named("first_row", kb.mul(range.batch, kb.i32(rows)));
      lastRow = kb.named("last_row", kb.sub(a.rows, kb.i32(1)));
    }
    // Scores in units of log2: the softmax is 2^(x - max), one MUFU.EX2.
    scoreScale =
        kb.named("score_scale", kb.fmul(a.softmaxScale, kb.f32(M_LOG2E)));
    Operand bodyKeys{s.keyScheme, a.keyWords, a.keyScales, a.keyZeros};
    bodyKeyForm = keyForm(bodyKeys);
    // Channel-axis values are dequantized in fp32 runs (channelAxisRuns);
    // next to keys of two word rows a step, ptxas spills a few bytes
    // (CompileMatrixTest, sm_80): those keys stay values.
    if (bodyKeyForm == KeyForm::ChannelCodes && s.valueScheme &&
        s.valueScheme.getAxis() == Axis::channel &&
        s.keyScheme.codesPerWord() < kStepTokens)
      bodyKeyForm = KeyForm::Values;
    if (bodyKeyForm == KeyForm::ChannelCodes)
      placeChannelCodes(bodyKeys.scheme);
    loadQueryFragments(bodyKeys);
    if (rows == 1) {
      attend();
      return;
    }
    // The block's rows are consecutive query tokens, mostly of one sequence;
    // rows of other sequences (a chunk's edge, or any row table) are taken
    // in a pass of their own: a pass per sequence, for its first row here.
    kb.comment("a pass per sequence among the block's rows");
    kb.forLoop(
        zero, kb.i32(rows), kb.i32(1),
        [&](Value pass) {
          Value passRow = kb.named("pass_row", kb.add(firstRow, pass));
          Value sequence = kb.named(
              "sequence", loadRowSequence(kb, a, kb.min(passRow, lastRow)));
          Value active = zero; // bit r: row first_row + r reads this sequence
          for (int64_t r = 0; r < rows; ++r) {
            Value row = kb.add(firstRow, kb.i32(r));
            Value same = kb.bothTrue(
                kb.lt(row, a.rows),
                kb.eq(loadRowSequence(kb, a, kb.min(row, lastRow)), sequence));
            active = kb.select(same, kb.bitOr(active, kb.i32(int64_t(1) << r)),
                               active);
          }
          activeRows = kb.named("active_rows", active);
          // The pass's row is the first of its sequence here (no lower bit).
          Value earlier = kb.sub(kb.shl(kb.i32(1), pass), kb.i32(1));
          Value first =
              kb.named("first_of_sequence",
                       kb.bothTrue(kb.lt(passRow, a.rows),
                                   kb.eq(kb.bitAnd(active, earlier), zero)));
          kb.ifThen(first, [&] {
            loadPassRange(sequence);
            attend();
            kb.barrier(); // the next pass writes the merge buffers again
          });
        },
        "pass");
  }

private:
  /// The block's columns: query head `column % gqa` of row `column / gqa`
  /// of the block's rows (one row: head `column` of this block's row).
  /// The row of q of a column, clamped unless the column is known to be one
  /// of the block's (`inBlock`) and its row one of the call's.
  Value queryRowOf(Value column, bool inBlock = false) {
    if (rows == 1)
      return kb.add(range.firstQueryRow,
                    inBlock ? column : kb.min(column, kb.i32(s.gqa - 1)));
    Value gqa = kb.i32(s.gqa);
    Value row = kb.add(firstRow, kb.div(column, gqa));
    if (!inBlock)
      row = kb.min(row, lastRow);
    return kb.add(kb.mul(kb.add(kb.mul(row, a.kvHeads), range.kvHead), gqa),
                  kb.rem(column, gqa));
  }

  /// Whether `column` belongs to a row of this pass's sequence (rows > 1).
  Value columnActive(Value column) {
    Value row = kb.div(column, kb.i32(s.gqa));
    return kb.eq(kb.bitAnd(kb.shru(activeRows, row), kb.i32(1)), kb.i32(1));
  }

  /// The block's range for one pass: this sequence's K/V rows, and the
  /// token counts of the rows that read it, the longest of each as the
  /// range (each column masked to its own: columnLengths).
  void loadPassRange(Value sequence) {
    range.sequence = sequence;
    range.headRow =
        kb.named("head_row", kb.add(kb.mul(sequence, a.kvHeads), range.kvHead));
    kb.comment("each row's sink, quantized and residual token counts "
               "(clamped), the longest as the block's, each column's own");
    Value *longest[3] = {&range.sinkLen, &range.bodyLen, &range.residualLen};
    const char *names[3] = {"sink_len", "body_len", "residual_len"};
    for (int64_t f = 0; f < 3; ++f) {
      auto segment = static_cast<RowSegment>(f);
      Value most = zero;
      for (int64_t r = 0; r < rows; ++r) {
        Value row = kb.min(kb.add(firstRow, kb.i32(r)), lastRow);
        Value on =
            kb.named("row_active", kb.eq(kb.bitAnd(activeRows, kb.i32(1 << r)),
                                         kb.i32(1 << r)));
        most = kb.max(
            most, kb.select(on, loadRowLength(kb, s, a, row, segment), zero));
      }
      *longest[f] = kb.named(names[f], most);
      columnLengths[f].clear();
      for (int64_t h = 0; h < headTiles; ++h)
        for (int64_t c = 0; c < 2; ++c) {
          Value column =
              kb.add(kb.mul(t, kb.i32(2)), kb.i32(h * kHeadsPerTile + c));
          Value row =
              kb.min(kb.add(firstRow, kb.div(column, kb.i32(s.gqa))), lastRow);
          columnLengths[f].push_back(
              kb.named(std::string(names[f]) + "_of_column",
                       kb.select(columnActive(column),
                                 loadRowLength(kb, s, a, row, segment), zero)));
        }
    }
    setBodyEnd(kb, a, range);
  }

  /// The split's tokens for every column: body, sink, residual, then the
  /// warps' merge into the partial results.
  void attend() {
    SmallVector<Value> state;
    for (int64_t h = 0; h < headTiles; ++h) {
      state.append({kb.negInf(), kb.negInf(), kb.f32(0.0), kb.f32(0.0)});
      state.append(SmallVector<Value>(4 * kSteps, kb.f32(0.0)));
    }
    Operand keys{s.keyScheme, a.keyWords, a.keyScales, a.keyZeros};
    Operand values{s.valueScheme, a.valueWords, a.valueScales, a.valueZeros};
    kb.comment("the body tokens of this split (none in the last split)");
    Value bodyEnd = kb.named("body_steps_end",
                             kb.select(range.isFp16Split, range.bodyBegin,
                                       kb.max(range.bodyBegin, range.bodyEnd)));
    state = runSteps(range.bodyBegin, bodyEnd, keys, values, /*body=*/true,
                     a.bodyCapacity, columnLengths[1], state);
    if (hasSink) {
      kb.comment("the fp16 sink tokens (last split)");
      state = runSteps(zero, kb.select(range.isFp16Split, range.sinkLen, zero),
                       {SchemeAttr(), a.sinkKeys, {}, {}},
                       {SchemeAttr(), a.sinkValues, {}, {}}, /*body=*/false,
                       a.sinkCapacity, columnLengths[0], state);
    }
    if (hasResidual) {
      kb.comment("the fp16 residual tokens (last split)");
      state =
          runSteps(zero, kb.select(range.isFp16Split, range.residualLen, zero),
                   {SchemeAttr(), a.residualKeys, {}, {}},
                   {SchemeAttr(), a.residualValues, {}, {}}, /*body=*/false,
                   a.residualCapacity, columnLengths[2], state);
    }
    mergeWarps(state);
  }

private:
  //===--- state layout: per head tile max[2], sum[2], out[kSteps][4] ----===//
  int64_t stateSize() const { return 4 + 4 * kSteps; }
  int64_t maxAt(int64_t h, int64_t c) const { return h * stateSize() + c; }
  int64_t sumAt(int64_t h, int64_t c) const { return h * stateSize() + 2 + c; }
  int64_t outAt(int64_t h, int64_t m, int64_t r) const {
    return h * stateSize() + 4 + 4 * m + r;
  }

  /// How keys enter the score MMAs.
  enum class KeyForm {
    /// fp16/bf16 values, dequantized ones with their rounding error.
    Values,
    /// Token-axis codes, exact; each token's group scales applied to the
    /// partial scores after the group's MMAs, zero points through q's sums.
    TokenCodes,
    /// Channel-axis codes, exact; each channel's scale (one for a step's 16
    /// tokens) folded into q before the MMAs, the codes' offset and the
    /// zero points through MMAs of the scales and zero points against q
    /// (channelCodeScores).
    ChannelCodes,
  };

  KeyForm keyForm(const Operand &op) const {
    if (!op.scheme || !s.half.isF16() ||
        !cast<MemRefType>(op.scales.getType()).getElementType().isF16())
      return KeyForm::Values;
    int64_t group = op.scheme.groupSize(s.headDim);
    if (op.scheme.getAxis() == Axis::token)
      return group % 16 == 0 ? KeyForm::TokenCodes : KeyForm::Values;
    // A step's tokens must share their scales: whole steps per group.
    return group % kStepTokens == 0 ? KeyForm::ChannelCodes : KeyForm::Values;
  }

  /// The first of this lane's 4 channels in k-step 0 of the scores; k-step
  /// s adds 16s (token-axis codes: each k-step within one scale group) or
  /// 4s (otherwise: each lane's channels one contiguous quarter of the
  /// head, read as whole runs of packed words).
  Value keyChannel() {
    return bodyKeyForm == KeyForm::TokenCodes ? kb.mul(t, kb.i32(4))
                                              : kb.mul(t, kb.i32(keyRun));
  }

  /// Channel-axis codes: where this lane's tokens (group, group + 8 of a
  /// step) lie in their words, once per kernel. A step starts on a whole
  /// word row (16 tokens, a word at most), so a token's place in its word
  /// is fixed per lane: its code lies in one byte (codes of 2, 4 and 8 bits
  /// never cross one), at bit `s` of it. A PRMT with a per-lane selector
  /// puts that byte of two channels' words at the bottom of the two halves,
  /// and a LOP3 keeps the code: an fp16 subnormal, code x 2^(s - 24),
  /// exact, whose MMAs need no offset taken off afterwards.
  void placeChannelCodes(SchemeAttr scheme) {
    kb.comment("where this lane's key tokens lie in their channel words: "
               "the byte (PRMT selector: that byte of each word at the "
               "bottom of a half), the code's bits in it, and 2^(24 - bit "
               "in the byte), which turns the subnormal back into the code");
    int64_t perWord = scheme.codesPerWord(), bits = scheme.getBits();
    for (int64_t i : {0, 1}) {
      Value code = kb.rem(kb.add(g, kb.i32(8 * i)), kb.i32(perWord));
      if (scheme.getOrder() == PackOrder::interleaved) // see slotShift
        code = kb.add(kb.div(code, kb.i32(2)),
                      kb.mul(kb.rem(code, kb.i32(2)), kb.i32(perWord / 2)));
      Value bit = kb.mul(code, kb.i32(bits));
      // Result bytes 0, 1 from byte `bit / 8` of the first word, 2, 3 from
      // the same byte of the second (selector values 4..7).
      keyByteSelector[i] =
          kb.named(i ? "key_byte_selector_b" : "key_byte_selector",
                   kb.add(kb.mul(kb.div(bit, kb.i32(8)), kb.i32(0x1111)),
                          kb.i32(0x4400)));
      if (i == 1)
        continue;
      // Token group + 8 lies a whole number of bytes further (8 or 16 bits
      // in a word of 16 codes, the same place in its own word otherwise):
      // the same bits of its byte.
      Value inByte = kb.rem(bit, kb.i32(8));
      keyCodeMask = kb.named(
          "key_code_mask",
          kb.shl(kb.i32(scheme.maxCode() | scheme.maxCode() << 16), inByte));
      // 2^(24 - s) as fp32 bits: exponent 127 + 24 - s.
      keyCodeUnit = kb.named(
          "key_code_unit",
          kb.bitcastToF32(kb.shl(kb.sub(kb.i32(151), inByte), kb.i32(23))));
    }
  }

  /// Q^T as B fragments, once: lane (g, t) holds column 8h + g at the 4
  /// channels of each k-step (keyChannel()); columns past the block's are
  /// zero.
  /// With keys as codes (keysAsCodes), also each head's sum of q over each
  /// scale group, for the zero points: an MMA of the fragments with an A of
  /// ones.
  void loadQueryFragments(const Operand &keys) {
    kb.comment("the GQA group's queries as B fragments of the score MMAs "
               "(head 8h + group, 4 channels a k-step from query_channel)");
    Value firstChannel = kb.named("query_channel", keyChannel());
    for (int64_t h = 0; h < headTiles; ++h) {
      Value column = kb.add(g, kb.i32(h * kHeadsPerTile));
      Value inGroup = kb.named("head_in_group", kb.lt(column, kb.i32(columns)));
      Value base = kb.add(kb.mul(queryRowOf(column), d), firstChannel);
      bool perStep = bodyKeyForm == KeyForm::TokenCodes;
      SmallVector<Value> run =
          perStep ? SmallVector<Value>() : loadHalfRun(a.q, base, keyRun);
      for (int64_t k = 0; k < kSteps; ++k) {
        SmallVector<Value> q =
            perStep ? loadHalfRun(a.q, kb.add(base, kb.i32(16 * k)), 4)
                    : SmallVector<Value>(ArrayRef<Value>(run).slice(4 * k, 4));
        for (int64_t j : {0, 2})
          queryFragments.push_back(kb.named(
              "q_frag",
              kb.select(inGroup, kb.packPair(q[j], q[j + 1], s.half), zero)));
      }
    }
    if (bodyKeyForm != KeyForm::TokenCodes || !keys.zeros)
      return;
    kb.comment("each head's sum of q over each key scale group");
    int64_t stepsPerGroup = keys.scheme.groupSize(s.headDim) / 16;
    Value ones = kb.i32(0x3C003C00); // fp16 1.0, twice
    for (int64_t h = 0; h < headTiles; ++h)
      for (int64_t k0 = 0; k0 < kSteps; k0 += stepsPerGroup) {
        SmallVector<Value> acc(4, kb.f32(0.0));
        for (int64_t k = k0; k < k0 + stepsPerGroup; ++k)
          acc = kb.mma({ones, ones, ones, ones},
                       {queryFragments[(h * kSteps + k) * 2],
                        queryFragments[(h * kSteps + k) * 2 + 1]},
                       acc, s.half);
        querySums.push_back(kb.named("q_sum", acc[0]));
        querySums.push_back(kb.named("q_sum_b", acc[1]));
      }
  }

  /// `count` fp16/bf16 values from `index` as fp32, up to 8 per load.
  SmallVector<Value> loadHalfRun(Value buffer, Value index, int64_t count) {
    int64_t width = count % 8 == 0 ? 8 : count % 4 == 0 ? 4 : 1;
    SmallVector<Value> values;
    for (int64_t k = 0; k < count; k += width)
      for (Value half : kb.loadVector(buffer, kb.add(index, kb.i32(k)), width))
        values.push_back(kb.toF32(half));
    return values;
  }

  /// Scale and zero of `count` consecutive groups from `index`: fp16 ones
  /// up to 8 per load.
  SmallVector<std::pair<Value, Value>>
  loadScaleRun(Value scales, Value zeros, Value index, int64_t count) {
    bool halves = cast<MemRefType>(scales.getType()).getElementType().isF16();
    int64_t width = !halves ? 1 : count % 8 == 0 ? 8 : count % 4 == 0 ? 4 : 1;
    auto run = [&](Value buffer) {
      SmallVector<Value> values;
      for (int64_t k = 0; k < count; k += width)
        for (Value v : kb.loadVector(buffer, kb.add(index, kb.i32(k)), width))
          values.push_back(kb.toF32(v));
      return values;
    };
    SmallVector<Value> scale = run(scales);
    SmallVector<Value> zero = zeros ? run(zeros) : SmallVector<Value>();
    SmallVector<std::pair<Value, Value>> out;
    for (int64_t k = 0; k < count; ++k)
      out.push_back({kb.named("scale", scale[k]),
                     zeros ? kb.named("zero", zero[k]) : Value()});
    return out;
  }

  /// A lane's run of channels [c0, c0 + count) of token-axis codes, as
  /// loaded from each of some stored rows: its packed words (whole words,
  /// or the one word the run lies in, from `codeOffset`) and the scale and
  /// zero point of each group it covers (whole groups, or a part of one).
  struct TokenRun {
    int64_t perWord, group, count;
    bool wholeWords;
    Value codeOffset;                      ///< !wholeWords only
    SmallVector<SmallVector<Value>> words; ///< [row][word]
    SmallVector<SmallVector<std::pair<Value, Value>>>
        scaleZero; ///< [row][group]: fp32, or f16 as loaded (`halves`)
    /// Index into a row's scaleZero of local channel c.
    int64_t groupOf(int64_t c) const {
      return count % group == 0 ? c / group : 0;
    }
  };

  /// `halves`: scales and zero points as loaded (f16 values), not fp32.
  TokenRun loadTokenRun(const Operand &op, ArrayRef<Value> rows, Value c0,
                        int64_t count, bool halves = false) {
    SchemeAttr scheme = op.scheme;
    TokenRun run;
    run.perWord = scheme.codesPerWord();
    run.group = scheme.groupSize(s.headDim);
    run.count = count;
    run.wholeWords = count % run.perWord == 0;
    int64_t wordsPerRow = s.headDim / run.perWord;
    int64_t groupsPerRow = s.headDim / run.group;
    int64_t runWords = run.wholeWords ? count / run.perWord : 1;
    int64_t width = runWords % 4 == 0 ? 4 : runWords % 2 == 0 ? 2 : 1;
    int64_t runGroups = count % run.group == 0 ? count / run.group : 1;
    Value firstWord = kb.named("first_word", kb.div(c0, kb.i32(run.perWord)));
    if (!run.wholeWords)
      run.codeOffset = kb.named("code_offset", kb.rem(c0, kb.i32(run.perWord)));
    Value firstGroup = kb.named("first_group", kb.div(c0, kb.i32(run.group)));
    for (Value row : rows) {
      SmallVector<Value> words;
      Value w0 = kb.add(kb.mul(row, kb.i32(wordsPerRow)), firstWord);
      for (int64_t k = 0; k < runWords; k += width)
        words.append(kb.loadVector(op.data, kb.add(w0, kb.i32(k)), width));
      run.words.push_back(std::move(words));
      SmallVector<std::pair<Value, Value>> groups;
      for (int64_t k = 0; k < runGroups; ++k) {
        Value index = kb.add(kb.mul(row, kb.i32(groupsPerRow)),
                             kb.add(firstGroup, kb.i32(k)));
        groups.push_back(
            !halves ? kb.loadScaleAndZero(op.scales, op.zeros, index)
                    : std::pair{kb.named("scale", kb.load(op.scales, index)),
                                op.zeros
                                    ? kb.named("zero", kb.load(op.zeros, index))
                                    : Value()});
      }
      run.scaleZero.push_back(std::move(groups));
    }
    return run;
  }

  /// Code at local channel c of row i of a token run.
  Value codeOf(SchemeAttr scheme, const TokenRun &run, size_t i, int64_t c) {
    return run.wholeWords
               ? kb.extractCode(scheme, run.words[i][c / run.perWord],
                                unsigned(c % run.perWord))
               : kb.extractCode(scheme, run.words[i][0],
                                kb.add(run.codeOffset, kb.i32(c)));
  }

  /// Values of channels [c0, c0 + count) of stored rows `rows` of a
  /// token-axis quantized tensor (each row one token's packed channels).
  /// The run is whole words, or lies inside one word (plan eligibility).
  SmallVector<SmallVector<Value>> tokenAxisRuns(const Operand &op,
                                                ArrayRef<Value> rows, Value c0,
                                                int64_t count) {
    TokenRun run = loadTokenRun(op, rows, c0, count);
    SmallVector<SmallVector<Value>> out;
    for (size_t i = 0; i < rows.size(); ++i) {
      SmallVector<Value> values;
      for (int64_t c = 0; c < count; ++c) {
        auto [scale, zeroPoint] = run.scaleZero[i][run.groupOf(c)];
        values.push_back(kb.dequantizeCode(
            op.scheme, codeOf(op.scheme, run, i, c), scale, zeroPoint));
      }
      out.push_back(std::move(values));
    }
    return out;
  }

  /// bf16 fragments keep 8 mantissa bits: probabilities and dequantized
  /// values then enter P.V as two fragments each (value + rounding error),
  /// which keeps the output within the fp16 tolerance.
  bool splitProducts() const { return s.half.isBF16(); }

  /// True when a token-axis quantized V becomes A fragments in fp16
  /// arithmetic (tokenAxisValueFragments): fp16 activations and scales.
  bool valuesInHalf2(const Operand &op) const {
    return op.scheme && op.scheme.getAxis() == Axis::token && s.half.isF16() &&
           cast<MemRefType>(op.scales.getType()).getElementType().isF16();
  }

  /// V^T's A fragments straight from the packed words of token-axis codes,
  /// two codes at a time, as a fragment register holds them: two tokens'
  /// codes of one channel under fp16's 1024 exponent, then HSUB2 + HFMA2
  /// dequantize the pair. Interleaved whole words: a PRMT pairs the two
  /// tokens' words first, then a shift and a LOP3 a register; otherwise a
  /// shift and a LOP3 (or two extractions) put a token's codes for channels
  /// c and c + 1 together first, then a PRMT pairs the tokens. `rows` are
  /// the stored rows of tokens 2t, 2t+1, 2t+8, 2t+9, the lane's channels
  /// [c0, c0 + count).
  SmallVector<Value> tokenAxisValueFragments(const Operand &op,
                                             ArrayRef<Value> rows, Value c0,
                                             int64_t count) {
    SchemeAttr scheme = op.scheme;
    int64_t bits = scheme.getBits();
    bool interleaved = scheme.getOrder() == PackOrder::interleaved;
    TokenRun run = loadTokenRun(op, rows, c0, count, /*halves=*/true);
    int64_t perWord = run.perWord;
    int64_t runGroups = run.scaleZero[0].size();
    const auto &scaleZero = run.scaleZero;
    // Scales and zero points of tokens (2t, 2t+1) and (2t+8, 2t+9) as fp16
    // pairs, a pair per group.
    auto pairOf = [&](int64_t first, int64_t k, bool zero) -> Value {
      auto pick = [&](int64_t i) {
        return zero ? scaleZero[i][k].second : scaleZero[i][k].first;
      };
      if (zero && !op.zeros)
        return Value();
      return kb.halfPair(pick(first), pick(first + 1)); // one PRMT
    };
    SmallVector<Value> scalePairs, zeroPairs; // [token pair][group]
    for (int64_t first : {0, 2})
      for (int64_t k = 0; k < runGroups; ++k) {
        scalePairs.push_back(kb.named("scale_pair", pairOf(first, k, false)));
        zeroPairs.push_back(pairOf(first, k, true));
      }
    int64_t mask = scheme.maxCode() | scheme.maxCode() << 16;
    Value magic = kb.i32(0x64006400); // fp16 1024, twice
    // Token i's codes for local channels c and c + 1 (c even), each
    // 1024 + code in fp16.
    auto codePair = [&](int64_t i, int64_t c) -> Value {
      if (interleaved) {
        // Code 2j in slot j, code 2j + 1 sixteen bits higher.
        Value word = run.words[i][run.wholeWords ? c / perWord : 0];
        Value shift =
            run.wholeWords
                ? kb.i32(c % perWord / 2 * bits)
                : kb.mul(kb.div(kb.add(run.codeOffset, kb.i32(c)), kb.i32(2)),
                         kb.i32(bits));
        return kb.bitOr(kb.bitAnd(kb.shru(word, shift), kb.i32(mask)), magic);
      }
      return kb.bitOr(
          kb.bitOr(codeOf(scheme, run, i, c),
                   kb.shl(codeOf(scheme, run, i, c + 1), kb.i32(16))),
          magic);
    };
    int64_t centre = scheme.isSymmetric() ? 1 << (bits - 1) : 0;
    SmallVector<Value> fragments;
    if (interleaved && run.wholeWords) {
      // Pair the two tokens' words first: a PRMT of their low halves holds
      // both tokens' even channels side by side (slot j: channel 2j), of
      // their high halves the odd ones; each fragment register is then one
      // shift and one LOP3 away, against a shift, a LOP3 and a PRMT when
      // each token's pair of channels is unpacked first.
      // paired[token pair][word][odd]
      SmallVector<SmallVector<std::array<Value, 2>>> paired(2);
      for (int64_t pair : {0, 1})
        for (size_t w = 0; w < run.words[0].size(); ++w) {
          std::array<Value, 2> halves;
          for (bool odd : {false, true})
            halves[odd] =
                kb.named(odd ? "odd_channels" : "even_channels",
                         kb.selectHalves(run.words[2 * pair][w],
                                         run.words[2 * pair + 1][w], odd));
          paired[pair].push_back(halves);
        }
      for (int64_t m = 0; m < kSteps; ++m)
        for (int64_t pair : {0, 1})
          for (int64_t c : {2 * m, 2 * m + 1}) {
            int64_t k = run.groupOf(c);
            Value both = paired[pair][c / perWord][c % 2];
            int64_t shift = c % perWord / 2 * bits;
            if (shift)
              both = kb.shru(both, kb.i32(shift));
            Value held = kb.bitOr(kb.bitAnd(both, kb.i32(mask)), magic);
            fragments.push_back(kb.dequantizePair(
                kb.named("codes", held), scalePairs[pair * runGroups + k],
                zeroPairs[pair * runGroups + k], centre));
          }
      return fragments;
    }
    for (int64_t m = 0; m < kSteps; ++m) {
      int64_t c = 2 * m;
      int64_t k = run.groupOf(c);
      Value x[4];
      for (int64_t i = 0; i < 4; ++i)
        x[i] = kb.named("codes", codePair(i, c));
      for (int64_t pair : {0, 1})
        for (bool high : {false, true})
          fragments.push_back(kb.dequantizePair(
              kb.selectHalves(x[2 * pair], x[2 * pair + 1], high),
              scalePairs[pair * runGroups + k], zeroPairs[pair * runGroups + k],
              centre));
    }
    return fragments;
  }

  /// Values of channels [c0, c0 + count) of step tokens `tokens` (clamped,
  /// from the step's first stored token `at.first`) of a channel-axis
  /// quantized tensor (each word a run of tokens of one channel). Tokens
  /// with the same `wordOf` entry share their words and scales (the caller
  /// knows statically which do).
  SmallVector<SmallVector<Value>>
  channelAxisRuns(const Operand &op, const StoredRows &at,
                  ArrayRef<Value> tokens, ArrayRef<int64_t> wordOf, Value c0,
                  int64_t count, bool oneScaleRow) {
    SchemeAttr scheme = op.scheme;
    int64_t perWord = scheme.codesPerWord();
    SmallVector<SmallVector<Value>> words;
    SmallVector<SmallVector<std::pair<Value, Value>>> scales;
    for (auto [i, token] : llvm::enumerate(tokens)) {
      if (wordOf[i] != int64_t(i))
        continue; // shares the words of token wordOf[i]
      KernelBuilder::ChannelWordRow row =
          kb.channelWordRow(scheme, s.headDim, at.row, at.capacity, at.first,
                            kb.div(token, kb.i32(perWord)));
      SmallVector<Value> loaded;
      Value base = kb.add(kb.mul(row.storedWordRow, d), c0);
      for (int64_t k = 0; k < count; k += 4)
        loaded.append(kb.loadVector(op.data, kb.add(base, kb.i32(k)), 4));
      words.push_back(std::move(loaded));
      if (!oneScaleRow || scales.empty())
        scales.push_back(loadScaleRun(
            op.scales, op.zeros, kb.add(kb.mul(row.scaleRow, d), c0), count));
    }
    // Index of each token's words among those loaded.
    SmallVector<int64_t> slot(tokens.size());
    for (size_t i = 0, next = 0; i < tokens.size(); ++i)
      slot[i] = wordOf[i] == int64_t(i) ? int64_t(next++) : slot[wordOf[i]];
    SmallVector<SmallVector<Value>> out;
    for (auto [i, token] : llvm::enumerate(tokens)) {
      Value codeIndex = kb.named("code_index", kb.rem(token, kb.i32(perWord)));
      const auto &rowScales = scales[oneScaleRow ? 0 : slot[i]];
      SmallVector<Value> values;
      for (int64_t c = 0; c < count; ++c)
        values.push_back(kb.dequantizeCode(
            scheme, kb.extractCode(scheme, words[slot[i]][c], codeIndex),
            rowScales[c].first, rowScales[c].second));
      out.push_back(std::move(values));
    }
    return out;
  }

  /// The values a lane needs of `op` for step tokens `tokens` (clamped) of
  /// the rows `at` and channels [c0, c0 + count): fp16 values, or
  /// dequantized codes.
  SmallVector<SmallVector<Value>>
  loadRuns(const Operand &op, const StoredRows &at, ArrayRef<Value> tokens,
           ArrayRef<int64_t> wordOf, Value c0, int64_t count) {
    if (!op.scheme) { // fp16: sink, residual or a dense body
      SmallVector<SmallVector<Value>> out;
      for (Value token : tokens) {
        Value row =
            kb.add(kb.mul(at.row, at.capacity), kb.add(at.first, token));
        out.push_back(loadHalfRun(op.data, kb.add(kb.mul(row, d), c0), count));
      }
      return out;
    }
    if (op.scheme.getAxis() == Axis::token) {
      SmallVector<Value> rows;
      for (Value token : tokens)
        rows.push_back(kb.named("row", kb.add(kb.mul(at.row, at.capacity),
                                              kb.add(at.first, token))));
      return tokenAxisRuns(op, rows, c0, count);
    }
    // A step starts on a multiple of 16 tokens: with channel groups a
    // multiple of 16, all its tokens share one row of scales.
    bool oneScaleRow = op.scheme.groupSize(s.headDim) % kStepTokens == 0;
    return channelAxisRuns(op, at, tokens, wordOf, c0, count, oneScaleRow);
  }

  /// The keys of a step as A fragments, per k-step a[0..3]: (row g,
  /// channels c, c+1), (row g+8, c, c+1), (row g, c+2, c+3), (row g+8,
  /// c+2, c+3) with c = 16s + 4t. Either fp16 values with what rounding them
  /// left over (`errors`: a second MMA keeps the scores fp32-accurate, as
  /// keys are large where it matters, in outlier channels, and a score error
  /// moves the softmax exponentially), or exact integer codes with each
  /// token's scale (and zero point) per scale group.
  struct KeyFragments {
    SmallVector<Value> values, errors;
    SmallVector<Value> scales, zeros; ///< codes: [group][token g, g + 8]
    int64_t stepsPerGroup = 0;        ///< codes: k-steps a scale group spans
  };

  KeyFragments keyValueFragments(const Operand &keys, const StoredRows &at,
                                 ArrayRef<Value> tokens, Value channel,
                                 int64_t perWord) {
    // Tokens g and g + 8 lie in one word row when a word holds 16 tokens.
    SmallVector<int64_t> wordOf = {0, perWord >= 16 ? 0 : 1};
    KeyFragments f;
    // One run of the lane's quarter, or (the body's keys are token-axis
    // codes: these are sink or residual keys) 4 channels a k-step.
    bool perStepChannels = bodyKeyForm == KeyForm::TokenCodes;
    SmallVector<SmallVector<Value>> run =
        perStepChannels ? SmallVector<SmallVector<Value>>()
                        : loadRuns(keys, at, tokens, wordOf, channel, keyRun);
    for (int64_t m = 0; m < kSteps; ++m) {
      SmallVector<SmallVector<Value>> k;
      if (perStepChannels)
        k = loadRuns(keys, at, tokens, wordOf, kb.add(channel, kb.i32(16 * m)),
                     4);
      else
        for (const SmallVector<Value> &token : run)
          k.push_back(
              SmallVector<Value>(ArrayRef<Value>(token).slice(4 * m, 4)));
      for (int64_t j : {0, 2})
        for (int64_t r : {0, 1}) {
          Value pair = kb.packPair(k[r][j], k[r][j + 1], s.half);
          f.values.push_back(pair);
          if (keys.scheme) // fp16 keys are exact in their fragments
            f.errors.push_back(
                kb.packPairError(k[r][j], k[r][j + 1], pair, s.half));
        }
    }
    return f;
  }

  /// Token-axis keys as codes: a k-step's 4 channels of a token are one
  /// word's codes (a shift, a LOP3 under fp16's 1024 exponent and a HSUB2 a
  /// pair make them exact fp16 integers); the scales of each token's groups
  /// are applied to the scores after the group's MMAs (scores()).
  KeyFragments keyCodeFragments(const Operand &keys, const StoredRows &at,
                                ArrayRef<Value> tokens, Value channel) {
    SchemeAttr scheme = keys.scheme;
    int64_t perWord = scheme.codesPerWord(), bits = scheme.getBits();
    int64_t group = scheme.groupSize(s.headDim);
    int64_t wordsPerRow = s.headDim / perWord;
    int64_t groupsPerRow = s.headDim / group;
    bool interleaved = scheme.getOrder() == PackOrder::interleaved;
    int64_t centre = scheme.isSymmetric() ? 1 << (bits - 1) : 0;
    // 16s is a whole number of words: a lane's codes sit at the same place
    // in every k-step's word.
    Value codeOffset =
        kb.named("code_offset", kb.rem(channel, kb.i32(perWord)));
    Value firstWord = kb.named("first_word", kb.div(channel, kb.i32(perWord)));
    Value magic = kb.i32(0x64006400);
    int64_t mask = scheme.maxCode() | scheme.maxCode() << 16;
    KeyFragments f;
    f.stepsPerGroup = group / 16;
    SmallVector<Value> rows, firstWords;
    for (Value token : tokens) {
      Value row = kb.named(
          "row", kb.add(kb.mul(at.row, at.capacity), kb.add(at.first, token)));
      rows.push_back(row);
      firstWords.push_back(kb.named(
          "word", kb.add(kb.mul(row, kb.i32(wordsPerRow)), firstWord)));
    }
    for (int64_t m = 0; m < kSteps; ++m) {
      SmallVector<Value> words;
      for (Value first : firstWords)
        words.push_back(kb.named(
            "key_word",
            kb.load(keys.data, kb.add(first, kb.i32(16 * m / perWord)))));
      for (int64_t j : {0, 2})
        for (int64_t r : {0, 1}) {
          Value at = kb.add(codeOffset, kb.i32(j)); // even
          Value held;
          if (interleaved) {
            Value shift =
                kb.mul(kb.div(at, kb.i32(2)), kb.i32(bits)); // slot j/2
            held = kb.bitOr(kb.bitAnd(kb.shru(words[r], shift), kb.i32(mask)),
                            magic);
          } else {
            Value low = kb.extractCode(scheme, words[r], at);
            Value high =
                kb.extractCode(scheme, words[r], kb.add(at, kb.i32(1)));
            held = kb.bitOr(kb.bitOr(low, kb.shl(high, kb.i32(16))), magic);
          }
          f.values.push_back(kb.named(
              "key_codes", kb.dequantizePair(held, Value(), Value(), centre)));
        }
    }
    for (int64_t group = 0; group < groupsPerRow; ++group)
      for (Value row : rows) {
        auto [scale, zeroPoint] = kb.loadScaleAndZero(
            keys.scales, keys.zeros,
            kb.add(kb.mul(row, kb.i32(groupsPerRow)), kb.i32(group)));
        f.scales.push_back(scale);
        f.zeros.push_back(zeroPoint);
      }
    return f;
  }

  /// Every head tile's raw scores from channel-axis keys as codes, k-step
  /// by k-step (so that few registers hold codes, scales or products at a
  /// time). The A fragments are the codes of tokens g and g + 8 (their word
  /// rows, clamped) at the lane's channels (its contiguous quarter, as the
  /// queries'): a PRMT puts the byte of two channels' words that holds a
  /// token's code at the bottom of two halves, and a LOP3 keeps the code's
  /// bits: x = code 2^(s - 24), an fp16 subnormal (s the code's first bit
  /// in its byte), exactly. As a step's tokens share one row of scales,
  /// each channel's scale is folded into q:
  ///   score = sum_c q_c (s_c (code_c - centre) + z_c)
  ///         = 2^(24 - s) sum_c (q_c s_c) x_c - centre sum_c q_c s_c
  ///           + sum_c q_c z_c,
  /// the first an MMA of the codes against q s as an fp16 pair (HMUL2) and
  /// another against what its rounding left (HFMA2), exact together; the
  /// other two (the second only for symmetric codes) MMAs whose A operand
  /// is two k-steps' scales (zero points) as loaded, against q (exact fp16
  /// operands). The codes carry no offset, so no sum cancels: a product
  /// (q s) x is exact in fp32 and far above its smallest normal.
  SmallVector<SmallVector<Value>> channelCodeScores(const Operand &keys,
                                                    const StoredRows &at,
                                                    ArrayRef<Value> tokens,
                                                    Value channel) {
    SchemeAttr scheme = keys.scheme;
    int64_t perWord = scheme.codesPerWord(), bits = scheme.getBits();
    int64_t centre = scheme.isSymmetric() ? 1 << (bits - 1) : 0;
    // Tokens g and g + 8 share a word row when a word holds 16 tokens.
    size_t rows = perWord >= 16 ? 1 : 2;
    SmallVector<Value> wordBase; // [word row]: the lane's first word
    Value scaleBase;
    for (size_t i = 0; i < rows; ++i) {
      KernelBuilder::ChannelWordRow row =
          kb.channelWordRow(scheme, s.headDim, at.row, at.capacity, at.first,
                            kb.div(tokens[i], kb.i32(perWord)));
      wordBase.push_back(
          kb.named("key_word", kb.add(kb.mul(row.storedWordRow, d), channel)));
      if (i == 0) // the step's tokens share their row of scales
        scaleBase =
            kb.named("key_scale", kb.add(kb.mul(row.scaleRow, d), channel));
    }
    // Scales (zero points) of the lane's channels as fp16 pairs, 8 a load:
    // two k-steps (head_dim is a multiple of 32 on the tensor cores).
    auto loadPairs = [&](Value buffer, int64_t m, StringRef name) {
      SmallVector<Value> halves =
          kb.loadVector(buffer, kb.add(scaleBase, kb.i32(4 * m)), 8);
      SmallVector<Value> pairs;
      for (size_t k = 0; k < halves.size(); k += 2)
        pairs.push_back(kb.named(name, kb.halfPair(halves[k], halves[k + 1])));
      return pairs;
    };
    auto zeroAcc = [&] { return SmallVector<Value>(4, kb.f32(0.0)); };
    SmallVector<SmallVector<Value>> acc(headTiles, zeroAcc());
    // sum q s and sum q z, two k-steps an MMA: [head tile][rows g, g + 8].
    SmallVector<SmallVector<SmallVector<Value>, 2>> scaleRows(
        headTiles, {zeroAcc(), zeroAcc()});
    auto zeroRows = scaleRows;
    SmallVector<Value> scales, zeros;
    for (int64_t m = 0; m < kSteps; ++m) {
      if (m % 2 == 0) {
        scales = loadPairs(keys.scales, m, "scale_pair");
        if (keys.zeros)
          zeros = loadPairs(keys.zeros, m, "zero_pair");
      }
      int64_t pair = 2 * (m % 2);
      // The k-step's 4 channels of each word row: one 128-bit load each.
      SmallVector<SmallVector<Value>> words;
      for (Value base : wordBase)
        words.push_back(
            kb.loadVector(keys.data, kb.add(base, kb.i32(4 * m)), 4));
      SmallVector<Value> codes;
      for (int64_t j : {0, 2})
        for (size_t r : {0, 1}) {
          const SmallVector<Value> &row = words[rows == 1 ? 0 : r];
          Value bytes = kb.permuteBytes(row[j], row[j + 1], keyByteSelector[r]);
          codes.push_back(kb.named("key_codes", kb.bitAnd(bytes, keyCodeMask)));
        }
      for (int64_t h = 0; h < headTiles; ++h) {
        ArrayRef<Value> q =
            ArrayRef<Value>(queryFragments).slice((h * kSteps + m) * 2, 2);
        ArrayRef<Value> x = ArrayRef<Value>(scales).slice(pair, 2);
        SmallVector<Value> product = {kb.multiplyPair(q[0], x[0]),
                                      kb.multiplyPair(q[1], x[1])};
        acc[h] = kb.mma(codes, product, acc[h], s.half);
        acc[h] = kb.mma(codes,
                        {kb.multiplyPair(q[0], x[0], product[0]),
                         kb.multiplyPair(q[1], x[1], product[1])},
                        acc[h], s.half);
        if (m % 2 == 0)
          continue;
        // Two k-steps' scales as loaded, s01 s23 s45 s67 (channels 8p.. of
        // the lane's), are an A operand as they are: its rows g take s01
        // and s45, rows g + 8 s23 and s67. Against q01 q45 rows g sum four
        // channels' q s, against q23 q67 rows g + 8 the other four; each in
        // its own accumulator, added to every row at the end. Zero points
        // alike.
        ArrayRef<Value> previous =
            ArrayRef<Value>(queryFragments).slice((h * kSteps + m - 1) * 2, 2);
        for (int64_t half : {0, 1}) {
          SmallVector<Value> b = {previous[half], q[half]};
          if (centre)
            scaleRows[h][half] = kb.mma(scales, b, scaleRows[h][half], s.half);
          if (keys.zeros)
            zeroRows[h][half] = kb.mma(zeros, b, zeroRows[h][half], s.half);
        }
      }
    }
    kb.comment(
        llvm::formatv("raw scores: 2^(24 - s) x sum(q s x), x the "
                      "codes as subnormals{0}{1}",
                      centre ? llvm::formatv(", - {0} x sum(q s)", centre).str()
                             : "",
                      keys.zeros ? ", + sum(q z)" : "")
            .str());
    Value offset = kb.f32(-double(centre));
    for (int64_t h = 0; h < headTiles; ++h)
      for (int64_t r = 0; r < 4; ++r) { // rows g: r 0, 1; rows g + 8: 2, 3
        auto sum = [&](const SmallVector<SmallVector<Value>, 2> &rowsOf,
                       StringRef name) {
          return kb.named(name,
                          kb.fadd(rowsOf[0][r % 2], rowsOf[1][2 + r % 2]));
        };
        Value score = kb.fmul(acc[h][r], keyCodeUnit);
        if (centre)
          score =
              kb.fadd(score, kb.fmul(sum(scaleRows[h], "q_scale_sum"), offset));
        if (keys.zeros)
          score = kb.fadd(score, sum(zeroRows[h], "q_zero_sum"));
        acc[h][r] = score;
      }
    return acc;
  }

  /// Head tile h's raw scores (before the softmax scale): accumulators of
  /// tokens g, g+8 x heads 2t, 2t+1.
  SmallVector<Value> scores(const KeyFragments &keys, int64_t h) {
    auto query = [&](int64_t m) -> SmallVector<Value> {
      return {queryFragments[(h * kSteps + m) * 2],
              queryFragments[(h * kSteps + m) * 2 + 1]};
    };
    SmallVector<Value> acc(4, kb.f32(0.0));
    if (!keys.stepsPerGroup) {
      for (int64_t m = 0; m < kSteps; ++m)
        for (const SmallVector<Value> *a : {&keys.values, &keys.errors})
          if (!a->empty())
            acc = kb.mma(ArrayRef<Value>(*a).slice(4 * m, 4), query(m), acc,
                         s.half);
      return acc;
    }
    // Codes: per scale group, q.codes by MMA, then times each token's
    // scale, plus its zero point times the group's sum of q.
    int64_t groups = kSteps / keys.stepsPerGroup;
    for (int64_t group = 0; group < groups; ++group) {
      SmallVector<Value> partial(4, kb.f32(0.0));
      for (int64_t m = group * keys.stepsPerGroup;
           m < (group + 1) * keys.stepsPerGroup; ++m)
        partial = kb.mma(ArrayRef<Value>(keys.values).slice(4 * m, 4), query(m),
                         partial, s.half);
      for (int64_t r = 0; r < 4; ++r) {
        int64_t token = r / 2, column = r % 2;
        Value term = kb.fmul(partial[r], keys.scales[group * 2 + token]);
        if (keys.zeros[group * 2 + token])
          term = kb.fadd(term,
                         kb.fmul(keys.zeros[group * 2 + token],
                                 querySums[(h * groups + group) * 2 + column]));
        acc[r] = kb.fadd(acc[r], term);
      }
    }
    return acc;
  }

  /// One step of 16 tokens from `t0` (`n` of them valid; a column's only
  /// those before its `columnEnds`, if any) for every head tile: scores,
  /// online softmax and P.V into `state`.
  SmallVector<Value> step(const Operand &keys, const Operand &values, bool body,
                          Value capacity, Value t0, Value n,
                          ArrayRef<Value> columnEnds, ValueRange carried) {
    SmallVector<Value> next(carried.begin(), carried.end());
    Value last = kb.sub(n, kb.i32(1));
    // Where the step's tokens are stored (a step never crosses a page).
    StoredRows at = body ? storedBodyRows(kb, s, a, range, t0)
                         : StoredRows{range.headRow, capacity, t0};
    auto token = [&](Value base, int64_t offset, StringRef name) {
      return kb.named(name, kb.min(kb.add(base, kb.i32(offset)), last));
    };
    int64_t keyPerWord = keys.scheme ? keys.scheme.codesPerWord() : 1;
    int64_t valuePerWord = values.scheme ? values.scheme.codesPerWord() : 1;

    kb.comment("K as A fragments: tokens group and group + 8 (clamped to the "
               "valid ones), 4 channels a k-step from key_channel");
    SmallVector<Value> keyTokens = {token(g, 0, "key_token"),
                                    token(g, 8, "key_token_b")};
    Value keyChannel = kb.named("key_channel", this->keyChannel());
    // Sink and residual keys are fp16 values.
    KeyForm form = body ? bodyKeyForm : KeyForm::Values;
    KeyFragments keyFragments;
    SmallVector<SmallVector<Value>> channelScores; // [head tile]
    if (form == KeyForm::ChannelCodes)
      channelScores = channelCodeScores(keys, at, keyTokens, keyChannel);
    else if (form == KeyForm::TokenCodes)
      keyFragments = keyCodeFragments(keys, at, keyTokens, keyChannel);
    else
      keyFragments =
          keyValueFragments(keys, at, keyTokens, keyChannel, keyPerWord);

    Value lowValid = kb.named("token_valid", kb.lt(g, n));
    Value highValid = kb.named("token_b_valid", kb.lt(kb.add(g, kb.i32(8)), n));
    // Per head tile: P^T's B fragments (tokens 2t.., 2t+8..), each followed
    // by its rounding error when splitProducts().
    SmallVector<SmallVector<Value>> probabilities;
    for (int64_t h = 0; h < headTiles; ++h) {
      kb.comment(
          "scores of head tile " + std::to_string(h) +
          ": tokens group, group + 8 x heads 2 * thread_in_group + 0, 1");
      SmallVector<Value> acc = form == KeyForm::ChannelCodes
                                   ? channelScores[h]
                                   : scores(keyFragments, h);
      // valid[token row][column]
      Value valid[2][2] = {{lowValid, lowValid}, {highValid, highValid}};
      if (!columnEnds.empty())
        for (int64_t c = 0; c < 2; ++c) {
          Value limit = kb.named("column_step_len",
                                 kb.min(n, kb.sub(columnEnds[2 * h + c], t0)));
          valid[0][c] = kb.lt(g, limit);
          valid[1][c] = kb.lt(kb.add(g, kb.i32(8)), limit);
        }
      SmallVector<Value> x;
      for (int64_t r = 0; r < 4; ++r)
        x.push_back(kb.select(valid[r / 2][r % 2], kb.fmul(acc[r], scoreScale),
                              kb.negInf()));
      Value p[2][2]; // [token row][head column]
      for (int64_t c = 0; c < 2; ++c) {
        Value local = kb.fmax(x[c], x[2 + c]);
        for (int offset : {4, 8, 16})
          local = kb.fmax(local, kb.shuffleXor(local, offset));
        Value oldMax = next[maxAt(h, c)];
        Value newMax = kb.named("new_max", kb.fmax(oldMax, local));
        // A column may have seen no token yet (its row's tokens end
        // earlier): exponents from 0, not -inf - -inf.
        Value base =
            columnEnds.empty()
                ? newMax
                : kb.named("max_base", kb.select(kb.feq(newMax, kb.negInf()),
                                                 kb.f32(0.0), newMax));
        Value correction =
            kb.named("correction", kb.exp2(kb.fsub(oldMax, base)));
        p[0][c] = kb.named("p", kb.exp2(kb.fsub(x[c], base)));
        p[1][c] = kb.named("p_b", kb.exp2(kb.fsub(x[2 + c], base)));
        next[maxAt(h, c)] = newMax;
        next[sumAt(h, c)] = kb.fadd(kb.fmul(next[sumAt(h, c)], correction),
                                    kb.fadd(p[0][c], p[1][c]));
        for (int64_t m = 0; m < kSteps; ++m)
          for (int64_t r : {c, 2 + c})
            next[outAt(h, m, r)] = kb.fmul(next[outAt(h, m, r)], correction);
      }
      // P^T as the B operand: tokens 2t, 2t+1 (+8) of head g, by transposing
      // the 8x8 (token, head) blocks the accumulators hold.
      // bf16 keeps 8 mantissa bits: what rounding P left over goes in a
      // second fragment (and a second MMA), as for keys.
      SmallVector<Value> fragments;
      for (int64_t row : {0, 1}) {
        Value pair = kb.packPair(p[row][0], p[row][1], s.half);
        fragments.push_back(
            kb.named(row ? "p_frag_b" : "p_frag", kb.transposePairs(pair)));
        if (splitProducts())
          fragments.push_back(
              kb.named(row ? "p_error_b" : "p_error",
                       kb.transposePairs(kb.packPairError(p[row][0], p[row][1],
                                                          pair, s.half))));
      }
      probabilities.push_back(std::move(fragments));
    }

    kb.comment("V^T as A fragments: channels from group * d/8, tokens "
               "2 * thread_in_group + 0, 1, 8, 9 (clamped)");
    SmallVector<Value> valueTokens = {
        token(kb.mul(t, kb.i32(2)), 0, "value_token"),
        token(kb.mul(t, kb.i32(2)), 1, "value_token_b"),
        token(kb.mul(t, kb.i32(2)), 8, "value_token_c"),
        token(kb.mul(t, kb.i32(2)), 9, "value_token_d")};
    // Tokens 2t and 2t + 1 always share a word row (a word holds an even
    // number of tokens); all four do when a word holds 16.
    SmallVector<int64_t> valueWordOf = {0, 0, valuePerWord >= 16 ? 0 : 2,
                                        valuePerWord >= 16 ? 0 : 2};
    Value valueChannel = kb.named("value_channel", kb.mul(g, kb.i32(valueRun)));
    SmallVector<Value> valueFragments, valueErrors;
    if (valuesInHalf2(values)) {
      SmallVector<Value> rows;
      for (Value token : valueTokens)
        rows.push_back(kb.named("row", kb.add(kb.mul(at.row, at.capacity),
                                              kb.add(at.first, token))));
      valueFragments =
          tokenAxisValueFragments(values, rows, valueChannel, valueRun);
    } else {
      SmallVector<SmallVector<Value>> v = loadRuns(
          values, at, valueTokens, valueWordOf, valueChannel, valueRun);
      for (int64_t m = 0; m < kSteps; ++m)
        for (auto [a, b, c] : {std::tuple{0, 1, 2 * m},
                               {0, 1, 2 * m + 1},
                               {2, 3, 2 * m},
                               {2, 3, 2 * m + 1}}) {
          Value pair = kb.packPair(v[a][c], v[b][c], s.half);
          valueFragments.push_back(pair);
          // Dequantized bf16 values: their rounding error too (a third
          // MMA); fp16 rows are exact.
          if (splitProducts() && values.scheme)
            valueErrors.push_back(
                kb.packPairError(v[a][c], v[b][c], pair, s.half));
        }
    }
    for (int64_t m = 0; m < kSteps; ++m) {
      ArrayRef<Value> fragment =
          ArrayRef<Value>(valueFragments).slice(4 * m, 4);
      for (int64_t h = 0; h < headTiles; ++h) {
        SmallVector<Value> acc;
        for (int64_t r = 0; r < 4; ++r)
          acc.push_back(next[outAt(h, m, r)]);
        const SmallVector<Value> &pf = probabilities[h];
        int64_t stride = splitProducts() ? 2 : 1;
        acc = kb.mma(fragment, {pf[0], pf[stride]}, acc, s.half);
        if (splitProducts())
          acc = kb.mma(fragment, {pf[1], pf[3]}, acc, s.half);
        if (!valueErrors.empty())
          acc = kb.mma(ArrayRef<Value>(valueErrors).slice(4 * m, 4),
                       {pf[0], pf[stride]}, acc, s.half);
        for (int64_t r = 0; r < 4; ++r)
          next[outAt(h, m, r)] = acc[r];
      }
    }
    return next;
  }

  /// The warp's steps over tokens [begin, end) of one segment; with
  /// several rows, each column's tokens end at its own `columnEnds`.
  SmallVector<Value> runSteps(Value begin, Value end, const Operand &keys,
                              const Operand &values, bool body, Value capacity,
                              ArrayRef<Value> columnEnds, ValueRange state) {
    Value steps = kb.named("steps", kb.ceilDiv(kb.max(zero, kb.sub(end, begin)),
                                               kb.i32(kStepTokens)));
    return kb.forLoop(
        warp, steps, kb.i32(warps), state,
        [&](Value index, ValueRange carried) -> SmallVector<Value> {
          Value t0 = kb.named(
              "step_start", kb.add(begin, kb.mul(index, kb.i32(kStepTokens))));
          Value n = kb.named("step_len",
                             kb.min(kb.i32(kStepTokens), kb.sub(end, t0)));
          return step(keys, values, body, capacity, t0, n, columnEnds, carried);
        },
        "step");
  }

  /// The warps' (max, sum, output) into this split's partial result.
  void mergeWarps(ArrayRef<Value> state) {
    kb.comment("each warp's sums over its lanes' tokens; its max, sum and "
               "output to shared memory");
    Value width = kb.i32(columns);
    for (int64_t h = 0; h < headTiles; ++h)
      for (int64_t c = 0; c < 2; ++c) {
        Value sum = state[sumAt(h, c)];
        for (int offset : {4, 8, 16})
          sum = kb.fadd(sum, kb.shuffleXor(sum, offset));
        Value column =
            kb.named("column", kb.add(kb.mul(t, kb.i32(2)),
                                      kb.i32(h * kHeadsPerTile + c)));
        kb.ifThen(kb.lt(column, width), [&] {
          Value slot =
              kb.named("merge_row", kb.add(kb.mul(warp, width), column));
          kb.ifThen(kb.eq(g, zero), [&] {
            kb.store(state[maxAt(h, c)], mergeMax, slot);
            kb.store(sum, mergeSum, slot);
          });
          Value base = kb.add(kb.mul(slot, d), kb.mul(g, kb.i32(valueRun)));
          for (int64_t m = 0; m < kSteps; ++m) {
            kb.store(state[outAt(h, m, c)], mergeOut,
                     kb.add(base, kb.i32(2 * m)));
            kb.store(state[outAt(h, m, 2 + c)], mergeOut,
                     kb.add(base, kb.i32(2 * m + 1)));
          }
        });
      }
    kb.barrier();

    kb.comment("merge the warps by log-sum-exp into this split's "
               "unnormalized output, max and sum");
    kb.strideLoop(
        kb.threadIdx(), kb.i32(columns * s.headDim), s.threads,
        [&](Value i) {
          Value column = kb.named("column", kb.div(i, d));
          Value channel = kb.named("channel", kb.rem(i, d));
          auto merge = [&] {
            Value best = kb.negInf();
            for (int64_t w = 0; w < warps; ++w)
              best = kb.fmax(
                  best, kb.load(mergeMax, kb.add(kb.i32(w * columns), column)));
            best = kb.named("split_max", best);
            Value safe =
                kb.named("safe_max", kb.select(kb.feq(best, kb.negInf()),
                                               kb.f32(0.0), best));
            Value out = kb.f32(0.0), sum = kb.f32(0.0);
            for (int64_t w = 0; w < warps; ++w) {
              Value slot = kb.add(kb.i32(w * columns), column);
              Value weight = kb.named(
                  "weight", kb.exp2(kb.fsub(kb.load(mergeMax, slot), safe)));
              out = kb.fadd(
                  out,
                  kb.fmul(kb.load(mergeOut, kb.add(kb.mul(slot, d), channel)),
                          weight));
              sum = kb.fadd(sum, kb.fmul(kb.load(mergeSum, slot), weight));
            }
            Value row =
                kb.named("partial_row",
                         kb.add(kb.mul(queryRowOf(column, /*inBlock=*/true),
                                       range.splits),
                                range.split));
            kb.store(out, a.partialOut, kb.add(kb.mul(row, d), channel));
            kb.ifThen(kb.eq(channel, zero), [&] {
              // The combine kernel takes natural-log maxima.
              kb.store(kb.fmul(best, kb.f32(M_LN2)), a.partialMax, row);
              kb.store(sum, a.partialSum, row);
            });
          };
          // Several rows: only this pass's sequence's are its to write.
          if (rows == 1)
            merge();
          else
            kb.ifThen(columnActive(column), merge);
        },
        "i");
  }

  KernelBuilder &kb;
  const AttentionShape &s;
  const AttentionArgs &a;
  Value mergeOut, mergeMax, mergeSum;
  bool hasSink, hasResidual;
  int64_t warps = 0, headTiles = 0, kSteps = 0, keyRun = 0, valueRun = 0;
  /// Query rows a block takes, and their columns (rows x gqa).
  int64_t rows = 1, columns = 0;
  SplitRange range;
  Value zero, d, warp, g, t;
  /// Several rows: the block's first and the call's last query row; the
  /// rows of this pass's sequence (bit r: first_row + r); per segment (sink,
  /// body, residual) each of the lane's columns' token count, [head
  /// tile][column 2t, 2t+1] (empty with one row: the block's count holds).
  Value firstRow, lastRow, activeRows;
  SmallVector<Value> columnLengths[3];
  Value scoreScale;                      ///< softmax scale x log2(e)
  KeyForm bodyKeyForm = KeyForm::Values; ///< how the body's keys enter
  /// Channel-axis codes: the PRMT selector of tokens group, group + 8, and
  /// the mask and fp32 unit of the bits both codes take in their byte.
  Value keyByteSelector[2], keyCodeMask, keyCodeUnit;
  SmallVector<Value> queryFragments; ///< [head tile][k-step][2]
  /// Keys as codes with zero points: [head tile][scale group][head 2t, 2t+1]
  SmallVector<Value> querySums;
};

} // namespace

SmallVector<Type> mlir::kvq::tensorCoreSharedTypes(MLIRContext *context,
                                                   const AttentionShape &s) {
  int64_t warps = s.threads / 32;
  Type f32 = Float32Type::get(context);
  int64_t columns = s.queryRows * s.gqa;
  return {sharedBuffer(context, warps * columns * s.headDim, f32),
          sharedBuffer(context, warps * columns, f32),
          sharedBuffer(context, warps * columns, f32)};
}

SmallVector<StringRef> mlir::kvq::tensorCoreSharedNames() {
  return {"warp_out", "warp_max", "warp_sum"};
}

void mlir::kvq::writeTensorCoreAttention(KernelBuilder &kb,
                                         const AttentionShape &s,
                                         const AttentionArgs &a,
                                         ValueRange shared, bool hasSink,
                                         bool hasResidual) {
  TensorCoreBodyWriter(kb, s, a, shared, hasSink, hasResidual).write();
}
