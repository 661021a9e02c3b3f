// RUN: kvq-translate --spec="attention k=8thds v=4c64x d=64 hq=8 hkv=1 bf16 residual" --to=cuda | FileCheck %s
// RUN: not kvq-translate --spec="attention k=3t32 v=2t32 d=128" 2>&1 | FileCheck %s --check-prefix=BITS
// RUN: not kvq-translate --spec="attention k=2t32 v=2t32 d=128 hq=6 hkv=4" 2>&1 | FileCheck %s --check-prefix=GQA
// RUN: not kvq-translate --spec="attention k=2t48 v=2t32" 2>&1 | FileCheck %s --check-prefix=GROUP
// RUN: not kvq-translate --spec="attention k=2x32" 2>&1 | FileCheck %s --check-prefix=TAG

// A spec on the command line: symmetric 8-bit keys (no zero points), fp32
// value scales, bf16, residual but no sink segment, MQA with 8 query heads.
// CHECK: void kvq_attn_k8thds_v4c64x_d64_g8_bf16_r(__nv_bfloat16* q, float* partial_out, float* partial_max, float* partial_sum, int32_t* key_words, __half* key_scales, int32_t* value_words, float* value_scales, float* value_zeros, __nv_bfloat16* residual_keys, __nv_bfloat16* residual_values, int32_t* lengths,

// BITS: kvq-translate: invalid kernel spec 'attention k=3t32 v=2t32 d=128 hq=32 hkv=32 f16 sink residual': key bits must be 2, 4 or 8, got 3
// GQA: query heads (6) must be a multiple of kv heads (4)
// GROUP: key group must be a power of two in [16, 256] or 0 (head_dim), got 48
// TAG: bad scheme '2x32': expected <bits><t|c><group|hd>[s][i][x] (2c32, 4thd), <bits>t<pt|ph>[s][i] (static scales: 4tph) or <e4m3|e5m2><pt|ph>
