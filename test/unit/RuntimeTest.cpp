//===- RuntimeTest.cpp - the JIT runtime: backends, caches, dispatch
//-------===//

#include "kvq/Runtime/Runtime.h"
#include "kvq/Runtime/CudaDriver.h"
#include "kvq/Runtime/Reference.h"

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
    llvm::SmallString<128> path;
    ASSERT_FALSE(llvm::sys::fs::createUniqueDirectory("kvq-runtime", path));
    root = path.str().str();
    unsetenv("KVQ_ALWAYS_COMPILE");
    unsetenv("KVQ_DUMP_DIR");
  }
  void TearDown() override {
    unsetenv("KVQ_ALWAYS_COMPILE");
    unsetenv("KVQ_DUMP_DIR");
    (void)llvm::sys::fs::remove_directories(root);
  }
  std::unique_ptr<Runtime> make(Backend backend = Backend::Emulator,
                                std::string cacheDir = "") {
    RuntimeOptions options;
    options.backend = backend;
    options.cacheDir = cacheDir.empty() ? root + "/cache" : cacheDir;
    llvm::Expected<std::unique_ptr<Runtime>> runtime = Runtime::create(options);
    EXPECT_TRUE(static_cast<bool>(runtime))
        << llvm::toString(runtime.takeError());
    return runtime ? std::move(*runtime) : nullptr;
  }
  static KernelSpec spec(const char *text) {
    KernelSpec s;
    EXPECT_FALSE(parseKernelSpec(text, s));
    return s;
  }
  std::string root;
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
      cuda::Driver::get("/nonexistent/libcuda.so");
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

TEST_F(RuntimeTest, CorruptDiskEntryIsRebuilt) {
  KernelSpec s = spec("dequantize 2c32 d=64");
  std::string key;
  {
    std::unique_ptr<Runtime> runtime = make();
    auto k = runtime->prepare(s);
    ASSERT_TRUE(static_cast<bool>(k));
    key = (*k)->key;
  }
  std::string library = root + "/cache/" + key + "/kernels.so";
  ASSERT_TRUE(llvm::sys::fs::exists(library));
  ASSERT_EQ(::truncate(library.c_str(), 100), 0);
  std::unique_ptr<Runtime> runtime = make();
  auto k = runtime->prepare(s);
  ASSERT_TRUE(static_cast<bool>(k)) << llvm::toString(k.takeError());
  EXPECT_EQ((*k)->origin, "compiled");
  EXPECT_EQ(runtime->statistics().diskHits, 0u);
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

/// The same attention through the runtime's emulator and reference
/// backends, from data quantized by the runtime itself.
TEST_F(RuntimeTest, EmulatorAndReferenceBackendsAgree) {
  KernelSpec q = spec("quantize 4c32 d=64"), v = spec("quantize 4t32 d=64");
  KernelSpec attention = spec("attention k=4c32 v=4t32 d=64 hq=4 hkv=2");
  int batch = 1, capacity = 64, d = 64, rows = batch * 2;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  auto halves = [&](size_t n) {
    std::vector<uint16_t> h(n);
    for (uint16_t &x : h)
      x = ref::toHalfBits(normal(rng), HalfType::F16);
    return h;
  };
  std::vector<uint16_t> keys = halves(size_t(rows) * capacity * d),
                        values = halves(size_t(rows) * capacity * d),
                        query = halves(size_t(batch) * 4 * d),
                        sink = halves(size_t(rows) * 2 * d),
                        residual = halves(size_t(rows) * 8 * d);
  std::vector<int32_t> lengths = {2, 64, 5};

  std::vector<std::vector<uint16_t>> outputs;
  for (Backend backend : {Backend::Emulator, Backend::Reference}) {
    std::unique_ptr<Runtime> runtime = make(backend);
    ASSERT_TRUE(runtime);
    auto buffer = [&](const void *host, size_t bytes) {
      void *p = llvm::cantFail(runtime->allocate(bytes));
      if (host)
        llvm::cantFail(runtime->copyIn(p, host, bytes));
      return p;
    };
    size_t words = size_t(rows) * capacity * d * 4 / 32;
    void *kw = buffer(nullptr, words * 4), *vw = buffer(nullptr, words * 4);
    void *ks = buffer(nullptr, size_t(rows) * 2 * d * 2),
         *kz = buffer(nullptr, size_t(rows) * 2 * d * 2);
    void *vs = buffer(nullptr, size_t(rows) * capacity * 2 * 2),
         *vz = buffer(nullptr, size_t(rows) * capacity * 2 * 2);
    void *kin = buffer(keys.data(), keys.size() * 2),
         *vin = buffer(values.data(), values.size() * 2);
    for (auto [s, in, w, sc, z] :
         {std::tuple{q, kin, kw, ks, kz}, std::tuple{v, vin, vw, vs, vz}}) {
      QuantizeCall call{in, w, sc, z, rows, capacity, capacity, capacity, 0};
      ASSERT_FALSE(static_cast<bool>(runtime->quantize(s, call)));
    }
    AttentionCall call;
    call.q = buffer(query.data(), query.size() * 2);
    call.keyWords = kw;
    call.keyScales = ks;
    call.keyZeros = kz;
    call.valueWords = vw;
    call.valueScales = vs;
    call.valueZeros = vz;
    call.sinkKeys = call.sinkValues = buffer(sink.data(), sink.size() * 2);
    call.residualKeys = call.residualValues =
        buffer(residual.data(), residual.size() * 2);
    call.lengths =
        static_cast<int32_t *>(buffer(lengths.data(), lengths.size() * 4));
    call.hostLengths = lengths.data();
    std::vector<uint16_t> out(size_t(batch) * 4 * d);
    call.out = buffer(nullptr, out.size() * 2);
    call.batch = batch;
    call.bodyCapacity = capacity;
    call.sinkCapacity = 2;
    call.residualCapacity = 8;
    auto source = runtime->prepare(attention);
    ASSERT_TRUE(static_cast<bool>(source));
    call.workspace = buffer(
        nullptr, attentionWorkspaceBytes(attention, (*source)->source, call));
    llvm::Error error = runtime->attention(attention, call);
    ASSERT_FALSE(static_cast<bool>(error)) << llvm::toString(std::move(error));
    std::memcpy(out.data(), call.out, out.size() * 2);
    outputs.push_back(out);
  }
  double scale = 0, diff = 0;
  for (size_t i = 0; i < outputs[0].size(); ++i) {
    float a = ref::fromHalfBits(outputs[0][i], HalfType::F16);
    float b = ref::fromHalfBits(outputs[1][i], HalfType::F16);
    scale = std::max(scale, double(std::fabs(b)));
    diff = std::max(diff, double(std::fabs(a - b)));
  }
  EXPECT_GT(scale, 0);
  EXPECT_LE(diff, 2e-3 * scale);
}

} // namespace
