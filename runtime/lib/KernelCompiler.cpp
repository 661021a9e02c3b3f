//===- KernelCompiler.cpp - backends, compile and missing-kernel errors ---===//

#include "kvq/Runtime/KernelCompiler.h"

#include "llvm/Support/raw_ostream.h"

using namespace kvq;

char CompileError::ID = 0;
char MissingKernelError::ID = 0;

void CompileError::log(llvm::raw_ostream &os) const {
  os << description;
  if (!nvrtcLog.empty())
    os << "\nnvrtc log:\n" << nvrtcLog;
}

std::vector<std::string> kvq::cudaCodegenOptions(const KernelSpec &spec) {
  if (spec.kind == KernelKind::Quantize || spec.kind == KernelKind::Dequantize)
    return {"--fmad=false"};
  return {};
}

const char *kvq::buildNvrtcVersion() { return KVQ_NVRTC_BUILD_VERSION; }

const char *kvq::backendName(Backend backend) {
  switch (backend) {
  case Backend::Auto:
    return "auto";
  case Backend::Cuda:
    return "cuda";
  case Backend::Emulator:
    return "emulator";
  case Backend::Reference:
    return "reference";
  }
  return "?";
}

std::optional<Backend> kvq::parseBackend(const std::string &name) {
  for (Backend b :
       {Backend::Auto, Backend::Cuda, Backend::Emulator, Backend::Reference})
    if (name == backendName(b))
      return b;
  return std::nullopt;
}
