// RUN: kvq-opt %s --kvq-plan --split-input-file | FileCheck %s --check-prefix=SM90
// RUN: kvq-opt %s --kvq-plan=arch=sm_80 --split-input-file | FileCheck %s --check-prefix=SM80

// Quantize: 4 warps, each a row at a time; a token-axis lane reads its
// word's 8 halves with one 128-bit load.
// SM90-LABEL: func.func @quantize
// SM90: kvq.quantize {{.*}} {plan = #kvq.plan<arch = "sm_90", threads = 128, halfVector = 8>}
// SM80-LABEL: func.func @quantize
// SM80: {plan = #kvq.plan<arch = "sm_80", threads = 128, halfVector = 8>}
func.func @quantize(%x: tensor<?x?x?x128xf16>) -> tensor<?x?x?x16xi32> {
  %w, %s, %z = kvq.quantize %x scheme <bits = 4, group = 64, axis = token>
      : tensor<?x?x?x128xf16> -> tensor<?x?x?x16xi32>, tensor<?x?x?x2xf16>, tensor<?x?x?x2xf16>
  return %w : tensor<?x?x?x16xi32>
}

// -----

// Attention, GQA 4, head_dim 128, fp16: on the tensor cores (the plan says
// why beside it): 4 warps of 16-token steps, so splits of 64 tokens, and
// each warp's output, max and sum in shared memory for the final merge.
// SM90-LABEL: func.func @attention
// SM90: kvq.quantized_attention
// SM90-SAME: {kvq.attention_path = "tensor cores run this kernel", plan = #kvq.plan<arch = "sm_90", threads = 128, halfVector = 8, tileTokens = 64, minTokensPerSplit = 256, smCount = 132, keyVectorWords = 4, valueVectorWords = 4, scoresPerThread = 1, sharedBytes = 8320, attentionPath = 2>}
// SM80-LABEL: func.func @attention
// SM80: kvq.quantized_attention
// SM80-SAME: smCount = 108
func.func @attention(%q: tensor<?x32x128xf16>,
    %kw: tensor<?x8x?x128xi32>, %ks: tensor<?x8x?x128xf16>, %kz: tensor<?x8x?x128xf16>,
    %vw: tensor<?x8x?x8xi32>, %vs: tensor<?x8x?x4xf16>, %vz: tensor<?x8x?x4xf16>,
    %l: tensor<?x3xi32>) -> tensor<?x32x128xf16> {
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks, %kz) scheme <bits = 2, group = 32, axis = channel>,
      values(%vw, %vs, %vz) scheme <bits = 2, group = 32, axis = token>
      lengths(%l) scale 0.0883883461
      : (tensor<?x32x128xf16>, tensor<?x8x?x128xi32>, tensor<?x8x?x128xf16>, tensor<?x8x?x128xf16>,
         tensor<?x8x?x8xi32>, tensor<?x8x?x4xf16>, tensor<?x8x?x4xf16>, tensor<?x3xi32>) -> tensor<?x32x128xf16>
  return %o : tensor<?x32x128xf16>
}

// -----

// The same on the CUDA cores, as a plan written by hand asks: 64-token
// tiles do not fit the 40 KiB budget, 32-token tiles do; 128-bit loads for
// both packed layouts.
// SM90-LABEL: func.func @attention_cuda_cores
// SM90: kvq.quantized_attention
// SM90-SAME: {kvq.attention_path = "as written in the plan", plan = #kvq.plan<arch = "sm_90", threads = 128, halfVector = 8, tileTokens = 32, minTokensPerSplit = 128, smCount = 132, keyVectorWords = 4, valueVectorWords = 4, scoresPerThread = 2, sharedBytes = 35888, attentionPath = 1>}
func.func @attention_cuda_cores(%q: tensor<?x32x128xf16>,
    %kw: tensor<?x8x?x128xi32>, %ks: tensor<?x8x?x128xf16>, %kz: tensor<?x8x?x128xf16>,
    %vw: tensor<?x8x?x8xi32>, %vs: tensor<?x8x?x4xf16>, %vz: tensor<?x8x?x4xf16>,
    %l: tensor<?x3xi32>) -> tensor<?x32x128xf16> {
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks, %kz) scheme <bits = 2, group = 32, axis = channel>,
      values(%vw, %vs, %vz) scheme <bits = 2, group = 32, axis = token>
      lengths(%l) scale 0.0883883461 {plan = #kvq.plan<attentionPath = 1>}
      : (tensor<?x32x128xf16>, tensor<?x8x?x128xi32>, tensor<?x8x?x128xf16>, tensor<?x8x?x128xf16>,
         tensor<?x8x?x8xi32>, tensor<?x8x?x4xf16>, tensor<?x8x?x4xf16>, tensor<?x3xi32>) -> tensor<?x32x128xf16>
  return %o : tensor<?x32x128xf16>
}

