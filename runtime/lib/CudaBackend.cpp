//===- CudaBackend.cpp - kernels on a GPU through the driver --------------===//
//
// CUBIN (PTX fallback) loaded from memory into device 0's primary context,
// device memory, event timing, and the device's SM count for the split
// count of attention. Without a driver (compile-only runtimes warming a
// cache) it loads nothing and has no memory.
//
//===----------------------------------------------------------------------===//

#include "kvq/Runtime/ExecutionBackend.h"
#include "kvq/Runtime/Runtime.h"

using namespace kvq;

namespace {

class CudaKernels final : public LoadedKernels {
public:
  explicit CudaKernels(std::unique_ptr<cuda::LoadedModule> module)
      : module(std::move(module)) {}
  llvm::Error launch(const KernelLaunch &l) override {
    return module->launch(l.kernel, l.grid, l.block, l.args, l.stream);
  }

private:
  std::unique_ptr<cuda::LoadedModule> module;
};

class CudaBackend final : public ExecutionBackend {
public:
  explicit CudaBackend(cuda::Driver *driver) : driver(driver) {}
  Backend kind() const override { return Backend::Cuda; }

  llvm::Expected<std::shared_ptr<LoadedKernels>>
  load(const CompiledKernels &k, const std::string &) override {
    if (!driver)
      return nullptr; // compile-only
    llvm::Expected<std::unique_ptr<cuda::LoadedModule>> module =
        driver->load(k.cubin, k.ptx);
    if (!module)
      return module.takeError();
    return std::make_shared<CudaKernels>(std::move(*module));
  }

  /// The split count follows the GPU the kernels run on.
  AttentionCall complete(const AttentionCall &call) const override {
    AttentionCall c = call;
    if (c.smCount == 0 && driver && driver->device().smCount > 0)
      c.smCount = driver->device().smCount;
    return c;
  }

  llvm::Expected<void *> allocate(size_t bytes) override {
    if (!driver)
      return noDriver();
    return driver->allocate(bytes);
  }
  void release(void *pointer) override {
    if (driver)
      driver->release(pointer);
  }
  llvm::Error copyIn(void *dst, const void *src, size_t bytes,
                     void *stream) override {
    if (!driver)
      return noDriver();
    return driver->copyToDevice(dst, src, bytes, stream);
  }
  llvm::Error copyOut(void *dst, const void *src, size_t bytes) override {
    if (!driver)
      return noDriver();
    if (llvm::Error e = driver->synchronize())
      return e;
    return driver->copyToHost(dst, src, bytes);
  }
  llvm::Error copyOnDevice(void *dst, const void *src, size_t bytes,
                           void *stream) override {
    if (!driver)
      return noDriver();
    return driver->copyOnDevice(dst, src, bytes, stream);
  }
  llvm::Error copyRowsOnDevice(void *dst, size_t dstPitch, const void *src,
                               size_t srcPitch, size_t rowBytes, size_t rows,
                               void *stream) override {
    if (!driver)
      return noDriver();
    return driver->copyRowsOnDevice(dst, dstPitch, src, srcPitch, rowBytes,
                                    rows, stream);
  }
  llvm::Error synchronize() override {
    return driver ? driver->synchronize() : llvm::Error::success();
  }
  llvm::Expected<double>
  timeMillis(const std::function<llvm::Error()> &work) override {
    if (!driver)
      return noDriver();
    return driver->timeMillis(work);
  }
  std::optional<cuda::DeviceInfo> device() const override {
    if (!driver)
      return std::nullopt;
    return driver->device();
  }

private:
  static llvm::Error noDriver() {
    return llvm::make_error<cuda::NoDriverError>(
        "this runtime was created compile-only: it has no CUDA driver, "
        "memory or launches");
  }
  cuda::Driver *driver;
};

} // namespace

std::unique_ptr<ExecutionBackend> kvq::makeCudaBackend(cuda::Driver *driver) {
  return std::make_unique<CudaBackend>(driver);
}
