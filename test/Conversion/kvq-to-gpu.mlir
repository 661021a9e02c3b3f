// RUN: kvq-opt %s --kvq-plan --kvq-to-gpu --split-input-file | FileCheck %s

// Token-axis quantize: a warp per row, 8 lanes per 64-channel group (one
// 4-bit word each), min and max combined by 3 xor-shuffle steps each.
// CHECK-LABEL: gpu.module @kvq_kernels
// CHECK-NOT: func.func
// CHECK: gpu.func @kvq_quant_4t64_d128_f16(%{{.*}}: memref<?xf16>, %{{.*}}: memref<?xi32>, %{{.*}}: memref<?xf16>, %{{.*}}: memref<?xf16>, %{{.*}}: i32, %{{.*}}: i32, %{{.*}}: i32, %{{.*}}: i32, %{{.*}}: i32) kernel
// CHECK-SAME: known_block_size = array<i32: 128, 1, 1>
// CHECK-SAME: kvq.arg_names = ["input", "words", "scales", "zeros", "rows", "tokens", "in_tokens", "out_tokens", "out_offset"]
// CHECK-SAME: kvq.kind = "quantize"
// CHECK: gpu.thread_id x
// CHECK-COUNT-6: gpu.shuffle xor
// CHECK-NOT: gpu.shuffle
// CHECK: math.roundeven
// CHECK: memref.store %{{.*}}, %{{.*}}[%{{.*}}] : memref<?xi32>
// CHECK: gpu.return
func.func @quantize(%x: tensor<?x?x?x128xf16>) -> (tensor<?x?x?x16xi32>, tensor<?x?x?x2xf16>, tensor<?x?x?x2xf16>) {
  %w, %s, %z = kvq.quantize %x scheme <bits = 4, group = 64, axis = token>
      : tensor<?x?x?x128xf16> -> tensor<?x?x?x16xi32>, tensor<?x?x?x2xf16>, tensor<?x?x?x2xf16>
  return %w, %s, %z : tensor<?x?x?x16xi32>, tensor<?x?x?x2xf16>, tensor<?x?x?x2xf16>
}

// -----

// Channel-axis quantize: a thread walks its channel; no shuffles. Symmetric:
// no zero points argument.
// bf16 input, so fp32 scales.
// CHECK-LABEL: gpu.func @kvq_quant_2c32sx_d64_bf16(%{{.*}}: memref<?xbf16>, %{{.*}}: memref<?xi32>, %{{.*}}: memref<?xf32>, %{{.*}}: i32
// CHECK-NOT: gpu.shuffle
// CHECK: scf.for
// CHECK: scf.for
// CHECK: gpu.return
func.func @channel_quantize(%x: tensor<?x?x?x64xbf16>) -> (tensor<?x?x?x64xi32>, tensor<?x?x?x64xf32>) {
  %w, %s = kvq.quantize %x scheme <bits = 2, group = 32, axis = channel, mode = symmetric, scale = f32>
      : tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xi32>, tensor<?x?x?x64xf32>
  return %w, %s : tensor<?x?x?x64xi32>, tensor<?x?x?x64xf32>
}

// -----

// Dequantize: a loop over the 16 codes of a 2-bit word (ptxas unrolls it),
// each shifted out by a computed shift and written as f16.
// CHECK-LABEL: gpu.func @kvq_dequant_2t32_d128_f16
// CHECK-SAME: kvq.arg_names = ["words", "scales", "zeros", "output", "rows", "tokens", "in_tokens", "in_offset", "out_tokens"]
// CHECK: scf.for %[[J:.*]] = %c0_i32 to %c16_i32{{.*}} step %c1_i32 : i32 {
// CHECK: %[[SHIFT:.*]] = arith.muli %[[J]], %{{.*}} : i32
// CHECK: arith.shrui %{{.*}}, %[[SHIFT]] : i32
// CHECK: arith.truncf %{{.*}} : f32 to f16
// CHECK-NOT: arith.truncf
func.func @dequantize(%w: tensor<?x?x?x8xi32>, %s: tensor<?x?x?x4xf16>, %z: tensor<?x?x?x4xf16>) -> tensor<?x?x?x128xf16> {
  %x = kvq.dequantize %w, %s, %z scheme <bits = 2, group = 32, axis = token>
      : tensor<?x?x?x8xi32>, tensor<?x?x?x4xf16>, tensor<?x?x?x4xf16> -> tensor<?x?x?x128xf16>
  return %x : tensor<?x?x?x128xf16>
}

// -----

