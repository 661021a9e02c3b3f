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

/// An fp16 bit pattern as a float (every fp16 value is exact in fp32).
inline float halfBitsToFloat(unsigned bits) {
  unsigned sign = (bits >> 15) & 1, exponent = (bits >> 10) & 0x1F,
           mantissa = bits & 0x3FF;
  float magnitude = exponent == 0    ? std::ldexp(float(mantissa), -24)
                    : exponent == 31 ? (mantissa ? NAN : INFINITY)
                                     : std::ldexp(float(mantissa | 0x400),
                                                  int(exponent) - 25);
  return sign ? -magnitude : magnitude;
}

/// A bf16 bit pattern as a float (exact: bf16 is fp32's top half).
inline float bf16BitsToFloat(unsigned bits) {
  unsigned word = bits << 16;
  float value;
  std::memcpy(&value, &word, sizeof value);
  return value;
}

/// This thread's lane in its warp.
inline unsigned laneId() {
  return (ids->threadIdx.x + ids->threadIdx.y * ids->blockDim.x +
          ids->threadIdx.z * ids->blockDim.x * ids->blockDim.y) %
         32;
}

/// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32 for the
/// warp of the calling thread (every lane calls it): the lanes' A and B
/// fragments are gathered, and each lane computes its four accumulators
/// from the fragment layout of the PTX ISA ("Matrix Fragments for
/// mma.m16n8k16"), summing over k in order in fp32. With lane = 4 g + t:
///   a[0] A[g][2t..2t+1]   a[1] A[g+8][2t..2t+1]
///   a[2] A[g][2t+8..2t+9] a[3] A[g+8][2t+8..2t+9]   (x2, low half first)
///   b[0] B[2t..2t+1][g]   b[1] B[2t+8..2t+9][g]
///   c[0..1], d[0..1] C[g][2t..2t+1]   c[2..3], d[2..3] C[g+8][2t..2t+1]
inline void mmaM16N8K16(float d[4], const unsigned a[4], const unsigned b[2],
                        const float c[4], bool bf16 = false) {
  struct Fragments {
    unsigned a[4], b[2];
  } mine = {{a[0], a[1], a[2], a[3]}, {b[0], b[1]}}, all[32];
  hooks->warpAllGather(&mine, sizeof mine, all);
  auto element = [bf16](unsigned word, int k) {
    unsigned bits = k % 2 ? word >> 16 : word & 0xFFFF;
    return bf16 ? bf16BitsToFloat(bits) : halfBitsToFloat(bits);
  };
  auto A = [&](int i, int k) {
    return element(all[4 * (i % 8) + (k % 8) / 2].a[(i >= 8) + 2 * (k >= 8)],
                   k);
  };
  auto B = [&](int k, int j) {
    return element(all[4 * j + (k % 8) / 2].b[k >= 8], k);
  };
  int g = int(laneId() / 4), t = int(laneId() % 4);
  for (int r = 0; r < 4; ++r) {
    int row = g + 8 * (r / 2), column = 2 * t + r % 2;
    float sum = c[r];
    for (int k = 0; k < 16; ++k)
      sum += A(row, k) * B(k, column);
    d[r] = sum;
  }
}

/// movmatrix.sync.aligned.m8n8.trans.b16 for the warp of the calling thread:
/// lane 4 g + t holds M[g][2t..2t+1] (low half first) and gets back
/// M[2t][g] (low half) and M[2t + 1][g] (high half).
inline unsigned transposePairs(unsigned pair) {
  unsigned all[32];
  hooks->warpAllGather(&pair, sizeof pair, all);
  unsigned g = laneId() / 4, t = laneId() % 4;
  auto element = [&](unsigned row, unsigned column) {
    unsigned word = all[4 * row + column / 2];
    return column % 2 ? word >> 16 : word & 0xFFFF;
  };
  return element(2 * t, g) | element(2 * t + 1, g) << 16;
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
#define KVQ_ATOMIC_ADD(site, ptr, i, v)                                        \
  kvq_emu::hooks->atomicAdd(site, (ptr) + (i), (v))
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
inline int __float_as_int(float x) {
  int i;
  std::memcpy(&i, &x, sizeof i);
  return i;
}
