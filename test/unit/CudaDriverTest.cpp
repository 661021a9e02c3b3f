//===- CudaDriverTest.cpp - the driver layer against a fake libcuda -------===//
//
// The runtime's CUDA driver layer (entry points resolved with dlsym, then
// called) runs here against fake-driver/FakeCudaDriver.cpp, a libcuda over
// host memory, so a missing or mistyped entry point fails on a machine with
// no GPU instead of crashing on the first one that has.
//
//===----------------------------------------------------------------------===//

#include "kvq/Runtime/CudaDriver.h"
#include "SmallCacheConfig.h"
#include "kvq/QuantizedKVCache.h"
#include "kvq/kvq.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <dlfcn.h>
#include <numeric>
#include <vector>

using namespace kvq;

namespace {

cuda::Driver *fakeDriver() {
  llvm::Expected<cuda::Driver *> driver =
      cuda::Driver::get(0, KVQ_FAKE_CUDA_DRIVER);
  if (!driver) {
    ADD_FAILURE() << llvm::toString(driver.takeError());
    return nullptr;
  }
  return *driver;
}

TEST(CudaDriverTest, ReadsTheDeviceThroughTheDriver) {
  cuda::Driver *driver = fakeDriver();
  ASSERT_TRUE(driver);
  EXPECT_EQ(driver->device().name, "kvq fake device");
  EXPECT_EQ(driver->device().computeCapability, 90);
  EXPECT_EQ(driver->device().smCount, 132);
  EXPECT_EQ(driver->device().memoryBytes, uint64_t(1) << 30);
}

// Every copy direction, the device-to-device one included (its entry point
// was once declared but never resolved: a null call on the first GPU).
TEST(CudaDriverTest, CopiesEveryDirection) {
  cuda::Driver *driver = fakeDriver();
  ASSERT_TRUE(driver);
  std::vector<uint32_t> host(1000), back(1000, 0);
  std::iota(host.begin(), host.end(), 7u);
  llvm::Expected<void *> a = driver->allocate(host.size() * 4);
  llvm::Expected<void *> b = driver->allocate(host.size() * 4);
  ASSERT_TRUE(a && b);
  ASSERT_FALSE(static_cast<bool>(
      driver->copyToDevice(*a, host.data(), host.size() * 4)));
  ASSERT_FALSE(
      static_cast<bool>(driver->copyOnDevice(*b, *a, host.size() * 4)));
  ASSERT_FALSE(
      static_cast<bool>(driver->copyToHost(back.data(), *b, back.size() * 4)));
  EXPECT_EQ(back, host);
  EXPECT_FALSE(static_cast<bool>(driver->synchronize()));
  driver->release(*a);
  driver->release(*b);
}

TEST(CudaDriverTest, TimesWorkBetweenEvents) {
  cuda::Driver *driver = fakeDriver();
  ASSERT_TRUE(driver);
  int calls = 0;
  llvm::Expected<double> ms = driver->timeMillis([&] {
    ++calls;
    return llvm::Error::success();
  });
  ASSERT_TRUE(static_cast<bool>(ms)) << llvm::toString(ms.takeError());
  EXPECT_EQ(calls, 1);
  EXPECT_GE(*ms, 0.0);
}

TEST(CudaDriverTest, LoadsAModuleAndLaunches) {
  cuda::Driver *driver = fakeDriver();
  ASSERT_TRUE(driver);
  llvm::Expected<std::unique_ptr<cuda::LoadedModule>> module =
      driver->load("not really a cubin", "");
  ASSERT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
  int value = 3;
  std::vector<void *> args = {&value};
  EXPECT_FALSE(static_cast<bool>(
      (*module)->launch("kernel", {1, 1, 1}, {32, 1, 1}, args, nullptr)));
}

TEST(CudaDriverTest, ADriverLackingAnEntryPointIsRefusedByName) {
  llvm::Expected<cuda::Driver *> driver =
      cuda::Driver::get(0, KVQ_FAKE_CUDA_DRIVER_WITHOUT_DTOD);
  ASSERT_FALSE(static_cast<bool>(driver));
  std::string message = llvm::toString(driver.takeError());
  EXPECT_NE(message.find("lacks driver API entry points kvq needs: "
                         "cuMemcpyDtoD_v2"),
            std::string::npos)
      << message;
}

TEST(CudaDriverTest, CapturesAndReplaysAGraphOnAStream) {
  cuda::Driver *driver = fakeDriver();
  ASSERT_TRUE(driver);
  llvm::Expected<void *> stream = driver->createStream();
  ASSERT_TRUE(static_cast<bool>(stream)) << llvm::toString(stream.takeError());
  int queued = 0;
  llvm::Expected<std::unique_ptr<cuda::CapturedGraph>> graph =
      driver->capture(*stream, [&] {
        ++queued;
        return llvm::Error::success();
      });
  ASSERT_TRUE(static_cast<bool>(graph)) << llvm::toString(graph.takeError());
  EXPECT_EQ(queued, 1);
  EXPECT_FALSE(static_cast<bool>((*graph)->launch(*stream)));
  EXPECT_FALSE(static_cast<bool>(driver->synchronize(*stream)));
  graph->reset();
  driver->destroyStream(*stream);
}

TEST(CudaDriverTest, AFailedCaptureReportsWhy) {
  cuda::Driver *driver = fakeDriver();
  ASSERT_TRUE(driver);
  // The default stream cannot be captured.
  llvm::Expected<std::unique_ptr<cuda::CapturedGraph>> graph =
      driver->capture(nullptr, [] { return llvm::Error::success(); });
  ASSERT_FALSE(static_cast<bool>(graph));
  EXPECT_NE(llvm::toString(graph.takeError()).find("cuStreamBeginCapture"),
            std::string::npos);
  // Work that fails: its error comes back, and the stream is usable after.
  llvm::Expected<void *> stream = driver->createStream();
  ASSERT_TRUE(static_cast<bool>(stream));
  graph = driver->capture(*stream, [] {
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "launch refused");
  });
  ASSERT_FALSE(static_cast<bool>(graph));
  EXPECT_EQ(llvm::toString(graph.takeError()), "launch refused");
  graph = driver->capture(*stream, [] { return llvm::Error::success(); });
  EXPECT_TRUE(static_cast<bool>(graph)) << llvm::toString(graph.takeError());
  graph->reset();
  driver->destroyStream(*stream);
}