// Attention on the CUDA cores (a plan that asks for them): fp32 tiles in
// shared memory, 128-bit loads of packed words, barriers between stages, and
// a combine kernel.
// CHECK-LABEL: gpu.func @kvq_attn_k2c32_v2t32_d128_g4_f16_sr(
// CHECK-SAME: workgroup(%{{.*}} : memref<512xf32, #gpu.address_space<workgroup>>, %{{.*}} : memref<4224xf32, #gpu.address_space<workgroup>>, %{{.*}} : memref<4096xf32, #gpu.address_space<workgroup>>
// CHECK-SAME: kernel
// CHECK-DAG: gpu.block_id x
// CHECK-DAG: gpu.block_id y
// CHECK-DAG: gpu.block_id z
// CHECK: gpu.barrier
// CHECK: vector.load %{{.*}} : memref<?xi32>, vector<4xi32>
// CHECK: vector.load %{{.*}} : memref<?xi32>, vector<4xi32>
// CHECK: gpu.shuffle xor
// CHECK: math.exp
// CHECK-LABEL: gpu.func @kvq_attn_k2c32_v2t32_d128_g4_f16_sr_combine(%{{.*}}: memref<?xf32>, %{{.*}}: memref<?xf32>, %{{.*}}: memref<?xf32>, %{{.*}}: memref<?xf16>, %{{.*}}: i32) kernel
func.func @attention(%q: tensor<?x32x128xf16>,
    %kw: tensor<?x8x?x128xi32>, %ks: tensor<?x8x?x128xf16>, %kz: tensor<?x8x?x128xf16>,
    %vw: tensor<?x8x?x8xi32>, %vs: tensor<?x8x?x4xf16>, %vz: tensor<?x8x?x4xf16>,
    %sk: tensor<?x8x?x128xf16>, %sv: tensor<?x8x?x128xf16>,
    %rk: tensor<?x8x?x128xf16>, %rv: tensor<?x8x?x128xf16>,
    %l: tensor<?x3xi32>) -> tensor<?x32x128xf16> {
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks, %kz) scheme <bits = 2, group = 32, axis = channel>,
      values(%vw, %vs, %vz) scheme <bits = 2, group = 32, axis = token>
      sink(%sk, %sv) residual(%rk, %rv) lengths(%l) scale 0.0883883461
      {plan = #kvq.plan<attentionPath = 1>}
      : (tensor<?x32x128xf16>, tensor<?x8x?x128xi32>, tensor<?x8x?x128xf16>, tensor<?x8x?x128xf16>,
         tensor<?x8x?x8xi32>, tensor<?x8x?x4xf16>, tensor<?x8x?x4xf16>,
         tensor<?x8x?x128xf16>, tensor<?x8x?x128xf16>, tensor<?x8x?x128xf16>, tensor<?x8x?x128xf16>,
         tensor<?x3xi32>) -> tensor<?x32x128xf16>
  return %o : tensor<?x32x128xf16>
}

// -----

// Attention on the tensor cores (the plan's choice): the warps' merge
// buffers in shared memory, the queries' B fragments packed once, then per
// step of 16 tokens the channel-axis keys' codes as A fragments (a PRMT
// pairing the bytes of two channels' words that hold a token's codes, an
// AND: the code pair exact, as fp16 subnormals),
// q times each channel's scale and what that rounding left (two score
// MMAs), the transposed probabilities and the P.V MMAs; no barrier until
// the warps merge.
// CHECK-LABEL: gpu.func @kvq_attn_k2c32_v2t32_d128_g4_f16_sr_mma(
// CHECK-SAME: workgroup(%{{.*}} : memref<2048xf32, #gpu.address_space<workgroup>>, %{{.*}} : memref<16xf32, #gpu.address_space<workgroup>>, %{{.*}} : memref<16xf32, #gpu.address_space<workgroup>>)
// CHECK: kvq.pack_pair %{{.*}}, %{{.*}} f16
// CHECK: scf.for
// CHECK-NOT: gpu.barrier
// CHECK: vector.load %{{.*}} : memref<?xi32>, vector<4xi32>
// CHECK: kvq.permute_bytes
// CHECK-NEXT: arith.andi
// CHECK: %[[HI:.*]] = kvq.multiply_pair %[[Q:.*]], %[[S:[^ ]*]]{{$}}
// CHECK: kvq.mma %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}, %[[HI]], %{{.*}}, %{{.*}} f16 : vector<4xf32>
// CHECK: kvq.multiply_pair %[[Q]], %[[S]] error %[[HI]]
// CHECK: gpu.shuffle xor
// CHECK: kvq.transpose_pairs
// CHECK: kvq.mma
// CHECK: gpu.barrier
// CHECK-LABEL: gpu.func @kvq_attn_k2c32_v2t32_d128_g4_f16_sr_mma_combine(
func.func @attention(%q: tensor<?x32x128xf16>,
    %kw: tensor<?x8x?x128xi32>, %ks: tensor<?x8x?x128xf16>, %kz: tensor<?x8x?x128xf16>,
    %vw: tensor<?x8x?x8xi32>, %vs: tensor<?x8x?x4xf16>, %vz: tensor<?x8x?x4xf16>,
    %sk: tensor<?x8x?x128xf16>, %sv: tensor<?x8x?x128xf16>,
    %rk: tensor<?x8x?x128xf16>, %rv: tensor<?x8x?x128xf16>,
    %l: tensor<?x3xi32>) -> tensor<?x32x128xf16> {
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks, %kz) scheme <bits = 2, group = 32, axis = channel>,
      values(%vw, %vs, %vz) scheme <bits = 2, group = 32, axis = token>
      sink(%sk, %sv) residual(%rk, %rv) lengths(%l) scale 0.0883883461
      : (tensor<?x32x128xf16>, tensor<?x8x?x128xi32>, tensor<?x8x?x128xf16>, tensor<?x8x?x128xf16>,
         tensor<?x8x?x8xi32>, tensor<?x8x?x4xf16>, tensor<?x8x?x4xf16>,
         tensor<?x8x?x128xf16>, tensor<?x8x?x128xf16>, tensor<?x8x?x128xf16>, tensor<?x8x?x128xf16>,
         tensor<?x3xi32>) -> tensor<?x32x128xf16>
  return %o : tensor<?x32x128xf16>
}

