//===- LayoutTest.cpp - shapes of codes, words and scales -----------------===//

#include "kvq/Dialect/KVQ/IR/KVQLayout.h"
#include "kvq/Registration/Registration.h"

#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/MLIRContext.h"

#include <gtest/gtest.h>

using namespace mlir;
using namespace mlir::kvq;

namespace {

constexpr int64_t kDyn = ShapedType::kDynamic;

class LayoutTest : public ::testing::Test {
protected:
  LayoutTest() {
    DialectRegistry registry;
    registerKVQDialects(registry);
    context.appendDialectRegistry(registry);
    context.loadAllAvailableDialects();
  }
  SchemeAttr scheme(unsigned bits, unsigned group, Axis axis) {
    return SchemeAttr::get(&context, bits, group, axis, Mode::asymmetric,
                           Float16Type::get(&context), PackOrder::linear,
                           CodeFormat::integer, ScaleSource::group);
  }
  /// Runs verifySchemeFitsShape and returns its message ("" on success).
  std::string fitError(SchemeAttr s, ArrayRef<int64_t> shape) {
    std::string message;
    ScopedDiagnosticHandler handler(&context, [&](Diagnostic &diag) {
      message = diag.str();
      return success();
    });
    (void)verifySchemeFitsShape(
        s, shape, [&]() { return emitError(UnknownLoc::get(&context)); });
    return message;
  }
  MLIRContext context;
};

using Shape = SmallVector<int64_t, 4>;

TEST_F(LayoutTest, TokenAxisPacksAlongChannels) {
  SchemeAttr s = scheme(4, 64, Axis::token);
  EXPECT_EQ(packedShape(s, {2, 8, 100, 128}), (Shape{2, 8, 100, 16}));
  EXPECT_EQ(unpackedShape(s, {2, 8, 100, 16}), (Shape{2, 8, 100, 128}));
  EXPECT_EQ(scalesShape(s, {2, 8, 100, 128}), (Shape{2, 8, 100, 2}));
}

TEST_F(LayoutTest, ChannelAxisPacksAlongTokens) {
  SchemeAttr s = scheme(2, 32, Axis::channel);
  EXPECT_EQ(packedShape(s, {1, 4, 64, 128}), (Shape{1, 4, 4, 128}));
  EXPECT_EQ(unpackedShape(s, {1, 4, 4, 128}), (Shape{1, 4, 64, 128}));
  EXPECT_EQ(scalesShape(s, {1, 4, 64, 128}), (Shape{1, 4, 2, 128}));
}

TEST_F(LayoutTest, DynamicExtentsStayDynamic) {
  SchemeAttr s = scheme(8, 32, Axis::channel);
  EXPECT_EQ(packedShape(s, {kDyn, 4, kDyn, 64}), (Shape{kDyn, 4, kDyn, 64}));
  EXPECT_EQ(scalesShape(s, {kDyn, 4, kDyn, 64}), (Shape{kDyn, 4, kDyn, 64}));
}

TEST_F(LayoutTest, WholeHeadDimGroup) {
  SchemeAttr s = scheme(4, SchemeAttr::kWholeHeadDim, Axis::token);
  EXPECT_EQ(scalesShape(s, {1, 2, 10, 96}), (Shape{1, 2, 10, 1}));
  EXPECT_EQ(fitError(s, {1, 2, 10, 96}), "");
}

TEST_F(LayoutTest, FitErrorsNameTheBadValue) {
  EXPECT_EQ(fitError(scheme(4, 64, Axis::token), {1, 2, 3, 80}),
            "group 64 does not divide head_dim 80");
  EXPECT_EQ(fitError(scheme(2, 32, Axis::channel), {1, 2, 40, 128}),
            "axis = channel needs a whole number of 32-token groups, got 40 "
            "tokens");
  EXPECT_EQ(fitError(scheme(2, SchemeAttr::kWholeHeadDim, Axis::token),
                     {1, 2, 3, 24}),
            "head_dim 24 with 2-bit codes does not fill whole 32-bit words");
  EXPECT_EQ(fitError(scheme(2, 32, Axis::token), {1, 2, 3, kDyn}),
            "head_dim (the last dimension) must be static");
}

TEST_F(LayoutTest, CompatibleShapes) {
  EXPECT_TRUE(isCompatibleShape({1, kDyn, 3}, {1, 2, 3}));
  EXPECT_FALSE(isCompatibleShape({1, 2, 3}, {1, 2, 4}));
  EXPECT_FALSE(isCompatibleShape({1, 2}, {1, 2, 3}));
  EXPECT_EQ(formatShape({2, kDyn, 128}), "2x?x128");
}

} // namespace
