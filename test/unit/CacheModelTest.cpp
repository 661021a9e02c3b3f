//===- CacheModelTest.cpp - the paged cache against a plain model ---------===//
//
// Seeded random operations — prefill, host appends, batched decode steps,
// forks, releases, attends — on a QuantizedKVCache whose small pool the
// sequences share, and on a plain model of it: each sequence a list of its
// tokens in fp32, its first `sink` kept, the next `quantized` (as the cache
// reports them) quantized and dequantized group by group with the reference
// quantizer, the rest kept; attention in double. No pages, block tables,
// residual shifts or flushes in the model: whatever the cache does with
// them must not show in its attention.
//
//===----------------------------------------------------------------------===//

#include "SmallCacheConfig.h"
#include "TestContext.h"
#include "kvq/BufferSizes.h"
#include "kvq/QuantizedKVCache.h"
#include "kvq/Runtime/Reference.h"
#include "kvq/Runtime/Workload.h"

#include "llvm/Support/FileSystem.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>

using namespace kvq;

namespace {

/// The normwise error of `want.size()` half outputs against the model's,
/// a NaN (an unwritten output) as infinite.
double errorAgainst(const uint16_t *bits, const std::vector<double> &want,
                    HalfType dtype) {
  std::vector<float> got, expected(want.begin(), want.end());
  for (size_t i = 0; i < want.size(); ++i)
    got.push_back(ref::fromHalfBits(bits[i], dtype));
  return normwiseError(got, expected);
}

/// One sequence of the model: its tokens, [token][kv head][channel].
struct ModelSequence {
  std::vector<float> k, v;
  int tokens = 0;
};

class Model {
public:
  explicit Model(const CacheConfig &c) : c(c), sequences(c.batch) {}

  void append(int seq, const std::vector<float> &k, const std::vector<float> &v,
              int n) {
    ModelSequence &s = sequences[seq];
    s.k.insert(s.k.end(), k.begin(), k.begin() + size_t(n) * row());
    s.v.insert(s.v.end(), v.begin(), v.begin() + size_t(n) * row());
    s.tokens += n;
  }
  void release(int seq) { sequences[seq] = ModelSequence(); }
  /// How the model picks zero points (a cache's prefill may search them).
  ZeroPointSearch zeroPoints = ZeroPointSearch::MinMax;
  void fork(int from, int to) { sequences[to] = sequences[from]; }
  int tokens(int seq) const { return sequences[seq].tokens; }

  /// Attention of `q` ([batch, query heads, d]) over each sequence, its
  /// tokens [sink, sink + quantized) seen through their quantization.
  std::vector<double>
  attend(const std::vector<float> &q,
         const std::vector<QuantizedKVCache::Parts> &parts) {
    size_t perRow = size_t(c.queryHeads) * c.headDim;
    std::vector<double> out;
    for (int b = 0; b < c.batch; ++b) {
      std::vector<double> row =
          attendRow(&q[b * perRow], b, sequences[b].tokens, parts[b]);
      out.insert(out.end(), row.begin(), row.end());
    }
    return out;
  }

  /// Sequence `seq`'s keys and values as attention sees them: tokens
  /// [p.sink, p.sink + p.quantized) through their quantization.
  struct Seen {
    std::vector<float> k, v;
  };
  Seen seenBy(int seq, const QuantizedKVCache::Parts &p) const {
    return {seen(sequences[seq].k, p, c.key, c.keyScales, c.keyZeros),
            seen(sequences[seq].v, p, c.value, c.valueScales, c.valueZeros)};
  }

