//===- NVRTCTest.cpp - nvrtc wrapper: errors, statistics ------------------===//

#include "kvq/Runtime/NVRTC.h"

#include <gtest/gtest.h>

using namespace kvq;

namespace {

TEST(NVRTC, CompileErrorCarriesLogAndSource) {
  std::string source = "#include \"kvq_prelude.cuh\"\n"
                       "extern \"C\" __global__ void broken(int *a) {\n"
                       "  a[0] = undeclared_name;\n"
                       "}\n";
  llvm::Expected<CompiledModule> compiled =
      compileCuda(source, "broken.cu", NVRTCOptions());
  ASSERT_FALSE(static_cast<bool>(compiled));
  bool sawCompileError = false;
  llvm::handleAllErrors(compiled.takeError(), [&](const CompileError &error) {
    sawCompileError = true;
    EXPECT_NE(error.compilerLog().find("undeclared_name"), std::string::npos)
        << error.compilerLog();
    EXPECT_EQ(error.offendingSource(), source);
  });
  EXPECT_TRUE(sawCompileError);
}

TEST(NVRTC, CompilesThePreludeAndReportsStatistics) {
  std::string source =
      "#include \"kvq_prelude.cuh\"\n"
      "extern \"C\" __global__ void k(int *a, const int *b) {\n"
      "  KVQ_SHARED(int, tile, 64);\n"
      "  tile[threadIdx.x] = KVQ_LDG(0, b, threadIdx.x);\n"
      "  __syncthreads();\n"
      "  a[threadIdx.x] = kvq_shr(tile[63 - threadIdx.x], 3);\n"
      "}\n";
  NVRTCOptions options;
  options.arch = "sm_80";
  llvm::Expected<CompiledModule> compiled =
      compileCuda(source, "ok.cu", options);
  ASSERT_TRUE(static_cast<bool>(compiled))
      << llvm::toString(compiled.takeError());
  EXPECT_NE(compiled->ptx.find(".target sm_80"), std::string::npos);
  EXPECT_NE(compiled->ptx.find("ld.global.nc"), std::string::npos);
  EXPECT_FALSE(compiled->cubin.empty());
  ASSERT_EQ(compiled->stats.count("k"), 1u) << compiled->log;
  EXPECT_EQ(compiled->stats["k"].sharedBytes, 256);
  EXPECT_EQ(compiled->stats["k"].barriers, 1);
  EXPECT_GT(compiled->stats["k"].registers, 0);
}

// The prelude's tensor-core tile compiles to one m16n8k16 mma.sync on
// sm_80 and sm_90, and to two m16n8k8 on sm_75 (which has no k16 shape).
TEST(NVRTC, ThePreludeMmaIsATensorCoreInstruction) {
  std::string source =
      "#include \"kvq_prelude.cuh\"\n"
      "extern \"C\" __global__ void k(const unsigned *a, float *d) {\n"
      "  unsigned fa[4] = {a[0], a[1], a[2], a[3]}, fb[2] = {a[4], a[5]};\n"
      "  float fc[4] = {0, 0, 0, 0}, fd[4];\n"
      "  kvq_mma_m16n8k16(fd, fa, fb, fc);\n"
      "  for (int i = 0; i < 4; ++i) d[threadIdx.x * 4 + i] = fd[i];\n"
      "}\n";
  for (const char *arch : {"sm_75", "sm_80", "sm_90"}) {
    NVRTCOptions options;
    options.arch = arch;
    llvm::Expected<CompiledModule> compiled =
        compileCuda(source, "mma.cu", options);
    ASSERT_TRUE(static_cast<bool>(compiled))
        << arch << ": " << llvm::toString(compiled.takeError());
    bool k16 = std::string(arch) != "sm_75";
    const char *shape =
        k16 ? "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"
            : "mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32";
    size_t first = compiled->ptx.find(shape);
    ASSERT_NE(first, std::string::npos) << arch;
    EXPECT_EQ(compiled->ptx.find(shape, first + 1) != std::string::npos, !k16)
        << arch << ": " << (k16 ? "one" : "two") << " mma expected";
  }
}

TEST(NVRTC, ParsesPtxasVerboseOutput) {
  std::string log =
      "ptxas info    : 0 bytes gmem\n"
      "ptxas info    : Compiling entry function 'kvq_a' for 'sm_90'\n"
      "ptxas info    : Function properties for kvq_a\n"
      "ptxas         .     16 bytes stack frame, 8 bytes spill stores, 12 "
      "bytes spill loads\n"
      "ptxas info    : Used 77 registers, used 1 barriers, 33548 bytes smem, "
      "400 bytes cmem[0]\n"
      "ptxas info    : Compiling entry function 'kvq_b' for 'sm_90'\n"
      "ptxas info    : Function properties for kvq_b\n"
      "ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes "
      "spill loads\n"
      "ptxas info    : Used 32 registers, used 0 barriers, 380 bytes cmem[0]\n";
  std::map<std::string, PtxasStats> stats = parsePtxasLog(log);
  ASSERT_EQ(stats.size(), 2u);
  EXPECT_EQ(stats["kvq_a"].registers, 77);
  EXPECT_EQ(stats["kvq_a"].stackBytes, 16);
  EXPECT_EQ(stats["kvq_a"].spillStoreBytes, 8);
  EXPECT_EQ(stats["kvq_a"].spillLoadBytes, 12);
  EXPECT_EQ(stats["kvq_a"].sharedBytes, 33548);
  EXPECT_EQ(stats["kvq_a"].barriers, 1);
  EXPECT_EQ(stats["kvq_b"].registers, 32);
  EXPECT_EQ(stats["kvq_b"].sharedBytes, 0);
}

TEST(NVRTC, RejectsBadArchsBeforeCompiling) {
  NVRTCOptions options;
  options.arch = "gfx90a";
  llvm::Expected<CompiledModule> compiled =
      compileCuda("", "empty.cu", options);
  ASSERT_FALSE(static_cast<bool>(compiled));
  EXPECT_EQ(llvm::toString(compiled.takeError()),
            "bad target arch 'gfx90a': expected sm_XX or compute_XX");
}

TEST(NVRTC, VersionIsKnown) {
  std::string version = nvrtcVersionString();
  EXPECT_NE(version, "0.0");
  EXPECT_NE(version.find('.'), std::string::npos);
}

} // namespace
