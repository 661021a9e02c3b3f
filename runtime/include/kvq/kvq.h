//===- kvq.h - the kvq public C++ API ---------------------------*- C++ -*-===//
//
// Describe the kernel you need (a KernelSpec), and kvq generates, compiles
// and caches the kernel specialized for exactly that configuration, then
// launches it on device pointers:
//
//   kvq::Status status;
//   auto context = kvq::Context::create({}, &status);     // auto backend
//   kvq::KernelSpec spec;
//   kvq::parseKernelSpec("attention k=2c32 v=2t32 d=128 hq=32 hkv=8", spec);
//   status = context->attention(spec, call);               // AttentionCall
//
// Backends: cuda (the CUDA driver, loaded at run time), emulator (the same
// generated CUDA run on the CPU), reference (plain C++), auto (cuda if a
// driver and device exist, else the emulator). Every failure a caller can
// cause comes back as a Status with a code and a message naming the bad
// value; nothing aborts. This header and the two it includes use no LLVM,
// MLIR or CUDA types.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_KVQ_H
#define KVQ_KVQ_H

#include "kvq/BufferSizes.h"
#include "kvq/Calls.h"
#include "kvq/Codegen/KernelSpec.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace kvq {

enum class StatusCode {
  Ok,
  InvalidSpec,      ///< the KernelSpec itself is not valid
  InvalidArgument,  ///< a call's pointers, sizes or lengths are wrong
  NoDevice,         ///< cuda asked for, but no driver or device
  CompileFailed,    ///< kernel generation or compilation failed
  RuntimeFailed,    ///< a launch or a copy failed
  MissingKernel,    ///< runtime-only library: the kernel is in no cache or
                    ///< bundle (the message names the kvq-cache command)
  BadBundle,        ///< the kernel bundle cannot be read or fails its checks
  ResourceExhausted ///< a fixed pool (the paged cache's pages) is full
};

class Status {
public:
  Status() = default;
  Status(StatusCode code, std::string message)
      : code_(code), message_(std::move(message)) {}
  bool ok() const { return code_ == StatusCode::Ok; }
  StatusCode code() const { return code_; }
  const std::string &message() const { return message_; }

private:
  StatusCode code_ = StatusCode::Ok;
  std::string message_;
};

enum class BackendKind { Auto, Cuda, Emulator, Reference };

struct ContextOptions {
  BackendKind backend = BackendKind::Auto;
  std::string arch; ///< "" = the device's (sm_90 without a device)
  std::string
      cacheDir; ///< "" = $KVQ_CACHE_DIR, $XDG_CACHE_HOME/kvq, ~/.cache/kvq
  bool diskCache = true;
  /// A kernel bundle (`kvq-cache export`) to serve kernels from; "" =
  /// $KVQ_BUNDLE, if set.
  std::string bundle;
  /// The CUDA device (driver ordinal) of the cuda backend. One Context per
  /// device; Contexts of several devices work side by side. A device the
  /// driver does not have fails creation (auto: falls back to the emulator).
  int device = 0;
};

/// Where kernels came from, and how many launches ran them.
struct CacheStatistics {
  uint64_t compiled = 0, diskHits = 0, bundleHits = 0, memoryHits = 0,
           remoteHits = 0;
  /// Kernel launches issued (cuda and emulator; the reference backend runs
  /// no kernels).
  uint64_t launches = 0;
};

/// A Context is thread-safe: any number of threads may prepare kernels and
/// issue calls (a new spec compiles once, whoever asks first). Calls run
/// synchronously on the CPU backends and in issue order on the GPU.
class Context {
public:
  /// Null (and `status` set) if the requested backend is not available or
  /// `options` are invalid (e.g. an out-of-range backend value).
  static std::unique_ptr<Context> create(const ContextOptions &options,
                                         Status *status);
  ~Context();

  BackendKind backend() const;
  const char *backendName() const;
  std::string arch() const;

  /// Generates/compiles (or finds in the cache) the kernels of `spec`.
  Status prepare(const KernelSpec &spec);
  Status quantize(const KernelSpec &spec, const QuantizeCall &call);
  Status dequantize(const KernelSpec &spec, const DequantizeCall &call);
  Status attention(const KernelSpec &spec, const AttentionCall &call);
  /// One decode step of a paged quantized cache (an append spec): see
  /// AppendCall. QuantizedKVCache::appendStep runs it.
  Status append(const KernelSpec &spec, const AppendCall &call);
  /// Workspace bytes an attention call needs (call.workspace).
  size_t attentionWorkspaceBytes(const KernelSpec &spec,
                                 const AttentionCall &call);

  /// Memory for calls (device memory on cuda, host memory otherwise).
  void *allocate(size_t bytes, Status *status);
  void release(void *pointer);
  /// `stream` (a CUstream/cudaStream_t; null: the default stream) orders
  /// copyIn and copyOnDevice on the GPU; the CPU backends copy at once.
  Status copyIn(void *device, const void *host, size_t bytes,
                void *stream = nullptr);
  Status copyOut(void *host, const void *device, size_t bytes);
  /// Device to device (overlapping ranges allowed).
  Status copyOnDevice(void *dst, const void *src, size_t bytes,
                      void *stream = nullptr);

  CacheStatistics statistics() const;

private:
  Context() = default;
  /// Strided device-to-device rows in one call (QuantizedKVCache's copies
  /// of a token range across kv heads).
  Status copyRowsOnDevice(void *dst, size_t dstPitch, const void *src,
                          size_t srcPitch, size_t rowBytes, size_t rows,
                          void *stream);
  /// Another handle on the same runtime: a QuantizedKVCache keeps one, so
  /// it may outlive the Context it was created from.
  std::unique_ptr<Context> share() const;
  friend class QuantizedKVCache;
  struct Impl;
  std::shared_ptr<Impl> impl;
};

} // namespace kvq

#endif // KVQ_KVQ_H