  /// One query row (query heads x d) over the first `horizon` tokens of
  /// sequence `seq`, its tokens [p.sink, p.sink + p.quantized) quantized.
  std::vector<double> attendRow(const float *query, int seq, int horizon,
                                const QuantizedKVCache::Parts &p) const {
    return attendRow(query, seenBy(seq, p), horizon);
  }
  std::vector<double> attendRow(const float *query, const Seen &kv,
                                int horizon) const {
    int d = c.headDim, gqa = c.queryHeads / c.kvHeads;
    std::vector<double> out(size_t(c.queryHeads) * d, 0.0);
    if (horizon == 0)
      return out;
    const std::vector<float> &k = kv.k, &v = kv.v;
    for (int h = 0; h < c.queryHeads; ++h) {
      int kv = h / gqa;
      const float *qh = query + size_t(h) * d;
      std::vector<double> scores(horizon);
      double best = -INFINITY;
      for (int t = 0; t < horizon; ++t) {
        double dot = 0;
        for (int i = 0; i < d; ++i)
          dot += double(qh[i]) * k[(size_t(t) * c.kvHeads + kv) * d + i];
        scores[t] = dot / std::sqrt(double(d));
        best = std::max(best, scores[t]);
      }
      double sum = 0;
      for (double &x : scores)
        sum += (x = std::exp(x - best));
      double *o = &out[size_t(h) * d];
      for (int t = 0; t < horizon; ++t)
        for (int i = 0; i < d; ++i)
          o[i] += scores[t] / sum * v[(size_t(t) * c.kvHeads + kv) * d + i];
    }
    return out;
  }

private:
  size_t row() const { return size_t(c.kvHeads) * c.headDim; }

  /// `x` ([tokens][kv head][d]) with tokens [sink, sink + quantized)
  /// quantized and dequantized as the cache stores them.
  std::vector<float> seen(const std::vector<float> &x,
                          const QuantizedKVCache::Parts &p,
                          const QuantScheme &scheme,
                          const std::vector<float> &staticScales,
                          const std::vector<float> &staticZeros) const {
    std::vector<float> out = x;
    int n = p.quantized, d = c.headDim, heads = c.kvHeads;
    if (n == 0)
      return out;
    // The quantized tokens head-major, [kv head][token][d], as the
    // reference quantizer reads them.
    std::vector<float> rows(size_t(heads) * n * d);
    for (int t = 0; t < n; ++t)
      for (int h = 0; h < heads; ++h)
        for (int i = 0; i < d; ++i)
          rows[(size_t(h) * n + t) * d + i] =
              x[(size_t(p.sink + t) * heads + h) * d + i];
    std::vector<uint32_t> words(packedWordCount(scheme, d, heads, n));
    std::vector<float> scales(scaleCount(scheme, d, heads, n)),
        zeros(scales.size());
    float *z = scheme.symmetric ? nullptr : zeros.data();
    if (scheme.isStatic()) { // layer 0's given scales
      const float *gz = scheme.symmetric ? nullptr : staticZeros.data();
      ref::quantizeStatic(scheme, d, heads, rows.data(), heads, n, n, n, 0,
                          words.data(), staticScales.data(), gz);
      ref::dequantizeStatic(scheme, d, heads, words.data(), staticScales.data(),
                            gz, heads, n, n, 0, n, rows.data());
    } else {
      ref::quantize(scheme, d, rows.data(), heads, n, n, n, 0, words.data(),
                    scales.data(), z, zeroPoints);
      ref::dequantize(scheme, d, words.data(), scales.data(), z, heads, n, n, 0,
                      n, rows.data());
    }
    for (int t = 0; t < n; ++t)
      for (int h = 0; h < heads; ++h)
        for (int i = 0; i < d; ++i)
          out[(size_t(p.sink + t) * heads + h) * d + i] =
              rows[(size_t(h) * n + t) * d + i];
    return out;
  }

