// RUN: kvq-opt %s --split-input-file --verify-diagnostics

func.func @key_word_count(%q: tensor<1x4x64xf16>,
    %kw: tensor<1x4x8x64xi32>, %ks: tensor<1x4x2x64xf16>, %kz: tensor<1x4x2x64xf16>,
    %vw: tensor<1x4x64x4xi32>, %vs: tensor<1x4x64x2xf16>, %vz: tensor<1x4x64x2xf16>, %l: tensor<1x3xi32>) {
  // expected-error @+1 {{'kvq.quantized_attention' op value scales have shape 1x4x64x2, expected 1x4x64x4}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks, %kz) scheme <bits = 4, group = 32, axis = channel>,
      values(%vw, %vs, %vz) scheme <bits = 2, group = 16, axis = token>
      lengths(%l) scale 0.125
      : (tensor<1x4x64xf16>, tensor<1x4x8x64xi32>, tensor<1x4x2x64xf16>, tensor<1x4x2x64xf16>,
         tensor<1x4x64x4xi32>, tensor<1x4x64x2xf16>, tensor<1x4x64x2xf16>, tensor<1x3xi32>) -> tensor<1x4x64xf16>
  return
}

// -----

func.func @key_scales(%q: tensor<1x4x64xf16>,
    %kw: tensor<1x4x8x64xi32>, %ks: tensor<1x4x64x2xf16>, %kz: tensor<1x4x2x64xf16>,
    %vw: tensor<1x4x64x4xi32>, %vs: tensor<1x4x64x2xf16>, %vz: tensor<1x4x64x2xf16>, %l: tensor<1x3xi32>) {
  // expected-error @+1 {{'kvq.quantized_attention' op key scales have shape 1x4x64x2, expected 1x4x2x64}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks, %kz) scheme <bits = 4, group = 32, axis = channel>,
      values(%vw, %vs, %vz) scheme <bits = 2, group = 32, axis = token>
      lengths(%l) scale 0.125
      : (tensor<1x4x64xf16>, tensor<1x4x8x64xi32>, tensor<1x4x64x2xf16>, tensor<1x4x2x64xf16>,
         tensor<1x4x64x4xi32>, tensor<1x4x64x2xf16>, tensor<1x4x64x2xf16>, tensor<1x3xi32>) -> tensor<1x4x64xf16>
  return
}

// -----

// Keys hold 64 tokens, values 32.
func.func @token_counts_differ(%q: tensor<1x4x64xf16>,
    %kw: tensor<1x4x8x64xi32>, %ks: tensor<1x4x2x64xf16>, %kz: tensor<1x4x2x64xf16>,
    %vw: tensor<1x4x32x4xi32>, %vs: tensor<1x4x32x2xf16>, %vz: tensor<1x4x32x2xf16>, %l: tensor<1x3xi32>) {
  // expected-error @+1 {{'kvq.quantized_attention' op quantized keys/values keys (1x4x64x64) and values (1x4x32x64) must have the same shape}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks, %kz) scheme <bits = 4, group = 32, axis = channel>,
      values(%vw, %vs, %vz) scheme <bits = 2, group = 32, axis = token>
      lengths(%l) scale 0.125
      : (tensor<1x4x64xf16>, tensor<1x4x8x64xi32>, tensor<1x4x2x64xf16>, tensor<1x4x2x64xf16>,
         tensor<1x4x32x4xi32>, tensor<1x4x32x2xf16>, tensor<1x4x32x2xf16>, tensor<1x3xi32>) -> tensor<1x4x64xf16>
  return
}

// -----

