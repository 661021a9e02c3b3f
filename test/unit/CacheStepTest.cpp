//===- CacheStepTest.cpp - QuantizedKVCache::appendStep
//---------------------===//
//
// The batched decode step (one launch of the generated append kernel per
// layer) against what it replaces: one append() per sequence. Both run the
// same host routing, so every count, page and attention output must agree
// bit for bit — on the emulator (the generated CUDA) and on the reference
// backend (its C++ description).
//
//===----------------------------------------------------------------------===//

#include "SmallCacheConfig.h"
#include "TestContext.h"
#include "kvq/QuantizedKVCache.h"
#include "kvq/Runtime/Reference.h"

#include "llvm/Support/FileSystem.h"

#include <gtest/gtest.h>

#include <random>

using namespace kvq;

namespace {

std::unique_ptr<Context> makeContext(BackendKind backend) {
  return kvq::testing::makeTestContext(backend, "kvq-cache-step-test");
}

std::vector<uint16_t> randomHalves(size_t n, HalfType dtype,
                                   std::mt19937 &rng) {
  std::normal_distribution<float> normal;
  std::vector<uint16_t> out(n);
  for (size_t i = 0; i < n; ++i)
    out[i] = ref::toHalfBits(normal(rng) * (i % 64 == 5 ? 8.0f : 1.0f), dtype);
  return out;
}

/// A cache and device buffers for [batch or prompt tokens, kv heads,
/// head_dim] inputs and the batch's queries and outputs.
struct Subject {
  CacheConfig config;
  std::unique_ptr<Context> context;
  std::unique_ptr<QuantizedKVCache> cache;
  void *k = nullptr, *v = nullptr, *q = nullptr, *out = nullptr;
  size_t rows; ///< token rows the input buffers hold

  Subject(BackendKind backend, const CacheConfig &c) : config(c) {
    context = makeContext(backend);
    Status status;
    cache = QuantizedKVCache::create(*context, c, &status);
    EXPECT_TRUE(cache) << status.message();
    rows = size_t(std::max(c.batch, 400)) * c.kvHeads;
    size_t queryBytes = size_t(c.batch) * c.queryHeads * c.headDim * 2;
    k = context->allocate(rows * c.headDim * 2, &status);
    v = context->allocate(rows * c.headDim * 2, &status);
    q = context->allocate(queryBytes, &status);
    out = context->allocate(queryBytes, &status);
  }
  ~Subject() {
    cache.reset();
    for (void *p : {k, v, q, out})
      context->release(p);
  }
  void load(const std::vector<uint16_t> &keys,
            const std::vector<uint16_t> &values) {
    ASSERT_LE(keys.size(), rows * config.headDim);
    ASSERT_TRUE(context->copyIn(k, keys.data(), keys.size() * 2).ok());
    ASSERT_TRUE(context->copyIn(v, values.data(), values.size() * 2).ok());
  }
  /// Every sequence's attention output in `layer`, as half bits.
  std::vector<uint16_t> attend(int layer, const std::vector<uint16_t> &query) {
    EXPECT_TRUE(context->copyIn(q, query.data(), query.size() * 2).ok());
    Status s = cache->attend(layer, q, out);
    EXPECT_TRUE(s.ok()) << s.message();
    std::vector<uint16_t> bits(query.size());
    EXPECT_TRUE(context->copyOut(bits.data(), out, bits.size() * 2).ok());
    return bits;
  }
};

/// Feeds `stepped` by appendStep and `control` by one append per sequence,
/// the same tokens, and checks they hold the same cache.
struct Pair {
  Subject stepped, control;
  std::mt19937 rng{7};
  Pair(BackendKind backend, const CacheConfig &c)
      : stepped(backend, c), control(backend, c) {}

  const CacheConfig &config() const { return stepped.config; }

  /// A prompt of `n` tokens for sequence `seq` of every layer, both alike.
  void prefill(int seq, int n) {
    const CacheConfig &c = config();
    size_t elements = size_t(c.kvHeads) * n * c.headDim;
    std::vector<uint16_t> k = randomHalves(elements, c.dtype, rng);
    std::vector<uint16_t> v = randomHalves(elements, c.dtype, rng);
    for (Subject *s : {&stepped, &control}) {
      s->load(k, v);
      for (int layer = 0; layer < c.layers; ++layer) {
        Status status = s->cache->append(layer, seq, s->k, s->v, n);
        ASSERT_TRUE(status.ok()) << status.message();
      }
    }
  }

