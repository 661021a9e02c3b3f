// The prelude's tensor-core tile (kvq_mma_m16n8k16) on a real GPU, against
// the same fragment layout the emulator implements (kvq_emu::mmaM16N8K16)
// and EmulatorTest.MmaFragmentsFollowThePtxLayout pins: distinct small
// integers, exact in fp16 and in the fp32 sums, so D must equal A.B + C bit
// for bit, and a run with two fragments swapped must not. Built and run by
// device-run.sh with the machine's nvcc (nothing of kvq's is linked):
//
//   nvcc -arch=sm_90 -I<bundle> mma_check.cu -o mma_check && ./mma_check
//
// Prints one line; exits non-zero on a mismatch or a CUDA error.
#include "kvq_prelude.cuh"

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
  float fc[4] = {c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1],
                 c[(g + 8) * 8 + 2 * t], c[(g + 8) * 8 + 2 * t + 1]};
  float fd[4];
  kvq_mma_m16n8k16(fd, fa, fb, fc);
  d[g * 8 + 2 * t] = fd[0];
  d[g * 8 + 2 * t + 1] = fd[1];
  d[(g + 8) * 8 + 2 * t] = fd[2];
  d[(g + 8) * 8 + 2 * t + 1] = fd[3];
}

static unsigned short halfOf(int x) { // small integers, exactly
  if (x == 0)
    return 0;
  unsigned sign = x < 0 ? 0x8000 : 0, m = unsigned(x < 0 ? -x : x);
  int e = 0;
  while ((m >> e) > 1)
    ++e;
  return (unsigned short)(sign | unsigned(e + 15) << 10 |
                          ((m << (10 - e)) & 0x3FF));
}

#define CHECK(call)                                                            \
  do {                                                                         \
    cudaError_t status = (call);                                               \
    if (status != cudaSuccess) {                                               \
      std::printf("mma check: %s failed: %s\n", #call,                        \
                  cudaGetErrorString(status));                                 \
      return 2;                                                                \
    }                                                                          \
  } while (0)

int main() {
  int A[16][16], B[16][8];
  float C[16][8], D[16][8];
  unsigned aw[16 * 8], bw[8 * 8];
  for (int i = 0; i < 16; ++i)
    for (int k = 0; k < 16; ++k)
      A[i][k] = (i * 3 + k * 5) % 17 - 8;
  for (int k = 0; k < 16; ++k)
    for (int j = 0; j < 8; ++j)
      B[k][j] = (k * 7 + j * 11) % 13 - 6;
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 8; ++j)
      C[i][j] = float(i * 8 + j);
  for (int i = 0; i < 16; ++i)
    for (int w = 0; w < 8; ++w)
      aw[i * 8 + w] = halfOf(A[i][2 * w]) | unsigned(halfOf(A[i][2 * w + 1])) << 16;
  for (int j = 0; j < 8; ++j)
    for (int w = 0; w < 8; ++w)
      bw[j * 8 + w] = halfOf(B[2 * w][j]) | unsigned(halfOf(B[2 * w + 1][j])) << 16;
  unsigned *da, *db;
  float *dc, *dd;
  CHECK(cudaMalloc(&da, sizeof aw));
  CHECK(cudaMalloc(&db, sizeof bw));
  CHECK(cudaMalloc(&dc, sizeof C));
  CHECK(cudaMalloc(&dd, sizeof D));
  CHECK(cudaMemcpy(da, aw, sizeof aw, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(db, bw, sizeof bw, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dc, C, sizeof C, cudaMemcpyHostToDevice));
  int wrong[2] = {0, 0};
  for (int swap = 0; swap < 2; ++swap) {
    CHECK(cudaMemset(dd, 0xFF, sizeof D)); // poisoned: NaN everywhere
    mmaTile<<<1, 32>>>(da, db, dc, dd, swap);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(D, dd, sizeof D, cudaMemcpyDeviceToHost));
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 8; ++j) {
        float want = C[i][j];
        for (int k = 0; k < 16; ++k)
          want += float(A[i][k] * B[k][j]);
        wrong[swap] += D[i][j] != want;
      }
  }
  bool ok = wrong[0] == 0 && wrong[1] > 64;
  std::printf("mma check: %s (kvq_mma_m16n8k16: %d of 128 elements differ "
              "from A.B + C; with a swapped fragment %d, must be > 64)\n",
              ok ? "ok" : "FAIL", wrong[0], wrong[1]);
  return ok ? 0 : 1;
}
