//===- PlanTest.cpp - #kvq.plan and its MLIR-free twin --------------------===//
//
// The attribute and kvq::LaunchPlan are one definition in two languages:
// every field survives the round trip through the attribute, and the names
// the manifest stores (kPlanIntegerFields) are the names the IR prints.

#include "kvq/Dialect/KVQ/IR/KVQAttrs.h"
#include "kvq/Registration/Registration.h"

#include "mlir/AsmParser/AsmParser.h"
#include "mlir/IR/MLIRContext.h"

#include <gtest/gtest.h>

using namespace mlir;
using namespace mlir::kvq;

namespace {

class PlanTest : public ::testing::Test {
protected:
  PlanTest() {
    DialectRegistry registry;
    registerKVQDialects(registry);
    context.appendDialectRegistry(registry);
    context.loadAllAvailableDialects();
  }

  /// A plan with every field set to a distinct valid value.
  static ::kvq::LaunchPlan everyField() {
    // In kPlanIntegerFields order: threads, halfVector, tileTokens,
    // minTokensPerSplit, smCount, key/valueVectorWords, scoresPerThread,
    // sharedBytes, attentionPath, queryRows.
    const int64_t values[] = {96, 4, 48, 144, 132, 2, 1, 2, 12345, 2, 4};
    static_assert(std::size(values) == ::kvq::kPlanIntegerFields.size());
    ::kvq::LaunchPlan plan;
    plan.arch = "sm_90";
    for (size_t i = 0; i < std::size(values); ++i)
      plan.*::kvq::kPlanIntegerFields[i].member = values[i];
    return plan;
  }

  static std::string print(Attribute attr) {
    std::string text;
    llvm::raw_string_ostream(text) << attr;
    return text;
  }

  MLIRContext context;
};

TEST_F(PlanTest, EveryFieldRoundTripsThroughTheAttribute) {
  ::kvq::LaunchPlan plan = everyField();
  ::kvq::LaunchPlan back = PlanAttr::get(&context, plan).toLaunchPlan();
  EXPECT_EQ(back.arch, plan.arch);
  for (const ::kvq::LaunchPlanField &field : ::kvq::kPlanIntegerFields)
    EXPECT_EQ(back.*field.member, plan.*field.member) << field.name;
}

TEST_F(PlanTest, ManifestNamesAreTheNamesTheIRPrints) {
  std::string text = print(PlanAttr::get(&context, everyField()));
  ::kvq::LaunchPlan plan = everyField();
  EXPECT_NE(text.find(std::string(::kvq::kPlanArchField) + " = \"sm_90\""),
            std::string::npos)
      << text;
  for (const ::kvq::LaunchPlanField &field : ::kvq::kPlanIntegerFields) {
    std::string entry =
        std::string(field.name) + " = " + std::to_string(plan.*field.member);
    EXPECT_NE(text.find(entry), std::string::npos)
        << "'" << entry << "' not in " << text;
  }
}

TEST_F(PlanTest, NamesAreDistinctAndEveryMemberListedOnce) {
  for (size_t i = 0; i < ::kvq::kPlanIntegerFields.size(); ++i)
    for (size_t j = i + 1; j < ::kvq::kPlanIntegerFields.size(); ++j) {
      EXPECT_STRNE(::kvq::kPlanIntegerFields[i].name,
                   ::kvq::kPlanIntegerFields[j].name);
      EXPECT_NE(::kvq::kPlanIntegerFields[i].member,
                ::kvq::kPlanIntegerFields[j].member);
    }
  // Every integer member of LaunchPlan is in the table: the struct is the
  // arch string plus exactly these.
  EXPECT_EQ(sizeof(::kvq::LaunchPlan),
            sizeof(std::string) +
                ::kvq::kPlanIntegerFields.size() * sizeof(int64_t));
}

TEST_F(PlanTest, UnsetFieldsAreNotPrintedAndParseBack) {
  ::kvq::LaunchPlan partial;
  partial.tileTokens = 16;
  auto attr = PlanAttr::get(&context, partial);
  EXPECT_EQ(print(attr), "#kvq.plan<tileTokens = 16>");
  EXPECT_EQ(parseAttribute(print(attr), &context), attr);
}

TEST_F(PlanTest, VerifierNamesTheBadField) {
  std::string error;
  ScopedDiagnosticHandler handler(&context, [&](Diagnostic &diag) {
    error = diag.str();
    return success();
  });
  EXPECT_FALSE(parseAttribute("#kvq.plan<minTokensPerSplit = 40, "
                              "tileTokens = 32>",
                              &context));
  EXPECT_EQ(error, "plan: minTokensPerSplit must be a multiple of "
                   "tileTokens (32), got 40");
  EXPECT_FALSE(parseAttribute("#kvq.plan<sharedBytes = 50000>", &context));
  EXPECT_EQ(error, "plan: sharedBytes must be in [0, 49152], got 50000");
  EXPECT_FALSE(parseAttribute("#kvq.plan<attentionPath = 3>", &context));
  EXPECT_EQ(error, "plan: attentionPath must be 1 (CUDA cores) or 2 (tensor "
                   "cores), got 3");
}

} // namespace
