//===- EmulatorTest.cpp - the emulator's CUDA semantics and checks --------===//
//
// Hand-written kernels (in the generated code's conventions: access macros
// with site ids, KVQ_SHARED) that each exercise one rule of the emulator.

#include "kvq/Runtime/Emulator.h"

// Shared with the GPU check (bench/gpu/mma_check.cu).
#include "../../bench/gpu/mma_test_tile.h"
#include "../../bench/gpu/pair_ops_cases.h"

#include <gtest/gtest.h>

#include <cstring>

using namespace kvq;
using namespace kvq::emu;

namespace {

/// Compiles `body` (kernels taking the given arguments) into a module.
std::unique_ptr<Module> build(const std::string &body,
                              std::vector<GeneratedKernel> kernels) {
  GeneratedSource source;
  source.cuda = std::string("#include \"") + kPreludeName + "\"\n" + body;
  source.kernels = std::move(kernels);
  llvm::Expected<std::unique_ptr<Module>> module =
      Module::compile(source, KVQ_TEST_EMULATOR_CACHE);
  if (!module) {
    ADD_FAILURE() << llvm::toString(module.takeError());
    return nullptr;
  }
  return std::move(*module);
}

GeneratedKernel kernel(const std::string &name,
                       std::vector<std::string> argTypes) {
  GeneratedKernel k;
  k.name = name;
  k.argTypes = std::move(argTypes);
  return k;
}

struct Buffer {
  explicit Buffer(size_t bytes) : p(deviceAlloc(bytes)) {}
  ~Buffer() { deviceFree(p); }
  void *p;
};

const char *kKernels = R"cuda(
extern "C" __global__ void copy_offset(int32_t* in, int32_t* out, int32_t offset) {
  int i = (int)threadIdx.x;
  KVQ_STG(1, out, i, KVQ_LDG(0, in, i + offset));
}
extern "C" __global__ void misaligned(int32_t* in, int32_t* out) {
  const char* bytes = reinterpret_cast<const char*>(in);
  int32_t v = KVQ_LDG(0, reinterpret_cast<const int32_t*>(bytes + 2), 0);
  KVQ_STG(1, out, 0, v);
}
extern "C" __global__ void butterfly(int32_t* out) {
  int v = (int)threadIdx.x * 10;
  v = __shfl_xor_sync(0xffffffffu, v, 1);
  KVQ_STG(0, out, (int)threadIdx.x, v);
}
extern "C" __global__ void divergent_shuffle(int32_t* out) {
  int v = (int)threadIdx.x;
  if ((int)threadIdx.x < 16)
    v = __shfl_xor_sync(0xffffffffu, v, 1);
  KVQ_STG(0, out, (int)threadIdx.x, v);
}
// Reverses a block through shared memory; `sync` toggles the barrier.
extern "C" __global__ void reverse(int32_t* in, int32_t* out, int32_t sync) {
  KVQ_SHARED(int32_t, tile, 64);
  int i = (int)threadIdx.x;
  KVQ_STS(1, tile, i, KVQ_LDG(0, in, i));
  if (sync)
    __syncthreads();
  KVQ_STG(3, out, i, KVQ_LDS(2, tile, 63 - i));
}
// 128-bit shared-memory accesses at float offset `at` (a multiple of 4 is
// aligned); thread 0 writes and reads back one float4.
extern "C" __global__ void shared_vector(float* out, int32_t at) {
  KVQ_SHARED(float, tile, 16);
  if ((int)threadIdx.x == 0) {
    KVQ_STS4(0, tile, at, kvq_float4(1.0f, 2.0f, 3.0f, 4.0f));
    float4 v = KVQ_LDS4(1, tile, at);
    KVQ_STG(2, out, 0, kvq_lane(v, 0) + kvq_lane(v, 3));
  }
}
// Threads below `split` wait at one __syncthreads, the others at another:
// legal C++, a hang or corruption on a GPU.
extern "C" __global__ void two_barriers(int32_t* out, int32_t split) {
  int i = (int)threadIdx.x;
  if (i < split)
    __syncthreads();
  else
    __syncthreads();
  KVQ_STG(0, out, i, i);
}
// Thread i writes tile[i] for i < written, then every thread reads
// tile[63 - i]: a GPU reads garbage where nothing was written.
extern "C" __global__ void partial_tile(float* out, int32_t written) {
  KVQ_SHARED(float, tile, 64);
  int i = (int)threadIdx.x;
  if (i < written)
    KVQ_STS(0, tile, i, 1.0f);
  __syncthreads();
  KVQ_STG(2, out, i, KVQ_LDS(1, tile, 63 - i));
}
extern "C" __global__ void strided(int32_t* in, int32_t* out, int32_t stride) {
  int i = (int)threadIdx.x;
  KVQ_STG(1, out, i, KVQ_LDG(0, in, i * stride));
}
// One 16x8x16 tile per warp through kvq_mma_m16n8k16: every lane loads its
// fragments as the PTX ISA lays them out (lane = 4 g + t), A row-major
// 16x16 and B column-major (b[j * 16 + k] = B[k][j]) as fp16 bits, C and D
// 16x8 row-major floats. `swap` != 0 hands the mma a[1] and a[2] swapped,
// a fragment in the wrong place.
extern "C" __global__ void mma_tile(uint32_t* a, uint32_t* b, float* c, float* d, int32_t swap) {
  int lane = (int)threadIdx.x % 32, g = lane / 4, t = lane % 4;
  // a and b hold two fp16 per word: element pairs (2t, 2t+1) of a row.
  unsigned fa[4] = {KVQ_LDG(0, a, g * 8 + t), KVQ_LDG(0, a, (g + 8) * 8 + t),
                    KVQ_LDG(0, a, g * 8 + t + 4), KVQ_LDG(0, a, (g + 8) * 8 + t + 4)};
  if (swap) {
    unsigned x = fa[1];
    fa[1] = fa[2];
    fa[2] = x;
  }
  unsigned fb[2] = {KVQ_LDG(1, b, g * 8 + t), KVQ_LDG(1, b, g * 8 + t + 4)};
  float fc[4] = {KVQ_LDG(2, c, g * 8 + 2 * t), KVQ_LDG(2, c, g * 8 + 2 * t + 1),
                 KVQ_LDG(2, c, (g + 8) * 8 + 2 * t), KVQ_LDG(2, c, (g + 8) * 8 + 2 * t + 1)};
  float fd[4];
  kvq_mma_m16n8k16(fd, fa, fb, fc);
  KVQ_STG(3, d, g * 8 + 2 * t, fd[0]);
  KVQ_STG(3, d, g * 8 + 2 * t + 1, fd[1]);
  KVQ_STG(3, d, (g + 8) * 8 + 2 * t, fd[2]);
  KVQ_STG(3, d, (g + 8) * 8 + 2 * t + 1, fd[3]);
}
// The register helpers, one case of bench/gpu/pair_ops_cases.h per
// thread: in[4i..4i+3] its kind and operands, out[2i..2i+1] its results.
extern "C" __global__ void pair_ops(uint32_t* in, uint32_t* out) {
  int i = (int)threadIdx.x;
  uint32_t kind = KVQ_LDG(0, in, 4 * i), a = KVQ_LDG(0, in, 4 * i + 1),
           b = KVQ_LDG(0, in, 4 * i + 2), c = KVQ_LDG(0, in, 4 * i + 3);
  uint32_t first = 0, second = 0;
  if (kind == 0) {
    first = (uint32_t)kvq_byte_perm((int)a, (int)b, (int)c);
  } else {
    int product = kvq_mul_f16x2((int)a, (int)b);
    first = (uint32_t)product;
    second = (uint32_t)kvq_mul_f16x2_error((int)a, (int)b, product);
  }
  KVQ_STG(1, out, 2 * i, first);
  KVQ_STG(1, out, 2 * i + 1, second);
}
// A warp whose lanes do not all reach the mma.
extern "C" __global__ void divergent_mma(uint32_t* a, float* d) {
  if ((int)threadIdx.x == 5)
    return;
  unsigned fa[4] = {0, 0, 0, 0}, fb[2] = {0, 0};
  float fc[4] = {0, 0, 0, 0}, fd[4];
  kvq_mma_m16n8k16(fd, fa, fb, fc);
  KVQ_STG(0, d, (int)threadIdx.x, fd[0]);
}
)cuda";

