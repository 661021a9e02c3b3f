//===- NumericsTest.cpp - generated kernels vs the reference, on the CPU
//---===//
//
// The emulator runs the exact CUDA source nvrtc compiles; the reference is
// ARCHITECTURE.md section 4 in plain C++. Quantize+pack must match bit for
// bit; dequantize within fp16 rounding; attention within 1e-3 (normwise
// relative) of the reference on the same quantized data. Every case runs
// under two thread schedules whose results must be bitwise equal.
//
//===----------------------------------------------------------------------===//

#include "EmulatorHarness.h"

#include <gtest/gtest.h>

using namespace kvq;
using namespace kvq::test;

namespace {

unsigned ceilDiv(size_t a, size_t b) { return unsigned((a + b - 1) / b); }

//===----------------------------------------------------------------------===//
// quantize + pack, dequantize
//===----------------------------------------------------------------------===//

struct QuantCase {
  QuantScheme scheme;
  int headDim;
  HalfType dtype;
  bool outliers;
  std::string name() const {
    return "s" + scheme.tag() + "_d" + std::to_string(headDim) +
           (dtype == HalfType::F16 ? "_f16" : "_bf16") +
           (outliers ? "_outliers" : "_normal");
  }
};

struct QuantResult {
  std::vector<uint32_t> words;
  std::vector<float> scales, zeros;
  std::vector<float> dequantized;
};

/// Runs quantize then dequantize on the emulator with `schedule`.
QuantResult runQuantize(const QuantCase &c, const std::vector<float> &input,
                        int rows, int tokens, int outTokens, int outOffset,
                        emu::Schedule schedule) {
  KernelSpec q;
  q.kind = KernelKind::Quantize;
  q.key = c.scheme;
  q.headDim = c.headDim;
  q.dtype = c.dtype;
  KernelSpec dq = q;
  dq.kind = KernelKind::Dequantize;
  int d = c.headDim;
  int group = c.scheme.group ? c.scheme.group : d;
  int perWord = 32 / c.scheme.bits;
  bool token = c.scheme.axis == QuantScheme::Axis::Token;
  size_t wordCount = token ? size_t(rows) * outTokens * d / perWord
                           : size_t(rows) * outTokens / perWord * d;
  size_t scaleCount = token ? size_t(rows) * outTokens * (d / group)
                            : size_t(rows) * outTokens / group * d;

  DeviceBuffer in(toHalf(input, c.dtype));
  DeviceBuffer words(std::vector<uint32_t>(wordCount, 0));
  size_t scaleBytes = c.scheme.fp32Scales ? 4 : 2;
  DeviceBuffer scales(std::vector<uint8_t>(scaleCount * scaleBytes, 0));
  DeviceBuffer zeros(std::vector<uint8_t>(scaleCount * scaleBytes, 0));
  int inTokens = tokens;
  std::vector<void *> args = {in.arg(), words.arg(), scales.arg()};
  if (!c.scheme.symmetric)
    args.push_back(zeros.arg());
  for (int *v : {&rows, &tokens, &inTokens, &outTokens, &outOffset})
    args.push_back(v);
  emu::Module &qm = moduleFor(q);
  unsigned grid = token ? ceilDiv(size_t(rows) * tokens, 4)
                        : ceilDiv(size_t(rows) * (tokens / group) * d, 128);
  emu::LaunchOptions options;
  options.schedule = schedule;
  llvm::Error error =
      qm.launch(kernelName(q, "quantize"), {grid}, {128}, args, options);
  EXPECT_FALSE(static_cast<bool>(error)) << llvm::toString(std::move(error));

  QuantResult r;
  r.words = words.read<uint32_t>(wordCount);
  r.scales = readStorage(scales, scaleCount, c.scheme);
  if (!c.scheme.symmetric)
    r.zeros = readStorage(zeros, scaleCount, c.scheme);

  // Dequantize the tokens just written back out.
  DeviceBuffer out(std::vector<uint16_t>(size_t(rows) * tokens * d, 0));
  int inOffset = outOffset, storeTokens = outTokens, outRowTokens = tokens;
  std::vector<void *> dargs = {words.arg(), scales.arg()};
  if (!c.scheme.symmetric)
    dargs.push_back(zeros.arg());
  dargs.push_back(out.arg());
  for (int *v : {&rows, &tokens, &storeTokens, &inOffset, &outRowTokens})
    dargs.push_back(v);
  size_t work = token ? size_t(rows) * tokens * d / perWord
                      : size_t(rows) * tokens / perWord * d;
  llvm::Error dError =
      moduleFor(dq).launch(kernelName(dq, "dequantize"), {ceilDiv(work, 256)},
                           {256}, dargs, options);
  EXPECT_FALSE(static_cast<bool>(dError)) << llvm::toString(std::move(dError));
  r.dequantized =
      fromHalf(out.read<uint16_t>(size_t(rows) * tokens * d), c.dtype);
  return r;
}

class QuantizeNumerics : public ::testing::TestWithParam<QuantCase> {};

TEST_P(QuantizeNumerics, BitExactCodesAndScalesAndFaithfulDequantize) {
  const QuantCase &c = GetParam();
  int d = c.headDim;
  int group = c.scheme.group ? c.scheme.group : d;
  bool token = c.scheme.axis == QuantScheme::Axis::Token;
  int rows = 3;
  // Token axis: any count; channel axis: whole groups. The store is larger
  // than the input and written at an offset, as the cache appends.
  int tokens = token ? 7 : 2 * group;
  int outOffset = token ? 5 : group;
  int outTokens = tokens + outOffset + (token ? 3 : group);
  std::vector<float> input =
      kvLikeData(size_t(rows) * tokens, d, c.dtype, 7 + d, c.outliers);
  // A constant group and an exact tie exercise the edge rules.
  for (int i = 0; i < group && token; ++i)
    input[i] = ref::roundToHalf(1.5f, c.dtype);

  QuantResult forward = runQuantize(c, input, rows, tokens, outTokens,
                                    outOffset, emu::Schedule::Forward);
  QuantResult reverse = runQuantize(c, input, rows, tokens, outTokens,
                                    outOffset, emu::Schedule::Reverse);
  EXPECT_EQ(forward.words, reverse.words) << "schedule-dependent codes";
  EXPECT_EQ(forward.dequantized, reverse.dequantized);

  size_t wordCount = forward.words.size(), scaleCount = forward.scales.size();
  std::vector<uint32_t> words(wordCount, 0);
  std::vector<float> scales(scaleCount, 0), zeros(scaleCount, 0);
  ref::quantize(c.scheme, d, input.data(), rows, tokens, tokens, outTokens,
                outOffset, words.data(), scales.data(),
                c.scheme.symmetric ? nullptr : zeros.data());
  for (size_t i = 0; i < wordCount; ++i)
    ASSERT_EQ(forward.words[i], words[i]) << "word " << i;
  for (size_t i = 0; i < scaleCount; ++i)
    ASSERT_EQ(forward.scales[i], scales[i]) << "scale " << i;
  if (!c.scheme.symmetric)
    EXPECT_EQ(forward.zeros, zeros);

  std::vector<float> expected(size_t(rows) * tokens * d);
  ref::dequantize(c.scheme, d, words.data(), scales.data(),
                  c.scheme.symmetric ? nullptr : zeros.data(), rows, tokens,
                  outTokens, outOffset, tokens, expected.data());
  for (size_t i = 0; i < expected.size(); ++i)
    ASSERT_EQ(forward.dequantized[i], ref::roundToHalf(expected[i], c.dtype))
        << "element " << i;
}

std::vector<QuantCase> quantCases() {
  std::vector<QuantCase> cases;
  std::mt19937 rng(404);
  int index = 0;
  for (int bits : {2, 4, 8})
    for (auto axis : {QuantScheme::Axis::Token, QuantScheme::Axis::Channel})
      for (bool symmetric : {false, true})
        for (int group : {32, 64, 128, 0}) {
          QuantCase c;
          c.scheme.bits = bits;
          c.scheme.axis = axis;
          c.scheme.symmetric = symmetric;
          c.scheme.group = group;
          c.headDim = (index % 2) ? 64 : 128;
          if (axis == QuantScheme::Axis::Token && group > c.headDim)
            c.headDim = 128;
          c.scheme.interleaved = (index % 3) == 1;
          c.scheme.fp32Scales = (index % 5) == 2;
          c.dtype = (index % 4) == 3 ? HalfType::BF16 : HalfType::F16;
          c.outliers = index % 2 == 0;
          cases.push_back(c);
          ++index;
        }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Matrix, QuantizeNumerics,
                         ::testing::ValuesIn(quantCases()),
                         [](const ::testing::TestParamInfo<QuantCase> &info) {
                           return info.param.name();
                         });

} // namespace
