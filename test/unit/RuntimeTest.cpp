//===- RuntimeTest.cpp - the JIT runtime: backends, caches, dispatch ------===//

#include "ScratchDirectory.h"
#include "kvq/Testing/RedisServer.h"

#include "kvq/BufferSizes.h"
#include "kvq/Cache/Bundle.h"
#include "kvq/Runtime/CudaDriver.h"
#include "kvq/Runtime/Jit.h"
#include "kvq/Runtime/Reference.h"
#include "kvq/Runtime/Runtime.h"
#include "kvq/Runtime/Workload.h"

#include "llvm/Support/FileSystem.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <thread>
#include <unistd.h>

using namespace kvq;

namespace {

class RuntimeTest : public ::testing::Test {
protected:
  void SetUp() override {
    unsetenv("KVQ_ALWAYS_COMPILE");
    unsetenv("KVQ_DUMP_DIR");
  }
  void TearDown() override {
    unsetenv("KVQ_ALWAYS_COMPILE");
    unsetenv("KVQ_DUMP_DIR");
  }
  std::unique_ptr<Runtime> make(Backend backend = Backend::Emulator,
                                std::string cacheDir = "") {
    RuntimeOptions options = jit::options();
    options.backend = backend;
    options.cacheDir = cacheDir.empty() ? root + "/cache" : cacheDir;
    llvm::Expected<std::unique_ptr<Runtime>> runtime = Runtime::create(options);
    EXPECT_TRUE(static_cast<bool>(runtime))
        << llvm::toString(runtime.takeError());
    return runtime ? std::move(*runtime) : nullptr;
  }
  /// `w` on the emulator (the generated kernels) and on the reference, in
  /// that order; fewer results (and a failure) if one could not run it.
  std::vector<WorkloadResult>
  runOnEmulatorAndReference(const AttentionWorkload &w) {
    std::vector<WorkloadResult> results;
    for (Backend backend : {Backend::Emulator, Backend::Reference}) {
      std::unique_ptr<Runtime> runtime = make(backend);
      if (!runtime)
        return results;
      llvm::Expected<WorkloadResult> result = runAttentionWorkload(*runtime, w);
      if (!result) {
        ADD_FAILURE() << llvm::toString(result.takeError());
        return results;
      }
      results.push_back(std::move(*result));
    }
    return results;
  }
  static KernelSpec spec(const char *text) {
    KernelSpec s;
    EXPECT_FALSE(parseKernelSpec(text, s));
    return s;
  }
  kvq::testing::ScratchDirectory scratch{"kvq-runtime"};
  const std::string root = scratch.path();
};

bool haveDriver() {
  llvm::Expected<cuda::Driver *> driver = cuda::Driver::get();
  if (driver)
    return true;
  llvm::consumeError(driver.takeError());
  return false;
}

TEST_F(RuntimeTest, CudaWithoutADriverIsATypedError) {
  if (haveDriver())
    GTEST_SKIP() << "a CUDA driver is present";
  RuntimeOptions options;
  options.backend = Backend::Cuda;
  llvm::Expected<std::unique_ptr<Runtime>> runtime = Runtime::create(options);
  ASSERT_FALSE(static_cast<bool>(runtime));
  bool typed = false;
  llvm::handleAllErrors(runtime.takeError(), [&](const cuda::NoDriverError &e) {
    typed = true;
    EXPECT_NE(e.message().find("no CUDA driver: libcuda.so.1 could not be "
                               "loaded"),
              std::string::npos)
        << e.message();
  });
  EXPECT_TRUE(typed);
  // A bogus driver library is reported the same way.
  llvm::Expected<cuda::Driver *> bogus =
      cuda::Driver::get(0, "/nonexistent/libcuda.so");
  ASSERT_FALSE(static_cast<bool>(bogus));
  EXPECT_NE(llvm::toString(bogus.takeError()).find("/nonexistent/libcuda.so"),
            std::string::npos);
}

TEST_F(RuntimeTest, AutoPicksTheEmulatorWithoutADriver) {
  if (haveDriver())
    GTEST_SKIP() << "a CUDA driver is present: auto picks cuda";
  std::unique_ptr<Runtime> runtime = make(Backend::Auto);
  ASSERT_TRUE(runtime);
  EXPECT_EQ(runtime->backend(), Backend::Emulator);
  EXPECT_EQ(runtime->arch(), "sm_90");
}

TEST_F(RuntimeTest, CompilesOnceThenMemoryThenDisk) {
  KernelSpec s = spec("quantize 4t64 d=128");
  std::unique_ptr<Runtime> first = make();
  auto a = first->prepare(s);
  ASSERT_TRUE(static_cast<bool>(a)) << llvm::toString(a.takeError());
  EXPECT_EQ((*a)->origin, "compiled");
  auto b = first->prepare(s);
  ASSERT_TRUE(static_cast<bool>(b));
  EXPECT_EQ(a->get(), b->get()) << "the memory cache returns the same kernels";
  EXPECT_EQ(first->statistics().compiled, 1u);
  EXPECT_EQ(first->statistics().memoryHits, 1u);

  std::unique_ptr<Runtime> second = make(); // a fresh process, in effect
  auto c = second->prepare(s);
  ASSERT_TRUE(static_cast<bool>(c)) << llvm::toString(c.takeError());
  EXPECT_EQ((*c)->origin, "disk");
  EXPECT_EQ(second->statistics().compiled, 0u);
  EXPECT_EQ(second->statistics().diskHits, 1u);
  EXPECT_EQ((*c)->source.kernels.size(), 1u);
  EXPECT_EQ((*c)->source.kernels[0].argNames.size(), 9u);
}

TEST_F(RuntimeTest, RuntimeOnlyNamesTheMissingKernelAndTheWarmCommand) {
  RuntimeOptions options; // no compiler: the runtime-only library
  options.backend = Backend::Emulator;
  options.cacheDir = root + "/empty";
  llvm::Expected<std::unique_ptr<Runtime>> runtime = Runtime::create(options);
  ASSERT_TRUE(static_cast<bool>(runtime))
      << llvm::toString(runtime.takeError());
  EXPECT_FALSE((*runtime)->canCompile());
  setenv("KVQ_ALWAYS_COMPILE", "1", 1); // cannot make it compile
  auto k = (*runtime)->prepare(spec("quantize 4t64 d=128"));
  ASSERT_FALSE(static_cast<bool>(k));
  bool typed = false;
  std::string message;
  llvm::handleAllErrors(k.takeError(), [&](const MissingKernelError &e) {
    typed = true;
    message = e.message();
  });
  EXPECT_TRUE(typed);
  EXPECT_NE(message.find("'quantize 4t64 d=128 f16'"), std::string::npos)
      << message;
  EXPECT_NE(message.find("kvq-cache warm --spec=\"quantize 4t64 d=128 f16\" "
                         "--backend=emulator"),
            std::string::npos)
      << message;
  EXPECT_EQ((*runtime)->statistics().compiled, 0u);
}

TEST_F(RuntimeTest, RuntimeOnlyServesABundleAndRunsIt) {
  // Build with the JIT into one cache, export, serve from the bundle alone.
  KernelSpec s = spec("attention k=2c32 v=2t32 d=64 hq=8 hkv=2");
  std::unique_ptr<Runtime> jit = make(Backend::Emulator, root + "/build");
  ASSERT_TRUE(jit);
  std::vector<cache::Entry> entries;
  for (const KernelSpec &k :
       {s, KernelSpec::forScheme(KernelKind::Quantize, s.key, 64, s.dtype),
        KernelSpec::forScheme(KernelKind::Quantize, s.value, 64, s.dtype)}) {
    auto built = jit->prepare(k);
    ASSERT_TRUE(static_cast<bool>(built)) << llvm::toString(built.takeError());
    auto disk = cache::DiskCache::open(root + "/build");
    ASSERT_TRUE(static_cast<bool>(disk));
    std::optional<cache::Entry> entry = disk->load((*built)->key);
    ASSERT_TRUE(entry.has_value());
    entries.push_back(*entry);
  }
  ASSERT_FALSE(
      static_cast<bool>(cache::Bundle::write(root + "/kernels.kvqb", entries)));

  RuntimeOptions options;
  options.backend = Backend::Emulator;
  options.diskCache = false;
  options.bundle = root + "/kernels.kvqb";
  llvm::Expected<std::unique_ptr<Runtime>> runtime = Runtime::create(options);
  ASSERT_TRUE(static_cast<bool>(runtime))
      << llvm::toString(runtime.takeError());
  AttentionWorkload w;
  w.spec = s;
  w.batch = 2;
  w.tokens = 96;
  llvm::Expected<WorkloadResult> got = runAttentionWorkload(**runtime, w);
  ASSERT_TRUE(static_cast<bool>(got)) << llvm::toString(got.takeError());
  EXPECT_EQ(got->origin, "bundle");
  EXPECT_EQ((*runtime)->statistics().compiled, 0u);
  EXPECT_EQ((*runtime)->statistics().bundleHits, 3u);
  llvm::Expected<WorkloadResult> want = runAttentionWorkload(*jit, w);
  ASSERT_TRUE(static_cast<bool>(want));
  EXPECT_EQ(got->output, want->output);

  // A bundle that fails verification is refused when the runtime is made.
  std::ofstream(root + "/kernels.kvqb", std::ios::app) << "tail";
  llvm::Expected<std::unique_ptr<Runtime>> refused = Runtime::create(options);
  ASSERT_FALSE(static_cast<bool>(refused));
  EXPECT_NE(llvm::toString(refused.takeError()).find("after the last file"),
            std::string::npos);
}

TEST_F(RuntimeTest, DeviceLengthsAreClampedToWhatWasStaged) {
  // Lengths only in device memory are not checked at launch: a length past
  // its capacity, negative, or a body that is not whole channel groups must
  // still read only staged memory (the emulator reports any other read) and
  // attend over the clamped lengths, as the reference does given those.
  KernelSpec s = spec("attention k=2c32 v=2t32 d=64 hq=4 hkv=1");
  std::unique_ptr<Runtime> emulator = make();
  RuntimeOptions refOptions = jit::options();
  refOptions.backend = Backend::Reference;
  refOptions.diskCache = false;
  auto reference = Runtime::create(refOptions);
  ASSERT_TRUE(emulator && reference);
  const int batch = 3, d = 64, body = 64, sinkCap = 4, residualCap = 8;
  std::vector<int32_t> lengths = {4,  40, 5,    // body: 1.25 groups
                                  9,  80, -3,   // sink, body past capacity
                                  -1, -5, 200}; // residual past capacity
  std::vector<int32_t> clamped = {4, 32, 5, 4, 64, 0, 0, 0, residualCap};
  uint64_t seed = 3;
  auto halves = [&](size_t n) {
    return kvLikeHalves(n, d, HalfType::F16, seed++, false);
  };
  DeviceBuffers mem(*emulator);
  auto make = [&](const std::vector<uint16_t> &host) {
    return llvm::cantFail(mem.make(host.data(), host.size() * 2));
  };
  std::vector<uint16_t> keys = halves(size_t(batch) * body * d),
                        values = halves(size_t(batch) * body * d);
  AttentionCall call;
  const void *words[2], *scales[2], *zeros[2];
  for (int i = 0; i < 2; ++i) {
    const QuantScheme &q = i ? s.value : s.key;
    KernelSpec qs = KernelSpec::forScheme(KernelKind::Quantize, q, d, s.dtype);
    size_t n = scaleCount(q, d, batch, body);
    void *w = llvm::cantFail(
        mem.make(nullptr, packedWordCount(q, d, batch, body) * 4));
    void *sc = llvm::cantFail(mem.make(nullptr, n * 2));
    void *z = llvm::cantFail(mem.make(nullptr, n * 2));
    QuantizeCall qc{
        make(i ? values : keys), w, sc, z, batch, body, body, body, 0};
    ASSERT_FALSE(static_cast<bool>(emulator->quantize(qs, qc)));
    words[i] = w;
    scales[i] = sc;
    zeros[i] = z;
  }
  call.q = make(halves(size_t(batch) * 4 * d));
  call.keyWords = words[0];
  call.keyScales = scales[0];
  call.keyZeros = zeros[0];
  call.valueWords = words[1];
  call.valueScales = scales[1];
  call.valueZeros = zeros[1];
  call.sinkKeys = make(halves(size_t(batch) * sinkCap * d));
  call.sinkValues = make(halves(size_t(batch) * sinkCap * d));
  call.residualKeys = make(halves(size_t(batch) * residualCap * d));
  call.residualValues = make(halves(size_t(batch) * residualCap * d));
  call.batch = batch;
  call.bodyCapacity = body;
  call.sinkCapacity = sinkCap;
  call.residualCapacity = residualCap;
  call.tokensPerSplit = 0; // the plan's choice
  auto prepared = emulator->prepare(s);
  ASSERT_TRUE(static_cast<bool>(prepared));
  call.workspace = llvm::cantFail(mem.make(
      nullptr, llvm::cantFail(emulator->attentionWorkspaceBytes(s, call))));
  std::vector<std::vector<uint16_t>> outs;
  for (const std::vector<int32_t> *l : {&lengths, &clamped}) {
    AttentionCall c = call;
    c.lengths = static_cast<const int32_t *>(
        llvm::cantFail(mem.make(l->data(), l->size() * 4)));
    c.out = llvm::cantFail(mem.make(nullptr, size_t(batch) * 4 * d * 2));
    Runtime &runtime = l == &lengths ? *emulator : **reference;
    if (l == &clamped)
      c.hostLengths = l->data(); // checked: these are valid
    llvm::Error e = runtime.attention(s, c);
    ASSERT_FALSE(static_cast<bool>(e)) << llvm::toString(std::move(e));
    auto *bits = static_cast<const uint16_t *>(c.out);
    outs.emplace_back(bits, bits + size_t(batch) * 4 * d);
  }
  std::vector<float> got, want;
  for (size_t i = 0; i < outs[0].size(); ++i) {
    got.push_back(ref::fromHalfBits(outs[0][i], HalfType::F16));
    want.push_back(ref::fromHalfBits(outs[1][i], HalfType::F16));
  }
  EXPECT_LE(normwiseError(got, want), 2e-3);
}

TEST_F(RuntimeTest, SixteenThreadsCompileANewKernelOnce) {
  std::unique_ptr<Runtime> runtime = make();
  KernelSpec s = spec("dequantize 8t32 d=64");
  std::vector<std::thread> threads;
  std::vector<const CompiledKernels *> seen(16, nullptr);
  for (int i = 0; i < 16; ++i)
    threads.emplace_back([&, i] {
      auto k = runtime->prepare(s);
      if (k)
        seen[i] = k->get();
      else
        llvm::consumeError(k.takeError());
    });
  for (std::thread &t : threads)
    t.join();
  EXPECT_EQ(runtime->statistics().compiled, 1u);
  for (const CompiledKernels *k : seen)
    EXPECT_EQ(k, seen[0]);
  EXPECT_NE(seen[0], nullptr);
}

TEST_F(RuntimeTest, AlwaysCompileBypassesBothCaches) {
  KernelSpec s = spec("dequantize 4t64 d=64");
  ASSERT_TRUE(static_cast<bool>(make()->prepare(s))); // now on disk
  setenv("KVQ_ALWAYS_COMPILE", "1", 1);
  std::unique_ptr<Runtime> runtime = make();
  ASSERT_TRUE(static_cast<bool>(runtime->prepare(s)));
  ASSERT_TRUE(static_cast<bool>(runtime->prepare(s)));
  EXPECT_EQ(runtime->statistics().compiled, 2u);
  EXPECT_EQ(runtime->statistics().memoryHits, 0u);
  EXPECT_EQ(runtime->statistics().diskHits, 0u);
}

TEST_F(RuntimeTest, ARemoteCacheThatDiesMidRunCostsOneWarningNotTheRun) {
  kvq::testing::RedisServer server;
  if (!server.running())
    GTEST_SKIP() << "redis-server is not installed (scripts/setup.sh "
                    "installs it)";
  std::ofstream(root + "/key") << "a-fleet-signing-key-for-tests";
  setenv("KVQ_REMOTE_CACHE", server.url().c_str(), 1);
  setenv("KVQ_CACHE_KEY_FILE", (root + "/key").c_str(), 1);
  setenv("KVQ_REMOTE_TIMEOUT_MS", "100", 1);
  std::unique_ptr<Runtime> runtime = make();
  unsetenv("KVQ_REMOTE_CACHE");
  unsetenv("KVQ_CACHE_KEY_FILE");
  unsetenv("KVQ_REMOTE_TIMEOUT_MS");
  ASSERT_TRUE(runtime);
  ASSERT_TRUE(static_cast<bool>(runtime->prepare(spec("quantize 2c32 d=64"))));

  server.kill();
  ::testing::internal::CaptureStderr();
  for (const char *text :
       {"quantize 4t64 d=64", "dequantize 4t64 d=64", "quantize 8t64 d=64"}) {
    auto k = runtime->prepare(spec(text));
    ASSERT_TRUE(static_cast<bool>(k)) << llvm::toString(k.takeError());
    EXPECT_EQ((*k)->origin, "compiled") << text;
  }
  std::string messages = ::testing::internal::GetCapturedStderr();
  size_t first = messages.find("failed");
  EXPECT_NE(first, std::string::npos) << messages;
  EXPECT_EQ(messages.find("failed", first + 1), std::string::npos)
      << "one warning, not one per kernel:\n"
      << messages;
  EXPECT_EQ(runtime->statistics().compiled, 4u);
}

TEST_F(RuntimeTest, CorruptDiskEntryIsRebuilt) {
  KernelSpec s = spec("dequantize 2c32 d=64");
  std::string key;
  {
    std::unique_ptr<Runtime> runtime = make();
    auto k = runtime->prepare(s);
    ASSERT_TRUE(static_cast<bool>(k));
    key = (*k)->key;
  }
  std::string path = root + "/cache/" + key + ".kvqe";
  ASSERT_TRUE(llvm::sys::fs::exists(path));
  // A truncated entry, and one whose launch metadata was edited (what a GPU
  // would run differently): both rebuilt, and the rebuilt entry is then
  // served from disk again.
  auto edit = [&](int round) {
    if (round == 0) {
      ASSERT_EQ(::truncate(path.c_str(), 100), 0);
      return;
    }
    std::ifstream in(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    // The kernel metadata is JSON text inside the manifest: block_threads\":128
    size_t at = bytes.find("threads\\\":");
    ASSERT_NE(at, std::string::npos);
    at += 10;
    ASSERT_TRUE(std::isdigit(static_cast<unsigned char>(bytes[at])));
    bytes[at] = bytes[at] == '6' ? '3' : '6'; // 128 -> 628 or 328
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  };
  for (int round = 0; round < 2; ++round) {
    edit(round);
    std::unique_ptr<Runtime> runtime = make();
    auto k = runtime->prepare(s);
    ASSERT_TRUE(static_cast<bool>(k)) << llvm::toString(k.takeError());
    EXPECT_EQ((*k)->origin, "compiled") << "round " << round;
    EXPECT_EQ(runtime->statistics().diskHits, 0u);
    std::unique_ptr<Runtime> next = make();
    auto again = next->prepare(s);
    ASSERT_TRUE(static_cast<bool>(again));
    EXPECT_EQ((*again)->origin, "disk") << "round " << round;
  }
}

TEST_F(RuntimeTest, UnusableCacheDegradesToMemoryWithOneWarning) {
  std::string file = root + "/not-a-directory";
  std::ofstream(file) << "x";
  std::unique_ptr<Runtime> runtime = make(Backend::Emulator, file);
  ASSERT_TRUE(runtime);
  EXPECT_NE(runtime->cacheWarning().find("keeping kernels in memory only"),
            std::string::npos)
      << runtime->cacheWarning();
  auto k = runtime->prepare(spec("quantize 8t64 d=64"));
  ASSERT_TRUE(static_cast<bool>(k)) << llvm::toString(k.takeError());
  EXPECT_EQ((*k)->origin, "compiled");
}

TEST_F(RuntimeTest, DumpDirGetsEveryStage) {
  setenv("KVQ_DUMP_DIR", (root + "/dump").c_str(), 1);
  std::unique_ptr<Runtime> runtime = make();
  auto k = runtime->prepare(spec("quantize 2t32 d=64"));
  ASSERT_TRUE(static_cast<bool>(k)) << llvm::toString(k.takeError());
  std::string folder = root + "/dump/kvq_quant_2t32_d64_f16";
  for (const char *file : {"1-kvq.mlir", "2-planned.mlir", "3-gpu.mlir",
                           "4-emitc.mlir", "5-kernels.cu", "spec.txt"})
    EXPECT_TRUE(llvm::sys::fs::exists(folder + "/" + file)) << file;
}

TEST_F(RuntimeTest, DumpDirGetsPtxAndCubinForCuda) {
  setenv("KVQ_DUMP_DIR", (root + "/dump").c_str(), 1);
  RuntimeOptions options = jit::options();
  options.backend = Backend::Cuda;
  options.compileOnly = true; // no driver needed
  options.cacheDir = root + "/cache";
  auto runtime = Runtime::create(options);
  ASSERT_TRUE(static_cast<bool>(runtime))
      << llvm::toString(runtime.takeError());
  auto k = (*runtime)->prepare(spec("quantize 4t32 d=64"));
  ASSERT_TRUE(static_cast<bool>(k)) << llvm::toString(k.takeError());
  std::string folder = root + "/dump/kvq_quant_4t32_d64_f16";
  for (const char *file : {"6-kernels.ptx", "7-ptxas.txt", "8-kernels.cubin"})
    EXPECT_TRUE(llvm::sys::fs::exists(folder + "/" + file)) << file;
  uint64_t size = 0;
  EXPECT_FALSE(llvm::sys::fs::file_size(folder + "/8-kernels.cubin", size));
  EXPECT_EQ(size, (*k)->cubin.size());
}

/// Dense (fp16) attention through the runtime: the emulator runs the
/// generated baseline kernel, the reference backend the plain semantics.
TEST_F(RuntimeTest, DenseAttentionMatchesTheReferenceBackend) {
  KernelSpec dense = spec("dense-attention d=64 hq=8 hkv=2");
  ASSERT_EQ(dense.kind, KernelKind::DenseAttention);
  int batch = 2, d = 64, body = 100, sinkCap = 4, residualCap = 16;
  size_t kvRows = size_t(batch) * dense.kvHeads;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  auto halves = [&](size_t n) {
    std::vector<uint16_t> bits(n);
    for (uint16_t &b : bits)
      b = ref::toHalfBits(normal(rng), HalfType::F16);
    return bits;
  };
  std::vector<uint16_t> q = halves(size_t(batch) * dense.queryHeads * d),
                        k = halves(kvRows * body * d),
                        v = halves(kvRows * body * d),
                        sk = halves(kvRows * sinkCap * d),
                        sv = halves(kvRows * sinkCap * d),
                        rk = halves(kvRows * residualCap * d),
                        rv = halves(kvRows * residualCap * d);
  std::vector<int32_t> lengths = {4, 100, 16, 0, 37, 5};
  std::vector<std::vector<uint16_t>> outputs;
  for (Backend backend : {Backend::Emulator, Backend::Reference}) {
    std::unique_ptr<Runtime> runtime = make(backend);
    ASSERT_TRUE(runtime);
    std::vector<void *> owned;
    auto upload = [&](const void *host, size_t bytes) {
      void *p = llvm::cantFail(runtime->allocate(bytes));
      owned.push_back(p);
      if (host)
        llvm::cantFail(runtime->copyIn(p, host, bytes));
      return p;
    };
    AttentionCall call;
    call.q = upload(q.data(), q.size() * 2);
    call.keys = upload(k.data(), k.size() * 2);
    call.values = upload(v.data(), v.size() * 2);
    call.sinkKeys = upload(sk.data(), sk.size() * 2);
    call.sinkValues = upload(sv.data(), sv.size() * 2);
    call.residualKeys = upload(rk.data(), rk.size() * 2);
    call.residualValues = upload(rv.data(), rv.size() * 2);
    call.lengths = static_cast<const int32_t *>(
        upload(lengths.data(), lengths.size() * 4));
    call.hostLengths = lengths.data();
    call.out = upload(nullptr, q.size() * 2);
    call.batch = batch;
    call.bodyCapacity = body;
    call.sinkCapacity = sinkCap;
    call.residualCapacity = residualCap;
    call.tokensPerSplit = 64; // two body splits
    auto kernels = runtime->prepare(dense);
    ASSERT_TRUE(static_cast<bool>(kernels))
        << llvm::toString(kernels.takeError());
    call.workspace = upload(
        nullptr, llvm::cantFail(runtime->attentionWorkspaceBytes(dense, call)));
    if (backend == Backend::Emulator) {
      AttentionCall misaligned = call;
      misaligned.keys = static_cast<const char *>(call.keys) + 2;
      std::string message =
          llvm::toString(runtime->attention(dense, misaligned));
      EXPECT_NE(message.find("keys must be 16-byte aligned"), std::string::npos)
          << message;
    }
    llvm::Error error = runtime->attention(dense, call);
    ASSERT_FALSE(static_cast<bool>(error)) << llvm::toString(std::move(error));
    outputs.emplace_back(q.size());
    llvm::cantFail(
        runtime->copyOut(outputs.back().data(), call.out, q.size() * 2));
    for (void *p : owned)
      runtime->release(p);
  }
  std::vector<float> got, expected;
  for (size_t i = 0; i < q.size(); ++i) {
    got.push_back(ref::fromHalfBits(outputs[0][i], HalfType::F16));
    expected.push_back(ref::fromHalfBits(outputs[1][i], HalfType::F16));
  }
  EXPECT_LE(normwiseError(got, expected), 2e-3);
  EXPECT_GT(normwiseError(got, std::vector<float>(got.size(), 0.0f)), 0.5)
      << "the output is not all zeros";
}

TEST_F(RuntimeTest, BadSpecsAndCallsAreTypedErrors) {
  std::unique_ptr<Runtime> runtime = make();
  KernelSpec bad = spec("attention k=2c32 v=2t32 d=128 hq=6 hkv=4");
  auto k = runtime->prepare(bad);
  ASSERT_FALSE(static_cast<bool>(k));
  EXPECT_NE(llvm::toString(k.takeError())
                .find("query heads (6) must be a multiple of kv heads (4)"),
            std::string::npos);
  QuantizeCall call; // all null
  EXPECT_EQ(llvm::toString(runtime->quantize(spec("quantize 4t64 d=64"), call)),
            "input is null");
}

/// On a machine with a GPU: the cuda backend's decode step equals the
/// reference's (codes bit for bit, attention within 1e-3).
TEST_F(RuntimeTest, CudaBackendMatchesTheReference) {
  if (!haveDriver())
    GTEST_SKIP() << "no CUDA driver on this machine: the GPU path is "
                    "exercised by the emulator tests instead";
  AttentionWorkload w;
  w.spec = spec("attention k=2c32 v=2t32 d=128 hq=32 hkv=8");
  w.batch = 2;
  w.tokens = 1000;
  std::unique_ptr<Runtime> gpu = make(Backend::Cuda);
  std::unique_ptr<Runtime> reference = make(Backend::Reference);
  llvm::Expected<WorkloadResult> a = runAttentionWorkload(*gpu, w);
  llvm::Expected<WorkloadResult> b = runAttentionWorkload(*reference, w);
  ASSERT_TRUE(static_cast<bool>(a)) << llvm::toString(a.takeError());
  ASSERT_TRUE(static_cast<bool>(b)) << llvm::toString(b.takeError());
  EXPECT_EQ(a->keyWords, b->keyWords);
  EXPECT_EQ(a->valueWords, b->valueWords);
  EXPECT_LE(normwiseError(a->output, b->output), 1e-3);
}

/// The same decode step (quantize K and V with the generated kernels, then
/// attention) through the emulator and the reference backends.
TEST_F(RuntimeTest, EmulatorAndReferenceBackendsAgree) {
  AttentionWorkload w;
  w.spec = spec("attention k=4c32 v=4t32 d=64 hq=4 hkv=2");
  w.batch = 2;
  w.tokens = 96;
  std::vector<WorkloadResult> results = runOnEmulatorAndReference(w);
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].keyWords, results[1].keyWords);
  EXPECT_EQ(results[0].valueWords, results[1].valueWords);
  EXPECT_LE(normwiseError(results[0].output, results[1].output), 2e-3);
  EXPECT_GT(normwiseError(results[0].output, results[0].fp16Output), 0)
      << "4-bit attention cannot equal fp16 attention exactly";
}

