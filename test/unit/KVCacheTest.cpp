//===- KVCacheTest.cpp - QuantizedKVCache against the reference cache -----===//

#include "SmallCacheConfig.h"
#include "TestContext.h"
#include "kvq/QuantizedKVCache.h"
#include "kvq/Runtime/Reference.h"

#include "llvm/Support/FileSystem.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

using namespace kvq;

namespace {

std::unique_ptr<Context> makeContext(BackendKind backend) {
  return kvq::testing::makeTestContext(backend, "kvq-kvcache-test");
}

CacheConfig smallConfig(const std::string &preset) {
  return kvq::testing::smallCacheConfig(preset);
}

/// Host-generated tokens [kv heads, n, head_dim] as half bits, copied to
/// the context's memory on demand.
struct Tokens {
  std::vector<uint16_t> k, v;
};

Tokens makeTokens(const CacheConfig &c, int n, std::mt19937 &rng) {
  std::normal_distribution<float> normal;
  Tokens t;
  for (auto *out : {&t.k, &t.v})
    for (size_t i = 0; i < size_t(c.kvHeads) * n * c.headDim; ++i) {
      float scale = out == &t.k && i % c.headDim == 5 ? 8.0f : 1.0f;
      out->push_back(ref::toHalfBits(normal(rng) * scale, c.dtype));
    }
  return t;
}

/// A query for every sequence of the batch.
std::vector<uint16_t> randomQuery(const CacheConfig &c, std::mt19937 &rng) {
  std::normal_distribution<float> normal;
  std::vector<uint16_t> query;
  for (int i = 0; i < c.batch * c.queryHeads * c.headDim; ++i)
    query.push_back(ref::toHalfBits(normal(rng), c.dtype));
  return query;
}

/// A two-sequence batch's queries in the other order.
std::vector<uint16_t> swapHalves(const std::vector<uint16_t> &query) {
  std::vector<uint16_t> swapped(query.begin() + query.size() / 2, query.end());
  swapped.insert(swapped.end(), query.begin(),
                 query.begin() + query.size() / 2);
  return swapped;
}

/// A cache plus the device buffers it is fed through.
struct Harness {
  std::unique_ptr<Context> context;
  std::unique_ptr<QuantizedKVCache> cache;
  void *k = nullptr, *v = nullptr, *q = nullptr, *out = nullptr;
  size_t tokenBytes, queryBytes;

