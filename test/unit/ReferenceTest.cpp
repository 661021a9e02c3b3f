//===- ReferenceTest.cpp - the reference pinned to hand-computed cases ----===//
//
// The reference is the ground truth of the numerics matrix, so it is itself
// checked against values worked out by hand from ARCHITECTURE.md section 4.

#include "kvq/Runtime/Reference.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <tuple>
#include <vector>

using namespace kvq;

namespace {

QuantScheme scheme(int bits, int group, QuantScheme::Axis axis,
                   bool symmetric = false, bool interleaved = false) {
  QuantScheme s;
  s.bits = bits;
  s.group = group;
  s.axis = axis;
  s.symmetric = symmetric;
  s.interleaved = interleaved;
  return s;
}
constexpr auto Token = QuantScheme::Axis::Token;
constexpr auto Channel = QuantScheme::Axis::Channel;

struct Quantized {
  std::vector<uint32_t> words;
  std::vector<float> scales, zeros;
};

/// One row of `x.size()` channels (token axis) quantized with `s`.
Quantized quantizeRow(const QuantScheme &s, const std::vector<float> &x) {
  int d = int(x.size());
  int group = s.groupSize(d);
  Quantized q;
  q.words.assign(d * s.bits / 32, 0);
  q.scales.assign(d / group, 0);
  q.zeros.assign(d / group, 0);
  ref::quantize(s, d, x.data(), 1, 1, 1, 1, 0, q.words.data(), q.scales.data(),
                s.symmetric ? nullptr : q.zeros.data());
  return q;
}

TEST(Reference, TwoBitCodesOfAnExactRange) {
  // 16 values 0,1,2,3,0,1,...: min 0, max 3, scale (3-0)/3 = 1, codes = x,
  // code j in bits [2j, 2j+2): 0b11100100 repeated = 0xE4E4E4E4.
  std::vector<float> x(16);
  for (int i = 0; i < 16; ++i)
    x[i] = float(i % 4);
  Quantized q = quantizeRow(scheme(2, 16, Token), x);
  EXPECT_EQ(q.scales[0], 1.0f);
  EXPECT_EQ(q.zeros[0], 0.0f);
  ASSERT_EQ(q.words.size(), 1u);
  EXPECT_EQ(q.words[0], 0xE4E4E4E4u);
}

TEST(Reference, HqqZeroPointOfAHandComputedGroup) {
  // 2-bit, one group of 16: x = 0, 3 and fourteen 1.25. Min-max: scale 1,
  // zero 0, codes 0, 3, 1 (residuals 0, 0, 0.25: squared error 0.875).
  // HQQ (ZeroPointSearch.h), beta 10:
  //  step 0, zero 0: the 1.25s shrink by 1 / (10 sqrt 0.25) = 0.2 to 0.05,
  //    targets 1.25 - 0.05 - 1 = 0.2 (the ends 0); zero = fp16(14 * 0.2 /
  //    16 = 0.175) = 0.175048828125;
  //  step 1: codes unchanged, residuals 0.075 (x14), -0.175 (x2): error
  //    0.14 < 0.875, kept; no residual survives the shrinkage (0.075 <
  //    1 / (10.1 sqrt 0.075), 0.175 < 1 / (10.1 sqrt 0.175)), so the
  //    targets are the plain x - q s: zero = 14 * 0.25 / 16 = 0.21875 (the
  //    least-squares zero for these codes; exact in fp16);
  //  step 2: residuals 0.03125 (x14), -0.21875 (x2): error 0.109375 < 0.14,
  //    kept; the ends now shrink by 1 / (10.201 sqrt 0.21875) = 0.2096 to
  //    -0.0091, so the next zero is about 0.2199, whose error (0.109394) is
  //    not lower: the search stops at 0.21875.
  std::vector<float> x(16, 1.25f);
  x[0] = 0.0f;
  x[1] = 3.0f;
  QuantScheme s = scheme(2, 16, Token);
  std::vector<uint32_t> words(1);
  float scale = 0, zero = 0;
  ref::quantize(s, 16, x.data(), 1, 1, 1, 1, 0, words.data(), &scale, &zero,
                ZeroPointSearch::Hqq);
  EXPECT_EQ(scale, 1.0f);
  EXPECT_EQ(zero, 0.21875f);
  // Codes 0, 3, then fourteen 1s: 0b01...01'11'00.
  EXPECT_EQ(words[0], 0x5555555Cu);
  // Min-max on the same group: zero 0, the same codes.
  Quantized minmax = quantizeRow(s, x);
  EXPECT_EQ(minmax.zeros[0], 0.0f);
  EXPECT_EQ(minmax.words[0], words[0]);
}

TEST(Reference, HqqKeepsTheMinimumOfConstantAndSymmetricGroups) {
  // A constant group has nothing to refine (scale 0); a symmetric scheme
  // has no zero point: both come out as min-max's.
  std::vector<float> constant(16, 1.5f);
  QuantScheme asym = scheme(4, 16, Token);
  std::vector<uint32_t> words(2);
  float scale = -1, zero = -1;
  ref::quantize(asym, 16, constant.data(), 1, 1, 1, 1, 0, words.data(), &scale,
                &zero, ZeroPointSearch::Hqq);
  EXPECT_EQ(scale, 0.0f);
  EXPECT_EQ(zero, 1.5f);
  std::vector<float> x(16);
  for (int i = 0; i < 16; ++i)
    x[i] = float(i) - 7.25f;
  QuantScheme sym = scheme(4, 16, Token, /*symmetric=*/true);
  Quantized expected = quantizeRow(sym, x);
  ref::quantize(sym, 16, x.data(), 1, 1, 1, 1, 0, words.data(), &scale, nullptr,
                ZeroPointSearch::Hqq);
  EXPECT_EQ(scale, expected.scales[0]);
  EXPECT_EQ(words, expected.words);
}

TEST(Reference, StaticPerHeadSymmetricCodesByHand) {
  // 4-bit symmetric, scales given per kv head: head 0 0.5, head 1 2.0; two
  // head rows (one sequence), 16 channels, one token. Codes rint(x / s)
  // clamped to +-7, stored + 8, nibble j at bits [4j, 4j + 4).
  QuantScheme s = QuantScheme::staticScheme(4, QuantScheme::Scales::Head,
                                            /*symmetric=*/true);
  EXPECT_EQ(s.tag(), "4tphs");
  std::vector<float> x(32, 0.0f);
  // head 0: 0, 0.5, -0.5, 3.5, 4 (8: clamped to 7), 0.25 (0.5: ties to
  // even, 0), 0.75 (1.5: 2), -4 (-8: -7) -> 8 9 7 15 15 8 10 1, then 8s.
  float head0[8] = {0, 0.5f, -0.5f, 3.5f, 4, 0.25f, 0.75f, -4};
  std::copy(head0, head0 + 8, x.begin());
  std::fill(x.begin() + 16, x.end(), 3.0f); // head 1: 1.5 -> 2 -> code 10
  float scales[2] = {0.5f, 2.0f};
  std::vector<uint32_t> words(4);
  ref::quantizeStatic(s, 16, 2, x.data(), 2, 1, 1, 1, 0, words.data(), scales,
                      nullptr);
  EXPECT_EQ(words, (std::vector<uint32_t>{0x1A8FF798u, 0x88888888u, 0xAAAAAAAAu,
                                          0xAAAAAAAAu}));
  std::vector<float> back(32);
  ref::dequantizeStatic(s, 16, 2, words.data(), scales, nullptr, 2, 1, 1, 0, 1,
                        back.data());
  float want0[8] = {0, 0.5f, -0.5f, 3.5f, 3.5f, 0, 1.0f, -3.5f};
  for (int i = 0; i < 8; ++i)
    EXPECT_EQ(back[i], want0[i]) << i;
  EXPECT_EQ(back[16], 4.0f); // code 10: (10 - 8) * 2
}

TEST(Reference, Fp8CodesAreTheBytesOfXOverTheScaleByHand) {
  // E4M3, one scale per tensor (0.5): stored = e4m3(x / 0.5), byte j of a
  // word at bits [8j, 8j + 8) (the element order of vLLM's uint8 cache).
  //   1.0 -> 2.0 = 1.000b x 2^1: exponent 1 + 7 = 8 -> 0x40;
  //  -0.3 -> -0.6 = 1.2 x 2^-1: exponent 6, mantissa 1.6/8 -> 2 (1.25)
  //          -> 0x32 | sign = 0xB2, read back -0.625 x 0.5 = -0.3125;
  //   300 -> 600, past 448: saturates to 448 = 0x7E;  0 -> 0x00.
  QuantScheme e4m3 = QuantScheme::staticScheme(8, QuantScheme::Scales::Tensor,
                                               true, QuantScheme::Format::E4M3);
  EXPECT_EQ(e4m3.tag(), "e4m3pt");
  std::vector<float> x = {1.0f, -0.3f, 300.0f, 0.0f};
  float scale = 0.5f;
  uint32_t word = 0;
  ref::quantizeStatic(e4m3, 4, 8, x.data(), 1, 1, 1, 1, 0, &word, &scale,
                      nullptr);
  EXPECT_EQ(word, 0x007EB240u);
  std::vector<float> back(4);
  ref::dequantizeStatic(e4m3, 4, 8, &word, &scale, nullptr, 1, 1, 1, 0, 1,
                        back.data());
  EXPECT_EQ(back, (std::vector<float>{1.0f, -0.3125f, 224.0f, 0.0f}));

  // E5M2 per kv head (head 1's scale 2): 3 -> 1.5 = 1.10b x 2^0: exponent
  // 15 -> 0x3E; 1e6 -> 5e5 saturates to 57344 = 0x7B; -1 -> -0.5 =
  // 1.0 x 2^-1 -> 0x38 | 0x80 = 0xB8; 0.001 -> 0.0005 = 1.024 x 2^-11:
  // exponent -11 + 15 = 4, mantissa 0.024 x 4 rounds to 0 -> 0x10.
  QuantScheme e5m2 = QuantScheme::staticScheme(8, QuantScheme::Scales::Head,
                                               true, QuantScheme::Format::E5M2);
  EXPECT_EQ(e5m2.tag(), "e5m2ph");
  std::vector<float> y = {0, 0, 0, 0, 3.0f, 1e6f, -1.0f, 0.001f};
  float headScales[2] = {1.0f, 2.0f};
  uint32_t words[2] = {};
  ref::quantizeStatic(e5m2, 4, 2, y.data(), 2, 1, 1, 1, 0, words, headScales,
                      nullptr);
  EXPECT_EQ(words[0], 0u);
  EXPECT_EQ(words[1], 0x10B87B3Eu);
}

TEST(Reference, ConstantGroupStoresCodeZeroAndDequantizesExactly) {
  std::vector<float> x(16, 1.5f);
  Quantized q = quantizeRow(scheme(4, 16, Token), x);
  EXPECT_EQ(q.scales[0], 0.0f);
  EXPECT_EQ(q.zeros[0], 1.5f);
  EXPECT_EQ(q.words[0], 0u);
  EXPECT_EQ(q.words[1], 0u);
  std::vector<float> back(16);
  ref::dequantize(scheme(4, 16, Token), 16, q.words.data(), q.scales.data(),
                  q.zeros.data(), 1, 1, 1, 0, 1, back.data());
  for (float v : back)
    EXPECT_EQ(v, 1.5f);
}

TEST(Reference, OutlierSetsTheScaleAndTiesRoundToEven) {
  // 4-bit, min 0, max 30: scale 30/15 = 2. x = 1 -> 0.5 -> 0 (even);
  // x = 3 -> 1.5 -> 2 (even); x = 5 -> 2.5 -> 2 (even); 30 -> 15.
  std::vector<float> x(16, 0.0f);
  x[1] = 1;
  x[2] = 3;
  x[3] = 5;
  x[4] = 30;
  Quantized q = quantizeRow(scheme(4, 16, Token), x);
  EXPECT_EQ(q.scales[0], 2.0f);
  // Codes 0,0,2,2 in word 0 (nibbles, low first), code 15 first of the
  // next four.
  EXPECT_EQ(q.words[0], 0x00002200u | (15u << 16));
  EXPECT_EQ(q.words[1], 0u);
}

TEST(Reference, SymmetricEightBitCentresCodesOn128) {
  // amax 127: scale 127/127 = 1; q = x, code = x + 128.
  std::vector<float> x = {-127, 0, 1, 127};
  x.resize(16, 0.0f);
  Quantized q = quantizeRow(scheme(8, 16, Token, /*symmetric=*/true), x);
  EXPECT_EQ(q.scales[0], 1.0f);
  EXPECT_EQ(q.words[0], 1u | (128u << 8) | (129u << 16) | (255u << 24));
  std::vector<float> back(16);
  ref::dequantize(scheme(8, 16, Token, true), 16, q.words.data(),
                  q.scales.data(), nullptr, 1, 1, 1, 0, 1, back.data());
  EXPECT_EQ(back[0], -127.0f);
  EXPECT_EQ(back[3], 127.0f);
}

TEST(Reference, ScalesAreRoundedToFp16BeforeCoding) {
  // (1 - 0) / 3 is not an fp16 value: stored as 0.333251953125 (RNE).
  std::vector<float> x(16, 0.0f);
  x[0] = 1;
  Quantized q = quantizeRow(scheme(2, 16, Token), x);
  EXPECT_EQ(q.scales[0], 0.333251953125f);
  // 1 / 0.33325 = 3.0007 -> code 3.
  EXPECT_EQ(q.words[0] & 3u, 3u);
}

TEST(Reference, InterleavedOrderPairsCodes) {
  // 4-bit codes 0..7 (range 0..15 via an extra 15 in the group's second
  // word): code 2i in slot i, 2i+1 in slot i+4. Word = slots
  // [0,2,4,6,1,3,5,7] low to high = 0x75316420.
  std::vector<float> x(16, 0.0f);
  for (int i = 0; i < 8; ++i)
    x[i] = float(i);
  x[8] = 15;
  Quantized q = quantizeRow(scheme(4, 16, Token, false, true), x);
  EXPECT_EQ(q.scales[0], 1.0f);
  EXPECT_EQ(q.words[0], 0x75316420u);
}

TEST(Reference, ChannelAxisGroupsTokensDownEachChannel) {
  // 16 tokens x 2 channels; channel 0 counts 0..3, channel 1 is constant.
  int d = 2, tokens = 16;
  std::vector<float> x(tokens * d);
  for (int t = 0; t < tokens; ++t) {
    x[t * d + 0] = float(t % 4);
    x[t * d + 1] = 7.0f;
  }
  QuantScheme s = scheme(2, 16, Channel);
  std::vector<uint32_t> words(d); // one word row of 16 tokens
  std::vector<float> scales(d), zeros(d);
  ref::quantize(s, d, x.data(), 1, tokens, tokens, tokens, 0, words.data(),
                scales.data(), zeros.data());
  EXPECT_EQ(words[0], 0xE4E4E4E4u) << "tokens packed down channel 0";
  EXPECT_EQ(words[1], 0u);
  EXPECT_EQ(scales[0], 1.0f);
  EXPECT_EQ(scales[1], 0.0f);
  EXPECT_EQ(zeros[1], 7.0f);
}

TEST(Reference, NanStaysInItsGroup) {
  std::vector<float> x(32, 1.0f);
  x[0] = std::nanf("");
  x[1] = 3.0f;
  x[16] = 2.0f; // second group
  Quantized q = quantizeRow(scheme(4, 16, Token), x);
  // Group 0 ignores the NaN for its range: min 1, max 3.
  EXPECT_EQ(q.zeros[0], 1.0f);
  EXPECT_EQ(q.scales[0], ref::roundToHalf(2.0f / 15, HalfType::F16));
  EXPECT_EQ(q.words[0] & 15u, 0u) << "NaN is stored as code 0";
  EXPECT_EQ(q.zeros[1], 1.0f);
  EXPECT_EQ(q.scales[1], ref::roundToHalf(1.0f / 15, HalfType::F16));
}

TEST(Reference, AttentionOverSinkBodyAndResidual) {
  // head_dim 16, one kv head, two query heads (GQA 2). Keys all zero, so the
  // softmax is uniform: out = mean of the values over sink + body + residual.
  KernelSpec spec;
  spec.kind = KernelKind::Attention;
  spec.headDim = 16;
  spec.queryHeads = 2;
  spec.kvHeads = 1;
  spec.key = scheme(8, 16, Token);
  spec.value = scheme(8, 16, Token);
  int d = 16, capacity = 2;
  std::vector<float> zeros16(capacity * d, 0.0f);
  std::vector<float> bodyValues(capacity * d, 4.0f);
  std::vector<uint32_t> kw(capacity * d / 4), vw(capacity * d / 4);
  std::vector<float> ks(capacity), kz(capacity), vs(capacity), vz(capacity);
  ref::quantize(spec.key, d, zeros16.data(), 1, capacity, capacity, capacity, 0,
                kw.data(), ks.data(), kz.data());
  ref::quantize(spec.value, d, bodyValues.data(), 1, capacity, capacity,
                capacity, 0, vw.data(), vs.data(), vz.data());
  std::vector<float> q(2 * d, 1.0f), sinkK(d, 0.0f), sinkV(d, 1.0f),
      residK(d, 0.0f), residV(d, 1.0f);
  std::vector<int32_t> lengths = {1, 2, 1};
  ref::AttentionInputs in;
  in.q = q.data();
  in.keyWords = kw.data();
  in.keyScales = ks.data();
  in.keyZeros = kz.data();
  in.valueWords = vw.data();
  in.valueScales = vs.data();
  in.valueZeros = vz.data();
  in.sinkKeys = sinkK.data();
  in.sinkValues = sinkV.data();
  in.residualKeys = residK.data();
  in.residualValues = residV.data();
  in.lengths = lengths.data();
  in.bodyCapacity = capacity;
  in.sinkCapacity = 1;
  in.residualCapacity = 1;
  in.softmaxScale = 0.25f;
  std::vector<float> out(2 * d);
  ref::attention(spec, in, out.data());
  // (1 + 4 + 4 + 1) / 4 = 2.5 for both query heads.
  for (float v : out)
    EXPECT_FLOAT_EQ(v, 2.5f);
  lengths = {0, 0, 0};
  ref::attention(spec, in, out.data());
  for (float v : out)
    EXPECT_EQ(v, 0.0f) << "no tokens: zeros";
}

TEST(Reference, DequantizingFromAnyOffsetMatchesTheWholeStore) {
  // Channel axis, 2-bit: a word holds 16 tokens of a channel. A window
  // starting mid-word (as the cache's flushes and attention read) must give
  // the same values as the whole store.
  for (const QuantScheme &s :
       {scheme(2, 32, Channel), scheme(4, 16, Channel, false, true),
        scheme(2, 32, Token)}) {
    int d = 32, tokens = 64;
    std::vector<float> x(size_t(tokens) * d);
    for (size_t i = 0; i < x.size(); ++i)
      x[i] = std::sin(float(i) * 0.37f) * (i % d == 3 ? 10.0f : 1.0f);
    size_t scales = s.axis == Token ? size_t(tokens) * (d / s.group)
                                    : size_t(tokens / s.group) * d;
    std::vector<uint32_t> words(size_t(tokens) * d * s.bits / 32);
    std::vector<float> sc(scales), zp(scales);
    ref::quantize(s, d, x.data(), 1, tokens, tokens, tokens, 0, words.data(),
                  sc.data(), zp.data());
    std::vector<float> whole(x.size()), window(size_t(40) * d);
    ref::dequantize(s, d, words.data(), sc.data(), zp.data(), 1, tokens, tokens,
                    0, tokens, whole.data());
    ref::dequantize(s, d, words.data(), sc.data(), zp.data(), 1, 40, tokens, 5,
                    40, window.data());
    for (int t = 0; t < 40; ++t)
      for (int c = 0; c < d; ++c)
        ASSERT_EQ(window[size_t(t) * d + c], whole[size_t(t + 5) * d + c])
            << s.tag() << " token " << t + 5 << " channel " << c;
  }
}

TEST(Reference, GroupAttentionAgreesWithRowAttention) {
  // attendGroup (float dot products, each row read once per GQA group) is
  // what the reference backend runs; attendRows (double) is the tests'
  // truth. head_dim 100 exercises the partial-sum tail.
  int d = 100, heads = 4, tokens = 700;
  std::vector<float> q(size_t(heads) * d), k(size_t(tokens) * d),
      v(size_t(tokens) * d);
  for (size_t i = 0; i < q.size(); ++i)
    q[i] = std::cos(float(i) * 0.11f);
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] = std::sin(float(i) * 0.013f) * (i % d == 7 ? 12.0f : 1.0f);
    v[i] = std::cos(float(i) * 0.029f) * 3.0f;
  }
  std::vector<const float *> keys, values;
  for (int t = 0; t < tokens; ++t) {
    keys.push_back(&k[size_t(t) * d]);
    values.push_back(&v[size_t(t) * d]);
  }
  std::vector<float> group(size_t(heads) * d), row(d);
  float scale = 1.0f / std::sqrt(float(d));
  ref::attendGroup(q.data(), heads, keys, values, d, scale, group.data());
  double worst = 0;
  for (int h = 0; h < heads; ++h) {
    ref::attendRows(&q[size_t(h) * d], keys, values, d, scale, row.data());
    for (int c = 0; c < d; ++c)
      worst =
          std::max(worst, double(std::fabs(group[size_t(h) * d + c] - row[c])));
  }
  EXPECT_LT(worst, 1e-5) << "measured: " << worst;
  std::vector<const float *> none;
  ref::attendGroup(q.data(), heads, none, none, d, scale, group.data());
  for (float x : group)
    EXPECT_EQ(x, 0.0f) << "no tokens: zeros";
}

} // namespace

