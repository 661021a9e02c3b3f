// A KIVI-2 decode step for one layer of a Llama-2-7B-like model, written the
// way a user would think about it: unpack and dequantize the cache, run
// attention, and flush a full residual block into the quantized store.
// `kvq-opt --kvq-fuse` turns it into the two fused kernels kvq generates:
// a quantize that packs in registers, and an attention that never
// materializes the dequantized cache.
//
//   kvq-opt examples/kivi2_decode.mlir --kvq-fuse --canonicalize
//
// Shapes: batch 1, 32 query heads, 32 kv heads, head_dim 128, 4 sink tokens,
// 1024 quantized tokens, a 128-token fp16 residual.

func.func @decode_step(%q: tensor<1x32x128xf16>,
    %key_words: tensor<1x32x64x128xi32>, %key_scales: tensor<1x32x32x128xf16>,
    %key_zeros: tensor<1x32x32x128xf16>,
    %value_words: tensor<1x32x1024x8xi32>, %value_scales: tensor<1x32x1024x4xf16>,
    %value_zeros: tensor<1x32x1024x4xf16>,
    %sink_k: tensor<1x32x4x128xf16>, %sink_v: tensor<1x32x4x128xf16>,
    %resid_k: tensor<1x32x128x128xf16>, %resid_v: tensor<1x32x128x128xf16>,
    %lengths: tensor<1x3xi32>) -> tensor<1x32x128xf16> {
  %kc = kvq.unpack %key_words scheme <bits = 2, group = 32, axis = channel>
      : tensor<1x32x64x128xi32> -> tensor<1x32x1024x128xi8>
  %k = kvq.dequantize %kc, %key_scales, %key_zeros scheme <bits = 2, group = 32, axis = channel>
      : tensor<1x32x1024x128xi8>, tensor<1x32x32x128xf16>, tensor<1x32x32x128xf16>
      -> tensor<1x32x1024x128xf16>
  %vc = kvq.unpack %value_words scheme <bits = 2, group = 32, axis = token>
      : tensor<1x32x1024x8xi32> -> tensor<1x32x1024x128xi8>
  %v = kvq.dequantize %vc, %value_scales, %value_zeros scheme <bits = 2, group = 32, axis = token>
      : tensor<1x32x1024x128xi8>, tensor<1x32x1024x4xf16>, tensor<1x32x1024x4xf16>
      -> tensor<1x32x1024x128xf16>
  %out = kvq.attention %q, keys(%k), values(%v) sink(%sink_k, %sink_v)
      residual(%resid_k, %resid_v) lengths(%lengths) scale 0.0883883461
      : (tensor<1x32x128xf16>, tensor<1x32x1024x128xf16>, tensor<1x32x1024x128xf16>,
         tensor<1x32x4x128xf16>, tensor<1x32x4x128xf16>, tensor<1x32x128x128xf16>,
         tensor<1x32x128x128xf16>, tensor<1x3xi32>) -> tensor<1x32x128xf16>
  return %out : tensor<1x32x128xf16>
}

// The residual is full: quantize its 128 oldest keys (4 channel groups of 32
// tokens) and pack them for the store.
func.func @flush_residual_keys(%resid_k: tensor<1x32x128x128xf16>)
    -> (tensor<1x32x8x128xi32>, tensor<1x32x4x128xf16>, tensor<1x32x4x128xf16>) {
  %codes, %scales, %zeros = kvq.quantize %resid_k scheme <bits = 2, group = 32, axis = channel>
      : tensor<1x32x128x128xf16>
      -> tensor<1x32x128x128xi8>, tensor<1x32x4x128xf16>, tensor<1x32x4x128xf16>
  %words = kvq.pack %codes scheme <bits = 2, group = 32, axis = channel>
      : tensor<1x32x128x128xi8> -> tensor<1x32x8x128xi32>
  return %words, %scales, %zeros
      : tensor<1x32x8x128xi32>, tensor<1x32x4x128xf16>, tensor<1x32x4x128xf16>
}
