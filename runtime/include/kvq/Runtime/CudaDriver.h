//===- CudaDriver.h - the CUDA driver, loaded at first use ------*- C++ -*-===//
//
// libcuda.so.1 is dlopen'ed on first use, never linked: without a driver the
// library still compiles and caches kernels (ahead-of-time warm-up works on
// machines without a GPU), and GPU calls fail with a NoDriverError.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_RUNTIME_CUDADRIVER_H
#define KVQ_RUNTIME_CUDADRIVER_H

#include "kvq/Support/MessageError.h"
#include "llvm/Support/Error.h"

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace kvq::cuda {

/// No usable CUDA driver or device on this machine.
class NoDriverError : public MessageError<NoDriverError> {
public:
  static char ID;
  using MessageError::MessageError;
};

struct DeviceInfo {
  std::string name;
  int ordinal = 0;           ///< the driver's device number
  int computeCapability = 0; ///< 90 for sm_90
  int smCount = 0;
  /// Peak DRAM bandwidth from the memory clock and bus width (bytes/s).
  double peakBandwidth = 0;
  int l2Bytes = 0;
  uint64_t memoryBytes = 0;
};

/// A loaded module (CUBIN, or PTX that the driver JIT-compiles).
class LoadedModule {
public:
  virtual ~LoadedModule() = default;
  /// Queues the launch on `stream` (a CUstream; null: the default stream).
  virtual llvm::Error launch(const std::string &kernel,
                             std::array<unsigned, 3> grid,
                             std::array<unsigned, 3> block,
                             const std::vector<void *> &args, void *stream) = 0;
};

/// A CUDA graph captured from a stream and instantiated.
class CapturedGraph {
public:
  virtual ~CapturedGraph() = default;
  /// Replays every captured launch on `stream`.
  virtual llvm::Error launch(void *stream) = 0;
};

class Driver {
public:
  /// The driver of device `ordinal` (its primary context), loading the
  /// library on first use. `library` overrides the file name (tests);
  /// otherwise $KVQ_CUDA_DRIVER, else libcuda.so.1. A device the driver
  /// does not have is a NoDriverError naming it and the count.
  static llvm::Expected<Driver *> get(int ordinal = 0,
                                      const std::string &library = "");

  const DeviceInfo &device() const { return info; }

  llvm::Expected<std::unique_ptr<LoadedModule>> load(const std::string &cubin,
                                                     const std::string &ptx);
  llvm::Expected<void *> allocate(size_t bytes);
  void release(void *pointer);
  /// Host to device; with a stream, queued on it (stream-ordered).
  llvm::Error copyToDevice(void *dst, const void *src, size_t bytes,
                           void *stream = nullptr);
  llvm::Error copyToHost(void *dst, const void *src, size_t bytes);
  /// Device to device; overlapping ranges are copied as memmove would. With
  /// a stream, queued on it.
  llvm::Error copyOnDevice(void *dst, const void *src, size_t bytes,
                           void *stream = nullptr);
  /// `rows` rows of `rowBytes`, `srcPitch` apart, to rows `dstPitch` apart
  /// (one driver call; the ranges must not overlap).
  llvm::Error copyRowsOnDevice(void *dst, size_t dstPitch, const void *src,
                               size_t srcPitch, size_t rowBytes, size_t rows,
                               void *stream = nullptr);
  llvm::Error synchronize();
  /// A new stream (a CUstream; blocking with respect to the default stream).
  llvm::Expected<void *> createStream();
  void destroyStream(void *stream);
  llvm::Error synchronize(void *stream);
  /// Captures what `work` queues on `stream` into a CUDA graph (nothing
  /// runs) and instantiates it. The capture is global: if `work` (or any
  /// thread meanwhile) synchronizes, allocates or copies synchronously,
  /// the capture fails, so a graph back means `work` did none of that.
  llvm::Expected<std::unique_ptr<CapturedGraph>>
  capture(void *stream, const std::function<llvm::Error()> &work);
  /// Milliseconds of GPU time between two events recorded around `work`
  /// on the default stream (waits for it).
  llvm::Expected<double> timeMillis(const std::function<llvm::Error()> &work);

  struct Api;

private:
  Driver() = default;
  /// Every call first makes this device's context current in the calling
  /// thread, so Drivers of several devices can be used from one thread.
  void makeCurrent() const;
  std::shared_ptr<Api> api;
  void *context = nullptr; ///< CUcontext: the device's primary context
  DeviceInfo info;
};

} // namespace kvq::cuda

#endif // KVQ_RUNTIME_CUDADRIVER_H
