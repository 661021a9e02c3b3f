//===- NVRTC.h - in-process CUDA compilation --------------------*- C++ -*-===//
//
// Compiles generated CUDA C++ to PTX and CUBIN with nvrtc. Needs no GPU and
// no driver (nvrtc depends only on libc), so kernels can be compiled and
// cached on any machine with the toolkit.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_RUNTIME_NVRTC_H
#define KVQ_RUNTIME_NVRTC_H

#include "llvm/Support/Error.h"

#include <map>
#include <string>
#include <vector>

namespace kvq {

/// What ptxas reports for one kernel (`--ptxas-options=-v`).
struct PtxasStats {
  int registers = -1;
  int spillStoreBytes = 0;
  int spillLoadBytes = 0;
  int stackBytes = 0;
  int sharedBytes = 0;
  int barriers = 0;
};

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

/// The error nvrtc reports, with its log and the offending source so the
/// user can see both.
class CompileError : public llvm::ErrorInfo<CompileError> {
public:
  static char ID;
  CompileError(std::string description, std::string compilerLog,
               std::string source)
      : description(std::move(description)), nvrtcLog(std::move(compilerLog)),
        source(std::move(source)) {}
  void log(llvm::raw_ostream &os) const override;
  std::error_code convertToErrorCode() const override {
    return llvm::inconvertibleErrorCode();
  }
  const std::string &compilerLog() const { return nvrtcLog; }
  const std::string &offendingSource() const { return source; }

private:
  std::string description;
  std::string nvrtcLog;
  std::string source;
};

/// Compiles `source` (which includes the kvq prelude by name) for
/// `options.arch`.
llvm::Expected<CompiledModule> compileCuda(const std::string &source,
                                           const std::string &programName,
                                           const NVRTCOptions &options);

/// "13.0": part of every cache key.
std::string nvrtcVersionString();

/// Parses ptxas' `-v` output into per-kernel statistics.
std::map<std::string, PtxasStats> parsePtxasLog(const std::string &log);

} // namespace kvq

#endif // KVQ_RUNTIME_NVRTC_H
