// RUN: kvq-opt %s --kvq-plan --split-input-file --verify-diagnostics

func.func @bad_threads(%x: tensor<?x?x?x128xf16>) -> tensor<?x?x?x16xi32> {
  // expected-error @+1 {{plan: threads must be a multiple of 32 in [32, 1024], got 100}}
  %w, %s, %z = kvq.quantize %x scheme <bits = 4, group = 64, axis = token> {plan = #kvq.plan<threads = 100>}
      : tensor<?x?x?x128xf16> -> tensor<?x?x?x16xi32>, tensor<?x?x?x2xf16>, tensor<?x?x?x2xf16>
  return %w : tensor<?x?x?x16xi32>
}

// -----

func.func @bad_tile(%q: tensor<?x4x64xf16>, %kw: tensor<?x4x?x8xi32>, %ks: tensor<?x4x?x2xf16>, %vw: tensor<?x4x?x8xi32>, %vs: tensor<?x4x?x2xf16>, %l: tensor<?x3xi32>) -> tensor<?x4x64xf16> {
  // expected-error @+4 {{plan: tileTokens must be a positive multiple of 16, got 24}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 32, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      lengths(%l) scale 0.125 {plan = #kvq.plan<tileTokens = 24>}
      : (tensor<?x4x64xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x3xi32>) -> tensor<?x4x64xf16>
  return %o : tensor<?x4x64xf16>
}

// -----

func.func @bad_vector(%q: tensor<?x4x64xf16>, %kw: tensor<?x4x?x8xi32>, %ks: tensor<?x4x?x2xf16>, %vw: tensor<?x4x?x8xi32>, %vs: tensor<?x4x?x2xf16>, %l: tensor<?x3xi32>) -> tensor<?x4x64xf16> {
  // expected-error @+4 {{plan: keyVectorWords must be 1, 2 or 4, got 3}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 32, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      lengths(%l) scale 0.125 {plan = #kvq.plan<keyVectorWords = 3>}
      : (tensor<?x4x64xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x3xi32>) -> tensor<?x4x64xf16>
  return %o : tensor<?x4x64xf16>
}

// -----

func.func @split_not_multiple_of_tile(%q: tensor<?x4x64xf16>, %kw: tensor<?x4x?x8xi32>, %ks: tensor<?x4x?x2xf16>, %vw: tensor<?x4x?x8xi32>, %vs: tensor<?x4x?x2xf16>, %l: tensor<?x3xi32>) -> tensor<?x4x64xf16> {
  // expected-error @+4 {{plan: minTokensPerSplit must be a multiple of tileTokens (32), got 40}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 32, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      lengths(%l) scale 0.125 {plan = #kvq.plan<tileTokens = 32, minTokensPerSplit = 40>}
      : (tensor<?x4x64xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x3xi32>) -> tensor<?x4x64xf16>
  return %o : tensor<?x4x64xf16>
}

// -----

func.func @too_much_shared_memory(%q: tensor<?x8x256xf16>, %kw: tensor<?x1x?x32xi32>, %ks: tensor<?x1x?x4xf16>, %vw: tensor<?x1x?x32xi32>, %vs: tensor<?x1x?x4xf16>, %l: tensor<?x3xi32>) -> tensor<?x8x256xf16> {
  // expected-error @+1 {{'kvq.quantized_attention' op plan: tileTokens 64 needs 142432 bytes of shared memory, more than the 49152 a block gets}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 64, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 64, axis = token, mode = symmetric>
      lengths(%l) scale 0.125 {plan = #kvq.plan<tileTokens = 64>}
      : (tensor<?x8x256xf16>, tensor<?x1x?x32xi32>, tensor<?x1x?x4xf16>, tensor<?x1x?x32xi32>, tensor<?x1x?x4xf16>, tensor<?x3xi32>) -> tensor<?x8x256xf16>
  return %o : tensor<?x8x256xf16>
}

// -----

func.func @bad_half_vector(%q: tensor<?x4x64xf16>, %kw: tensor<?x4x?x8xi32>, %ks: tensor<?x4x?x2xf16>, %vw: tensor<?x4x?x8xi32>, %vs: tensor<?x4x?x2xf16>, %l: tensor<?x3xi32>) -> tensor<?x4x64xf16> {
  // expected-error @+4 {{plan: halfVector must be 1, 4 or 8, got 2}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 32, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      lengths(%l) scale 0.125 {plan = #kvq.plan<halfVector = 2>}
      : (tensor<?x4x64xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x3xi32>) -> tensor<?x4x64xf16>
  return %o : tensor<?x4x64xf16>
}

// -----

func.func @quantize_half_vector_wider_than_a_word(%x: tensor<?x?x?x128xf16>) -> tensor<?x?x?x32xi32> {
  // expected-error @+1 {{'kvq.quantize' op plan: halfVector 8 needs a token-axis scheme whose words hold a multiple of it, but a word holds 4 codes along the token axis}}
  %w, %s, %z = kvq.quantize %x scheme <bits = 8, group = 64, axis = token> {plan = #kvq.plan<halfVector = 8>}
      : tensor<?x?x?x128xf16> -> tensor<?x?x?x32xi32>, tensor<?x?x?x2xf16>, tensor<?x?x?x2xf16>
  return %w : tensor<?x?x?x32xi32>
}

// -----

func.func @bad_scores_per_thread(%q: tensor<?x4x64xf16>, %kw: tensor<?x4x?x8xi32>, %ks: tensor<?x4x?x2xf16>, %vw: tensor<?x4x?x8xi32>, %vs: tensor<?x4x?x2xf16>, %l: tensor<?x3xi32>) -> tensor<?x4x64xf16> {
  // expected-error @+4 {{plan: scoresPerThread must be 1 or 2, got 3}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 32, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      lengths(%l) scale 0.125 {plan = #kvq.plan<scoresPerThread = 3>}
      : (tensor<?x4x64xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x3xi32>) -> tensor<?x4x64xf16>
  return %o : tensor<?x4x64xf16>
}

// -----

func.func @vector_does_not_divide_row(%q: tensor<?x2x80xf16>, %kw: tensor<?x2x?x5xi32>, %ks: tensor<?x2x?x1xf16>, %vw: tensor<?x2x?x5xi32>, %vs: tensor<?x2x?x1xf16>, %l: tensor<?x3xi32>) -> tensor<?x2x80xf16> {
  // expected-error @+1 {{'kvq.quantized_attention' op plan: valueVectorWords 4 does not divide the 5 words of a packed row}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 2, group = head_dim, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 2, group = head_dim, axis = token, mode = symmetric>
      lengths(%l) scale 0.125 {plan = #kvq.plan<valueVectorWords = 4>}
      : (tensor<?x2x80xf16>, tensor<?x2x?x5xi32>, tensor<?x2x?x1xf16>, tensor<?x2x?x5xi32>, tensor<?x2x?x1xf16>, tensor<?x3xi32>) -> tensor<?x2x80xf16>
  return %o : tensor<?x2x80xf16>
}

// -----

func.func @half_vector_does_not_divide_head_dim(%q: tensor<?x2x36xf16>, %k: tensor<?x2x?x36xf16>, %v: tensor<?x2x?x36xf16>, %l: tensor<?x3xi32>) -> tensor<?x2x36xf16> {
  // expected-error @+1 {{'kvq.attention' op plan: halfVector 8 does not divide head_dim (36)}}
  %o = kvq.attention %q, keys(%k), values(%v) lengths(%l) scale 0.125 {plan = #kvq.plan<halfVector = 8>}
      : (tensor<?x2x36xf16>, tensor<?x2x?x36xf16>, tensor<?x2x?x36xf16>, tensor<?x3xi32>) -> tensor<?x2x36xf16>
  return %o : tensor<?x2x36xf16>
}

// -----

func.func @bad_arch(%x: tensor<?x?x?x128xf16>) -> tensor<?x?x?x16xi32> {
  // expected-error @+1 {{plan: arch must be sm_75 .. sm_121, got 'sm_70'}}
  %w, %s, %z = kvq.quantize %x scheme <bits = 4, group = 64, axis = token> {plan = #kvq.plan<arch = "sm_70">}
      : tensor<?x?x?x128xf16> -> tensor<?x?x?x16xi32>, tensor<?x?x?x2xf16>, tensor<?x?x?x2xf16>
  return %w : tensor<?x?x?x16xi32>
}

// -----

// A plan is a #kvq.plan, not a dictionary.
func.func @untyped_plan(%x: tensor<?x?x?x128xf16>) -> tensor<?x?x?x16xi32> {
  // expected-error @+1 {{attribute 'plan' failed to satisfy constraint}}
  %w, %s, %z = kvq.quantize %x scheme <bits = 4, group = 64, axis = token> {plan = {threads = 128 : i32}}
      : tensor<?x?x?x128xf16> -> tensor<?x?x?x16xi32>, tensor<?x?x?x2xf16>, tensor<?x?x?x2xf16>
  return %w : tensor<?x?x?x16xi32>
}

// -----

// Tensor cores asked for where their fragments cannot run: head_dim 80 is
// not whole runs of 32 channels.
func.func @tensor_cores_head_dim(%q: tensor<?x2x80xf16>, %k: tensor<?x2x?x80xf16>, %v: tensor<?x2x?x80xf16>, %l: tensor<?x3xi32>) -> tensor<?x2x80xf16> {
  // expected-error @+1 {{'kvq.attention' op plan: attentionPath 2 (tensor cores) cannot run this kernel: head_dim 80 is not a multiple of 32}}
  %o = kvq.attention %q, keys(%k), values(%v) lengths(%l) scale 0.125 {plan = #kvq.plan<attentionPath = 2>}
      : (tensor<?x2x80xf16>, tensor<?x2x?x80xf16>, tensor<?x2x?x80xf16>, tensor<?x3xi32>) -> tensor<?x2x80xf16>
  return %o : tensor<?x2x80xf16>
}

// -----

// 4-bit token-axis values, head_dim 96: a lane's run of 12 channels splits
// the 8-code words.
func.func @tensor_cores_split_words(%q: tensor<?x2x96xf16>,
    %kw: tensor<?x2x?x12xi32>, %ks: tensor<?x2x?x1xf16>, %kz: tensor<?x2x?x1xf16>,
    %vw: tensor<?x2x?x12xi32>, %vs: tensor<?x2x?x1xf16>, %vz: tensor<?x2x?x1xf16>,
    %l: tensor<?x3xi32>) -> tensor<?x2x96xf16> {
  // expected-error @+1 {{plan: attentionPath 2 (tensor cores) cannot run this kernel: value runs of 12 channels split packed words of 8}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks, %kz) scheme <bits = 4, group = head_dim, axis = token>,
      values(%vw, %vs, %vz) scheme <bits = 4, group = head_dim, axis = token>
      lengths(%l) scale 0.1 {plan = #kvq.plan<attentionPath = 2>}
      : (tensor<?x2x96xf16>, tensor<?x2x?x12xi32>, tensor<?x2x?x1xf16>, tensor<?x2x?x1xf16>,
         tensor<?x2x?x12xi32>, tensor<?x2x?x1xf16>, tensor<?x2x?x1xf16>, tensor<?x3xi32>) -> tensor<?x2x96xf16>
  return %o : tensor<?x2x96xf16>
}

// -----

// Query rows a block are columns of the tensor cores' MMAs: only chunked
// rows have them.
func.func @query_rows_not_chunked(%q: tensor<?x4x64xf16>, %kw: tensor<?x4x?x8xi32>, %ks: tensor<?x4x?x2xf16>, %vw: tensor<?x4x?x8xi32>, %vs: tensor<?x4x?x2xf16>, %l: tensor<?x3xi32>) -> tensor<?x4x64xf16> {
  // expected-error @+1 {{'kvq.quantized_attention' op plan: queryRows 2 needs chunked query rows on the tensor cores (attentionPath 2)}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 32, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      lengths(%l) scale 0.125 {plan = #kvq.plan<queryRows = 2>}
      : (tensor<?x4x64xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x3xi32>) -> tensor<?x4x64xf16>
  return %o : tensor<?x4x64xf16>
}

// -----

func.func @query_rows_out_of_range(%q: tensor<?x4x64xf16>, %kw: tensor<?x4x64x8xi32>, %ks: tensor<?x4x64x2xf16>, %vw: tensor<?x4x64x8xi32>, %vs: tensor<?x4x64x2xf16>, %l: tensor<?x3xi32>, %t: tensor<?x?xi32>) -> tensor<?x4x64xf16> {
  // expected-error @+4 {{plan: queryRows must be in [1, 16], got 17}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 32, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      lengths(%l) pages(%t, 64) chunked scale 0.125 {plan = #kvq.plan<queryRows = 17>}
      : (tensor<?x4x64xf16>, tensor<?x4x64x8xi32>, tensor<?x4x64x2xf16>, tensor<?x4x64x8xi32>, tensor<?x4x64x2xf16>, tensor<?x3xi32>, tensor<?x?xi32>) -> tensor<?x4x64xf16>
  return %o : tensor<?x4x64xf16>
}

// -----

// Chunked rows on the CUDA cores: a block per row.
func.func @query_rows_on_cuda_cores(%q: tensor<?x4x64xf16>, %kw: tensor<?x4x64x8xi32>, %ks: tensor<?x4x64x2xf16>, %vw: tensor<?x4x64x8xi32>, %vs: tensor<?x4x64x2xf16>, %l: tensor<?x3xi32>, %t: tensor<?x?xi32>) -> tensor<?x4x64xf16> {
  // expected-error @+1 {{'kvq.quantized_attention' op plan: queryRows 4 needs chunked query rows on the tensor cores (attentionPath 2)}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 32, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      lengths(%l) pages(%t, 64) chunked scale 0.125 {plan = #kvq.plan<attentionPath = 1, queryRows = 4>}
      : (tensor<?x4x64xf16>, tensor<?x4x64x8xi32>, tensor<?x4x64x2xf16>, tensor<?x4x64x8xi32>, tensor<?x4x64x2xf16>, tensor<?x3xi32>, tensor<?x?xi32>) -> tensor<?x4x64xf16>
  return %o : tensor<?x4x64xf16>
}

// -----

// kv heads 1, query heads 4 (GQA 4): 4 rows are 16 columns, two MMA column
// tiles where the group needs one.
func.func @query_rows_past_a_tile(%q: tensor<?x4x64xf16>, %kw: tensor<?x1x64x8xi32>, %ks: tensor<?x1x64x2xf16>, %vw: tensor<?x1x64x8xi32>, %vs: tensor<?x1x64x2xf16>, %l: tensor<?x3xi32>, %t: tensor<?x?xi32>) -> tensor<?x4x64xf16> {
  // expected-error @+1 {{'kvq.quantized_attention' op plan: queryRows 4 x gqa 4 needs more MMA column tiles (of 8) than the GQA group's 1}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 32, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      lengths(%l) pages(%t, 64) chunked scale 0.125 {plan = #kvq.plan<queryRows = 4>}
      : (tensor<?x4x64xf16>, tensor<?x1x64x8xi32>, tensor<?x1x64x2xf16>, tensor<?x1x64x8xi32>, tensor<?x1x64x2xf16>, tensor<?x3xi32>, tensor<?x?xi32>) -> tensor<?x4x64xf16>
  return %o : tensor<?x4x64xf16>
}
