// RUN: kvq-opt %s --split-input-file --verify-diagnostics

func.func @group_does_not_divide_head_dim(%x: tensor<1x2x4x80xf16>) {
  // expected-error @+1 {{'kvq.quantize' op group 64 does not divide head_dim 80}}
  %c, %s, %z = kvq.quantize %x scheme <bits = 4, group = 64, axis = token>
      : tensor<1x2x4x80xf16> -> tensor<1x2x4x80xi8>, tensor<1x2x4x1xf16>, tensor<1x2x4x1xf16>
  return
}

// -----

func.func @dynamic_head_dim(%x: tensor<1x2x4x?xf16>) {
  // expected-error @+1 {{'kvq.quantize' op head_dim (the last dimension) must be static}}
  %c, %s, %z = kvq.quantize %x scheme <bits = 4, group = 64, axis = token>
      : tensor<1x2x4x?xf16> -> tensor<1x2x4x?xi8>, tensor<1x2x4x?xf16>, tensor<1x2x4x?xf16>
  return
}

// -----

func.func @empty_head_dim(%x: tensor<1x2x4x0xf16>) {
  // expected-error @+1 {{'kvq.quantize' op head_dim must be positive, got 0}}
  %c, %s, %z = kvq.quantize %x scheme <bits = 4, group = head_dim, axis = token>
      : tensor<1x2x4x0xf16> -> tensor<1x2x4x0xi8>, tensor<1x2x4x1xf16>, tensor<1x2x4x1xf16>
  return
}

// -----

func.func @partial_words_along_channels(%x: tensor<1x2x4x24xf16>) {
  // expected-error @+1 {{'kvq.quantize' op head_dim 24 with 2-bit codes does not fill whole 32-bit words}}
  %c, %s, %z = kvq.quantize %x scheme <bits = 2, group = head_dim, axis = token>
      : tensor<1x2x4x24xf16> -> tensor<1x2x4x24xi8>, tensor<1x2x4x1xf16>, tensor<1x2x4x1xf16>
  return
}

// -----

func.func @partial_words_along_tokens(%x: tensor<1x2x48x24xf16>) {
  // expected-error @+1 {{'kvq.quantize' op a channel group of 24 tokens with 2-bit codes does not fill whole 32-bit words}}
  %c, %s, %z = kvq.quantize %x scheme <bits = 2, group = head_dim, axis = channel>
      : tensor<1x2x48x24xf16> -> tensor<1x2x48x24xi8>, tensor<1x2x2x24xf16>, tensor<1x2x2x24xf16>
  return
}

// -----

func.func @channel_axis_partial_group(%x: tensor<1x2x40x128xf16>) {
  // expected-error @+1 {{'kvq.quantize' op axis = channel needs a whole number of 32-token groups, got 40 tokens}}
  %c, %s, %z = kvq.quantize %x scheme <bits = 2, group = 32, axis = channel>
      : tensor<1x2x40x128xf16> -> tensor<1x2x40x128xi8>, tensor<1x2x1x128xf16>, tensor<1x2x1x128xf16>
  return
}

// -----

func.func @codes_shape(%x: tensor<1x2x4x64xf16>) {
  // expected-error @+1 {{'kvq.quantize' op codes have shape 1x2x4x32, expected 1x2x4x64 for 4-bit codes of shape 1x2x4x64}}
  %c, %s, %z = kvq.quantize %x scheme <bits = 4, group = 32, axis = token>
      : tensor<1x2x4x64xf16> -> tensor<1x2x4x32xi8>, tensor<1x2x4x2xf16>, tensor<1x2x4x2xf16>
  return
}

// -----

func.func @packed_word_count(%x: tensor<1x2x4x64xf16>) {
  // expected-error @+1 {{'kvq.quantize' op packed words have shape 1x2x4x16, expected 1x2x4x8 for 4-bit codes of shape 1x2x4x64}}
  %w, %s, %z = kvq.quantize %x scheme <bits = 4, group = 32, axis = token>
      : tensor<1x2x4x64xf16> -> tensor<1x2x4x16xi32>, tensor<1x2x4x2xf16>, tensor<1x2x4x2xf16>
  return
}

// -----

func.func @scales_shape(%x: tensor<1x2x4x64xf16>) {
  // expected-error @+1 {{'kvq.quantize' op scales have shape 1x2x4x4, expected 1x2x4x2}}
  %c, %s, %z = kvq.quantize %x scheme <bits = 4, group = 32, axis = token>
      : tensor<1x2x4x64xf16> -> tensor<1x2x4x64xi8>, tensor<1x2x4x4xf16>, tensor<1x2x4x2xf16>
  return
}

// -----

func.func @zeros_shape(%x: tensor<1x2x64x64xf16>) {
  // expected-error @+1 {{'kvq.quantize' op zero points have shape 1x2x64x64, expected 1x2x2x64}}
  %c, %s, %z = kvq.quantize %x scheme <bits = 4, group = 32, axis = channel>
      : tensor<1x2x64x64xf16> -> tensor<1x2x64x64xi8>, tensor<1x2x2x64xf16>, tensor<1x2x64x64xf16>
  return
}

// -----

func.func @scale_dtype(%x: tensor<1x2x4x64xf16>) {
  // expected-error @+1 {{'kvq.quantize' op scales element type 'f32' does not match the scheme's scale type 'f16'}}
  %c, %s, %z = kvq.quantize %x scheme <bits = 4, group = 32, axis = token>
      : tensor<1x2x4x64xf16> -> tensor<1x2x4x64xi8>, tensor<1x2x4x2xf32>, tensor<1x2x4x2xf16>
  return
}

