//===- ArtefactBuilder.h - generated CUDA to what a backend loads -*- C++
//-*-===//
//
// The backend-specific half of a JIT compile (JitCompiler.cpp does the
// rest: code generation, timing, KVQ_DUMP_DIR): nvrtc's PTX and CUBIN for
// cuda, a host shared object for the emulator, nothing for the reference
// (it needs the launch metadata only). A new backend adds an ArtefactBuilder
// and a case in artefactBuilderFor.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_RUNTIME_ARTEFACTBUILDER_H
#define KVQ_RUNTIME_ARTEFACTBUILDER_H

#include "kvq/Runtime/KernelCompiler.h"

namespace kvq {

class ArtefactBuilder {
public:
  virtual ~ArtefactBuilder() = default;
  /// Builds from `out.source` (already generated) into `out`.
  virtual llvm::Error build(const KernelSpec &spec, const std::string &arch,
                            CompiledArtefacts &out) const = 0;
};

/// The builder of `backend`'s artefacts (a process-wide instance).
const ArtefactBuilder &artefactBuilderFor(Backend backend);

} // namespace kvq

#endif // KVQ_RUNTIME_ARTEFACTBUILDER_H
