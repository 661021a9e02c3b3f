//===- KernelKey.cpp - the cache key of a spec on a backend ---------------===//

#include "kvq/Runtime/KernelKey.h"

#include "kvq/Cache/Bundle.h"
#include "kvq/Codegen/GeneratedSource.h"
#include "kvq/Runtime/CodegenFingerprint.h"
#include "kvq/Runtime/Emulator.h"

#include "llvm/Config/llvm-config.h"

#include <cstdlib>

using namespace kvq;

cache::KeyInputs kvq::kernelKeyInputs(const KernelSpec &spec, Backend backend,
                                      const std::string &arch,
                                      const std::string &nvrtcVersion) {
  cache::KeyInputs in;
  in.spec = spec.canonical();
  in.backend =
      backendName(backend == Backend::Reference ? Backend::Cuda : backend);
  // The version names the release; the fingerprint, the exact generator
  // sources it was built from (runtime/CMakeLists.txt).
  in.generatorVersion = std::string(kVersion) + "+" + KVQ_CODEGEN_FINGERPRINT;
  in.mlirVersion = LLVM_VERSION_STRING;
  if (backend == Backend::Emulator) {
    in.target = "host";
    in.compilerVersion = emu::hostCompilerIdentity();
  } else {
    in.target = arch;
    in.compilerVersion = "nvrtc " + nvrtcVersion;
    in.options = "-std=c++17";
    for (const std::string &option : cudaCodegenOptions(spec))
      in.options += " " + option;
  }
  if (const char *include = std::getenv("KVQ_CUDA_INCLUDE"))
    in.environment["KVQ_CUDA_INCLUDE"] = include;
  return in;
}

std::string kvq::entryMismatch(const std::string &keyText) {
  std::map<std::string, std::string> fields = cache::parseKeyText(keyText);
  KernelSpec spec;
  if (std::optional<std::string> error = parseKernelSpec(fields["spec"], spec))
    return "its spec '" + fields["spec"] + "' is not one this kvq reads (" +
           *error + ")";
  std::optional<Backend> backend = parseBackend(fields["backend"]);
  if (!backend || (*backend != Backend::Cuda && *backend != Backend::Emulator))
    return "unknown backend '" + fields["backend"] + "'";
  std::map<std::string, std::string> ours =
      cache::parseKeyText(cache::canonicalKeyText(
          kernelKeyInputs(spec, *backend, fields["target"])));
  static const std::pair<const char *, const char *> named[] = {
      {"format", "cache format"},
      {"generator", "kvq version"},
      {"compiler", "compiler"},
      {"mlir", "LLVM/MLIR version"},
      {"options", "compile options"}};
  for (const auto &[field, what] : named)
    if (fields[field] != ours[field])
      return std::string("it was built by ") + what + " '" + fields[field] +
             "'; this kvq uses '" + ours[field] + "'";
  if (fields != ours)
    return "its key inputs differ from this kvq's (environment: "
           "KVQ_CUDA_INCLUDE)";
  return "";
}
