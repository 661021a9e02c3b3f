//===- Jit.h - the compiler on top of the runtime ---------------*- C++ -*-===//
//
// The JIT library: MLIR code generation, nvrtc and the host compiler behind
// the KernelCompiler interface. A Runtime created with jit::options() builds
// any kernel it cannot find in the cache or a bundle; one created without it
// (the runtime-only library) never compiles.
//
//   auto runtime = kvq::Runtime::create(kvq::jit::options());
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_RUNTIME_JIT_H
#define KVQ_RUNTIME_JIT_H

#include "kvq/Runtime/KernelCompiler.h"
#include "kvq/Runtime/Runtime.h"

#include <memory>

namespace kvq::jit {

/// The process-wide JIT compiler (thread-safe).
std::shared_ptr<const KernelCompiler> compiler();

/// `options` with the JIT compiler set.
RuntimeOptions options(RuntimeOptions options = RuntimeOptions());

} // namespace kvq::jit

#endif // KVQ_RUNTIME_JIT_H
