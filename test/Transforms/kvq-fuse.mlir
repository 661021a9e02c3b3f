// RUN: kvq-opt %s --kvq-fuse --split-input-file | FileCheck %s

// quantize + pack -> one quantize producing words.
// CHECK-LABEL: func.func @quantize_then_pack
// CHECK: %[[W:.*]], %[[S:.*]], %[[Z:.*]] = kvq.quantize %{{.*}} scheme <bits = 4, group = 64, axis = token>
// CHECK-SAME: -> tensor<1x8x64x16xi32>, tensor<1x8x64x2xf16>, tensor<1x8x64x2xf16>
// CHECK-NOT: kvq.pack
// CHECK: return %[[W]], %[[S]], %[[Z]]
func.func @quantize_then_pack(%x: tensor<1x8x64x128xf16>) -> (tensor<1x8x64x16xi32>, tensor<1x8x64x2xf16>, tensor<1x8x64x2xf16>) {
  %c, %s, %z = kvq.quantize %x scheme <bits = 4, group = 64, axis = token>
      : tensor<1x8x64x128xf16> -> tensor<1x8x64x128xi8>, tensor<1x8x64x2xf16>, tensor<1x8x64x2xf16>
  %w = kvq.pack %c scheme <bits = 4, group = 64, axis = token> : tensor<1x8x64x128xi8> -> tensor<1x8x64x16xi32>
  return %w, %s, %z : tensor<1x8x64x16xi32>, tensor<1x8x64x2xf16>, tensor<1x8x64x2xf16>
}

// -----

// If the unpacked codes have another user, fusing would quantize twice.
// CHECK-LABEL: func.func @codes_used_elsewhere
// CHECK: kvq.quantize {{.*}} -> tensor<1x2x4x64xi8>
// CHECK: kvq.pack
func.func @codes_used_elsewhere(%x: tensor<1x2x4x64xf16>) -> (tensor<1x2x4x8xi32>, tensor<1x2x4x64xi8>) {
  %c, %s, %z = kvq.quantize %x scheme <bits = 4, group = 32, axis = token>
      : tensor<1x2x4x64xf16> -> tensor<1x2x4x64xi8>, tensor<1x2x4x2xf16>, tensor<1x2x4x2xf16>
  %w = kvq.pack %c scheme <bits = 4, group = 32, axis = token> : tensor<1x2x4x64xi8> -> tensor<1x2x4x8xi32>
  return %w, %c : tensor<1x2x4x8xi32>, tensor<1x2x4x64xi8>
}

// -----

// Symmetric: no zero points to carry over.
// CHECK-LABEL: func.func @symmetric_quantize_then_pack
// CHECK: %[[W:.*]], %[[S:.*]] = kvq.quantize {{.*}} -> tensor<1x2x8x64xi32>, tensor<1x2x1x64xf16>{{$}}
// CHECK: return %[[W]], %[[S]]
func.func @symmetric_quantize_then_pack(%x: tensor<1x2x32x64xf16>) -> (tensor<1x2x8x64xi32>, tensor<1x2x1x64xf16>) {
  %c, %s = kvq.quantize %x scheme <bits = 8, group = 32, axis = channel, mode = symmetric>
      : tensor<1x2x32x64xf16> -> tensor<1x2x32x64xi8>, tensor<1x2x1x64xf16>
  %w = kvq.pack %c scheme <bits = 8, group = 32, axis = channel, mode = symmetric> : tensor<1x2x32x64xi8> -> tensor<1x2x8x64xi32>
  return %w, %s : tensor<1x2x8x64xi32>, tensor<1x2x1x64xf16>
}

// -----

// dequantize(unpack(w)) reads the words directly.
// CHECK-LABEL: func.func @unpack_then_dequantize
// CHECK-SAME: (%[[W:[^:]*]]: tensor<1x2x4x8xi32>
// CHECK-NOT: kvq.unpack
// CHECK: kvq.dequantize %[[W]],
func.func @unpack_then_dequantize(%w: tensor<1x2x4x8xi32>, %s: tensor<1x2x4x2xf16>, %z: tensor<1x2x4x2xf16>) -> tensor<1x2x4x64xf16> {
  %c = kvq.unpack %w scheme <bits = 4, group = 32, axis = token> : tensor<1x2x4x8xi32> -> tensor<1x2x4x64xi8>
  %x = kvq.dequantize %c, %s, %z scheme <bits = 4, group = 32, axis = token>
      : tensor<1x2x4x64xi8>, tensor<1x2x4x2xf16>, tensor<1x2x4x2xf16> -> tensor<1x2x4x64xf16>
  return %x : tensor<1x2x4x64xf16>
}

// -----

