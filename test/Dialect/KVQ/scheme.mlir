// RUN: kvq-opt %s | kvq-opt | FileCheck %s
// RUN: kvq-opt %s --mlir-print-op-generic | kvq-opt | FileCheck %s

// Every parameter prints as a keyword; parameters at their default value
// (mode = asymmetric, scale = f16, order = linear) are omitted. Attribute
// dictionaries print sorted by name.

// CHECK-LABEL: func.func private @schemes()
// CHECK-SAME: any_order = #kvq.scheme<bits = 8, group = 128, axis = channel>
// CHECK-SAME: defaults_spelled_out = #kvq.scheme<bits = 4, group = 64, axis = token>
// CHECK-SAME: f32_scales = #kvq.scheme<bits = 8, group = 16, axis = token, scale = f32>
// CHECK-SAME: interleaved = #kvq.scheme<bits = 4, group = 256, axis = channel, order = interleaved>
// CHECK-SAME: kivi_key = #kvq.scheme<bits = 2, group = 32, axis = channel>
// CHECK-SAME: kivi_value = #kvq.scheme<bits = 2, group = 32, axis = token>
// CHECK-SAME: whole_head = #kvq.scheme<bits = 4, group = head_dim, axis = token, mode = symmetric>
func.func private @schemes() attributes {
  kivi_key = #kvq.scheme<bits = 2, group = 32, axis = channel>,
  kivi_value = #kvq.scheme<bits = 2, group = 32, axis = token>,
  defaults_spelled_out = #kvq.scheme<bits = 4, group = 64, axis = token, mode = asymmetric, scale = f16, order = linear>,
  any_order = #kvq.scheme<axis = channel, group = 128, bits = 8>,
  whole_head = #kvq.scheme<bits = 4, group = head_dim, axis = token, mode = symmetric>,
  f32_scales = #kvq.scheme<bits = 8, group = 16, axis = token, scale = f32>,
  interleaved = #kvq.scheme<bits = 4, group = 256, axis = channel, order = interleaved>
}

// Static scales (given per tensor or kv head) and FP8 formats print after
// the rest; the defaults (format = integer, static = group) are omitted.
// CHECK-LABEL: func.func private @static_schemes()
// CHECK-SAME: e4m3_per_head = #kvq.scheme<bits = 8, group = head_dim, axis = token, mode = symmetric, scale = f32, format = e4m3, static = head>
// CHECK-SAME: e5m2_per_tensor = #kvq.scheme<bits = 8, group = head_dim, axis = token, mode = symmetric, scale = f32, format = e5m2, static = tensor>
// CHECK-SAME: int4_per_head = #kvq.scheme<bits = 4, group = head_dim, axis = token, scale = f32, static = head>
// CHECK-SAME: plain = #kvq.scheme<bits = 4, group = 64, axis = token>
func.func private @static_schemes() attributes {
  int4_per_head = #kvq.scheme<bits = 4, group = head_dim, axis = token, scale = f32, static = head>,
  e4m3_per_head = #kvq.scheme<static = head, format = e4m3, bits = 8, group = head_dim, axis = token, mode = symmetric, scale = f32>,
  e5m2_per_tensor = #kvq.scheme<bits = 8, group = head_dim, axis = token, mode = symmetric, scale = f32, format = e5m2, static = tensor>,
  plain = #kvq.scheme<bits = 4, group = 64, axis = token, format = integer, static = group>
}
