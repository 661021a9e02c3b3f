//===- SchemeTest.cpp - #kvq.scheme from C++ ------------------------------===//
//
// The attribute as the runtime and the lowering see it: construction,
// verification messages, derived quantities, and parse/print round trips.

#include "kvq/Dialect/KVQ/IR/KVQAttrs.h"
#include "kvq/Registration/Registration.h"

#include "mlir/AsmParser/AsmParser.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"

#include <gtest/gtest.h>

using namespace mlir;
using namespace mlir::kvq;

namespace {

class SchemeTest : public ::testing::Test {
protected:
  SchemeTest() {
    DialectRegistry registry;
    registerKVQDialects(registry);
    context.appendDialectRegistry(registry);
    context.loadAllAvailableDialects();
  }

  /// Builds a scheme through the verifier; returns null and records the
  /// diagnostic text when it is rejected.
  SchemeAttr make(unsigned bits, unsigned group, Axis axis = Axis::token,
                  Mode mode = Mode::asymmetric, Type scale = {},
                  PackOrder order = PackOrder::linear) {
    if (!scale)
      scale = Float16Type::get(&context);
    lastError.clear();
    ScopedDiagnosticHandler handler(&context, [&](Diagnostic &diag) {
      lastError = diag.str();
      return success();
    });
    return SchemeAttr::getChecked(
        [&]() { return emitError(UnknownLoc::get(&context)); }, &context, bits,
        group, axis, mode, scale, order, CodeFormat::integer,
        ScaleSource::group);
  }

  Attribute parse(StringRef text) {
    lastError.clear();
    ScopedDiagnosticHandler handler(&context, [&](Diagnostic &diag) {
      lastError = diag.str();
      return success();
    });
    return parseAttribute(text, &context);
  }

  MLIRContext context;
  std::string lastError;
};

TEST_F(SchemeTest, AcceptsEveryValidCombination) {
  for (unsigned bits : {2u, 4u, 8u})
    for (unsigned group :
         {16u, 32u, 64u, 128u, 256u, SchemeAttr::kWholeHeadDim})
      for (Axis axis : {Axis::token, Axis::channel})
        for (Mode mode : {Mode::asymmetric, Mode::symmetric})
          EXPECT_TRUE(make(bits, group, axis, mode))
              << bits << " " << group << ": " << lastError;
}

TEST_F(SchemeTest, RejectsBitsWithMessageNamingTheValue) {
  for (unsigned bits : {0u, 1u, 3u, 5u, 16u}) {
    EXPECT_FALSE(make(bits, 32));
    EXPECT_EQ(lastError, "bits must be 2, 4 or 8, got " + std::to_string(bits));
  }
}

TEST_F(SchemeTest, RejectsGroupsOutsidePowersOfTwoIn16To256) {
  for (unsigned group : {8u, 48u, 100u, 512u}) {
    EXPECT_FALSE(make(4, group));
    EXPECT_NE(lastError.find("got " + std::to_string(group)), std::string::npos)
        << lastError;
  }
}

TEST_F(SchemeTest, RejectsScaleTypesOtherThanF16AndF32) {
  EXPECT_TRUE(
      make(4, 64, Axis::token, Mode::asymmetric, Float32Type::get(&context)));
  EXPECT_FALSE(
      make(4, 64, Axis::token, Mode::asymmetric, BFloat16Type::get(&context)));
  EXPECT_EQ(lastError, "scale type must be f16 or f32, got 'bf16'");
}

TEST_F(SchemeTest, DerivedQuantities) {
  SchemeAttr kivi = make(2, 32, Axis::channel);
  ASSERT_TRUE(kivi);
  EXPECT_EQ(kivi.codesPerWord(), 16u);
  EXPECT_EQ(kivi.maxCode(), 3u);
  EXPECT_EQ(kivi.groupSize(128), 32u);
  EXPECT_TRUE(kivi.hasZeroPoints());

  SchemeAttr whole =
      make(8, SchemeAttr::kWholeHeadDim, Axis::token, Mode::symmetric);
  ASSERT_TRUE(whole);
  EXPECT_EQ(whole.groupSize(80), 80u);
  EXPECT_EQ(whole.codesPerWord(), 4u);
  EXPECT_FALSE(whole.hasZeroPoints());
}

TEST_F(SchemeTest, PrintsDefaultsOmittedAndRoundTrips) {
  SchemeAttr scheme = make(4, 64);
  std::string text;
  llvm::raw_string_ostream(text) << Attribute(scheme);
  EXPECT_EQ(text, "#kvq.scheme<bits = 4, group = 64, axis = token>");
  EXPECT_EQ(parse(text), scheme);

  SchemeAttr full =
      make(2, SchemeAttr::kWholeHeadDim, Axis::channel, Mode::symmetric,
           Float32Type::get(&context), PackOrder::interleaved);
  text.clear();
  llvm::raw_string_ostream(text) << Attribute(full);
  EXPECT_EQ(text, "#kvq.scheme<bits = 2, group = head_dim, axis = channel, "
                  "mode = symmetric, scale = f32, order = interleaved>");
  EXPECT_EQ(parse(text), full);
}

TEST_F(SchemeTest, ParsesParametersInAnyOrder) {
  EXPECT_EQ(parse("#kvq.scheme<axis = channel, group = 32, bits = 2>"),
            make(2, 32, Axis::channel));
}

TEST_F(SchemeTest, ParseErrorsNameTheProblem) {
  EXPECT_FALSE(parse("#kvq.scheme<bits = 4, group = 64>"));
  EXPECT_EQ(lastError, "scheme is missing required parameter 'axis'");
  EXPECT_FALSE(parse("#kvq.scheme<bits = 4, group = 64, axis = row>"));
  EXPECT_EQ(lastError, "'axis' must be one of 'token', 'channel', got 'row'");
  EXPECT_FALSE(
      parse("#kvq.scheme<bits = 4, bits = 2, group = 64, axis = token>"));
  EXPECT_EQ(lastError, "scheme parameter 'bits' given twice");
}

} // namespace