/// A hook of the fake driver (already loaded by Driver::get).
template <typename F> F fakeHook(const char *name) {
  void *library = dlopen(KVQ_FAKE_CUDA_DRIVER, RTLD_NOW | RTLD_NOLOAD);
  return library ? reinterpret_cast<F>(dlsym(library, name)) : nullptr;
}

TEST(CudaDriverTest, EachDeviceHasItsOwnDriverAndContext) {
  llvm::Expected<cuda::Driver *> first =
      cuda::Driver::get(0, KVQ_FAKE_CUDA_DRIVER);
  llvm::Expected<cuda::Driver *> second =
      cuda::Driver::get(1, KVQ_FAKE_CUDA_DRIVER);
  ASSERT_TRUE(first && second);
  EXPECT_NE(*first, *second);
  EXPECT_EQ((*second)->device().ordinal, 1);
  EXPECT_EQ((*second)->device().smCount, 66);
  auto deviceOf = fakeHook<int (*)(const void *)>("kvqFakeDeviceOf");
  auto lastLaunch = fakeHook<int (*)()>("kvqFakeLastLaunchDevice");
  ASSERT_TRUE(deviceOf && lastLaunch);
  // Interleaved calls each run in their own device's context.
  llvm::Expected<void *> onSecond = (*second)->allocate(64);
  llvm::Expected<void *> onFirst = (*first)->allocate(64);
  ASSERT_TRUE(onSecond && onFirst);
  EXPECT_EQ(deviceOf(*onSecond), 1);
  EXPECT_EQ(deviceOf(*onFirst), 0);
  llvm::Expected<std::unique_ptr<cuda::LoadedModule>> module =
      (*second)->load("cubin", "");
  ASSERT_TRUE(static_cast<bool>(module));
  llvm::Expected<void *> again = (*first)->allocate(64); // device 0 current
  ASSERT_TRUE(static_cast<bool>(again));
  EXPECT_FALSE(static_cast<bool>(
      (*module)->launch("k", {1, 1, 1}, {32, 1, 1}, {}, nullptr)));
  EXPECT_EQ(lastLaunch(), 1) << "the launch ran in device 0's context";
  for (void *p : {*onSecond, *again})
    (p == *onSecond ? *second : *first)->release(p);
  (*first)->release(*onFirst);
}

