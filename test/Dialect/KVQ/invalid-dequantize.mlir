// RUN: kvq-opt %s --split-input-file --verify-diagnostics

func.func @output_shape(%c: tensor<1x2x4x64xi8>, %s: tensor<1x2x4x2xf16>, %z: tensor<1x2x4x2xf16>) {
  // expected-error @+1 {{'kvq.dequantize' op output has shape 1x2x8x64, but the codes hold 1x2x4x64}}
  %x = kvq.dequantize %c, %s, %z scheme <bits = 4, group = 32, axis = token>
      : tensor<1x2x4x64xi8>, tensor<1x2x4x2xf16>, tensor<1x2x4x2xf16> -> tensor<1x2x8x64xf16>
  return
}

// -----

func.func @packed_output_shape(%w: tensor<1x2x4x8xi32>, %s: tensor<1x2x4x2xf16>, %z: tensor<1x2x4x2xf16>) {
  // expected-error @+1 {{'kvq.dequantize' op output has shape 1x2x4x128, but the codes hold 1x2x4x64}}
  %x = kvq.dequantize %w, %s, %z scheme <bits = 4, group = 32, axis = token>
      : tensor<1x2x4x8xi32>, tensor<1x2x4x2xf16>, tensor<1x2x4x2xf16> -> tensor<1x2x4x128xf16>
  return
}

// -----

func.func @scales_shape(%c: tensor<1x2x64x64xi8>, %s: tensor<1x2x64x2xf16>, %z: tensor<1x2x2x64xf16>) {
  // expected-error @+1 {{'kvq.dequantize' op scales have shape 1x2x64x2, expected 1x2x2x64}}
  %x = kvq.dequantize %c, %s, %z scheme <bits = 4, group = 32, axis = channel>
      : tensor<1x2x64x64xi8>, tensor<1x2x64x2xf16>, tensor<1x2x2x64xf16> -> tensor<1x2x64x64xf16>
  return
}

// -----

func.func @missing_zeros(%c: tensor<1x2x4x64xi8>, %s: tensor<1x2x4x2xf16>) {
  // expected-error @+1 {{'kvq.dequantize' op asymmetric scheme needs zero points}}
  %x = kvq.dequantize %c, %s scheme <bits = 4, group = 32, axis = token>
      : tensor<1x2x4x64xi8>, tensor<1x2x4x2xf16> -> tensor<1x2x4x64xf16>
  return
}
