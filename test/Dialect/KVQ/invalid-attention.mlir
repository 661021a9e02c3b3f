// RUN: kvq-opt %s --split-input-file --verify-diagnostics

func.func @gqa_ratio(%q: tensor<1x6x64xf16>, %k: tensor<1x4x16x64xf16>, %v: tensor<1x4x16x64xf16>, %l: tensor<1x3xi32>) {
  // expected-error @+1 {{'kvq.attention' op query heads (6) must be a multiple of kv heads (4)}}
  %o = kvq.attention %q, keys(%k), values(%v) lengths(%l) scale 0.125
      : (tensor<1x6x64xf16>, tensor<1x4x16x64xf16>, tensor<1x4x16x64xf16>, tensor<1x3xi32>) -> tensor<1x6x64xf16>
  return
}

// -----

func.func @zero_kv_heads(%q: tensor<1x4x64xf16>, %k: tensor<1x0x16x64xf16>, %v: tensor<1x0x16x64xf16>, %l: tensor<1x3xi32>) {
  // expected-error @+1 {{'kvq.attention' op kv heads must be positive, got 0}}
  %o = kvq.attention %q, keys(%k), values(%v) lengths(%l) scale 0.125
      : (tensor<1x4x64xf16>, tensor<1x0x16x64xf16>, tensor<1x0x16x64xf16>, tensor<1x3xi32>) -> tensor<1x4x64xf16>
  return
}

// -----

func.func @output_type(%q: tensor<1x4x64xf16>, %k: tensor<1x4x16x64xf16>, %v: tensor<1x4x16x64xf16>, %l: tensor<1x3xi32>) {
  // expected-error @+1 {{'kvq.attention' op output type 'tensor<1x4x64xbf16>' must match the query type 'tensor<1x4x64xf16>'}}
  %o = kvq.attention %q, keys(%k), values(%v) lengths(%l) scale 0.125
      : (tensor<1x4x64xf16>, tensor<1x4x16x64xf16>, tensor<1x4x16x64xf16>, tensor<1x3xi32>) -> tensor<1x4x64xbf16>
  return
}

// -----

func.func @dynamic_head_dim(%q: tensor<1x4x?xf16>, %k: tensor<1x4x16x?xf16>, %v: tensor<1x4x16x?xf16>, %l: tensor<1x3xi32>) {
  // expected-error @+1 {{'kvq.attention' op head_dim (the last query dimension) must be static}}
  %o = kvq.attention %q, keys(%k), values(%v) lengths(%l) scale 0.125
      : (tensor<1x4x?xf16>, tensor<1x4x16x?xf16>, tensor<1x4x16x?xf16>, tensor<1x3xi32>) -> tensor<1x4x?xf16>
  return
}

// -----

func.func @head_dim_mismatch(%q: tensor<1x4x64xf16>, %k: tensor<1x4x16x128xf16>, %v: tensor<1x4x16x128xf16>, %l: tensor<1x3xi32>) {
  // expected-error @+1 {{'kvq.attention' op keys/values have shape 1x4x16x128, expected 1x4x16x64 (batch and head_dim of the query, kv heads of the keys)}}
  %o = kvq.attention %q, keys(%k), values(%v) lengths(%l) scale 0.125
      : (tensor<1x4x64xf16>, tensor<1x4x16x128xf16>, tensor<1x4x16x128xf16>, tensor<1x3xi32>) -> tensor<1x4x64xf16>
  return
}

// -----

func.func @keys_values_differ(%q: tensor<1x4x64xf16>, %k: tensor<1x4x16x64xf16>, %v: tensor<1x4x32x64xf16>, %l: tensor<1x3xi32>) {
  // expected-error @+1 {{'kvq.attention' op keys/values keys (1x4x16x64) and values (1x4x32x64) must have the same shape}}
  %o = kvq.attention %q, keys(%k), values(%v) lengths(%l) scale 0.125
      : (tensor<1x4x64xf16>, tensor<1x4x16x64xf16>, tensor<1x4x32x64xf16>, tensor<1x3xi32>) -> tensor<1x4x64xf16>
  return
}

// -----

