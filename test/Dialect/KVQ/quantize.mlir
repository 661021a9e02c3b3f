// RUN: kvq-opt %s | kvq-opt | FileCheck %s
// RUN: kvq-opt %s --mlir-print-op-generic | kvq-opt | FileCheck %s

// CHECK-LABEL: func.func @token_axis_asymmetric
// CHECK: %{{.*}}, %{{.*}}, %{{.*}} = kvq.quantize %{{.*}} scheme <bits = 2, group = 32, axis = token>
// CHECK-SAME: : tensor<1x8x64x128xf16> -> tensor<1x8x64x128xi8>, tensor<1x8x64x4xf16>, tensor<1x8x64x4xf16>
func.func @token_axis_asymmetric(%v: tensor<1x8x64x128xf16>) -> tensor<1x8x64x128xi8> {
  %c, %s, %z = kvq.quantize %v scheme <bits = 2, group = 32, axis = token>
      : tensor<1x8x64x128xf16> -> tensor<1x8x64x128xi8>, tensor<1x8x64x4xf16>, tensor<1x8x64x4xf16>
  return %c : tensor<1x8x64x128xi8>
}

// Symmetric schemes have no zero points.
// CHECK-LABEL: func.func @channel_axis_symmetric_bf16
// CHECK: %{{.*}}, %{{.*}} = kvq.quantize %{{.*}} scheme <bits = 8, group = 64, axis = channel, mode = symmetric, scale = f32>
// CHECK-SAME: : tensor<2x4x128x64xbf16> -> tensor<2x4x128x64xi8>, tensor<2x4x2x64xf32>{{$}}
func.func @channel_axis_symmetric_bf16(%k: tensor<2x4x128x64xbf16>) -> tensor<2x4x2x64xf32> {
  %c, %s = kvq.quantize %k scheme <bits = 8, group = 64, axis = channel, mode = symmetric, scale = f32>
      : tensor<2x4x128x64xbf16> -> tensor<2x4x128x64xi8>, tensor<2x4x2x64xf32>
  return %s : tensor<2x4x2x64xf32>
}

// After fusion quantize may produce packed words directly.
// CHECK-LABEL: func.func @packed_result_dynamic_tokens
// CHECK: kvq.quantize %{{.*}} scheme <bits = 4, group = head_dim, axis = token>
// CHECK-SAME: : tensor<?x2x?x96xf16> -> tensor<?x2x?x12xi32>, tensor<?x2x?x1xf16>, tensor<?x2x?x1xf16>
func.func @packed_result_dynamic_tokens(%v: tensor<?x2x?x96xf16>) -> tensor<?x2x?x12xi32> {
  %w, %s, %z = kvq.quantize %v scheme <bits = 4, group = head_dim, axis = token>
      : tensor<?x2x?x96xf16> -> tensor<?x2x?x12xi32>, tensor<?x2x?x1xf16>, tensor<?x2x?x1xf16>
  return %w : tensor<?x2x?x12xi32>
}

// Optimized zero points print as a keyword; min-max (the default) is not
// printed.
// CHECK-LABEL: func.func @hqq_zero_points
// CHECK: kvq.quantize %{{.*}} scheme <bits = 4, group = 32, axis = channel> zeroPoints hqq :
// CHECK: kvq.quantize %{{.*}} scheme <bits = 4, group = 32, axis = channel> :
func.func @hqq_zero_points(%k: tensor<1x2x64x64xf16>) -> (tensor<1x2x2x64xf16>, tensor<1x2x2x64xf16>) {
  %c, %s, %z = kvq.quantize %k scheme <bits = 4, group = 32, axis = channel> zeroPoints hqq
      : tensor<1x2x64x64xf16> -> tensor<1x2x64x64xi8>, tensor<1x2x2x64xf16>, tensor<1x2x2x64xf16>
  %c2, %s2, %z2 = kvq.quantize %k scheme <bits = 4, group = 32, axis = channel> zeroPoints minmax
      : tensor<1x2x64x64xf16> -> tensor<1x2x64x64xi8>, tensor<1x2x2x64xf16>, tensor<1x2x2x64xf16>
  return %z, %z2 : tensor<1x2x2x64xf16>, tensor<1x2x2x64xf16>
}

// Given scales in, codes out: per kv head [1, H, 1, 1], with zero points
// when asymmetric; FP8 per tensor [1, 1, 1, 1].
// CHECK-LABEL: func.func @static_scales
// CHECK: kvq.quantize_static %{{.*}}, %{{.*}}, %{{.*}} scheme <bits = 4, group = head_dim, axis = token, scale = f32, static = head> : tensor<2x8x?x128xf16>, tensor<1x8x1x1xf32>, tensor<1x8x1x1xf32> -> tensor<2x8x?x128xi8>
// CHECK: kvq.quantize_static %{{.*}}, %{{.*}} scheme <bits = 8, group = head_dim, axis = token, mode = symmetric, scale = f32, format = e4m3, static = tensor> : tensor<2x8x?x128xf16>, tensor<1x1x1x1xf32> -> tensor<2x8x?x32xi32>
func.func @static_scales(%k: tensor<2x8x?x128xf16>, %s: tensor<1x8x1x1xf32>, %z: tensor<1x8x1x1xf32>, %t: tensor<1x1x1x1xf32>) -> (tensor<2x8x?x128xi8>, tensor<2x8x?x32xi32>) {
  %c = kvq.quantize_static %k, %s, %z scheme <bits = 4, group = head_dim, axis = token, scale = f32, static = head>
      : tensor<2x8x?x128xf16>, tensor<1x8x1x1xf32>, tensor<1x8x1x1xf32> -> tensor<2x8x?x128xi8>
  %w = kvq.quantize_static %k, %t scheme <bits = 8, group = head_dim, axis = token, mode = symmetric, scale = f32, format = e4m3, static = tensor>
      : tensor<2x8x?x128xf16>, tensor<1x1x1x1xf32> -> tensor<2x8x?x32xi32>
  return %c, %w : tensor<2x8x?x128xi8>, tensor<2x8x?x32xi32>
}