TEST(CudaDriverTest, AMissingDeviceIsNamed) {
  llvm::Expected<cuda::Driver *> driver =
      cuda::Driver::get(2, KVQ_FAKE_CUDA_DRIVER);
  ASSERT_FALSE(static_cast<bool>(driver));
  bool typed = false;
  llvm::handleAllErrors(driver.takeError(), [&](const cuda::NoDriverError &e) {
    typed = true;
    EXPECT_EQ(e.message(), "no CUDA driver: there is no CUDA device 2: the "
                           "driver reports 2 devices (0 to 1)");
  });
  EXPECT_TRUE(typed);
}

/// KVQ_CUDA_DRIVER for the scope of a test (restored after).
struct FakeDriverInEnvironment {
  FakeDriverInEnvironment() {
    setenv("KVQ_CUDA_DRIVER", KVQ_FAKE_CUDA_DRIVER, 1);
  }
  ~FakeDriverInEnvironment() { unsetenv("KVQ_CUDA_DRIVER"); }
};

/// A Context on the cuda backend over the fake driver, device `device`
/// (the driver is chosen when the Context is created; it stays after).
std::unique_ptr<Context> fakeContext(int device = 0,
                                     Status *failure = nullptr) {
  FakeDriverInEnvironment fake;
  ContextOptions options;
  options.backend = BackendKind::Cuda;
  options.device = device;
  Status status;
  std::unique_ptr<Context> context = Context::create(options, &status);
  if (failure)
    *failure = status;
  else
    EXPECT_TRUE(context) << status.message();
  return context;
}

TEST(CudaDriverTest, ContextOptionsChooseTheDevice) {
  Status status;
  std::unique_ptr<Context> context = fakeContext(1);
  ASSERT_TRUE(context);
  void *p = context->allocate(256, &status);
  ASSERT_TRUE(p) << status.message();
  auto deviceOf = fakeHook<int (*)(const void *)>("kvqFakeDeviceOf");
  ASSERT_TRUE(deviceOf);
  EXPECT_EQ(deviceOf(p), 1);
  context->release(p);

  EXPECT_FALSE(fakeContext(7, &status));
  EXPECT_NE(status.message().find("there is no CUDA device 7"),
            std::string::npos)
      << status.message();
  EXPECT_FALSE(fakeContext(-1, &status));
  EXPECT_EQ(status.code(), StatusCode::InvalidArgument);
  EXPECT_EQ(status.message(), "device must not be negative, got -1");
}

struct Counts {
  int launches, allocations, copies, synchronizations;
};
Counts fakeCounts() {
  auto counts = fakeHook<void (*)(int *, int *, int *, int *)>("kvqFakeCounts");
  Counts c{-1, -1, -1, -1};
  if (counts)
    counts(&c.launches, &c.allocations, &c.copies, &c.synchronizations);
  return c;
}

