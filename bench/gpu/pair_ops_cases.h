// Hand-computed cases for the prelude's register helpers that the
// tensor-core attention unpacks and scales with (kvq_byte_perm,
// kvq_mul_f16x2, kvq_mul_f16x2_error), shared by EmulatorTest (the CPU
// emulator's host versions) and bench/gpu/mma_check.cu (PRMT, HMUL2 and
// HFMA2 on a GPU): both
// must give these bits. Plain C++, no CUDA, no kvq.
#pragma once

namespace kvq_pair_test {

struct PermuteCase {
  unsigned a, b, selector, expected;
};

/// __byte_perm: byte i of the result is byte (selector >> 4i) & 7 of b:a.
constexpr PermuteCase kPermutes[] = {
    {0x33221100u, 0x77665544u, 0x5410u, 0x55441100u}, // low halves
    {0x33221100u, 0x77665544u, 0x7632u, 0x77663322u}, // high halves
    {0x33221100u, 0x77665544u, 0x3210u, 0x33221100u}, // a
    {0x33221100u, 0x77665544u, 0x0765u, 0x00776655u}, // mixed
};

struct MultiplyCase {
  /// fp16 pairs (low half first): a * b, its rounding to fp16 and what
  /// that rounding left, rounded to fp16.
  unsigned a, b, product, error;
};

/// Low halves: (1 + 2^-10)^2 = 1 + 2^-9 + 2^-20 rounds to 1 + 2^-9
/// (0x3C02), leaving 2^-20, an fp16 subnormal (0x0010). High halves:
/// 3 * 0.0999755859375 (0x2E66) = 0.2999267578125 lies halfway between
/// fp16 0.2998046875 (0x34CC, even) and the next: ties go to even, leaving
/// 2^-13 (0x0800).
constexpr MultiplyCase kMultiplies[] = {
    {0x42003C01u, 0x2E663C01u, 0x34CC3C02u, 0x08000010u},
    // Signs, exact products: (-2) * 0.5 = -1 (0xBC00), 1 * -0.5 = -0.5
    // (0xB800); nothing left (+0).
    {0x3C00C000u, 0xB8003800u, 0xB800BC00u, 0x00000000u},
};

constexpr int kPermuteCount = sizeof kPermutes / sizeof kPermutes[0];
constexpr int kCases =
    kPermuteCount + sizeof kMultiplies / sizeof kMultiplies[0];

/// What case i runs (the operand in[4i] holds it).
enum Kind : unsigned { kPermute, kMultiply };

/// Case i's operands at in[4i..4i+3]: its kind, then a and b and the
/// selector (a permutation), or the two fp16 pairs (a product). A kernel
/// running case i writes two results to out[2i..2i+1]: the permutation and
/// 0, or the product and its error; `expected` gets what they must be.
inline void fillCases(unsigned in[4 * kCases], unsigned expected[2 * kCases]) {
  for (int i = 0; i < kCases; ++i) {
    unsigned *op = in + 4 * i, *want = expected + 2 * i;
    if (i < kPermuteCount) {
      const PermuteCase &c = kPermutes[i];
      op[0] = kPermute, op[1] = c.a, op[2] = c.b, op[3] = c.selector;
      want[0] = c.expected, want[1] = 0;
    } else {
      const MultiplyCase &c = kMultiplies[i - kPermuteCount];
      op[0] = kMultiply, op[1] = c.a, op[2] = c.b, op[3] = 0;
      want[0] = c.product, want[1] = c.error;
    }
  }
}

} // namespace kvq_pair_test
