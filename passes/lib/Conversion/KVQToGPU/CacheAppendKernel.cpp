//===- CacheAppendKernel.cpp - one decode step of a paged cache -----------===//
//
// kvq.cache_append: every sequence that holds tokens takes one new token, in
// one launch for the whole batch. A block per sequence (it alone reads and
// writes that sequence's lengths, so no two blocks race on them):
//
//   sink not full      the token's rows go to the sink;
//   else               they go to the end of the residual, and when the
//                      residual then holds `residual + flush` tokens its
//                      oldest `flush` are quantized into the sequence's page
//                      (taken from the free-page stack if the block table
//                      has none there yet) and the rest move to the front.
//
// Nothing the kernel writes is read again by it through the read-only path
// (KVQ_LDG): the flush reads the residual's oldest rows, all written by
// earlier steps, before the shift overwrites them (a barrier between); the
// shift moves rows down a flush at a time, each round reading rows no
// earlier round wrote; the new token is written last, where no read follows.
// That needs residual >= 1 (else the newest token would be flushed at once),
// which the launch checks.
//
// The lengths are device data, so the kernel trusts none of them: a
// sequence whose counts would address outside its sink, residual or block
// table row is left as it is.
//
//===----------------------------------------------------------------------===//

#include "Kernels.h"

#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "llvm/Support/FormatVariadic.h"

using namespace mlir;
using namespace mlir::kvq;

namespace {

/// The kernel's arguments (KernelABI.h, `append`).
struct AppendArgs {
  Value keys, values, headStride, tokenStride;
  Value lengths, blockTable, freePages, freeCount;
  Value sinkKeys, sinkValues, residualKeys, residualValues;
  Value keyWords, keyScales, keyZeros, valueWords, valueScales, valueZeros;
  Value batch, kvHeads, maxPages, numPages, pageTokens, sinkCapacity,
      sinkTokens, residualCapacity, residual, flush;
};

/// Copies the new token of sequence `seq` (every kv head's row of keys and
/// values) to token `slot` of each head's row of `keyRows`/`valueRows`,
/// segments of `capacity` tokens per (sequence, kv head).
void copyNewToken(KernelBuilder &kb, const AppendArgs &a, int64_t headDim,
                  int64_t threads, Value seq, Value keyRows, Value valueRows,
                  Value capacity, Value slot) {
  Value d = kb.i32(headDim);
  Value input = kb.mul(seq, a.tokenStride);
  Value items = kb.mul(a.kvHeads, d);
  kb.strideLoop(kb.threadIdx(), items, threads, [&](Value item) {
    Value head = kb.div(item, d);
    Value channel = kb.rem(item, d);
    Value from = kb.add(kb.add(input, kb.mul(head, a.headStride)), channel);
    Value headRow = kb.add(kb.mul(seq, a.kvHeads), head);
    Value to =
        kb.add(kb.mul(kb.add(kb.mul(headRow, capacity), slot), d), channel);
    kb.store(kb.load(a.keys, from), keyRows, to);
    kb.store(kb.load(a.values, from), valueRows, to);
  });
}

} // namespace