  Harness(BackendKind backend, const CacheConfig &c) {
    context = makeContext(backend);
    Status status;
    cache = QuantizedKVCache::create(*context, c, &status);
    EXPECT_TRUE(cache) << status.message();
    tokenBytes = size_t(c.kvHeads) * 400 * c.headDim * 2;
    queryBytes = size_t(c.batch) * c.queryHeads * c.headDim * 2;
    k = context->allocate(tokenBytes, &status);
    v = context->allocate(tokenBytes, &status);
    q = context->allocate(queryBytes, &status);
    out = context->allocate(queryBytes, &status);
  }
  ~Harness() {
    cache.reset();
    for (void *p : {k, v, q, out})
      context->release(p);
  }
  Status append(int layer, int seq, const Tokens &t, int n) {
    Status s = context->copyIn(k, t.k.data(), t.k.size() * 2);
    if (s.ok())
      s = context->copyIn(v, t.v.data(), t.v.size() * 2);
    return s.ok() ? cache->append(layer, seq, k, v, n) : s;
  }
  std::vector<float> attend(int layer, const std::vector<uint16_t> &query,
                            HalfType dtype) {
    EXPECT_TRUE(context->copyIn(q, query.data(), query.size() * 2).ok());
    Status s = cache->attend(layer, q, out);
    EXPECT_TRUE(s.ok()) << s.message();
    std::vector<uint16_t> bits(query.size());
    EXPECT_TRUE(context->copyOut(bits.data(), out, bits.size() * 2).ok());
    std::vector<float> values;
    for (uint16_t b : bits)
      values.push_back(ref::fromHalfBits(b, dtype));
    return values;
  }
};

// A prefill's routing and the decode steps after it, for a channel-axis
// preset (unit 32) and a token-axis one (unit 1): 4 sink tokens; of the
// other 296, all but at least `residual` (64) go to the store in bulk in
// whole flushes of 32 (224; 72 stay), so that the store grows by whole
// flushes and no flush straddles a page. The residual is then flushed 32
// tokens at a time once it holds 64 + 32: the decode steps before only
// copy (no launch), the flush quantizes K and V (a launch each).
TEST(KVCache, RoutesSinkBulkPrefillResidualAndFlushes) {
  struct Case {
    const char *preset;
    int bulk, residual, flushLaunches;
  };
  for (Case k : {Case{"kivi2", 224, 72, 2}, Case{"int4", 224, 72, 2}}) {
    SCOPED_TRACE(k.preset);
    CacheConfig c = smallConfig(k.preset);
    Harness h(BackendKind::Emulator, c);
    std::mt19937 rng(1);
    Tokens prefill = makeTokens(c, 300, rng);
    ASSERT_TRUE(h.append(0, 0, prefill, 300).ok());
    QuantizedKVCache::Parts p = h.cache->parts(0, 0);
    EXPECT_EQ(p.sink, 4);
    EXPECT_EQ(p.quantized, k.bulk);
    EXPECT_EQ(p.residual, k.residual);
    Tokens one = makeTokens(c, 1, rng);
    uint64_t launches = h.context->statistics().launches;
    while (h.cache->parts(0, 0).residual < 95)
      ASSERT_TRUE(h.append(0, 0, one, 1).ok());
    EXPECT_EQ(h.context->statistics().launches, launches) << "copies only";
    ASSERT_TRUE(h.append(0, 0, one, 1).ok()); // 96 = R + 32: flush 32
    p = h.cache->parts(0, 0);
    EXPECT_EQ(p.quantized, k.bulk + 32);
    EXPECT_EQ(p.residual, 64);
    EXPECT_EQ(p.total(), 300 + 96 - k.residual);
    EXPECT_EQ(h.context->statistics().launches, launches + k.flushLaunches);
    EXPECT_EQ(h.cache->parts(1, 0).total(), 0) << "layers are independent";
  }
}

/// `t` ([kv heads, n, head_dim]) rearranged as `layout` says, in a buffer
/// of `elements` halves (the rest zero).
std::vector<uint16_t> laidOut(const std::vector<uint16_t> &t,
                              const CacheConfig &c, int n,
                              const TokenLayout &layout, size_t elements) {
  std::vector<uint16_t> out(elements, 0);
  for (int h = 0; h < c.kvHeads; ++h)
    for (int i = 0; i < n; ++i)
      for (int x = 0; x < c.headDim; ++x)
        out[h * layout.headStride + i * layout.tokenStride + x] =
            t[(size_t(h) * n + i) * c.headDim + x];
  return out;
}

// An engine's token-major [tokens, kv heads, head_dim] input (staged on its
// way to the store) and a head-major slice with a longer stride (PyTorch's
// [batch, kv heads, seq, head_dim], read in place) give the cache exactly
// what contiguous input gives it: attention equal bit for bit, through the
// bulk prefill, the sink and the residual, for channel- and token-axis
// presets.
TEST(KVCache, StridedInputIsReadWhereItIs) {
  for (const char *preset : {"kivi2", "int4"}) {
    CacheConfig c = smallConfig(preset);
    c.batch = 1;
    Harness contiguous(BackendKind::Emulator, c);
    Harness tokenMajor(BackendKind::Emulator, c);
    Harness padded(BackendKind::Emulator, c);
    std::mt19937 rng(9);
    int d = c.headDim, heads = c.kvHeads;
    auto feed = [&](int n) {
      Tokens t = makeTokens(c, n, rng);
      ASSERT_TRUE(contiguous.append(0, 0, t, n).ok());
      TokenLayout engine{d, int64_t(heads) * d};
      TokenLayout slice{int64_t(n + 37) * d, d}; // a longer sequence's head
      for (auto [h, layout] :
           {std::pair{&tokenMajor, engine}, std::pair{&padded, slice}}) {
        size_t elements = size_t(heads) * (n + 37) * d;
        ASSERT_LE(elements * 2, h->tokenBytes);
        std::vector<uint16_t> k = laidOut(t.k, c, n, layout, elements);
        std::vector<uint16_t> v = laidOut(t.v, c, n, layout, elements);
        ASSERT_TRUE(h->context->copyIn(h->k, k.data(), k.size() * 2).ok());
        ASSERT_TRUE(h->context->copyIn(h->v, v.data(), v.size() * 2).ok());
        Status s = h->cache->append(0, 0, h->k, h->v, n, layout);
        ASSERT_TRUE(s.ok()) << preset << ": " << s.message();
      }
    };
    feed(300); // sink, bulk prefill, residual
    for (int step = 0; step < 40; ++step)
      feed(1); // decode steps, flushes included
    QuantizedKVCache::Parts p = contiguous.cache->parts(0, 0);
    EXPECT_GT(p.quantized, 0);
    std::vector<uint16_t> query = randomQuery(c, rng);
    std::vector<float> want = contiguous.attend(0, query, c.dtype);
    EXPECT_EQ(tokenMajor.attend(0, query, c.dtype), want) << preset;
    EXPECT_EQ(padded.attend(0, query, c.dtype), want) << preset;
    for (Harness *h : {&tokenMajor, &padded}) {
      QuantizedKVCache::Parts q = h->cache->parts(0, 0);
      EXPECT_EQ(q.quantized, p.quantized);
      EXPECT_EQ(q.residual, p.residual);
    }
  }
}

// Several sequences' prompts packed token-major in one input, as an
// engine's varlen prefill hands them over, give the cache what one append
// per sequence gives it; a bad entry or a pool too small for all of them
// changes nothing.
TEST(KVCache, PackedSequencesAppendInOneCall) {
  CacheConfig c = smallConfig("int4");
  c.batch = 3;
  Harness packed(BackendKind::Emulator, c);
  Harness oneByOne(BackendKind::Emulator, c);
  std::mt19937 rng(21);
  int d = c.headDim, heads = c.kvHeads;
  const int lengths[] = {150, 37, 110}; // sequences 2, 0, 1 in that order
  const int32_t sequences[] = {2, 0, 1};
  std::vector<int32_t> offsets = {0};
  std::vector<Tokens> prompts;
  for (int n : lengths) {
    prompts.push_back(makeTokens(c, n, rng));
    offsets.push_back(offsets.back() + n);
  }
  // Token-major [tokens, kv heads, head_dim], the prompts one after another.
  TokenLayout engine{d, int64_t(heads) * d};
  std::vector<uint16_t> k(size_t(offsets.back()) * heads * d), v(k.size());
  for (int i = 0; i < 3; ++i)
    for (int h = 0; h < heads; ++h)
      for (int t = 0; t < lengths[i]; ++t)
        for (int x = 0; x < d; ++x) {
          size_t to = (size_t(offsets[i] + t) * heads + h) * d + x;
          size_t from = (size_t(h) * lengths[i] + t) * d + x;
          k[to] = prompts[i].k[from];
          v[to] = prompts[i].v[from];
        }
  ASSERT_LE(k.size() * 2, packed.tokenBytes);
  ASSERT_TRUE(packed.context->copyIn(packed.k, k.data(), k.size() * 2).ok());
  ASSERT_TRUE(packed.context->copyIn(packed.v, v.data(), v.size() * 2).ok());
  // Refused: a sequence twice, decreasing offsets; nothing changes.
  const int32_t twice[] = {2, 2, 1};
  Status s = packed.cache->appendPacked(0, packed.k, packed.v, twice,
                                        offsets.data(), 3, engine);
  EXPECT_EQ(s.code(), StatusCode::InvalidArgument);
  EXPECT_EQ(s.message(), "sequence 2 appears twice (packed sequences 1 and "
                         "an earlier one)");
  std::vector<int32_t> backwards = {0, 150, 100, 297};
  s = packed.cache->appendPacked(0, packed.k, packed.v, sequences,
                                 backwards.data(), 3, engine);
  EXPECT_EQ(s.message(), "offsets must not decrease: offsets[2] = 100 < "
                         "offsets[1] = 150");
  for (int seq = 0; seq < 3; ++seq)
    EXPECT_EQ(packed.cache->parts(0, seq).total(), 0);
  ASSERT_TRUE(packed.cache
                  ->appendPacked(0, packed.k, packed.v, sequences,
                                 offsets.data(), 3, engine)
                  .ok());
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(oneByOne.append(0, sequences[i], prompts[i], lengths[i]).ok());
  for (int seq = 0; seq < 3; ++seq)
    EXPECT_EQ(packed.cache->parts(0, seq).total(),
              oneByOne.cache->parts(0, seq).total());
  std::vector<uint16_t> query = randomQuery(c, rng);
  EXPECT_EQ(packed.attend(0, query, c.dtype),
            oneByOne.attend(0, query, c.dtype));
}

TEST(KVCache, APoolTooSmallForEveryPackedSequenceChangesNothing) {
  CacheConfig c = smallConfig("int4"); // 64-token pages, residual 64
  c.pages = 3;
  Harness h(BackendKind::Reference, c);
  // Two 200-token prompts, token-major: each quantizes 128 tokens in bulk
  // (2 pages), 4 pages for a pool of 3. Refused before any token is read.
  const int32_t sequences[] = {0, 1};
  const int32_t offsets[] = {0, 200, 400};
  TokenLayout engine{c.headDim, int64_t(c.kvHeads) * c.headDim};
  Status s = h.cache->appendPacked(0, h.k, h.v, sequences, offsets, 2, engine);
  EXPECT_EQ(s.code(), StatusCode::ResourceExhausted) << s.message();
  EXPECT_NE(s.message().find("appending 2 packed sequences needs 4, 3 are "
                             "free"),
            std::string::npos)
      << s.message();
  EXPECT_EQ(h.cache->parts(0, 0).total(), 0);
  EXPECT_EQ(h.cache->parts(0, 1).total(), 0);
  EXPECT_EQ(h.cache->pagesInUse(0), 0);
}

TEST(KVCache, StridesBelowHeadDimAreRefused) {
  CacheConfig c = smallConfig("kivi2");
  Harness h(BackendKind::Reference, c);
  Status s = h.cache->append(0, 0, h.k, h.v, 8, TokenLayout{64, 32});
  EXPECT_EQ(s.code(), StatusCode::InvalidArgument);
  EXPECT_EQ(s.message(), "the input's token stride 32 is below head_dim 64 "
                         "(strides are in elements; a row of head_dim "
                         "channels is contiguous)");
  EXPECT_EQ(h.cache->parts(0, 0).total(), 0);
}

TEST(KVCache, ReleasedPagesAreReusedAndAttentionStaysExact) {
  CacheConfig c = smallConfig("kivi2"); // 64-token pages
  Harness h(BackendKind::Emulator, c);
  ASSERT_EQ(h.cache->pageTokens(), 64);
  std::mt19937 rng(7);
  Tokens first = makeTokens(c, 300, rng);
  ASSERT_TRUE(h.append(0, 0, first, 300).ok()); // 224 quantized: 4 pages
  EXPECT_EQ(h.cache->pagesInUse(0), 4);
  EXPECT_EQ(h.cache->pagesInUse(1), 0);
  std::vector<uint16_t> query = randomQuery(c, rng);

  // Sequence 1 holds what sequence 0 held, in the pages sequence 0 gave
  // back: its attention equals sequence 0's before the release.
  std::vector<float> before = h.attend(0, query, c.dtype);
  ASSERT_TRUE(h.cache->release(0).ok());
  EXPECT_EQ(h.cache->pagesInUse(0), 0);
  EXPECT_EQ(h.cache->parts(0, 0).total(), 0);
  ASSERT_TRUE(h.append(0, 1, first, 300).ok());
  EXPECT_EQ(h.cache->pagesInUse(0), 4) << "the freed pages, not new ones";
  // The query of sequence 0 now asks sequence 1.
  std::vector<uint16_t> swapped = swapHalves(query);
  size_t half = query.size() / 2;
  std::vector<float> after = h.attend(0, swapped, c.dtype);
  for (size_t i = 0; i < half; ++i)
    ASSERT_EQ(after[half + i], before[i]) << i;
  EXPECT_FALSE(h.cache->release(2).ok());
}

TEST(KVCache, AFullPoolIsAResourceErrorThatChangesNothing) {
  CacheConfig c = smallConfig("int4"); // token axis: 64-token pages
  c.pages = 8; // shared by the two sequences (a full pool: 2 x 22)
  Harness h(BackendKind::Emulator, c);
  std::mt19937 rng(3);
  Tokens t = makeTokens(c, 400, rng);
  // 4 sink, 64 residual, 332 quantized in flushes of 32: 320 (5 pages),
  // 12 more in the residual. 420 tokens: 352 quantized, 6 pages.
  ASSERT_TRUE(h.append(0, 0, t, 400).ok());
  EXPECT_EQ(h.cache->parts(0, 0).quantized, 320);
  ASSERT_TRUE(h.append(0, 0, t, 20).ok());
  EXPECT_EQ(h.cache->parts(0, 0).quantized, 352);
  EXPECT_EQ(h.cache->pagesInUse(0), 6);
  // Sequence 1 needs 5 pages, 2 are left: refused, and the 2 it took back.
  Status s = h.append(0, 1, t, 400);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::ResourceExhausted) << s.message();
  EXPECT_NE(s.message().find("no free page left in the pool of 8 pages"),
            std::string::npos)
      << s.message();
  EXPECT_EQ(h.cache->parts(0, 1).total(), 0);
  EXPECT_EQ(h.cache->pagesInUse(0), 6);
  // Releasing sequence 0 makes room.
  ASSERT_TRUE(h.cache->release(0).ok());
  ASSERT_TRUE(h.append(0, 1, t, 400).ok());
  EXPECT_EQ(h.cache->parts(0, 1).total(), 400);
  EXPECT_EQ(h.cache->pagesInUse(0), 5);
  c.pages = 1000;
  Status status;
  EXPECT_FALSE(QuantizedKVCache::create(*h.context, c, &status));
  EXPECT_NE(status.message().find("pages must be in [0, 44]"),
            std::string::npos)
      << status.message();
}

