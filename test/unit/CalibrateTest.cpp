//===- CalibrateTest.cpp - static scales from sample keys and values ------===//
//
// Min-max scales by hand, per tensor and per head; the MSE grid never worse
// than min-max and better where an outlier stretches the range; the round
// trip of each format; bad samples and options as errors naming the value.
//
//===----------------------------------------------------------------------===//

#include "kvq/Calibrate.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

using namespace kvq;

namespace {

StaticFormat fp8(StaticFormat::Kind kind) {
  StaticFormat f;
  f.kind = kind;
  return f;
}

StaticFormat integer(int bits, bool symmetric) {
  StaticFormat f;
  f.kind = StaticFormat::Kind::Integer;
  f.bits = bits;
  f.symmetric = symmetric;
  return f;
}

std::vector<StaticScale> calibrate(const std::vector<float> &samples, int heads,
                                   int headDim,
                                   const CalibrationOptions &options) {
  size_t tokens = samples.size() / size_t(heads * headDim);
  std::vector<StaticScale> scales;
  Status status =
      calibrateScales(samples.data(), tokens, heads, headDim, options, &scales);
  EXPECT_TRUE(status.ok()) << status.message();
  return scales;
}

std::string errorOf(const std::vector<float> &samples, int heads, int headDim,
                    const CalibrationOptions &options) {
  size_t tokens = samples.size() / size_t(std::max(1, heads * headDim));
  std::vector<StaticScale> scales = {StaticScale()};
  Status status =
      calibrateScales(samples.data(), tokens, heads, headDim, options, &scales);
  EXPECT_FALSE(status.ok()) << "no error";
  EXPECT_EQ(status.code(), StatusCode::InvalidArgument);
  EXPECT_EQ(scales.size(), 1u) << "an error left the output as it was";
  return status.message();
}

// Two tokens, two heads of two channels: head 0 spans [-2, 1], head 1
// [-0.25, 0.5].
const std::vector<float> kTwoHeads = {-2.0f, 1.0f,  0.5f,  -0.25f,
                                      0.5f,  -1.0f, 0.25f, 0.125f};

TEST(Calibrate, MinMaxScalesByHand) {
  CalibrationOptions o;
  o.format = fp8(StaticFormat::Kind::E4M3);
  std::vector<StaticScale> s = calibrate(kTwoHeads, 2, 2, o);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_FLOAT_EQ(s[0].scale, 2.0f / 448); // the largest magnitude, 2
  o.format = fp8(StaticFormat::Kind::E5M2);
  EXPECT_FLOAT_EQ(calibrate(kTwoHeads, 2, 2, o)[0].scale, 2.0f / 57344);
  o.format = integer(8, true);
  EXPECT_FLOAT_EQ(calibrate(kTwoHeads, 2, 2, o)[0].scale, 2.0f / 127);
  o.format = integer(4, false); // [-2, 1] over codes 0..15
  s = calibrate(kTwoHeads, 2, 2, o);
  EXPECT_FLOAT_EQ(s[0].scale, 3.0f / 15);
  EXPECT_FLOAT_EQ(s[0].zero, -2.0f);
  // Per head: each head's own range.
  o.granularity = ScaleGranularity::Head;
  s = calibrate(kTwoHeads, 2, 2, o);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_FLOAT_EQ(s[0].scale, 3.0f / 15);
  EXPECT_FLOAT_EQ(s[0].zero, -2.0f);
  EXPECT_FLOAT_EQ(s[1].scale, 0.75f / 15);
  EXPECT_FLOAT_EQ(s[1].zero, -0.25f);
  // The asymmetric int4 round trip of head 1's samples is exact: every
  // value is a multiple of 0.05 from -0.25... except 0.125 and 0.5.
  EXPECT_FLOAT_EQ(roundTrip(-0.25f, s[1], o.format), -0.25f);
  EXPECT_FLOAT_EQ(roundTrip(0.5f, s[1], o.format), 0.5f);
}

TEST(Calibrate, RoundTripsFollowEachFormat) {
  StaticScale s;
  s.scale = 0.5f;
  // E4M3 of x / 0.5: 3.3 / 0.5 = 6.6 -> 6.5 (step 0.5 in [4, 8)).
  EXPECT_FLOAT_EQ(roundTrip(3.3f, s, fp8(StaticFormat::Kind::E4M3)), 3.25f);
  // Saturation: 1000 / 0.5 = 2000 -> 448.
  EXPECT_FLOAT_EQ(roundTrip(1000.0f, s, fp8(StaticFormat::Kind::E4M3)), 224.0f);
  // int4 symmetric: codes -7..7.
  EXPECT_FLOAT_EQ(roundTrip(-9.0f, s, integer(4, true)), -3.5f);
  EXPECT_FLOAT_EQ(roundTrip(1.3f, s, integer(4, true)), 1.5f);
}

// Gaussian samples (256 a head: the largest near 3 sigma), and one far
// outlier in head 1: the grid search is never worse than min-max, and at 4
// bits clipping the Gaussian tails pays (head 0).
TEST(Calibrate, MseGridIsNeverWorseAndClipsGaussianTails) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> samples(4 * 2 * 64);
  for (float &x : samples)
    x = normal(rng);
  samples[64 + 17] = 40.0f; // token 0, head 1
  CalibrationOptions minmax;
  minmax.granularity = ScaleGranularity::Head;
  for (StaticFormat f :
       {integer(4, true), integer(4, false), integer(8, true),
        fp8(StaticFormat::Kind::E4M3), fp8(StaticFormat::Kind::E5M2)}) {
    SCOPED_TRACE(f.name());
    minmax.format = f;
    CalibrationOptions mse = minmax;
    mse.method = CalibrationMethod::MseGrid;
    std::vector<StaticScale> a = calibrate(samples, 2, 64, minmax);
    std::vector<StaticScale> b = calibrate(samples, 2, 64, mse);
    ASSERT_EQ(a.size(), 2u);
    ASSERT_EQ(b.size(), 2u);
    for (int h = 0; h < 2; ++h)
      EXPECT_LE(b[h].relativeError, a[h].relativeError) << "head " << h;
    if (f.kind == StaticFormat::Kind::Integer && f.bits == 4) {
      EXPECT_LT(b[0].relativeError, 0.95 * a[0].relativeError);
      EXPECT_LT(b[0].scale, a[0].scale);
    }
    std::printf("  %s: head 0 error %.4f (min-max) -> %.4f (MSE grid)\n",
                f.name().c_str(), a[0].relativeError, b[0].relativeError);
  }
}

