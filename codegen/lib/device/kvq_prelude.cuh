// kvq device prelude: included by every generated kernel.
// Kept small on purpose: the kernels' logic lives in the generated code; the
// prelude only spells types, memory access macros and a few helpers the
// same way for nvrtc and for the CPU emulator (which defines KVQ_EMULATOR
// and its own access macros first). Embedded in kvq at build time
// (codegen/CMakeLists.txt) and handed to nvrtc as "kvq_prelude.cuh".
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#ifdef __CUDACC_RTC__
// nvrtc has no <cstdint>.
typedef int int32_t;
typedef unsigned int uint32_t;
#else
#include <cstdint>
#endif

// Every global and shared access goes through a macro with a site id, so the
// emulator can trace traffic per access site. Under nvrtc they are plain
// accesses; global loads use the read-only path (ld.global.nc).
#ifndef KVQ_EMULATOR
#define KVQ_LDG(site, ptr, i) __ldg((ptr) + (i))
#define KVQ_LDG2(site, ptr, i)                                                 \
  __ldg(reinterpret_cast<const int2 *>((ptr) + (i)))
#define KVQ_LDG4(site, ptr, i)                                                 \
  __ldg(reinterpret_cast<const int4 *>((ptr) + (i)))
#define KVQ_STG(site, ptr, i, v) ((void)((ptr)[i] = (v)))
#define KVQ_ATOMIC_ADD(site, ptr, i, v) atomicAdd((ptr) + (i), (v))
#define KVQ_LDS(site, ptr, i) ((ptr)[i])
#define KVQ_STS(site, ptr, i, v) ((void)((ptr)[i] = (v)))
#define KVQ_LDS4(site, ptr, i) (*reinterpret_cast<const float4 *>((ptr) + (i)))
#define KVQ_STS4(site, ptr, i, v)                                              \
  ((void)(*reinterpret_cast<float4 *>((ptr) + (i)) = (v)))
#define KVQ_SHARED(type, name, count) __shared__ __align__(16) type name[count]
#endif

// nvrtc does not define INFINITY.
#define KVQ_INF __int_as_float(0x7f800000)
#define KVQ_NAN __int_as_float(0x7fc00000)

__device__ __forceinline__ int kvq_min(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int kvq_max(int a, int b) { return a > b ? a : b; }
// Packed words are unsigned bit fields: shift them as unsigned.
__device__ __forceinline__ int kvq_shr(int word, int shift) {
  return (int)((unsigned)word >> shift);
}
__device__ __forceinline__ int kvq_shl(int code, int shift) {
  return (int)((unsigned)code << shift);
}
// Word k of a 64/128-bit load (k is a constant after unrolling).
__device__ __forceinline__ int kvq_word(int2 v, int k) {
  return k == 0 ? v.x : v.y;
}
__device__ __forceinline__ int kvq_word(int4 v, int k) {
  return k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w;
}
// (a & b) | c as one LOP3 (ptxas leaves an AND and an OR when unpacking).
__device__ __forceinline__ int kvq_and_or(int a, int b, int c) {
#ifdef __CUDA_ARCH__
  int r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
  return r;
#else
  return (a & b) | c;
#endif
}
// One mma.sync.m16n8k16 with `ab` ("f16" or "bf16") A and B, fp32 C and D,
// on the arrays d, a, b, c in scope (sm_80 and later).
#define KVQ_MMA_M16N8K16(ab)                                                   \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." ab "." ab ".f32 "      \
               "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "                \
               "{%10, %11, %12, %13};"                                         \
               : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])                \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]),        \
                 "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]))
