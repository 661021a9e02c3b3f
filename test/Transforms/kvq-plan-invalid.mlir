// RUN: kvq-opt %s --kvq-plan --split-input-file --verify-diagnostics

func.func @bad_threads(%x: tensor<?x?x?x128xf16>) -> tensor<?x?x?x16xi32> {
  // expected-error @+1 {{'kvq.quantize' op plan: threads must be a multiple of 32 in [32, 1024], got 100}}
  %w, %s, %z = kvq.quantize %x scheme <bits = 4, group = 64, axis = token> {plan = {threads = 100 : i32}}
      : tensor<?x?x?x128xf16> -> tensor<?x?x?x16xi32>, tensor<?x?x?x2xf16>, tensor<?x?x?x2xf16>
  return %w : tensor<?x?x?x16xi32>
}

// -----

func.func @bad_tile(%q: tensor<?x4x64xf16>, %kw: tensor<?x4x?x8xi32>, %ks: tensor<?x4x?x2xf16>, %vw: tensor<?x4x?x8xi32>, %vs: tensor<?x4x?x2xf16>, %l: tensor<?x3xi32>) -> tensor<?x4x64xf16> {
  // expected-error @+1 {{'kvq.quantized_attention' op plan: tile_tokens must be a positive multiple of 16, got 24}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 32, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      lengths(%l) scale 0.125 {plan = {tile_tokens = 24 : i32}}
      : (tensor<?x4x64xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x3xi32>) -> tensor<?x4x64xf16>
  return %o : tensor<?x4x64xf16>
}

// -----

func.func @bad_vector(%q: tensor<?x4x64xf16>, %kw: tensor<?x4x?x8xi32>, %ks: tensor<?x4x?x2xf16>, %vw: tensor<?x4x?x8xi32>, %vs: tensor<?x4x?x2xf16>, %l: tensor<?x3xi32>) -> tensor<?x4x64xf16> {
  // expected-error @+1 {{'kvq.quantized_attention' op plan: key_vector_words must be 1, 2 or 4, got 3}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 32, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      lengths(%l) scale 0.125 {plan = {key_vector_words = 3 : i32}}
      : (tensor<?x4x64xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x3xi32>) -> tensor<?x4x64xf16>
  return %o : tensor<?x4x64xf16>
}

// -----

func.func @split_not_multiple_of_tile(%q: tensor<?x4x64xf16>, %kw: tensor<?x4x?x8xi32>, %ks: tensor<?x4x?x2xf16>, %vw: tensor<?x4x?x8xi32>, %vs: tensor<?x4x?x2xf16>, %l: tensor<?x3xi32>) -> tensor<?x4x64xf16> {
  // expected-error @+1 {{'kvq.quantized_attention' op plan: min_tokens_per_split must be a multiple of tile_tokens (32), got 40}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 32, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      lengths(%l) scale 0.125 {plan = {tile_tokens = 32 : i32, min_tokens_per_split = 40 : i32}}
      : (tensor<?x4x64xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x3xi32>) -> tensor<?x4x64xf16>
  return %o : tensor<?x4x64xf16>
}

// -----

func.func @too_much_shared_memory(%q: tensor<?x8x256xf16>, %kw: tensor<?x1x?x32xi32>, %ks: tensor<?x1x?x4xf16>, %vw: tensor<?x1x?x32xi32>, %vs: tensor<?x1x?x4xf16>, %l: tensor<?x3xi32>) -> tensor<?x8x256xf16> {
  // expected-error @+1 {{'kvq.quantized_attention' op plan: tile_tokens 64 needs 142432 bytes of shared memory, more than the 49152 a block gets}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 64, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 64, axis = token, mode = symmetric>
      lengths(%l) scale 0.125 {plan = {tile_tokens = 64 : i32}}
      : (tensor<?x8x256xf16>, tensor<?x1x?x32xi32>, tensor<?x1x?x4xf16>, tensor<?x1x?x32xi32>, tensor<?x1x?x4xf16>, tensor<?x3xi32>) -> tensor<?x8x256xf16>
  return %o : tensor<?x8x256xf16>
}

// -----

func.func @bad_half_vector(%q: tensor<?x4x64xf16>, %kw: tensor<?x4x?x8xi32>, %ks: tensor<?x4x?x2xf16>, %vw: tensor<?x4x?x8xi32>, %vs: tensor<?x4x?x2xf16>, %l: tensor<?x3xi32>) -> tensor<?x4x64xf16> {
  // expected-error @+1 {{'kvq.quantized_attention' op plan: half_vector must be 1, 4 or 8 and divide head_dim (64), got 2}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 32, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      lengths(%l) scale 0.125 {plan = {half_vector = 2 : i32}}
      : (tensor<?x4x64xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x3xi32>) -> tensor<?x4x64xf16>
  return %o : tensor<?x4x64xf16>
}

// -----

func.func @quantize_half_vector_wider_than_a_word(%x: tensor<?x?x?x128xf16>) -> tensor<?x?x?x32xi32> {
  // expected-error @+1 {{'kvq.quantize' op plan: half_vector must be 1, 4 or 8 and divide head_dim (128) and the codes of a word (4), got 8}}
  %w, %s, %z = kvq.quantize %x scheme <bits = 8, group = 64, axis = token> {plan = {half_vector = 8 : i32}}
      : tensor<?x?x?x128xf16> -> tensor<?x?x?x32xi32>, tensor<?x?x?x2xf16>, tensor<?x?x?x2xf16>
  return %w : tensor<?x?x?x32xi32>
}

// -----

func.func @bad_scores_per_thread(%q: tensor<?x4x64xf16>, %kw: tensor<?x4x?x8xi32>, %ks: tensor<?x4x?x2xf16>, %vw: tensor<?x4x?x8xi32>, %vs: tensor<?x4x?x2xf16>, %l: tensor<?x3xi32>) -> tensor<?x4x64xf16> {
  // expected-error @+1 {{'kvq.quantized_attention' op plan: scores_per_thread must be 1, or 2 when head_dim is a multiple of 4, got 3}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 32, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      lengths(%l) scale 0.125 {plan = {scores_per_thread = 3 : i32}}
      : (tensor<?x4x64xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x3xi32>) -> tensor<?x4x64xf16>
  return %o : tensor<?x4x64xf16>
}
