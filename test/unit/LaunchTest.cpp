//===- LaunchTest.cpp - bad launch arguments become typed errors ----------===//

#include "kvq/Runtime/Launch.h"
#include "kvq/Codegen/Generator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>

using namespace kvq;

namespace {

const GeneratedSource &sourceFor(const KernelSpec &spec) {
  static std::map<std::string, GeneratedSource> sources;
  auto it = sources.find(spec.canonical());
  if (it == sources.end()) {
    Generator generator;
    llvm::Expected<GeneratedSource> source =
        generator.generate(spec, GeneratorOptions());
    EXPECT_TRUE(static_cast<bool>(source));
    it = sources.emplace(spec.canonical(), std::move(*source)).first;
  }
  return it->second;
}

/// Message of a LaunchError (fails the test for any other outcome).
template <typename T> std::string launchError(llvm::Expected<T> result) {
  if (result)
    return "(no error)";
  std::string message;
  llvm::handleAllErrors(
      result.takeError(),
      [&](const LaunchError &e) {
        message = llvm::toString(llvm::make_error<LaunchError>(e));
      },
      [&](const llvm::ErrorInfoBase &e) {
        message = "wrong type: " + e.message();
      });
  return message;
}

// Fake device addresses: planning never dereferences them.
void *at(uintptr_t address) { return reinterpret_cast<void *>(address); }

class AttentionLaunch : public ::testing::Test {
protected:
  AttentionLaunch() {
    parseKernelSpec("attention k=2c32 v=2t32 d=128 hq=8 hkv=2", spec);
    call.q = at(0x1000);
    call.keyWords = at(0x2000);
    call.keyScales = at(0x3000);
    call.keyZeros = at(0x4000);
    call.valueWords = at(0x5000);
    call.valueScales = at(0x6000);
    call.valueZeros = at(0x7000);
    call.sinkKeys = call.sinkValues = at(0x8000);
    call.residualKeys = call.residualValues = at(0x9000);
    call.lengths = static_cast<const int32_t *>(at(0xa000));
    call.out = at(0xb000);
    call.workspace = at(0xc000);
    call.batch = 2;
    call.bodyCapacity = 512;
    call.sinkCapacity = 4;
    call.residualCapacity = 128;
  }
  std::string plan() {
    return launchError(planAttention(spec, sourceFor(spec), call));
  }
  KernelSpec spec;
  AttentionCall call;
};

TEST_F(AttentionLaunch, ValidCallPlansBothKernels) {
  llvm::Expected<std::vector<KernelLaunch>> launches =
      planAttention(spec, sourceFor(spec), call);
  ASSERT_TRUE(static_cast<bool>(launches))
      << llvm::toString(launches.takeError());
  ASSERT_EQ(launches->size(), 2u);
  const KernelLaunch &attention = (*launches)[0];
  // The tensor-core body (the plan's choice for fp16, head_dim 128).
  EXPECT_EQ(attention.kernel, "kvq_attn_k2c32_v2t32_d128_g4_f16_sr_mma");
  int splits = attentionBodySplits(spec, sourceFor(spec), call) + 1;
  EXPECT_EQ(attention.grid, (std::array<unsigned, 3>{unsigned(splits), 2, 2}));
  EXPECT_EQ(attention.args.size(), 21u);
  EXPECT_EQ((*launches)[1].grid, (std::array<unsigned, 3>{8, 2, 1}));
  // Splits fill several waves of the plan's 132 SMs, a whole number of tiles.
  EXPECT_GT(splits, 2);
}

// A long body is split into about 4 blocks per SM (the measured best on an
// H200): 2 sequences x 2 kv heads = 4 blocks a split, so 132 splits of the
// plan's 132 SMs, each a whole number of 64-token tiles.
TEST_F(AttentionLaunch, LongBodiesGiveFourBlocksPerSm) {
  call.bodyCapacity = 132 * 1024;
  int bodySplits = attentionBodySplits(spec, sourceFor(spec), call);
  EXPECT_EQ(bodySplits, 132);
  call.smCount = 66; // the device's own count wins over the plan's
  EXPECT_EQ(attentionBodySplits(spec, sourceFor(spec), call), 66);
}

TEST_F(AttentionLaunch, BothKernelsGoToTheCallsStream) {
  int queue; // any address stands for a CUstream here
  call.stream = &queue;
  llvm::Expected<std::vector<KernelLaunch>> launches =
      planAttention(spec, sourceFor(spec), call);
  ASSERT_TRUE(static_cast<bool>(launches))
      << llvm::toString(launches.takeError());
  for (const KernelLaunch &launch : *launches)
    EXPECT_EQ(launch.stream, &queue) << launch.kernel;
  call.stream = nullptr;
  launches = planAttention(spec, sourceFor(spec), call);
  ASSERT_TRUE(static_cast<bool>(launches));
  EXPECT_EQ((*launches)[0].stream, nullptr);
}

TEST_F(AttentionLaunch, NullAndMisalignedPointers) {
  call.valueZeros = nullptr;
  EXPECT_EQ(plan(), "value_zeros is null");
  call.valueZeros = at(0x7000);
  call.keyWords = at(0x2004); // 128-bit loads need 16-byte alignment
  EXPECT_EQ(plan(), "key_words must be 16-byte aligned, got 0x2004");
}

TEST_F(AttentionLaunch, LengthsBeyondCapacity) {
  int32_t lengths[6] = {4, 512, 100, 2, 544, 0};
  call.hostLengths = lengths;
  EXPECT_EQ(plan(), "sequence 1: body length 544 is outside [0, 512]");
  lengths[4] = 48;
  EXPECT_EQ(plan(), "sequence 1: body length 48 is not a whole number of "
                    "32-token channel groups");
  lengths[4] = 64;
  lengths[0] = 5;
  EXPECT_EQ(plan(), "sequence 0: sink length 5 is outside [0, 4]");
}

TEST_F(AttentionLaunch, CapacitiesAndSplits) {
  call.bodyCapacity = 500;
  EXPECT_EQ(plan(), "body_capacity 500 is not a multiple of the channel "
                    "group 32");
  call.bodyCapacity = 512;
  call.tokensPerSplit = 40;
  EXPECT_EQ(plan(), "tokens_per_split must be a positive multiple of the tile "
                    "(64 tokens), got 40");
  call.tokensPerSplit = 0;
  call.batch = 0;
  EXPECT_EQ(plan(), "batch must be at least 1, got 0");
  call.batch = 1;
  call.residualCapacity = 1 << 23; // 2 heads x 8M tokens x 128 = 2^31
  EXPECT_EQ(plan(), "the residual holds 2147483648 halves, more than the "
                    "2^31 - 1 a kernel addresses");
}

TEST_F(AttentionLaunch, IndexLimitsCountTheUnitsEachBufferIsIndexedBy) {
  // KIVI-2, Llama-3-8B heads, 128k tokens, batch 32: 2^32 values, but
  // 2^28 packed words and 2^27 scales per tensor. It plans.
  parseKernelSpec("attention k=2c32 v=2t32 d=128 hq=32 hkv=8", spec);
  call.batch = 32;
  call.bodyCapacity = 128 * 1024;
  EXPECT_EQ(plan(), "(no error)");
  // The fp16 baseline of that size does not fit 32-bit indices.
  parseKernelSpec("dense-attention d=128 hq=32 hkv=8", spec);
  call.keys = call.values = at(0xd000);
  EXPECT_EQ(plan(), "the fp16 body holds 4294967296 halves, more than the "
                    "2^31 - 1 a kernel addresses");
}

TEST_F(AttentionLaunch, GridLimits) {
  call.batch = 70000;
  call.bodyCapacity = 32;
  EXPECT_EQ(plan(), "batch 70000 exceeds CUDA's limit of 65535 blocks in the "
                    "grid's z dimension");
}

TEST_F(AttentionLaunch, SplitsFollowTheDeviceSmCountAndTheWorkspaceMustFit) {
  call.bodyCapacity = 64 * 1024;
  call.smCount = 132;
  int h100 = attentionBodySplits(spec, sourceFor(spec), call);
  size_t bytes = attentionWorkspaceBytes(spec, sourceFor(spec), call);
  call.smCount = 16;
  int small = attentionBodySplits(spec, sourceFor(spec), call);
  EXPECT_LT(small, h100) << "fewer SMs, fewer splits";
  // A workspace sized for 132 SMs is enough for 16; the reverse is not.
  call.workspaceBytes = bytes;
  EXPECT_EQ(plan(), "(no error)");
  call.smCount = 132;
  call.workspaceBytes =
      attentionWorkspaceBytes(spec, sourceFor(spec), call) - 1;
  EXPECT_NE(plan().find("is smaller than the"), std::string::npos) << plan();
  call.smCount = -1;
  EXPECT_EQ(plan(), "sm_count must not be negative, got -1");
}

TEST(QuantizeLaunch, TokenRangesAreChecked) {
  KernelSpec spec;
  parseKernelSpec("quantize 2c32 d=128", spec);
  QuantizeCall call;
  call.input = at(0x1000);
  call.words = at(0x2000);
  call.scales = call.zeros = at(0x3000);
  call.rows = 8;
  call.tokens = 64;
  call.inTokens = 64;
  call.outTokens = 256;
  call.outOffset = 224;
  EXPECT_EQ(launchError(planQuantize(spec, sourceFor(spec), call)),
            "out_offset 224 + tokens 64 exceeds the store's 256 tokens");
  call.outOffset = 16;
  EXPECT_EQ(launchError(planQuantize(spec, sourceFor(spec), call)),
            "axis = channel quantizes whole 32-token groups: out_offset 16 is "
            "not a multiple of 32");
  call.outOffset = 32;
  call.tokens = 80;
  EXPECT_EQ(launchError(planQuantize(spec, sourceFor(spec), call)),
            "tokens 80 exceeds in_tokens 64");
  call.tokens = 64;
  call.input = at(0x1001);
  EXPECT_EQ(launchError(planQuantize(spec, sourceFor(spec), call)),
            "input must be 2-byte aligned, got 0x1001");
  call.input = at(0x1000);
  llvm::Expected<KernelLaunch> launch =
      planQuantize(spec, sourceFor(spec), call);
  ASSERT_TRUE(static_cast<bool>(launch)) << llvm::toString(launch.takeError());
  // A thread per (row, group, channel): 8 x 2 x 128 = 2048 -> 16 blocks.
  EXPECT_EQ(launch->grid[0], 16u);
  EXPECT_EQ(launch->block[0], 128u);
}

TEST(QuantizeLaunch, ArgumentsFollowTheKernelsOwnList) {
  // The launch packs what the kernel's metadata asks for, by name; a kernel
  // from another kvq build asking for something unknown is refused.
  KernelSpec spec;
  parseKernelSpec("quantize 4t64s d=128", spec); // symmetric: no zeros
  QuantizeCall call;
  call.input = at(0x1000);
  call.words = at(0x2000);
  call.scales = at(0x3000);
  call.rows = 2;
  call.tokens = call.inTokens = call.outTokens = 8;
  llvm::Expected<KernelLaunch> launch =
      planQuantize(spec, sourceFor(spec), call);
  ASSERT_TRUE(static_cast<bool>(launch)) << llvm::toString(launch.takeError());
  EXPECT_EQ(launch->args.size(), 8u) << "no zero points for a symmetric scheme";
  GeneratedSource other = sourceFor(spec);
  other.kernels[0].argNames[0] = "mystery";
  EXPECT_EQ(launchError(planQuantize(spec, other, call)),
            "kernel " + other.kernels[0].name +
                " takes an argument 'mystery' that this runtime does not "
                "provide (kernel and runtime from different kvq builds?)");
  other = sourceFor(spec);
  auto &names = other.kernels[0].argNames;
  size_t rows = std::find(names.begin(), names.end(), "rows") - names.begin();
  ASSERT_LT(rows, names.size());
  other.kernels[0].argTypes[rows] = "float*"; // `rows` is an int32_t
  EXPECT_NE(launchError(planQuantize(spec, other, call))
                .find("argument 'rows' is a float*"),
            std::string::npos);
}

TEST(QuantizeLaunch, TheCallsStreamIsTheLaunchs) {
  KernelSpec spec;
  ASSERT_FALSE(parseKernelSpec("quantize 4t64 d=64", spec));
  alignas(256) static char buffer[1 << 14];
  int queue;
  QuantizeCall call;
  call.input = buffer;
  call.words = call.scales = call.zeros = buffer;
  call.rows = call.tokens = call.inTokens = call.outTokens = 1;
  call.stream = &queue;
  llvm::Expected<KernelLaunch> launch =
      planQuantize(spec, sourceFor(spec), call);
  ASSERT_TRUE(static_cast<bool>(launch)) << llvm::toString(launch.takeError());
  EXPECT_EQ(launch->stream, &queue);
}

TEST(QuantizeLaunch, WrongKindOfSpec) {
  KernelSpec spec;
  parseKernelSpec("dequantize 4t64 d=128", spec);
  EXPECT_EQ(launchError(planQuantize(spec, sourceFor(spec), QuantizeCall())),
            "'dequantize 4t64 d=128 f16' is not a quantize spec");
}

} // namespace