// The engine contract of an attention call on the cuda backend, counted at
// the driver: once its kernels are prepared and its lengths, block table
// and workspace are on the device, a call only launches (attention and
// combine) -- no allocation, copy or synchronisation -- contiguous or paged.
TEST(CudaDriverTest, AnAttentionCallOnlyLaunches) {
  Status status;
  std::unique_ptr<Context> context = fakeContext();
  ASSERT_TRUE(context);
  for (const char *text :
       {"attention k=2c32 v=2t32 d=128 hq=32 hkv=8 sink residual",
        "attention k=4t64 v=4t64 d=128 hq=32 hkv=8 paged=64 sink residual"}) {
    KernelSpec spec;
    ASSERT_FALSE(parseKernelSpec(text, spec)) << text;
    ASSERT_TRUE(context->prepare(spec).ok());
    int batch = 4, pages = 8;
    std::vector<int32_t> lengths;
    for (int b = 0; b < batch; ++b)
      lengths.insert(lengths.end(), {4, 256, 100});
    auto buffer = [&](size_t bytes) {
      void *p = context->allocate(bytes, &status);
      EXPECT_TRUE(p) << status.message();
      return p;
    };
    void *any = buffer(1 << 20); // the fake runs no kernel: never read
    AttentionCall call;
    call.q = call.out = any;
    call.keyWords = call.valueWords = call.keyScales = call.valueScales =
        call.keyZeros = call.valueZeros = any;
    call.sinkKeys = call.sinkValues = call.residualKeys = call.residualValues =
        any;
    call.lengths = static_cast<const int32_t *>(buffer(lengths.size() * 4));
    call.hostLengths = lengths.data();
    call.batch = batch;
    call.sinkCapacity = 4;
    call.residualCapacity = 128;
    if (spec.pageTokens) {
      call.blockTable = static_cast<const int32_t *>(buffer(batch * 4 * 4));
      call.maxPages = 4;
      call.numPages = pages;
    } else {
      call.bodyCapacity = 256;
    }
    call.workspaceBytes = context->attentionWorkspaceBytes(spec, call);
    call.workspace = buffer(call.workspaceBytes);
    auto lookups = fakeHook<int (*)()>("kvqFakeFunctionLookups");
    ASSERT_TRUE(lookups);
    int lookupsBefore = lookups();
    Counts before = fakeCounts();
    for (int i = 0; i < 3; ++i)
      ASSERT_TRUE(context->attention(spec, call).ok()) << text;
    Counts after = fakeCounts();
    // Each kernel's handle is looked up once, not at every launch.
    EXPECT_LE(lookups() - lookupsBefore, 2) << text;
    EXPECT_EQ(after.launches - before.launches, 6) << text;
    EXPECT_EQ(after.allocations - before.allocations, 0) << text;
    EXPECT_EQ(after.copies - before.copies, 0) << text;
    EXPECT_EQ(after.synchronizations - before.synchronizations, 0) << text;
    context->release(any);
    context->release(const_cast<int32_t *>(call.lengths));
    context->release(const_cast<int32_t *>(call.blockTable));
    context->release(call.workspace);
  }
}

// Overlapping device copies behave as memmove in both directions (the
// driver's own copy promises nothing for overlapping ranges), and strided
// rows go in one driver call.
TEST(CudaDriverTest, CopiesOverlappingRangesAndStridedRows) {
  cuda::Driver *driver = fakeDriver();
  ASSERT_TRUE(driver);
  std::vector<uint8_t> host(1000);
  std::iota(host.begin(), host.end(), uint8_t(1));
  llvm::Expected<void *> buffer = driver->allocate(host.size());
  ASSERT_TRUE(static_cast<bool>(buffer));
  auto *base = static_cast<char *>(*buffer);
  for (int shift : {3, -3, 200, -200}) {
    std::vector<uint8_t> expected = host, back(host.size());
    size_t bytes = 700, from = shift > 0 ? 0 : -shift, to = from + shift;
    std::memmove(&expected[to], &expected[from], bytes);
    ASSERT_FALSE(static_cast<bool>(
        driver->copyToDevice(*buffer, host.data(), host.size())));
    ASSERT_FALSE(
        static_cast<bool>(driver->copyOnDevice(base + to, base + from, bytes)));
    ASSERT_FALSE(static_cast<bool>(
        driver->copyToHost(back.data(), *buffer, back.size())));
    EXPECT_EQ(back, expected) << "shift " << shift;
  }
  // Rows 100 bytes apart, 30 bytes each, to rows 40 apart.
  llvm::Expected<void *> rows = driver->allocate(400);
  ASSERT_TRUE(static_cast<bool>(rows));
  ASSERT_FALSE(static_cast<bool>(
      driver->copyToDevice(*buffer, host.data(), host.size())));
  Counts before = fakeCounts();
  ASSERT_FALSE(static_cast<bool>(
      driver->copyRowsOnDevice(*rows, 40, base + 5, 100, 30, 8)));
  EXPECT_EQ(fakeCounts().copies - before.copies, 1);
  std::vector<uint8_t> back(400);
  ASSERT_FALSE(static_cast<bool>(driver->copyToHost(back.data(), *rows, 320)));
  for (int r = 0; r < 8; ++r)
    for (int i = 0; i < 30; ++i)
      ASSERT_EQ(back[r * 40 + i], host[5 + r * 100 + i]) << r << " " << i;
  driver->release(*buffer);
  driver->release(*rows);
}

