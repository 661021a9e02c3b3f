//===- KernelCompiler.h - what the runtime asks of a compiler ---*- C++ -*-===//
//
// The runtime loads and launches kernels; making them is someone else's job.
// A KernelCompiler turns a KernelSpec into the artefacts one backend runs
// (PTX + CUBIN for cuda, a host shared object for the emulator). The JIT
// library (kvq/Runtime/Jit.h: MLIR code generation, nvrtc, the host
// compiler) provides one; the runtime-only library has none and serves
// kernels from the disk cache and kernel bundles only, so it links no MLIR
// and needs no nvrtc. A kernel it cannot find is a MissingKernelError that
// names the spec and the command that builds it.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_RUNTIME_KERNELCOMPILER_H
#define KVQ_RUNTIME_KERNELCOMPILER_H

#include "kvq/Codegen/GeneratedSource.h"
#include "kvq/Codegen/KernelSpec.h"
#include "kvq/Support/MessageError.h"

#include "llvm/Support/Error.h"

#include <map>
#include <string>
#include <vector>

namespace kvq {

enum class Backend { Auto, Cuda, Emulator, Reference };
const char *backendName(Backend backend);
std::optional<Backend> parseBackend(const std::string &name);

/// What ptxas reports for one kernel (`--ptxas-options=-v`).
struct PtxasStats {
  int registers = -1;
  int spillStoreBytes = 0;
  int spillLoadBytes = 0;
  int stackBytes = 0;
  int sharedBytes = 0;
  int barriers = 0;
};

/// The error a compiler reports, with its log and the offending source so
/// the user can see both.
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

/// A runtime without a compiler was asked for a kernel that is in neither
/// its disk cache nor its bundle. The message names the spec, the target
/// and the `kvq-cache` command that builds it on a machine with the JIT.
class MissingKernelError : public MessageError<MissingKernelError> {
public:
  static char ID;
  using MessageError::MessageError;
};

/// The nvrtc version the cuda kernels of this kvq build are compiled with
/// ("13.0"), known without loading nvrtc: the runtime-only library keys its
/// lookups by it, the JIT uses the nvrtc it loaded.
const char *buildNvrtcVersion();

/// The artefacts of one spec for one backend.
struct CompiledArtefacts {
  GeneratedSource source;
  std::string ptx, cubin, ptxasLog; ///< cuda
  std::map<std::string, PtxasStats> stats;
  std::string sharedObject; ///< emulator: the host shared object's bytes
  double compileMillis = 0; ///< nvrtc or the host compiler, wall time
};

class KernelCompiler {
public:
  virtual ~KernelCompiler() = default;
  /// Generates and compiles `spec` for `backend` (cuda: for `arch`). For the
  /// reference backend only the generated source (launch metadata) is
  /// needed. Thread-safe.
  virtual llvm::Expected<CompiledArtefacts>
  compile(const KernelSpec &spec, Backend backend,
          const std::string &arch) const = 0;
  /// The nvrtc that compile() uses ("13.0"), for cache keys: an nvrtc
  /// other than the one kvq was built against builds (and finds) its own
  /// entries.
  virtual std::string nvrtcVersion() const { return buildNvrtcVersion(); }
};

/// nvrtc options, beyond the defaults, that `spec`'s kernels are compiled
/// with; part of their cache key. Quantize and dequantize are bit-exact on
/// every backend, so nothing may be contracted there: --fmad=false makes
/// nvrtc keep a * b + c as two rounded operations (mul.rn, add.rn), as the
/// emulator (-ffp-contract=off) and the reference compute them. Attention,
/// checked within a tolerance, keeps the faster contracted form.
std::vector<std::string> cudaCodegenOptions(const KernelSpec &spec);

} // namespace kvq

#endif // KVQ_RUNTIME_KERNELCOMPILER_H
