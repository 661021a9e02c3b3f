//===- NVRTC.h - in-process CUDA compilation --------------------*- C++ -*-===//
//
// Compiles generated CUDA C++ to PTX and CUBIN with nvrtc. Needs no GPU and
// no driver (nvrtc depends only on libc), so kernels can be compiled and
// cached on any machine with the toolkit.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_RUNTIME_NVRTC_H
#define KVQ_RUNTIME_NVRTC_H

#include "kvq/Runtime/KernelCompiler.h"

#include "llvm/Support/Error.h"

#include <map>
#include <string>
#include <vector>

namespace kvq {

struct CompiledModule {
  std::string ptx;
  std::string cubin; ///< bytes; empty when only PTX was asked for
  std::string log;   ///< nvrtc's program log (ptxas statistics included)
  std::map<std::string, PtxasStats> stats; ///< per kernel name
  double millis = 0;
};

struct NVRTCOptions {
  std::string arch = "sm_90"; ///< sm_XX: CUBIN and PTX; compute_XX: PTX
  bool cubin = true;
  bool lineInfo = false;
  std::vector<std::string> extraOptions;
};

/// Compiles `source` (which includes the kvq prelude by name) for
/// `options.arch`.
llvm::Expected<CompiledModule> compileCuda(const std::string &source,
                                           const std::string &programName,
                                           const NVRTCOptions &options);

/// The CUDA include directory (cuda_fp16.h) generated code is compiled
/// against: $KVQ_CUDA_INCLUDE, else the toolkit found at build time.
std::string cudaIncludeDir();

/// The nvrtc loaded at run time, "13.0": part of every cache key.
std::string nvrtcVersionString();

/// Parses ptxas' `-v` output into per-kernel statistics.
std::map<std::string, PtxasStats> parsePtxasLog(const std::string &log);

} // namespace kvq

#endif // KVQ_RUNTIME_NVRTC_H
