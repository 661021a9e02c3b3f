//===- ApiContractTest.cpp - the public API under misuse ------------------===//
//
// What kvq/kvq.h and kvq/QuantizedKVCache.h promise when callers get things
// wrong or push limits: a Status naming the bad value, never a crash, an
// abort, a double free or a silently wrong result.
//
//===----------------------------------------------------------------------===//

#include "SmallCacheConfig.h"
#include "kvq/QuantizedKVCache.h"
#include "kvq/Runtime/Workload.h"

#include "llvm/Support/FileSystem.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <thread>

using namespace kvq;

namespace {

std::unique_ptr<Context> emulatorContext() {
  static std::string dir = [] {
    llvm::SmallString<128> path;
    (void)llvm::sys::fs::createUniqueDirectory("kvq-api-test", path);
    return path.str().str();
  }();
  ContextOptions options;
  options.backend = BackendKind::Emulator;
  options.cacheDir = dir;
  Status status;
  std::unique_ptr<Context> context = Context::create(options, &status);
  EXPECT_TRUE(context) << status.message();
  return context;
}

/// The shared small cache, smaller still: one sequence of one kv head.
CacheConfig tinyConfig() {
  CacheConfig c = kvq::testing::smallCacheConfig("kivi2");
  c.batch = c.kvHeads = 1;
  c.queryHeads = 2;
  c.capacity = 256;
  c.residual = 32;
  return c;
}

std::vector<uint16_t> halves(size_t n, uint32_t seed) {
  return kvLikeHalves(n, 64, HalfType::F16, seed, false);
}

/// Appends `tokens` tokens to `layer` and attends; the output's bits.
std::vector<uint16_t> step(Context &context, QuantizedKVCache &cache, int layer,
                           int tokens, uint32_t seed) {
  const CacheConfig &c = cache.config();
  size_t kvBytes = size_t(c.kvHeads) * tokens * c.headDim * 2;
  size_t qBytes = size_t(c.batch) * c.queryHeads * c.headDim * 2;
  Status s;
  void *k = context.allocate(kvBytes, &s);
  void *q = context.allocate(qBytes, &s);
  void *out = context.allocate(qBytes, &s);
  EXPECT_TRUE(s.ok()) << s.message();
  std::vector<uint16_t> kv = halves(kvBytes / 2, seed),
                        query = halves(qBytes / 2, seed + 1);
  EXPECT_TRUE(context.copyIn(k, kv.data(), kvBytes).ok());
  EXPECT_TRUE(context.copyIn(q, query.data(), qBytes).ok());
  Status appended = cache.append(layer, 0, k, k, tokens);
  EXPECT_TRUE(appended.ok()) << appended.message();
  Status attended = cache.attend(layer, q, out);
  EXPECT_TRUE(attended.ok()) << attended.message();
  std::vector<uint16_t> result(qBytes / 2);
  EXPECT_TRUE(context.copyOut(result.data(), out, qBytes).ok());
  for (void *p : {k, q, out})
    context.release(p);
  return result;
}

TEST(ApiContract, ACacheMayOutliveItsContext) {
  std::unique_ptr<Context> context = emulatorContext();
  Status status;
  std::unique_ptr<QuantizedKVCache> cache =
      QuantizedKVCache::create(*context, tinyConfig(), &status);
  ASSERT_TRUE(cache) << status.message();
  context.reset(); // the cache keeps the runtime alive
  std::unique_ptr<Context> other = emulatorContext();
  // The cache still appends and attends; its memory belongs to its own
  // runtime, so feed it through a fresh context of the same backend.
  const CacheConfig &c = cache->config();
  Status s;
  void *k = other->allocate(size_t(c.kvHeads) * 40 * c.headDim * 2, &s);
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(cache->append(0, 0, k, k, 40).ok());
  other->release(k);
  cache.reset(); // releases its buffers through the runtime it kept
}

TEST(ApiContract, TwoThreadsOnOneCacheGetTheSequentialResults) {
  std::unique_ptr<Context> context = emulatorContext();
  Status status;
  auto sequential = QuantizedKVCache::create(*context, tinyConfig(), &status);
  auto shared = QuantizedKVCache::create(*context, tinyConfig(), &status);
  ASSERT_TRUE(sequential && shared) << status.message();
  std::vector<std::vector<uint16_t>> expected(2), got(2);
  for (int layer = 0; layer < 2; ++layer)
    for (int round = 0; round < 3; ++round)
      expected[layer] =
          step(*context, *sequential, layer, 40, layer * 10 + round);
  std::vector<std::thread> threads;
  for (int layer = 0; layer < 2; ++layer)
    threads.emplace_back([&, layer] {
      for (int round = 0; round < 3; ++round)
        got[layer] = step(*context, *shared, layer, 40, layer * 10 + round);
    });
  for (std::thread &t : threads)
    t.join();
  EXPECT_EQ(got, expected);
}

TEST(ApiContract, AbsurdSizesAreStatusErrorsNamingTheValue) {
  std::unique_ptr<Context> context = emulatorContext();
  CacheConfig c = tinyConfig();
  c.layers = 1 << 20;
  Status status;
  EXPECT_FALSE(QuantizedKVCache::create(*context, c, &status));
  EXPECT_EQ(status.code(), StatusCode::InvalidArgument);
  EXPECT_EQ(status.message(), "layers 1048576 is above the supported 65536");
  c = tinyConfig();
  c.batch = 100000;
  EXPECT_FALSE(QuantizedKVCache::create(*context, c, &status));
  EXPECT_EQ(status.message(), "batch 100000 is above the supported 65535");
  // HQQ zero points need a scheme with zero points.
  c = tinyConfig();
  c.prefillZeroPoints = ZeroPointSearch::Hqq;
  c.key.symmetric = c.value.symmetric = true;
  EXPECT_FALSE(QuantizedKVCache::create(*context, c, &status));
  EXPECT_EQ(status.code(), StatusCode::InvalidArgument);
  EXPECT_EQ(status.message(),
            "prefill zero points hqq: both schemes are symmetric (" +
                c.key.tag() + ", " + c.value.tag() +
                ") and have no zero points to search");
  c.prefillZeroPoints = ZeroPointSearch(9);
  EXPECT_FALSE(QuantizedKVCache::create(*context, c, &status));
  EXPECT_EQ(status.message(), "prefill zero points has no such value (9)");
  // Static scales: as many as the scheme needs, positive and finite; none
  // for a scheme that computes its own.
  c = tinyConfig();
  c.key = QuantScheme::staticScheme(8, QuantScheme::Scales::Head, true,
                                    QuantScheme::Format::E4M3);
  EXPECT_FALSE(QuantizedKVCache::create(*context, c, &status));
  EXPECT_EQ(status.message(),
            "key scales: scheme e4m3ph needs " +
                std::to_string(c.layers * c.kvHeads) +
                " (layers x kv heads), got 0 (kvq-calibrate writes them)");
  c.keyScales.assign(size_t(c.layers) * c.kvHeads, 0.5f);
  c.keyScales[1] = -1.0f;
  EXPECT_FALSE(QuantizedKVCache::create(*context, c, &status));
  EXPECT_EQ(status.message(),
            "key scales[1] = -1.000000 is not a positive finite scale");
  c.keyScales[1] = 0.5f;
  c.valueScales = {1.0f};
  EXPECT_FALSE(QuantizedKVCache::create(*context, c, &status));
  EXPECT_EQ(status.message(), "value scales: scheme " + c.value.tag() +
                                  " computes its scales per group, but 1 "
                                  "values were given");
  c.valueScales.clear();
  EXPECT_TRUE(QuantizedKVCache::create(*context, c, &status))
      << status.message();

  void *p = context->allocate(SIZE_MAX - 100, &status);
  EXPECT_EQ(p, nullptr);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find(std::to_string(SIZE_MAX - 100)),
            std::string::npos)
      << status.message();
}

