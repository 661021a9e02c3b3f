//===- KernelSpecTest.cpp - spec text, parsing and validation -------------===//

#include "kvq/Codegen/KernelSpec.h"

#include <gtest/gtest.h>

using namespace kvq;

namespace {

TEST(KernelSpec, CanonicalTextRoundTrips) {
  KernelSpec spec;
  spec.kind = KernelKind::Attention;
  ASSERT_FALSE(parseSchemeTag("2c32", spec.key));
  ASSERT_FALSE(parseSchemeTag("4thdsix", spec.value));
  spec.queryHeads = 32;
  spec.kvHeads = 8;
  spec.dtype = HalfType::BF16;
  spec.sink = false;
  EXPECT_EQ(spec.canonical(),
            "attention k=2c32 v=4thdsix d=128 hq=32 hkv=8 bf16 residual");
  KernelSpec parsed;
  ASSERT_FALSE(parseKernelSpec(spec.canonical(), parsed));
  EXPECT_EQ(parsed.canonical(), spec.canonical());
  EXPECT_TRUE(parsed.value.symmetric && parsed.value.interleaved &&
              parsed.value.fp32Scales);
  EXPECT_EQ(parsed.value.group, 0);
}

TEST(KernelSpec, DenseAttentionHasNoSchemes) {
  KernelSpec spec = KernelSpec::forDenseAttention(128, 32, 8, HalfType::F16,
                                                  /*sink=*/true,
                                                  /*residual=*/false);
  EXPECT_EQ(spec.canonical(), "dense-attention d=128 hq=32 hkv=8 f16 sink");
  EXPECT_TRUE(spec.isAttention());
  EXPECT_FALSE(spec.validate());
  KernelSpec parsed;
  ASSERT_FALSE(parseKernelSpec(spec.canonical(), parsed));
  EXPECT_EQ(parsed.kind, KernelKind::DenseAttention);
  EXPECT_EQ(parsed.canonical(), spec.canonical());
  EXPECT_EQ(parseKernelSpec("dense-attention k=2c32 d=128", parsed),
            "dense-attention takes no quantization scheme, got 'k=2c32'");
  spec.queryHeads = 12;
  EXPECT_EQ(spec.validate(),
            "query heads (12) must be a multiple of kv heads (8)");
}

TEST(KernelSpec, SegmentsDefaultToBoth) {
  KernelSpec spec;
  ASSERT_FALSE(parseKernelSpec("attention k=2c32 v=2t32", spec));
  EXPECT_TRUE(spec.sink && spec.residual);
  ASSERT_FALSE(parseKernelSpec("attention k=2c32 v=2t32 nosegments", spec));
  EXPECT_FALSE(spec.sink || spec.residual);
}

TEST(KernelSpec, QuantizeSpecsTakeABareScheme) {
  KernelSpec spec;
  ASSERT_FALSE(parseKernelSpec("quantize 8c64s d=64", spec));
  EXPECT_EQ(spec.kind, KernelKind::Quantize);
  EXPECT_EQ(spec.canonical(), "quantize 8c64s d=64 f16");
}

// Optimized zero points are a quantize kernel's option, for schemes that
// have zero points; the word round-trips and is refused elsewhere.
TEST(KernelSpec, HqqZeroPointsAreAQuantizeOption) {
  KernelSpec spec;
  ASSERT_FALSE(parseKernelSpec("quantize hqq 4c32 d=128", spec));
  EXPECT_EQ(spec.zeroPoints, ZeroPointSearch::Hqq);
  EXPECT_EQ(spec.canonical(), "quantize 4c32 d=128 f16 hqq");
  EXPECT_EQ(spec.validate(), std::nullopt);
  KernelSpec again;
  ASSERT_FALSE(parseKernelSpec(spec.canonical(), again));
  EXPECT_EQ(again.zeroPoints, ZeroPointSearch::Hqq);
  ASSERT_FALSE(parseKernelSpec("quantize 4c32 d=128", again));
  EXPECT_NE(again.canonical(), spec.canonical());

  ASSERT_FALSE(parseKernelSpec("quantize 4t64s d=128 hqq", spec));
  EXPECT_EQ(spec.validate().value_or(""),
            "zero point search 'hqq' needs an asymmetric scheme: a symmetric "
            "one has no zero points (4t64s)");
  EXPECT_EQ(parseKernelSpec("dequantize 4t64 d=128 hqq", spec).value_or(""),
            "unknown spec word 'hqq'");
  spec = KernelSpec::forScheme(KernelKind::Dequantize, QuantScheme(), 128,
                               HalfType::F16);
  spec.zeroPoints = ZeroPointSearch::Hqq;
  EXPECT_EQ(spec.validate().value_or(""),
            "hqq: only a quantize kernel searches zero points");
  spec.zeroPoints = ZeroPointSearch(7);
  EXPECT_EQ(spec.validate().value_or(""),
            "zero point search has no such value (7)");
}

// Static scales (per tensor, per kv head) and FP8 formats: their tags
// round-trip, and what the kernels do not implement is refused by name.
TEST(KernelSpec, StaticAndFp8SchemeTags) {
  struct Case {
    const char *tag;
    QuantScheme expected;
  };
  using S = QuantScheme;
  S interleaved = S::staticScheme(4, S::Scales::Head, false);
  interleaved.interleaved = true;
  for (const Case &c :
       {Case{"4tph", S::staticScheme(4, S::Scales::Head, false)},
        Case{"8tpts", S::staticScheme(8, S::Scales::Tensor, true)},
        Case{"4tphi", interleaved},
        Case{"e4m3pt",
             S::staticScheme(8, S::Scales::Tensor, true, S::Format::E4M3)},
        Case{"e5m2ph",
             S::staticScheme(8, S::Scales::Head, true, S::Format::E5M2)}}) {
    SCOPED_TRACE(c.tag);
    QuantScheme parsed;
    ASSERT_EQ(parseSchemeTag(c.tag, parsed), std::nullopt);
    EXPECT_TRUE(parsed == c.expected);
    EXPECT_EQ(parsed.tag(), c.tag);
    EXPECT_TRUE(parsed.isStatic());
    EXPECT_TRUE(parsed.fp32Scales) << "static scales are fp32";
    KernelSpec spec = KernelSpec::forAttention(parsed, parsed, 128, 32, 8,
                                               HalfType::F16, true, true);
    EXPECT_EQ(spec.validate(), std::nullopt);
  }
  QuantScheme s;
  for (const char *bad :
       {"4tphx", "4cph", "e4m3", "e4m3px", "e4m3pts", "e3m4pt"})
    EXPECT_NE(parseSchemeTag(bad, s), std::nullopt) << bad;
  QuantScheme fp8Per64 =
      S::staticScheme(8, S::Scales::Tensor, true, S::Format::E4M3);
  fp8Per64.scales = S::Scales::Group;
  fp8Per64.group = 64;
  KernelSpec spec =
      KernelSpec::forScheme(KernelKind::Quantize, fp8Per64, 128, HalfType::F16);
  EXPECT_EQ(spec.validate().value_or(""),
            "scheme static scales and FP8 need the token axis, one group per "
            "head vector and fp32 scales; FP8 is 8-bit, symmetric and linear "
            "(e4m3)");
  // A value outside the enums is named, and printing the spec is safe.
  QuantScheme corrupt = S::staticScheme(4, S::Scales::Head, false);
  corrupt.scales = S::Scales(7);
  spec =
      KernelSpec::forScheme(KernelKind::Quantize, corrupt, 128, HalfType::F16);
  EXPECT_EQ(spec.validate().value_or(""),
            "scheme format or scales has no such value (0, 7)");
  EXPECT_EQ(spec.canonical(), "quantize 4tp? d=128 f16");
}

// Token-major pages (vLLM's NHD layout) are a paged attention's variant for
// static-scale schemes: the word round-trips, and the rest is refused.
TEST(KernelSpec, TokenMajorPagesNeedPagedStaticSchemes) {
  KernelSpec spec;
  ASSERT_FALSE(parseKernelSpec(
      "attention k=e4m3pt v=e4m3pt d=128 hq=32 hkv=8 nhd paged=16", spec));
  EXPECT_TRUE(spec.nhdPages);
  EXPECT_EQ(spec.canonical(), "attention k=e4m3pt v=e4m3pt d=128 hq=32 hkv=8 "
                              "paged=16 nhd f16 sink residual");
  EXPECT_EQ(spec.validate(), std::nullopt);
  std::string rule = "nhd (token-major) pages need a paged body and "
                     "static-scale schemes for keys and values (add paged=N; "
                     "schemes like e4m3pt)";
  for (const char *bad :
       {"attention k=e4m3pt v=e4m3pt d=128 hq=32 hkv=8 nhd",
        "attention k=e4m3pt v=4t32 d=128 hq=32 hkv=8 paged=16 nhd"}) {
    ASSERT_FALSE(parseKernelSpec(bad, spec)) << bad;
    EXPECT_EQ(spec.validate().value_or(""), rule) << bad;
  }
}

// The cache's decode step: both schemes, head_dim and dtype; it writes
// scales, so bf16 needs fp32 ones for keys and values alike.
TEST(KernelSpec, AppendSpecsRoundTripAndCheckTheirSchemes) {
  KernelSpec spec;
  ASSERT_FALSE(parseKernelSpec("append v=4t32 k=2c32 d=96", spec));
  EXPECT_EQ(spec.kind, KernelKind::Append);
  EXPECT_EQ(spec.canonical(), "append k=2c32 v=4t32 d=96 f16");
  EXPECT_FALSE(spec.isAttention());
  EXPECT_EQ(spec.validate(), std::nullopt);
  KernelSpec again;
  ASSERT_FALSE(parseKernelSpec(spec.canonical(), again));
  EXPECT_EQ(again.canonical(), spec.canonical());
  ASSERT_FALSE(parseKernelSpec("append k=2c32x v=2t32 d=128 bf16", spec));
  EXPECT_EQ(spec.validate().value_or(""),
            "bf16 input needs fp32 scales: an fp16 scale or zero point "
            "overflows to inf once a group's values pass 65504 (add the x "
            "flag: 2t32 -> 2t32x)");
  ASSERT_FALSE(parseKernelSpec("append k=2c32 v=4t48 d=128", spec));
  EXPECT_EQ(spec.validate().value_or(""),
            "value group must be a power of two in [16, 256] or 0 (head_dim), "
            "got 48");
}

// Chunked attention (query rows of their own) is a paged quantized
// attention's variant: it round-trips, and anything else is refused.
TEST(KernelSpec, ChunkedAttentionNeedsAPagedBody) {
  KernelSpec spec;
  ASSERT_FALSE(parseKernelSpec(
      "attention k=2c32 v=2t32 d=128 hq=32 hkv=8 chunked paged=64", spec));
  EXPECT_TRUE(spec.chunked);
  EXPECT_EQ(spec.canonical(), "attention k=2c32 v=2t32 d=128 hq=32 hkv=8 "
                              "paged=64 chunked f16 sink residual");
  EXPECT_EQ(spec.validate(), std::nullopt);
  ASSERT_FALSE(parseKernelSpec(
      "attention k=2c32 v=2t32 d=128 hq=32 hkv=8 chunked", spec));
  EXPECT_EQ(spec.validate().value_or(""),
            "chunked: only the paged quantized attention reads query rows "
            "(add paged=N)");
  EXPECT_EQ(parseKernelSpec("quantize 4t64 d=64 chunked", spec).value_or(""),
            "unknown spec word 'chunked'");
}

TEST(KernelSpec, ParseErrorsNameTheWord) {
  KernelSpec spec;
  EXPECT_EQ(parseKernelSpec("prefill k=2c32", spec).value_or(""),
            "spec must start with quantize, dequantize, attention, "
            "dense-attention or append, got 'prefill'");
  EXPECT_EQ(parseKernelSpec("attention d=12x", spec).value_or(""),
            "bad number in 'd=12x'");
  EXPECT_EQ(parseKernelSpec("attention d=99999999999", spec).value_or(""),
            "bad number in 'd=99999999999'");
  EXPECT_EQ(parseKernelSpec("attention k=2c32 fp8", spec).value_or(""),
            "unknown spec word 'fp8'");
}

TEST(KernelSpec, ValidationNamesTheBadValue) {
  KernelSpec spec;
  spec.key.bits = 5;
  EXPECT_EQ(spec.validate().value_or(""), "key bits must be 2, 4 or 8, got 5");
  spec = KernelSpec();
  spec.value.group = 48;
  EXPECT_EQ(spec.validate().value_or(""),
            "value group must be a power of two in [16, 256] or 0 (head_dim), "
            "got 48");
  spec = KernelSpec();
  spec.queryHeads = 6;
  spec.kvHeads = 4;
  EXPECT_EQ(spec.validate().value_or(""),
            "query heads (6) must be a multiple of kv heads (4)");
  spec = KernelSpec();
  spec.headDim = 80;
  spec.key.group = 64;
  EXPECT_EQ(spec.validate().value_or(""),
            "key group 64 does not divide head_dim 80");
  spec = KernelSpec();
  EXPECT_FALSE(spec.validate());
}

} // namespace

