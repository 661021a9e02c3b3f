// REQUIRES: nvrtc
// RUN: kvq-translate --spec="quantize 4t64 d=128" --to=ptx | FileCheck %s
// RUN: kvq-translate --spec="dequantize 2c32 d=128 bf16" --to=stats --arch=sm_80 | FileCheck %s --check-prefix=STATS

// 128-bit input loads, group min/max by butterfly shuffles, round half to
// even, no local memory.
// CHECK: .visible .entry kvq_quant_4t64_d128_f16(
// CHECK: ld.global.nc.v4
// CHECK: shfl.sync.bfly.b32
// CHECK: cvt.rni.f32.f32
// CHECK-NOT: .local
// STATS: kvq_dequant_2c32_d128_bf16: registers={{[0-9]+}} spill_stores=0 spill_loads=0