  CacheConfig c;
  std::vector<ModelSequence> sequences;
};

/// `n` random half values (channel 5 of each head_dim row an outlier, x8)
/// as bits for the device, and in `values` as the floats they are.
std::vector<uint16_t> randomHalves(size_t n, const CacheConfig &c,
                                   std::mt19937 &rng,
                                   std::vector<float> &values) {
  std::normal_distribution<float> normal;
  std::vector<uint16_t> bits(n);
  values.resize(n);
  for (size_t i = 0; i < n; ++i) {
    float scale = i % c.headDim == 5 ? 8.0f : 1.0f;
    bits[i] = ref::toHalfBits(normal(rng) * scale, c.dtype);
    values[i] = ref::fromHalfBits(bits[i], c.dtype);
  }
  return bits;
}

/// A cache of `c` and the context it runs on.
struct CacheUnderTest {
  std::unique_ptr<Context> context;
  std::unique_ptr<QuantizedKVCache> cache;
};
CacheUnderTest makeCache(BackendKind backend, const CacheConfig &c) {
  CacheUnderTest made;
  made.context = kvq::testing::makeTestContext(backend, "kvq-cache-model-test");
  Status status;
  if (made.context)
    made.cache = QuantizedKVCache::create(*made.context, c, &status);
  EXPECT_TRUE(made.cache) << status.message();
  return made;
}

/// `ops` seeded operations on a cache of `preset` on `backend` whose four
/// sequences share a pool of `pages` pages (of 4 x 10), each attend
/// compared with the model (normwise error <= 2e-3, the attention tolerance
/// of the numerics matrix).
void runOperations(BackendKind backend, const char *preset, int ops, int pages,
                   const std::function<void(CacheConfig &)> &adjust = {}) {
  CacheConfig c = kvq::testing::smallCacheConfig(preset);
  c.layers = 1;
  c.batch = 4;
  c.capacity = 640;
  c.residual = 32;
  c.pages = pages;
  if (adjust)
    adjust(c);
  auto [context, cache] = makeCache(backend, c);
  ASSERT_TRUE(cache);
  Status status;
  Model model(c);
  int d = c.headDim, row = c.kvHeads * d, maxPrompt = 300;
  size_t queryHalves = size_t(c.batch) * c.queryHeads * d;
  void *k = context->allocate(size_t(maxPrompt) * row * 2, &status);
  void *v = context->allocate(size_t(maxPrompt) * row * 2, &status);
  void *q = context->allocate(queryHalves * 2, &status);
  void *out = context->allocate(queryHalves * 2, &status);
  ASSERT_TRUE(k && v && q && out);

  std::mt19937 rng(2026);
  auto halves = [&](size_t n, std::vector<float> &values) {
    return randomHalves(n, c, rng, values);
  };
  // Token-major [n][kv head][d] on the host, loaded into k and v: one
  // sequence's prompt (layout {d, row}) or a step's [batch][kv head][d].
  std::vector<float> hostK, hostV;
  auto load = [&](int n) {
    std::vector<uint16_t> kb = halves(size_t(n) * row, hostK);
    std::vector<uint16_t> vb = halves(size_t(n) * row, hostV);
    ASSERT_TRUE(context->copyIn(k, kb.data(), kb.size() * 2).ok());
    ASSERT_TRUE(context->copyIn(v, vb.data(), vb.size() * 2).ok());
  };
  TokenLayout tokenMajor{d, row};
  std::uniform_int_distribution<int> pick(0, 99), sequence(0, c.batch - 1),
      prompt(1, maxPrompt), few(1, 5);
  int attends = 0, steps = 0, forks = 0, refused = 0;
  double worst = 0;
  for (int op = 0; op < ops; ++op) {
    SCOPED_TRACE("operation " + std::to_string(op));
    int kind = pick(rng), seq = sequence(rng);
    auto parts = [&] {
      std::vector<QuantizedKVCache::Parts> p;
      for (int b = 0; b < c.batch; ++b)
        p.push_back(cache->parts(0, b));
      return p;
    };
    if (kind < 8) {
      ASSERT_TRUE(cache->release(seq).ok());
      model.release(seq);
    } else if (kind < 16) { // fork into an empty slot
      int target = (seq + 1 + sequence(rng) % (c.batch - 1)) % c.batch;
      if (model.tokens(seq) == 0 || model.tokens(target) != 0)
        continue;
      Status s = cache->fork(seq, target);
      if (!s.ok()) {
        ASSERT_EQ(s.code(), StatusCode::ResourceExhausted) << s.message();
        ASSERT_EQ(cache->parts(0, target).total(), 0);
        ++refused;
        continue;
      }
      model.fork(seq, target);
      ++forks;
    } else if (kind < 30) { // a prompt, or a few tokens, by append
      int n = model.tokens(seq) == 0 ? prompt(rng) : few(rng);
      if (model.tokens(seq) + n > c.capacity)
        continue;
      load(n);
      if (::testing::Test::HasFatalFailure())
        return;
      QuantizedKVCache::Parts before = cache->parts(0, seq);
      Status s = cache->append(0, seq, k, v, n, tokenMajor);
      if (!s.ok()) {
        ASSERT_EQ(s.code(), StatusCode::ResourceExhausted) << s.message();
        ASSERT_EQ(cache->parts(0, seq).total(), before.total());
        ++refused;
        continue;
      }
      model.append(seq, hostK, hostV, n);
    } else if (kind < 80) { // a decode step of every sequence holding any
      for (int b = 0; b < c.batch; ++b)
        if (model.tokens(b) == c.capacity) {
          ASSERT_TRUE(cache->release(b).ok());
          model.release(b);
        }
      load(c.batch);
      if (::testing::Test::HasFatalFailure())
        return;
      std::vector<QuantizedKVCache::Parts> before = parts();
      Status s = cache->appendStep(0, k, v);
      if (!s.ok()) {
        ASSERT_EQ(s.code(), StatusCode::ResourceExhausted) << s.message();
        for (int b = 0; b < c.batch; ++b)
          ASSERT_EQ(cache->parts(0, b).total(), before[b].total());
        ++refused;
        ASSERT_TRUE(cache->release(seq).ok()); // make room
        model.release(seq);
        continue;
      }
      for (int b = 0; b < c.batch; ++b)
        if (model.tokens(b) > 0) {
          std::vector<float> tk(hostK.begin() + size_t(b) * row,
                                hostK.begin() + size_t(b + 1) * row);
          std::vector<float> tv(hostV.begin() + size_t(b) * row,
                                hostV.begin() + size_t(b + 1) * row);
          model.append(b, tk, tv, 1);
        }
      ++steps;
    } else { // attend: every sequence against the model
      std::vector<float> query;
      std::vector<uint16_t> bits = halves(queryHalves, query);
      ASSERT_TRUE(context->copyIn(q, bits.data(), bits.size() * 2).ok());
      ASSERT_TRUE(cache->attend(0, q, out).ok());
      ASSERT_TRUE(context->copyOut(bits.data(), out, bits.size() * 2).ok());
      std::vector<double> want = model.attend(query, parts());
      double error = errorAgainst(bits.data(), want, c.dtype);
      worst = std::max(worst, error);
      ASSERT_LE(error, 2e-3);
      ++attends;
    }
    for (int b = 0; b < c.batch; ++b)
      ASSERT_EQ(cache->parts(0, b).total(), model.tokens(b))
          << "sequence " << b;
  }
  for (void *p : {k, v, q, out})
    context->release(p);
  EXPECT_GT(attends, ops / 10);
  EXPECT_GT(steps, ops / 3);
  EXPECT_GE(forks, ops / 100);
  EXPECT_GT(refused, 0) << "the shared pool never ran out";
  ::testing::Test::RecordProperty("worst_error", std::to_string(worst));
}

} // namespace