// Quantizing bf16 with fp16 scales would store inf past 65504: refused,
// with the fix named; reading fp16 scales (dequantize, attention) is fine.
TEST(KernelSpec, Bf16QuantizesWithFp32Scales) {
  KernelSpec spec;
  ASSERT_FALSE(parseKernelSpec("quantize 4t64 d=128 bf16", spec));
  std::optional<std::string> problem = spec.validate();
  ASSERT_TRUE(problem);
  EXPECT_EQ(*problem, "bf16 input needs fp32 scales: an fp16 scale or zero "
                      "point overflows to inf once a group's values pass "
                      "65504 (add the x flag: 4t64 -> 4t64x)");
  ASSERT_FALSE(parseKernelSpec("quantize 4t64x d=128 bf16", spec));
  EXPECT_FALSE(spec.validate());
  ASSERT_FALSE(parseKernelSpec("quantize 4t64 d=128", spec)); // fp16 input
  EXPECT_FALSE(spec.validate());
  ASSERT_FALSE(parseKernelSpec("dequantize 4t64 d=128 bf16", spec));
  EXPECT_FALSE(spec.validate());
}

TEST(KernelSpec, PagedAttentionSpecs) {
  KernelSpec spec;
  ASSERT_FALSE(parseKernelSpec(
      "attention k=2c32 v=2t32 d=128 hq=32 hkv=8 paged=64", spec));
  EXPECT_EQ(spec.pageTokens, 64);
  EXPECT_EQ(spec.canonical(),
            "attention k=2c32 v=2t32 d=128 hq=32 hkv=8 paged=64 f16 sink "
            "residual");
  EXPECT_FALSE(spec.validate());
  auto problem = [](const char *text) {
    KernelSpec s;
    EXPECT_FALSE(parseKernelSpec(text, s)) << text;
    return s.validate().value_or("");
  };
  EXPECT_EQ(problem("attention k=2c32 v=2t32 d=128 hq=32 hkv=8 paged=24"),
            "paged=24: page tokens must be a multiple of 16 in [16, 4096]");
  EXPECT_EQ(problem("attention k=2c32 v=2t32 d=128 hq=32 hkv=8 paged=16"),
            "paged=16: page tokens must be a multiple of the channel group "
            "(32)");
  EXPECT_EQ(problem("dense-attention d=128 hq=32 hkv=8 paged=64"),
            "paged=64: only quantized attention reads a paged pool");
}