func.func @gqa_ratio(%q: tensor<1x6x64xf16>,
    %kw: tensor<1x4x8x64xi32>, %ks: tensor<1x4x2x64xf16>, %kz: tensor<1x4x2x64xf16>,
    %vw: tensor<1x4x64x4xi32>, %vs: tensor<1x4x64x2xf16>, %vz: tensor<1x4x64x2xf16>, %l: tensor<1x3xi32>) {
  // expected-error @+1 {{'kvq.quantized_attention' op query heads (6) must be a multiple of kv heads (4)}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks, %kz) scheme <bits = 4, group = 32, axis = channel>,
      values(%vw, %vs, %vz) scheme <bits = 2, group = 32, axis = token>
      lengths(%l) scale 0.125
      : (tensor<1x6x64xf16>, tensor<1x4x8x64xi32>, tensor<1x4x2x64xf16>, tensor<1x4x2x64xf16>,
         tensor<1x4x64x4xi32>, tensor<1x4x64x2xf16>, tensor<1x4x64x2xf16>, tensor<1x3xi32>) -> tensor<1x6x64xf16>
  return
}

// -----

func.func @symmetric_value_zeros(%q: tensor<1x4x64xf16>,
    %kw: tensor<1x4x8x64xi32>, %ks: tensor<1x4x2x64xf16>, %kz: tensor<1x4x2x64xf16>,
    %vw: tensor<1x4x64x4xi32>, %vs: tensor<1x4x64x2xf16>, %vz: tensor<1x4x64x2xf16>, %l: tensor<1x3xi32>) {
  // expected-error @+1 {{'kvq.quantized_attention' op value symmetric scheme takes no zero points}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks, %kz) scheme <bits = 4, group = 32, axis = channel>,
      values(%vw, %vs, %vz) scheme <bits = 2, group = 32, axis = token, mode = symmetric>
      lengths(%l) scale 0.125
      : (tensor<1x4x64xf16>, tensor<1x4x8x64xi32>, tensor<1x4x2x64xf16>, tensor<1x4x2x64xf16>,
         tensor<1x4x64x4xi32>, tensor<1x4x64x2xf16>, tensor<1x4x64x2xf16>, tensor<1x3xi32>) -> tensor<1x4x64xf16>
  return
}

// -----

func.func @half_a_residual(%q: tensor<1x4x64xf16>,
    %kw: tensor<1x4x8x64xi32>, %ks: tensor<1x4x2x64xf16>, %kz: tensor<1x4x2x64xf16>,
    %vw: tensor<1x4x64x4xi32>, %vs: tensor<1x4x64x2xf16>, %vz: tensor<1x4x64x2xf16>,
    %rk: tensor<1x4x8x64xf16>, %l: tensor<1x3xi32>) {
  // expected-error @+1 {{'kvq.quantized_attention' op sink and residual segments need both keys and values}}
  %o = "kvq.quantized_attention"(%q, %kw, %ks, %kz, %vw, %vs, %vz, %rk, %l)
      <{operandSegmentSizes = array<i32: 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 0, 1, 0>,
        key_scheme = #kvq.scheme<bits = 4, group = 32, axis = channel>,
        value_scheme = #kvq.scheme<bits = 2, group = 32, axis = token>,
        softmax_scale = 1.250000e-01 : f32}>
      : (tensor<1x4x64xf16>, tensor<1x4x8x64xi32>, tensor<1x4x2x64xf16>, tensor<1x4x2x64xf16>,
         tensor<1x4x64x4xi32>, tensor<1x4x64x2xf16>, tensor<1x4x64x2xf16>, tensor<1x4x8x64xf16>, tensor<1x3xi32>) -> tensor<1x4x64xf16>
  return
}

// -----

// A pool whose token extent is not static: the page tokens alone must keep
// whole channel groups.
func.func @page_tokens_not_a_multiple_of_the_group(%q: tensor<?x4x64xf16>, %kw: tensor<?x4x?x64xi32>, %ks: tensor<?x4x?x64xf16>, %vw: tensor<?x4x48x8xi32>, %vs: tensor<?x4x48x2xf16>, %l: tensor<?x3xi32>, %t: tensor<?x?xi32>) -> tensor<?x4x64xf16> {
  // expected-error @+1 {{'kvq.quantized_attention' op page tokens (48) must be a multiple of the key channel group (32)}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 2, group = 32, axis = channel, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      lengths(%l) pages(%t, 48) scale 0.125
      : (tensor<?x4x64xf16>, tensor<?x4x?x64xi32>, tensor<?x4x?x64xf16>, tensor<?x4x48x8xi32>, tensor<?x4x48x2xf16>, tensor<?x3xi32>, tensor<?x?xi32>) -> tensor<?x4x64xf16>
  return %o : tensor<?x4x64xf16>
}