func.func @dtype_mismatch(%q: tensor<1x4x64xf16>, %k: tensor<1x4x16x64xbf16>, %v: tensor<1x4x16x64xbf16>, %l: tensor<1x3xi32>) {
  // expected-error @+1 {{'kvq.attention' op keys/values element type 'bf16' does not match the query element type 'f16'}}
  %o = kvq.attention %q, keys(%k), values(%v) lengths(%l) scale 0.125
      : (tensor<1x4x64xf16>, tensor<1x4x16x64xbf16>, tensor<1x4x16x64xbf16>, tensor<1x3xi32>) -> tensor<1x4x64xf16>
  return
}

// -----

func.func @sink_heads(%q: tensor<1x4x64xf16>, %k: tensor<1x4x16x64xf16>, %v: tensor<1x4x16x64xf16>,
                      %sk: tensor<1x2x4x64xf16>, %sv: tensor<1x2x4x64xf16>, %l: tensor<1x3xi32>) {
  // expected-error @+1 {{'kvq.attention' op sink have shape 1x2x4x64, expected 1x4x4x64 (batch and head_dim of the query, kv heads of the keys)}}
  %o = kvq.attention %q, keys(%k), values(%v) sink(%sk, %sv) lengths(%l) scale 0.125
      : (tensor<1x4x64xf16>, tensor<1x4x16x64xf16>, tensor<1x4x16x64xf16>, tensor<1x2x4x64xf16>, tensor<1x2x4x64xf16>, tensor<1x3xi32>) -> tensor<1x4x64xf16>
  return
}

// -----

func.func @residual_dtype(%q: tensor<1x4x64xf16>, %k: tensor<1x4x16x64xf16>, %v: tensor<1x4x16x64xf16>,
                          %rk: tensor<1x4x8x64xbf16>, %rv: tensor<1x4x8x64xbf16>, %l: tensor<1x3xi32>) {
  // expected-error @+1 {{'kvq.attention' op residual element type 'bf16' does not match the query element type 'f16'}}
  %o = kvq.attention %q, keys(%k), values(%v) residual(%rk, %rv) lengths(%l) scale 0.125
      : (tensor<1x4x64xf16>, tensor<1x4x16x64xf16>, tensor<1x4x16x64xf16>, tensor<1x4x8x64xbf16>, tensor<1x4x8x64xbf16>, tensor<1x3xi32>) -> tensor<1x4x64xf16>
  return
}

// -----

func.func @lengths_shape(%q: tensor<2x4x64xf16>, %k: tensor<2x4x16x64xf16>, %v: tensor<2x4x16x64xf16>, %l: tensor<2x2xi32>) {
  // expected-error @+1 {{'kvq.attention' op lengths have shape 2x2, expected 2x3 (sink, body and residual token counts per sequence)}}
  %o = kvq.attention %q, keys(%k), values(%v) lengths(%l) scale 0.125
      : (tensor<2x4x64xf16>, tensor<2x4x16x64xf16>, tensor<2x4x16x64xf16>, tensor<2x2xi32>) -> tensor<2x4x64xf16>
  return
}

// -----

func.func @negative_scale(%q: tensor<1x4x64xf16>, %k: tensor<1x4x16x64xf16>, %v: tensor<1x4x16x64xf16>, %l: tensor<1x3xi32>) {
  // expected-error @+1 {{'kvq.attention' op softmax scale must be positive and finite, got -1.250000e-01}}
  %o = kvq.attention %q, keys(%k), values(%v) lengths(%l) scale -0.125
      : (tensor<1x4x64xf16>, tensor<1x4x16x64xf16>, tensor<1x4x16x64xf16>, tensor<1x3xi32>) -> tensor<1x4x64xf16>
  return
}

// -----

// The custom syntax cannot express half a segment; the generic form can.
func.func @half_a_sink(%q: tensor<1x4x64xf16>, %k: tensor<1x4x16x64xf16>, %v: tensor<1x4x16x64xf16>,
                       %sk: tensor<1x4x4x64xf16>, %l: tensor<1x3xi32>) {
  // expected-error @+1 {{'kvq.attention' op sink and residual segments need both keys and values}}
  %o = "kvq.attention"(%q, %k, %v, %sk, %l) <{operandSegmentSizes = array<i32: 1, 1, 1, 1, 0, 0, 0, 1>, softmax_scale = 1.250000e-01 : f32}>
      : (tensor<1x4x64xf16>, tensor<1x4x16x64xf16>, tensor<1x4x16x64xf16>, tensor<1x4x4x64xf16>, tensor<1x3xi32>) -> tensor<1x4x64xf16>
  return
}