// An append that flushes its residual several times and finds the pool
// empty at the third flush changes nothing either: not the counts, not the
// pages, and not the residual's tokens (the first two flushes had already
// shifted them), so it attends as a cache that never saw the append.
TEST(KVCache, AnAppendRefusedMidFlushLeavesTheResidualAsItWas) {
  CacheConfig c = smallConfig("kivi2"); // unit and flush 32, 64-token pages
  c.pages = 2;
  Harness subject(BackendKind::Reference, c);
  Harness control(BackendKind::Reference, c);
  std::mt19937 rng(12);
  Tokens first = makeTokens(c, 68, rng);  // 4 sink + 64 residual
  Tokens other = makeTokens(c, 132, rng); // takes one page
  Tokens more = makeTokens(c, 150, rng);
  for (Harness *h : {&subject, &control}) {
    ASSERT_TRUE(h->append(0, 0, first, 68).ok());
    ASSERT_TRUE(h->append(0, 1, other, 132).ok());
  }
  ASSERT_EQ(subject.cache->pagesInUse(0), 1);
  // Flushes at 32 and 64 fit the last free page; the one at 96 needs
  // another.
  Status s = subject.append(0, 0, more, 150);
  ASSERT_EQ(s.code(), StatusCode::ResourceExhausted) << s.message();
  EXPECT_EQ(subject.cache->parts(0, 0).total(), 68);
  EXPECT_EQ(subject.cache->pagesInUse(0), 1);
  std::vector<uint16_t> query = randomQuery(c, rng);
  EXPECT_EQ(subject.attend(0, query, c.dtype),
            control.attend(0, query, c.dtype));
}

