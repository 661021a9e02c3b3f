//===- ContextJit.cpp - libkvq's Context compiles what it cannot find -----===//

#include "ContextCompiler.h"
#include "kvq/Runtime/Jit.h"

std::shared_ptr<const kvq::KernelCompiler> kvq::contextCompiler() {
  return jit::compiler();
}
