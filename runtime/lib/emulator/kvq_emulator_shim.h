// kvq emulator shim: CUDA builtins for a host build of a generated kernel.
// Force-included (g++ -include) before the generated kernel and the device
// prelude when the emulator compiles a kernel for the host: it maps CUDA's
// builtins onto calls into the emulator (runtime/lib/Emulator.cpp) through
// the table of hooks of kvq_emulator_abi.h, installed after dlopen, so the
// kernel .so needs no symbols from the host process. Embedded in kvq at
// build time (runtime/CMakeLists.txt); see ../shared/design/EMULATOR.md.
#pragma once
#define KVQ_EMULATOR 1
#include <cmath>
#include <cstdint>
#include <cstring>
// The toolkit's headers first (the prelude's includes are then no-ops):
// they use names such as gridDim that become macros below.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <vector_types.h>

#include "kvq_emulator_abi.h"

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

namespace kvq_emu {
inline Hooks *hooks = nullptr;
inline thread_local const Ids *ids = nullptr;

template <typename T> inline T load(int site, const T *address) {
  T value;
  hooks->load(site, address, sizeof(T), &value);
  return value;
}
template <typename T, typename V>
inline void store(int site, T *address, const V &value) {
  T converted = value;
  hooks->store(site, address, sizeof(T), &converted);
}
// Shared memory: reads and writes are told apart, so the emulator can
// report a read of an element no thread of the block wrote.
template <typename T> inline T sharedLoad(int site, const T *address) {
  hooks->checkShared(site, address, sizeof(T), 0);
  return *address;
}
template <typename T, typename V>
inline void sharedStore(int site, T *address, const V &value) {
  hooks->checkShared(site, address, sizeof(T), 1);
  *address = value;
}
} // namespace kvq_emu

extern "C" void kvq_emu_install(kvq_emu::Hooks *hooks) {
  kvq_emu::hooks = hooks;
}
extern "C" void kvq_emu_set_ids(const kvq_emu::Ids *ids) { kvq_emu::ids = ids; }

#define threadIdx (kvq_emu::ids->threadIdx)
#define blockIdx (kvq_emu::ids->blockIdx)
#define blockDim (kvq_emu::ids->blockDim)
#define gridDim (kvq_emu::ids->gridDim)

#define KVQ_LDG(site, ptr, i) kvq_emu::load(site, (ptr) + (i))
#define KVQ_LDG2(site, ptr, i)                                                 \
  kvq_emu::load(site, reinterpret_cast<const int2 *>((ptr) + (i)))
#define KVQ_LDG4(site, ptr, i)                                                 \
  kvq_emu::load(site, reinterpret_cast<const int4 *>((ptr) + (i)))
#define KVQ_STG(site, ptr, i, v) kvq_emu::store(site, (ptr) + (i), (v))
#define KVQ_LDS(site, ptr, i) kvq_emu::sharedLoad(site, (ptr) + (i))
#define KVQ_STS(site, ptr, i, v) kvq_emu::sharedStore(site, (ptr) + (i), (v))
#define KVQ_LDS4(site, ptr, i)                                                 \
  kvq_emu::sharedLoad(site, reinterpret_cast<const float4 *>((ptr) + (i)))
#define KVQ_STS4(site, ptr, i, v)                                              \
  kvq_emu::sharedStore(site, reinterpret_cast<float4 *>((ptr) + (i)), (v))
#define KVQ_SHARED(type, name, count)                                          \
  type *name = static_cast<type *>(                                            \
      kvq_emu::hooks->shared(__LINE__, sizeof(type) * (count)))

// The line names the barrier: every thread of a block must wait at the same
// one, as on a GPU.
#define __syncthreads() kvq_emu::hooks->syncthreads(__LINE__)
template <typename T>
inline T __shfl_xor_sync(unsigned mask, T value, int laneMask) {
  static_assert(sizeof(T) <= 8, "shuffle of more than 8 bytes");
  unsigned long long bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = kvq_emu::hooks->shflXor(mask, bits, laneMask);
  T result;
  std::memcpy(&result, &bits, sizeof(T));
  return result;
}
inline float __expf(float x) { return std::exp(x); }
inline float __int_as_float(int x) {
  float f;
  std::memcpy(&f, &x, sizeof f);
  return f;
}
