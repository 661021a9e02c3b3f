//===- BundleTest.cpp - kernel bundles: round trip and hostile bytes ------===//

#include "ScratchDirectory.h"

#include "kvq/Cache/Bundle.h"
#include "kvq/Cache/CacheKey.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"

#include <gtest/gtest.h>

#include <fstream>

using namespace kvq::cache;

namespace {

Entry sampleEntry(const std::string &spec, const std::string &target) {
  KeyInputs in;
  in.spec = spec;
  in.backend = "cuda";
  in.target = target;
  in.generatorVersion = "0.1.0";
  in.mlirVersion = "22.1.8";
  in.compilerVersion = "nvrtc 13.0";
  Entry e;
  e.info["key_inputs"] = canonicalKeyText(in);
  e.key = computeKey(in);
  e.info["spec"] = spec;
  e.info["kernels"] = "[]";
  e.files["kernels.cubin"] = std::string("\x7f"
                                         "ELF cubin of ") +
                             spec;
  e.files["kernels.ptx"] = "// ptx of " + spec;
  return e;
}

std::string slurp(const std::string &path) {
  auto buffer = llvm::MemoryBuffer::getFile(path, false, false);
  return buffer ? (*buffer)->getBuffer().str() : std::string();
}

class BundleTest : public ::testing::Test {
protected:
  void SetUp() override {
    entries = {sampleEntry("quantize 2c32 d=64 f16", "sm_90"),
               sampleEntry("quantize 2t32 d=64 f16", "sm_80")};
    path = root + "/k.kvqb";
    ASSERT_FALSE(static_cast<bool>(Bundle::write(path, entries)));
    bytes = slurp(path);
  }
  /// Parses `text`; the error's message (empty if it parsed).
  std::string problem(std::string text) {
    llvm::Expected<Bundle> b = Bundle::parse(std::move(text), "test.kvqb");
    return b ? std::string() : llvm::toString(b.takeError());
  }

  kvq::testing::ScratchDirectory scratch{"kvq-bundle-test"};
  const std::string root = scratch.path();
  std::string path, bytes;
  std::vector<Entry> entries;
};

TEST_F(BundleTest, RoundTripsEveryEntryAndFile) {
  llvm::Expected<Bundle> bundle = Bundle::open(path);
  ASSERT_TRUE(static_cast<bool>(bundle)) << llvm::toString(bundle.takeError());
  ASSERT_EQ(bundle->entries().size(), 2u);
  for (const Entry &e : entries) {
    const Entry *found = bundle->find(e.key);
    ASSERT_NE(found, nullptr) << e.info.at("spec");
    EXPECT_EQ(found->files, e.files);
    EXPECT_EQ(found->info, e.info);
  }
  EXPECT_EQ(bundle->find(std::string(64, '0')), nullptr);
}

TEST_F(BundleTest, EverySingleByteFlipIsRefused) {
  // Every byte of the file is covered by a check: the header by its syntax,
  // the manifest by its SHA-256, each file by its own.
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string flipped = bytes;
    flipped[i] ^= 0x01;
    EXPECT_NE(problem(flipped), "") << "byte " << i << " of " << bytes.size();
  }
}

TEST_F(BundleTest, TruncatedOrExtendedIsRefused) {
  for (size_t cut : {size_t(0), size_t(5), bytes.size() / 2, bytes.size() - 1})
    EXPECT_NE(problem(bytes.substr(0, cut)), "") << "cut at " << cut;
  EXPECT_NE(problem(bytes + "x").find("after the last file"),
            std::string::npos);
}

TEST_F(BundleTest, AnEntryCannotPoseAsAnotherSpec) {
  // A consistent bundle (every checksum right) whose entry claims a key that
  // is not the hash of its key inputs, or a spec other than the keyed one.
  Entry forged = entries[0];
  forged.key = entries[1].key;
  EXPECT_TRUE(static_cast<bool>(Bundle::write(root + "/f.kvqb", {forged})))
      << "write must refuse it too";
  Entry other = entries[0];
  other.info["spec"] = "quantize 8t64 d=64 f16";
  ASSERT_FALSE(static_cast<bool>(Bundle::write(root + "/o.kvqb", {other})));
  EXPECT_NE(problem(slurp(root + "/o.kvqb")).find("differs from the spec"),
            std::string::npos);
}

TEST_F(BundleTest, FileNamesArePlain) {
  Entry e = entries[0];
  e.files["../../escape.so"] = "x";
  EXPECT_TRUE(static_cast<bool>(Bundle::write(root + "/n.kvqb", {e})));
  // A hand-made manifest with such a name, checksums right, is refused too.
  std::string good = slurp(path);
  size_t at = good.find("kernels.ptx");
  ASSERT_NE(at, std::string::npos);
  std::string manifestEdit = good;
  manifestEdit.replace(at, 11, "../x.ptx123");
  // Re-seal the header so only the name is wrong.
  size_t headerEnd = manifestEdit.find('\n', manifestEdit.find('\n') + 1);
  size_t length = std::stoull(manifestEdit.substr(13, headerEnd - 13));
  std::string manifest = manifestEdit.substr(headerEnd + 1, length);
  std::string resealed = "kvq-bundle 1\n" + std::to_string(length) + " " +
                         sha256Hex(manifest) + "\n" +
                         manifestEdit.substr(headerEnd + 1);
  EXPECT_NE(problem(resealed).find("bad file name"), std::string::npos)
      << problem(resealed);
}

TEST_F(BundleTest, HugeClaimedSizesAreRefusedBeforeAllocating) {
  std::string header =
      "kvq-bundle 1\n999999999999 " + std::string(64, 'a') + "\n{}";
  EXPECT_NE(problem(header).find("runs past the end"), std::string::npos);
}

TEST_F(BundleTest, AnotherFormatIsNamed) {
  std::string other = bytes;
  other[11] = '7';
  EXPECT_NE(problem(other).find("format '7'"), std::string::npos)
      << problem(other);
  EXPECT_NE(problem("PK\x03\x04 a zip").find("not a kvq kernel bundle"),
            std::string::npos);
}

} // namespace