// D = A.B + C for one 16x8x16 tile on the tensor cores, every lane of the
// warp taking part: fp16 A (row-major) and B (column-major), fp32
// accumulators, in mma.sync's register fragments (PTX ISA, "Matrix
// Fragments for mma.m16n8k16"; the emulator's kvq_emu::mmaM16N8K16 spells
// the layout out). sm_80 and later run one m16n8k16; sm_75 two m16n8k8
// over k = 0..7 and 8..15 (the same fragments, split).
__device__ __forceinline__ void kvq_mma_m16n8k16(float d[4],
                                                 const unsigned a[4],
                                                 const unsigned b[2],
                                                 const float c[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  KVQ_MMA_M16N8K16("f16");
#elif defined(__CUDA_ARCH__)
  float e[4];
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 "
               "{%0, %1, %2, %3}, {%4, %5}, {%6}, {%7, %8, %9, %10};"
               : "=f"(e[0]), "=f"(e[1]), "=f"(e[2]), "=f"(e[3])
               : "r"(a[0]), "r"(a[1]), "r"(b[0]), "f"(c[0]), "f"(c[1]),
                 "f"(c[2]), "f"(c[3]));
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 "
               "{%0, %1, %2, %3}, {%4, %5}, {%6}, {%7, %8, %9, %10};"
               : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
               : "r"(a[2]), "r"(a[3]), "r"(b[1]), "f"(e[0]), "f"(e[1]),
                 "f"(e[2]), "f"(e[3]));
#elif defined(KVQ_EMULATOR)
  kvq_emu::mmaM16N8K16(d, a, b, c);