TEST(CacheModel, TwoThousandOperationsOnTheReferenceBackend) {
  for (const char *preset : {"kivi2", "int4"}) {
    SCOPED_TRACE(preset);
    runOperations(BackendKind::Reference, preset, 2000, /*pages=*/16);
  }
}

// The same on the emulator (the generated kernels), every preset (a test
// each, so that the shards of the suite share them).
class CacheModelOnTheEmulator : public ::testing::TestWithParam<const char *> {
};

TEST_P(CacheModelOnTheEmulator, TwoThousandOperations) {
  runOperations(BackendKind::Emulator, GetParam(), 2000, /*pages=*/16);
}

INSTANTIATE_TEST_SUITE_P(EveryPreset, CacheModelOnTheEmulator,
                         ::testing::Values("kivi2", "kivi4", "hf_quanto_int4",
                                           "int8", "int4"));

// Static scales (given per kv head or per tensor; FP8 keys, 4-bit values,
// and asymmetric 8-bit with zero points): prefills, host appends, batched
// decode steps whose flushes quantize in the append kernel, forks and
// releases, on the emulator and the reference, against the model.
void useStaticScales(CacheConfig &c) {
  c.key = QuantScheme::staticScheme(8, QuantScheme::Scales::Head, true,
                                    QuantScheme::Format::E4M3);
  c.value = QuantScheme::staticScheme(4, QuantScheme::Scales::Head, true);
  c.value.interleaved = true;
  c.keyScales = {0.004f, 0.025f}; // the outlier channel x8: some saturate
  c.valueScales = {0.45f, 0.5f};
}
void useAsymmetricStaticScales(CacheConfig &c) {
  c.key = QuantScheme::staticScheme(8, QuantScheme::Scales::Tensor, false);
  c.value = QuantScheme::staticScheme(8, QuantScheme::Scales::Tensor, true,
                                      QuantScheme::Format::E5M2);
  c.keyScales = {0.12f};
  c.keyZeros = {-15.0f};
  c.valueScales = {0.01f};
}
TEST(CacheModel, StaticScalesOnTheEmulator) {
  runOperations(BackendKind::Emulator, "int4", 600, /*pages=*/16,
                useStaticScales);
  runOperations(BackendKind::Emulator, "int4", 400, /*pages=*/8,
                useAsymmetricStaticScales);
}
TEST(CacheModel, StaticScalesOnTheReferenceBackend) {
  runOperations(BackendKind::Reference, "int4", 600, /*pages=*/16,
                useStaticScales);
}