TEST(KVCache, FailedAppendsChangeNothing) {
  CacheConfig c = smallConfig("int4");
  c.capacity = 100;
  Harness h(BackendKind::Emulator, c);
  std::mt19937 rng(2);
  Tokens t = makeTokens(c, 90, rng);
  ASSERT_TRUE(h.append(0, 1, t, 90).ok());
  std::vector<uint16_t> query(size_t(c.batch) * c.queryHeads * c.headDim,
                              ref::toHalfBits(0.5f, c.dtype));
  std::vector<float> before = h.attend(0, query, c.dtype);
  QuantizedKVCache::Parts parts = h.cache->parts(0, 1);

  Status s = h.append(0, 1, t, 11);
  EXPECT_EQ(s.code(), StatusCode::InvalidArgument);
  EXPECT_EQ(s.message(), "appending 11 tokens to sequence 1 of layer 0 would "
                         "hold 101 tokens, more than the capacity 100");
  EXPECT_EQ(h.cache->append(2, 0, h.k, h.v, 1).message(),
            "layer 2 is outside [0, 2)");
  EXPECT_EQ(h.cache->append(0, 5, h.k, h.v, 1).message(),
            "sequence 5 is outside [0, 2)");
  EXPECT_EQ(h.cache->append(0, 0, nullptr, h.v, 1).message(), "k is null");
  EXPECT_EQ(h.cache->attend(3, h.q, h.out).message(),
            "layer 3 is outside [0, 2)");
  QuantizedKVCache::Parts after = h.cache->parts(0, 1);
  EXPECT_EQ(after.total(), parts.total());
  EXPECT_EQ(after.quantized, parts.quantized);
  EXPECT_EQ(h.attend(0, query, c.dtype), before);
}

