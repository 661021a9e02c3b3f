// RUN: kvq-opt %s --split-input-file --verify-diagnostics

func.func @pack_word_count(%c: tensor<1x2x4x64xi8>) {
  // expected-error @+1 {{'kvq.pack' op packed words have shape 1x2x4x4, expected 1x2x4x8 for 4-bit codes of shape 1x2x4x64}}
  %w = kvq.pack %c scheme <bits = 4, group = 32, axis = token> : tensor<1x2x4x64xi8> -> tensor<1x2x4x4xi32>
  return
}

// -----

// axis = channel packs along tokens, not channels.
func.func @pack_along_wrong_dim(%c: tensor<1x2x64x64xi8>) {
  // expected-error @+1 {{'kvq.pack' op packed words have shape 1x2x64x4, expected 1x2x4x64 for 2-bit codes of shape 1x2x64x64}}
  %w = kvq.pack %c scheme <bits = 2, group = 32, axis = channel> : tensor<1x2x64x64xi8> -> tensor<1x2x64x4xi32>
  return
}

// -----

func.func @unpack_word_count(%w: tensor<1x2x8x64xi32>) {
  // expected-error @+1 {{'kvq.unpack' op packed words have shape 1x2x8x64, expected 1x2x4x64 for 2-bit codes of shape 1x2x64x64}}
  %c = kvq.unpack %w scheme <bits = 2, group = 32, axis = channel> : tensor<1x2x8x64xi32> -> tensor<1x2x64x64xi8>
  return
}

// -----

func.func @unpack_partial_group(%w: tensor<1x2x1x64xi32>) {
  // expected-error @+1 {{'kvq.unpack' op axis = channel needs a whole number of 32-token groups, got 16 tokens}}
  %c = kvq.unpack %w scheme <bits = 2, group = 32, axis = channel> : tensor<1x2x1x64xi32> -> tensor<1x2x16x64xi8>
  return
}

// -----

func.func @pack_wants_i8_codes(%c: tensor<1x2x4x64xi16>) {
  // expected-error @+1 {{'kvq.pack' op operand #0 must be 4D tensor of 8-bit signless integer values}}
  %w = kvq.pack %c scheme <bits = 4, group = 32, axis = token> : tensor<1x2x4x64xi16> -> tensor<1x2x4x8xi32>
  return
}