// A prefill with HQQ zero points stores what the reference's HQQ quantizer
// gives: attention matches the model that quantizes with HQQ and is told
// apart from the min-max model. Only prompts here, so every quantized token
// came from a prefill.
TEST(CacheModel, HqqPrefillStoresTheReferenceZeroPoints) {
  for (const char *preset : {"kivi2", "int4"}) {
    SCOPED_TRACE(preset);
    CacheConfig c = kvq::testing::smallCacheConfig(preset);
    c.layers = 1;
    c.prefillZeroPoints = ZeroPointSearch::Hqq;
    auto [context, cache] = makeCache(BackendKind::Emulator, c);
    ASSERT_TRUE(cache);
    Model hqq(c), minmax(c);
    hqq.zeroPoints = ZeroPointSearch::Hqq;
    int d = c.headDim, row = c.kvHeads * d, prompt = 300;
    Status status;
    void *k = context->allocate(size_t(prompt) * row * 2, &status);
    void *v = context->allocate(size_t(prompt) * row * 2, &status);
    size_t queryHalves = size_t(c.batch) * c.queryHeads * d;
    void *q = context->allocate(queryHalves * 2, &status);
    void *out = context->allocate(queryHalves * 2, &status);
    ASSERT_TRUE(k && v && q && out);
    std::mt19937 rng(15);
    for (int seq = 0; seq < c.batch; ++seq) {
      std::vector<float> hostK, hostV;
      std::vector<uint16_t> kb =
          randomHalves(size_t(prompt) * row, c, rng, hostK);
      std::vector<uint16_t> vb =
          randomHalves(size_t(prompt) * row, c, rng, hostV);
      ASSERT_TRUE(context->copyIn(k, kb.data(), kb.size() * 2).ok());
      ASSERT_TRUE(context->copyIn(v, vb.data(), vb.size() * 2).ok());
      ASSERT_TRUE(
          cache->append(0, seq, k, v, prompt, TokenLayout{d, row}).ok());
      hqq.append(seq, hostK, hostV, prompt);
      minmax.append(seq, hostK, hostV, prompt);
    }
    std::vector<QuantizedKVCache::Parts> parts;
    for (int b = 0; b < c.batch; ++b)
      parts.push_back(cache->parts(0, b));
    ASSERT_GT(parts[0].quantized, 0);
    std::vector<float> query;
    std::vector<uint16_t> qb = randomHalves(queryHalves, c, rng, query);
    ASSERT_TRUE(context->copyIn(q, qb.data(), qb.size() * 2).ok());
    ASSERT_TRUE(cache->attend(0, q, out).ok());
    std::vector<uint16_t> bits(queryHalves);
    ASSERT_TRUE(context->copyOut(bits.data(), out, bits.size() * 2).ok());
    double againstHqq =
        errorAgainst(bits.data(), hqq.attend(query, parts), c.dtype);
    double againstMinMax =
        errorAgainst(bits.data(), minmax.attend(query, parts), c.dtype);
    EXPECT_LE(againstHqq, 2e-3);
    EXPECT_GT(againstMinMax, 4 * againstHqq);
    for (void *p : {k, v, q, out})
      context->release(p);
  }
}

