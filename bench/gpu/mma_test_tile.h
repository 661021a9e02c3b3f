// The 16x8x16 tile both tensor-core checks use: EmulatorTest's (on the CPU
// emulator) and bench/gpu/mma_check.cu (on a GPU, built by device-run.sh
// with nvcc next to the prelude). Distinct small integers, exact in fp16 and
// in fp32 sums, so D = A.B + C must come out bit for bit, and a fragment in
// the wrong place changes it. A second tile holds A as fp16 subnormals, the
// way the tensor-core attention enters channel-axis key codes (code x
// 2^(s - 24), s the code's first bit in its byte): the MMA must keep them,
// not flush them to zero. Plain C++, no CUDA, no kvq.
#pragma once

namespace kvq_mma_test {

/// The fp16 bit pattern of a small integer (exact).
inline unsigned short halfOf(int x) {
  if (x == 0)
    return 0;
  unsigned sign = x < 0 ? 0x8000 : 0, m = unsigned(x < 0 ? -x : x);
  int e = 0;
  while ((m >> e) > 1)
    ++e;
  return (unsigned short)(sign | unsigned(e + 15) << 10 |
                          ((m << (10 - e)) & 0x3FF));
}

/// Subnormal tiles: A's codes sit at bit 2 of fp16's mantissa with a zero
/// exponent, so A[i][k] stands for A[i][k] x 2^-22.
constexpr int kSubnormalShift = 2;
constexpr float kSubnormalUnit = 1.0f / (1 << 22);

struct Tile {
  int A[16][16], B[16][8];
  float C[16][8];
  /// A row-major and B column-major (b[j * 8 + w] holds B[2w][j] and
  /// B[2w + 1][j]), two fp16 a word, the lower index in the low half.
  unsigned a[16 * 8], b[8 * 8];
  /// A's elements are 4-bit codes entered as subnormals (code x 2^-22),
  /// C in multiples of 2^-22: still exact sums.
  bool subnormal;

  explicit Tile(bool subnormal = false) : subnormal(subnormal) {
    for (int i = 0; i < 16; ++i)
      for (int k = 0; k < 16; ++k)
        A[i][k] = subnormal ? (i * 3 + k * 5) % 16 : (i * 3 + k * 5) % 17 - 8;
    for (int k = 0; k < 16; ++k)
      for (int j = 0; j < 8; ++j)
        B[k][j] = (k * 7 + j * 11) % 13 - 6;
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 8; ++j)
        C[i][j] = float(i * 8 + j) * unit();
    auto bitsOfA = [&](int x) {
      return subnormal ? unsigned(x) << kSubnormalShift : unsigned(halfOf(x));
    };
    for (int i = 0; i < 16; ++i)
      for (int w = 0; w < 8; ++w)
        a[i * 8 + w] = bitsOfA(A[i][2 * w]) | bitsOfA(A[i][2 * w + 1]) << 16;
    for (int j = 0; j < 8; ++j)
      for (int w = 0; w < 8; ++w)
        b[j * 8 + w] = halfOf(B[2 * w][j]) | unsigned(halfOf(B[2 * w + 1][j]))
                                                 << 16;
  }

  /// What one unit of A stands for: 1, or 2^-22 for subnormal codes.
  float unit() const { return subnormal ? kSubnormalUnit : 1.0f; }

  /// (A.B + C)[i][j], exactly.
  float expected(int i, int j) const {
    float sum = C[i][j];
    for (int k = 0; k < 16; ++k)
      sum += float(A[i][k] * B[k][j]) * unit();
    return sum;
  }

  /// Elements of `d` (16x8 row-major) that differ from A.B + C.
  int mismatches(const float *d) const {
    int wrong = 0;
    for (int i = 0; i < 16; ++i)
      for (int j = 0; j < 8; ++j)
        wrong += d[i * 8 + j] != expected(i, j);
    return wrong;
  }
};

} // namespace kvq_mma_test
