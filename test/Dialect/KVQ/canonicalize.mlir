// RUN: kvq-opt %s --canonicalize --split-input-file | FileCheck %s

// unpack(pack(c)) is c: packing codes that are in range is lossless.
// CHECK-LABEL: func.func @unpack_of_pack
// CHECK-SAME: (%[[C:.*]]: tensor<1x2x64x64xi8>)
// CHECK-NOT: kvq.pack
// CHECK-NOT: kvq.unpack
// CHECK: return %[[C]]
func.func @unpack_of_pack(%c: tensor<1x2x64x64xi8>) -> tensor<1x2x64x64xi8> {
  %w = kvq.pack %c scheme <bits = 2, group = 32, axis = channel> : tensor<1x2x64x64xi8> -> tensor<1x2x4x64xi32>
  %u = kvq.unpack %w scheme <bits = 2, group = 32, axis = channel> : tensor<1x2x4x64xi32> -> tensor<1x2x64x64xi8>
  return %u : tensor<1x2x64x64xi8>
}

// -----

// CHECK-LABEL: func.func @pack_of_unpack
// CHECK-SAME: (%[[W:.*]]: tensor<1x2x4x8xi32>)
// CHECK-NEXT: return %[[W]]
func.func @pack_of_unpack(%w: tensor<1x2x4x8xi32>) -> tensor<1x2x4x8xi32> {
  %c = kvq.unpack %w scheme <bits = 4, group = 32, axis = token> : tensor<1x2x4x8xi32> -> tensor<1x2x4x64xi8>
  %p = kvq.pack %c scheme <bits = 4, group = 32, axis = token> : tensor<1x2x4x64xi8> -> tensor<1x2x4x8xi32>
  return %p : tensor<1x2x4x8xi32>
}

// -----

// A different pack order is a different layout: not folded.
// CHECK-LABEL: func.func @different_order_kept
// CHECK: kvq.unpack
// CHECK: kvq.pack
func.func @different_order_kept(%w: tensor<1x2x4x8xi32>) -> tensor<1x2x4x8xi32> {
  %c = kvq.unpack %w scheme <bits = 4, group = 32, axis = token> : tensor<1x2x4x8xi32> -> tensor<1x2x4x64xi8>
  %p = kvq.pack %c scheme <bits = 4, group = 32, axis = token, order = interleaved> : tensor<1x2x4x64xi8> -> tensor<1x2x4x8xi32>
  return %p : tensor<1x2x4x8xi32>
}

// -----

// dequantize(quantize(x)) is NOT x: quantization loses information, so the
// pair must survive canonicalization.
// CHECK-LABEL: func.func @dequantize_of_quantize_is_not_folded
// CHECK: %[[C:.*]], %[[S:.*]], %[[Z:.*]] = kvq.quantize
// CHECK: %[[X:.*]] = kvq.dequantize %[[C]], %[[S]], %[[Z]]
// CHECK: return %[[X]]
func.func @dequantize_of_quantize_is_not_folded(%x: tensor<1x2x4x64xf16>) -> tensor<1x2x4x64xf16> {
  %c, %s, %z = kvq.quantize %x scheme <bits = 4, group = 32, axis = token>
      : tensor<1x2x4x64xf16> -> tensor<1x2x4x64xi8>, tensor<1x2x4x2xf16>, tensor<1x2x4x2xf16>
  %y = kvq.dequantize %c, %s, %z scheme <bits = 4, group = 32, axis = token>
      : tensor<1x2x4x64xi8>, tensor<1x2x4x2xf16>, tensor<1x2x4x2xf16> -> tensor<1x2x4x64xf16>
  return %y : tensor<1x2x4x64xf16>
}

// -----

// Unused pure ops disappear.
// CHECK-LABEL: func.func @dead_quantize
// CHECK-NOT: kvq.
// CHECK: return
func.func @dead_quantize(%x: tensor<1x2x4x64xf16>) {
  %c, %s, %z = kvq.quantize %x scheme <bits = 4, group = 32, axis = token>
      : tensor<1x2x4x64xf16> -> tensor<1x2x4x64xi8>, tensor<1x2x4x2xf16>, tensor<1x2x4x2xf16>
  return
}