// attention over dequantized K and V -> quantized_attention; the dequantized
// tensors are never materialized.
// CHECK-LABEL: func.func @kivi_attention
// CHECK-SAME: (%[[Q:[^:]*]]: tensor<1x8x64xf16>, %[[KW:[^:]*]]: tensor<1x2x4x64xi32>, %[[KS:[^:]*]]: tensor<1x2x2x64xf16>, %[[KZ:[^:]*]]: tensor<1x2x2x64xf16>, %[[VW:[^:]*]]: tensor<1x2x64x4xi32>, %[[VS:[^:]*]]: tensor<1x2x64x2xf16>, %[[VZ:[^:]*]]: tensor<1x2x64x2xf16>, %[[SK:[^:]*]]: tensor<1x2x4x64xf16>, %[[SV:[^:]*]]: tensor<1x2x4x64xf16>, %[[RK:[^:]*]]: tensor<1x2x32x64xf16>, %[[RV:[^:]*]]: tensor<1x2x32x64xf16>, %[[L:[^:]*]]: tensor<1x3xi32>)
// CHECK-NOT: kvq.dequantize
// CHECK: %[[O:.*]] = kvq.quantized_attention %[[Q]], keys(%[[KW]], %[[KS]], %[[KZ]]) scheme <bits = 2, group = 32, axis = channel>,
// CHECK-SAME: values(%[[VW]], %[[VS]], %[[VZ]]) scheme <bits = 2, group = 32, axis = token>
// CHECK-SAME: sink(%[[SK]], %[[SV]]) residual(%[[RK]], %[[RV]]) lengths(%[[L]]) scale 1.250000e-01
// CHECK: return %[[O]]
func.func @kivi_attention(%q: tensor<1x8x64xf16>,
    %kw: tensor<1x2x4x64xi32>, %ks: tensor<1x2x2x64xf16>, %kz: tensor<1x2x2x64xf16>,
    %vw: tensor<1x2x64x4xi32>, %vs: tensor<1x2x64x2xf16>, %vz: tensor<1x2x64x2xf16>,
    %sk: tensor<1x2x4x64xf16>, %sv: tensor<1x2x4x64xf16>,
    %rk: tensor<1x2x32x64xf16>, %rv: tensor<1x2x32x64xf16>,
    %l: tensor<1x3xi32>) -> tensor<1x8x64xf16> {
  %kc = kvq.unpack %kw scheme <bits = 2, group = 32, axis = channel> : tensor<1x2x4x64xi32> -> tensor<1x2x64x64xi8>
  %k = kvq.dequantize %kc, %ks, %kz scheme <bits = 2, group = 32, axis = channel>
      : tensor<1x2x64x64xi8>, tensor<1x2x2x64xf16>, tensor<1x2x2x64xf16> -> tensor<1x2x64x64xf16>
  %v = kvq.dequantize %vw, %vs, %vz scheme <bits = 2, group = 32, axis = token>
      : tensor<1x2x64x4xi32>, tensor<1x2x64x2xf16>, tensor<1x2x64x2xf16> -> tensor<1x2x64x64xf16>
  %o = kvq.attention %q, keys(%k), values(%v) sink(%sk, %sv) residual(%rk, %rv) lengths(%l) scale 0.125
      : (tensor<1x8x64xf16>, tensor<1x2x64x64xf16>, tensor<1x2x64x64xf16>, tensor<1x2x4x64xf16>,
         tensor<1x2x4x64xf16>, tensor<1x2x32x64xf16>, tensor<1x2x32x64xf16>, tensor<1x3xi32>) -> tensor<1x8x64xf16>
  return %o : tensor<1x8x64xf16>
}

// -----

// Only the keys are quantized: left alone rather than half fused.
// CHECK-LABEL: func.func @fp16_values_not_fused
// CHECK: kvq.dequantize
// CHECK: kvq.attention
// CHECK-NOT: kvq.quantized_attention
func.func @fp16_values_not_fused(%q: tensor<1x2x64xf16>,
    %kw: tensor<1x2x16x8xi32>, %ks: tensor<1x2x16x2xf16>, %kz: tensor<1x2x16x2xf16>,
    %v: tensor<1x2x16x64xf16>, %l: tensor<1x3xi32>) -> tensor<1x2x64xf16> {
  %k = kvq.dequantize %kw, %ks, %kz scheme <bits = 4, group = 32, axis = token>
      : tensor<1x2x16x8xi32>, tensor<1x2x16x2xf16>, tensor<1x2x16x2xf16> -> tensor<1x2x16x64xf16>
  %o = kvq.attention %q, keys(%k), values(%v) lengths(%l) scale 0.125
      : (tensor<1x2x64xf16>, tensor<1x2x16x64xf16>, tensor<1x2x16x64xf16>, tensor<1x3xi32>) -> tensor<1x2x64xf16>
  return %o : tensor<1x2x64xf16>
}
