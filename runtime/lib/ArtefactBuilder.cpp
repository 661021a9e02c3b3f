//===- ArtefactBuilder.cpp - nvrtc, the host compiler, or nothing ---------===//

#include "ArtefactBuilder.h"

#include "kvq/Runtime/Emulator.h"
#include "kvq/Runtime/NVRTC.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"

using namespace kvq;

namespace {

/// cuda: PTX and CUBIN from nvrtc, in process.
class NvrtcArtefacts final : public ArtefactBuilder {
public:
  llvm::Error build(const KernelSpec &spec, const std::string &arch,
                    CompiledArtefacts &out) const override {
    NVRTCOptions nvrtc;
    nvrtc.arch = arch;
    nvrtc.extraOptions = cudaCodegenOptions(spec);
    llvm::Expected<CompiledModule> module = compileCuda(
        out.source.cuda, out.source.kernels.front().name + ".cu", nvrtc);
    if (!module)
      return module.takeError();
    out.ptx = std::move(module->ptx);
    out.cubin = std::move(module->cubin);
    out.ptxasLog = std::move(module->log);
    out.stats = std::move(module->stats);
    return llvm::Error::success();
  }
};

/// emulator: the same CUDA source built by the host compiler into a shared
/// object, kept as bytes (it is loaded from memory, like a CUBIN).
class HostArtefacts final : public ArtefactBuilder {
public:
  llvm::Error build(const KernelSpec &, const std::string &,
                    CompiledArtefacts &out) const override {
    llvm::SmallString<128> work;
    if (std::error_code ec =
            llvm::sys::fs::createUniqueDirectory("kvq-build", work))
      return llvm::createStringError(ec, "cannot create a build folder");
    llvm::Expected<std::string> built =
        emu::buildSharedObject(out.source, work.str().str());
    if (!built) {
      (void)llvm::sys::fs::remove_directories(work);
      return built.takeError();
    }
    auto bytes = llvm::MemoryBuffer::getFile(*built, false, false);
    (void)llvm::sys::fs::remove_directories(work);
    if (!bytes)
      return llvm::createStringError(bytes.getError(),
                                     "cannot read the built " + *built);
    out.sharedObject = (*bytes)->getBuffer().str();
    return llvm::Error::success();
  }
};

/// reference: runs no kernels; the generated source's launch metadata is
/// all it needs.
class MetadataOnly final : public ArtefactBuilder {
public:
  llvm::Error build(const KernelSpec &, const std::string &,
                    CompiledArtefacts &) const override {
    return llvm::Error::success();
  }
};

} // namespace

const ArtefactBuilder &kvq::artefactBuilderFor(Backend backend) {
  static const NvrtcArtefacts nvrtc;
  static const HostArtefacts host;
  static const MetadataOnly none;
  switch (backend) {
  case Backend::Cuda:
    return nvrtc;
  case Backend::Emulator:
    return host;
  case Backend::Auto: // resolved before a compile; nothing to build
  case Backend::Reference:
    return none;
  }
  return none;
}
