// RUN: kvq-translate %S/../../examples/kivi2_decode.mlir --to=cuda | FileCheck %s

// The checked-in KIVI-2 example: fused attention reading packed words with
// 128-bit loads, one warp per query head for the softmax, a combine kernel,
// and the flush kernel for channel-axis keys.
// CHECK: // kvq_attn_k2c32_v2t32_d128_g1_f16_sr (attention)
// CHECK: // kvq_attn_k2c32_v2t32_d128_g1_f16_sr_combine (combine)
// CHECK: // kvq_quant_2c32_d128_f16 (quantize)
// CHECK: void kvq_attn_k2c32_v2t32_d128_g1_f16_sr(__half* q, float* partial_out, float* partial_max, float* partial_sum, int32_t* key_words, __half* key_scales, __half* key_zeros, int32_t* value_words, __half* value_scales, __half* value_zeros, __half* sink_keys, __half* sink_values, __half* residual_keys, __half* residual_values, int32_t* lengths, int32_t kv_heads, int32_t body_capacity, int32_t sink_capacity, int32_t residual_capacity, int32_t tokens_per_split, float softmax_scale)
// CHECK: KVQ_SHARED(float, smem_keys, 4224);
// CHECK: // 1. stage the K and V tile as fp32 in shared memory
// CHECK: int4 [[W:v[0-9]+]] = KVQ_LDG4({{[0-9]+}}, key_words,
// CHECK: kvq_word([[W]], 0)
// CHECK: kvq_word([[W]], 3)
// CHECK: KVQ_STS4({{[0-9]+}}, smem_keys,
// CHECK: // 2. scores: one thread per (query head, tokens t and t + tile/2), q read once for both
// CHECK: float4 [[Q:v[0-9]+]] = KVQ_LDS4({{[0-9]+}}, smem_q,
// CHECK: float4 [[K0:v[0-9]+]] = KVQ_LDS4({{[0-9]+}}, smem_keys,
// CHECK: float4 [[K1:v[0-9]+]] = KVQ_LDS4({{[0-9]+}}, smem_keys,
// CHECK: // 3. online softmax: one warp per query head
// CHECK: __shfl_xor_sync(0xffffffffu, {{.*}}, 16)
// CHECK: __expf(
// CHECK: // 4. P·V: each thread owns runs of 4 (query head, channel) outputs
// CHECK: KVQ_LDS4({{[0-9]+}}, smem_values,
// CHECK: void kvq_attn_k2c32_v2t32_d128_g1_f16_sr_combine(float* partial_out, float* partial_max, float* partial_sum, __half* out, int32_t splits)
// CHECK: void kvq_quant_2c32_d128_f16(
