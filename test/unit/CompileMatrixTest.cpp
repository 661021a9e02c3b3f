//===- CompileMatrixTest.cpp - every kind of kernel compiles cleanly ------===//
//
// A seeded sample of the spec matrix goes all the way through the pipeline
// and nvrtc/ptxas for sm_80 and sm_90. Every bits x axis x mode value
// appears for keys and values, K and V schemes differ, head_dim 64/128/256,
// fp16/bf16, GQA 1/4/8; asymmetric quantize kernels also with HQQ zero
// points.
//
// Register budget: 128 per thread. The kernels use 128-thread blocks (256
// for large GQA x head_dim), so an SM's 64K registers keep at least 4 (2)
// blocks resident: enough independent tile loads in flight to cover DRAM
// latency in a bandwidth-bound kernel. More registers would cost occupancy;
// spills would add local-memory traffic to a kernel whose whole point is
// reading fewer bytes.
//
//===----------------------------------------------------------------------===//

#include "kvq/Codegen/Generator.h"
#include "kvq/Runtime/NVRTC.h"

#include <gtest/gtest.h>

#include <random>

using namespace kvq;

namespace {

constexpr int kRegisterBudget = 128;

std::vector<KernelSpec> sampleSpecs() {
  std::mt19937 rng(20261122);
  auto pick = [&](std::initializer_list<int> values) {
    std::vector<int> v(values);
    return v[std::uniform_int_distribution<size_t>(0, v.size() - 1)(rng)];
  };
  auto scheme = [&](int bits, QuantScheme::Axis axis, bool symmetric,
                    int headDim) {
    QuantScheme s;
    s.bits = bits;
    s.axis = axis;
    s.symmetric = symmetric;
    s.group = pick({32, 64, 128, 0});
    if (s.axis == QuantScheme::Axis::Token && s.group > headDim)
      s.group = 0;
    s.interleaved = pick({0, 0, 1}) == 1;
    s.fp32Scales = pick({0, 0, 0, 1}) == 1;
    return s;
  };

  std::vector<KernelSpec> specs;
  int index = 0;
  // Attention: keys cycle through every (bits, axis, mode); values take the
  // next combination, so K and V always differ.
  std::vector<std::tuple<int, QuantScheme::Axis, bool>> combos;
  for (int bits : {2, 4, 8})
    for (auto axis : {QuantScheme::Axis::Token, QuantScheme::Axis::Channel})
      for (bool symmetric : {false, true})
        combos.emplace_back(bits, axis, symmetric);
  for (size_t i = 0; i < combos.size(); ++i) {
    KernelSpec spec;
    spec.kind = KernelKind::Attention;
    spec.headDim = std::vector<int>{64, 128, 256}[index % 3];
    int gqa = std::vector<int>{1, 4, 8}[(index / 3) % 3];
    spec.kvHeads = pick({1, 2, 8});
    spec.queryHeads = spec.kvHeads * gqa;
    spec.dtype = index % 2 ? HalfType::BF16 : HalfType::F16;
    auto [kb, ka, ks] = combos[i];
    auto [vb, va, vs] = combos[(i + 5) % combos.size()];
    spec.key = scheme(kb, ka, ks, spec.headDim);
    spec.value = scheme(vb, va, vs, spec.headDim);
    spec.sink = pick({0, 1});
    spec.residual = pick({0, 1, 1});
    specs.push_back(spec);
    ++index;
  }
  // Quantize and dequantize: every (bits, axis, mode), random rest.
  for (auto kind : {KernelKind::Quantize, KernelKind::Dequantize})
    for (auto [bits, axis, symmetric] : combos) {
      KernelSpec spec;
      spec.kind = kind;
      spec.headDim = pick({64, 128, 256});
      spec.dtype = pick({0, 1}) ? HalfType::BF16 : HalfType::F16;
      spec.key = scheme(bits, axis, symmetric, spec.headDim);
      if (spec.dtype == HalfType::BF16) // kBf16ScalesRule
        spec.key.fp32Scales = true;
      specs.push_back(spec);
      // The same quantize kernel with HQQ zero points (a loop of its own).
      if (kind == KernelKind::Quantize && !symmetric) {
        spec.zeroPoints = ZeroPointSearch::Hqq;
        specs.push_back(spec);
      }
    }
  // Static scales and FP8 (CUDA cores): contiguous and paged bodies, the
  // quantize and dequantize kernels.
  for (const char *text :
       {"attention k=e4m3ph v=e4m3ph d=128 hq=32 hkv=8 sink residual",
        "attention k=e5m2pt v=4tphs d=64 hq=8 hkv=1 bf16 paged=64 residual",
        "attention k=4tph v=8tpts d=256 hq=16 hkv=4 sink residual",
        "quantize e4m3ph d=128 hkv=8", "quantize 4tph d=128 hkv=8",
        "dequantize e5m2pt d=128"}) {
    KernelSpec spec;
    EXPECT_EQ(parseKernelSpec(text, spec), std::nullopt) << text;
    specs.push_back(spec);
  }
  return specs;
}

struct Case {
  KernelSpec spec;
  std::string arch;
};

std::vector<Case> cases() {
  std::vector<Case> all;
  for (const KernelSpec &spec : sampleSpecs())
    for (const char *arch : {"sm_80", "sm_90"})
      all.push_back({spec, arch});
  return all;
}

/// gtest prints the spec rather than the struct's bytes.
[[maybe_unused]] void PrintTo(const Case &c, std::ostream *os) {
  *os << c.spec.canonical() << " on " << c.arch;
}

class CompileMatrix : public ::testing::TestWithParam<Case> {};

TEST_P(CompileMatrix, NoSpillsWithinRegisterBudget) {
  const Case &c = GetParam();
  SCOPED_TRACE(c.spec.canonical() + " on " + c.arch);
  Generator generator;
  GeneratorOptions options;
  options.arch = c.arch;
  llvm::Expected<GeneratedSource> source = generator.generate(c.spec, options);
  ASSERT_TRUE(static_cast<bool>(source)) << llvm::toString(source.takeError());

  NVRTCOptions nvrtc;
  nvrtc.arch = c.arch;
  llvm::Expected<CompiledModule> compiled =
      compileCuda(source->cuda, "matrix.cu", nvrtc);
  ASSERT_TRUE(static_cast<bool>(compiled))
      << llvm::toString(compiled.takeError());
  EXPECT_FALSE(compiled->cubin.empty());
  EXPECT_FALSE(compiled->ptx.empty());

  ASSERT_EQ(compiled->stats.size(), source->kernels.size()) << compiled->log;
  for (const GeneratedKernel &kernel : source->kernels) {
    auto it = compiled->stats.find(kernel.name);
    ASSERT_NE(it, compiled->stats.end()) << kernel.name << "\n"
                                         << compiled->log;
    const PtxasStats &stats = it->second;
    EXPECT_EQ(stats.spillStoreBytes, 0) << kernel.name;
    EXPECT_EQ(stats.spillLoadBytes, 0) << kernel.name;
    EXPECT_EQ(stats.stackBytes, 0) << kernel.name;
    EXPECT_GT(stats.registers, 0) << kernel.name;
    EXPECT_LE(stats.registers, kRegisterBudget) << kernel.name;
    // Static shared memory matches what the plan accounted for.
    if (kernel.kind == "attention") {
      EXPECT_EQ(stats.sharedBytes, kernel.sharedBytes) << kernel.name;
    }
  }
}

std::string caseName(const ::testing::TestParamInfo<Case> &info) {
  std::string name = info.param.spec.canonical() + "_" + info.param.arch;
  for (char &ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch)))
      ch = '_';
  return name;
}