TEST(Calibrate, AllZeroSamplesKeepScaleOne) {
  CalibrationOptions o;
  std::vector<StaticScale> s =
      calibrate(std::vector<float>(32, 0.0f), 2, 16, o);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].scale, 1.0f);
  EXPECT_EQ(s[0].relativeError, 0.0);
}

TEST(Calibrate, BadSamplesAndOptionsAreErrorsNamingTheValue) {
  CalibrationOptions o;
  std::vector<float> samples = kTwoHeads;
  samples[5] = NAN;
  EXPECT_NE(errorOf(samples, 2, 2, o).find("sample 5 (token 1, head 0)"),
            std::string::npos)
      << errorOf(samples, 2, 2, o);
  EXPECT_NE(errorOf(kTwoHeads, 0, 2, o).find("got 0 and 2"), std::string::npos);
  EXPECT_NE(errorOf({}, 2, 2, o).find("0 tokens"), std::string::npos);
  o.format = integer(9, true);
  EXPECT_NE(errorOf(kTwoHeads, 2, 2, o).find("2 to 8, got 9"),
            std::string::npos);
  o.format = fp8(StaticFormat::Kind::E4M3);
  o.format.symmetric = false;
  EXPECT_NE(errorOf(kTwoHeads, 2, 2, o).find("e4m3"), std::string::npos);
  o.format.symmetric = true;
  o.method = CalibrationMethod::MseGrid;
  o.gridPoints = 0;
  EXPECT_NE(errorOf(kTwoHeads, 2, 2, o).find("got 0"), std::string::npos);
  o.gridPoints = 10;
  o.minClip = 1.5f;
  EXPECT_NE(errorOf(kTwoHeads, 2, 2, o).find("(0, 1], got 1.5"),
            std::string::npos);
}

} // namespace

namespace {

TEST(Calibrate, FormatNamesParse) {
  std::optional<StaticFormat> f = StaticFormat::parse("int4");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->kind, StaticFormat::Kind::Integer);
  EXPECT_EQ(f->bits, 4);
  ASSERT_TRUE(StaticFormat::parse("e5m2"));
  EXPECT_EQ(StaticFormat::parse("e5m2")->kind, StaticFormat::Kind::E5M2);
  EXPECT_EQ(StaticFormat::parse("int9")->bits, 9); // calibrateScales refuses
  for (const char *bad : {"int", "int4x", "int123", "fp4", "E4M3", ""})
    EXPECT_FALSE(StaticFormat::parse(bad)) << bad;
}

} // namespace

namespace {
// A static scheme calibrates with its own format, bits, mode and
// granularity (what kvq-eval and kvq-run's workload ask for).
TEST(Calibrate, OptionsForAStaticScheme) {
  using S = QuantScheme;
  CalibrationOptions fp8 =
      calibrationFor(S::staticScheme(8, S::Scales::Head, true, S::Format::E5M2),
                     CalibrationMethod::MseGrid);
  EXPECT_EQ(fp8.format.name(), "e5m2");
  EXPECT_EQ(fp8.granularity, ScaleGranularity::Head);
  EXPECT_EQ(fp8.method, CalibrationMethod::MseGrid);
  CalibrationOptions int4 =
      calibrationFor(S::staticScheme(4, S::Scales::Tensor, false));
  EXPECT_EQ(int4.format.name(), "int4a");
  EXPECT_EQ(int4.granularity, ScaleGranularity::Tensor);
  EXPECT_EQ(int4.method, CalibrationMethod::MinMax);
}
} // namespace
