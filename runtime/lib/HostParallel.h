//===- HostParallel.h - the CPU backends' parallel loops ---------*- C++
//-*-===//
//
// runOnHostThreads(work, body) calls body() on several threads until the
// work it shares out (body pulls items from a counter) is done.
//
// In a process that already runs an OpenMP thread pool — PyTorch's, when kvq
// is called from Python — the loop runs on that pool: its workers spin for
// milliseconds after each PyTorch operator, and kvq threads of its own would
// share the cores with them (measured on 2 cores: the reference attention 3x
// slower inside a model than alone). Found with dlopen(RTLD_NOLOAD), so kvq
// never loads or links an OpenMP runtime itself; elsewhere it starts its own
// threads.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_RUNTIME_HOSTPARALLEL_H
#define KVQ_RUNTIME_HOSTPARALLEL_H

#include <functional>

namespace kvq {

/// Runs `body` on `maxThreads` threads (the calling one included; on a
/// loaded OpenMP pool, at most the pool's size) and returns when every call
/// has returned.
void runOnHostThreads(unsigned maxThreads, const std::function<void()> &body);

} // namespace kvq

#endif // KVQ_RUNTIME_HOSTPARALLEL_H