std::unique_ptr<Module> &testModule() {
  static std::unique_ptr<Module> module =
      build(kKernels,
            {kernel("copy_offset", {"int32_t*", "int32_t*", "int32_t"}),
             kernel("misaligned", {"int32_t*", "int32_t*"}),
             kernel("butterfly", {"int32_t*"}),
             kernel("divergent_shuffle", {"int32_t*"}),
             kernel("reverse", {"int32_t*", "int32_t*", "int32_t"}),
             kernel("shared_vector", {"float*", "int32_t"}),
             kernel("two_barriers", {"int32_t*", "int32_t"}),
             kernel("partial_tile", {"float*", "int32_t"}),
             kernel("strided", {"int32_t*", "int32_t*", "int32_t"}),
             kernel("mma_tile",
                    {"uint32_t*", "uint32_t*", "float*", "float*", "int32_t"}),
             kernel("divergent_mma", {"uint32_t*", "float*"}),
             kernel("pair_ops", {"uint32_t*", "uint32_t*"})});
  return module;
}

TEST(Emulator, OutOfBoundsLoadIsReportedWithItsSite) {
  Module *m = testModule().get();
  ASSERT_TRUE(m);
  Buffer in(64 * 4), out(64 * 4);
  int offset = 1; // thread 63 reads element 64: one past the end
  std::vector<void *> args = {&in.p, &out.p, &offset};
  llvm::Error error = m->launch("copy_offset", {1}, {64}, args);
  ASSERT_TRUE(static_cast<bool>(error));
  std::string message = llvm::toString(std::move(error));
  EXPECT_NE(message.find("copy_offset: out-of-bounds 4-byte global load at "
                         "site 0"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("thread 63"), std::string::npos) << message;

  offset = 0;
  EXPECT_FALSE(static_cast<bool>(m->launch("copy_offset", {1}, {64}, args)));
}

TEST(Emulator, MisalignedAccessIsAnError) {
  Module *m = testModule().get();
  ASSERT_TRUE(m);
  Buffer in(256), out(256);
  std::vector<void *> args = {&in.p, &out.p};
  std::string message =
      llvm::toString(m->launch("misaligned", {1}, {32}, args));
  EXPECT_NE(message.find("misaligned 4-byte global load at site 0"),
            std::string::npos)
      << message;
}

TEST(Emulator, SharedVectorAccessMustBeAligned) {
  Module *m = testModule().get();
  ASSERT_TRUE(m);
  Buffer out(256);
  int at = 8;
  std::vector<void *> args = {&out.p, &at};
  llvm::Error error = m->launch("shared_vector", {1}, {32}, args);
  ASSERT_FALSE(static_cast<bool>(error)) << llvm::toString(std::move(error));
  float result;
  std::memcpy(&result, out.p, 4);
  EXPECT_EQ(result, 5.0f); // lanes 0 and 3 of (1, 2, 3, 4)
  at = 2; // 8-byte aligned only: a GPU faults on this 128-bit access
  std::string message =
      llvm::toString(m->launch("shared_vector", {1}, {32}, args));
  EXPECT_NE(message.find("misaligned 128-bit shared access at site 0"),
            std::string::npos)
      << message;
  at = 16; // past the 16-float tile
  message = llvm::toString(m->launch("shared_vector", {1}, {32}, args));
  EXPECT_NE(message.find("out-of-bounds shared access at site 0"),
            std::string::npos)
      << message;
}

TEST(Emulator, XorShuffleExchangesLaneValues) {
  Module *m = testModule().get();
  ASSERT_TRUE(m);
  Buffer out(64 * 4);
  std::vector<void *> args = {&out.p};
  ASSERT_FALSE(static_cast<bool>(m->launch("butterfly", {1}, {64}, args)));
  auto *values = static_cast<int32_t *>(out.p);
  for (int i = 0; i < 64; ++i)
    EXPECT_EQ(values[i], (i ^ 1) * 10) << "lane " << i;
}

// kvq_mma_m16n8k16 on the emulator computes D = A.B + C with mma.sync's
// fragment layouts: distinct small integers (exact in fp16 and in the fp32
// sums) make every element of D depend on where each fragment came from, so
// a transposed or swapped fragment gives another D (the swap run shows it).
TEST(Emulator, MmaFragmentsFollowThePtxLayout) {
  Module *m = testModule().get();
  ASSERT_TRUE(m);
  kvq_mma_test::Tile tile;
  Buffer a(sizeof tile.a), b(sizeof tile.b), c(sizeof tile.C), d(16 * 8 * 4);
  std::memcpy(a.p, tile.a, sizeof tile.a);
  std::memcpy(b.p, tile.b, sizeof tile.b);
  std::memcpy(c.p, tile.C, sizeof tile.C);
  for (int32_t swap : {0, 1}) {
    int32_t flag = swap;
    std::vector<void *> args = {&a.p, &b.p, &c.p, &d.p, &flag};
    ASSERT_FALSE(static_cast<bool>(m->launch("mma_tile", {1}, {32}, args)));
    int wrong = tile.mismatches(static_cast<float *>(d.p));
    if (swap)
      EXPECT_GT(wrong, 64) << "a swapped fragment must change D";
    else
      EXPECT_EQ(wrong, 0) << "elements of D differ from A.B + C";
  }
}

// Channel-axis key codes enter the score MMAs as fp16 subnormals (code x
// 2^(s - 24)): the emulated mma.sync keeps them, as the PTX ISA's f16
// operands do (mma_check.cu checks the same tile on a GPU).
TEST(Emulator, MmaKeepsSubnormalOperands) {
  Module *m = testModule().get();
  ASSERT_TRUE(m);
  kvq_mma_test::Tile tile(/*subnormal=*/true);
  Buffer a(sizeof tile.a), b(sizeof tile.b), c(sizeof tile.C), d(16 * 8 * 4);
  std::memcpy(a.p, tile.a, sizeof tile.a);
  std::memcpy(b.p, tile.b, sizeof tile.b);
  std::memcpy(c.p, tile.C, sizeof tile.C);
  int32_t swap = 0;
  std::vector<void *> args = {&a.p, &b.p, &c.p, &d.p, &swap};
  ASSERT_FALSE(static_cast<bool>(m->launch("mma_tile", {1}, {32}, args)));
  EXPECT_EQ(tile.mismatches(static_cast<float *>(d.p)), 0)
      << "elements of D differ from A.B + C with A subnormal";
  // Flushed to zero, A would leave D = C: the tile is not one where that
  // passes.
  int flushedAlike = 0;
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 8; ++j)
      flushedAlike += tile.expected(i, j) == tile.C[i][j];
  EXPECT_LT(flushedAlike, 16);
}