/// A small QuantizedKVCache on the fake driver, with a 300-token K/V input
/// and query and output buffers for its two sequences.
struct FakeCache {
  std::unique_ptr<Context> context = fakeContext();
  std::unique_ptr<QuantizedKVCache> cache;
  void *kv = nullptr, *q = nullptr, *out = nullptr;
  explicit FakeCache(const CacheConfig &config) {
    Status status;
    if (context)
      cache = QuantizedKVCache::create(*context, config, &status);
    EXPECT_TRUE(cache) << status.message();
    if (!cache)
      return;
    kv = context->allocate(size_t(2) * 300 * 64 * 2, &status);
    q = context->allocate(size_t(2) * 4 * 64 * 2, &status);
    out = context->allocate(size_t(2) * 4 * 64 * 2, &status);
  }
  ~FakeCache() {
    cache.reset();
    if (context)
      for (void *p : {kv, q, out})
        context->release(p);
  }
  bool ready() const { return cache && kv && q && out; }
};

// QuantizedKVCache::attend copies to the device only what changed since the
// layer's last attend: nothing when nothing did, the lengths alone after a
// decode step that took no new page.
TEST(CudaDriverTest, CacheAttendCopiesOnlyWhatChanged) {
  FakeCache f(kvq::testing::smallCacheConfig("kivi2"));
  ASSERT_TRUE(f.ready());
  auto &cache = f.cache;
  void *kv = f.kv, *q = f.q, *out = f.out;
  ASSERT_TRUE(cache->append(0, 0, kv, kv, 300).ok());
  ASSERT_TRUE(cache->append(0, 1, kv, kv, 200).ok());
  Counts before = fakeCounts();
  ASSERT_TRUE(cache->attend(0, q, out).ok());
  EXPECT_EQ(fakeCounts().copies - before.copies, 4)
      << "lengths, block table, free-page stack and its count";
  before = fakeCounts();
  ASSERT_TRUE(cache->attend(0, q, out).ok());
  EXPECT_EQ(fakeCounts().copies - before.copies, 0) << "nothing changed";
  ASSERT_TRUE(cache->append(0, 0, kv, kv, 1).ok()); // residual 73: no flush
  before = fakeCounts();
  ASSERT_TRUE(cache->attend(0, q, out).ok());
  EXPECT_EQ(fakeCounts().copies - before.copies, 1) << "the lengths";
  EXPECT_EQ(fakeCounts().synchronizations - before.synchronizations, 0);
}

// The engine contract of a decode step, counted at the driver: once the
// prompts are in, each layer's appendStep + attend is three launches
// (append, attention, combine) and nothing else -- no copy, allocation or
// synchronisation -- steps whose flushes take new pages from the pool
// included.
TEST(CudaDriverTest, ADecodeStepIsThreeLaunchesPerLayerAndNothingElse) {
  CacheConfig config = kvq::testing::smallCacheConfig("kivi2");
  FakeCache f(config);
  ASSERT_TRUE(f.ready());
  auto &cache = f.cache;
  void *kv = f.kv, *q = f.q, *out = f.out;
  for (int layer = 0; layer < config.layers; ++layer) {
    ASSERT_TRUE(cache->append(layer, 0, kv, kv, 300).ok());
    ASSERT_TRUE(cache->append(layer, 1, kv, kv, 200).ok());
    ASSERT_TRUE(cache->attend(layer, q, out).ok()); // the prompts' copies
  }
  int pagesBefore = cache->pagesInUse(0);
  for (int step = 0; step < 100; ++step) {
    Counts before = fakeCounts();
    for (int layer = 0; layer < config.layers; ++layer) {
      ASSERT_TRUE(cache->appendStep(layer, kv, kv).ok());
      ASSERT_TRUE(cache->attend(layer, q, out).ok());
    }
    Counts after = fakeCounts();
    EXPECT_EQ(after.launches - before.launches, 3 * config.layers) << step;
    EXPECT_EQ(after.copies, before.copies) << step;
    EXPECT_EQ(after.allocations, before.allocations) << step;
    EXPECT_EQ(after.synchronizations, before.synchronizations) << step;
  }
  EXPECT_EQ(cache->parts(0, 0).total(), 400);
  EXPECT_GT(cache->pagesInUse(0), pagesBefore) << "flushes took pages";
}

