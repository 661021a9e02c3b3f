// The prelude's tensor-core tile (kvq_mma_m16n8k16) on a real GPU, against
// the same fragment layout the emulator implements (kvq_emu::mmaM16N8K16)
// and EmulatorTest.MmaFragmentsFollowThePtxLayout pins: distinct small
// integers, exact in fp16 and in the fp32 sums, so D must equal A.B + C bit
// for bit, and a run with two fragments swapped must not; nor may a tile
// whose A holds fp16 subnormals (as channel-axis key codes enter the score
// MMAs) differ from its exact sums. Built and run by
// device-run.sh with the machine's nvcc (nothing of kvq's is linked):
//
//   nvcc -arch=sm_90 -I<bundle> mma_check.cu -o mma_check && ./mma_check
// (the bundle holds kvq_prelude.cuh and mma_test_tile.h beside it)
//
// Prints one line; exits non-zero on a mismatch or a CUDA error.
#include "kvq_prelude.cuh"
#include "mma_test_tile.h"
#include "pair_ops_cases.h"

#include <cstdio>
#include <cstring>

// One warp: every lane loads its fragments as the PTX ISA lays them out
// (lane = 4 g + t); A row-major 16x16 and B column-major as fp16 pairs.
__global__ void mmaTile(const unsigned *a, const unsigned *b, const float *c,
                        float *d, int swap) {
  int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  unsigned fa[4] = {a[g * 8 + t], a[(g + 8) * 8 + t], a[g * 8 + t + 4],
                    a[(g + 8) * 8 + t + 4]};
  if (swap) {
    unsigned x = fa[1];
    fa[1] = fa[2];
    fa[2] = x;
  }
  unsigned fb[2] = {b[g * 8 + t], b[g * 8 + t + 4]};
  float fc[4] = {c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t],
                 c[(g + 8) * 8 + 2 * t + 1]};
  float fd[4];
  kvq_mma_m16n8k16(fd, fa, fb, fc);
  d[g * 8 + 2 * t] = fd[0];
  d[g * 8 + 2 * t + 1] = fd[1];
  d[(g + 8) * 8 + 2 * t] = fd[2];
  d[(g + 8) * 8 + 2 * t + 1] = fd[3];
}

// The register helpers on the device (PRMT, HMUL2, HFMA2), one
// case of pair_ops_cases.h a thread: its kind and operands in, two results
// out.
__global__ void pairOps(const unsigned *in, unsigned *out) {
  int i = threadIdx.x;
  unsigned kind = in[4 * i], a = in[4 * i + 1], b = in[4 * i + 2],
           c = in[4 * i + 3], first = 0, second = 0;
  if (kind == kvq_pair_test::kPermute) {
    first = (unsigned)kvq_byte_perm((int)a, (int)b, (int)c);
  } else {
    int product = kvq_mul_f16x2((int)a, (int)b);
    first = (unsigned)product;
    second = (unsigned)kvq_mul_f16x2_error((int)a, (int)b, product);
  }
  out[2 * i] = first;
  out[2 * i + 1] = second;
}

#define CHECK(call)                                                            \
  do {                                                                         \
    cudaError_t status = (call);                                               \
    if (status != cudaSuccess) {                                               \
      std::printf("mma check: %s failed: %s\n", #call,                         \
                  cudaGetErrorString(status));                                 \
      return 2;                                                                \
    }                                                                          \
  } while (0)

int main() {
  kvq_mma_test::Tile tile;
  float D[16][8];
  unsigned *da, *db;
  float *dc, *dd;
  CHECK(cudaMalloc(&da, sizeof tile.a));
  CHECK(cudaMalloc(&db, sizeof tile.b));
  CHECK(cudaMalloc(&dc, sizeof tile.C));
  CHECK(cudaMalloc(&dd, sizeof D));
  CHECK(cudaMemcpy(da, tile.a, sizeof tile.a, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(db, tile.b, sizeof tile.b, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dc, tile.C, sizeof tile.C, cudaMemcpyHostToDevice));
  int wrong[2] = {0, 0};
  for (int swap = 0; swap < 2; ++swap) {
    CHECK(cudaMemset(dd, 0xFF, sizeof D)); // poisoned: NaN everywhere
    mmaTile<<<1, 32>>>(da, db, dc, dd, swap);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(D, dd, sizeof D, cudaMemcpyDeviceToHost));
    wrong[swap] = tile.mismatches(&D[0][0]);
  }
  // A as fp16 subnormals (channel-axis key codes): kept, not flushed.
  kvq_mma_test::Tile codes(/*subnormal=*/true);
  CHECK(cudaMemcpy(da, codes.a, sizeof codes.a, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dc, codes.C, sizeof codes.C, cudaMemcpyHostToDevice));
  CHECK(cudaMemset(dd, 0xFF, sizeof D));
  mmaTile<<<1, 32>>>(da, db, dc, dd, 0);
  CHECK(cudaGetLastError());
  CHECK(cudaMemcpy(D, dd, sizeof D, cudaMemcpyDeviceToHost));
  int subnormalWrong = codes.mismatches(&D[0][0]);
  bool ok = wrong[0] == 0 && wrong[1] > 64 && subnormalWrong == 0;
  std::printf("mma check: %s (kvq_mma_m16n8k16: %d of 128 elements differ "
              "from A.B + C; with a swapped fragment %d, must be > 64; with "
              "A fp16 subnormals %d)\n",
              ok ? "ok" : "FAIL", wrong[0], wrong[1], subnormalWrong);

  using namespace kvq_pair_test;
  unsigned operands[kCases * 4], expected[kCases * 2], results[kCases * 2];
  fillCases(operands, expected);
  unsigned *din, *dout;
  CHECK(cudaMalloc(&din, sizeof operands));
  CHECK(cudaMalloc(&dout, sizeof results));
  CHECK(cudaMemcpy(din, operands, sizeof operands, cudaMemcpyHostToDevice));
  pairOps<<<1, kCases>>>(din, dout);
  CHECK(cudaGetLastError());
  CHECK(cudaMemcpy(results, dout, sizeof results, cudaMemcpyDeviceToHost));
  int differ = 0;
  for (int i = 0; i < 2 * kCases; ++i)
    differ += results[i] != expected[i];
  std::printf("pair check: %s (kvq_byte_perm, kvq_mul_f16x2 "
              "and its error: %d of %d results differ from the emulator's "
              "hand-computed bits)\n",
              differ == 0 ? "ok" : "FAIL", differ, 2 * kCases);
  return ok && differ == 0 ? 0 : 1;
}
