// RUN: kvq-translate %s --to=cuda | FileCheck %s
// RUN: kvq-translate %s --to=cuda | FileCheck %s --check-prefix=UNPACK

// 4-bit interleaved order: code 2i sits in slot i, code 2i+1 in slot i+4,
// so codes come out of the word at bit offsets 0, 16, 4, 20, 8, 24, 12, 28.
// CHECK: void kvq_dequant_4t32i_d64_f16(int32_t* words, __half* scales, __half* zeros, __half* output,
// CHECK: KVQ_LDG(0, words,
// A masked code and the 2^23 exponent bits are one kvq_and_or (one LOP3).
// CHECK: = kvq_and_or({{[a-z_0-9]+}}, 0xF, 0x4B000000);
// CHECK: kvq_shr({{.*}}, 16)
// CHECK: kvq_shr({{.*}}, 4)
// CHECK: kvq_shr({{.*}}, 20)
// CHECK: kvq_shr({{.*}}, 8)
// CHECK: kvq_shr({{.*}}, 24)
// CHECK: kvq_shr({{.*}}, 12)
// CHECK: kvq_shr({{.*}}, 28)
// The top code needs no mask; it becomes a float through the mantissa of
// 2^23 (OR 0x4B000000, reinterpret, subtract 2^23), not an int conversion.
// UNPACK: [[TOP:v[0-9]+]] = kvq_shr({{.*}}, 28);
// UNPACK-NOT: kvq_and_or([[TOP]]
// UNPACK: [[MAGIC:v[0-9]+]] = [[TOP]] | 0x4B000000;
// UNPACK: [[F:v[0-9]+]] = __int_as_float([[MAGIC]]);
// UNPACK: {{v[0-9]+}} = [[F]] - 8388608.0f;
func.func @dequantize(%w: tensor<?x?x?x8xi32>, %s: tensor<?x?x?x2xf16>, %z: tensor<?x?x?x2xf16>) -> tensor<?x?x?x64xf16> {
  %x = kvq.dequantize %w, %s, %z scheme <bits = 4, group = 32, axis = token, order = interleaved>
      : tensor<?x?x?x8xi32>, tensor<?x?x?x2xf16>, tensor<?x?x?x2xf16> -> tensor<?x?x?x64xf16>
  return %x : tensor<?x?x?x64xf16>
}