// -----

// A plan written by hand is kept; missing entries are filled in. head_dim
// 80 with 2-bit token-axis codes has 5 words a row: scalar loads, and no
// tensor cores (their fragments take head_dim in runs of 32).
// SM90-LABEL: func.func @override
// SM90: kvq.quantized_attention
// SM90-SAME: kvq.attention_path = "not tensor cores: head_dim 80 is not a multiple of 32"
// SM90-SAME: threads = 256, halfVector = 8, tileTokens = 16, minTokensPerSplit = 64, smCount = 132, keyVectorWords = 1, valueVectorWords = 1
func.func @override(%q: tensor<?x2x80xf16>,
    %kw: tensor<?x2x?x5xi32>, %ks: tensor<?x2x?x1xf16>, %kz: tensor<?x2x?x1xf16>,
    %vw: tensor<?x2x?x5xi32>, %vs: tensor<?x2x?x1xf16>, %vz: tensor<?x2x?x1xf16>,
    %l: tensor<?x3xi32>) -> tensor<?x2x80xf16> {
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks, %kz) scheme <bits = 2, group = head_dim, axis = token>,
      values(%vw, %vs, %vz) scheme <bits = 2, group = head_dim, axis = token>
      lengths(%l) scale 0.1 {plan = #kvq.plan<threads = 256, tileTokens = 16>}
      : (tensor<?x2x80xf16>, tensor<?x2x?x5xi32>, tensor<?x2x?x1xf16>, tensor<?x2x?x1xf16>,
         tensor<?x2x?x5xi32>, tensor<?x2x?x1xf16>, tensor<?x2x?x1xf16>, tensor<?x3xi32>) -> tensor<?x2x80xf16>
  return %o : tensor<?x2x80xf16>
}

// -----

// Chunked query rows, GQA 4: two rows a block fill the 8 columns of an MMA
// (the merge buffers hold 8 columns: 16640 bytes); on the CUDA cores a
// block per row.
// SM90-LABEL: func.func @chunked_rows
// SM90: sharedBytes = 16640, attentionPath = 2, queryRows = 2>}
// SM90-LABEL: func.func @chunked_rows_on_cuda_cores
// SM90: attentionPath = 1, queryRows = 1>}
func.func @chunked_rows(%q: tensor<?x32x128xf16>,
    %kw: tensor<?x8x64x16xi32>, %ks: tensor<?x8x64x4xf16>,
    %vw: tensor<?x8x64x16xi32>, %vs: tensor<?x8x64x4xf16>,
    %l: tensor<?x3xi32>, %t: tensor<?x?xi32>) -> tensor<?x32x128xf16> {
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 32, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      lengths(%l) pages(%t, 64) chunked scale 0.0883883461
      : (tensor<?x32x128xf16>, tensor<?x8x64x16xi32>, tensor<?x8x64x4xf16>,
         tensor<?x8x64x16xi32>, tensor<?x8x64x4xf16>, tensor<?x3xi32>,
         tensor<?x?xi32>) -> tensor<?x32x128xf16>
  return %o : tensor<?x32x128xf16>
}
func.func @chunked_rows_on_cuda_cores(%q: tensor<?x32x128xf16>,
    %kw: tensor<?x8x64x16xi32>, %ks: tensor<?x8x64x4xf16>,
    %vw: tensor<?x8x64x16xi32>, %vs: tensor<?x8x64x4xf16>,
    %l: tensor<?x3xi32>, %t: tensor<?x?xi32>) -> tensor<?x32x128xf16> {
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 32, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      lengths(%l) pages(%t, 64) chunked scale 0.0883883461
      {plan = #kvq.plan<attentionPath = 1>}
      : (tensor<?x32x128xf16>, tensor<?x8x64x16xi32>, tensor<?x8x64x4xf16>,
         tensor<?x8x64x16xi32>, tensor<?x8x64x4xf16>, tensor<?x3xi32>,
         tensor<?x?xi32>) -> tensor<?x32x128xf16>
  return %o : tensor<?x32x128xf16>
}
