//===- ContextRuntimeOnly.cpp - libkvq_runtime's Context never compiles ---===//

#include "ContextCompiler.h"

std::shared_ptr<const kvq::KernelCompiler> kvq::contextCompiler() {
  return nullptr;
}
