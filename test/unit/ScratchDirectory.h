//===- ScratchDirectory.h - a temporary directory for one test --*- C++ -*-===//

#ifndef KVQ_TEST_UNIT_SCRATCHDIRECTORY_H
#define KVQ_TEST_UNIT_SCRATCHDIRECTORY_H

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/FileSystem.h"

#include <gtest/gtest.h>

#include <string>

namespace kvq::testing {

/// A fresh directory under the system's temporary directory, removed with
/// everything in it when the object goes: a test fixture's member.
class ScratchDirectory {
public:
  explicit ScratchDirectory(const char *prefix) {
    llvm::SmallString<128> dir;
    std::error_code error = llvm::sys::fs::createUniqueDirectory(prefix, dir);
    EXPECT_FALSE(error) << "cannot create a scratch directory: "
                        << error.message();
    path_ = dir.str().str();
  }
  ~ScratchDirectory() { (void)llvm::sys::fs::remove_directories(path_); }
  ScratchDirectory(const ScratchDirectory &) = delete;
  ScratchDirectory &operator=(const ScratchDirectory &) = delete;

  const std::string &path() const { return path_; }

private:
  std::string path_;
};

} // namespace kvq::testing

#endif // KVQ_TEST_UNIT_SCRATCHDIRECTORY_H