// A decode step captured as a CUDA graph on the cache's stream records
// launches only; before each replay prepareReplayedStep counts the step on
// the host, so the host's counts and pages stay those of a cache stepped
// eagerly, replays copy nothing, and a release between replays is copied
// by the next prepare. (The fake driver runs no kernels: the device side of
// a replay is the GPU suite's to check; that its block table lacks the
// pages the host counted is caught when the host reads it back.)
TEST(CudaDriverTest, ACapturedDecodeStepReplaysWithTheHostInStep) {
  cuda::Driver *driver = fakeDriver();
  ASSERT_TRUE(driver);
  llvm::Expected<void *> stream = driver->createStream();
  ASSERT_TRUE(static_cast<bool>(stream));
  CacheConfig config = kvq::testing::smallCacheConfig("kivi2");
  config.stream = *stream;
  auto replayed = std::make_unique<FakeCache>(config);
  auto eager = std::make_unique<FakeCache>(config);
  ASSERT_TRUE(replayed->ready() && eager->ready());
  auto step = [&](FakeCache &f) -> Status {
    for (int layer = 0; layer < config.layers; ++layer) {
      if (Status s = f.cache->appendStep(layer, f.kv, f.kv); !s.ok())
        return s;
      if (Status s = f.cache->attend(layer, f.q, f.out); !s.ok())
        return s;
    }
    return Status();
  };
  for (FakeCache *f : {replayed.get(), eager.get()}) {
    for (int layer = 0; layer < config.layers; ++layer) {
      ASSERT_TRUE(f->cache->append(layer, 0, f->kv, f->kv, 300).ok());
      ASSERT_TRUE(f->cache->append(layer, 1, f->kv, f->kv, 200).ok());
    }
    ASSERT_TRUE(step(*f).ok()); // an eager step: nothing left to copy
  }
  Counts before = fakeCounts();
  llvm::Expected<std::unique_ptr<cuda::CapturedGraph>> graph =
      driver->capture(*stream, [&]() -> llvm::Error {
        Status s = step(*replayed);
        return s.ok() ? llvm::Error::success()
                      : llvm::createStringError(llvm::inconvertibleErrorCode(),
                                                s.message());
      });
  ASSERT_TRUE(static_cast<bool>(graph)) << llvm::toString(graph.takeError());
  EXPECT_EQ(fakeCounts().copies, before.copies) << "the capture copies nothing";
  ASSERT_TRUE(step(*eager).ok()); // the captured step's twin
  auto same = [&] {
    for (int layer = 0; layer < config.layers; ++layer) {
      EXPECT_EQ(replayed->cache->pagesInUse(layer),
                eager->cache->pagesInUse(layer));
      for (int seq = 0; seq < config.batch; ++seq) {
        QuantizedKVCache::Parts a = replayed->cache->parts(layer, seq),
                                b = eager->cache->parts(layer, seq);
        EXPECT_EQ(a.sink, b.sink);
        EXPECT_EQ(a.quantized, b.quantized);
        EXPECT_EQ(a.residual, b.residual);
      }
    }
  };
  ASSERT_FALSE(static_cast<bool>((*graph)->launch(*stream)));
  auto replay = [&](int i) {
    Counts last = fakeCounts();
    ASSERT_TRUE(replayed->cache->prepareReplayedStep().ok());
    ASSERT_FALSE(static_cast<bool>((*graph)->launch(*stream)));
    EXPECT_EQ(fakeCounts().copies, last.copies) << i;
    EXPECT_EQ(fakeCounts().synchronizations, last.synchronizations) << i;
    EXPECT_EQ(fakeCounts().launches, last.launches + 1) << "one graph";
    ASSERT_TRUE(step(*eager).ok());
  };
  for (int i = 0; i < 5; ++i) // no step has taken a page yet
    replay(i);
  same();
  // A release between replays: its lengths reach the device before the
  // next replay, and the released sequence steps no more.
  for (FakeCache *f : {replayed.get(), eager.get()})
    ASSERT_TRUE(f->cache->release(1).ok());
  Counts last = fakeCounts();
  ASSERT_TRUE(replayed->cache->prepareReplayedStep().ok());
  EXPECT_GT(fakeCounts().copies, last.copies);
  ASSERT_FALSE(static_cast<bool>((*graph)->launch(*stream)));
  ASSERT_TRUE(step(*eager).ok());
  same();
  EXPECT_EQ(replayed->cache->parts(0, 1).total(), 0);
  int pagesBefore = replayed->cache->pagesInUse(0);
  for (int i = 6; i < 60; ++i)
    replay(i);
  same();
  EXPECT_EQ(replayed->cache->parts(0, 0).total(), 300 + 62);
  EXPECT_GT(replayed->cache->pagesInUse(0), pagesBefore)
      << "flushes took pages";
  // The fake ran no kernel, so the device's block table lacks the pages
  // the host counted: reading it back to release is refused, not trusted.
  Status refused = replayed->cache->release(0);
  EXPECT_EQ(refused.code(), StatusCode::RuntimeFailed);
  EXPECT_NE(refused.message().find("disagrees with the pages its decode "
                                   "steps took"),
            std::string::npos)
      << refused.message();
  graph->reset();
  replayed.reset();
  eager.reset();
  driver->destroyStream(*stream);
}

