// RUN: kvq-opt %s --split-input-file --verify-diagnostics

func.func @two_tokens(%k: tensor<4x8x2x128xf16>, %lens: tensor<4x3xi32>, %t: tensor<4x16xi32>) {
  // expected-error @+1 {{'kvq.cache_append' op appends one token per sequence, but the new tokens have 2 per sequence}}
  kvq.cache_append %k, %k lengths(%lens) pages(%t)
      keys scheme <bits = 4, group = 64, axis = token>
      values scheme <bits = 4, group = 64, axis = token>
      : tensor<4x8x2x128xf16>, tensor<4x8x2x128xf16>, tensor<4x3xi32>, tensor<4x16xi32>
  return
}

// -----

func.func @keys_and_values_differ(%k: tensor<4x8x1x128xf16>, %v: tensor<4x8x1x128xbf16>, %lens: tensor<4x3xi32>, %t: tensor<4x16xi32>) {
  // expected-error @+1 {{'kvq.cache_append' op keys and values must have one type}}
  kvq.cache_append %k, %v lengths(%lens) pages(%t)
      keys scheme <bits = 4, group = 64, axis = token>
      values scheme <bits = 4, group = 64, axis = token>
      : tensor<4x8x1x128xf16>, tensor<4x8x1x128xbf16>, tensor<4x3xi32>, tensor<4x16xi32>
  return
}

// -----

func.func @lengths_not_three(%k: tensor<4x8x1x128xf16>, %lens: tensor<4x2xi32>, %t: tensor<4x16xi32>) {
  // expected-error @+1 {{'kvq.cache_append' op lengths must be [batch, 3] (sink, quantized, residual), got 4x2}}
  kvq.cache_append %k, %k lengths(%lens) pages(%t)
      keys scheme <bits = 4, group = 64, axis = token>
      values scheme <bits = 4, group = 64, axis = token>
      : tensor<4x8x1x128xf16>, tensor<4x8x1x128xf16>, tensor<4x2xi32>, tensor<4x16xi32>
  return
}

// -----

func.func @batch_sizes_differ(%k: tensor<4x8x1x128xf16>, %lens: tensor<2x3xi32>, %t: tensor<4x16xi32>) {
  // expected-error @+1 {{'kvq.cache_append' op keys, lengths and block_table must have one batch size, got 4x8x1x128, 2x3 and 4x16}}
  kvq.cache_append %k, %k lengths(%lens) pages(%t)
      keys scheme <bits = 4, group = 64, axis = token>
      values scheme <bits = 4, group = 64, axis = token>
      : tensor<4x8x1x128xf16>, tensor<4x8x1x128xf16>, tensor<2x3xi32>, tensor<4x16xi32>
  return
}

// -----

func.func @value_group_does_not_divide_head_dim(%k: tensor<4x8x1x80xf16>, %lens: tensor<4x3xi32>, %t: tensor<4x16xi32>) {
  // expected-error @+1 {{'kvq.cache_append' op value group 64 does not divide head_dim 80}}
  kvq.cache_append %k, %k lengths(%lens) pages(%t)
      keys scheme <bits = 2, group = 32, axis = channel>
      values scheme <bits = 4, group = 64, axis = token>
      : tensor<4x8x1x80xf16>, tensor<4x8x1x80xf16>, tensor<4x3xi32>, tensor<4x16xi32>
  return
}

// -----

func.func @bf16_with_fp16_scales(%k: tensor<4x8x1x128xbf16>, %lens: tensor<4x3xi32>, %t: tensor<4x16xi32>) {
  // expected-error @+1 {{'kvq.cache_append' op key bf16 input needs fp32 scales}}
  kvq.cache_append %k, %k lengths(%lens) pages(%t)
      keys scheme <bits = 2, group = 32, axis = channel>
      values scheme <bits = 2, group = 32, axis = token, scale = f32>
      : tensor<4x8x1x128xbf16>, tensor<4x8x1x128xbf16>, tensor<4x3xi32>, tensor<4x16xi32>
  return
}
