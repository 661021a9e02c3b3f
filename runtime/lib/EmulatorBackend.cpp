//===- EmulatorBackend.cpp - the generated source on the CPU --------------===//
//
// Kernels are host shared objects (built by the JIT's host compiler or read
// from a verified cache entry or bundle), loaded from memory and run by the
// emulator (Emulator.h). Memory is checked host memory.
//
//===----------------------------------------------------------------------===//

#include "HostMemoryBackend.h"
#include "kvq/Runtime/Emulator.h"
#include "kvq/Runtime/Runtime.h"

using namespace kvq;

namespace {

class EmulatorKernels final : public LoadedKernels {
public:
  explicit EmulatorKernels(std::unique_ptr<emu::Module> module)
      : module(std::move(module)) {}
  llvm::Error launch(const KernelLaunch &launch) override {
    return module->launch(launch);
  }

private:
  std::unique_ptr<emu::Module> module;
};

class EmulatorBackend final : public HostMemoryBackend {
public:
  EmulatorBackend() : HostMemoryBackend(/*checkRanges=*/true) {}
  Backend kind() const override { return Backend::Emulator; }

  llvm::Expected<std::shared_ptr<LoadedKernels>>
  load(const CompiledKernels &k, const std::string &sharedObject) override {
    llvm::Expected<std::unique_ptr<emu::Module>> module =
        emu::Module::loadImage(sharedObject, k.source.kernels);
    if (!module)
      return module.takeError();
    return std::make_shared<EmulatorKernels>(std::move(*module));
  }
};

} // namespace

std::unique_ptr<ExecutionBackend> kvq::makeEmulatorBackend() {
  return std::make_unique<EmulatorBackend>();
}