// -----

func.func @zero_dtype(%x: tensor<1x2x4x64xf16>) {
  // expected-error @+1 {{'kvq.quantize' op zero points element type 'f16' does not match the scheme's scale type 'f32'}}
  %c, %s, %z = kvq.quantize %x scheme <bits = 4, group = 32, axis = token, scale = f32>
      : tensor<1x2x4x64xf16> -> tensor<1x2x4x64xi8>, tensor<1x2x4x2xf32>, tensor<1x2x4x2xf16>
  return
}

// -----

func.func @asymmetric_without_zeros(%x: tensor<1x2x4x64xf16>) {
  // expected-error @+1 {{'kvq.quantize' op asymmetric scheme needs zero points}}
  %c, %s = kvq.quantize %x scheme <bits = 4, group = 32, axis = token>
      : tensor<1x2x4x64xf16> -> tensor<1x2x4x64xi8>, tensor<1x2x4x2xf16>
  return
}

// -----

func.func @symmetric_with_zeros(%x: tensor<1x2x4x64xf16>) {
  // expected-error @+1 {{'kvq.quantize' op symmetric scheme takes no zero points}}
  %c, %s, %z = kvq.quantize %x scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      : tensor<1x2x4x64xf16> -> tensor<1x2x4x64xi8>, tensor<1x2x4x2xf16>, tensor<1x2x4x2xf16>
  return
}

// -----

// ODS constraints: inputs are rank-4 fp16/bf16 tensors.
func.func @f32_input(%x: tensor<1x2x4x64xf32>) {
  // expected-error @+1 {{'kvq.quantize' op operand #0 must be 4D tensor of 16-bit float or bfloat16 type values}}
  %c, %s, %z = kvq.quantize %x scheme <bits = 4, group = 32, axis = token>
      : tensor<1x2x4x64xf32> -> tensor<1x2x4x64xi8>, tensor<1x2x4x2xf16>, tensor<1x2x4x2xf16>
  return
}

// -----

// bf16 input with fp16 scales would store inf for any group past 65504.
func.func @bf16_needs_f32_scales(%k: tensor<1x2x64x64xbf16>) {
  // expected-error @+1 {{'kvq.quantize' op bf16 input needs fp32 scales: an fp16 scale or zero point overflows to inf once a group's values pass 65504 (write the scheme with scale = f32)}}
  %c, %s, %z = kvq.quantize %k scheme <bits = 4, group = 64, axis = token>
      : tensor<1x2x64x64xbf16> -> tensor<1x2x64x64xi8>, tensor<1x2x64x1xf16>, tensor<1x2x64x1xf16>
  return
}

// -----

// HQQ refines zero points; a symmetric scheme has none.
func.func @hqq_needs_zero_points(%k: tensor<1x2x64x64xf16>) {
  // expected-error @+1 {{'kvq.quantize' op zero point search 'hqq' needs an asymmetric scheme: a symmetric one has no zero points}}
  %c, %s = kvq.quantize %k scheme <bits = 4, group = 64, axis = token, mode = symmetric> zeroPoints hqq
      : tensor<1x2x64x64xf16> -> tensor<1x2x64x64xi8>, tensor<1x2x64x1xf16>
  return
}

// -----

// A static scheme's scales are given: kvq.quantize computes them.
func.func @static_scheme_in_quantize(%k: tensor<1x2x64x64xf16>) {
  // expected-error @+1 {{'kvq.quantize' op a static scheme's scales are given, not computed: use kvq.quantize_static}}
  %c, %s = kvq.quantize %k scheme <bits = 8, group = head_dim, axis = token, mode = symmetric, scale = f32, static = tensor>
      : tensor<1x2x64x64xf16> -> tensor<1x2x64x64xi8>, tensor<1x1x1x1xf32>
  return
}

// -----

func.func @group_scheme_in_quantize_static(%k: tensor<1x2x64x64xf16>, %s: tensor<1x2x64x1xf16>) {
  // expected-error @+1 {{'kvq.quantize_static' op scheme computes its scales per group: use kvq.quantize (static schemes say static = tensor or head)}}
  %c = kvq.quantize_static %k, %s scheme <bits = 4, group = head_dim, axis = token, mode = symmetric>
      : tensor<1x2x64x64xf16>, tensor<1x2x64x1xf16> -> tensor<1x2x64x64xi8>
  return
}

// -----

// Per kv head: one scale for each of the input's heads.
func.func @per_head_scales_of_other_heads(%k: tensor<1x2x64x64xf16>, %s: tensor<1x4x1x1xf32>) {
  // expected-error @+1 {{'kvq.quantize_static' op scales have shape 1x4x1x1, expected 1x2x1x1}}
  %c = kvq.quantize_static %k, %s scheme <bits = 8, group = head_dim, axis = token, mode = symmetric, scale = f32, format = e5m2, static = head>
      : tensor<1x2x64x64xf16>, tensor<1x4x1x1xf32> -> tensor<1x2x64x64xi8>
  return
}

// -----

// Asymmetric static scales come with their zero points.
func.func @asymmetric_without_zeros(%k: tensor<1x2x64x64xf16>, %s: tensor<1x1x1x1xf32>) {
  // expected-error @+1 {{'kvq.quantize_static' op asymmetric scheme needs zero points}}
  %c = kvq.quantize_static %k, %s scheme <bits = 4, group = head_dim, axis = token, scale = f32, static = tensor>
      : tensor<1x2x64x64xf16>, tensor<1x1x1x1xf32> -> tensor<1x2x64x64xi8>
  return
}
