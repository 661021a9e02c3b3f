//===- SourceTextTest.cpp - the emitted C++ after the emitter -------------===//
//
// The two text steps codegen runs on each emitted kernel: dropping the
// copies of loop-carried variables (CarriedCopies.cpp) only where the
// variable keeps its value while the copy is read, and giving values the
// builder's names (SourceNames.cpp).

#include "CarriedCopies.h"
#include "SourceNames.h"

#include <gtest/gtest.h>

using namespace kvq;

namespace {

TEST(CarriedCopiesTest, CopiesInAndOutOfALoopAreDropped) {
  std::string body = "  float v9;\n"
                     "  v9 = 0.0f;\n"
                     "  for (int32_t i10 = 0; i10 < n; i10 += 1) {\n"
                     "    float v11 = v9;\n"
                     "    float v12 = v11 + 1.0f;\n"
                     "    v9 = v12;\n"
                     "  }\n"
                     "  float v13 = v9;\n"
                     "  out[0] = v13;\n";
  EXPECT_EQ(dropCarriedCopies(body),
            "  float v9;\n"
            "  v9 = 0.0f;\n"
            "  for (int32_t i10 = 0; i10 < n; i10 += 1) {\n"
            "    float v12 = v9 + 1.0f;\n"
            "    v9 = v12;\n"
            "  }\n"
            "  out[0] = v9;\n");
}

TEST(CarriedCopiesTest, ACopyIsKeptWhileTheVariableMayChange) {
  // Assigned before the copy's last use; then assigned later in a loop that
  // brings the use back around (the second iteration must read the old
  // value).
  for (const char *body :
       {"  float v9;\n  v9 = 0.0f;\n  float v11 = v9;\n  v9 = 2.0f;\n"
        "  out[0] = v11;\n",
        "  float v9;\n  v9 = 0.0f;\n  float v11 = v9;\n"
        "  for (int32_t i10 = 0; i10 < n; i10 += 1) {\n"
        "    out[i10] = v11;\n    v9 = 1.0f;\n  }\n"})
    EXPECT_EQ(dropCarriedCopies(body), body);
}

TEST(SourceNamesTest, MarkedDeclarationsAndArgumentsAreRenamed) {
  std::string body = "void k(int32_t* v1, int32_t v2) {\n"
                     "  // kvq-name token\n"
                     "  int32_t v3 = v2 * 2;\n"
                     "  // kvq-name token\n"
                     "  int32_t v4 = v3 + 1;\n"
                     "  // the token is v3, as prose\n"
                     "  v1[v4] = v3;\n"
                     "}";
  EXPECT_EQ(nameValues(body, {"words", "tokens"}),
            "void k(int32_t* words, int32_t tokens) {\n"
            "  int32_t token = tokens * 2;\n"
            "  int32_t token_2 = token + 1;\n"
            "  // the token is v3, as prose\n"
            "  words[token_2] = token;\n"
            "}");
}

TEST(SourceNamesTest, AMarkerBeforeNoDeclarationIsDropped) {
  std::string body = "  // kvq-name lost\n"
                     "  KVQ_STG(0, out, v5, v6);\n";
  EXPECT_EQ(nameValues(body, {}), "  KVQ_STG(0, out, v5, v6);\n");
}

} // namespace
