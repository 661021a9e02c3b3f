//===- HostMemoryBackend.h - the CPU backends' memory -----------*- C++ -*-===//
//
// What the emulator and the reference backend share: "device" memory is
// host memory from emu::deviceAlloc (256-byte aligned, poisoned with 0xFF,
// registered), calls run synchronously, time is wall time. The emulator
// checks that copies stay inside one allocation, as its kernels check every
// access; the reference backend accepts any host memory.
//
//===----------------------------------------------------------------------===//

#ifndef KVQ_RUNTIME_HOSTMEMORYBACKEND_H
#define KVQ_RUNTIME_HOSTMEMORYBACKEND_H

#include "kvq/Runtime/ExecutionBackend.h"

namespace kvq {

class HostMemoryBackend : public ExecutionBackend {
public:
  explicit HostMemoryBackend(bool checkRanges) : checkRanges(checkRanges) {}
  llvm::Expected<void *> allocate(size_t bytes) override;
  void release(void *pointer) override;
  llvm::Error copyIn(void *dst, const void *src, size_t bytes,
                     void *stream) override;
  llvm::Error copyOut(void *dst, const void *src, size_t bytes) override;
  llvm::Error copyOnDevice(void *dst, const void *src, size_t bytes,
                           void *stream) override;

private:
  llvm::Error check(const char *what, const void *p, size_t bytes) const;
  bool checkRanges;
};

} // namespace kvq

#endif // KVQ_RUNTIME_HOSTMEMORYBACKEND_H
