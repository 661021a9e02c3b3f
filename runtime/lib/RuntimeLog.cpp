//===- RuntimeLog.cpp - KVQ_LOG=1 messages --------------------------------===//

#include "RuntimeLog.h"

#include "llvm/Support/raw_ostream.h"

#include <cstdlib>
#include <cstring>

void kvq::logLine(const std::string &message) {
  const char *value = std::getenv("KVQ_LOG");
  if (value && *value && std::strcmp(value, "0") != 0)
    llvm::errs() << "kvq: " << message << "\n";
}
