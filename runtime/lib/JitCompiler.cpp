//===- JitCompiler.cpp - the compiler the JIT library adds ----------------===//
//
// KernelSpec -> Generator (MLIR) -> CUDA C++ -> the backend's artefacts
// (ArtefactBuilder.h: nvrtc for cuda, the host compiler for the emulator).
// Runtime-only builds do not link this file.
//
//===----------------------------------------------------------------------===//

#include "kvq/Runtime/Jit.h"

#include "ArtefactBuilder.h"

#include "kvq/Codegen/Generator.h"
#include "kvq/Runtime/NVRTC.h"
#include "kvq/Support/FileIO.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

#include <atomic>
#include <chrono>
#include <cstdlib>

using namespace kvq;

namespace {

/// KVQ_DUMP_DIR: every stage of each compiled kernel, for users who want to
/// read what was generated.
void dumpStages(const KernelSpec &spec, const std::string &arch,
                const CompiledArtefacts &compiled) {
  const GeneratedSource &source = compiled.source;
  const char *dir = std::getenv("KVQ_DUMP_DIR");
  if (!dir || !*dir || source.kernels.empty())
    return;
  std::string folder = std::string(dir) + "/" + source.kernels.front().name;
  if (llvm::sys::fs::create_directories(folder))
    return;
  // A dump that cannot be written (disk full, no permission) is skipped
  // with one warning per process: it never stops the compile.
  static std::atomic<bool> warned{false};
  auto write = [&](const std::string &name, const std::string &text) {
    if (llvm::Error e = writeWholeFile(folder + "/" + name, text)) {
      std::string message = llvm::toString(std::move(e));
      if (!warned.exchange(true))
        llvm::errs() << "kvq: KVQ_DUMP_DIR: " << message
                     << " (further dump errors are not reported)\n";
    }
  };
  const char *names[][2] = {{"kvq", "1-kvq.mlir"},
                            {"planned", "2-planned.mlir"},
                            {"gpu", "3-gpu.mlir"},
                            {"emitc", "4-emitc.mlir"},
                            {"cuda", "5-kernels.cu"}};
  for (const auto &[stage, text] : source.stages)
    for (const auto &n : names)
      if (stage == n[0])
        write(n[1], text);
  if (!compiled.ptx.empty())
    write("6-kernels.ptx", compiled.ptx);
  if (!compiled.cubin.empty()) // for `cuobjdump -sass 8-kernels.cubin`
    write("8-kernels.cubin", compiled.cubin);
  std::string ptxas;
  for (const auto &[name, s] : compiled.stats)
    ptxas += name + ": registers=" + std::to_string(s.registers) +
             " spill_stores=" + std::to_string(s.spillStoreBytes) +
             " spill_loads=" + std::to_string(s.spillLoadBytes) +
             " smem=" + std::to_string(s.sharedBytes) + "\n";
  if (!ptxas.empty())
    write("7-ptxas.txt", ptxas);
  write("spec.txt", spec.canonical() + "\narch " + arch + "\n");
}

class JitCompiler final : public KernelCompiler {
public:
  std::string nvrtcVersion() const override { return nvrtcVersionString(); }

  llvm::Expected<CompiledArtefacts>
  compile(const KernelSpec &spec, Backend backend,
          const std::string &arch) const override {
    CompiledArtefacts out;
    Generator generator; // one MLIRContext per call: compiles may run
                         // concurrently on several threads
    GeneratorOptions options;
    options.arch = arch;
    options.keepStages = std::getenv("KVQ_DUMP_DIR") != nullptr;
    llvm::Expected<GeneratedSource> source = generator.generate(spec, options);
    if (!source)
      return source.takeError();
    out.source = std::move(*source);
    auto start = std::chrono::steady_clock::now();
    if (llvm::Error e = artefactBuilderFor(backend).build(spec, arch, out))
      return std::move(e);
    out.compileMillis = std::chrono::duration<double, std::milli>(
                            std::chrono::steady_clock::now() - start)
                            .count();
    dumpStages(spec, arch, out);
    return out;
  }
};

} // namespace

std::shared_ptr<const KernelCompiler> kvq::jit::compiler() {
  static const std::shared_ptr<const KernelCompiler> instance =
      std::make_shared<JitCompiler>();
  return instance;
}

RuntimeOptions kvq::jit::options(RuntimeOptions options) {
  options.compiler = compiler();
  return options;
}
