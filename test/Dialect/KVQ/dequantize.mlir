// RUN: kvq-opt %s | kvq-opt | FileCheck %s
// RUN: kvq-opt %s --mlir-print-op-generic | kvq-opt | FileCheck %s

// CHECK-LABEL: func.func @from_codes
// CHECK: kvq.dequantize %{{.*}}, %{{.*}}, %{{.*}} scheme <bits = 4, group = 32, axis = token>
// CHECK-SAME: : tensor<1x2x16x64xi8>, tensor<1x2x16x2xf16>, tensor<1x2x16x2xf16> -> tensor<1x2x16x64xf16>
func.func @from_codes(%c: tensor<1x2x16x64xi8>, %s: tensor<1x2x16x2xf16>, %z: tensor<1x2x16x2xf16>) -> tensor<1x2x16x64xf16> {
  %x = kvq.dequantize %c, %s, %z scheme <bits = 4, group = 32, axis = token>
      : tensor<1x2x16x64xi8>, tensor<1x2x16x2xf16>, tensor<1x2x16x2xf16> -> tensor<1x2x16x64xf16>
  return %x : tensor<1x2x16x64xf16>
}

// CHECK-LABEL: func.func @from_packed_words_symmetric
// CHECK: kvq.dequantize %{{.*}}, %{{.*}} scheme <bits = 2, group = 32, axis = channel, mode = symmetric>
// CHECK-SAME: : tensor<1x2x4x64xi32>, tensor<1x2x2x64xf16> -> tensor<1x2x64x64xbf16>
func.func @from_packed_words_symmetric(%w: tensor<1x2x4x64xi32>, %s: tensor<1x2x2x64xf16>) -> tensor<1x2x64x64xbf16> {
  %x = kvq.dequantize %w, %s scheme <bits = 2, group = 32, axis = channel, mode = symmetric>
      : tensor<1x2x4x64xi32>, tensor<1x2x2x64xf16> -> tensor<1x2x64x64xbf16>
  return %x : tensor<1x2x64x64xbf16>
}
