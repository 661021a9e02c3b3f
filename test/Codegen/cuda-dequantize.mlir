// RUN: kvq-translate %s --to=cuda | FileCheck %s
// RUN: kvq-translate %s --to=cuda | FileCheck %s --check-prefix=UNPACK

// 4-bit interleaved order: code 2i sits in slot i, code 2i+1 in slot i+4,
// so the loop over a word's codes computes each code's slot, j / 2 +
// (j % 2) * 4, and shifts the word by 4 bits a slot.
// CHECK: void kvq_dequant_4t32i_d64_f16(int32_t* words, __half* scales, __half* zeros, __half* output,
// CHECK: int32_t word = KVQ_LDG(0, words,
// CHECK: for (int32_t code_index = 0; code_index < 8; code_index += 1) {
// CHECK: [[HALF:v[0-9]+]] = kvq_shr(code_index, 1);
// CHECK: [[ODD:v[0-9]+]] = code_index & 1;
// CHECK: [[HIGH:v[0-9]+]] = [[ODD]] * 4;
// CHECK: int32_t slot = [[HALF]] + [[HIGH]];
// CHECK: int32_t shift = slot * 4;
// CHECK: [[SHIFTED:v[0-9]+]] = kvq_shr(word, shift);
// A masked code and the 2^23 exponent bits are one kvq_and_or (one LOP3);
// the prelude's kvq_code_from_bits reads the float 2^23 + code and takes
// 2^23 off: the code as a float, exactly, without an int conversion.
// CHECK: [[BITS:v[0-9]+]] = kvq_and_or([[SHIFTED]], 0xF, 0x4B000000);
// CHECK: float code = kvq_code_from_bits([[BITS]], 0.0f);
// CHECK: float value = {{v[0-9]+}} + zero;
// CHECK: KVQ_STG(3, output,
// UNPACK-NOT: __int_as_float
func.func @dequantize(%w: tensor<?x?x?x8xi32>, %s: tensor<?x?x?x2xf16>, %z: tensor<?x?x?x2xf16>) -> tensor<?x?x?x64xf16> {
  %x = kvq.dequantize %w, %s, %z scheme <bits = 4, group = 32, axis = token, order = interleaved>
      : tensor<?x?x?x8xi32>, tensor<?x?x?x2xf16>, tensor<?x?x?x2xf16> -> tensor<?x?x?x64xf16>
  return %x : tensor<?x?x?x64xf16>
}