// With CacheConfig::stream set, every launch and copy of the cache goes to
// that stream — prefill, decode appends and their flushes, attend, fork,
// batched decode steps — and none to the default stream.
TEST(CudaDriverTest, TheCacheQueuesEverythingOnItsStream) {
  cuda::Driver *driver = fakeDriver();
  ASSERT_TRUE(driver);
  llvm::Expected<void *> stream = driver->createStream();
  ASSERT_TRUE(static_cast<bool>(stream));
  auto operationsOn = fakeHook<int (*)(const void *)>("kvqFakeOperationsOn");
  ASSERT_TRUE(operationsOn);
  CacheConfig config = kvq::testing::smallCacheConfig("int4");
  config.stream = *stream;
  std::unique_ptr<FakeCache> f = std::make_unique<FakeCache>(config);
  ASSERT_TRUE(f->ready());
  auto &cache = f->cache;
  void *kv = f->kv, *q = f->q, *out = f->out;
  int onDefault = operationsOn(nullptr), onOwn = operationsOn(*stream);
  ASSERT_TRUE(cache->append(0, 0, kv, kv, 300).ok()); // sink, bulk, residual
  for (int step = 0; step < 40; ++step)               // a flush at 32
    ASSERT_TRUE(cache->append(0, 0, kv, kv, 1).ok());
  ASSERT_TRUE(cache->attend(0, q, out).ok());
  ASSERT_TRUE(cache->fork(0, 1).ok());
  for (int step = 0; step < 40; ++step) // batched decode steps, flushes too
    ASSERT_TRUE(cache->appendStep(0, kv, kv).ok());
  ASSERT_TRUE(cache->attend(0, q, out).ok());
  EXPECT_EQ(operationsOn(nullptr), onDefault) << "nothing on the default one";
  EXPECT_GT(operationsOn(*stream), onOwn + 40);
  f.reset();
  driver->destroyStream(*stream);
}

