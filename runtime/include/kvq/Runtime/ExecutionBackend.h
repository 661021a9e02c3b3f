//===- ExecutionBackend.h - where kernels run and memory lives --*- C++ -*-===//
//
// One interface for the three backends: cuda (the driver, dlopen'ed), the
// CPU emulator (the generated source on fibers) and the reference (the
// plain C++ semantics, no kernels). The Runtime (Runtime.h) finds or builds
// kernels and hands calls to its backend; it never asks which one it has.
// A new backend implements this interface in its own file and is chosen in
// makeExecutionBackend (ExecutionBackend.cpp).
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_RUNTIME_EXECUTIONBACKEND_H
#define KVQ_RUNTIME_EXECUTIONBACKEND_H

#include "kvq/Calls.h"
#include "kvq/Codegen/KernelSpec.h"
#include "kvq/Runtime/CudaDriver.h"
#include "kvq/Runtime/KernelCompiler.h"
#include "kvq/Runtime/Launch.h"

#include <atomic>

#include "llvm/Support/Error.h"

#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace kvq {

struct CompiledKernels;

/// A compiled translation unit loaded on a backend, ready to launch.
class LoadedKernels {
public:
  virtual ~LoadedKernels() = default;
  virtual llvm::Error launch(const KernelLaunch &launch) = 0;
};

class ExecutionBackend {
public:
  virtual ~ExecutionBackend() = default;

  /// Kernel launches issued so far (cuda and emulator; the reference
  /// backend runs no kernels).
  uint64_t launches() const { return launched.load(); }

  virtual Backend kind() const = 0;

  /// Makes `kernels` runnable from artefacts already verified (or just
  /// built), all from memory: the CUBIN/PTX, or the emulator's shared
  /// object `sharedObject`. Null for a backend that runs no kernels.
  virtual llvm::Expected<std::shared_ptr<LoadedKernels>>
  load(const CompiledKernels &kernels, const std::string &sharedObject) = 0;

  /// The call as this backend runs it: the device's SM count (cuda), host
  /// lengths and no workspace (reference). Workspace sizes are computed on
  /// the completed call, so they match the launch.
  virtual AttentionCall complete(const AttentionCall &call) const {
    return call;
  }

  /// Validated calls. By default: the launches planned from the kernels'
  /// metadata (Launch.h), run on the loaded kernels.
  virtual llvm::Error quantize(const KernelSpec &spec,
                               const CompiledKernels &kernels,
                               const QuantizeCall &call);
  virtual llvm::Error dequantize(const KernelSpec &spec,
                                 const CompiledKernels &kernels,
                                 const DequantizeCall &call);
  virtual llvm::Error attention(const KernelSpec &spec,
                                const CompiledKernels &kernels,
                                const AttentionCall &call);
  virtual llvm::Error append(const KernelSpec &spec,
                             const CompiledKernels &kernels,
                             const AppendCall &call);

  /// Memory for calls: device memory (cuda) or host memory.
  virtual llvm::Expected<void *> allocate(size_t bytes) = 0;
  virtual void release(void *pointer) = 0;
  /// Copies into and within device memory; `stream` (a CUstream; null:
  /// the default stream) orders them on cuda, the CPU backends run them at
  /// once.
  virtual llvm::Error copyIn(void *dst, const void *src, size_t bytes,
                             void *stream = nullptr) = 0;
  virtual llvm::Error copyOut(void *dst, const void *src, size_t bytes) = 0;
  virtual llvm::Error copyOnDevice(void *dst, const void *src, size_t bytes,
                                   void *stream = nullptr) = 0;
  /// `rows` rows of `rowBytes`, `srcPitch` apart, to rows `dstPitch` apart;
  /// the ranges must not overlap. By default one copyOnDevice a row.
  virtual llvm::Error copyRowsOnDevice(void *dst, size_t dstPitch,
                                       const void *src, size_t srcPitch,
                                       size_t rowBytes, size_t rows,
                                       void *stream = nullptr);
  virtual llvm::Error synchronize() { return llvm::Error::success(); }
  /// GPU time between events (cuda), wall time on the CPU backends.
  virtual llvm::Expected<double>
  timeMillis(const std::function<llvm::Error()> &work);
  virtual std::optional<cuda::DeviceInfo> device() const {
    return std::nullopt;
  }

protected:
  /// Runs one planned launch on loaded kernels, counting it.
  llvm::Error launchOn(const CompiledKernels &k, const KernelLaunch &launch);
  /// launchOn, or the planner's error.
  llvm::Error launchPlanned(const CompiledKernels &k,
                            llvm::Expected<KernelLaunch> launch);

private:
  std::atomic<uint64_t> launched{0};
};

/// The backend `requested` resolves to: Auto is cuda when a driver and a
/// device exist, else the emulator. `compileOnly` (warming a cache ahead of
/// time) needs no driver: Auto is then cuda, and cuda loads nothing. Fails
/// (NoDriverError) when cuda is asked for and there is no driver.
llvm::Expected<std::unique_ptr<ExecutionBackend>>
makeExecutionBackend(Backend requested, bool compileOnly, int device = 0);

// The implementations (one file each).
std::unique_ptr<ExecutionBackend> makeCudaBackend(cuda::Driver *driver);
std::unique_ptr<ExecutionBackend> makeEmulatorBackend();
std::unique_ptr<ExecutionBackend> makeReferenceBackend();

} // namespace kvq

#endif // KVQ_RUNTIME_EXECUTIONBACKEND_H