// -----

// Two identical ops share one kernel.
// CHECK-LABEL: gpu.module @kvq_kernels
// CHECK-COUNT-1: gpu.func @kvq_quant_8t32_d64_f16
// CHECK-NOT: gpu.func
func.func @twice(%x: tensor<?x?x?x64xf16>, %y: tensor<?x?x?x64xf16>) -> (tensor<?x?x?x16xi32>, tensor<?x?x?x16xi32>) {
  %w, %s, %z = kvq.quantize %x scheme <bits = 8, group = 32, axis = token>
      : tensor<?x?x?x64xf16> -> tensor<?x?x?x16xi32>, tensor<?x?x?x2xf16>, tensor<?x?x?x2xf16>
  %w2, %s2, %z2 = kvq.quantize %y scheme <bits = 8, group = 32, axis = token>
      : tensor<?x?x?x64xf16> -> tensor<?x?x?x16xi32>, tensor<?x?x?x2xf16>, tensor<?x?x?x2xf16>
  return %w, %w2 : tensor<?x?x?x16xi32>, tensor<?x?x?x16xi32>
}

// -----

// kvq.attention over fp16 keys and values: the baseline kernel, the same
// structure with the body read from fp16 rows (on the tensor cores, like
// the quantized kernels).
// CHECK-LABEL: gpu.func @kvq_attn_dense_d64_g4_f16_r_mma(%{{.*}}: memref<?xf16>, %{{.*}}: memref<?xf32>, %{{.*}}: memref<?xf32>, %{{.*}}: memref<?xf32>, %{{.*}}: memref<?xf16>, %{{.*}}: memref<?xf16>, %{{.*}}: memref<?xf16>, %{{.*}}: memref<?xf16>, %{{.*}}: memref<?xi32>,
// CHECK-SAME: kvq.arg_names = ["q", "partial_out", "partial_max", "partial_sum", "keys", "values", "residual_keys", "residual_values", "lengths", "kv_heads", "body_capacity", "sink_capacity", "residual_capacity", "tokens_per_split", "softmax_scale"]
// CHECK: vector.load %{{.*}} : memref<?xf16>, vector<8xf16>
// CHECK: kvq.mma
// CHECK: gpu.barrier
// CHECK-LABEL: gpu.func @kvq_attn_dense_d64_g4_f16_r_mma_combine
func.func @dense(%q: tensor<?x8x64xf16>, %k: tensor<?x2x?x64xf16>, %v: tensor<?x2x?x64xf16>,
    %rk: tensor<?x2x?x64xf16>, %rv: tensor<?x2x?x64xf16>, %l: tensor<?x3xi32>) -> tensor<?x8x64xf16> {
  %o = kvq.attention %q, keys(%k), values(%v) residual(%rk, %rv) lengths(%l) scale 0.125
      : (tensor<?x8x64xf16>, tensor<?x2x?x64xf16>, tensor<?x2x?x64xf16>, tensor<?x2x?x64xf16>,
         tensor<?x2x?x64xf16>, tensor<?x3xi32>) -> tensor<?x8x64xf16>
  return %o : tensor<?x8x64xf16>
}
