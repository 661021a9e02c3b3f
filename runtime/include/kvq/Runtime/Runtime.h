//===- Runtime.h - specialize, compile once, dispatch -----------*- C++ -*-===//
//
// The runtime: a KernelSpec is looked up in the per-process memory cache,
// then the disk cache, then the kernel bundle (KVQ_BUNDLE), and only then
// generated and compiled by the KernelCompiler it was given (Jit.h: nvrtc
// for the cuda backend, the host compiler for the emulator). Without one
// (the runtime-only library) a kernel found nowhere is a MissingKernelError
// naming the spec and the command that builds it. Calls are then
// validated (Launch.h) and run on the chosen backend:
//   cuda      — the CUDA driver (dlopen'ed; NoDriverError without one),
//   emulator  — the generated source on the CPU,
//   reference — the plain C++ semantics (no kernels),
//   auto      — cuda when a driver and device exist, else the emulator.
// Memory handed to calls is device memory for cuda and host memory
// otherwise; allocate/copy route to the right place.
//
// Environment: KVQ_CACHE_DIR (cache location), KVQ_BUNDLE (a kernel bundle
// to serve kernels from), KVQ_ALWAYS_COMPILE=1 (skip both caches and the
// bundle; needs a compiler), KVQ_DUMP_DIR (write every stage of each compiled
// kernel), KVQ_LOG=1 (log cache hits and compilations to stderr).
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_RUNTIME_RUNTIME_H
#define KVQ_RUNTIME_RUNTIME_H

#include "kvq/Codegen/GeneratedSource.h"
#include "kvq/Runtime/CudaDriver.h"
#include "kvq/Runtime/KernelCompiler.h"
#include "kvq/Runtime/Launch.h"

#include "llvm/Support/Error.h"

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace kvq {

class LoadedKernels;

struct RuntimeOptions {
  Backend backend = Backend::Auto;
  /// Target arch for cuda; empty: the device's (sm_90 when there is none).
  std::string arch;
  /// The CUDA device (driver ordinal) the cuda backend runs on.
  int device = 0;
  /// Empty: $KVQ_CACHE_DIR, $XDG_CACHE_HOME/kvq or ~/.cache/kvq.
  std::string cacheDir;
  bool diskCache = true;
  uint64_t cacheBytes = 1ull << 30;
  /// Compile and cache only (ahead-of-time warm-up): the cuda backend then
  /// needs no driver, and nothing is loaded or launched.
  bool compileOnly = false;
  /// Builds kernels found nowhere else; null: serve prebuilt kernels only
  /// (jit::options() sets the JIT's).
  std::shared_ptr<const KernelCompiler> compiler;
  /// A kernel bundle to serve kernels from (verified when the runtime is
  /// created); empty: $KVQ_BUNDLE, if set.
  std::string bundle;
  /// Where attention kernels do their arithmetic when a spec leaves it to
  /// the plan (KernelSpec::path Auto): Auto keeps the plan's choice unless
  /// KVQ_ATTENTION_PATH (auto, cuda-cores, tensor-cores) says otherwise.
  AttentionPath attentionPath = AttentionPath::Auto;
};

/// One specialization, compiled for the runtime's backend.
struct CompiledKernels {
  KernelSpec spec;
  std::string key;
  GeneratedSource source; ///< CUDA text + kernel metadata
  std::string ptx, cubin; ///< cuda backend
  std::map<std::string, PtxasStats> stats;
  /// Where it came from: "compiled", "disk" or "bundle".
  std::string origin;
  /// Cold path: generation, nvrtc/host compiler, writing the cache entry.
  /// Disk hit: reading and verifying the entry (diskMillis).
  double mlirMillis = 0, compileMillis = 0, diskWriteMillis = 0, diskMillis = 0;

  /// Loaded on the runtime's backend; null when nothing runs kernels
  /// (reference backend, compile-only runtime).
  std::shared_ptr<LoadedKernels> executable;
};

struct RuntimeStatistics {
  uint64_t compiled = 0, diskHits = 0, bundleHits = 0, memoryHits = 0,
           remoteHits = 0;
  uint64_t launches = 0; ///< kernel launches issued (cuda, emulator)
};

class Runtime {
public:
  static llvm::Expected<std::unique_ptr<Runtime>>
  create(const RuntimeOptions &options = RuntimeOptions());
  ~Runtime();

  Backend backend() const { return resolved; }
  const std::string &arch() const { return targetArch; }
  /// The warning given once if the disk cache could not be used (the
  /// runtime then keeps kernels in memory only); empty otherwise.
  const std::string &cacheWarning() const { return warning; }
  const std::string &cacheDirectory() const { return cacheDir; }
  /// The bundle kernels are served from; empty if none.
  const std::string &bundlePath() const { return bundleFile; }
  /// Whether this runtime can build kernels (it was given a compiler).
  bool canCompile() const;

  /// The compiled kernels of `spec`: memory cache, disk cache, or compile.
  /// Concurrent requests for one new spec compile it once. Not used by the
  /// reference backend.
  llvm::Expected<std::shared_ptr<const CompiledKernels>>
  prepare(const KernelSpec &spec);

  llvm::Error quantize(const KernelSpec &spec, const QuantizeCall &call);
  llvm::Error dequantize(const KernelSpec &spec, const DequantizeCall &call);
  llvm::Error attention(const KernelSpec &spec, const AttentionCall &call);
  llvm::Error append(const KernelSpec &spec, const AppendCall &call);
  /// Workspace bytes `call` needs on this runtime's device (the split count
  /// follows the device's SM count unless call.smCount says otherwise).
  llvm::Expected<size_t> attentionWorkspaceBytes(const KernelSpec &spec,
                                                 const AttentionCall &call);

  /// Memory for calls: device memory (cuda) or checked host memory.
  llvm::Expected<void *> allocate(size_t bytes);
  void release(void *pointer);
  /// `stream` (a CUstream; null: the default stream) orders a copy into or
  /// within device memory on cuda; the CPU backends run it at once.
  llvm::Error copyIn(void *dst, const void *src, size_t bytes,
                     void *stream = nullptr);
  llvm::Error copyOut(void *dst, const void *src, size_t bytes);
  /// Device to device; the ranges may overlap (memmove semantics).
  llvm::Error copyOnDevice(void *dst, const void *src, size_t bytes,
                           void *stream = nullptr);
  /// `rows` rows of `rowBytes`, `srcPitch` apart, to rows `dstPitch` apart,
  /// in one driver call on cuda; the ranges must not overlap.
  llvm::Error copyRowsOnDevice(void *dst, size_t dstPitch, const void *src,
                               size_t srcPitch, size_t rowBytes, size_t rows,
                               void *stream = nullptr);

  /// Waits for all work issued so far (cuda); a no-op on the CPU backends.
  llvm::Error synchronize();
  /// How long `work` takes: GPU time between events on cuda, wall time on
  /// the CPU backends (which run synchronously).
  llvm::Expected<double> timeMillis(const std::function<llvm::Error()> &work);
  /// The device the cuda backend runs on; nothing on the CPU backends.
  std::optional<cuda::DeviceInfo> device() const;

  RuntimeStatistics statistics() const;

  struct Impl;

private:
  Runtime() = default;
  std::unique_ptr<Impl> impl;
  Backend resolved = Backend::Emulator;
  std::string targetArch, warning, cacheDir, bundleFile;
};

} // namespace kvq

#endif // KVQ_RUNTIME_RUNTIME_H