// -----

func.func @pool_pages_of_another_size(%q: tensor<?x4x64xf16>, %kw: tensor<?x4x32x8xi32>, %ks: tensor<?x4x32x2xf16>, %vw: tensor<?x4x32x8xi32>, %vs: tensor<?x4x32x2xf16>, %l: tensor<?x3xi32>, %t: tensor<?x?xi32>) -> tensor<?x4x64xf16> {
  // expected-error @+1 {{'kvq.quantized_attention' op key pool pages hold 32 tokens, expected 64}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 32, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      lengths(%l) pages(%t, 64) scale 0.125
      : (tensor<?x4x64xf16>, tensor<?x4x32x8xi32>, tensor<?x4x32x2xf16>, tensor<?x4x32x8xi32>, tensor<?x4x32x2xf16>, tensor<?x3xi32>, tensor<?x?xi32>) -> tensor<?x4x64xf16>
  return %o : tensor<?x4x64xf16>
}

// -----

func.func @block_table_of_another_batch(%q: tensor<2x4x64xf16>, %kw: tensor<?x4x64x8xi32>, %ks: tensor<?x4x64x2xf16>, %vw: tensor<?x4x64x8xi32>, %vs: tensor<?x4x64x2xf16>, %l: tensor<2x3xi32>, %t: tensor<3x?xi32>) -> tensor<2x4x64xf16> {
  // expected-error @+1 {{'kvq.quantized_attention' op block table has shape 3x?, expected 2x? (pages of each sequence)}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 32, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      lengths(%l) pages(%t, 64) scale 0.125
      : (tensor<2x4x64xf16>, tensor<?x4x64x8xi32>, tensor<?x4x64x2xf16>, tensor<?x4x64x8xi32>, tensor<?x4x64x2xf16>, tensor<2x3xi32>, tensor<3x?xi32>) -> tensor<2x4x64xf16>
  return %o : tensor<2x4x64xf16>
}

// -----

func.func @chunked_without_pages(%q: tensor<?x4x64xf16>, %kw: tensor<?x4x64x8xi32>, %ks: tensor<?x4x64x2xf16>, %vw: tensor<?x4x64x8xi32>, %vs: tensor<?x4x64x2xf16>, %l: tensor<?x3xi32>) -> tensor<?x4x64xf16> {
  // expected-error @+1 {{'kvq.quantized_attention' op chunked query rows read a paged body: add pages(%block_table, N)}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 32, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      lengths(%l) chunked scale 0.125
      : (tensor<?x4x64xf16>, tensor<?x4x64x8xi32>, tensor<?x4x64x2xf16>, tensor<?x4x64x8xi32>, tensor<?x4x64x2xf16>, tensor<?x3xi32>) -> tensor<?x4x64xf16>
  return %o : tensor<?x4x64xf16>
}

// -----

// Token-major pages hold no per-row scales: static-scale schemes only.
func.func @token_major_pages_of_per_group_scales(%q: tensor<?x4x64xf16>, %kw: tensor<?x4x64x8xi32>, %ks: tensor<?x4x64x2xf16>, %vw: tensor<?x4x64x8xi32>, %vs: tensor<?x4x64x2xf16>, %l: tensor<?x3xi32>, %t: tensor<?x?xi32>) -> tensor<?x4x64xf16> {
  // expected-error @+1 {{'kvq.quantized_attention' op nhd (token-major) pages need a paged body and static-scale schemes for keys and values}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 32, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      lengths(%l) pages(%t, 64) nhd scale 0.125
      : (tensor<?x4x64xf16>, tensor<?x4x64x8xi32>, tensor<?x4x64x2xf16>, tensor<?x4x64x8xi32>, tensor<?x4x64x2xf16>, tensor<?x3xi32>, tensor<?x?xi32>) -> tensor<?x4x64xf16>
  return %o : tensor<?x4x64xf16>
}