LogicalResult mlir::kvq::buildCacheAppendKernel(CacheAppendOp op,
                                                gpu::GPUModuleOp module) {
  FailureOr<::kvq::LaunchPlan> plan =
      requirePlan(op, {&::kvq::LaunchPlan::threads});
  if (failed(plan))
    return failure();
  auto keysType = cast<RankedTensorType>(op.getKeys().getType());
  Type half = keysType.getElementType();
  int64_t headDim = keysType.getShape()[3];
  int64_t threads = plan->threads;
  SchemeAttr keyScheme = op.getKeyScheme(), valueScheme = op.getValueScheme();

  OpBuilder builder(op);
  MLIRContext *context = op->getContext();
  Type i32 = builder.getI32Type();
  AppendArgs a;
  SmallVector<KernelParameter> parameters = {
      {"keys", globalBuffer(half), &a.keys},
      {"values", globalBuffer(half), &a.values},
      {"head_stride", i32, &a.headStride},
      {"token_stride", i32, &a.tokenStride},
      {"lengths", globalBuffer(i32), &a.lengths},
      {"block_table", globalBuffer(i32), &a.blockTable},
      {"free_pages", globalBuffer(i32), &a.freePages},
      {"free_count", globalBuffer(i32), &a.freeCount},
      {"sink_keys", globalBuffer(half), &a.sinkKeys},
      {"sink_values", globalBuffer(half), &a.sinkValues},
      {"residual_keys", globalBuffer(half), &a.residualKeys},
      {"residual_values", globalBuffer(half), &a.residualValues},
      {"key_words", globalBuffer(i32), &a.keyWords},
      {"key_scales", globalBuffer(keyScheme.getScaleType()), &a.keyScales}};
  if (keyScheme.hasZeroPoints())
    parameters.push_back(
        {"key_zeros", globalBuffer(keyScheme.getScaleType()), &a.keyZeros});
  parameters.append({{"value_words", globalBuffer(i32), &a.valueWords},
                     {"value_scales", globalBuffer(valueScheme.getScaleType()),
                      &a.valueScales}});
  if (valueScheme.hasZeroPoints())
    parameters.push_back({"value_zeros",
                          globalBuffer(valueScheme.getScaleType()),
                          &a.valueZeros});
  parameters.append({{"batch", i32, &a.batch},
                     {"kv_heads", i32, &a.kvHeads},
                     {"max_pages", i32, &a.maxPages},
                     {"num_pages", i32, &a.numPages},
                     {"page_tokens", i32, &a.pageTokens},
                     {"sink_capacity", i32, &a.sinkCapacity},
                     {"sink_tokens", i32, &a.sinkTokens},
                     {"residual_capacity", i32, &a.residualCapacity},
                     {"residual_tokens", i32, &a.residual},
                     {"flush_tokens", i32, &a.flush}});

  std::string name =
      llvm::formatv("kvq_append_{0}_{1}_d{2}_{3}", schemeTag(keyScheme),
                    schemeTag(valueScheme), headDim, halfTag(half));
  std::string spec;
  {
    llvm::raw_string_ostream os(spec);
    os << "append keys " << Attribute(keyScheme) << " values "
       << Attribute(valueScheme) << " head_dim=" << headDim
       << " dtype=" << halfTag(half);
  }
  gpu::GPUFuncOp func = createKernel(
      builder, module, op.getLoc(), name, "append", parameters,
      {sharedBuffer(context, 1, i32)}, threads, spec, getLaunchPlan(op));
  func->setAttr("kvq.shared_names", builder.getStrArrayAttr({"page"}));
  Value pageSlot = func.getWorkgroupAttributions()[0];

  KernelBody body(builder, op.getLoc(), func);
  KernelBuilder &kb = body.kb;
  Value zero = kb.i32(0), one = kb.i32(1);
  Value tid = kb.threadIdx();

  kb.comment("a block per sequence: only it reads and writes the sequence's "
             "lengths");
  kb.forLoop(
      kb.blockIdx(gpu::Dimension::x), a.batch, kb.gridDim(gpu::Dimension::x),
      [&](Value seq) {
        Value at = kb.mul(seq, kb.i32(3));
        Value sink = kb.named("sink_count", kb.load(a.lengths, at));
        Value quantized =
            kb.named("quantized_count", kb.load(a.lengths, kb.add(at, one)));
        Value residual = kb.named("residual_count",
                                  kb.load(a.lengths, kb.add(at, kb.i32(2))));
        Value full = kb.named("full", kb.add(a.residual, a.flush));

        kb.comment("device data is untrusted: counts that would address "
                   "outside this sequence's sink, residual or block table "
                   "row leave it as it is");
        Value holds = kb.lt(zero, kb.add(sink, kb.add(quantized, residual)));
        Value sane = kb.bothTrue(
            kb.bothTrue(kb.ge(sink, zero), kb.ge(quantized, zero)),
            kb.bothTrue(kb.ge(residual, zero), kb.ge(a.sinkTokens, sink)));
        Value fits = kb.bothTrue(kb.lt(residual, full),
                                 kb.ge(kb.mul(a.maxPages, a.pageTokens),
                                       kb.add(quantized, a.flush)));
        Value aligned = kb.eq(kb.rem(quantized, a.flush), zero);
        Value valid =
            kb.named("valid", kb.bothTrue(kb.bothTrue(holds, sane),
                                          kb.bothTrue(fits, aligned)));
        Value toSink = kb.lt(sink, a.sinkTokens);
        Value toResidual = kb.ge(sink, a.sinkTokens);
        Value grown = kb.add(residual, one);
        Value flushing = kb.named(
            "flushing",
            kb.bothTrue(valid, kb.bothTrue(toResidual, kb.eq(grown, full))));

        kb.comment("sink not full: the token joins the sink");
        kb.ifThen(kb.bothTrue(valid, toSink), [&] {
          copyNewToken(kb, a, headDim, threads, seq, a.sinkKeys, a.sinkValues,
                       a.sinkCapacity, sink);
        });
        kb.comment("else it joins the residual");
        kb.ifThen(
            kb.bothTrue(valid, kb.bothTrue(toResidual, kb.lt(grown, full))),
            [&] {
              copyNewToken(kb, a, headDim, threads, seq, a.residualKeys,
                           a.residualValues, a.residualCapacity, residual);
            });

        kb.ifThen(flushing, [&] {
          kb.comment("the residual is full: its oldest tokens go to the page "
                     "for quantized token `quantized_count`, taken from the "
                     "free-page stack if the block table has none there");
          kb.ifThen(kb.eq(tid, zero), [&] {
            Value entry = kb.add(kb.mul(seq, a.maxPages),
                                 kb.div(quantized, a.pageTokens));
            Value listed = kb.load(a.blockTable, entry);
            Value page = kb.ifElse(
                kb.lt(listed, zero), TypeRange{i32},
                [&]() -> SmallVector<Value> {
                  Value top = kb.add(
                      kb.atomicAdd(a.freeCount, zero, kb.i32(-1)), kb.i32(-1));
                  Value index = kb.max(top, zero);
                  Value taken = kb.load(a.freePages, index);
                  kb.store(taken, a.blockTable, entry);
                  return {taken};
                },
                [&]() -> SmallVector<Value> { return {listed}; })[0];
            kb.store(kb.min(kb.max(page, zero), kb.sub(a.numPages, one)),
                     pageSlot, zero);
          });
          kb.barrier();
          Value page = kb.named("page", kb.load(pageSlot, zero));
          for (auto [scheme, rows, words, scales, zeros] :
               {std::tuple{keyScheme, a.residualKeys, a.keyWords, a.keyScales,
                           a.keyZeros},
                std::tuple{valueScheme, a.residualValues, a.valueWords,
                           a.valueScales, a.valueZeros}}) {
            QuantizeArgs q;
            q.input = rows;
            q.words = words;
            q.scales = scales;
            q.zeros = zeros;
            q.rows = a.kvHeads;
            q.tokens = a.flush;
            q.inTokens = a.residualCapacity;
            q.outTokens = a.pageTokens;
            q.outOffset = kb.rem(quantized, a.pageTokens);
            q.inRowBase = kb.mul(seq, a.kvHeads);
            q.outRowBase = kb.mul(page, a.kvHeads);
            q.blockLocal = true;
            q.staticHeads = a.kvHeads; // rows are the kv heads
            if (scheme.getAxis() == Axis::token)
              buildTokenAxisQuantize(kb, scheme, headDim, threads,
                                     /*halfVector=*/1, q);
            else
              buildChannelAxisQuantize(kb, scheme, headDim, threads, q);
          }
          kb.barrier();

          kb.comment("the rest move to the front, a flush of tokens per "
                     "round: each round reads rows no earlier round wrote");
          Value d = kb.i32(headDim);
          Value moved = kb.sub(residual, a.flush);
          Value roundItems = kb.mul(kb.mul(a.kvHeads, a.flush), d);
          kb.forLoop(zero, kb.ceilDiv(moved, a.flush), one, [&](Value round) {
            kb.strideLoop(tid, roundItems, threads, [&](Value item) {
              Value channel = kb.rem(item, d);
              Value rest = kb.div(item, d);
              Value token = kb.add(kb.mul(kb.add(round, one), a.flush),
                                   kb.rem(rest, a.flush));
              Value headRow =
                  kb.add(kb.mul(seq, a.kvHeads), kb.div(rest, a.flush));
              kb.ifThen(kb.lt(token, residual), [&] {
                Value rowBase = kb.mul(headRow, a.residualCapacity);
                Value from = kb.add(kb.mul(kb.add(rowBase, token), d), channel);
                Value to =
                    kb.add(kb.mul(kb.add(rowBase, kb.sub(token, a.flush)), d),
                           channel);
                for (Value rows : {a.residualKeys, a.residualValues})
                  kb.store(kb.load(rows, from), rows, to);
              });
            });
            kb.barrier();
          });
          kb.comment("and the new token follows them");
          copyNewToken(kb, a, headDim, threads, seq, a.residualKeys,
                       a.residualValues, a.residualCapacity, moved);
        });

        kb.comment("every thread has read the lengths: write the new ones");
        kb.barrier();
        kb.ifThen(kb.bothTrue(valid, kb.eq(tid, zero)), [&] {
          // (selects between counts, not of 0/1: the canonicalizer would
          // turn those into zero-extensions of the condition)
          kb.store(kb.select(toSink, kb.add(sink, one), sink), a.lengths, at);
          kb.store(kb.select(flushing, kb.add(quantized, a.flush), quantized),
                   a.lengths, kb.add(at, one));
          kb.store(
              kb.select(toSink, residual,
                        kb.select(flushing, kb.sub(grown, a.flush), grown)),
              a.lengths, kb.add(at, kb.i32(2)));
        });
      },
      "seq");
  return success();
}
