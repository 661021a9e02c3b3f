//===- NumericsTest.cpp - generated kernels vs the reference, on the CPU --===//
//
// The emulator runs the exact CUDA source nvrtc compiles; the reference is
// ARCHITECTURE.md section 4 in plain C++. Quantize+pack must match bit for
// bit; dequantize within fp16 rounding; attention within 1e-3 (normwise
// relative) of the reference on the same quantized data. Every case runs
// under two thread schedules whose results must be bitwise equal.
//
//===----------------------------------------------------------------------===//

#include "EmulatorHarness.h"

#include "kvq/Runtime/Presets.h"
#include "kvq/Runtime/Workload.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdlib>
#include <tuple>

using namespace kvq;
using namespace kvq::test;

namespace {

//===----------------------------------------------------------------------===//
// quantize + pack, dequantize
//===----------------------------------------------------------------------===//

struct QuantCase {
  QuantScheme scheme;
  int headDim;
  HalfType dtype;
  bool outliers;
  ZeroPointSearch zeroPoints = ZeroPointSearch::MinMax;
  std::string name() const {
    return "s" + scheme.tag() + "_d" + std::to_string(headDim) +
           (dtype == HalfType::F16 ? "_f16" : "_bf16") +
           (zeroPoints == ZeroPointSearch::Hqq ? "_hqq" : "") +
           (outliers ? "_outliers" : "_normal");
  }
};

struct QuantResult {
  std::vector<uint32_t> words;
  std::vector<float> scales, zeros;
  std::vector<float> dequantized;
};

/// Dequantizes tokens [inOffset, inOffset + tokens) of each of `rows` rows
/// of a store of `inTokens` tokens on the emulator: the values read back.
std::vector<float> dequantizeOnEmulator(const KernelSpec &spec, void *words,
                                        void *scales, void *zeros, int rows,
                                        int tokens, int inTokens, int inOffset,
                                        const emu::LaunchOptions &options) {
  size_t count = size_t(rows) * tokens * spec.headDim;
  DeviceBuffer out(std::vector<uint16_t>(count, 0));
  DequantizeCall back;
  back.words = words;
  back.scales = scales;
  back.zeros = zeros;
  back.output = out.get();
  back.rows = rows;
  back.tokens = tokens;
  back.inTokens = inTokens;
  back.inOffset = inOffset;
  back.outTokens = tokens;
  GeneratedSource source;
  emu::Module &module = moduleFor(spec, &source);
  llvm::Expected<KernelLaunch> launch = planDequantize(spec, source, back);
  EXPECT_TRUE(static_cast<bool>(launch)) << llvm::toString(launch.takeError());
  if (!launch)
    return {};
  llvm::Error error = module.launch(*launch, options);
  EXPECT_FALSE(static_cast<bool>(error)) << llvm::toString(std::move(error));
  return fromHalf(out.read<uint16_t>(count), spec.dtype);
}

/// Runs quantize then dequantize on the emulator with `schedule`.
QuantResult runQuantize(const QuantCase &c, const std::vector<float> &input,
                        int rows, int tokens, int outTokens, int outOffset,
                        emu::Schedule schedule) {
  KernelSpec q;
  q.kind = KernelKind::Quantize;
  q.key = c.scheme;
  q.headDim = c.headDim;
  q.dtype = c.dtype;
  q.zeroPoints = c.zeroPoints;
  KernelSpec dq = q;
  dq.kind = KernelKind::Dequantize;
  dq.zeroPoints = ZeroPointSearch::MinMax;
  int d = c.headDim;
  int group = c.scheme.groupSize(d);
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
  QuantizeCall call;
  call.input = in.get();
  call.words = words.get();
  call.scales = scales.get();
  call.zeros = zeros.get();
  call.rows = rows;
  call.tokens = tokens;
  call.inTokens = tokens;
  call.outTokens = outTokens;
  call.outOffset = outOffset;
  GeneratedSource source;
  emu::Module &qm = moduleFor(q, &source);
  llvm::Expected<KernelLaunch> launch = planQuantize(q, source, call);
  EXPECT_TRUE(static_cast<bool>(launch)) << llvm::toString(launch.takeError());
  emu::LaunchOptions options;
  options.schedule = schedule;
  llvm::Error error = qm.launch(*launch, options);
  EXPECT_FALSE(static_cast<bool>(error)) << llvm::toString(std::move(error));

  QuantResult r;
  r.words = words.read<uint32_t>(wordCount);
  r.scales = readStorage(scales, scaleCount, c.scheme);
  if (!c.scheme.symmetric)
    r.zeros = readStorage(zeros, scaleCount, c.scheme);

  // Dequantize the tokens just written back out.
  r.dequantized =
      dequantizeOnEmulator(dq, words.get(), scales.get(), zeros.get(), rows,
                           tokens, outTokens, outOffset, options);
  return r;
}

class QuantizeNumerics : public ::testing::TestWithParam<QuantCase> {};

TEST_P(QuantizeNumerics, BitExactCodesAndScalesAndFaithfulDequantize) {
  const QuantCase &c = GetParam();
  int d = c.headDim;
  int group = c.scheme.groupSize(d);
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
                c.scheme.symmetric ? nullptr : zeros.data(), c.zeroPoints);
  for (size_t i = 0; i < wordCount; ++i)
    ASSERT_EQ(forward.words[i], words[i]) << "word " << i;
  for (size_t i = 0; i < scaleCount; ++i)
    ASSERT_EQ(forward.scales[i], scales[i]) << "scale " << i;
  if (!c.scheme.symmetric) {
    EXPECT_EQ(forward.zeros, zeros);
  }

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
          if (c.dtype == HalfType::BF16) // kBf16ScalesRule
            c.scheme.fp32Scales = true;
          for (bool outliers : {false, true}) {
            c.outliers = outliers;
            cases.push_back(c);
          }
          // Optimized zero points on every other asymmetric scheme (each
          // case compiles a kernel of its own).
          if (!symmetric && index % 2 == 0)
            for (bool outliers : {false, true}) {
              QuantCase hqq = c;
              hqq.outliers = outliers;
              hqq.zeroPoints = ZeroPointSearch::Hqq;
              cases.push_back(hqq);
            }
          ++index;
        }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Matrix, QuantizeNumerics,
                         ::testing::ValuesIn(quantCases()),
                         [](const ::testing::TestParamInfo<QuantCase> &info) {
                           return info.param.name();
                         });

