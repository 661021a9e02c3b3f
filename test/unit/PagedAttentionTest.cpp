//===- PagedAttentionTest.cpp - attention through a block table -----------===//
//
// A paged body (spec `paged=N`: a pool of pages, a block table per
// sequence) must compute exactly what the contiguous body it stands for
// computes: the same tiles in the same order, only their addresses differ.
// For every preset's schemes, on the emulator (the generated kernels) and
// the reference, with the pages assigned by a random permutation.

#include "ScratchDirectory.h"

#include "kvq/BufferSizes.h"
#include "kvq/Runtime/Jit.h"
#include "kvq/Runtime/Presets.h"
#include "kvq/Runtime/Reference.h"
#include "kvq/Runtime/Runtime.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

using namespace kvq;

namespace {

constexpr int kBatch = 3, kMaxPages = 4, kPageTokens = 64, kSpare = 3;
constexpr int kNumPages = kBatch * kMaxPages + kSpare;
constexpr int kHeadDim = 64, kQueryHeads = 4, kKvHeads = 2;
constexpr int kSink = 4, kResidual = 16;

/// Random contents of one quantized tensor's words, scales and zeros for
/// `rows` head rows of `tokens` tokens, as the bytes a buffer holds.
struct QuantizedBytes {
  std::vector<char> words, scales, zeros;
};

QuantizedBytes randomQuantized(const QuantScheme &s, size_t rows, int tokens,
                               std::mt19937 &rng) {
  QuantizedBytes out;
  out.words.resize(packedWordCount(s, kHeadDim, rows, tokens) * 4);
  for (char &byte : out.words)
    // FP8: exponents below the top ones (no NaN or infinity codes).
    byte = char(s.isFp8() ? rng() & 0xBF : rng());
  // Static scales: one per tensor or kv head, given, none in the pages.
  size_t scales = s.isStatic() ? size_t(s.staticScaleCount(kKvHeads))
                               : scaleCount(s, kHeadDim, rows, tokens);
  std::uniform_real_distribution<float> scale(0.01f, 0.2f), zero(-1.f, 1.f);
  auto fill = [&](std::vector<char> &bytes, auto &distribution) {
    bytes.resize(scales * (s.fp32Scales ? 4 : 2));
    for (size_t i = 0; i < scales; ++i) {
      float x = distribution(rng);
      if (s.fp32Scales) {
        std::memcpy(bytes.data() + 4 * i, &x, 4);
      } else {
        uint16_t h = ref::toHalfBits(x, HalfType::F16);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
      }
    }
  };
  fill(out.scales, scale);
  if (!s.symmetric)
    fill(out.zeros, zero);
  return out;
}

/// The contiguous tensor scattered into a pool: the block of (sequence,
/// kv head, page slot) goes to page `pageOf[sequence * kMaxPages + slot]`.
std::vector<char> scatter(const std::vector<char> &contiguous,
                          const std::vector<int32_t> &pageOf) {
  if (contiguous.empty())
    return {};
  size_t block = contiguous.size() / (size_t(kBatch) * kKvHeads * kMaxPages);
  std::vector<char> pool(size_t(kNumPages) * kKvHeads * block, 0);
  for (int b = 0; b < kBatch; ++b)
    for (int h = 0; h < kKvHeads; ++h)
      for (int slot = 0; slot < kMaxPages; ++slot)
        std::memcpy(pool.data() +
                        (size_t(pageOf[b * kMaxPages + slot]) * kKvHeads + h) *
                            block,
                    contiguous.data() +
                        ((size_t(b) * kKvHeads + h) * kMaxPages + slot) * block,
                    block);
  return pool;
}

/// The same, token-major within each page (vLLM's NHD): a page holds token
/// 0 of every kv head, then token 1, ...; `rowBytes` is one token's row.
std::vector<char> scatterTokenMajor(const std::vector<char> &contiguous,
                                    const std::vector<int32_t> &pageOf,
                                    size_t rowBytes) {
  std::vector<char> pool(size_t(kNumPages) * kKvHeads * kPageTokens * rowBytes,
                         0);
  for (int b = 0; b < kBatch; ++b)
    for (int h = 0; h < kKvHeads; ++h)
      for (int slot = 0; slot < kMaxPages; ++slot)
        for (int t = 0; t < kPageTokens; ++t)
          std::memcpy(
              pool.data() +
                  ((size_t(pageOf[b * kMaxPages + slot]) * kPageTokens + t) *
                       kKvHeads +
                   h) *
                      rowBytes,
              contiguous.data() +
                  (((size_t(b) * kKvHeads + h) * kMaxPages + slot) *
                       kPageTokens +
                   t) *
                      rowBytes,
              rowBytes);
  return pool;
}

std::vector<uint16_t> randomHalves(size_t n, std::mt19937 &rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<uint16_t> out(n);
  for (uint16_t &h : out)
    h = ref::toHalfBits(normal(rng), HalfType::F16);
  return out;
}

KernelSpec specOf(const char *text) {
  KernelSpec spec;
  EXPECT_FALSE(parseKernelSpec(text, spec)) << text;
  return spec;
}

/// A JIT runtime on `backend` with its own cache, and the device buffers
/// a test uploads, released at the end.
struct TestRuntime {
  explicit TestRuntime(Backend backend) : scratch("kvq-paged-test") {
    RuntimeOptions options = jit::options();
    options.backend = backend;
    options.cacheDir = scratch.path() + "/cache";
    runtime = llvm::cantFail(Runtime::create(options));
  }
  ~TestRuntime() {
    for (void *p : owned)
      runtime->release(p);
  }
  /// `bytes` of device memory holding `host` (if given); null for 0 bytes.
  void *upload(const void *host, size_t bytes) {
    if (bytes == 0)
      return nullptr;
    void *p = llvm::cantFail(runtime->allocate(bytes));
    owned.push_back(p);
    if (host)
      llvm::cantFail(runtime->copyIn(p, host, bytes));
    return p;
  }
  /// Runs `call` with an output and a workspace allocated here; the
  /// output's `halves`. An error fails the test.
  std::vector<uint16_t> attend(const KernelSpec &spec, AttentionCall call,
                               size_t halves) {
    call.out = upload(nullptr, halves * 2);
    call.workspace = upload(
        nullptr, llvm::cantFail(runtime->attentionWorkspaceBytes(spec, call)));
    llvm::Error error = runtime->attention(spec, call);
    EXPECT_FALSE(static_cast<bool>(error)) << llvm::toString(std::move(error));
    std::vector<uint16_t> out(halves);
    llvm::cantFail(runtime->copyOut(out.data(), call.out, halves * 2));
    return out;
  }
  kvq::testing::ScratchDirectory scratch;
  std::unique_ptr<Runtime> runtime;
  std::vector<void *> owned;
};

/// (preset, backend, token-major pages).
class PagedAttentionTest
    : public ::testing::TestWithParam<std::tuple<std::string, Backend, bool>> {
};

TEST_P(PagedAttentionTest, PermutedPagesEqualTheContiguousBodyBitForBit) {
  auto [presetName, backend, nhd] = GetParam();
  CachePreset preset = *findPreset(presetName);
  KernelSpec contiguous = KernelSpec::forAttention(
      preset.key, preset.value, kHeadDim, kQueryHeads, kKvHeads, HalfType::F16,
      /*sink=*/true, /*residual=*/true);
  KernelSpec paged = contiguous;
  paged.pageTokens = kPageTokens;
  paged.nhdPages = nhd;
  ASSERT_FALSE(paged.validate().has_value()) << *paged.validate();

  std::mt19937 rng(1234);
  size_t kvRows = size_t(kBatch) * kKvHeads;
  int capacity = kMaxPages * kPageTokens;
  QuantizedBytes k = randomQuantized(preset.key, kvRows, capacity, rng);
  QuantizedBytes v = randomQuantized(preset.value, kvRows, capacity, rng);
  std::vector<int32_t> pageOf(kNumPages);
  std::iota(pageOf.begin(), pageOf.end(), 0);
  std::shuffle(pageOf.begin(), pageOf.end(), rng);
  pageOf.resize(kBatch * kMaxPages); // the block table; 3 pages stay free
  std::vector<uint16_t> q =
      randomHalves(size_t(kBatch) * kQueryHeads * kHeadDim, rng);
  std::vector<uint16_t> sinkK = randomHalves(kvRows * kSink * kHeadDim, rng),
                        sinkV = randomHalves(kvRows * kSink * kHeadDim, rng),
                        residK =
                            randomHalves(kvRows * kResidual * kHeadDim, rng),
                        residV =
                            randomHalves(kvRows * kResidual * kHeadDim, rng);
  // A full body, one of two pages and a half, one short: whole channel
  // groups (32) everywhere.
  std::vector<int32_t> lengths = {kSink, capacity, kResidual, 3,        160,
                                  7,     kSink,    32,        kResidual};

  TestRuntime test(backend);
  auto upload = [&](const void *host, size_t bytes) {
    return test.upload(host, bytes);
  };

  auto run = [&](const KernelSpec &spec) {
    bool isPaged = spec.pageTokens > 0;
    // Words (and per-group scales) go to the pages; static scales as given.
    auto body = [&](const std::vector<char> &bytes, const QuantScheme &s,
                    bool words) {
      std::vector<char> data = bytes;
      if (isPaged && (words || !s.isStatic()))
        data = spec.nhdPages
                   ? scatterTokenMajor(bytes, pageOf, kHeadDim * s.bits / 8)
                   : scatter(bytes, pageOf);
      return upload(data.data(), data.size());
    };
    AttentionCall call;
    call.q = upload(q.data(), q.size() * 2);
    call.keyWords = body(k.words, spec.key, true);
    call.keyScales = body(k.scales, spec.key, false);
    call.keyZeros = body(k.zeros, spec.key, false);
    call.valueWords = body(v.words, spec.value, true);
    call.valueScales = body(v.scales, spec.value, false);
    call.valueZeros = body(v.zeros, spec.value, false);
    call.sinkKeys = upload(sinkK.data(), sinkK.size() * 2);
    call.sinkValues = upload(sinkV.data(), sinkV.size() * 2);
    call.residualKeys = upload(residK.data(), residK.size() * 2);
    call.residualValues = upload(residV.data(), residV.size() * 2);
    call.lengths =
        static_cast<int32_t *>(upload(lengths.data(), lengths.size() * 4));
    call.hostLengths = lengths.data();
    call.batch = kBatch;
    call.sinkCapacity = kSink;
    call.residualCapacity = kResidual;
    call.tokensPerSplit = 64;
    if (isPaged) {
      call.blockTable =
          static_cast<int32_t *>(upload(pageOf.data(), pageOf.size() * 4));
      call.maxPages = kMaxPages;
      call.numPages = kNumPages;
    } else {
      call.bodyCapacity = capacity;
    }
    return test.attend(spec, call, q.size());
  };
  std::vector<uint16_t> expected = run(contiguous);
  std::vector<uint16_t> actual = run(paged);
  EXPECT_EQ(actual, expected) << paged.canonical();
  EXPECT_NE(std::count(expected.begin(), expected.end(), 0),
            long(expected.size()))
      << "the output must not be trivially zero";
}

INSTANTIATE_TEST_SUITE_P(
    Presets, PagedAttentionTest,
    ::testing::Combine(::testing::Values("kivi2", "kivi4", "hf_quanto_int4",
                                         "int4", "int8", "fp8_e4m3",
                                         "prefixquant"),
                       ::testing::Values(Backend::Emulator, Backend::Reference),
                       ::testing::Values(false)),
    [](const auto &info) {
      return std::get<0>(info.param) + "_" +
             backendName(std::get<1>(info.param));
    });

// Token-major pages (vLLM's NHD cache layout) of the static presets read
// exactly as the contiguous body they stand for.
INSTANTIATE_TEST_SUITE_P(
    TokenMajorPages, PagedAttentionTest,
    ::testing::Combine(::testing::Values("fp8_e4m3", "fp8_e5m2", "prefixquant"),
                       ::testing::Values(Backend::Emulator, Backend::Reference),
                       ::testing::Values(true)),
    [](const auto &info) {
      return std::get<0>(info.param) + "_" +
             backendName(std::get<1>(info.param)) + "_nhd";
    });

TEST(PagedAttentionCallTest, BadPagedCallsAreTypedErrorsNamingTheValue) {
  TestRuntime test(Backend::Reference);
  Runtime *runtime = test.runtime.get();
  KernelSpec paged =
      specOf("attention k=4t64 v=4t64 d=64 hq=4 hkv=2 paged=64 nosegments");
  KernelSpec contiguous = paged;
  contiguous.pageTokens = 0;
  alignas(256) static char buffer[1 << 16];
  alignas(16) static int32_t table[8];
  AttentionCall call;
  call.q = call.keyWords = call.keyScales = call.keyZeros = buffer;
  call.valueWords = call.valueScales = call.valueZeros = buffer;
  call.lengths = table;
  call.out = call.workspace = buffer;
  call.batch = 1;
  call.blockTable = table;
  call.maxPages = 2;
  call.numPages = 4;
  auto message = [&](const KernelSpec &spec, AttentionCall c) {
    return llvm::toString(runtime->attention(spec, c));
  };
  AttentionCall noTable = call;
  noTable.blockTable = nullptr;
  EXPECT_EQ(message(paged, noTable), "block_table is null");
  AttentionCall noPages = call;
  noPages.numPages = 0;
  EXPECT_EQ(message(paged, noPages),
            "a paged body needs max_pages and num_pages of at least 1, got 2 "
            "and 0");
  AttentionCall capacity = call;
  capacity.bodyCapacity = 100;
  EXPECT_EQ(message(paged, capacity),
            "body_capacity 100 must be 0 or max_pages x page tokens (128) for "
            "a paged body");
  EXPECT_NE(message(contiguous, call).find("which is not paged (paged=N)"),
            std::string::npos);
}

/// Device data is not trusted: a block table naming pages outside the pool
/// and body lengths far past the table's reach (not checked at launch: no
/// host copy of the lengths) make the kernel read only inside its buffers,
/// which the emulator checks for every access.
TEST(PagedAttentionBoundsTest, HostileTablesAndLengthsStayInsideThePool) {
  TestRuntime test(Backend::Emulator);
  KernelSpec spec = specOf("attention k=2c32 v=2t32 d=64 hq=4 hkv=2 paged=64");
  constexpr int batch = 2, maxPages = 2, numPages = 3, heads = 2, d = 64;
  std::mt19937 rng(77);
  auto upload = [&](const void *host, size_t bytes) {
    return test.upload(host, bytes);
  };
  QuantizedBytes k =
      randomQuantized(spec.key, size_t(numPages) * heads, 64, rng);
  QuantizedBytes v =
      randomQuantized(spec.value, size_t(numPages) * heads, 64, rng);
  std::vector<uint16_t> q = randomHalves(size_t(batch) * 4 * d, rng);
  std::vector<uint16_t> sink = randomHalves(size_t(batch) * heads * 4 * d, rng);
  std::vector<uint16_t> resid =
      randomHalves(size_t(batch) * heads * 16 * d, rng);
  std::vector<int32_t> table = {1000, -7, 2, 0};
  std::vector<int32_t> lengths = {4, 100000, 16, 9, 50000, 999};
  AttentionCall call;
  call.q = upload(q.data(), q.size() * 2);
  call.keyWords = upload(k.words.data(), k.words.size());
  call.keyScales = upload(k.scales.data(), k.scales.size());
  call.keyZeros = upload(k.zeros.data(), k.zeros.size());
  call.valueWords = upload(v.words.data(), v.words.size());
  call.valueScales = upload(v.scales.data(), v.scales.size());
  call.valueZeros = upload(v.zeros.data(), v.zeros.size());
  call.sinkKeys = call.sinkValues = upload(sink.data(), sink.size() * 2);
  call.residualKeys = call.residualValues =
      upload(resid.data(), resid.size() * 2);
  call.lengths =
      static_cast<int32_t *>(upload(lengths.data(), lengths.size() * 4));
  call.blockTable =
      static_cast<int32_t *>(upload(table.data(), table.size() * 4));
  call.batch = batch;
  call.maxPages = maxPages;
  call.numPages = numPages;
  call.sinkCapacity = 4;
  call.residualCapacity = 16;
  std::vector<uint16_t> out = test.attend(spec, call, q.size());
  for (uint16_t h : out)
    EXPECT_TRUE(std::isfinite(ref::fromHalfBits(h, HalfType::F16)));
}

} // namespace