// Driver failures (injected by the fake) come back as Status errors, never
// a crash, and leave the cache as it was: creation fails cleanly at every
// one of its allocations with nothing leaked; an append whose copy or
// flush launch fails and an attend whose launch fails change nothing, and
// the cache works on afterwards.
TEST(CudaDriverTest, CacheCreationSurvivesEveryAllocationFailure) {
  std::unique_ptr<Context> context = fakeContext();
  ASSERT_TRUE(context);
  auto fail = fakeHook<void (*)(const char *, int)>("kvqFakeFail");
  auto live = fakeHook<int (*)()>("kvqFakeLiveAllocations");
  ASSERT_TRUE(fail && live);
  CacheConfig config = kvq::testing::smallCacheConfig("kivi2");
  int failures = 0;
  for (int n = 0;; ++n) {
    int before = live();
    fail("cuMemAlloc_v2", n);
    Status status;
    std::unique_ptr<QuantizedKVCache> cache =
        QuantizedKVCache::create(*context, config, &status);
    if (cache) {
      fail("", -1); // n is past the last allocation: stop injecting
      break;
    }
    ++failures;
    EXPECT_NE(status.message().find("cuMemAlloc failed"), std::string::npos)
        << status.message();
    EXPECT_EQ(live(), before) << "allocation " << n << " leaked memory";
  }
  EXPECT_GT(failures, 10) << "every allocation of a cache was tried";
}

TEST(CudaDriverTest, FailedCopiesAndLaunchesLeaveTheCacheAsItWas) {
  FakeCache f(kvq::testing::smallCacheConfig("int4"));
  ASSERT_TRUE(f.ready());
  auto fail = fakeHook<void (*)(const char *, int)>("kvqFakeFail");
  ASSERT_TRUE(fail);
  QuantizedKVCache &cache = *f.cache;
  ASSERT_TRUE(cache.append(0, 0, f.kv, f.kv, 300).ok());
  while (cache.parts(0, 0).residual < 95) // one short of a flush
    ASSERT_TRUE(cache.append(0, 0, f.kv, f.kv, 1).ok());
  QuantizedKVCache::Parts before = cache.parts(0, 0);
  int pages = cache.pagesInUse(0);
  for (const char *entry : {"cuMemcpy2D_v2", "cuLaunchKernel"}) {
    fail(entry, 0); // the new token's copy; the flush's quantize
    Status s = cache.append(0, 0, f.kv, f.kv, 1);
    EXPECT_FALSE(s.ok()) << entry;
    QuantizedKVCache::Parts after = cache.parts(0, 0);
    EXPECT_EQ(after.quantized, before.quantized) << entry;
    EXPECT_EQ(after.residual, before.residual) << entry;
    EXPECT_EQ(cache.pagesInUse(0), pages) << entry;
  }
  fail("cuLaunchKernel", 0);
  Status s = cache.attend(0, f.q, f.out);
  EXPECT_NE(s.message().find("cuLaunchKernel(kvq_attn_"), std::string::npos)
      << s.message();
  EXPECT_TRUE(cache.attend(0, f.q, f.out).ok()) << "works on afterwards";
  ASSERT_TRUE(cache.append(0, 0, f.kv, f.kv, 1).ok()); // the flush, now
  EXPECT_EQ(cache.parts(0, 0).quantized, before.quantized + 32);
}

// A decode step's token from an engine's token-major [tokens, kv heads,
// head_dim] input goes to the residual in one strided copy for K and one
// for V, not one per kv head.
TEST(CudaDriverTest, ADecodeTokenIsOneCopyForKAndOneForV) {
  FakeCache f(kvq::testing::smallCacheConfig("kivi2"));
  ASSERT_TRUE(f.ready());
  TokenLayout engine{64, 2 * 64};
  ASSERT_TRUE(f.cache->append(0, 0, f.kv, f.kv, 100, engine).ok());
  Counts before = fakeCounts();
  ASSERT_TRUE(f.cache->append(0, 0, f.kv, f.kv, 1, engine).ok()); // no flush
  EXPECT_EQ(fakeCounts().copies - before.copies, 2);
}

} // namespace