//===----------------------------------------------------------------------===//
// static scales and FP8: quantize + pack, dequantize
//===----------------------------------------------------------------------===//

struct StaticCase {
  const char *tag;
  int headDim;
  HalfType dtype;
  std::string name() const {
    return std::string(tag) + "_d" + std::to_string(headDim) +
           (dtype == HalfType::F16 ? "_f16" : "_bf16");
  }
};

/// gtest prints the case's name rather than its bytes.
[[maybe_unused]] void PrintTo(const StaticCase &c, std::ostream *os) {
  *os << c.name();
}

class StaticQuantizeNumerics : public ::testing::TestWithParam<StaticCase> {};

// Codes from given scales (per tensor or per kv head, FP8 bytes included)
// are the reference's bit for bit, and read back as the reference reads
// them. The scales are given so that some values saturate (FP8) or clamp
// (integers), and the kv heads' scales differ.
TEST_P(StaticQuantizeNumerics, BitExactCodesFromGivenScales) {
  const StaticCase &c = GetParam();
  QuantScheme scheme;
  ASSERT_EQ(parseSchemeTag(c.tag, scheme), std::nullopt);
  int d = c.headDim, kvHeads = 3, batch = 2, rows = batch * kvHeads;
  int tokens = 5, outOffset = 2, outTokens = tokens + outOffset + 1;
  KernelSpec q =
      KernelSpec::forScheme(KernelKind::Quantize, scheme, d, c.dtype);
  q.kvHeads = kvHeads;
  KernelSpec dq = q;
  dq.kind = KernelKind::Dequantize;
  std::vector<float> input =
      kvLikeData(size_t(rows) * tokens, d, c.dtype, 11 + d, /*outliers=*/true);
  // Scales near the data's range: E4M3's largest, 448, times 0.02 is 9, so
  // the outliers (x10) saturate; the integer schemes clamp them.
  int count = scheme.staticScaleCount(kvHeads);
  std::vector<float> scales, zeros;
  for (int i = 0; i < count; ++i) {
    float base = scheme.isFp8() ? 0.02f : 4.0f / float((1 << scheme.bits) - 1);
    scales.push_back(base * float(1 + i));
    zeros.push_back(-2.0f * float(1 + i));
  }
  const float *z = scheme.symmetric ? nullptr : zeros.data();

  size_t wordCount = size_t(rows) * outTokens * d * scheme.bits / 32;
  DeviceBuffer in(toHalf(input, c.dtype));
  DeviceBuffer words(std::vector<uint32_t>(wordCount, 0));
  DeviceBuffer scaleBuffer(scales), zeroBuffer(zeros);
  QuantizeCall call;
  call.input = in.get();
  call.words = words.get();
  call.scales = scaleBuffer.get();
  call.zeros = scheme.symmetric ? nullptr : zeroBuffer.get();
  call.rows = rows;
  call.tokens = tokens;
  call.inTokens = tokens;
  call.outTokens = outTokens;
  call.outOffset = outOffset;
  GeneratedSource source;
  emu::Module &qm = moduleFor(q, &source);
  llvm::Expected<KernelLaunch> launch = planQuantize(q, source, call);
  ASSERT_TRUE(static_cast<bool>(launch)) << llvm::toString(launch.takeError());
  llvm::Error error = qm.launch(*launch, {});
  ASSERT_FALSE(static_cast<bool>(error)) << llvm::toString(std::move(error));

  std::vector<uint32_t> expected(wordCount, 0);
  ref::quantizeStatic(scheme, d, kvHeads, input.data(), rows, tokens, tokens,
                      outTokens, outOffset, expected.data(), scales.data(), z);
  std::vector<uint32_t> got = words.read<uint32_t>(wordCount);
  for (size_t i = 0; i < wordCount; ++i)
    ASSERT_EQ(got[i], expected[i]) << "word " << i;
  EXPECT_EQ(scaleBuffer.read<float>(count), scales) << "given scales kept";

  std::vector<float> read =
      dequantizeOnEmulator(dq, words.get(), scaleBuffer.get(), call.zeros, rows,
                           tokens, outTokens, outOffset, {});
  ASSERT_EQ(read.size(), size_t(rows) * tokens * d);
  std::vector<float> want(read.size());
  ref::dequantizeStatic(scheme, d, kvHeads, expected.data(), scales.data(), z,
                        rows, tokens, outTokens, outOffset, tokens,
                        want.data());
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_EQ(read[i], ref::roundToHalf(want[i], c.dtype)) << "element " << i;
}