#endif
  // (nvcc's host pass sees neither: a device function, never run there.)
}
// The same for bf16 A and B (sm_80 and later; the plan keeps bf16 on the
// CUDA cores for sm_75).
__device__ __forceinline__ void kvq_mma_m16n8k16_bf16(float d[4],
                                                      const unsigned a[4],
                                                      const unsigned b[2],
                                                      const float c[4]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  KVQ_MMA_M16N8K16("bf16");
#elif defined(KVQ_EMULATOR)
  kvq_emu::mmaM16N8K16(d, a, b, c, /*bf16=*/true);
#endif
}
// kvq.mma as the generated code calls it: fragments as ints, accumulators
// as a float4 (one value, so a call can be an expression).
template <bool Bf16>
__device__ __forceinline__ float4 kvq_mma_x2(int a0, int a1, int a2, int a3,
                                             int b0, int b1, float4 c) {
  const unsigned a[4] = {(unsigned)a0, (unsigned)a1, (unsigned)a2,
                         (unsigned)a3};
  const unsigned b[2] = {(unsigned)b0, (unsigned)b1};
  const float in[4] = {c.x, c.y, c.z, c.w};
  float d[4];
  if (Bf16)
    kvq_mma_m16n8k16_bf16(d, a, b, in);
  else
    kvq_mma_m16n8k16(d, a, b, in);
  float4 out;
  out.x = d[0];
  out.y = d[1];
  out.z = d[2];
  out.w = d[3];
  return out;
}
__device__ __forceinline__ float4 kvq_mma_f16(int a0, int a1, int a2, int a3,
                                              int b0, int b1, float4 c) {
  return kvq_mma_x2<false>(a0, a1, a2, a3, b0, b1, c);
}
__device__ __forceinline__ float4 kvq_mma_bf16(int a0, int a1, int a2, int a3,
                                               int b0, int b1, float4 c) {
  return kvq_mma_x2<true>(a0, a1, a2, a3, b0, b1, c);
}
// Two floats rounded to nearest even into one fragment register, `lo` in
// bits 0-15 (cvt.rn.f16x2.f32 / cvt.rn.bf16x2.f32).
__device__ __forceinline__ int kvq_pack_f16x2(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return (int)((unsigned)__half_as_ushort(h.x) | (unsigned)__half_as_ushort(h.y)
                                                     << 16);
}
__device__ __forceinline__ int kvq_pack_bf16x2(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return (int)((unsigned)__bfloat16_as_ushort(h.x) |
               (unsigned)__bfloat16_as_ushort(h.y) << 16);
}
// What kvq_pack_*x2(lo, hi) rounded away, packed the same way: `pair` and
// this together hold lo and hi to about twice the mantissa bits.
__device__ __forceinline__ int kvq_pack_f16x2_error(float lo, float hi,
                                                    int pair) {
  __half2 h = *reinterpret_cast<const __half2 *>(&pair);
  return kvq_pack_f16x2(lo - __low2float(h), hi - __high2float(h));
}
__device__ __forceinline__ int kvq_pack_bf16x2_error(float lo, float hi,
                                                     int pair) {
  __nv_bfloat162 h = *reinterpret_cast<const __nv_bfloat162 *>(&pair);
  return kvq_pack_bf16x2(lo - __low2float(h), hi - __high2float(h));
}
// The low (high) halves of a and b side by side, a's first (one PRMT).
__device__ __forceinline__ int kvq_low_halves(int a, int b) {
#ifdef __CUDA_ARCH__
  return (int)__byte_perm((unsigned)a, (unsigned)b, 0x5410);
#else
  return (int)(((unsigned)a & 0xffffu) | (unsigned)b << 16);
#endif
}
__device__ __forceinline__ int kvq_high_halves(int a, int b) {
#ifdef __CUDA_ARCH__
  return (int)__byte_perm((unsigned)a, (unsigned)b, 0x7632);
#else
  return (int)((unsigned)a >> 16 | ((unsigned)b & 0xffff0000u));
#endif
}
// Bytes of b:a (a's first) picked by the low 3 bits of each nibble of
// `selector` (one PRMT; the selector may be a lane's own value).
__device__ __forceinline__ int kvq_byte_perm(int a, int b, int selector) {
#ifdef __CUDA_ARCH__
  return (int)__byte_perm((unsigned)a, (unsigned)b, (unsigned)selector);
#else
  unsigned long long both =
      (unsigned long long)(unsigned)a | (unsigned long long)(unsigned)b << 32;
  unsigned out = 0;
  for (int i = 0; i < 4; ++i) {
    unsigned which = ((unsigned)selector >> (4 * i)) & 7u;
    out |= (unsigned)((both >> (8 * which)) & 0xffu) << (8 * i);
  }
  return (int)out;
#endif
}
// Two 16-bit values as the register they were loaded in, lo in bits 0-15.
__device__ __forceinline__ int kvq_half_pair(__half lo, __half hi) {
  return (int)((unsigned)__half_as_ushort(lo) |
               (unsigned)__half_as_ushort(hi) << 16);
}
__device__ __forceinline__ int kvq_half_pair(__nv_bfloat16 lo,
                                             __nv_bfloat16 hi) {
  return (int)((unsigned)__bfloat16_as_ushort(lo) |
               (unsigned)__bfloat16_as_ushort(hi) << 16);
}
// Half k (0 the low, 1 the high) of an fp16 pair as a double: the host
// versions of the pair helpers compute in double and round once.
__device__ __forceinline__ double kvq_pair_half(int pair, int k) {
  return (double)__half2float(__ushort_as_half(
      (unsigned short)(((unsigned)pair >> (16 * k)) & 0xffffu)));
}
// Two fp16 pairs multiplied, each product rounded once (HMUL2); and what
// that rounding left, a * b - product rounded once (HFMA2: the product is
// exact inside the fused operation). The emulator computes both in double
// (exact: 11-bit by 11-bit products) and rounds once.
__device__ __forceinline__ int kvq_mul_f16x2(int a, int b) {
#ifdef __CUDA_ARCH__
  __half2 v = __hmul2(*reinterpret_cast<const __half2 *>(&a),
                      *reinterpret_cast<const __half2 *>(&b));
  return *reinterpret_cast<const int *>(&v);
#else
  auto product = [&](int k) {
    return (unsigned)__half_as_ushort(
        __double2half(kvq_pair_half(a, k) * kvq_pair_half(b, k)));
  };
  return (int)(product(0) | product(1) << 16);
#endif
}
__device__ __forceinline__ int kvq_mul_f16x2_error(int a, int b, int product) {
#ifdef __CUDA_ARCH__
  __half2 v = __hfma2(*reinterpret_cast<const __half2 *>(&a),
                      *reinterpret_cast<const __half2 *>(&b),
                      __hneg2(*reinterpret_cast<const __half2 *>(&product)));
  return *reinterpret_cast<const int *>(&v);
#else
  auto error = [&](int k) {
    return (unsigned)__half_as_ushort(
        __double2half(kvq_pair_half(a, k) * kvq_pair_half(b, k) -
                      kvq_pair_half(product, k)));
  };
  return (int)(error(0) | error(1) << 16);
#endif
}
// Two codes held as fp16 (1024 + code each) to (code - centre) * scale
// (+ zero), rounded once to fp16: HSUB2 (exact), then HFMA2 / HMUL2. The
// emulator computes the same in double (exact) and rounds once.
__device__ __forceinline__ int kvq_dequantize_pair(int codes, int scales,
                                                   int zeros, float centre) {
#ifdef __CUDA_ARCH__
  __half2 c = *reinterpret_cast<const __half2 *>(&codes);
  __half2 s = *reinterpret_cast<const __half2 *>(&scales);
  __half2 z = *reinterpret_cast<const __half2 *>(&zeros);
  __half2 v = __hfma2(__hsub2(c, __float2half2_rn(1024.0f + centre)), s, z);
  return *reinterpret_cast<const int *>(&v);
#else
  auto value = [&](int k) {
    // Exact in double (8-bit codes, 11-bit fp16 values, unless scale and
    // zero lie over 2^30 apart), then rounded once.
    return (unsigned)__half_as_ushort(__double2half(
        (kvq_pair_half(codes, k) - 1024.0 - centre) * kvq_pair_half(scales, k) +
        kvq_pair_half(zeros, k)));
  };
  return (int)(value(0) | value(1) << 16);
#endif
}
// Two codes held as fp16 (1024 + code each) to the exact integers
// code - centre (one HSUB2).
__device__ __forceinline__ int kvq_pair_codes(int codes, float centre) {
#ifdef __CUDA_ARCH__
  __half2 c = *reinterpret_cast<const __half2 *>(&codes);
  __half2 v = __hsub2(c, __float2half2_rn(1024.0f + centre));
  return *reinterpret_cast<const int *>(&v);
#else
  return kvq_dequantize_pair(codes, 0x3C003C00, 0, centre); // scale 1
#endif
}
// An 8x8 matrix of 16-bit values transposed across the warp: lane 4g + t
// gives elements (g, 2t..2t+1) and gets (2t..2t+1, g) (movmatrix, sm_75+).
__device__ __forceinline__ int kvq_transpose_pairs(int pair) {
#if defined(__CUDA_ARCH__)
  int r;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;"
               : "=r"(r)
               : "r"(pair));
  return r;