//===----------------------------------------------------------------------===//
// FP8 (the codec FP8 KV caches store: OCP E4M3 / E5M2, saturating)
//===----------------------------------------------------------------------===//

namespace {

using ref::Fp8Format;

struct Fp8Case {
  float x;
  uint8_t bits;
  const char *why;
};

// Hand-computed: E4M3 is s.eeee.mmm, bias 7; E5M2 s.eeeee.mm, bias 15.
const Fp8Case kE4M3[] = {
    {1.0f, 0x38, "1.0: exponent 7"},
    {448.0f, 0x7E, "the largest: 1.75 x 2^8"},
    {500.0f, 0x7E, "saturates"},
    {INFINITY, 0x7E, "infinity saturates (SATFINITE)"},
    {-INFINITY, 0xFE, "and keeps its sign"},
    {1.0625f, 0x38, "1 + 1/16: a tie, to the even 1.0"},
    {1.1875f, 0x3A, "1 + 3/16: a tie, to the even 1.25"},
    {0.015625f, 0x08, "2^-6, the smallest normal"},
    {0.0078125f, 0x04, "2^-7: subnormal 4 x 2^-9"},
    {-0.001953125f, 0x81, "-2^-9, the smallest subnormal"},
    {0.0009765625f, 0x00, "2^-10: a tie between 0 and 2^-9, to 0"},
    {0.00146484375f, 0x01, "3 x 2^-11: nearer 2^-9"},
    {-0.0f, 0x80, "negative zero"},
};
const Fp8Case kE5M2[] = {
    {1.0f, 0x3C, "1.0: exponent 15"},
    {57344.0f, 0x7B, "the largest: 1.75 x 2^15"},
    {1e6f, 0x7B, "saturates"},
    {INFINITY, 0x7B, "infinity saturates (SATFINITE)"},
    {1.125f, 0x3C, "1 + 1/8: a tie, to the even 1.0"},
    {1.375f, 0x3E, "1 + 3/8: a tie, to the even 1.5"},
    {-0.00006103515625f, 0x84, "-2^-14, the smallest normal"},
    {0.0000152587890625f, 0x01, "2^-16, the smallest subnormal"},
};

TEST(ReferenceFp8, HandComputedBits) {
  for (auto [format, cases, count] :
       {std::tuple{Fp8Format::E4M3, kE4M3, std::size(kE4M3)},
        std::tuple{Fp8Format::E5M2, kE5M2, std::size(kE5M2)}})
    for (size_t i = 0; i < count; ++i)
      EXPECT_EQ(ref::toFp8Bits(cases[i].x, format), cases[i].bits)
          << (format == Fp8Format::E4M3 ? "e4m3 " : "e5m2 ") << cases[i].why;
  EXPECT_EQ(ref::toFp8Bits(NAN, Fp8Format::E4M3), 0x7F);
  EXPECT_EQ(ref::toFp8Bits(NAN, Fp8Format::E5M2), 0x7F);
  EXPECT_TRUE(std::isnan(ref::fromFp8Bits(0xFF, Fp8Format::E4M3)));
  EXPECT_EQ(ref::fromFp8Bits(0x7C, Fp8Format::E5M2), INFINITY);
  EXPECT_TRUE(std::isnan(ref::fromFp8Bits(0x7D, Fp8Format::E5M2)));
  EXPECT_EQ(ref::fromFp8Bits(0x7E, Fp8Format::E4M3), 448.0f);
  EXPECT_EQ(ref::fromFp8Bits(0x01, Fp8Format::E4M3), 0.001953125f);
}

// Every finite pattern decodes to a value that encodes back to it, and
// 100000 floats of every scale and every midpoint of two neighbouring
// values encode to the nearest finite value (ties to the even pattern),
// found by searching all 256: an oracle independent of the encoder's
// arithmetic.
TEST(ReferenceFp8, EncodeIsTheNearestValueTiesToEven) {
  for (Fp8Format format : {Fp8Format::E4M3, Fp8Format::E5M2}) {
    std::vector<std::pair<float, uint8_t>> finite;
    for (int b = 0; b < 256; ++b) {
      float v = ref::fromFp8Bits(uint8_t(b), format);
      if (!std::isfinite(v))
        continue;
      EXPECT_EQ(ref::toFp8Bits(v, format), uint8_t(b)) << "pattern " << b;
      finite.push_back({v, uint8_t(b)});
    }
    // Random floats of every scale, and every midpoint of two neighbouring
    // values (the ties; exact in fp32).
    std::vector<float> inputs;
    std::mt19937 rng(8);
    std::uniform_real_distribution<float> mantissa(-2.0f, 2.0f);
    std::uniform_int_distribution<int> exponent(-20, 17);
    for (int i = 0; i < 100000; ++i)
      inputs.push_back(std::ldexp(mantissa(rng), exponent(rng)));
    std::vector<float> sorted;
    for (auto [v, b] : finite)
      sorted.push_back(v);
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 0; i + 1 < sorted.size(); ++i)
      if (sorted[i] != sorted[i + 1])
        inputs.push_back((sorted[i] + sorted[i + 1]) / 2);
    for (float x : inputs) {
      uint8_t best = 0;
      double bestDistance = INFINITY;
      for (auto [v, b] : finite) {
        double distance = std::fabs(double(x) - double(v));
        bool even = (b & 1) == 0;
        if (distance < bestDistance ||
            (distance == bestDistance && even && v != 0)) {
          best = b, bestDistance = distance;
        }
      }
      // Signed zero: the encoder keeps x's sign.
      if (ref::fromFp8Bits(best, format) == 0)
        best = std::signbit(x) ? 0x80 : 0x00;
      ASSERT_EQ(ref::toFp8Bits(x, format), best)
          << (format == Fp8Format::E4M3 ? "e4m3 " : "e5m2 ") << x;
    }
  }
}

} // namespace