INSTANTIATE_TEST_SUITE_P(Sample, CompileMatrix, ::testing::ValuesIn(cases()),
                         caseName);

TEST(CompileMatrixSample, CoversEveryBitsAxisModeForKeysAndValues) {
  std::set<std::string> keys, values;
  std::set<int> headDims, gqas;
  for (const KernelSpec &spec : sampleSpecs()) {
    // The per-group sample (the static and FP8 specs come on top).
    if (spec.kind != KernelKind::Attention || spec.key.isStatic() ||
        spec.value.isStatic())
      continue;
    auto id = [](const QuantScheme &s) {
      return std::to_string(s.bits) +
             (s.axis == QuantScheme::Axis::Token ? "t" : "c") +
             (s.symmetric ? "s" : "a");
    };
    keys.insert(id(spec.key));
    values.insert(id(spec.value));
    EXPECT_FALSE(spec.key == spec.value) << spec.canonical();
    headDims.insert(spec.headDim);
    gqas.insert(spec.queryHeads / spec.kvHeads);
  }
  EXPECT_EQ(keys.size(), 12u);
  EXPECT_EQ(values.size(), 12u);
  EXPECT_EQ(headDims, (std::set<int>{64, 128, 256}));
  EXPECT_EQ(gqas, (std::set<int>{1, 4, 8}));
}

} // namespace
