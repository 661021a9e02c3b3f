//===- ContractionTest.cpp - no implicit FMA in quantize/dequantize -------===//
//
// nvrtc contracts a * b + c into one fma by default, and ptxas may fuse any
// mul.f32 into an add.f32 that lacks an explicit rounding mode; the
// emulator's host compiler (-ffp-contract=off) and the reference do neither.
// Where the numeric contract fixes how a value is rounded (quantize and
// dequantize: bit-exact on every backend) the PTX the runtime compiles must
// leave nothing to contract: every f32 add, sub and mul carries .rn, and no
// fma appears. Checked for every bits x axis x mode x scale storage, both
// kinds, through the JIT compiler exactly as the runtime calls it.
//
//===----------------------------------------------------------------------===//

#include "kvq/Runtime/Jit.h"

#include <gtest/gtest.h>

#include <regex>

using namespace kvq;

namespace {

std::vector<KernelSpec> quantizeAndDequantizeSpecs() {
  std::vector<KernelSpec> specs;
  for (KernelKind kind : {KernelKind::Quantize, KernelKind::Dequantize})
    for (const QuantScheme &s : schemeMatrix(128))
      specs.push_back(KernelSpec::forScheme(kind, s, 128, HalfType::F16));
  return specs;
}

class Contraction : public ::testing::TestWithParam<KernelSpec> {};

TEST_P(Contraction, NothingLeftForNvrtcOrPtxasToFuse) {
  const KernelSpec &spec = GetParam();
  llvm::Expected<CompiledArtefacts> built =
      jit::compiler()->compile(spec, Backend::Cuda, "sm_90");
  ASSERT_TRUE(static_cast<bool>(built)) << llvm::toString(built.takeError());
  // f32 arithmetic without a rounding mode (ptxas may fuse it), or a fused
  // multiply-add the contract does not have.
  std::regex contractible(R"(\b((add|sub|mul)(\.ftz)?\.f32|fma\.\w+\.f32)\b)");
  std::istringstream lines(built->ptx);
  std::string line;
  int found = 0;
  while (std::getline(lines, line))
    if (std::regex_search(line, contractible) && ++found <= 3)
      ADD_FAILURE() << spec.canonical() << ": " << line;
  EXPECT_EQ(found, 0) << spec.canonical()
                      << ": PTX operations a GPU would round differently "
                         "from the emulator and the reference";
}

INSTANTIATE_TEST_SUITE_P(EveryScheme, Contraction,
                         ::testing::ValuesIn(quantizeAndDequantizeSpecs()),
                         [](const ::testing::TestParamInfo<KernelSpec> &info) {
                           std::string name = info.param.canonical();
                           for (char &c : name)
                             if (!std::isalnum(static_cast<unsigned char>(c)))
                               c = '_';
                           return name;
                         });

} // namespace