TEST(Emulator, PairHelpersGiveTheHandComputedBits) {
  Module *m = testModule().get();
  ASSERT_TRUE(m);
  using namespace kvq_pair_test;
  Buffer in(kCases * 4 * 4), out(kCases * 2 * 4);
  unsigned expected[2 * kCases];
  fillCases(static_cast<uint32_t *>(in.p), expected);
  std::vector<void *> args = {&in.p, &out.p};
  ASSERT_FALSE(static_cast<bool>(m->launch("pair_ops", {1}, {kCases}, args)));
  auto *operands = static_cast<uint32_t *>(in.p);
  auto *results = static_cast<uint32_t *>(out.p);
  for (int i = 0; i < 2 * kCases; ++i)
    EXPECT_EQ(results[i], expected[i])
        << std::hex << "result " << i % 2 << " of case " << std::dec << i / 2
        << std::hex << " (kind " << operands[4 * (i / 2)] << ", operands 0x"
        << operands[4 * (i / 2) + 1] << ", 0x" << operands[4 * (i / 2) + 2]
        << ", 0x" << operands[4 * (i / 2) + 3] << ")";
}

TEST(Emulator, AnMmaMissingALaneIsAnError) {
  Module *m = testModule().get();
  ASSERT_TRUE(m);
  Buffer a(16), d(32 * 4);
  std::vector<void *> args = {&a.p, &d.p};
  std::string message =
      llvm::toString(m->launch("divergent_mma", {1}, {32}, args));
  EXPECT_NE(message.find("in warp 0"), std::string::npos) << message;
  EXPECT_NE(message.find("exited"), std::string::npos) << message;
}