// Speculative decoding's rollback: the newest tokens, still in the fp16
// residual, go; the device lengths follow at the next call, so the
// attention kernel (on the emulator) sees the cache as if they had never
// come. Quantized tokens cannot go, and asking changes nothing.
TEST(KVCache, TruncateDropsTheNewestFp16TokensOnly) {
  CacheConfig c = smallConfig("kivi2");
  Harness cut(BackendKind::Emulator, c), kept(BackendKind::Emulator, c);
  std::mt19937 rng(4);
  Tokens prompt = makeTokens(c, 50, rng), drafts = makeTokens(c, 10, rng),
         longer = makeTokens(c, 300, rng);
  for (int layer = 0; layer < c.layers; ++layer) {
    ASSERT_TRUE(cut.append(layer, 0, prompt, 50).ok());
    ASSERT_TRUE(kept.append(layer, 0, prompt, 50).ok());
    ASSERT_TRUE(cut.append(layer, 0, drafts, 10).ok());
    ASSERT_TRUE(cut.append(layer, 1, longer, 300).ok());
    ASSERT_TRUE(kept.append(layer, 1, longer, 300).ok());
  }
  ASSERT_TRUE(cut.cache->truncate(0, 10).ok());
  std::vector<uint16_t> query = randomQuery(c, rng);
  EXPECT_EQ(cut.attend(1, query, c.dtype), kept.attend(1, query, c.dtype));

  QuantizedKVCache::Parts parts = cut.cache->parts(0, 1);
  ASSERT_GT(parts.quantized, 0);
  EXPECT_EQ(cut.cache->truncatableTokens(1), parts.residual);
  EXPECT_EQ(cut.cache->truncatableTokens(2), 0) << "outside the batch";
  Status s = cut.cache->truncate(1, parts.residual + 1);
  EXPECT_EQ(s.code(), StatusCode::InvalidArgument);
  EXPECT_EQ(s.message(), "sequence 1 layer 0: cannot remove " +
                             std::to_string(parts.residual + 1) +
                             " tokens, only the last " +
                             std::to_string(parts.residual) +
                             " are still fp16 (the rest are quantized)");
  EXPECT_EQ(cut.cache->parts(0, 1).total(), parts.total());
  EXPECT_EQ(cut.attend(1, query, c.dtype), kept.attend(1, query, c.dtype));
}

TEST(KVCache, MemoryAccounting) {
  CacheConfig c = smallConfig("kivi2");
  Harness h(BackendKind::Emulator, c);
  std::mt19937 rng(3);
  Tokens t = makeTokens(c, 390, rng);
  ASSERT_TRUE(h.append(0, 0, t, 390).ok());
  MemoryUse m = h.cache->memory();
  // 390 tokens x (K + V) x 2 heads x 64 x 2 bytes.
  EXPECT_EQ(m.fp16Bytes, 390u * 2 * 2 * 64 * 2);
  QuantizedKVCache::Parts p = h.cache->parts(0, 0);
  EXPECT_EQ(m.sinkBytes, uint64_t(p.sink) * 2 * 2 * 64 * 2);
  EXPECT_EQ(m.residualBytes, uint64_t(p.residual) * 2 * 2 * 64 * 2);
  // 2-bit codes + fp16 scale and zero per 32 elements: 3 bits an element.
  EXPECT_EQ(m.quantizedBytes, uint64_t(p.quantized) * 2 * (2 * 64 * 3 / 8));
  EXPECT_GT(m.ratio(), 1.5);
}

// A bf16 cache keeps fp32 scales: the presets pick them when the dtype is
// set first, and a bf16 configuration with fp16 scales is refused by name.
TEST(KVCache, Bf16CachesKeepFp32Scales) {
  CacheConfig c;
  c.dtype = HalfType::BF16;
  ASSERT_TRUE(applyPreset("kivi2", c));
  EXPECT_TRUE(c.key.fp32Scales && c.value.fp32Scales);
  std::unique_ptr<Context> context = makeContext(BackendKind::Reference);
  ASSERT_TRUE(context);
  Status status;
  EXPECT_TRUE(QuantizedKVCache::create(*context, c, &status))
      << status.message();
  c.key.fp32Scales = false;
  EXPECT_FALSE(QuantizedKVCache::create(*context, c, &status));
  EXPECT_EQ(status.code(), StatusCode::InvalidArgument);
  EXPECT_NE(status.message().find("key bf16 input needs fp32 scales"),
            std::string::npos)
      << status.message();
}

