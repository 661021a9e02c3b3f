//===- ContextCompiler.h - which compiler the public API gets ---*- C++ -*-===//
//
// kvq::Context (kvq/kvq.h) is the same code in both shared libraries; what
// differs is whether it can compile. Each library links exactly one
// definition: ContextJit.cpp (libkvq: the JIT) or ContextRuntimeOnly.cpp
// (libkvq_runtime: prebuilt kernels only).
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_RUNTIME_CONTEXTCOMPILER_H
#define KVQ_RUNTIME_CONTEXTCOMPILER_H

#include "kvq/Runtime/KernelCompiler.h"

#include <memory>

namespace kvq {
std::shared_ptr<const KernelCompiler> contextCompiler();
} // namespace kvq

#endif // KVQ_RUNTIME_CONTEXTCOMPILER_H
