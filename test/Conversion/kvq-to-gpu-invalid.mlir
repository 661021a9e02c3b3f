// RUN: kvq-opt %s --kvq-to-gpu --split-input-file --verify-diagnostics

func.func @unplanned(%x: tensor<?x?x?x128xf16>) -> tensor<?x?x?x16xi32> {
  // expected-error @+1 {{'kvq.quantize' op has no launch plan; run --kvq-plan first}}
  %w, %s, %z = kvq.quantize %x scheme <bits = 4, group = 64, axis = token>
      : tensor<?x?x?x128xf16> -> tensor<?x?x?x16xi32>, tensor<?x?x?x2xf16>, tensor<?x?x?x2xf16>
  return %w : tensor<?x?x?x16xi32>
}

// -----

func.func @unfused(%x: tensor<?x?x?x128xf16>) -> tensor<?x?x?x128xi8> {
  // expected-error @+1 {{'kvq.quantize' op must produce packed words to be lowered; run --kvq-fuse first}}
  %c, %s, %z = kvq.quantize %x scheme <bits = 4, group = 64, axis = token> {plan = #kvq.plan<threads = 128>}
      : tensor<?x?x?x128xf16> -> tensor<?x?x?x128xi8>, tensor<?x?x?x2xf16>, tensor<?x?x?x2xf16>
  return %c : tensor<?x?x?x128xi8>
}

// -----

func.func @lone_pack(%c: tensor<1x2x4x64xi8>) -> tensor<1x2x4x8xi32> {
  // expected-error @+1 {{'kvq.pack' op has no kernel of its own; run --kvq-fuse to fold it into quantize/dequantize}}
  %w = kvq.pack %c scheme <bits = 4, group = 32, axis = token> : tensor<1x2x4x64xi8> -> tensor<1x2x4x8xi32>
  return %w : tensor<1x2x4x8xi32>
}

// -----

func.func @dynamic_heads(%q: tensor<?x?x64xf16>, %kw: tensor<?x?x?x8xi32>, %ks: tensor<?x?x?x2xf16>, %vw: tensor<?x?x?x8xi32>, %vs: tensor<?x?x?x2xf16>, %l: tensor<?x3xi32>) -> tensor<?x?x64xf16> {
  // expected-error @+1 {{'kvq.quantized_attention' op needs static query and kv head counts to fix the GQA ratio of the kernel}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 32, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      lengths(%l) scale 0.125 {plan = #kvq.plan<threads = 128, tileTokens = 32, keyVectorWords = 4, valueVectorWords = 4>}
      : (tensor<?x?x64xf16>, tensor<?x?x?x8xi32>, tensor<?x?x?x2xf16>, tensor<?x?x?x8xi32>, tensor<?x?x?x2xf16>, tensor<?x3xi32>) -> tensor<?x?x64xf16>
  return %o : tensor<?x?x64xf16>
}

// -----

func.func @partial_plan(%q: tensor<?x4x64xf16>, %kw: tensor<?x4x?x8xi32>, %ks: tensor<?x4x?x2xf16>, %vw: tensor<?x4x?x8xi32>, %vs: tensor<?x4x?x2xf16>, %l: tensor<?x3xi32>) -> tensor<?x4x64xf16> {
  // expected-error @+1 {{'kvq.quantized_attention' op launch plan has no tileTokens; run --kvq-plan first}}
  %o = kvq.quantized_attention %q,
      keys(%kw, %ks) scheme <bits = 4, group = 32, axis = token, mode = symmetric>,
      values(%vw, %vs) scheme <bits = 4, group = 32, axis = token, mode = symmetric>
      lengths(%l) scale 0.125 {plan = #kvq.plan<threads = 128, halfVector = 8>}
      : (tensor<?x4x64xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x4x?x8xi32>, tensor<?x4x?x2xf16>, tensor<?x3xi32>) -> tensor<?x4x64xf16>
  return %o : tensor<?x4x64xf16>
}