/// Prefill, then >= 1000 decode steps with interleaved layers and sequences
/// of unequal lengths, residual flushes included: the emulated cache's
/// attention equals the reference cache's, for every preset.
class CacheVsReference : public ::testing::TestWithParam<std::string> {};

TEST_P(CacheVsReference, AttentionMatchesOverAThousandDecodeSteps) {
  CacheConfig c = smallConfig(GetParam());
  Harness emulated(BackendKind::Emulator, c);
  Harness reference(BackendKind::Reference, c);
  std::mt19937 rng(11);
  for (int seq = 0; seq < c.batch; ++seq)
    for (int layer = 0; layer < c.layers; ++layer) {
      int n = seq == 0 ? 200 : 37; // unequal lengths
      Tokens t = makeTokens(c, n, rng);
      ASSERT_TRUE(emulated.append(layer, seq, t, n).ok());
      ASSERT_TRUE(reference.append(layer, seq, t, n).ok());
    }
  std::normal_distribution<float> normal;
  int compared = 0, flushes = 0;
  for (int step = 0; step < 1000; ++step) {
    bool flushed = false;
    for (int layer = 0; layer < c.layers; ++layer)
      for (int seq = c.batch - 1; seq >= 0; --seq) { // interleaved order
        Tokens t = makeTokens(c, 1, rng);
        int before = emulated.cache->parts(layer, seq).quantized;
        Status a = emulated.append(layer, seq, t, 1);
        Status b = reference.append(layer, seq, t, 1);
        ASSERT_TRUE(a.ok() && b.ok()) << a.message() << b.message();
        flushed |= emulated.cache->parts(layer, seq).quantized != before;
        ASSERT_EQ(emulated.cache->parts(layer, seq).total(),
                  reference.cache->parts(layer, seq).total());
      }
    flushes += flushed;
    if (step % 50 != 49 && !(flushed && flushes % 4 == 1))
      continue;
    std::vector<uint16_t> query(size_t(c.batch) * c.queryHeads * c.headDim);
    for (uint16_t &x : query)
      x = ref::toHalfBits(normal(rng), c.dtype);
    for (int layer = 0; layer < c.layers; ++layer) {
      std::vector<float> a = emulated.attend(layer, query, c.dtype);
      std::vector<float> b = reference.attend(layer, query, c.dtype);
      double scale = 0;
      for (float x : b)
        scale = std::max(scale, double(std::fabs(x)));
      for (size_t i = 0; i < a.size(); ++i)
        ASSERT_LE(std::fabs(double(a[i]) - b[i]),
                  1e-3 * scale + std::ldexp(std::fabs(double(b[i])), -10))
            << "step " << step << " layer " << layer << " element " << i;
      ++compared;
    }
  }
  EXPECT_GE(flushes, 20) << "the residual must have been flushed repeatedly";
  EXPECT_GE(compared, 40);
  EXPECT_EQ(emulated.cache->parts(0, 0).total(), 1200);
}

INSTANTIATE_TEST_SUITE_P(Presets, CacheVsReference,
                         ::testing::Values("kivi2", "kivi4", "hf_quanto_int4",
                                           "int8", "int4"));

/// 2000 seeded operations (prefill, append, release, attend) on a cache
/// whose small shared pool also serves a fourth, noise sequence that comes
/// and goes (so the real sequences' pages are scattered and reused), and
/// the same operations on a cache with a full pool and no noise: the real
/// sequences' attention must be the same bit for bit, and a refused append
/// must leave the cache as it was.
TEST(KVCache, RandomOperationsOnASharedPoolMatchAnUnsharedCache) {
  CacheConfig c = smallConfig("kivi2"); // 64-token pages, 32-token unit
  c.layers = 1;
  c.batch = 4;
  c.capacity = 512;
  c.residual = 32;
  CacheConfig shared = c;
  shared.pages = 12; // of 4 x 8
  Harness subject(BackendKind::Reference, shared);
  Harness control(BackendKind::Reference, c);
  ASSERT_TRUE(subject.cache && control.cache);
  std::mt19937 rng(2000);
  Tokens source = makeTokens(c, 400, rng);
  std::vector<uint16_t> query = randomQuery(c, rng);
  std::uniform_int_distribution<int> pick(0, 99), sequence(0, 2),
      prefill(33, 300), decode(1, 5);
  int refused = 0, attends = 0, releases = 0;
  for (int op = 0; op < 2000; ++op) {
    int kind = pick(rng);
    if (kind < 15) { // the noise sequence comes or goes
      if (subject.cache->parts(0, 3).total() > 0 && kind < 7)
        ASSERT_TRUE(subject.cache->release(3).ok());
      else
        (void)subject.append(0, 3, source, decode(rng) * 20);
      continue;
    }
    int seq = sequence(rng);
    if (kind < 20) {
      ASSERT_TRUE(subject.cache->release(seq).ok());
      ASSERT_TRUE(control.cache->release(seq).ok());
      ++releases;
      continue;
    }
    if (kind < 35) {
      std::vector<float> a = subject.attend(0, query, c.dtype);
      std::vector<float> b = control.attend(0, query, c.dtype);
      size_t real = size_t(3) * c.queryHeads * c.headDim;
      ASSERT_TRUE(std::equal(a.begin(), a.begin() + real, b.begin()))
          << "operation " << op;
      ++attends;
      continue;
    }
    QuantizedKVCache::Parts before = subject.cache->parts(0, seq);
    int n = before.total() == 0 ? prefill(rng) : decode(rng);
    if (before.total() + n > c.capacity) {
      ASSERT_TRUE(subject.cache->release(seq).ok());
      ASSERT_TRUE(control.cache->release(seq).ok());
      continue;
    }
    int pagesBefore = subject.cache->pagesInUse(0);
    Status s = subject.append(0, seq, source, n);
    if (!s.ok()) {
      ASSERT_EQ(s.code(), StatusCode::ResourceExhausted) << s.message();
      QuantizedKVCache::Parts after = subject.cache->parts(0, seq);
      ASSERT_EQ(after.total(), before.total());
      ASSERT_EQ(subject.cache->pagesInUse(0), pagesBefore);
      ++refused;
      continue;
    }
    ASSERT_TRUE(control.append(0, seq, source, n).ok());
  }
  EXPECT_GT(attends, 100);
  EXPECT_GT(releases, 50);
  EXPECT_GT(refused, 0) << "the shared pool never ran out: the test did not "
                           "exercise a full pool";
}