std::vector<StaticCase> staticCases() {
  std::vector<StaticCase> cases;
  int index = 0;
  for (const char *tag : {"4tph", "4tphs", "4tphi", "8tpt", "8tpts", "2tph",
                          "e4m3pt", "e4m3ph", "e5m2pt", "e5m2ph"})
    for (int d : {64, 128}) {
      HalfType dtype = index++ % 3 == 2 ? HalfType::BF16 : HalfType::F16;
      cases.push_back({tag, d, dtype});
    }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Matrix, StaticQuantizeNumerics,
                         ::testing::ValuesIn(staticCases()),
                         [](const ::testing::TestParamInfo<StaticCase> &info) {
                           return info.param.name();
                         });

} // namespace

//===----------------------------------------------------------------------===//
// attention
//===----------------------------------------------------------------------===//

namespace {

struct AttentionCase {
  KernelSpec spec;
  /// Valid (sink, body, residual) tokens per sequence of the batch.
  std::vector<std::array<int, 3>> lengths;
  int tokensPerSplit;
  bool outliers;
  std::string name() const {
    std::string n = spec.canonical();
    for (auto &l : lengths)
      n += "_" + std::to_string(l[0]) + "_" + std::to_string(l[1]) + "_" +
           std::to_string(l[2]);
    for (char &ch : n)
      if (!std::isalnum(static_cast<unsigned char>(ch)))
        ch = '_';
    return n;
  }
};

/// Host-side data of one attention case, quantized with the reference.
struct AttentionData {
  int batch, capacity, sinkCap, residualCap;
  std::vector<float> q, sinkK, sinkV, residualK, residualV, bodyK, bodyV;
  std::vector<uint32_t> keyWords, valueWords;
  std::vector<float> keyScales, keyZeros, valueScales, valueZeros;
  std::vector<int32_t> lengths;
};

AttentionData makeData(const AttentionCase &c) {
  const KernelSpec &s = c.spec;
  AttentionData data;
  data.batch = int(c.lengths.size());
  int lcm = 32; // body capacity: whole groups of either channel-axis scheme
  for (const QuantScheme *q : {&s.key, &s.value})
    if (q->axis == QuantScheme::Axis::Channel)
      lcm = std::max(lcm, q->groupSize(s.headDim));
  int maxBody = 0, maxSink = 1, maxResidual = 1;
  for (auto &l : c.lengths) {
    maxSink = std::max(maxSink, l[0]);
    maxBody = std::max(maxBody, l[1]);
    maxResidual = std::max(maxResidual, l[2]);
  }
  data.capacity = std::max(lcm, (maxBody + lcm - 1) / lcm * lcm);
  data.sinkCap = maxSink;
  data.residualCap = maxResidual;
  int rows = data.batch * s.kvHeads, d = s.headDim;
  uint32_t seed = 11;
  data.q =
      kvLikeData(size_t(data.batch) * s.queryHeads, d, s.dtype, seed++, false);
  data.bodyK =
      kvLikeData(size_t(rows) * data.capacity, d, s.dtype, seed++, c.outliers);
  data.bodyV =
      kvLikeData(size_t(rows) * data.capacity, d, s.dtype, seed++, false);
  data.sinkK =
      kvLikeData(size_t(rows) * data.sinkCap, d, s.dtype, seed++, c.outliers);
  data.sinkV =
      kvLikeData(size_t(rows) * data.sinkCap, d, s.dtype, seed++, false);
  data.residualK = kvLikeData(size_t(rows) * data.residualCap, d, s.dtype,
                              seed++, c.outliers);
  data.residualV =
      kvLikeData(size_t(rows) * data.residualCap, d, s.dtype, seed++, false);
  auto quantizeAll = [&](const QuantScheme &scheme, const std::vector<float> &x,
                         std::vector<uint32_t> &words,
                         std::vector<float> &scales,
                         std::vector<float> &zeros) {
    words.assign(size_t(rows) * data.capacity * d / (32 / scheme.bits), 0);
    if (scheme.isStatic()) {
      // Given scales as a min-max calibration over each kv head's (or the
      // whole tensor's) data would give them: FP8 amax / largest value
      // (vLLM's), integers their range over the codes.
      int count = scheme.staticScaleCount(s.kvHeads);
      std::vector<float> lo(count, INFINITY), hi(count, -INFINITY);
      size_t perRow = size_t(data.capacity) * d;
      for (size_t i = 0; i < x.size(); ++i) {
        int at = count == 1 ? 0 : int(i / perRow) % s.kvHeads;
        lo[at] = std::min(lo[at], x[i]);
        hi[at] = std::max(hi[at], x[i]);
      }
      scales.assign(count, 0);
      zeros.assign(count, 0);
      for (int i = 0; i < count; ++i) {
        float amax = std::max(-lo[i], hi[i]);
        if (scheme.isFp8())
          scales[i] =
              amax / ref::largestFp8(scheme.format == QuantScheme::Format::E4M3
                                         ? ref::Fp8Format::E4M3
                                         : ref::Fp8Format::E5M2);
        else if (scheme.symmetric)
          scales[i] = amax / float((1 << (scheme.bits - 1)) - 1);
        else {
          scales[i] = (hi[i] - lo[i]) / float((1 << scheme.bits) - 1);
          zeros[i] = lo[i];
        }
      }
      ref::quantizeStatic(scheme, d, s.kvHeads, x.data(), rows, data.capacity,
                          data.capacity, data.capacity, 0, words.data(),
                          scales.data(),
                          scheme.symmetric ? nullptr : zeros.data());
      return;
    }
    int group = scheme.groupSize(d);
    bool token = scheme.axis == QuantScheme::Axis::Token;
    size_t nScales = token ? size_t(rows) * data.capacity * (d / group)
                           : size_t(rows) * data.capacity / group * d;
    scales.assign(nScales, 0);
    zeros.assign(nScales, 0);
    ref::quantize(scheme, d, x.data(), rows, data.capacity, data.capacity,
                  data.capacity, 0, words.data(), scales.data(),
                  scheme.symmetric ? nullptr : zeros.data());
  };
  quantizeAll(s.key, data.bodyK, data.keyWords, data.keyScales, data.keyZeros);
  quantizeAll(s.value, data.bodyV, data.valueWords, data.valueScales,
              data.valueZeros);
  for (auto &l : c.lengths)
    data.lengths.insert(data.lengths.end(), {l[0], l[1], l[2]});
  return data;
}

std::vector<float> runAttention(const AttentionCase &c, AttentionData &data,
                                emu::Schedule schedule,
                                emu::TrafficReport *traffic = nullptr) {
  const KernelSpec &s = c.spec;
  int d = s.headDim;
  GeneratedSource source;
  emu::Module &module = moduleFor(s, &source);
  size_t queryRows = size_t(data.batch) * s.queryHeads;

  DeviceBuffer q(toHalf(data.q, s.dtype));
  DeviceBuffer kw(data.keyWords), vw(data.valueWords);
  DeviceBuffer ks = storageBuffer(data.keyScales, s.key);
  DeviceBuffer kz = storageBuffer(data.keyZeros, s.key);
  DeviceBuffer vs = storageBuffer(data.valueScales, s.value);
  DeviceBuffer vz = storageBuffer(data.valueZeros, s.value);
  DeviceBuffer sk(toHalf(data.sinkK, s.dtype)), sv(toHalf(data.sinkV, s.dtype));
  DeviceBuffer rk(toHalf(data.residualK, s.dtype)),
      rv(toHalf(data.residualV, s.dtype));
  DeviceBuffer lengths(data.lengths);
  DeviceBuffer out(std::vector<uint16_t>(queryRows * d, 0));

  AttentionCall call;
  call.q = q.get();
  call.keyWords = kw.get();
  call.keyScales = ks.get();
  call.keyZeros = kz.get();
  call.valueWords = vw.get();
  call.valueScales = vs.get();
  call.valueZeros = vz.get();
  call.sinkKeys = sk.get();
  call.sinkValues = sv.get();
  call.residualKeys = rk.get();
  call.residualValues = rv.get();
  call.lengths = static_cast<const int32_t *>(lengths.get());
  call.hostLengths = data.lengths.data();
  call.out = out.get();
  call.batch = data.batch;
  call.bodyCapacity = data.capacity;
  call.sinkCapacity = data.sinkCap;
  call.residualCapacity = data.residualCap;
  call.tokensPerSplit = c.tokensPerSplit;
  DeviceBuffer workspace(attentionWorkspaceBytes(s, source, call));
  call.workspace = workspace.get();
  llvm::Expected<std::vector<KernelLaunch>> launches =
      planAttention(s, source, call);
  EXPECT_TRUE(static_cast<bool>(launches))
      << llvm::toString(launches.takeError());

  emu::LaunchOptions options;
  options.schedule = schedule;
  options.traceTraffic = traffic != nullptr;
  llvm::Error error = module.launch((*launches)[0], options);
  EXPECT_FALSE(static_cast<bool>(error)) << llvm::toString(std::move(error));
  if (traffic)
    *traffic = module.lastTraffic();
  llvm::Error combineError = module.launch((*launches)[1], options);
  EXPECT_FALSE(static_cast<bool>(combineError))
      << llvm::toString(std::move(combineError));
  return fromHalf(out.read<uint16_t>(queryRows * d), s.dtype);
}

/// Reference attention on the same quantized data (and, for the report, on
/// the unquantized data).
std::vector<float> referenceAttention(const AttentionCase &c,
                                      const AttentionData &data,
                                      bool quantized) {
  const KernelSpec &s = c.spec;
  ref::AttentionInputs in;
  in.q = data.q.data();
  in.keyWords = data.keyWords.data();
  in.keyScales = data.keyScales.data();
  in.keyZeros = s.key.symmetric ? nullptr : data.keyZeros.data();
  in.valueWords = data.valueWords.data();
  in.valueScales = data.valueScales.data();
  in.valueZeros = s.value.symmetric ? nullptr : data.valueZeros.data();
  in.sinkKeys = data.sinkK.data();
  in.sinkValues = data.sinkV.data();
  in.residualKeys = data.residualK.data();
  in.residualValues = data.residualV.data();
  in.lengths = data.lengths.data();
  in.batch = data.batch;
  in.bodyCapacity = data.capacity;
  in.sinkCapacity = data.sinkCap;
  in.residualCapacity = data.residualCap;
  in.softmaxScale = 1.0f / std::sqrt(float(s.headDim));
  std::vector<float> out(size_t(data.batch) * s.queryHeads * s.headDim);
  if (quantized) {
    ref::attention(s, in, out.data());
    for (float &x : out)
      x = ref::roundToHalf(x, s.dtype);
    return out;
  }
  // Unquantized: the same tokens with the body's original fp16 values.
  int d = s.headDim, gqa = s.queryHeads / s.kvHeads;
  for (int b = 0; b < data.batch; ++b)
    for (int h = 0; h < s.queryHeads; ++h) {
      size_t headRow = size_t(b) * s.kvHeads + h / gqa;
      std::vector<const float *> ks, vs;
      for (int t = 0; s.sink && t < data.lengths[b * 3]; ++t) {
        ks.push_back(&data.sinkK[(headRow * data.sinkCap + t) * d]);
        vs.push_back(&data.sinkV[(headRow * data.sinkCap + t) * d]);
      }
      for (int t = 0; t < data.lengths[b * 3 + 1]; ++t) {
        ks.push_back(&data.bodyK[(headRow * data.capacity + t) * d]);
        vs.push_back(&data.bodyV[(headRow * data.capacity + t) * d]);
      }
      for (int t = 0; s.residual && t < data.lengths[b * 3 + 2]; ++t) {
        ks.push_back(&data.residualK[(headRow * data.residualCap + t) * d]);
        vs.push_back(&data.residualV[(headRow * data.residualCap + t) * d]);
      }
      ref::attendRows(&data.q[(size_t(b) * s.queryHeads + h) * d], ks, vs, d,
                      in.softmaxScale,
                      &out[(size_t(b) * s.queryHeads + h) * d]);
    }
  return out;
}

class AttentionNumerics : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(AttentionNumerics, MatchesReferenceOnTheSameQuantizedData) {
  const AttentionCase &c = GetParam();
  AttentionData data = makeData(c);
  std::vector<float> forward = runAttention(c, data, emu::Schedule::Forward);
  std::vector<float> reverse = runAttention(c, data, emu::Schedule::Reverse);
  EXPECT_EQ(forward, reverse) << "schedule-dependent output";
  std::vector<float> expected = referenceAttention(c, data, true);
  double error = normwiseError(forward, expected);
  // 1e-3 of the output's scale beyond the output's own rounding: both
  // results are rounded to the half type, and a value near a rounding
  // boundary may land on either neighbour (one bf16 ulp is 2^-8 relative).
  double scale = 0;
  for (float x : expected)
    scale = std::max(scale, double(std::fabs(x)));
  double ulpBits = c.spec.dtype == HalfType::F16 ? 10 : 7;
  for (size_t i = 0; i < forward.size(); ++i) {
    double ulp = std::ldexp(std::fabs(double(expected[i])), -int(ulpBits));
    ASSERT_LE(std::fabs(double(forward[i]) - expected[i]), 1e-3 * scale + ulp)
        << "element " << i << " of " << c.name();
  }
  double vsFp16 = normwiseError(forward, referenceAttention(c, data, false));
  RecordProperty("error_vs_reference", std::to_string(error));
  RecordProperty("error_vs_fp16", std::to_string(vsFp16));
  std::printf("  %s: error vs reference %.2e, vs fp16 unquantized %.2e\n",
              c.spec.canonical().c_str(), error, vsFp16);
}

/// Number of attention specs in the seeded sample (each runs with 4 length
/// patterns): $KVQ_NUMERICS_SPECS, default 40 (160 cases; each also forced
/// onto the CUDA cores, and the presets' 10 specs come on top).
int sampleSize() {
  const char *text = std::getenv("KVQ_NUMERICS_SPECS");
  int n = text ? std::atoi(text) : 0;
  return n > 0 ? n : 40;
}

/// Whether the plan would let `s` run on the tensor cores if asked
/// (Plan.cpp's tensorCoreObstacle, for the test's own choice of cases):
/// head_dim in runs of 32, values whose lane runs of head_dim/8 channels are
/// whole packed words and groups or lie inside one.
bool tensorCoresCanRun(const KernelSpec &s) {
  if (s.key.isStatic() || s.value.isStatic()) // CUDA cores only, so far
    return false;
  if (s.headDim % 32 != 0 ||
      (s.queryHeads / s.kvHeads + 7) / 8 * s.headDim > 256)
    return false;
  if (s.value.axis != QuantScheme::Axis::Token)
    return true;
  int run = s.headDim / 8, perWord = 32 / s.value.bits;
  int group = s.value.groupSize(s.headDim);
  return (run % perWord == 0 || perWord % run == 0) &&
         (run % group == 0 || group % run == 0);
}

std::vector<AttentionCase> attentionCases() {
  std::vector<AttentionCase> cases;
  std::vector<std::tuple<int, QuantScheme::Axis, bool>> combos;
  for (int bits : {2, 4, 8})
    for (auto axis : {QuantScheme::Axis::Token, QuantScheme::Axis::Channel})
      for (bool symmetric : {false, true})
        combos.emplace_back(bits, axis, symmetric);
  const int groups[] = {32, 64, 128, 0};
  std::mt19937 rng(20261122);
  auto pick = [&](int n) { return int(rng() % unsigned(n)); };
  // Spec `s` with 4 length patterns, each on the plan's path and forced
  // onto the CUDA cores (bf16 also forced onto the tensor cores where they
  // can run).
  auto addCases = [&](const KernelSpec &s, int index) {
    int unit = 1; // body tokens come in whole channel groups
    for (const QuantScheme *q : {&s.key, &s.value})
      if (q->axis == QuantScheme::Axis::Channel)
        unit = std::max(unit, q->groupSize(s.headDim));
    const std::vector<std::vector<std::array<int, 3>>> patterns = {
        // unequal lengths, counts not multiples of the tile or split
        {{4, unit * (1 + pick(3)), 1 + pick(60)}, {1, unit, 1 + pick(9)}},
        {{1 + pick(4), unit * (2 + pick(4)), 33}, {0, 0, 7}},
        // only sinks and residual (empty quantized body), then nothing
        {{3, 0, 1 + pick(40)}, {0, 0, 0}},
        // a longer body over several splits
        {{2, unit * ((300 + unit - 1) / unit), 17}},
    };
    for (size_t p = 0; p < patterns.size(); ++p) {
      AttentionCase c;
      c.spec = s;
      c.lengths = patterns[p];
      // A segment the spec does not have holds no tokens.
      for (auto &l : c.lengths) {
        l[0] = s.sink ? l[0] : 0;
        l[2] = s.residual ? l[2] : 0;
      }
      c.tokensPerSplit = p % 2 ? 64 : 128;
      c.outliers = (index + p) % 2 == 0;
      cases.push_back(c);
      // Every case on the plan's path (tensor cores where they can run)
      // and forced onto the CUDA cores: both bodies stay correct. What the
      // plan keeps on the CUDA cores though the tensor cores can run it
      // (bf16; more than 128 channels a column tile, head_dim 256) is
      // forced onto the tensor cores too.
      c.spec.path = AttentionPath::CudaCores;
      cases.push_back(c);
      int columnTiles = (s.queryHeads / s.kvHeads + 7) / 8;
      if ((s.dtype == HalfType::BF16 || columnTiles * s.headDim > 128) &&
          tensorCoresCanRun(s)) {
        c.spec.path = AttentionPath::TensorCores;
        cases.push_back(c);
      }
    }
  };
  for (int index = 0; index < sampleSize(); ++index) {
    KernelSpec s;
    s.kind = KernelKind::Attention;
    // The first specs walk every (bits, axis, mode) for K, with V a different
    // combination; then random draws.
    size_t k = index < 12 ? index : pick(12);
    size_t v = index < 12 ? (k + 7) % 12 : pick(12);
    s.headDim = std::vector<int>{128, 64, 96, 256}[index % 4];
    int gqa = std::vector<int>{1, 4, 8, 2}[(index / 4 + index) % 4];
    s.kvHeads = 1 + pick(2);
    s.queryHeads = s.kvHeads * gqa;
    s.dtype = pick(4) == 3 ? HalfType::BF16 : HalfType::F16;
    auto set = [&](QuantScheme &q, std::tuple<int, QuantScheme::Axis, bool> t,
                   int g) {
      std::tie(q.bits, q.axis, q.symmetric) = t;
      q.group = groups[g % 4];
      if (q.axis == QuantScheme::Axis::Token &&
          s.headDim % q.groupSize(s.headDim) != 0)
        q.group = 0;
      q.interleaved = pick(3) == 0;
      q.fp32Scales = pick(6) == 0;
    };
    set(s.key, combos[k], index);
    set(s.value, combos[v], index + 1 + pick(3));
    if (s.dtype == HalfType::BF16) // kBf16ScalesRule: quantized with fp32
      s.key.fp32Scales = s.value.fp32Scales = true;
    s.sink = pick(4) != 0;
    s.residual = pick(4) != 0;
    addCases(s, index);
  }
  // Static scales and FP8 (per tensor, per kv head), keys and values mixed
  // with each other and with a per-group scheme, GQA 1/4/8, head_dim
  // 64/96/128.
  {
    struct Pair {
      const char *key, *value;
      int headDim, gqa;
    };
    int index = 1000;
    for (Pair p :
         {Pair{"e4m3ph", "e4m3ph", 128, 4}, Pair{"e5m2pt", "e4m3pt", 64, 8},
          Pair{"e4m3pt", "e5m2ph", 96, 1}, Pair{"4tph", "4tphs", 128, 4},
          Pair{"8tpts", "4tphi", 64, 1}, Pair{"2c32", "e4m3ph", 128, 8},
          Pair{"e4m3ph", "4t32i", 128, 2}}) {
      KernelSpec s;
      s.kind = KernelKind::Attention;
      EXPECT_EQ(parseSchemeTag(p.key, s.key), std::nullopt);
      EXPECT_EQ(parseSchemeTag(p.value, s.value), std::nullopt);
      s.headDim = p.headDim;
      s.kvHeads = 2;
      s.queryHeads = 2 * p.gqa;
      s.dtype = index % 3 == 2 ? HalfType::BF16 : HalfType::F16;
      if (s.dtype == HalfType::BF16) // kBf16ScalesRule (static: already fp32)
        s.key.fp32Scales = s.value.fp32Scales = true;
      s.sink = s.residual = true;
      addCases(s, index++);
    }
  }
  // Every preset's schemes as the cache stores them (token-axis codes
  // interleaved: the tensor cores read values in whole words), at
  // head_dim 128 with GQA 4 and head_dim 64 with GQA 8.
  int index = sampleSize();
  for (const CachePreset &preset : allPresets())
    for (auto [headDim, gqa] : {std::pair{128, 4}, std::pair{64, 8}}) {
      KernelSpec s;
      s.kind = KernelKind::Attention;
      s.key = preset.key;
      s.value = preset.value;
      s.headDim = headDim;
      s.kvHeads = 2;
      s.queryHeads = 2 * gqa;
      s.dtype = HalfType::F16;
      s.sink = s.residual = true;
      addCases(s, index++);
    }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(
    Matrix, AttentionNumerics, ::testing::ValuesIn(attentionCases()),
    [](const ::testing::TestParamInfo<AttentionCase> &info) {
      return info.param.name();
    });

} // namespace

//===----------------------------------------------------------------------===//
// Traffic of the attention kernel
//===----------------------------------------------------------------------===//

namespace {

/// The traffic tests' case: KIVI-2 keys and values, GQA 4, head_dim 128, a
/// full 512-token body with a 4-token sink and a 40-token residual.
AttentionCase kivi2TrafficCase(AttentionPath path) {
  AttentionCase c;
  c.spec.kind = KernelKind::Attention;
  c.spec.path = path;
  EXPECT_FALSE(parseSchemeTag("2c32", c.spec.key));
  EXPECT_FALSE(parseSchemeTag("2t32", c.spec.value));
  c.spec.headDim = 128;
  c.spec.kvHeads = 2;
  c.spec.queryHeads = 8;
  c.lengths = {{4, 512, 40}};
  c.tokensPerSplit = 128;
  c.outliers = false;
  return c;
}

/// Bytes of packed words and fp16 sink/residual tokens of the traffic case.
uint64_t minimumBytes(const AttentionCase &c, const AttentionData &data) {
  return (data.keyWords.size() + data.valueWords.size()) * 4 +
         uint64_t(4 + 40) * c.spec.kvHeads * 128 * 2 * 2;
}

/// The CUDA-core body: the 128-bit loads of packed codes and fp16 tokens
/// are coalesced and read every byte once per GQA group.
TEST(AttentionTraffic, PackedCodeLoadsAreCoalescedAndReadOnce) {
  AttentionCase c = kivi2TrafficCase(AttentionPath::CudaCores);
  AttentionData data = makeData(c);
  ASSERT_EQ(data.capacity, 512);
  emu::TrafficReport traffic;
  runAttention(c, data, emu::Schedule::Forward, &traffic);

  // The 128-bit load sites: packed words of K and V, and the fp16 sink and
  // residual K and V (8 halves a load); scales and q are 2-byte loads.
  uint64_t uniqueSectors = 0;
  int wideSites = 0;
  for (const emu::SiteTraffic &site : traffic.sites) {
    if (site.store || site.accessBytes != 16)
      continue;
    ++wideSites;
    std::printf("  site %d: %llu requests, %.2f sectors/request (ideal %.0f), "
                "efficiency %.1f%%\n",
                site.site, (unsigned long long)site.requests,
                site.sectorsPerRequest(), site.idealSectorsPerRequest(),
                100 * site.efficiency());
    EXPECT_GE(site.efficiency(), 0.90) << "site " << site.site;
    uniqueSectors += site.uniqueSectors;
  }
  EXPECT_EQ(wideSites, 6);
  uint64_t minimum = minimumBytes(c, data);
  double overFetch = double(uniqueSectors * 32) / double(minimum);
  std::printf("  packed words + fp16 segments: %llu bytes, fetched %llu "
              "(over-fetch %.3fx)\n",
              (unsigned long long)minimum,
              (unsigned long long)(uniqueSectors * 32), overFetch);
  EXPECT_LE(overFetch, 1.05);
  EXPECT_GE(overFetch, 1.0); // every byte was read
}

/// The tensor-core body reads a step's words and fp16 rows as fragments
/// (lanes of a quad share some loads): every byte is still fetched from
/// memory once, and nothing else.
TEST(AttentionTraffic, TensorCoreFragmentsReadEveryByteOnce) {
  AttentionCase c = kivi2TrafficCase(AttentionPath::TensorCores);
  AttentionData data = makeData(c);
  emu::TrafficReport traffic;
  runAttention(c, data, emu::Schedule::Forward, &traffic);
  // Everything the kernel must read: words, fp16 tokens, fp16 scales and
  // zero points, queries, lengths.
  uint64_t minimum = minimumBytes(c, data) +
                     (data.keyScales.size() + data.keyZeros.size() +
                      data.valueScales.size() + data.valueZeros.size()) *
                         2 +
                     data.q.size() * 2 + data.lengths.size() * 4;
  double overFetch = double(traffic.uniqueLoadSectors * 32) / double(minimum);
  std::printf("  tensor cores: fetched/minimum %.3fx\n", overFetch);
  EXPECT_GE(overFetch, 1.0); // every byte was read
  EXPECT_LE(overFetch, 1.05);
}

} // namespace

//===----------------------------------------------------------------------===//
// The dense (fp16) baseline attention kernel
//===----------------------------------------------------------------------===//

namespace {

/// kvq.attention over fp16 keys and values, GQA 4, with a residual segment,
/// run on the emulator against the reference's attendRows.
/// The parameter is the plan's attentionPath: 1 CUDA cores, 2 tensor cores.
class DenseAttention : public ::testing::TestWithParam<int> {};

TEST_P(DenseAttention, MatchesTheReference) {
  std::string ir = R"mlir(
func.func @dense(%q: tensor<?x8x64xf16>, %k: tensor<?x2x?x64xf16>,
    %v: tensor<?x2x?x64xf16>, %rk: tensor<?x2x?x64xf16>,
    %rv: tensor<?x2x?x64xf16>, %l: tensor<?x3xi32>) -> tensor<?x8x64xf16> {
  %o = kvq.attention %q, keys(%k), values(%v) residual(%rk, %rv) lengths(%l)
      scale 0.125 {plan = #kvq.plan<attentionPath = PATH>}
      : (tensor<?x8x64xf16>, tensor<?x2x?x64xf16>, tensor<?x2x?x64xf16>,
         tensor<?x2x?x64xf16>, tensor<?x2x?x64xf16>, tensor<?x3xi32>)
      -> tensor<?x8x64xf16>
  return %o : tensor<?x8x64xf16>
})mlir";
  ir.replace(ir.find("PATH"), 4, std::to_string(GetParam()));
  Generator generator;
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceString<mlir::ModuleOp>(ir, &generator.context());
  ASSERT_TRUE(module);
  llvm::Expected<GeneratedSource> source =
      generator.generate(*module, GeneratorOptions());
  ASSERT_TRUE(static_cast<bool>(source)) << llvm::toString(source.takeError());
  llvm::Expected<std::unique_ptr<emu::Module>> compiled =
      emu::Module::compile(*source, KVQ_TEST_EMULATOR_CACHE);
  ASSERT_TRUE(static_cast<bool>(compiled))
      << llvm::toString(compiled.takeError());
  const GeneratedKernel &attention = source->kernels[0];
  const GeneratedKernel &combine = source->kernels[1];
  ASSERT_EQ(attention.name, GetParam() == 2 ? "kvq_attn_dense_d64_g4_f16_r_mma"
                                            : "kvq_attn_dense_d64_g4_f16_r");

  int batch = 2, kvHeads = 2, queryHeads = 8, d = 64, capacity = 150,
      residualCap = 10, sinkCap = 1, split = 64;
  std::vector<int32_t> lengths = {0, 150, 7, 0, 61, 10};
  std::vector<float> q =
      kvLikeData(size_t(batch) * queryHeads, d, HalfType::F16, 1, false);
  std::vector<float> k =
      kvLikeData(size_t(batch) * kvHeads * capacity, d, HalfType::F16, 2, true);
  std::vector<float> v = kvLikeData(size_t(batch) * kvHeads * capacity, d,
                                    HalfType::F16, 3, false);
  std::vector<float> rk = kvLikeData(size_t(batch) * kvHeads * residualCap, d,
                                     HalfType::F16, 4, true);
  std::vector<float> rv = kvLikeData(size_t(batch) * kvHeads * residualCap, d,
                                     HalfType::F16, 5, false);
  int splits = (capacity + split - 1) / split + 1;
  size_t rows = size_t(batch) * queryHeads;
  DeviceBuffer qb(toHalf(q, HalfType::F16)), kb(toHalf(k, HalfType::F16)),
      vb(toHalf(v, HalfType::F16)), rkb(toHalf(rk, HalfType::F16)),
      rvb(toHalf(rv, HalfType::F16)), lb(lengths);
  DeviceBuffer po(rows * splits * d * 4), pm(rows * splits * 4),
      ps(rows * splits * 4), out(std::vector<uint16_t>(rows * d, 0));
  float scale = 0.125f;
  std::vector<void *> args = {qb.arg(),     po.arg(), pm.arg(),  ps.arg(),
                              kb.arg(),     vb.arg(), rkb.arg(), rvb.arg(),
                              lb.arg(),     &kvHeads, &capacity, &sinkCap,
                              &residualCap, &split,   &scale};
  ASSERT_EQ(args.size(), attention.argNames.size());
  llvm::Error error = (*compiled)->launch(
      attention.name, {unsigned(splits), unsigned(kvHeads), unsigned(batch)},
      {unsigned(attention.threads)}, args);
  ASSERT_FALSE(static_cast<bool>(error)) << llvm::toString(std::move(error));
  std::vector<void *> combineArgs = {po.arg(), pm.arg(), ps.arg(), out.arg(),
                                     &splits};
  error =
      (*compiled)->launch(combine.name, {unsigned(queryHeads), unsigned(batch)},
                          {unsigned(combine.threads)}, combineArgs);
  ASSERT_FALSE(static_cast<bool>(error)) << llvm::toString(std::move(error));
  std::vector<float> got =
      fromHalf(out.read<uint16_t>(rows * d), HalfType::F16);

  std::vector<float> expected(rows * d);
  for (int b = 0; b < batch; ++b)
    for (int h = 0; h < queryHeads; ++h) {
      size_t row = size_t(b) * kvHeads + h / 4;
      std::vector<const float *> ks, vs;
      for (int t = 0; t < lengths[b * 3 + 1]; ++t) {
        ks.push_back(&k[(row * capacity + t) * d]);
        vs.push_back(&v[(row * capacity + t) * d]);
      }
      for (int t = 0; t < lengths[b * 3 + 2]; ++t) {
        ks.push_back(&rk[(row * residualCap + t) * d]);
        vs.push_back(&rv[(row * residualCap + t) * d]);
      }
      ref::attendRows(&q[(size_t(b) * queryHeads + h) * d], ks, vs, d, scale,
                      &expected[(size_t(b) * queryHeads + h) * d]);
    }
  EXPECT_LE(normwiseError(got, expected), 2e-3);
}

INSTANTIATE_TEST_SUITE_P(Paths, DenseAttention, ::testing::Values(1, 2),
                         [](const ::testing::TestParamInfo<int> &info) {
                           return info.param == 2 ? "TensorCores" : "CudaCores";
                         });

} // namespace