TEST(Emulator, DivergentShuffleIsAnError) {
  Module *m = testModule().get();
  ASSERT_TRUE(m);
  Buffer out(32 * 4);
  std::vector<void *> args = {&out.p};
  std::string message =
      llvm::toString(m->launch("divergent_shuffle", {1}, {32}, args));
  EXPECT_NE(message.find("divergent __shfl_xor_sync in warp 0"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("exited"), std::string::npos) << message;
}

TEST(Emulator, TwoSchedulesExposeAMissingBarrier) {
  Module *m = testModule().get();
  ASSERT_TRUE(m);
  Buffer in(64 * 4), forward(64 * 4), reverse(64 * 4);
  for (int i = 0; i < 64; ++i)
    static_cast<int32_t *>(in.p)[i] = i;
  auto run = [&](void *out, int sync, Schedule schedule) {
    std::vector<void *> args = {&in.p, &out, &sync};
    LaunchOptions options;
    options.schedule = schedule;
    return llvm::toString(m->launch("reverse", {1}, {64}, args, options));
  };
  EXPECT_EQ(run(forward.p, 1, Schedule::Forward), "");
  EXPECT_EQ(run(reverse.p, 1, Schedule::Reverse), "");
  auto *a = static_cast<int32_t *>(forward.p);
  auto *b = static_cast<int32_t *>(reverse.p);
  EXPECT_TRUE(std::equal(a, a + 64, b));
  EXPECT_EQ(a[0], 63);
  EXPECT_EQ(a[63], 0);
  // Without the barrier, the order that runs readers first reads shared
  // memory nobody has written yet: reported, in one order or the other.
  std::string message = run(forward.p, 0, Schedule::Forward) +
                        run(reverse.p, 0, Schedule::Reverse);
  EXPECT_NE(message.find("read of shared memory no thread of this block "
                         "wrote at site 2"),
            std::string::npos)
      << message;
}

TEST(Emulator, ThreadsWaitingAtDifferentBarriersAreAnError) {
  Module *m = testModule().get();
  ASSERT_TRUE(m);
  Buffer out(64 * 4);
  int split = 32;
  std::vector<void *> args = {&out.p, &split};
  std::string message =
      llvm::toString(m->launch("two_barriers", {1}, {64}, args));
  EXPECT_NE(message.find("divergent __syncthreads in block (0, 0, 0)"),
            std::string::npos)
      << message;
  // The same kernel with every thread on one side is fine.
  split = 64;
  EXPECT_EQ(llvm::toString(m->launch("two_barriers", {1}, {64}, args)), "");
}

TEST(Emulator, SharedMemoryStartsPoisonedAndUnwrittenReadsAreErrors) {
  Module *m = testModule().get();
  ASSERT_TRUE(m);
  Buffer out(64 * 4);
  int written = 64;
  std::vector<void *> args = {&out.p, &written};
  ASSERT_EQ(llvm::toString(m->launch("partial_tile", {1}, {64}, args)), "");
  EXPECT_EQ(static_cast<float *>(out.p)[0], 1.0f);
  // Half the tile written, in a second block run: nothing carries over from
  // the first launch, and reading the other half is reported.
  written = 32;
  std::string message =
      llvm::toString(m->launch("partial_tile", {1}, {64}, args));
  EXPECT_NE(message.find("read of shared memory no thread of this block "
                         "wrote at site 1"),
            std::string::npos)
      << message;
}

TEST(Emulator, CountsSectorsPerWarpRequest) {
  Module *m = testModule().get();
  ASSERT_TRUE(m);
  Buffer in(64 * 4 * 4), out(64 * 4);
  for (int stride : {1, 4}) {
    std::vector<void *> args = {&in.p, &out.p, &stride};
    LaunchOptions options;
    options.traceTraffic = true;
    ASSERT_FALSE(
        static_cast<bool>(m->launch("strided", {1}, {64}, args, options)));
    const TrafficReport &report = m->lastTraffic();
    ASSERT_EQ(report.sites.size(), 2u);
    const SiteTraffic &load = report.sites[0];
    EXPECT_FALSE(load.store);
    EXPECT_EQ(load.requests, 2u); // two warps
    // Consecutive 4-byte lanes: 4 sectors a warp; stride 4: 16.
    EXPECT_DOUBLE_EQ(load.sectorsPerRequest(), stride == 1 ? 4.0 : 16.0);
    EXPECT_DOUBLE_EQ(load.efficiency(), stride == 1 ? 1.0 : 0.25);
    EXPECT_TRUE(report.sites[1].store);
  }
}

TEST(Emulator, UnknownKernelAndBadGeometryAreErrors) {
  Module *m = testModule().get();
  ASSERT_TRUE(m);
  EXPECT_EQ(llvm::toString(m->launch("nope", {1}, {32}, {})),
            "no kernel named 'nope'");
  EXPECT_EQ(llvm::toString(m->launch("butterfly", {1}, {2048}, {})),
            "bad launch geometry for butterfly");
}

} // namespace
