//===- KernelKey.h - the cache key of a spec on a backend -------*- C++ -*-===//
//
// One definition of what identifies a compiled kernel, shared by the runtime
// (lookups), `kvq-cache import` (is a bundle's entry one this kvq would
// use?) and the tests.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_RUNTIME_KERNELKEY_H
#define KVQ_RUNTIME_KERNELKEY_H

#include "kvq/Cache/CacheKey.h"
#include "kvq/Codegen/KernelSpec.h"
#include "kvq/Runtime/KernelCompiler.h"

#include <string>

namespace kvq {

/// The key inputs of `spec`'s kernels for `backend` (cuda: for `arch`).
/// The reference backend runs no kernels but validates calls against the
/// launch plan of the cuda kernels for its arch, so it shares their key.
/// `nvrtcVersion` is the nvrtc that builds (or built) cuda kernels: the
/// JIT's loaded library, or the version this kvq was built against.
cache::KeyInputs
kernelKeyInputs(const KernelSpec &spec, Backend backend,
                const std::string &arch,
                const std::string &nvrtcVersion = buildNvrtcVersion());

/// Why a cache or bundle entry, with the recorded key inputs `keyText`, is
/// not one this kvq build would load (another kvq, LLVM or nvrtc version,
/// host compiler, unknown backend, unreadable spec); empty if it is.
std::string entryMismatch(const std::string &keyText);

} // namespace kvq

#endif // KVQ_RUNTIME_KERNELKEY_H
