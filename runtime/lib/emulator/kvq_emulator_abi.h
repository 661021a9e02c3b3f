// kvq emulator ABI: what a host-compiled kernel and the emulator share.
// Included by the shim (kvq_emulator_shim.h, compiled into every emulator
// kernel) and by the emulator itself (runtime/lib/Emulator.cpp): one
// definition, so the two sides cannot drift apart. Plain C++, no CUDA.
#pragma once

namespace kvq_emu {
/// A thread's coordinates, laid out as CUDA's uint3/dim3.
struct Coordinates {
  unsigned x, y, z;
};
struct Ids {
  Coordinates threadIdx, blockIdx, blockDim, gridDim;
};
/// The emulator's entry points, called by the shim's CUDA builtins.
struct Hooks {
  void (*load)(int site, const void *address, unsigned bytes, void *out);
  void (*store)(int site, void *address, unsigned bytes, const void *in);
  void (*checkShared)(int site, const void *address, unsigned bytes, int store);
  void *(*shared)(int slot, unsigned bytes);
  void (*syncthreads)(int line);
  unsigned long long (*shflXor)(unsigned mask, unsigned long long value,
                                int laneMask);
  /// Every lane of the warp's `bytes` at `mine`, copied into `all` in lane
  /// order (32 x bytes): the collective that warp-wide instructions with
  /// register fragments (mma.sync) are emulated on. All 32 lanes take part.
  void (*warpAllGather)(const void *mine, unsigned bytes, void *all);
  /// atomicAdd on a global int: checked like a load and a store, atomic
  /// across the blocks the emulator runs at once; returns the old value.
  int (*atomicAdd)(int site, int *address, int value);
};
} // namespace kvq_emu