/// Chunked query rows (chunked prefill, speculative verification): five
/// consecutive tokens of each of three sequences, each seeing one more
/// token than the one before, the sequences' rows in reverse order. On the
/// tensor cores a block takes 8 / GQA consecutive rows as MMA columns, so
/// blocks straddle sequences (a pass each) and mask each column to its own
/// row's tokens; the emulator runs the generated kernel, the reference
/// computes each row on its own.
class ChunkedRowsTest : public RuntimeTest,
                        public ::testing::WithParamInterface<const char *> {};

TEST_P(ChunkedRowsTest, EveryRowMatchesTheReference) {
  AttentionWorkload w;
  w.spec = spec(GetParam());
  w.batch = 3;
  w.tokens = 160;
  w.queryTokens = 5;
  std::vector<WorkloadResult> results = runOnEmulatorAndReference(w);
  ASSERT_EQ(results.size(), 2u);
  const std::vector<float> &got = results[0].output, &want = results[1].output;
  ASSERT_EQ(got.size(), size_t(15) * w.spec.queryHeads * w.spec.headDim);
  // Row by row, so that a row a block skipped or mixed up is named.
  size_t row = size_t(w.spec.queryHeads) * w.spec.headDim;
  for (size_t r = 0; r < 15; ++r)
    EXPECT_LE(
        normwiseError({got.begin() + r * row, got.begin() + (r + 1) * row},
                      {want.begin() + r * row, want.begin() + (r + 1) * row}),
        2e-3)
        << "query row " << r;
}

INSTANTIATE_TEST_SUITE_P(
    Gqa, ChunkedRowsTest,
    ::testing::Values(
        // GQA 1, 2, 4 and 8 (8, 4, 2 and 1 rows a block), head_dim 64/128.
        "attention k=2c32 v=2t32i d=64 hq=4 hkv=4 paged=64 chunked",
        "attention k=2c32 v=2t32i d=128 hq=8 hkv=4 paged=64 chunked",
        "attention k=2c32 v=2t32i d=128 hq=16 hkv=4 paged=64 chunked",
        "attention k=2c32 v=2t32i d=64 hq=16 hkv=2 paged=64 chunked",
        "attention k=4t32i v=4t32i d=128 hq=8 hkv=2 paged=64 chunked",
        "attention k=8t64 v=8t64 d=64 hq=3 hkv=1 paged=64 chunked",
        // No residual: the rows' bodies differ (a channel group each).
        "attention k=2c32 v=2t32i d=128 hq=8 hkv=2 paged=64 chunked sink",
        // The CUDA cores: a block per row.
        "attention k=2c32 v=2t32i d=128 hq=8 hkv=2 paged=64 chunked "
        "path=cuda-cores"));

} // namespace
