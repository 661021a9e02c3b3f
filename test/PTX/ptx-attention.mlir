// REQUIRES: nvrtc
// RUN: kvq-translate %S/../../examples/kivi2_decode.mlir --to=ptx --arch=sm_90 | FileCheck %s
// RUN: kvq-translate %S/../../examples/kivi2_decode.mlir --to=ptx --arch=sm_80 | FileCheck %s --check-prefix=SM80
// RUN: kvq-translate %S/../../examples/kivi2_decode.mlir --to=stats --arch=sm_90 | FileCheck %s --check-prefix=STATS

// nvrtc turns the KIVI-2 example into PTX offline. Packed codes arrive by
// 128-bit read-only loads; scores and P.V are tensor-core MMAs, softmax
// reductions warp shuffles, P's fragments a movmatrix transpose.
// CHECK: .target sm_90
// CHECK: .visible .entry kvq_attn_k2c32_v2t32_d128_g1_f16_sr_mma(
// CHECK: ld.global.nc.v4.{{[su]}}32
// CHECK: mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32
// CHECK: shfl.sync.bfly.b32
// CHECK: movmatrix.sync.aligned.m8n8.trans.b16
// CHECK: bar.sync
// CHECK: .visible .entry kvq_attn_k2c32_v2t32_d128_g1_f16_sr_mma_combine(
// CHECK: .visible .entry kvq_quant_2c32_d128_f16(
// SM80: .target sm_80

// No kernel spills to local memory.
// STATS-DAG: kvq_attn_k2c32_v2t32_d128_g1_f16_sr_mma: {{.*}} spill_stores=0 spill_loads=0 stack=0
// STATS-DAG: kvq_attn_k2c32_v2t32_d128_g1_f16_sr_mma_combine: {{.*}} spill_stores=0 spill_loads=0 stack=0
// STATS-DAG: kvq_quant_2c32_d128_f16: {{.*}} spill_stores=0 spill_loads=0 stack=0
