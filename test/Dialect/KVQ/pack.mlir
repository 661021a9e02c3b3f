// RUN: kvq-opt %s | kvq-opt | FileCheck %s
// RUN: kvq-opt %s --mlir-print-op-generic | kvq-opt | FileCheck %s

// Token axis: 32/bits codes of consecutive channels per word.
// CHECK-LABEL: func.func @token_axis
// CHECK: %[[W:.*]] = kvq.pack %{{.*}} scheme <bits = 4, group = 64, axis = token> : tensor<1x8x64x128xi8> -> tensor<1x8x64x16xi32>
// CHECK: kvq.unpack %[[W]] scheme <bits = 4, group = 64, axis = token> : tensor<1x8x64x16xi32> -> tensor<1x8x64x128xi8>
func.func @token_axis(%c: tensor<1x8x64x128xi8>) -> tensor<1x8x64x128xi8> {
  %w = kvq.pack %c scheme <bits = 4, group = 64, axis = token> : tensor<1x8x64x128xi8> -> tensor<1x8x64x16xi32>
  %u = kvq.unpack %w scheme <bits = 4, group = 64, axis = token> : tensor<1x8x64x16xi32> -> tensor<1x8x64x128xi8>
  return %u : tensor<1x8x64x128xi8>
}

// Channel axis: 32/bits consecutive tokens of one channel per word.
// CHECK-LABEL: func.func @channel_axis
// CHECK: kvq.pack %{{.*}} scheme <bits = 2, group = 32, axis = channel, order = interleaved> : tensor<1x8x64x128xi8> -> tensor<1x8x4x128xi32>
func.func @channel_axis(%c: tensor<1x8x64x128xi8>) -> tensor<1x8x4x128xi32> {
  %w = kvq.pack %c scheme <bits = 2, group = 32, axis = channel, order = interleaved> : tensor<1x8x64x128xi8> -> tensor<1x8x4x128xi32>
  return %w : tensor<1x8x4x128xi32>
}

// CHECK-LABEL: func.func @eight_bit_dynamic
// CHECK: kvq.pack %{{.*}} scheme <bits = 8, group = 16, axis = channel> : tensor<?x4x?x64xi8> -> tensor<?x4x?x64xi32>
func.func @eight_bit_dynamic(%c: tensor<?x4x?x64xi8>) -> tensor<?x4x?x64xi32> {
  %w = kvq.pack %c scheme <bits = 8, group = 16, axis = channel> : tensor<?x4x?x64xi8> -> tensor<?x4x?x64xi32>
  return %w : tensor<?x4x?x64xi32>
}