TEST(ApiContract, EmulatorMemoryIsCheckedLikeDeviceMemory) {
  std::unique_ptr<Context> context = emulatorContext();
  Status status;
  void *p = context->allocate(64, &status);
  ASSERT_TRUE(p);
  std::vector<uint8_t> host(128, 7);
  Status past = context->copyIn(p, host.data(), 128);
  EXPECT_EQ(past.code(), StatusCode::InvalidArgument);
  EXPECT_NE(past.message().find("copyIn destination"), std::string::npos)
      << past.message();
  EXPECT_FALSE(context->copyOut(host.data(), host.data(), 8).ok())
      << "a host pointer is not device memory";
  EXPECT_TRUE(context->copyIn(p, host.data(), 64).ok());
  context->release(p);
  context->release(p); // reported and ignored, not freed twice
  int local = 0;
  context->release(&local);
}

TEST(ApiContract, OutOfRangeEnumValuesAreRefused) {
  ContextOptions options;
  options.backend = static_cast<BackendKind>(42);
  Status status;
  EXPECT_FALSE(Context::create(options, &status));
  EXPECT_EQ(status.code(), StatusCode::InvalidArgument);
  EXPECT_EQ(status.message(), "backend has no such value (42)");

  std::unique_ptr<Context> context = emulatorContext();
  KernelSpec spec;
  parseKernelSpec("quantize 4t64 d=64", spec);
  spec.dtype = static_cast<HalfType>(9);
  Status prepared = context->prepare(spec);
  EXPECT_EQ(prepared.code(), StatusCode::InvalidSpec);
  EXPECT_NE(prepared.message().find("dtype has no such value (9)"),
            std::string::npos)
      << prepared.message();
  spec.dtype = HalfType::F16;
  spec.key.axis = static_cast<QuantScheme::Axis>(5);
  EXPECT_NE(context->prepare(spec).message().find("axis has no such value"),
            std::string::npos);
}

} // namespace