/// A fork shares its source's whole pages and copies the rest: after both
/// grow apart, each attends exactly as a sequence that was fed the same
/// tokens without a fork; a shared page is freed by its last holder.
TEST(KVCache, AForkSharesWholePagesAndGrowsApart) {
  CacheConfig c = smallConfig("kivi2"); // 64-token pages, 32-token unit
  c.layers = 2;
  // No residual at rest: the tokens that follow the fork reach the store
  // (and its partial page) at the first flush.
  c.residual = 0;
  Harness subject(BackendKind::Reference, c);
  Harness control(BackendKind::Reference, c);
  std::mt19937 rng(5);
  Tokens prefix = makeTokens(c, 300, rng);
  Tokens a = makeTokens(c, 100, rng), b = makeTokens(c, 100, rng);
  for (int layer = 0; layer < c.layers; ++layer) {
    ASSERT_TRUE(subject.append(layer, 0, prefix, 300).ok());
    ASSERT_TRUE(control.append(layer, 0, prefix, 300).ok());
    ASSERT_TRUE(control.append(layer, 1, prefix, 300).ok());
  }
  // 288 quantized tokens: 4 whole pages (shared) and a partial one (copied).
  EXPECT_EQ(subject.cache->parts(0, 0).quantized, 288);
  EXPECT_EQ(subject.cache->pagesInUse(0), 5);
  ASSERT_TRUE(subject.cache->fork(0, 1).ok());
  EXPECT_EQ(subject.cache->pagesInUse(0), 6);
  EXPECT_EQ(subject.cache->parts(1, 1).total(), 300);
  for (int layer = 0; layer < c.layers; ++layer)
    for (auto [seq, tokens] : {std::pair{0, &a}, std::pair{1, &b}})
      for (int chunk = 0; chunk < 4; ++chunk) {
        ASSERT_TRUE(subject.append(layer, seq, *tokens, 25).ok());
        ASSERT_TRUE(control.append(layer, seq, *tokens, 25).ok());
      }
  std::vector<uint16_t> query = randomQuery(c, rng);
  for (int layer = 0; layer < c.layers; ++layer)
    EXPECT_EQ(subject.attend(layer, query, c.dtype),
              control.attend(layer, query, c.dtype))
        << "layer " << layer;

  int shared = 4, inUse = subject.cache->pagesInUse(0);
  ASSERT_TRUE(subject.cache->release(0).ok());
  EXPECT_GE(subject.cache->pagesInUse(0), shared)
      << "the shared pages stay with sequence 1";
  EXPECT_LT(subject.cache->pagesInUse(0), inUse);
  ASSERT_TRUE(subject.cache->release(1).ok());
  EXPECT_EQ(subject.cache->pagesInUse(0), 0);

  EXPECT_FALSE(subject.cache->fork(1, 1).ok());
  ASSERT_TRUE(subject.append(0, 0, prefix, 300).ok());
  ASSERT_TRUE(subject.append(0, 1, prefix, 10).ok());
  Status notEmpty = subject.cache->fork(0, 1);
  EXPECT_EQ(notEmpty.message(),
            "target sequence 1 is not empty: release it first");
}

TEST(KVCache, AForkWithoutAPageForItsPartialPageChangesNothing) {
  CacheConfig c = smallConfig("int4"); // 64-token pages
  c.pages = 6;
  Harness h(BackendKind::Reference, c);
  std::mt19937 rng(9);
  Tokens t = makeTokens(c, 400, rng);
  ASSERT_TRUE(h.append(0, 1, t, 400).ok()); // 320 quantized: 5 pages,
  ASSERT_TRUE(h.append(0, 1, t, 20).ok());  // 352: 6, the last partial
  ASSERT_EQ(h.cache->pagesInUse(0), 6);
  Status s = h.cache->fork(1, 0);
  EXPECT_EQ(s.code(), StatusCode::ResourceExhausted) << s.message();
  EXPECT_EQ(h.cache->parts(0, 0).total(), 0);
  EXPECT_EQ(h.cache->parts(1, 0).total(), 0);
  EXPECT_EQ(h.cache->pagesInUse(0), 6);
  // The shared pages' holders were undone: releasing the source frees all.
  ASSERT_TRUE(h.cache->release(1).ok());
  EXPECT_EQ(h.cache->pagesInUse(0), 0);
}