// Several query tokens per sequence in one call (chunked prefill,
// speculative verification), mixed with single tokens and sequences that
// take none: every new token attends over its sequence up to itself and no
// further, against the model, for every preset on the emulator (the
// generated chunked kernel) and on the reference. Chunks of 64
// fill the residual past a flush: it is quantized after the attention, and
// later chunks see it so.
TEST(CacheModel, ChunksOfQueryTokensAttendCausally) {
  for (BackendKind backend : kvq::testing::kCpuBackends)
    for (const char *preset : kvq::testing::kPresets) {
      SCOPED_TRACE(kvq::testing::caseName(preset, backend));
      CacheConfig c = kvq::testing::smallCacheConfig(preset);
      c.layers = 1;
      c.batch = 4;
      c.maxQueryTokens = 64;
      auto [context, cache] = makeCache(backend, c);
      ASSERT_TRUE(cache);
      Status status;
      Model model(c);
      int d = c.headDim, row = c.kvHeads * d, queryRow = c.queryHeads * d;
      int maxRows = c.batch * c.maxQueryTokens + 300;
      void *k = context->allocate(size_t(maxRows) * row * 2, &status);
      void *v = context->allocate(size_t(maxRows) * row * 2, &status);
      void *q = context->allocate(size_t(maxRows) * queryRow * 2, &status);
      void *out = context->allocate(size_t(maxRows) * queryRow * 2, &status);
      ASSERT_TRUE(k && v && q && out);
      std::mt19937 rng(64);
      auto halves = [&](size_t n, std::vector<float> &values) {
        return randomHalves(n, c, rng, values);
      };
      TokenLayout tokenMajor{d, row};
      std::vector<float> hostK, hostV, hostQ;
      auto load = [&](void *device, int n, int width,
                      std::vector<float> &values) {
        std::vector<uint16_t> bits = halves(size_t(n) * width, values);
        ASSERT_TRUE(context->copyIn(device, bits.data(), bits.size() * 2).ok());
      };
      // Prompts: long, short, none, medium.
      for (auto [seq, n] : {std::pair{0, 300}, {1, 3}, {3, 130}}) {
        load(k, n, row, hostK);
        load(v, n, row, hostV);
        ASSERT_TRUE(cache->append(0, seq, k, v, n, tokenMajor).ok());
        model.append(seq, hostK, hostV, n);
      }
      const std::vector<std::vector<int>> rounds = {
          {1, 5, 0, 64}, {64, 1, 7, 3}, {2, 64, 64, 0}, {64, 64, 1, 64}};
      for (const std::vector<int> &counts : rounds) {
        std::vector<int32_t> offsets = {0};
        for (int n : counts)
          offsets.push_back(offsets.back() + n);
        int rows = offsets.back();
        load(k, rows, row, hostK);
        load(v, rows, row, hostV);
        load(q, rows, queryRow, hostQ);
        std::vector<QuantizedKVCache::Parts> before;
        for (int b = 0; b < c.batch; ++b)
          before.push_back(cache->parts(0, b));
        Status s =
            cache->appendAndAttend(0, k, v, q, out, offsets.data(), tokenMajor);
        ASSERT_TRUE(s.ok()) << s.message();
        std::vector<uint16_t> bits(size_t(rows) * queryRow);
        ASSERT_TRUE(context->copyOut(bits.data(), out, bits.size() * 2).ok());
        for (int b = 0; b < c.batch; ++b) {
          int n = counts[b];
          std::vector<float> tk(hostK.begin() + size_t(offsets[b]) * row,
                                hostK.begin() + size_t(offsets[b + 1]) * row);
          std::vector<float> tv(hostV.begin() + size_t(offsets[b]) * row,
                                hostV.begin() + size_t(offsets[b + 1]) * row);
          int first = model.tokens(b);
          model.append(b, tk, tv, n);
          // What the new tokens attend over: the sink as it is now, the
          // store as it was before the call (flushes come after).
          QuantizedKVCache::Parts parts = before[b];
          parts.sink = std::min(model.tokens(b), c.sink);
          Model::Seen seen = model.seenBy(b, parts);
          for (int i = 0; i < n; ++i) {
            int r = offsets[b] + i;
            std::vector<double> want = model.attendRow(
                &hostQ[size_t(r) * queryRow], seen, first + i + 1);
            ASSERT_LE(errorAgainst(&bits[size_t(r) * queryRow], want, c.dtype),
                      2e-3)
                << "sequence " << b << ", new token " << i;
          }
          ASSERT_EQ(cache->parts(0, b).total(), model.tokens(b));
        }
      }
      EXPECT_GT(cache->parts(0, 1).quantized, 0)
          << "sequence 1's chunks were flushed into the store";
      for (void *p : {k, v, q, out})
        context->release(p);
    }
}
