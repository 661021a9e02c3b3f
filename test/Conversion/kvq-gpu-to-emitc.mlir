// RUN: kvq-opt %s --kvq-plan --kvq-to-gpu --kvq-gpu-to-emitc --split-input-file | FileCheck %s

// Kernels become extern "C" __global__ emitc.funcs with launch bounds;
// memory goes through site-numbered macros; shuffles are CUDA builtins;
// constants are literals; nothing of gpu/memref/scf/arith/math is left.
// CHECK-LABEL: emitc.func @kvq_quant_4t64_d128_f16(%{{.*}}: !emitc.ptr<!emitc.opaque<"__half">>, %{{.*}}: !emitc.ptr<i32>
// CHECK-SAME: specifiers = ["extern \22C\22 __global__", "__launch_bounds__(128)"]
// CHECK: literal "(int)threadIdx.x" : i32
// CHECK: call_opaque "KVQ_LDG4"(%{{.*}}, %{{.*}}) {args = [0 : i32, 0 : index, 1 : index]} {{.*}} -> !emitc.opaque<"int4">
// CHECK: call_opaque "kvq_f16"
// CHECK: call_opaque "__shfl_xor_sync"(%{{.*}}, %{{.*}}) {args = [#emitc.opaque<"0xffffffffu">, 0 : index, 1 : index]}
// CHECK: call_opaque "rintf"
// CHECK: call_opaque "kvq_shl"
// CHECK: call_opaque "KVQ_STG"
// CHECK-NOT: gpu.
// CHECK-NOT: memref.
// CHECK-NOT: scf.
// CHECK-NOT: arith.
// CHECK-NOT: math.
func.func @quantize(%x: tensor<?x?x?x128xf16>) -> (tensor<?x?x?x16xi32>, tensor<?x?x?x2xf16>, tensor<?x?x?x2xf16>) {
  %w, %s, %z = kvq.quantize %x scheme <bits = 4, group = 64, axis = token>
      : tensor<?x?x?x128xf16> -> tensor<?x?x?x16xi32>, tensor<?x?x?x2xf16>, tensor<?x?x?x2xf16>
  return %w, %s, %z : tensor<?x?x?x16xi32>, tensor<?x?x?x2xf16>, tensor<?x?x?x2xf16>
}

// -----

// Shared buffers become named KVQ_SHARED arrays (K rows padded to
// head_dim + 4); 128-bit loads become KVQ_LDG4 of an int4 and kvq_word
// extracts, 128-bit tile accesses KVQ_STS4/KVQ_LDS4 of a float4 (built by
// kvq_float4, read by kvq_lane); barriers __syncthreads.
// CHECK-LABEL: emitc.func @kvq_attn_k4t64_v4t64_d64_g2_bf16(
// CHECK: verbatim "KVQ_SHARED(float, smem_q, 128);"
// CHECK: literal "smem_q" : !emitc.ptr<f32>
// CHECK: verbatim "KVQ_SHARED(float, smem_keys, 4352);"
// CHECK: call_opaque "__syncthreads"()
// CHECK: call_opaque "KVQ_LDG4"(%{{.*}}, %{{.*}}) {{.*}} -> !emitc.opaque<"int4">
// CHECK: call_opaque "kvq_word"(%{{.*}}) {args = [0 : index, 3 : i32]}
// CHECK: call_opaque "kvq_code_from_bits"
// CHECK: call_opaque "kvq_float4"({{.*}}) : (f32, f32, f32, f32) -> !emitc.opaque<"float4">
// CHECK: call_opaque "KVQ_STS4"
// CHECK: call_opaque "KVQ_LDS4"({{.*}}) {{.*}} -> !emitc.opaque<"float4">
// CHECK: call_opaque "kvq_lane"
// CHECK: call_opaque "KVQ_STS"
// CHECK: call_opaque "__expf"
// CHECK-LABEL: emitc.func @kvq_attn_k4t64_v4t64_d64_g2_bf16_combine
// CHECK-NOT: gpu.
// CHECK-NOT: vector.
func.func @attention(%q: tensor<?x4x64xbf16>,
    %kw: tensor<?x2x?x8xi32>, %ks: tensor<?x2x?x1xf16>, %kz: tensor<?x2x?x1xf16>,
    %vw: tensor<?x2x?x8xi32>, %vs: tensor<?x2x?x1xf16>, %vz: tensor<?x2x?x1xf16>,
    %l: tensor<?x3xi32>) -> tensor<?x4x64xbf16> {
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks, %kz) scheme <bits = 4, group = 64, axis = token>,
      values(%vw, %vs, %vz) scheme <bits = 4, group = 64, axis = token>
      lengths(%l) scale 0.125
      : (tensor<?x4x64xbf16>, tensor<?x2x?x8xi32>, tensor<?x2x?x1xf16>, tensor<?x2x?x1xf16>,
         tensor<?x2x?x8xi32>, tensor<?x2x?x1xf16>, tensor<?x2x?x1xf16>, tensor<?x3xi32>) -> tensor<?x4x64xbf16>
  return %o : tensor<?x4x64xbf16>
}