  /// One decode step of every layer: a token per sequence that holds any.
  void step() {
    const CacheConfig &c = config();
    size_t elements = size_t(c.batch) * c.kvHeads * c.headDim;
    std::vector<uint16_t> k = randomHalves(elements, c.dtype, rng);
    std::vector<uint16_t> v = randomHalves(elements, c.dtype, rng);
    stepped.load(k, v);
    control.load(k, v);
    size_t sequenceBytes = size_t(c.kvHeads) * c.headDim * 2;
    for (int layer = 0; layer < c.layers; ++layer) {
      Status s = stepped.cache->appendStep(layer, stepped.k, stepped.v);
      ASSERT_TRUE(s.ok()) << s.message();
      for (int seq = 0; seq < c.batch; ++seq) {
        if (control.cache->parts(layer, seq).total() == 0)
          continue;
        auto at = [&](void *p) {
          return static_cast<char *>(p) + seq * sequenceBytes;
        };
        s = control.cache->append(layer, seq, at(control.k), at(control.v), 1);
        ASSERT_TRUE(s.ok()) << s.message();
      }
    }
  }

  void expectSame(const std::string &when) {
    SCOPED_TRACE(when);
    const CacheConfig &c = config();
    for (int layer = 0; layer < c.layers; ++layer) {
      for (int seq = 0; seq < c.batch; ++seq) {
        QuantizedKVCache::Parts a = stepped.cache->parts(layer, seq),
                                b = control.cache->parts(layer, seq);
        EXPECT_EQ(a.sink, b.sink) << "sequence " << seq;
        EXPECT_EQ(a.quantized, b.quantized) << "sequence " << seq;
        EXPECT_EQ(a.residual, b.residual) << "sequence " << seq;
      }
      EXPECT_EQ(stepped.cache->pagesInUse(layer),
                control.cache->pagesInUse(layer));
      std::vector<uint16_t> query = randomHalves(
          size_t(c.batch) * c.queryHeads * c.headDim, c.dtype, rng);
      EXPECT_EQ(stepped.attend(layer, query), control.attend(layer, query))
          << "layer " << layer;
    }
  }
};

CacheConfig stepConfig(const char *preset) {
  CacheConfig c = kvq::testing::smallCacheConfig(preset);
  c.batch = 4;
  c.sink = 4;
  return c;
}

} // namespace

// For every preset: sequences at different points (a long prompt, one still
// filling its sink, an empty one that then arrives, one released midway and
// its pages reused) stepped 150 times — every residual flushes into pages,
// new ones taken by the kernel from the pool — hold what one append per
// sequence gives them, bit for bit.
TEST(CacheStep, OneLaunchPerLayerMatchesAppendPerSequence) {
  for (BackendKind backend : kvq::testing::kCpuBackends)
    for (const char *preset : kvq::testing::kPresets) {
      SCOPED_TRACE(kvq::testing::caseName(preset, backend));
      CacheConfig c = stepConfig(preset);
      c.layers = 1;
      Pair pair(backend, c);
      pair.prefill(0, 300);
      pair.prefill(1, 2);
      pair.prefill(3, 150);
      for (int i = 0; i < 150; ++i) {
        pair.step();
        if (::testing::Test::HasFatalFailure())
          return;
        if (i == 60) {
          pair.expectSame("after 61 steps");
          for (Subject *s : {&pair.stepped, &pair.control})
            ASSERT_TRUE(s->cache->release(3).ok());
          pair.prefill(2, 200); // arrives, takes the freed pages
        }
      }
      pair.expectSame("after 150 steps");
      EXPECT_GT(pair.stepped.cache->parts(0, 1).quantized, 0)
          << "the short prompt's residual flushed too";
    }
}

