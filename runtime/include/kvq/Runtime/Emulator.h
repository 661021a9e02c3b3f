//===- Emulator.h - run generated CUDA on the CPU ---------------*- C++ -*-===//
//
// Compiles the *same* CUDA source nvrtc compiles with the host C++ compiler
// and a shim header, dlopens it, and runs kernels with one fiber per CUDA
// thread: warp shuffles and block barriers have CUDA's semantics (divergent
// collectives and deadlocks are errors), device memory is 256-byte aligned
// and bounds-checked, and global traffic is counted per access site in
// 32-byte sectors. See ../shared/design/EMULATOR.md and docs/emulator.md.
//
// What it is not: it runs the source, not nvrtc's PTX/SASS; floating point
// follows the host (compare with tolerances); races and memory ordering are
// not modelled; sector counts say nothing about L1/L2 hits.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_RUNTIME_EMULATOR_H
#define KVQ_RUNTIME_EMULATOR_H

#include "kvq/Codegen/GeneratedSource.h"
#include "kvq/Runtime/Launch.h"

#include "llvm/Support/Error.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace kvq::emu {

struct Dim3 {
  unsigned x = 1, y = 1, z = 1;
};

/// Device memory: 256-byte aligned, registered, checked on every access.
/// New allocations are filled with 0xFF bytes (NaN for floats) so that a
/// kernel reading memory nobody wrote shows up in results.
/// Null when `bytes` is absurd (over 1 TiB) or the host is out of memory.
void *deviceAlloc(size_t bytes);
/// False (and nothing freed) for a pointer that is not a live allocation's
/// base: a double or foreign free is reported, never performed.
bool deviceFree(void *pointer);
/// True if [address, address + bytes) lies inside one live allocation.
bool isDeviceRange(const void *address, size_t bytes);

/// Order in which the threads of a block run between collectives. Fibers
/// never interleave between barriers, so comparing two orders exposes a
/// missing __syncthreads.
enum class Schedule { Forward, Reverse };

struct LaunchOptions {
  Schedule schedule = Schedule::Forward;
  bool traceTraffic = false;
  unsigned hostThreads = 0; ///< 0: all hardware threads
};

/// Global-memory traffic of one access site over a launch.
struct SiteTraffic {
  int site = 0;
  bool store = false;
  unsigned accessBytes = 0;   ///< bytes per lane per access (2, 4, 16, ...)
  uint64_t requests = 0;      ///< warp-level memory instructions
  uint64_t sectors = 0;       ///< distinct 32-byte sectors, summed per request
  uint64_t usefulBytes = 0;   ///< distinct bytes requested, summed per request
  uint64_t uniqueSectors = 0; ///< distinct sectors over the whole launch
  uintptr_t lowestAddress = UINTPTR_MAX; ///< span of addresses touched
  uintptr_t highestAddress = 0;
  /// Sectors a fully active warp needs at best for this access size.
  double idealSectorsPerRequest() const { return accessBytes * 32.0 / 32.0; }
  double sectorsPerRequest() const {
    return requests ? double(sectors) / double(requests) : 0;
  }
  /// Requested bytes over fetched bytes (1.0 = every fetched byte used).
  double efficiency() const {
    return sectors ? double(usefulBytes) / double(sectors * 32) : 0;
  }
};

struct TrafficReport {
  std::string kernel;
  std::vector<SiteTraffic> sites;
  uint64_t uniqueLoadSectors = 0; ///< over the whole launch
  uint64_t loadRequests = 0;
};

/// Compiles `source` for the host into `workDir` (JIT library only) (reusing a
/// shared object built there earlier for the same source, compiler and flags).
/// Returns the path of the shared object; `millis` (if given) is the compiler's
/// time, 0 when reused.
llvm::Expected<std::string> buildSharedObject(const GeneratedSource &source,
                                              const std::string &workDir,
                                              double *millis = nullptr);

/// The host compiler ($CXX, else c++) and the flags the emulator's shared
/// objects are built with.
const char *hostCompiler();
const std::vector<std::string> &hostFlags();
/// Both in one line, for cache keys.
std::string hostCompilerIdentity();

/// One compiled translation unit.
class Module {
public:
  ~Module();
  /// Compiles `source` for the host (or reuses the shared object compiled
  /// earlier for the same source, kept under `cacheDir`). JIT library only.
  static llvm::Expected<std::unique_ptr<Module>>
  compile(const GeneratedSource &source, const std::string &cacheDir);

  /// Loads a shared object built by buildSharedObject for `kernels`.
  static llvm::Expected<std::unique_ptr<Module>>
  load(const std::string &library, const std::vector<GeneratedKernel> &kernels);
  /// Loads a shared object given as bytes (verified by the caller) without
  /// a path anyone else could replace: from a sealed in-memory file
  /// (memfd), or where that is unavailable a private 0700 folder removed
  /// right after loading.
  static llvm::Expected<std::unique_ptr<Module>>
  loadImage(const std::string &image,
            const std::vector<GeneratedKernel> &kernels);

  /// Runs `kernel` to completion. `args` point at the argument values, as
  /// for cuLaunchKernel. Errors (bad access with its site, divergent
  /// collective, deadlock) come back as llvm::Error naming the kernel.
  llvm::Error launch(const std::string &kernel, Dim3 grid, Dim3 block,
                     const std::vector<void *> &args,
                     const LaunchOptions &options = LaunchOptions());

  /// Runs a launch planned by planQuantize/planDequantize/planAttention.
  llvm::Error launch(const KernelLaunch &launch,
                     const LaunchOptions &options = LaunchOptions()) {
    return this->launch(launch.kernel,
                        {launch.grid[0], launch.grid[1], launch.grid[2]},
                        {launch.block[0], launch.block[1], launch.block[2]},
                        launch.args, options);
  }

  /// Traffic of the last launch run with traceTraffic.
  const TrafficReport &lastTraffic() const { return traffic; }

  /// Milliseconds the host compiler took (0 when reused).
  double compileMillis() const { return compileMs; }

private:
  Module() = default;
  struct Impl;
  std::unique_ptr<Impl> impl;
  TrafficReport traffic;
  double compileMs = 0;
};

} // namespace kvq::emu

#endif // KVQ_RUNTIME_EMULATOR_H
