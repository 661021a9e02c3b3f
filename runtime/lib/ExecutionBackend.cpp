//===- ExecutionBackend.cpp - defaults, host memory, choosing one ---------===//

#include "kvq/Runtime/ExecutionBackend.h"

#include "HostMemoryBackend.h"
#include "RuntimeLog.h"
#include "kvq/Runtime/Emulator.h"
#include "kvq/Runtime/Runtime.h"

#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <cstring>
#include <sstream>

using namespace kvq;

//===----------------------------------------------------------------------===//
// Planned launches on loaded kernels (cuda and emulator)
//===----------------------------------------------------------------------===//

llvm::Error ExecutionBackend::launchOn(const CompiledKernels &k,
                                       const KernelLaunch &launch) {
  if (!k.executable)
    return llvm::createStringError(
        llvm::inconvertibleErrorCode(),
        "kernels of '" + k.spec.canonical() +
            "' are not loaded (the runtime was created compile-only)");
  ++launched;
  return k.executable->launch(launch);
}

llvm::Error
ExecutionBackend::launchPlanned(const CompiledKernels &k,
                                llvm::Expected<KernelLaunch> launch) {
  if (!launch)
    return launch.takeError();
  return launchOn(k, *launch);
}

llvm::Error ExecutionBackend::quantize(const KernelSpec &spec,
                                       const CompiledKernels &k,
                                       const QuantizeCall &call) {
  return launchPlanned(k, planQuantize(spec, k.source, call));
}

llvm::Error ExecutionBackend::dequantize(const KernelSpec &spec,
                                         const CompiledKernels &k,
                                         const DequantizeCall &call) {
  return launchPlanned(k, planDequantize(spec, k.source, call));
}

llvm::Error ExecutionBackend::append(const KernelSpec &spec,
                                     const CompiledKernels &k,
                                     const AppendCall &call) {
  return launchPlanned(k, planAppend(spec, k.source, call));
}

llvm::Error ExecutionBackend::attention(const KernelSpec &spec,
                                        const CompiledKernels &k,
                                        const AttentionCall &call) {
  llvm::Expected<std::vector<KernelLaunch>> launches =
      planAttention(spec, k.source, complete(call));
  if (!launches)
    return launches.takeError();
  for (const KernelLaunch &launch : *launches)
    if (llvm::Error e = launchOn(k, launch))
      return e;
  return llvm::Error::success();
}

llvm::Expected<double>
ExecutionBackend::timeMillis(const std::function<llvm::Error()> &work) {
  auto start = std::chrono::steady_clock::now();
  if (llvm::Error e = work())
    return std::move(e);
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now() - start)
      .count();
}

//===----------------------------------------------------------------------===//
// Host memory (emulator, reference)
//===----------------------------------------------------------------------===//

llvm::Expected<void *> HostMemoryBackend::allocate(size_t bytes) {
  void *p = emu::deviceAlloc(bytes);
  if (!p)
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "cannot allocate " + std::to_string(bytes) +
                                       " bytes of host memory");
  return p;
}

void HostMemoryBackend::release(void *pointer) {
  if (!emu::deviceFree(pointer))
    llvm::errs() << "kvq: release of " << pointer
                 << ", which is not a live allocation (freed twice, or not "
                    "from allocate); ignored\n";
}

llvm::Error HostMemoryBackend::check(const char *what, const void *p,
                                     size_t bytes) const {
  if (!checkRanges || bytes == 0 || emu::isDeviceRange(p, bytes))
    return llvm::Error::success();
  std::ostringstream os;
  os << what << ": [" << p << ", +" << bytes
     << ") is not inside one allocation of this runtime";
  return llvm::make_error<LaunchError>(os.str());
}

llvm::Error HostMemoryBackend::copyIn(void *dst, const void *src, size_t bytes,
                                      void * /*stream: runs at once*/) {
  if (llvm::Error e = check("copyIn destination", dst, bytes))
    return e;
  std::memcpy(dst, src, bytes);
  return llvm::Error::success();
}

llvm::Error HostMemoryBackend::copyOut(void *dst, const void *src,
                                       size_t bytes) {
  if (llvm::Error e = check("copyOut source", src, bytes))
    return e;
  std::memcpy(dst, src, bytes);
  return llvm::Error::success();
}

llvm::Error HostMemoryBackend::copyOnDevice(void *dst, const void *src,
                                            size_t bytes,
                                            void * /*stream: runs at once*/) {
  if (llvm::Error e = check("copyOnDevice source", src, bytes))
    return e;
  if (llvm::Error e = check("copyOnDevice destination", dst, bytes))
    return e;
  std::memmove(dst, src, bytes);
  return llvm::Error::success();
}

llvm::Error ExecutionBackend::copyRowsOnDevice(void *dst, size_t dstPitch,
                                               const void *src, size_t srcPitch,
                                               size_t rowBytes, size_t rows,
                                               void *stream) {
  for (size_t r = 0; r < rows; ++r)
    if (llvm::Error e = copyOnDevice(
            static_cast<char *>(dst) + r * dstPitch,
            static_cast<const char *>(src) + r * srcPitch, rowBytes, stream))
      return e;
  return llvm::Error::success();
}

//===----------------------------------------------------------------------===//
// Choosing one
//===----------------------------------------------------------------------===//

llvm::Expected<std::unique_ptr<ExecutionBackend>>
kvq::makeExecutionBackend(Backend requested, bool compileOnly, int device) {
  switch (requested) {
  case Backend::Emulator:
    return makeEmulatorBackend();
  case Backend::Reference:
    return makeReferenceBackend();
  case Backend::Cuda:
  case Backend::Auto:
    break;
  }
  if (compileOnly) // warming a cache: no driver needed, nothing is loaded
    return makeCudaBackend(nullptr);
  llvm::Expected<cuda::Driver *> driver = cuda::Driver::get(device);
  if (driver)
    return makeCudaBackend(*driver);
  if (requested == Backend::Cuda)
    return driver.takeError();
  logLine(llvm::toString(driver.takeError()) + "; using the emulator");
  return makeEmulatorBackend();
}