/// A sequence shipped as bytes: restored into another cache (another
/// context), it attends bit for bit as the original; the bytes are several
/// times fewer than fp16's; damaged or foreign bytes change nothing.
TEST(KVCache, ASnapshotRestoresElsewhereBitForBitAndIsChecked) {
  CacheConfig c = smallConfig("kivi2");
  Harness source(BackendKind::Reference, c);
  Harness target(BackendKind::Reference, c);
  std::mt19937 rng(13);
  Tokens t = makeTokens(c, 400, rng);
  for (int layer = 0; layer < c.layers; ++layer)
    for (int chunk = 0; chunk < 3; ++chunk)
      ASSERT_TRUE(source.append(layer, 0, t, 400).ok());
  std::string bytes;
  ASSERT_TRUE(source.cache->snapshot(0, bytes).ok());
  uint64_t fp16 = uint64_t(c.layers) * 2 * c.kvHeads * 1200 * c.headDim * 2;
  std::printf("  snapshot of 1200 tokens x %d layers: %zu bytes, fp16 %llu "
              "(%.2fx fewer)\n",
              c.layers, bytes.size(), (unsigned long long)fp16,
              double(fp16) / double(bytes.size()));
  EXPECT_GT(double(fp16) / double(bytes.size()), 3.0);

  // Damaged, truncated, foreign: refused, nothing changed.
  std::string damaged = bytes;
  damaged[damaged.size() / 2] ^= 1;
  std::string foreign = bytes;
  foreign.replace(foreign.find("kivi2") == std::string::npos
                      ? foreign.find("k=2c32")
                      : foreign.find("kivi2"),
                  6, "k=4c32");
  for (const std::string &bad : {damaged, bytes.substr(0, bytes.size() - 1),
                                 foreign, std::string("garbage")}) {
    Status s = target.cache->restore(1, bad);
    EXPECT_EQ(s.code(), StatusCode::InvalidArgument) << s.message();
    EXPECT_EQ(target.cache->parts(0, 1).total(), 0);
    EXPECT_EQ(target.cache->pagesInUse(0), 0);
  }
  EXPECT_NE(target.cache->restore(1, damaged).message().find("checksum"),
            std::string::npos);
  EXPECT_NE(target.cache->restore(1, foreign)
                .message()
                .find("another cache configuration"),
            std::string::npos);

  ASSERT_TRUE(target.cache->restore(1, bytes).ok());
  EXPECT_EQ(target.cache->parts(1, 1).total(), 1200);
  std::vector<uint16_t> query = randomQuery(c, rng);
  // Sequence 1 of the target is sequence 0 of the source.
  std::vector<uint16_t> swapped = swapHalves(query);
  size_t half = query.size() / 2;
  for (int layer = 0; layer < c.layers; ++layer) {
    std::vector<float> a = source.attend(layer, query, c.dtype);
    std::vector<float> b = target.attend(layer, swapped, c.dtype);
    EXPECT_TRUE(std::equal(a.begin(), a.begin() + half, b.begin() + half))
        << "layer " << layer;
  }
  EXPECT_EQ(target.cache->restore(1, bytes).message(),
            "sequence 1 is not empty: release it first");
}

} // namespace

namespace {
// A static (FP8) cache's snapshot stores codes only: it restores bit for
// bit into a cache with the same scales and is refused by one whose scales
// differ (the same bytes would mean other values there).
TEST(KVCache, StaticSnapshotsRestoreOnlyWithTheSameScales) {
  CacheConfig c = smallConfig("fp8_e4m3");
  c.keyScales = {0.01f, 0.02f};
  c.valueScales = {0.005f, 0.006f};
  CacheConfig other = c;
  other.keyScales[1] = 0.03f;
  Harness source(BackendKind::Reference, c), same(BackendKind::Reference, c),
      different(BackendKind::Reference, other);
  std::mt19937 rng(17);
  Tokens t = makeTokens(c, 300, rng);
  ASSERT_TRUE(source.append(0, 0, t, 300).ok());
  ASSERT_GT(source.cache->parts(0, 0).quantized, 0);
  std::string bytes;
  ASSERT_TRUE(source.cache->snapshot(0, bytes).ok());
  Status refused = different.cache->restore(0, bytes);
  EXPECT_EQ(refused.code(), StatusCode::InvalidArgument);
  EXPECT_NE(refused.message().find("scales="), std::string::npos)
      << refused.message();
  EXPECT_EQ(different.cache->parts(0, 0).total(), 0);
  ASSERT_TRUE(same.cache->restore(0, bytes).ok());
  std::vector<uint16_t> q = randomQuery(c, rng);
  EXPECT_EQ(same.attend(0, q, c.dtype), source.attend(0, q, c.dtype));
}
} // namespace
