// RUN: kvq-translate %S/../../examples/kivi2_decode.mlir --to=cuda | FileCheck %s
// RUN: sed 's/scale 0.0883883461$/& {plan = #kvq.plan<attentionPath = 1>}/' %S/../../examples/kivi2_decode.mlir \
// RUN:   | kvq-translate - --to=cuda | FileCheck %s --check-prefix=CUDA-CORES

// The checked-in KIVI-2 example as the plan chooses it: attention on the
// tensor cores. Each warp takes steps of 16 tokens with no barrier: the
// keys' codes unpacked in registers into A fragments, queries times each
// channel's scale as B fragments (with what rounding to fp16 left over, for
// fp32-accurate scores), the scores' accumulators transposed into P's B
// fragments, values as A fragments; the warps merge through shared memory
// once.
// CHECK: // kvq_attn_k2c32_v2t32_d128_g1_f16_sr_mma (attention)
// CHECK-NEXT: //   spec: {{.*}} path=tensor-cores (tensor cores run this kernel)
// CHECK-NEXT: //   plan: {{.*}}attentionPath = 2>
// CHECK: // kvq_attn_k2c32_v2t32_d128_g1_f16_sr_mma_combine (combine)
// CHECK: void kvq_attn_k2c32_v2t32_d128_g1_f16_sr_mma(
// CHECK: KVQ_SHARED(float, smem_warp_out, 512);
// CHECK: // the GQA group's queries as B fragments
// CHECK: int32_t q_frag = head_in_group ? {{v[0-9]+}} : 0;
// CHECK: for (int32_t step = warp; step < steps; step += 4) {
// CHECK-NOT: __syncthreads
// CHECK: // K as A fragments
// CHECK: int4 {{v[0-9]+}} = KVQ_LDG4({{[0-9]+}}, key_words,
// CHECK: int32_t key_codes = {{v[0-9]+}} & key_code_mask;
// CHECK: int32_t [[HI:v[0-9]+]] = kvq_mul_f16x2(q_frag, scale_pair);
// CHECK: float4 {{v[0-9]+}} = kvq_mma_f16(key_codes, key_codes_2, key_codes_3, key_codes_4, [[HI]], {{v[0-9]+}}, kvq_float4(0.0f, 0.0f, 0.0f, 0.0f));
// CHECK: kvq_mul_f16x2_error(q_frag, scale_pair, [[HI]]);
// CHECK: // scores of head tile 0
// CHECK: __shfl_xor_sync(0xffffffffu, {{.*}}, 16)
// CHECK: int32_t p_frag = kvq_transpose_pairs(
// CHECK: // V^T as A fragments
// CHECK: kvq_mma_f16({{.*}}, p_frag, p_frag_b,
// CHECK: }
// CHECK: // each warp's sums over its lanes' tokens
// CHECK: __syncthreads();
// CHECK: // merge the warps by log-sum-exp
// CHECK: void kvq_attn_k2c32_v2t32_d128_g1_f16_sr_mma_combine(

// The same example on the CUDA cores (attentionPath = 1 in the plan): fused
// attention staging packed words read with 128-bit loads into shared-memory
// tiles, one warp per query head for the softmax, a combine kernel, and the
// flush kernel for channel-axis keys.
// CUDA-CORES: // kvq_attn_k2c32_v2t32_d128_g1_f16_sr (attention)
// CUDA-CORES: // kvq_attn_k2c32_v2t32_d128_g1_f16_sr_combine (combine)
// CUDA-CORES: // kvq_quant_2c32_d128_f16 (quantize)
// CUDA-CORES: void kvq_attn_k2c32_v2t32_d128_g1_f16_sr(__half* q, float* partial_out, float* partial_max, float* partial_sum, int32_t* key_words, __half* key_scales, __half* key_zeros, int32_t* value_words, __half* value_scales, __half* value_zeros, __half* sink_keys, __half* sink_values, __half* residual_keys, __half* residual_values, int32_t* lengths, int32_t kv_heads, int32_t body_capacity, int32_t sink_capacity, int32_t residual_capacity, int32_t tokens_per_split, float softmax_scale)
// CUDA-CORES: KVQ_SHARED(float, smem_keys, 4224);
// CUDA-CORES: // 1. stage the K and V tile as fp32 in shared memory
// CUDA-CORES: int4 [[W:v[0-9]+]] = KVQ_LDG4({{[0-9]+}}, key_words,
// CUDA-CORES: kvq_word([[W]], 0)
// CUDA-CORES: kvq_word([[W]], 3)
// CUDA-CORES: KVQ_STS4({{[0-9]+}}, smem_keys,
// CUDA-CORES: // 2. scores: one thread per (query head, tokens t and t + tile/2), q read once for both
// CUDA-CORES: float4 [[Q:v[0-9]+]] = KVQ_LDS4({{[0-9]+}}, smem_q,
// CUDA-CORES: float4 [[K0:v[0-9]+]] = KVQ_LDS4({{[0-9]+}}, smem_keys,
// CUDA-CORES: float4 [[K1:v[0-9]+]] = KVQ_LDS4({{[0-9]+}}, smem_keys,
// CUDA-CORES: // 3. online softmax: one warp per query head
// CUDA-CORES: __shfl_xor_sync(0xffffffffu, {{.*}}, 16)
// CUDA-CORES: __expf(
// CUDA-CORES: // 4. P·V: each thread owns runs of 4 (query head, channel) outputs
// CUDA-CORES: KVQ_LDS4({{[0-9]+}}, smem_values,
// CUDA-CORES: void kvq_attn_k2c32_v2t32_d128_g1_f16_sr_combine(float* partial_out, float* partial_max, float* partial_sum, __half* out, int32_t splits)
// CUDA-CORES: void kvq_quant_2c32_d128_f16(
