//===- ToolCompiler.h - one tool source, JIT or runtime-only ----*- C++ -*-===//
//
// kvq-cache and kvq-gpu-bench are built twice from one source: with the JIT
// (define KVQ_WITH_JIT; they compile what they cannot find) and runtime-only
// (for machines without LLVM/MLIR or nvrtc; they serve the disk cache and
// kernel bundles). This is the one place the difference is spelled.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_RUNTIME_TOOLCOMPILER_H
#define KVQ_RUNTIME_TOOLCOMPILER_H

#include "kvq/Runtime/Runtime.h"
#ifdef KVQ_WITH_JIT
#include "kvq/Runtime/Jit.h"
#endif

namespace kvq {

/// `options` with the JIT compiler in a JIT build, unchanged otherwise.
inline RuntimeOptions withToolCompiler(RuntimeOptions options) {
#ifdef KVQ_WITH_JIT
  options = jit::options(options);
#endif
  return options;
}

} // namespace kvq

#endif // KVQ_RUNTIME_TOOLCOMPILER_H