#elif defined(KVQ_EMULATOR)
  return (int)kvq_emu::transposePairs((unsigned)pair);
#else
  return pair;
#endif
}
// 2^x in one MUFU.EX2 (ex2.approx.ftz: results below 2^-126 are zero);
// __expf would add a range test and two multiplies to keep subnormal
// results, which a softmax weight that small never needs.
__device__ __forceinline__ float kvq_exp2(float x) {
#ifdef __CUDA_ARCH__
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#else
  float y = exp2f(x);
  return y < 1.17549435e-38f ? 0.0f : y; // flushed like the GPU's
#endif
}
// A code as a float, exactly, less `centre`: `bits` is code | 0x4B000000,
// the fp32 pattern of 2^23 + code, so one FADD of 2^23 + centre (folded)
// replaces a quarter-rate int-to-float conversion.
__device__ __forceinline__ float kvq_code_from_bits(int bits, float centre) {
  return __int_as_float(bits) - (8388608.0f + centre);
}
// x's OCP FP8 byte (E4M3: 3 mantissa bits, bias 7, largest 448; E5M2: 2,
// 15, 57344): nearest even, saturating at the largest finite value like
// CUDA's __NV_SATFINITE conversion (what vLLM stores); NaN gives 0x7F with
// x's sign. Float steps that are all exact (scaling by powers of two,
// rintf), so the GPU, the emulator and ref::toFp8Bits agree bit for bit on
// every architecture, sm_89's cvt.satfinite or not.
__device__ __forceinline__ int kvq_fp8_from_float(float x, int mantissa,
                                                  int bias, float largest) {
  int sign = (__float_as_int(x) >> 24) & 0x80;
  if (x != x)
    return sign | 0x7F;
  float a = fminf(fabsf(x), largest);
  if (a == 0.0f)
    return sign;
  // The binade of a (fp32 subnormals sit far below the smallest FP8
  // binade, which takes them), and its spacing of FP8 values.
  int e = kvq_max(((__float_as_int(a) >> 23) & 0xFF) - 127, 1 - bias);
  float quantum = __int_as_float((e - mantissa + 127) << 23);
  float units = rintf(a / quantum);
  int one = 1 << mantissa;
  if (units >= 2.0f * one) { // rounded up into the next binade
    units *= 0.5f;
    ++e;
  }
  int code = (int)units;
  if (code < one) // subnormal
    return sign | code;
  return sign | ((e + bias) << mantissa) | (code - one);
}
__device__ __forceinline__ int kvq_e4m3_from_float(float x) {
  return kvq_fp8_from_float(x, 3, 7, 448.0f);
}
__device__ __forceinline__ int kvq_e5m2_from_float(float x) {
  return kvq_fp8_from_float(x, 2, 15, 57344.0f);
}
// An FP8 byte's value, exactly (NaN and infinity codes as such).
// E5M2 is the top byte of an fp16: a shift and a half-to-float conversion.
__device__ __forceinline__ float kvq_e5m2_to_float(int code) {
#ifdef __CUDA_ARCH__
  return __half2float(__ushort_as_half((unsigned short)(code << 8)));
#else
  return kvq_emu::halfBitsToFloat((unsigned)code << 8);
#endif
}
// E4M3: its exponent and mantissa bits at the top of an fp32's exponent
// field make a float 2^120 too small (subnormals included), which one exact
// multiply rescales; 0x7F and 0xFF are NaN.
__device__ __forceinline__ float kvq_e4m3_to_float(int code) {
  int magnitude = code & 0x7F;
  float x = __int_as_float(((code & 0x80) << 24) | (magnitude << 20)) *
            1.329227995784915872903807060280344576e36f; // 2^120
  return magnitude == 0x7F ? KVQ_NAN : x;
}
// Four floats as one 128-bit shared-memory value, and lane k of one.
__device__ __forceinline__ float4 kvq_float4(float a, float b, float c,
                                             float d) {
  float4 v;
  v.x = a;
  v.y = b;
  v.z = c;
  v.w = d;
  return v;
}
__device__ __forceinline__ float kvq_lane(float4 v, int k) {
  return k == 0 ? v.x : k == 1 ? v.y : k == 2 ? v.z : v.w;
}
// Half k of a 64/128-bit load of 4/8 fp16 or bf16 values (little endian:
// the even half is the low 16 bits of its word).
template <typename V>
__device__ __forceinline__ unsigned short kvq_half_bits(V v, int k) {
  unsigned word = (unsigned)kvq_word(v, k >> 1);
  return (unsigned short)((k & 1) ? word >> 16 : word & 0xffffu);
}
template <typename V> __device__ __forceinline__ __half kvq_f16(V v, int k) {
  return __ushort_as_half(kvq_half_bits(v, k));
}
template <typename V>
__device__ __forceinline__ __nv_bfloat16 kvq_bf16(V v, int k) {
  return __ushort_as_bfloat16(kvq_half_bits(v, k));
}