// A snapshot, a fork and a host-side append after steps whose pages the
// kernel took see those pages (the host reads the block table back first).
TEST(CacheStep, HostCallsAfterStepsSeeTheKernelsPages) {
  CacheConfig c = stepConfig("kivi2");
  Pair pair(BackendKind::Emulator, c);
  pair.prefill(0, 300);
  for (int i = 0; i < 70; ++i) // two flushes: a new page
    pair.step();
  pair.expectSame("stepped");
  for (Subject *s : {&pair.stepped, &pair.control}) {
    ASSERT_TRUE(s->cache->fork(0, 1).ok());
    ASSERT_TRUE(s->cache->append(0, 0, s->k, s->v, 40).ok());
  }
  pair.expectSame("forked and appended");
  std::string a, b;
  ASSERT_TRUE(pair.stepped.cache->snapshot(0, a).ok());
  ASSERT_TRUE(pair.control.cache->snapshot(0, b).ok());
  EXPECT_EQ(a, b);
}

// Refusals change nothing: a pool without the page a flush needs, a
// sequence at capacity, a cache without a residual, strides below head_dim.
TEST(CacheStep, RefusedStepsChangeNothing) {
  CacheConfig c = stepConfig("int4"); // 64-token pages, residual 64
  c.layers = 1;
  c.batch = 2;
  c.pages = 2; // sequence 0's prompt takes both
  Subject s(BackendKind::Reference, c);
  std::mt19937 rng(3);
  size_t prompt = size_t(c.kvHeads) * 195 * c.headDim;
  s.load(randomHalves(prompt, c.dtype, rng),
         randomHalves(prompt, c.dtype, rng));
  ASSERT_TRUE(s.cache->append(0, 0, s.k, s.v, 195).ok()); // 4 + 96 + 95
  ASSERT_TRUE(s.cache->append(0, 1, s.k, s.v, 99).ok());  // 4 + 0 + 95
  QuantizedKVCache::Parts p0 = s.cache->parts(0, 0), p1 = s.cache->parts(0, 1);
  ASSERT_EQ(p0.quantized % s.cache->pageTokens(), 32) << "a partial page";
  ASSERT_EQ(s.cache->pagesInUse(0), 2) << "the pool is full";
  // Sequence 0 flushes into its partial page; sequence 1's residual (95
  // tokens) would flush into a new page: none is free.
  Status refused = s.cache->appendStep(0, s.k, s.v);
  EXPECT_EQ(refused.code(), StatusCode::ResourceExhausted) << refused.message();
  EXPECT_NE(refused.message().find("a decode step of 2 sequences needs 1, 0 "
                                   "are free"),
            std::string::npos)
      << refused.message();
  EXPECT_EQ(s.cache->parts(0, 0).total(), p0.total());
  EXPECT_EQ(s.cache->parts(0, 1).total(), p1.total());

  Status bad = s.cache->appendStep(0, s.k, s.v, TokenLayout{32, 128});
  EXPECT_EQ(bad.code(), StatusCode::InvalidArgument);
  EXPECT_NE(bad.message().find("head stride 32"), std::string::npos)
      << bad.message();
  EXPECT_EQ(s.cache->appendStep(1, s.k, s.v).code(),
            StatusCode::InvalidArgument);
  EXPECT_EQ(s.cache->appendStep(0, nullptr, s.v).code(),
            StatusCode::InvalidArgument);

  CacheConfig full = stepConfig("int8");
  full.layers = 1;
  full.capacity = 10;
  Subject f(BackendKind::Reference, full);
  size_t ten = size_t(full.kvHeads) * 10 * full.headDim;
  f.load(randomHalves(ten, full.dtype, rng),
         randomHalves(ten, full.dtype, rng));
  ASSERT_TRUE(f.cache->append(0, 2, f.k, f.v, 10).ok());
  Status atCapacity = f.cache->appendStep(0, f.k, f.v);
  EXPECT_EQ(atCapacity.code(), StatusCode::InvalidArgument);
  EXPECT_NE(atCapacity.message().find("sequence 2 of layer 0 holds 10 tokens"),
            std::string::npos)
      << atCapacity.message();
  EXPECT_EQ(f.cache->parts(0, 2).total(), 10);

  CacheConfig none = stepConfig("int8");
  none.layers = 1;
  none.residual = 0;
  Subject n(BackendKind::Reference, none);
  Status noResidual = n.cache->appendStep(0, n.k, n.v);
  EXPECT_EQ(noResidual.code(), StatusCode::InvalidArgument);
  EXPECT_NE(noResidual.message().find("residual of at least one token"),
            std::string::npos)
      << noResidual.message();
}
