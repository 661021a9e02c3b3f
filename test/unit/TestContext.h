//===- TestContext.h - a Context for the unit tests -------------*- C++ -*-===//
//
// A Context of one backend whose kernel cache lives in a directory of its
// own, made once per name and process: tests of one binary that share a
// name share their compiled kernels, and no test sees another binary's.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_TEST_UNIT_TESTCONTEXT_H
#define KVQ_TEST_UNIT_TESTCONTEXT_H

#include "kvq/kvq.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FileSystem.h"

#include <gtest/gtest.h>

#include <memory>
#include <mutex>
#include <string>

namespace kvq::testing {

inline std::unique_ptr<Context> makeTestContext(BackendKind backend,
                                                const std::string &name) {
  static std::mutex mutex;
  static llvm::StringMap<std::string> directories;
  std::string dir;
  {
    std::lock_guard<std::mutex> lock(mutex);
    std::string &made = directories[name];
    if (made.empty()) {
      llvm::SmallString<128> path;
      (void)llvm::sys::fs::createUniqueDirectory(name, path);
      made = path.str().str();
    }
    dir = made;
  }
  ContextOptions options;
  options.backend = backend;
  options.cacheDir = dir;
  Status status;
  std::unique_ptr<Context> context = Context::create(options, &status);
  EXPECT_TRUE(context) << status.message();
  return context;
}

/// Every cache preset (kvq/Runtime/Presets.h).
inline constexpr const char *kPresets[] = {"kivi2", "kivi4", "hf_quanto_int4",
                                           "int8", "int4"};

/// The CPU backends a cache test runs on: the generated kernels (emulator)
/// and their C++ description (reference).
inline constexpr BackendKind kCpuBackends[] = {BackendKind::Emulator,
                                               BackendKind::Reference};

/// "<preset> emulator" or "<preset> reference", for SCOPED_TRACE.
inline std::string caseName(const char *preset, BackendKind backend) {
  return std::string(preset) +
         (backend == BackendKind::Emulator ? " emulator" : " reference");
}

} // namespace kvq::testing

#endif // KVQ_TEST_UNIT_TESTCONTEXT_H
